//! The model card: what the model is, what it was trained on, how it
//! performed (overall, per group, under attack), why it decides as it does,
//! and what the gate said. JSON for machines, one self-contained HTML page
//! (inline SVG charts, no scripts) for people.

use serde::{Deserialize, Serialize};

use crate::encode::FeatureEncoder;
use crate::evaluate::EvaluationReport;
use crate::task_eval::{Evaluation, MulticlassReport, RegressionReport, TaskFairness};

pub const SCHEMA: &str = "citadel.model-card/v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub schema: String,
    pub model: String,
    /// Set once the model is registered.
    pub version: Option<i64>,
    pub artifact_sha256: String,
    pub trainer: String,
    pub parameters: serde_json::Value,
    /// The training data: dataset reference, digest, validation status, masked columns.
    pub dataset: serde_json::Value,
    pub split: serde_json::Value,
    pub encoder: FeatureEncoder,
    /// `true` when the served model takes one named input per feature (the
    /// built-in trainers' exports), `false` for one tensor `X` of codes.
    #[serde(default)]
    pub named_inputs: bool,
    /// Tagged by `task` (`binary`, `multiclass`, `regression`).
    pub evaluation: Evaluation,
    /// `{passed, violations[], policy}`.
    pub gate: serde_json::Value,
    pub scan: serde_json::Value,
    pub created_by: String,
    pub created_at: String,
    pub pipeline_run: String,
    pub limitations: Vec<String>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

const COLORS: [&str; 4] = ["#2b6cb0", "#dd6b20", "#38a169", "#805ad5"];

/// Horizontal bars, one per (label, value), values in [lo, hi].
fn hbars(items: &[(String, f64)], hi: f64, fmt: impl Fn(f64) -> String) -> String {
    let (w, row, left) = (560.0, 22.0, 170.0);
    let h = row * items.len() as f64 + 10.0;
    let mut s = format!(r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img">"#);
    let scale = if hi > 0.0 { (w - left - 70.0) / hi } else { 0.0 };
    for (k, (label, v)) in items.iter().enumerate() {
        let y = 5.0 + k as f64 * row;
        let bw = (v.max(0.0) * scale).max(0.0);
        s += &format!(
            r#"<text x="{}" y="{}" text-anchor="end" font-size="12">{}</text><rect x="{left}" y="{}" width="{bw:.1}" height="{}" fill="{}"/><text x="{}" y="{}" font-size="11">{}</text>"#,
            left - 6.0,
            y + 14.0,
            esc(label),
            y + 3.0,
            row - 6.0,
            COLORS[0],
            left + bw + 4.0,
            y + 14.0,
            esc(&fmt(*v))
        );
    }
    s + "</svg>"
}

/// Grouped bars: for each group, one bar per series (values in [0, 1]).
fn grouped(groups: &[String], series: &[(&str, Vec<f64>)]) -> String {
    let (bar, gap, h, top) = (14.0, 18.0, 200.0, 20.0);
    // Wide enough for the longest group name under its bars (11px text).
    let longest = groups.iter().map(|g| g.chars().count()).max().unwrap_or(0) as f64;
    let gw = (bar * series.len() as f64 + gap).max(longest * 6.5 + 10.0);
    let w = (60.0 + gw * groups.len() as f64).max(50.0 + 150.0 * series.len() as f64);
    let mut s = format!(r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{}" role="img">"#, h + 70.0);
    for t in [0.0, 0.5, 1.0] {
        let y = top + h - t * h;
        s += &format!(
            r##"<line x1="40" x2="{w}" y1="{y}" y2="{y}" stroke="#ddd"/><text x="34" y="{}" font-size="10" text-anchor="end">{t}</text>"##,
            y + 3.0
        );
    }
    for (gi, g) in groups.iter().enumerate() {
        let x0 = 50.0 + gi as f64 * gw;
        for (si, (_, vals)) in series.iter().enumerate() {
            let v = vals.get(gi).copied().unwrap_or(0.0).clamp(0.0, 1.0);
            s += &format!(
                r#"<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{:.3}</title></rect>"#,
                x0 + si as f64 * bar,
                top + h - v * h,
                bar - 2.0,
                v * h,
                COLORS[si % COLORS.len()],
                v
            );
        }
        s += &format!(
            r#"<text x="{}" y="{}" font-size="11" text-anchor="middle">{}</text>"#,
            x0 + gw / 2.0 - gap / 2.0,
            top + h + 14.0,
            esc(g)
        );
    }
    for (si, (name, _)) in series.iter().enumerate() {
        let x = 50.0 + si as f64 * 150.0;
        s += &format!(
            r#"<rect x="{x}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}" font-size="11">{}</text>"#,
            top + h + 30.0,
            COLORS[si % COLORS.len()],
            x + 14.0,
            top + h + 39.0,
            esc(name)
        );
    }
    s + "</svg>"
}

/// Lines over x in [0, xmax] and y in [0, 1].
fn lines(series: &[(&str, Vec<(f64, f64)>)], xlabel: &str, diagonal: bool) -> String {
    let (w, h, l, t) = (420.0, 220.0, 45.0, 10.0);
    let xmax = series.iter().flat_map(|(_, p)| p.iter().map(|q| q.0)).fold(0.0f64, f64::max).max(1e-9);
    let px = |x: f64| l + x / xmax * (w - l - 10.0);
    let py = |y: f64| t + (1.0 - y.clamp(0.0, 1.0)) * (h - t - 30.0);
    let mut s = format!(r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{}" role="img">"#, h + 20.0);
    s += &format!(
        r##"<line x1="{l}" x2="{l}" y1="{t}" y2="{}" stroke="#999"/><line x1="{l}" x2="{}" y1="{}" y2="{}" stroke="#999"/>"##,
        py(0.0),
        w - 10.0,
        py(0.0),
        py(0.0)
    );
    for v in [0.0, 0.5, 1.0] {
        s += &format!(r#"<text x="{}" y="{}" font-size="10" text-anchor="end">{v}</text>"#, l - 4.0, py(v) + 3.0);
    }
    s += &format!(
        r#"<text x="{}" y="{}" font-size="11" text-anchor="middle">{}</text>"#,
        (l + w) / 2.0,
        h - 8.0,
        esc(xlabel)
    );
    s += &format!(r#"<text x="{}" y="{}" font-size="10">{:.3}</text>"#, w - 40.0, py(0.0) + 12.0, xmax);
    if diagonal {
        s += &format!(
            r##"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#bbb" stroke-dasharray="4"/>"##,
            px(0.0),
            py(0.0),
            px(xmax),
            py(xmax.min(1.0))
        );
    }
    for (si, (name, pts)) in series.iter().enumerate() {
        let path: Vec<String> = pts.iter().map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y))).collect();
        let c = COLORS[si % COLORS.len()];
        s += &format!(r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#, path.join(" "));
        // Markers only where there are few points (a curve of hundreds is a line).
        for (x, y) in pts.iter().filter(|_| pts.len() <= 30) {
            s += &format!(
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"><title>{x:.3}: {y:.3}</title></circle>"#,
                px(*x),
                py(*y)
            );
        }
        s += &format!(
            r#"<text x="{}" y="{}" font-size="11" fill="{c}">{}</text>"#,
            l + 10.0,
            t + 14.0 + si as f64 * 14.0,
            esc(name)
        );
    }
    s + "</svg>"
}

/// A confusion matrix `counts[true][predicted]` as a shaded grid.
fn confusion(counts: &[Vec<u64>], classes: &[String]) -> String {
    let k = classes.len().max(1);
    let cw = (660.0 / k as f64).clamp(34.0, 110.0);
    let ch = (cw * 0.73).max(26.0);
    let left = 110.0;
    let max = counts.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let font = if k > 6 { 11 } else { 16 };
    let short = |c: &str| {
        if c.chars().count() > 14 { format!("{}…", c.chars().take(13).collect::<String>()) } else { c.to_string() }
    };
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" role="img">"#,
        left + cw * k as f64 + 10.0,
        30.0 + ch * k as f64 + 10.0
    );
    for (r, row) in counts.iter().enumerate() {
        for (col, &n) in row.iter().enumerate() {
            let shade = (235.0 - 170.0 * n as f64 / max) as u8;
            let (x, y) = (left + col as f64 * cw, 30.0 + r as f64 * ch);
            s += &format!(
                r#"<rect x="{x}" y="{y}" width="{cw}" height="{ch}" fill="rgb({shade},{shade},255)"/><text x="{}" y="{}" font-size="{font}" text-anchor="middle">{n}</text>"#,
                x + cw / 2.0,
                y + ch / 2.0 + 5.0,
            );
        }
    }
    for (j, c) in classes.iter().enumerate() {
        let label = if k == 2 { format!("predicted {}", short(c)) } else { short(c) };
        s += &format!(
            r#"<text x="{}" y="20" font-size="11" text-anchor="middle">{}</text><text x="{}" y="{}" font-size="11" text-anchor="end">true {}</text>"#,
            left + j as f64 * cw + cw / 2.0,
            esc(&label),
            left - 6.0,
            30.0 + j as f64 * ch + ch / 2.0 + 4.0,
            esc(&short(c))
        );
    }
    s + "</svg>"
}

/// Permutation importance as sorted bars.
fn importance_bars(imp: &[crate::explain::PermutationImportance]) -> String {
    let mut imp: Vec<(String, f64)> = imp.iter().map(|p| (p.feature.clone(), p.importance_mean)).collect();
    imp.sort_by(|a, b| b.1.total_cmp(&a.1));
    let hi = imp.iter().map(|p| p.1).fold(0.0, f64::max);
    hbars(&imp, hi, |v| format!("{v:.4}"))
}

/// A metrics table from (name, value) pairs.
fn metric_table(rows: &[(&str, f64)]) -> String {
    let mut h = String::from("<table><tr><th>metric</th><th>value</th></tr>");
    for (k, v) in rows {
        h += &format!(
            "<tr><td>{k}</td><td>{}</td></tr>",
            if *k == "rows" || *k == "classes" { format!("{v}") } else { format!("{v:.4}") }
        );
    }
    h + "</table>"
}

/// The `MetricFrame`s of each attribute: a table, and bars for metrics in [0, 1].
fn frames_section(fairness: &[TaskFairness], unit_interval: bool) -> String {
    let mut h = String::from("<section><h2>Fairness</h2>");
    if fairness.is_empty() {
        h += "<p>No sensitive attributes were declared.</p>";
    }
    for f in fairness {
        h += &format!("<h3>{}</h3>", esc(&f.attribute));
        for fr in &f.frames {
            h += &format!(
                "<p>{}: overall {:.4} · difference (max − min) {:.4} · ratio (min / max) {:.4}</p>",
                esc(&fr.metric.replace('_', " ")),
                fr.overall,
                fr.difference,
                fr.ratio
            );
        }
        if let Some(first) = f.frames.first() {
            let groups: Vec<String> = first.by_group.iter().map(|g| g.0.clone()).collect();
            if unit_interval {
                let series: Vec<(&str, Vec<f64>)> =
                    f.frames.iter().map(|fr| (fr.metric.as_str(), fr.by_group.iter().map(|g| g.2).collect())).collect();
                h += &grouped(&groups, &series);
            } else {
                let bars: Vec<(String, f64)> = first.by_group.iter().map(|g| (g.0.clone(), g.2)).collect();
                let hi = bars.iter().map(|b| b.1).fold(0.0, f64::max);
                h += &hbars(&bars, hi, |v| format!("{v:.4}"));
            }
            h += "<table><tr><th>group</th><th>rows</th>";
            for fr in &f.frames {
                h += &format!("<th>{}</th>", esc(&fr.metric.replace('_', " ")));
            }
            h += "</tr>";
            for (gi, g) in first.by_group.iter().enumerate() {
                h += &format!("<tr><td>{}</td><td>{}</td>", esc(&g.0), g.1);
                for fr in &f.frames {
                    h += &format!("<td>{:.4}</td>", fr.by_group.get(gi).map(|x| x.2).unwrap_or(f64::NAN));
                }
                h += "</tr>";
            }
            h += "</table>";
        }
    }
    h + "</section>"
}

fn multiclass_sections(e: &MulticlassReport) -> String {
    let m = &e.metrics;
    let mut h = String::from("<section><h2>Performance on held-out data</h2>");
    h += &metric_table(&[
        ("rows", m.rows as f64),
        ("classes", e.classes.len() as f64),
        ("accuracy", m.accuracy),
        ("balanced accuracy", m.balanced_accuracy),
        ("macro precision", m.macro_precision),
        ("macro recall", m.macro_recall),
        ("macro F1", m.macro_f1),
        ("micro F1", m.micro_f1),
        ("weighted F1", m.weighted_f1),
        ("log loss", m.log_loss),
    ]);
    h += "<h3>Per class</h3><table><tr><th>class</th><th>rows</th><th>precision</th><th>recall</th><th>F1</th></tr>";
    for (c, pc) in e.classes.iter().zip(&m.per_class) {
        h += &format!(
            "<tr><td>{}</td><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td></tr>",
            esc(c),
            pc.support,
            pc.precision,
            pc.recall,
            pc.f1
        );
    }
    h += "</table><h3>Confusion matrix</h3>";
    h += &confusion(&m.confusion, &e.classes);
    h += "</section>";
    h += &frames_section(&e.fairness, true);
    h += "<section><h2>Explanations</h2><h3>Permutation importance (accuracy drop)</h3>";
    h += &importance_bars(&e.permutation_importance);
    h + "<p>The endpoint's <code>/explain</code> gives per-prediction SHAP values of binary classifiers and regressors, not of a multi-class model.</p></section>"
}

fn regression_sections(e: &RegressionReport) -> String {
    let m = &e.metrics;
    let mut h =
        format!("<section><h2>Performance on held-out data</h2><p>Target: <code>{}</code>.</p>", esc(&e.target));
    h += &metric_table(&[
        ("rows", m.rows as f64),
        ("R²", m.r2),
        ("mean absolute error", m.mae),
        ("root mean squared error", m.rmse),
        ("mean squared error", m.mse),
        ("max error", m.max_error),
    ]);
    h += "</section>";
    h += &frames_section(&e.fairness, false);
    h += "<section><h2>Explanations</h2><h3>Permutation importance (R² drop)</h3>";
    h += &importance_bars(&e.permutation_importance);
    h + "<p>Per-prediction SHAP values are served by the endpoint's <code>/explain</code>.</p></section>"
}

fn binary_sections(e: &EvaluationReport) -> String {
    let m = &e.metrics;
    let mut h = String::new();
    h += "<section><h2>Performance on held-out data</h2><table><tr><th>metric</th><th>value</th></tr>";
    for (k, v) in [
        ("rows", m.rows as f64),
        ("accuracy", m.accuracy),
        ("precision", m.precision),
        ("recall", m.recall),
        ("F1", m.f1),
        ("ROC AUC", m.roc_auc),
        ("Brier score", m.calibration.brier),
        ("log loss", m.calibration.log_loss),
        ("expected calibration error", m.calibration.ece),
    ] {
        h += &format!("<tr><td>{k}</td><td>{}</td></tr>", if k == "rows" { format!("{v}") } else { format!("{v:.4}") });
    }
    h += "</table><h3>Confusion matrix</h3>";
    let c = &m.confusion;
    h += &confusion(&[vec![c.tn, c.fp], vec![c.fn_, c.tp]], &e.classes);
    h += "<h3>Calibration</h3>";
    let cal: Vec<(f64, f64)> =
        m.calibration.prob_pred.iter().copied().zip(m.calibration.prob_true.iter().copied()).collect();
    h += &lines(&[("observed positive rate", cal)], "mean predicted probability", true);
    h += "<h3>ROC curve</h3>";
    h += &lines(&[("ROC", m.roc_curve.clone())], "false positive rate", true);
    h += "</section><section><h2>Fairness</h2>";
    if e.fairness.is_empty() {
        h += "<p>No sensitive attributes were declared.</p>";
    }
    for f in &e.fairness {
        h += &format!(
            "<h3>{}</h3><p>demographic parity difference {:.4}, ratio {:.4} · equalized odds difference {:.4}, ratio {:.4}</p>",
            esc(&f.attribute),
            f.demographic_parity_difference,
            f.demographic_parity_ratio,
            f.equalized_odds_difference,
            f.equalized_odds_ratio
        );
        let groups: Vec<String> = f.groups.iter().map(|g| g.group.clone()).collect();
        h += &grouped(
            &groups,
            &[
                ("selection rate", f.groups.iter().map(|g| g.selection_rate).collect()),
                ("true positive rate", f.groups.iter().map(|g| g.true_positive_rate).collect()),
                ("false positive rate", f.groups.iter().map(|g| g.false_positive_rate).collect()),
                ("accuracy", f.groups.iter().map(|g| g.accuracy).collect()),
            ],
        );
        h += "<table><tr><th>group</th><th>rows</th><th>selection rate</th><th>TPR</th><th>FPR</th><th>accuracy</th></tr>";
        for g in &f.groups {
            h += &format!(
                "<tr><td>{}</td><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td></tr>",
                esc(&g.group),
                g.count,
                g.selection_rate,
                g.true_positive_rate,
                g.false_positive_rate,
                g.accuracy
            );
        }
        h += "</table>";
    }
    let r = &e.robustness;
    h += &format!(
        "</section><section><h2>Robustness</h2><p>{} on {} rows, mutable features: {}. At ε = {}: attack success rate {:.3}, robust accuracy {:.3} (clean {:.3}).</p>",
        esc(&r.method),
        r.rows,
        esc(&r.mutable_features.join(", ")),
        r.epsilon,
        r.attack_success_rate,
        r.robust_accuracy,
        r.clean_accuracy
    );
    h += &lines(
        &[
            ("attack success rate", r.curve.iter().map(|p| (p.epsilon, p.attack_success_rate)).collect()),
            ("robust accuracy", r.curve.iter().map(|p| (p.epsilon, p.robust_accuracy)).collect()),
        ],
        "budget ε (standard deviations)",
        false,
    );
    h += &lines(
        &[("accuracy under Gaussian noise", r.noise.iter().map(|p| (p.scale, p.accuracy)).collect())],
        "noise scale (standard deviations)",
        false,
    );
    h += "</section><section><h2>Explanations</h2><h3>Permutation importance (accuracy drop)</h3>";
    h += &importance_bars(&e.permutation_importance);
    h += &format!(
        "<h3>Mean |SHAP value|</h3><p>{} against {} background rows, {} rows explained.</p>",
        esc(&e.shap.method),
        e.shap.background_rows,
        e.shap.examples.len()
    );
    let mut sh = e.shap.global.clone();
    sh.sort_by(|a, b| b.1.total_cmp(&a.1));
    let hi = sh.iter().map(|p| p.1).fold(0.0, f64::max);
    h += &hbars(&sh, hi, |v| format!("{v:.4}"));
    if let Some(ex) = e.shap.examples.first() {
        h += &format!(
            "<h3>One prediction explained</h3><p>base value {:.4} → prediction {:.4}</p><table><tr><th>feature</th><th>SHAP value</th></tr>",
            ex.base_value, ex.prediction
        );
        for (f, v) in e.features.iter().zip(&ex.values) {
            h += &format!("<tr><td>{}</td><td>{v:+.4}</td></tr>", esc(f));
        }
        h += "</table>";
    }
    h + "</section>"
}

impl ModelCard {
    pub fn to_html(&self) -> String {
        let mut h = String::new();
        h += "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">";
        h += "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">";
        h += &format!("<title>Model card: {}</title>", esc(&self.title()));
        h += "<style>body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#1a202c}table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:4px 8px;text-align:right}th{background:#f7fafc}td:first-child,th:first-child{text-align:left}.pass{color:#276749}.fail{color:#c53030}section{margin:2em 0}</style></head><body>";
        h += &format!("<h1>Model card: {}</h1>", esc(&self.title()));
        let passed = self.gate["passed"].as_bool().unwrap_or(false);
        h += &format!(
            "<p>Trainer <b>{}</b> · artifact <code>sha256:{}</code> · pipeline run <code>{}</code> · by {} at {}</p>",
            esc(&self.trainer),
            esc(&self.artifact_sha256),
            esc(&self.pipeline_run),
            esc(&self.created_by),
            esc(&self.created_at)
        );
        h += &format!(
            "<section><h2>Gate: <span class=\"{}\">{}</span></h2>",
            if passed { "pass" } else { "fail" },
            if passed { "passed" } else { "failed" }
        );
        if let Some(v) = self.gate["violations"].as_array().filter(|v| !v.is_empty()) {
            h += "<ul>";
            for x in v {
                h += &format!("<li>{}</li>", esc(x.as_str().unwrap_or("")));
            }
            h += "</ul>";
        }
        h += &format!("<p>Policy: <code>{}</code></p></section>", esc(self.gate["policy"].as_str().unwrap_or("")));
        h += "<section><h2>Training data</h2><table>";
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(a) => a
                .iter()
                .map(|x| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string()))
                .collect::<Vec<_>>()
                .join(", "),
            other => other.to_string(),
        };
        if let Some(o) = self.dataset.as_object() {
            for (k, v) in o {
                h += &format!(
                    "<tr><td>{}</td><td style=\"text-align:left\">{}</td></tr>",
                    esc(&k.replace('_', " ")),
                    esc(&text(v))
                );
            }
        }
        h += &format!(
            "<tr><td>split</td><td style=\"text-align:left\">{}</td></tr></table></section>",
            esc(&self.split.to_string())
        );
        h += &match &self.evaluation {
            Evaluation::Binary(e) => binary_sections(e),
            Evaluation::Multiclass(e) => multiclass_sections(e),
            Evaluation::Regression(e) => regression_sections(e),
        };
        let outputs = match &self.evaluation {
            Evaluation::Regression(_) => "<code>predictions</code> [N, 1], FP32".to_string(),
            Evaluation::Binary(_) if !self.named_inputs => {
                "<code>label</code> (class index) and <code>probabilities</code> [N, 2]".to_string()
            }
            Evaluation::Binary(_) => "<code>label</code> (the class name) and <code>probabilities</code> [N, 2], with the class names in their parameters".to_string(),
            Evaluation::Multiclass(e) => format!(
                "<code>label</code> (the class name) and <code>probabilities</code> [N, {}], with the class names in their parameters",
                e.classes.len()
            ),
        };
        if self.named_inputs {
            h += &format!(
                "<section><h2>Inputs</h2><p>One input per feature, named as the training column, shape [N, 1]: numbers as <code>FP32</code> (null or NaN → the training median), categories as <code>BYTES</code> strings (a category not listed → code -1, as in training). A JSON array of records is accepted too. Outputs: {outputs}.</p><table><tr><th>feature</th><th>kind</th></tr>"
            );
        } else {
            h += &format!(
                "<section><h2>Inputs</h2><p>One tensor <code>X</code> [N, features], FP32; categories are sent as their code (index below). Outputs: {outputs}.</p><table><tr><th>feature</th><th>kind</th></tr>"
            );
        }
        for f in &self.encoder.features {
            let kind = match &f.kind {
                crate::encode::FeatureKind::Numeric { fill, min, max } => match (min, max) {
                    (Some(lo), Some(hi)) => {
                        format!("numeric, 98% of training between {lo} and {hi} (missing → {fill})")
                    }
                    _ => format!("numeric (missing → {fill})"),
                },
                crate::encode::FeatureKind::Categorical { categories } if self.named_inputs => categories.join(", "),
                crate::encode::FeatureKind::Categorical { categories } => {
                    categories.iter().enumerate().map(|(k, c)| format!("{k}={c}")).collect::<Vec<_>>().join(", ")
                }
            };
            h += &format!("<tr><td>{}</td><td style=\"text-align:left\">{}</td></tr>", esc(&f.name), esc(&kind));
        }
        h += "</table></section><section><h2>Limitations</h2><ul>";
        for l in &self.limitations {
            h += &format!("<li>{}</li>", esc(l));
        }
        h += "</ul></section></body></html>\n";
        h
    }

    fn title(&self) -> String {
        match self.version {
            Some(v) => format!("{}@{v}", self.model),
            None => self.model.clone(),
        }
    }
}

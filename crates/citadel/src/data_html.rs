//! A self-contained HTML report of a dataset version: one card per column
//! with an SVG histogram (numeric) or bar chart (categories), the checks and
//! the drift table. No scripts, no external resources.

use std::fmt::Write as _;
use std::path::Path;

use citadel_control::DataVersion;
use citadel_data::profile::ColumnProfile;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn bars(values: &[(String, f64)], width: f64, height: f64) -> String {
    let max = values.iter().map(|v| v.1).fold(0.0, f64::max).max(1e-12);
    let n = values.len().max(1) as f64;
    let w = width / n;
    let mut svg = format!(r#"<svg width="{width}" height="{}" role="img">"#, height + 14.0);
    for (i, (label, v)) in values.iter().enumerate() {
        let h = v / max * height;
        let _ = write!(
            svg,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#3b6ea5"><title>{}: {:.4}</title></rect>"##,
            i as f64 * w + 1.0,
            height - h,
            (w - 2.0).max(1.0),
            h,
            esc(label),
            v
        );
    }
    if let (Some(first), Some(last)) = (values.first(), values.last()) {
        let _ = write!(
            svg,
            r##"<text x="0" y="{}" font-size="10">{}</text><text x="{width}" y="{}" font-size="10" text-anchor="end">{}</text>"##,
            height + 12.0,
            esc(&first.0),
            height + 12.0,
            esc(&last.0)
        );
    }
    svg + "</svg>"
}

fn chart(c: &ColumnProfile) -> String {
    if !c.histogram.is_empty() {
        let values: Vec<(String, f64)> = c.histogram.iter().map(|b| (format!("{:.4}", b.lo), b.share)).collect();
        return bars(&values, 320.0, 90.0);
    }
    if !c.top.is_empty() {
        let total: u64 = c.count.max(1);
        let values: Vec<(String, f64)> = c.top.iter().map(|(k, n)| (k.clone(), *n as f64 / total as f64)).collect();
        return bars(&values, 320.0, 90.0);
    }
    "<p class=muted>values withheld (personal or restricted data)</p>".into()
}

pub fn render(v: &DataVersion) -> String {
    let r = &v.report;
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!doctype html><html><head><meta charset="utf-8"><title>{name}@{ver}</title><style>
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}} .cards{{display:flex;flex-wrap:wrap;gap:1em}}
.card{{border:1px solid #ccc;border-radius:6px;padding:.8em;width:340px}} .muted{{color:#888}}
table{{border-collapse:collapse}} td,th{{border-bottom:1px solid #eee;padding:2px 8px;text-align:left}}
.restricted{{color:#a00}} .status-quarantined{{color:#b60}} .status-accepted{{color:#060}}
</style></head><body><h1>{name}@{ver} <span class="status-{status}">{status}</span></h1>
<p>{rows} rows · {stored} of {cols} columns stored · by {by} at {at}<br>artifact <code>{art}</code><br>source sha256 <code>{src}</code></p>"#,
        name = esc(&v.dataset),
        ver = v.version,
        status = esc(&v.status),
        rows = r.rows,
        stored = r.stored_columns.len(),
        cols = r.source_columns.len(),
        by = esc(&v.created_by),
        at = esc(&v.created_at),
        art = esc(&v.artifact_id),
        src = esc(&v.source_digest),
    );
    if !r.reasons.is_empty() {
        h += "<h2>Reasons</h2><ul>";
        for reason in &r.reasons {
            let _ = write!(h, "<li>{}</li>", esc(reason));
        }
        h += "</ul>";
    }
    h += r#"<h2>Columns</h2><div class="cards">"#;
    for c in &r.profile {
        let pii: Vec<String> =
            c.pii.iter().map(|d| format!("{:?} {:.0}% ({})", d.kind, d.confidence * 100.0, d.rule)).collect();
        let _ = write!(
            h,
            r#"<div class="card"><h3>{name} <small class="{class}">{class}</small></h3>{chart}
<table><tr><th>type</th><td>{t}</td><th>mask</th><td>{mask}</td></tr>
<tr><th>nulls</th><td>{nulls:.2}%</td><th>distinct</th><td>{approx}{distinct}</td></tr>
<tr><th>min</th><td>{min}</td><th>max</th><td>{max}</td></tr>
<tr><th>mean</th><td>{mean}</td><th>std</th><td>{std}</td></tr></table><p class=muted>{pii}</p></div>"#,
            name = esc(&c.name),
            class = esc(&c.classification),
            chart = chart(c),
            t = c.column_type.as_str(),
            mask = esc(c.mask.as_deref().unwrap_or("-")),
            nulls = c.null_rate * 100.0,
            approx = if c.distinct_exact { "" } else { "~" },
            distinct = c.distinct,
            min = c.min.map_or("-".into(), |x| format!("{x:.4}")),
            max = c.max.map_or("-".into(), |x| format!("{x:.4}")),
            mean = c.mean.map_or("-".into(), |x| format!("{x:.4}")),
            std = c.std.map_or("-".into(), |x| format!("{x:.4}")),
            pii = if pii.is_empty() { "no PII detected".into() } else { esc(&pii.join(", ")) },
        );
    }
    h += "</div>";
    if !r.violations.is_empty() {
        h += "<h2>Violations</h2><table><tr><th>column</th><th>rule</th><th>rows</th><th>examples</th></tr>";
        for x in &r.violations {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(x.column.as_deref().unwrap_or("")),
                esc(&x.rule),
                x.count,
                esc(&x.examples.join("; "))
            );
        }
        h += "</table>";
    }
    if let Some(k) = &r.k_anonymity {
        let _ = write!(
            h,
            "<h2>Re-identification risk</h2><p>k-anonymity over {}: k = {}{} · {} groups · {} rows in groups smaller than {}</p>",
            esc(&k.quasi_identifiers.join(", ")),
            k.k.map_or("?".into(), |k| k.to_string()),
            k.l.map(|l| format!(", l-diversity = {l}")).unwrap_or_default(),
            k.groups,
            k.rows_below_min_k,
            k.min_k
        );
    }
    if !r.drift.is_empty() {
        h += "<h2>Drift against the previous version</h2><table><tr><th>column</th><th>PSI</th><th>KS</th><th>JS</th><th>chi² p</th><th>out of range</th><th>outliers</th><th>new categories</th></tr>";
        let f = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.4}"));
        for d in &r.drift {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&d.column),
                f(d.psi),
                f(d.ks),
                f(d.js),
                d.chi2_pvalue.map_or("-".into(), |p| format!("{p:.3e}")),
                f(d.out_of_range_rate),
                f(d.outlier_rate),
                f(d.new_category_rate)
            );
        }
        h += "</table>";
    }
    h + "</body></html>\n"
}

/// Writes the report atomically; an existing regular file is replaced, but
/// never a device, directory or link (`--html /dev/null` must not swap out /dev/null).
pub fn write(path: &Path, v: &DataVersion) -> std::io::Result<()> {
    crate::out_file::write(path, render(v).as_bytes(), crate::out_file::Existing::Replace)
}

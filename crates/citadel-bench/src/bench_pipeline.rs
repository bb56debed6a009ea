//! `citadel-bench pipeline`: the quickstart end to end, and the built-in
//! trainers next to scikit-learn on the same encoded UCI Adult split (same
//! rows, same features, same machine, one run): fit and predict times,
//! their ratios, and accuracy / ROC AUC side by side.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use serde::Serialize;

use citadel_ml::encode::FeatureKind;
use citadel_ml::{Classifier, FeatureEncoder, Labels, OnnxClassifier, Table, gbt, lr, metrics};

/// UCI Adult's columns, in file order.
pub(crate) const ADULT_COLUMNS: [&str; 15] = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
    "income",
];
/// Predictions on the test rows are timed best of this many, here and in
/// the Python peers (`train_sklearn.py`), so one cold run does not decide.
const PREDICT_REPEATS: usize = 5;
/// Not features: the sensitive attributes and the label.
pub(crate) const NOT_FEATURES: [&str; 3] = ["race", "sex", "income"];

#[derive(Debug, Serialize)]
pub struct Side {
    pub fit_seconds: f64,
    pub predict_seconds: f64,
    pub accuracy: f64,
    pub roc_auc: f64,
}

#[derive(Debug, Serialize)]
pub struct ModelRow {
    pub model: String,
    pub citadel: Side,
    /// Predicting with the trainer's own model (the export is what is timed in `citadel`).
    pub citadel_native_predict_seconds: Option<f64>,
    /// Median time of one single-row prediction through the export (what serving pays).
    pub citadel_single_row_micros: f64,
    pub scikit_learn: Option<Side>,
    /// The engine that ran the export (citadel-native or tract).
    pub engine: String,
    /// LightGBM on the same rows (boosting only, when installed).
    pub lightgbm: Option<Side>,
    pub lightgbm_single_row_micros: Option<f64>,
    /// LightGBM predict time / the export's predict time on the test rows (above 1: Citadel is faster).
    pub predict_speedup_vs_lightgbm: Option<f64>,
    /// scikit-learn fit time / Citadel fit time (above 1: Citadel is faster).
    pub fit_speedup: Option<f64>,
    pub accuracy_gap_points: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub rows_train: usize,
    pub rows_test: usize,
    pub features: usize,
    pub repeats: usize,
    pub models: Vec<ModelRow>,
    pub scikit_learn_version: Option<String>,
    pub quickstart_seconds: Option<f64>,
    pub quickstart_error: Option<String>,
    pub notes: Vec<String>,
}

pub(crate) fn adult() -> Result<Table> {
    let text = std::str::from_utf8(crate::ADULT_DATA)?;
    let numeric = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"];
    Ok(Table::from_unquoted_csv(text, &ADULT_COLUMNS, &numeric, "?")?)
}

fn write_csv(path: &Path, x: &citadel_ml::Matrix, y: &[f32]) -> Result<()> {
    let mut s = String::with_capacity(x.data.len() * 6);
    for (i, label) in y.iter().enumerate().take(x.rows) {
        for v in x.row(i) {
            s.push_str(&v.to_string());
            s.push(',');
        }
        s.push_str(if *label > 0.5 { "1\n" } else { "0\n" });
    }
    std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))
}

fn python() -> Option<PathBuf> {
    std::env::var_os("CITADEL_BENCH_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain(["/tmp/skvenv/bin/python", "/tmp/citadel-services/train-venv/bin/python", "python3"].map(PathBuf::from))
        .find(|p| Command::new(p).args(["-c", "import sklearn"]).output().is_ok_and(|o| o.status.success()))
}

fn best_of<T>(repeats: usize, mut f: impl FnMut() -> Result<T>) -> Result<(T, f64)> {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        let v = f()?;
        best = best.min(t.elapsed().as_secs_f64());
        out = Some(v);
    }
    Ok((out.ok_or_else(|| anyhow!("no run"))?, best))
}

pub fn run(dir: &Path, repeats: usize, quickstart: bool, quiet: bool) -> Result<Report> {
    let work = tempfile::Builder::new().prefix("citadel-bench-pipeline-").tempdir_in(dir)?;
    let say = |s: &str| {
        if !quiet {
            eprintln!("{s}");
        }
    };
    let t = adult()?;
    let labels = Labels::fit(&t, "income", Some(">50K"))?;
    let y = labels.encode(&t)?;
    let (train, test) = citadel_ml::split::stratified(&y, 0.2, 42);
    let (tt, te) = (t.take(&train), t.take(&test));
    let ytr: Vec<f32> = train.iter().map(|&i| y[i]).collect();
    let yte: Vec<f32> = test.iter().map(|&i| y[i]).collect();
    let features: Vec<String> =
        ADULT_COLUMNS.iter().filter(|c| !NOT_FEATURES.contains(c)).map(|s| s.to_string()).collect();
    let enc = FeatureEncoder::fit(&tt, &features, &ytr)?;
    let (xtr, xte) = (enc.encode(&tt)?, enc.encode(&te)?);
    let categorical: Vec<usize> = enc
        .features
        .iter()
        .enumerate()
        .filter(|(_, f)| matches!(f.kind, FeatureKind::Categorical { .. }))
        .map(|(j, _)| j)
        .collect();
    write_csv(&work.path().join("train.csv"), &xtr, &ytr)?;
    write_csv(&work.path().join("test.csv"), &xte, &yte)?;
    std::fs::write(
        work.path().join("meta.json"),
        serde_json::to_vec(&serde_json::json!({"categorical": categorical, "repeats": repeats}))?,
    )?;

    say("training logistic regression (citadel)");
    let (m, lr_fit) = best_of(repeats, || Ok(lr::fit(&enc, &xtr, &ytr, &lr::LrParams::default(), &[])?))?;
    let lr_onnx = OnnxClassifier::load(&m.to_onnx(&enc, citadel_ml::Interface::Codes, vec![])?)?;
    let (p, lr_pred) = best_of(PREDICT_REPEATS, || Ok(lr_onnx.predict_proba(&xte)?))?;
    let lr_m = metrics::evaluate(&yte, &p);
    let (_, lr_native) = best_of(PREDICT_REPEATS, || Ok(m.predict_proba(&xte)))?;

    say("training gradient boosting (citadel)");
    let (g, gbt_fit) = best_of(repeats, || Ok(gbt::fit(&xtr, &ytr, &gbt::GbtParams::default(), &[])?))?;
    let g_onnx = OnnxClassifier::load(&g.to_onnx(&enc, citadel_ml::Interface::Codes, vec![])?)?;
    let (p, gbt_pred) = best_of(PREDICT_REPEATS, || Ok(g_onnx.predict_proba(&xte)?))?;
    let gbt_m = metrics::evaluate(&yte, &p);
    let (_, gbt_native) = best_of(PREDICT_REPEATS, || Ok(g.predict_proba(&xte)))?;

    let mut notes = Vec::new();
    say("training the same with scikit-learn");
    let sk: Option<serde_json::Value> = match python() {
        Some(py) => {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench/train_sklearn.py");
            let o = Command::new(&py)
                .arg(&script)
                .arg(work.path())
                .output()
                .with_context(|| format!("running {}", py.display()))?;
            if o.status.success() {
                Some(serde_json::from_slice(&o.stdout)?)
            } else {
                notes.push(format!(
                    "scikit-learn failed: {}",
                    String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("")
                ));
                None
            }
        }
        None => {
            notes.push("no Python with scikit-learn (set CITADEL_BENCH_PYTHON): no peer comparison".into());
            None
        }
    };
    let side = |v: &serde_json::Value| Side {
        fit_seconds: v["fit_seconds"].as_f64().unwrap_or(f64::NAN),
        predict_seconds: v["predict_seconds"].as_f64().unwrap_or(f64::NAN),
        accuracy: v["accuracy"].as_f64().unwrap_or(f64::NAN),
        roc_auc: v["roc_auc"].as_f64().unwrap_or(f64::NAN),
    };
    // What a gateway pays per single-row request: the export, one row at a time.
    let single = |model: &OnnxClassifier| -> Result<f64> {
        let mut times = Vec::with_capacity(1000);
        for i in 0..1000.min(xte.rows) {
            let one = citadel_ml::Matrix { rows: 1, cols: xte.cols, data: xte.row(i).to_vec() };
            let t = Instant::now();
            model.predict_proba(&one)?;
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    };
    let (lr_single, gbt_single) = (single(&lr_onnx)?, single(&g_onnx)?);
    let row = |name: &str, fit: f64, pred: f64, m: &metrics::Metrics, native: f64, single_row: f64, engine: &str| {
        let peer = sk.as_ref().map(|s| side(&s[name]));
        let lgbm = sk.as_ref().filter(|s| name == "gradient_boosting" && s["lightgbm"].is_object());
        ModelRow {
            engine: engine.into(),
            lightgbm: lgbm.map(|s| side(&s["lightgbm"])),
            lightgbm_single_row_micros: lgbm.and_then(|s| s["lightgbm"]["single_row_micros"].as_f64()),
            predict_speedup_vs_lightgbm: lgbm.and_then(|s| s["lightgbm"]["predict_seconds"].as_f64()).map(|l| l / pred),
            model: name.into(),
            fit_speedup: peer.as_ref().map(|p| p.fit_seconds / fit),
            accuracy_gap_points: peer.as_ref().map(|p| (m.accuracy - p.accuracy) * 100.0),
            citadel: Side { fit_seconds: fit, predict_seconds: pred, accuracy: m.accuracy, roc_auc: m.roc_auc },
            citadel_native_predict_seconds: Some(native),
            citadel_single_row_micros: single_row,
            scikit_learn: peer,
        }
    };
    let models = vec![
        row("logistic_regression", lr_fit, lr_pred, &lr_m, lr_native, lr_single, lr_onnx.engine()),
        row("gradient_boosting", gbt_fit, gbt_pred, &gbt_m, gbt_native, gbt_single, g_onnx.engine()),
    ];

    let (mut quickstart_seconds, mut quickstart_error) = (None, None);
    if quickstart {
        say("running the quickstart end to end");
        let exe = crate::citadel_exe()?;
        let qs = work.path().join("quickstart");
        let t = Instant::now();
        let o = Command::new(exe)
            .env_remove("CITADEL_PASSPHRASE")
            .args(["quickstart", "--json", "--dir"])
            .arg(&qs)
            .output()?;
        if o.status.success() {
            quickstart_seconds = Some(t.elapsed().as_secs_f64());
        } else {
            quickstart_error = Some(String::from_utf8_lossy(&o.stdout).chars().take(500).collect());
        }
    }
    Ok(Report {
        rows_train: xtr.rows,
        rows_test: xte.rows,
        features: xtr.cols,
        repeats,
        models,
        scikit_learn_version: sk.as_ref().and_then(|s| s["scikit-learn"].as_str().map(str::to_string)),
        quickstart_seconds,
        quickstart_error,
        notes,
    })
}

pub fn render(r: &Report) -> String {
    let mut s = format!(
        "UCI Adult: {} training rows, {} test rows, {} features (fit: best of {}; same split and encoding for both)\n\n",
        r.rows_train, r.rows_test, r.features, r.repeats
    );
    s += &format!(
        "{:<20} {:>12} {:>12} {:>8} {:>10} {:>10} {:>9} {:>9} {:>9}\n",
        "model", "fit citadel", "fit sklearn", "speedup", "acc cit.", "acc skl.", "Δ points", "AUC cit.", "AUC skl."
    );
    for m in &r.models {
        let sk = m.scikit_learn.as_ref();
        s += &format!(
            "{:<20} {:>11.3}s {:>12} {:>8} {:>10.4} {:>10} {:>9} {:>9.4} {:>9}\n",
            m.model,
            m.citadel.fit_seconds,
            sk.map(|p| format!("{:.3}s", p.fit_seconds)).unwrap_or("-".into()),
            m.fit_speedup.map(|x| format!("{x:.2}×")).unwrap_or("-".into()),
            m.citadel.accuracy,
            sk.map(|p| format!("{:.4}", p.accuracy)).unwrap_or("-".into()),
            m.accuracy_gap_points.map(|x| format!("{x:+.2}")).unwrap_or("-".into()),
            m.citadel.roc_auc,
            sk.map(|p| format!("{:.4}", p.roc_auc)).unwrap_or("-".into()),
        );
    }
    s += "\npredict on the test rows:\n";
    for m in &r.models {
        s += &format!(
            "  {:<20} citadel ONNX export ({}) {:.3}s ({:.1} µs for one row, median of 1000), trainer's own model {:.3}s, scikit-learn {}\n",
            m.model,
            m.engine,
            m.citadel.predict_seconds,
            m.citadel_single_row_micros,
            m.citadel_native_predict_seconds.unwrap_or(f64::NAN),
            m.scikit_learn.as_ref().map(|p| format!("{:.3}s", p.predict_seconds)).unwrap_or("-".into())
        );
    }
    for m in &r.models {
        if let (Some(l), Some(x)) = (&m.lightgbm, m.predict_speedup_vs_lightgbm) {
            s += &format!(
                "  {:<20} LightGBM {:.3}s ({:.1} µs for one row): the export is {x:.2}× LightGBM on the test rows (target ≥ 1×; one row ≤ 20 µs); LightGBM fit {:.3}s, AUC {:.4}\n",
                "",
                l.predict_seconds,
                m.lightgbm_single_row_micros.unwrap_or(f64::NAN),
                l.fit_seconds,
                l.roc_auc
            );
        }
    }
    match (r.quickstart_seconds, &r.quickstart_error) {
        (Some(t), _) => {
            s += &format!(
                "\nquickstart end to end (fresh workspace → deployed, called, audited): {t:.1}s (target: under 120 s)\n"
            )
        }
        (None, Some(e)) => s += &format!("\nquickstart failed: {e}\n"),
        _ => {}
    }
    if let Some(v) = &r.scikit_learn_version {
        s += &format!("scikit-learn {v}\n");
    }
    for n in &r.notes {
        s += &format!("note: {n}\n");
    }
    s
}

//! Multi-class and regression metrics equal scikit-learn's, and their
//! fairness equals Fairlearn's MetricFrame (reference:
//! tests/fixtures/make_task_reference.py, task_reference.json).
#![allow(clippy::unwrap_used)]

use citadel_ml::task_metrics::{self, GroupFrame};
use serde_json::Value;

fn reference() -> Value {
    serde_json::from_str(include_str!("fixtures/task_reference.json")).unwrap()
}

fn close(what: &str, ours: f64, theirs: &Value) {
    let t = theirs.as_f64().unwrap_or_else(|| panic!("{what}: {theirs}"));
    assert!((ours - t).abs() <= 1e-9 * t.abs().max(1.0), "{what}: ours {ours}, reference {t}");
}

fn same_frame(what: &str, ours: &GroupFrame, theirs: &Value) {
    close(&format!("{what} overall"), ours.overall, &theirs["overall"]);
    close(&format!("{what} difference"), ours.difference, &theirs["difference"]);
    close(&format!("{what} ratio"), ours.ratio, &theirs["ratio"]);
    let groups = theirs["by_group"].as_object().unwrap();
    assert_eq!(ours.by_group.len(), groups.len(), "{what}: groups");
    for (g, _, v) in &ours.by_group {
        close(&format!("{what} group {g}"), *v, &groups[g]);
    }
}

fn texts(v: &Value) -> Vec<Option<String>> {
    v.as_array().unwrap().iter().map(|s| s.as_str().map(str::to_string)).collect()
}

#[test]
fn multiclass_metrics_and_fairness_equal_scikit_learn_and_fairlearn() {
    let r = reference();
    let m = &r["multiclass"];
    let k = m["classes"].as_array().unwrap().len();
    assert_eq!(k, 6);
    let y: Vec<usize> = serde_json::from_value(m["y"].clone()).unwrap();
    let proba: Vec<f64> = serde_json::from_value::<Vec<Vec<f64>>>(m["proba"].clone()).unwrap().concat();
    let ours = task_metrics::multiclass(&y, &proba, k).unwrap();
    for (name, v) in [
        ("accuracy", ours.accuracy),
        ("balanced_accuracy", ours.balanced_accuracy),
        ("macro_precision", ours.macro_precision),
        ("macro_recall", ours.macro_recall),
        ("macro_f1", ours.macro_f1),
        ("micro_f1", ours.micro_f1),
        ("weighted_f1", ours.weighted_f1),
        ("log_loss", ours.log_loss),
    ] {
        close(name, v, &m[name]);
    }
    for (c, pc) in ours.per_class.iter().enumerate() {
        close(&format!("precision of class {c}"), pc.precision, &m["per_class"]["precision"][c]);
        close(&format!("recall of class {c}"), pc.recall, &m["per_class"]["recall"][c]);
        close(&format!("f1 of class {c}"), pc.f1, &m["per_class"]["f1"][c]);
        assert_eq!(pc.support, m["per_class"]["support"][c].as_u64().unwrap());
    }
    let confusion: Vec<Vec<u64>> = serde_json::from_value(m["confusion"].clone()).unwrap();
    assert_eq!(ours.confusion, confusion);
    let pred = task_metrics::argmax_rows(&proba, k);
    for attr in ["sex", "race"] {
        let frames = task_metrics::multiclass_fairness(&y, &pred, &texts(&m[attr]), k);
        same_frame(&format!("{attr} accuracy"), &frames[0], &m["fairness"][attr]["accuracy"]);
        same_frame(&format!("{attr} macro recall"), &frames[1], &m["fairness"][attr]["macro_recall"]);
    }
}

#[test]
fn regression_metrics_and_fairness_equal_scikit_learn_and_fairlearn() {
    let r = reference();
    let g = &r["regression"];
    let y: Vec<f64> = serde_json::from_value(g["y"].clone()).unwrap();
    let pred: Vec<f64> = serde_json::from_value(g["pred"].clone()).unwrap();
    let ours = task_metrics::regression(&y, &pred).unwrap();
    for (name, v) in
        [("mae", ours.mae), ("mse", ours.mse), ("rmse", ours.rmse), ("r2", ours.r2), ("max_error", ours.max_error)]
    {
        close(name, v, &g[name]);
    }
    let frame = task_metrics::regression_fairness(&y, &pred, &texts(&g["sex"]));
    same_frame("sex MAE", &frame, &g["fairness"]["sex"]["mean_absolute_error"]);
}

#[test]
fn degenerate_inputs_follow_scikit_learns_conventions() {
    // Constant targets: R² is 1 for a perfect fit and 0 otherwise (force_finite).
    assert_eq!(task_metrics::regression(&[2.0, 2.0], &[2.0, 2.0]).unwrap().r2, 1.0);
    assert_eq!(task_metrics::regression(&[2.0, 2.0], &[1.0, 3.0]).unwrap().r2, 0.0);
    // A class nobody has nor predicts does not count in the macro average.
    let m = task_metrics::multiclass(&[0, 1], &[0.9, 0.1, 0.0, 0.2, 0.8, 0.0], 3).unwrap();
    assert_eq!(m.macro_f1, 1.0);
    assert!(task_metrics::multiclass(&[0, 3], &[0.5; 6], 3).is_err(), "a label outside the classes is refused");
}

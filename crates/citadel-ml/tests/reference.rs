#![allow(clippy::unwrap_used)]
//! Evaluation against the peer tools' values (tests/fixtures/make_reference.py):
//! scikit-learn metrics, Fairlearn's MetricFrame and parity metrics on the
//! same predictions, and shap's KernelExplainer on the same function.

use citadel_ml::{Classifier, Matrix, MlError, explain, fairness, metrics};
use serde_json::Value;

fn reference() -> Value {
    serde_json::from_str(include_str!("fixtures/reference.json")).unwrap()
}

fn close(name: &str, a: f64, b: f64, tol: f64) {
    assert!((a - b).abs() <= tol, "{name}: citadel {a} vs reference {b}");
}

fn rows(r: &Value) -> (Vec<f32>, Vec<f64>) {
    let y = r["rows"]["y_true"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let p = r["rows"]["y_prob"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    (y, p)
}

#[test]
fn metrics_equal_scikit_learns() {
    let r = reference();
    let (y, p) = rows(&r);
    let m = metrics::evaluate(&y, &p);
    let e = &r["metrics"];
    for (name, ours) in [
        ("accuracy", m.accuracy),
        ("precision", m.precision),
        ("recall", m.recall),
        ("f1", m.f1),
        ("roc_auc", m.roc_auc),
        ("brier", m.calibration.brier),
        ("log_loss", m.calibration.log_loss),
    ] {
        close(name, ours, e[name].as_f64().unwrap(), 1e-12);
    }
    let want_true: Vec<f64> =
        e["calibration_prob_true"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let want_pred: Vec<f64> =
        e["calibration_prob_pred"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(m.calibration.prob_true.len(), want_true.len());
    for k in 0..want_true.len() {
        close("calibration prob_true", m.calibration.prob_true[k], want_true[k], 1e-12);
        close("calibration prob_pred", m.calibration.prob_pred[k], want_pred[k], 1e-12);
    }
}

#[test]
fn fairness_equals_fairlearns_metric_frame_and_parity_metrics() {
    let r = reference();
    let (y, p) = rows(&r);
    let pred = metrics::predict(&p);
    for attr in ["sex", "race"] {
        let groups: Vec<Option<String>> =
            r["rows"][attr].as_array().unwrap().iter().map(|v| v.as_str().map(str::to_string)).collect();
        let f = fairness::evaluate(attr, &y, &pred, &groups);
        let e = &r["fairness"][attr];
        let by = e["by_group"].as_object().unwrap();
        assert_eq!(f.groups.len(), by.len(), "{attr}");
        for g in &f.groups {
            let w = &by[&g.group];
            close("selection_rate", g.selection_rate, w["selection_rate"].as_f64().unwrap(), 1e-12);
            close("true_positive_rate", g.true_positive_rate, w["true_positive_rate"].as_f64().unwrap(), 1e-12);
            close("false_positive_rate", g.false_positive_rate, w["false_positive_rate"].as_f64().unwrap(), 1e-12);
            close("accuracy", g.accuracy, w["accuracy"].as_f64().unwrap(), 1e-12);
        }
        for (name, ours) in [
            ("demographic_parity_difference", f.demographic_parity_difference),
            ("demographic_parity_ratio", f.demographic_parity_ratio),
            ("equalized_odds_difference", f.equalized_odds_difference),
            ("equalized_odds_ratio", f.equalized_odds_ratio),
        ] {
            close(&format!("{attr} {name}"), ours, e[name].as_f64().unwrap(), 1e-12);
        }
    }
}

struct Interaction {
    w: Vec<f64>,
    b: f64,
    c: f64,
}

impl Classifier for Interaction {
    fn predict_proba(&self, x: &Matrix) -> Result<Vec<f64>, MlError> {
        Ok((0..x.rows)
            .map(|i| {
                let r: Vec<f64> = x.row(i).iter().map(|&v| f64::from(v)).collect();
                let z = r.iter().zip(&self.w).map(|(a, w)| a * w).sum::<f64>() + self.b + self.c * r[0] * r[1];
                1.0 / (1.0 + (-z).exp())
            })
            .collect())
    }
}

/// Stated tolerance: 1e-6 absolute. Inputs are 4-decimal values that f32
/// holds to ~1e-7 relative; shap works in f64 on the same decimals.
#[test]
fn kernel_shap_equals_shaps_kernel_explainer() {
    let r = reference();
    let k = &r["kernel_shap"];
    let floats = |v: &Value| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect::<Vec<f64>>();
    let model = Interaction { w: floats(&k["w"]), b: k["b"].as_f64().unwrap(), c: k["c"].as_f64().unwrap() };
    let bg: Vec<Vec<f64>> = k["background"].as_array().unwrap().iter().map(floats).collect();
    let background = Matrix { rows: bg.len(), cols: 5, data: bg.iter().flatten().map(|&v| v as f32).collect() };
    for (row, want) in k["x"].as_array().unwrap().iter().zip(k["values"].as_array().unwrap()) {
        let x: Vec<f32> = floats(row).iter().map(|&v| v as f32).collect();
        let e = explain::kernel_shap(&model, &x, &background, 0, 0).unwrap();
        close("expected_value", e.base_value, k["expected_value"].as_f64().unwrap(), 1e-6);
        for (ours, theirs) in e.values.iter().zip(floats(want)) {
            close("shap value", *ours, theirs, 1e-6);
        }
    }
}

//! Interventional TreeSHAP equals shap's TreeExplainer on the boosted-tree
//! fixtures (reference: tests/fixtures/make_tree_shap_reference.py,
//! tree_shap_reference.json), and its values add up to the raw score.
#![allow(clippy::unwrap_used)]

use citadel_infer::{Model, Tensor};
use std::path::Path;

fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

fn f32s(v: &serde_json::Value) -> (Vec<f32>, usize) {
    let rows: Vec<Vec<f64>> = serde_json::from_value(v.clone()).unwrap();
    (rows.iter().flatten().map(|&x| x as f32).collect(), rows.len())
}

#[test]
fn tree_shap_equals_shaps_interventional_tree_explainer() {
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("tree_shap_reference.json")).unwrap()).unwrap();
    let cases = reference["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2, "GradientBoosting and HistGradientBoosting");
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let model = Model::load(&std::fs::read(fixtures().join(case["file"].as_str().unwrap())).unwrap()).unwrap();
        assert!(model.has_tree_ensemble(), "{name}");
        let (background, _) = f32s(&case["background"]);
        let (x, rows) = f32s(&case["rows"]);
        let (shap, cols) = model.tree_shap(vec![Tensor::f32(vec![rows, 10], x).unwrap()], &background).unwrap();
        assert_eq!(cols, 10);
        let want: Vec<Vec<f64>> = serde_json::from_value(case["shap_values"].clone()).unwrap();
        let mut worst = 0f64;
        for (r, row) in want.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                worst = worst.max((shap.values[r * cols + j] - v).abs());
            }
        }
        let base_gap = (shap.base_value - case["base_value"].as_f64().unwrap()).abs();
        eprintln!("{name}: largest difference from shap {worst:.2e}, base value {base_gap:.2e}");
        assert!(worst <= 1e-6, "{name}: SHAP values differ from shap's by {worst:e}");
        assert!(base_gap <= 1e-6, "{name}: base value differs by {base_gap:e}");
        // Local accuracy: base + Σφ = the raw score, which is scikit-learn's decision function.
        let raw: Vec<f64> = serde_json::from_value(case["raw_scores"].clone()).unwrap();
        assert_eq!(raw.len(), rows);
        for (r, want) in raw.iter().enumerate() {
            let sum = shap.base_value + shap.values[r * cols..(r + 1) * cols].iter().sum::<f64>();
            assert!((sum - shap.scores[r]).abs() <= 1e-9, "{name}: row {r} does not add up");
            assert!((shap.scores[r] - want).abs() <= 1e-5, "{name}: row {r} raw score {} vs {want}", shap.scores[r]);
        }
    }
}

#[test]
fn models_without_one_tree_ensemble_are_refused_tree_shap() {
    let model = Model::load(&std::fs::read(fixtures().join("models/lr_binary_nozipmap.onnx")).unwrap()).unwrap();
    assert!(!model.has_tree_ensemble());
    let e = model.tree_shap(vec![Tensor::f32(vec![1, 10], vec![0.0; 10]).unwrap()], &[0.0; 10]).unwrap_err();
    assert!(e.to_string().contains("tree ensemble"), "{e}");
    let multi = Model::load(&std::fs::read(fixtures().join("models/gb_multiclass_nozipmap.onnx")).unwrap()).unwrap();
    if multi.has_tree_ensemble() {
        let e = multi.tree_shap(vec![Tensor::f32(vec![1, 10], vec![0.0; 10]).unwrap()], &[0.0; 10]).unwrap_err();
        assert!(e.to_string().contains("outputs"), "{e}");
    }
}

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
        let (shap, cols) = model.tree_shap(vec![Tensor::f32(vec![rows, 10], x).unwrap()], &background, None).unwrap();
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
    let e = model.tree_shap(vec![Tensor::f32(vec![1, 10], vec![0.0; 10]).unwrap()], &[0.0; 10], None).unwrap_err();
    assert!(e.to_string().contains("tree ensemble"), "{e}");
    let multi = Model::load(&std::fs::read(fixtures().join("models/gb_multiclass_nozipmap.onnx")).unwrap()).unwrap();
    if multi.has_tree_ensemble() {
        let e = multi.tree_shap(vec![Tensor::f32(vec![1, 10], vec![0.0; 10]).unwrap()], &[0.0; 10], None).unwrap_err();
        assert!(e.to_string().contains("outputs"), "{e}");
    }
}

/// A chain-shaped tree `depth` splits deep on one feature: a crafted model whose
/// TreeSHAP walk would recurse once per split.
fn chain_model(depth: i64) -> Vec<u8> {
    use citadel_infer::proto::*;
    use prost::Message;
    let attr_ints =
        |name: &str, v: Vec<i64>| AttributeProto { name: name.into(), ints: v, r#type: 7, ..Default::default() };
    let attr_floats =
        |name: &str, v: Vec<f32>| AttributeProto { name: name.into(), floats: v, r#type: 6, ..Default::default() };
    let (mut ids, mut modes, mut yes, mut no, mut values) = (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..depth {
        ids.push(i);
        modes.push(b"BRANCH_LT".to_vec());
        yes.push(10_000_000 + i);
        no.push(i + 1);
        values.push(i as f32);
    }
    let leaves: Vec<i64> = (0..depth).map(|i| 10_000_000 + i).chain([depth]).collect();
    for &l in &leaves {
        ids.push(l);
        modes.push(b"LEAF".to_vec());
        yes.push(0);
        no.push(0);
        values.push(0.0);
    }
    let n = ids.len();
    let node = NodeProto {
        input: vec!["X".into()],
        output: vec!["Y".into()],
        name: "chain".into(),
        op_type: "TreeEnsembleRegressor".into(),
        domain: "ai.onnx.ml".into(),
        attribute: vec![
            attr_ints("nodes_treeids", vec![0; n]),
            attr_ints("nodes_nodeids", ids),
            attr_ints("nodes_featureids", vec![0; n]),
            AttributeProto { name: "nodes_modes".into(), strings: modes, r#type: 8, ..Default::default() },
            attr_floats("nodes_values", values),
            attr_ints("nodes_truenodeids", yes),
            attr_ints("nodes_falsenodeids", no),
            attr_ints("target_treeids", vec![0; leaves.len()]),
            attr_ints("target_nodeids", leaves.clone()),
            attr_ints("target_ids", vec![0; leaves.len()]),
            attr_floats("target_weights", (0..leaves.len()).map(|i| i as f32).collect()),
            AttributeProto { name: "n_targets".into(), i: 1, r#type: 2, ..Default::default() },
        ],
    };
    let tensor = |elem: i32, dims: Vec<Dimension>| TypeProto {
        tensor_type: Some(TensorTypeProto { elem_type: elem, shape: Some(TensorShapeProto { dim: dims }) }),
        ..Default::default()
    };
    let dim = |v: Option<i64>| Dimension { dim_value: v, dim_param: v.is_none().then(|| "N".to_string()) };
    ModelProto {
        ir_version: 7,
        opset_import: vec![
            OperatorSetIdProto { domain: String::new(), version: 13 },
            OperatorSetIdProto { domain: "ai.onnx.ml".into(), version: 1 },
        ],
        graph: Some(GraphProto {
            node: vec![node],
            name: "chain".into(),
            input: vec![ValueInfoProto { name: "X".into(), r#type: Some(tensor(1, vec![dim(None), dim(Some(1))])) }],
            output: vec![ValueInfoProto { name: "Y".into(), r#type: Some(tensor(1, vec![dim(None), dim(Some(1))])) }],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

#[test]
fn a_crafted_deep_tree_is_served_but_refused_tree_shap_instead_of_overflowing_the_stack() {
    let model = Model::load(&chain_model(50_000)).unwrap();
    // Serving walks iteratively: a deep tree answers.
    let out = model.run(vec![Tensor::f32(vec![1, 1], vec![49_999.5]).unwrap()]).unwrap();
    assert_eq!(out[0].to_f32().unwrap(), vec![50_000.0]);
    let e = model.tree_shap(vec![Tensor::f32(vec![1, 1], vec![3.0]).unwrap()], &[40_000.0], None).unwrap_err();
    assert!(e.to_string().contains("deep"), "{e}");
    // A shallow chain is explained, and a passed deadline stops the work.
    let shallow = Model::load(&chain_model(100)).unwrap();
    let (shap, _) = shallow.tree_shap(vec![Tensor::f32(vec![1, 1], vec![3.0]).unwrap()], &[40.0], None).unwrap();
    assert!((shap.base_value + shap.values[0] - shap.scores[0]).abs() < 1e-9);
    let past = std::time::Instant::now() - std::time::Duration::from_millis(1);
    let e = shallow.tree_shap(vec![Tensor::f32(vec![1, 1], vec![3.0]).unwrap()], &[40.0], Some(past)).unwrap_err();
    assert!(matches!(e, citadel_infer::InferError::Deadline), "{e}");
}

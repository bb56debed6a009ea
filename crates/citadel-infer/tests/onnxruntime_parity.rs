//! Outputs equal onnxruntime's on every model kind skl2onnx exports
//! (reference: tests/fixtures/make_onnx_reference.py, onnx_reference.json).
#![allow(clippy::unwrap_used)]

use citadel_infer::{Data, Engine, Model, Tensor};
use std::path::Path;

const TOLERANCE: f64 = 1e-5;

fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

#[test]
fn every_skl2onnx_classifier_matches_onnxruntime() {
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("onnx_reference.json")).unwrap()).unwrap();
    let cases = reference["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 20, "5 kinds x binary/multiclass x with/without ZipMap");
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let bytes = std::fs::read(fixtures().join(case["file"].as_str().unwrap())).unwrap();
        let model = Model::load(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(model.engine, Engine::Native, "{name}");
        let rows: Vec<Vec<f64>> = serde_json::from_value(case["inputs"].clone()).unwrap();
        let cols = rows[0].len();
        let x: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
        let out = model.run(vec![Tensor::f32(vec![rows.len(), cols], x).unwrap()]).unwrap();
        assert_eq!(out.len(), 2, "{name}: label and probabilities");
        let labels: Vec<i64> = serde_json::from_value(case["label"].clone()).unwrap();
        let Data::I64(got_labels) = &out[0].data else { panic!("{name}: labels are {:?}", out[0].dtype()) };
        assert_eq!(got_labels, &labels, "{name}: labels");
        let probs: Vec<Vec<f64>> = serde_json::from_value(case["probabilities"].clone()).unwrap();
        let Data::F32(got) = &out[1].data else { panic!("{name}: probabilities are {:?}", out[1].dtype()) };
        assert_eq!(out[1].shape, vec![rows.len(), probs[0].len()], "{name}");
        let mut worst = 0f64;
        for (r, row) in probs.iter().enumerate() {
            for (c, &p) in row.iter().enumerate() {
                worst = worst.max((f64::from(got[r * row.len() + c]) - p).abs());
            }
        }
        assert!(worst <= TOLERANCE, "{name}: largest difference from onnxruntime {worst:e}");
        eprintln!("{name}: largest difference {worst:.2e}");
        // The declared outputs describe what is served (ZipMap's input, not a list of maps).
        assert_eq!(model.outputs[1].shape.len(), 2, "{name}");
    }
}

#[test]
fn a_standard_operator_graph_runs_on_tract_and_matches_onnxruntime() {
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("onnx_reference_standard.json")).unwrap()).unwrap();
    let model = Model::load(&std::fs::read(fixtures().join(reference["file"].as_str().unwrap())).unwrap()).unwrap();
    assert_eq!(model.engine, Engine::Tract);
    let rows: Vec<Vec<f64>> = serde_json::from_value(reference["inputs"].clone()).unwrap();
    let want: Vec<Vec<f64>> = serde_json::from_value(reference["probabilities"].clone()).unwrap();
    // Any batch size runs on the one plan.
    for batch in [1usize, 7, rows.len()] {
        let x: Vec<f32> = rows[..batch].iter().flatten().map(|&v| v as f32).collect();
        let out = model.run(vec![Tensor::f32(vec![batch, 10], x).unwrap()]).unwrap();
        let Data::F32(got) = &out[0].data else { panic!() };
        assert_eq!(out[0].shape, vec![batch, 3]);
        for (r, row) in want[..batch].iter().enumerate() {
            for (c, &p) in row.iter().enumerate() {
                assert!((f64::from(got[r * 3 + c]) - p).abs() <= TOLERANCE, "row {r} col {c}");
            }
        }
    }
}

#[test]
fn inputs_are_checked_against_the_declaration() {
    let bytes = std::fs::read(fixtures().join("models/rf_binary_nozipmap.onnx")).unwrap();
    let model = Model::load(&bytes).unwrap();
    let wrong_width = model.run(vec![Tensor::f32(vec![1, 9], vec![0.0; 9]).unwrap()]).unwrap_err();
    assert!(wrong_width.to_string().contains("shape"), "{wrong_width}");
    let wrong_type = model.run(vec![Tensor::new(vec![1, 10], Data::I64(vec![0; 10])).unwrap()]).unwrap_err();
    assert!(wrong_type.to_string().contains("FP32"), "{wrong_type}");
    let none = model.run(vec![]).unwrap_err();
    assert!(none.to_string().contains("takes 1 input"), "{none}");
}

#[test]
fn malformed_models_are_refused_with_a_reason() {
    assert!(Model::load(b"not a model").is_err());
    assert!(Model::load(&[]).is_err());
    let bytes = std::fs::read(fixtures().join("models/gb_multiclass_nozipmap.onnx")).unwrap();
    // Every truncation is an error or a model, never a panic.
    for cut in (0..bytes.len()).step_by(97) {
        let _ = Model::load(&bytes[..cut]);
    }
}

/// The tree executor walks a batch several rows at a time, branch-free, and
/// splits large batches over the cores; one row at a time it walks plainly.
/// All three give the same floats for every row.
#[test]
fn tree_ensembles_answer_the_same_in_a_batch_split_over_cores_and_one_row_at_a_time() {
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("onnx_reference.json")).unwrap()).unwrap();
    let mut checked = 0;
    for case in reference["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        if !["gb_", "hgb_", "rf_"].iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let model = Model::load(&std::fs::read(fixtures().join(case["file"].as_str().unwrap())).unwrap()).unwrap();
        let rows: Vec<Vec<f64>> = serde_json::from_value(case["inputs"].clone()).unwrap();
        let cols = rows[0].len();
        let probabilities = |xs: &[&Vec<f64>]| -> Vec<f32> {
            let x: Vec<f32> = xs.iter().flat_map(|r| r.iter().map(|&v| v as f32)).collect();
            let out = model.run(vec![Tensor::f32(vec![xs.len(), cols], x).unwrap()]).unwrap();
            let Data::F32(p) = &out[1].data else { panic!("{name}") };
            p.clone()
        };
        let one_by_one: Vec<f32> = rows.iter().flat_map(|r| probabilities(&[r])).collect();
        let batch = probabilities(&rows.iter().collect::<Vec<_>>());
        assert_eq!(batch, one_by_one, "{name}: a batch differs from its rows one by one");
        // Over 1,024 rows: split over the cores.
        let many: Vec<&Vec<f64>> = rows.iter().cycle().take(rows.len() * (2048 / rows.len() + 1)).collect();
        let large = probabilities(&many);
        let per_row = one_by_one.len() / rows.len();
        for (i, chunk) in large.chunks(per_row).enumerate() {
            let r = i % rows.len();
            assert_eq!(chunk, &one_by_one[r * per_row..(r + 1) * per_row], "{name}: row {i} of a large batch");
        }
        checked += 1;
    }
    assert_eq!(checked, 12, "gb, hgb, rf x binary/multiclass x with/without ZipMap");
}

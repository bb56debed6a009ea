#![allow(clippy::unwrap_used)]
//! The built-in trainers' exports computed by onnxruntime (the reference
//! ONNX runtime, through $CITADEL_TEST_VENV_PYTHON) equal what citadel-infer
//! computes (tract for the linear model, the native tree executor for the
//! boosting), on held-out Adult rows.

mod common;

use std::process::Command;

use citadel_ml::{Classifier, FeatureEncoder, Labels, OnnxClassifier, gbt, lr};

fn onnxruntime(model: &[u8], x: &citadel_ml::Matrix) -> Vec<f64> {
    let python = std::env::var("CITADEL_TEST_VENV_PYTHON")
        .expect("CITADEL_TEST_VENV_PYTHON: run through scripts/test.sh (scripts/services.sh installs onnxruntime)");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.onnx"), model).unwrap();
    let bytes: Vec<u8> = x.data.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.path().join("x.f32"), bytes).unwrap();
    let script = format!(
        "import numpy as np, onnxruntime as ort, sys\n\
         x = np.fromfile(sys.argv[1] + '/x.f32', dtype='<f4').reshape({}, {})\n\
         s = ort.InferenceSession(sys.argv[1] + '/model.onnx', providers=['CPUExecutionProvider'])\n\
         p = s.run(['probabilities'], {{'X': x}})[0]\n\
         print('\\n'.join(repr(float(v)) for v in p[:, 1]))",
        x.rows, x.cols
    );
    let o = Command::new(python).args(["-c", &script, dir.path().to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "onnxruntime: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().lines().map(|l| l.parse().unwrap()).collect()
}

#[test]
fn logistic_regression_and_boosted_trees_match_onnxruntime() {
    let t = common::adult();
    let labels = Labels::fit(&t, "income", Some(">50K")).unwrap();
    let y = labels.encode(&t).unwrap();
    let (train, test) = citadel_ml::split::stratified(&y, 0.2, 11);
    let (tt, te) = (t.take(&train), t.take(&test));
    let ytr: Vec<f32> = train.iter().map(|&i| y[i]).collect();
    let features: Vec<String> = common::FEATURES.iter().map(|s| s.to_string()).collect();
    let enc = FeatureEncoder::fit(&tt, &features, &ytr).unwrap();
    let (xtr, xte) = (enc.encode(&tt).unwrap(), enc.encode(&te).unwrap());
    // Unseen categories (code -1) and values beyond the training range.
    let mut xte = xte;
    xte.data[0] = -1.0;
    xte.data[xte.cols + 2] = 1e6;
    // A missing value: both runtimes send it down the false branch.
    xte.data[2 * xte.cols + 1] = f32::NAN;

    let m = lr::fit(&enc, &xtr, &ytr, &lr::LrParams::default(), &[]).unwrap();
    let g = gbt::fit(&xtr, &ytr, &gbt::GbtParams { max_iter: 40, ..Default::default() }, &[]).unwrap();
    for (name, bytes, engine, tolerance) in [
        ("logistic regression", m.to_onnx(&enc, vec![]), "tract", 1e-5),
        ("gradient boosting", g.to_onnx(&enc, vec![]), "citadel-native", 1e-6),
    ] {
        let ours = OnnxClassifier::load(&bytes).unwrap();
        assert_eq!(ours.engine(), engine, "{name}");
        let a = ours.predict_proba(&xte).unwrap();
        let b = onnxruntime(&bytes, &xte);
        assert_eq!(a.len(), b.len());
        let worst = a.iter().zip(&b).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        let flips = a.iter().zip(&b).filter(|(a, b)| (**a > 0.5) != (**b > 0.5)).count();
        assert!(a.iter().chain(&b).all(|p| p.is_finite()), "{name}: a probability is not finite");
        eprintln!("{name}: {} rows, max |{engine} - onnxruntime| = {worst:e}, label flips {flips}", a.len());
        assert!(worst < tolerance, "{name}: {worst}");
        assert_eq!(flips, 0, "{name}");
    }
}

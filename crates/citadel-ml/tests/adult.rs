#![allow(clippy::unwrap_used)]
//! The built-in trainers on UCI Adult: accuracy near scikit-learn's, and the
//! ONNX export (run by citadel-infer: tract for the linear model's standard
//! operators, the native tree executor for the boosting's TreeEnsembleRegressor)
//! agreeing with the trainer.

use std::time::Instant;

mod common;

use citadel_ml::{Classifier, FeatureEncoder, Labels, OnnxClassifier, gbt, lr, metrics};
use common::{FEATURES, adult};

#[test]
fn both_trainers_export_graphs_citadel_infer_runs_with_the_trainers_answers() {
    let t = adult();
    let labels = Labels::fit(&t, "income", Some(">50K")).unwrap();
    let y = labels.encode(&t).unwrap();
    let (train, test) = citadel_ml::split::stratified(&y, 0.2, 42);
    let (tt, te) = (t.take(&train), t.take(&test));
    let (ytr, yte): (Vec<f32>, Vec<f32>) =
        (train.iter().map(|&i| y[i]).collect(), test.iter().map(|&i| y[i]).collect());
    let features: Vec<String> = FEATURES.iter().map(|s| s.to_string()).collect();
    let enc = FeatureEncoder::fit(&tt, &features, &ytr).unwrap();
    let (xtr, xte) = (enc.encode(&tt).unwrap(), enc.encode(&te).unwrap());

    let start = Instant::now();
    let m = lr::fit(&enc, &xtr, &ytr, &lr::LrParams::default(), &[]).unwrap();
    eprintln!("lr: {:?}, {} iterations, converged {}", start.elapsed(), m.iterations, m.converged);
    let onnx = OnnxClassifier::load(&m.to_onnx(&enc, citadel_ml::Interface::Codes, vec![]).unwrap()).unwrap();
    assert_eq!(onnx.engine(), "tract");
    let p = onnx.predict_proba(&xte).unwrap();
    let acc = metrics::evaluate(&yte, &p).accuracy;
    eprintln!("lr accuracy {acc}");
    assert!(acc > 0.84, "{acc}");

    let start = Instant::now();
    let g = gbt::fit(&xtr, &ytr, &gbt::GbtParams::default(), &[]).unwrap();
    eprintln!("gbt: {:?}, {} trees", start.elapsed(), g.trees.len());
    let onnx = OnnxClassifier::load(&g.to_onnx(&enc, citadel_ml::Interface::Codes, vec![]).unwrap()).unwrap();
    assert_eq!(onnx.engine(), "citadel-native");
    let start = Instant::now();
    let p = onnx.predict_proba(&xte).unwrap();
    eprintln!("gbt onnx predict {} rows: {:?}", xte.rows, start.elapsed());
    let mut worst = 0f64;
    for (native, served) in g.predict_proba(&xte).iter().zip(&p) {
        worst = worst.max((native - served).abs());
    }
    let acc = metrics::evaluate(&yte, &p).accuracy;
    eprintln!("gbt accuracy {acc}, max |onnx - native| {worst}");
    assert!(worst < 1e-4, "{worst}");
    assert!(acc > 0.86, "{acc}");
}

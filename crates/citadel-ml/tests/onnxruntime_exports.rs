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
        ("logistic regression", m.to_onnx(&enc, citadel_ml::Interface::Codes, vec![]).unwrap(), "tract", 1e-5),
        ("gradient boosting", g.to_onnx(&enc, citadel_ml::Interface::Codes, vec![]).unwrap(), "citadel-native", 1e-6),
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

/// onnxruntime on a named-input export: `(positive-class probability, label)` per row.
fn onnxruntime_named(model: &[u8], inputs: &[(String, citadel_infer::Tensor)]) -> Vec<(f64, String)> {
    let out = onnxruntime_outputs(model, inputs, &["label", "probabilities"]);
    let labels = out[0].as_array().unwrap();
    let probs = out[1].as_array().unwrap();
    labels.iter().zip(probs).map(|(l, p)| (p[1].as_f64().unwrap(), l.as_str().unwrap().to_string())).collect()
}

#[test]
fn named_input_exports_hold_the_encoder_and_match_onnxruntime_and_the_code_form() {
    let t = common::adult();
    let labels = Labels::fit(&t, "income", Some(">50K")).unwrap();
    let y = labels.encode(&t).unwrap();
    let (train, test) = citadel_ml::split::stratified(&y, 0.2, 11);
    let (tt, mut te) = (t.take(&train), t.take(&test[..2000]));
    let ytr: Vec<f32> = train.iter().map(|&i| y[i]).collect();
    let features: Vec<String> = common::FEATURES.iter().map(|s| s.to_string()).collect();
    let enc = FeatureEncoder::fit(&tt, &features, &ytr).unwrap();
    // An unseen category, a missing category and a missing number.
    for c in te.columns.iter_mut() {
        match c {
            citadel_ml::Column::Cat(v) => {
                v[0] = Some("a category training never saw".into());
                v[1] = None;
            }
            citadel_ml::Column::Num(v) => v[2] = None,
        }
    }
    let xtr = enc.encode(&tt).unwrap();
    let xte = enc.encode(&te).unwrap();
    let named = enc.named_tensors(&te).unwrap();
    let m = lr::fit(&enc, &xtr, &ytr, &lr::LrParams::default(), &[]).unwrap();
    let g = gbt::fit(&xtr, &ytr, &gbt::GbtParams { max_iter: 40, ..Default::default() }, &[]).unwrap();
    let named_iface = citadel_ml::Interface::Named { classes: &labels.classes };
    for (name, named_bytes, codes_bytes, tolerance) in [
        (
            "logistic regression",
            m.to_onnx(&enc, named_iface, vec![]).unwrap(),
            m.to_onnx(&enc, citadel_ml::Interface::Codes, vec![]).unwrap(),
            1e-5,
        ),
        (
            "gradient boosting",
            g.to_onnx(&enc, named_iface, vec![]).unwrap(),
            g.to_onnx(&enc, citadel_ml::Interface::Codes, vec![]).unwrap(),
            1e-6,
        ),
    ] {
        let model = citadel_infer::Model::load(&named_bytes).unwrap();
        let names: Vec<&str> = model.inputs.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, common::FEATURES.to_vec(), "{name}: one input per feature, named as the column");
        assert_eq!(model.outputs[0].dtype, citadel_infer::DType::Str, "{name}: the label is the class name");
        let schema: serde_json::Value = serde_json::from_str(model.meta("citadel.inputs").unwrap()).unwrap();
        assert_eq!(schema[1]["kind"], "categorical", "{name}");
        let (p1, fill, p99) = (
            schema[0]["p1"].as_f64().unwrap(),
            schema[0]["fill"].as_f64().unwrap(),
            schema[0]["p99"].as_f64().unwrap(),
        );
        assert!(17.0 <= p1 && p1 <= fill && fill <= p99 && p99 <= 90.0, "{name}: {}", schema[0]);
        let out = model.run(named.iter().map(|(_, t)| t.clone()).collect()).unwrap();
        let citadel_infer::Data::Str(ours_labels) = &out[0].data else { panic!("labels") };
        let ours: Vec<f64> = out[1].to_f32().unwrap().chunks(2).map(|r| f64::from(r[1])).collect();
        // The encoder inside the graph gives what training's encoder gives.
        let codes = OnnxClassifier::load(&codes_bytes).unwrap().predict_proba(&xte).unwrap();
        let enc_gap = ours.iter().zip(&codes).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(enc_gap < tolerance, "{name}: named vs code form differ by {enc_gap}");
        let reference = onnxruntime_named(&named_bytes, &named);
        let worst = ours.iter().zip(&reference).map(|(a, (b, _))| (a - b).abs()).fold(0.0, f64::max);
        eprintln!("{name}: named inputs, max |citadel - onnxruntime| = {worst:e}, vs code form {enc_gap:e}");
        assert!(worst < tolerance, "{name}: {worst}");
        for (i, (ours, (p, theirs))) in ours_labels.iter().zip(&reference).enumerate() {
            assert_eq!(ours, theirs, "{name}: row {i} label");
            assert_eq!(ours, &labels.classes[usize::from(*p > 0.5)], "{name}: row {i}");
        }
        // The evaluation path (codes reversed into named inputs) is the same model.
        let via_eval = OnnxClassifier::load(&named_bytes).unwrap().predict_proba(&xte).unwrap();
        let eval_gap = via_eval.iter().zip(&ours).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(eval_gap < tolerance, "{name}: evaluation feed differs by {eval_gap}");
    }
}

/// onnxruntime's outputs `names` of a named-input export, as JSON arrays.
fn onnxruntime_outputs(
    model: &[u8],
    inputs: &[(String, citadel_infer::Tensor)],
    names: &[&str],
) -> Vec<serde_json::Value> {
    let python = std::env::var("CITADEL_TEST_VENV_PYTHON").expect("CITADEL_TEST_VENV_PYTHON");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.onnx"), model).unwrap();
    let columns: serde_json::Map<String, serde_json::Value> = inputs
        .iter()
        .map(|(name, t)| {
            let v = match &t.data {
                citadel_infer::Data::F32(v) => serde_json::json!({"kind": "num", "values": v.iter().map(|x| if x.is_nan() { None } else { Some(*x) }).collect::<Vec<_>>()}),
                citadel_infer::Data::Str(v) => serde_json::json!({"kind": "cat", "values": v}),
                other => panic!("{other:?}"),
            };
            (name.clone(), v)
        })
        .collect();
    std::fs::write(dir.path().join("inputs.json"), serde_json::to_vec(&columns).unwrap()).unwrap();
    let script = "import json, sys, numpy as np, onnxruntime as ort\n\
         d, names = sys.argv[1], sys.argv[2].split(',')\n\
         cols = json.load(open(d + '/inputs.json'))\n\
         feed = {}\n\
         for name, c in cols.items():\n\
         \x20   if c['kind'] == 'num':\n\
         \x20       feed[name] = np.array([np.nan if v is None else v for v in c['values']], dtype=np.float32).reshape(-1, 1)\n\
         \x20   else:\n\
         \x20       feed[name] = np.array(c['values'], dtype=object).reshape(-1, 1)\n\
         s = ort.InferenceSession(d + '/model.onnx', providers=['CPUExecutionProvider'])\n\
         outs = s.run(names, feed)\n\
         print(json.dumps([o.tolist() for o in outs]))";
    let o = Command::new(python).args(["-c", script, dir.path().to_str().unwrap(), &names.join(",")]).output().unwrap();
    assert!(o.status.success(), "onnxruntime: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn multiclass_and_regression_exports_of_both_trainers_match_onnxruntime_and_the_trainers() {
    use citadel_ml::gbt::Objective;
    let t = common::adult();
    let classes: Vec<String> = {
        let col = t.column("relationship").unwrap();
        let mut v: Vec<String> = (0..t.rows).filter_map(|i| col.text(i)).collect();
        v.sort();
        v.dedup();
        v
    };
    let class_of = |i: usize| {
        classes.iter().position(|c| Some(c.clone()) == t.column("relationship").unwrap().text(i)).unwrap() as f32
    };
    let ycls: Vec<f32> = (0..t.rows).map(class_of).collect();
    let hours = t.column("hours-per-week").unwrap();
    let yreg: Vec<f32> = (0..t.rows).map(|i| hours.text(i).unwrap().parse::<f32>().unwrap()).collect();
    let (train, test): (Vec<usize>, Vec<usize>) = (0..t.rows).partition(|i| i % 5 != 0);
    let test = &test[..1500];
    let (tt, te) = (t.take(&train), t.take(test));
    for (task, target, drop) in [("multi-class", &ycls, "relationship"), ("regression", &yreg, "hours-per-week")] {
        let ytr: Vec<f32> = train.iter().map(|&i| target[i]).collect();
        let yte: Vec<f32> = test.iter().map(|&i| target[i]).collect();
        let features: Vec<String> = common::FEATURES.iter().filter(|f| **f != drop).map(|s| s.to_string()).collect();
        // The encoder orders categories by a 0/1 rate; any fixed order serves here.
        let zero: Vec<f32> = ytr.iter().map(|_| 0.0).collect();
        let enc = FeatureEncoder::fit(&tt, &features, &zero).unwrap();
        let (xtr, xte) = (enc.encode(&tt).unwrap(), enc.encode(&te).unwrap());
        let named = enc.named_tensors(&te).unwrap();
        let (objective, iface, outputs): (Objective, citadel_ml::Interface<'_>, &[&str]) = if task == "multi-class" {
            (
                Objective::Multiclass { classes: classes.len() },
                citadel_ml::Interface::Named { classes: &classes },
                &["label", "probabilities"],
            )
        } else {
            (Objective::Squared, citadel_ml::Interface::Named { classes: &[] }, &["predictions"])
        };
        let m =
            lr::fit_objective(&enc, &xtr, &ytr, &lr::LrParams { max_iter: 300, ..Default::default() }, &[], objective)
                .unwrap();
        let g = gbt::fit_objective(&xtr, &ytr, &gbt::GbtParams { max_iter: 30, ..Default::default() }, &[], objective)
            .unwrap();
        let (m_own, g_own) = if task == "multi-class" {
            (m.predict_classes(&xte), g.predict_classes(&xte))
        } else {
            (m.predict_values(&xte), g.predict_values(&xte))
        };
        for (trainer, bytes, own, tolerance) in [
            ("linear", m.to_onnx(&enc, iface, vec![]).unwrap(), m_own, 1e-4),
            ("boosting", g.to_onnx(&enc, iface, vec![]).unwrap(), g_own, 1e-4),
        ] {
            let model = citadel_infer::Model::load(&bytes).unwrap();
            let out = model.run(named.iter().map(|(_, t)| t.clone()).collect()).unwrap();
            let served = out.last().unwrap().to_f32().unwrap();
            let reference = onnxruntime_outputs(&bytes, &named, outputs);
            let theirs: Vec<f64> = reference
                .last()
                .unwrap()
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|r| match r {
                    serde_json::Value::Array(a) => a.iter().map(|v| v.as_f64().unwrap()).collect::<Vec<_>>(),
                    v => vec![v.as_f64().unwrap()],
                })
                .collect();
            let ort_gap = served.iter().zip(&theirs).map(|(a, b)| (f64::from(*a) - b).abs()).fold(0.0, f64::max);
            // Relative for regression targets (hours), absolute for probabilities.
            let scale = if task == "regression" { 100.0 } else { 1.0 };
            assert!(ort_gap <= 1e-5 * scale, "{task} {trainer}: citadel vs onnxruntime differ by {ort_gap}");
            let own_gap = served.iter().zip(&own).map(|(a, b)| (f64::from(*a) - b).abs()).fold(0.0, f64::max);
            assert!(own_gap <= tolerance * scale, "{task} {trainer}: the export differs from the trainer by {own_gap}");
            if task == "multi-class" {
                let k = classes.len();
                let labels: Vec<String> =
                    reference[0].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
                let citadel_infer::Data::Str(ours) = &out[0].data else { panic!("labels") };
                assert_eq!(ours, &labels, "{task} {trainer}: labels");
                let y: Vec<usize> = yte.iter().map(|&v| v as usize).collect();
                let p: Vec<f64> = served.iter().map(|&v| f64::from(v)).collect();
                let metrics = citadel_ml::task_metrics::multiclass(&y, &p, k).unwrap();
                eprintln!(
                    "{task} {trainer}: accuracy {:.3}, macro F1 {:.3}, log loss {:.3}, vs onnxruntime {ort_gap:.1e}",
                    metrics.accuracy, metrics.macro_f1, metrics.log_loss
                );
                assert!(metrics.accuracy > 0.7, "{task} {trainer}: accuracy {}", metrics.accuracy);
            } else {
                let y: Vec<f64> = yte.iter().map(|&v| f64::from(v)).collect();
                let p: Vec<f64> = served.iter().map(|&v| f64::from(v)).collect();
                let metrics = citadel_ml::task_metrics::regression(&y, &p).unwrap();
                eprintln!(
                    "{task} {trainer}: MAE {:.2}, R² {:.3}, vs onnxruntime {ort_gap:.1e}",
                    metrics.mae, metrics.r2
                );
                assert!(metrics.r2 > 0.1, "{task} {trainer}: R² {}", metrics.r2);
            }
        }
    }
}

#[test]
fn a_single_tensor_model_wrapped_with_named_inputs_answers_as_before() {
    // 1. citadel's own single-tensor export, as an external command would write it.
    let t = common::adult();
    let labels = Labels::fit(&t, "income", Some(">50K")).unwrap();
    let y = labels.encode(&t).unwrap();
    let features: Vec<String> = common::FEATURES.iter().map(|s| s.to_string()).collect();
    let enc = FeatureEncoder::fit(&t, &features, &y).unwrap();
    let x = enc.encode(&t).unwrap();
    let g = gbt::fit(&x, &y, &gbt::GbtParams { max_iter: 20, ..Default::default() }, &[]).unwrap();
    let codes = g.to_onnx(&enc, citadel_ml::Interface::Codes, vec![]).unwrap();
    let wrapped = citadel_ml::onnx_build::wrap_named(&codes, &enc, vec![], &x).unwrap().expect("wrappable");
    let rows = t.take(&(0..500).collect::<Vec<_>>());
    let named = enc.named_tensors(&rows).unwrap();
    let w = citadel_infer::Model::load(&wrapped).unwrap();
    let names: Vec<&str> = w.inputs.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, common::FEATURES.to_vec());
    let via_wrap = w.run(named.iter().map(|(_, t)| t.clone()).collect()).unwrap()[1].to_f32().unwrap();
    let xr = enc.encode(&rows).unwrap();
    let direct = citadel_infer::Model::load(&codes)
        .unwrap()
        .run(vec![citadel_infer::Tensor::f32(vec![xr.rows, xr.cols], xr.data).unwrap()])
        .unwrap()[1]
        .to_f32()
        .unwrap();
    assert_eq!(via_wrap, direct, "the wrapped graph answers exactly as the original on the encoded rows");
    let reference = onnxruntime_outputs(&wrapped, &named, &["probabilities"]);
    let theirs: Vec<f64> = reference[0]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect::<Vec<_>>())
        .collect();
    let gap = via_wrap.iter().zip(&theirs).map(|(a, b)| (f64::from(*a) - b).abs()).fold(0.0, f64::max);
    assert!(gap < 1e-6, "onnxruntime runs the wrapped graph: {gap}");

    // 2. A scikit-learn export (skl2onnx, ZipMap-free random forest over 10 numbers).
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../citadel-infer/tests/fixtures/models/rf_binary_nozipmap.onnx");
    let sk = std::fs::read(fixture).unwrap();
    let numeric = citadel_ml::FeatureEncoder {
        features: (0..10)
            .map(|j| citadel_ml::encode::Feature {
                name: format!("f{j}"),
                kind: citadel_ml::encode::FeatureKind::Numeric { fill: 0.0, min: None, max: None },
            })
            .collect(),
    };
    let probe = citadel_ml::Matrix { rows: 4, cols: 10, data: (0..40).map(|i| i as f32 / 7.0).collect() };
    let wrapped = citadel_ml::onnx_build::wrap_named(&sk, &numeric, vec![], &probe).unwrap().expect("wrappable");
    let w = citadel_infer::Model::load(&wrapped).unwrap();
    let data: Vec<f32> = (0..40).map(|i| (i as f32 * 0.37).sin() * 2.0).collect();
    let cols: Vec<citadel_infer::Tensor> = (0..10)
        .map(|j| citadel_infer::Tensor::f32(vec![4, 1], (0..4).map(|r| data[r * 10 + j]).collect()).unwrap())
        .collect();
    let a = w.run(cols).unwrap();
    let b = citadel_infer::Model::load(&sk)
        .unwrap()
        .run(vec![citadel_infer::Tensor::f32(vec![4, 10], data).unwrap()])
        .unwrap();
    assert_eq!(a, b, "the scikit-learn model answers the same through named inputs");
    // A model whose input does not fit the encoder is left as it is.
    let fewer = citadel_ml::FeatureEncoder { features: numeric.features[..3].to_vec() };
    assert!(citadel_ml::onnx_build::wrap_named(&sk, &fewer, vec![], &probe).unwrap().is_none());
}

//! The named-input and gRPC rows of `citadel-bench serve`: a logistic
//! regression trained by citadel on UCI Adult, exported twice (one input per
//! raw feature, and the single tensor of codes), so the cost of decoding
//! named raw values is measured on the same model; and gRPC load driven by
//! h2load (nghttp2), whose per-request log gives the latency percentiles.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, anyhow};
use citadel_ml::{FeatureEncoder, Interface, Labels};
use prost::Message;

use crate::bench_pipeline::{ADULT_COLUMNS, NOT_FEATURES, adult};

/// The two exports and the request bodies for one held-out row.
pub struct AdultModels {
    pub named_onnx: Vec<u8>,
    pub codes_onnx: Vec<u8>,
    /// OIP V2 JSON with one input per feature.
    pub named_body: String,
    /// OIP V2 JSON with the single tensor `X`.
    pub codes_body: String,
    /// A gRPC `ModelInferRequest` for `model` with the named inputs, framed for the wire.
    pub named_grpc: Vec<u8>,
}

pub fn adult_models(model: &str) -> Result<AdultModels> {
    let t = adult()?;
    let labels = Labels::fit(&t, "income", Some(">50K"))?;
    let y = labels.encode(&t)?;
    let (train, test) = citadel_ml::split::stratified(&y, 0.2, 42);
    let (tt, te) = (t.take(&train), t.take(&test[..1]));
    let ytr: Vec<f32> = train.iter().map(|&i| y[i]).collect();
    let features: Vec<String> =
        ADULT_COLUMNS.iter().filter(|c| !NOT_FEATURES.contains(c)).map(|s| s.to_string()).collect();
    let enc = FeatureEncoder::fit(&tt, &features, &ytr)?;
    let x = enc.encode(&tt)?;
    let m = citadel_ml::lr::fit(&enc, &x, &ytr, &citadel_ml::lr::LrParams::default(), &[])?;
    let meta = vec![("citadel.classes".to_string(), serde_json::to_string(&labels.classes)?)];
    let named_onnx = m.to_onnx(&enc, Interface::Named { classes: &labels.classes }, meta.clone())?;
    let codes_onnx = m.to_onnx(&enc, Interface::Codes, meta)?;
    let named_body = serde_json::json!({"inputs": enc.v2_inputs(&te)?}).to_string();
    let xe = enc.encode(&te)?;
    let codes_body =
        serde_json::json!({"inputs": [{"name": "X", "shape": [1, xe.cols], "datatype": "FP32", "data": xe.data}]})
            .to_string();
    let named_grpc = grpc_frame(&named_request(model, &enc, &te)?);
    Ok(AdultModels { named_onnx, codes_onnx, named_body, codes_body, named_grpc })
}

fn named_request(
    model: &str,
    enc: &FeatureEncoder,
    rows: &citadel_ml::Table,
) -> Result<citadel_serve::grpc_pb::ModelInferRequest> {
    use citadel_serve::grpc_pb as pb;
    let inputs = enc
        .named_tensors(rows)?
        .into_iter()
        .map(|(name, t)| {
            let contents = match &t.data {
                citadel_infer::Data::F32(v) => {
                    pb::InferTensorContents { fp32_contents: v.clone(), ..Default::default() }
                }
                citadel_infer::Data::Str(v) => pb::InferTensorContents {
                    bytes_contents: v.iter().map(|s| s.as_bytes().to_vec()).collect(),
                    ..Default::default()
                },
                _ => pb::InferTensorContents::default(),
            };
            pb::InferInputTensor {
                name,
                datatype: t.dtype().v2_name().into(),
                shape: t.shape.iter().map(|&d| d as i64).collect(),
                contents: Some(contents),
                ..Default::default()
            }
        })
        .collect();
    Ok(pb::ModelInferRequest { model_name: model.into(), inputs, ..Default::default() })
}

/// A gRPC request for an MLServer model taking `X` `[1, n]` FP32.
pub fn tensor_grpc(model: &str, row: &[f32]) -> Vec<u8> {
    use citadel_serve::grpc_pb as pb;
    grpc_frame(&pb::ModelInferRequest {
        model_name: model.into(),
        inputs: vec![pb::InferInputTensor {
            name: "X".into(),
            datatype: "FP32".into(),
            shape: vec![1, row.len() as i64],
            contents: Some(pb::InferTensorContents { fp32_contents: row.to_vec(), ..Default::default() }),
            ..Default::default()
        }],
        ..Default::default()
    })
}

/// The gRPC length-prefixed message: an uncompressed flag, the length (big-endian), the bytes.
fn grpc_frame(m: &impl Message) -> Vec<u8> {
    let body = m.encode_to_vec();
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(0);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Unary gRPC load with h2load: (requests/s, p50 ms, p99 ms, errors).
pub fn h2load(
    url: &str,
    body: &Path,
    token: Option<&str>,
    concurrency: u32,
    secs: u64,
    dir: &Path,
) -> Result<(f64, f64, f64, u64)> {
    let log = dir.join(format!("h2load-{concurrency}-{}.log", citadel_types::random_id("")));
    let mut c = Command::new("h2load");
    c.args(["-c", &concurrency.to_string(), "-m", "1", "-t", &concurrency.clamp(1, 2).to_string()])
        .args(["-D", &secs.to_string(), "--warm-up-time", "1", "-d"])
        .arg(body)
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers", "--log-file"])
        .arg(&log);
    if let Some(t) = token {
        c.args(["-H", &format!("authorization: Bearer {t}")]);
    }
    let out = c.arg(url).output().context("running h2load (apt-get install nghttp2-client)")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // "requests: 1000 total, 1000 started, 1000 done, 1000 succeeded, 0 failed, 0 errored, 0 timeout"
    let field = |line: &str, key: &str| -> Option<u64> {
        let i = line.find(key)?;
        line[..i].split([',', ':']).next_back()?.trim().parse().ok()
    };
    let req_line = text.lines().find(|l| l.starts_with("requests:")).ok_or_else(|| anyhow!("h2load said: {text}"))?;
    let errors = field(req_line, " failed").unwrap_or(0) + field(req_line, " errored").unwrap_or(0);
    // The log: start time (µs), status, elapsed (µs) per request.
    let mut times: Vec<f64> = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split('\t').nth(2)?.trim().parse::<f64>().ok())
        .map(|us| us / 1000.0)
        .collect();
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times.get(((times.len() as f64 * p) as usize).min(times.len().saturating_sub(1))).copied();
    let rps = times.len() as f64 / secs as f64;
    Ok((rps, pct(0.5).unwrap_or(f64::NAN), pct(0.99).unwrap_or(f64::NAN), errors))
}

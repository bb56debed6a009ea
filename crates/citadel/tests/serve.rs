//! The gateway end to end: the real binary serving verified models over TLS,
//! driven with curl, openssl, promtool and the official tritonclient.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../citadel-infer/tests/fixtures").join(name)
}

fn reference_case(name: &str) -> Value {
    let r: Value = serde_json::from_slice(&std::fs::read(fixture("onnx_reference.json")).unwrap()).unwrap();
    r["cases"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap().clone()
}

/// Registers `file` as the next version of `model` and moves it to `stage` through requests and approvals.
fn register(ws: &Ws, eng: &str, appr: &str, model: &str, file: &str, stage: &str) -> i64 {
    register_path(ws, eng, appr, model, &fixture(&format!("models/{file}.onnx")), stage)
}

fn register_path(ws: &Ws, eng: &str, appr: &str, model: &str, onnx: &Path, stage: &str) -> i64 {
    let file = onnx.file_stem().unwrap().to_string_lossy();
    let dir = ws.root.parent().unwrap().join(format!("{model}-{file}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(onnx, dir.join("model.onnx")).unwrap();
    let data = ws.root.parent().unwrap().join("train.csv");
    if !data.exists() {
        std::fs::write(&data, b"x,y\n1,0\n").unwrap();
        ws.ok(&["artifact", "put", data.to_str().unwrap(), "--name", "datasets/train"]);
    }
    let args = [
        "model",
        "register",
        dir.to_str().unwrap(),
        "--name",
        model,
        "--dataset",
        "datasets/train",
        "--code-ref",
        "git+https://example.invalid/train@abc123",
    ];
    let v = ok_json(as_user(ws, eng, &args))["version"].as_i64().unwrap();
    let stages: &[&str] = match stage {
        "staging" => &["staging"],
        "production" => &["staging", "production"],
        _ => &[],
    };
    for s in stages {
        let r = ok_json(as_user(ws, eng, &["model", "promote", &format!("{model}@{v}"), "--to", s]))["id"]
            .as_str()
            .unwrap()
            .to_string();
        ok_json(as_user(ws, appr, &["model", "approve", &r]));
    }
    v
}

struct Server {
    child: Child,
    base: String,
    ca: Option<PathBuf>,
    /// The gRPC listener's port, when started with --grpc-listen.
    grpc_port: Option<u16>,
}

impl Server {
    fn start(ws: &Ws, extra: &[&str]) -> Server {
        Server::start_with(ws, extra, |_| {})
    }

    /// As [`Server::start`], with the command adjusted first (its environment).
    fn start_with(ws: &Ws, extra: &[&str], adjust: impl FnOnce(&mut Command)) -> Server {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--json", "--poll-ms", "100"];
        args.extend_from_slice(extra);
        if !extra.contains(&"--insecure-http") && !extra.contains(&"--cert") {
            args.push("--dev-self-signed");
        }
        let mut cmd = ws.cmd(&args);
        adjust(&mut cmd);
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("serve did not start: {line}"));
        let addr = v["listening"].as_str().unwrap().to_string();
        let port = addr.rsplit(':').next().unwrap();
        let scheme = v["scheme"].as_str().unwrap();
        let host = if scheme == "https" { "localhost" } else { "127.0.0.1" };
        let grpc_port = v["grpc"].as_str().and_then(|a| a.rsplit(':').next()?.parse().ok());
        Server {
            child,
            base: format!("{scheme}://{host}:{port}"),
            ca: v["dev_ca"].as_str().map(PathBuf::from),
            grpc_port,
        }
    }

    fn port(&self) -> u16 {
        self.base.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// (status, headers, body) of one request through curl.
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
        headers: &[&str],
    ) -> (u16, String, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let (hfile, bfile) = (dir.path().join("h"), dir.path().join("b"));
        let mut c = Command::new("curl");
        c.args(["-sS", "-X", method, "-o"]).arg(&bfile).arg("-D").arg(&hfile).args(["-w", "%{http_code}"]);
        if let Some(ca) = &self.ca {
            c.arg("--cacert").arg(ca);
        }
        if let Some(t) = token {
            c.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        for h in headers {
            c.args(["-H", h]);
        }
        if let Some(b) = body {
            let f = dir.path().join("req");
            std::fs::write(&f, b).unwrap();
            c.arg("--data-binary").arg(format!("@{}", f.display()));
            if !headers.iter().any(|h| h.to_ascii_lowercase().starts_with("content-type")) {
                c.args(["-H", "Content-Type: application/json"]);
            }
        }
        c.arg(format!("{}{path}", self.base));
        let o = c.output().unwrap();
        let code = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap_or(0);
        (code, std::fs::read_to_string(&hfile).unwrap_or_default(), std::fs::read(&bfile).unwrap_or_default())
    }

    fn infer(&self, endpoint: &str, token: &str, body: &Value) -> (u16, Value) {
        let (code, _, b) = self.call(
            "POST",
            &format!("/v2/models/{endpoint}/infer"),
            Some(token),
            Some(body.to_string().as_bytes()),
            &[],
        );
        (code, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }

    /// Waits until the gateway serves deployment revision `revision` (deployments are polled).
    fn wait_for_revision(&self, endpoint: &str, token: &str, revision: i64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (code, _, b) = self.call("GET", &format!("/v2/models/{endpoint}"), Some(token), None, &[]);
            let meta: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
            if code == 200 && meta["parameters"]["revision"] == revision {
                return;
            }
            assert!(Instant::now() < deadline, "{endpoint} never reached revision {revision}: {code} {meta}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the endpoint answers with `version` (deployments are polled).
    fn wait_for_version(&self, endpoint: &str, token: &str, body: &Value, version: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (code, v) = self.infer(endpoint, token, body);
            if code == 200 && v["model_version"] == version {
                return;
            }
            assert!(Instant::now() < deadline, "{endpoint} never served version {version}: {code} {v}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rows_body(case: &Value, rows: usize) -> Value {
    let x: Vec<Vec<f64>> = serde_json::from_value(case["inputs"].clone()).unwrap();
    let flat: Vec<f64> = x[..rows].iter().flatten().map(|v| f64::from(*v as f32)).collect();
    json!({"id": "r1", "inputs": [{"name": "X", "shape": [rows, 10], "datatype": "FP32", "data": flat}]})
}

struct Setup {
    ws: Ws,
    client: String,
    other: String,
    admin: String,
    eng: String,
}

fn setup() -> Setup {
    let ws = Ws::new();
    let eng = token_for(&ws, "erin", &["data-scientist", "ml-engineer"]);
    let appr = token_for(&ws, "abe", &["approver"]);
    // v1: random forest (production); v2: logistic regression with ZipMap (staging).
    assert_eq!(register(&ws, &eng, &appr, "credit", "rf_binary_nozipmap", "production"), 1);
    assert_eq!(register(&ws, &eng, &appr, "credit", "lr_binary_zipmap", "staging"), 2);
    ok_json(as_user(&ws, &eng, &["deploy", "set", "credit", "--target", "credit@1"]));
    ws.ok(&["principal", "create", "app"]);
    ws.ok(&["grant", "add", "app", "inference-client", "--scope", "model:credit"]);
    let client = ws.json(&["token", "issue", "app"])["token"].as_str().unwrap().to_string();
    ws.ok(&["principal", "create", "intruder"]);
    ws.ok(&["grant", "add", "intruder", "inference-client", "--scope", "model:other"]);
    let other = ws.json(&["token", "issue", "intruder"])["token"].as_str().unwrap().to_string();
    let admin = token_for(&ws, "ops", &["admin"]);
    Setup { ws, client, other, admin, eng }
}

#[test]
fn serves_verified_models_that_match_onnxruntime_to_authorized_callers_only() {
    let s = setup();
    let log = s.ws.root.parent().unwrap().join("access.log");
    let srv = Server::start(&s.ws, &["--access-log", log.to_str().unwrap()]);
    // Health and metadata.
    assert_eq!(srv.call("GET", "/v2/health/live", None, None, &[]).0, 200);
    assert_eq!(srv.call("GET", "/v2/health/ready", None, None, &[]).0, 200);
    let (code, _, meta) = srv.call("GET", "/v2/models/credit", Some(&s.client), None, &[]);
    assert_eq!(code, 200);
    let meta: Value = serde_json::from_slice(&meta).unwrap();
    assert_eq!(meta["inputs"][0]["name"], "X");
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 10]));
    assert_eq!(meta["parameters"]["runtime"], "citadel-native");

    // Answers equal onnxruntime's.
    let case = reference_case("rf_binary_nozipmap");
    let (code, out) = srv.infer("credit", &s.client, &rows_body(&case, 16));
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["model_version"], "1");
    assert_eq!(out["id"], "r1");
    let labels: Vec<i64> = serde_json::from_value(out["outputs"][0]["data"].clone()).unwrap();
    let want: Vec<i64> = serde_json::from_value(case["label"].clone()).unwrap();
    assert_eq!(labels, want[..16]);
    let probs: Vec<f64> = serde_json::from_value(out["outputs"][1]["data"].clone()).unwrap();
    let want: Vec<Vec<f64>> = serde_json::from_value(case["probabilities"].clone()).unwrap();
    for (got, want) in probs.iter().zip(want[..16].iter().flatten()) {
        assert!((got - want).abs() <= 1e-5, "{got} vs {want}");
    }

    // Authentication and authorization.
    let body = rows_body(&case, 1);
    let (code, _, _) = srv.call("POST", "/v2/models/credit/infer", None, Some(body.to_string().as_bytes()), &[]);
    assert_eq!(code, 401);
    let forged = format!("cit_{}_{}", "0123456789abcdef", "A".repeat(43));
    assert_eq!(srv.infer("credit", &forged, &body).0, 401);
    assert_eq!(srv.infer("credit", "not-a-token", &body).0, 401);
    let (code, out) = srv.infer("credit", &s.other, &body);
    assert_eq!(code, 403, "{out}");
    assert!(out["error"].as_str().unwrap().contains("model.infer"), "{out}");

    // Bad input: named, 400, and the server keeps serving.
    let mut wrong = body.clone();
    wrong["inputs"][0]["shape"] = json!([1, 9]);
    wrong["inputs"][0]["data"] = json!(vec![0.0; 9]);
    let (code, out) = srv.infer("credit", &s.client, &wrong);
    assert_eq!(code, 400);
    assert!(out["error"].as_str().unwrap().contains("shape"), "{out}");
    let mut mistyped = body.clone();
    mistyped["inputs"][0]["datatype"] = json!("INT64");
    mistyped["inputs"][0]["data"] = json!(vec![1; 10]);
    let (code, out) = srv.infer("credit", &s.client, &mistyped);
    assert_eq!(code, 400);
    assert!(out["error"].as_str().unwrap().contains("FP32"), "{out}");
    let mut huge_number = body.to_string();
    huge_number = huge_number.replacen("\"data\":[", "\"data\":[1e400,", 1);
    let (code, _, _) = srv.call("POST", "/v2/models/credit/infer", Some(&s.client), Some(huge_number.as_bytes()), &[]);
    assert_eq!(code, 400);
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (code, _, _) = srv.call("POST", "/v2/models/credit/infer", Some(&s.client), Some(nested.as_bytes()), &[]);
    assert_eq!(code, 400);
    let too_many = json!({"inputs": [{"name": "X", "shape": [1_000_000_000, 10], "datatype": "FP32", "data": [0.0]}]});
    let (code, out) = srv.infer("credit", &s.client, &too_many);
    assert_eq!(code, 400, "{out}");
    let big = vec![b' '; 9 << 20];
    let (code, _, _) = srv.call("POST", "/v2/models/credit/infer", Some(&s.client), Some(&big), &[]);
    assert_eq!(code, 413);
    assert_eq!(srv.call("GET", "/v2/models/nothing-here", Some(&s.client), None, &[]).0, 403);

    // A body as MLServer's clients write it: nested data, content-type parameters, requested outputs.
    let x: Vec<Vec<f64>> = serde_json::from_value(case["inputs"].clone()).unwrap();
    let nested: Vec<Vec<f32>> = x[..2].iter().map(|r| r.iter().map(|&v| v as f32).collect()).collect();
    let mlserver_style = json!({"id": "m-1", "parameters": {"content_type": "np"},
        "inputs": [{"name": "X", "shape": [2, 10], "datatype": "FP32", "parameters": {"content_type": "np"}, "data": nested}],
        "outputs": [{"name": "probabilities"}]});
    let (code, out) = srv.infer("credit", &s.client, &mlserver_style);
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(out["outputs"][0]["shape"], json!([2, 2]));

    // The binary tensor data extension, as tritonclient sends it.
    let x: Vec<f32> = serde_json::from_value::<Vec<Vec<f64>>>(case["inputs"].clone()).unwrap()[..4]
        .iter()
        .flatten()
        .map(|&v| v as f32)
        .collect();
    let head = json!({"inputs": [{"name": "X", "shape": [4, 10], "datatype": "FP32", "parameters": {"binary_data_size": 160}}],
                      "outputs": [{"name": "label", "parameters": {"binary_data": true}}, {"name": "probabilities", "parameters": {"binary_data": false}}]})
    .to_string();
    let mut req = head.clone().into_bytes();
    x.iter().for_each(|v| req.extend_from_slice(&v.to_le_bytes()));
    let (code, headers, resp) = srv.call(
        "POST",
        "/v2/models/credit/infer",
        Some(&s.client),
        Some(&req),
        &[&format!("Inference-Header-Content-Length: {}", head.len()), "Content-Type: application/octet-stream"],
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&resp));
    let json_len: usize = headers
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase().strip_prefix("inference-header-content-length:").map(|v| v.trim().parse().unwrap())
        })
        .unwrap();
    let head: Value = serde_json::from_slice(&resp[..json_len]).unwrap();
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 32);
    let labels: Vec<i64> = resp[json_len..].chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
    let want: Vec<i64> = serde_json::from_value(case["label"].clone()).unwrap();
    assert_eq!(labels, want[..4]);

    // NaN in binary data is refused by name.
    let head = json!({"inputs": [{"name": "X", "shape": [1, 10], "datatype": "FP32", "parameters": {"binary_data_size": 40}}]}).to_string();
    let mut req = head.clone().into_bytes();
    (0..10).for_each(|i| req.extend_from_slice(&(if i == 3 { f32::NAN } else { 0.5f32 }).to_le_bytes()));
    let (code, _, resp) = srv.call(
        "POST",
        "/v2/models/credit/infer",
        Some(&s.client),
        Some(&req),
        &[&format!("Inference-Header-Content-Length: {}", head.len()), "Content-Type: application/octet-stream"],
    );
    assert_eq!(code, 400);
    assert!(String::from_utf8_lossy(&resp).contains("NaN"), "{}", String::from_utf8_lossy(&resp));

    // Metrics: admins only, valid Prometheus exposition, no secrets.
    assert_eq!(srv.call("GET", "/metrics", Some(&s.client), None, &[]).0, 403);
    let (code, _, metrics) = srv.call("GET", "/metrics", Some(&s.admin), None, &[]);
    assert_eq!(code, 200);
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(metrics.contains("citadel_inference_requests_total{"), "{metrics}");
    assert!(metrics.contains("principal=\"app\""), "{metrics}");
    assert!(!metrics.contains(&s.client[4..20]) && !metrics.contains("cit_"), "a token leaked into metrics");
    let promtool = std::env::var("CITADEL_TEST_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let mut p = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{promtool}: {e} (scripts/services.sh installs it)"));
    p.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
    let o = p.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );

    // OpenAPI is served.
    let (code, _, doc) = srv.call("GET", "/openapi.json", None, None, &[]);
    assert_eq!(code, 200);
    let doc: Value = serde_json::from_slice(&doc).unwrap();
    assert!(doc["paths"]["/v2/models/{model_name}/infer"]["post"].is_object());

    // Access log: request ids and principals, never tokens or values.
    std::thread::sleep(Duration::from_millis(300));
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.lines().count() >= 10, "{log}");
    let first: Value =
        serde_json::from_str(log.lines().find(|l| l.contains("\"status\":200") && l.contains("infer")).unwrap())
            .unwrap();
    assert_eq!(first["principal"], "app");
    assert!(first["request_id"].as_str().unwrap().starts_with("req-"));
    assert!(!log.contains(&s.client) && !log.contains(&s.client[21..]), "a token leaked into the access log");
    let sample = format!("{}", case["inputs"][0][0].as_f64().unwrap() as f32);
    assert!(!log.contains(&sample[..6.min(sample.len())]), "an input value leaked into the access log");

    // Denials are audited, and the chain still verifies.
    let denied = s.ws.json(&["audit", "query", "--outcome", "denied", "--action", "model.infer"]);
    assert!(!denied.as_array().unwrap().is_empty(), "{denied}");
    s.ws.ok(&["audit", "verify"]);
}

#[test]
fn deployment_strategies_switch_without_restart_and_tampered_models_are_refused() {
    let s = setup();
    let appr = token_for(&s.ws, "ann", &["approver"]);
    let srv = Server::start(&s.ws, &[]);
    let case = reference_case("rf_binary_nozipmap");
    let body = rows_body(&case, 1);
    srv.wait_for_version("credit", &s.client, &body, "1");
    // Every change is applied by the running gateway (no restart): wait for its revision.
    let set = |args: &[&str]| {
        let mut a = vec!["deploy", "set", "credit"];
        a.extend_from_slice(args);
        let d = ok_json(as_user(&s.ws, &s.eng, &a));
        srv.wait_for_revision("credit", &s.client, d["revision"].as_i64().unwrap());
        d
    };
    let switch = |label: &str| {
        let d = ok_json(as_user(&s.ws, &s.eng, &["deploy", "switch", "credit", label]));
        srv.wait_for_revision("credit", &s.client, d["revision"].as_i64().unwrap());
    };
    // A staging version cannot answer by default.
    let o = as_user(&s.ws, &s.eng, &["deploy", "set", "credit", "--target", "credit@2"]);
    assert!(!o.status.success());
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(text.contains("production versions only"), "{text}");

    // Canary 50/50: both versions answer.
    set(&["--strategy", "canary", "--target", "credit@1:50", "--target", "credit@2:50"]);
    let mut seen = std::collections::HashMap::new();
    for _ in 0..40 {
        let (code, v) = srv.infer("credit", &s.client, &body);
        assert_eq!(code, 200);
        *seen.entry(v["model_version"].as_str().unwrap().to_string()).or_insert(0) += 1;
    }
    assert!(seen.get("1").copied().unwrap_or(0) >= 8 && seen.get("2").copied().unwrap_or(0) >= 8, "{seen:?}");

    // Blue/green: an atomic switch and an instant switch back.
    set(&["--strategy", "blue-green", "--target", "blue=credit@1", "--target", "green=credit@2", "--active", "blue"]);
    for _ in 0..10 {
        assert_eq!(srv.infer("credit", &s.client, &body).1["model_version"], "1");
    }
    // Switch green, then back to blue, while a client keeps calling: not one request fails.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let codes = std::thread::scope(|scope| {
        let caller = scope.spawn(|| {
            let mut codes = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let (code, v) = srv.infer("credit", &s.client, &body);
                codes.push((code, v["model_version"].as_str().unwrap_or("").to_string()));
            }
            codes
        });
        switch("green");
        for _ in 0..10 {
            assert_eq!(srv.infer("credit", &s.client, &body).1["model_version"], "2");
        }
        switch("blue");
        assert_eq!(srv.infer("credit", &s.client, &body).1["model_version"], "1");
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        caller.join().unwrap()
    });
    assert!(codes.len() >= 10, "{codes:?}");
    assert!(codes.iter().all(|(c, _)| *c == 200), "a request failed during a switch: {codes:?}");
    assert!(codes.iter().any(|(_, v)| v == "2"), "{codes:?}");

    // A/B: a principal sticks to one arm.
    set(&["--strategy", "ab", "--target", "a=credit@1", "--target", "b=credit@2"]);
    let first = srv.infer("credit", &s.client, &body).1["model_version"].clone();
    for _ in 0..10 {
        assert_eq!(srv.infer("credit", &s.client, &body).1["model_version"], first);
    }

    // Shadow: the primary answers; every request is mirrored and recorded.
    set(&["--strategy", "shadow", "--target", "credit@1", "--target", "shadow=credit@2", "--shadow-fraction", "1"]);
    for _ in 0..5 {
        let (code, v) = srv.infer("credit", &s.client, &body);
        assert_eq!((code, v["model_version"].as_str()), (200, Some("1")));
    }
    std::thread::sleep(Duration::from_millis(300));
    let (code, _, capture) = srv.call("GET", "/v2/admin/capture/credit", Some(&s.admin), None, &[]);
    assert_eq!(code, 200);
    let capture: Value = serde_json::from_slice(&capture).unwrap();
    let shadows =
        capture["records"].as_array().unwrap().iter().filter(|r| r["role"] == "shadow" && r["version"] == 2).count();
    assert!(shadows >= 5, "{capture}");
    let reads = s.ws.json(&["audit", "query", "--action", "capture.read"]);
    assert_eq!(reads.as_array().unwrap().len(), 1, "capture reads are audited: {reads}");
    // Records carry the (masked) inputs for monitoring.
    assert_eq!(capture["records"][0]["inputs"][0]["name"], "X", "{capture}");

    // A version whose stored bytes changed is refused at load and audited; the endpoint keeps serving.
    let serving = set(&["--target", "credit@1"])["revision"].as_i64().unwrap();
    let before: std::collections::HashSet<PathBuf> = walk(&s.ws.root.join("objects/chunks")).into_iter().collect();
    let v3 = register(&s.ws, &s.eng, &appr, "credit", "gb_binary_nozipmap", "production");
    for f in walk(&s.ws.root.join("objects/chunks")).into_iter().filter(|f| !before.contains(f)) {
        let mut b = std::fs::read(&f).unwrap();
        let n = b.len();
        b[n / 2] ^= 1;
        std::fs::write(&f, b).unwrap();
    }
    let refused = ok_json(as_user(&s.ws, &s.eng, &["deploy", "set", "credit", "--target", &format!("credit@{v3}")]));
    assert_eq!(refused["revision"].as_i64().unwrap(), serving + 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let failures = s.ws.json(&["audit", "query", "--outcome", "failure", "--action", "deployment.load"]);
        if !failures.as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the tampered version was never refused");
        std::thread::sleep(Duration::from_millis(100));
    }
    for _ in 0..5 {
        let (code, v) = srv.infer("credit", &s.client, &body);
        assert_eq!((code, v["model_version"].as_str()), (200, Some("1")), "{v}");
    }
    // The refused revision never replaced the serving one.
    let (_, _, meta) = srv.call("GET", "/v2/models/credit", Some(&s.client), None, &[]);
    assert_eq!(serde_json::from_slice::<Value>(&meta).unwrap()["parameters"]["revision"], serving);
    let history = s.ws.json(&["deploy", "history", "credit"]);
    assert!(history.as_array().unwrap().len() >= 8, "{history}");
    s.ws.ok(&["audit", "verify"]);
}

#[test]
fn abuse_limits_hold_and_well_behaved_clients_keep_being_served() {
    let s = setup();
    let srv = Server::start(&s.ws, &["--rate-principal", "5", "--rate-principal-burst", "5"]);
    let body = rows_body(&reference_case("rf_binary_nozipmap"), 1);
    srv.wait_for_version("credit", &s.client, &body, "1");
    // Rate limit: 429 with Retry-After.
    let mut limited = None;
    for _ in 0..20 {
        let (code, headers, _) =
            srv.call("POST", "/v2/models/credit/infer", Some(&s.client), Some(body.to_string().as_bytes()), &[]);
        if code == 429 {
            limited = Some(headers);
            break;
        }
    }
    let headers = limited.expect("never rate limited");
    assert!(headers.to_ascii_lowercase().contains("retry-after:"), "{headers}");

    // TLS 1.0 and 1.1 hellos are refused; 1.2 and 1.3 are accepted.
    let hello = |flag: &str| {
        Command::new("openssl")
            .args(["s_client", flag, "-cipher", "DEFAULT@SECLEVEL=0", "-connect", &format!("127.0.0.1:{}", srv.port())])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    for old in ["-tls1", "-tls1_1"] {
        let o = hello(old);
        let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() || text.contains("Cipher is (NONE)"), "{old} was accepted: {text}");
    }
    for (ok, version) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let o = hello(ok);
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(text.contains(&format!("New, {version}, Cipher is")), "{ok} refused: {text}");
    }

    // Slow clients and a flood of idle connections do not stop service.
    let py = std::env::var("CITADEL_TEST_VENV_PYTHON").unwrap_or_else(|_| "python3".into());
    let flood = format!(
        r#"
import resource, socket, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
socks = []
for i in range(10000):
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect(("127.0.0.1", {port}))
    except BlockingIOError:
        pass
    socks.append(s)
for s in socks[:200]:
    try:
        s.send(b"\x16\x03")  # a TLS record header, then nothing (slowloris)
    except OSError:
        pass
print("open", len(socks), flush=True)
sys.stdin.readline()
"#,
        port = srv.port()
    );
    let mut holder =
        Command::new(&py).args(["-c", &flood]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("open 10000"), "{line}");
    std::thread::sleep(Duration::from_millis(1200));
    // The rate limiter has refilled by now; a well-behaved client is served while 10,000 connections are held.
    let (code, v) = srv.infer("credit", &s.client, &body);
    assert_eq!(code, 200, "{v}");
    holder.stdin.take().unwrap().write_all(b"\n").unwrap();
    holder.wait().unwrap();
    let (code, _) = srv.infer("credit", &s.client, &body);
    assert_eq!(code, 200);
}

#[test]
fn tritonclient_talks_to_the_gateway_with_binary_tensors() {
    let s = setup();
    let srv = Server::start(&s.ws, &[]);
    let case = reference_case("rf_binary_nozipmap");
    srv.wait_for_version("credit", &s.client, &rows_body(&case, 1), "1");
    let py = std::env::var("CITADEL_TEST_VENV_PYTHON").expect("CITADEL_TEST_VENV_PYTHON (scripts/services.sh sets it)");
    let script = format!(
        r#"
import json, sys, ssl
import numpy as np
import tritonclient.http as http
case = json.load(open({reference:?}))
case = [c for c in case["cases"] if c["name"] == "rf_binary_nozipmap"][0]
x = np.array(case["inputs"][:32], dtype=np.float32)
ctx = ssl.create_default_context(cafile={ca:?})
client = http.InferenceServerClient(url="localhost:{port}", ssl=True, ssl_context_factory=lambda: ctx)
headers = {{"Authorization": "Bearer " + sys.argv[1]}}
assert client.is_server_live(headers=headers)
meta = client.get_model_metadata("credit", headers=headers)
inp = http.InferInput("X", list(x.shape), "FP32")
inp.set_data_from_numpy(x, binary_data=True)
outs = [http.InferRequestedOutput("label", binary_data=True), http.InferRequestedOutput("probabilities", binary_data=True)]
res = client.infer("credit", [inp], outputs=outs, headers=headers)
labels = res.as_numpy("label").tolist()
probs = res.as_numpy("probabilities")
assert labels == case["label"][:32], (labels, case["label"][:32])
assert np.max(np.abs(probs - np.array(case["probabilities"][:32]))) <= 1e-5
try:
    client.infer("credit", [inp], headers={{"Authorization": "Bearer cit_0000000000000000_" + "A" * 43}})
    raise SystemExit("a forged token was accepted")
except http.InferenceServerException as e:
    assert "401" in str(e.status()) or "credential" in str(e) or "token" in str(e), e
print("ok", meta["name"])
"#,
        reference = fixture("onnx_reference.json").display().to_string(),
        ca = srv.ca.as_ref().unwrap().display().to_string(),
        port = srv.port()
    );
    let o = Command::new(&py).args(["-c", &script, &s.client]).output().unwrap();
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("ok credit"));
}

#[test]
fn plain_http_is_refused_off_loopback() {
    let ws = Ws::new();
    let o = ws.run(&["serve", "--listen", "0.0.0.0:0", "--insecure-http"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("loopback"), "{}", stderr(&o));
    let o = ws.run(&["serve", "--listen", "127.0.0.1:0"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("hint:"), "{}", stderr(&o));
}

fn served_certificate(port: u16) -> String {
    let o = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", "localhost"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let start = text.find("-----BEGIN CERTIFICATE-----").unwrap_or(0);
    let end = text.find("-----END CERTIFICATE-----").map(|e| e + 25).unwrap_or(0);
    text[start..end].to_string()
}

#[test]
fn client_certificates_and_jwts_authenticate_and_certificates_reload_without_restart() {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use base64::Engine;
    let s = setup();
    let dir = s.ws.root.parent().unwrap().join("pki");
    std::fs::create_dir_all(&dir).unwrap();
    let pki = Pki::new(&dir);
    let (cert, key, _) = pki.issue("server", false);
    let (client_cert, client_key, client_fp) = pki.issue("app-client", true);
    let (stranger_cert, stranger_key, _) = pki.issue("stranger", true);
    // An ES256 identity provider.
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap().as_ref().to_vec();
    let point =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8).unwrap().public_key().as_ref().to_vec();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "idp-1", "x": b64.encode(&point[1..33]), "y": b64.encode(&point[33..])}]}).to_string()).unwrap();
    let jwt = |sub: &str, aud: &str| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some("idp-1".into());
        let claims = json!({"sub": sub, "iss": "https://idp.test", "aud": aud, "exp": now + 300});
        jsonwebtoken::encode(&h, &claims, &jsonwebtoken::EncodingKey::from_ec_der(&pkcs8)).unwrap()
    };
    let mut srv = Server::start(
        &s.ws,
        &[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--client-ca",
            pki.ca.to_str().unwrap(),
            "--client-principal",
            &format!("{client_fp}=app"),
            "--jwks",
            jwks.to_str().unwrap(),
            "--jwt-issuer",
            "https://idp.test",
            "--jwt-audience",
            "citadel",
        ],
    );
    srv.ca = Some(pki.ca.clone());
    let body = rows_body(&reference_case("rf_binary_nozipmap"), 1);
    srv.wait_for_version("credit", &s.client, &body, "1");
    let with_cert = |c: &Path, k: &Path| {
        let o = Command::new("curl")
            .args(["-sS", "-o", "/dev/stdout", "-w", "\n%{http_code}", "--cacert"])
            .arg(&pki.ca)
            .arg("--cert")
            .arg(c)
            .arg("--key")
            .arg(k)
            .args(["-H", "Content-Type: application/json", "--data-binary", &body.to_string()])
            .arg(format!("{}/v2/models/credit/infer", srv.base))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        text.rsplit('\n').next().unwrap().parse::<u16>().unwrap_or(0)
    };
    // A mapped client certificate is a principal; an unmapped one is not.
    assert_eq!(with_cert(&client_cert, &client_key), 200);
    assert_eq!(with_cert(&stranger_cert, &stranger_key), 401);
    // The certificate's principal was just verified (and cached): a header
    // that spells the certificate's cache entry must not pose as it.
    for forged in [format!("mtls:{client_fp}"), format!("Bearer mtls:{client_fp}"), client_fp.to_string()] {
        let (code, _, _) = srv.call(
            "POST",
            "/v2/models/credit/infer",
            None,
            Some(body.to_string().as_bytes()),
            &[&format!("Authorization: {forged}")],
        );
        assert_eq!(code, 401, "{forged}");
    }
    // JWTs: the subject must be an enabled principal of the identity
    // provider (kind oidc) with the grant, for this audience; a local
    // principal of the same name is never taken over by a token.
    for (name, scope) in [("sso-app", "model:credit"), ("sso-intruder", "model:other")] {
        s.ws.ok(&["principal", "create", name, "--kind", "oidc"]);
        s.ws.ok(&["grant", "add", name, "inference-client", "--scope", scope]);
    }
    assert_eq!(srv.infer("credit", &jwt("sso-app", "citadel"), &body).0, 200);
    assert_eq!(srv.infer("credit", &jwt("sso-intruder", "citadel"), &body).0, 403);
    assert_eq!(srv.infer("credit", &jwt("ghost", "citadel"), &body).0, 401);
    assert_eq!(srv.infer("credit", &jwt("app", "citadel"), &body).0, 401, "a local principal answers no JWT");
    assert_eq!(srv.infer("credit", &jwt("sso-app", "another-api"), &body).0, 401);
    let none = format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none"}"#),
        b64.encode(
            json!({"sub": "app", "iss": "https://idp.test", "aud": "citadel", "exp": 9_999_999_999u64}).to_string()
        )
    );
    assert_eq!(srv.infer("credit", &none, &body).0, 401);
    let refusals = s.ws.json(&["audit", "query", "--outcome", "denied", "--action", "auth.jwt"]);
    assert!(refusals.as_array().unwrap().len() >= 2, "{refusals}");

    // The certificate is renewed on disk: new connections get the new one, no restart.
    let before = served_certificate(srv.port());
    assert!(before.contains("BEGIN CERTIFICATE"));
    std::thread::sleep(Duration::from_millis(1100)); // a different modification time
    pki.issue("server", false);
    let renewed = std::fs::read_to_string(&cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while served_certificate(srv.port()).trim() != renewed.trim() {
        assert!(Instant::now() < deadline, "the renewed certificate was never served");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_ne!(before.trim(), renewed.trim());
    assert_eq!(srv.infer("credit", &s.client, &body).0, 200);
}

#[test]
fn schemathesis_finds_no_server_error_or_schema_violation() {
    let s = setup();
    let srv = Server::start(&s.ws, &[]);
    srv.wait_for_version("credit", &s.client, &rows_body(&reference_case("rf_binary_nozipmap"), 1), "1");
    let venv =
        std::env::var("CITADEL_TEST_VENV_PYTHON").expect("CITADEL_TEST_VENV_PYTHON (scripts/services.sh sets it)");
    let st = Path::new(&venv).with_file_name("schemathesis");
    // A caller allowed everywhere, so requests reach the model and the admin routes.
    let fuzzer = token_for(&s.ws, "fuzzer", &["inference-client", "admin"]);
    // Path parameters name the served endpoint, so generated bodies reach the model.
    let config = s.ws.root.parent().unwrap().join("schemathesis.toml");
    std::fs::write(&config, "[parameters]\n\"path.model_name\" = \"credit\"\n\"path.model_version\" = \"1\"\n")
        .unwrap();
    // schemathesis keeps a cache in its working directory: keep it out of the source tree.
    let o = Command::new(&st)
        .current_dir(s.ws.root.parent().unwrap())
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{}/openapi.json", srv.base)])
        .args(["-H", &format!("Authorization: Bearer {fuzzer}")])
        .arg("--tls-verify")
        .arg(srv.ca.as_ref().unwrap())
        .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,ignored_auth"])
        .args(["-n", "40", "--generation-deterministic", "--request-timeout", "10"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/services.sh installs it)", st.display()));
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{text}");
    // It really exercised the API (a schema it could not read would test nothing).
    assert!(text.contains("Tested: 13") && !text.contains("Authentication failed"), "{text}");
    // The server is still up and serving.
    assert_eq!(srv.infer("credit", &s.client, &rows_body(&reference_case("rf_binary_nozipmap"), 1)).0, 200);
}

/// A gradient-boosted model on UCI Adult exported with named raw inputs (as
/// pipelines export them), the held-out rows, and what the model answers
/// for them in-process.
struct NamedModel {
    onnx: PathBuf,
    rows: citadel_ml::Table,
    encoder: citadel_ml::FeatureEncoder,
    classes: Vec<String>,
    labels: Vec<String>,
    p1: Vec<f32>,
}

fn named_model(dir: &Path) -> NamedModel {
    named_model_of(dir, "gradient_boosting")
}

/// `trainer`: "gradient_boosting" (TreeSHAP) or "logistic_regression" (KernelSHAP).
fn named_model_of(dir: &Path, trainer: &str) -> NamedModel {
    let m = task_model(dir, trainer, "income", false);
    let p1 = m.scores.chunks(2).map(|r| r[1]).collect();
    NamedModel { onnx: m.onnx, rows: m.rows, encoder: m.encoder, classes: m.classes, labels: m.labels, p1 }
}

/// A model of Adult's `label` as a pipeline exports it (named inputs),
/// trained by `trainer` as a classifier of the label's values, or as a
/// regressor; with its answers for 64 held-out rows as served in-process:
/// the labels (none for a regressor) and the probabilities or predictions.
struct TaskModel {
    onnx: PathBuf,
    rows: citadel_ml::Table,
    encoder: citadel_ml::FeatureEncoder,
    classes: Vec<String>,
    labels: Vec<String>,
    scores: Vec<f32>,
}

fn task_model(dir: &Path, trainer: &str, label: &str, regression: bool) -> TaskModel {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/adult/adult.data")).unwrap();
    let names = [
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
    let numeric = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"];
    let t = citadel_ml::Table::from_unquoted_csv(&text, &names, &numeric, "?").unwrap();
    let labels = if regression {
        citadel_ml::Labels::fit_regression(&t, label).unwrap()
    } else {
        citadel_ml::Labels::fit(&t, label, (label == "income").then_some(">50K")).unwrap()
    };
    let y = labels.encode(&t).unwrap();
    let (train, test) = match labels.objective {
        citadel_ml::gbt::Objective::Binary => citadel_ml::split::stratified(&y, 0.2, 7),
        _ => citadel_ml::split::random(y.len(), 0.2, 7),
    };
    let (tt, te) = (t.take(&train), t.take(&test[..64]));
    let ytr: Vec<f32> = train.iter().map(|&i| y[i]).collect();
    let features: Vec<String> =
        ["age", "workclass", "education", "marital-status", "occupation", "capital-gain", "hours-per-week"]
            .iter()
            .filter(|f| **f != label)
            .map(|s| s.to_string())
            .collect();
    let encoder = citadel_ml::FeatureEncoder::fit(&tt, &features, &ytr).unwrap();
    let x = encoder.encode(&tt).unwrap();
    let meta = vec![
        ("citadel.classes".to_string(), serde_json::to_string(&labels.classes).unwrap()),
        citadel_ml::explain::background_metadata(&citadel_ml::explain::background_sample(&x, 100)),
    ];
    let iface = citadel_ml::Interface::Named { classes: &labels.classes };
    let bytes = if trainer == "gradient_boosting" {
        let p = citadel_ml::gbt::GbtParams { max_iter: 30, ..Default::default() };
        let m = citadel_ml::gbt::fit_objective(&x, &ytr, &p, &[], labels.objective).unwrap();
        m.to_onnx(&encoder, iface, meta).unwrap()
    } else {
        let p = citadel_ml::lr::LrParams::default();
        let m = citadel_ml::lr::fit_objective(&encoder, &x, &ytr, &p, &[], labels.objective).unwrap();
        m.to_onnx(&encoder, iface, meta).unwrap()
    };
    let onnx = dir.join(format!("adult_{label}_{trainer}.onnx"));
    std::fs::write(&onnx, &bytes).unwrap();
    let model = citadel_infer::Model::load(&bytes).unwrap();
    let out = model.run(encoder.named_tensors(&te).unwrap().into_iter().map(|(_, t)| t).collect()).unwrap();
    let (labels_out, scores) = match out.as_slice() {
        [l, p] => {
            let citadel_infer::Data::Str(l) = &l.data else { panic!("labels are strings") };
            (l.clone(), p.to_f32().unwrap())
        }
        [v] => (Vec::new(), v.to_f32().unwrap()),
        other => panic!("outputs {other:?}"),
    };
    TaskModel { onnx, rows: te, encoder, classes: labels.classes.clone(), labels: labels_out, scores }
}

/// A workspace serving the named boosting model as endpoint `income`, and
/// an inference client's token for it.
fn named_setup() -> (Ws, NamedModel, String) {
    let ws = Ws::new();
    let eng = token_for(&ws, "erin", &["data-scientist", "ml-engineer"]);
    let appr = token_for(&ws, "abe", &["approver"]);
    let m = named_model(ws.root.parent().unwrap());
    register_path(&ws, &eng, &appr, "income", &m.onnx, "production");
    ok_json(as_user(&ws, &eng, &["deploy", "set", "income", "--target", "income@1"]));
    ws.ok(&["principal", "create", "app"]);
    ws.ok(&["grant", "add", "app", "inference-client", "--scope", "model:income"]);
    let client = ws.json(&["token", "issue", "app"])["token"].as_str().unwrap().to_string();
    (ws, m, client)
}

/// The labels and positive-class probabilities of a response.
fn answers(v: &Value) -> (Vec<String>, Vec<f32>) {
    let out = |n: &str| v["outputs"].as_array().unwrap().iter().find(|o| o["name"] == n).unwrap().clone();
    let labels = out("label")["data"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_string()).collect();
    let p =
        out("probabilities")["data"].as_array().unwrap().iter().map(|p| p.as_f64().unwrap() as f32).collect::<Vec<_>>();
    (labels, p.chunks(2).map(|r| r[1]).collect())
}

#[test]
fn named_raw_features_are_served_in_every_request_shape_with_readable_answers_and_clean_errors() {
    let (ws, m, client) = named_setup();
    let srv = Server::start(&ws, &[]);
    let columns = json!({"inputs": m.encoder.v2_inputs(&m.rows).unwrap()});
    srv.wait_for_version("income", &client, &columns, "1");
    let same = |what: &str, v: &Value| {
        let (labels, p1) = answers(v);
        assert_eq!(labels, m.labels, "{what}: labels");
        let worst = p1.iter().zip(&m.p1).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst <= 1e-6, "{what}: probabilities differ by {worst}");
    };

    // Metadata: one input per feature with its kind, categories and range; class names on the outputs.
    let (code, _, meta) = srv.call("GET", "/v2/models/income", Some(&client), None, &[]);
    assert_eq!(code, 200);
    let meta: Value = serde_json::from_slice(&meta).unwrap();
    let inputs = meta["inputs"].as_array().unwrap();
    let names: Vec<&str> = inputs.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["age", "workclass", "education", "marital-status", "occupation", "capital-gain", "hours-per-week"]
    );
    assert_eq!(inputs[1]["datatype"], "BYTES");
    assert!(inputs[1]["parameters"]["categories"].as_array().unwrap().iter().any(|c| c == "Private"), "{meta}");
    assert_eq!(inputs[0]["datatype"], "FP32");
    let age = &inputs[0]["parameters"];
    assert!(age["p1"].as_f64().unwrap() >= 17.0 && age["p99"].as_f64().unwrap() <= 90.0, "{meta}");
    assert_eq!(meta["outputs"][0]["datatype"], "BYTES");
    assert_eq!(meta["outputs"][1]["parameters"]["classes"], json!(m.classes));

    // 1. Open Inference Protocol columns.
    let (code, v) = srv.infer("income", &client, &columns);
    assert_eq!(code, 200, "{v}");
    same("columns", &v);
    assert!(m.labels.iter().all(|l| m.classes.contains(l)));
    // 2. MLServer's pandas codec: columns of shape [N], integers as INT64.
    let mut pd = columns.clone();
    for input in pd["inputs"].as_array_mut().unwrap() {
        input["shape"] = json!([m.rows.rows]);
        if input["name"] == "capital-gain" {
            input["datatype"] = json!("INT64");
        }
        if input["datatype"] == "BYTES" {
            input["parameters"] = json!({"content_type": "str"});
        }
    }
    pd["parameters"] = json!({"content_type": "pd"});
    let (code, v) = srv.infer("income", &client, &pd);
    assert_eq!(code, 200, "{v}");
    same("pandas codec", &v);
    // 3. A JSON array of records.
    let records: Vec<Value> = (0..m.rows.rows)
        .map(|i| {
            let mut r = serde_json::Map::new();
            for input in columns["inputs"].as_array().unwrap() {
                r.insert(input["name"].as_str().unwrap().to_string(), input["data"][i].clone());
            }
            Value::Object(r)
        })
        .collect();
    let (code, v) = srv.infer("income", &client, &Value::Array(records.clone()));
    assert_eq!(code, 200, "{v}");
    same("records", &v);

    // A category training never saw, and missing values: answered as the graph
    // documents (unseen → code -1, null category → the missing category,
    // null number → the training median), the same as in-process.
    let mut odd = records[0].clone();
    odd["workclass"] = json!("Space-agency");
    odd["occupation"] = Value::Null;
    odd["hours-per-week"] = Value::Null;
    let (code, v) = srv.infer("income", &client, &json!([odd]));
    assert_eq!(code, 200, "{v}");
    let mut t = m.rows.take(&[0]);
    for (name, col) in t.names.clone().iter().zip(t.columns.iter_mut()) {
        match (name.as_str(), col) {
            ("workclass", citadel_ml::Column::Cat(c)) => c[0] = Some("Space-agency".into()),
            ("occupation", citadel_ml::Column::Cat(c)) => c[0] = None,
            ("hours-per-week", citadel_ml::Column::Num(c)) => c[0] = None,
            _ => {}
        }
    }
    let local = citadel_infer::Model::load(&std::fs::read(&m.onnx).unwrap())
        .unwrap()
        .run(m.encoder.named_tensors(&t).unwrap().into_iter().map(|(_, t)| t).collect())
        .unwrap();
    let (_, p1) = answers(&v);
    assert!((p1[0] - local[1].to_f32().unwrap()[1]).abs() <= 1e-6);

    // Bad input: clean 400s that name the problem.
    let refused = |what: &str, body: &Value, needle: &str| {
        let (code, v) = srv.infer("income", &client, body);
        assert_eq!(code, 400, "{what}: {v}");
        let e = v["error"].as_str().unwrap_or_default();
        assert!(e.contains(needle), "{what}: {e}");
    };
    let mut unknown = records[0].clone();
    unknown["agee"] = json!(39);
    refused("unknown feature in a record", &json!([unknown]), "no feature \"agee\"");
    let mut missing = records[0].clone();
    missing.as_object_mut().unwrap().remove("education");
    refused("missing feature in a record", &json!([missing]), "lacks feature education");
    let mut as_string = records[0].clone();
    as_string["age"] = json!("39");
    refused("number sent as a string", &json!([as_string]), "sent as a string");
    let mut number_category = records[0].clone();
    number_category["workclass"] = json!(4);
    refused("category sent as a number", &json!([number_category]), "send it as a string");
    // A record naming a feature twice is refused, not read as its last value.
    let twice = records[0].to_string().replacen('{', "{\"age\":99,", 1);
    let (code, _, b) =
        srv.call("POST", "/v2/models/income/infer", Some(&client), Some(format!("[{twice}]").as_bytes()), &[]);
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&b));
    assert!(String::from_utf8_lossy(&b).contains("appears twice"), "{}", String::from_utf8_lossy(&b));
    // An integer FP32 cannot hold exactly is refused, not rounded.
    let mut big = columns.clone();
    big["inputs"][5]["datatype"] = json!("INT64");
    big["inputs"][5]["data"] = json!(vec![16_777_217i64; m.rows.rows]);
    refused("an integer FP32 rounds", &big, "without changing its value");
    // null in a BYTES column of the OIP form is the missing category, as in records.
    let mut null_cat = columns.clone();
    null_cat["inputs"][1]["data"][0] = Value::Null;
    let (code, v) = srv.infer("income", &client, &null_cat);
    assert_eq!(code, 200, "{v}");
    let mut extra = columns.clone();
    extra["inputs"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "race", "shape": [1, 1], "datatype": "BYTES", "data": ["White"]}));
    refused("unknown input", &extra, "no input race");
    let mut short = columns.clone();
    short["inputs"].as_array_mut().unwrap().remove(2);
    refused("missing input", &short, "education");
    let mut str_age = columns.clone();
    str_age["inputs"][0]["datatype"] = json!("BYTES");
    str_age["inputs"][0]["data"] = json!(vec!["39"; m.rows.rows]);
    refused("numbers as BYTES", &str_age, "sent as a string");
    let tensor_form =
        json!({"inputs": [{"name": "X", "shape": [1, 7], "datatype": "FP32", "data": [0, 0, 0, 0, 0, 0, 0]}]});
    refused("the single-tensor form to a named model", &tensor_form, "its inputs are age, workclass");
    refused("an empty record list", &json!([]), "no records");

    // BYTES that are not UTF-8, in the binary tensor extension.
    let mut head = columns.clone();
    let mut binary = Vec::new();
    for input in head["inputs"].as_array_mut().unwrap() {
        let mut buf = Vec::new();
        if input["datatype"] == "BYTES" {
            for (i, s) in input["data"].as_array().unwrap().iter().enumerate() {
                let bytes: Vec<u8> = if i == 3 && input["name"] == "workclass" {
                    vec![0xff, 0xfe, b'x']
                } else {
                    s.as_str().unwrap().as_bytes().to_vec()
                };
                buf.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                buf.extend_from_slice(&bytes);
            }
        } else {
            for x in input["data"].as_array().unwrap() {
                buf.extend_from_slice(&(x.as_f64().unwrap() as f32).to_le_bytes());
            }
        }
        input.as_object_mut().unwrap().remove("data");
        input["parameters"] = json!({"binary_data_size": buf.len()});
        binary.extend_from_slice(&buf);
    }
    let mut body = head.to_string().into_bytes();
    let header = format!("Inference-Header-Content-Length: {}", body.len());
    body.extend_from_slice(&binary);
    let (code, _, b) = srv.call(
        "POST",
        "/v2/models/income/infer",
        Some(&client),
        Some(&body),
        &[&header, "Content-Type: application/octet-stream"],
    );
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&b));
    assert!(String::from_utf8_lossy(&b).contains("not UTF-8"), "{}", String::from_utf8_lossy(&b));

    // The official tritonclient sends the columns as BYTES and FP32 tensors.
    let py = std::env::var("CITADEL_TEST_VENV_PYTHON").expect("CITADEL_TEST_VENV_PYTHON (scripts/services.sh sets it)");
    let script = format!(
        r#"
import json, sys, ssl
import numpy as np
import tritonclient.http as http
cols = json.loads(sys.argv[2])["inputs"]
ctx = ssl.create_default_context(cafile={ca:?})
client = http.InferenceServerClient(url="localhost:{port}", ssl=True, ssl_context_factory=lambda: ctx)
headers = {{"Authorization": "Bearer " + sys.argv[1]}}
inputs = []
for c in cols:
    if c["datatype"] == "BYTES":
        a = np.array(c["data"], dtype=object).reshape(-1, 1)
    else:
        a = np.array(c["data"], dtype=np.float32).reshape(-1, 1)
    i = http.InferInput(c["name"], list(a.shape), c["datatype"])
    i.set_data_from_numpy(a, binary_data=True)
    inputs.append(i)
res = client.infer("income", inputs, outputs=[http.InferRequestedOutput("label", binary_data=True), http.InferRequestedOutput("probabilities", binary_data=False)], headers=headers)
print(json.dumps([l.decode() for l in res.as_numpy("label").tolist()]))
"#,
        ca = srv.ca.as_ref().unwrap().display().to_string(),
        port = srv.port()
    );
    let o = Command::new(&py).args(["-c", &script, &client, &columns.to_string()]).output().unwrap();
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let triton: Vec<String> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(triton, m.labels, "tritonclient gets the class names");
}

#[test]
fn tritonclient_grpc_gets_the_same_answers_authentication_limits_and_audit_as_rest() {
    let (ws, m, client) = named_setup();
    ws.ok(&["principal", "create", "intruder"]);
    ws.ok(&["grant", "add", "intruder", "inference-client", "--scope", "model:other"]);
    let other = ws.json(&["token", "issue", "intruder"])["token"].as_str().unwrap().to_string();
    let srv = Server::start(&ws, &["--grpc-listen", "127.0.0.1:0", "--max-body-bytes", "200000"]);
    let columns = json!({"inputs": m.encoder.v2_inputs(&m.rows).unwrap()});
    srv.wait_for_version("income", &client, &columns, "1");
    let py = std::env::var("CITADEL_TEST_VENV_PYTHON").expect("CITADEL_TEST_VENV_PYTHON (scripts/services.sh sets it)");
    let script = format!(
        r#"
import json, sys
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException
token, other, cols = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])["inputs"]
root = open({ca:?}, "rb").read()
client = grpcclient.InferenceServerClient(url="localhost:{port}", ssl=True, root_certificates={ca:?})
auth = {{"authorization": "Bearer " + token}}
out = {{}}
out["live"] = client.is_server_live()
out["ready"] = client.is_model_ready("income", headers=auth)
meta = client.get_model_metadata("income", headers=auth, as_json=True)
out["inputs"] = [(i["name"], i["datatype"]) for i in meta["inputs"]]
def inputs(cols, broken=None):
    res = []
    for c in cols:
        if c["name"] == broken:
            continue
        if c["datatype"] == "BYTES":
            a = np.array(c["data"], dtype=object).reshape(-1, 1)
        else:
            a = np.array(c["data"], dtype=np.float32).reshape(-1, 1)
        i = grpcclient.InferInput(c["name"], list(a.shape), c["datatype"])
        i.set_data_from_numpy(a)
        res.append(i)
    return res
res = client.infer("income", inputs(cols), headers=auth)
out["labels"] = [l.decode() for l in res.as_numpy("label").reshape(-1).tolist()]
out["p1"] = res.as_numpy("probabilities")[:, 1].tolist()
# (get_output(as_json=True) returns None in tritonclient 2.73: read the message)
out["classes"] = json.loads(res.get_output("probabilities").parameters["classes"].string_param)
def code(call):
    try:
        call()
        return "OK"
    except InferenceServerException as e:
        return str(e.status())
out["no_token"] = code(lambda: client.infer("income", inputs(cols)))
out["forged"] = code(lambda: client.infer("income", inputs(cols), headers={{"authorization": "Bearer cit_0000000000000000_" + "A" * 43}}))
out["other_model"] = code(lambda: client.infer("income", inputs(cols), headers={{"authorization": "Bearer " + other}}))
out["missing_feature"] = code(lambda: client.infer("income", inputs(cols, broken="education"), headers=auth))
out["unknown_model"] = code(lambda: client.infer("nope", inputs(cols), headers=auth))
big = np.zeros((60000, 1), dtype=np.float32)
i = grpcclient.InferInput("age", list(big.shape), "FP32")
i.set_data_from_numpy(big)
out["oversized"] = code(lambda: client.infer("income", [i], headers=auth))
print(json.dumps(out))
"#,
        ca = srv.ca.as_ref().unwrap().display().to_string(),
        port = srv.grpc_port.expect("the gateway reports its gRPC address")
    );
    let o = Command::new(&py).args(["-c", &script, &client, &other, &columns.to_string()]).output().unwrap();
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["live"], true);
    assert_eq!(v["ready"], true);
    assert_eq!(v["inputs"][1], json!(["workclass", "BYTES"]), "{v}");
    let labels: Vec<String> = serde_json::from_value(v["labels"].clone()).unwrap();
    assert_eq!(labels, m.labels, "gRPC answers equal the in-process model");
    let p1: Vec<f32> = serde_json::from_value(v["p1"].clone()).unwrap();
    let worst = p1.iter().zip(&m.p1).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst <= 1e-6, "{worst}");
    assert_eq!(v["classes"], json!(m.classes));
    assert_eq!(v["no_token"], "StatusCode.UNAUTHENTICATED");
    assert_eq!(v["forged"], "StatusCode.UNAUTHENTICATED");
    assert_eq!(v["other_model"], "StatusCode.PERMISSION_DENIED");
    assert_eq!(v["missing_feature"], "StatusCode.INVALID_ARGUMENT");
    // Authorization comes before the lookup (as on REST): which models exist is not revealed.
    assert_eq!(v["unknown_model"], "StatusCode.PERMISSION_DENIED");
    assert!(
        ["StatusCode.RESOURCE_EXHAUSTED", "StatusCode.OUT_OF_RANGE"].contains(&v["oversized"].as_str().unwrap()),
        "{v}"
    );
    // The denial was audited, as on REST.
    let denied = ws.json(&["audit", "query", "--outcome", "denied", "--action", "model.infer"]);
    assert!(denied.to_string().contains("model:income"), "{denied}");
    // And the gateway keeps serving REST alongside.
    let (code, v) = srv.infer("income", &client, &columns);
    assert_eq!(code, 200, "{v}");
}

#[test]
fn explanations_are_exact_shap_values_under_their_own_permission_and_audited() {
    let ws = Ws::new();
    let eng = token_for(&ws, "erin", &["data-scientist", "ml-engineer"]);
    let appr = token_for(&ws, "abe", &["approver"]);
    let trees = named_model_of(ws.root.parent().unwrap(), "gradient_boosting");
    let linear = named_model_of(ws.root.parent().unwrap(), "logistic_regression");
    register_path(&ws, &eng, &appr, "income", &trees.onnx, "production");
    register_path(&ws, &eng, &appr, "income-lr", &linear.onnx, "production");
    ok_json(as_user(&ws, &eng, &["deploy", "set", "income", "--target", "income@1"]));
    ok_json(as_user(&ws, &eng, &["deploy", "set", "income-lr", "--target", "income-lr@1"]));
    ws.ok(&["principal", "create", "app"]);
    ws.ok(&["grant", "add", "app", "inference-client", "--scope", "model:income*"]);
    let client = ws.json(&["token", "issue", "app"])["token"].as_str().unwrap().to_string();
    let srv = Server::start(&ws, &[]);
    let body = |m: &NamedModel, rows: usize| json!({"inputs": m.encoder.v2_inputs(&m.rows.take(&(0..rows).collect::<Vec<_>>())).unwrap()});
    srv.wait_for_version("income", &client, &body(&trees, 1), "1");
    srv.wait_for_version("income-lr", &client, &body(&linear, 1), "1");
    let explain = |endpoint: &str, token: &str, b: &Value| {
        let (code, _, out) = srv.call(
            "POST",
            &format!("/v2/models/{endpoint}/explain"),
            Some(token),
            Some(b.to_string().as_bytes()),
            &[],
        );
        (code, serde_json::from_slice::<Value>(&out).unwrap_or(Value::Null))
    };

    // An inference client may ask for answers, not for explanations; the denial is audited.
    let (code, v) = explain("income", &client, &body(&trees, 2));
    assert_eq!(code, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("model.explain"), "{v}");
    let denied = ws.json(&["audit", "query", "--outcome", "denied", "--action", "model.explain"]);
    assert!(!denied.as_array().unwrap().is_empty(), "{denied}");
    // An explanation adds up to the prediction, so explaining needs model.infer too.
    let (code, v) = explain("income", &eng, &body(&trees, 2));
    assert_eq!(code, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("model.infer"), "{v}");
    let eng = token_for(&ws, "ada", &["ml-engineer", "inference-client"]);

    // Trees: TreeSHAP of the log-odds; base + Σφ = the raw score, whose logistic is the served probability.
    let rows = 10;
    let (code, v) = explain("income", &eng, &body(&trees, rows));
    assert_eq!(code, 200, "{v}");
    assert!(v["method"].as_str().unwrap().starts_with("TreeSHAP"), "{v}");
    assert_eq!(v["features"].as_array().unwrap().len(), 7);
    let base = v["base_value"].as_f64().unwrap();
    for r in 0..rows {
        let phi: Vec<f64> = serde_json::from_value(v["shap_values"][r].clone()).unwrap();
        let raw = v["predictions"][r].as_f64().unwrap();
        assert!((base + phi.iter().sum::<f64>() - raw).abs() < 1e-9, "row {r} does not add up");
        let p = 1.0 / (1.0 + (-raw).exp());
        assert!((p - f64::from(trees.p1[r])).abs() < 1e-5, "row {r}: logistic(raw) {p} vs served {}", trees.p1[r]);
    }
    // Linear model: KernelSHAP of the probability, every coalition (7 features): exact, so it adds up too.
    let (code, v) = explain("income-lr", &eng, &body(&linear, 3));
    assert_eq!(code, 200, "{v}");
    assert!(v["method"].as_str().unwrap().contains("exact"), "{v}");
    let base = v["base_value"].as_f64().unwrap();
    for r in 0..3 {
        let phi: Vec<f64> = serde_json::from_value(v["shap_values"][r].clone()).unwrap();
        let pred = v["predictions"][r].as_f64().unwrap();
        assert!((base + phi.iter().sum::<f64>() - pred).abs() < 1e-6, "row {r} does not add up");
        assert!((pred - f64::from(linear.p1[r])).abs() < 1e-5, "row {r}: {pred} vs served {}", linear.p1[r]);
    }

    // Bounded: too many rows is a clean 400; an explanation is audited with counts, never values.
    let (code, v) = explain("income-lr", &eng, &body(&linear, 20));
    assert_eq!(code, 400, "{v}");
    let given = ws.json(&["audit", "query", "--outcome", "success", "--action", "model.explain"]);
    let records = given.as_array().unwrap();
    assert_eq!(records.len(), 2, "{given}");
    let text = given.to_string();
    assert!(text.contains("\"rows\":10") || text.contains("\"rows\": 10"), "{text}");
    assert!(!text.contains("Private") && !text.contains("Married"), "no payload values in the audit log: {text}");
}

/// A multi-class model answers with one of its class names and a
/// probability per class (their names in the output's parameters); a
/// regressor with its prediction and no classes; both as the model runs
/// in-process. A regressor's prediction is explained (TreeSHAP adds up to
/// it); a multi-class model's is refused with a reason.
#[test]
fn multi_class_and_regression_models_are_served_with_readable_answers() {
    let ws = Ws::new();
    let eng = token_for(&ws, "erin", &["data-scientist", "ml-engineer"]);
    let appr = token_for(&ws, "abe", &["approver"]);
    let dir = ws.root.parent().unwrap();
    let rel = task_model(dir, "gradient_boosting", "relationship", false);
    let hours = task_model(dir, "gradient_boosting", "hours-per-week", true);
    let hours_lr = task_model(dir, "logistic_regression", "hours-per-week", true);
    for (name, m) in [("rel", &rel), ("hours", &hours), ("hours-lr", &hours_lr)] {
        register_path(&ws, &eng, &appr, name, &m.onnx, "production");
        ok_json(as_user(&ws, &eng, &["deploy", "set", name, "--target", &format!("{name}@1")]));
    }
    let eng = token_for(&ws, "ada", &["ml-engineer", "inference-client"]);
    let srv = Server::start(&ws, &[]);
    let body = |m: &TaskModel, rows: usize| json!({"inputs": m.encoder.v2_inputs(&m.rows.take(&(0..rows).collect::<Vec<_>>())).unwrap()});
    let out = |v: &Value, n: &str| v["outputs"].as_array().unwrap().iter().find(|o| o["name"] == n).cloned();
    let floats =
        |o: &Value| o["data"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect::<Vec<_>>();

    // Multi-class: six relationship classes.
    srv.wait_for_version("rel", &eng, &body(&rel, 1), "1");
    let (code, v) = srv.infer("rel", &eng, &body(&rel, 64));
    assert_eq!(code, 200, "{v}");
    assert_eq!(rel.classes.len(), 6);
    let label = out(&v, "label").unwrap();
    assert_eq!(label["datatype"], "BYTES");
    let served: Vec<String> = serde_json::from_value(label["data"].clone()).unwrap();
    assert_eq!(served, rel.labels);
    assert!(served.iter().all(|l| rel.classes.contains(l)));
    let p = out(&v, "probabilities").unwrap();
    assert_eq!(p["shape"], json!([64, 6]));
    assert_eq!(p["parameters"]["classes"], json!(rel.classes));
    let p = floats(&p);
    assert!(p.iter().zip(&rel.scores).all(|(a, b)| (a - b).abs() <= 1e-6));
    assert!(p.chunks(6).all(|r| (r.iter().sum::<f32>() - 1.0).abs() < 1e-5));
    let (code, _, meta) = srv.call("GET", "/v2/models/rel", Some(&eng), None, &[]);
    assert_eq!(code, 200);
    let meta: Value = serde_json::from_slice(&meta).unwrap();
    assert_eq!(meta["outputs"][1]["parameters"]["classes"], json!(rel.classes), "{meta}");
    let explain = |endpoint: &str, b: &Value| {
        let (code, _, out) = srv.call(
            "POST",
            &format!("/v2/models/{endpoint}/explain"),
            Some(&eng),
            Some(b.to_string().as_bytes()),
            &[],
        );
        (code, serde_json::from_slice::<Value>(&out).unwrap_or(Value::Null))
    };
    let (code, v) = explain("rel", &body(&rel, 2));
    assert_eq!(code, 501, "{v}");
    assert!(v["error"].as_str().unwrap().contains("6 classes"), "{v}");

    // Regression: the prediction, no label, no classes.
    for (name, m) in [("hours", &hours), ("hours-lr", &hours_lr)] {
        srv.wait_for_version(name, &eng, &body(m, 1), "1");
        let (code, v) = srv.infer(name, &eng, &body(m, 64));
        assert_eq!(code, 200, "{v}");
        assert!(out(&v, "label").is_none(), "{v}");
        let pred = out(&v, "predictions").unwrap();
        assert_eq!(pred["shape"], json!([64, 1]));
        assert!(pred["parameters"]["classes"].is_null(), "{pred}");
        let pred = floats(&pred);
        assert!(pred.iter().zip(&m.scores).all(|(a, b)| (a - b).abs() <= 1e-6 * b.abs().max(1.0)), "{name}");
        assert!(pred.iter().all(|h| (1.0..=99.0).contains(h)), "{name}: hours per week {pred:?}");
        // Explained: base + Σφ = the prediction.
        let (code, v) = explain(name, &body(m, 3));
        assert_eq!(code, 200, "{name}: {v}");
        assert_eq!(v["output"], if name == "hours" { "raw score" } else { "prediction" }, "{v}");
        let base = v["base_value"].as_f64().unwrap();
        for r in 0..3 {
            let phi: Vec<f64> = serde_json::from_value(v["shap_values"][r].clone()).unwrap();
            assert!(
                (base + phi.iter().sum::<f64>() - f64::from(pred[r])).abs() < 1e-3,
                "{name} row {r} does not add up"
            );
        }
    }
}

/// SIGTERM: the gateway reports not ready and closes each connection after
/// its response while it keeps serving for the shutdown delay; then it stops
/// accepting, lets the request it is still reading finish, writes out its
/// access log and exits 0. Clients that follow `Connection: close` lose
/// no request.
#[test]
fn sigterm_drains_in_flight_requests_and_loses_none() {
    let (ws, m, client) = named_setup();
    let log = ws.root.parent().unwrap().join("access.log");
    let srv =
        Server::start(&ws, &["--insecure-http", "--shutdown-delay-ms", "1500", "--access-log", log.to_str().unwrap()]);
    let body = json!({"inputs": m.encoder.v2_inputs(&m.rows).unwrap()}).to_string().into_bytes();
    srv.wait_for_version("income", &client, &serde_json::from_slice(&body).unwrap(), "1");
    let addr = format!("127.0.0.1:{}", srv.port());
    let path = "/v2/models/income/infer";

    // A slow upload: its head and half its body arrive before the signal.
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {client}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    slow.write_all(head.as_bytes()).unwrap();
    slow.write_all(&body[..body.len() / 2]).unwrap();

    // Keep-alive clients, calling until the gateway tells them to go.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (addr, client, body, stop) = (addr.clone(), client.clone(), body.clone(), stop.clone());
            std::thread::spawn(move || -> (usize, bool, Vec<String>) {
                let mut s = std::net::TcpStream::connect(&addr).unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let (mut ok, mut failures) = (0, Vec::new());
                loop {
                    if let Err(e) = send_request(&mut s, path, &client, &body) {
                        failures.push(format!("sending: {e}"));
                        return (ok, false, failures);
                    }
                    match read_response(&mut r) {
                        Ok((200, headers, _)) => {
                            ok += 1;
                            if headers.iter().any(|h| h.0 == "connection" && h.1 == "close") {
                                return (ok, true, failures);
                            }
                        }
                        Ok((code, _, b)) => failures.push(format!("{code}: {}", String::from_utf8_lossy(&b))),
                        Err(e) => {
                            failures.push(format!("reading: {e}"));
                            return (ok, false, failures);
                        }
                    }
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        return (ok, false, failures);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &srv.child.id().to_string()]).status().unwrap().success());

    // Not ready at once, still answering.
    let ready = loop {
        let (code, _, b) = srv.call("GET", "/v2/health/ready", None, None, &[]);
        if code == 503 {
            break serde_json::from_slice::<Value>(&b).unwrap();
        }
        assert!(signalled.elapsed() < Duration::from_secs(1), "still ready after SIGTERM: {code}");
    };
    assert_eq!(ready["reason"], "shutting down", "{ready}");
    for c in clients {
        let (ok, told, failures) = c.join().unwrap();
        assert!(failures.is_empty(), "failed requests: {failures:?}");
        assert!(ok > 0 && told, "every client was served and told to close ({ok} answers)");
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);

    // After the delay nothing new is accepted; the upload in flight still completes.
    while std::net::TcpStream::connect(&addr).is_ok() {
        assert!(signalled.elapsed() < Duration::from_secs(5), "still accepting connections");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(signalled.elapsed() >= Duration::from_millis(1400), "stopped accepting before the delay");
    slow.write_all(&body[body.len() / 2..]).unwrap();
    let (code, headers, answer) = read_response(&mut BufReader::new(slow.try_clone().unwrap())).unwrap();
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&answer));
    let v: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answers(&v).0, m.labels);
    assert!(headers.iter().any(|h| h.0 == "connection" && h.1 == "close"), "{headers:?}");

    // Then it exits cleanly, its access log complete.
    let mut srv = srv;
    let status = loop {
        if let Some(s) = srv.child.try_wait().unwrap() {
            break s;
        }
        assert!(signalled.elapsed() < Duration::from_secs(10), "the gateway did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let lines: Vec<Value> =
        std::fs::read_to_string(&log).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let finished = lines.iter().find(|l| l["event"] == "shutdown.finished").expect("shutdown.finished logged");
    assert_eq!(finished["drained"], true, "{finished}");
    let slow_logged = lines.iter().filter(|l| l["path"] == path && l["status"] == 200).count();
    assert!(slow_logged >= 5, "every answered request is in the access log: {slow_logged}");
}

/// A Redis server of this test's own on 127.0.0.1 (Debian's redis-server,
/// installed by scripts/services.sh), killed when dropped.
struct Redis(Child, u16);

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/services.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis(child, port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two replicas sharing Redis hold one principal's limit between them
/// (GCRA: burst + rate × time, within 10%), where on their own each would
/// allow it; when Redis goes away, a replica set to `local` goes on under
/// its own limit and one set to `deny` refuses with 503.
#[test]
fn rate_limits_hold_across_replicas_through_redis_and_fall_back_as_configured() {
    let (ws, m, client) = named_setup();
    let redis = Redis::start();
    let url = format!("redis://127.0.0.1:{}", redis.1);
    let shared = ["--insecure-http", "--rate-redis", &url, "--rate-principal", "20", "--rate-principal-burst", "5"];
    let a = Server::start(&ws, &shared);
    let b = Server::start(&ws, &shared);
    let mut strict = shared.to_vec();
    strict.extend(["--rate-redis-fallback", "deny"]);
    let c = Server::start(&ws, &strict);
    let body = json!({"inputs": m.encoder.v2_inputs(&m.rows).unwrap()});
    for s in [&a, &b, &c] {
        s.wait_for_version("income", &client, &body, "1");
    }
    std::thread::sleep(Duration::from_millis(600)); // the quota refills
    let bytes = body.to_string().into_bytes();
    let path = "/v2/models/income/infer";
    let connect = |s: &Server| {
        let t = std::net::TcpStream::connect(("127.0.0.1", s.port())).unwrap();
        let r = BufReader::new(t.try_clone().unwrap());
        (t, r)
    };
    let servers = [&a, &b];
    let (mut conns, started) = ([connect(&a), connect(&b)], Instant::now());
    let (mut ok, mut limited) = (0usize, 0usize);
    while started.elapsed() < Duration::from_secs(3) {
        for (i, (t, r)) in conns.iter_mut().enumerate() {
            send_request(t, path, &client, &bytes).unwrap();
            let (code, headers, b) = read_response(r).unwrap();
            match code {
                200 => ok += 1,
                429 => {
                    limited += 1;
                    assert!(headers.iter().any(|h| h.0 == "retry-after"), "{headers:?}");
                }
                _ => panic!("{code}: {}", String::from_utf8_lossy(&b)),
            }
            // A refusal comes before the body is read, so the gateway closes that connection.
            if code != 200 {
                (*t, *r) = connect(servers[i]);
            }
        }
    }
    let expected = 5.0 + 20.0 * started.elapsed().as_secs_f64();
    assert!(
        (ok as f64 - expected).abs() <= 0.1 * expected,
        "{ok} requests allowed across two replicas; one shared limit allows {expected:.0} ({limited} refused)"
    );
    assert!(limited > 10 * ok, "the callers went far over the limit: {limited} refused");

    // Redis goes away.
    drop(redis);
    std::thread::sleep(Duration::from_millis(300));
    let (code, v) = a.infer("income", &client, &body);
    assert_eq!(code, 200, "local fallback: {v}");
    let (code, v) = c.infer("income", &client, &body);
    assert_eq!(code, 503, "{v}");
    assert!(v["error"].as_str().unwrap().contains("shared rate limiter is unavailable"), "{v}");
    // The local fallback still limits: a fast burst past 5 is refused.
    let mut codes = Vec::new();
    for _ in 0..40 {
        let (mut t, mut r) = connect(&a);
        send_request(&mut t, path, &client, &bytes).unwrap();
        codes.push(read_response(&mut r).unwrap().0);
    }
    assert!(codes.contains(&429) && codes.contains(&200), "{codes:?}");
}

/// `deploy rollback` puts the revision before back as a new revision (a
/// canary taken out), the running gateway serves it without a restart, the
/// change is audited with the revision it restored, and a target that may
/// no longer be deployed (retired since) is refused, the endpoint unchanged.
#[test]
fn a_deployment_rolls_back_to_what_it_served_before_and_the_gateway_follows() {
    let s = setup();
    let appr = token_for(&s.ws, "ann", &["approver"]);
    let srv = Server::start(&s.ws, &[]);
    let case = reference_case("rf_binary_nozipmap");
    let body = rows_body(&case, 1);
    srv.wait_for_version("credit", &s.client, &body, "1");
    let d = ok_json(as_user(
        &s.ws,
        &s.eng,
        &["deploy", "set", "credit", "--strategy", "canary", "--target", "credit@1:50", "--target", "credit@2:50"],
    ));
    assert_eq!(d["revision"], 2);
    srv.wait_for_revision("credit", &s.client, 2);

    // The canary goes: back to version 1 alone.
    let d = ok_json(as_user(&s.ws, &s.eng, &["deploy", "rollback", "credit"]));
    assert_eq!(d["revision"], 3);
    assert_eq!(d["spec"]["targets"].as_array().unwrap().len(), 1);
    assert_eq!(d["spec"]["targets"][0]["version"], 1);
    srv.wait_for_revision("credit", &s.client, 3);
    for _ in 0..10 {
        let (code, v) = srv.infer("credit", &s.client, &body);
        assert_eq!((code, v["model_version"].as_str()), (200, Some("1")), "{v}");
    }
    let audit = s.ws.json(&["audit", "query", "--action", "deployment.rollback"]);
    let rec = &audit.as_array().unwrap()[0];
    assert_eq!(rec["details"]["restored_revision"], 1, "{rec}");
    assert_eq!(rec["details"]["from_revision"], 2, "{rec}");
    // Any earlier revision by number: the canary again.
    let d = ok_json(as_user(&s.ws, &s.eng, &["deploy", "rollback", "credit", "--to", "2"]));
    assert_eq!((d["revision"].as_i64(), d["spec"]["targets"].as_array().unwrap().len()), (Some(4), 2));
    srv.wait_for_revision("credit", &s.client, 4);

    // Version 2 retired since: going back to a revision that serves it is refused, the endpoint unchanged.
    ok_json(as_user(&s.ws, &s.eng, &["deploy", "set", "credit", "--target", "credit@1"]));
    ok_json(as_user(&s.ws, &appr, &["model", "retire", "credit@2", "--reason", "failed the canary"]));
    let o = as_user(&s.ws, &s.eng, &["deploy", "rollback", "credit"]);
    assert!(!o.status.success());
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(text.contains("credit@2 is retired"), "{text}");
    let live = ok_json(as_user(&s.ws, &s.eng, &["deploy", "ls"]));
    assert_eq!(live[0]["revision"], 5, "{live}");
    // No such revision; and a caller who may not manage deployments.
    let o = as_user(&s.ws, &s.eng, &["deploy", "rollback", "credit", "--to", "9"]);
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(!o.status.success() && text.contains("no earlier revision 9"), "{text}");
    let o = as_user(&s.ws, &s.client, &["deploy", "rollback", "credit"]);
    assert!(!o.status.success());
    assert_eq!(ok_json(as_user(&s.ws, &s.eng, &["deploy", "ls"]))[0]["revision"], 5);
}

/// Retiring or archiving a version takes it out of serving (issue 14): a
/// canary arm that is retired leaves its endpoint serving the primary alone,
/// and an explicitly archived primary leaves nothing to serve, so the
/// endpoint is removed and the running gateway stops answering for it.
#[test]
fn retiring_or_archiving_a_served_version_takes_it_out_of_serving() {
    let s = setup();
    let appr = token_for(&s.ws, "ann", &["approver"]);
    let srv = Server::start(&s.ws, &[]);
    let body = rows_body(&reference_case("rf_binary_nozipmap"), 1);
    srv.wait_for_version("credit", &s.client, &body, "1");
    ok_json(as_user(
        &s.ws,
        &s.eng,
        &["deploy", "set", "credit", "--strategy", "canary", "--target", "credit@1:50", "--target", "credit@2:50"],
    ));
    srv.wait_for_version("credit", &s.client, &body, "2");

    let r = ok_json(as_user(&s.ws, &appr, &["model", "retire", "credit@2", "--reason", "worse on the canary"]));
    assert_eq!(
        r["withdrawn"],
        json!([{"endpoint": "credit", "revision": 3, "removed": false, "targets": ["credit@1"]}])
    );
    let live = ok_json(as_user(&s.ws, &s.eng, &["deploy", "ls"]));
    assert_eq!(
        (live[0]["spec"]["strategy"].as_str(), live[0]["revision"].as_i64()),
        (Some("single"), Some(3)),
        "{live}"
    );
    srv.wait_for_revision("credit", &s.client, 3);
    for _ in 0..20 {
        let (code, v) = srv.infer("credit", &s.client, &body);
        assert_eq!((code, v["model_version"].as_str()), (200, Some("1")), "{v}");
    }

    // An explicit archive of the version the endpoint serves alone: removed.
    let id = ok_json(as_user(&s.ws, &s.eng, &["model", "promote", "credit@1", "--to", "archived"]))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = ok_json(as_user(&s.ws, &appr, &["model", "approve", &id]));
    assert_eq!(r["withdrawn"], json!([{"endpoint": "credit", "revision": 4, "removed": true, "targets": []}]));
    assert_eq!(ok_json(as_user(&s.ws, &s.eng, &["deploy", "ls"])), json!([]));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, _) = srv.infer("credit", &s.client, &body);
        if code == 404 {
            break;
        }
        assert_eq!(code, 200);
        assert!(Instant::now() < deadline, "the gateway kept serving an archived version");
        std::thread::sleep(Duration::from_millis(100));
    }
    let rec = s.ws.json(&["audit", "query", "--action", "model.approve"]);
    let rec = rec.as_array().unwrap().iter().find(|r| r["details"]["to"] == "archived").unwrap().clone();
    assert_eq!(rec["details"]["withdrawn"][0]["endpoint"], "credit", "{rec}");
    s.ws.ok(&["audit", "verify"]);
}

/// A flood of bad credentials from one address: each refusal is recorded
/// (in batches) until the address's budget is spent, then it is answered
/// 429 with no lookup and no record; a client whose credential was already
/// verified keeps being served from the same address.
#[test]
fn a_flood_of_bad_credentials_is_bounded_per_address_and_recorded_in_batches() {
    let s = setup();
    let srv = Server::start(&s.ws, &["--auth-refusals-per-min", "8"]);
    let body = rows_body(&reference_case("rf_binary_nozipmap"), 1);
    srv.wait_for_version("credit", &s.client, &body, "1");
    let before = s.ws.audit_head();
    let mut codes = Vec::new();
    for i in 0..40 {
        let bad = format!("cit_{:016x}_{}", i, "x".repeat(43));
        let (code, headers, _) =
            srv.call("POST", "/v2/models/credit/infer", Some(&bad), Some(body.to_string().as_bytes()), &[]);
        if code == 429 {
            assert!(headers.to_ascii_lowercase().contains("retry-after:"), "{headers}");
        }
        codes.push(code);
    }
    let refused = codes.iter().filter(|c| **c == 401).count();
    assert_eq!(refused, 8, "{codes:?}");
    assert!(codes[8..].iter().all(|c| *c == 429), "{codes:?}");
    // No credential at all counts the same way (the budget is spent).
    let (code, _, _) = srv.call("GET", "/v2/models/credit", None, None, &[]);
    assert_eq!(code, 429);
    // The verified client (cached) is still served.
    let (code, _) = srv.infer("credit", &s.client, &body);
    assert_eq!(code, 200);
    // Exactly the refusals that were looked up are recorded, the same way.
    let deadline = Instant::now() + Duration::from_secs(10);
    let records = loop {
        let r: Vec<_> = s.ws.audit_since(before).into_iter().filter(|(a, _, _)| a.starts_with("auth.")).collect();
        if r.len() >= 8 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(records.len(), 8, "{records:?}");
    assert!(
        records.iter().all(|(a, r, o)| a == "auth.api-token" && r.starts_with("credential:token:") && o == "denied")
    );
    s.ws.ok(&["audit", "verify"]);
}

/// One plain HTTP/1.1 GET to a loopback server: its status.
fn http_status(addr: &str, path: &str, token: &str) -> u16 {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut bytes = Vec::new();
    let _ = s.read_to_end(&mut bytes);
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(64)]).to_string();
    head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// Key custody: a gateway with `--control` holds no key (no passphrase is
/// read); it serves what the server verified for it, and its serving
/// credential reads deployed models and nothing else — not a version that
/// is not deployed, not a dataset, not an artifact — while its workspace
/// configuration alone decrypts nothing (the data keys, under which dataset
/// versions and training secrets are sealed, stay wrapped by the master key).
#[test]
fn a_gateway_without_keys_serves_verified_models_and_its_credential_reads_nothing_else() {
    let s = setup();
    let gw = token_for(&s.ws, "gw", &["gateway"]);
    let people = s.ws.file("people.csv", b"age,city\n31,Lyon\n45,Paris\n52,Nantes\n");
    s.ws.ok(&["data", "add", people.to_str().unwrap(), "--name", "people"]);
    struct KillOnDrop(Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let (server, v) = spawn_listening(s.ws.cmd(&["server", "--insecure-http", "--listen", "127.0.0.1:0", "--json"]));
    let _server = KillOnDrop(server);
    let url = v["listening"].as_str().unwrap().to_string();
    let addr = url.trim_start_matches("http://").to_string();
    let gateway = Server::start_with(&s.ws, &["--insecure-http", "--control", &url], |c| {
        c.env_remove("CITADEL_PASSPHRASE").env("CITADEL_SERVING_TOKEN", &gw);
    });
    let body = rows_body(&reference_case("rf_binary_nozipmap"), 1);
    gateway.wait_for_version("credit", &s.client, &body, "1");
    let (code, answer) = gateway.infer("credit", &s.client, &body);
    assert_eq!(code, 200, "{answer}");
    // The server recorded the serving read.
    let reads = s.ws.json(&["audit", "query", "--action", "model.read"]);
    assert!(reads.as_array().unwrap().iter().any(|r| r["details"]["for"] == "serving"), "{reads}");

    // Its credential: deployed models only.
    assert_eq!(http_status(&addr, "/api/v1/serving/models/credit/versions/1", &gw), 200);
    assert_eq!(http_status(&addr, "/api/v1/serving/models/credit/versions/2", &gw), 403, "staging, not deployed");
    assert_eq!(http_status(&addr, "/api/v1/datasets/people/versions/1/rows", &gw), 403);
    let dataset = s.ws.json(&["data", "show", "people@1"]);
    let artifact = dataset["artifact_id"].as_str().unwrap();
    assert_eq!(http_status(&addr, &format!("/api/v1/artifacts/{artifact}/content"), &gw), 403);
    // Nor does its configuration decrypt anything: the workspace as the
    // gateway opens it (no passphrase) refuses, and says where keys are.
    for args in [
        vec!["data", "get", "people@1", "-o", "/dev/null/x.csv"],
        vec!["artifact", "get", artifact, "-o", "/dev/null/x"],
    ] {
        let o = s.ws.cmd(&args).env_remove("CITADEL_PASSPHRASE").env("CITADEL_TOKEN", &gw).output().unwrap();
        assert!(!o.status.success() && stderr(&o).contains("passphrase"), "{}", stderr(&o));
    }
    drop(gateway);
}

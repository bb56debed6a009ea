//! `citadel-bench serve`: single-row inference on a 10-feature logistic
//! regression, driven by wrk at several concurrencies, against
//! (a) `citadel serve` with every layer on (TLS, token auth, rate limits
//!     set high enough not to trigger, validation, metrics, access log), and
//!     the same over plain loopback HTTP;
//! (b) MLServer with its scikit-learn runtime serving the same model and
//!     the same V2 request body;
//! (c) a minimal hyper server in this process that parses the same request
//!     and computes the same model, with no security at all.
//!
//! All on this machine, in one run; wrk and the servers share its cores.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;

use crate::bench::{Cleanup, say, timed};

const PASSPHRASE: &str = "citadel-bench-throwaway-passphrase";
const MODELS_SCRIPT: &str = include_str!("../../../scripts/bench/serve_models.py");

#[derive(Debug, Serialize)]
pub struct Load {
    pub server: String,
    pub concurrency: u32,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

#[derive(Debug, Serialize)]
pub struct ServeBench {
    pub seconds_per_run: u64,
    pub loads: Vec<Load>,
    pub ratios: Vec<String>,
    pub notes: Vec<String>,
}

/// A server the benchmark started. MLServer runs its model in worker
/// processes, so each server gets its own process group and the whole group
/// is stopped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", "--", &format!("-{}", self.0.id())]).stderr(Stdio::null()).status();
        std::thread::sleep(Duration::from_millis(300));
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.0.id())]).stderr(Stdio::null()).status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python_with(modules: &str) -> Option<PathBuf> {
    std::env::var_os("CITADEL_BENCH_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain(["/tmp/skvenv/bin/python", "/tmp/citadel-services/venv/bin/python", "python3"].map(PathBuf::from))
        .find(|p| Command::new(p).args(["-c", &format!("import {modules}")]).output().is_ok_and(|o| o.status.success()))
}

fn mlserver_bin() -> Option<PathBuf> {
    std::env::var_os("CITADEL_BENCH_MLSERVER")
        .map(PathBuf::from)
        .into_iter()
        .chain(["/tmp/mlsvenv/bin/mlserver", "mlserver"].map(PathBuf::from))
        .find(|p| Command::new(p).arg("--help").output().is_ok_and(|o| o.status.success()))
}

/// Runs wrk and reads requests/s and the latency percentiles it prints.
fn wrk(url: &str, script: &Path, concurrency: u32, secs: u64) -> Result<(f64, f64, f64, u64)> {
    let threads = concurrency.clamp(1, 2);
    let out = Command::new("wrk")
        .args([
            "-t",
            &threads.to_string(),
            "-c",
            &concurrency.to_string(),
            "-d",
            &format!("{secs}s"),
            "--latency",
            "--timeout",
            "5s",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let number = |line: &str| -> Option<f64> {
        let v = line.split_whitespace().last()?;
        let (n, scale) = if let Some(n) = v.strip_suffix("us") {
            (n, 0.001)
        } else if let Some(n) = v.strip_suffix("ms") {
            (n, 1.0)
        } else if let Some(n) = v.strip_suffix('s') {
            (n, 1000.0)
        } else {
            (v, 1.0)
        };
        n.parse::<f64>().ok().map(|x| x * scale)
    };
    let rps = text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(number)
        .ok_or_else(|| anyhow!("wrk output: {text}"))?;
    let p50 = text.lines().find(|l| l.trim_start().starts_with("50%")).and_then(number).unwrap_or(f64::NAN);
    let p99 = text.lines().find(|l| l.trim_start().starts_with("99%")).and_then(number).unwrap_or(f64::NAN);
    let errors = text
        .lines()
        .filter(|l| l.contains("Non-2xx or 3xx responses:") || l.contains("Socket errors:"))
        .map(|l| {
            l.split(|c: char| !c.is_ascii_digit())
                .filter(|s| !s.is_empty())
                .map(|s| s.parse::<u64>().unwrap_or(0))
                .sum::<u64>()
        })
        .sum();
    Ok((rps, p50, p99, errors))
}

fn wait_ready(url: &str, ca: Option<&Path>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut c = Command::new("curl");
        c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}"]);
        if let Some(ca) = ca {
            c.arg("--cacert").arg(ca);
        }
        let o = c.arg(url).output()?;
        if String::from_utf8_lossy(&o.stdout).trim() == "200" {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url} never became ready");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The baseline: hyper, the same JSON parsing, the same arithmetic, nothing else.
fn spawn_minimal_hyper(coef: Vec<f32>, intercept: f32) -> Result<SocketAddr> {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let weights = Arc::new((coef, intercept));
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                let w = weights.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let w = w.clone();
                        async move {
                            use http_body_util::BodyExt;
                            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                            let x: Vec<f32> = v["inputs"][0]["data"]
                                .as_array()
                                .map(|a| a.iter().filter_map(|x| x.as_f64()).map(|x| x as f32).collect())
                                .unwrap_or_default();
                            let z: f32 = w.1 + x.iter().zip(&w.0).map(|(a, b)| a * b).sum::<f32>();
                            let p = 1.0 / (1.0 + (-z).exp());
                            let out = serde_json::json!({"model_name": "lr", "outputs": [
                                {"name": "label", "shape": [1], "datatype": "INT64", "data": [i64::from(p > 0.5)]},
                                {"name": "probabilities", "shape": [1, 2], "datatype": "FP32", "data": [1.0 - p, p]}]});
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from(out.to_string()),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    });
    Ok(addr)
}

fn lua(body: &str, token: Option<&str>) -> String {
    let mut s =
        format!("wrk.method = \"POST\"\nwrk.body = [[{body}]]\nwrk.headers[\"Content-Type\"] = \"application/json\"\n");
    if let Some(t) = token {
        s += &format!("wrk.headers[\"Authorization\"] = \"Bearer {t}\"\n");
    }
    s
}

pub fn run(dir: &Path, secs: u64, concurrencies: &[u32], keep: bool, quiet: bool) -> Result<ServeBench> {
    let mut notes = Vec::new();
    let root = dir.join(format!("citadel-bench-serve-{}", citadel_types::random_id("")));
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let _cleanup = Cleanup(root.clone(), keep);
    Command::new("wrk").arg("--version").output().context("wrk is needed (apt-get install wrk)")?;
    let py = python_with("sklearn, skl2onnx, joblib").ok_or_else(|| {
        anyhow!("no Python with scikit-learn and skl2onnx\nhint: pip install scikit-learn==1.6.1 skl2onnx, or set CITADEL_BENCH_PYTHON")
    })?;
    let model_dir = root.join("model");
    std::fs::create_dir_all(&model_dir)?;
    let script = root.join("serve_models.py");
    std::fs::write(&script, MODELS_SCRIPT)?;
    say(quiet, "training the logistic regression and exporting it (joblib, ONNX)");
    timed(Command::new(&py).arg(&script).arg(&model_dir), "serve_models.py")?;
    let weights: serde_json::Value = serde_json::from_slice(&std::fs::read(model_dir.join("weights.json"))?)?;
    let coef: Vec<f32> = serde_json::from_value(weights["coef"].clone())?;
    let intercept = weights["intercept"].as_f64().unwrap_or(0.0) as f32;
    let row: Vec<f32> = serde_json::from_value(weights["row"].clone())?;
    let body =
        serde_json::json!({"inputs": [{"name": "X", "shape": [1, 10], "datatype": "FP32", "data": row}]}).to_string();

    // ---- Citadel: a workspace with the model in production behind a deployment.
    let exe = crate::citadel_exe()?;
    let ws = root.join("ws");
    let citadel = |args: &[&str], token: Option<&str>| -> Command {
        let mut c = Command::new(&exe);
        c.env("CITADEL_PASSPHRASE", PASSPHRASE).env_remove("CITADEL_TOKEN").arg("-w").arg(&ws).args(args);
        if let Some(t) = token {
            c.env("CITADEL_TOKEN", t);
        }
        c
    };
    say(quiet, "citadel: init, register, approve into production, deploy");
    timed(citadel(&["init", "--kdf-memory-mib", "19"], None).arg(&ws), "citadel init")?;
    let token = |name: &str, role: &str| -> Result<String> {
        timed(&mut citadel(&["principal", "create", name], None), "principal create")?;
        timed(&mut citadel(&["grant", "add", name, role], None), "grant add")?;
        let (_, out) = timed(&mut citadel(&["token", "issue", name, "--json"], None), "token issue")?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        Ok(v["token"].as_str().unwrap_or_default().to_string())
    };
    let (sci, eng2, appr, client) = (
        token("sci", "data-scientist")?,
        token("eng", "ml-engineer")?,
        token("appr", "approver")?,
        token("bench-client", "inference-client")?,
    );
    let data = root.join("train.csv");
    std::fs::write(&data, "x,y\n1,0\n")?;
    timed(citadel(&["artifact", "put", "--name", "datasets/bench"], None).arg(&data), "artifact put")?;
    // The same logistic regression on UCI Adult trained by citadel, exported
    // with named raw inputs and as the single tensor of codes.
    say(quiet, "training citadel's logistic regression on UCI Adult (named and single-tensor exports)");
    let adult = crate::bench_named::adult_models("adult-named")?;
    std::fs::write(model_dir.join("adult-named.onnx"), &adult.named_onnx)?;
    std::fs::write(model_dir.join("adult-codes.onnx"), &adult.codes_onnx)?;
    // The logistic regression, and the boosting model (100 trees) beside it.
    for model in ["lr", "gbt", "adult-named", "adult-codes"] {
        let mut reg = citadel(
            &["model", "register", "--name", model, "--dataset", "datasets/bench", "--code-ref", "bench", "--json"],
            Some(&sci),
        );
        reg.arg(model_dir.join(format!("{model}.onnx")));
        timed(&mut reg, "model register")?;
        for stage in ["staging", "production"] {
            let (_, out) = timed(
                &mut citadel(&["model", "promote", &format!("{model}@1"), "--to", stage, "--json"], Some(&sci)),
                "model promote",
            )?;
            let id = serde_json::from_str::<serde_json::Value>(&out)?["id"].as_str().unwrap_or_default().to_string();
            timed(&mut citadel(&["model", "approve", &id], Some(&appr)), "model approve")?;
        }
        let target = format!("{model}@1");
        timed(&mut citadel(&["deploy", "set", model, "--target", &target], Some(&eng2)), "deploy set")?;
    }
    let serve = |extra: &[&str]| -> Result<(Proc, String, Option<PathBuf>, Option<String>)> {
        let mut c = citadel(
            &[
                "serve",
                "--json",
                "--listen",
                "127.0.0.1:0",
                "--rate-principal",
                "100000000",
                "--rate-principal-burst",
                "100000000",
                "--rate-endpoint",
                "100000000",
                "--rate-endpoint-burst",
                "100000000",
            ],
            None,
        );
        c.args(extra).process_group(0).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = c.spawn().context("starting citadel serve")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?).read_line(&mut line)?;
        let v: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("citadel serve said {line:?}"))?;
        let port = v["listening"].as_str().unwrap_or_default().rsplit(':').next().unwrap_or_default().to_string();
        let scheme = v["scheme"].as_str().unwrap_or("https");
        let host = if scheme == "https" { "localhost" } else { "127.0.0.1" };
        let grpc = v["grpc"].as_str().and_then(|a| a.rsplit(':').next()).map(|p| format!("https://localhost:{p}"));
        Ok((Proc(child), format!("{scheme}://{host}:{port}"), v["dev_ca"].as_str().map(PathBuf::from), grpc))
    };
    let access_log = root.join("access.log");
    let (_tls_proc, tls_base, ca, grpc_base) = serve(&[
        "--dev-self-signed",
        "--grpc-listen",
        "127.0.0.1:0",
        "--access-log",
        access_log.to_str().unwrap_or("-"),
    ])?;
    let (_http_proc, http_base, _, _) =
        serve(&["--insecure-http", "--access-log", root.join("access-http.log").to_str().unwrap_or("-")])?;
    // The same TLS gateway without live monitoring: the price of the sketches.
    let (_quiet_proc, quiet_base, quiet_ca, _) = serve(&[
        "--dev-self-signed",
        "--no-monitor",
        "--access-log",
        root.join("access-nomon.log").to_str().unwrap_or("-"),
    ])?;
    wait_ready(&format!("{tls_base}/v2/health/ready"), ca.as_deref())?;
    wait_ready(&format!("{http_base}/v2/health/ready"), None)?;
    wait_ready(&format!("{quiet_base}/v2/health/ready"), quiet_ca.as_deref())?;

    let mut targets: Vec<(String, String, String, String)> = vec![
        (
            "citadel (TLS, auth, limits, metrics, log)".into(),
            format!("{tls_base}/v2/models/lr/infer"),
            lua(&body, Some(&client)),
            body.clone(),
        ),
        (
            "citadel (plain HTTP, auth, limits, metrics, log)".into(),
            format!("{http_base}/v2/models/lr/infer"),
            lua(&body, Some(&client)),
            body.clone(),
        ),
        (
            "citadel boosting, 100 trees (TLS, every layer)".into(),
            format!("{tls_base}/v2/models/gbt/infer"),
            lua(&body, Some(&client)),
            body.clone(),
        ),
        (
            "citadel Adult named raw inputs, REST (TLS)".into(),
            format!("{tls_base}/v2/models/adult-named/infer"),
            lua(&adult.named_body, Some(&client)),
            adult.named_body.clone(),
        ),
        (
            "citadel Adult named raw inputs, REST (TLS), monitoring off".into(),
            format!("{quiet_base}/v2/models/adult-named/infer"),
            lua(&adult.named_body, Some(&client)),
            adult.named_body.clone(),
        ),
        (
            "citadel Adult single tensor, REST (TLS)".into(),
            format!("{tls_base}/v2/models/adult-codes/infer"),
            lua(&adult.codes_body, Some(&client)),
            adult.codes_body.clone(),
        ),
    ];
    let mut grpc_targets: Vec<(String, String, Vec<u8>, Option<String>)> = Vec::new();
    if let Some(g) = &grpc_base {
        grpc_targets.push((
            "citadel Adult named raw inputs, gRPC (TLS)".into(),
            format!("{g}/inference.GRPCInferenceService/ModelInfer"),
            adult.named_grpc.clone(),
            Some(client.clone()),
        ));
    }
    // ---- MLServer
    let mut _mls = None;
    match mlserver_bin() {
        Some(bin) => {
            let md = root.join("mlserver");
            std::fs::create_dir_all(md.join("lr"))?;
            std::fs::create_dir_all(md.join("gbt"))?;
            std::fs::copy(model_dir.join("model.joblib"), md.join("lr/model.joblib"))?;
            std::fs::copy(model_dir.join("gbt.joblib"), md.join("gbt/model.joblib"))?;
            std::fs::write(md.join("gbt/model-settings.json"), serde_json::json!({"name": "gbt", "implementation": "mlserver_sklearn.SKLearnModel", "parameters": {"uri": "./model.joblib", "version": "v1"}}).to_string())?;
            let port = free_port()?;
            let grpc_port = free_port()?;
            std::fs::write(md.join("settings.json"), serde_json::json!({"http_port": port, "grpc_port": grpc_port, "metrics_port": free_port()?, "debug": false}).to_string())?;
            std::fs::write(md.join("lr/model-settings.json"), serde_json::json!({"name": "lr", "implementation": "mlserver_sklearn.SKLearnModel", "parameters": {"uri": "./model.joblib", "version": "v1"}}).to_string())?;
            say(quiet, "starting MLServer (scikit-learn runtime)");
            let child = Command::new(&bin)
                .arg("start")
                .arg(&md)
                .current_dir(&md)
                .process_group(0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            _mls = Some(Proc(child));
            wait_ready(&format!("http://127.0.0.1:{port}/v2/models/lr/ready"), None)?;
            let version = Command::new(bin.with_file_name("python")).args(["-c", "import mlserver; print(mlserver.__version__)"]).output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
            targets.push((format!("MLServer {version} (sklearn runtime)"), format!("http://127.0.0.1:{port}/v2/models/lr/infer"), lua(&body, None), body.clone()));
            wait_ready(&format!("http://127.0.0.1:{port}/v2/models/gbt/ready"), None)?;
            targets.push((format!("MLServer {version} boosting (sklearn runtime)"), format!("http://127.0.0.1:{port}/v2/models/gbt/infer"), lua(&body, None), body.clone()));
            grpc_targets.push((
                format!("MLServer {version} gRPC (sklearn runtime)"),
                format!("http://127.0.0.1:{grpc_port}/inference.GRPCInferenceService/ModelInfer"),
                crate::bench_named::tensor_grpc("lr", &row),
                None,
            ));
        }
        None => notes.push("MLServer not found (pip install mlserver==1.7.1 mlserver-sklearn==1.7.1 scikit-learn==1.6.1 uvloop==0.19.0 (newer uvloop stops MLServer 1.7.1 at start), or set CITADEL_BENCH_MLSERVER): no comparison with it".into()),
    }
    // ---- minimal hyper
    let hyper_addr = spawn_minimal_hyper(coef, intercept)?;
    targets.push((
        "minimal hyper (no security)".into(),
        format!("http://{hyper_addr}/v2/models/lr/infer"),
        lua(&body, None),
        body.clone(),
    ));

    // Every server answers the same request the same way before it is measured.
    let mut loads = Vec::new();
    for (name, url, script_text, body) in &targets {
        let script = root.join(format!("{}.lua", loads.len() + targets.len()));
        let mut f = std::fs::File::create(&script)?;
        f.write_all(script_text.as_bytes())?;
        let mut c = Command::new("curl");
        c.args(["-s", "-X", "POST", "-H", "Content-Type: application/json", "-d", body]);
        let server_ca = if url.starts_with(&quiet_base) { &quiet_ca } else { &ca };
        if url.starts_with("https")
            && let Some(ca) = server_ca
        {
            c.arg("--cacert").arg(ca);
        }
        if url.starts_with(&tls_base) || url.starts_with(&http_base) || url.starts_with(&quiet_base) {
            c.args(["-H", &format!("Authorization: Bearer {client}")]);
        }
        let answer = String::from_utf8_lossy(&c.arg(url).output()?.stdout).to_string();
        if !answer.contains("\"outputs\"") {
            bail!("{name} did not answer the request: {answer}");
        }
        for &conc in concurrencies {
            say(quiet, &format!("{name}: concurrency {conc}, {secs} s"));
            let (rps, p50, p99, errors) = wrk(url, &script, conc, secs)?;
            loads.push(Load {
                server: name.clone(),
                concurrency: conc,
                requests_per_s: rps,
                p50_ms: p50,
                p99_ms: p99,
                errors,
            });
        }
    }
    let h2load_ok = Command::new("h2load").arg("--version").output().is_ok_and(|o| o.status.success());
    if !h2load_ok {
        notes.push("h2load not found (apt-get install nghttp2-client): no gRPC rows".into());
    }
    for (name, url, body, token) in grpc_targets.iter().filter(|_| h2load_ok) {
        let file = root.join(format!("grpc-{}.bin", loads.len()));
        std::fs::write(&file, body)?;
        for &conc in concurrencies {
            say(quiet, &format!("{name}: concurrency {conc}, {secs} s"));
            let (rps, p50, p99, errors) = crate::bench_named::h2load(url, &file, token.as_deref(), conc, secs, &root)?;
            loads.push(Load {
                server: name.clone(),
                concurrency: conc,
                requests_per_s: rps,
                p50_ms: p50,
                p99_ms: p99,
                errors,
            });
        }
    }
    let find = |prefix: &str, c: u32| {
        loads.iter().find(|l| {
            l.server.starts_with(prefix)
                && l.server.contains("boosting") == prefix.contains("boosting")
                && l.concurrency == c
        })
    };
    let mut ratios = Vec::new();
    for &c in concurrencies {
        if let (Some(tls), Some(m)) = (find("citadel (TLS", c), find("MLServer", c)) {
            ratios.push(format!(
                "c={c}: citadel TLS / MLServer throughput = {:.1}x (target >= 50x)",
                tls.requests_per_s / m.requests_per_s
            ));
        }
        if let (Some(h), Some(b)) = (find("citadel (plain", c), find("minimal hyper", c)) {
            ratios.push(format!(
                "c={c}: citadel plain HTTP / minimal hyper = {:.0}% (target >= 70%)",
                100.0 * h.requests_per_s / b.requests_per_s
            ));
        }
        if let (Some(g), Some(l)) = (find("citadel boosting", c), find("citadel (TLS", c)) {
            ratios.push(format!(
                "c={c}: citadel boosting / logistic regression (both TLS) = {:.0}%",
                100.0 * g.requests_per_s / l.requests_per_s
            ));
        }
        let mls_gbt = loads
            .iter()
            .find(|l| l.server.starts_with("MLServer") && l.server.contains("boosting") && l.concurrency == c);
        if let (Some(g), Some(m)) = (find("citadel boosting", c), mls_gbt) {
            ratios.push(format!(
                "c={c}: citadel boosting / MLServer boosting throughput = {:.1}x",
                g.requests_per_s / m.requests_per_s
            ));
        }
    }
    let row_of = |prefix: &str, c: u32| {
        loads
            .iter()
            .find(|l| l.server.starts_with(prefix) && !l.server.ends_with("monitoring off") && l.concurrency == c)
    };
    let mls_rest = |c: u32| {
        loads.iter().find(|l| {
            l.server.starts_with("MLServer")
                && !l.server.contains("boosting")
                && !l.server.contains("gRPC")
                && l.concurrency == c
        })
    };
    for &c in concurrencies {
        if let (Some(n), Some(t)) =
            (row_of("citadel Adult named raw inputs, REST", c), row_of("citadel Adult single tensor", c))
        {
            ratios.push(format!(
                "c={c}: named raw inputs / single tensor, same model (REST, TLS) = {:.0}% (target >= 80%: decoding costs <= 20%)",
                100.0 * n.requests_per_s / t.requests_per_s
            ));
        }
        if let (Some(n), Some(m)) = (row_of("citadel Adult named raw inputs, REST", c), mls_rest(c)) {
            ratios.push(format!(
                "c={c}: citadel named REST / MLServer REST = {:.1}x (target >= 30x)",
                n.requests_per_s / m.requests_per_s
            ));
        }
        let mls_grpc =
            loads.iter().find(|l| l.server.starts_with("MLServer") && l.server.contains("gRPC") && l.concurrency == c);
        if let (Some(g), Some(m)) = (row_of("citadel Adult named raw inputs, gRPC", c), mls_grpc) {
            ratios.push(format!(
                "c={c}: citadel gRPC / MLServer gRPC = {:.1}x (target >= 30x)",
                g.requests_per_s / m.requests_per_s
            ));
        }
    }
    for &c in concurrencies {
        let off = loads.iter().find(|l| l.server.ends_with("monitoring off") && l.concurrency == c);
        if let (Some(on), Some(off)) = (row_of("citadel Adult named raw inputs, REST", c), off) {
            ratios.push(format!(
                "c={c}: named REST with monitoring and detectors / without = {:.0}% (target >= 90%), p99 {:.2} ms vs {:.2} ms",
                100.0 * on.requests_per_s / off.requests_per_s,
                on.p99_ms,
                off.p99_ms
            ));
        }
    }
    for prefix in ["citadel Adult named raw inputs, REST", "citadel Adult named raw inputs, gRPC"] {
        if let Some(t) = row_of(prefix, 64) {
            ratios.push(format!("c=64: {prefix} p99 = {:.2} ms (target <= 10 ms)", t.p99_ms));
        }
    }
    if let Some(t) = find("citadel (TLS", 64) {
        ratios.push(format!("c=64: citadel TLS p99 = {:.2} ms (target <= 5 ms)", t.p99_ms));
    }
    if let Some(t) = find("citadel boosting", 64) {
        ratios.push(format!("c=64: citadel boosting TLS p99 = {:.2} ms", t.p99_ms));
    }
    let logged = std::fs::read_to_string(&access_log).map(|s| s.lines().count()).unwrap_or(0);
    notes.push(format!("the TLS gateway wrote {logged} access-log lines during the run"));
    notes.push("wrk, the servers and this process share the machine's cores".into());
    Ok(ServeBench { seconds_per_run: secs, loads, ratios, notes })
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub fn render(r: &ServeBench) -> String {
    let mut s = format!(
        "single-row infer, 10 features: a logistic regression and a gradient-boosted model (100 trees), wrk {} s per run\n\n",
        r.seconds_per_run
    );
    s += &format!("{:<52} {:>5} {:>11} {:>9} {:>9} {:>7}\n", "server", "conc", "req/s", "p50 ms", "p99 ms", "errors");
    for l in &r.loads {
        s += &format!(
            "{:<52} {:>5} {:>11.0} {:>9.3} {:>9.3} {:>7}\n",
            l.server, l.concurrency, l.requests_per_s, l.p50_ms, l.p99_ms, l.errors
        );
    }
    s += "\n";
    for x in &r.ratios {
        s += &format!("{x}\n");
    }
    for n in &r.notes {
        s += &format!("note: {n}\n");
    }
    s
}

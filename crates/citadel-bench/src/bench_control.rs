//! `citadel-bench control`: the control plane over HTTP next to MLflow's
//! tracking server (SQLite backend, local artifact root) on the same machine
//! in one run: metadata reads of a registered model's versions, one client
//! at a time and eight at once, over keep-alive connections on loopback.
//!
//! Both servers answer the same question (the versions of one registered
//! model, five of them): `GET /api/v1/models/NAME/versions` (authenticated,
//! authorized and audited) and MLflow's
//! `GET /api/2.0/mlflow/registered-models/get`. Then the transfers and
//! registrations of `bench_transfer.rs`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;

use crate::bench::{Cleanup, say, timed};

const PASSPHRASE: &str = "citadel bench control passphrase";
/// A tiny ONNX model (Add), the same bytes for every version.
const MODEL: &[u8] = include_bytes!("../../citadel-scan/tests/fixtures/add.onnx");

#[derive(Debug, Serialize)]
pub struct Row {
    pub clients: usize,
    pub citadel_per_sec: f64,
    pub mlflow_per_sec: Option<f64>,
    pub ratio: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct ControlReport {
    pub requests_per_client: usize,
    pub versions: usize,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
    pub target: String,
    pub transfers: Vec<crate::bench_transfer::TransferRow>,
    pub registrations: Option<crate::bench_transfer::Registrations>,
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One keep-alive HTTP/1.1 connection.
pub(crate) struct Conn {
    reader: BufReader<TcpStream>,
    host: String,
}

impl Conn {
    pub(crate) fn open(addr: &str) -> Result<Conn> {
        let s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Conn { reader: BufReader::new(s), host: addr.to_string() })
    }

    /// Sends a request, reads the whole answer; its status and body.
    fn call(&mut self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Result<(u16, Vec<u8>)> {
        let body = body.unwrap_or("");
        let json = [("content-type", "application/json")];
        let headers: &[(&str, &str)] = if !body.is_empty() || method == "POST" { &json } else { &[] };
        self.call_raw(method, path, token, headers, body.as_bytes())
    }

    /// Sends a request with `headers` and `body` (its length is sent when
    /// it is not empty or the method sends a body), reads the whole answer.
    pub(crate) fn call_raw(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(u16, Vec<u8>)> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        if let Some(t) = token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let w = self.reader.get_mut();
        w.write_all(req.as_bytes())?;
        w.write_all(body)?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad status line {line:?}"))?;
        let (mut length, mut chunked) = (None, false);
        loop {
            let mut h = String::new();
            self.reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse::<usize>().ok();
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        let mut out = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                self.reader.read_line(&mut size)?;
                let n = usize::from_str_radix(size.trim(), 16)?;
                let mut chunk = vec![0; n + 2];
                self.reader.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(n) = length {
            out.resize(n, 0);
            self.reader.read_exact(&mut out)?;
        }
        Ok((status, out))
    }
}

/// `clients` threads, each sending `n` requests on its own connection;
/// requests per second over all of them.
fn load(addr: &str, path: &str, token: Option<&str>, clients: usize, n: usize) -> Result<f64> {
    let start = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let (addr, path, token) = (addr.to_string(), path.to_string(), token.map(str::to_string));
            std::thread::spawn(move || -> Result<()> {
                let mut c = Conn::open(&addr)?;
                for _ in 0..n {
                    let (status, body) = c.call("GET", &path, token.as_deref(), None)?;
                    if status != 200 {
                        bail!("{path} answered {status}: {}", String::from_utf8_lossy(&body));
                    }
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| anyhow!("a client thread panicked"))??;
    }
    Ok((clients * n) as f64 / start.elapsed().as_secs_f64())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_ready(addr: &str, path: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(mut c) = Conn::open(addr)
            && matches!(c.call("GET", path, None, None), Ok((200, _)))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{addr} did not answer {path} within 60 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// MLflow's tracking server on SQLite with a local artifact root, and a
/// registered model with `versions` versions.
fn mlflow(root: &Path, mlflow: &Path, versions: usize) -> Result<(Proc, String)> {
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(mlflow)
        .args(["server", "--host", "127.0.0.1", "--port", &port.to_string()])
        .arg("--backend-store-uri")
        .arg(format!("sqlite:///{}", root.join("mlflow.db").display()))
        // Artifacts through the server's proxy (mlflow-artifacts:/), stored here.
        .arg("--artifacts-destination")
        .arg(root.join("mlartifacts"))
        .current_dir(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", mlflow.display()))?;
    let proc = Proc(child);
    wait_ready(&addr, "/health")?;
    let mut c = Conn::open(&addr)?;
    let (s, b) = c.call("POST", "/api/2.0/mlflow/registered-models/create", None, Some(r#"{"name":"fraud"}"#))?;
    if s != 200 {
        bail!("MLflow registered-models/create: {s} {}", String::from_utf8_lossy(&b));
    }
    for v in 0..versions {
        let body = format!(r#"{{"name":"fraud","source":"s3://citadel-bench/fraud/m{v}"}}"#);
        let (s, b) = c.call("POST", "/api/2.0/mlflow/model-versions/create", None, Some(&body))?;
        if s != 200 {
            bail!("MLflow model-versions/create: {s} {}", String::from_utf8_lossy(&b));
        }
    }
    Ok((proc, addr))
}

pub fn run(dir: &Path, requests: usize, transfer_mib: u64, keep: bool, quiet: bool) -> Result<ControlReport> {
    let mut notes = Vec::new();
    let guard = Cleanup::fresh(dir, "control", keep, &mut notes)?;
    let root = guard.0.clone();
    let exe = crate::citadel_exe()?;
    let ws = root.join("ws");
    let citadel = |args: &[&str]| -> Command {
        let mut c = Command::new(&exe);
        c.env("CITADEL_PASSPHRASE", PASSPHRASE).env_remove("CITADEL_TOKEN").env_remove("CITADEL_URL");
        c.arg("-w").arg(&ws).args(args);
        c
    };
    let versions = 5;
    say(quiet, "citadel: init, a model with 5 versions, a reader's token");
    timed(citadel(&["init", "--kdf-memory-mib", "19"]).arg(&ws), "citadel init")?;
    let model = root.join("model");
    std::fs::create_dir_all(&model)?;
    std::fs::write(model.join("model.onnx"), MODEL)?;
    for _ in 0..versions {
        timed(citadel(&["model", "register", "--name", "fraud"]).arg(&model), "model register")?;
    }
    timed(&mut citadel(&["principal", "create", "reader"]), "principal create")?;
    timed(&mut citadel(&["grant", "add", "reader", "data-scientist"]), "grant add")?;
    let (_, out) = timed(&mut citadel(&["token", "issue", "reader", "--json"]), "token issue")?;
    let token = serde_json::from_str::<serde_json::Value>(&out)?["token"].as_str().unwrap_or_default().to_string();
    // Unlimited per principal: one token drives every client here.
    let mut server = citadel(&[
        "server",
        "--insecure-http",
        "--listen",
        "127.0.0.1:0",
        "--json",
        "--rate-principal",
        "1000000",
        "--rate-principal-burst",
        "1000000",
    ]);
    let mut child = server.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().context("starting citadel server")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?).read_line(&mut line)?;
    let _server = Proc(child);
    let url = serde_json::from_str::<serde_json::Value>(&line)?["listening"].as_str().unwrap_or_default().to_string();
    let citadel_addr = url.trim_start_matches("http://").to_string();
    let citadel_path = "/api/v1/models/fraud/versions";

    let mlflow_bin: Option<PathBuf> = std::env::var_os("CITADEL_BENCH_MLFLOW").map(PathBuf::from);
    let mlflow = match &mlflow_bin {
        Some(bin) => {
            say(quiet, "MLflow: tracking server (SQLite, local artifacts), the same model with 5 versions");
            Some(mlflow(&root, bin, versions)?)
        }
        None => {
            notes.push(
                "MLflow not run: set CITADEL_BENCH_MLFLOW=/path/to/mlflow (pip install mlflow) for the ratios".into(),
            );
            None
        }
    };
    let mlflow_path = "/api/2.0/mlflow/registered-models/get?name=fraud";
    let mut rows = Vec::new();
    for clients in [1usize, 8] {
        say(quiet, &format!("{requests} metadata reads per client, {clients} client(s)"));
        // Warm both (connections, caches), then measure.
        load(&citadel_addr, citadel_path, Some(&token), clients, requests.min(50))?;
        let c = load(&citadel_addr, citadel_path, Some(&token), clients, requests)?;
        let m = match &mlflow {
            Some((_, addr)) => {
                load(addr, mlflow_path, None, clients, requests.min(50))?;
                Some(load(addr, mlflow_path, None, clients, requests)?)
            }
            None => None,
        };
        rows.push(Row { clients, citadel_per_sec: c, mlflow_per_sec: m, ratio: m.map(|m| c / m) });
    }
    notes.push("citadel: every read authenticated (API token), authorized and written to the audit chain; MLflow: no authentication".into());
    say(quiet, &format!("artifact put/get of {transfer_mib} MiB, local and through the API"));
    let remote = |args: &[&str]| -> Command {
        let mut c = Command::new(&exe);
        c.env_remove("CITADEL_PASSPHRASE").env("CITADEL_URL", &url).env("CITADEL_TOKEN", &token);
        c.args(["-w", "/nonexistent"]).args(args);
        c
    };
    let transfers = crate::bench_transfer::artifacts(&root, transfer_mib, &citadel, &remote)?;
    let count = 10;
    say(quiet, &format!("{count} registrations of a 10 MiB model, through the API and MLflow"));
    let registrations = Some(crate::bench_transfer::registrations(
        &citadel_addr,
        &token,
        mlflow.as_ref().map(|(_, a)| a.as_str()),
        10,
        count,
    )?);
    notes.push("transfers: each CLI process's start is included (the local one also unseals the master key with Argon2id at 19 MiB); the API's put is upload (resumable, synced) + a SHA-256 check + the same put on the server".into());
    notes.push("registrations: citadel scans, signs, stores encrypted, writes provenance and an audit record; MLflow stores the file and a row".into());
    Ok(ControlReport {
        requests_per_client: requests,
        versions,
        rows,
        notes,
        target: ">= 10x MLflow's operations per second on metadata reads and registrations; API transfers >= 80% of local put/get".into(),
        transfers,
        registrations,
    })
}

pub fn render(r: &ControlReport) -> String {
    let mut s = format!(
        "citadel-bench control: reads of a model's {} versions, {} per client\n\n{:<8} {:>14} {:>14} {:>8}\n",
        r.versions, r.requests_per_client, "clients", "citadel req/s", "MLflow req/s", "ratio"
    );
    for row in &r.rows {
        s += &format!(
            "{:<8} {:>14.0} {:>14} {:>8}\n",
            row.clients,
            row.citadel_per_sec,
            row.mlflow_per_sec.map(|m| format!("{m:.0}")).unwrap_or_else(|| "-".into()),
            row.ratio.map(|x| format!("{x:.1}x")).unwrap_or_else(|| "-".into()),
        );
    }
    s += &format!("\n{:<14} {:>6} {:>12} {:>12} {:>8}\n", "transfer", "MiB", "local MiB/s", "API MiB/s", "ratio");
    for t in &r.transfers {
        s += &format!(
            "{:<14} {:>6} {:>12.0} {:>12.0} {:>7.0}%\n",
            t.operation,
            t.mib,
            t.local_mib_per_sec,
            t.api_mib_per_sec,
            t.ratio * 100.0
        );
    }
    if let Some(g) = &r.registrations {
        s += &format!(
            "\nregistrations of a {} MiB model ({}): citadel {:.1}/s, MLflow {}, ratio {}\n",
            g.model_mib,
            g.count,
            g.citadel_per_sec,
            g.mlflow_per_sec.map(|m| format!("{m:.1}/s")).unwrap_or_else(|| "-".into()),
            g.ratio.map(|x| format!("{x:.1}x")).unwrap_or_else(|| "-".into())
        );
    }
    s += &format!("\ntarget: {}\n", r.target);
    for n in &r.notes {
        s += &format!("note: {n}\n");
    }
    s
}

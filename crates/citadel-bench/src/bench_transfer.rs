//! The transfer half of `citadel-bench control`:
//!
//! - **Artifact throughput**: `citadel artifact put`/`get` of a file of
//!   random bytes, locally (the CLI opens the workspace with the master key)
//!   and through `citadel server` (`CITADEL_URL`: resumable upload, commit,
//!   download by range), each on its own fresh file so no run deduplicates
//!   against another. Target: the API at ≥ 80% of the local throughput.
//! - **Registrations** of a 10 MiB model (a safetensors file of random
//!   weights, distinct per version): through the API (upload, then
//!   `POST /api/v1/models/NAME/versions`: scan, sign, store, provenance,
//!   audit) and through MLflow (a run, the file `PUT` to its artifact
//!   proxy under the run, `model-versions/create` from the run), one client,
//!   the same machine.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Result, bail};
use serde::Serialize;

use crate::bench::timed;
use crate::bench_control::Conn;

#[derive(Debug, Serialize)]
pub struct TransferRow {
    pub operation: String,
    pub mib: u64,
    pub local_mib_per_sec: f64,
    pub api_mib_per_sec: f64,
    /// API over local.
    pub ratio: f64,
}

#[derive(Debug, Serialize)]
pub struct Registrations {
    pub model_mib: u64,
    pub count: usize,
    pub citadel_per_sec: f64,
    pub mlflow_per_sec: Option<f64>,
    pub ratio: Option<f64>,
}

/// Random bytes (xorshift): nothing compresses or deduplicates them.
pub fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    seed |= 1;
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A safetensors file of one F32 tensor of `bytes` random bytes.
fn safetensors(bytes: usize, seed: u64) -> Vec<u8> {
    let n = bytes / 4;
    let header = format!(r#"{{"w":{{"dtype":"F32","shape":[{n}],"data_offsets":[0,{}]}}}}"#, n * 4);
    let mut header = header.into_bytes();
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    // Finite floats: random mantissas under a fixed exponent.
    let raw = noise(n * 4, seed);
    for w in raw.chunks_exact(4) {
        let bits = (u32::from_le_bytes([w[0], w[1], w[2], w[3]]) & 0x007f_ffff) | 0x3f00_0000;
        out.extend_from_slice(&bits.to_le_bytes());
    }
    out
}

fn secs(cmd: &mut Command, what: &str) -> Result<f64> {
    let t = Instant::now();
    timed(cmd, what)?;
    Ok(t.elapsed().as_secs_f64())
}

/// Artifact put and get, local next to the API.
pub fn artifacts(
    root: &Path,
    mib: u64,
    local: &dyn Fn(&[&str]) -> Command,
    remote: &dyn Fn(&[&str]) -> Command,
) -> Result<Vec<TransferRow>> {
    let size = (mib << 20) as usize;
    let (a, b) = (root.join("local.bin"), root.join("api.bin"));
    std::fs::write(&a, noise(size, 11))?;
    std::fs::write(&b, noise(size, 13))?;
    let path = |p: &Path| p.to_string_lossy().to_string();
    let lp = secs(&mut local(&["artifact", "put", &path(&a), "--name", "t-local"]), "local artifact put")?;
    let rp = secs(&mut remote(&["artifact", "put", &path(&b), "--name", "t-api"]), "artifact put through the API")?;
    let (oa, ob) = (root.join("local.out"), root.join("api.out"));
    let lg = secs(&mut local(&["artifact", "get", "t-local", "-o", &path(&oa)]), "local artifact get")?;
    let rg = secs(&mut remote(&["artifact", "get", "t-api", "-o", &path(&ob)]), "artifact get through the API")?;
    if std::fs::metadata(&ob)?.len() != size as u64 {
        bail!("the API's download has the wrong size");
    }
    for p in [&a, &b, &oa, &ob] {
        let _ = std::fs::remove_file(p);
    }
    let row = |op: &str, l: f64, r: f64| TransferRow {
        operation: op.into(),
        mib,
        local_mib_per_sec: mib as f64 / l,
        api_mib_per_sec: mib as f64 / r,
        ratio: l / r,
    };
    Ok(vec![row("artifact put", lp, rp), row("artifact get", lg, rg)])
}

fn sha_hex(b: &[u8]) -> String {
    citadel_types::Digest::of(b).to_hex()
}

/// `count` registrations of a `mib` MiB model through the API, and through
/// MLflow when `mlflow` (its address) is given.
pub fn registrations(
    citadel: &str,
    token: &str,
    mlflow: Option<&str>,
    mib: u64,
    count: usize,
) -> Result<Registrations> {
    let models: Vec<Vec<u8>> = (0..count).map(|i| safetensors((mib << 20) as usize, 100 + i as u64)).collect();
    let mut c = Conn::open(citadel)?;
    let json = [("content-type", "application/json")];
    let start = Instant::now();
    for m in &models {
        let body = serde_json::json!({"size": m.len(), "for": "model", "name": "weights"}).to_string();
        let (s, b) = c.call_raw("POST", "/api/v1/uploads", Some(token), &json, body.as_bytes())?;
        if s != 201 {
            bail!("POST /api/v1/uploads: {s} {}", String::from_utf8_lossy(&b));
        }
        let id = serde_json::from_slice::<serde_json::Value>(&b)?["id"].as_str().unwrap_or_default().to_string();
        let (s, b) =
            c.call_raw("PATCH", &format!("/api/v1/uploads/{id}"), Some(token), &[("upload-offset", "0")], m)?;
        if s != 204 {
            bail!("PATCH upload: {s} {}", String::from_utf8_lossy(&b));
        }
        let commit = serde_json::json!({"files": [{"path": "model.safetensors", "upload": id, "sha256": sha_hex(m)}]});
        let (s, b) =
            c.call_raw("POST", "/api/v1/models/weights/versions", Some(token), &json, commit.to_string().as_bytes())?;
        if s != 201 {
            bail!("POST /api/v1/models/weights/versions: {s} {}", String::from_utf8_lossy(&b));
        }
    }
    let citadel_per_sec = count as f64 / start.elapsed().as_secs_f64();
    let mlflow_per_sec = match mlflow {
        None => None,
        Some(addr) => {
            let mut c = Conn::open(addr)?;
            let (s, b) =
                c.call_raw("POST", "/api/2.0/mlflow/registered-models/create", None, &json, br#"{"name":"weights"}"#)?;
            if s != 200 {
                bail!("MLflow registered-models/create: {s} {}", String::from_utf8_lossy(&b));
            }
            let start = Instant::now();
            // MLflow's own flow: a run holds the artifact, the version points at it.
            for m in &models {
                let (s, b) =
                    c.call_raw("POST", "/api/2.0/mlflow/runs/create", None, &json, br#"{"experiment_id":"0"}"#)?;
                if s != 200 {
                    bail!("MLflow runs/create: {s} {}", String::from_utf8_lossy(&b));
                }
                let run: serde_json::Value = serde_json::from_slice(&b)?;
                let run_id = run["run"]["info"]["run_id"].as_str().unwrap_or_default().to_string();
                let uri = run["run"]["info"]["artifact_uri"].as_str().unwrap_or_default().to_string();
                let Some(rel) = uri.strip_prefix("mlflow-artifacts:/") else {
                    bail!("MLflow's artifact root {uri:?} is not proxied (mlflow-artifacts:)");
                };
                let path = format!("/api/2.0/mlflow-artifacts/artifacts/{rel}/model/model.safetensors");
                let (s, b) = c.call_raw("PUT", &path, None, &[("content-type", "application/octet-stream")], m)?;
                if s != 200 {
                    bail!("MLflow artifact PUT: {s} {}", String::from_utf8_lossy(&b));
                }
                let body = serde_json::json!({"name": "weights", "source": format!("{uri}/model"), "run_id": run_id});
                let (s, b) = c.call_raw(
                    "POST",
                    "/api/2.0/mlflow/model-versions/create",
                    None,
                    &json,
                    body.to_string().as_bytes(),
                )?;
                if s != 200 {
                    bail!("MLflow model-versions/create: {s} {}", String::from_utf8_lossy(&b));
                }
            }
            Some(count as f64 / start.elapsed().as_secs_f64())
        }
    };
    Ok(Registrations {
        model_mib: mib,
        count,
        citadel_per_sec,
        mlflow_per_sec,
        ratio: mlflow_per_sec.map(|m| citadel_per_sec / m),
    })
}

//! `citadel run`, `citadel runs …`, `citadel secret …`, `citadel model card`.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use clap::Subcommand;

use citadel_control::pipeline_spec::PipelineSpec;
use citadel_control::{Caller, RunOptions, RunReport, StageProgress, Workspace};

use crate::Out;

#[derive(Subcommand, Debug, Clone)]
pub enum RunsCmd {
    /// Recent runs, newest first.
    Ls {
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// One run: every stage, its cache key, outputs and timing.
    Show { id: String },
}

#[derive(Subcommand, Debug, Clone)]
pub enum SecretCmd {
    /// Store a training secret (the value is read from stdin, never from the command line).
    Set { name: String },
    /// The names of the stored secrets.
    Ls,
    /// Remove a secret.
    Rm { name: String },
}

/// A secret's value from stdin (at most 64 KiB, one trailing newline dropped).
pub(crate) fn read_secret_value(name: &str) -> Result<String> {
    let mut value = String::new();
    std::io::stdin().take(64 * 1024).read_to_string(&mut value).context("reading the secret from stdin")?;
    let value = value.trim_end_matches(['\n', '\r']).to_string();
    anyhow::ensure!(
        !value.is_empty(),
        "the secret is empty\nhint: pipe the value in: citadel secret set {name} < file"
    );
    Ok(value)
}

/// Reads and checks a pipeline file; every problem at once.
pub fn load_pipeline(path: &Path) -> Result<(PipelineSpec, String)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading the pipeline file {}", path.display()))?;
    PipelineSpec::parse(&text, path).map(|s| (s, text)).map_err(|problems| {
        anyhow!(
            "the pipeline file {} has {} problem(s):\n{}\nhint: fix every line above; nothing was run",
            path.display(),
            problems.len(),
            problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
        )
    })
}

/// Stage lines on stderr: a spinner on a terminal, plain lines otherwise
/// (none with --json).
pub fn stage_progress(json: bool) -> (StageProgress, Option<indicatif::ProgressBar>) {
    if json {
        return (Arc::new(|_, _| {}), None);
    }
    if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        let b = bar.clone();
        (Arc::new(move |stage, line| b.set_message(format!("{stage}: {line}"))), Some(bar))
    } else {
        (Arc::new(|stage, line| eprintln!("  {stage}: {line}")), None)
    }
}

pub async fn run_pipeline(ws: &Workspace, caller: &Caller, path: &Path, out: &Out) -> Result<i32> {
    let (spec, text) = load_pipeline(path)?;
    let (progress, bar) = stage_progress(out.json);
    let helper = std::env::current_exe().context("finding the citadel binary (it hosts the training sandbox)")?;
    let result = ws.pipeline_run(caller, &spec, &text, &RunOptions { helper, progress }).await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let report = result?;
    out.emit(&report, || render_report(&report));
    Ok(if report.status == "succeeded" { 0 } else { 3 })
}

/// The files a pipeline file names (ingest source and expectations, the gate
/// policy, the training code directory and read paths), as written (relative
/// to the pipeline file) with where they are here. Absolute paths and `..`
/// are refused: the server stages them beneath the pipeline.
fn named_files(path: &Path, text: &str) -> Result<Vec<(String, PathBuf)>> {
    let table: toml::Table = text.parse().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut named = Vec::new();
    let get = |section: &str, key: &str| table.get(section).and_then(|s| s.get(key)).cloned();
    for (section, key) in [("ingest", "source"), ("ingest", "expectations"), ("gate", "policy"), ("train", "code")] {
        if let Some(toml::Value::String(v)) = get(section, key) {
            named.push(v);
        }
    }
    if let Some(toml::Value::Array(a)) = get("train", "read_paths") {
        named.extend(a.iter().filter_map(|v| v.as_str().map(str::to_string)));
    }
    let mut files = Vec::new();
    for rel in named {
        let p = Path::new(&rel);
        if p.is_absolute()
            || p.components().any(|c| !matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir))
        {
            anyhow::bail!(
                "{rel:?} in {} is not beneath the pipeline file's directory, so it cannot be sent to the server\nhint: name files relative to the pipeline file, without ..",
                path.display()
            );
        }
        let rel = p.components().filter(|c| matches!(c, std::path::Component::Normal(_))).collect::<PathBuf>();
        let local = base.join(&rel);
        let rel = rel.to_string_lossy().to_string();
        if local.is_dir() {
            for (inner, file) in crate::transfer_cmd::files_of(&local)? {
                files.push((format!("{rel}/{inner}"), file));
            }
        } else {
            files.push((rel, local));
        }
    }
    files.sort();
    files.dedup_by(|a, b| a.0 == b.0);
    Ok(files)
}

/// `citadel run` through the server: the pipeline file and the files it
/// names are uploaded, and the server runs it (to its end, even if this
/// client goes) and answers with the run's report.
pub async fn run_pipeline_remote(remote: &crate::server_cmd::Remote, path: &Path, out: &Out) -> Result<i32> {
    let (spec, text) = load_pipeline(path)?;
    let name = spec.pipeline.name.clone();
    let meter = crate::transfer_cmd::Meter::new(out.json, "upload", 0);
    let mut files = Vec::new();
    for (rel, local) in named_files(path, &text)? {
        match crate::transfer_cmd::upload(remote, &local, "pipeline", Some(&name), &meter, 0).await {
            Ok((id, digest)) => files.push(serde_json::json!({"path": rel, "upload": id, "sha256": digest.to_hex()})),
            Err(e) => {
                crate::transfer_cmd::abandon(remote, &files).await;
                return Err(e);
            }
        }
    }
    meter.finish();
    if !out.json {
        eprintln!("running {name} on the server ({} file(s) sent)…", files.len());
    }
    let body = serde_json::json!({"pipeline": text, "files": files});
    let r = remote.call_within("POST", "/api/v1/runs", Some(body), std::time::Duration::from_secs(6 * 3600)).await;
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            crate::transfer_cmd::abandon(remote, &files).await;
            return Err(e);
        }
    };
    out.emit(&r, || {
        let mut s = format!(
            "run {} of {}: {}\n",
            r["id"].as_str().unwrap_or("?"),
            r["pipeline"].as_str().unwrap_or("?"),
            r["status"].as_str().unwrap_or("?")
        );
        for st in r["stages"].as_array().into_iter().flatten() {
            s += &format!(
                "  {:<9} {:<11} {:>7.2}s  {}\n",
                st["stage"].as_str().unwrap_or(""),
                st["status"].as_str().unwrap_or(""),
                st["seconds"].as_f64().unwrap_or(0.0),
                st["detail"].as_str().unwrap_or("")
            );
        }
        if let Some(m) = r["model"].as_str() {
            s += &format!("model: {m}\n");
            if let Some((n, v)) = m.rsplit_once('@') {
                s += &format!("model card: citadel artifact get model-cards/{n}/{v}.html\n");
            }
        }
        if let Some(e) = r["endpoint"].as_str() {
            s += &format!("endpoint: {e}\n");
        }
        if let Some(m) = r["message"].as_str().filter(|m| !m.is_empty()) {
            s += &format!("{m}\n");
        }
        s
    });
    Ok(if r["status"] == "succeeded" { 0 } else { 3 })
}

pub fn render_report(r: &RunReport) -> String {
    let mut s = format!("run {} of {}: {}\n", r.id, r.pipeline, r.status);
    for st in &r.stages {
        s += &format!("  {:<9} {:<11} {:>7.2}s  {}\n", st.stage, st.status, st.seconds, st.detail);
    }
    if let Some(m) = &r.model {
        s += &format!("model: {m}\n");
    }
    if let Some(p) = &r.card_html {
        s += &format!("model card: {}\n", p.display());
    }
    if let Some(e) = &r.endpoint {
        s += &format!("endpoint: {e}\n");
    }
    if !r.message.is_empty() {
        s += &format!("{}\n", r.message);
    }
    s
}

pub async fn run_runs(ws: &Workspace, caller: &Caller, cmd: &RunsCmd, out: &Out) -> Result<i32> {
    match cmd {
        RunsCmd::Ls { limit } => {
            let runs = ws.run_list(caller, *limit).await?;
            out.emit(&runs, || {
                runs.iter()
                    .map(|r| {
                        format!(
                            "{}  {:<18} {:<18} {}",
                            r["id"].as_str().unwrap_or(""),
                            r["pipeline"].as_str().unwrap_or(""),
                            r["status"].as_str().unwrap_or(""),
                            r["started_at"].as_str().unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        RunsCmd::Show { id } => {
            let r = ws.run_show(caller, id).await?;
            out.emit(&r, || {
                let mut s = format!(
                    "run {} of {}: {}\n  started by {} at {}, finished {}\n  pipeline file sha256 {}\n",
                    r["id"].as_str().unwrap_or(""),
                    r["pipeline"].as_str().unwrap_or(""),
                    r["status"].as_str().unwrap_or(""),
                    r["started_by"].as_str().unwrap_or(""),
                    r["started_at"].as_str().unwrap_or(""),
                    r["finished_at"].as_str().unwrap_or("-"),
                    r["spec_sha256"].as_str().unwrap_or(""),
                );
                for st in r["stages"].as_array().into_iter().flatten() {
                    s += &format!(
                        "  {:<9} {:<11} {:>7.2}s  key {}  {}\n",
                        st["stage"].as_str().unwrap_or(""),
                        st["status"].as_str().unwrap_or(""),
                        st["seconds"].as_f64().unwrap_or(0.0),
                        st["cache_key"].as_str().map(|k| &k[..k.len().min(12)]).unwrap_or(""),
                        st["detail"].as_str().unwrap_or("")
                    );
                }
                if let Some(m) = r["model"].as_str() {
                    s += &format!("  model: {m}\n");
                }
                s
            });
        }
    }
    Ok(0)
}

pub async fn run_secret(ws: &Workspace, caller: &Caller, cmd: &SecretCmd, out: &Out) -> Result<i32> {
    match cmd {
        SecretCmd::Set { name } => {
            let value = read_secret_value(name)?;
            ws.secret_set(caller, name, &value).await?;
            out.emit(&serde_json::json!({"secret": name, "stored": true}), || {
                format!("stored training secret {name} (sealed)")
            });
        }
        SecretCmd::Rm { name } => {
            let removed = ws.secret_remove(caller, name).await?;
            out.emit(&serde_json::json!({"secret": name, "removed": removed}), || {
                if removed { format!("removed training secret {name}") } else { format!("no training secret {name}") }
            });
        }
        SecretCmd::Ls => {
            let names = ws.secret_list(caller).await?;
            out.emit(&names, || names.join("\n"));
        }
    }
    Ok(0)
}

/// `citadel model card NAME@VERSION [--out DIR]`.
pub async fn run_card(
    ws: &Workspace,
    caller: &Caller,
    reference: &str,
    dir: &Option<PathBuf>,
    out: &Out,
) -> Result<i32> {
    let (name, version) = reference
        .split_once('@')
        .and_then(|(n, v)| v.parse::<i64>().ok().map(|v| (n.to_string(), v)))
        .ok_or_else(|| anyhow!("{reference:?} is not NAME@VERSION\nhint: e.g. citadel model card adult-income@1"))?;
    let dir = dir.clone().unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (html, json) = ws.model_card_files(caller, &name, version, &dir).await?;
    out.emit(&serde_json::json!({"html": html, "json": json}), || {
        format!("model card: {}\n           {}", html.display(), json.display())
    });
    Ok(0)
}

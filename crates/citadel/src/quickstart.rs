//! `citadel quickstart`: the whole platform on UCI Adult, from a fresh
//! machine, with no configuration.
//!
//! 1. a workspace (a random passphrase kept beside it, 0600, when
//!    CITADEL_PASSPHRASE is not set: fine for a demo, said so loudly);
//! 2. the bundled data, expectations (with masks) and pipeline file;
//! 3. principals with least privilege: the owner runs the pipeline, a
//!    `reviewer` (approver) approves production, a `client`
//!    (inference-client on the one model) calls it;
//! 4. `citadel run` (ingest → … → register, ending awaiting approval),
//!    the reviewer's approval, `citadel run` again (all cached; deploys);
//! 5. the HTTPS gateway (development certificate) and authenticated calls
//!    with held-out rows, plus one refused unauthenticated call;
//! 6. `audit verify`, an audit export, and where everything is.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;

use citadel_control::{Caller, RunOptions, RunReport, Secrets, Workspace};
use citadel_types::Redacted;

use crate::{Cli, Out, pipeline_cmd};

pub(crate) const ADULT_DATA: &[u8] = include_bytes!("../../../datasets/adult/adult.data");
const EXPECTATIONS: &str = include_str!("../../../examples/quickstart/adult.expect.toml");
const PIPELINE: &str = include_str!("../../../examples/quickstart/pipeline.toml");
const MODEL: &str = "adult-income";

#[derive(Args, Debug, Clone)]
pub struct QuickstartArgs {
    /// Directory of the quickstart's workspace (created; reused when it exists).
    #[arg(long, default_value = "citadel-quickstart")]
    pub dir: PathBuf,
    /// Where the gateway listens while the quickstart calls it.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Keep serving after the calls, until Ctrl-C.
    #[arg(long)]
    pub keep_serving: bool,
}

struct Steps {
    json: bool,
    start: Instant,
    n: usize,
}

impl Steps {
    fn say(&mut self, what: &str) {
        self.n += 1;
        if !self.json {
            eprintln!("[{:>2} {:>5.1}s] {what}", self.n, self.start.elapsed().as_secs_f64());
        }
    }
}

fn passphrase(dir: &Path) -> Result<(Redacted<String>, Option<PathBuf>)> {
    if let Ok(p) = std::env::var("CITADEL_PASSPHRASE")
        && !p.is_empty()
    {
        return Ok((Redacted::new(p), None));
    }
    let file = dir.join("quickstart-passphrase");
    if let Ok(p) = std::fs::read_to_string(&file) {
        return Ok((Redacted::new(p.trim().to_string()), Some(file)));
    }
    let bytes = citadel_crypto::random_bytes::<24>().map_err(|e| anyhow!("{e}"))?;
    let p = hex::encode(bytes);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&file)
        .with_context(|| format!("creating {}", file.display()))?;
    f.write_all(p.as_bytes())?;
    Ok((Redacted::new(p), Some(file)))
}

use std::os::unix::fs::OpenOptionsExt;

pub async fn run(cli: &Cli, args: &QuickstartArgs, out: &Out) -> Result<i32> {
    let mut steps = Steps { json: out.json, start: Instant::now(), n: 0 };
    let dir = &args.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let dir = std::fs::canonicalize(dir)?;
    let (pass, pass_file) = passphrase(&dir)?;
    let secrets = Secrets { passphrase: Some(pass), pkcs11_pin: None };

    // 1. Workspace.
    let fresh = !dir.join(citadel_control::config::CONFIG_FILE).exists();
    steps.say(if fresh { "creating the workspace" } else { "opening the existing quickstart workspace" });
    if fresh {
        std::fs::write(
            dir.join(citadel_control::config::CONFIG_FILE),
            citadel_control::Config::render_file(&Default::default()),
        )?;
        let config = crate::load_config(cli, &dir)?;
        let (ws, _) = Workspace::init(config, &secrets, citadel_crypto::KdfParams::default(), "owner").await?;
        ws.close().await?;
    }
    let config = crate::load_config(cli, &dir)?;
    let ws = Workspace::open(config.clone(), &secrets).await?;
    let owner = ws.owner().await?;

    // 2. Bundled files.
    let files = dir.join("quickstart");
    std::fs::create_dir_all(&files)?;
    for (name, bytes) in [
        ("adult.data", ADULT_DATA),
        ("adult.expect.toml", EXPECTATIONS.as_bytes()),
        ("pipeline.toml", PIPELINE.as_bytes()),
    ] {
        let p = files.join(name);
        if std::fs::read(&p).ok().as_deref() != Some(bytes) {
            std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
        }
    }

    // 3. Principals.
    steps.say("principals: owner runs the pipeline, reviewer approves, client calls");
    let existing: Vec<String> = ws.principal_list(&owner).await?.into_iter().map(|(p, _)| p.name).collect();
    for (name, kind, role, scope) in [
        ("reviewer", "user", "approver", format!("model:{MODEL}")),
        ("client", "service", "inference-client", format!("model:{MODEL}")),
    ] {
        if !existing.iter().any(|e| e == name) {
            ws.principal_create(&owner, name, kind).await?;
        }
        ws.grant_add(&owner, name, role, &scope).await?;
    }

    // 4. The pipeline, the approval, the pipeline again.
    steps.say("running the pipeline: ingest (masking) → split → train → evaluate → gate → register");
    let pipeline_path = files.join("pipeline.toml");
    let (spec, text) = pipeline_cmd::load_pipeline(&pipeline_path)?;
    let (progress, bar) = pipeline_cmd::stage_progress(out.json);
    let helper = std::env::current_exe()?;
    let opts = RunOptions { helper, progress };
    let first = ws.pipeline_run(&owner, &spec, &text, &opts).await;
    let first = match first {
        Ok(r) => r,
        Err(e) => {
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            return Err(e.into());
        }
    };
    if let Some(b) = &bar {
        b.suspend(|| {});
    }
    if !out.json {
        eprint!("{}", indent(&pipeline_cmd::render_report(&first)));
    }
    let mut runs = vec![first.clone()];
    steps.n = 3;
    let mut final_run: RunReport = first;
    // Each approval moves the version one stage (none → staging → production).
    for _ in 0..3 {
        if final_run.status != "awaiting-approval" {
            break;
        }
        let request = final_run
            .stages
            .iter()
            .find(|s| s.stage == "deploy")
            .and_then(|s| s.outputs["request"].as_str())
            .map(str::to_string)
            .ok_or_else(|| anyhow!("the run names no stage request"))?;
        let to = final_run
            .stages
            .iter()
            .find(|s| s.stage == "deploy")
            .and_then(|s| s.outputs["to_stage"].as_str())
            .unwrap_or("production")
            .to_string();
        steps.say(&format!(
            "the reviewer approves {to} (separation of duties: the owner cannot), and the pipeline runs again"
        ));
        // The reviewer acts through a credential of its own, a short-lived
        // token the owner issues (and revokes once it has been used).
        let issued = ws.token_issue(&owner, "reviewer", "quickstart review", 600).await?;
        let reviewer = ws.authenticate(&issued.token).await?;
        ws.model_decide(&reviewer, &request, true, "quickstart: model card reviewed").await?;
        ws.token_revoke(&owner, &issued.id).await?;
        final_run = ws.pipeline_run(&owner, &spec, &text, &opts).await?;
        if !out.json {
            eprint!("{}", indent(&pipeline_cmd::render_report(&final_run)));
        }
        runs.push(final_run.clone());
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if final_run.status != "succeeded" {
        bail!("the pipeline ended {}: {}", final_run.status, final_run.message);
    }
    let model = final_run.model.clone().unwrap_or_default();

    // 5. Gateway and calls.
    steps.say("serving on HTTPS (development certificate) and calling the endpoint");
    let token = ws.token_issue(&owner, "client", "quickstart", 86_400).await?;
    let client = ws.authenticate(&token.token).await?;
    let reports = dir.join("reports");
    std::fs::create_dir_all(&reports)?;
    let token_file = reports.join("client.token");
    let _ = std::fs::remove_file(&token_file);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&token_file)?
        .write_all(token.token.as_bytes())?;
    let _ = client;
    let card: serde_json::Value = serde_json::from_slice(&std::fs::read(
        final_run.card_json.as_ref().ok_or_else(|| anyhow!("the run wrote no model card"))?,
    )?)?;
    let (request_body, record, truth) = example_request(&ws, &owner, &card).await?;
    let request_file = reports.join("example-request.json");
    std::fs::write(&request_file, &request_body)?;

    let gateway_ws = Arc::new(Workspace::open(config, &secrets).await?);
    let mut serve = citadel_serve::ServeConfig::new(
        args.listen,
        citadel_serve::Transport::DevSelfSigned(dir.join("tmp").join("dev-tls")),
    );
    serve.poll_interval = Duration::from_millis(200);
    let (tx_listen, rx_listen) = tokio::sync::oneshot::channel();
    let (tx_stop, rx_stop) = tokio::sync::oneshot::channel::<()>();
    let mut tx_listen = Some(tx_listen);
    let keep = args.keep_serving;
    let gw = tokio::spawn(citadel_serve::Gateway::run(
        gateway_ws,
        owner.clone(),
        serve,
        move |l: &citadel_serve::Listening| {
            if let Some(tx) = tx_listen.take() {
                let _ = tx.send((l.addr, l.dev_ca.clone()));
            }
        },
        async move {
            if keep {
                let _ = tokio::signal::ctrl_c().await;
            } else {
                let _ = rx_stop.await;
            }
        },
    ));
    let (addr, ca) =
        tokio::time::timeout(Duration::from_secs(30), rx_listen).await.context("the gateway did not start")??;
    let ca = ca.ok_or_else(|| anyhow!("the gateway wrote no development CA"))?;
    let http = citadel_serve::client::GatewayClient::new(addr, &ca)?;
    let ready_path = format!("/v2/models/{MODEL}/ready");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = http.request("GET", &ready_path, Some(&token.token), None).await?;
        if status == 200 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the endpoint {MODEL} did not become ready (last status {status})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let infer_path = format!("/v2/models/{MODEL}/infer");
    let mut calls = Vec::new();
    for _ in 0..3 {
        let (status, body) = http.request("POST", &infer_path, Some(&token.token), Some(request_body.clone())).await?;
        if status != 200 {
            bail!("an authenticated call failed with HTTP {status}: {}", String::from_utf8_lossy(&body));
        }
        calls.push(serde_json::from_slice::<serde_json::Value>(&body)?);
    }
    let (unauth, _) = http.request("POST", &infer_path, None, Some(request_body.clone())).await?;
    let (forged, _) = http.request("POST", &infer_path, Some("ctk_forged"), Some(request_body.clone())).await?;
    // The same first row as a JSON record: the readable form the printed curl uses.
    let record_body = format!("[{record}]").into_bytes();
    let (status, body) = http.request("POST", &infer_path, Some(&token.token), Some(record_body.clone())).await?;
    if status != 200 {
        bail!("a call with a JSON record failed with HTTP {status}: {}", String::from_utf8_lossy(&body));
    }
    let record_answer: serde_json::Value = serde_json::from_slice(&body)?;
    let answer = readable_answer(&record_answer);
    let labels: Vec<String> = calls[0]["outputs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["name"] == "label")
        .and_then(|o| o["data"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
        .collect();
    let probs: Vec<f64> = calls[0]["outputs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["name"] == "probabilities")
        .and_then(|o| o["data"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_f64())
        .collect();

    // 6. Audit.
    steps.say("verifying the audit log");
    let verify = ws.audit_verify(&owner).await?;
    if !verify.problems.is_empty() {
        bail!("the audit log failed verification: {:?}", verify.problems);
    }
    let lines =
        ws.audit_export(&owner, &citadel_store::AuditFilter::default(), citadel_audit::ExportFormat::Jsonl).await?;
    let audit_file = reports.join("audit.jsonl");
    std::fs::write(&audit_file, lines.join("\n") + "\n")?;

    // 7. The compliance report, from the evidence alone.
    steps.say("writing the compliance report (GDPR Art. 30, EU AI Act Annex IV, NIST AI RMF)");
    let evidence = ws.compliance_evidence(&owner).await?;
    let report_file = reports.join("compliance-report.html");
    std::fs::write(&report_file, crate::report_html::render(&evidence))?;
    std::fs::write(reports.join("evidence.json"), serde_json::to_vec_pretty(&evidence)?)?;

    steps.say("done");
    let elapsed = steps.start.elapsed().as_secs_f64();
    let card_html = final_run.card_html.clone().unwrap_or_default();
    let summary = serde_json::json!({
        "workspace": dir,
        "passphrase_file": pass_file,
        "model": model,
        "runs": runs.iter().map(|r| serde_json::json!({"id": r.id, "status": r.status, "stages": r.stages.iter().map(|s| (s.stage.clone(), s.status.clone())).collect::<Vec<_>>()})).collect::<Vec<_>>(),
        "model_card": card_html,
        "model_card_json": final_run.card_json,
        "endpoint": format!("https://{addr}{infer_path}"),
        "calls": {"authenticated_ok": calls.len(), "record": serde_json::from_str::<serde_json::Value>(&record)?, "record_answer": record_answer, "readable_answer": answer, "predicted_labels": labels, "probabilities": probs, "true_labels": truth, "unauthenticated_status": unauth, "forged_token_status": forged},
        "audit": {"verified_records": verify.records, "checkpoints": verify.checkpoints, "export": audit_file},
        "compliance_report": report_file,
        "token_file": token_file,
        "seconds": elapsed,
    });
    let ws_flag = format!("-w {}", dir.display());
    // A curl a person can read and edit: one record of named raw values.
    let record_text = format!("[{record}]").replace('\'', "'\\''");
    let curl = |port: u16| {
        format!(
            "  curl --cacert {} -H \"Authorization: Bearer $(cat {})\" https://localhost:{port}{infer_path} \\\n       -d '{record_text}'\n",
            ca.display(),
            token_file.display(),
        )
    };
    out.emit(&summary, || {
        let mut s = String::new();
        s += &format!("\nQuickstart finished in {elapsed:.1}s. Model {model} is served at https://{addr}{infer_path}\n");
        s += &format!("  3 authenticated calls: HTTP 200, predicted {labels:?} (true {truth:?}); without a token: HTTP {unauth}; forged token: HTTP {forged}\n");
        s += &format!("  audit log verified: {} records, {} signed checkpoints\n\n", verify.records, verify.checkpoints);
        s += &format!("Model card:  {}\n", card_html.display());
        s += &format!("Audit log:   {} (citadel {ws_flag} audit query | audit verify)\n", audit_file.display());
        s += &format!("Compliance:  {} (citadel {ws_flag} report)\n", report_file.display());
        s += &format!("Runs:        citadel {ws_flag} runs show {}\n", final_run.id);
        if let Some(p) = &pass_file {
            s += &format!("Passphrase:  {} — a demo convenience: anyone who can read it can decrypt the workspace.\n             export CITADEL_PASSPHRASE=$(cat {}) before other commands.\n", p.display(), p.display());
        }
        if keep {
            s += "\nCall it yourself while the quickstart keeps serving (Ctrl-C stops it):\n";
            s += &curl(addr.port());
        } else {
            s += "\nCall it yourself (the gateway stops when the quickstart ends; start it with the first line):\n";
            s += &format!("  citadel {ws_flag} serve --dev-self-signed --listen 127.0.0.1:8443 &\n");
            s += &curl(8443);
        }
        s += &format!("  → {answer}\n");
        s += &format!(
            "  The same rows as Open Inference Protocol columns (tritonclient, MLServer's pandas codec): -d @{}\n",
            request_file.display()
        );
        s
    });
    if keep {
        eprintln!("serving on https://{addr} until Ctrl-C");
    } else {
        let _ = tx_stop.send(());
    }
    let _ = gw.await;
    ws.close().await?;
    Ok(0)
}

/// `label ">50K", P(>50K) = 0.83` from a response with class names on its probabilities.
fn readable_answer(response: &serde_json::Value) -> String {
    let outputs = response["outputs"].as_array().cloned().unwrap_or_default();
    let find = |name: &str| outputs.iter().find(|o| o["name"] == name).cloned().unwrap_or_default();
    let (label, probs) = (find("label"), find("probabilities"));
    let classes: Vec<&str> =
        probs["parameters"]["classes"].as_array().into_iter().flatten().filter_map(|c| c.as_str()).collect();
    let p: Vec<f64> = probs["data"].as_array().into_iter().flatten().filter_map(|v| v.as_f64()).collect();
    let mut s = format!("label {}", label["data"][0]);
    if let (Some(c), Some(p)) = (classes.last(), p.get(classes.len().saturating_sub(1))) {
        s += &format!(", P({c}) = {p:.3}");
    }
    s
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

/// Five held-out rows of the stored (masked) data, encoded with the model's
/// encoder, as an OIP V2 request; and their true labels.
async fn example_request(
    ws: &Workspace,
    owner: &Caller,
    card: &serde_json::Value,
) -> Result<(Vec<u8>, String, Vec<String>)> {
    let encoder: citadel_ml::FeatureEncoder = serde_json::from_value(card["encoder"].clone())?;
    let data_ref = card["dataset"]["dataset"].as_str().ok_or_else(|| anyhow!("no dataset in the card"))?.to_string();
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("rows.parquet");
    ws.data_get(owner, &data_ref, &path, "parquet", false).await?;
    let table = citadel_ml::Table::read_parquet(&path)?;
    let rows: Vec<usize> = (table.rows.saturating_sub(5)..table.rows).collect();
    let sample = table.take(&rows);
    let label = card["dataset"]["label"].as_str().unwrap_or("income");
    let col = sample.column(label)?;
    let truth = (0..sample.rows).map(|i| col.text(i).unwrap_or_default()).collect();
    let body = serde_json::json!({"inputs": encoder.v2_inputs(&sample)?});
    // The first row as a record, its keys in the model's feature order.
    let fields: Vec<String> = body["inputs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| Some(format!("{}:{}", serde_json::to_string(i["name"].as_str()?).ok()?, i["data"][0])))
        .collect();
    let record = format!("{{{}}}", fields.join(","));
    Ok((serde_json::to_vec_pretty(&body)?, record, truth))
}

//! `citadel`: the command-line front end. Parses arguments, loads the
//! layered configuration, picks the caller's identity, calls the control
//! plane and renders the result as text or `--json`. Every error ends with a
//! `hint:` line.

/// `println!` for command output: a closed stdout (`citadel … | head`) drops
/// the rest of the output instead of panicking; the exit code is kept.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::write_stdout(&format!($($arg)*))
    };
}

/// mimalloc instead of glibc's malloc: the gateway allocates many small,
/// short-lived buffers per request on several threads, where glibc spent
/// 10-15% of the CPU in malloc/free and chunk consolidation (perf, c=16).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod access_cmd;
mod artifact_cmd;
mod audit_cmd;
mod data_cmd;
mod data_html;
mod forward_cmd;
mod hints;
mod lineage_render;
mod model_cmd;
mod monitor_cmd;
mod monitor_html;
mod out_file;
mod pipeline_cmd;
mod quickstart;
mod report_cmd;
mod report_html;
mod scan_cmd;
mod serve_cmd;
mod server_cmd;
mod subject_cmd;
mod transfer_cmd;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use clap::{Parser, Subcommand};
use serde::Serialize;

use access_cmd::{GrantCmd, KeyCmd, PrincipalCmd, TokenCmd};
use artifact_cmd::ArtifactCmd;
use audit_cmd::AuditCmd;
use citadel_control::{Caller, Config, ControlError, Secrets, Workspace};
use citadel_crypto::KdfParams;
use citadel_store::{AuditFilter, Progress, StoreError};
use citadel_types::{Redacted, Timestamp};
use hints::{error_text, hint_for};
use model_cmd::{ModelCmd, run_model};

#[derive(Parser, Debug)]
#[command(
    name = "citadel",
    version,
    about = "Secure MLOps: data, models and serving with security and compliance built in"
)]
struct Cli {
    /// Workspace directory (holds citadel.toml).
    #[arg(short = 'w', long, global = true, env = "CITADEL_WORKSPACE", default_value = ".")]
    workspace: PathBuf,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
    /// Override a setting: --set section.key=value (repeatable).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    set: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a workspace: config, metadata database, object store, keys.
    Init {
        /// Directory to create the workspace in (default: --workspace).
        dir: Option<PathBuf>,
        /// Name of the owner principal (admin on everything).
        #[arg(long, default_value = "owner")]
        owner: String,
        /// Master key provider: local (passphrase key file) or pkcs11.
        #[arg(long, default_value = "local")]
        key_provider: String,
        #[arg(long)]
        pkcs11_module: Option<String>,
        #[arg(long)]
        pkcs11_token: Option<String>,
        /// Metadata database URL (default: SQLite in the workspace).
        #[arg(long)]
        metadata_url: Option<String>,
        /// Object storage URL (default: file://objects in the workspace).
        #[arg(long)]
        storage_url: Option<String>,
        /// Argon2id memory in MiB for the key file (minimum 19).
        #[arg(long, default_value_t = 64)]
        kdf_memory_mib: u32,
    },
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Store and restore artifacts.
    #[command(subcommand)]
    Artifact(ArtifactCmd),
    /// Check every stored object; names what is missing or corrupt.
    Fsck,
    /// The compliance report from the evidence alone: GDPR Article 30
    /// records of processing, EU AI Act Annex IV documentation per model
    /// version, a NIST AI RMF map; each statement cites its audit record or
    /// digest. Exit code 2 when the audit log fails verification.
    Report {
        /// Directory for compliance-report.html and evidence.json.
        #[arg(short, long, default_value = "compliance-report")]
        output: PathBuf,
        /// Also print it to PDF with headless Chromium.
        #[arg(long)]
        pdf: bool,
    },
    /// Purge dataset versions past their declared retention, then remove
    /// chunks no artifact references and leftovers of crashed puts.
    Gc {
        /// Only delete leftover objects older than this many seconds.
        #[arg(long)]
        grace: Option<i64>,
    },
    /// Master key management.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Users and service accounts.
    #[command(subcommand)]
    Principal(PrincipalCmd),
    /// Role grants.
    #[command(subcommand)]
    Grant(GrantCmd),
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// The tamper-evident audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Show an artifact's lineage graph.
    Lineage {
        reference: String,
        #[arg(long, default_value = "text", value_parser = ["text", "dot", "mermaid", "json"])]
        format: String,
    },
    /// Scan a model file or directory for malicious content, without loading it.
    /// Fails closed: exit code 2 when anything is critical or could not be judged.
    Scan {
        path: PathBuf,
        /// What fails the scan (exit code 2): `warning` (default: critical or not judged),
        /// `critical` only, or `never` (reports only).
        #[arg(long, default_value = "warning", value_parser = ["warning", "critical", "never"])]
        fail_on: String,
        /// Also accept this global (exact module.name) for this scan, as a workspace allowlist would.
        #[arg(long)]
        allow: Vec<String>,
        /// Also write the findings as SARIF 2.1.0 to this file.
        #[arg(long)]
        sarif: Option<PathBuf>,
    },
    /// The workspace's reviewed extension of the scanner's allowlist (audited).
    #[command(subcommand)]
    Allowlist(scan_cmd::AllowlistCmd),
    /// Serve the live deployments over HTTPS (Open Inference Protocol V2).
    Serve(Box<serve_cmd::ServeArgs>),
    /// The control plane over HTTPS (REST, /api/v1): this process holds the
    /// keys; clients hold credentials (CITADEL_URL + CITADEL_TOKEN).
    Server(server_cmd::ServerArgs),
    /// Use a server from now on: its URL, CA and your token (read from
    /// stdin, checked with the server) are kept in ~/.config/citadel/client.json
    /// (0600); CITADEL_URL/CITADEL_TOKEN, when set, win.
    Login {
        url: String,
        /// The CA that signed the server's certificate (PEM).
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    /// Forget the server `login` kept (back to local mode).
    Logout,
    /// Map endpoints to model versions: single, canary, blue-green, A/B, shadow.
    #[command(subcommand)]
    Deploy(serve_cmd::DeployCmd),
    /// Live monitoring: drift of served traffic against the training data, per window.
    #[command(subcommand)]
    Monitor(monitor_cmd::MonitorCmd),
    /// Incidents that monitoring and the detectors opened: list, show, acknowledge, resolve.
    #[command(subcommand)]
    Incident(monitor_cmd::IncidentCmd),
    /// Datasets: ingest with validation, PII masking and poisoning checks; versions, diff, export.
    #[command(subcommand)]
    Data(data_cmd::DataCmd),
    /// Data-subject rights: erase a person's rows (with a signed receipt),
    /// export them (GDPR Art. 15, 17, 20).
    #[command(subcommand)]
    Subject(subject_cmd::SubjectCmd),
    /// The model registry: register, stages with approvals, rollback, history.
    #[command(subcommand)]
    Model(ModelCmd),
    /// Run a pipeline file: ingest → split → train → evaluate → gate →
    /// register → deploy; unchanged stages are skipped. Exit code 3 when the
    /// run ends without deploying (awaiting approval).
    Run { pipeline: PathBuf },
    /// Recorded pipeline runs.
    #[command(subcommand)]
    Runs(pipeline_cmd::RunsCmd),
    /// Training secrets, sealed under the key hierarchy, injected only into
    /// the sandboxed training command's environment.
    #[command(subcommand)]
    Secret(pipeline_cmd::SecretCmd),
    /// Create a workspace and run the whole platform on UCI Adult: ingest
    /// with masking, train, evaluate (fairness across sex and race), gate,
    /// sign, register, approve, deploy on the HTTPS gateway, call it, verify
    /// the audit log.
    Quickstart(quickstart::QuickstartArgs),
    /// Sign a model file or directory (OpenSSF model-signing format, key method).
    Sign {
        path: PathBuf,
        /// EC private key (PEM, P-256/P-384/P-521).
        #[arg(long)]
        key: PathBuf,
        /// Where to write the signature (default: model.sig in the current directory).
        #[arg(long, default_value = "model.sig")]
        signature: PathBuf,
        /// Hash in shards of this many bytes (parallel on large files); the
        /// model-signing CLI can verify only unsharded signatures.
        #[arg(long)]
        shard_size: Option<u64>,
    },
    /// Verify a model against a model-signing signature; names every changed,
    /// extra and missing file. Exit code 2 when the model does not match.
    Verify {
        path: PathBuf,
        #[arg(long, default_value = "model.sig")]
        signature: PathBuf,
        /// EC public key (PEM).
        #[arg(long)]
        public_key: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Report every configuration problem at once.
    Check,
    /// Print the resolved configuration.
    Show,
}

// ---------------------------------------------------------------- output

pub(crate) struct Out {
    json: bool,
}

impl Out {
    pub(crate) fn emit<T: Serialize>(&self, value: &T, text: impl FnOnce() -> String) {
        if self.json {
            outln!("{}", serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into()));
        } else {
            let t = text();
            if !t.is_empty() {
                outln!("{}", t.trim_end());
            }
        }
    }
}

struct Bar(indicatif::ProgressBar);

impl Progress for Bar {
    fn add_total(&self, n: u64) {
        self.0.inc_length(n);
    }
    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
}

/// A progress bar on stderr when it is a terminal and output is not JSON.
fn progress(json: bool, msg: &str, bytes: bool) -> Option<Arc<dyn Progress>> {
    if json || !std::io::stderr().is_terminal() {
        return None;
    }
    let template = if bytes {
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
    } else {
        "{msg} [{bar:30}] {pos}/{len} eta {eta}"
    };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(msg.to_string());
    Some(Arc::new(Bar(bar)))
}

fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", units[u]) }
}

// ---------------------------------------------------------------- errors

// ---------------------------------------------------------------- main

fn main() {
    // The training sandbox's own processes: dispatched before anything else
    // (the supervisor must stay single-threaded to enter namespaces).
    match std::env::args_os().nth(1).as_ref().and_then(|a| a.to_str()) {
        Some(citadel_sandbox::SUPERVISOR_ARG) => citadel_sandbox::supervisor_main(),
        Some(citadel_sandbox::INIT_ARG) => citadel_sandbox::init_main(),
        _ => {}
    }
    let cli = Cli::parse();
    let json = cli.json;
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            // A message that carries its own `hint:` line gives that hint, not the generic one.
            let (text, hint) = match error_text(&err).split_once("\nhint: ") {
                Some((t, h)) => (t.to_string(), h.to_string()),
                None => (error_text(&err), hint_for(&err)),
            };
            if json {
                let v = serde_json::json!({"error": text, "hint": hint});
                outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                eprintln!("error: {text}");
                eprintln!("hint: {hint}");
            }
            1
        }
    };
    std::process::exit(code);
}

fn env_map() -> BTreeMap<String, String> {
    std::env::vars().filter(|(k, _)| k.starts_with("CITADEL_")).collect()
}

fn overrides(cli: &Cli) -> Result<BTreeMap<String, String>> {
    cli.set
        .iter()
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow!("--set {s:?}: expected section.key=value"))
        })
        .collect()
}

fn secrets(prompt_ok: bool, confirm: bool) -> Result<Secrets> {
    let from_env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty()).map(Redacted::new);
    let mut passphrase = from_env("CITADEL_PASSPHRASE");
    if passphrase.is_none() && prompt_ok && std::io::stdin().is_terminal() {
        let p = rpassword::prompt_password("Master key passphrase: ").context("reading the passphrase")?;
        if confirm {
            let again = rpassword::prompt_password("Repeat passphrase: ").context("reading the passphrase")?;
            if again != p {
                return Err(anyhow!("the passphrases do not match"));
            }
        }
        passphrase = Some(Redacted::new(p));
    }
    Ok(Secrets { passphrase, pkcs11_pin: from_env("CITADEL_PKCS11_PIN") })
}

pub(crate) fn load_config(cli: &Cli, dir: &Path) -> Result<Config> {
    Config::load(dir, &env_map(), &overrides(cli)?).map_err(|p| ControlError::Config(p).into())
}

async fn open(cli: &Cli) -> Result<(Workspace, Caller)> {
    let config = load_config(cli, &cli.workspace)?;
    let ws = Workspace::open(config, &secrets(true, false)?).await?;
    let caller = match std::env::var("CITADEL_TOKEN") {
        Ok(t) if !t.is_empty() => ws.authenticate(&t).await?,
        _ => ws.owner().await?,
    };
    Ok((ws, caller))
}

async fn run(cli: Cli) -> Result<i32> {
    let out = Out { json: cli.json };
    // A client of a server opens nothing local (the file tools, which need
    // no workspace, and the server itself run here).
    let local_only = matches!(
        cli.command,
        Command::Scan { .. }
            | Command::Sign { .. }
            | Command::Verify { .. }
            | Command::Server(_)
            | Command::Login { .. }
            | Command::Logout
    );
    if !local_only && let Some(remote) = server_cmd::Remote::from_env()? {
        return server_cmd::run_remote(&remote, &cli.command, &out).await;
    }
    match &cli.command {
        Command::Init {
            dir,
            owner,
            key_provider,
            pkcs11_module,
            pkcs11_token,
            metadata_url,
            storage_url,
            kdf_memory_mib,
        } => {
            let dir = dir.clone().unwrap_or_else(|| cli.workspace.clone());
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let file = dir.join(citadel_control::config::CONFIG_FILE);
            if file.exists() {
                return Err(ControlError::AlreadyInitialized(dir).into());
            }
            let mut settings = BTreeMap::new();
            settings.insert("keys.provider".to_string(), key_provider.clone());
            for (k, v) in [
                ("keys.pkcs11_module", pkcs11_module),
                ("keys.pkcs11_token", pkcs11_token),
                ("metadata.url", metadata_url),
                ("storage.url", storage_url),
            ] {
                if let Some(v) = v {
                    settings.insert(k.to_string(), v.clone());
                }
            }
            // `--set` values given to init are written into the new file, so
            // later commands need not repeat them.
            settings.extend(overrides(&cli)?);
            std::fs::write(&file, Config::render_file(&settings))
                .with_context(|| format!("writing {}", file.display()))?;
            let result = async {
                let config = load_config(&cli, &dir)?;
                let kdf = KdfParams { memory_kib: kdf_memory_mib.saturating_mul(1024), ..KdfParams::default() };
                let (ws, report) = Workspace::init(config, &secrets(true, true)?, kdf, owner).await?;
                ws.close().await?;
                Ok::<_, anyhow::Error>(report)
            }
            .await;
            match result {
                Ok(report) => out.emit(&report, || {
                    format!(
                        "initialized workspace {}\n  owner principal: {} ({owner}, admin on *)\n  master key:      {}\n  audit key:       {} (public key {})\n\nKeep CITADEL_PASSPHRASE safe: without it the data cannot be decrypted.",
                        report.workspace.display(), report.owner, report.master_key, report.audit_key_id, report.audit_public_key
                    )
                }),
                Err(e) => {
                    // Leave no half-made workspace behind when init itself failed.
                    let _ = std::fs::remove_file(&file);
                    return Err(e);
                }
            }
        }
        Command::Config(ConfigCmd::Check) => match Config::load(&cli.workspace, &env_map(), &overrides(&cli)?) {
            Ok(c) => out.emit(&serde_json::json!({"ok": true, "config": c}), || "configuration OK".into()),
            Err(problems) => {
                out.emit(&serde_json::json!({"ok": false, "problems": problems}), || {
                    let mut s = format!("{} problem(s):\n", problems.len());
                    for p in &problems {
                        s += &format!("  - {p}\n");
                    }
                    s + "hint: fix each setting above; precedence is defaults < citadel.toml < CITADEL_<SECTION>_<KEY> < --set"
                });
                return Ok(1);
            }
        },
        Command::Config(ConfigCmd::Show) => {
            let c = load_config(&cli, &cli.workspace)?;
            out.emit(&c, || format!("{c:#?}"));
        }
        Command::Artifact(cmd) => return artifact_cmd::run(&cli, cmd, &out).await,
        Command::Fsck => {
            let (ws, caller) = open(&cli).await?;
            let r = ws.fsck(&caller, progress(cli.json, "fsck", false)).await;
            ws.close().await?;
            let r = r?;
            out.emit(&r, || {
                let mut s = format!(
                    "checked {} chunk(s) ({}) and {} manifest(s)\n",
                    r.chunks_checked,
                    human(r.bytes_checked),
                    r.manifests_checked
                );
                for (k, who) in &r.missing {
                    s += &format!("MISSING {k} (needed by {})\n", who.join(", "));
                }
                for (k, (why, who)) in &r.corrupt {
                    s += &format!("CORRUPT {k}: {why} (needed by {})\n", who.join(", "));
                }
                if r.orphans > 0 {
                    s += &format!("{} orphan object(s) from interrupted puts; `citadel gc` removes them\n", r.orphans);
                }
                if r.is_clean() {
                    s + "store OK"
                } else {
                    s + &format!("{} artifact(s) damaged", r.damaged_artifacts().len())
                }
            });
            if !r.is_clean() {
                return Ok(2);
            }
        }
        Command::Report { output, pdf } => {
            let (ws, caller) = open(&cli).await?;
            let result = report_cmd::run_report(&ws, &caller, output, *pdf, &out).await;
            ws.close().await?;
            return result;
        }
        Command::Gc { grace } => {
            let (ws, caller) = open(&cli).await?;
            let r = ws.gc(&caller, *grace).await;
            ws.close().await?;
            let r = r?;
            out.emit(&r, || {
                let mut s = String::new();
                for p in &r.purged {
                    s += &format!(
                        "purged {}@{} (ingested {}, retention {} day(s))\n",
                        p.dataset, p.version, p.ingested_at, p.retention_days
                    );
                }
                if r.monitoring_rows_purged > 0 {
                    s += &format!("deleted {} monitoring record(s) past their retention\n", r.monitoring_rows_purged);
                }
                s + &format!(
                    "removed {} unreferenced chunk(s) and {} orphan object(s), freed {}",
                    r.store.unreferenced_chunks,
                    r.store.orphan_objects,
                    human(r.store.bytes_freed)
                )
            });
        }
        Command::Key(cmd) => return access_cmd::run_key(&cli, cmd, &out).await,
        Command::Principal(cmd) => return access_cmd::run_principal(&cli, cmd, &out).await,
        Command::Grant(cmd) => return access_cmd::run_grant(&cli, cmd, &out).await,
        Command::Token(cmd) => return access_cmd::run_token(&cli, cmd, &out).await,
        Command::Audit(cmd) => return audit_cmd::run(&cli, cmd, &out).await,
        Command::Scan { path, fail_on, sarif, allow } => {
            return scan_cmd::run_scan(path, fail_on, sarif, allow, &out);
        }
        Command::Allowlist(cmd) => {
            let (ws, caller) = open(&cli).await?;
            let result = scan_cmd::run_allowlist(&ws, &caller, cmd, &out).await;
            ws.close().await?;
            return result;
        }
        Command::Login { url, ca } => return server_cmd::login(url, ca.as_deref(), &out).await,
        Command::Logout => return server_cmd::logout(&out),
        Command::Server(args) => {
            let config = load_config(&cli, &cli.workspace)?;
            let ws = Workspace::open(config, &secrets(true, false)?).await?;
            return server_cmd::run_server(ws, &cli.workspace, args, &out).await;
        }
        Command::Serve(args) if args.control.is_some() => {
            // A gateway that holds no key: the database only; it is who its
            // serving credential says.
            let config = load_config(&cli, &cli.workspace)?;
            let ws = Workspace::open_serving(config).await?;
            let token = std::env::var("CITADEL_SERVING_TOKEN").ok().filter(|t| !t.is_empty()).ok_or_else(|| {
                anyhow!("--control needs the gateway's serving credential in CITADEL_SERVING_TOKEN\nhint: citadel principal create gw --kind service; citadel grant add gw gateway; citadel token issue gw")
            })?;
            let caller = ws.authenticate(&token).await.map_err(|e| {
                anyhow!(
                    "the serving credential (CITADEL_SERVING_TOKEN) was refused by the database this workspace names: {e}\nhint: a gateway's citadel.toml names the server's metadata database (metadata.url, PostgreSQL when they run apart); issue the token there: citadel token issue GATEWAY"
                )
            })?;
            let dir = cli.workspace.clone();
            return serve_cmd::run_serve(ws, caller, (**args).clone(), &out, dir).await;
        }
        Command::Serve(args) => {
            let (ws, caller) = open(&cli).await?;
            let dir = cli.workspace.clone();
            return serve_cmd::run_serve(ws, caller, (**args).clone(), &out, dir).await;
        }
        Command::Deploy(cmd) => {
            let (ws, caller) = open(&cli).await?;
            let result = serve_cmd::run_deploy(&ws, &caller, cmd.clone(), &out).await;
            ws.close().await?;
            return result;
        }
        Command::Monitor(cmd) => {
            let (ws, caller) = open(&cli).await?;
            let result = monitor_cmd::run_monitor(&ws, &caller, cmd.clone(), &out).await;
            ws.close().await?;
            return result;
        }
        Command::Incident(cmd) => {
            let (ws, caller) = open(&cli).await?;
            let result = monitor_cmd::run_incident(&ws, &caller, cmd.clone(), &out).await;
            ws.close().await?;
            return result;
        }
        Command::Data(cmd) => {
            let (ws, caller) = open(&cli).await?;
            let result = data_cmd::run_data(&ws, &caller, cmd, &out).await;
            ws.close().await?;
            return result;
        }
        Command::Subject(cmd) => {
            let (ws, caller) = open(&cli).await?;
            let result = subject_cmd::run_subject(&ws, &caller, cmd, &out).await;
            ws.close().await?;
            return result;
        }
        Command::Model(cmd) => {
            let (ws, caller) = open(&cli).await?;
            let result = run_model(&ws, &caller, cmd, &out).await;
            ws.close().await?;
            return result;
        }
        Command::Run { pipeline } => {
            // The file is checked before the workspace is opened.
            pipeline_cmd::load_pipeline(pipeline)?;
            let (ws, caller) = open(&cli).await?;
            let result = pipeline_cmd::run_pipeline(&ws, &caller, pipeline, &out).await;
            ws.close().await?;
            return result;
        }
        Command::Runs(cmd) => {
            let (ws, caller) = open(&cli).await?;
            let result = pipeline_cmd::run_runs(&ws, &caller, cmd, &out).await;
            ws.close().await?;
            return result;
        }
        Command::Secret(cmd) => {
            let (ws, caller) = open(&cli).await?;
            let result = pipeline_cmd::run_secret(&ws, &caller, cmd, &out).await;
            ws.close().await?;
            return result;
        }
        Command::Quickstart(args) => {
            return quickstart::run(&cli, args, &out).await;
        }
        Command::Sign { path, key, signature, shard_size } => {
            let key = citadel_signing::SigningKey::from_pem_file(key)
                .map_err(|e| anyhow!("{e}\nhint: pass an EC private key in PEM (P-256, P-384 or P-521)"))?;
            let mut opts = citadel_signing::SignOptions::default();
            if let Some(n) = shard_size {
                anyhow::ensure!(*n > 0, "--shard-size must be at least 1\nhint: e.g. --shard-size 1000000000");
                opts.method = citadel_signing::Method::Shards(*n);
            }
            // A signature written inside the model is not part of it.
            if let (Ok(model), Some(parent)) = (std::fs::canonicalize(path), signature.parent()) {
                let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
                if let Ok(dir) = std::fs::canonicalize(parent)
                    && let Ok(rel) = dir.join(signature.file_name().unwrap_or_default()).strip_prefix(&model)
                {
                    opts.ignore_paths.push(rel.to_string_lossy().into_owned());
                }
            }
            let bundle =
                citadel_signing::sign(path, &key, &opts).map_err(|e| anyhow!("{e}\nhint: check the model path"))?;
            let tmp = signature.with_extension("sig.tmp");
            std::fs::write(&tmp, &bundle).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, signature).with_context(|| format!("writing {}", signature.display()))?;
            out.emit(&serde_json::json!({"signature": signature, "key_hint": key.hint()}), || {
                format!("signed {} -> {} (key hint {})", path.display(), signature.display(), key.hint())
            });
        }
        Command::Verify { path, signature, public_key } => {
            let key = citadel_signing::VerifyingKey::from_pem_file(public_key)
                .map_err(|e| anyhow!("{e}\nhint: pass the signer's EC public key in PEM"))?;
            let bundle =
                std::fs::read_to_string(signature).with_context(|| format!("reading {}", signature.display()))?;
            let mut ignore = Vec::new();
            if let (Ok(model), Ok(sig)) = (std::fs::canonicalize(path), std::fs::canonicalize(signature))
                && let Ok(rel) = sig.strip_prefix(&model)
            {
                ignore.push(rel.to_string_lossy().into_owned());
            }
            let v = citadel_signing::verify(path, &bundle, &key, &ignore)
                .map_err(|e| anyhow!("verification failed: {e}\nhint: check that the signature, the public key and the model belong together"))?;
            let ok = v.mismatch.is_empty();
            out.emit(&serde_json::json!({"verified": ok, "detail": v}), || {
                if ok {
                    return format!("Verification succeeded: {} resources, root digest {}", v.resources, v.root_digest);
                }
                let mut s = String::from("the signature is genuine but the model changed:\n");
                for f in &v.mismatch.changed {
                    s += &format!("  changed: {f}\n");
                }
                for f in &v.mismatch.extra {
                    s += &format!("  extra:   {f}\n");
                }
                for f in &v.mismatch.missing {
                    s += &format!("  missing: {f}\n");
                }
                s
            });
            return Ok(if ok { 0 } else { 2 });
        }
        Command::Lineage { reference, format } => {
            let (ws, caller) = open(&cli).await?;
            use lineage_render::Render;
            let g = ws.lineage(&caller, reference).await;
            ws.close().await?;
            let g = g?;
            match (format.as_str(), cli.json) {
                ("json", _) | (_, true) => outln!("{}", serde_json::to_string_pretty(&g)?),
                ("dot", _) => outln!("{}", g.to_dot().trim_end_matches('\n')),
                ("mermaid", _) => outln!("{}", g.to_mermaid().trim_end_matches('\n')),
                _ => outln!("{}", g.to_text().trim_end_matches('\n')),
            }
        }
    }
    Ok(0)
}

/// Set once stdout is closed (`citadel … | head`): later output is dropped.
static STDOUT_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes one line of command output; see `outln!`. A closed stdout is not
/// an error: the rest of the output is dropped and the command still ends
/// with its own exit code (a refused scan piped into `head` exits 2).
pub(crate) fn write_stdout(line: &str) {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
            return;
        }
        eprintln!("error: writing the output failed: {e}");
        std::process::exit(1);
    }
}

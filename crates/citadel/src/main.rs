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

mod data_cmd;
mod data_html;
mod forward_cmd;
mod monitor_cmd;
mod monitor_html;
mod out_file;
mod pipeline_cmd;
mod quickstart;
mod report_cmd;
mod report_html;
mod scan_cmd;
mod serve_cmd;
mod subject_cmd;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use clap::{Parser, Subcommand};
use serde::Serialize;

use citadel_control::{Caller, Config, ControlError, Secrets, Workspace};
use citadel_crypto::KdfParams;
use citadel_store::{AuditFilter, Progress, StoreError};
use citadel_types::{Redacted, Timestamp};

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
enum ModelCmd {
    /// Scan, sign, store and version a model; critical findings and anything the scan could not judge block it.
    Register {
        path: PathBuf,
        #[arg(long)]
        name: String,
        /// Training dataset (artifact id or name); repeatable.
        #[arg(long = "dataset")]
        datasets: Vec<String>,
        /// Code reference, e.g. git+https://host/repo@COMMIT.
        #[arg(long)]
        code_ref: Option<String>,
        /// Training parameters as a JSON file.
        #[arg(long)]
        params: Option<PathBuf>,
    },
    /// List a model's versions.
    Ls { name: String },
    /// Request a stage change (none -> staging -> production -> archived).
    Promote {
        #[arg(value_name = "NAME@VERSION", value_parser = parse_version_ref)]
        model: VersionRef,
        /// The old `NAME VERSION` form's second word: refused by the parser of
        /// the first, with a hint (hidden).
        #[arg(hide = true, value_parser = refuse_second_word)]
        _version: Option<String>,
        #[arg(long, value_parser = ["staging", "production", "archived"])]
        to: String,
    },
    /// Approve a stage request (as a different principal than the requester).
    Approve {
        request: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Reject a stage request.
    Reject {
        request: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// List stage requests.
    Requests {
        #[arg(long)]
        all: bool,
    },
    /// Put the previous production version back into production.
    Rollback { name: String },
    /// Retire a version for good (an approver's decision, with a reason kept
    /// in the history): it is never deployed, served or moved again.
    Retire {
        #[arg(value_name = "NAME@VERSION", value_parser = parse_version_ref)]
        model: VersionRef,
        /// The old `NAME VERSION` form's second word: refused by the parser of
        /// the first, with a hint (hidden).
        #[arg(hide = true, value_parser = refuse_second_word)]
        _version: Option<String>,
        /// Why the version leaves service (kept in the history and the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Stage changes; with --at, which version was in production then.
    History {
        name: String,
        #[arg(long)]
        at: Option<String>,
    },
    /// Print the workspace's model-signing public key (PEM), for `model_signing verify key`.
    PublicKey,
    /// Replace the model-signing key; versions signed by the old key stop verifying.
    RotateSigningKey,
    /// A CycloneDX 1.6 ML-BOM (JSON) for NAME@VERSION.
    Bom {
        #[arg(value_name = "NAME@VERSION", value_parser = parse_version_ref)]
        model: VersionRef,
        /// The old `NAME VERSION` form's second word: refused by the parser of
        /// the first, with a hint (hidden).
        #[arg(hide = true, value_parser = refuse_second_word)]
        _version: Option<String>,
    },
    /// Write a version's model card (HTML with charts, and JSON) into a directory.
    Card {
        reference: String,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Restore a version only after its digest and signature verify.
    Get {
        /// NAME@VERSION, or NAME@STAGE for the newest version in that stage
        /// (production, staging).
        #[arg(value_name = "NAME@VERSION", value_parser = parse_model_pick)]
        model: (String, String),
        #[arg(hide = true, value_parser = refuse_second_word)]
        _version: Option<String>,
        #[arg(short, long)]
        output: PathBuf,
    },
}

/// A model version as the CLI names one everywhere: `NAME@VERSION`.
#[derive(Debug, Clone)]
struct VersionRef {
    name: String,
    version: i64,
}

fn parse_version_ref(s: &str) -> Result<VersionRef, String> {
    match s.rsplit_once('@') {
        Some((name, v)) if !name.is_empty() => match v.parse::<i64>() {
            Ok(version) if version > 0 => Ok(VersionRef { name: name.to_string(), version }),
            _ => Err(format!("{v:?} is not a version number\nhint: name a version as NAME@VERSION, e.g. fraud@3")),
        },
        _ => Err(format!("{s:?} names no version\nhint: name a version as NAME@VERSION, e.g. {s}@1")),
    }
}

/// A word after `NAME@VERSION` (the old `NAME VERSION` form): refused.
fn refuse_second_word(s: &str) -> Result<String, String> {
    Err(format!("unexpected {s:?}\nhint: name the version in one word, NAME@VERSION (e.g. fraud@{s})"))
}

/// `NAME@VERSION` or `NAME@STAGE`.
fn parse_model_pick(s: &str) -> Result<(String, String), String> {
    match s.rsplit_once('@') {
        Some((name, r)) if !name.is_empty() && !r.is_empty() => Ok((name.to_string(), r.to_string())),
        _ => {
            Err(format!("{s:?} names no version\nhint: NAME@VERSION (e.g. {s}@1) or NAME@STAGE (e.g. {s}@production)"))
        }
    }
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Report every configuration problem at once.
    Check,
    /// Print the resolved configuration.
    Show,
}

#[derive(Subcommand, Debug)]
enum ArtifactCmd {
    /// Store a file or directory; prints the artifact id.
    Put {
        path: PathBuf,
        #[arg(long)]
        name: Option<String>,
        /// Artifact this one was derived from (repeatable).
        #[arg(long = "parent")]
        parents: Vec<String>,
    },
    /// Restore an artifact byte for byte.
    Get {
        reference: String,
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
    /// List artifacts.
    Ls,
}

#[derive(Subcommand, Debug)]
enum KeyCmd {
    /// Re-wrap data keys under a new master key and retire the old one.
    Rotate,
    /// List master keys.
    #[command(name = "ls", alias = "list")]
    List,
}

#[derive(Subcommand, Debug)]
enum PrincipalCmd {
    Create {
        name: String,
        #[arg(long, default_value = "user", value_parser = ["user", "service"])]
        kind: String,
    },
    #[command(name = "ls", alias = "list")]
    List,
    Disable {
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum GrantCmd {
    /// Grant ROLE on SCOPE (e.g. dataset:adult*, model:*, *).
    Add {
        principal: String,
        /// admin, data-steward, data-scientist, ml-engineer, approver,
        /// auditor, inference-client, privacy-officer, feedback-client
        /// (posts ground-truth labels) or gateway (what `citadel serve` needs:
        /// models, monitoring, incidents, throttles).
        role: String,
        #[arg(long, default_value = "*")]
        scope: String,
    },
    Revoke {
        principal: String,
        role: String,
        #[arg(long, default_value = "*")]
        scope: String,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCmd {
    /// Issue a token; it is shown once.
    Issue {
        principal: String,
        #[arg(long, default_value_t = 90)]
        ttl_days: i64,
        /// Lifetime in seconds (overrides --ttl-days).
        #[arg(long)]
        ttl_secs: Option<i64>,
        #[arg(long, default_value = "")]
        label: String,
    },
    Revoke {
        id: String,
    },
    #[command(name = "ls", alias = "list")]
    List,
}

#[derive(Subcommand, Debug)]
enum AuditCmd {
    /// Verify the hash chain and signed checkpoints.
    Verify,
    /// Query records.
    Query {
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Export records for a SIEM.
    Export {
        #[arg(long, default_value = "jsonl", value_parser = ["jsonl", "cef", "ocsf"])]
        format: String,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Sign a checkpoint of the current chain head now.
    Checkpoint,
    /// Stream records to a SIEM (syslog over TLS or UDP, RFC 5424), at least
    /// once, from where the destination's durable cursor stands.
    Forward(forward_cmd::ForwardArgs),
}

#[derive(clap::Args, Debug)]
struct FilterArgs {
    /// Principal id.
    #[arg(long)]
    actor: Option<String>,
    #[arg(long)]
    action: Option<String>,
    /// Resource prefix, e.g. artifact: or principal:alice.
    #[arg(long)]
    resource: Option<String>,
    #[arg(long, value_parser = ["success", "denied", "failure"])]
    outcome: Option<String>,
    /// RFC 3339 time or YYYY-MM-DD (inclusive).
    #[arg(long)]
    since: Option<String>,
    /// RFC 3339 time or YYYY-MM-DD (exclusive).
    #[arg(long)]
    until: Option<String>,
    #[arg(long)]
    limit: Option<i64>,
}

impl FilterArgs {
    fn to_filter(&self) -> Result<AuditFilter> {
        let time = |s: &Option<String>, what: &str| -> Result<Option<Timestamp>> {
            s.as_deref()
                .map(|v| {
                    Timestamp::parse(v)
                        .ok_or_else(|| anyhow!("--{what} {v:?} is not an RFC 3339 time or YYYY-MM-DD date"))
                })
                .transpose()
        };
        Ok(AuditFilter {
            actor: self.actor.clone(),
            action: self.action.clone(),
            resource_prefix: self.resource.clone(),
            outcome: self.outcome.as_deref().and_then(citadel_audit::Outcome::parse),
            since: time(&self.since, "since")?,
            until: time(&self.until, "until")?,
            after_seq: None,
            limit: self.limit,
        })
    }
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

/// A hint for each kind of failure: what to do next.
fn hint_for(err: &anyhow::Error) -> String {
    if let Some(c) = err.downcast_ref::<ControlError>() {
        return match c {
            ControlError::Denied { .. } => "ask an admin for a grant: citadel grant add PRINCIPAL ROLE --scope KIND:NAME".into(),
            ControlError::Unauthenticated(_) => "check CITADEL_TOKEN: it may be expired or revoked; ask an admin for a new one with `citadel token issue`".into(),
            ControlError::Config(_) => "fix the settings listed above in citadel.toml (or the named environment variables); `citadel config check` re-checks".into(),
            ControlError::AlreadyInitialized(_) => "use the existing workspace, or choose another directory".into(),
            ControlError::NotFound(what) if what.starts_with("erasure ") => "`citadel subject erasures` lists the erasures and their ids".into(),
            ControlError::NotFound(what) if what.starts_with("deployment ") => "`citadel deploy ls` lists the endpoints".into(),
            ControlError::NotFound(what) if what.starts_with("incident ") => "`citadel incident ls --all` lists the incidents".into(),
            ControlError::NotFound(_) => "check the name or id; `citadel artifact ls` and `citadel principal list` show what exists".into(),
            ControlError::Crypto(citadel_crypto::CryptoError::WrongPassphrase { .. }) => "set CITADEL_PASSPHRASE to the passphrase used at `citadel init`; nothing was changed".into(),
            ControlError::Crypto(citadel_crypto::CryptoError::KeyFilePermissions { path, .. }) => format!("run: chmod 600 {}", path.display()),
            ControlError::Crypto(citadel_crypto::CryptoError::Pkcs11 { .. }) => "check keys.pkcs11_module, keys.pkcs11_token and CITADEL_PKCS11_PIN".into(),
            ControlError::Store(s) => store_hint(s),
            ControlError::Types(_) => "names use letters, digits, '.', '_', '-' and '/' separators; each part starts with a letter or digit".into(),
            ControlError::Policy(_) => "see `citadel grant add --help` for roles and scope syntax".into(),
            ControlError::ScanBlocked { .. } => "run `citadel scan PATH` to see every finding; a model with critical findings, or content the scanner cannot judge, is not registered (after a review, `citadel allowlist add MODULE.NAME --reason ...` allows a library's global)".into(),
            ControlError::GateFailed { policy, .. } if policy.contains(", run ") => "nothing was registered; fix what the gate lists (or change the pipeline's [gate] thresholds or policy) and run again — `citadel runs show RUN` shows the run".into(),
            ControlError::GateFailed { .. } => "fix what the gate lists (or, with the workspace owner's agreement, edit policies/model-gate.rego); the request stays pending".into(),
            ControlError::RetiredModel { model, .. } => format!("deploy or promote another version; `citadel model history {model}` shows why this one was retired"),
            ControlError::RetiredSigningKey { .. } => "register the model again (it is scanned and signed with the current key), then request the stage change".into(),
            ControlError::SelfApproval { .. } => "another principal holding the approver role must approve it".into(),
            ControlError::Conflict(m) if m.contains("erase") || m.contains("erasure") => "nothing was changed; run the erasure again (on every dataset named)".into(),
            ControlError::Conflict(m) if m.contains("incident ") => "`citadel incident show ID` shows its status and timeline".into(),
            ControlError::Conflict(m) if m.contains("changed after the playbook") => "`citadel deploy history ENDPOINT` shows every revision".into(),
            ControlError::Conflict(_) => "`citadel model requests --all` shows every request and its state".into(),
            ControlError::NoSubjectRows { dataset, .. } => format!("nothing was changed or returned; check the values (`citadel data show {dataset}` lists the columns and their masks; values are matched as they were in the source file)"),
            ControlError::SubjectTooBroad { .. } => "name the person by an identifying column (an e-mail, a customer id), or raise --max-rows when one person truly has that many rows".into(),
            ControlError::ErasedSource { .. } => "remove the erased subjects' rows from the file first (`citadel subject erasures` lists the erasures; the receipts name the columns used)".into(),
            ControlError::PurposeNotAllowed { dataset, .. } => format!("declare a purpose the data was collected for in [pipeline] purpose (`citadel data show {dataset}` shows the dataset's [processing]), or ingest the data with expectations whose [processing] purposes cover this use"),
            ControlError::ErasedTrainingData { model, .. } => format!("retrain on the erased data and register the new version (`citadel subject erasures` lists what was erased; `citadel lineage model:{model}@VERSION` shows the training data)"),
            ControlError::DataRejected { .. } => data_cmd::REJECTED_HINT.into(),
            ControlError::Data(d) => d.hint().into(),
            ControlError::Signing(_) => "the stored model no longer matches its signature: run `citadel fsck` and check the audit log".into(),
            _ => "see `citadel --help`".into(),
        };
    }
    "see `citadel --help`".into()
}

/// The error and its causes, joined by ": ", each cause once: library
/// errors that already print their source (`I/O error on F: …`) do not
/// repeat it.
fn error_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let c = cause.to_string();
        if text.contains(&c) {
            continue;
        }
        if !text.is_empty() {
            text += ": ";
        }
        text += &c;
    }
    text
}

/// Whether an error or one of its causes says `needle`.
fn chain_mentions(e: &(dyn std::error::Error + 'static), needle: &str) -> bool {
    let mut cur = Some(e);
    while let Some(x) = cur {
        if x.to_string().contains(needle) {
            return true;
        }
        cur = x.source();
    }
    false
}

fn store_hint(s: &StoreError) -> String {
    match s {
        StoreError::OutOfSpace { .. } => {
            "free space on the storage volume, then retry; nothing partial was recorded".into()
        }
        StoreError::OutputExists(_) => "pass -o with a path that does not exist yet".into(),
        StoreError::ArtifactNotFound(_) => "`citadel artifact ls` lists artifacts; use an id (prefix) or a name".into(),
        StoreError::Corrupt { .. } | StoreError::MissingObject { .. } => {
            "run `citadel fsck` to see every damaged object and the artifacts affected".into()
        }
        StoreError::GcRunning { .. } | StoreError::PutsInProgress { .. } => {
            "wait for the other operation to finish, then retry".into()
        }
        StoreError::Connect { source, .. } if chain_mentions(source, "certificate") => {
            "the database server's certificate did not verify: with sslmode=verify-full, sslrootcert in metadata.url must name the CA that signed it, and the URL's host must be one the certificate names".into()
        }
        StoreError::Connect { .. } => "check metadata.url and that the database server is running".into(),
        StoreError::Object { source, .. } if chain_mentions(source, "certificate") => {
            "the S3 endpoint's certificate did not verify: set storage.s3_ca_file to the PEM of the CA that signed it (and check storage.s3_endpoint's host name)".into()
        }
        StoreError::NotRegular { .. } => "store the file the link points to, or copy it into the directory".into(),
        StoreError::Io { .. } => "check that the path exists and is readable".into(),
        _ => "run `citadel fsck`; if the problem persists, report it with the message above".into(),
    }
}

async fn run_model(ws: &Workspace, caller: &Caller, cmd: &ModelCmd, out: &Out) -> Result<i32> {
    match cmd {
        ModelCmd::Register { path, name, datasets, code_ref, params } => {
            let params = match params {
                Some(p) => Some(
                    serde_json::from_str::<serde_json::Value>(
                        &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
                    )
                    .map_err(|e| {
                        anyhow!(
                            "--params {}: not JSON ({e})\nhint: pass a JSON file of training parameters",
                            p.display()
                        )
                    })?,
                ),
                None => None,
            };
            let req = citadel_control::RegisterRequest {
                path: path.clone(),
                name: name.clone(),
                datasets: datasets.clone(),
                code_ref: code_ref.clone(),
                params,
            };
            match ws.model_register(caller, &req).await {
                Ok(v) => out.emit(&v, || {
                    format!(
                        "registered {} version {} (artifact {}, signed with key {}, {} scan warning(s))",
                        v.model, v.version, v.artifact_id, v.signature_key_hint, v.scan["warnings"]
                    )
                }),
                Err(ControlError::ScanBlocked { model, critical, unjudged, findings }) => {
                    let mut msg = format!(
                        "registration of {model} blocked: {critical} critical finding(s), {unjudged} the scanner could not judge"
                    );
                    for f in findings.iter().filter(|f| f.severity.refuses()) {
                        msg += &format!("\n  {} {} [{}]: {}", f.severity.as_str(), f.location, f.rule, f.message);
                    }
                    anyhow::bail!(
                        "{msg}\nhint: nothing was registered and the refusal is in the audit log; after reviewing a library, `citadel allowlist add MODULE.NAME --reason ...` allows its globals"
                    );
                }
                Err(e) => return Err(e.into()),
            }
        }
        ModelCmd::Ls { name } => {
            let versions = ws.model_versions(caller, name).await?;
            out.emit(&versions, || {
                let mut s = format!("{:<8} {:<11} {:<20} {:<12} artifact\n", "version", "stage", "created", "by");
                for v in &versions {
                    s += &format!(
                        "{:<8} {:<11} {:<20} {:<12} {}\n",
                        v.version,
                        v.stage,
                        &v.created_at[..19.min(v.created_at.len())],
                        v.created_by,
                        &v.artifact_id[..16]
                    );
                }
                s
            });
        }
        ModelCmd::Promote { model, to, .. } => {
            let r = ws.model_request_stage(caller, &model.name, model.version, to).await?;
            out.emit(&r, || {
                format!(
                    "requested {}@{} -> {} (request {}); an approver must run: citadel model approve {}",
                    r.model, r.version, r.to_stage, r.id, r.id
                )
            });
        }
        ModelCmd::Approve { request, note } | ModelCmd::Reject { request, note } => {
            let approve = matches!(cmd, ModelCmd::Approve { .. });
            let r = ws.model_decide(caller, request, approve, note).await?;
            out.emit(&r, || {
                format!("{} request {}: {} version {} -> {}", r.status, r.id, r.model, r.version, r.to_stage)
            });
        }
        ModelCmd::Requests { all } => {
            let rs = ws.model_requests(caller, !all).await?;
            out.emit(&rs, || {
                rs.iter()
                    .map(|r| {
                        format!(
                            "{}  {}@{} -> {}  {}  by {}",
                            r.id, r.model, r.version, r.to_stage, r.status, r.requested_by
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        ModelCmd::Rollback { name } => {
            let e = ws.model_rollback(caller, name).await?;
            out.emit(&e, || format!("rolled back {name}: version {} is in production again", e.version));
        }
        ModelCmd::Retire { model, reason, .. } => {
            let (name, version) = (&model.name, model.version);
            let r = ws.model_retire(caller, name, version, reason).await?;
            out.emit(&r, || {
                format!("retired {name} version {version} ({}); it is no longer deployed or served", r.note)
            });
        }
        ModelCmd::History { name, at } => {
            let at = at
                .as_deref()
                .map(|v| {
                    Timestamp::parse(v).ok_or_else(|| {
                        anyhow!("--at {v:?} is not an RFC 3339 time\nhint: e.g. --at 2026-11-23T17:00:00Z")
                    })
                })
                .transpose()?;
            let (events, prod) = ws.model_history(caller, name, at).await?;
            out.emit(
                &serde_json::json!({"events": events, "at": at.map(|t| t.to_rfc3339()), "in_production_at": prod}),
                || {
                    let mut s = String::new();
                    for e in &events {
                        s += &format!(
                            "{}  version {}: {} -> {}  by {} ({}){}\n",
                            e.at,
                            e.version,
                            e.from_stage,
                            e.to_stage,
                            e.by,
                            e.request,
                            if e.note.is_empty() { String::new() } else { format!(": {}", e.note) }
                        );
                    }
                    if let Some(t) = at {
                        s += &match prod {
                            Some(v) => format!("at {}: version {v} was in production", t.to_rfc3339()),
                            None => format!("at {}: no version was in production", t.to_rfc3339()),
                        };
                    }
                    s
                },
            );
        }
        ModelCmd::Get { model: (name, reference), output, .. } => {
            if output.symlink_metadata().is_ok() {
                anyhow::bail!("{} already exists\nhint: pass -o with a path that does not exist yet", output.display());
            }
            let m = ws.model_load(caller, name, reference).await?;
            copy_tree(&m.path, output).with_context(|| format!("writing {}", output.display()))?;
            out.emit(&serde_json::json!({"model": m.model, "version": m.version, "artifact": m.artifact_id, "root_digest": m.root_digest, "path": output}), || {
                format!("verified {} version {} (root digest {}) -> {}", m.model, m.version, m.root_digest, output.display())
            });
        }
        ModelCmd::RotateSigningKey => {
            let r = ws.model_signing_rotate(caller).await?;
            out.emit(&r, || format!("model-signing key rotated: {} retired, {} active", r["retired"], r["new"]));
        }
        ModelCmd::Card { reference, out: dir } => {
            return pipeline_cmd::run_card(ws, caller, reference, dir, out).await;
        }
        ModelCmd::Bom { model, .. } => {
            let bom = ws.model_bom(caller, &model.name, model.version).await?;
            // The BOM is JSON either way.
            outln!("{}", serde_json::to_string_pretty(&bom)?);
        }
        ModelCmd::PublicKey => {
            let pem = ws.model_signing_public_key(caller).await?;
            out.emit(&serde_json::json!({"public_key_pem": pem}), || pem.clone());
        }
    }
    Ok(0)
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    if from.is_dir() {
        std::fs::create_dir_all(to)?;
        for e in std::fs::read_dir(from)? {
            let e = e?;
            copy_tree(&e.path(), &to.join(e.file_name()))?;
        }
        Ok(())
    } else {
        std::fs::copy(from, to).map(drop)
    }
}

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
        Command::Artifact(cmd) => {
            let (ws, caller) = open(&cli).await?;
            match cmd {
                ArtifactCmd::Put { path, name, parents } => {
                    let r =
                        ws.artifact_put(&caller, path, name.as_deref(), parents, progress(cli.json, "put", true)).await;
                    ws.close().await?;
                    let r = r?;
                    out.emit(&r, || {
                        if std::io::stdout().is_terminal() {
                            format!(
                                "{}\n  {} in {} file(s), {} chunk(s); newly stored {} in {} chunk(s){}",
                                r.id,
                                human(r.size),
                                r.files,
                                r.chunks,
                                human(r.new_bytes),
                                r.new_chunks,
                                if r.new { "" } else { " (already stored)" }
                            )
                        } else {
                            r.id.clone()
                        }
                    });
                }
                ArtifactCmd::Get { reference, output } => {
                    let dest = output.clone().unwrap_or_else(|| PathBuf::from(reference.replace('/', "_")));
                    let r = ws.artifact_get(&caller, reference, &dest, progress(cli.json, "get", true)).await;
                    ws.close().await?;
                    let r = r?;
                    out.emit(&r, || {
                        format!("restored {} ({}, {} file(s)) to {}", r.id, human(r.bytes), r.files, r.path.display())
                    });
                }
                ArtifactCmd::Ls => {
                    let list = ws.artifact_list(&caller).await;
                    ws.close().await?;
                    let list = list?;
                    out.emit(&list, || {
                        let mut s = format!(
                            "{:<16} {:<9} {:>10} {:>6}  {:<27} NAMES\n",
                            "ID", "KIND", "SIZE", "FILES", "CREATED"
                        );
                        for a in &list {
                            s += &format!(
                                "{:<16} {:<9} {:>10} {:>6}  {:<27} {}\n",
                                &a.id.to_string()[..16],
                                a.kind.as_str(),
                                human(a.size),
                                a.file_count,
                                a.created_at.to_rfc3339(),
                                a.names.join(",")
                            );
                        }
                        s
                    });
                }
            }
        }
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
        Command::Key(cmd) => {
            let (mut ws, caller) = open(&cli).await?;
            match cmd {
                KeyCmd::Rotate => {
                    let r = ws.key_rotate(&caller).await;
                    ws.close().await?;
                    let r = r?;
                    out.emit(&r, || {
                        format!(
                            "master key rotated: {} -> {} ({} data keys re-wrapped; old key destroyed)",
                            r.old_master_key, r.new_master_key, r.data_keys_rewrapped
                        )
                    });
                }
                KeyCmd::List => {
                    let r = ws.key_list(&caller).await;
                    ws.close().await?;
                    let r = r?;
                    out.emit(&r, || {
                        r.iter()
                            .map(|k| format!("{} {} {} created {}\n", k.id, k.provider, k.status, k.created_at))
                            .collect()
                    });
                }
            }
        }
        Command::Principal(cmd) => {
            let (ws, caller) = open(&cli).await?;
            let result: Result<()> = async {
                match cmd {
                    PrincipalCmd::Create { name, kind } => {
                        let p = ws.principal_create(&caller, name, kind).await?;
                        out.emit(&p, || format!("created {} {} ({})", p.kind, p.name, p.id));
                    }
                    PrincipalCmd::List => {
                        let list = ws.principal_list(&caller).await?;
                        let v: Vec<_> =
                            list.iter().map(|(p, g)| serde_json::json!({"principal": p, "grants": g})).collect();
                        out.emit(&v, || {
                            list.iter()
                                .map(|(p, g)| {
                                    format!(
                                        "{:<20} {:<8} {}{}  {}\n",
                                        p.name,
                                        p.kind,
                                        p.id,
                                        if p.disabled_at.is_some() { " (disabled)" } else { "" },
                                        g.iter()
                                            .map(|g| format!("{}@{}", g.role, g.scope))
                                            .collect::<Vec<_>>()
                                            .join(" ")
                                    )
                                })
                                .collect()
                        });
                    }
                    PrincipalCmd::Disable { name } => {
                        ws.principal_disable(&caller, name).await?;
                        out.emit(&serde_json::json!({"disabled": name}), || format!("disabled {name}"));
                    }
                }
                Ok(())
            }
            .await;
            ws.close().await?;
            result?;
        }
        Command::Grant(cmd) => {
            let (ws, caller) = open(&cli).await?;
            let result = match cmd {
                GrantCmd::Add { principal, role, scope } => {
                    ws.grant_add(&caller, principal, role, scope).await.map(|c| (c, "granted", principal, role, scope))
                }
                GrantCmd::Revoke { principal, role, scope } => ws
                    .grant_revoke(&caller, principal, role, scope)
                    .await
                    .map(|c| (c, "revoked", principal, role, scope)),
            };
            ws.close().await?;
            let (changed, verb, p, r, s) = result?;
            out.emit(&serde_json::json!({"changed": changed, "principal": p, "role": r, "scope": s}), || {
                format!("{verb} {r} on {s} for {p}{}", if changed { "" } else { " (no change)" })
            });
        }
        Command::Token(cmd) => {
            let (ws, caller) = open(&cli).await?;
            let result: Result<()> = async {
                match cmd {
                    TokenCmd::Issue { principal, ttl_days, ttl_secs, label } => {
                        let t =
                            ws.token_issue(&caller, principal, label, ttl_secs.unwrap_or(ttl_days * 86_400)).await?;
                        out.emit(&t, || {
                            format!(
                                "{}\n(token {} for {}, expires {}; shown once, store it now)",
                                t.token, t.id, t.principal, t.expires_at
                            )
                        });
                    }
                    TokenCmd::Revoke { id } => {
                        let changed = ws.token_revoke(&caller, id).await?;
                        out.emit(&serde_json::json!({"revoked": id, "changed": changed}), || {
                            format!("revoked token {id}")
                        });
                    }
                    TokenCmd::List => {
                        let list = ws.token_list(&caller).await?;
                        out.emit(&list, || {
                            list.iter()
                                .map(|t| {
                                    format!(
                                        "{} {} expires {}{} {}\n",
                                        t.id,
                                        t.principal_id,
                                        t.expires_at,
                                        if t.revoked_at.is_some() { " REVOKED" } else { "" },
                                        t.label
                                    )
                                })
                                .collect()
                        });
                    }
                }
                Ok(())
            }
            .await;
            ws.close().await?;
            result?;
        }
        Command::Audit(cmd) => {
            let (ws, caller) = open(&cli).await?;
            let result: Result<i32> = async {
                match cmd {
                    AuditCmd::Verify => {
                        let r = ws.audit_verify(&caller).await?;
                        out.emit(&r, || {
                            let mut s = format!(
                                "{} record(s), {} signed checkpoint(s); head #{} {}\naudit key {}\n",
                                r.records, r.checkpoints, r.head_seq, r.head_hash, r.audit_key_id
                            );
                            for p in &r.problems {
                                s += &format!("TAMPERED: {p}\n");
                            }
                            if r.problems.is_empty() {
                                s + "audit log intact"
                            } else {
                                s + "audit log FAILED verification"
                            }
                        });
                        Ok(if r.problems.is_empty() { 0 } else { 2 })
                    }
                    AuditCmd::Query { filter } => {
                        let records = ws.audit_query(&caller, &filter.to_filter()?).await?;
                        out.emit(&records, || {
                            records
                                .iter()
                                .map(|r| {
                                    format!(
                                        "#{:<5} {} {:<8} {:<20} {:<18} {}\n",
                                        r.seq,
                                        r.event.ts,
                                        r.event.outcome.as_str(),
                                        r.event.actor,
                                        r.event.action,
                                        r.event.resource
                                    )
                                })
                                .collect()
                        });
                        Ok(0)
                    }
                    AuditCmd::Export { format, filter } => {
                        let fmt: citadel_audit::ExportFormat = format.parse().map_err(|e: String| anyhow!(e))?;
                        for line in ws.audit_export(&caller, &filter.to_filter()?, fmt).await? {
                            outln!("{line}");
                        }
                        Ok(0)
                    }
                    AuditCmd::Forward(args) => forward_cmd::run(&ws, &caller, args.clone(), &out).await,
                    AuditCmd::Checkpoint => {
                        let cp = ws.audit_checkpoint(&caller).await?;
                        out.emit(&cp, || match &cp {
                            Some(c) => format!("signed checkpoint at record {} head {}", c.seq, c.head),
                            None => "head already checkpointed".into(),
                        });
                        Ok(0)
                    }
                }
            }
            .await;
            ws.close().await?;
            return result;
        }
        Command::Scan { path, fail_on, sarif, allow } => {
            return scan_cmd::run_scan(path, fail_on, sarif, allow, &out);
        }
        Command::Allowlist(cmd) => {
            let (ws, caller) = open(&cli).await?;
            let result = scan_cmd::run_allowlist(&ws, &caller, cmd, &out).await;
            ws.close().await?;
            return result;
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

//! The control plane: the one layer through which every operation passes,
//! whether the CLI calls it in-process or (later) the HTTP API does.
//!
//! **Architecture invariant:** each public operation on [`Workspace`] first
//! authorizes its [`Caller`] (a denial is audited and returned as
//! [`ControlError::Denied`]), then performs the work so that its state change
//! and its audit record commit in one transaction.

#![forbid(unsafe_code)]

mod access;
mod artifacts;
mod audit_log;
pub mod config;
mod credentials;
mod data;
mod deploy;
mod feedback;
mod identity;
mod incident;
mod jwt;
mod keys;
mod lineage;
mod monitor;
mod pipeline;
pub mod pipeline_spec;
mod playbook;
mod registry;
mod report;
mod retention;
pub mod scan_policy;
mod subject;

pub use access::IssuedToken;
pub use artifacts::{GcOutcome, OpenedArtifact, PutReport};
pub use audit_log::{VERIFY_PAGE, VerifyReport};
pub use credentials::AuthVerdict;
pub use data::{DataDiff, DataGetReport, DataVersion, parse_dataset_ref};
pub use deploy::{Deployment, DeploymentRevision, DeploymentSpec, Strategy, Target, Withdrawal, parse_target};
pub use feedback::{FeedbackItem, FeedbackPolicy, FeedbackReceipt, LivePerformance, PredictionRecord};
pub use identity::{AuthError, Caller, CredentialKind, JwtFailure, JwtVerifier, OIDC_KIND, Permit, Refusal};
pub use incident::{Detection, Incident, IncidentEvent, Severity};
pub use jwt::{JwksError, JwksFetch};
pub use keys::RotateReport;
pub use lineage::{LineageGraph, LineageNode};
pub use monitor::{DetectorPolicy, MonitoringPolicy, WindowRecord, WindowVerdict};
pub use pipeline::{RunOptions, RunReport, StageProgress, StageRecord};
pub use playbook::{ActionOutcome, PLAYBOOK_FILE, PlaybookMode, Quarantine, Throttle};
pub use registry::{ModelSummary, ModelVersion, RegisterRequest, StageEvent, StageRequest, VerifiedModel};
pub use report::{AuditIntegrity, ComplianceEvidence, DatasetRecord, EvidenceRecord, ModelRecord};
pub use retention::PurgedVersion;
pub use subject::{ErasedVersion, ErasureReceipt, RECEIPT_FORMAT, SignedReceipt, SubjectExport, SubjectRow};

use citadel_policy::{Resource, ResourceKind};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use citadel_audit::{AuditEvent, AuditRecord, Checkpoint, ExportFormat, Outcome, Problem};
use citadel_crypto::{
    ApiToken, AuditSigner, CryptoError, DataKey, DataKeyPurpose, KdfParams, LocalKeyFile, MasterKeyProvider,
    Pkcs11Config, Pkcs11Provider,
};
use citadel_policy::{Action, Role, Scope};
use citadel_store::{
    ArtifactInfo, ArtifactStore, AuditFilter, Db, FsckReport, GcReport, GetReport, LineageEdge, ObjectBackend,
    Principal, Progress, StorageUrl, StoreError,
};
use citadel_types::{Name, Redacted, Timestamp};

pub use config::{Config, ConfigProblem};

/// Errors of control-plane operations. The CLI maps each to a hint.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("permission denied: {principal} may not {action} on {resource}")]
    Denied { principal: String, action: String, resource: String },
    #[error("authentication failed: {0}")]
    Unauthenticated(&'static str),
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Config(Vec<ConfigProblem>),
    #[error("a workspace already exists at {0}")]
    AlreadyInitialized(PathBuf),
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    /// A serving workspace ([`Workspace::open_serving`], a gateway) holds no
    /// key: what needs one runs on the server.
    #[error("this process holds no keys (a gateway opened with --control); {0} runs on the server, which holds them")]
    NoKeys(&'static str),
    /// A stored record a decision depends on does not parse: the decision
    /// is not made (fail closed).
    #[error("the stored {what} does not parse, so nothing that depends on it is decided: {source}")]
    UnreadableRecord {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("{0}")]
    Types(#[from] citadel_types::TypeError),
    #[error("{0}")]
    Policy(#[from] citadel_policy::PolicyError),
    #[error(
        "registration of {model} blocked: the scan found {critical} critical finding(s) and {unjudged} it could not judge"
    )]
    ScanBlocked { model: String, critical: usize, unjudged: usize, findings: Vec<citadel_scan::Finding> },
    #[error(transparent)]
    Signing(#[from] citadel_signing::SigningError),
    #[error("{0}")]
    Conflict(String),
    #[error("the model gate ({policy}) failed:\n{}", .violations.iter().map(|v| format!("  - {v}")).collect::<Vec<_>>().join("\n"))]
    GateFailed { policy: String, violations: Vec<String> },
    #[error("the model was signed with the retired signing key {hint}; it is no longer trusted")]
    RetiredSigningKey { hint: String },
    /// A retired model version: never deployed, served or moved again.
    #[error(
        "model {model} version {version} is retired ({reason}); it cannot be deployed, served or moved to another stage"
    )]
    RetiredModel { model: String, version: i64, reason: String },
    #[error(transparent)]
    Data(#[from] citadel_data::DataError),
    #[error("dataset {dataset}: the new version was rejected and nothing was stored:\n{}", .report.reasons.iter().map(|r| format!("  - {r}")).collect::<Vec<_>>().join("\n"))]
    DataRejected { dataset: String, report: Box<citadel_data::IngestReport> },
    #[error("{principal} made stage request {request} and cannot also approve it (separation of duties)")]
    SelfApproval { principal: String, request: String },
    /// An erasure or export whose subject is in no version: nothing changed.
    #[error("no row of dataset {dataset} matches the subject in any of its {versions} version(s)")]
    NoSubjectRows { dataset: String, versions: usize },
    /// Conditions that name a population, not a person: nothing changed.
    #[error(
        "the subject's conditions match {rows} rows of dataset {dataset}, more than the {max} one request may touch; nothing was changed"
    )]
    SubjectTooBroad { dataset: String, rows: u64, max: u64 },
    /// A use of a dataset its declared purposes do not cover.
    #[error("dataset {dataset} is processed for {} only; {} (GDPR Art. 5(1)(b) purpose limitation)", if .allowed.is_empty() { "no declared purpose".to_string() } else { .allowed.join(", ") }, match .purpose { Some(p) => format!("this pipeline's purpose {p:?} is not among them"), None => "this pipeline declares no purpose".to_string() })]
    PurposeNotAllowed { dataset: String, purpose: Option<String>, allowed: Vec<String> },
    /// A source file an erasure removed rows from: ingesting it again would bring them back.
    #[error(
        "this file is the source of {dataset}@{version}, from which a data subject's rows were erased; ingesting it again would bring them back, so nothing was stored"
    )]
    ErasedSource { dataset: String, version: i64 },
    /// A model version trained on rows a data subject had erased.
    #[error(
        "model {model} version {version} was trained on data from which a data subject's rows were erased ({erasures}); it cannot move to {to} until a retrained version replaces it"
    )]
    ErasedTrainingData { model: String, version: i64, to: String, erasures: String },
}

pub type Result<T, E = ControlError> = std::result::Result<T, E>;

/// Queries the control plane runs itself (the registry) fail like the
/// store's own.
impl From<sqlx::Error> for ControlError {
    fn from(e: sqlx::Error) -> Self {
        ControlError::Store(StoreError::from(e))
    }
}

/// Where the master-key passphrase or PIN comes from.
#[derive(Debug, Clone)]
pub struct Secrets {
    pub passphrase: Option<Redacted<String>>,
    pub pkcs11_pin: Option<Redacted<String>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InitReport {
    pub workspace: PathBuf,
    pub owner: String,
    pub master_key: String,
    pub audit_key_id: String,
    pub audit_public_key: String,
}

/// An open workspace: configuration, database, keys and store.
pub struct Workspace {
    pub config: Config,
    db: Db,
    /// `None` in a serving workspace (a gateway: no key was unsealed).
    keys: Option<Keys>,
    /// Training references of model versions live monitoring compared
    /// windows with (read and audited once per process; at most 64 kept).
    monitor_references: monitor::ReferenceCache,
}

/// What only a process that unsealed the master key holds.
struct Keys {
    provider: Box<dyn MasterKeyProvider>,
    store: ArtifactStore,
    signer: Arc<AuditSigner>,
    /// Seals workspace secrets at rest (the model-signing key), under the
    /// chunk-encryption data key with a per-secret derived key.
    secrets_cipher: Arc<citadel_crypto::ChunkCipher>,
}

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace").field("workspace", &self.config.workspace).finish()
    }
}

fn open_provider(config: &Config, secrets: &Secrets, create: Option<KdfParams>) -> Result<Box<dyn MasterKeyProvider>> {
    match config.key_provider.as_str() {
        "pkcs11" => {
            let pin = secrets
                .pkcs11_pin
                .clone()
                .ok_or(ControlError::Invalid("the PKCS#11 PIN is required: set CITADEL_PKCS11_PIN".into()))?;
            let cfg = Pkcs11Config {
                module: config.pkcs11_module.clone().unwrap_or_default(),
                token_label: config.pkcs11_token.clone().unwrap_or_default(),
                pin,
            };
            Ok(Box::new(Pkcs11Provider::open(&cfg)?))
        }
        _ => {
            let pass = secrets
                .passphrase
                .clone()
                .ok_or(ControlError::Invalid("the master-key passphrase is required: set CITADEL_PASSPHRASE".into()))?;
            let kf = match create {
                Some(kdf) => LocalKeyFile::create(&config.key_file, pass.expose().as_bytes(), kdf)?,
                None => LocalKeyFile::open(&config.key_file, pass.expose().as_bytes())?,
            };
            Ok(Box::new(kf))
        }
    }
}

/// An audit event stamped now: the one constructor of audit events (a
/// caller's go through [`Permit`]; this is for the system's own).
pub(crate) fn event(
    actor: &str,
    action: &str,
    resource: &str,
    outcome: Outcome,
    request_id: &str,
    details: serde_json::Value,
) -> AuditEvent {
    AuditEvent {
        ts: Timestamp::now(),
        actor: actor.to_string(),
        action: action.to_string(),
        resource: resource.to_string(),
        outcome,
        request_id: request_id.to_string(),
        details,
    }
}

async fn load_data_keys(db: &Db, provider: &dyn MasterKeyProvider) -> Result<BTreeMap<&'static str, DataKey>> {
    let mut keys = BTreeMap::new();
    for row in citadel_store::data_keys(db.pool()).await? {
        let purpose = DataKeyPurpose::parse(&row.purpose)
            .ok_or_else(|| ControlError::Invalid(format!("unknown data key purpose {:?}", row.purpose)))?;
        let plain = provider.unwrap(&row.master_key_id, &row.wrapped, &purpose.wrap_aad(&row.id))?;
        keys.insert(purpose.as_str(), DataKey::from_bytes(&plain)?);
    }
    Ok(keys)
}

impl Workspace {
    /// Creates a workspace in `config.workspace`: key material, database,
    /// object storage, the owner principal (admin on everything) and the
    /// first audit record.
    pub async fn init(
        config: Config,
        secrets: &Secrets,
        kdf: KdfParams,
        owner_name: &str,
    ) -> Result<(Self, InitReport)> {
        let owner_name = Name::parse(owner_name)?;
        let mut provider = open_provider(&config, secrets, Some(kdf))?;
        let master = provider.generate()?;
        let db = Db::connect(&config.metadata_url).await?;
        if citadel_store::meta_get(db.pool(), "workspace_id").await?.is_some() {
            return Err(ControlError::AlreadyInitialized(config.workspace.clone()));
        }
        let now = Timestamp::now();
        let owner_id = citadel_types::random_id("p-");
        let mut dek_plain = BTreeMap::new();
        let mut tx = db.begin_audited().await?;
        citadel_store::meta_set(tx.conn(), "workspace_id", &citadel_types::random_id("ws-")).await?;
        citadel_store::meta_set(tx.conn(), "owner", &owner_id).await?;
        citadel_store::master_key_insert(
            tx.conn(),
            &citadel_store::MasterKeyRow {
                id: master.clone(),
                provider: provider.kind().as_str().into(),
                status: "active".into(),
                created_at: now,
                retired_at: None,
            },
        )
        .await?;
        for purpose in DataKeyPurpose::ALL {
            let dek = DataKey::generate()?;
            let id = citadel_types::random_id("dek-");
            let wrapped = provider.wrap(&master, dek.expose(), &purpose.wrap_aad(&id))?;
            citadel_store::data_key_insert(
                tx.conn(),
                &citadel_store::DataKeyRow {
                    id,
                    purpose: purpose.as_str().into(),
                    master_key_id: master.clone(),
                    wrapped,
                    created_at: now,
                },
            )
            .await?;
            dek_plain.insert(purpose.as_str(), dek);
        }
        citadel_store::principal_insert(
            tx.conn(),
            &Principal {
                id: owner_id.clone(),
                name: owner_name.to_string(),
                kind: "user".into(),
                created_at: now,
                created_by: "citadel-init".into(),
                disabled_at: None,
            },
        )
        .await?;
        citadel_store::grant_insert(
            tx.conn(),
            &citadel_store::GrantRow {
                principal_id: owner_id.clone(),
                role: Role::Admin.as_str().into(),
                scope: "*".into(),
                created_at: now,
                created_by: "citadel-init".into(),
            },
        )
        .await?;
        let signer = Arc::new(AuditSigner::from_data_key(&dek_plain[DataKeyPurpose::AuditSigning.as_str()])?);
        let request_id = citadel_types::random_id("req-");
        tx.commit(event(
            &owner_id,
            "workspace.init",
            &format!("workspace:{}", config.workspace.display()),
            Outcome::Success,
            &request_id,
            serde_json::json!({"owner_name": owner_name.as_str(), "master_key": master, "key_provider": provider.kind().as_str(), "audit_key_id": signer.key_id()}),
        ))
        .await?;
        let ws = Self::assemble(config, db, provider, dek_plain, signer)?;
        ws.db.checkpoint_now().await?;
        // The default model gate, as a file the workspace owner can read and change.
        let gate = ws.config.workspace.join(registry::GATE_POLICY_FILE);
        if !gate.exists() {
            if let Some(dir) = gate.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| ControlError::Invalid(format!("creating {}: {e}", dir.display())))?;
            }
            std::fs::write(&gate, citadel_policy::DEFAULT_MODEL_GATE)
                .map_err(|e| ControlError::Invalid(format!("writing {}: {e}", gate.display())))?;
        }
        // And the incident playbook, likewise.
        let playbook = ws.config.workspace.join(playbook::PLAYBOOK_FILE);
        if !playbook.exists() {
            std::fs::write(&playbook, citadel_policy::DEFAULT_PLAYBOOK)
                .map_err(|e| ControlError::Invalid(format!("writing {}: {e}", playbook.display())))?;
        }
        let report = InitReport {
            workspace: ws.config.workspace.clone(),
            owner: owner_id,
            master_key: master,
            audit_key_id: ws.signer()?.key_id(),
            audit_public_key: hex::encode(ws.signer()?.public_key()),
        };
        Ok((ws, report))
    }

    fn assemble(
        config: Config,
        db: Db,
        provider: Box<dyn MasterKeyProvider>,
        keys: BTreeMap<&'static str, DataKey>,
        signer: Arc<AuditSigner>,
    ) -> Result<Self> {
        let key = |p: DataKeyPurpose| {
            keys.get(p.as_str()).ok_or_else(|| ControlError::Invalid(format!("data key {} is missing", p.as_str())))
        };
        let backend = ObjectBackend::open(
            &StorageUrl::parse(&config.storage_url)?,
            &citadel_store::S3Options {
                endpoint: config.s3_endpoint.clone(),
                region: config.s3_region.clone(),
                allow_http: config.s3_allow_http,
                ca_file: config.s3_ca_file.clone(),
            },
        )?;
        let store = ArtifactStore::new(
            db.clone(),
            backend,
            key(DataKeyPurpose::ChunkEncryption)?,
            key(DataKeyPurpose::ObjectNaming)?,
        )
        .with_lease_ttl(config.lease_ttl_secs);
        let secrets_cipher = Arc::new(citadel_crypto::ChunkCipher::new(key(DataKeyPurpose::ChunkEncryption)?));
        let db = db.with_audit_signer(signer.clone(), config.checkpoint_every);
        let keys = Some(Keys { provider, store, signer, secrets_cipher });
        Ok(Workspace { config, db, keys, monitor_references: Default::default() })
    }

    /// Opens a workspace for serving only (a gateway with `--control`): the
    /// database, and no key at all. Nothing the workspace encrypts (artifacts,
    /// dataset versions, training secrets, the signing key) can be read;
    /// models come verified from the server (`citadel_api`'s serving route).
    /// Audit records are appended to the chain; the server's checkpoints
    /// sign them.
    ///
    /// Not yet enforced here: the database credentials remain the gateway's
    /// power. With the workspace's own database role a compromised gateway
    /// could write a token, grant or deployment row the server would honour;
    /// gateways want a role that reads deployments, principals, tokens and
    /// grants and only inserts audit and monitoring rows.
    pub async fn open_serving(config: Config) -> Result<Self> {
        let db = Db::connect(&config.metadata_url).await?;
        if citadel_store::meta_get(db.pool(), "workspace_id").await?.is_none() {
            return Err(ControlError::NotFound(format!("initialized workspace at {}", config.workspace.display())));
        }
        Ok(Workspace { config, db, keys: None, monitor_references: Default::default() })
    }

    /// Whether this process unsealed the keys (false: a serving workspace).
    pub fn holds_keys(&self) -> bool {
        self.keys.is_some()
    }

    fn keys(&self, what: &'static str) -> Result<&Keys> {
        self.keys.as_ref().ok_or(ControlError::NoKeys(what))
    }

    pub(crate) fn store(&self) -> Result<&ArtifactStore> {
        Ok(&self.keys("reading or writing artifacts")?.store)
    }

    pub(crate) fn signer(&self) -> Result<&Arc<AuditSigner>> {
        Ok(&self.keys("signing")?.signer)
    }

    pub(crate) fn provider(&self) -> Result<&dyn MasterKeyProvider> {
        Ok(self.keys("the master key")?.provider.as_ref())
    }

    pub(crate) fn provider_mut(&mut self) -> Result<&mut dyn MasterKeyProvider> {
        match self.keys.as_mut() {
            Some(k) => Ok(k.provider.as_mut()),
            None => Err(ControlError::NoKeys("the master key")),
        }
    }

    pub(crate) fn secrets_cipher(&self) -> Result<&citadel_crypto::ChunkCipher> {
        Ok(&self.keys("workspace secrets")?.secrets_cipher)
    }

    /// Opens an existing workspace. Fails (changing nothing) on a wrong
    /// passphrase or an unreadable key.
    pub async fn open(config: Config, secrets: &Secrets) -> Result<Self> {
        if config.key_provider == "local" && !config.key_file.exists() {
            return Err(ControlError::NotFound(format!("key file {}", config.key_file.display())));
        }
        let provider = open_provider(&config, secrets, None)?;
        let db = Db::connect(&config.metadata_url).await?;
        if citadel_store::meta_get(db.pool(), "workspace_id").await?.is_none() {
            return Err(ControlError::NotFound(format!("initialized workspace at {}", config.workspace.display())));
        }
        let keys = load_data_keys(&db, provider.as_ref()).await?;
        let seed = keys
            .get(DataKeyPurpose::AuditSigning.as_str())
            .ok_or_else(|| ControlError::Invalid("audit-signing key missing".into()))?;
        let signer = Arc::new(AuditSigner::from_data_key(seed)?);
        // Decrypted work files of processes that died with them.
        // (Best effort: a tmp/ it cannot read does not stop the workspace.)
        let _ = data::WorkDir::sweep(&config.workspace);
        Self::assemble(config, db, provider, keys, signer)
    }

    /// Signs a checkpoint of the audit head if records were added since the
    /// last one. The CLI calls this when a command ends.
    pub async fn close(&self) -> Result<()> {
        self.db.checkpoint_now().await?;
        self.db.close().await;
        Ok(())
    }

    pub fn db(&self) -> &Db {
        &self.db
    }
}

//! The control plane: the one layer through which every operation passes,
//! whether the CLI calls it in-process or (later) the HTTP API does.
//!
//! **Architecture invariant:** each public operation on [`Workspace`] first
//! authorizes its [`Caller`] (a denial is audited and returned as
//! [`ControlError::Denied`]), then performs the work so that its state change
//! and its audit record commit in one transaction.

#![forbid(unsafe_code)]

pub mod config;
mod credentials;
mod data;
mod deploy;
mod feedback;
mod identity;
mod incident;
mod jwt;
mod monitor;
mod pipeline;
pub mod pipeline_spec;
mod playbook;
mod registry;
mod report;
mod retention;
pub mod scan_policy;
mod subject;

pub use credentials::AuthVerdict;
pub use data::{DataDiff, DataGetReport, DataVersion, parse_dataset_ref};
pub use deploy::{Deployment, DeploymentRevision, DeploymentSpec, Strategy, Target, parse_target};
pub use feedback::{FeedbackItem, FeedbackPolicy, FeedbackReceipt, LivePerformance, PredictionRecord};
pub use identity::{Caller, CredentialKind, JwtFailure, JwtVerifier, Permit};
pub use incident::{Detection, Incident, IncidentEvent, Severity};
pub use jwt::JwksError;
pub use monitor::{DetectorPolicy, MonitoringPolicy, WindowRecord, WindowVerdict};
pub use pipeline::{RunOptions, RunReport, StageProgress, StageRecord};
pub use playbook::{ActionOutcome, PLAYBOOK_FILE, PlaybookMode, Quarantine, Throttle};
pub use registry::{ModelVersion, RegisterRequest, StageEvent, StageRequest, VerifiedModel};
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

/// What `gc` did: dataset versions purged for retention, then the store's sweep.
#[derive(Debug, Clone, Serialize)]
pub struct GcOutcome {
    #[serde(flatten)]
    pub store: GcReport,
    pub purged: Vec<PurgedVersion>,
    /// Monitoring rows past their retention that were deleted.
    pub monitoring_rows_purged: u64,
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

#[derive(Debug, Clone, Serialize)]
pub struct PutReport {
    pub id: String,
    pub new: bool,
    pub size: u64,
    pub files: u64,
    pub chunks: usize,
    pub new_chunks: usize,
    pub new_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub records: usize,
    pub checkpoints: usize,
    pub head_seq: i64,
    pub head_hash: String,
    pub audit_key_id: String,
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RotateReport {
    pub old_master_key: String,
    pub new_master_key: String,
    pub data_keys_rewrapped: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct IssuedToken {
    pub id: String,
    pub principal: String,
    pub expires_at: Timestamp,
    /// Shown once; only its hash is stored.
    pub token: String,
}

/// An open workspace: configuration, database, keys and store.
pub struct Workspace {
    pub config: Config,
    db: Db,
    provider: Box<dyn MasterKeyProvider>,
    store: ArtifactStore,
    signer: Arc<AuditSigner>,
    /// Seals workspace secrets at rest (the model-signing key), under the
    /// chunk-encryption data key with a per-secret derived key.
    secrets_cipher: Arc<citadel_crypto::ChunkCipher>,
    /// Training references of model versions live monitoring compared
    /// windows with (read and audited once per process; at most 64 kept).
    monitor_references: monitor::ReferenceCache,
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
            audit_key_id: ws.signer.key_id(),
            audit_public_key: hex::encode(ws.signer.public_key()),
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
        Ok(Workspace { config, db, provider, store, signer, secrets_cipher, monitor_references: Default::default() })
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

    pub async fn principal_create(&self, caller: &Caller, name: &str, kind: &str) -> Result<Principal> {
        let name = Name::parse(name)?;
        if !matches!(kind, "user" | "service") {
            return Err(ControlError::Invalid(format!("principal kind {kind:?}: use user or service")));
        }
        let resource = Resource::new(ResourceKind::Principal, &name);
        let permit = self.authorize(caller, Action::PrincipalCreate, resource.clone()).await?;
        if citadel_store::principal_by_name(self.db.pool(), name.as_str()).await?.is_some() {
            return Err(ControlError::Invalid(format!("a principal named {name} already exists")));
        }
        let p = Principal {
            id: citadel_types::random_id("p-"),
            name: name.to_string(),
            kind: kind.into(),
            created_at: Timestamp::now(),
            created_by: caller.id().to_string(),
            disabled_at: None,
        };
        let mut tx = self.db.begin_audited().await?;
        citadel_store::principal_insert(tx.conn(), &p).await?;
        tx.commit(permit.success(serde_json::json!({"id": p.id, "kind": kind}))).await?;
        Ok(p)
    }

    async fn principal_named(&self, name: &str) -> Result<Principal> {
        citadel_store::principal_by_name(self.db.pool(), name)
            .await?
            .ok_or_else(|| ControlError::NotFound(format!("principal {name}")))
    }

    pub async fn principal_list(&self, caller: &Caller) -> Result<Vec<(Principal, Vec<citadel_store::GrantRow>)>> {
        let permit = self.authorize(caller, Action::PrincipalList, Resource::all(ResourceKind::Principal)).await?;
        let mut out = Vec::new();
        for p in citadel_store::principal_list(self.db.pool()).await? {
            let g = citadel_store::grants_of(self.db.pool(), &p.id).await?;
            out.push((p, g));
        }
        self.record(permit, serde_json::json!({"returned": out.len()})).await?;
        Ok(out)
    }

    pub async fn principal_disable(&self, caller: &Caller, name: &str) -> Result<()> {
        self.principal_set_enabled(caller, name, false).await
    }

    /// Re-enables a disabled principal (the undo of a playbook's disable);
    /// the same permission as disabling it.
    pub async fn principal_enable(&self, caller: &Caller, name: &str) -> Result<()> {
        self.principal_set_enabled(caller, name, true).await
    }

    async fn principal_set_enabled(&self, caller: &Caller, name: &str, enabled: bool) -> Result<()> {
        let resource = Resource::new(ResourceKind::Principal, name);
        let permit = self.authorize(caller, Action::PrincipalDisable, resource.clone()).await?;
        let p = self.principal_named(name).await?;
        let mut tx = self.db.begin_audited().await?;
        if enabled {
            citadel_store::principal_enable(tx.conn(), &p.id).await?;
        } else {
            citadel_store::principal_disable(tx.conn(), &p.id, Timestamp::now()).await?;
        }
        tx.commit(permit.success(serde_json::json!({"id": p.id}))).await?;
        Ok(())
    }

    pub async fn grant_add(&self, caller: &Caller, principal: &str, role: &str, scope: &str) -> Result<bool> {
        let role: Role = role.parse()?;
        let scope = Scope::parse(scope)?;
        let resource = Resource::new(ResourceKind::Principal, principal);
        let permit = self.authorize(caller, Action::GrantAdd, resource.clone()).await?;
        let p = self.principal_named(principal).await?;
        let mut tx = self.db.begin_audited().await?;
        let added = citadel_store::grant_insert(
            tx.conn(),
            &citadel_store::GrantRow {
                principal_id: p.id.clone(),
                role: role.as_str().into(),
                scope: scope.to_string(),
                created_at: Timestamp::now(),
                created_by: caller.id().to_string(),
            },
        )
        .await?;
        tx.commit(permit.success(serde_json::json!({"role": role.as_str(), "scope": scope.as_str(), "new": added})))
            .await?;
        Ok(added)
    }

    pub async fn grant_revoke(&self, caller: &Caller, principal: &str, role: &str, scope: &str) -> Result<bool> {
        let role: Role = role.parse()?;
        let scope = Scope::parse(scope)?;
        let resource = Resource::new(ResourceKind::Principal, principal);
        let permit = self.authorize(caller, Action::GrantRevoke, resource.clone()).await?;
        let p = self.principal_named(principal).await?;
        let mut tx = self.db.begin_audited().await?;
        let removed = citadel_store::grant_delete(tx.conn(), &p.id, role.as_str(), scope.as_str()).await?;
        tx.commit(
            permit.success(serde_json::json!({"role": role.as_str(), "scope": scope.as_str(), "removed": removed})),
        )
        .await?;
        Ok(removed)
    }

    pub async fn token_issue(
        &self,
        caller: &Caller,
        principal: &str,
        label: &str,
        ttl_secs: i64,
    ) -> Result<IssuedToken> {
        if !(60..=366 * 86_400).contains(&ttl_secs) {
            return Err(ControlError::Invalid("token lifetime must be between 1 minute and 366 days".into()));
        }
        let resource = Resource::new(ResourceKind::Principal, principal);
        let permit = self.authorize(caller, Action::TokenIssue, resource.clone()).await?;
        let p = self.principal_named(principal).await?;
        if p.disabled_at.is_some() {
            return Err(ControlError::Invalid(format!("principal {principal} is disabled")));
        }
        let token = ApiToken::generate()?;
        let now = Timestamp::now();
        let row = citadel_store::TokenRow {
            id: token.id.clone(),
            principal_id: p.id.clone(),
            secret_hash: token.hash().0.to_hex(),
            label: label.chars().take(100).collect(),
            created_at: now,
            expires_at: now.plus_secs(ttl_secs),
            revoked_at: None,
        };
        let mut tx = self.db.begin_audited().await?;
        citadel_store::token_insert(tx.conn(), &row).await?;
        tx.commit(permit.success(serde_json::json!({"principal": p.id, "expires_at": row.expires_at.to_rfc3339()})))
            .await?;
        Ok(IssuedToken { id: token.id.clone(), principal: p.name, expires_at: row.expires_at, token: token.reveal() })
    }

    pub async fn token_revoke(&self, caller: &Caller, token_id: &str) -> Result<bool> {
        let resource = Resource::new(ResourceKind::Token, token_id);
        let permit = self.authorize(caller, Action::TokenRevoke, resource.clone()).await?;
        if citadel_store::token_by_id(self.db.pool(), token_id).await?.is_none() {
            return Err(ControlError::NotFound(format!("token {token_id}")));
        }
        let mut tx = self.db.begin_audited().await?;
        let revoked = citadel_store::token_revoke(tx.conn(), token_id, Timestamp::now()).await?;
        tx.commit(permit.success(serde_json::json!({"changed": revoked}))).await?;
        Ok(revoked)
    }

    pub async fn token_list(&self, caller: &Caller) -> Result<Vec<citadel_store::TokenRow>> {
        let permit = self.authorize(caller, Action::TokenList, Resource::all(ResourceKind::Token)).await?;
        let tokens = citadel_store::token_list(self.db.pool(), None).await?;
        self.record(permit, serde_json::json!({"returned": tokens.len()})).await?;
        Ok(tokens)
    }

    // ------------------------------------------------------------ artifacts

    pub async fn artifact_put(
        &self,
        caller: &Caller,
        path: &Path,
        name: Option<&str>,
        parents: &[String],
        progress: Option<Arc<dyn Progress>>,
    ) -> Result<PutReport> {
        let name = name.map(Name::parse).transpose()?;
        let resource = Resource::artifact(name.as_ref().map(|n| n.as_str()).unwrap_or("*"));
        let permit = self.authorize(caller, Action::ArtifactPut, resource).await?;
        let mut parent_ids = Vec::new();
        for p in parents {
            parent_ids.push(self.store.resolve(p).await?.id);
        }
        let prepared = match self.store.prepare_put(path, progress).await {
            Ok(p) => p,
            Err(e) => {
                let e = ControlError::from(e);
                self.record_failure(permit, &e).await;
                return Err(e);
            }
        };
        let id = prepared.id.to_string();
        let result = async {
            let mut tx = self.db.begin_audited().await?;
            let new = self.store.commit_put(&mut tx, &prepared, name.as_ref().map(|n| n.as_str()), caller.id()).await?;
            for parent in &parent_ids {
                citadel_store::lineage_insert(
                    tx.conn(),
                    &LineageEdge { child: format!("artifact:{id}"), parent: format!("artifact:{parent}"), relation: "derived-from".into() },
                )
                .await?;
            }
            tx.commit(permit.success_on(&Resource::artifact(&id), serde_json::json!({"name": name.as_ref().map(|n| n.as_str()), "size": prepared.size, "files": prepared.file_count, "new": new, "new_bytes": prepared.new_bytes, "parents": parent_ids.iter().map(|p| p.to_string()).collect::<Vec<_>>()})))
            .await?;
            Ok::<_, ControlError>(new)
        }
        .await;
        let report = PutReport {
            id,
            new: *result.as_ref().unwrap_or(&false),
            size: prepared.size,
            files: prepared.file_count,
            chunks: prepared.chunk_names.len(),
            new_chunks: prepared.new_chunks.len(),
            new_bytes: prepared.new_bytes,
        };
        self.store.release(prepared).await;
        result.map(|_| report)
    }

    pub async fn artifact_get(
        &self,
        caller: &Caller,
        reference: &str,
        out: &Path,
        progress: Option<Arc<dyn Progress>>,
    ) -> Result<GetReport> {
        let info = self.store.resolve(reference).await?;
        // A grant may name the artifact by id or by any of its names: the
        // decision is on the first of them the caller holds (on the id, and
        // so a recorded denial, if none).
        let by_id = Resource::artifact(info.id);
        let resource = std::iter::once(by_id.clone())
            .chain(info.names.iter().map(Resource::artifact))
            .find(|r| caller.holds(Action::ArtifactGet, r))
            .unwrap_or(by_id);
        let permit = self.authorize(caller, Action::ArtifactGet, resource).await?;
        // The read is recorded before any byte leaves the store; a restore
        // that fails after it is recorded as well.
        self.db
            .append_audit(permit.step(
                Action::ArtifactGet.as_str(),
                Outcome::Success,
                serde_json::json!({"artifact": info.id.to_string(), "output": out.display().to_string(), "size": info.size}),
            ))
            .await?;
        match self.store.restore(&info, out, progress).await {
            Ok(r) => Ok(r),
            Err(e) => {
                let e = ControlError::from(e);
                self.record_failure(permit, &e).await;
                Err(e)
            }
        }
    }

    pub async fn artifact_list(&self, caller: &Caller) -> Result<Vec<ArtifactInfo>> {
        let permit = self.authorize(caller, Action::ArtifactList, Resource::all(ResourceKind::Artifact)).await?;
        let list = self.store.list().await?;
        self.record(permit, serde_json::json!({"returned": list.len()})).await?;
        Ok(list)
    }

    pub async fn fsck(&self, caller: &Caller, progress: Option<Arc<dyn Progress>>) -> Result<FsckReport> {
        let permit = self.authorize(caller, Action::StoreFsck, Resource::all(ResourceKind::Store)).await?;
        let report = self.store.fsck(progress).await?;
        self.db
            .append_audit(permit.step(
                Action::StoreFsck.as_str(),
                if report.is_clean() { Outcome::Success } else { Outcome::Failure },
                serde_json::json!({"chunks_checked": report.chunks_checked, "missing": report.missing.len(), "corrupt": report.corrupt.len(), "damaged_artifacts": report.damaged_artifacts()}),
            ))
            .await?;
        Ok(report)
    }

    /// Purges the dataset versions past their declared retention, finishes
    /// interrupted erasures, then deletes unreferenced objects.
    pub async fn gc(&self, caller: &Caller, grace_secs: Option<i64>) -> Result<GcOutcome> {
        let permit = self.authorize(caller, Action::StoreGc, Resource::all(ResourceKind::Store)).await?;
        // An erasure interrupted after its commit is finished first.
        self.complete_erasures(caller).await?;
        let purged = self.purge_expired(&permit).await?;
        let monitoring_rows_purged = self.monitor_purge(&permit, Timestamp::now()).await?;
        // Purged data leaves the store now, not after the grace period (no
        // put runs while gc holds its lease, so no leftover is in use).
        let grace = if purged.is_empty() { grace_secs.unwrap_or(self.config.gc_grace_secs) } else { 0 };
        let report = self.store.gc(grace).await?;
        if !purged.is_empty() {
            self.db.truncate_wal().await?;
        }
        self.record(permit, serde_json::json!({"store": report, "versions_purged": purged.len()})).await?;
        Ok(GcOutcome { store: report, purged, monitoring_rows_purged })
    }

    // ------------------------------------------------------------ keys

    /// Re-wraps every data key under a new master key in one transaction,
    /// then destroys the old master key. Data is not re-encrypted.
    pub async fn key_rotate(&mut self, caller: &Caller) -> Result<RotateReport> {
        let permit = self.authorize(caller, Action::KeyRotate, Resource::new(ResourceKind::Key, "master")).await?;
        let masters = citadel_store::master_keys(self.db.pool()).await?;
        let old = masters
            .iter()
            .find(|m| m.status == "active")
            .ok_or_else(|| ControlError::NotFound("active master key".into()))?
            .id
            .clone();
        let new = self.provider.generate()?;
        let rows = citadel_store::data_keys(self.db.pool()).await?;
        let result = async {
            let mut tx = self.db.begin_audited().await?;
            citadel_store::master_key_insert(
                tx.conn(),
                &citadel_store::MasterKeyRow {
                    id: new.clone(),
                    provider: self.provider.kind().as_str().into(),
                    status: "active".into(),
                    created_at: Timestamp::now(),
                    retired_at: None,
                },
            )
            .await?;
            for row in &rows {
                let purpose = DataKeyPurpose::parse(&row.purpose)
                    .ok_or_else(|| ControlError::Invalid("data key purpose".into()))?;
                let aad = purpose.wrap_aad(&row.id);
                let plain = self.provider.unwrap(&row.master_key_id, &row.wrapped, &aad)?;
                let wrapped = self.provider.wrap(&new, &plain, &aad)?;
                citadel_store::data_key_rewrap(tx.conn(), &row.id, &new, &wrapped).await?;
            }
            citadel_store::master_key_retire(tx.conn(), &old, Timestamp::now()).await?;
            tx.commit(permit.success(serde_json::json!({"old": old, "new": new, "data_keys": rows.len()}))).await?;
            Ok::<_, ControlError>(())
        }
        .await;
        if let Err(e) = result {
            // The new key wraps nothing: remove it so the provider stays tidy.
            let _ = self.provider.destroy(&new);
            return Err(e);
        }
        // Only after the commit: until then the old key still wraps the DEKs.
        self.provider.destroy(&old)?;
        Ok(RotateReport { old_master_key: old, new_master_key: new, data_keys_rewrapped: rows.len() })
    }

    pub async fn key_list(&self, caller: &Caller) -> Result<Vec<citadel_store::MasterKeyRow>> {
        let permit = self.authorize(caller, Action::KeyRead, Resource::new(ResourceKind::Key, "master")).await?;
        let keys = citadel_store::master_keys(self.db.pool()).await?;
        self.record(permit, serde_json::json!({"returned": keys.len()})).await?;
        Ok(keys)
    }

    // ------------------------------------------------------------ audit

    pub async fn audit_verify(&self, caller: &Caller) -> Result<VerifyReport> {
        let permit = self.authorize(caller, Action::AuditVerify, Resource::new(ResourceKind::Audit, "log")).await?;
        let records = citadel_store::audit_query(self.db.pool(), &AuditFilter::default()).await?;
        let checkpoints = citadel_store::audit_checkpoints(self.db.pool()).await?;
        let problems = citadel_audit::verify_chain(&records, &checkpoints, &self.signer.public_key());
        let head = records.last();
        let report = VerifyReport {
            records: records.len(),
            checkpoints: checkpoints.len(),
            head_seq: head.map(|r| r.seq).unwrap_or(0),
            head_hash: head.map(|r| r.hash.to_hex()).unwrap_or_default(),
            audit_key_id: self.signer.key_id(),
            problems,
        };
        self.db
            .append_audit(permit.step(
                Action::AuditVerify.as_str(),
                if report.problems.is_empty() { Outcome::Success } else { Outcome::Failure },
                serde_json::json!({"records": report.records, "problems": report.problems.len()}),
            ))
            .await?;
        Ok(report)
    }

    pub async fn audit_query(&self, caller: &Caller, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        let permit = self.authorize(caller, Action::AuditRead, Resource::new(ResourceKind::Audit, "log")).await?;
        let records = citadel_store::audit_query(self.db.pool(), filter).await?;
        self.record(permit, serde_json::json!({"returned": records.len()})).await?;
        Ok(records)
    }

    pub async fn audit_export(
        &self,
        caller: &Caller,
        filter: &AuditFilter,
        format: ExportFormat,
    ) -> Result<Vec<String>> {
        let permit = self.authorize(caller, Action::AuditExport, Resource::new(ResourceKind::Audit, "log")).await?;
        let records = citadel_store::audit_query(self.db.pool(), filter).await?;
        self.record(permit, serde_json::json!({"records": records.len(), "format": format!("{format:?}")})).await?;
        Ok(records.iter().map(|r| citadel_audit::encode_record(r, format)).collect())
    }

    /// Opens a forwarding session of destination `name` to `destination`
    /// (`scheme://host:port`, no secret): authorized as `audit.export`,
    /// audited once per session (not per batch, or the forwarder would feed
    /// itself). A name stays bound to the destination it first forwarded to,
    /// so it cannot be pointed elsewhere to skip records. Returns the cursor.
    pub async fn audit_forward_start(&self, caller: &Caller, name: &str, destination: &str) -> Result<i64> {
        let permit = self.authorize(caller, Action::AuditExport, Resource::new(ResourceKind::Audit, "log")).await?;
        citadel_store::bind_forward_cursor(self.db.pool(), name, destination).await?;
        let (bound, cursor) = citadel_store::forward_cursor(self.db.pool(), name)
            .await?
            .ok_or_else(|| ControlError::NotFound(format!("forwarding destination {name}")))?;
        // A name that never had a record confirmed may move: nothing can be skipped.
        if bound != destination && cursor == 0 {
            citadel_store::rebind_forward_cursor(self.db.pool(), name, destination).await?;
        } else if bound != destination {
            return Err(ControlError::Invalid(format!(
                "forwarding destination {name} is bound to {bound}; a new destination takes a new --name (its records start from the first)"
            )));
        }
        self.record(permit, serde_json::json!({"destination": name, "to": destination, "from_seq": cursor})).await?;
        Ok(cursor)
    }

    /// Up to `limit` records after `after` (the caller's session keeps its
    /// own position between acknowledgements), for a forwarding session.
    pub async fn audit_forward_batch(&self, caller: &Caller, after: i64, limit: i64) -> Result<Vec<AuditRecord>> {
        let permit = self.authorize(caller, Action::AuditExport, Resource::new(ResourceKind::Audit, "log")).await?;
        let filter = AuditFilter { after_seq: Some(after), limit: Some(limit), ..AuditFilter::default() };
        permit
            .unrecorded("the forwarding session's start is the record; one per batch would feed the forwarder itself");
        Ok(citadel_store::audit_query(self.db.pool(), &filter).await?)
    }

    /// Records that destination `name` has every record up to `seq`.
    pub async fn audit_forward_ack(&self, caller: &Caller, name: &str, seq: i64) -> Result<()> {
        let permit = self.authorize(caller, Action::AuditExport, Resource::new(ResourceKind::Audit, "log")).await?;
        permit.unrecorded("an acknowledgement moves a cursor within a recorded forwarding session");
        Ok(citadel_store::set_forward_cursor(self.db.pool(), name, seq).await?)
    }

    pub async fn audit_checkpoint(&self, caller: &Caller) -> Result<Option<Checkpoint>> {
        let permit = self.authorize(caller, Action::AuditCheckpoint, Resource::new(ResourceKind::Audit, "log")).await?;
        permit.unrecorded("a checkpoint signs the head; a record of it would move the head past its own checkpoint");
        Ok(self.db.checkpoint_now().await?)
    }

    // ------------------------------------------------------------ lineage

    /// The lineage graph around a node: all ancestors and descendants. The
    /// reference is a dataset or model version (`dataset:adult@2`,
    /// `model:credit@1`) or an artifact (id prefix or name).
    pub async fn lineage(&self, caller: &Caller, reference: &str) -> Result<LineageGraph> {
        let root = match reference.split_once(':') {
            Some((kind @ ("dataset" | "model"), rest)) => {
                let (name, version) = parse_dataset_ref(rest)?;
                let version = version.ok_or_else(|| {
                    ControlError::Invalid(format!("{reference:?}: name a version, e.g. {kind}:{name}@1"))
                })?;
                let kind = if kind == "dataset" { ResourceKind::Dataset } else { ResourceKind::Model };
                Resource::new(kind, format_args!("{name}@{version}"))
            }
            _ => Resource::artifact(self.store.resolve(reference).await?.id),
        };
        let permit = self.authorize(caller, Action::LineageRead, root.clone()).await?;
        let root = root.to_string();
        let mut edges = BTreeSet::new();
        for upstream in [true, false] {
            let mut queue = VecDeque::from([root.clone()]);
            let mut seen = BTreeSet::from([root.clone()]);
            while let Some(node) = queue.pop_front() {
                for e in citadel_store::lineage_edges(self.db.pool(), &node, upstream).await? {
                    let next = if upstream { e.parent.clone() } else { e.child.clone() };
                    edges.insert((e.child, e.parent, e.relation));
                    if seen.insert(next.clone()) && seen.len() < 10_000 {
                        queue.push_back(next);
                    }
                }
            }
        }
        let mut labels = BTreeMap::new();
        for a in self.store.list().await? {
            labels.insert(format!("artifact:{}", a.id), a.names.last().cloned().unwrap_or_default());
        }
        let mut nodes: BTreeSet<String> = edges.iter().flat_map(|(c, p, _)| [c.clone(), p.clone()]).collect();
        nodes.insert(root.clone());
        self.record(permit, serde_json::json!({"nodes": nodes.len()})).await?;
        Ok(LineageGraph {
            root,
            nodes: nodes
                .into_iter()
                .map(|n| LineageNode { label: labels.get(&n).cloned().unwrap_or_default(), id: n })
                .collect(),
            edges: edges.into_iter().map(|(child, parent, relation)| LineageEdge { child, parent, relation }).collect(),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LineageNode {
    pub id: String,
    pub label: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LineageGraph {
    pub root: String,
    pub nodes: Vec<LineageNode>,
    pub edges: Vec<LineageEdge>,
}

impl LineageGraph {
    fn short(id: &str) -> String {
        match id.split_once(':') {
            Some((k, v)) => format!("{k}:{}", &v[..12.min(v.len())]),
            None => id.to_string(),
        }
    }

    fn display(&self, id: &str) -> String {
        let label = self.nodes.iter().find(|n| n.id == id).map(|n| n.label.as_str()).unwrap_or("");
        if label.is_empty() { Self::short(id) } else { format!("{} ({label})", Self::short(id)) }
    }

    /// Indented text: ancestors above the root, descendants below.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let parents = |n: &str| self.edges.iter().filter(|e| e.child == n).collect::<Vec<_>>();
        let children = |n: &str| self.edges.iter().filter(|e| e.parent == n).collect::<Vec<_>>();
        fn walk<'a>(
            g: &LineageGraph,
            node: &str,
            depth: usize,
            next: &dyn Fn(&str) -> Vec<&'a LineageEdge>,
            up: bool,
            out: &mut String,
            seen: &mut BTreeSet<String>,
        ) where
            LineageGraph: 'a,
        {
            for e in next(node) {
                let other = if up { &e.parent } else { &e.child };
                let arrow = if up { "↑" } else { "↓" };
                out.push_str(&format!("{}{arrow} {} [{}]\n", "  ".repeat(depth), g.display(other), e.relation));
                if seen.insert(other.clone()) {
                    walk(g, other, depth + 1, next, up, out, seen);
                }
            }
        }
        out.push_str(&format!("{}\n", self.display(&self.root)));
        walk(self, &self.root, 1, &parents, true, &mut out, &mut BTreeSet::new());
        walk(self, &self.root, 1, &children, false, &mut out, &mut BTreeSet::new());
        out
    }

    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph lineage {\n  rankdir=LR;\n");
        for n in &self.nodes {
            out += &format!(
                "  \"{}\" [label=\"{}\"{}];\n",
                n.id,
                self.display(&n.id).replace('"', "'"),
                if n.id == self.root { ", style=bold" } else { "" }
            );
        }
        for e in &self.edges {
            out += &format!("  \"{}\" -> \"{}\" [label=\"{}\"];\n", e.parent, e.child, e.relation);
        }
        out + "}\n"
    }

    pub fn to_mermaid(&self) -> String {
        let idx = |id: &str| self.nodes.iter().position(|n| n.id == id).unwrap_or(0);
        let mut out = String::from("graph LR\n");
        for (i, n) in self.nodes.iter().enumerate() {
            out += &format!("  n{i}[\"{}\"]\n", self.display(&n.id).replace('"', "'"));
        }
        for e in &self.edges {
            out += &format!("  n{} -->|{}| n{}\n", idx(&e.parent), e.relation, idx(&e.child));
        }
        out
    }
}

//! The model registry: scan → sign → store → provenance → version, then
//! stage changes by request and approval, rollback, and history.
//!
//! Decisions:
//! - A registration with any critical scan finding is refused, and the
//!   refusal is audited with the findings' rules (never the model's bytes).
//! - Models are signed with a workspace key (ECDSA P-256, model-signing
//!   format) that is generated on first use and stored sealed under the
//!   chunk-encryption data key; key rotation re-wraps that data key as usual.
//! - A stage change is a request; a different principal holding `approver`
//!   must approve it. On approval the stored bytes are restored and their
//!   signature verified again before the stage changes: a model whose bytes
//!   changed on storage never reaches a stage.
//! - Entering production archives the previous production version; every
//!   change is an event, so `history --at` replays events up to an instant.

use citadel_policy::{Resource, ResourceKind};
use std::path::PathBuf;

use serde::Serialize;
use sqlx::Row;

use citadel_audit::Outcome;
use citadel_policy::Action;
use citadel_store::LineageEdge;
use citadel_types::{Name, Timestamp};

use crate::{Caller, ControlError, Permit, Result, Workspace, event};

const SIGNING_KEY_META: &str = "model_signing_key";
const SIGNING_KEY_OBJECT: &str = "workspace-secret/model-signing-key";
/// JSON list of retired model-signing keys: [{"hint", "retired_at"}].
const RETIRED_KEYS_META: &str = "model_signing_retired";
/// A version's stages. `retired` is terminal: it is reached only through
/// [`Workspace::model_retire`] (a reason is required), and a retired version
/// is never requested into another stage, deployed, rolled back to or
/// loaded for serving.
pub const STAGES: &[&str] = &["none", "staging", "production", "archived", "retired"];
/// The workspace's model gate, relative to the workspace directory.
pub const GATE_POLICY_FILE: &str = "policies/model-gate.rego";

/// What `model register` is given.
#[derive(Debug, Clone, Default)]
pub struct RegisterRequest {
    pub path: PathBuf,
    pub name: String,
    /// Artifact references (ids or names) of the training datasets.
    pub datasets: Vec<String>,
    pub code_ref: Option<String>,
    /// Training parameters (JSON), recorded in the provenance.
    pub params: Option<serde_json::Value>,
}

/// One registered model in `model ls` without a name.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    pub model: String,
    pub versions: i64,
    pub latest: i64,
    pub production: Option<i64>,
    pub staging: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelVersion {
    pub model: String,
    pub version: i64,
    pub artifact_id: String,
    pub stage: String,
    pub created_by: String,
    pub created_at: String,
    pub scan: serde_json::Value,
    pub provenance: serde_json::Value,
    pub signature_key_hint: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StageRequest {
    pub id: String,
    pub model: String,
    pub version: i64,
    pub to_stage: String,
    pub requested_by: String,
    pub requested_at: String,
    pub status: String,
    pub decided_by: Option<String>,
    pub note: String,
    /// Endpoints an archive or retirement took the version out of.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub withdrawn: Vec<crate::Withdrawal>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StageEvent {
    pub seq: i64,
    pub version: i64,
    pub from_stage: String,
    pub to_stage: String,
    pub at: String,
    pub at_micros: i64,
    pub by: String,
    pub request: String,
    /// The decision's note; for a retirement, its reason.
    pub note: String,
}

/// A version as recorded, before anything about its bytes is known.
struct Unverified {
    model: String,
    version: i64,
    artifact_id: String,
    bundle: String,
}

/// A model whose stored bytes were restored and verified (AEAD per chunk,
/// SHA-256 of the artifact, and the model signature). It can only be made by
/// verification; its files are removed when it is dropped.
#[derive(Debug)]
pub struct VerifiedModel {
    pub model: String,
    pub version: i64,
    pub artifact_id: String,
    pub root_digest: String,
    /// The hint of the key the signature verified with.
    pub key_hint: String,
    /// The verified files (a file or a directory).
    pub path: PathBuf,
    _dir: TempDir,
}

/// A private (0700) temporary directory, removed on drop.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = std::env::temp_dir().join(citadel_types::random_id("citadel-model-"));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| invalid(format!("creating {}: {e}", dir.display())))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The signing key's hint recorded in a model-signing bundle.
fn bundle_hint(bundle: &str) -> Option<String> {
    let b: serde_json::Value = serde_json::from_str(bundle).ok()?;
    b["verificationMaterial"]["publicKey"]["hint"].as_str().map(str::to_string)
}

/// The scan as recorded with a version and shown to the gates: counts by
/// severity, the globals a workspace extension allowed, and every finding.
pub(crate) fn scan_summary(
    reports: &[citadel_scan::FileReport],
    findings: &[citadel_scan::Finding],
) -> serde_json::Value {
    let count = |s| findings.iter().filter(|f| f.severity == s).count();
    let allowed: Vec<&str> =
        findings.iter().filter(|f| f.rule.ends_with("-allowed-by-workspace")).map(|f| f.message.as_str()).collect();
    serde_json::json!({
        "scanner": "citadel-scan",
        "policy": "fail-closed",
        "files": reports.len(),
        "critical": count(citadel_scan::Severity::Critical),
        "warnings": count(citadel_scan::Severity::Warning),
        "info": count(citadel_scan::Severity::Info),
        "allowed_by_workspace": allowed,
        "findings": findings,
    })
}

pub(crate) fn invalid(m: impl Into<String>) -> ControlError {
    ControlError::Invalid(m.into())
}

impl Workspace {
    /// The workspace's model-signing key, created (and sealed) on first use.
    pub(crate) async fn model_signing_key(&self) -> Result<citadel_signing::SigningKey> {
        if let Some(hex_sealed) = citadel_store::meta_get(self.db.pool(), SIGNING_KEY_META).await? {
            let sealed = hex::decode(hex_sealed).map_err(|_| invalid("the stored model-signing key is not hex"))?;
            let der = self.secrets_cipher()?.open(SIGNING_KEY_OBJECT, &sealed)?;
            return Ok(citadel_signing::SigningKey::from_der(&der)?);
        }
        let (key, der) = citadel_signing::SigningKey::generate()?;
        let sealed = self.secrets_cipher()?.seal(SIGNING_KEY_OBJECT, &der)?;
        let mut tx = self.db.begin_audited().await?;
        citadel_store::meta_set(tx.conn(), SIGNING_KEY_META, &hex::encode(sealed)).await?;
        tx.commit(event(
            "citadel",
            "key.generate",
            "key:model-signing",
            Outcome::Success,
            &citadel_types::random_id("req-"),
            serde_json::json!({"algorithm": "ecdsa-p256", "key_hint": key.hint()}),
        ))
        .await?;
        Ok(key)
    }

    /// Replaces the model-signing key. The old key is retired: versions it
    /// signed no longer verify (approval and loading refuse them, naming the
    /// retired key) until registered again under the new key.
    pub async fn model_signing_rotate(&self, caller: &Caller) -> Result<serde_json::Value> {
        let permit =
            self.authorize(caller, Action::KeyRotate, Resource::new(ResourceKind::Key, "model-signing")).await?;
        let old = self.model_signing_key().await?;
        let (new, der) = citadel_signing::SigningKey::generate()?;
        let sealed = self.secrets_cipher()?.seal(SIGNING_KEY_OBJECT, &der)?;
        let mut retired: Vec<serde_json::Value> =
            match citadel_store::meta_get(self.db.pool(), RETIRED_KEYS_META).await? {
                Some(t) => serde_json::from_str(&t).unwrap_or_default(),
                None => Vec::new(),
            };
        retired.push(serde_json::json!({"hint": old.hint(), "retired_at": Timestamp::now().to_rfc3339()}));
        let mut tx = self.db.begin_audited().await?;
        citadel_store::meta_set(tx.conn(), SIGNING_KEY_META, &hex::encode(sealed)).await?;
        citadel_store::meta_set(tx.conn(), RETIRED_KEYS_META, &serde_json::Value::from(retired).to_string()).await?;
        tx.commit(permit.success(serde_json::json!({"retired": old.hint(), "new": new.hint()}))).await?;
        Ok(serde_json::json!({"retired": old.hint(), "new": new.hint()}))
    }

    async fn retired_hint(&self, bundle: &str) -> Result<Option<String>> {
        let Some(hint) = bundle_hint(bundle) else { return Ok(None) };
        let retired: Vec<serde_json::Value> = match citadel_store::meta_get(self.db.pool(), RETIRED_KEYS_META).await? {
            Some(t) => serde_json::from_str(&t).unwrap_or_default(),
            None => return Ok(None),
        };
        Ok(retired.iter().any(|r| r["hint"].as_str() == Some(hint.as_str())).then_some(hint))
    }

    /// The public half of the model-signing key, in PEM, for `model_signing verify key`.
    pub async fn model_signing_public_key(&self, caller: &Caller) -> Result<String> {
        let permit = self.authorize(caller, Action::ModelRead, Resource::all(ResourceKind::Model)).await?;
        let out = self.model_signing_key().await?.public_key_pem();
        self.record(permit, serde_json::json!({})).await?;
        Ok(out)
    }

    pub async fn model_register(&self, caller: &Caller, req: &RegisterRequest) -> Result<ModelVersion> {
        let name = Name::parse(&req.name)?;
        let resource = Resource::new(ResourceKind::Model, &name);
        let permit = self.authorize(caller, Action::ModelRegister, resource.clone()).await?;
        let mut datasets = Vec::new();
        for d in &req.datasets {
            datasets.push(self.store()?.resolve(d).await?);
        }

        // 1. Scan (fail closed: critical or unjudged findings block), and the block is audited.
        let path = req.path.clone();
        let opts = self.scan_options().await?;
        let reports = tokio::task::spawn_blocking(move || citadel_scan::scan_path_with(&path, &opts))
            .await
            .map_err(|e| invalid(e.to_string()))?
            .map_err(|e| invalid(e.to_string()))?;
        let findings: Vec<citadel_scan::Finding> = reports.iter().flat_map(|r| r.findings.clone()).collect();
        let scan = scan_summary(&reports, &findings);
        let critical = findings.iter().filter(|f| f.severity == citadel_scan::Severity::Critical).count();
        let unjudged = findings.iter().filter(|f| f.severity == citadel_scan::Severity::Warning).count();
        if citadel_scan::refused(&reports) {
            let rules: Vec<&str> = findings.iter().map(|f| f.rule.as_str()).collect();
            self.db
                .append_audit(permit.refused(serde_json::json!({"blocked_by": "scan", "critical": critical, "unjudged": unjudged, "rules": rules})))
                .await?;
            return Err(ControlError::ScanBlocked { model: name.to_string(), critical, unjudged, findings });
        }

        // 2. Sign with the workspace key, then store.
        let key = self.model_signing_key().await?;
        let path = req.path.clone();
        let key_hint = key.hint();
        let bundle = tokio::task::spawn_blocking(move || {
            citadel_signing::sign(&path, &key, &citadel_signing::SignOptions::default())
        })
        .await
        .map_err(|e| invalid(e.to_string()))??;
        let prepared = self.store()?.prepare_put(&req.path, None).await?;
        let artifact_id = prepared.id.to_string();

        let result = async {
            let mut tx = self.db.begin_audited().await?;
            self.store()?.commit_put(&mut tx, &prepared, Some(&format!("models/{name}")), caller.id()).await?;
            let row = sqlx::query("SELECT MAX(version) AS v FROM model_versions WHERE model_name = $1")
                .bind(name.as_str())
                .fetch_one(&mut *tx.conn())
                .await?;
            let version = row.try_get::<Option<i64>, _>("v")?.unwrap_or(0) + 1;
            let now = Timestamp::now();
            // 3. Provenance: an in-toto statement with a SLSA v1 predicate.
            let provenance = serde_json::json!({
                "_type": "https://in-toto.io/Statement/v1",
                "subject": [{"name": format!("{name}@{version}"), "digest": {"sha256": artifact_id}}],
                "predicateType": "https://slsa.dev/provenance/v1",
                "predicate": {
                    "buildDefinition": {
                        "buildType": "https://citadel.invalid/model-register/v1",
                        "externalParameters": {"code_ref": req.code_ref, "parameters": req.params},
                        "internalParameters": {"scan": {"critical": 0, "files": reports.len()}},
                        "resolvedDependencies": datasets.iter().map(|d| serde_json::json!({
                            "uri": format!("citadel:artifact/{}", d.id),
                            "name": d.names.first(),
                            "digest": {"sha256": d.id.to_string()},
                        })).collect::<Vec<_>>(),
                    },
                    "runDetails": {
                        "builder": {"id": format!("citadel/{}", env!("CARGO_PKG_VERSION"))},
                        "metadata": {"invocationId": caller.request_id(), "startedOn": now.to_rfc3339()},
                        "byproducts": [{"name": "registered_by", "content": caller.name()}],
                    },
                    "environment": {"os": std::env::consts::OS, "arch": std::env::consts::ARCH},
                },
            });
            sqlx::query(
                "INSERT INTO model_versions (model_name, version, artifact_id, stage, signature, scan, provenance, created_by, created_at) \
                 VALUES ($1, $2, $3, 'none', $4, $5, $6, $7, $8)",
            )
            .bind(name.as_str())
            .bind(version)
            .bind(artifact_id.clone())
            .bind(bundle.clone())
            .bind(scan.to_string())
            .bind(provenance.to_string())
            .bind(caller.id().to_string())
            .bind(now.0)
            .execute(&mut *tx.conn())
            .await?;
            let child = format!("model:{name}@{version}");
            citadel_store::lineage_insert(
                tx.conn(),
                &LineageEdge { child: child.clone(), parent: format!("artifact:{artifact_id}"), relation: "stored-as".into() },
            )
            .await?;
            for d in &datasets {
                citadel_store::lineage_insert(
                    tx.conn(),
                    &LineageEdge { child: child.clone(), parent: format!("artifact:{}", d.id), relation: "trained-on".into() },
                )
                .await?;
            }
            tx.commit(permit.success(serde_json::json!({"version": version, "artifact": artifact_id, "key_hint": key_hint, "warnings": scan["warnings"]})))
            .await?;
            Ok::<_, ControlError>(ModelVersion {
                model: name.to_string(),
                version,
                artifact_id: artifact_id.clone(),
                stage: "none".into(),
                created_by: caller.name().to_string(),
                created_at: now.to_rfc3339(),
                scan: scan.clone(),
                provenance,
                signature_key_hint: key_hint.clone(),
            })
        }
        .await;
        self.store()?.release(prepared).await;
        result
    }

    pub async fn model_versions(&self, caller: &Caller, name: &str) -> Result<Vec<ModelVersion>> {
        let name = Name::parse(name)?;
        let permit = self.authorize(caller, Action::ModelRead, Resource::new(ResourceKind::Model, &name)).await?;
        // A read: recorded before anything it returns.
        self.record(permit, serde_json::json!({})).await?;
        let rows = sqlx::query(
            "SELECT m.version, m.artifact_id, m.stage, m.scan, m.provenance, m.signature, m.created_at, p.name AS who \
             FROM model_versions m LEFT JOIN principals p ON p.id = m.created_by WHERE m.model_name = $1 ORDER BY m.version",
        )
        .bind(name.as_str())
        .fetch_all(self.db.pool())
        .await?;
        if rows.is_empty() {
            return Err(ControlError::NotFound(format!("model {name}")));
        }
        rows.iter()
            .map(|r| {
                let get = |c: &str| r.try_get::<String, _>(c);
                Ok(ModelVersion {
                    model: name.to_string(),
                    version: r.try_get("version")?,
                    artifact_id: get("artifact_id")?,
                    stage: get("stage")?,
                    created_by: r.try_get::<Option<String>, _>("who").ok().flatten().unwrap_or_default(),
                    created_at: Timestamp(r.try_get("created_at")?).to_rfc3339(),
                    scan: serde_json::from_str(&get("scan")?).unwrap_or_default(),
                    provenance: serde_json::from_str(&get("provenance")?).unwrap_or_default(),
                    signature_key_hint: bundle_hint(&get("signature")?).unwrap_or_default(),
                })
            })
            .collect()
    }

    async fn version_stage(&self, name: &str, version: i64) -> Result<String> {
        let row = sqlx::query("SELECT stage FROM model_versions WHERE model_name = $1 AND version = $2")
            .bind(name)
            .bind(version)
            .fetch_optional(self.db.pool())
            .await?
            .ok_or_else(|| ControlError::NotFound(format!("model {name} version {version}")))?;
        Ok(row.try_get("stage")?)
    }

    /// Asks for `name`@`version` to move to `to_stage`; an approver decides.
    pub async fn model_request_stage(
        &self,
        caller: &Caller,
        name: &str,
        version: i64,
        to_stage: &str,
    ) -> Result<StageRequest> {
        let name = Name::parse(name)?;
        let resource = Resource::new(ResourceKind::Model, &name);
        let permit = self.authorize(caller, Action::ModelPromoteRequest, resource.clone()).await?;
        if to_stage == "retired" {
            return Err(invalid(format!(
                "retirement is not requested: an approver runs `citadel model retire {name}@{version} --reason \"…\"`"
            )));
        }
        if !STAGES.contains(&to_stage) || to_stage == "none" {
            return Err(invalid(format!("unknown target stage {to_stage:?}: use staging, production or archived")));
        }
        let from = self.version_stage(name.as_str(), version).await?;
        if from == "retired" {
            return Err(self.retired(name.as_str(), version).await?);
        }
        if to_stage != "archived" {
            let flags = crate::subject::model_erasure_flags(self.db.pool(), name.as_str(), version).await?;
            if !flags.is_empty() {
                return Err(erased_training_data(name.as_str(), version, to_stage, &flags));
            }
        }
        let allowed = matches!(
            (from.as_str(), to_stage),
            ("none", "staging")
                | ("staging", "production")
                | ("none" | "staging" | "production", "archived")
                | ("archived", "staging")
        );
        if !allowed {
            return Err(invalid(format!(
                "{name} version {version} is in {from}; it cannot move to {to_stage} (order: none → staging → production → archived)"
            )));
        }
        let id = citadel_types::random_id("sr-");
        let now = Timestamp::now();
        let mut tx = self.db.begin_audited().await?;
        sqlx::query(
            "INSERT INTO stage_requests (id, model_name, version, to_stage, requested_by, requested_at, status, note) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', '')",
        )
        .bind(id.clone())
        .bind(name.as_str())
        .bind(version)
        .bind(to_stage)
        .bind(caller.id().to_string())
        .bind(now.0)
        .execute(&mut *tx.conn())
        .await?;
        tx.commit(permit.success(serde_json::json!({"request": id, "version": version, "from": from, "to": to_stage})))
            .await?;
        Ok(StageRequest {
            id,
            model: name.to_string(),
            version,
            to_stage: to_stage.into(),
            requested_by: caller.name().to_string(),
            requested_at: now.to_rfc3339(),
            status: "pending".into(),
            decided_by: None,
            note: String::new(),
            withdrawn: Vec::new(),
        })
    }

    /// Approves (or rejects) a pending request. The approver must differ
    /// from the requester; the version's stored bytes must still verify.
    pub async fn model_decide(
        &self,
        caller: &Caller,
        request_id: &str,
        approve: bool,
        note: &str,
    ) -> Result<StageRequest> {
        let row =
            sqlx::query("SELECT model_name, version, to_stage, requested_by, status FROM stage_requests WHERE id = $1")
                .bind(request_id)
                .fetch_optional(self.db.pool())
                .await?
                .ok_or_else(|| ControlError::NotFound(format!("stage request {request_id}")))?;
        let s = |c: &str| row.try_get::<String, _>(c);
        let (name, to_stage, requested_by, status) =
            (s("model_name")?, s("to_stage")?, s("requested_by")?, s("status")?);
        let version: i64 = row.try_get("version")?;
        let resource = Resource::new(ResourceKind::Model, &name);
        let permit = self.authorize(caller, Action::ModelApprove, resource.clone()).await?;
        if status != "pending" {
            return Err(ControlError::Conflict(format!("stage request {request_id} is already {status}")));
        }
        if caller.id() == requested_by {
            self.db
                .append_audit(permit.refused(serde_json::json!({"request": request_id, "reason": "the requester cannot approve their own request"})))
                .await?;
            return Err(ControlError::SelfApproval {
                principal: caller.name().to_string(),
                request: request_id.into(),
            });
        }
        if approve && self.version_stage(&name, version).await? == "retired" {
            return Err(self.retired(&name, version).await?);
        }
        if approve {
            let verified = self.load_verified(&permit, &name, version).await?;
            let from = self.version_stage(&name, version).await?;
            self.gate(&permit, &name, version, &from, &to_stage, &verified.key_hint).await?;
        }
        let now = Timestamp::now();
        let mut tx = self.db.begin_audited().await?;
        let status = if approve { "approved" } else { "rejected" };
        let updated = sqlx::query("UPDATE stage_requests SET status = $1, decided_by = $2, decided_at = $3, note = $4 WHERE id = $5 AND status = 'pending'")
            .bind(status)
            .bind(caller.id().to_string())
            .bind(now.0)
            .bind(note)
            .bind(request_id)
            .execute(&mut *tx.conn())
            .await?;
        // Two approvers racing: only the one whose update took effect goes on.
        if updated.rows_affected() != 1 {
            return Err(ControlError::Conflict(format!(
                "stage request {request_id} was decided by someone else meanwhile"
            )));
        }
        let mut withdrawn = Vec::new();
        if approve {
            let from = stage_in_tx(&mut tx, &name, version).await?;
            // Retired while the approver's checks ran: the transaction rolls back.
            if from == "retired" {
                drop(tx);
                return Err(self.retired(&name, version).await?);
            }
            if to_stage == "production" {
                // The current production version, if any, is archived.
                let current =
                    sqlx::query("SELECT version FROM model_versions WHERE model_name = $1 AND stage = 'production'")
                        .bind(name.clone())
                        .fetch_all(&mut *tx.conn())
                        .await?;
                for r in current {
                    let v: i64 = r.try_get("version")?;
                    set_stage(&mut tx, &name, v, "production", "archived", caller.id(), request_id, now).await?;
                }
            }
            set_stage(&mut tx, &name, version, &from, &to_stage, caller.id(), request_id, now).await?;
            // An explicit archive takes the version out of serving; the
            // archive that promotion does to the previous production
            // version (above) leaves deployments alone, so a blue/green or
            // canary keeps its fallback until a person changes it.
            if to_stage == "archived" {
                withdrawn = Self::withdraw_from_serving(&mut tx, caller.id(), &name, version, now).await?;
            }
        }
        tx.commit(permit.success(
            serde_json::json!({"request": request_id, "version": version, "to": to_stage, "note": note, "withdrawn": withdrawn}),
        ))
        .await?;
        Ok(StageRequest {
            id: request_id.into(),
            model: name,
            version,
            to_stage,
            requested_by,
            requested_at: String::new(),
            status: status.into(),
            decided_by: Some(caller.name().to_string()),
            note: note.into(),
            withdrawn,
        })
    }

    /// The Rego gate over the version's facts. The workspace's
    /// `policies/model-gate.rego` when present, else the built-in default.
    /// A failure lists every violated rule and is audited.
    async fn gate(
        &self,
        permit: &Permit,
        name: &str,
        version: i64,
        from: &str,
        to: &str,
        key_hint: &str,
    ) -> Result<()> {
        let path = self.config.workspace.join(GATE_POLICY_FILE);
        let (policy_name, policy) = match std::fs::read_to_string(&path) {
            // Named as the workspace names it: a message that reaches a
            // client through the server says nothing of the server's disk.
            Ok(text) => (format!("the workspace's {GATE_POLICY_FILE}"), text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                ("built-in model-gate.rego".to_string(), citadel_policy::DEFAULT_MODEL_GATE.to_string())
            }
            Err(e) => return Err(invalid(format!("reading {}: {e}", path.display()))),
        };
        let row = sqlx::query("SELECT scan, provenance FROM model_versions WHERE model_name = $1 AND version = $2")
            .bind(name)
            .bind(version)
            .fetch_one(self.db.pool())
            .await?;
        let scan: serde_json::Value = serde_json::from_str(&row.try_get::<String, _>("scan")?).unwrap_or_default();
        let provenance: serde_json::Value =
            serde_json::from_str(&row.try_get::<String, _>("provenance")?).unwrap_or_default();
        let flags = crate::subject::model_erasure_flags(self.db.pool(), name, version).await?;
        let input = serde_json::json!({
            "model": name,
            "version": version,
            "from_stage": from,
            "to_stage": to,
            "scan": scan,
            // Only reached after the stored bytes verified against their signature.
            "signature": {"verified": true, "key_hint": key_hint},
            "provenance": provenance,
            // The evaluation recorded by the pipeline that trained it, if any.
            "metrics": self.model_evaluation(name, version).await?,
            // Erasures of data subjects' rows from its training data.
            "erasures": flags,
        });
        let mut violations = citadel_policy::evaluate_gate(&policy_name, &policy, "citadel.gate", &input)?;
        // Enforced whatever the workspace's policy says: a model trained on
        // erased rows is not promoted (it may be archived).
        if !flags.is_empty() && to != "archived" {
            violations.push(erased_training_data(name, version, to, &flags).to_string());
        }
        if violations.is_empty() {
            return Ok(());
        }
        self.db
            .append_audit(permit.step(
                "model.gate",
                Outcome::Denied,
                serde_json::json!({"version": version, "to": to, "policy": policy_name, "violations": violations}),
            ))
            .await?;
        Err(ControlError::GateFailed { policy: policy_name, violations })
    }

    /// Restores the version's artifact to a private temporary directory and
    /// verifies its signature with the workspace key. A failure is recorded
    /// under the permitted action.
    async fn load_verified(&self, permit: &Permit, name: &str, version: i64) -> Result<VerifiedModel> {
        let row =
            sqlx::query("SELECT artifact_id, signature FROM model_versions WHERE model_name = $1 AND version = $2")
                .bind(name)
                .bind(version)
                .fetch_optional(self.db.pool())
                .await?
                .ok_or_else(|| ControlError::NotFound(format!("model {name} version {version}")))?;
        let unverified = Unverified {
            model: name.to_string(),
            version,
            artifact_id: row.try_get("artifact_id")?,
            bundle: row.try_get("signature")?,
        };
        let dir = TempDir::new()?;
        let result = async {
            if let Some(hint) = self.retired_hint(&unverified.bundle).await? {
                return Err(ControlError::RetiredSigningKey { hint });
            }
            let info = self.store()?.resolve(&unverified.artifact_id).await?;
            let restored = dir.0.join("model");
            // restore() checks every chunk (AEAD) and the artifact's SHA-256.
            self.store()?.restore(&info, &restored, None).await?;
            let key = self.model_signing_key().await?.verifying_key();
            let v = citadel_signing::verify(&restored, &unverified.bundle, &key, &[])?;
            let key_hint = key.hint();
            if !v.mismatch.is_empty() {
                return Err(ControlError::Signing(citadel_signing::SigningError::Format(format!(
                    "the stored model differs from its signature: {:?}",
                    v.mismatch
                ))));
            }
            Ok(VerifiedModel {
                model: unverified.model.clone(),
                version: unverified.version,
                artifact_id: unverified.artifact_id.clone(),
                root_digest: v.root_digest,
                key_hint,
                path: restored,
                _dir: dir,
            })
        }
        .await;
        if let Err(err) = &result {
            let details = serde_json::json!({"version": version, "error": err.to_string()});
            let _ = self.db.append_audit(permit.step(permit.action().as_str(), Outcome::Failure, details)).await;
        }
        result
    }

    /// A CycloneDX 1.6 ML-BOM for one version: the model (hashes, stage,
    /// signature, scan), its training datasets, and how they depend.
    pub async fn model_bom(&self, caller: &Caller, name: &str, version: i64) -> Result<serde_json::Value> {
        let name = Name::parse(name)?;
        let permit = self.authorize(caller, Action::ModelRead, Resource::new(ResourceKind::Model, &name)).await?;
        // A read: recorded before anything it returns.
        self.record(permit, serde_json::json!({})).await?;
        let v = self
            .model_versions(caller, name.as_str())
            .await?
            .into_iter()
            .find(|m| m.version == version)
            .ok_or_else(|| ControlError::NotFound(format!("model {name} version {version}")))?;
        let bundle: String = sqlx::query("SELECT signature FROM model_versions WHERE model_name = $1 AND version = $2")
            .bind(name.as_str())
            .bind(version)
            .fetch_one(self.db.pool())
            .await?
            .try_get("signature")?;
        let bundle_digest = citadel_types::Digest::of(bundle.as_bytes()).to_hex();
        let model_ref = format!("model:{name}@{version}");
        let deps = v.provenance["predicate"]["buildDefinition"]["resolvedDependencies"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        // The pipeline's evaluation and model card, when a pipeline trained it.
        let (mut performance, mut considerations, mut card_refs) = (Vec::new(), serde_json::json!({}), Vec::new());
        let card = sqlx::query("SELECT evaluation, card_json_artifact, card_html_artifact FROM model_cards WHERE model_name = $1 AND version = $2")
            .bind(name.as_str())
            .bind(version)
            .fetch_optional(self.db.pool())
            .await?;
        if let Some(row) = card {
            let e: serde_json::Value =
                serde_json::from_str(&row.try_get::<String, _>("evaluation")?).unwrap_or_default();
            for (metric, value) in [
                ("accuracy", &e["accuracy"]),
                ("roc_auc", &e["roc_auc"]),
                ("demographic_parity_ratio (worst attribute)", &e["fairness"]["demographic_parity_ratio"]),
                ("attack_success_rate", &e["robustness"]["attack_success_rate"]),
                ("macro_f1", &e["macro_f1"]),
                ("log_loss", &e["log_loss"]),
                ("r2", &e["r2"]),
                ("rmse", &e["rmse"]),
                ("mae", &e["mae"]),
                (
                    "worst group ratio (accuracy or mean absolute error, worst attribute)",
                    if e["task"] == "multiclass" || e["task"] == "regression" {
                        &e["fairness"]["worst_group_ratio"]
                    } else {
                        &serde_json::Value::Null
                    },
                ),
            ] {
                if let Some(v) = value.as_f64() {
                    performance.push(serde_json::json!({"type": metric, "value": format!("{v:.6}")}));
                }
            }
            considerations = serde_json::json!({"fairnessAssessments": [{"groupAtRisk": "see the model card's per-group metrics", "benefits": "", "harms": "", "mitigationStrategy": format!("pipeline gate {}: {}", e["pipeline_gate"]["policy"].as_str().unwrap_or(""), if e["pipeline_gate"]["passed"].as_bool().unwrap_or(false) { "passed" } else { "not passed" })}]});
            for (col, what) in [("card_json_artifact", "JSON"), ("card_html_artifact", "HTML")] {
                let id: String = row.try_get(col)?;
                card_refs.push(serde_json::json!({"type": "model-card", "url": format!("citadel:artifact/{id}"), "comment": format!("model card ({what})"), "hashes": [{"alg": "SHA-256", "content": id}]}));
            }
        }
        let mut components = vec![serde_json::json!({
            "type": "machine-learning-model",
            "bom-ref": model_ref,
            "name": name.as_str(),
            "version": version.to_string(),
            "hashes": [{"alg": "SHA-256", "content": v.artifact_id}],
            "modelCard": {
                "modelParameters": {
                    "datasets": deps.iter().map(|d| serde_json::json!({"ref": format!("dataset:{}", d["digest"]["sha256"].as_str().unwrap_or(""))})).collect::<Vec<_>>(),
                },
                "quantitativeAnalysis": {"performanceMetrics": performance},
                "considerations": considerations,
            },
            "externalReferences": card_refs,
            "properties": [
                {"name": "citadel:stage", "value": v.stage},
                {"name": "citadel:registered_by", "value": v.created_by},
                {"name": "citadel:registered_at", "value": v.created_at},
                {"name": "citadel:scan.critical", "value": v.scan["critical"].to_string()},
                {"name": "citadel:scan.warnings", "value": v.scan["warnings"].to_string()},
                {"name": "citadel:scan.allowed_by_workspace", "value": v.scan["allowed_by_workspace"].to_string()},
                {"name": "citadel:signature.format", "value": "model-signing (sigstore bundle v0.3, DSSE, in-toto)"},
                {"name": "citadel:signature.key_hint", "value": v.signature_key_hint},
                {"name": "citadel:signature.bundle_sha256", "value": bundle_digest},
                {"name": "citadel:provenance.predicate_type", "value": v.provenance["predicateType"].as_str().unwrap_or("")},
                {"name": "citadel:code_ref", "value": v.provenance["predicate"]["buildDefinition"]["externalParameters"]["code_ref"].as_str().unwrap_or("")},
            ],
        })];
        for d in &deps {
            let digest = d["digest"]["sha256"].as_str().unwrap_or("").to_string();
            let dname = d["name"].as_str().map(str::to_string).unwrap_or_else(|| digest.clone());
            components.push(serde_json::json!({
                "type": "data",
                "bom-ref": format!("dataset:{digest}"),
                "name": dname,
                "hashes": [{"alg": "SHA-256", "content": digest}],
                "data": [{"type": "dataset", "name": dname}],
            }));
        }
        let r = citadel_crypto::random_bytes::<16>()?;
        let uuid = format!(
            "{}-{}-4{}-{:x}{}-{}",
            hex::encode(&r[0..4]),
            hex::encode(&r[4..6]),
            &hex::encode(&r[6..8])[1..],
            8 | (r[8] & 0x3),
            &hex::encode(&r[8..10])[1..],
            hex::encode(&r[10..16])
        );
        Ok(serde_json::json!({
            "bomFormat": "CycloneDX",
            "specVersion": "1.6",
            "serialNumber": format!("urn:uuid:{uuid}"),
            "version": 1,
            "metadata": {
                "timestamp": Timestamp::now().to_rfc3339(),
                "tools": {"components": [{"type": "application", "name": "citadel", "version": env!("CARGO_PKG_VERSION")}]},
                "component": {"type": "machine-learning-model", "bom-ref": format!("{model_ref}#meta"), "name": name.as_str(), "version": version.to_string()},
            },
            "components": components,
            "dependencies": [{
                "ref": model_ref,
                "dependsOn": deps.iter().map(|d| format!("dataset:{}", d["digest"]["sha256"].as_str().unwrap_or(""))).collect::<Vec<_>>(),
            }],
        }))
    }

    /// Verified loading: the only way to obtain a model's files for serving.
    /// `reference` is a version number or a stage (`production`, `staging`).
    /// The bytes are restored, their digest and signature checked, and only
    /// then handed out as a [`VerifiedModel`]; a tampered model is refused
    /// and the refusal audited.
    pub async fn model_load(&self, caller: &Caller, name: &str, reference: &str) -> Result<VerifiedModel> {
        let name = Name::parse(name)?;
        let resource = Resource::new(ResourceKind::Model, &name);
        let permit = self.authorize(caller, Action::ModelRead, resource.clone()).await?;
        let version = match reference.parse::<i64>() {
            Ok(v) => v,
            Err(_) if STAGES.contains(&reference) => {
                let row =
                    sqlx::query("SELECT MAX(version) AS v FROM model_versions WHERE model_name = $1 AND stage = $2")
                        .bind(name.as_str())
                        .bind(reference)
                        .fetch_one(self.db.pool())
                        .await?;
                row.try_get::<Option<i64>, _>("v")?
                    .ok_or_else(|| ControlError::NotFound(format!("a {reference} version of {name}")))?
            }
            Err(_) => return Err(invalid(format!("{reference:?} is neither a version number nor a stage"))),
        };
        self.load_for(permit, name.as_str(), version, None).await
    }

    /// A deployed version's verified files, for a gateway that holds no key
    /// (`citadel serve --control`): `model.read` on the model (the gateway
    /// role has it) and only for a version a live deployment targets; the
    /// same verified loading as [`Workspace::model_load`]. A version that is
    /// not deployed is refused and the refusal recorded: a serving
    /// credential reads deployed models and nothing else.
    pub async fn model_for_serving(&self, caller: &Caller, name: &str, version: i64) -> Result<VerifiedModel> {
        let name = Name::parse(name)?;
        let resource = Resource::new(ResourceKind::Model, &name);
        let permit = self.authorize(caller, Action::ModelRead, resource.clone()).await?;
        let deployed = self
            .deployments_live()
            .await?
            .iter()
            .any(|d| d.spec.targets.iter().any(|t| t.model == name.as_str() && t.version == version));
        if !deployed {
            self.db
                .append_audit(
                    permit.refused(serde_json::json!({"version": version, "for": "serving", "reason": "not deployed"})),
                )
                .await?;
            return Err(ControlError::Denied {
                principal: caller.name().to_string(),
                action: Action::ModelRead.as_str().into(),
                resource: format!("{resource} version {version} for serving (no live deployment targets it)"),
            });
        }
        self.load_for(permit, name.as_str(), version, Some("serving")).await
    }

    /// Verified loading under `permit` (a retired version refused and the
    /// refusal recorded), the read recorded with what it was `purpose`d for.
    async fn load_for(&self, permit: Permit, name: &str, version: i64, purpose: Option<&str>) -> Result<VerifiedModel> {
        if self.version_stage(name, version).await? == "retired" {
            let err = self.retired(name, version).await?;
            self.db
                .append_audit(permit.refused(serde_json::json!({"version": version, "reason": err.to_string()})))
                .await?;
            return Err(err);
        }
        let loaded = self.load_verified(&permit, name, version).await?;
        let mut details =
            serde_json::json!({"version": version, "artifact": loaded.artifact_id, "root_digest": loaded.root_digest});
        if let Some(p) = purpose {
            details["for"] = serde_json::json!(p);
        }
        self.record(permit, details).await?;
        Ok(loaded)
    }

    /// Puts the previous production version back into production.
    pub async fn model_rollback(&self, caller: &Caller, name: &str) -> Result<StageEvent> {
        let name = Name::parse(name)?;
        let resource = Resource::new(ResourceKind::Model, &name);
        let permit = self.authorize(caller, Action::ModelApprove, resource.clone()).await?;
        let current: i64 =
            sqlx::query("SELECT version FROM model_versions WHERE model_name = $1 AND stage = 'production'")
                .bind(name.as_str())
                .fetch_optional(self.db.pool())
                .await?
                .ok_or_else(|| invalid(format!("{name} has no version in production to roll back from")))?
                .try_get("version")?;
        let events = self.stage_events(name.as_str()).await?;
        let previous = events
            .iter()
            .rev()
            .filter(|e| e.to_stage == "production" && e.version != current)
            .map(|e| e.version)
            .next()
            .ok_or_else(|| invalid(format!("{name} has no earlier production version to roll back to")))?;
        if self.version_stage(name.as_str(), previous).await? == "retired" {
            return Err(self.retired(name.as_str(), previous).await?);
        }
        let verified = self.load_verified(&permit, name.as_str(), previous).await?;
        let from_stage = self.version_stage(name.as_str(), previous).await?;
        self.gate(&permit, name.as_str(), previous, &from_stage, "production", &verified.key_hint).await?;
        let now = Timestamp::now();
        let request = citadel_types::random_id("rollback-");
        let mut tx = self.db.begin_audited().await?;
        set_stage(&mut tx, name.as_str(), current, "production", "archived", caller.id(), &request, now).await?;
        let from = stage_in_tx(&mut tx, name.as_str(), previous).await?;
        // Retired while the checks above ran: the transaction rolls back.
        if from == "retired" {
            drop(tx);
            return Err(self.retired(name.as_str(), previous).await?);
        }
        let seq = set_stage(&mut tx, name.as_str(), previous, &from, "production", caller.id(), &request, now).await?;
        tx.commit(permit.success(serde_json::json!({"from_version": current, "to_version": previous}))).await?;
        Ok(StageEvent {
            seq,
            version: previous,
            from_stage: from,
            to_stage: "production".into(),
            at: now.to_rfc3339(),
            at_micros: now.0,
            by: caller.name().to_string(),
            request,
            note: String::new(),
        })
    }

    async fn stage_events(&self, name: &str) -> Result<Vec<StageEvent>> {
        let rows = sqlx::query(
            "SELECT e.seq, e.version, e.from_stage, e.to_stage, e.at, e.request_id, p.name AS who, r.note \
             FROM stage_events e LEFT JOIN principals p ON p.id = e.by_principal \
             LEFT JOIN stage_requests r ON r.id = e.request_id WHERE e.model_name = $1 ORDER BY e.seq",
        )
        .bind(name)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let at: i64 = r.try_get("at")?;
                Ok(StageEvent {
                    seq: r.try_get("seq")?,
                    version: r.try_get("version")?,
                    from_stage: r.try_get("from_stage")?,
                    to_stage: r.try_get("to_stage")?,
                    at: Timestamp(at).to_rfc3339(),
                    at_micros: at,
                    by: r.try_get::<Option<String>, _>("who").ok().flatten().unwrap_or_default(),
                    request: r.try_get("request_id")?,
                    note: r.try_get::<Option<String>, _>("note")?.unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Retires `name`@`version` for good, with a reason (GDPR/AI Act
    /// record-keeping: why a model left service). One approver decides:
    /// retiring takes a model out of service, so it needs no second person.
    /// Every live deployment that targets the version loses it in the same
    /// transaction (`deploy.rs::withdraw_from_serving`; an endpoint left with
    /// nothing servable is removed), listed in the result and the record.
    /// The retirement is a stage request recorded as approved with the reason
    /// as its note, a stage event and an audit record, in one transaction.
    pub async fn model_retire(&self, caller: &Caller, name: &str, version: i64, reason: &str) -> Result<StageRequest> {
        let name = Name::parse(name)?;
        let resource = Resource::new(ResourceKind::Model, &name);
        let permit = self.authorize(caller, Action::ModelRetire, resource.clone()).await?;
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(invalid("a retirement needs a reason (--reason \"…\"); it is kept in the history".to_string()));
        }
        let from = self.version_stage(name.as_str(), version).await?;
        if from == "retired" {
            return Err(ControlError::Conflict(format!("{name} version {version} is already retired")));
        }
        let id = citadel_types::random_id("sr-");
        let now = Timestamp::now();
        let mut tx = self.db.begin_audited().await?;
        sqlx::query(
            "INSERT INTO stage_requests (id, model_name, version, to_stage, requested_by, requested_at, status, decided_by, decided_at, note) \
             VALUES ($1, $2, $3, 'retired', $4, $5, 'approved', $4, $5, $6)",
        )
        .bind(id.clone())
        .bind(name.as_str())
        .bind(version)
        .bind(caller.id().to_string())
        .bind(now.0)
        .bind(reason)
        .execute(&mut *tx.conn())
        .await?;
        // Read again inside the transaction, so a concurrent deployment or
        // stage change either precedes this check or follows the retirement.
        let from = stage_in_tx(&mut tx, name.as_str(), version).await?;
        if from == "retired" {
            return Err(ControlError::Conflict(format!("{name} version {version} is already retired")));
        }
        // Out of serving in the same transaction: no gateway loads it again.
        let withdrawn = Self::withdraw_from_serving(&mut tx, caller.id(), name.as_str(), version, now).await?;
        // Requests still pending for the version end with it.
        sqlx::query(
            "UPDATE stage_requests SET status = 'rejected', decided_by = $1, decided_at = $2, note = 'the version was retired' \
             WHERE model_name = $3 AND version = $4 AND status = 'pending'",
        )
        .bind(caller.id().to_string())
        .bind(now.0)
        .bind(name.as_str())
        .bind(version)
        .execute(&mut *tx.conn())
        .await?;
        set_stage(&mut tx, name.as_str(), version, &from, "retired", caller.id(), &id, now).await?;
        tx.commit(permit.success(
            serde_json::json!({"request": id, "version": version, "from": from, "reason": reason, "withdrawn": withdrawn}),
        ))
        .await?;
        Ok(StageRequest {
            id,
            model: name.to_string(),
            version,
            to_stage: "retired".into(),
            requested_by: caller.name().to_string(),
            requested_at: now.to_rfc3339(),
            status: "approved".into(),
            decided_by: Some(caller.name().to_string()),
            note: reason.into(),
            withdrawn,
        })
    }

    /// The error for a retired version, with its recorded reason.
    async fn retired(&self, name: &str, version: i64) -> Result<ControlError> {
        let row = sqlx::query(
            "SELECT note FROM stage_requests WHERE model_name = $1 AND version = $2 AND to_stage = 'retired' AND status = 'approved' \
             ORDER BY requested_at DESC",
        )
        .bind(name)
        .bind(version)
        .fetch_optional(self.db.pool())
        .await?;
        let reason = match row {
            Some(r) => r.try_get::<String, _>("note")?,
            None => "no reason recorded".into(),
        };
        Ok(ControlError::RetiredModel { model: name.into(), version, reason })
    }

    /// Every stage change of `name`; with `at`, also which version was in
    /// production at that instant.
    pub async fn model_history(
        &self,
        caller: &Caller,
        name: &str,
        at: Option<Timestamp>,
    ) -> Result<(Vec<StageEvent>, Option<i64>)> {
        let name = Name::parse(name)?;
        let permit = self.authorize(caller, Action::ModelRead, Resource::new(ResourceKind::Model, &name)).await?;
        // A read: recorded before anything it returns.
        self.record(permit, serde_json::json!({})).await?;
        let events = self.stage_events(name.as_str()).await?;
        let in_production = at.map(|t| {
            let mut prod = None;
            for e in events.iter().filter(|e| e.at_micros <= t.0) {
                if e.to_stage == "production" {
                    prod = Some(e.version);
                } else if prod == Some(e.version) {
                    prod = None;
                }
            }
            prod
        });
        Ok((events, in_production.flatten()))
    }

    /// Every registered model: its number of versions, the latest, and the
    /// versions in production and staging (the latest of each), by name.
    pub async fn model_list(&self, caller: &Caller) -> Result<Vec<ModelSummary>> {
        let permit = self.authorize(caller, Action::ModelRead, Resource::all(ResourceKind::Model)).await?;
        let rows = sqlx::query(
            "SELECT model_name, COUNT(*) AS n, MAX(version) AS latest, \
             MAX(CASE WHEN stage = 'production' THEN version END) AS production, \
             MAX(CASE WHEN stage = 'staging' THEN version END) AS staging \
             FROM model_versions GROUP BY model_name ORDER BY model_name",
        )
        .fetch_all(self.db.pool())
        .await?;
        let list = rows
            .iter()
            .map(|r| {
                Ok(ModelSummary {
                    model: r.try_get("model_name")?,
                    versions: r.try_get("n")?,
                    latest: r.try_get("latest")?,
                    production: r.try_get("production")?,
                    staging: r.try_get("staging")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.record(permit, serde_json::json!({"returned": list.len()})).await?;
        Ok(list)
    }

    pub async fn model_requests(&self, caller: &Caller, pending_only: bool) -> Result<Vec<StageRequest>> {
        let permit = self.authorize(caller, Action::ModelRead, Resource::all(ResourceKind::Model)).await?;
        // A read: recorded before anything it returns.
        self.record(permit, serde_json::json!({})).await?;
        let rows = sqlx::query(
            "SELECT r.id, r.model_name, r.version, r.to_stage, r.requested_at, r.status, r.note, a.name AS who, d.name AS decider \
             FROM stage_requests r LEFT JOIN principals a ON a.id = r.requested_by LEFT JOIN principals d ON d.id = r.decided_by \
             ORDER BY r.requested_at",
        )
        .fetch_all(self.db.pool())
        .await?;
        let mut out = Vec::new();
        for r in rows {
            let status: String = r.try_get("status")?;
            if pending_only && status != "pending" {
                continue;
            }
            out.push(StageRequest {
                id: r.try_get("id")?,
                model: r.try_get("model_name")?,
                version: r.try_get("version")?,
                to_stage: r.try_get("to_stage")?,
                requested_by: r.try_get::<Option<String>, _>("who").ok().flatten().unwrap_or_default(),
                requested_at: Timestamp(r.try_get("requested_at")?).to_rfc3339(),
                status,
                decided_by: r.try_get::<Option<String>, _>("decider").ok().flatten(),
                note: r.try_get("note")?,
                withdrawn: Vec::new(),
            });
        }
        Ok(out)
    }
}

async fn stage_in_tx(tx: &mut citadel_store::AuditedTx, name: &str, version: i64) -> Result<String> {
    stage_of(tx, name, version).await?.ok_or_else(|| ControlError::NotFound(format!("{name} version {version}")))
}

/// A version's stage read inside `tx` (none when it is not registered), so
/// a decision and the change it allows see the same registry.
pub(crate) async fn stage_of(tx: &mut citadel_store::AuditedTx, name: &str, version: i64) -> Result<Option<String>> {
    Ok(sqlx::query_scalar("SELECT stage FROM model_versions WHERE model_name = $1 AND version = $2")
        .bind(name)
        .bind(version)
        .fetch_optional(&mut *tx.conn())
        .await?)
}

#[allow(clippy::too_many_arguments)]
async fn set_stage(
    tx: &mut citadel_store::AuditedTx,
    name: &str,
    version: i64,
    from: &str,
    to: &str,
    by: &str,
    request: &str,
    at: Timestamp,
) -> Result<i64> {
    sqlx::query("UPDATE model_versions SET stage = $1 WHERE model_name = $2 AND version = $3")
        .bind(to)
        .bind(name)
        .bind(version)
        .execute(&mut *tx.conn())
        .await?;
    let row = sqlx::query("SELECT MAX(seq) AS s FROM stage_events WHERE model_name = $1")
        .bind(name)
        .fetch_one(&mut *tx.conn())
        .await?;
    let seq = row.try_get::<Option<i64>, _>("s")?.unwrap_or(0) + 1;
    sqlx::query(
        "INSERT INTO stage_events (model_name, seq, version, from_stage, to_stage, at, by_principal, request_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(name)
    .bind(seq)
    .bind(version)
    .bind(from)
    .bind(to)
    .bind(at.0)
    .bind(by)
    .bind(request)
    .execute(&mut *tx.conn())
    .await?;
    Ok(seq)
}

fn erased_training_data(model: &str, version: i64, to: &str, flags: &[serde_json::Value]) -> ControlError {
    ControlError::ErasedTrainingData {
        model: model.into(),
        version,
        to: to.into(),
        erasures: flags
            .iter()
            .map(|f| format!("{} on {}", f["erasure"].as_str().unwrap_or("?"), f["dataset"].as_str().unwrap_or("?")))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

//! Compliance evidence: everything `citadel report` states, gathered from
//! the workspace's own records (audit log, dataset versions and their
//! expectations, model versions, provenance, cards, gate verdicts, stage
//! events, grants, erasures, purges), each fact carrying the digest or the
//! audit record it rests on. Rendering (HTML) lives in the binary.
//!
//! One `report.generate` permission (auditor, admin) reads it all; the read
//! is audited once. The audit chain is verified first, and the result is the
//! report's first statement: a report on a tampered log says so.

use citadel_policy::{Resource, ResourceKind};
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use sqlx::Row;

use citadel_audit::{AuditRecord, Outcome};
use citadel_data::{Expectations, IngestReport, Processing};
use citadel_policy::{Action, Decision};
use citadel_store::AuditFilter;
use citadel_types::Timestamp;

use crate::{Caller, Result, Workspace};

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct AuditIntegrity {
    pub verified: bool,
    pub records: usize,
    pub checkpoints: usize,
    pub head_seq: i64,
    pub head_hash: String,
    pub key_id: String,
    pub public_key: String,
    pub problems: Vec<String>,
}

/// An audit record a statement rests on.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct EvidenceRecord {
    pub seq: i64,
    pub ts: String,
    pub actor: String,
    pub action: String,
    pub resource: String,
    pub outcome: String,
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ColumnRecord {
    pub name: String,
    pub classification: String,
    pub mask: Option<String>,
    pub pii: Vec<String>,
}

/// One dataset's record of processing (GDPR Art. 30(1)).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct DatasetRecord {
    pub name: String,
    pub versions: usize,
    pub latest_version: i64,
    pub latest_status: String,
    pub rows: i64,
    pub artifact: String,
    pub expectations_sha256: String,
    pub processing: Processing,
    pub columns: Vec<ColumnRecord>,
    /// Principals who may read the rows / the restricted columns (recipients).
    pub readers: Vec<String>,
    pub restricted_readers: Vec<String>,
    pub erasures: Vec<String>,
    pub purged_versions: usize,
    /// The audit record of the latest version's ingest.
    pub ingest_audit: Option<i64>,
    /// The audit records of its retention purges.
    pub purge_audits: Vec<i64>,
}

/// An erasure receipt and whether its signature verifies.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ReceiptCheck {
    pub id: String,
    pub dataset: String,
    pub status: String,
    pub verified: bool,
    pub audit_seq: i64,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct TrainingData {
    pub artifact: String,
    /// `dataset@version` when the artifact is a stored dataset version.
    pub dataset: Option<String>,
    pub purposes: Vec<String>,
    pub legal_basis: Option<String>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct StageChange {
    pub from: String,
    pub to: String,
    pub by: String,
    pub at: String,
    pub request: String,
}

/// One model version's technical documentation (EU AI Act Annex IV).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ModelRecord {
    pub name: String,
    pub version: i64,
    pub stage: String,
    pub artifact: String,
    pub registered_by: String,
    pub registered_at: String,
    pub training_data: Vec<TrainingData>,
    pub code_ref: Option<String>,
    pub parameters: serde_json::Value,
    pub builder: String,
    pub scan: serde_json::Value,
    /// The evaluation the training pipeline recorded (metrics, fairness,
    /// robustness, its gate's verdict with the policy's digest).
    pub evaluation: Option<serde_json::Value>,
    pub card_json: Option<String>,
    pub card_html: Option<String>,
    pub stage_changes: Vec<StageChange>,
    pub erasure_flags: Vec<serde_json::Value>,
    pub register_audit: Option<i64>,
    pub decision_audits: Vec<i64>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct GrantRecord {
    pub principal: String,
    pub kind: String,
    pub role: String,
    pub scope: String,
    pub disabled: bool,
}

/// Facts about the controls in place (for the NIST AI RMF map).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Controls {
    pub principals: usize,
    pub enabled_principals: usize,
    pub grants: usize,
    pub roles_in_use: Vec<String>,
    pub self_approval_allowed: bool,
    pub model_gate: String,
    pub model_gate_sha256: String,
    pub key_provider: String,
    pub storage: String,
    pub pipeline_runs: usize,
    pub deployments: usize,
    pub erasures_complete: usize,
    pub versions_purged: usize,
    pub datasets_with_retention: usize,
    pub datasets_with_purposes: usize,
    pub models_evaluated: usize,
    pub approvals: usize,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ComplianceEvidence {
    pub generated_at: String,
    pub generated_by: String,
    pub workspace: String,
    pub citadel_version: String,
    pub audit: AuditIntegrity,
    pub datasets: Vec<DatasetRecord>,
    pub models: Vec<ModelRecord>,
    pub erasures: Vec<ReceiptCheck>,
    pub access: Vec<GrantRecord>,
    pub controls: Controls,
    /// Every audit record a statement cites, by sequence number.
    pub records: BTreeMap<i64, EvidenceRecord>,
}

fn principal_names(rows: &[(citadel_store::Principal, Vec<citadel_store::GrantRow>)]) -> BTreeMap<String, String> {
    rows.iter().map(|(p, _)| (p.id.clone(), p.name.clone())).collect()
}

impl Workspace {
    /// Gathers the evidence (see the module docs). Needs `report.generate`.
    pub async fn compliance_evidence(&self, caller: &Caller) -> Result<ComplianceEvidence> {
        let permit =
            self.authorize(caller, Action::ReportGenerate, Resource::new(ResourceKind::Report, "compliance")).await?;
        let pool = self.db.pool();
        let all = citadel_store::audit_query(pool, &AuditFilter::default()).await?;
        let checkpoints = citadel_store::audit_checkpoints(pool).await?;
        let problems = citadel_audit::verify_chain(&all, &checkpoints, &self.signer()?.public_key());
        let head = all.last();
        let audit = AuditIntegrity {
            verified: problems.is_empty(),
            records: all.len(),
            checkpoints: checkpoints.len(),
            head_seq: head.map(|r| r.seq).unwrap_or(0),
            head_hash: head.map(|r| r.hash.to_hex()).unwrap_or_default(),
            key_id: self.signer()?.key_id(),
            public_key: hex::encode(self.signer()?.public_key()),
            problems: problems.iter().map(|p| p.to_string()).collect(),
        };
        let mut cited: BTreeSet<i64> = BTreeSet::new();
        let find = |action: &str, resource: &str, version: Option<i64>| -> Option<i64> {
            all.iter()
                .rev()
                .find(|r| {
                    r.event.action == action
                        && r.event.resource == resource
                        && r.event.outcome == Outcome::Success
                        && version.is_none_or(|v| r.event.details["version"].as_i64() == Some(v))
                })
                .map(|r| r.seq)
        };

        // ---- access
        let principals = citadel_store::principal_list(pool).await?;
        let mut with_grants = Vec::new();
        for p in principals {
            let g = citadel_store::grants_of(pool, &p.id).await?;
            with_grants.push((p, g));
        }
        let names = principal_names(&with_grants);
        let name_of = |id: &str| names.get(id).cloned().unwrap_or_else(|| id.to_string());
        let access: Vec<GrantRecord> = with_grants
            .iter()
            .flat_map(|(p, gs)| {
                gs.iter().map(|g| GrantRecord {
                    principal: p.name.clone(),
                    kind: p.kind.clone(),
                    role: g.role.clone(),
                    scope: g.scope.clone(),
                    disabled: p.disabled_at.is_some(),
                })
            })
            .collect();
        let may = |action: Action, resource: &Resource| -> Vec<String> {
            with_grants
                .iter()
                .filter(|(p, _)| p.disabled_at.is_none())
                .filter(|(_, gs)| {
                    let grants: Vec<citadel_policy::Grant> = gs
                        .iter()
                        .filter_map(|g| {
                            Some(citadel_policy::Grant {
                                role: g.role.parse().ok()?,
                                scope: citadel_policy::Scope::parse(&g.scope).ok()?,
                            })
                        })
                        .collect();
                    citadel_policy::decide(&grants, action, resource) != Decision::Deny
                })
                .map(|(p, _)| p.name.clone())
                .collect()
        };

        // ---- datasets
        let mut datasets = Vec::new();
        let names_rows = sqlx::query(
            "SELECT dataset_name FROM data_versions UNION SELECT dataset_name FROM data_purges ORDER BY dataset_name",
        )
        .fetch_all(pool)
        .await?;
        for r in names_rows {
            let name: String = r.try_get("dataset_name")?;
            let purges =
                sqlx::query("SELECT version, processing FROM data_purges WHERE dataset_name = $1 ORDER BY version")
                    .bind(&name)
                    .fetch_all(pool)
                    .await?;
            let purge_audits: Vec<i64> = purges
                .iter()
                .filter_map(|p| {
                    let v: i64 = p.try_get("version").ok()?;
                    find("dataset.purge", &format!("dataset:{name}@{v}"), None)
                })
                .collect();
            cited.extend(purge_audits.iter().copied());
            let versions = sqlx::query(
                "SELECT version, status, artifact_id, spec_digest, spec, rows_count, report FROM data_versions \
                 WHERE dataset_name = $1 ORDER BY version",
            )
            .bind(&name)
            .fetch_all(pool)
            .await?;
            let Some(latest) = versions.last() else {
                // Every version purged: the record of processing stays.
                let Some(last) = purges.last() else { continue };
                let processing: Processing =
                    serde_json::from_str(&last.try_get::<String, _>("processing")?).unwrap_or_default();
                let resource = Resource::new(ResourceKind::Dataset, &name);
                datasets.push(DatasetRecord {
                    readers: may(Action::DatasetRead, &resource),
                    restricted_readers: may(Action::DatasetReadRestricted, &resource),
                    name,
                    versions: 0,
                    latest_version: last.try_get("version")?,
                    latest_status: "purged".into(),
                    rows: 0,
                    artifact: String::new(),
                    expectations_sha256: String::new(),
                    processing,
                    columns: Vec::new(),
                    erasures: Vec::new(),
                    purged_versions: purges.len(),
                    ingest_audit: None,
                    purge_audits,
                });
                continue;
            };
            let version: i64 = latest.try_get("version")?;
            let processing =
                Expectations::parse(&latest.try_get::<String, _>("spec")?).map(|s| s.processing).unwrap_or_default();
            let report: Option<IngestReport> = serde_json::from_str(&latest.try_get::<String, _>("report")?).ok();
            let columns = report
                .map(|rep| {
                    rep.profile
                        .iter()
                        .map(|c| ColumnRecord {
                            name: c.name.clone(),
                            classification: c.source_classification.clone(),
                            mask: c.mask.clone(),
                            pii: c.pii.iter().map(|d| format!("{:?}", d.kind)).collect(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let erasures = sqlx::query("SELECT id, status FROM erasures WHERE dataset_name = $1 ORDER BY created_at")
                .bind(&name)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|e| Ok(format!("{} ({})", e.try_get::<String, _>("id")?, e.try_get::<String, _>("status")?)))
                .collect::<Result<Vec<_>>>()?;
            let purged = purges.len() as i64;
            let ingest_audit = find("dataset.write", &format!("dataset:{name}@{version}"), None);
            cited.extend(ingest_audit);
            let resource = Resource::new(ResourceKind::Dataset, &name);
            datasets.push(DatasetRecord {
                readers: may(Action::DatasetRead, &resource),
                restricted_readers: may(Action::DatasetReadRestricted, &resource),
                name,
                versions: versions.len(),
                latest_version: version,
                latest_status: latest.try_get("status")?,
                rows: latest.try_get("rows_count")?,
                artifact: latest.try_get("artifact_id")?,
                expectations_sha256: latest.try_get("spec_digest")?,
                processing,
                columns,
                erasures,
                purged_versions: purged as usize,
                ingest_audit,
                purge_audits,
            });
        }

        // ---- models
        let dataset_of_artifact: BTreeMap<String, (String, Processing)> = {
            let mut m = BTreeMap::new();
            for r in sqlx::query("SELECT dataset_name, version, artifact_id, spec FROM data_versions")
                .fetch_all(pool)
                .await?
            {
                let p = Expectations::parse(&r.try_get::<String, _>("spec")?).map(|s| s.processing).unwrap_or_default();
                let (n, v): (String, i64) = (r.try_get("dataset_name")?, r.try_get("version")?);
                m.insert(r.try_get("artifact_id")?, (format!("{n}@{v}"), p));
            }
            // A purged version is still what a model was trained on; an
            // erased one is named by the receipt's old artifact.
            for r in sqlx::query("SELECT dataset_name, version, artifact_id, processing FROM data_purges")
                .fetch_all(pool)
                .await?
            {
                let p: Processing = serde_json::from_str(&r.try_get::<String, _>("processing")?).unwrap_or_default();
                let (n, v): (String, i64) = (r.try_get("dataset_name")?, r.try_get("version")?);
                m.entry(r.try_get("artifact_id")?).or_insert((format!("{n}@{v} (purged)"), p));
            }
            for r in sqlx::query("SELECT receipt FROM erasures").fetch_all(pool).await? {
                let receipt: serde_json::Value =
                    serde_json::from_str(&r.try_get::<String, _>("receipt")?).unwrap_or_default();
                let dataset = receipt["dataset"].as_str().unwrap_or_default().to_string();
                let id = receipt["id"].as_str().unwrap_or_default().to_string();
                for v in receipt["versions"].as_array().cloned().unwrap_or_default() {
                    let (Some(old), Some(version), Some(new)) =
                        (v["old_artifact"].as_str(), v["version"].as_i64(), v["new_artifact"].as_str())
                    else {
                        continue;
                    };
                    let p = m.get(new).map(|(_, p)| p.clone()).unwrap_or_default();
                    m.entry(old.to_string())
                        .or_insert((format!("{dataset}@{version} as it was before erasure {id}"), p));
                }
            }
            m
        };
        let mut models = Vec::new();
        let mut approvals = 0;
        for r in sqlx::query(
            "SELECT model_name, version, stage, artifact_id, scan, provenance, created_by, created_at FROM model_versions \
             ORDER BY model_name, version",
        )
        .fetch_all(pool)
        .await?
        {
            let (name, version): (String, i64) = (r.try_get("model_name")?, r.try_get("version")?);
            let provenance: serde_json::Value =
                serde_json::from_str(&r.try_get::<String, _>("provenance")?).unwrap_or_default();
            let build = &provenance["predicate"]["buildDefinition"];
            let training_data = build["resolvedDependencies"]
                .as_array()
                .map(|deps| {
                    deps.iter()
                        .map(|d| {
                            let artifact = d["digest"]["sha256"].as_str().unwrap_or_default().to_string();
                            let ds = dataset_of_artifact.get(&artifact);
                            TrainingData {
                                dataset: ds.map(|(label, _)| label.clone()),
                                purposes: ds.map(|(_, p)| p.purposes.clone()).unwrap_or_default(),
                                legal_basis: ds.and_then(|(_, p)| p.legal_basis.clone()),
                                artifact,
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            let card = sqlx::query(
                "SELECT evaluation, card_json_artifact, card_html_artifact FROM model_cards WHERE model_name = $1 AND version = $2",
            )
            .bind(&name)
            .bind(version)
            .fetch_optional(pool)
            .await?;
            let stage_changes: Vec<StageChange> = sqlx::query(
                "SELECT from_stage, to_stage, at, by_principal, request_id FROM stage_events \
                 WHERE model_name = $1 AND version = $2 ORDER BY seq",
            )
            .bind(&name)
            .bind(version)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|e| {
                Ok(StageChange {
                    from: e.try_get("from_stage")?,
                    to: e.try_get("to_stage")?,
                    by: name_of(&e.try_get::<String, _>("by_principal")?),
                    at: Timestamp(e.try_get("at")?).to_rfc3339(),
                    request: e.try_get("request_id")?,
                })
            })
            .collect::<Result<_>>()?;
            approvals += stage_changes.len();
            let resource = Resource::new(ResourceKind::Model, &name);
            let register_audit = find("model.register", resource.as_str(), Some(version));
            let decision_audits: Vec<i64> = all
                .iter()
                .filter(|a| {
                    matches!(a.event.action.as_str(), "model.approve" | "model.retire" | "model.rollback")
                        && a.event.resource == resource.as_str()
                        && a.event.outcome == Outcome::Success
                        && a.event.details["version"].as_i64() == Some(version)
                })
                .map(|a| a.seq)
                .collect();
            cited.extend(register_audit);
            cited.extend(decision_audits.iter().copied());
            models.push(ModelRecord {
                stage: r.try_get("stage")?,
                artifact: r.try_get("artifact_id")?,
                registered_by: name_of(&r.try_get::<String, _>("created_by")?),
                registered_at: Timestamp(r.try_get("created_at")?).to_rfc3339(),
                training_data,
                code_ref: build["externalParameters"]["code_ref"].as_str().map(str::to_string),
                parameters: build["externalParameters"]["parameters"].clone(),
                builder: provenance["predicate"]["runDetails"]["builder"]["id"].as_str().unwrap_or_default().to_string(),
                scan: serde_json::from_str(&r.try_get::<String, _>("scan")?).unwrap_or_default(),
                evaluation: card
                    .as_ref()
                    .and_then(|c| c.try_get::<String, _>("evaluation").ok())
                    .and_then(|e| serde_json::from_str(&e).ok()),
                card_json: card.as_ref().and_then(|c| c.try_get("card_json_artifact").ok()),
                card_html: card.as_ref().and_then(|c| c.try_get("card_html_artifact").ok()),
                stage_changes,
                erasure_flags: crate::subject::model_erasure_flags(pool, &name, version).await?,
                register_audit,
                decision_audits,
                name,
                version,
            });
        }

        // ---- controls
        let (gate_name, gate_text) =
            match std::fs::read_to_string(self.config.workspace.join(crate::registry::GATE_POLICY_FILE)) {
                Ok(t) => (crate::registry::GATE_POLICY_FILE.to_string(), t),
                Err(_) => ("built-in model-gate.rego".to_string(), citadel_policy::DEFAULT_MODEL_GATE.to_string()),
            };
        let count = |sql: &'static str| async move {
            Ok::<usize, crate::ControlError>(sqlx::query(sql).fetch_one(pool).await?.try_get::<i64, _>("n")? as usize)
        };
        let mut controls = Controls {
            principals: with_grants.len(),
            enabled_principals: with_grants.iter().filter(|(p, _)| p.disabled_at.is_none()).count(),
            grants: access.len(),
            roles_in_use: access.iter().map(|g| g.role.clone()).collect::<BTreeSet<_>>().into_iter().collect(),
            self_approval_allowed: self.config.allow_self_approval,
            model_gate_sha256: citadel_types::Digest::of(gate_text.as_bytes()).to_hex(),
            model_gate: gate_name,
            key_provider: self.config.key_provider.clone(),
            storage: if self.config.storage_url.starts_with("s3://") { "S3".into() } else { "local directory".into() },
            pipeline_runs: count("SELECT COUNT(*) AS n FROM pipeline_runs").await?,
            deployments: count("SELECT COUNT(*) AS n FROM deployments").await?,
            erasures_complete: count("SELECT COUNT(*) AS n FROM erasures WHERE status = 'complete'").await?,
            versions_purged: count("SELECT COUNT(*) AS n FROM data_purges").await?,
            datasets_with_retention: datasets.iter().filter(|d| d.processing.retention_days.is_some()).count(),
            datasets_with_purposes: datasets.iter().filter(|d| !d.processing.purposes.is_empty()).count(),
            models_evaluated: models.iter().filter(|m| m.evaluation.is_some()).count(),
            approvals,
        };
        // ---- erasure receipts, and records the log should hold
        let mut erasures = Vec::new();
        let mut integrity = Vec::new();
        for r in sqlx::query("SELECT id, dataset_name, status, receipt, signature FROM erasures ORDER BY created_at")
            .fetch_all(pool)
            .await?
        {
            let id: String = r.try_get("id")?;
            let signed =
                self.signed(r.try_get("status")?, &r.try_get::<String, _>("receipt")?, r.try_get("signature")?)?;
            let seq = signed.receipt.audit_seq;
            if signed.status == "complete" && !signed.verified {
                integrity.push(format!("the receipt of {id} does not verify: it was changed after it was signed"));
            }
            match all.iter().find(|a| a.seq == seq) {
                Some(a) if a.hash.to_hex() == signed.receipt.audit_hash => {
                    cited.insert(seq);
                }
                Some(_) => integrity.push(format!("the receipt of {id} cites audit #{seq}, which the log holds with another hash")),
                None if seq > 0 => integrity.push(format!(
                    "the receipt of {id} cites audit #{seq}, which the log no longer holds (head #{}): records were cut from its end",
                    audit.head_seq
                )),
                None => {}
            }
            erasures.push(ReceiptCheck {
                id,
                dataset: r.try_get("dataset_name")?,
                status: signed.status,
                verified: signed.verified,
                audit_seq: seq,
            });
        }
        for d in &datasets {
            if d.versions > 0 && d.ingest_audit.is_none() {
                integrity.push(format!(
                    "{}@{} is stored but the log holds no record of its ingest: records were removed",
                    d.name, d.latest_version
                ));
            }
        }
        for m in &models {
            if m.register_audit.is_none() {
                integrity.push(format!(
                    "model {}@{} is registered but the log holds no record of it: records were removed",
                    m.name, m.version
                ));
            }
        }
        controls.erasures_complete = erasures.iter().filter(|e| e.status == "complete" && e.verified).count();
        let mut audit = audit;
        if !integrity.is_empty() {
            audit.verified = false;
            audit.problems.extend(integrity);
        }
        let records: BTreeMap<i64, EvidenceRecord> = all
            .iter()
            .filter(|r| cited.contains(&r.seq))
            .map(|r: &AuditRecord| {
                (
                    r.seq,
                    EvidenceRecord {
                        seq: r.seq,
                        ts: r.event.ts.to_rfc3339(),
                        actor: name_of(&r.event.actor),
                        action: r.event.action.clone(),
                        resource: r.event.resource.clone(),
                        outcome: format!("{:?}", r.event.outcome).to_lowercase(),
                        hash: r.hash.to_hex(),
                    },
                )
            })
            .collect();
        let evidence = ComplianceEvidence {
            generated_at: Timestamp::now().to_rfc3339(),
            generated_by: caller.name().to_string(),
            workspace: self.config.workspace.display().to_string(),
            citadel_version: env!("CARGO_PKG_VERSION").into(),
            audit,
            datasets,
            models,
            erasures,
            access,
            controls,
            records,
        };
        self.record(permit, serde_json::json!({"audit_verified": evidence.audit.verified, "datasets": evidence.datasets.len(), "models": evidence.models.len(), "audit_head": evidence.audit.head_hash}))
            .await?;
        Ok(evidence)
    }
}

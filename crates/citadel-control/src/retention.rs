//! Storage and purpose limitation (GDPR Art. 5(1)(e) and 5(1)(b)), from
//! the `[processing]` section of the expectations each version was
//! ingested with.
//!
//! Decisions:
//! - A version's retention is the one declared when it was ingested (its
//!   stored expectations), counted from its ingest. `citadel gc` purges
//!   the versions past it: one audited transaction each (the version's row
//!   moves to `data_purges`, its artifact is forgotten when nothing else
//!   stores the same bytes, pipeline cache entries naming it are dropped),
//!   then the store's gc deletes the chunks. The version number stays
//!   taken. Purging is part of the `store.gc` duty: retention is declared
//!   with the data, and gc carries it out.
//! - Purpose: a dataset that declares purposes is used only by a pipeline
//!   that declares one of them; a pipeline that declares a purpose uses
//!   only a dataset that lists it. A pipeline and a dataset that both
//!   declare none work as before.

use serde::Serialize;
use sqlx::Row;

use citadel_data::{Expectations, Processing};
use citadel_types::{ArtifactId, Timestamp};

use crate::{ControlError, Permit, Result, Workspace};
use citadel_policy::Resource;

/// A version `gc` purged.
#[derive(Debug, Clone, Serialize)]
pub struct PurgedVersion {
    pub dataset: String,
    pub version: i64,
    pub artifact: String,
    pub ingested_at: String,
    pub retention_days: u64,
    /// Why the stored bytes were kept (something else stores them), if they were.
    pub artifact_kept_for: Vec<String>,
}

/// Whether data declared with `processing` may be used for `purpose`: it
/// must be among the declared purposes; neither declaring any is allowed.
pub(crate) fn purpose_allowed(processing: &Processing, dataset: &str, purpose: Option<&str>) -> Result<()> {
    match (purpose, processing.purposes.is_empty()) {
        (None, true) => Ok(()),
        (Some(want), _) if processing.purposes.iter().any(|x| x == want) => Ok(()),
        (purpose, _) => Err(ControlError::PurposeNotAllowed {
            dataset: dataset.to_string(),
            purpose: purpose.map(str::to_string),
            allowed: processing.purposes.clone(),
        }),
    }
}

impl Workspace {
    /// The `[processing]` facts a version was ingested with.
    pub(crate) async fn version_processing(&self, dataset: &str, version: i64) -> Result<Processing> {
        let row = sqlx::query("SELECT spec FROM data_versions WHERE dataset_name = $1 AND version = $2")
            .bind(dataset)
            .bind(version)
            .fetch_optional(self.db.pool())
            .await?
            .ok_or_else(|| ControlError::NotFound(format!("dataset {dataset} version {version}")))?;
        let spec = Expectations::parse(&row.try_get::<String, _>("spec")?)?;
        Ok(spec.processing)
    }

    /// Refuses a use of `dataset@version` for `purpose` that its declared
    /// purposes do not cover (GDPR Art. 5(1)(b)).
    pub(crate) async fn check_purpose(&self, dataset: &str, version: i64, purpose: Option<&str>) -> Result<()> {
        let p = self.version_processing(dataset, version).await?;
        purpose_allowed(&p, &format!("{dataset}@{version}"), purpose)
    }

    /// Purges every dataset version past its declared retention (under the
    /// caller's `store.gc`, already authorized). Each purge is audited.
    pub(crate) async fn purge_expired(&self, permit: &Permit) -> Result<Vec<PurgedVersion>> {
        let now = Timestamp::now();
        let rows = sqlx::query("SELECT dataset_name, version, artifact_id, spec, created_at FROM data_versions")
            .fetch_all(self.db.pool())
            .await?;
        let mut purged = Vec::new();
        for r in rows {
            let spec: String = r.try_get("spec")?;
            // A stored spec that no longer parses keeps its data: fail safe.
            let Some(processing) = Expectations::parse(&spec).ok().map(|s| s.processing) else { continue };
            let Some(days) = processing.retention_days else { continue };
            let created = Timestamp(r.try_get("created_at")?);
            if created.plus_secs(days.saturating_mul(86_400).min(i64::MAX as u64) as i64).0 > now.0 {
                continue;
            }
            let (dataset, version, artifact): (String, i64, String) =
                (r.try_get("dataset_name")?, r.try_get("version")?, r.try_get("artifact_id")?);
            let mut tx = self.db.begin_audited().await?;
            let gone =
                sqlx::query("DELETE FROM data_versions WHERE dataset_name = $1 AND version = $2 AND artifact_id = $3")
                    .bind(&dataset)
                    .bind(version)
                    .bind(&artifact)
                    .execute(&mut *tx.conn())
                    .await?;
            if gone.rows_affected() != 1 {
                continue; // changed meanwhile (an erasure): the next gc sees it
            }
            let reason = format!("retention of {days} day(s) from ingest ran out");
            sqlx::query(
                "INSERT INTO data_purges (dataset_name, version, artifact_id, created_at, purged_at, purged_by, reason, processing) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&dataset)
            .bind(version)
            .bind(&artifact)
            .bind(created.0)
            .bind(now.0)
            .bind(permit.actor())
            .bind(&reason)
            .bind(serde_json::to_string(&processing).unwrap_or_else(|_| "{}".into()))
            .execute(&mut *tx.conn())
            .await?;
            // The version's own name goes; the bytes go unless something
            // else stores them (another version, a model, another name).
            sqlx::query("DELETE FROM artifact_names WHERE artifact_id = $1 AND name = $2")
                .bind(&artifact)
                .bind(format!("datasets/{dataset}@{version}"))
                .execute(&mut *tx.conn())
                .await?;
            let mut kept_by = Vec::new();
            for (what, sql) in [
                ("another dataset version", "SELECT 1 AS one FROM data_versions WHERE artifact_id = $1"),
                ("a model version", "SELECT 1 AS one FROM model_versions WHERE artifact_id = $1"),
                ("another artifact name", "SELECT 1 AS one FROM artifact_names WHERE artifact_id = $1"),
            ] {
                if sqlx::query(sql).bind(&artifact).fetch_optional(&mut *tx.conn()).await?.is_some() {
                    kept_by.push(what);
                }
            }
            if kept_by.is_empty() {
                let id: ArtifactId =
                    artifact.parse().map_err(|_| ControlError::Invalid(format!("stored artifact id {artifact:?}")))?;
                self.store()?.forget(&mut tx, &id).await?;
            }
            crate::pipeline::drop_cache_of(tx.conn(), &artifact).await?;
            tx.commit(permit.effect("dataset.purge", &Resource::dataset_version(&dataset, version), serde_json::json!({"version": version, "artifact": artifact, "ingested_at": created.to_rfc3339(), "retention_days": days, "reason": reason, "artifact_kept_for": kept_by})))
            .await?;
            purged.push(PurgedVersion {
                dataset,
                version,
                artifact,
                ingested_at: created.to_rfc3339(),
                retention_days: days,
                artifact_kept_for: kept_by.iter().map(|s| s.to_string()).collect(),
            });
        }
        Ok(purged)
    }
}

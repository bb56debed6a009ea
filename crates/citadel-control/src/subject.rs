//! Data-subject rights: erasure (GDPR Art. 17, CCPA §1798.105) and access
//! and portability (Art. 15, 20), each a `privacy-officer` duty.
//!
//! Decisions:
//! - **Rewrite and delete, not key destruction.** Chunks are deduplicated
//!   across versions and datasets under one data key, so destroying a key
//!   would destroy data that must be kept. Each version that holds the
//!   subject is rewritten without the rows (row group by row group, so the
//!   untouched groups deduplicate and only the changed ones are new bytes),
//!   replaces the old artifact in the same version number as its next
//!   `revision` (so `NAME@3`, "latest", diffs and drift baselines keep their
//!   meaning), and the old artifact is dropped. Chunks no kept artifact
//!   references are then deleted from the backend at once (a gc with no
//!   grace period, under the store's gc lease so no put can deduplicate
//!   against a chunk being deleted).
//! - **Never half erased with a receipt that says done.** Phase 1 writes the
//!   new revisions' objects (a crash leaves orphans only). Phase 2 is one
//!   audited transaction: new revisions, old artifacts forgotten, models
//!   flagged, the erasure recorded as `shredding`. Phase 3 deletes the
//!   objects and only then signs the receipt and marks it `complete`. A
//!   crash after phase 2 is finished by the next `subject` command or
//!   `citadel gc`.
//! - **The receipt holds no personal data**: the subject is named by keyed
//!   hashes of its conditions, the versions by artifact digests. It is signed
//!   with the workspace's audit key (Ed25519) over its canonical JSON.
//! - **Models** whose lineage reaches a dropped artifact are flagged: the
//!   registry refuses to move them to staging or production (the gate's
//!   input lists the erasures too), until a retrained version replaces them.
//! - The subject's source files outside Citadel are not touched: a pipeline
//!   that ingests the same source again brings the rows back, and the
//!   receipt says so.

use citadel_policy::{Resource, ResourceKind};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use arrow_array::{Array, Float64Array, Int64Array, RecordBatch, StringArray};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use citadel_audit::Outcome;
use citadel_data::erase::{self, Matcher, NumberFormat, Subject};
use citadel_data::{Expectations, IngestReport};
use citadel_policy::Action;
use citadel_store::LineageEdge;
use citadel_types::{ArtifactId, Name, Timestamp};

use crate::data::{WorkDir, join_err};
use crate::{Caller, ControlError, Permit, Result, Workspace, event};

/// The format tag signed into every receipt.
pub const RECEIPT_FORMAT: &str = "citadel-erasure-receipt/v1";
const SIGNING_CONTEXT: &[u8] = b"citadel erasure receipt v1\n";

/// One dataset version an erasure rewrote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErasedVersion {
    pub version: i64,
    /// The revision the version now has (1 at ingest, +1 per erasure).
    pub revision: i64,
    pub status: String,
    pub old_artifact: String,
    pub new_artifact: String,
    pub rows_before: u64,
    pub rows_removed: u64,
    pub row_groups: u64,
    pub row_groups_changed: u64,
    /// Bytes the new revision stored (after deduplication and compression).
    pub bytes_written: u64,
    /// Bytes of the whole version (what rewriting it in full would store).
    pub bytes_total: u64,
}

/// What an erasure did, without the subject's values. Signed once complete.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErasureReceipt {
    pub format: String,
    pub id: String,
    pub dataset: String,
    pub requested_by: String,
    pub reason: String,
    /// Keyed hashes (HMAC-SHA-256 under the workspace's pseudonym key) of
    /// each subject's conditions, so a later request for the same subject
    /// can be recognised without keeping who it was.
    pub subjects: Vec<String>,
    pub columns: Vec<String>,
    pub method: String,
    pub versions: Vec<ErasedVersion>,
    /// Versions searched in all (those rewritten are in `versions`).
    pub versions_searched: usize,
    /// Versions that could not hold a subject, and why (a column it is
    /// named by is missing there, or its value cannot be of that column's type).
    pub versions_skipped: Vec<SkippedVersion>,
    pub models_flagged: Vec<String>,
    /// Pipeline cache entries dropped because they pointed at erased data.
    pub cache_entries_dropped: u64,
    /// Chunks of the dropped artifacts that another artifact still holds
    /// (the same bytes stored elsewhere), with those artifacts. Empty when
    /// every byte of the erased versions left the store.
    pub chunks_kept: Vec<KeptChunks>,
    pub chunks_deleted: u64,
    pub objects_deleted: u64,
    pub bytes_freed: u64,
    pub started_at: String,
    pub committed_at: String,
    pub completed_at: Option<String>,
    /// Sequence number and hash of the audit record of the commit.
    pub audit_seq: i64,
    pub audit_hash: String,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SkippedVersion {
    pub version: i64,
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeptChunks {
    pub chunks: u64,
    pub held_by: Vec<String>,
}

/// A receipt as stored, with its signature and whether it verifies.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedReceipt {
    pub status: String,
    pub receipt: ErasureReceipt,
    /// Ed25519 over `"citadel erasure receipt v1\n" ‖ canonical JSON`, hex.
    pub signature: Option<String>,
    pub public_key: String,
    pub key_id: String,
    pub verified: bool,
}

/// One stored row of a subject (Art. 15/20), as stored: pseudonyms stay
/// pseudonyms, tokens are reversed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubjectRow {
    pub dataset: String,
    pub version: i64,
    pub row: u64,
    pub values: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubjectExport {
    pub dataset: String,
    pub versions_searched: usize,
    pub rows: Vec<SubjectRow>,
    /// Columns stored as keyed pseudonyms: the original values are not held.
    pub pseudonymized: Vec<String>,
    /// Columns the source had but Citadel did not store (dropped masks).
    pub not_stored: Vec<String>,
}

/// What searching one version found.
enum Searched<'a> {
    Skipped(SkippedVersion),
    Absent,
    Found(&'a StoredVersion, erase::EraseStats, Box<IngestReport>, PathBuf),
}

struct StoredVersion {
    version: i64,
    revision: i64,
    status: String,
    artifact_id: String,
    report: IngestReport,
    spec: String,
}

/// Crash simulation for the crash-safety tests, in debug builds only:
/// `CITADEL_FAILPOINT=NAME` aborts the process at the point of that name.
fn failpoint(name: &str) {
    if cfg!(debug_assertions) && std::env::var("CITADEL_FAILPOINT").as_deref() == Ok(name) {
        std::process::abort();
    }
}

fn invalid(msg: impl Into<String>) -> ControlError {
    ControlError::Invalid(msg.into())
}

fn canonical(receipt: &ErasureReceipt) -> Vec<u8> {
    // serde_json writes struct fields in declaration order: stable.
    let mut m = SIGNING_CONTEXT.to_vec();
    m.extend_from_slice(&serde_json::to_vec(receipt).unwrap_or_default());
    m
}

impl Workspace {
    /// `requested`, refused above the workspace's `subject.max_rows`.
    fn subject_row_cap(&self, requested: u64) -> Result<u64> {
        let cap = self.config.subject_max_rows.max(1) as u64;
        if requested > cap {
            return Err(invalid(format!(
                "--max-rows {requested} is above this workspace's limit subject.max_rows = {cap} (its owner sets it in citadel.toml)"
            )));
        }
        Ok(requested)
    }

    /// Who may see erasures of `dataset`: privacy officers, and auditors (receipts are evidence).
    fn may_see_erasures(caller: &Caller, dataset: &str) -> bool {
        caller.holds(Action::SubjectErase, &Resource::dataset(dataset))
            || caller.holds(Action::AuditRead, &Resource::new(ResourceKind::Audit, "log"))
    }

    async fn stored_versions(&self, name: &str) -> Result<Vec<StoredVersion>> {
        let rows = sqlx::query(
            "SELECT version, revision, status, artifact_id, report, spec FROM data_versions \
             WHERE dataset_name = $1 ORDER BY version",
        )
        .bind(name)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let version: i64 = r.try_get("version")?;
                Ok(StoredVersion {
                    version,
                    revision: r.try_get("revision")?,
                    status: r.try_get("status")?,
                    artifact_id: r.try_get("artifact_id")?,
                    report: serde_json::from_str(&r.try_get::<String, _>("report")?)
                        .map_err(|e| invalid(format!("stored report of {name}@{version} is unreadable: {e}")))?,
                    spec: r.try_get("spec")?,
                })
            })
            .collect()
    }

    async fn restore_artifact(&self, id: &str, into: PathBuf) -> Result<PathBuf> {
        let info = self.store()?.resolve(id).await?;
        self.store()?.restore(&info, &into, None).await?;
        Ok(into)
    }

    /// Restores version `v` under `work` and builds its matcher from the
    /// expectations it was ingested with (number locale). When no subject
    /// can be in it, the decrypted copy is deleted again and the reasons
    /// are returned instead.
    async fn restore_and_match(
        &self,
        v: &StoredVersion,
        work: &Path,
        subjects: &[Subject],
        protector: &citadel_crypto::DataProtector,
    ) -> Result<(PathBuf, Expectations, std::result::Result<Matcher, Vec<erase::Skipped>>)> {
        let dir = self.restore_artifact(&v.artifact_id, work.join(format!("v{}", v.version))).await?;
        let schema = erase::stored_schema(&dir)?;
        let spec = Expectations::parse(&v.spec).unwrap_or_default();
        let numbers = NumberFormat { decimal: spec.dataset.decimal.clone(), thousands: spec.dataset.thousands.clone() };
        let matcher = Matcher::new(&v.report, &schema, subjects, protector, &numbers)?;
        if matcher.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok((dir, spec, matcher))
    }

    /// Erases every row of `subjects` from every version of `dataset`.
    ///
    /// Errors: `NoSubjectRows` (nothing matched; nothing changed),
    /// `Data(NotAKey)` (a condition on a lossy-masked column), `Conflict`
    /// (the old artifact is also another dataset's version, or the dataset
    /// changed meanwhile), and any store error (nothing is committed then).
    ///
    /// `max_rows` bounds the rows one request may erase (a condition such
    /// as `country=US` names a population, not a person).
    pub async fn subject_erase(
        &self,
        caller: &Caller,
        dataset: &str,
        subjects: Vec<Subject>,
        reason: &str,
        max_rows: u64,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<SignedReceipt> {
        let name = Name::parse(dataset)?;
        let resource = Resource::new(ResourceKind::Dataset, &name);
        let permit = self.authorize(caller, Action::SubjectErase, resource.clone()).await?;
        let columns = Subject::columns(&subjects);
        match self.subject_erase_inner(&permit, caller, name, subjects, reason, max_rows, progress).await {
            Ok(id) => {
                // Committed and audited: what follows finishes the job.
                failpoint("erasure-committed");
                progress("deleting the old objects");
                self.complete_erasures(caller).await?;
                self.stored_receipt(&id).await
            }
            Err(e) => {
                // Every version was decrypted and searched: the attempt is on record.
                self.db
                    .append_audit(permit.step(
                        Action::SubjectErase.as_str(),
                        Outcome::Failure,
                        serde_json::json!({"columns": columns, "error": failure_kind(&e)}),
                    ))
                    .await?;
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn subject_erase_inner(
        &self,
        permit: &Permit,
        caller: &Caller,
        name: Name,
        subjects: Vec<Subject>,
        reason: &str,
        max_rows: u64,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<String> {
        check_reason(reason)?;
        let max_rows = self.subject_row_cap(max_rows)?;
        self.complete_erasures(caller).await?;
        let started = Timestamp::now();
        let protector = self.data_protector().await?;
        let versions = self.stored_versions(name.as_str()).await?;
        if versions.is_empty() {
            return Err(ControlError::NotFound(format!("dataset {name}")));
        }
        // Shared with the blocking jobs: the directory (decrypted data) goes
        // only when the last of them is done, even if this future is dropped.
        let work = std::sync::Arc::new(WorkDir::new(&self.config.workspace)?);
        let id = citadel_types::random_id("erasure-");
        let mut affected = Vec::new();
        let mut skipped_versions = Vec::new();
        let mut rows_matched = 0u64;
        unknown_columns(&versions, &subjects)?;
        // Two versions at a time (restore, search, rewrite, re-profile):
        // each is one core's work.
        let key = protector.row_hash_key();
        let jobs = versions.iter().map(|v| {
            let (work, subjects, protector, id, name) = (&work, &subjects, &protector, &id, &name);
            async move {
                progress(&format!("searching {name}@{} ({} rows)", v.version, v.report.rows));
                let (dir, spec, matcher) = self.restore_and_match(v, &work.0, subjects, protector).await?;
                let matcher = match matcher {
                    Ok(m) => m,
                    Err(skipped) => {
                        return Ok::<_, ControlError>(Searched::Skipped(SkippedVersion {
                            version: v.version,
                            reasons: skipped.iter().map(|s| format!("{}: {}", s.column, s.reason)).collect(),
                        }));
                    }
                };
                let sample_rows = spec.drift.sample_rows;
                let out = work.0.join(format!("v{}-erased", v.version));
                let old_report = v.report.clone();
                let note = format!(
                    "erasure {id} removed a data subject's rows (revision {}); the profile describes the rows kept",
                    v.revision + 1
                );
                let keep_alive = std::sync::Arc::clone(work);
                let (stats, report, out) = tokio::task::spawn_blocking(move || {
                    let _work = keep_alive;
                    let stats = erase::erase(&dir, &out, &matcher, key, sample_rows);
                    // The decrypted copy goes as soon as it is read.
                    let _ = std::fs::remove_dir_all(&dir);
                    let stats = stats?;
                    let report = if stats.rows_removed > 0 {
                        Some(erase::reprofile(&old_report, &out, key, note)?)
                    } else {
                        None
                    };
                    if report.is_none() {
                        let _ = std::fs::remove_dir_all(&out);
                    }
                    Ok::<_, citadel_data::DataError>((stats, report, out))
                })
                .await
                .map_err(join_err)??;
                Ok(match report {
                    Some(report) => Searched::Found(v, stats, Box::new(report), out),
                    None => Searched::Absent,
                })
            }
        });
        let mut results = futures::stream::iter(jobs).buffered(2);
        // On an error the jobs in flight are still awaited, so none writes
        // into the work directory after it is gone.
        let mut first_error = None;
        while let Some(r) = results.next().await {
            match r {
                Err(e) => {
                    first_error.get_or_insert(e);
                }
                Ok(Searched::Skipped(s)) => skipped_versions.push(s),
                Ok(Searched::Found(v, stats, report, out)) => {
                    rows_matched += stats.rows_removed;
                    affected.push((v, stats, *report, out));
                }
                Ok(Searched::Absent) => {}
            }
        }
        drop(results);
        if let Some(e) = first_error {
            return Err(e);
        }
        if affected.is_empty() {
            return Err(ControlError::NoSubjectRows { dataset: name.to_string(), versions: versions.len() });
        }
        if rows_matched > max_rows {
            return Err(ControlError::SubjectTooBroad { dataset: name.to_string(), rows: rows_matched, max: max_rows });
        }
        // An artifact shared with another dataset cannot be dropped here.
        for (v, _, _, _) in &affected {
            let other = sqlx::query(
                "SELECT dataset_name, version FROM data_versions WHERE artifact_id = $1 AND dataset_name <> $2",
            )
            .bind(&v.artifact_id)
            .bind(name.as_str())
            .fetch_optional(self.db.pool())
            .await?;
            if let Some(o) = other {
                return Err(ControlError::Conflict(format!(
                    "{name}@{} is stored as the same artifact as {}@{}; erase the subject from both (run the erasure on {} too), nothing was changed",
                    v.version,
                    o.try_get::<String, _>("dataset_name")?,
                    o.try_get::<i64, _>("version")?,
                    o.try_get::<String, _>("dataset_name")?
                )));
            }
        }
        // Models trained on what is dropped.
        let mut flagged = BTreeSet::new();
        for (v, _, _, _) in &affected {
            let mut queue = VecDeque::from([format!("artifact:{}", v.artifact_id)]);
            let mut seen = BTreeSet::new();
            while let Some(node) = queue.pop_front() {
                for e in citadel_store::lineage_edges(self.db.pool(), &node, false).await? {
                    if e.child.starts_with("model:") {
                        flagged.insert(e.child.clone());
                    }
                    if seen.insert(e.child.clone()) && seen.len() < 10_000 && e.child.starts_with("artifact:") {
                        queue.push_back(e.child);
                    }
                }
            }
        }

        progress(&format!("storing {} rewritten version(s)", affected.len()));
        let mut prepared = Vec::new();
        for (_, _, _, out) in &affected {
            match self.store()?.prepare_put(out, None).await {
                Ok(p) => prepared.push(p),
                Err(e) => {
                    for p in prepared {
                        self.store()?.release(p).await;
                    }
                    return Err(e.into());
                }
            }
        }
        let subject_keys: Vec<String> = subjects
            .iter()
            .map(|s| {
                let mut c: Vec<String> =
                    s.conditions.iter().map(|c| format!("{}\u{1f}{}", c.column, c.value)).collect();
                c.sort();
                protector.pseudonymize(&format!("citadel-subject-v1\u{1e}{}", c.join("\u{1e}")))
            })
            .collect();
        let mut receipt = ErasureReceipt {
            format: RECEIPT_FORMAT.into(),
            id: id.clone(),
            dataset: name.to_string(),
            requested_by: caller.name().to_string(),
            reason: reason.to_string(),
            subjects: subject_keys,
            columns: Subject::columns(&subjects),
            method: "rewrite-and-delete: each version holding the subject is rewritten without its rows as the version's next revision; the old artifacts are dropped and every chunk no kept artifact references is deleted from the object store".into(),
            versions: Vec::new(),
            versions_searched: versions.len(),
            versions_skipped: skipped_versions,
            models_flagged: flagged.iter().cloned().collect(),
            cache_entries_dropped: 0,
            chunks_kept: Vec::new(),
            chunks_deleted: 0,
            objects_deleted: 0,
            bytes_freed: 0,
            started_at: started.to_rfc3339(),
            committed_at: String::new(),
            completed_at: None,
            audit_seq: 0,
            audit_hash: String::new(),
            notes: vec![
                "the rewritten versions' profiles are recomputed from the rows kept; their drift, duplicate and k-anonymity results stay as ingested (rates and counts only)".into(),
                "source files outside Citadel are not changed: ingesting them again brings the rows back".into(),
            ],
        };
        for ((v, stats, _, _), p) in affected.iter().zip(&prepared) {
            receipt.versions.push(ErasedVersion {
                version: v.version,
                revision: v.revision + 1,
                status: v.status.clone(),
                old_artifact: v.artifact_id.clone(),
                new_artifact: p.id.to_string(),
                rows_before: stats.rows_before,
                rows_removed: stats.rows_removed,
                row_groups: stats.row_groups,
                row_groups_changed: stats.row_groups_changed,
                bytes_written: p.new_bytes,
                bytes_total: p.size,
            });
        }
        failpoint("erasure-prepared");
        let searched: Vec<(i64, String)> = versions.iter().map(|v| (v.version, v.artifact_id.clone())).collect();
        let result = self.commit_erasure(permit, &name, searched, &affected, &prepared, &mut receipt).await;
        for p in prepared {
            self.store()?.release(p).await;
        }
        result?;
        Ok(id)
    }

    async fn commit_erasure(
        &self,
        permit: &Permit,
        name: &Name,
        versions_read: Vec<(i64, String)>,
        affected: &[(&StoredVersion, erase::EraseStats, IngestReport, PathBuf)],
        prepared: &[citadel_store::PreparedPut],
        receipt: &mut ErasureReceipt,
    ) -> Result<()> {
        let now = Timestamp::now();
        receipt.committed_at = now.to_rfc3339();
        let mut tx = self.db.begin_audited().await?;
        // The versions searched must be exactly the versions there are: one
        // added, purged or rewritten meanwhile fails the erasure whole.
        let mut now_there: Vec<(i64, String)> = Vec::new();
        for r in sqlx::query("SELECT version, artifact_id FROM data_versions WHERE dataset_name = $1 ORDER BY version")
            .bind(name.as_str())
            .fetch_all(&mut *tx.conn())
            .await?
        {
            now_there.push((r.try_get("version")?, r.try_get("artifact_id")?));
        }
        if now_there != versions_read {
            return Err(ControlError::Conflict(format!(
                "the versions of {name} changed while the erasure ran; nothing was changed, run the erasure again"
            )));
        }
        let mut dropped = BTreeSet::new();
        let mut new_chunks: BTreeSet<String> = BTreeSet::new();
        for ((v, _, report, _), p) in affected.iter().zip(prepared) {
            new_chunks.extend(p.chunk_names.iter().cloned());
            self.store()?
                .commit_put(&mut tx, p, Some(&format!("datasets/{name}@{}", v.version)), permit.actor())
                .await?;
            let r = sqlx::query(
                "UPDATE data_versions SET artifact_id = $1, rows_count = $2, report = $3, revision = revision + 1 \
                 WHERE dataset_name = $4 AND version = $5 AND artifact_id = $6",
            )
            .bind(p.id.to_string())
            .bind(report.rows as i64)
            .bind(serde_json::to_string(report).map_err(|e| invalid(e.to_string()))?)
            .bind(name.as_str())
            .bind(v.version)
            .bind(&v.artifact_id)
            .execute(&mut *tx.conn())
            .await?;
            if r.rows_affected() != 1 {
                return Err(ControlError::Conflict(format!(
                    "{name}@{} changed while the erasure ran; nothing was changed, run it again",
                    v.version
                )));
            }
            let child = format!("dataset:{name}@{}", v.version);
            for (parent, relation) in
                [(format!("artifact:{}", p.id), "stored-as"), (format!("erasure:{}", receipt.id), "revised-by")]
            {
                citadel_store::lineage_insert(
                    tx.conn(),
                    &LineageEdge { child: child.clone(), parent, relation: relation.into() },
                )
                .await?;
            }
            dropped.insert(v.artifact_id.clone());
        }
        // The chunks that must leave the store: the old artifacts' chunks no
        // new revision uses.
        let mut doomed: BTreeSet<String> = BTreeSet::new();
        for old in &dropped {
            for r in sqlx::query("SELECT chunk_name FROM artifact_chunks WHERE artifact_id = $1")
                .bind(old)
                .fetch_all(&mut *tx.conn())
                .await?
            {
                let c: String = r.try_get("chunk_name")?;
                if !new_chunks.contains(&c) {
                    doomed.insert(c);
                }
            }
            receipt.cache_entries_dropped += crate::pipeline::drop_cache_of(tx.conn(), old).await?;
        }
        for old in &dropped {
            let still = sqlx::query("SELECT 1 AS one FROM data_versions WHERE artifact_id = $1")
                .bind(old)
                .fetch_optional(&mut *tx.conn())
                .await?;
            if still.is_none() {
                let id: ArtifactId = old.parse().map_err(|_| invalid(format!("stored artifact id {old:?}")))?;
                self.store()?.forget(&mut tx, &id).await?;
            }
        }
        sqlx::query(
            "INSERT INTO erasures (id, dataset_name, status, receipt, chunks, signature, created_by, created_at) \
             VALUES ($1, $2, 'shredding', $3, $4, NULL, $5, $6)",
        )
        .bind(&receipt.id)
        .bind(name.as_str())
        .bind(serde_json::to_string(&*receipt).map_err(|e| invalid(e.to_string()))?)
        .bind(serde_json::to_string(&doomed).map_err(|e| invalid(e.to_string()))?)
        .bind(permit.actor())
        .bind(now.0)
        .execute(&mut *tx.conn())
        .await?;
        for m in &receipt.models_flagged {
            let (model, version) = m
                .strip_prefix("model:")
                .and_then(|r| r.rsplit_once('@'))
                .and_then(|(n, v)| v.parse::<i64>().ok().map(|v| (n.to_string(), v)))
                .ok_or_else(|| invalid(format!("lineage node {m:?} is not model:NAME@VERSION")))?;
            sqlx::query(
                "INSERT INTO model_flags (model_name, version, erasure_id, reason, created_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (model_name, version, erasure_id) DO NOTHING",
            )
            .bind(model)
            .bind(version)
            .bind(&receipt.id)
            .bind(format!("trained on {name} data from which erasure {} removed a data subject's rows", receipt.id))
            .bind(now.0)
            .execute(&mut *tx.conn())
            .await?;
        }
        let record = tx
            .commit(permit.item(serde_json::json!({
                    "erasure": receipt.id,
                    "subjects": receipt.subjects.len(),
                    "columns": receipt.columns,
                    "versions": receipt.versions.iter().map(|v| serde_json::json!({"version": v.version, "revision": v.revision, "rows_removed": v.rows_removed, "old_artifact": v.old_artifact, "new_artifact": v.new_artifact})).collect::<Vec<_>>(),
                    "models_flagged": receipt.models_flagged,
                    "reason": receipt.reason,
                })))
            .await?;
        receipt.audit_seq = record.seq;
        receipt.audit_hash = record.hash.to_hex();
        // The commit's record is known only now: store it in the receipt.
        sqlx::query("UPDATE erasures SET receipt = $1 WHERE id = $2")
            .bind(serde_json::to_string(&*receipt).map_err(|e| invalid(e.to_string()))?)
            .bind(&receipt.id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Deletes the objects of committed erasures and signs their receipts
    /// (phase 3). Idempotent: after a crash, the next call finishes the job.
    ///
    /// Finishes only the erasures of datasets the caller may erase from
    /// (all of them for a holder of `store.gc`). Also removes the work
    /// directories (decrypted data) of processes that crashed.
    pub(crate) async fn complete_erasures(&self, caller: &Caller) -> Result<usize> {
        WorkDir::sweep(&self.config.workspace)?;
        let pending: Vec<_> = sqlx::query(
            "SELECT id, dataset_name, receipt, chunks FROM erasures WHERE status = 'shredding' ORDER BY created_at",
        )
        .fetch_all(self.db.pool())
        .await?
        .into_iter()
        .filter(|r| {
            r.try_get::<String, _>("dataset_name").is_ok_and(|d| {
                caller.holds(Action::SubjectErase, &Resource::dataset(d))
                    || caller.holds(Action::StoreGc, &Resource::all(ResourceKind::Store))
            })
        })
        .collect();
        if pending.is_empty() {
            return Ok(0);
        }
        // A put in progress (or one that crashed, until its lease expires)
        // holds off the deletion; the erasures stay `shredding` and the next
        // call finishes them.
        let gc = match self.store()?.gc(0).await {
            Ok(gc) => gc,
            Err(citadel_store::StoreError::PutsInProgress { .. } | citadel_store::StoreError::GcRunning { .. }) => {
                return Ok(0);
            }
            Err(e) => return Err(e.into()),
        };
        for (i, r) in pending.iter().enumerate() {
            let id: String = r.try_get("id")?;
            let mut receipt: ErasureReceipt = serde_json::from_str(&r.try_get::<String, _>("receipt")?)
                .map_err(|e| invalid(format!("stored receipt of {id} is unreadable: {e}")))?;
            // One gc shreds for every pending erasure; the first carries its counts.
            if i == 0 {
                receipt.chunks_deleted = gc.unreferenced_chunks;
                receipt.objects_deleted = gc.unreferenced_chunks + gc.orphan_objects;
                receipt.bytes_freed = gc.bytes_freed;
            }
            // Each chunk of the erased versions is gone, or another artifact
            // holds the same bytes: say which.
            let doomed: Vec<String> = serde_json::from_str(&r.try_get::<String, _>("chunks")?).unwrap_or_default();
            let mut kept: BTreeMap<Vec<String>, u64> = BTreeMap::new();
            for c in &doomed {
                let holders: Vec<String> = sqlx::query(
                    "SELECT DISTINCT a.artifact_id, n.name FROM artifact_chunks a \
                     LEFT JOIN artifact_names n ON n.artifact_id = a.artifact_id WHERE a.chunk_name = $1",
                )
                .bind(c)
                .fetch_all(self.db.pool())
                .await?
                .iter()
                .map(|r| {
                    r.try_get::<Option<String>, _>("name")
                        .ok()
                        .flatten()
                        .or_else(|| r.try_get::<String, _>("artifact_id").ok())
                        .unwrap_or_default()
                })
                .collect();
                if !holders.is_empty() {
                    *kept.entry(holders).or_default() += 1;
                }
            }
            receipt.chunks_kept = kept.into_iter().map(|(held_by, chunks)| KeptChunks { chunks, held_by }).collect();
            // Signed only once every chunk nothing holds is gone.
            let mut lingering = 0usize;
            for c in &doomed {
                let row = sqlx::query(
                    "SELECT 1 AS one FROM chunks WHERE name = $1 AND NOT EXISTS \
                     (SELECT 1 FROM artifact_chunks a WHERE a.chunk_name = chunks.name)",
                )
                .bind(c)
                .fetch_optional(self.db.pool())
                .await?;
                lingering += usize::from(row.is_some());
            }
            if lingering > 0 {
                continue;
            }
            if receipt.audit_seq == 0 {
                // A crash between the commit and the receipt's update.
                if let Some(a) = sqlx::query(
                    "SELECT seq, hash FROM audit_log WHERE action = 'subject.erase' AND outcome = 'success' \
                     AND details LIKE $1 ORDER BY seq DESC LIMIT 1",
                )
                .bind(format!("%{id}%"))
                .fetch_optional(self.db.pool())
                .await?
                {
                    receipt.audit_seq = a.try_get("seq")?;
                    receipt.audit_hash = a.try_get("hash")?;
                }
            }
            let now = Timestamp::now();
            receipt.completed_at = Some(now.to_rfc3339());
            let signature = hex::encode(self.signer()?.sign(&canonical(&receipt)));
            let mut tx = self.db.begin_audited().await?;
            sqlx::query(
                "UPDATE erasures SET status = 'complete', receipt = $1, signature = $2, completed_at = $3 \
                 WHERE id = $4 AND status = 'shredding'",
            )
            .bind(serde_json::to_string(&receipt).map_err(|e| invalid(e.to_string()))?)
            .bind(&signature)
            .bind(now.0)
            .bind(&id)
            .execute(&mut *tx.conn())
            .await?;
            // Finishing a committed (and recorded) erasure is the system's
            // work, whoever's call happened to run it.
            tx.commit(event(
                "citadel",
                "subject.shred",
                Resource::dataset(&receipt.dataset).as_str(),
                Outcome::Success,
                &citadel_types::random_id("req-"),
                serde_json::json!({"finished_during_call_of": caller.name(), "erasure": id, "chunks_deleted": receipt.chunks_deleted, "objects_deleted": receipt.objects_deleted, "bytes_freed": receipt.bytes_freed, "receipt_sha256": citadel_types::Digest::of(&canonical(&receipt)).to_hex()}),
            ))
            .await?;
        }
        // Pages of the deleted rows leave the SQLite WAL too.
        self.db.truncate_wal().await?;
        Ok(pending.len())
    }

    /// A stored receipt, its signature checked against the audit key.
    pub async fn erasure_receipt(&self, caller: &Caller, id: &str) -> Result<SignedReceipt> {
        let row = sqlx::query("SELECT dataset_name FROM erasures WHERE id = $1")
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?;
        // Authorized before anything is said about the id.
        let resource = match &row {
            Some(r) => Resource::dataset(r.try_get::<String, _>("dataset_name")?),
            None => Resource::all(ResourceKind::Dataset),
        };
        // Auditors read receipts (they are evidence), privacy officers theirs.
        let audit_log = Resource::new(ResourceKind::Audit, "log");
        let permit = if caller.holds(Action::AuditRead, &audit_log) {
            self.authorize(caller, Action::AuditRead, audit_log).await?
        } else {
            self.authorize(caller, Action::SubjectErase, resource).await?
        };
        if row.is_none() {
            return Err(ControlError::NotFound(format!("erasure {id}")));
        }
        self.complete_erasures(caller).await?;
        let signed = self.stored_receipt(id).await?;
        self.record(permit, serde_json::json!({"erasure": id, "verified": signed.verified})).await?;
        Ok(signed)
    }

    /// A stored receipt with its signature checked (no authorization: callers have it).
    async fn stored_receipt(&self, id: &str) -> Result<SignedReceipt> {
        let r = sqlx::query("SELECT status, receipt, signature FROM erasures WHERE id = $1")
            .bind(id)
            .fetch_one(self.db.pool())
            .await?;
        self.signed(r.try_get("status")?, &r.try_get::<String, _>("receipt")?, r.try_get("signature")?)
    }

    pub(crate) fn signed(&self, status: String, receipt: &str, signature: Option<String>) -> Result<SignedReceipt> {
        let receipt: ErasureReceipt =
            serde_json::from_str(receipt).map_err(|e| invalid(format!("a stored receipt is unreadable: {e}")))?;
        let public_key = self.signer()?.public_key();
        let verified = signature
            .as_deref()
            .and_then(|s| hex::decode(s).ok())
            .is_some_and(|sig| citadel_crypto::verify_ed25519(&public_key, &canonical(&receipt), &sig));
        Ok(SignedReceipt {
            status,
            receipt,
            signature,
            public_key: hex::encode(&public_key),
            key_id: self.signer()?.key_id(),
            verified,
        })
    }

    /// Every erasure of the datasets the caller may erase from, newest first.
    ///
    /// Authorized as `audit.read` on the log for auditors, else as
    /// `subject.erase` on every dataset (a privacy officer scoped to some
    /// datasets reads their receipts one by one).
    pub async fn erasure_list(&self, caller: &Caller) -> Result<Vec<SignedReceipt>> {
        let audit_log = Resource::new(ResourceKind::Audit, "log");
        let permit = if caller.holds(Action::AuditRead, &audit_log) {
            self.authorize(caller, Action::AuditRead, audit_log).await?
        } else {
            self.authorize(caller, Action::SubjectErase, Resource::all(ResourceKind::Dataset)).await?
        };
        self.complete_erasures(caller).await?;
        let rows =
            sqlx::query("SELECT dataset_name, status, receipt, signature FROM erasures ORDER BY created_at DESC")
                .fetch_all(self.db.pool())
                .await?;
        let mut out = Vec::new();
        for r in rows {
            let dataset: String = r.try_get("dataset_name")?;
            if Self::may_see_erasures(caller, &dataset) {
                out.push(self.signed(
                    r.try_get("status")?,
                    &r.try_get::<String, _>("receipt")?,
                    r.try_get("signature")?,
                )?);
            }
        }
        self.record(permit, serde_json::json!({"listed": out.len()})).await?;
        Ok(out)
    }

    /// Every stored row of the subjects in every version of `dataset`
    /// (GDPR Art. 15 access, Art. 20 portability). Tokenized columns are
    /// reversed; pseudonymized ones cannot be and are listed as such. The
    /// read is audited (versions and row counts, never values) before any
    /// row is returned.
    pub async fn subject_export(
        &self,
        caller: &Caller,
        dataset: &str,
        subjects: Vec<Subject>,
        max_rows: u64,
    ) -> Result<SubjectExport> {
        let name = Name::parse(dataset)?;
        let resource = Resource::new(ResourceKind::Dataset, &name);
        let permit = self.authorize(caller, Action::SubjectExport, resource.clone()).await?;
        let columns = Subject::columns(&subjects);
        let result = self.subject_export_inner(&permit, &name, subjects, max_rows).await;
        if let Err(e) = &result {
            self.db
                .append_audit(permit.step(
                    Action::SubjectExport.as_str(),
                    Outcome::Failure,
                    serde_json::json!({"columns": columns, "error": failure_kind(e)}),
                ))
                .await?;
        }
        result
    }

    async fn subject_export_inner(
        &self,
        permit: &Permit,
        name: &Name,
        subjects: Vec<Subject>,
        max_rows: u64,
    ) -> Result<SubjectExport> {
        let max_rows = self.subject_row_cap(max_rows)?;
        let protector = self.data_protector().await?;
        let versions = self.stored_versions(name.as_str()).await?;
        if versions.is_empty() {
            return Err(ControlError::NotFound(format!("dataset {name}")));
        }
        unknown_columns(&versions, &subjects)?;
        let work = WorkDir::new(&self.config.workspace)?;
        let mut found: Vec<(i64, u64, RecordBatch)> = Vec::new();
        let mut pseudonymized = BTreeSet::new();
        let mut not_stored = BTreeSet::new();
        let mut tokenized: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        for v in &versions {
            let (dir, _, Ok(matcher)) = self.restore_and_match(v, &work.0, &subjects, &protector).await? else {
                continue;
            };
            for c in &v.report.profile {
                match c.mask.as_deref() {
                    Some("pseudonymize") => {
                        pseudonymized.insert(c.name.clone());
                    }
                    Some("drop") => {
                        not_stored.insert(c.name.clone());
                    }
                    Some("tokenize") => tokenized.entry(v.version).or_default().push(c.name.clone()),
                    _ => {}
                }
            }
            let rows = tokio::task::spawn_blocking(move || {
                let rows = erase::select(&dir, &matcher);
                // The decrypted copy goes as soon as it is read.
                let _ = std::fs::remove_dir_all(&dir);
                rows
            })
            .await
            .map_err(join_err)??;
            found.extend(rows.into_iter().map(|(i, b)| (v.version, i, b)));
        }
        if found.len() as u64 > max_rows {
            return Err(ControlError::SubjectTooBroad {
                dataset: name.to_string(),
                rows: found.len() as u64,
                max: max_rows,
            });
        }
        let per_version: BTreeMap<i64, usize> = found.iter().fold(BTreeMap::new(), |mut m, (v, _, _)| {
            *m.entry(*v).or_default() += 1;
            m
        });
        self.db.append_audit(permit.item(serde_json::json!({"subjects": subjects.len(), "columns": Subject::columns(&subjects), "rows": found.len(), "rows_per_version": per_version})))
            .await?;
        let mut rows = Vec::new();
        for (version, row, batch) in found {
            let detok = tokenized.get(&version).cloned().unwrap_or_default();
            rows.push(SubjectRow {
                dataset: name.to_string(),
                version,
                row,
                values: row_values(&batch, &detok, &protector)?,
            });
        }
        Ok(SubjectExport {
            dataset: name.to_string(),
            versions_searched: versions.len(),
            rows,
            pseudonymized: pseudonymized.into_iter().collect(),
            not_stored: not_stored.into_iter().collect(),
        })
    }
}

/// The one row of `batch` as JSON values (numbers as numbers).
fn row_values(
    batch: &RecordBatch,
    detokenize: &[String],
    protector: &citadel_crypto::DataProtector,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    let mut m = serde_json::Map::new();
    for (f, a) in batch.schema().fields().iter().zip(batch.columns()) {
        let any = a.as_any();
        let v = if a.is_null(0) {
            serde_json::Value::Null
        } else if let Some(s) = any.downcast_ref::<StringArray>() {
            let text = s.value(0);
            if detokenize.contains(f.name()) {
                serde_json::Value::String(protector.detokenize(text)?)
            } else {
                serde_json::Value::String(text.to_string())
            }
        } else if let Some(x) = any.downcast_ref::<Int64Array>() {
            serde_json::Value::from(x.value(0))
        } else if let Some(x) = any.downcast_ref::<Float64Array>() {
            serde_json::Value::from(x.value(0))
        } else if let Some(x) = any.downcast_ref::<arrow_array::BooleanArray>() {
            serde_json::Value::Bool(x.value(0))
        } else {
            serde_json::Value::String(format!("<{}>", f.data_type()))
        };
        m.insert(f.name().clone(), v);
    }
    Ok(m)
}

/// Erasures that flag a model version (it was trained on erased rows).
pub(crate) async fn model_erasure_flags(
    pool: &sqlx::AnyPool,
    model: &str,
    version: i64,
) -> Result<Vec<serde_json::Value>> {
    let rows = sqlx::query(
        "SELECT f.erasure_id, f.reason, e.dataset_name FROM model_flags f JOIN erasures e ON e.id = f.erasure_id \
         WHERE f.model_name = $1 AND f.version = $2 ORDER BY f.created_at",
    )
    .bind(model)
    .bind(version)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(serde_json::json!({
                "erasure": r.try_get::<String, _>("erasure_id")?,
                "dataset": r.try_get::<String, _>("dataset_name")?,
                "reason": r.try_get::<String, _>("reason")?,
            }))
        })
        .collect()
}

/// What kind of failure, for the audit record (never a value).
fn failure_kind(e: &ControlError) -> String {
    match e {
        ControlError::NoSubjectRows { .. } => "no rows match".into(),
        ControlError::SubjectTooBroad { rows, max, .. } => format!("{rows} rows match, more than {max}"),
        ControlError::Data(citadel_data::DataError::NotAKey { column, stored_as }) => {
            format!("column {column} is {stored_as}-masked")
        }
        ControlError::Conflict(m) => m.clone(),
        other => other.to_string().chars().take(200).collect(),
    }
}

/// A reason is the request's reference (a ticket id), kept forever in the
/// signed receipt and the audit log: short, printable, and no personal data.
fn check_reason(reason: &str) -> Result<()> {
    let r = reason.trim();
    if r.is_empty() {
        return Err(invalid(
            "an erasure needs --reason (the request's reference, e.g. a ticket id; not the subject's name)",
        ));
    }
    if r.chars().count() > 200 || r.chars().any(char::is_control) {
        return Err(invalid(
            "--reason must be at most 200 printable characters (the request's reference, e.g. a ticket id)",
        ));
    }
    let found = citadel_pii::detect(r);
    if let Some((kind, _)) = found.first() {
        return Err(invalid(format!(
            "--reason looks like it holds personal data ({kind:?}); it is kept forever in the receipt and the audit log: give the request's reference only (e.g. DSR-2026-0042)"
        )));
    }
    Ok(())
}

/// A condition naming a column no version has is a typo, not an absent subject.
fn unknown_columns(versions: &[StoredVersion], subjects: &[Subject]) -> Result<()> {
    let mut known: BTreeSet<&str> = BTreeSet::new();
    for v in versions {
        known.extend(v.report.source_columns.iter().map(String::as_str));
        known.extend(v.report.profile.iter().map(|c| c.name.as_str()));
    }
    let unknown: Vec<String> = Subject::columns(subjects).into_iter().filter(|c| !known.contains(c.as_str())).collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(invalid(format!(
        "no version of the dataset has a column named {}; its columns are {}",
        unknown.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(", "),
        known.iter().take(40).copied().collect::<Vec<_>>().join(", ")
    )))
}

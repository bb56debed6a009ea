//! Dataset versions: ingest (validate → detect PII → mask → profile → check
//! against the previous version → store), show, list, release, get and diff.
//!
//! Decisions:
//! - A version is stored as one artifact, a directory of three Parquet files
//!   (the masked table, keyed row hashes, a row sample); the profile and the
//!   check results live in `data_versions.report` (aggregates only: top
//!   values of PII or restricted columns are withheld).
//! - A rejected version stores nothing; the rejection is audited with its
//!   reasons. A quarantined version is stored but `data get` refuses it to
//!   everyone but data stewards (`dataset.release`) until one releases it.
//! - The masking keys (pseudonyms, tokens, row hashes) derive from one
//!   workspace secret, generated on first use and sealed under the
//!   chunk-encryption data key, like the model-signing key.
//! - `data get` leaves out restricted columns unless the caller holds
//!   `dataset.read_restricted`, and reverses tokens only for `detokenize`
//!   holders who ask for it. Every read is audited with the version and the
//!   columns that left the store.

use citadel_policy::{Resource, ResourceKind};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use citadel_audit::Outcome;
use citadel_data::ingest::RowHash;
use citadel_data::{Expectations, IngestReport, Status};
use citadel_policy::Action;
use citadel_store::LineageEdge;
use citadel_types::{Name, Timestamp};

use crate::{Caller, ControlError, Permit, Result, Workspace, event};

const PROTECTION_KEY_META: &str = "data_protection_key";
const PROTECTION_KEY_OBJECT: &str = "workspace-secret/data-protection-key";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataVersion {
    pub dataset: String,
    pub version: i64,
    pub status: String,
    pub artifact_id: String,
    pub source_digest: String,
    pub spec_digest: String,
    pub rows: i64,
    pub created_by: String,
    pub created_at: String,
    pub released_by: Option<String>,
    /// 1 as ingested; each erasure of a data subject's rows adds one.
    pub revision: i64,
    pub report: IngestReport,
}

#[derive(Debug, Clone, Serialize)]
pub struct DataGetReport {
    pub dataset: String,
    pub version: i64,
    pub output: PathBuf,
    pub format: String,
    pub rows: u64,
    pub columns: Vec<String>,
    /// Restricted columns left out because the caller may not read them.
    pub withheld: Vec<String>,
    pub detokenized: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DataDiff {
    pub from: String,
    pub to: String,
    pub rows_from: u64,
    pub rows_to: u64,
    pub added: u64,
    pub removed: u64,
    /// Rows whose key (dataset.key) is in both versions with other values.
    pub changed: Option<u64>,
    pub unchanged: u64,
    pub columns_added: Vec<String>,
    pub columns_removed: Vec<String>,
    pub type_changes: Vec<String>,
    pub drift: Vec<citadel_data::checks::ColumnDrift>,
}

/// `NAME` (latest version) or `NAME@VERSION`.
pub fn parse_dataset_ref(reference: &str) -> Result<(Name, Option<i64>)> {
    match reference.split_once('@') {
        None => Ok((Name::parse(reference)?, None)),
        Some((n, v)) => {
            let v: i64 = v.parse().map_err(|_| {
                ControlError::Invalid(format!("{reference:?}: the version after @ must be a number (NAME@3)"))
            })?;
            Ok((Name::parse(n)?, Some(v)))
        }
    }
}

/// A private (0700) work directory under the workspace, removed on drop.
/// Ingest output can be large, so it stays on the workspace's disk rather
/// than a possibly small tmpfs. It holds decrypted data, so it is locked
/// (`.lock`, an advisory `flock` the kernel drops when the process dies)
/// while in use: [`WorkDir::sweep`] removes the ones a crashed process left.
#[derive(Debug)]
pub(crate) struct WorkDir(pub PathBuf, #[allow(dead_code)] std::fs::File);

impl WorkDir {
    pub(crate) fn new(workspace: &Path) -> Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let parent = workspace.join("tmp");
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&parent).map_err(|e| io_error(&parent, e))?;
        // Made and locked under a name the sweep ignores, then renamed: a
        // sweep never sees it unlocked.
        let id = citadel_types::random_id("");
        let hidden = parent.join(format!(".new-{id}"));
        std::fs::DirBuilder::new().mode(0o700).create(&hidden).map_err(|e| io_error(&hidden, e))?;
        let lock_path = hidden.join(".lock");
        let lock = std::fs::File::create(&lock_path).map_err(|e| io_error(&lock_path, e))?;
        lock.lock().map_err(|e| io_error(&lock_path, e))?;
        let dir = parent.join(format!("data-{id}"));
        std::fs::rename(&hidden, &dir).map_err(|e| io_error(&dir, e))?;
        Ok(WorkDir(dir, lock))
    }

    /// Removes the work directories of processes that died with them (their
    /// lock is free), and unlocked ones from before locks existed. Returns
    /// how many were removed.
    pub(crate) fn sweep(workspace: &Path) -> Result<usize> {
        let parent = workspace.join("tmp");
        let entries = match std::fs::read_dir(&parent) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_error(&parent, e)),
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let dir = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            let old = || {
                entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() > 3600))
            };
            if !dir.is_dir() {
                continue;
            }
            let free = if name.starts_with("data-") {
                match std::fs::File::open(dir.join(".lock")) {
                    Ok(f) => f.try_lock().is_ok(),
                    // From before work directories were locked.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => old(),
                    Err(_) => false,
                }
            } else {
                // Being made (`.new-`): only a crash between mkdir and rename leaves one.
                name.starts_with(".new-") && old()
            };
            if free && std::fs::remove_dir_all(&dir).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn io_error(path: &Path, e: std::io::Error) -> ControlError {
    ControlError::Store(citadel_store::StoreError::Io { path: path.to_path_buf(), source: e })
}

pub(crate) fn join_err(e: tokio::task::JoinError) -> ControlError {
    ControlError::Invalid(format!("background task failed: {e}"))
}

fn sha256_file(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
    let mut h = citadel_types::Sha256::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| io_error(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finish().to_hex())
}

impl Workspace {
    /// The workspace's data-protection keys, created (and sealed) on first use.
    pub(crate) async fn data_protector(&self) -> Result<citadel_crypto::DataProtector> {
        if citadel_store::meta_get(self.db.pool(), PROTECTION_KEY_META).await?.is_none() {
            let secret = citadel_crypto::random_bytes::<32>()?;
            let sealed = self.secrets_cipher()?.seal(PROTECTION_KEY_OBJECT, &secret)?;
            // Two first uses at once must agree on one key: the first insert wins.
            let mut tx = self.db.begin_audited().await?;
            sqlx::query("INSERT INTO workspace_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                .bind(PROTECTION_KEY_META)
                .bind(hex::encode(sealed))
                .execute(&mut *tx.conn())
                .await?;
            tx.commit(event(
                "system",
                "key.create",
                "key:data-protection",
                Outcome::Success,
                &citadel_types::random_id("req-"),
                serde_json::json!({"purpose": "pseudonyms, tokens and row hashes"}),
            ))
            .await?;
        }
        let hex_sealed = citadel_store::meta_get(self.db.pool(), PROTECTION_KEY_META)
            .await?
            .ok_or_else(|| ControlError::NotFound("data-protection key".into()))?;
        let sealed = hex::decode(hex_sealed)
            .map_err(|_| ControlError::Invalid("stored data-protection key is not hex".into()))?;
        let secret =
            citadel_crypto::DataKey::from_bytes(&self.secrets_cipher()?.open(PROTECTION_KEY_OBJECT, &sealed)?)?;
        Ok(citadel_crypto::DataProtector::new(&secret)?)
    }

    /// Records a refused `dataset.write` (nothing was stored) and why.
    async fn refuse_write(&self, permit: Permit, details: serde_json::Value) -> Result<()> {
        self.db.append_audit(permit.refused(details)).await?;
        Ok(())
    }

    /// Records a read of dataset contents (profile, rows, hashes) and what was read.
    pub(crate) async fn audit_data_read(
        &self,
        permit: &Permit,
        read: &Resource,
        details: serde_json::Value,
    ) -> Result<()> {
        self.db.append_audit(permit.read(read, details)).await?;
        Ok(())
    }

    async fn latest_data_version(&self, name: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT MAX(version) AS v FROM data_versions WHERE dataset_name = $1")
            .bind(name)
            .fetch_one(self.db.pool())
            .await?;
        Ok(row.try_get::<Option<i64>, _>("v")?)
    }

    pub(crate) async fn data_version_row(&self, name: &str, version: Option<i64>) -> Result<DataVersion> {
        let version = match version {
            Some(v) => v,
            None => self
                .latest_data_version(name)
                .await?
                .ok_or_else(|| ControlError::NotFound(format!("dataset {name}")))?,
        };
        let r = sqlx::query(
            "SELECT d.status, d.artifact_id, d.source_digest, d.spec_digest, d.rows_count, d.report, d.created_at, d.revision, \
             p.name AS who, q.name AS releaser FROM data_versions d \
             LEFT JOIN principals p ON p.id = d.created_by LEFT JOIN principals q ON q.id = d.released_by \
             WHERE d.dataset_name = $1 AND d.version = $2",
        )
        .bind(name)
        .bind(version)
        .fetch_optional(self.db.pool())
        .await?;
        let Some(r) = r else {
            let purged =
                sqlx::query("SELECT purged_at, reason FROM data_purges WHERE dataset_name = $1 AND version = $2")
                    .bind(name)
                    .bind(version)
                    .fetch_optional(self.db.pool())
                    .await?;
            return Err(ControlError::NotFound(match purged {
                Some(p) => format!(
                    "dataset {name} version {version} (purged {}: {})",
                    Timestamp(p.try_get("purged_at")?).to_rfc3339(),
                    p.try_get::<String, _>("reason")?
                ),
                None => format!("dataset {name} version {version}"),
            }));
        };
        let report: IngestReport = serde_json::from_str(&r.try_get::<String, _>("report")?)
            .map_err(|e| ControlError::Invalid(format!("stored report of {name}@{version} is unreadable: {e}")))?;
        Ok(DataVersion {
            dataset: name.to_string(),
            version,
            status: r.try_get("status")?,
            artifact_id: r.try_get("artifact_id")?,
            source_digest: r.try_get("source_digest")?,
            spec_digest: r.try_get("spec_digest")?,
            rows: r.try_get("rows_count")?,
            created_by: r.try_get::<Option<String>, _>("who").ok().flatten().unwrap_or_default(),
            created_at: Timestamp(r.try_get("created_at")?).to_rfc3339(),
            released_by: r.try_get::<Option<String>, _>("releaser").ok().flatten(),
            revision: r.try_get("revision")?,
            report,
        })
    }

    /// Restores a version's directory (every chunk authenticated, the
    /// artifact's SHA-256 checked) into `into`.
    pub(crate) async fn restore_data(&self, v: &DataVersion, into: &Path) -> Result<PathBuf> {
        let info = self.store()?.resolve(&v.artifact_id).await?;
        let dir = into.join(format!("{}-{}", v.dataset, v.version));
        self.store()?.restore(&info, &dir, None).await?;
        Ok(dir)
    }

    /// Ingests `path` as the next version of `name`.
    pub async fn data_add(
        &self,
        caller: &Caller,
        path: &Path,
        name: &str,
        spec_text: Option<String>,
        progress: Arc<dyn Fn(u64) + Send + Sync>,
    ) -> Result<DataVersion> {
        let name = Name::parse(name)?;
        let resource = Resource::new(ResourceKind::Dataset, &name);
        let permit = self.authorize(caller, Action::DatasetWrite, resource.clone()).await?;
        let spec_text = spec_text.unwrap_or_default();
        let spec = Expectations::parse(&spec_text)?;
        let spec_digest = citadel_types::Digest::of(spec_text.as_bytes()).to_hex();
        let protector = self.data_protector().await?;
        let work = WorkDir::new(&self.config.workspace)?;

        let baseline = self.latest_data_version(name.as_str()).await?;
        let previous = match baseline {
            Some(v) => {
                let prev = self.data_version_row(name.as_str(), Some(v)).await?;
                let dir = self.restore_data(&prev, &work.0).await?;
                Some(citadel_data::Previous { report: prev.report, dir })
            }
            None => None,
        };
        let source = path.to_path_buf();
        let out_dir = work.0.join("version");
        let source_digest = {
            let source = source.clone();
            tokio::task::spawn_blocking(move || sha256_file(&source)).await.map_err(join_err)??
        };
        // A file an erasure removed rows from would bring them back.
        if let Some(r) = sqlx::query(
            "SELECT dataset_name, version FROM data_versions WHERE source_digest = $1 AND revision > 1 LIMIT 1",
        )
        .bind(&source_digest)
        .fetch_optional(self.db.pool())
        .await?
        {
            let (d, v): (String, i64) = (r.try_get("dataset_name")?, r.try_get("version")?);
            let reason = format!("the source of {d}@{v}, from which a data subject's rows were erased");
            self.refuse_write(permit, serde_json::json!({"source_sha256": source_digest, "reason": reason})).await?;
            return Err(ControlError::ErasedSource { dataset: d, version: v });
        }
        let output = {
            let out_dir = out_dir.clone();
            tokio::task::spawn_blocking(move || {
                citadel_data::ingest(&source, &spec, &protector, &out_dir, previous.as_ref(), &*progress)
                    .map_err(ControlError::from)
            })
            .await
            .map_err(join_err)?
        }?;
        let report = output.report;
        if report.status == Status::Rejected {
            self.refuse_write(
                permit,
                serde_json::json!({"source_sha256": source_digest, "rows": report.rows, "reasons": report.reasons}),
            )
            .await?;
            return Err(ControlError::DataRejected { dataset: name.to_string(), report: Box::new(report) });
        }

        let prepared = self.store()?.prepare_put(&out_dir, None).await?;
        let artifact_id = prepared.id.to_string();
        let result = async {
            let mut tx = self.db.begin_audited().await?;
            // A purged version's number stays taken.
            let row = sqlx::query(
                "SELECT MAX(version) AS v FROM (SELECT version FROM data_versions WHERE dataset_name = $1 \
                 UNION ALL SELECT version FROM data_purges WHERE dataset_name = $1) AS t",
            )
            .bind(name.as_str())
            .fetch_one(&mut *tx.conn())
            .await?;
            let version = row.try_get::<Option<i64>, _>("v")?.unwrap_or(0) + 1;
            self.store()?
                .commit_put(&mut tx, &prepared, Some(&format!("datasets/{name}@{version}")), caller.id())
                .await?;
            let now = Timestamp::now();
            sqlx::query(
                "INSERT INTO data_versions (dataset_name, version, status, artifact_id, source_digest, spec_digest, spec, \
                 rows_count, report, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(name.as_str())
            .bind(version)
            .bind(report.status.as_str())
            .bind(artifact_id.clone())
            .bind(source_digest.clone())
            .bind(spec_digest.clone())
            .bind(spec_text.clone())
            .bind(report.rows as i64)
            .bind(serde_json::to_string(&report).map_err(|e| ControlError::Invalid(e.to_string()))?)
            .bind(caller.id().to_string())
            .bind(now.0)
            .execute(&mut *tx.conn())
            .await?;
            let child = format!("dataset:{name}@{version}");
            for (parent, relation) in [
                (format!("artifact:{artifact_id}"), "stored-as"),
                (format!("source:sha256:{source_digest}"), "ingested-from"),
                (format!("expectations:sha256:{spec_digest}"), "validated-by"),
            ] {
                citadel_store::lineage_insert(tx.conn(), &LineageEdge { child: child.clone(), parent, relation: relation.into() })
                    .await?;
            }
            // The version the checks compared against (a purged one is skipped).
            if let Some(b) = baseline {
                citadel_store::lineage_insert(
                    tx.conn(),
                    &LineageEdge { child: child.clone(), parent: format!("dataset:{name}@{b}"), relation: "previous-version".into() },
                )
                .await?;
            }
            tx.commit(permit.success_on(&Resource::dataset_version(&name, version), serde_json::json!({
                    "version": version,
                    "status": report.status.as_str(),
                    "rows": report.rows,
                    "artifact": artifact_id,
                    "source_sha256": source_digest,
                    "expectations_sha256": spec_digest,
                    "stored_columns": report.stored_columns,
                    "masked": report.profile.iter().filter_map(|c| c.mask.as_ref().map(|m| format!("{}:{m}", c.name))).collect::<Vec<_>>(),
                    "reasons": report.reasons,
                })))
            .await?;
            Ok::<_, ControlError>((version, now))
        }
        .await;
        self.store()?.release(prepared).await;
        let (version, now) = result?;
        Ok(DataVersion {
            dataset: name.to_string(),
            version,
            status: report.status.as_str().into(),
            artifact_id,
            source_digest,
            spec_digest,
            rows: report.rows as i64,
            created_by: caller.name().to_string(),
            created_at: now.to_rfc3339(),
            released_by: None,
            revision: 1,
            report,
        })
    }

    /// Every version of a dataset (the profile is included; reading it is audited).
    pub async fn data_versions(&self, caller: &Caller, name: &str) -> Result<Vec<DataVersion>> {
        let name = Name::parse(name)?;
        let permit = self.authorize(caller, Action::DatasetRead, Resource::new(ResourceKind::Dataset, &name)).await?;
        let rows = sqlx::query("SELECT version FROM data_versions WHERE dataset_name = $1 ORDER BY version")
            .bind(name.as_str())
            .fetch_all(self.db.pool())
            .await?;
        let mut out = Vec::new();
        for r in rows {
            out.push(self.data_version_row(name.as_str(), Some(r.try_get("version")?)).await?);
        }
        self.audit_data_read(
            &permit,
            permit.resource(),
            serde_json::json!({"what": "profiles of every version", "versions": out.len()}),
        )
        .await?;
        Ok(out)
    }

    /// Every dataset name with its latest version and status.
    pub async fn data_list(&self, caller: &Caller) -> Result<Vec<(String, i64, String, i64)>> {
        let permit = self.authorize(caller, Action::DatasetRead, Resource::all(ResourceKind::Dataset)).await?;
        let rows = sqlx::query(
            "SELECT d.dataset_name, d.version, d.status, d.rows_count FROM data_versions d \
             WHERE d.version = (SELECT MAX(version) FROM data_versions e WHERE e.dataset_name = d.dataset_name) \
             ORDER BY d.dataset_name",
        )
        .fetch_all(self.db.pool())
        .await?;
        let list = rows
            .iter()
            .map(|r| {
                Ok((r.try_get("dataset_name")?, r.try_get("version")?, r.try_get("status")?, r.try_get("rows_count")?))
            })
            .collect::<Result<Vec<_>>>()?;
        self.record(permit, serde_json::json!({"returned": list.len()})).await?;
        Ok(list)
    }

    /// One version with its profile and checks. Audited as a read of the profile.
    pub async fn data_show(&self, caller: &Caller, reference: &str) -> Result<DataVersion> {
        let (name, version) = parse_dataset_ref(reference)?;
        let resource = Resource::new(ResourceKind::Dataset, &name);
        let permit = self.authorize(caller, Action::DatasetRead, resource.clone()).await?;
        let v = self.data_version_row(name.as_str(), version).await?;
        self.audit_data_read(
            &permit,
            &Resource::dataset_version(&name, v.version),
            serde_json::json!({"what": "profile", "columns": v.report.stored_columns}),
        )
        .await?;
        Ok(v)
    }

    /// Releases a quarantined version (data stewards only).
    pub async fn data_release(&self, caller: &Caller, reference: &str, note: &str) -> Result<DataVersion> {
        let (name, version) = parse_dataset_ref(reference)?;
        let resource = Resource::new(ResourceKind::Dataset, &name);
        let permit = self.authorize(caller, Action::DatasetRelease, resource.clone()).await?;
        let v = self.data_version_row(name.as_str(), version).await?;
        if v.status != "quarantined" {
            return Err(ControlError::Conflict(format!("{name}@{} is {}, not quarantined", v.version, v.status)));
        }
        let mut tx = self.db.begin_audited().await?;
        let now = Timestamp::now();
        let changed = sqlx::query(
            "UPDATE data_versions SET status = 'accepted', released_by = $1, released_at = $2 \
             WHERE dataset_name = $3 AND version = $4 AND status = 'quarantined'",
        )
        .bind(caller.id().to_string())
        .bind(now.0)
        .bind(name.as_str())
        .bind(v.version)
        .execute(&mut *tx.conn())
        .await?;
        if changed.rows_affected() != 1 {
            return Err(ControlError::Conflict(format!("{name}@{} was changed concurrently", v.version)));
        }
        tx.commit(permit.success_on(
            &Resource::dataset_version(&name, v.version),
            serde_json::json!({"note": note, "reasons": v.report.reasons}),
        ))
        .await?;
        self.data_version_row(name.as_str(), Some(v.version)).await
    }

    /// Exports a version as CSV or Parquet to `out` (written atomically).
    pub async fn data_get(
        &self,
        caller: &Caller,
        reference: &str,
        out: &Path,
        format: &str,
        detokenize: bool,
    ) -> Result<DataGetReport> {
        let (name, version) = parse_dataset_ref(reference)?;
        let resource = Resource::new(ResourceKind::Dataset, &name);
        let permit = self.authorize(caller, Action::DatasetRead, resource.clone()).await?;
        if !matches!(format, "csv" | "parquet") {
            return Err(ControlError::Invalid(format!("unknown format {format:?}: use csv or parquet")));
        }
        // Never replace what is there (a file, a link, a device such as /dev/null).
        if out.symlink_metadata().is_ok() {
            return Err(citadel_store::StoreError::OutputExists(out.to_path_buf()).into());
        }
        let v = self.data_version_row(name.as_str(), version).await?;
        let mut permit = permit;
        // A quarantined version is for those who may release it.
        if v.status != "accepted" && !caller.holds(Action::DatasetRelease, &resource) {
            let release = Resource::dataset_version(&name, v.version);
            permit = permit.and(self.authorize(caller, Action::DatasetRelease, release).await?);
        }
        let may_restricted = caller.holds(Action::DatasetReadRestricted, &resource);
        if detokenize {
            permit = permit.and(self.authorize(caller, Action::Detokenize, resource.clone()).await?);
        }
        let mut columns = Vec::new();
        let mut withheld = Vec::new();
        let mut detokenized = Vec::new();
        for c in &v.report.profile {
            if c.classification == "restricted" && !may_restricted {
                withheld.push(c.name.clone());
                continue;
            }
            if detokenize && c.mask.as_deref() == Some("tokenize") {
                detokenized.push(c.name.clone());
            }
            columns.push(c.name.clone());
        }
        // Recorded before any byte leaves the store.
        self.audit_data_read(&permit, &Resource::dataset_version(&name, v.version), serde_json::json!({"what": "rows", "format": format, "columns": columns, "withheld": withheld, "detokenized": detokenized, "output": out.display().to_string()})).await?;
        let work = WorkDir::new(&self.config.workspace)?;
        let dir = self.restore_data(&v, &work.0).await?;
        let protector = if detokenized.is_empty() { None } else { Some(self.data_protector().await?) };
        let (out_path, fmt, cols, detok) =
            (out.to_path_buf(), format.to_string(), columns.clone(), detokenized.clone());
        let rows = tokio::task::spawn_blocking(move || {
            export(&dir.join(citadel_data::ingest::DATA_FILE), &out_path, &fmt, &cols, &detok, protector.as_ref())
        })
        .await
        .map_err(join_err)??;
        Ok(DataGetReport {
            dataset: name.to_string(),
            version: v.version,
            output: out.to_path_buf(),
            format: format.into(),
            rows,
            columns,
            withheld,
            detokenized,
        })
    }

    /// Rows added, removed and changed between two versions (by keyed row
    /// hashes), schema changes and a drift summary.
    pub async fn data_diff(&self, caller: &Caller, from: &str, to: &str) -> Result<DataDiff> {
        let (na, va) = parse_dataset_ref(from)?;
        let (nb, vb) = parse_dataset_ref(to)?;
        let mut permits = Vec::new();
        for n in [&na, &nb] {
            permits.push(self.authorize(caller, Action::DatasetRead, Resource::dataset(n)).await?);
        }
        let a = self.data_version_row(na.as_str(), va).await?;
        let b = self.data_version_row(nb.as_str(), vb).await?;
        for (v, permit) in [&a, &b].into_iter().zip(&permits) {
            self.audit_data_read(
                permit,
                &Resource::dataset_version(&v.dataset, v.version),
                serde_json::json!({"what": "diff", "columns": "row hashes, profile, sample"}),
            )
            .await?;
        }
        let work = WorkDir::new(&self.config.workspace)?;
        let (da, db) = (self.restore_data(&a, &work.0).await?, self.restore_data(&b, &work.0).await?);
        let (ra, rb) = (a.report.clone(), b.report.clone());
        let (rows_from, rows_to) = (ra.rows, rb.rows);
        let (counts, drift) = tokio::task::spawn_blocking(move || {
            let hashes_a = citadel_data::ingest::read_rows(&da.join(citadel_data::ingest::ROWS_FILE))?;
            let hashes_b = citadel_data::ingest::read_rows(&db.join(citadel_data::ingest::ROWS_FILE))?;
            let counts = row_diff(hashes_a, hashes_b);
            let drift = citadel_data::ingest::drift_between(&ra, &da, &rb, &db)?;
            Ok::<_, ControlError>((counts, drift))
        })
        .await
        .map_err(join_err)??;
        let types_a: HashMap<&str, _> = a.report.profile.iter().map(|c| (c.name.as_str(), c.column_type)).collect();
        let types_b: HashMap<&str, _> = b.report.profile.iter().map(|c| (c.name.as_str(), c.column_type)).collect();
        Ok(DataDiff {
            from: format!("{}@{}", a.dataset, a.version),
            to: format!("{}@{}", b.dataset, b.version),
            rows_from,
            rows_to,
            added: counts.added,
            removed: counts.removed,
            changed: counts.keyed.then_some(counts.changed),
            unchanged: counts.unchanged,
            columns_added: b
                .report
                .stored_columns
                .iter()
                .filter(|c| !types_a.contains_key(c.as_str()))
                .cloned()
                .collect(),
            columns_removed: a
                .report
                .stored_columns
                .iter()
                .filter(|c| !types_b.contains_key(c.as_str()))
                .cloned()
                .collect(),
            type_changes: types_b
                .iter()
                .filter_map(|(c, t)| {
                    types_a.get(c).filter(|ta| *ta != t).map(|ta| format!("{c}: {} → {}", ta.as_str(), t.as_str()))
                })
                .collect(),
            drift,
        })
    }
}

struct RowCounts {
    /// Whether the versions declare key columns (key hashes are 0 otherwise).
    keyed: bool,
    added: u64,
    removed: u64,
    changed: u64,
    unchanged: u64,
}

/// Multiset difference of row hashes; among the rows only on one side, those
/// whose key hash is on both sides are counted as changed.
fn row_diff(a: Vec<RowHash>, b: Vec<RowHash>) -> RowCounts {
    let mut count_a: HashMap<u64, (u64, u64)> = HashMap::new();
    for r in &a {
        count_a.entry(r.row).or_insert((0, r.key)).0 += 1;
    }
    let mut only_b_keys: Vec<u64> = Vec::new();
    let mut unchanged = 0u64;
    for r in &b {
        match count_a.get_mut(&r.row) {
            Some((n, _)) if *n > 0 => {
                *n -= 1;
                unchanged += 1;
            }
            _ => only_b_keys.push(r.key),
        }
    }
    let only_a_keys: Vec<u64> = count_a.values().flat_map(|(n, k)| std::iter::repeat_n(*k, *n as usize)).collect();
    let has_keys = a.iter().chain(&b).any(|r| r.key != 0);
    let mut changed = 0u64;
    if has_keys {
        let a_keys: HashSet<u64> = only_a_keys.iter().copied().collect();
        changed = only_b_keys.iter().filter(|k| a_keys.contains(k)).count() as u64;
    }
    RowCounts {
        keyed: has_keys,
        added: only_b_keys.len() as u64 - changed,
        removed: only_a_keys.len() as u64 - changed,
        changed,
        unchanged,
    }
}

/// Writes the chosen columns of a stored table to `out` (temp file, then rename).
fn export(
    data: &Path,
    out: &Path,
    format: &str,
    columns: &[String],
    detokenize: &[String],
    protector: Option<&citadel_crypto::DataProtector>,
) -> Result<u64> {
    use parquet::arrow::ProjectionMask;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let file = std::fs::File::open(data).map_err(|e| io_error(data, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(citadel_data::DataError::from)?;
    let schema = builder.schema().clone();
    let indices: Vec<usize> = columns.iter().filter_map(|c| schema.index_of(c).ok()).collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
    let reader =
        builder.with_projection(mask).with_batch_size(32_768).build().map_err(citadel_data::DataError::from)?;
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(parent).map_err(|e| io_error(parent, e))?;
    let mut rows = 0u64;
    {
        let file = tmp.as_file().try_clone().map_err(|e| io_error(tmp.path(), e))?;
        let mut csv_out = if format == "csv" {
            Some(csv::Writer::from_writer(std::io::BufWriter::new(
                file.try_clone().map_err(|e| io_error(tmp.path(), e))?,
            )))
        } else {
            None
        };
        let mut pq_out: Option<parquet::arrow::ArrowWriter<std::fs::File>> = None;
        let mut header_done = false;
        for batch in reader {
            let batch = batch.map_err(citadel_data::DataError::from)?;
            let batch = match protector {
                Some(p) if !detokenize.is_empty() => detokenize_batch(&batch, detokenize, p)?,
                _ => batch,
            };
            rows += batch.num_rows() as u64;
            if let Some(w) = &mut csv_out {
                if !header_done {
                    w.write_record(batch.schema().fields().iter().map(|f| f.name().as_str()))
                        .map_err(|e| ControlError::Invalid(e.to_string()))?;
                    header_done = true;
                }
                let cols: Vec<ArrayRef> = batch.columns().to_vec();
                for i in 0..batch.num_rows() {
                    let rec: Vec<String> = cols
                        .iter()
                        .map(|c| {
                            if c.is_null(i) {
                                String::new()
                            } else {
                                arrow_cast::display::array_value_to_string(c, i).unwrap_or_default()
                            }
                        })
                        .collect();
                    w.write_record(&rec).map_err(|e| ControlError::Invalid(e.to_string()))?;
                }
            } else {
                if pq_out.is_none() {
                    pq_out = Some(
                        parquet::arrow::ArrowWriter::try_new(
                            file.try_clone().map_err(|e| io_error(tmp.path(), e))?,
                            batch.schema(),
                            None,
                        )
                        .map_err(citadel_data::DataError::from)?,
                    );
                }
                if let Some(w) = &mut pq_out {
                    w.write(&batch).map_err(citadel_data::DataError::from)?;
                }
            }
        }
        if let Some(mut w) = csv_out {
            w.flush().map_err(|e| io_error(out, e))?;
        }
        if let Some(w) = pq_out {
            w.close().map_err(citadel_data::DataError::from)?;
        }
    }
    tmp.as_file().sync_all().map_err(|e| io_error(tmp.path(), e))?;
    // No-clobber: a path created meanwhile is not replaced either.
    tmp.persist_noclobber(out).map_err(|e| io_error(out, e.error))?;
    Ok(rows)
}

fn detokenize_batch(batch: &RecordBatch, columns: &[String], p: &citadel_crypto::DataProtector) -> Result<RecordBatch> {
    let mut arrays = Vec::with_capacity(batch.num_columns());
    for (i, f) in batch.schema().fields().iter().enumerate() {
        let col = batch.column(i);
        if columns.contains(f.name())
            && let Some(s) = col.as_any().downcast_ref::<StringArray>()
        {
            let plain: StringArray =
                s.iter().map(|v| v.map(|t| p.detokenize(t)).transpose()).collect::<Result<_, _>>()?;
            arrays.push(Arc::new(plain) as ArrayRef);
        } else {
            arrays.push(col.clone());
        }
    }
    Ok(RecordBatch::try_new(batch.schema(), arrays).map_err(citadel_data::DataError::from)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_diff_counts_added_removed_and_changed() {
        let h = |row, key| RowHash { row, key, features: 0, label: None };
        let a = vec![h(1, 10), h(2, 20), h(3, 30), h(3, 30)];
        let b = vec![h(1, 10), h(4, 20), h(3, 30), h(5, 50)];
        let c = row_diff(a, b);
        assert_eq!((c.added, c.removed, c.changed, c.unchanged), (1, 1, 1, 2));
    }
}

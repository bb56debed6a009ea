//! Artifacts (`put`, `get`, `ls`), the store's integrity check and garbage collection.

use super::*;

/// What `gc` did: dataset versions purged for retention, then the store's sweep.
#[derive(Debug, Clone, Serialize)]
pub struct GcOutcome {
    #[serde(flatten)]
    pub store: GcReport,
    pub purged: Vec<PurgedVersion>,
    /// Monitoring rows past their retention that were deleted.
    pub monitoring_rows_purged: u64,
}

/// What a read of `info` is decided on: a grant may name the artifact by id
/// or by any of its names, so the first of them the caller holds (the id,
/// and so a recorded denial, if none).
fn read_resource(caller: &Caller, info: &ArtifactInfo) -> Resource {
    let by_id = Resource::artifact(info.id);
    std::iter::once(by_id.clone())
        .chain(info.names.iter().map(Resource::artifact))
        .find(|r| caller.holds(Action::ArtifactGet, r))
        .unwrap_or(by_id)
}

/// An artifact whose read was authorized and recorded
/// ([`Workspace::artifact_open`], its only constructor).
#[derive(Debug)]
pub struct OpenedArtifact {
    info: ArtifactInfo,
    manifest: citadel_store::Manifest,
    index: Option<usize>,
}

impl OpenedArtifact {
    pub fn info(&self) -> &ArtifactInfo {
        &self.info
    }
    /// Every file: path, size (bytes), SHA-256 and chunk list.
    pub fn files(&self) -> &[citadel_store::ManifestFile] {
        &self.manifest.files
    }
    pub fn kind(&self) -> citadel_store::ArtifactKind {
        self.manifest.kind
    }
    /// The one file asked for, if any.
    pub fn file(&self) -> Option<&citadel_store::ManifestFile> {
        self.index.map(|i| &self.manifest.files[i])
    }
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

impl Workspace {
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
            parent_ids.push(self.store()?.resolve(p).await?.id);
        }
        let prepared = match self.store()?.prepare_put(path, progress).await {
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
            let new = self.store()?.commit_put(&mut tx, &prepared, name.as_ref().map(|n| n.as_str()), caller.id()).await?;
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
        self.store()?.release(prepared).await;
        result.map(|_| report)
    }

    pub async fn artifact_get(
        &self,
        caller: &Caller,
        reference: &str,
        out: &Path,
        progress: Option<Arc<dyn Progress>>,
    ) -> Result<GetReport> {
        let info = self.store()?.resolve(reference).await?;
        let permit = self.authorize(caller, Action::ArtifactGet, read_resource(caller, &info)).await?;
        // The read is recorded before any byte leaves the store; a restore
        // that fails after it is recorded as well.
        self.db
            .append_audit(permit.step(
                Action::ArtifactGet.as_str(),
                Outcome::Success,
                serde_json::json!({"artifact": info.id.to_string(), "output": out.display().to_string(), "size": info.size}),
            ))
            .await?;
        match self.store()?.restore(&info, out, progress).await {
            Ok(r) => Ok(r),
            Err(e) => {
                let e = ControlError::from(e);
                self.record_failure(permit, &e).await;
                Err(e)
            }
        }
    }

    /// Opens an artifact for reading over the API: authorizes `artifact.get`
    /// (on its id or any of its names, as [`Workspace::artifact_get`]) and
    /// records the read, with the file and offset asked for, before the
    /// caller can have a byte. Each call is one decision and one record, so
    /// a download resumed in three ranges is three recorded reads.
    ///
    /// `file`: the manifest path of one file (a directory artifact); `None`
    /// for the listing only, or for a file artifact's one file.
    /// Errors: `NotFound` (no such artifact or file), `Denied`, store errors.
    pub async fn artifact_open(
        &self,
        caller: &Caller,
        reference: &str,
        file: Option<&str>,
        offset: u64,
    ) -> Result<OpenedArtifact> {
        let info = self.store()?.resolve(reference).await?;
        let permit = self.authorize(caller, Action::ArtifactGet, read_resource(caller, &info)).await?;
        let manifest = match self.store()?.manifest(&info).await {
            Ok(m) => m,
            Err(e) => {
                let e = ControlError::from(e);
                self.record_failure(permit, &e).await;
                return Err(e);
            }
        };
        let index = match (file, manifest.kind) {
            (Some(path), _) => manifest.files.iter().position(|f| f.path == path),
            (None, citadel_store::ArtifactKind::File) => Some(0),
            (None, citadel_store::ArtifactKind::Directory) => None,
        };
        if file.is_some() && index.is_none() {
            let e = ControlError::NotFound(format!("file {:?} in artifact {}", file.unwrap_or_default(), info.id));
            self.record_failure(permit, &e).await;
            return Err(e);
        }
        self.record(
            permit,
            serde_json::json!({"artifact": info.id.to_string(), "file": index.map(|i| manifest.files[i].path.clone()), "offset": offset, "size": info.size, "via": "api"}),
        )
        .await?;
        Ok(OpenedArtifact { info, manifest, index })
    }

    /// The bytes of an opened artifact's file from `start` (see
    /// [`citadel_store::ArtifactStore::file_stream`]). Only a recorded read
    /// ([`Workspace::artifact_open`]) makes the [`OpenedArtifact`] this needs.
    pub fn artifact_stream(
        &self,
        opened: &OpenedArtifact,
        start: u64,
    ) -> Option<impl futures::Stream<Item = std::result::Result<bytes::Bytes, StoreError>> + Send + 'static + use<>>
    {
        let file = opened.file()?;
        Some(self.store().ok()?.file_stream(file, start))
    }

    /// Decides, before an upload's bytes are accepted, that the caller may
    /// do what the upload is for (`artifact.put`, `dataset.write`,
    /// `model.register` or `pipeline.run` on `resource`). A denial is recorded; an allowance
    /// is not, because staged bytes change nothing: the operation that
    /// commits them authorizes again and records its one success.
    pub async fn precheck_upload(&self, caller: &Caller, action: Action, resource: Resource) -> Result<()> {
        if !matches!(action, Action::ArtifactPut | Action::DatasetWrite | Action::ModelRegister | Action::PipelineRun) {
            return Err(ControlError::Denied {
                principal: caller.name().to_string(),
                action: action.as_str().into(),
                resource: format!(
                    "{resource} (uploads are for artifact.put, dataset.write, model.register and pipeline.run)"
                ),
            });
        }
        self.authorize(caller, action, resource)
            .await?
            .unrecorded("staged upload bytes change nothing until the operation that commits them, which is recorded");
        Ok(())
    }

    pub async fn artifact_list(&self, caller: &Caller) -> Result<Vec<ArtifactInfo>> {
        let permit = self.authorize(caller, Action::ArtifactList, Resource::all(ResourceKind::Artifact)).await?;
        let list = self.store()?.list().await?;
        self.record(permit, serde_json::json!({"returned": list.len()})).await?;
        Ok(list)
    }

    pub async fn fsck(&self, caller: &Caller, progress: Option<Arc<dyn Progress>>) -> Result<FsckReport> {
        let permit = self.authorize(caller, Action::StoreFsck, Resource::all(ResourceKind::Store)).await?;
        let report = self.store()?.fsck(progress).await?;
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
        let report = self.store()?.gc(grace).await?;
        if !purged.is_empty() {
            self.db.truncate_wal().await?;
        }
        self.record(permit, serde_json::json!({"store": report, "versions_purged": purged.len()})).await?;
        Ok(GcOutcome { store: report, purged, monitoring_rows_purged })
    }
}

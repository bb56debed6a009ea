//! Large bytes over the API: resumable uploads, and downloads by range.
//!
//! **Uploads** follow the shape of the tus protocol (without its headers'
//! names): `POST /api/v1/uploads` declares the size and what the bytes are
//! for; `PATCH /api/v1/uploads/{id}` with `Upload-Offset: N` appends from N;
//! `GET` gives the offset the server holds (after a dropped connection the
//! client asks, seeks and goes on); `DELETE` abandons it. The bytes are
//! staged under the server's `uploads/` directory (0700) and are visible
//! nowhere until an operation commits them: `POST /api/v1/artifacts`,
//! `POST /api/v1/datasets/{name}/versions` or `POST /api/v1/models/{name}/versions`
//! name the uploads with their SHA-256, which is checked before the
//! operation runs. A commit that fails leaves the uploads as they were (a
//! retry needs no new upload); one that succeeds removes them.
//!
//! Decisions: the staging directory is local to the server process that
//! took the upload (behind a load balancer, uploads need affinity, or the
//! client starts again cleanly on `404`); an upload survives a server
//! restart (its metadata is a file beside its bytes); one idle for an hour
//! is removed (a client resumes within its run, not days later). Staged bytes are plaintext on the server's disk for the
//! upload's life, as the work directories of `data add` are: the server is
//! the process that holds the keys.
//!
//! **Downloads**: `GET /api/v1/artifacts/{ref}` lists an artifact's files
//! (path, size, SHA-256); `…/content?path=P` streams one file, every chunk
//! authenticated, honouring `Range: bytes=N-` (and `N-M`) so a client
//! resumes where it stopped and checks the whole file's SHA-256 (header
//! `x-citadel-sha256`). Each request is one recorded read. Dataset rows
//! (`…/versions/{v}/rows`) are exported with the caller's columns and
//! streamed whole; a cut download is retried from the start.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use citadel_control::{Caller, RegisterRequest};
use citadel_policy::{Action, Resource, ResourceKind};
use citadel_types::Digest;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::AppState;
use crate::error::ApiError;

/// Files one artifact or model commit may name.
pub const MAX_COMMIT_FILES: usize = 10_000;
/// Uploads one principal may have open at once (one per file of a commit).
pub const MAX_OPEN_UPLOADS: usize = MAX_COMMIT_FILES;
/// Bytes one principal's open uploads may declare in all.
pub const MAX_STAGED_BYTES: u64 = 64 << 30;
/// An upload untouched this long is removed (its plaintext does not linger).
pub const UPLOAD_IDLE: Duration = Duration::from_secs(3600);
/// An upload older than this is removed, however active.
pub const UPLOAD_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// A body that sends nothing for this long ends its request (what arrived is kept).
pub const BODY_IDLE: Duration = Duration::from_secs(30);
/// Free disk space kept beyond an upload's declared size.
const SPACE_MARGIN: u64 = 256 << 20;

/// What an upload's bytes are for; decided (and a denial recorded) when it
/// is created, decided again and recorded when it is committed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    Artifact,
    Dataset,
    Model,
    /// A file a pipeline names (its source, expectations, policy, code).
    Pipeline,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct UploadMeta {
    id: String,
    /// The principal id of the creator: nobody else sees or uses it.
    owner: String,
    size: u64,
    purpose: Purpose,
    name: Option<String>,
    /// Seconds since the Unix epoch.
    #[serde(default)]
    created: u64,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The server's staged uploads (see the module docs).
#[derive(Debug)]
pub struct Uploads {
    dir: PathBuf,
    open: Mutex<HashMap<String, Arc<Upload>>>,
}

#[derive(Debug)]
struct Upload {
    meta: UploadMeta,
    /// One append at a time; and the SHA-256 of the bytes appended so far
    /// with their count (`None` after a restart or a failed append: the
    /// commit then hashes the file).
    writing: tokio::sync::Mutex<Option<(u64, citadel_types::Sha256)>>,
}

fn io_err(what: &str, e: std::io::Error) -> ApiError {
    log_cause(what, &e);
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the server could not complete the request; its log has the cause",
    )
}

/// The server's log (stderr): the cause of a 5xx, never a caller's bytes.
fn log_cause(what: &str, e: &dyn std::fmt::Display) {
    eprintln!("citadel server: {what}: {e}");
}

impl Uploads {
    /// Opens (creating, 0700) `dir` and loads the uploads a previous run
    /// left; removes those idle past [`UPLOAD_IDLE`] and stray files.
    pub fn open(dir: PathBuf) -> std::io::Result<Uploads> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        let uploads = Uploads { dir, open: Mutex::new(HashMap::new()) };
        for entry in std::fs::read_dir(&uploads.dir)?.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                let meta = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<UploadMeta>(&b).ok());
                match meta {
                    Some(m) if uploads.part(&m.id).exists() && valid_id(&m.id) => {
                        uploads.lock().insert(m.id.clone(), Arc::new(Upload { meta: m, writing: Default::default() }));
                    }
                    _ => {
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
        }
        for entry in std::fs::read_dir(&uploads.dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let id = name.trim_end_matches(".part").trim_end_matches(".json");
            if !uploads.lock().contains_key(id) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        uploads.expire();
        Ok(uploads)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Upload>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn part(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.part"))
    }

    fn meta_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Removes uploads idle past [`UPLOAD_IDLE`] or older than [`UPLOAD_LIFETIME`]
    /// (at each new upload, and every minute while the server runs).
    pub fn expire(&self) {
        let now = now_secs();
        let idle: Vec<String> = self
            .lock()
            .values()
            .filter(|u| {
                let old = now.saturating_sub(u.meta.created) > UPLOAD_LIFETIME.as_secs();
                old || std::fs::metadata(self.part(&u.meta.id))
                    .and_then(|m| m.modified())
                    .map(|t| SystemTime::now().duration_since(t).unwrap_or_default() > UPLOAD_IDLE)
                    .unwrap_or(true)
            })
            .map(|u| u.meta.id.clone())
            .collect();
        for id in idle {
            self.remove(&id);
        }
    }

    fn remove(&self, id: &str) {
        self.lock().remove(id);
        let _ = std::fs::remove_file(self.part(id));
        let _ = std::fs::remove_file(self.meta_path(id));
    }

    /// The caller's upload `id`; another principal's is not found (its
    /// existence is not revealed).
    fn get(&self, caller: &Caller, id: &str) -> Result<Arc<Upload>, ApiError> {
        self.lock().get(id).filter(|u| u.meta.owner == caller.id()).cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no upload {id:?} of yours (it may have expired: start again)"),
            )
        })
    }

    fn offset(&self, id: &str) -> u64 {
        std::fs::metadata(self.part(id)).map(|m| m.len()).unwrap_or(0)
    }
}

fn valid_id(id: &str) -> bool {
    id.starts_with("up-") && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUpload {
    /// Total bytes the upload will hold.
    size: u64,
    /// What the bytes are for: `artifact`, `dataset` or `model`.
    #[serde(rename = "for")]
    purpose: Purpose,
    /// The artifact, dataset or model name it will be committed as (an
    /// artifact's may be absent).
    #[serde(default)]
    name: Option<String>,
}

fn status_json(u: &UploadMeta, offset: u64) -> Value {
    json!({"id": u.id, "size": u.size, "offset": offset, "for": u.purpose, "name": u.name})
}

/// `POST /api/v1/uploads`.
pub async fn create(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Json(req): Json<NewUpload>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (action, resource) = match (&req.purpose, &req.name) {
        (Purpose::Artifact, name) => (Action::ArtifactPut, Resource::artifact(name.as_deref().unwrap_or("*"))),
        (Purpose::Dataset, Some(n)) => (Action::DatasetWrite, Resource::new(ResourceKind::Dataset, checked_name(n)?)),
        (Purpose::Model, Some(n)) => (Action::ModelRegister, Resource::new(ResourceKind::Model, checked_name(n)?)),
        (Purpose::Pipeline, Some(n)) => (Action::PipelineRun, Resource::new(ResourceKind::Pipeline, checked_name(n)?)),
        (_, None) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "a dataset or model upload names what it is for: \"name\"",
            ));
        }
    };
    st.ws.precheck_upload(&caller, action, resource).await?;
    let uploads = &st.uploads;
    uploads.expire();
    // Checked and inserted under one lock: concurrent creates cannot both
    // pass a limit.
    let mut open = uploads.lock();
    let mine: Vec<&Arc<Upload>> = open.values().filter(|u| u.meta.owner == caller.id()).collect();
    let declared: u64 = mine.iter().map(|u| u.meta.size).sum();
    if mine.len() >= MAX_OPEN_UPLOADS || declared.saturating_add(req.size) > MAX_STAGED_BYTES {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_uploads",
            format!(
                "your open uploads ({}, {declared} bytes) leave no room for {} more bytes (at most {MAX_OPEN_UPLOADS} uploads, {MAX_STAGED_BYTES} bytes); commit or DELETE some",
                mine.len(),
                req.size
            ),
        ));
    }
    let free = nix::sys::statvfs::statvfs(&uploads.dir)
        .map(|s| s.blocks_available().saturating_mul(s.fragment_size()))
        .unwrap_or(0);
    let staged: u64 = open.values().map(|u| u.meta.size.saturating_sub(uploads.offset(&u.meta.id))).sum();
    if req.size.saturating_add(staged).saturating_add(SPACE_MARGIN) > free {
        return Err(ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "no_space",
            format!("the server cannot stage {} bytes now; retry later or ask its operator", req.size),
        ));
    }
    let meta = UploadMeta {
        id: citadel_types::random_id("up-"),
        owner: caller.id().to_string(),
        size: req.size,
        purpose: req.purpose,
        name: req.name,
        created: now_secs(),
    };
    // Durable before it is acknowledged: the part file, the metadata and
    // their directory entries.
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(uploads.part(&meta.id))?;
        let tmp = uploads.dir.join(format!(".{}.json", meta.id));
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        std::io::Write::write_all(&mut f, &serde_json::to_vec(&meta).unwrap_or_default())?;
        f.sync_all()?;
        std::fs::rename(&tmp, uploads.meta_path(&meta.id))?;
        std::fs::File::open(&uploads.dir)?.sync_all()
    };
    write().map_err(|e| io_err("creating an upload", e))?;
    let body = status_json(&meta, 0);
    let fresh = tokio::sync::Mutex::new(Some((0, citadel_types::Sha256::default())));
    open.insert(meta.id.clone(), Arc::new(Upload { meta, writing: fresh }));
    drop(open);
    Ok((StatusCode::CREATED, Json(body)))
}

fn checked_name(n: &str) -> Result<&str, ApiError> {
    citadel_types::Name::parse(n).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string()))?;
    Ok(n)
}

/// `GET /api/v1/uploads/{id}`: how many bytes the server holds.
pub async fn status(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<Value>, ApiError> {
    let u = st.uploads.get(&caller, &id)?;
    Ok(Json(status_json(&u.meta, st.uploads.offset(&id))))
}

/// `DELETE /api/v1/uploads/{id}`.
pub async fn abandon(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<StatusCode, ApiError> {
    let u = st.uploads.get(&caller, &id)?;
    let _writing = u.writing.lock().await;
    st.uploads.remove(&id);
    Ok(StatusCode::NO_CONTENT)
}

/// `PATCH /api/v1/uploads/{id}` with `Upload-Offset: N`: appends the body
/// at N, which must be the offset the server holds (else `409` with it).
/// What arrives before a dropped connection or an idle body is kept; the
/// answer's `Upload-Offset` is what the server holds (after a server crash,
/// what survived it: the client asks before it resumes).
pub async fn append(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let u = st.uploads.get(&caller, &id)?;
    let Ok(mut hashed) = u.writing.try_lock() else {
        return Err(ApiError::new(StatusCode::CONFLICT, "conflict", "another request is appending to this upload"));
    };
    let offset: u64 =
        headers.get("upload-offset").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "Upload-Offset: N (the bytes the server holds) is required",
            )
        })?;
    let held = st.uploads.offset(&id);
    if offset != held {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "offset_mismatch",
            format!("the server holds {held} bytes of this upload, not {offset}: send from {held}"),
        ));
    }
    let path = st.uploads.part(&id);
    let mut file =
        tokio::fs::OpenOptions::new().append(true).open(&path).await.map_err(|e| io_err("opening an upload", e))?;
    let mut stream = body.into_data_stream();
    let mut written = held;
    // The running digest goes on only from where it stopped.
    let mut hasher = hashed.take().filter(|(n, _)| *n == held).map(|(_, h)| h);
    let mut refusal = None;
    loop {
        let next = match tokio::time::timeout(BODY_IDLE, stream.next()).await {
            Err(_) => {
                refusal = Some(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "timeout",
                    format!(
                        "the body sent nothing for {} s; what arrived is kept: resume from the offset",
                        BODY_IDLE.as_secs()
                    ),
                ));
                break;
            }
            Ok(None) => break,
            // The client went away: keep what arrived.
            Ok(Some(Err(_))) => break,
            Ok(Some(Ok(bytes))) => bytes,
        };
        if written + next.len() as u64 > u.meta.size {
            refusal = Some(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the upload was declared as {} bytes; the body goes past it", u.meta.size),
            ));
            break;
        }
        file.write_all(&next).await.map_err(|e| io_err("writing an upload", e))?;
        if let Some(h) = hasher.as_mut() {
            h.update(&next);
        }
        written += next.len() as u64;
    }
    // Flushed to the file, not synced to the disk: staged bytes are not
    // platform state, and a client always asks the offset again before it
    // resumes, so bytes a server crash loses are sent again (the commit's
    // SHA-256 covers the whole). Not syncing lets the bytes go from the page
    // cache into the store without being written to the disk twice.
    file.flush().await.map_err(|e| io_err("writing an upload", e))?;
    *hashed = hasher.map(|h| (written, h));
    // Bytes arrived: not idle (an empty append keeps nothing alive).
    if written > held {
        let _ = file.into_std().await.set_modified(SystemTime::now());
    }
    if let Some(r) = refusal {
        return Err(r);
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&written.to_string()) {
        resp.headers_mut().insert("upload-offset", v);
    }
    Ok(resp)
}

/// One file of a commit: where it goes, which upload holds it, its SHA-256.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitFile {
    /// `/`-separated relative path (a directory) or the file's name.
    path: String,
    upload: String,
    sha256: String,
}

/// Files staged for one operation, in a private directory under the
/// workspace's `tmp/` that is removed when this is dropped.
struct Staged {
    dir: tempfile::TempDir,
    root: PathBuf,
    uploads: Vec<String>,
}

/// Checks `files` (the caller's, complete, their SHA-256 as claimed) and
/// links them into a fresh directory: the file itself (`directory` false, one
/// file) or a tree.
async fn stage(
    st: &AppState,
    caller: &Caller,
    files: Vec<CommitFile>,
    directory: bool,
    purpose: Purpose,
) -> Result<Staged, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m);
    let may_be_empty = purpose == Purpose::Pipeline;
    if (files.is_empty() && !may_be_empty) || files.len() > MAX_COMMIT_FILES {
        return Err(bad(format!("a commit names 1 to {MAX_COMMIT_FILES} files")));
    }
    if !directory && files.len() != 1 {
        return Err(bad("a file (not a directory) is one upload".into()));
    }
    let tmp = st.ws.config.workspace.join("tmp");
    std::fs::create_dir_all(&tmp).map_err(|e| io_err("creating tmp", e))?;
    let dir =
        tempfile::Builder::new().prefix(".upload-").tempdir_in(&tmp).map_err(|e| io_err("staging a commit", e))?;
    let root = if directory { dir.path().join("tree") } else { dir.path().to_path_buf() };
    std::fs::create_dir_all(&root).map_err(|e| io_err("staging a commit", e))?;
    let mut seen = std::collections::HashSet::new();
    let mut ids = Vec::new();
    let mut target_of_file = None;
    for f in files {
        let rel = safe_relative(&f.path)
            .ok_or_else(|| bad(format!("{:?} is not a relative path of plain names (no .., no leading /)", f.path)))?;
        if !directory && rel.components().count() != 1 {
            return Err(bad(format!("{:?}: a file upload is named by its file name only", f.path)));
        }
        if !seen.insert(rel.clone()) {
            return Err(bad(format!("{:?} is named twice", f.path)));
        }
        let claimed: Digest =
            f.sha256.parse().map_err(|_| bad(format!("{:?} is not a SHA-256 (64 hex digits)", f.sha256)))?;
        let u = st.uploads.get(caller, &f.upload)?;
        if u.meta.purpose != purpose {
            return Err(bad(format!("upload {} was made for {:?}, not {purpose:?}", f.upload, u.meta.purpose)));
        }
        let held = st.uploads.offset(&f.upload);
        if held != u.meta.size {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "incomplete",
                format!("upload {} holds {held} of {} bytes: send the rest first", f.upload, u.meta.size),
            ));
        }
        let part = st.uploads.part(&f.upload);
        let running = {
            let Ok(mut w) = u.writing.try_lock() else {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    format!("upload {} is being appended to", f.upload),
                ));
            };
            w.take().filter(|(n, _)| *n == held).map(|(_, h)| h.finish())
        };
        let actual = match running {
            Some(d) => d,
            None => {
                let part = part.clone();
                tokio::task::spawn_blocking(move || digest_of(&part))
                    .await
                    .map_err(|e| io_err("hashing an upload", std::io::Error::other(e)))?
                    .map_err(|e| io_err("hashing an upload", e))?
            }
        };
        if actual != claimed {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "digest_mismatch",
                format!(
                    "upload {} has SHA-256 {}, not the {} claimed for {:?}: upload it again",
                    f.upload,
                    actual.to_hex(),
                    claimed.to_hex(),
                    f.path
                ),
            ));
        }
        let target = root.join(&rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_err("staging a commit", e))?;
        }
        // A link: a failed commit leaves the upload for a retry.
        if std::fs::hard_link(&part, &target).is_err() {
            std::fs::copy(&part, &target).map_err(|e| io_err("staging a commit", e))?;
        }
        target_of_file = Some(target);
        ids.push(f.upload);
    }
    let root = if directory { root } else { target_of_file.unwrap_or(root) };
    Ok(Staged { dir, root, uploads: ids })
}

impl Staged {
    fn done(self, st: &AppState) {
        for id in &self.uploads {
            st.uploads.remove(id);
        }
        drop(self.dir);
    }
}

fn digest_of(path: &Path) -> std::io::Result<Digest> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = citadel_types::Sha256::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finish());
        }
        h.update(&buf[..n]);
    }
}

/// A commit's file path as a relative path of plain names only (no `..`,
/// no `.`, no root, no `\\`, no NUL), at most 4,096 bytes; else `None`.
pub fn safe_relative(p: &str) -> Option<PathBuf> {
    if p.is_empty() || p.len() > 4096 || p.contains('\\') || p.contains('\0') {
        return None;
    }
    let path = Path::new(p);
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactCommit {
    files: Vec<CommitFile>,
    /// `true`: the files are a directory artifact.
    #[serde(default)]
    directory: bool,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    parents: Vec<String>,
}

/// `POST /api/v1/artifacts`: commits uploads as one artifact.
pub async fn artifact_commit(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Json(req): Json<ArtifactCommit>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let staged = stage(&st, &caller, req.files, req.directory, Purpose::Artifact).await?;
    let report = st.ws.artifact_put(&caller, &staged.root, req.name.as_deref(), &req.parents, None).await?;
    staged.done(&st);
    Ok((StatusCode::CREATED, Json(serde_json::to_value(report).unwrap_or(Value::Null))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetCommit {
    /// The CSV or Parquet file (its name's extension says which).
    file: CommitFile,
    /// The expectations file's text.
    #[serde(default)]
    spec: Option<String>,
}

/// `POST /api/v1/datasets/{name}/versions`: ingests an upload as the next version.
pub async fn dataset_commit(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    Json(req): Json<DatasetCommit>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let staged = stage(&st, &caller, vec![req.file], false, Purpose::Dataset).await?;
    let version = st.ws.data_add(&caller, &staged.root, &name, req.spec, Arc::new(|_| {})).await?;
    staged.done(&st);
    Ok((StatusCode::CREATED, Json(serde_json::to_value(version).unwrap_or(Value::Null))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCommit {
    files: Vec<CommitFile>,
    #[serde(default)]
    directory: bool,
    #[serde(default)]
    datasets: Vec<String>,
    #[serde(default)]
    code_ref: Option<String>,
    #[serde(default)]
    params: Option<Value>,
}

/// `POST /api/v1/models/{name}/versions`: registers uploads as the next
/// version (scan, sign, store, provenance, as `citadel model register`).
pub async fn model_commit(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    Json(req): Json<ModelCommit>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let staged = stage(&st, &caller, req.files, req.directory, Purpose::Model).await?;
    let register = RegisterRequest {
        path: staged.root.clone(),
        name,
        datasets: req.datasets,
        code_ref: req.code_ref,
        params: req.params,
    };
    let version = st.ws.model_register(&caller, &register).await?;
    staged.done(&st);
    Ok((StatusCode::CREATED, Json(serde_json::to_value(version).unwrap_or(Value::Null))))
}

/// `GET /api/v1/artifacts/{ref}`: the artifact and its files (a recorded read).
pub async fn artifact_describe(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    axum::extract::Path(reference): axum::extract::Path<String>,
) -> Result<Json<Value>, ApiError> {
    let opened = st.ws.artifact_open(&caller, &reference, None, 0).await?;
    let info = opened.info();
    Ok(Json(json!({
        "id": info.id.to_string(),
        "kind": opened.kind().as_str(),
        "size": info.size,
        "names": info.names,
        "created_by": info.created_by,
        "created_at": info.created_at.to_rfc3339(),
        "files": opened.files().iter().map(|f| json!({"path": f.path, "size": f.size, "sha256": f.sha256.to_hex(), "executable": f.executable})).collect::<Vec<_>>(),
    })))
}

#[derive(Debug, Deserialize)]
pub struct ContentQuery {
    #[serde(default)]
    path: Option<String>,
}

fn parse_range(headers: &HeaderMap) -> Option<(u64, Option<u64>)> {
    parse_range_value(headers.get(header::RANGE)?.to_str().ok()?)
}

/// A `Range` header's value: `bytes=N-` or `bytes=N-M` (one range, `M` ≥
/// `N`, inclusive) as `(N, M)`; anything else is `None`, and the whole
/// file is sent, as RFC 9110 §14.2 allows a server to do.
pub fn parse_range_value(v: &str) -> Option<(u64, Option<u64>)> {
    let v = v.strip_prefix("bytes=")?;
    let (a, b) = v.split_once('-')?;
    let start = a.trim().parse().ok()?;
    let end = if b.trim().is_empty() { None } else { Some(b.trim().parse().ok()?) };
    if end.is_some_and(|e| e < start) {
        return None;
    }
    Some((start, end))
}

/// `GET /api/v1/artifacts/{ref}/content?path=P`: one file's bytes, by range.
pub async fn artifact_content(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    axum::extract::Path(reference): axum::extract::Path<String>,
    Query(q): Query<ContentQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let range = parse_range(&headers);
    let start = range.map(|r| r.0).unwrap_or(0);
    let opened = st.ws.artifact_open(&caller, &reference, q.path.as_deref(), start).await?;
    let Some(file) = opened.file() else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "a directory artifact's content is read one file at a time: ?path=FILE (GET the artifact for its files)",
        ));
    };
    let size = file.size;
    let sha = file.sha256.to_hex();
    if range.is_some() && start >= size && size > 0 {
        let mut r = ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, "bad_range", format!("the file has {size} bytes"))
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
            r.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        return Ok(r);
    }
    let end = range.and_then(|r| r.1).map(|e| e.min(size.saturating_sub(1))).unwrap_or(size.saturating_sub(1));
    let len = if size == 0 { 0 } else { end + 1 - start };
    let stream = st
        .ws
        .artifact_stream(&opened, start)
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", "no file named"))?;
    // Bounded to the range; a chunk that fails authentication ends the
    // body early (the client sees a short body and a digest mismatch).
    let body = stream.scan(len, |left, item| {
        if *left == 0 {
            return std::future::ready(None);
        }
        let out = match item {
            Ok(b) => {
                let take = (*left).min(b.len() as u64) as usize;
                *left -= take as u64;
                Ok(b.slice(..take))
            }
            Err(e) => {
                log_cause("reading an artifact", &e);
                *left = 0;
                Err(std::io::Error::other("the artifact could not be read"))
            }
        };
        std::future::ready(Some(out))
    });
    let mut resp = Response::new(Body::from_stream(body));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Ok(v) = HeaderValue::from_str(&sha) {
        h.insert("x-citadel-sha256", v);
    }
    if range.is_some() && size > 0 {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{size}")) {
            resp.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(resp)
}

#[derive(Debug, Deserialize)]
pub struct RowsQuery {
    #[serde(default = "csv")]
    format: String,
    #[serde(default)]
    detokenize: bool,
}

fn csv() -> String {
    "csv".into()
}

/// `GET /api/v1/datasets/{name}/versions/{version}/rows`: the version's
/// rows as the caller may see them (`data get`), streamed.
pub async fn dataset_rows(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    axum::extract::Path((name, version)): axum::extract::Path<(String, i64)>,
    Query(q): Query<RowsQuery>,
) -> Result<Response, ApiError> {
    let tmp = st.ws.config.workspace.join("tmp");
    std::fs::create_dir_all(&tmp).map_err(|e| io_err("creating tmp", e))?;
    let dir = tempfile::Builder::new().prefix(".rows-").tempdir_in(&tmp).map_err(|e| io_err("exporting rows", e))?;
    let out = dir.path().join(format!("rows.{}", q.format));
    let report = st.ws.data_get(&caller, &format!("{name}@{version}"), &out, &q.format, q.detokenize).await?;
    let file = tokio::fs::File::open(&out).await.map_err(|e| io_err("exporting rows", e))?;
    let len = file.metadata().await.map_err(|e| io_err("exporting rows", e))?.len();
    // The directory lives as long as the body: removed when it is sent or dropped.
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 << 10).map(move |b| {
        let _keep = &dir;
        b
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(if q.format == "parquet" { "application/vnd.apache.parquet" } else { "text/csv" }),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    let summary = json!({"rows": report.rows, "columns": report.columns, "withheld": report.withheld, "detokenized": report.detokenized});
    if let Ok(v) = HeaderValue::from_str(&summary.to_string()) {
        h.insert("x-citadel-export", v);
    }
    Ok(resp)
}

/// `GET /api/v1/serving/models/{name}/versions/{version}`: the served file
/// of a deployed version, verified here, for a gateway that holds no key
/// (`citadel serve --control`). Headers: `x-citadel-sha256` (of the body)
/// and `x-citadel-root-digest` (the signed digest of the version's files).
pub async fn serving_model(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    axum::extract::Path((name, version)): axum::extract::Path<(String, i64)>,
) -> Result<Response, ApiError> {
    let verified = st.ws.model_for_serving(&caller, &name, version).await?;
    let root_digest = verified.root_digest.clone();
    let (file, sha, len) = tokio::task::spawn_blocking(move || {
        let file = citadel_serve::serving::servable_onnx(&verified.path)
            .map_err(|m| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "not_servable", m))?;
        let sha = digest_of(&file).map_err(|e| io_err("reading a verified model", e))?;
        let f = std::fs::File::open(&file).map_err(|e| io_err("reading a verified model", e))?;
        let len = f.metadata().map_err(|e| io_err("reading a verified model", e))?.len();
        // Open: the file stays readable after the verified directory goes.
        drop(verified);
        Ok::<_, ApiError>((f, sha, len))
    })
    .await
    .map_err(|e| io_err("reading a verified model", std::io::Error::other(e)))??;
    let stream = tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(file), 256 << 10);
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let (Ok(s), Ok(r)) = (HeaderValue::from_str(&sha.to_hex()), HeaderValue::from_str(&root_digest)) {
        h.insert("x-citadel-sha256", s);
        h.insert("x-citadel-root-digest", r);
    }
    Ok(resp)
}

/// What a pipeline sent to the server may name: files beneath its own
/// staging directory only (relative, plain names), no read paths beyond
/// them, and no external training command. A sandboxed command trainer runs
/// where its code, read paths and secrets were set up by the server's
/// operator: on the server's host, without `CITADEL_URL`.
fn confine_pipeline(table: &toml::Table) -> Result<(), String> {
    let get = |section: &str, key: &str| table.get(section).and_then(|s| s.get(key));
    for (section, key) in [("ingest", "source"), ("ingest", "expectations"), ("gate", "policy"), ("train", "code")] {
        match get(section, key) {
            None => {}
            Some(toml::Value::String(p)) if safe_relative(p.trim_start_matches("./")).is_some() => {}
            Some(_) => {
                return Err(format!(
                    "{section}.{key} must name a file sent with the pipeline, relative to it (no absolute path, no ..)"
                ));
            }
        }
    }
    if get("train", "read_paths").and_then(|v| v.as_array()).is_some_and(|a| !a.is_empty()) {
        return Err(
            "train.read_paths is not accepted through the server: run such a pipeline on the server's host".into()
        );
    }
    if get("train", "trainer").and_then(|v| v.as_str()) == Some("command") {
        return Err("an external training command (trainer = \"command\") runs only on the server's host, where its code and secrets are set up: run it there without CITADEL_URL".into());
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// The pipeline file's text.
    pipeline: String,
    /// The files it names, by the relative paths it names them with.
    #[serde(default)]
    files: Vec<CommitFile>,
}

/// `POST /api/v1/runs`: runs a pipeline on the server with the files it
/// names (uploaded for `pipeline`, by their relative paths), checked whole
/// first. The run goes to its end even if the client goes; its report is
/// the answer.
pub async fn run_commit(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Json(req): Json<RunRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_pipeline", m);
    // Decided before the text is looked at any further: who may run it.
    let table: toml::Table =
        req.pipeline.parse().map_err(|e: toml::de::Error| bad(format!("not TOML: {}", e.message())))?;
    let name = table
        .get("pipeline")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .ok_or_else(|| bad("[pipeline] name is missing".into()))?
        .to_string();
    st.ws
        .precheck_upload(&caller, Action::PipelineRun, Resource::new(ResourceKind::Pipeline, checked_name(&name)?))
        .await?;
    confine_pipeline(&table).map_err(bad)?;
    if req.files.iter().any(|f| f.path == "pipeline.toml") {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "a pipeline's files may not be named pipeline.toml",
        ));
    }
    // Runs at once are few: each holds a blocking thread, CPU and disk.
    let Ok(slot) = st.long_jobs.clone().try_acquire_owned() else {
        return Err(ApiError {
            retry_after_secs: Some(30),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "busy",
                "the server is running as many pipelines and erasures as it takes; retry later",
            )
        });
    };
    let staged = stage(&st, &caller, req.files, true, Purpose::Pipeline).await?;
    let path = staged.root.join("pipeline.toml");
    std::fs::write(&path, &req.pipeline).map_err(|e| io_err("staging a pipeline", e))?;
    let spec = citadel_control::pipeline_spec::PipelineSpec::parse(&req.pipeline, &path).map_err(|problems| {
        // Paths in the problems are the server's staging paths: said relative.
        let root = format!("{}/", staged.root.display());
        let said: Vec<String> = problems.iter().map(|p| p.replace(&root, "")).collect();
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_pipeline",
            format!("the pipeline file has {} problem(s): {}", said.len(), said.join("; ")),
        )
    })?;
    let helper = std::env::current_exe().map_err(|e| io_err("finding the citadel binary (the training sandbox)", e))?;
    let opts = citadel_control::RunOptions { helper, progress: Arc::new(|_, _| {}) };
    let (ws, handle, text) = (st.ws.clone(), tokio::runtime::Handle::current(), req.pipeline.clone());
    let root = format!("{}/", staged.root.display());
    // The slot is the job's, not the request's: held until the run ends.
    let report = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        handle.block_on(ws.pipeline_run(&caller, &spec, &text, &opts))
    })
    .await
    .map_err(|e| io_err("running a pipeline", std::io::Error::other(e)))?
    .map_err(|e| {
        // The staging directory is the server's: said relative.
        let mut a = ApiError::from(e);
        a.message = a.message.replace(&root, "");
        a
    })?;
    staged.done(&st);
    Ok((StatusCode::CREATED, Json(serde_json::to_value(report).unwrap_or(Value::Null))))
}

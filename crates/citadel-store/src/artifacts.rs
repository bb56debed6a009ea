//! Immutable, content-addressed, deduplicated, encrypted artifacts.
//!
//! A put runs in three phases:
//! 1. **Write objects.** Files are cut into content-defined chunks (FastCDC);
//!    each new chunk is compressed (zstd, skipped when it would not help),
//!    sealed (AES-256-GCM, see `citadel_crypto::ChunkCipher`) and written
//!    under `chunks/<keyed hash>`. The manifest (file list, sizes, digests,
//!    chunk names) is sealed the same way under `manifests/<keyed hash>`.
//! 2. **Sync.** One `syncfs` (local) makes all objects durable.
//! 3. **Commit.** One database transaction records the artifact, its chunks
//!    and its audit record. Only now is the artifact visible.
//!
//! Garbage collection must not delete a chunk that a running put has just
//! deduplicated against, so puts and gc hold *leases* in the database and
//! exclude each other.
//!
//! The artifact id is the SHA-256 of the file's bytes; for a directory it is
//! the SHA-256 of its canonical listing:
//! `"citadel-tree-v1\n"` then, per regular file in byte order of its
//! `/`-separated relative path, `path \0 size \0 sha256-hex \0 x|- \n`
//! (`x` when executable). Empty directories are not recorded.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, AnyPool, Row};

use citadel_crypto::{ChunkCipher, DataKey, ObjectNamer};
use citadel_types::{ArtifactId, Digest, Sha256, Timestamp};

use crate::db::Db;
use crate::objects::ObjectBackend;
use crate::{AuditedTx, Result, StoreError};

/// Content-defined chunking bounds. Defaults: 64 KiB / 256 KiB / 1 MiB,
/// small enough that a 1% edit re-stores little, large enough that a 1 GiB
/// file is ~4,000 objects.
#[derive(Debug, Clone, Copy)]
pub struct ChunkParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for ChunkParams {
    fn default() -> Self {
        ChunkParams { min: 64 * 1024, avg: 256 * 1024, max: 1024 * 1024 }
    }
}

/// Receives progress of long operations (the CLI draws a bar with it).
pub trait Progress: Send + Sync {
    fn add_total(&self, bytes: u64);
    fn advance(&self, bytes: u64);
}

struct NoProgress;
impl Progress for NoProgress {
    fn add_total(&self, _: u64) {}
    fn advance(&self, _: u64) {}
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactKind {
    File,
    Directory,
}

impl ArtifactKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::File => "file",
            ArtifactKind::Directory => "directory",
        }
    }
}

/// One file of an artifact: where it goes and which chunks rebuild it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Relative `/`-separated path (a directory artifact) or the original
    /// file name (a file artifact).
    pub path: String,
    pub size: u64,
    pub sha256: Digest,
    #[serde(default)]
    pub executable: bool,
    /// (object name, plaintext length) in file order.
    pub chunks: Vec<(String, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub kind: ArtifactKind,
    pub files: Vec<ManifestFile>,
}

/// Bytes written between two background syncs during a put.
const FLUSH_EVERY: u64 = 64 << 20;
const MANIFEST_FORMAT: &str = "citadel-manifest-v1";
/// A manifest is rejected above this size (≈ 2 million files).
const MAX_MANIFEST: usize = 512 << 20;

impl Manifest {
    /// The artifact id this manifest describes (see the module docs).
    pub fn artifact_id(&self) -> ArtifactId {
        match self.kind {
            ArtifactKind::File => ArtifactId(self.files.first().map(|f| f.sha256).unwrap_or(Digest::of(b""))),
            ArtifactKind::Directory => {
                let mut h = Sha256::default();
                h.update(b"citadel-tree-v1\n");
                for f in &self.files {
                    h.update(f.path.as_bytes());
                    h.update(
                        format!("\0{}\0{}\0{}\n", f.size, f.sha256, if f.executable { "x" } else { "-" }).as_bytes(),
                    );
                }
                ArtifactId(h.finish())
            }
        }
    }

    /// Checks what a manifest read back from storage promises: safe relative
    /// paths, sorted and unique, chunk lengths adding up to file sizes.
    fn validate(&self) -> Result<()> {
        let bad = |m: String| StoreError::Malformed(format!("manifest: {m}"));
        if self.format != MANIFEST_FORMAT {
            return Err(bad(format!("unknown format {:?}", self.format)));
        }
        if self.kind == ArtifactKind::File && self.files.len() != 1 {
            return Err(bad("a file artifact must have exactly one file".into()));
        }
        let mut prev: Option<&str> = None;
        for f in &self.files {
            if self.kind == ArtifactKind::Directory {
                check_relative_path(&f.path).map_err(|e| bad(format!("path {:?}: {e}", f.path)))?;
                if prev.is_some_and(|p| p >= f.path.as_str()) {
                    return Err(bad("paths are not sorted and unique".into()));
                }
                prev = Some(&f.path);
            }
            let total: u64 = f.chunks.iter().map(|c| c.1 as u64).sum();
            if total != f.size {
                return Err(bad(format!("chunks of {:?} add up to {total} bytes, not {}", f.path, f.size)));
            }
        }
        Ok(())
    }
}

/// A relative path is safe when every component is a normal name: no root,
/// no `..`, no `.`, no empty segment, no backslash or NUL.
fn check_relative_path(p: &str) -> std::result::Result<(), &'static str> {
    if p.is_empty() || p.len() > 4096 {
        return Err("empty or too long");
    }
    if p.contains('\\') || p.contains('\0') {
        return Err("contains a backslash or NUL");
    }
    for seg in p.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err("has an empty, '.' or '..' segment");
        }
    }
    if Path::new(p).components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err("is not a plain relative path");
    }
    Ok(())
}

/// What the database knows about an artifact.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ArtifactInfo {
    pub id: ArtifactId,
    pub kind: ArtifactKind,
    pub size: u64,
    pub file_count: u64,
    pub chunk_count: u64,
    /// Stored bytes this artifact added when first put (after dedup).
    pub stored_bytes_new: u64,
    pub names: Vec<String>,
    pub created_by: String,
    pub created_at: Timestamp,
    #[serde(skip)]
    pub manifest_object: String,
}

/// The result of phase 1 and 2 of a put: objects written and durable, not
/// yet visible. Pass it to [`ArtifactStore::commit_put`], then
/// [`ArtifactStore::release`].
#[derive(Debug)]
pub struct PreparedPut {
    pub id: ArtifactId,
    pub kind: ArtifactKind,
    pub size: u64,
    pub file_count: u64,
    /// Chunks referenced by the artifact (distinct).
    pub chunk_names: Vec<String>,
    /// Chunks this put wrote (not found in the store before), with stored size.
    pub new_chunks: Vec<(String, u64)>,
    /// Bytes newly written to the backend (sealed chunks + manifest).
    pub new_bytes: u64,
    manifest_object: String,
    lease: Option<Lease>,
}

#[derive(Debug)]
struct Lease {
    id: String,
    renewer: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct GetReport {
    pub id: String,
    pub path: PathBuf,
    pub bytes: u64,
    pub files: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FsckReport {
    pub chunks_checked: u64,
    pub bytes_checked: u64,
    pub manifests_checked: u64,
    /// Object key → artifacts that need it.
    pub missing: BTreeMap<String, Vec<String>>,
    /// Object key → (what is wrong, artifacts that need it).
    pub corrupt: BTreeMap<String, (String, Vec<String>)>,
    /// Objects on the backend that no metadata refers to (left by a crash;
    /// `gc` removes them).
    pub orphans: u64,
}

impl FsckReport {
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.corrupt.is_empty()
    }

    /// Artifacts that cannot be fully restored.
    pub fn damaged_artifacts(&self) -> Vec<String> {
        let mut s: Vec<String> =
            self.missing.values().chain(self.corrupt.values().map(|c| &c.1)).flatten().cloned().collect();
        s.sort();
        s.dedup();
        s
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    pub unreferenced_chunks: u64,
    pub orphan_objects: u64,
    pub bytes_freed: u64,
}

const CODEC_RAW: u8 = 0;
const CODEC_ZSTD: u8 = 1;
const ZSTD_LEVEL: i32 = 3;

/// zstd when it helps. A 4 KiB sample is compressed first: incompressible
/// data (already-compressed weights, random bytes) skips the full pass.
pub fn encode_payload(data: &[u8]) -> Vec<u8> {
    let try_full = if data.len() >= 16 * 1024 {
        let sample = &data[..4096];
        zstd::bulk::compress(sample, 1).map(|c| c.len() < sample.len() * 97 / 100).unwrap_or(false)
    } else {
        true
    };
    if try_full
        && let Ok(c) = zstd::bulk::compress(data, ZSTD_LEVEL)
        && c.len() < data.len()
    {
        let mut out = Vec::with_capacity(c.len() + 1);
        out.push(CODEC_ZSTD);
        out.extend_from_slice(&c);
        return out;
    }
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(CODEC_RAW);
    out.extend_from_slice(data);
    out
}

/// Inverse of [`encode_payload`], never producing more than `max_len` bytes
/// (bounded memory on hostile input even past authentication). Decoding
/// streams, so memory follows the real output size, not the bound.
pub fn decode_payload(payload: &[u8], max_len: usize, what: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let corrupt = |d: &str| StoreError::Corrupt { what: what.to_string(), detail: d.to_string() };
    match payload.split_first() {
        Some((&CODEC_RAW, rest)) if rest.len() <= max_len => Ok(rest.to_vec()),
        Some((&CODEC_ZSTD, rest)) => {
            let decoder = zstd::stream::read::Decoder::with_buffer(rest).map_err(|_| corrupt("bad zstd data"))?;
            let mut out = Vec::new();
            decoder
                .single_frame()
                .take(max_len as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|_| corrupt("bad zstd data"))?;
            if out.len() > max_len {
                return Err(corrupt("longer than expected"));
            }
            Ok(out)
        }
        Some((&CODEC_RAW, _)) => Err(corrupt("longer than expected")),
        _ => Err(corrupt("unknown codec")),
    }
}

/// Parses and validates a manifest's JSON as read back from storage.
pub fn parse_manifest(json: &[u8]) -> Result<Manifest> {
    let m: Manifest = serde_json::from_slice(json).map_err(|e| StoreError::Malformed(format!("manifest: {e}")))?;
    m.validate()?;
    Ok(m)
}

/// Background writeback: runs `sync` each time another [`FLUSH_EVERY`]
/// bytes have been reported on `written`, until every sender is gone.
fn sync_every(written: std::sync::mpsc::Receiver<u64>, sync: impl Fn()) {
    let mut pending = 0u64;
    for n in written {
        pending += n;
        if pending >= FLUSH_EVERY {
            pending = 0;
            sync();
        }
    }
}

fn chunk_key(name: &str) -> String {
    format!("chunks/{}/{}", &name[..2.min(name.len())], name)
}

fn manifest_key(name: &str) -> String {
    format!("manifests/{name}")
}

/// The artifact store: objects on a backend, metadata in the database.
#[derive(Clone)]
pub struct ArtifactStore {
    db: Db,
    backend: ObjectBackend,
    cipher: Arc<ChunkCipher>,
    namer: Arc<ObjectNamer>,
    params: ChunkParams,
    lease_ttl_secs: i64,
}

impl std::fmt::Debug for ArtifactStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactStore").field("backend", &self.backend).finish()
    }
}

struct Job {
    file: usize,
    index: usize,
    data: Vec<u8>,
}

struct Done {
    file: usize,
    index: usize,
    name: String,
    len: u32,
    stored: Option<u64>,
}

struct SourceFile {
    rel: String,
    abs: PathBuf,
    size: u64,
    executable: bool,
}

impl ArtifactStore {
    pub fn new(db: Db, backend: ObjectBackend, chunk_key: &DataKey, naming_key: &DataKey) -> Self {
        ArtifactStore {
            db,
            backend,
            cipher: Arc::new(ChunkCipher::new(chunk_key)),
            namer: Arc::new(ObjectNamer::new(naming_key)),
            params: ChunkParams::default(),
            lease_ttl_secs: 300,
        }
    }

    pub fn with_chunk_params(mut self, params: ChunkParams) -> Self {
        self.params = params;
        self
    }

    /// How long a lease lives without renewal (a crashed put blocks gc this long).
    pub fn with_lease_ttl(mut self, secs: i64) -> Self {
        self.lease_ttl_secs = secs.max(1);
        self
    }

    pub fn backend(&self) -> &ObjectBackend {
        &self.backend
    }

    // ------------------------------------------------------------ leases

    async fn acquire_lease(&self, kind: &'static str) -> Result<Lease> {
        let pool = self.db.pool();
        let now = Timestamp::now();
        let mut tx = pool.begin().await?;
        sqlx::query("UPDATE store_lock SET n = n + 1 WHERE id = 1").execute(&mut *tx).await?;
        sqlx::query("DELETE FROM store_leases WHERE expires_at < $1").bind(now.0).execute(&mut *tx).await?;
        let rows = sqlx::query("SELECT kind, id, expires_at FROM store_leases").fetch_all(&mut *tx).await?;
        let mut puts = Vec::new();
        for r in &rows {
            let k: String = r.try_get("kind")?;
            let until = Timestamp(r.try_get("expires_at")?).to_rfc3339();
            if k == "gc" {
                return Err(StoreError::GcRunning { lease: r.try_get("id")?, until });
            }
            puts.push(until);
        }
        if kind == "gc" && !puts.is_empty() {
            puts.sort();
            return Err(StoreError::PutsInProgress { count: puts.len(), until: puts.pop().unwrap_or_default() });
        }
        let id = citadel_types::random_id("lease-");
        sqlx::query("INSERT INTO store_leases (id, kind, holder, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(id.clone())
            .bind(kind)
            .bind(format!("pid {}", std::process::id()))
            .bind(now.plus_secs(self.lease_ttl_secs).0)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        // Renew at a third of the TTL while the operation runs.
        let pool2 = pool.clone();
        let (id2, ttl) = (id.clone(), self.lease_ttl_secs);
        let renewer = tokio::spawn(async move {
            let period = std::time::Duration::from_millis((ttl as u64 * 1000 / 3).max(200));
            loop {
                tokio::time::sleep(period).await;
                let _ = sqlx::query("UPDATE store_leases SET expires_at = $1 WHERE id = $2")
                    .bind(Timestamp::now().plus_secs(ttl).0)
                    .bind(id2.clone())
                    .execute(&pool2)
                    .await;
            }
        });
        Ok(Lease { id, renewer })
    }

    async fn release_lease(&self, lease: Lease) {
        lease.renewer.abort();
        // Best effort: an unreleased lease simply expires.
        let _ = sqlx::query("DELETE FROM store_leases WHERE id = $1").bind(lease.id).execute(self.db.pool()).await;
    }

    /// Releases the put's lease. Call after commit (or after giving up).
    pub async fn release(&self, mut prepared: PreparedPut) {
        if let Some(lease) = prepared.lease.take() {
            self.release_lease(lease).await;
        }
    }

    // ------------------------------------------------------------ put

    /// Phases 1 and 2 of a put: writes and syncs every object of `path` (a
    /// file or a directory). Nothing is visible until [`commit_put`](Self::commit_put).
    pub async fn prepare_put(&self, path: &Path, progress: Option<Arc<dyn Progress>>) -> Result<PreparedPut> {
        let sources = collect_sources(path)?;
        let lease = self.acquire_lease("put").await?;
        let this = self.clone();
        let progress = progress.unwrap_or_else(|| Arc::new(NoProgress));
        let rt = tokio::runtime::Handle::current();
        let result = tokio::task::spawn_blocking(move || this.write_objects(rt, sources, progress))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))
            .and_then(|r| r);
        match result {
            Ok(mut prepared) => {
                prepared.lease = Some(lease);
                Ok(prepared)
            }
            Err(e) => {
                self.release_lease(lease).await;
                Err(e)
            }
        }
    }

    fn write_objects(
        &self,
        rt: tokio::runtime::Handle,
        sources: (ArtifactKind, Vec<SourceFile>),
        progress: Arc<dyn Progress>,
    ) -> Result<PreparedPut> {
        let (kind, files) = sources;
        progress.add_total(files.iter().map(|f| f.size).sum());
        let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(2, 8);
        // Bounded queue: at most ~2 chunks per worker in flight, so memory
        // stays a few MiB whatever the input size.
        let (job_tx, job_rx) = sync_channel::<Job>(workers * 2);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done_rx) = channel::<Result<Done>>();
        let seen: Arc<Mutex<HashSet<String>>> = Arc::default();

        let mut digests = Vec::with_capacity(files.len());
        // Set by the first worker that fails: the others stop taking jobs and
        // the reader stops cutting. Once every worker has returned, the last
        // receiver handle is gone and the reader's `send` fails instead of
        // blocking on a full queue.
        let abort = AtomicBool::new(false);
        // The flusher starts writeback while chunks are still being cut, so
        // the disk works in parallel with the CPU; the final sync then waits
        // only for the tail. Without it the kernel would hold everything as
        // dirty pages until that one sync.
        let (flush_tx, flush_rx) = channel::<u64>();
        let read_result: Result<()> = std::thread::scope(|scope| {
            scope.spawn(move || {
                // A failure here resurfaces in the final, checked sync.
                sync_every(flush_rx, || drop(self.backend.sync()));
            });
            for _ in 0..workers {
                let (job_rx, done_tx, seen, flush_tx) =
                    (job_rx.clone(), done_tx.clone(), seen.clone(), flush_tx.clone());
                let (rt, abort) = (rt.clone(), &abort);
                scope.spawn(move || {
                    loop {
                        if abort.load(Ordering::Relaxed) {
                            return;
                        }
                        let job = {
                            let Ok(rx) = job_rx.lock() else { return };
                            match rx.recv() {
                                Ok(j) => j,
                                Err(_) => return,
                            }
                        };
                        let r = self.store_chunk(&rt, &seen, job);
                        if let Ok(Done { stored: Some(n), .. }) = &r {
                            let _ = flush_tx.send(*n);
                        }
                        let failed = r.is_err();
                        if failed {
                            abort.store(true, Ordering::Relaxed);
                        }
                        if done_tx.send(r).is_err() || failed {
                            return;
                        }
                    }
                });
            }
            drop(done_tx);
            drop(job_rx);
            drop(flush_tx);
            // The reader: this thread cuts chunks and hashes whole files.
            let result = (|| {
                for (fi, f) in files.iter().enumerate() {
                    let file = File::open(&f.abs).map_err(|e| StoreError::io(&f.abs, e))?;
                    let mut hasher = Sha256::default();
                    let mut size = 0u64;
                    let cdc = fastcdc::v2020::StreamCDC::new(file, self.params.min, self.params.avg, self.params.max);
                    for (ci, chunk) in cdc.enumerate() {
                        let chunk = chunk.map_err(|e| match e {
                            fastcdc::v2020::Error::IoError(io) => StoreError::io(&f.abs, io),
                            other => StoreError::io(&f.abs, std::io::Error::other(other.to_string())),
                        })?;
                        hasher.update(&chunk.data);
                        size += chunk.data.len() as u64;
                        progress.advance(chunk.data.len() as u64);
                        if abort.load(Ordering::Relaxed)
                            || job_tx.send(Job { file: fi, index: ci, data: chunk.data }).is_err()
                        {
                            // A worker failed; its error is in the results.
                            return Ok(());
                        }
                    }
                    if size != f.size {
                        return Err(StoreError::io(
                            &f.abs,
                            std::io::Error::other("the file changed size while it was being read"),
                        ));
                    }
                    digests.push(hasher.finish());
                }
                Ok(())
            })();
            drop(job_tx);
            result
        });
        let mut chunks: Vec<BTreeMap<usize, (String, u32)>> = vec![BTreeMap::new(); files.len()];
        let mut new_chunks = Vec::new();
        let mut new_bytes = 0u64;
        for r in done_rx {
            let d = r?;
            if let Some(stored) = d.stored {
                new_bytes += stored;
                new_chunks.push((d.name.clone(), stored));
            }
            chunks[d.file].insert(d.index, (d.name, d.len));
        }
        read_result?;
        if digests.len() != files.len() {
            return Err(StoreError::Task("chunking stopped early".into()));
        }

        let mut manifest_files = Vec::with_capacity(files.len());
        for ((f, digest), chunk_map) in files.iter().zip(digests).zip(chunks) {
            manifest_files.push(ManifestFile {
                path: f.rel.clone(),
                size: f.size,
                sha256: digest,
                executable: f.executable,
                chunks: chunk_map.into_values().collect(),
            });
        }
        let manifest = Manifest { format: MANIFEST_FORMAT.into(), kind, files: manifest_files };
        let id = manifest.artifact_id();
        let json = serde_json::to_vec(&manifest).map_err(|e| StoreError::Malformed(e.to_string()))?;
        let manifest_name = self.namer.name("manifest", &Digest::of(&json).0);
        let sealed = self.cipher.seal(&manifest_name, &encode_payload(&json))?;
        new_bytes += sealed.len() as u64;
        rt.block_on(self.backend.put(&manifest_key(&manifest_name), sealed))?;
        self.backend.sync()?;

        let mut distinct: Vec<String> =
            manifest.files.iter().flat_map(|f| f.chunks.iter().map(|c| c.0.clone())).collect();
        distinct.sort();
        distinct.dedup();
        Ok(PreparedPut {
            id,
            kind,
            size: manifest.files.iter().map(|f| f.size).sum(),
            file_count: manifest.files.len() as u64,
            chunk_names: distinct,
            new_chunks,
            new_bytes,
            manifest_object: manifest_name,
            lease: None,
        })
    }

    fn store_chunk(&self, rt: &tokio::runtime::Handle, seen: &Mutex<HashSet<String>>, job: Job) -> Result<Done> {
        let len = job.data.len() as u32;
        let name = self.namer.name("chunk", &Digest::of(&job.data).0);
        let first_time = seen.lock().map(|mut s| s.insert(name.clone())).unwrap_or(true);
        let mut stored = None;
        if first_time {
            let exists = rt.block_on(
                sqlx::query("SELECT 1 AS one FROM chunks WHERE name = $1")
                    .bind(name.clone())
                    .fetch_optional(self.db.pool()),
            )?;
            if exists.is_none() {
                let sealed = self.cipher.seal(&name, &encode_payload(&job.data))?;
                let n = sealed.len() as u64;
                rt.block_on(self.backend.put(&chunk_key(&name), sealed))?;
                stored = Some(n);
            }
        }
        Ok(Done { file: job.file, index: job.index, name, len, stored })
    }

    /// Phase 3: records the artifact inside the caller's audited transaction.
    /// Returns false when an artifact with the same id already existed (the
    /// name, if new, is still added).
    pub async fn commit_put(
        &self,
        tx: &mut AuditedTx,
        p: &PreparedPut,
        name: Option<&str>,
        created_by: &str,
    ) -> Result<bool> {
        let conn = tx.conn();
        let now = Timestamp::now();
        let id = p.id.to_string();
        let exists = sqlx::query("SELECT 1 AS one FROM artifacts WHERE id = $1")
            .bind(id.clone())
            .fetch_optional(&mut *conn)
            .await?;
        if exists.is_none() {
            insert_many(
                conn,
                "INSERT INTO chunks (name, stored_size, created_at) VALUES ",
                3,
                " ON CONFLICT (name) DO NOTHING",
                p.new_chunks.iter().map(|(n, s)| vec![Val::S(n.clone()), Val::I(*s as i64), Val::I(now.0)]),
            )
            .await?;
            sqlx::query(
                "INSERT INTO artifacts (id, kind, size, file_count, chunk_count, stored_bytes_new, manifest_object, created_by, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(id.clone())
            .bind(p.kind.as_str())
            .bind(p.size as i64)
            .bind(p.file_count as i64)
            .bind(p.chunk_names.len() as i64)
            .bind(p.new_bytes as i64)
            .bind(p.manifest_object.clone())
            .bind(created_by)
            .bind(now.0)
            .execute(&mut *conn)
            .await?;
            insert_many(
                conn,
                "INSERT INTO artifact_chunks (artifact_id, chunk_name) VALUES ",
                2,
                "",
                p.chunk_names.iter().map(|c| vec![Val::S(id.clone()), Val::S(c.clone())]),
            )
            .await?;
        }
        if let Some(name) = name {
            sqlx::query(
                "INSERT INTO artifact_names (name, artifact_id, created_by, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (name, artifact_id) DO NOTHING",
            )
            .bind(name)
            .bind(id)
            .bind(created_by)
            .bind(now.0)
            .execute(&mut *conn)
            .await?;
        }
        Ok(exists.is_none())
    }

    /// Removes an artifact's records (its names, chunk references and row)
    /// inside the caller's audited transaction. Its objects stay until the
    /// next [`ArtifactStore::gc`] deletes the chunks no artifact references
    /// and the orphaned manifest; run it with a grace of 0 to destroy them
    /// at once (an erasure does). Returns false when there was no such
    /// artifact.
    pub async fn forget(&self, tx: &mut AuditedTx, id: &ArtifactId) -> Result<bool> {
        let conn = tx.conn();
        let id = id.to_string();
        for sql in
            ["DELETE FROM artifact_names WHERE artifact_id = $1", "DELETE FROM artifact_chunks WHERE artifact_id = $1"]
        {
            sqlx::query(sql).bind(id.clone()).execute(&mut *conn).await?;
        }
        let r = sqlx::query("DELETE FROM artifacts WHERE id = $1").bind(id).execute(&mut *conn).await?;
        Ok(r.rows_affected() == 1)
    }

    // ------------------------------------------------------------ read

    /// Finds an artifact by full id, unique id prefix (≥ 8 hex digits), or
    /// name (the most recent artifact carrying it).
    pub async fn resolve(&self, reference: &str) -> Result<ArtifactInfo> {
        let pool = self.db.pool();
        let r = reference.strip_prefix("sha256:").unwrap_or(reference);
        let is_hex =
            r.len() >= 8 && r.len() <= 64 && r.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
        let mut ids: Vec<String> = Vec::new();
        if is_hex {
            // `r` is lowercase hex (checked above): no LIKE wildcard in it.
            // (substr with a bound length fails on PostgreSQL: it wants an
            // int4 where sqlx binds an int8.)
            let rows =
                sqlx::query("SELECT id FROM artifacts WHERE id LIKE $1").bind(format!("{r}%")).fetch_all(pool).await?;
            for row in rows {
                ids.push(row.try_get("id")?);
            }
        }
        if ids.is_empty() {
            let row =
                sqlx::query("SELECT artifact_id FROM artifact_names WHERE name = $1 ORDER BY created_at DESC LIMIT 1")
                    .bind(reference)
                    .fetch_optional(pool)
                    .await?;
            if let Some(row) = row {
                ids.push(row.try_get("artifact_id")?);
            }
        }
        match ids.len() {
            0 => Err(StoreError::ArtifactNotFound(reference.chars().take(80).collect())),
            1 => self.info(&ids[0]).await?.ok_or_else(|| StoreError::ArtifactNotFound(reference.into())),
            _ => Err(StoreError::Ambiguous(reference.into())),
        }
    }

    async fn info(&self, id: &str) -> Result<Option<ArtifactInfo>> {
        let rows = sqlx::query(&format!("{ARTIFACT_SELECT} WHERE id = $1")).bind(id).fetch_all(self.db.pool()).await?;
        let mut infos = artifacts_from(self.db.pool(), rows).await?;
        Ok(infos.pop())
    }

    pub async fn list(&self) -> Result<Vec<ArtifactInfo>> {
        let rows = sqlx::query(&format!("{ARTIFACT_SELECT} ORDER BY created_at, id")).fetch_all(self.db.pool()).await?;
        artifacts_from(self.db.pool(), rows).await
    }

    /// Reads, authenticates and validates an artifact's manifest.
    pub async fn manifest(&self, info: &ArtifactInfo) -> Result<Manifest> {
        let key = manifest_key(&info.manifest_object);
        let sealed = self.backend.get(&key).await?;
        let payload = self.cipher.open(&info.manifest_object, &sealed).map_err(|_| StoreError::Corrupt {
            what: format!("manifest of artifact {}", info.id),
            detail: "authentication failed".into(),
        })?;
        let json = decode_payload(&payload, MAX_MANIFEST, &key)?;
        let m = parse_manifest(&json)?;
        if m.artifact_id() != info.id {
            return Err(StoreError::Corrupt {
                what: format!("manifest of artifact {}", info.id),
                detail: "it describes different content".into(),
            });
        }
        Ok(m)
    }

    /// Fetches, authenticates and decodes one chunk. `expected_len` comes
    /// from the manifest; without it (fsck of a chunk no manifest names) the
    /// output is still bounded by the largest chunk we ever write.
    async fn fetch_chunk(&self, name: String, expected_len: Option<u32>) -> Result<Vec<u8>> {
        let max_len = expected_len.unwrap_or(self.params.max.max(ChunkParams::default().max)) as usize;
        let key = chunk_key(&name);
        let sealed = self.backend.get(&key).await?;
        let cipher = self.cipher.clone();
        tokio::task::spawn_blocking(move || {
            let payload = cipher
                .open(&name, &sealed)
                .map_err(|_| StoreError::Corrupt { what: key.clone(), detail: "authentication failed".into() })?;
            let data = decode_payload(&payload, max_len, &key)?;
            if expected_len.is_some_and(|l| data.len() != l as usize) {
                return Err(StoreError::Corrupt { what: key, detail: "wrong length".into() });
            }
            Ok(data)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// The bytes of `file` (an entry of `manifest`) from byte `start` to its
    /// end, as a stream of decrypted pieces (each chunk authenticated before
    /// any of it is yielded; at most 4 chunks, 4 MiB, fetched ahead). The
    /// whole file's SHA-256 is `file.sha256`: a reader that resumes checks
    /// it over what it already holds plus this stream. `start` past the end
    /// gives an empty stream.
    pub fn file_stream(
        &self,
        file: &ManifestFile,
        start: u64,
    ) -> impl futures::Stream<Item = Result<bytes::Bytes>> + Send + 'static + use<> {
        let mut jobs = Vec::new();
        let mut offset = 0u64;
        for (name, len) in &file.chunks {
            let end = offset + u64::from(*len);
            if end > start {
                // Bytes of this chunk before `start` are skipped.
                let skip = start.saturating_sub(offset) as usize;
                jobs.push((name.clone(), *len, skip));
            }
            offset = end;
        }
        let this = self.clone();
        futures::stream::iter(jobs)
            .map(move |(name, len, skip)| {
                let this = this.clone();
                async move {
                    let data = this.fetch_chunk(name, Some(len)).await?;
                    Ok(bytes::Bytes::from(data).slice(skip..))
                }
            })
            .buffered(4)
    }

    /// Restores an artifact to `out` (which must not exist), verifying every
    /// chunk and the whole artifact's digest before the result appears there.
    pub async fn restore(
        &self,
        info: &ArtifactInfo,
        out: &Path,
        progress: Option<Arc<dyn Progress>>,
    ) -> Result<GetReport> {
        if out.symlink_metadata().is_ok() {
            return Err(StoreError::OutputExists(out.to_owned()));
        }
        let manifest = self.manifest(info).await?;
        let progress = progress.unwrap_or_else(|| Arc::new(NoProgress));
        progress.add_total(info.size);
        let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| StoreError::io(parent, e))?;
        let tmp = parent.join(format!(".citadel-get-{}", citadel_types::random_id("")));
        let result = self.restore_into(&manifest, &tmp, &*progress).await;
        let result = result.and_then(|()| {
            if manifest.artifact_id() != info.id {
                return Err(StoreError::Corrupt {
                    what: format!("artifact {}", info.id),
                    detail: "digest mismatch".into(),
                });
            }
            std::fs::rename(&tmp, out).map_err(|e| StoreError::io(out, e))?;
            if let Ok(d) = File::open(parent) {
                let _ = d.sync_all();
            }
            Ok(())
        });
        if let Err(e) = result {
            if manifest.kind == ArtifactKind::Directory {
                let _ = std::fs::remove_dir_all(&tmp);
            } else {
                let _ = std::fs::remove_file(&tmp);
            }
            return Err(e);
        }
        Ok(GetReport {
            id: info.id.to_string(),
            path: out.to_owned(),
            bytes: info.size,
            files: manifest.files.len() as u64,
        })
    }

    async fn restore_into(&self, manifest: &Manifest, tmp: &Path, progress: &dyn Progress) -> Result<()> {
        if manifest.kind == ArtifactKind::Directory {
            std::fs::create_dir(tmp).map_err(|e| StoreError::io(tmp, e))?;
        }
        let jobs: Vec<(usize, String, u32)> = manifest
            .files
            .iter()
            .enumerate()
            .flat_map(|(fi, f)| f.chunks.iter().map(move |(n, l)| (fi, n.clone(), *l)))
            .collect();
        let mut stream = futures::stream::iter(jobs)
            .map(|(fi, name, len)| async move { self.fetch_chunk(name, Some(len)).await.map(|d| (fi, d)) })
            .buffered(8);
        let mut writer: Option<(usize, std::io::BufWriter<File>, Sha256)> = None;
        let mut next_file = 0usize;
        // Background writeback, as in put: the disk works while chunks are
        // still being fetched and decrypted.
        let out_dir = if manifest.kind == ArtifactKind::Directory {
            tmp.to_owned()
        } else {
            tmp.parent().unwrap_or(tmp).to_owned()
        };
        let (flush_tx, flush_rx) = channel::<u64>();
        let flusher = std::thread::spawn(move || {
            sync_every(flush_rx, || {
                if let Ok(d) = File::open(&out_dir) {
                    let _ = nix::unistd::syncfs(&d);
                }
            });
        });
        let open = |fi: usize| -> Result<(usize, std::io::BufWriter<File>, Sha256)> {
            let f = &manifest.files[fi];
            let path = if manifest.kind == ArtifactKind::Directory { tmp.join(&f.path) } else { tmp.to_owned() };
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
            }
            let file = File::create(&path).map_err(|e| StoreError::io(&path, e))?;
            Ok((fi, std::io::BufWriter::with_capacity(1 << 20, file), Sha256::default()))
        };
        let finish = |w: (usize, std::io::BufWriter<File>, Sha256)| -> Result<()> {
            let (fi, buf, hasher) = w;
            let f = &manifest.files[fi];
            let file = buf.into_inner().map_err(|e| StoreError::io(&f.path, e.into_error()))?;
            if f.executable {
                use std::os::unix::fs::PermissionsExt;
                let _ = file.set_permissions(std::fs::Permissions::from_mode(0o755));
            }
            if hasher.finish() != f.sha256 {
                return Err(StoreError::Corrupt { what: format!("file {}", f.path), detail: "digest mismatch".into() });
            }
            Ok(())
        };
        while let Some(item) = stream.next().await {
            let (fi, data) = item?;
            // Files with no chunks (empty files) before this one.
            while writer.as_ref().map(|w| w.0) != Some(fi) {
                if let Some(w) = writer.take() {
                    finish(w)?;
                }
                writer = Some(open(next_file)?);
                next_file += 1;
            }
            if let Some((_, buf, hasher)) = writer.as_mut() {
                tokio::task::block_in_place(|| {
                    hasher.update(&data);
                    buf.write_all(&data)
                })
                .map_err(|e| StoreError::io(tmp, e))?;
            }
            progress.advance(data.len() as u64);
            let _ = flush_tx.send(data.len() as u64);
        }
        drop(flush_tx);
        let _ = flusher.join();
        if let Some(w) = writer.take() {
            finish(w)?;
        }
        while next_file < manifest.files.len() {
            finish(open(next_file)?)?;
            next_file += 1;
        }
        // One filesystem-wide sync instead of an fsync per file: a directory
        // of 10,000 small files would otherwise spend most of its time there.
        let dir = File::open(if manifest.kind == ArtifactKind::Directory { tmp } else { tmp.parent().unwrap_or(tmp) })
            .map_err(|e| StoreError::io(tmp, e))?;
        tokio::task::block_in_place(|| nix::unistd::syncfs(&dir))
            .map_err(|e| StoreError::io(tmp, std::io::Error::from(e)))?;
        Ok(())
    }

    // ------------------------------------------------------------ fsck / gc

    /// Reads and authenticates every object the metadata refers to, and
    /// reports what is missing or corrupt and which artifacts it damages.
    pub async fn fsck(&self, progress: Option<Arc<dyn Progress>>) -> Result<FsckReport> {
        let pool = self.db.pool();
        let progress = progress.unwrap_or_else(|| Arc::new(NoProgress));
        let mut report = FsckReport::default();
        let mut users: HashMap<String, Vec<String>> = HashMap::new();
        for row in sqlx::query("SELECT artifact_id, chunk_name FROM artifact_chunks").fetch_all(pool).await? {
            users.entry(row.try_get("chunk_name")?).or_default().push(row.try_get("artifact_id")?);
        }
        let mut expected_len: HashMap<String, u32> = HashMap::new();
        let artifacts = self.list().await?;
        for info in &artifacts {
            report.manifests_checked += 1;
            match self.manifest(info).await {
                Ok(m) => {
                    for f in &m.files {
                        for (n, l) in &f.chunks {
                            expected_len.insert(n.clone(), *l);
                        }
                    }
                }
                Err(StoreError::MissingObject { what }) => {
                    report.missing.insert(what, vec![info.id.to_string()]);
                }
                Err(e) => {
                    report
                        .corrupt
                        .insert(manifest_key(&info.manifest_object), (e.to_string(), vec![info.id.to_string()]));
                }
            }
        }
        let names: Vec<String> = sqlx::query("SELECT name FROM chunks ORDER BY name")
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| r.try_get("name"))
            .collect::<std::result::Result<_, _>>()?;
        progress.add_total(names.len() as u64);
        let namer = self.namer.clone();
        let results: Vec<(String, Result<u64>)> = futures::stream::iter(names.clone())
            .map(|name| {
                let namer = namer.clone();
                let len = expected_len.get(&name).copied();
                async move {
                    let r = async {
                        let data = self.fetch_chunk(name.clone(), len).await?;
                        let computed = namer.name("chunk", &Digest::of(&data).0);
                        if computed != name {
                            return Err(StoreError::Corrupt {
                                what: chunk_key(&name),
                                detail: "content does not match its address".into(),
                            });
                        }
                        Ok(data.len() as u64)
                    }
                    .await;
                    (name, r)
                }
            })
            .buffer_unordered(8)
            .inspect(|_| progress.advance(1))
            .collect()
            .await;
        for (name, r) in results {
            let who = users.get(&name).cloned().unwrap_or_default();
            match r {
                Ok(n) => {
                    report.chunks_checked += 1;
                    report.bytes_checked += n;
                }
                Err(StoreError::MissingObject { .. }) => {
                    report.missing.insert(chunk_key(&name), who);
                }
                Err(e) => {
                    let detail = match &e {
                        StoreError::Corrupt { detail, .. } => detail.clone(),
                        other => other.to_string(),
                    };
                    report.corrupt.insert(chunk_key(&name), (detail, who));
                }
            }
        }
        let known: HashSet<String> = names.iter().map(|n| chunk_key(n)).collect();
        report.orphans = self.backend.list("chunks").await?.iter().filter(|(k, _)| !known.contains(k)).count() as u64;
        Ok(report)
    }

    /// Deletes chunks no artifact references, and objects left behind by
    /// crashed puts once they are older than `grace_secs`.
    pub async fn gc(&self, grace_secs: i64) -> Result<GcReport> {
        let lease = self.acquire_lease("gc").await?;
        let r = self.gc_inner(grace_secs).await;
        self.release_lease(lease).await;
        r
    }

    async fn gc_inner(&self, grace_secs: i64) -> Result<GcReport> {
        let pool = self.db.pool();
        let mut report = GcReport::default();
        // Rows first, then objects: a crash in between leaves orphan objects
        // (collected next time), never rows that point at nothing.
        let mut tx = pool.begin().await?;
        sqlx::query("UPDATE store_lock SET n = n + 1 WHERE id = 1").execute(&mut *tx).await?;
        let rows = sqlx::query(
            "SELECT name, stored_size FROM chunks WHERE NOT EXISTS \
             (SELECT 1 FROM artifact_chunks WHERE artifact_chunks.chunk_name = chunks.name)",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut dead = Vec::new();
        for r in &rows {
            let name: String = r.try_get("name")?;
            report.bytes_freed += r.try_get::<i64, _>("stored_size")? as u64;
            sqlx::query("DELETE FROM chunks WHERE name = $1").bind(name.clone()).execute(&mut *tx).await?;
            dead.push(name);
        }
        tx.commit().await?;
        report.unreferenced_chunks = dead.len() as u64;
        for name in &dead {
            self.backend.delete(&chunk_key(name)).await?;
        }
        let cutoff = Timestamp::now().plus_secs(-grace_secs).0;
        let chunk_keys: HashSet<String> = sqlx::query("SELECT name FROM chunks")
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>("name").map(|n| chunk_key(&n)))
            .collect::<std::result::Result<_, _>>()?;
        let manifest_keys: HashSet<String> = sqlx::query("SELECT manifest_object FROM artifacts")
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>("manifest_object").map(|n| manifest_key(&n)))
            .collect::<std::result::Result<_, _>>()?;
        for (dir, keep) in [("chunks", &chunk_keys), ("manifests", &manifest_keys)] {
            for (key, modified) in self.backend.list(dir).await? {
                if !keep.contains(&key) && modified <= cutoff {
                    self.backend.delete(&key).await?;
                    report.orphan_objects += 1;
                }
            }
            report.orphan_objects += self.backend.remove_stale_staging(dir, cutoff)?;
        }
        Ok(report)
    }
}

const ARTIFACT_SELECT: &str = "SELECT id, kind, size, file_count, chunk_count, stored_bytes_new, manifest_object, \
                               created_by, created_at FROM artifacts";

async fn artifacts_from(pool: &AnyPool, rows: Vec<sqlx::any::AnyRow>) -> Result<Vec<ArtifactInfo>> {
    let mut names: HashMap<String, Vec<String>> = HashMap::new();
    if !rows.is_empty() {
        for r in sqlx::query("SELECT name, artifact_id FROM artifact_names ORDER BY created_at, name")
            .fetch_all(pool)
            .await?
        {
            names.entry(r.try_get("artifact_id")?).or_default().push(r.try_get("name")?);
        }
    }
    rows.iter()
        .map(|r| {
            let id: String = r.try_get("id")?;
            let kind: String = r.try_get("kind")?;
            Ok(ArtifactInfo {
                id: id.parse().map_err(|_| StoreError::Malformed(format!("artifact id {id:?}")))?,
                kind: if kind == "directory" { ArtifactKind::Directory } else { ArtifactKind::File },
                size: r.try_get::<i64, _>("size")? as u64,
                file_count: r.try_get::<i64, _>("file_count")? as u64,
                chunk_count: r.try_get::<i64, _>("chunk_count")? as u64,
                stored_bytes_new: r.try_get::<i64, _>("stored_bytes_new")? as u64,
                names: names.remove(&id).unwrap_or_default(),
                created_by: r.try_get("created_by")?,
                created_at: Timestamp(r.try_get("created_at")?),
                manifest_object: r.try_get("manifest_object")?,
            })
        })
        .collect()
}

enum Val {
    S(String),
    I(i64),
}

/// Multi-row INSERT in batches (one round trip per 300 rows).
async fn insert_many(
    conn: &mut AnyConnection,
    head: &str,
    cols: usize,
    tail: &str,
    rows: impl Iterator<Item = Vec<Val>>,
) -> Result<()> {
    let rows: Vec<Vec<Val>> = rows.collect();
    for batch in rows.chunks(300) {
        let mut sql = String::from(head);
        let mut n = 0;
        for (i, _) in batch.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            sql.push('(');
            for c in 0..cols {
                n += 1;
                if c > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!("${n}"));
            }
            sql.push(')');
        }
        sql.push_str(tail);
        let mut q = sqlx::query(&sql);
        for row in batch {
            for v in row {
                q = match v {
                    Val::S(s) => q.bind(s.clone()),
                    Val::I(i) => q.bind(*i),
                };
            }
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Lists what a put of `path` stores: one file, or every regular file below a
/// directory in path order. Symlinks and special files are refused rather
/// than followed, so a put never reads outside the tree it was given.
fn collect_sources(path: &Path) -> Result<(ArtifactKind, Vec<SourceFile>)> {
    use std::os::unix::fs::PermissionsExt;
    let meta = path.symlink_metadata().map_err(|e| StoreError::io(path, e))?;
    let exec = |m: &std::fs::Metadata| m.permissions().mode() & 0o111 != 0;
    if meta.is_file() {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("artifact").to_string();
        return Ok((
            ArtifactKind::File,
            vec![SourceFile { rel: name, abs: path.to_owned(), size: meta.len(), executable: exec(&meta) }],
        ));
    }
    if !meta.is_dir() {
        return Err(StoreError::NotRegular { path: path.to_owned() });
    }
    let mut out = Vec::new();
    let mut stack = vec![(path.to_owned(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| StoreError::io(&dir, e))? {
            let entry = entry.map_err(|e| StoreError::io(&dir, e))?;
            let name = entry.file_name();
            let name = name
                .to_str()
                .ok_or_else(|| StoreError::io(entry.path(), std::io::Error::other("file name is not valid UTF-8")))?;
            let rel_child = if rel.is_empty() { name.to_string() } else { format!("{rel}/{name}") };
            let m = entry.path().symlink_metadata().map_err(|e| StoreError::io(entry.path(), e))?;
            if m.is_dir() {
                stack.push((entry.path(), rel_child));
            } else if m.is_file() {
                out.push(SourceFile { rel: rel_child, abs: entry.path(), size: m.len(), executable: exec(&m) });
            } else {
                return Err(StoreError::NotRegular { path: entry.path() });
            }
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok((ArtifactKind::Directory, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_codec_round_trip_and_bounds() {
        let text = b"hello hello hello hello hello hello hello hello".repeat(1000);
        let enc = encode_payload(&text);
        assert_eq!(enc[0], CODEC_ZSTD);
        assert!(enc.len() < text.len() / 10);
        assert_eq!(decode_payload(&enc, text.len(), "x").unwrap(), text);
        assert!(decode_payload(&enc, text.len() - 1, "x").is_err(), "bounded output");
        let random: Vec<u8> = (0..100_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let enc = encode_payload(&random);
        assert_eq!(decode_payload(&enc, random.len(), "x").unwrap(), random);
        assert!(decode_payload(&[9, 1, 2], 10, "x").is_err());
        assert!(decode_payload(&[], 10, "x").is_err());
    }

    #[test]
    fn relative_paths() {
        for ok in ["a", "a/b.txt", "x/y/z"] {
            assert!(check_relative_path(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "./a", "a\\b", "a/"] {
            assert!(check_relative_path(bad).is_err(), "{bad}");
        }
    }
}

//! Large bytes between the CLI and `citadel server` (see
//! `citadel_api::transfer` for the protocol): uploads sent in pieces of at
//! most [`PIECE`] bytes, each acknowledged by the server, resumed
//! from the server's offset after a dropped connection; downloads written
//! beside their destination under a name keyed by the content's digest,
//! resumed by range (by this run after an error, or by the next run of the
//! same command), checked against the file's SHA-256 and only then renamed
//! into place. Nothing half-written is ever at the destination.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use http_body_util::BodyExt;
use serde_json::{Value, json};

use citadel_types::{Digest, Sha256};

use crate::server_cmd::{Remote, ReqBody, full, refusal};

/// Bytes sent in one request: each request's answer is a checkpoint (after
/// an error the client asks the server's offset again before it goes on).
pub const PIECE: u64 = 64 << 20;
/// Consecutive failed attempts (no progress) before giving up.
const ATTEMPTS: u32 = 6;

/// A byte counter drawn as a bar on a terminal (none with `--json` or when
/// stderr is not a terminal).
#[derive(Clone)]
pub struct Meter(Option<indicatif::ProgressBar>);

impl Meter {
    pub fn new(json: bool, what: &str, total: u64) -> Meter {
        use std::io::IsTerminal;
        if json || !std::io::stderr().is_terminal() {
            return Meter(None);
        }
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(what.to_string());
        Meter(Some(bar))
    }
    fn set(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.set_position(n);
        }
    }
    fn note(&self, msg: &str) {
        match &self.0 {
            Some(b) => b.println(msg),
            None => eprintln!("{msg}"),
        }
    }
    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250u64 << attempt.min(5))
}

/// Whether an answer is worth retrying (the server or the way to it, not
/// the request, failed).
fn transient(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

async fn read_json(resp: hyper::Response<hyper::body::Incoming>) -> Result<(u16, Value)> {
    let status = resp.status().as_u16();
    let body = http_body_util::Limited::new(resp.into_body(), 1 << 20)
        .collect()
        .await
        .map_err(|e| anyhow!("reading the answer: {e}"))?
        .to_bytes();
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// The SHA-256 of `file`'s first `n` bytes.
fn digest_prefix(path: &Path, n: u64) -> Result<Sha256> {
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?.take(n);
    let mut h = Sha256::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = f.read(&mut buf).with_context(|| format!("reading {}", path.display()))?;
        if k == 0 {
            return Ok(h);
        }
        h.update(&buf[..k]);
    }
}

/// Uploads `path` for `purpose` (`artifact`, `dataset`, `model`) named
/// `name`; returns the upload id and the SHA-256 of what was sent, which a
/// commit names.
pub async fn upload(
    remote: &Remote,
    path: &Path,
    purpose: &str,
    name: Option<&str>,
    meter: &Meter,
    done_before: u64,
) -> Result<(String, Digest)> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let size = meta.len();
    // An upload an interrupted run of this command began (same server, file,
    // size, time of change and purpose) goes on from what the server holds.
    let resume = ResumeNote::for_file(remote, path, &meta, purpose, name);
    let earlier = match resume.as_ref().and_then(|r| r.load()) {
        Some(id) => match remote.call("GET", &format!("/api/v1/uploads/{}", enc(&id)), None).await {
            Ok(v) if v["size"].as_u64() == Some(size) => Some((id, v["offset"].as_u64().unwrap_or(0))),
            _ => None,
        },
        None => None,
    };
    let (id, mut offset) = match earlier {
        Some((id, held)) => {
            meter.note(&format!("resuming the upload of {} from byte {held}", path.display()));
            (id, held)
        }
        None => {
            let created = remote
                .call("POST", "/api/v1/uploads", Some(json!({"size": size, "for": purpose, "name": name})))
                .await?;
            let id = created["id"].as_str().ok_or_else(|| anyhow!("the server's answer names no upload"))?.to_string();
            if let Some(r) = &resume {
                r.save(&id);
            }
            (id, 0)
        }
    };
    // The digest of the bytes the server holds: (count, state).
    let hashed: Arc<Mutex<(u64, Sha256)>> = Arc::new(Mutex::new((0, Sha256::default())));
    let mut failures = 0u32;
    while offset < size || size == 0 {
        let len = (size - offset).min(PIECE);
        // Bring the digest to `offset` (the server may hold more or less than we sent).
        {
            let mut g = hashed.lock().unwrap_or_else(|p| p.into_inner());
            if g.0 != offset {
                *g = (offset, digest_prefix(path, offset)?);
            }
        }
        let mut file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
        file.seek(SeekFrom::Start(offset)).with_context(|| format!("reading {}", path.display()))?;
        let file = tokio::fs::File::from_std(file);
        let (h, m, base) = (hashed.clone(), meter.clone(), done_before + offset);
        let mut sent = 0u64;
        let stream = tokio_util::io::ReaderStream::with_capacity(tokio::io::AsyncReadExt::take(file, len), 256 << 10)
            .map(move |chunk| {
                chunk.map(|b| {
                    let mut g = h.lock().unwrap_or_else(|p| p.into_inner());
                    g.1.update(&b);
                    g.0 += b.len() as u64;
                    sent += b.len() as u64;
                    m.set(base + sent);
                    hyper::body::Frame::data(b)
                })
            });
        let body: ReqBody = BodyExt::boxed(http_body_util::StreamBody::new(stream));
        let req = remote
            .request("PATCH", &format!("/api/v1/uploads/{id}"))
            .header("upload-offset", offset.to_string())
            .header("content-type", "application/offset+octet-stream")
            .header("content-length", len.to_string())
            .body(body)?;
        let answer = tokio::time::timeout(Duration::from_secs(600), async {
            let resp = remote.send_raw(req).await?;
            let held =
                resp.headers().get("upload-offset").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
            let (status, v) = read_json(resp).await?;
            Ok::<_, anyhow::Error>((status, held, v))
        })
        .await
        .map_err(|_| anyhow!("no answer within 600 s"))
        .and_then(|r| r);
        match answer {
            Ok((204, Some(held), _)) => {
                failures = 0;
                offset = held;
                if size == 0 {
                    break;
                }
                continue;
            }
            Ok((status, _, v)) if !transient(status) && status != 409 => return Err(refusal(status, &v)),
            Ok((status, _, v)) => {
                failures += 1;
                if failures >= ATTEMPTS {
                    return Err(refusal(status, &v));
                }
            }
            Err(e) => {
                failures += 1;
                if failures >= ATTEMPTS {
                    return Err(e.context(format!("uploading {} ({ATTEMPTS} attempts)", path.display())));
                }
                meter.note(&format!("upload of {} interrupted ({e:#}); resuming", path.display()));
            }
        }
        tokio::time::sleep(backoff(failures)).await;
        // Where to go on from: what the server holds.
        match remote.call("GET", &format!("/api/v1/uploads/{id}"), None).await {
            Ok(v) => offset = v["offset"].as_u64().unwrap_or(0),
            Err(e) if failures + 1 >= ATTEMPTS => return Err(e),
            Err(_) => {}
        }
    }
    let digest = {
        let mut g = hashed.lock().unwrap_or_else(|p| p.into_inner());
        let (n, h) = std::mem::take(&mut *g);
        if n == size { h.finish() } else { digest_prefix(path, size)?.finish() }
    };
    if let Some(r) = &resume {
        r.forget();
    }
    Ok((id, digest))
}

/// Where this client remembers an upload it began, so that running the
/// same command again after an interruption resumes it:
/// `$XDG_CACHE_HOME/citadel/uploads/KEY` (default `~/.cache`), 0600 in 0700,
/// `KEY` the SHA-256 of the server, the file's canonical path, size, time of
/// change, and what it is for. The file holds the upload's id only (an id
/// is useless without the owner's token), and is locked while its upload
/// runs: the same command running twice at once uploads twice rather than
/// sharing one upload.
struct ResumeNote(PathBuf, std::fs::File);

impl ResumeNote {
    fn for_file(
        remote: &Remote,
        path: &Path,
        meta: &std::fs::Metadata,
        purpose: &str,
        name: Option<&str>,
    ) -> Option<ResumeNote> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        let canonical = std::fs::canonicalize(path).ok()?;
        let key = format!(
            "{}\0{}\0{}\0{}.{}\0{purpose}\0{}",
            remote.origin(),
            canonical.display(),
            meta.len(),
            meta.mtime(),
            meta.mtime_nsec(),
            name.unwrap_or("")
        );
        let dir = base.join("citadel").join("uploads");
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).ok()?;
        let note = dir.join(Digest::of(key.as_bytes()).to_hex());
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&note)
            .ok()?;
        // Another run of the same command holds it: this one goes alone.
        file.try_lock().ok()?;
        Some(ResumeNote(note, file))
    }

    fn load(&self) -> Option<String> {
        use std::io::Read;
        let mut id = String::new();
        (&self.1).take(128).read_to_string(&mut id).ok()?;
        let id = id.trim();
        (id.starts_with("up-") && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
            .then(|| id.to_string())
    }

    /// Best effort: without it, an interrupted command starts again.
    fn save(&self, id: &str) {
        use std::io::{Seek, Write};
        let mut f = &self.1;
        let _ = f.set_len(0).and_then(|_| f.seek(std::io::SeekFrom::Start(0))).and_then(|_| f.write_all(id.as_bytes()));
    }

    fn forget(&self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Regular files under `root` (relative `/`-separated paths, sorted); a
/// symbolic link or special file is refused, as the local store refuses it.
pub fn files_of(root: &Path) -> Result<Vec<(String, PathBuf)>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).with_context(|| format!("reading {}", path.display()))?;
            if meta.is_dir() {
                walk(root, &path, out)?;
            } else if meta.is_file() {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                let rel =
                    rel.to_str().ok_or_else(|| anyhow!("{} is not a UTF-8 name\nhint: rename it", path.display()))?;
                out.push((rel.to_string(), path.clone()));
            } else {
                bail!(
                    "{} is not a regular file or directory\nhint: replace the link or special file by its content",
                    path.display()
                );
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, root, &mut out)?;
    out.sort();
    Ok(out)
}

/// Uploads a file or a directory; the commit's `files` and whether it is a directory.
pub async fn upload_tree(
    remote: &Remote,
    path: &Path,
    purpose: &str,
    name: Option<&str>,
    json_out: bool,
) -> Result<(Vec<Value>, bool)> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let (files, directory) = if meta.is_dir() {
        (files_of(path)?, true)
    } else {
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow!("{} has no UTF-8 file name", path.display()))?;
        (vec![(file_name.to_string(), path.to_path_buf())], false)
    };
    if files.is_empty() {
        bail!("{} holds no file\nhint: give a file or a directory with files", path.display());
    }
    let total: u64 = files.iter().map(|(_, p)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum();
    let meter = Meter::new(json_out, "upload", total);
    let mut done = 0u64;
    let mut out = Vec::new();
    for (rel, p) in &files {
        match upload(remote, p, purpose, name, &meter, done).await {
            Ok((id, digest)) => out.push(json!({"path": rel, "upload": id, "sha256": digest.to_hex()})),
            Err(e) => {
                // What was sent before the failure is of no use: leave nothing staged.
                abandon(remote, &out).await;
                return Err(e);
            }
        }
        done += std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    }
    meter.finish();
    Ok((out, directory))
}

/// Removes uploads (best effort) after a failed upload or commit.
pub async fn abandon(remote: &Remote, files: &[Value]) {
    for f in files {
        if let Some(id) = f["upload"].as_str() {
            let _ = remote.call("DELETE", &format!("/api/v1/uploads/{}", enc(id)), None).await;
        }
    }
}

/// A staging path for a download beside its destination: refused when it
/// is a symbolic link or not ours (another user could have planted it in
/// a shared directory); a file is opened without following links, 0600;
/// a directory is made 0700.
fn check_staging(path: &Path, directory: bool) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::symlink_metadata(path) {
        Ok(m) => {
            let ours = m.uid() == nix_uid();
            if m.file_type().is_symlink() || !ours || (directory != m.is_dir()) || (!directory && !m.is_file()) {
                bail!(
                    "{} is in the way (a link, another user's, or not a {}); remove it and run the command again",
                    path.display(),
                    if directory { "directory" } else { "file" }
                );
            }
            Ok(())
        }
        Err(_) if directory => {
            std::fs::DirBuilder::new().mode(0o700).create(path).with_context(|| format!("creating {}", path.display()))
        }
        Err(_) => Ok(()),
    }
}

fn nix_uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// Writes a download's body into its staging file `part` (appended to, or
/// replaced), synced; the bar shows `base` plus what arrived. Returns the
/// bytes written.
async fn write_body(
    resp: hyper::Response<hyper::body::Incoming>,
    part: &Path,
    append: bool,
    meter: &Meter,
    base: u64,
) -> Result<u64> {
    use tokio::io::AsyncWriteExt;
    let mut file = open_part(part, append).await?;
    let mut n = 0u64;
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| anyhow!("the download was cut: {e}"))?;
        if let Ok(data) = frame.into_data() {
            file.write_all(&data).await.with_context(|| format!("writing {}", part.display()))?;
            n += data.len() as u64;
            meter.set(base + n);
        }
    }
    file.sync_data().await.with_context(|| format!("writing {}", part.display()))?;
    Ok(n)
}

/// Opens a download's staging file: appended to (resume) or truncated,
/// created 0600, never through a symbolic link.
async fn open_part(path: &Path, append: bool) -> Result<tokio::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.create(true).write(true).mode(0o600).custom_flags(libc::O_NOFOLLOW);
    if append {
        o.append(true);
    } else {
        o.truncate(true);
    }
    let f = o.open(path).with_context(|| format!("writing {} (not through a link)", path.display()))?;
    Ok(tokio::fs::File::from_std(f))
}

/// Percent-encodes one path segment or query value.
pub fn enc(s: &str) -> String {
    citadel_serve::serving::percent_encode(s)
}

/// Downloads `url` into `part` from its current length (Range), retrying
/// from where it stopped; checks the whole file against `sha256` when given.
async fn fetch_resumable(
    remote: &Remote,
    url: &str,
    part: &Path,
    size: u64,
    sha256: Option<&str>,
    meter: &Meter,
    base: u64,
) -> Result<()> {
    let mut failures = 0u32;
    check_staging(part, false)?;
    loop {
        let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        if have > size {
            std::fs::remove_file(part).with_context(|| format!("removing {}", part.display()))?;
            continue;
        }
        if have == size {
            break;
        }
        let req = remote.request("GET", url).header("range", format!("bytes={have}-")).body(full(Vec::new()))?;
        let attempt = async {
            let resp = remote.send_raw(req).await?;
            let status = resp.status().as_u16();
            if status != 206 && status != 200 {
                let (status, v) = read_json(resp).await?;
                return Ok::<_, anyhow::Error>(Some((status, v)));
            }
            let start = if status == 206 { have } else { 0 };
            write_body(resp, part, status == 206, meter, base + start).await?;
            Ok(None)
        };
        match tokio::time::timeout(Duration::from_secs(600), attempt).await {
            Ok(Ok(None)) => {
                if std::fs::metadata(part).map(|m| m.len()).unwrap_or(0) < size {
                    failures += 1;
                } else {
                    failures = 0;
                }
            }
            Ok(Ok(Some((status, v)))) => {
                if !transient(status) {
                    return Err(refusal(status, &v));
                }
                failures += 1;
                if failures >= ATTEMPTS {
                    return Err(refusal(status, &v));
                }
            }
            Ok(Err(e)) => {
                failures += 1;
                if failures >= ATTEMPTS {
                    return Err(e.context(format!("downloading {url} ({ATTEMPTS} attempts)")));
                }
                meter.note(&format!("download interrupted ({e:#}); resuming"));
            }
            Err(_) => {
                failures += 1;
                if failures >= ATTEMPTS {
                    bail!("downloading {url}: no progress in 600 s");
                }
            }
        }
        if failures > 0 {
            tokio::time::sleep(backoff(failures)).await;
        }
    }
    if let Some(expected) = sha256 {
        let part2 = part.to_path_buf();
        let actual =
            tokio::task::spawn_blocking(move || digest_prefix(&part2, u64::MAX).map(|h| h.finish().to_hex())).await??;
        if actual != expected {
            let _ = std::fs::remove_file(part);
            bail!(
                "the download of {url} has SHA-256 {actual}, not the server's {expected}; the partial file was removed\nhint: run the command again"
            );
        }
    }
    Ok(())
}

/// `artifact get` through the server: every file by range into a hidden
/// sibling of `dest` (named by the artifact id, so a second run resumes),
/// renamed to `dest` once every file's SHA-256 matched.
pub async fn artifact_get(remote: &Remote, reference: &str, dest: &Path, json_out: bool) -> Result<Value> {
    if dest.symlink_metadata().is_ok() {
        bail!("{} exists\nhint: give another --output, or remove it", dest.display());
    }
    let info = remote.call("GET", &format!("/api/v1/artifacts/{}", enc(reference)), None).await?;
    let id = info["id"].as_str().ok_or_else(|| anyhow!("the server's answer names no artifact id"))?.to_string();
    let short = &id[..id.len().min(16)];
    let parent = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let leaf = dest.file_name().and_then(|n| n.to_str()).unwrap_or("artifact");
    let staging = parent.join(format!(".{leaf}.citadel-{short}.part"));
    let directory = info["kind"] == "directory";
    let files = info["files"].as_array().cloned().unwrap_or_default();
    let total = info["size"].as_u64().unwrap_or(0);
    let meter = Meter::new(json_out, "download", total);
    let mut done = 0u64;
    if directory {
        check_staging(&staging, true)?;
    }
    for f in &files {
        let path = f["path"].as_str().unwrap_or_default();
        let size = f["size"].as_u64().unwrap_or(0);
        let target = if directory {
            let rel = Path::new(path);
            if rel.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
                bail!("the server named a file {path:?} outside the artifact");
            }
            let t = staging.join(rel);
            if let Some(d) = t.parent() {
                std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            }
            t
        } else {
            staging.clone()
        };
        let url = format!("/api/v1/artifacts/{}/content?path={}", enc(&id), enc(path));
        if size == 0 {
            std::fs::File::create(&target).with_context(|| format!("writing {}", target.display()))?;
        } else {
            fetch_resumable(remote, &url, &target, size, f["sha256"].as_str(), &meter, done).await?;
        }
        if f["executable"].as_bool() == Some(true) {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755));
        }
        done += size;
    }
    meter.finish();
    std::fs::rename(&staging, dest).with_context(|| format!("moving the download to {}", dest.display()))?;
    Ok(json!({"id": id, "path": dest, "bytes": total, "files": files.len()}))
}

/// `data get` through the server: the export streamed into a hidden sibling,
/// renamed to `dest` when whole (an interrupted export starts again).
pub async fn data_get(
    remote: &Remote,
    name: &str,
    version: i64,
    dest: &Path,
    format: &str,
    detokenize: bool,
    json_out: bool,
) -> Result<Value> {
    if dest.symlink_metadata().is_ok() {
        bail!("{} exists\nhint: give another --output, or remove it", dest.display());
    }
    let parent = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let leaf = dest.file_name().and_then(|n| n.to_str()).unwrap_or("rows");
    let part = parent.join(format!(".{leaf}.citadel.part"));
    let url = format!("/api/v1/datasets/{}/versions/{version}/rows?format={format}&detokenize={detokenize}", enc(name));
    let meter = Meter::new(json_out, "download", 0);
    let mut failures = 0;
    let summary = loop {
        let _ = std::fs::remove_file(&part);
        let req = remote.request("GET", &url).body(full(Vec::new()))?;
        let attempt = async {
            let resp = remote.send_raw(req).await?;
            let status = resp.status().as_u16();
            if status != 200 {
                let (status, v) = read_json(resp).await?;
                return Err(refusal(status, &v));
            }
            let summary: Value = resp
                .headers()
                .get("x-citadel-export")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| serde_json::from_str(v).ok())
                .unwrap_or(Value::Null);
            let expected =
                resp.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
            if let (Some(b), Some(n)) = (&meter.0, expected) {
                b.set_length(n);
            }
            check_staging(&part, false)?;
            let n = write_body(resp, &part, false, &meter, 0).await?;
            if expected.is_some_and(|e| e != n) {
                bail!("the download was cut at {n} bytes");
            }
            Ok(summary)
        };
        match attempt.await {
            Ok(s) => break s,
            Err(e) if e.to_string().starts_with("the server answered") => {
                let _ = std::fs::remove_file(&part);
                return Err(e);
            }
            Err(e) => {
                failures += 1;
                if failures >= ATTEMPTS {
                    let _ = std::fs::remove_file(&part);
                    return Err(e);
                }
                meter.note(&format!("download interrupted ({e:#}); starting again"));
                tokio::time::sleep(backoff(failures)).await;
            }
        }
    };
    meter.finish();
    std::fs::rename(&part, dest).with_context(|| format!("moving the download to {}", dest.display()))?;
    Ok(
        json!({"dataset": name, "version": version, "output": dest, "format": format, "rows": summary["rows"], "columns": summary["columns"], "withheld": summary["withheld"], "detokenized": summary["detokenized"]}),
    )
}

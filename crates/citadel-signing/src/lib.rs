//! Model signatures in the OpenSSF `model-signing` format, private-key
//! method: a Sigstore bundle (v0.3) holding a DSSE envelope whose payload is
//! an in-toto Statement listing every file (or shard) of the model with its
//! digest. Our signatures verify with `model_signing verify key`, and theirs
//! with [`verify`]. The format is described in `tests/fixtures/README.md`.
//!
//! Decisions:
//! - We sign with the files method and SHA-256 by default (the only
//!   configuration the model-signing CLI can verify); `shard_size` switches
//!   to the shards method, which hashes large files in parallel pieces.
//! - Payload bytes are never compared; the JSON is parsed.
//! - ECDSA P-256/P-384/P-521 through aws-lc-rs; high-S signatures verify
//!   (model-signing produces them).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_TYPE: &str = "https://model_signing/signature/v1.0";
/// Ignored at the model root by default, as model-signing's CLI does.
pub const GIT_PATHS: &[&str] = &[".git", ".gitattributes", ".github", ".gitignore"];

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{what}: {detail}")]
    Key { what: String, detail: String },
    #[error("the signature file is not a model-signing bundle: {0}")]
    Format(String),
    #[error("the signature was made with another key (the key hint does not match this public key)")]
    KeyMismatch,
    #[error("the signature does not verify with this key: the signed statement was altered or signed by someone else")]
    BadSignature,
    #[error("the signed manifest is inconsistent: root digest {claimed}, but the listed files hash to {actual}")]
    InconsistentManifest { claimed: String, actual: String },
    #[error("{path} is a symbolic link; model signatures cover regular files only")]
    Symlink { path: String },
    #[error("{path} is a FIFO, socket or device; model signatures cover regular files only")]
    SpecialFile { path: String },
    #[error(
        "a file name under {dir} is not valid UTF-8 ({lossy:?}); signatures name files in UTF-8 and would have to alter it"
    )]
    NonUtf8Name { dir: PathBuf, lossy: String },
    #[error(
        "{a:?} and {b:?} are the same name once Unicode-normalized or case-folded; a signature could not tell them apart on every file system"
    )]
    NameCollision { a: String, b: String },
    #[error("unsupported: {0}")]
    Unsupported(String),
}

type Result<T> = std::result::Result<T, SigningError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SigningError + '_ {
    move |source| SigningError::Io { path: path.to_owned(), source }
}

// ------------------------------------------------------------------ keys

/// Decodes the first PEM block with one of `labels`.
fn pem_decode(text: &str, labels: &[&str]) -> Option<(String, Vec<u8>)> {
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(label) = line.strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----")) else { continue };
        if !labels.contains(&label) {
            continue;
        }
        let end = format!("-----END {label}-----");
        let mut b64 = String::new();
        for l in lines.by_ref() {
            if l == end {
                return B64.decode(b64.as_bytes()).ok().map(|d| (label.to_string(), d));
            }
            b64.push_str(l);
        }
        return None;
    }
    None
}

/// Canonical PEM of a SubjectPublicKeyInfo, as the key hint is computed over.
fn canonical_public_pem(spki_der: &[u8]) -> String {
    let b64 = B64.encode(spki_der);
    let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END PUBLIC KEY-----\n");
    out
}

fn hint_of(spki_der: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical_public_pem(spki_der).as_bytes()))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    const ALL: [Curve; 3] = [Curve::P256, Curve::P384, Curve::P521];
    fn signing(self) -> &'static signature::EcdsaSigningAlgorithm {
        match self {
            Curve::P256 => &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            Curve::P384 => &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
            Curve::P521 => &signature::ECDSA_P521_SHA512_ASN1_SIGNING,
        }
    }
    fn verification(self) -> &'static signature::EcdsaVerificationAlgorithm {
        match self {
            Curve::P256 => &signature::ECDSA_P256_SHA256_ASN1,
            Curve::P384 => &signature::ECDSA_P384_SHA384_ASN1,
            Curve::P521 => &signature::ECDSA_P521_SHA512_ASN1,
        }
    }
}

/// An ECDSA private key (P-256, P-384 or P-521; PEM, SEC1 or PKCS#8).
pub struct SigningKey {
    pair: EcdsaKeyPair,
    spki_der: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey(hint {})", self.hint())
    }
}

impl SigningKey {
    pub fn from_pem(text: &str) -> Result<Self> {
        let bad = |d: &str| SigningError::Key { what: "private key".into(), detail: d.into() };
        let (_, der) = pem_decode(text, &["EC PRIVATE KEY", "PRIVATE KEY"])
            .ok_or_else(|| bad("no unencrypted 'EC PRIVATE KEY' or 'PRIVATE KEY' PEM block"))?;
        Self::from_der(&der)
    }

    pub fn from_pem_file(path: &Path) -> Result<Self> {
        Self::from_pem(&std::fs::read_to_string(path).map_err(io(path))?)
    }

    /// A new P-256 key; returns it with its PKCS#8 DER encoding (to be sealed
    /// by the caller's key hierarchy, never stored in the clear).
    pub fn generate() -> Result<(Self, Vec<u8>)> {
        let bad = |d: &str| SigningError::Key { what: "new signing key".into(), detail: d.into() };
        let doc = EcdsaKeyPair::generate_pkcs8(Curve::P256.signing(), &SystemRandom::new())
            .map_err(|_| bad("generation failed"))?;
        let der = doc.as_ref().to_vec();
        Ok((Self::from_der(&der)?, der))
    }

    /// A DER private key: PKCS#8 or SEC1 (RFC 5915).
    pub fn from_der(der: &[u8]) -> Result<Self> {
        let bad = |d: &str| SigningError::Key { what: "private key".into(), detail: d.into() };
        for curve in Curve::ALL {
            if let Ok(pair) = EcdsaKeyPair::from_private_key_der(curve.signing(), der) {
                let spki_der = pair.public_key().as_der().map_err(|_| bad("cannot encode its public key"))?;
                return Ok(SigningKey { pair, spki_der: spki_der.as_ref().to_vec() });
            }
        }
        Err(bad("not an EC key on P-256, P-384 or P-521 (the curves model-signing accepts)"))
    }

    /// The matching public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey { spki_der: self.spki_der.clone() }
    }

    /// SHA-256 of the canonical public key PEM (the bundle's key hint).
    pub fn hint(&self) -> String {
        hint_of(&self.spki_der)
    }

    pub fn public_key_pem(&self) -> String {
        canonical_public_pem(&self.spki_der)
    }
}

/// An ECDSA public key (PEM SubjectPublicKeyInfo).
#[derive(Debug, Clone)]
pub struct VerifyingKey {
    spki_der: Vec<u8>,
}

impl VerifyingKey {
    pub fn from_pem(text: &str) -> Result<Self> {
        let (_, der) = pem_decode(text, &["PUBLIC KEY"]).ok_or_else(|| SigningError::Key {
            what: "public key".into(),
            detail: "no 'PUBLIC KEY' PEM block".into(),
        })?;
        Ok(VerifyingKey { spki_der: der })
    }

    pub fn from_pem_file(path: &Path) -> Result<Self> {
        Self::from_pem(&std::fs::read_to_string(path).map_err(io(path))?)
    }

    pub fn hint(&self) -> String {
        hint_of(&self.spki_der)
    }

    fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        Curve::ALL.iter().any(|c| UnparsedPublicKey::new(c.verification(), &self.spki_der).verify(message, sig).is_ok())
    }
}

// ------------------------------------------------------------------ hashing

/// How a model is cut into resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Files,
    Shards(u64),
}

/// One signed resource: a file (files method) or a byte range (shards).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Resource {
    pub name: String,
    pub algorithm: String,
    pub digest: String,
}

/// The model's files, relative, in model-signing's order (by path segments).
fn list_files(root: &Path, ignore: &BTreeSet<String>) -> Result<Vec<(String, PathBuf, u64)>> {
    let meta = std::fs::symlink_metadata(root).map_err(io(root))?;
    if meta.is_file() {
        return Ok(vec![(".".into(), root.to_owned(), meta.len())]);
    }
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), root.to_owned())];
    while let Some((rel, dir)) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let raw = entry.file_name();
            let Some(name) = raw.to_str().map(str::to_string) else {
                return Err(SigningError::NonUtf8Name { dir: dir.clone(), lossy: raw.to_string_lossy().into_owned() });
            };
            let rel_path = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            if ignore.iter().any(|i| rel_path == *i || rel_path.starts_with(&format!("{i}/"))) {
                continue;
            }
            let path = entry.path();
            let m = std::fs::symlink_metadata(&path).map_err(io(&path))?;
            if m.file_type().is_symlink() {
                return Err(SigningError::Symlink { path: rel_path });
            } else if m.is_dir() {
                stack.push((rel_path, path));
            } else if m.is_file() {
                out.push((rel_path, path, m.len()));
            } else {
                return Err(SigningError::SpecialFile { path: rel_path });
            }
        }
    }
    out.sort_by(|a, b| a.0.split('/').cmp(b.0.split('/')));
    // Names that differ only by Unicode normalization (NFC/NFD) or by case
    // are one file on some file systems: refuse rather than sign an ambiguity.
    let mut folded: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
    for (rel, ..) in &out {
        use unicode_normalization::UnicodeNormalization;
        let key: String = rel.nfc().collect::<String>().to_lowercase();
        if let Some(other) = folded.insert(key, rel) {
            return Err(SigningError::NameCollision { a: other.to_string(), b: rel.clone() });
        }
    }
    Ok(out)
}

/// `pipelined`: read ahead on a second thread (worth it only when the other
/// cores have nothing else to hash).
fn sha256_range(path: &Path, start: u64, end: u64, pipelined: bool) -> Result<String> {
    use std::os::unix::fs::FileExt;
    const BUF: usize = 4 << 20;
    let f = std::fs::File::open(path).map_err(io(path))?;
    let read = |buf: &mut Vec<u8>, pos: u64| -> Result<()> {
        let want = ((end - pos) as usize).min(BUF);
        buf.resize(want, 0);
        f.read_exact_at(buf, pos).map_err(io(path))
    };
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    if !pipelined || end - start <= 2 * BUF as u64 {
        let mut buf = Vec::with_capacity(BUF);
        let mut pos = start;
        while pos < end {
            read(&mut buf, pos)?;
            ctx.update(&buf);
            pos += buf.len() as u64;
        }
        return Ok(hex::encode(ctx.finish()));
    }
    // Large ranges: one thread reads the next buffer while this one hashes
    // the last, so copying from the page cache overlaps with SHA-256.
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Result<Vec<u8>>>(2);
    let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    for _ in 0..3 {
        let _ = empty_tx.send(Vec::with_capacity(BUF));
    }
    let read = &read;
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut pos = start;
            while pos < end {
                let Ok(mut buf) = empty_rx.recv() else { return };
                let r = read(&mut buf, pos).map(|()| buf);
                let failed = r.is_err();
                pos += r.as_ref().map_or(0, |b| b.len() as u64);
                if full_tx.send(r).is_err() || failed {
                    return;
                }
            }
        });
        let mut done = start;
        while done < end {
            let buf = full_rx.recv().map_err(|_| SigningError::Io {
                path: path.to_owned(),
                source: std::io::Error::other("the reader stopped"),
            })??;
            ctx.update(&buf);
            done += buf.len() as u64;
            let _ = empty_tx.send(buf);
        }
        drop(empty_tx);
        Ok::<_, SigningError>(())
    })?;
    Ok(hex::encode(ctx.finish()))
}

/// Hashes a model (file or directory) into resources, in parallel.
pub fn hash_model(root: &Path, method: Method, ignore: &BTreeSet<String>) -> Result<Vec<Resource>> {
    let files = list_files(root, ignore)?;
    // Jobs: (resource name, algorithm, path, start, end).
    let mut jobs: Vec<(String, String, PathBuf, u64, u64)> = Vec::new();
    for (rel, path, size) in files {
        match method {
            Method::Files => jobs.push((rel, "sha256".into(), path, 0, size)),
            Method::Shards(n) => {
                // As the reference serializer does, an empty file is one
                // empty shard (`name:0:0`), so adding or removing it is seen.
                if size == 0 {
                    jobs.push((format!("{rel}:0:0"), format!("sha256-sharded-{n}"), path.clone(), 0, 0));
                }
                let mut start = 0;
                while start < size {
                    let end = (start + n).min(size);
                    jobs.push((
                        format!("{rel}:{start}:{end}"),
                        format!("sha256-sharded-{n}"),
                        path.clone(),
                        start,
                        end,
                    ));
                    start = end;
                }
            }
        }
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let workers = cores.min(jobs.len().max(1));
    // Fewer jobs than cores: each job also reads ahead on a spare core.
    let pipelined = jobs.len() < cores;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Result<Vec<(usize, String)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((_, _, path, start, end)) = jobs.get(i) else { return Ok(done) };
                        done.push((i, sha256_range(path, *start, *end, pipelined)?));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(SigningError::Unsupported("hash worker panicked".into()))))
            .collect()
    });
    let mut digests = vec![String::new(); jobs.len()];
    for r in results {
        for (i, d) in r? {
            digests[i] = d;
        }
    }
    Ok(jobs
        .into_iter()
        .zip(digests)
        .map(|((name, algorithm, ..), digest)| Resource { name, algorithm, digest })
        .collect())
}

fn root_digest(resources: &[Resource]) -> Result<String> {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for r in resources {
        let raw =
            hex::decode(&r.digest).map_err(|_| SigningError::Format(format!("digest of {:?} is not hex", r.name)))?;
        ctx.update(&raw);
    }
    Ok(hex::encode(ctx.finish()))
}

fn pae(payload: &[u8]) -> Vec<u8> {
    let mut m = format!("DSSEv1 {} {PAYLOAD_TYPE} {} ", PAYLOAD_TYPE.len(), payload.len()).into_bytes();
    m.extend_from_slice(payload);
    m
}

// ------------------------------------------------------------------ sign

/// Options for [`sign`].
#[derive(Debug, Clone)]
pub struct SignOptions {
    pub method: Method,
    /// Extra paths (relative to the model) to leave out, e.g. the signature file.
    pub ignore_paths: Vec<String>,
    /// Leave out `.git`, `.gitattributes`, `.github`, `.gitignore` at the root.
    pub ignore_git_paths: bool,
}

impl Default for SignOptions {
    fn default() -> Self {
        SignOptions { method: Method::Files, ignore_paths: Vec::new(), ignore_git_paths: true }
    }
}

/// Signs the model at `root`; returns the bundle JSON (model-signing's `model.sig`).
pub fn sign(root: &Path, key: &SigningKey, opts: &SignOptions) -> Result<String> {
    let mut ignore: BTreeSet<String> = opts.ignore_paths.iter().cloned().collect();
    if opts.ignore_git_paths {
        ignore.extend(GIT_PATHS.iter().map(|s| s.to_string()));
    }
    let resources = hash_model(root, opts.method, &ignore)?;
    let name = std::fs::canonicalize(root)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "model".into());
    let mut serialization = match opts.method {
        Method::Files => json!({"method": "files", "hash_type": "sha256", "allow_symlinks": false}),
        Method::Shards(n) => {
            json!({"method": "shards", "hash_type": "sha256", "shard_size": n, "allow_symlinks": false})
        }
    };
    if !ignore.is_empty() {
        serialization["ignore_paths"] = json!(ignore);
    }
    let statement = json!({
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": root_digest(&resources)?}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": serialization,
            "resources": resources.iter().map(|r| json!({"name": r.name, "algorithm": r.algorithm, "digest": r.digest})).collect::<Vec<_>>(),
        },
    });
    let payload = serde_json::to_vec(&statement).map_err(|e| SigningError::Format(e.to_string()))?;
    let sig = key
        .pair
        .sign(&SystemRandom::new(), &pae(&payload))
        .map_err(|_| SigningError::Key { what: "private key".into(), detail: "signing failed".into() })?;
    let bundle = json!({
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": key.hint()}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": B64.encode(&payload),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": B64.encode(sig.as_ref()), "keyid": ""}],
        },
    });
    serde_json::to_string(&bundle).map_err(|e| SigningError::Format(e.to_string()))
}

// ------------------------------------------------------------------ verify

/// What differs between the signed manifest and the model on disk.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Mismatch {
    /// On disk but not signed.
    pub extra: Vec<String>,
    /// Signed but not on disk.
    pub missing: Vec<String>,
    /// On disk with other content (or another algorithm) than signed.
    pub changed: Vec<String>,
}

impl Mismatch {
    pub fn is_empty(&self) -> bool {
        self.extra.is_empty() && self.missing.is_empty() && self.changed.is_empty()
    }
}

/// A verified signature and what it covers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verified {
    pub subject: String,
    pub root_digest: String,
    pub resources: usize,
    pub key_hint: Option<String>,
    /// Empty when the model matches.
    pub mismatch: Mismatch,
}

/// Verifies `bundle_json` with `key`, then compares the signed manifest with
/// the model at `root`. Ok(v) with a non-empty `v.mismatch` means the
/// signature is genuine but the model changed.
pub fn verify(root: &Path, bundle_json: &str, key: &VerifyingKey, extra_ignore: &[String]) -> Result<Verified> {
    let fmt = |m: &str| SigningError::Format(m.into());
    let bundle: Value = serde_json::from_str(bundle_json).map_err(|e| fmt(&format!("not JSON ({e})")))?;
    let media = bundle["mediaType"].as_str().unwrap_or("");
    if media != BUNDLE_MEDIA_TYPE {
        return Err(fmt(&format!("media type {media:?}, expected {BUNDLE_MEDIA_TYPE}")));
    }
    let hint = bundle["verificationMaterial"]["publicKey"]["hint"].as_str().map(str::to_string);
    if let Some(h) = &hint
        && *h != key.hint()
    {
        return Err(SigningError::KeyMismatch);
    }
    let env = &bundle["dsseEnvelope"];
    if env["payloadType"].as_str() != Some(PAYLOAD_TYPE) {
        return Err(fmt("the DSSE payload type is not in-toto"));
    }
    let payload =
        env["payload"].as_str().and_then(|p| B64.decode(p).ok()).ok_or_else(|| fmt("payload is not base64"))?;
    let sig =
        env["signatures"][0]["sig"].as_str().and_then(|s| B64.decode(s).ok()).ok_or_else(|| fmt("no signature"))?;
    if !key.verify(&pae(&payload), &sig) {
        return Err(SigningError::BadSignature);
    }
    // Only now is the payload trusted.
    let st: Value = serde_json::from_slice(&payload).map_err(|e| fmt(&format!("payload is not JSON ({e})")))?;
    if st["_type"].as_str() != Some(STATEMENT_TYPE) || st["predicateType"].as_str() != Some(PREDICATE_TYPE) {
        return Err(fmt("not a model-signing v1.0 in-toto statement"));
    }
    let subjects = st["subject"].as_array().ok_or_else(|| fmt("no subject"))?;
    if subjects.len() != 1 {
        return Err(fmt("expected exactly one subject"));
    }
    let claimed = subjects[0]["digest"]["sha256"].as_str().ok_or_else(|| fmt("subject has no sha256"))?.to_string();
    let mut signed = Vec::new();
    for r in st["predicate"]["resources"].as_array().ok_or_else(|| fmt("no resources"))? {
        let get = |k: &str| r[k].as_str().map(str::to_string).ok_or_else(|| fmt(&format!("resource without {k}")));
        signed.push(Resource { name: get("name")?, algorithm: get("algorithm")?, digest: get("digest")? });
    }
    let actual = root_digest(&signed)?;
    if actual != claimed {
        return Err(SigningError::InconsistentManifest { claimed, actual });
    }
    let ser = &st["predicate"]["serialization"];
    let method = match (ser["method"].as_str(), ser["hash_type"].as_str()) {
        (Some("files"), Some("sha256")) => Method::Files,
        (Some("shards"), Some("sha256")) => {
            let n = ser["shard_size"].as_f64().filter(|n| *n >= 1.0 && n.fract() == 0.0 && *n < 1e15);
            Method::Shards(n.ok_or_else(|| fmt("shard_size is not a positive integer"))? as u64)
        }
        (m, h) => {
            return Err(SigningError::Unsupported(format!(
                "serialization {m:?} with hash {h:?} (only sha256 files and shards)"
            )));
        }
    };
    let mut ignore: BTreeSet<String> = GIT_PATHS.iter().map(|s| s.to_string()).collect();
    ignore.extend(extra_ignore.iter().cloned());
    if let Some(list) = ser["ignore_paths"].as_array() {
        ignore.extend(list.iter().filter_map(|v| v.as_str().map(str::to_string)));
    }
    let local = hash_model(root, method, &ignore)?;
    let want: BTreeMap<&str, (&str, &str)> =
        signed.iter().map(|r| (r.name.as_str(), (r.algorithm.as_str(), r.digest.as_str()))).collect();
    let have: BTreeMap<&str, (&str, &str)> =
        local.iter().map(|r| (r.name.as_str(), (r.algorithm.as_str(), r.digest.as_str()))).collect();
    let mut mismatch = Mismatch::default();
    for (name, v) in &have {
        match want.get(name) {
            None => mismatch.extra.push(name.to_string()),
            Some(w) if w != v => mismatch.changed.push(name.to_string()),
            Some(_) => {}
        }
    }
    mismatch.missing = want.keys().filter(|n| !have.contains_key(*n)).map(|n| n.to_string()).collect();
    Ok(Verified {
        subject: subjects[0]["name"].as_str().unwrap_or("").to_string(),
        root_digest: claimed,
        resources: signed.len(),
        key_hint: hint,
        mismatch,
    })
}

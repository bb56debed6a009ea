//! Scans model artifacts for malicious content without deserializing or
//! executing anything. Formats are detected by content, never by extension,
//! and the scanner fails closed: a file it cannot fully judge is refused.
//!
//! Severities (what `citadel scan` and `model register` do with them):
//! - `critical`: known-dangerous content (an import that runs code, a path
//!   that escapes, a scanner bypass such as a duplicate zip member);
//! - `warning`: content the scanner could not fully judge (an import on no
//!   allowlist, an unknown format, an unreadable container or codec, a pickle
//!   not read to its end). Refused by default, like critical;
//! - `info`: recorded, judged safe (an import the workspace allowed after
//!   review, trailing raw bytes after the last pickle, an empty file).
//!
//! Formats: pickle streams (protocols 0–5, with or without `PROTO`, several
//! per file, joblib inline arrays), gzip/zlib/bzip2/xz/lzma-alone/zstd
//! streams, tar and zip containers (any method the zip crate reads, archives
//! that do not start at offset 0), NumPy `.npy`, safetensors, GGUF (metadata
//! including chat templates), ONNX (external data, custom domains), Keras
//! configs (`.keras`, and HDF5 `.h5` attributes), JSON and text.
//!
//! Streams (pickles, codecs, tar) are scanned from a reader, so their size
//! does not bound memory; other formats are read whole, within the budget.

mod allowlist;
pub mod codec;
pub mod formats;
pub mod gguf;
pub mod hdf5;
pub mod keras;
pub mod npy;
mod onnx;
pub mod pickle;
mod sarif;
mod ubjson;

pub use sarif::to_sarif;

use std::cell::Cell;
use std::collections::BTreeSet;
use std::io::{BufRead, Read};
use std::path::Path;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
    /// Whether a finding of this severity refuses the file by default
    /// (`critical` and `warning`: known-dangerous or not fully judged).
    pub fn refuses(self) -> bool {
        self >= Severity::Warning
    }
}

/// One thing the scanner reports. Messages name what was found and where,
/// never the artifact's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// Stable rule id, e.g. `pickle-dangerous-global`.
    pub rule: String,
    /// The file (and member, for containers: `outer!inner`).
    pub location: String,
    pub message: String,
}

pub(crate) fn finding(severity: Severity, rule: &str, location: &str, message: String) -> Finding {
    Finding { severity, rule: rule.into(), location: location.into(), message }
}

/// What a file's content is, by its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Pickle,
    Zip,
    Tar,
    Numpy,
    Hdf5,
    Gguf,
    Safetensors,
    Onnx,
    /// gzip, zlib, bzip2, xz, lzma-alone or zstd stream (compressed joblib files, .pkl.gz).
    Compressed,
    Json,
    /// Binary JSON (XGBoost's `.ubj` models): data only.
    Ubjson,
    Text,
    Empty,
    /// Raw tensor bytes an ONNX model in the same directory reads as external data.
    OnnxExternalData,
    Unknown,
}

/// Extra trust a workspace grants after review: exact `module.name` globals
/// (pickle imports, Keras custom objects) that the built-in allowlist does not
/// hold. Their use is reported as `info`, so it shows in reports and the ML-BOM.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    pub allow: BTreeSet<String>,
}

impl ScanOptions {
    pub fn allows(&self, full_name: &str) -> bool {
        self.allow.contains(full_name)
    }
}

/// Whether `g` is a global's exact name: `module.name`, dotted Python
/// identifiers of at least two parts (Keras registered names may hold `>`).
pub fn is_global_name(g: &str) -> bool {
    let parts: Vec<&str> = g.split('.').collect();
    parts.len() >= 2
        && g.len() <= 256
        && parts.iter().all(|p| {
            p.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '>')
        })
}

/// Why the built-in rules call `module.name` dangerous, if they do. A
/// workspace can never allow such a global.
pub fn known_dangerous(global: &str) -> Option<&'static str> {
    // Every split: `a.b.c` may be module `a.b`, name `c`, or module `a`, name `b.c`.
    let parts: Vec<&str> = global.split('.').collect();
    (1..parts.len()).find_map(|i| match allowlist::judge(&parts[..i].join("."), &parts[i..].join(".")) {
        allowlist::Verdict::Dangerous(why) => Some(why),
        _ => None,
    })
}

/// Bounds for one top-level scan.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Containers (archives, compressed streams) inside each other, at most this deep.
    pub max_depth: u32,
    /// Total bytes decompressed out of containers.
    pub max_unpacked: u64,
    /// A member expanding more than this many times its compressed size (and
    /// past `bomb_floor` bytes) is a bomb.
    pub max_ratio: u64,
    pub bomb_floor: u64,
    /// Largest single item read into memory (non-stream formats).
    pub max_in_memory: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget { max_depth: 4, max_unpacked: 16 << 30, max_ratio: 1_000, bomb_floor: 256 << 20, max_in_memory: 2 << 30 }
    }
}

/// One scan's bounds, options and running totals.
pub(crate) struct Ctx<'a> {
    pub opts: &'a ScanOptions,
    pub budget: Budget,
    pub unpacked: Cell<u64>,
}

impl Ctx<'_> {
    fn too_deep(&self, location: &str, depth: u32) -> Option<Vec<Finding>> {
        (depth >= self.budget.max_depth).then(|| {
            vec![finding(
                Severity::Warning,
                "archive-too-deep",
                location,
                format!("containers nested more than {} deep; the inner one was not unpacked", self.budget.max_depth),
            )]
        })
    }
}

/// Detects the format from a file's first bytes (or all of it).
pub fn detect(data: &[u8]) -> Format {
    if data.is_empty() {
        return Format::Empty;
    }
    if let Some(f) = detect_head(data) {
        return f;
    }
    if data.starts_with(b"\x93NUMPY") {
        Format::Numpy
    } else if data.starts_with(hdf5::MAGIC) {
        Format::Hdf5
    } else if data.starts_with(b"GGUF") {
        Format::Gguf
    } else if formats::looks_like_safetensors(data) {
        Format::Safetensors
    } else if codec::looks_like_zlib(data) {
        Format::Compressed
    } else if pickle::looks_like_pickle(data) {
        Format::Pickle
    } else if onnx::looks_like_onnx(data) {
        Format::Onnx
    } else if formats::find_eocd(data).is_some() {
        Format::Zip
    } else if codec::looks_like_lzma_alone(data) {
        Format::Compressed
    } else if ubjson::is_ubjson(data) {
        Format::Ubjson
    } else if let Ok(s) = std::str::from_utf8(data) {
        if serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok() {
            Format::Json
        } else if !s.contains('\0') {
            Format::Text
        } else {
            Format::Unknown
        }
    } else {
        Format::Unknown
    }
}

/// Formats recognised from the first bytes alone, which are scanned as streams.
fn detect_head(head: &[u8]) -> Option<Format> {
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        Some(Format::Zip)
    } else if matches!(head, [0x80, p, ..] if *p <= 5) {
        Some(Format::Pickle)
    } else if codec::Codec::sniff(head).is_some() {
        Some(Format::Compressed)
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Some(Format::Tar)
    } else {
        None
    }
}

/// The result of scanning one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub path: String,
    pub format: Format,
    pub size: u64,
    pub findings: Vec<Finding>,
}

/// Scans one file's bytes. `location` names it in findings.
pub fn scan_bytes(location: &str, data: &[u8]) -> FileReport {
    scan_bytes_with(location, data, &ScanOptions::default())
}

/// Scans one file's bytes with a workspace's allowlist extension.
pub fn scan_bytes_with(location: &str, data: &[u8], opts: &ScanOptions) -> FileReport {
    scan_bytes_budget(location, data, opts, Budget::default())
}

/// [`scan_bytes_with`] under explicit bounds.
pub fn scan_bytes_budget(location: &str, data: &[u8], opts: &ScanOptions, budget: Budget) -> FileReport {
    let ctx = Ctx { opts, budget, unpacked: Cell::new(0) };
    let format = detect(data);
    let findings = scan_detected(&ctx, location, data, 0, format);
    FileReport { path: location.into(), format, size: data.len() as u64, findings }
}

/// A parser to run whatever the content looks like (fuzzing, tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parser {
    Tar,
    Hdf5,
    Gguf,
    Codec(codec::Codec),
    Pickle,
}

/// Runs one parser on `data` regardless of detection, with the default budget.
pub fn scan_as(parser: Parser, data: &[u8]) -> Vec<Finding> {
    let opts = ScanOptions::default();
    let ctx = Ctx { opts: &opts, budget: Budget::default(), unpacked: Cell::new(0) };
    match parser {
        Parser::Tar => formats::scan_tar(&ctx, "input", &mut &data[..], 0),
        Parser::Hdf5 => hdf5::scan_hdf5(&ctx, "input", data),
        Parser::Gguf => gguf::scan_gguf("input", data),
        Parser::Codec(c) => codec::scan_codec(&ctx, "input", c, &mut &data[..], data.len() as u64, 0),
        Parser::Pickle => pickle::walk_with(data, "input", pickle::PickleLimits::default(), &opts).findings,
    }
}

/// Scans bytes held in memory.
pub(crate) fn scan_memory(ctx: &Ctx<'_>, location: &str, data: &[u8], depth: u32) -> Vec<Finding> {
    scan_detected(ctx, location, data, depth, detect(data))
}

/// Scans bytes held in memory whose format `detect` already decided.
fn scan_detected(ctx: &Ctx<'_>, location: &str, data: &[u8], depth: u32, format: Format) -> Vec<Finding> {
    // One depth bound for every kind of container.
    if matches!(format, Format::Zip | Format::Tar | Format::Compressed)
        && let Some(f) = ctx.too_deep(location, depth)
    {
        return f;
    }
    let mut out = match format {
        Format::Pickle => pickle::walk_with(data, location, pickle::PickleLimits::default(), ctx.opts).findings,
        Format::Tar => formats::scan_tar(ctx, location, &mut &data[..], depth),
        Format::Compressed => match codec::Codec::detect(data) {
            Some(c) => codec::scan_codec(ctx, location, c, &mut &data[..], data.len() as u64, depth),
            None => Vec::new(),
        },
        Format::Zip => formats::scan_zip(ctx, location, data, depth),
        Format::Numpy => npy::scan_npy(location, data, &mut |loc, bytes| {
            pickle::walk_with(bytes, loc, pickle::PickleLimits::default(), ctx.opts).findings
        }),
        Format::Safetensors => formats::scan_safetensors(location, data),
        Format::Gguf => gguf::scan_gguf(location, data),
        Format::Hdf5 => hdf5::scan_hdf5(ctx, location, data),
        Format::Onnx => onnx::scan_onnx(location, data),
        Format::Json | Format::Ubjson | Format::Text | Format::OnnxExternalData => Vec::new(),
        Format::Empty => {
            vec![finding(
                Severity::Warning,
                "empty-file",
                location,
                "an empty file: nothing to judge, so not judged safe".into(),
            )]
        }
        Format::Unknown => vec![finding(
            Severity::Warning,
            "unknown-format",
            location,
            "the content is not a format the scanner knows, so it could not be judged".into(),
        )],
    };
    // A polyglot: content of another format that also ends in a zip central
    // directory. Python's zipfile (and tools built on it) read the zip view, so
    // it is scanned too.
    if !matches!(format, Format::Zip | Format::Unknown)
        && formats::find_eocd(data).is_some()
        && ctx.too_deep(location, depth).is_none()
    {
        let zip_view = formats::scan_zip(ctx, &format!("{location}!zip-view"), data, depth);
        // Only a readable zip view is a second view; random trailing bytes are not.
        if !zip_view.iter().any(|f| f.rule == "zip-unreadable") {
            out.extend(zip_view);
        }
    }
    out
}

/// Scans a stream: pickles, compressed streams and tar archives are read as
/// they come; anything else is read into memory within the budget and scanned
/// there. `size` is the stream's encoded size (for the bomb ratio).
pub(crate) fn scan_stream(
    ctx: &Ctx<'_>,
    location: &str,
    reader: &mut dyn BufRead,
    size: u64,
    depth: u32,
) -> Vec<Finding> {
    let mut head = Vec::with_capacity(512);
    if let Err(e) = reader.take(512).read_to_end(&mut head) {
        return vec![unreadable(location, &e)];
    }
    let format = detect_head(&head);
    let codec = codec::Codec::sniff(&head);
    if matches!(format, Some(Format::Tar | Format::Compressed))
        && let Some(f) = ctx.too_deep(location, depth)
    {
        return f;
    }
    let mut whole = std::io::Cursor::new(head).chain(reader);
    match format {
        Some(Format::Pickle) => {
            let mut buffered = std::io::BufReader::with_capacity(1 << 16, whole);
            pickle::walk_with(&mut buffered, location, pickle::PickleLimits::default(), ctx.opts).findings
        }
        Some(Format::Compressed) => match codec {
            Some(c) => codec::scan_codec(ctx, location, c, &mut whole, size, depth),
            None => Vec::new(),
        },
        Some(Format::Tar) => formats::scan_tar(ctx, location, &mut whole, depth),
        _ => {
            let mut data = Vec::new();
            let cap = ctx.budget.max_in_memory;
            match whole.take(cap + 1).read_to_end(&mut data) {
                Ok(n) if n as u64 > cap => vec![finding(
                    Severity::Warning,
                    "scan-budget",
                    location,
                    format!("larger than the {cap} bytes the scanner reads into memory for this format; not judged"),
                )],
                Ok(_) => scan_memory(ctx, location, &data, depth),
                Err(e) => vec![unreadable(location, &e)],
            }
        }
    }
}

fn unreadable(location: &str, e: &std::io::Error) -> Finding {
    finding(
        Severity::Warning,
        "stream-unreadable",
        location,
        format!("the content could not be read to its end ({e}); not judged"),
    )
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is larger than the scanner's limit of {limit} bytes")]
    TooLarge { path: String, limit: u64 },
}

/// Largest single file scanned.
pub const MAX_FILE: u64 = 64 << 30;

/// Scans one file on disk: streams (pickles, codecs, tar) are read as they
/// come, so a multi-gigabyte pickle is walked in bounded memory.
fn scan_file(path: &Path, location: &str, opts: &ScanOptions, external_data: bool) -> Result<FileReport, ScanError> {
    let io = |source| ScanError::Io { path: path.display().to_string(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
    let head = reader.fill_buf().map_err(io)?.to_vec();
    let ctx = Ctx { opts, budget: Budget::default(), unpacked: Cell::new(0) };
    let (format, mut findings) = match detect_head(&head) {
        Some(f) => (f, scan_stream(&ctx, location, &mut reader, size, 0)),
        None => {
            let mut data = Vec::new();
            reader.read_to_end(&mut data).map_err(io)?;
            match detect(&data) {
                Format::Unknown if external_data => (Format::OnnxExternalData, Vec::new()),
                f => (f, scan_detected(&ctx, location, &data, 0, f)),
            }
        }
    };
    if format == Format::Text && location.ends_with(".py") {
        findings.push(finding(
            Severity::Warning,
            "python-code",
            location,
            "Python source in a model directory runs when a loader trusts remote code; not judged".into(),
        ));
    }
    Ok(FileReport { path: location.into(), format, size, findings })
}

/// Scans a file, or every regular file under a directory (symlinks and
/// special files are reported, not followed). ONNX external data files named
/// by a model in the directory are raw tensors unless their content is a
/// known format. Files are scanned in parallel; reports come in path order.
pub fn scan_path(path: &Path) -> Result<Vec<FileReport>, ScanError> {
    scan_path_with(path, &ScanOptions::default())
}

/// [`scan_path`] with a workspace's allowlist extension.
pub fn scan_path_with(path: &Path, opts: &ScanOptions) -> Result<Vec<FileReport>, ScanError> {
    let io = |p: &Path, source| ScanError::Io { path: p.display().to_string(), source };
    enum Kind {
        File,
        Link,
        Special,
    }
    let mut entries: Vec<(std::path::PathBuf, Kind)> = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).map_err(|e| io(&p, e))?;
        if meta.is_dir() {
            let mut children: Vec<_> =
                std::fs::read_dir(&p).map_err(|e| io(&p, e))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
            children.sort();
            stack.extend(children.into_iter().rev());
        } else if meta.file_type().is_symlink() {
            entries.push((p, Kind::Link));
        } else if meta.is_file() {
            if meta.len() > MAX_FILE {
                return Err(ScanError::TooLarge { path: p.display().to_string(), limit: MAX_FILE });
            }
            entries.push((p, Kind::File));
        } else {
            entries.push((p, Kind::Special));
        }
    }
    // ONNX external data: files the directory's ONNX models name (inside the directory).
    let mut external: BTreeSet<std::path::PathBuf> = BTreeSet::new();
    for (p, kind) in &entries {
        if matches!(kind, Kind::File) && std::fs::metadata(p).is_ok_and(|m| m.len() <= 1 << 30) {
            let mut head = [0u8; 1];
            let first = std::fs::File::open(p).and_then(|mut f| f.read(&mut head)).unwrap_or(0);
            if first == 1 && head[0] == 0x08 {
                let data = std::fs::read(p).map_err(|e| io(p, e))?;
                if onnx::looks_like_onnx(&data) {
                    let dir = p.parent().unwrap_or(Path::new("."));
                    for loc in onnx::external_locations(&data) {
                        external.insert(dir.join(loc));
                    }
                }
            }
        }
    }
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).min(entries.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Result<Vec<(usize, FileReport)>, ScanError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((p, kind)) = entries.get(i) else { return Ok(done) };
                        let location = p.display().to_string();
                        let single = |rule: &str, message: &str| FileReport {
                            path: location.clone(),
                            format: Format::Unknown,
                            size: 0,
                            findings: vec![finding(Severity::Warning, rule, &location, message.into())],
                        };
                        let report = match kind {
                            Kind::Link => single("symlink", "a symbolic link; not followed, so not judged"),
                            Kind::Special => {
                                single("special-file", "a FIFO, socket or device; not a model file, not read")
                            }
                            Kind::File => scan_file(p, &location, opts, external.contains(p))?,
                        };
                        done.push((i, report));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(ScanError::Io {
                        path: "<scanner>".into(),
                        source: std::io::Error::other("a scan worker panicked"),
                    })
                })
            })
            .collect()
    });
    let mut reports: Vec<Option<FileReport>> = vec![None; entries.len()];
    for r in results {
        for (i, rep) in r? {
            reports[i] = Some(rep);
        }
    }
    Ok(reports.into_iter().flatten().collect())
}

/// The highest severity among `reports`, if any finding exists.
pub fn worst(reports: &[FileReport]) -> Option<Severity> {
    reports.iter().flat_map(|r| r.findings.iter().map(|f| f.severity)).max()
}

/// Whether the default policy refuses these reports (any warning or critical).
pub fn refused(reports: &[FileReport]) -> bool {
    worst(reports).is_some_and(Severity::refuses)
}

//! Scans model artifacts for malicious content without deserializing or
//! executing anything. Formats are detected by content, never by extension,
//! and a file the scanner cannot judge is itself a finding: "no issues" is
//! only ever said of content that was actually understood.
//!
//! Status: pickle streams (protocols 0–5), zip containers (PyTorch archives,
//! .npz, .keras, nested archives), NumPy `.npy` (object dtype), safetensors
//! and GGUF headers, and Keras configs (Lambda layers, custom objects) are
//! scanned, and ONNX models (external data paths, custom operator domains).
//! HDF5 is searched for an embedded Lambda layer but not parsed, which is
//! itself a finding, never a pass.

mod allowlist;
pub mod formats;
mod onnx;
pub mod pickle;
mod sarif;

pub use sarif::to_sarif;

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

/// What a file's content is, by its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Pickle,
    Zip,
    Numpy,
    Hdf5,
    Gguf,
    Safetensors,
    Onnx,
    /// zlib or gzip stream (compressed joblib files, .pkl.gz).
    Compressed,
    Unknown,
}

pub fn detect(data: &[u8]) -> Format {
    if data.starts_with(b"PK\x03\x04") || data.starts_with(b"PK\x05\x06") {
        Format::Zip
    } else if data.starts_with(b"\x93NUMPY") {
        Format::Numpy
    } else if data.starts_with(b"\x89HDF\r\n\x1a\n") {
        Format::Hdf5
    } else if data.starts_with(b"\x1f\x8b")
        || (data.len() >= 2 && data[0] == 0x78 && (u16::from(data[0]) << 8 | u16::from(data[1])) % 31 == 0)
    {
        Format::Compressed
    } else if data.starts_with(b"GGUF") {
        Format::Gguf
    } else if pickle::looks_like_pickle(data) {
        Format::Pickle
    } else if onnx::looks_like_onnx(data) {
        Format::Onnx
    } else if data.len() >= 9
        && u64::from_le_bytes(data[..8].try_into().unwrap_or([0; 8])) < 100_000_000
        && data[8] == b'{'
    {
        Format::Safetensors
    } else {
        Format::Unknown
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
    let budget = formats::Budget::default();
    let mut unpacked = 0u64;
    let findings = scan_inner(location, data, 0, &budget, &mut unpacked);
    FileReport { path: location.into(), format: detect(data), size: data.len() as u64, findings }
}

fn scan_inner(location: &str, data: &[u8], depth: u32, budget: &formats::Budget, unpacked: &mut u64) -> Vec<Finding> {
    let pickle_findings = |loc: &str, bytes: &[u8]| pickle::walk(bytes, loc, pickle::PickleLimits::default()).findings;
    let format = detect(data);
    // One depth bound for every kind of container (archives, compressed streams).
    if matches!(format, Format::Zip | Format::Compressed) && depth >= budget.max_depth {
        return vec![Finding {
            severity: Severity::Warning,
            rule: "archive-too-deep".into(),
            location: location.into(),
            message: format!("containers nested more than {} deep; the inner one was not unpacked", budget.max_depth),
        }];
    }
    match format {
        Format::Pickle => pickle_findings(location, data),
        Format::Zip => formats::scan_zip(location, data, depth, budget, unpacked, &mut |loc, bytes, d, u| {
            scan_inner(loc, bytes, d, budget, u)
        }),
        Format::Numpy => formats::scan_npy(location, data, &mut |loc, bytes| pickle_findings(loc, bytes)),
        Format::Safetensors => formats::scan_safetensors(location, data),
        Format::Gguf => formats::scan_gguf(location, data),
        Format::Unknown => vec![Finding {
            severity: Severity::Warning,
            rule: "unknown-format".into(),
            location: location.into(),
            message: "the content is not a format the scanner knows, so it could not be judged".into(),
        }],
        Format::Hdf5 => formats::scan_hdf5(location, data),
        Format::Onnx => onnx::scan_onnx(location, data),
        Format::Compressed => {
            formats::scan_compressed(location, data, depth, budget, unpacked, &mut |loc, bytes, d, u| {
                scan_inner(loc, bytes, d, budget, u)
            })
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is larger than the scanner's limit of {limit} bytes")]
    TooLarge { path: String, limit: u64 },
}

/// Largest single file read into memory for scanning.
pub const MAX_FILE: u64 = 8 << 30;

/// Scans a file, or every regular file under a directory (symlinks are
/// reported, not followed). Files are scanned in parallel; the reports come
/// back in path order.
pub fn scan_path(path: &Path) -> Result<Vec<FileReport>, ScanError> {
    let io = |p: &Path, source| ScanError::Io { path: p.display().to_string(), source };
    let mut entries: Vec<(std::path::PathBuf, bool)> = Vec::new(); // (path, is_symlink)
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).map_err(|e| io(&p, e))?;
        if meta.is_dir() {
            let mut children: Vec<_> =
                std::fs::read_dir(&p).map_err(|e| io(&p, e))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
            children.sort();
            stack.extend(children.into_iter().rev());
        } else if meta.file_type().is_symlink() {
            entries.push((p, true));
        } else if meta.is_file() {
            if meta.len() > MAX_FILE {
                return Err(ScanError::TooLarge { path: p.display().to_string(), limit: MAX_FILE });
            }
            entries.push((p, false));
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
                        let Some((p, is_link)) = entries.get(i) else { return Ok(done) };
                        let location = p.display().to_string();
                        let report = if *is_link {
                            FileReport {
                                path: location.clone(),
                                format: Format::Unknown,
                                size: 0,
                                findings: vec![Finding {
                                    severity: Severity::Warning,
                                    rule: "symlink".into(),
                                    location,
                                    message: "a symbolic link; not followed".into(),
                                }],
                            }
                        } else {
                            let data = std::fs::read(p).map_err(|e| io(p, e))?;
                            scan_bytes(&location, &data)
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

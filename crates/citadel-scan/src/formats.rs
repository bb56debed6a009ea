//! Containers and tensor formats: zip archives (PyTorch, .npz, .keras),
//! NumPy `.npy`, safetensors and GGUF headers. Every member of a container is
//! scanned like a file of its own, to a bounded depth and total size.

use std::io::Read;

use crate::{Finding, Severity};

/// Bounds for one top-level scan.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Archives inside archives, at most this deep.
    pub max_depth: u32,
    /// Total bytes decompressed out of archives.
    pub max_unpacked: u64,
    /// A member expanding more than this many times its compressed size is a bomb.
    pub max_ratio: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget { max_depth: 4, max_unpacked: 16 << 30, max_ratio: 1_000 }
    }
}

fn finding(severity: Severity, rule: &str, location: &str, message: String) -> Finding {
    Finding { severity, rule: rule.into(), location: location.into(), message }
}

/// Scans one member: (location, bytes, depth, bytes unpacked so far).
pub type MemberScanner<'a> = dyn FnMut(&str, &[u8], u32, &mut u64) -> Vec<Finding> + 'a;

/// Scans a zip archive's members; `scan` is called for each member's bytes.
/// The caller enforces `budget.max_depth` (see `scan_inner`).
pub fn scan_zip(
    location: &str,
    data: &[u8],
    depth: u32,
    budget: &Budget,
    unpacked: &mut u64,
    scan: &mut MemberScanner<'_>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    // Duplicate names are a scanner bypass (one tool reads the first entry,
    // another the last), so the central directory is read by hand first.
    let names = central_directory_names(data);
    let mut seen = std::collections::HashSet::new();
    for n in &names {
        if !seen.insert(n.as_str()) {
            out.push(finding(
                Severity::Critical,
                "zip-duplicate-name",
                location,
                format!("the archive holds two members named {n:?}; loaders disagree on which one they read"),
            ));
        }
    }
    let mut archive = match zip::ZipArchive::new(std::io::Cursor::new(data)) {
        Ok(a) => a,
        Err(e) => {
            out.push(finding(
                Severity::Warning,
                "zip-unreadable",
                location,
                format!("the zip archive could not be read ({e}); its members were not judged"),
            ));
            return out;
        }
    };
    // A PyTorch archive stores raw tensor bytes under <root>/data/; they are
    // not code and have no format to check.
    let torch_root: Option<String> =
        names.iter().find_map(|n| n.strip_suffix("/data.pkl").map(|r| r.to_string())).filter(|r| !r.contains('/'));
    for i in 0..archive.len() {
        let mut entry = match archive.by_index(i) {
            Ok(e) => e,
            Err(e) => {
                out.push(finding(Severity::Warning, "zip-unreadable", location, format!("member {i}: {e}")));
                continue;
            }
        };
        let name = entry.name().to_string();
        let member = format!("{location}!{name}");
        if entry.is_dir() {
            continue;
        }
        if name.starts_with('/') || name.split(['/', '\\']).any(|p| p == "..") || name.contains('\0') {
            out.push(finding(
                Severity::Critical,
                "zip-path-traversal",
                &member,
                "the member's name escapes the extraction directory".into(),
            ));
        }
        if entry.encrypted() {
            out.push(finding(Severity::Warning, "zip-encrypted", &member, "encrypted; not judged".into()));
            continue;
        }
        let size = entry.size();
        let compressed = entry.compressed_size().max(1);
        if size / compressed > budget.max_ratio && size > 64 << 20 {
            out.push(finding(
                Severity::Critical,
                "zip-bomb",
                &member,
                format!("expands {}x ({size} bytes); not unpacked", size / compressed),
            ));
            continue;
        }
        if unpacked.saturating_add(size) > budget.max_unpacked {
            out.push(finding(
                Severity::Warning,
                "scan-budget",
                &member,
                format!("the scan's unpack budget of {} bytes is spent; not scanned", budget.max_unpacked),
            ));
            continue;
        }
        // Raw tensor storages of a PyTorch archive are never unpickled by
        // torch.load; they are skipped unread (their CRC is not checked).
        let in_torch_data =
            torch_root.as_ref().is_some_and(|r| name.starts_with(&format!("{r}/data/")) && !name.ends_with(".pkl"));
        let torch_meta = torch_root.as_ref().is_some_and(|r| {
            ["version", "byteorder", ".data/version", ".data/serialization_id", ".format_version", ".storage_alignment"]
                .iter()
                .any(|m| name == format!("{r}/{m}"))
        });
        if in_torch_data || torch_meta {
            continue;
        }
        let mut bytes = Vec::new();
        // One byte past the declared size: a member that lies about its size is caught.
        match (&mut entry).take(size.saturating_add(1)).read_to_end(&mut bytes) {
            Ok(_) if bytes.len() as u64 != size => {
                out.push(finding(
                    Severity::Critical,
                    "zip-size-mismatch",
                    &member,
                    format!("declares {size} bytes but holds {}", bytes.len()),
                ));
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                let rule = if e.to_string().to_ascii_lowercase().contains("checksum") {
                    "zip-bad-crc"
                } else {
                    "zip-unreadable"
                };
                out.push(finding(
                    Severity::Critical,
                    rule,
                    &member,
                    format!(
                        "the member cannot be read intact ({e}); loaders that ignore this would read unscanned bytes"
                    ),
                ));
                continue;
            }
        }
        *unpacked += bytes.len() as u64;
        if name == "config.json" && names.iter().any(|n| n == "metadata.json" || n.ends_with(".weights.h5")) {
            out.extend(scan_keras_config(&member, &bytes));
            continue;
        }
        if name == "metadata.json" && names.iter().any(|n| n == "config.json") {
            continue;
        }
        out.extend(scan(&member, &bytes, depth + 1, unpacked));
    }
    out
}

/// Member names from the central directory, in order, duplicates kept.
fn central_directory_names(data: &[u8]) -> Vec<String> {
    // End of central directory: signature, at most 64 KiB + 22 bytes from the end.
    let start = data.len().saturating_sub(65_557);
    let Some(eocd) = data[start..].windows(4).rposition(|w| w == b"PK\x05\x06").map(|p| p + start) else {
        return Vec::new();
    };
    let rd16 = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let rd32 = |o: usize| data.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let (Some(count), Some(mut p)) = (rd16(eocd + 10), rd32(eocd + 16)) else { return Vec::new() };
    let mut names = Vec::new();
    for _ in 0..count {
        if data.get(p..p + 4) != Some(b"PK\x01\x02") {
            break;
        }
        let (Some(n), Some(x), Some(c)) = (rd16(p + 28), rd16(p + 30), rd16(p + 32)) else { break };
        let Some(name) = data.get(p + 46..p + 46 + n) else { break };
        names.push(String::from_utf8_lossy(name).into_owned());
        p += 46 + n + x + c;
    }
    names
}

/// NumPy `.npy`: an object-dtype array is a pickle after the header.
pub fn scan_npy(location: &str, data: &[u8], pickle_scan: &mut dyn FnMut(&str, &[u8]) -> Vec<Finding>) -> Vec<Finding> {
    let bad = |why: &str| vec![finding(Severity::Warning, "npy-malformed", location, format!("malformed .npy: {why}"))];
    let Some(&major) = data.get(6) else { return bad("truncated") };
    let (len, start) = match major {
        1 => (data.get(8..10).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize), 10usize),
        2 | 3 => (data.get(8..12).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize), 12),
        _ => return bad("unknown version"),
    };
    let Some(header) = len.and_then(|l| data.get(start..start.checked_add(l)?)) else { return bad("truncated header") };
    let header = String::from_utf8_lossy(header);
    let Some(descr) = header.split("'descr':").nth(1).map(|r| r.trim_start()) else {
        return bad("no 'descr' in the header");
    };
    // Object dtype is 'O' or '|O'; structured dtypes list fields, any of which may be 'O'.
    let has_object = descr.starts_with("'|O'")
        || descr.starts_with("'O'")
        || (descr.starts_with('[') && (descr.contains("'O'") || descr.contains("'|O'")));
    if has_object {
        let mut f = vec![finding(
            Severity::Warning,
            "npy-object-dtype",
            location,
            "an object-dtype array: its data is a pickle, loaded only with allow_pickle=True".into(),
        )];
        let body = &data[start + len.unwrap_or(0)..];
        f.extend(pickle_scan(location, body));
        return f;
    }
    Vec::new()
}

/// safetensors: the header must be valid JSON describing tensors that lie
/// inside the file, without overlap, with sizes matching dtype and shape.
pub fn scan_safetensors(location: &str, data: &[u8]) -> Vec<Finding> {
    let bad = |why: String| vec![finding(Severity::Critical, "safetensors-invalid", location, why)];
    let Some(n) = data.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))) else {
        return bad("truncated".into());
    };
    let Some(header) = usize::try_from(n).ok().and_then(|n| data.get(8..8usize.checked_add(n)?)) else {
        return bad(format!("the header length {n} runs past the end of the file"));
    };
    let data_len = (data.len() - 8 - header.len()) as u64;
    let json: serde_json::Value = match serde_json::from_slice(header) {
        Ok(v) => v,
        Err(e) => return bad(format!("the header is not valid JSON: {e}")),
    };
    let Some(map) = json.as_object() else { return bad("the header is not a JSON object".into()) };
    let mut ranges = Vec::new();
    let mut out = Vec::new();
    for (name, t) in map {
        if name == "__metadata__" {
            if !t.as_object().is_some_and(|m| m.values().all(|v| v.is_string())) {
                out.extend(bad("__metadata__ must map strings to strings".into()));
            }
            continue;
        }
        let size = match t["dtype"].as_str() {
            Some("F64" | "I64" | "U64") => 8,
            Some("F32" | "I32" | "U32") => 4,
            Some("F16" | "BF16" | "I16" | "U16") => 2,
            Some("I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2") => 1,
            other => {
                out.extend(bad(format!("tensor {name:?}: unknown dtype {other:?}")));
                continue;
            }
        };
        let shape: Option<Vec<u64>> = t["shape"].as_array().and_then(|a| a.iter().map(|d| d.as_u64()).collect());
        let offsets: Option<Vec<u64>> =
            t["data_offsets"].as_array().and_then(|a| a.iter().map(|d| d.as_u64()).collect());
        let (Some(shape), Some(off)) = (shape, offsets) else {
            out.extend(bad(format!("tensor {name:?}: shape or data_offsets missing or not integers")));
            continue;
        };
        let elems = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        if off.len() != 2 || off[0] > off[1] || off[1] > data_len {
            out.extend(bad(format!(
                "tensor {name:?}: data_offsets {off:?} outside the data section of {data_len} bytes"
            )));
            continue;
        }
        if elems.and_then(|e| e.checked_mul(size)) != Some(off[1] - off[0]) {
            out.extend(bad(format!("tensor {name:?}: {} bytes do not match shape {shape:?}", off[1] - off[0])));
        }
        ranges.push((off[0], off[1], name.clone()));
    }
    ranges.sort();
    for w in ranges.windows(2) {
        if w[1].0 < w[0].1 {
            out.extend(bad(format!("tensors {:?} and {:?} overlap", w[0].2, w[1].2)));
        }
    }
    out
}

/// GGUF: header sanity (version, counts bounded by the file size).
pub fn scan_gguf(location: &str, data: &[u8]) -> Vec<Finding> {
    let bad = |why: String| vec![finding(Severity::Critical, "gguf-invalid", location, why)];
    let rd =
        |o: usize, n: usize| data.get(o..o + n).map(|b| b.iter().rev().fold(0u64, |a, &x| (a << 8) | u64::from(x)));
    let Some(version) = rd(4, 4) else { return bad("truncated header".into()) };
    if !(1..=3).contains(&version) {
        return bad(format!("unknown GGUF version {version}"));
    }
    let (Some(tensors), Some(kvs)) = (rd(8, 8), rd(16, 8)) else { return bad("truncated header".into()) };
    // Each tensor info and key/value takes well over 8 bytes.
    if tensors > data.len() as u64 / 8 || kvs > data.len() as u64 / 8 {
        return bad(format!("{tensors} tensors and {kvs} metadata entries cannot fit in {} bytes", data.len()));
    }
    Vec::new()
}

/// A Keras model config (`config.json` of a `.keras` archive, or the
/// `model_config` attribute of an HDF5 file): Lambda layers carry marshalled
/// Python bytecode; custom objects name code outside Keras.
pub fn scan_keras_config(location: &str, json: &[u8]) -> Vec<Finding> {
    let value: serde_json::Value = match serde_json::from_slice(json) {
        Ok(v) => v,
        Err(e) => {
            return vec![finding(
                Severity::Warning,
                "keras-config-unreadable",
                location,
                format!("the Keras config is not valid JSON ({e}); not judged"),
            )];
        }
    };
    let mut out = Vec::new();
    let mut stack = vec![&value];
    let mut visited = 0u32;
    while let Some(v) = stack.pop() {
        visited += 1;
        if visited > 1_000_000 {
            out.push(finding(Severity::Warning, "scan-budget", location, "config too large; partly scanned".into()));
            break;
        }
        match v {
            serde_json::Value::Object(map) => {
                let class = map.get("class_name").and_then(|c| c.as_str());
                if class == Some("Lambda") {
                    let name = map.get("config").and_then(|c| c.get("name")).and_then(|n| n.as_str()).unwrap_or("?");
                    out.push(finding(
                        Severity::Critical,
                        "keras-lambda-layer",
                        location,
                        format!("Lambda layer {name:?} carries Python code that runs when the model loads"),
                    ));
                }
                if let (Some(module), Some(class)) = (map.get("module").and_then(|m| m.as_str()), class)
                    && !(module == "keras" || module.starts_with("keras.") || module.starts_with("tensorflow.keras"))
                {
                    out.push(finding(
                        Severity::Warning,
                        "keras-custom-object",
                        location,
                        format!("custom object {class:?} from module {module:?} is imported when the model loads"),
                    ));
                }
                stack.extend(map.values());
            }
            serde_json::Value::Array(items) => stack.extend(items.iter()),
            _ => {}
        }
    }
    out
}

/// HDF5 is not parsed yet; the Keras `model_config` attribute is stored as
/// plain JSON text inside it, so a Lambda layer is still visible in the bytes.
pub fn scan_hdf5(location: &str, data: &[u8]) -> Vec<Finding> {
    let mut out = vec![finding(
        Severity::Warning,
        "format-not-scanned",
        location,
        "HDF5 content is recognised but not parsed; only its embedded Keras config text was checked".into(),
    )];
    let lambda = [&b"\"class_name\": \"Lambda\""[..], &b"\"class_name\":\"Lambda\""[..]];
    if lambda.iter().any(|pat| data.windows(pat.len()).any(|w| w == *pat)) {
        out.push(finding(
            Severity::Critical,
            "keras-lambda-layer",
            location,
            "the embedded Keras config holds a Lambda layer, which carries Python code that runs when the model loads"
                .into(),
        ));
    }
    out
}

/// A zlib or gzip stream (how joblib compresses, and `.pkl.gz`): the
/// decompressed content is scanned like a file, within the unpack budget.
pub fn scan_compressed(
    location: &str,
    data: &[u8],
    depth: u32,
    budget: &Budget,
    unpacked: &mut u64,
    scan: &mut MemberScanner<'_>,
) -> Vec<Finding> {
    let limit = budget.max_unpacked.saturating_sub(*unpacked).min((data.len() as u64).saturating_mul(budget.max_ratio));
    let mut out = Vec::new();
    let reader: Box<dyn Read + '_> = if data.starts_with(b"\x1f\x8b") {
        Box::new(flate2::read::MultiGzDecoder::new(data))
    } else {
        Box::new(flate2::read::ZlibDecoder::new(data))
    };
    match reader.take(limit.saturating_add(1)).read_to_end(&mut out) {
        Ok(_) if out.len() as u64 > limit => vec![finding(
            Severity::Critical,
            "compression-bomb",
            location,
            format!("expands past {limit} bytes; not scanned further"),
        )],
        Ok(_) => {
            *unpacked += out.len() as u64;
            scan(&format!("{location}!decompressed"), &out, depth + 1, unpacked)
        }
        Err(e) => vec![finding(
            Severity::Warning,
            "compressed-unreadable",
            location,
            format!("looks compressed but does not decompress ({e}); not judged"),
        )],
    }
}

//! Containers and tensor formats: zip archives (PyTorch, .npz, .keras),
//! NumPy `.npy`, safetensors and GGUF headers. Every member of a container is
//! scanned like a file of its own, to a bounded depth and total size.

use std::io::Read;

use crate::{Ctx, Finding, Severity, finding};

/// Scans a zip archive's members; `scan` is called for each member's bytes.
/// The caller enforces `budget.max_depth` (see `scan_inner`).
pub(crate) fn scan_zip(ctx: &Ctx<'_>, location: &str, data: &[u8], depth: u32) -> Vec<Finding> {
    let budget = &ctx.budget;
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
        if ctx.unpacked.get().saturating_add(size) > budget.max_unpacked {
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
        ctx.unpacked.set(ctx.unpacked.get() + bytes.len() as u64);
        if name == "config.json" && names.iter().any(|n| n == "metadata.json" || n.ends_with(".weights.h5")) {
            out.extend(crate::keras::scan_keras_config(ctx.opts, &member, &bytes));
            continue;
        }
        if name == "metadata.json" && names.iter().any(|n| n == "config.json") {
            continue;
        }
        out.extend(crate::scan_memory(ctx, &member, &bytes, depth + 1));
    }
    out
}

/// The end-of-central-directory record's offset, when `data` ends in one
/// (an archive may be preceded by other bytes: a polyglot, or a self-extractor).
pub fn find_eocd(data: &[u8]) -> Option<usize> {
    let start = data.len().saturating_sub(65_557);
    let pos = data[start..].windows(4).rposition(|w| w == b"PK\x05\x06").map(|p| p + start)?;
    // The comment length must reach exactly to the end of the data.
    let comment = data.get(pos + 20..pos + 22).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)?;
    (pos + 22 + comment == data.len()).then_some(pos)
}

/// Member names from the central directory, in order, duplicates kept. The
/// directory is found where it really is (end record minus its size), so an
/// archive with bytes in front of it is read right.
fn central_directory_names(data: &[u8]) -> Vec<String> {
    let Some(eocd) = find_eocd(data) else { return Vec::new() };
    let rd16 = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let rd32 = |o: usize| data.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let (Some(count), Some(cd_size)) = (rd16(eocd + 10), rd32(eocd + 12)) else { return Vec::new() };
    let Some(mut p) = eocd.checked_sub(cd_size) else { return Vec::new() };
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

/// A safetensors file: an 8-byte little-endian header length that fits the
/// file, then a JSON object (padded with spaces).
pub fn looks_like_safetensors(data: &[u8]) -> bool {
    let Some(n) = data.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))) else { return false };
    let Some(end) = usize::try_from(n).ok().and_then(|n| n.checked_add(8)) else { return false };
    n >= 2
        && end <= data.len()
        && data[8] == b'{'
        && data[8..end].iter().rev().find(|&&b| b != b' ').is_some_and(|&b| b == b'}')
}

/// A tar archive (plain; compressed ones arrive here through their codec):
/// every regular member is scanned as a stream; names that escape the
/// extraction directory are critical, links and special files are not judged.
pub(crate) fn scan_tar(ctx: &Ctx<'_>, location: &str, reader: &mut dyn Read, depth: u32) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(reader);
    let entries = match archive.entries() {
        Ok(e) => e,
        Err(e) => {
            return vec![finding(
                Severity::Warning,
                "tar-unreadable",
                location,
                format!("the tar archive could not be read ({e}); not judged"),
            )];
        }
    };
    let mut seen = std::collections::HashSet::new();
    for (i, entry) in entries.enumerate() {
        if i >= 1_000_000 {
            out.push(finding(
                Severity::Warning,
                "scan-budget",
                location,
                "more than 1,000,000 members; the rest were not judged".into(),
            ));
            break;
        }
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                out.push(finding(
                    Severity::Warning,
                    "tar-unreadable",
                    location,
                    format!("member {i} could not be read ({e}); not judged"),
                ));
                break;
            }
        };
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let member = format!("{location}!{name}");
        let escapes = |p: &str| p.starts_with('/') || p.split(['/', '\\']).any(|c| c == "..") || p.contains('\0');
        if escapes(&name) {
            out.push(finding(
                Severity::Critical,
                "tar-path-traversal",
                &member,
                "the member's name escapes the extraction directory".into(),
            ));
        }
        if !seen.insert(name.clone()) {
            out.push(finding(
                Severity::Critical,
                "tar-duplicate-name",
                &member,
                "two members share this name; extraction keeps the last".into(),
            ));
        }
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry.link_name_bytes().map(|t| String::from_utf8_lossy(&t).into_owned()).unwrap_or_default();
            let (severity, why) = if escapes(&target) {
                (Severity::Critical, "points outside the extraction directory")
            } else {
                (Severity::Warning, "a link is not followed, so what it names is not judged")
            };
            out.push(finding(severity, "tar-link", &member, format!("a link to {target:?}: {why}")));
            continue;
        }
        if !(kind.is_file() || kind == tar::EntryType::Continuous || kind == tar::EntryType::GNUSparse) {
            if kind.is_pax_global_extensions()
                || kind.is_pax_local_extensions()
                || kind.is_gnu_longname()
                || kind.is_gnu_longlink()
            {
                continue;
            }
            out.push(finding(
                Severity::Warning,
                "tar-special-member",
                &member,
                format!("a {kind:?} member; not a model file, not judged"),
            ));
            continue;
        }
        let size = entry.size();
        if ctx.unpacked.get().saturating_add(size) > ctx.budget.max_unpacked {
            out.push(finding(
                Severity::Warning,
                "scan-budget",
                &member,
                format!("the scan's unpack budget of {} bytes is spent; not judged", ctx.budget.max_unpacked),
            ));
            break;
        }
        ctx.unpacked.set(ctx.unpacked.get() + size);
        let mut buffered = std::io::BufReader::with_capacity(1 << 16, entry);
        out.extend(crate::scan_stream(ctx, &member, &mut buffered, size, depth + 1));
        // The archive reads on from the member's end whatever the member's scan consumed.
        let _ = std::io::copy(&mut buffered, &mut std::io::sink());
    }
    out
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

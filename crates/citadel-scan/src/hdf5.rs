//! HDF5 (Keras 2 `.h5` models, the `model.weights.h5` inside `.keras`).
//!
//! What a loader executes from an HDF5 model is its Keras config: the
//! `model_config` (and `training_config`) attributes, JSON text naming layers,
//! Lambda bytecode and custom objects. HDF5 never filters or compresses
//! attributes (filters apply to chunked datasets only), and strings are
//! ASCII or UTF-8, so every attribute's text is present verbatim in the file,
//! whether stored compactly in an object header, densely in a fractal heap,
//! or as a variable-length string in a global heap collection. The scanner
//! therefore does not walk the B-trees: it checks the superblock, then parses
//! every JSON object embedded anywhere in the file (at every `{` not inside
//! one already read) and judges each with the Keras rules
//! ([`crate::keras`]). Numeric datasets are data, never code.
//!
//! Fail closed: a file that names `model_config` but holds no readable JSON
//! config is not judged; neither is an unknown superblock version.

use crate::{Ctx, Finding, Severity, finding};

pub const MAGIC: &[u8] = b"\x89HDF\r\n\x1a\n";

/// The smallest JSON object worth judging (`{"class_name":""}` is 17 bytes).
const MIN_OBJECT: usize = 16;

pub(crate) fn scan_hdf5(ctx: &Ctx<'_>, location: &str, data: &[u8]) -> Vec<Finding> {
    let version = data.get(8).copied();
    if !matches!(version, Some(0..=3)) {
        return vec![finding(
            Severity::Warning,
            "hdf5-unreadable",
            location,
            format!("an HDF5 superblock of unknown version {version:?}; not judged"),
        )];
    }
    let mut out = Vec::new();
    let mut configs = 0usize;
    let mut pos = 0usize;
    // Bounds on hostile files: parse attempts, and the window one attempt reads.
    let mut attempts = 1_000_000 + data.len() / 16;
    while let Some(off) = data[pos..].iter().position(|&b| b == b'{') {
        let start = pos + off;
        attempts -= 1;
        if attempts == 0 {
            out.push(finding(
                Severity::Warning,
                "scan-budget",
                location,
                "too many candidate JSON objects; not judged".into(),
            ));
            return out;
        }
        // Only `{` followed by a key can start an object worth reading.
        let key_follows = data[start + 1..].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'"');
        if !key_follows {
            pos = start + 1;
            continue;
        }
        let window = &data[start..data.len().min(start + (16 << 20))];
        let mut stream = serde_json::Deserializer::from_slice(window).into_iter::<serde_json::Value>();
        match stream.next() {
            Some(Ok(value @ serde_json::Value::Object(_))) if stream.byte_offset() >= MIN_OBJECT => {
                let end = start + stream.byte_offset();
                let text = &data[start..end];
                if contains(text, b"class_name") || contains(text, b"module") || contains(text, b"config") {
                    configs += 1;
                    out.extend(crate::keras::scan_keras_value(ctx.opts, location, &value));
                }
                pos = end;
            }
            _ => pos = start + 1,
        }
    }
    if configs == 0 && (contains(data, b"model_config") || contains(data, b"training_config")) {
        out.push(finding(
            Severity::Warning,
            "hdf5-config-unreadable",
            location,
            "the file names a Keras model config but holds no readable JSON config; not judged".into(),
        ));
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

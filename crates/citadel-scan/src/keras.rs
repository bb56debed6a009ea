//! Keras model configs: `config.json` of a `.keras` archive (Keras 3) and the
//! `model_config` attribute of an HDF5 `.h5` file (Keras 2). A config names
//! code in every place a callable can hide; each is judged:
//! - Lambda layers and `__lambda__` objects carry marshalled Python bytecode
//!   that runs on load: critical;
//! - serialized objects (`{"module", "class_name", "config", "registered_name"}`:
//!   layers, activations, initializers, regularizers, constraints, losses,
//!   optimizers) are imported from their module on load. Keras' own modules
//!   pass; a function (`class_name: "function"`) or class from another module
//!   is judged by the pickle allowlist (so `os.system` is critical) and
//!   otherwise refused unless the workspace allowed it; a `registered_name`
//!   of a custom package is custom code, refused unless allowed;
//! - file references (`vocabulary` given as a path, `filepath`,
//!   `vocabulary_file`) are read on load: refused, critical when the path is
//!   absolute, escapes with `..`, or is a URL.

use crate::allowlist::{Verdict, judge};
use crate::{Finding, ScanOptions, Severity, finding};

/// Keras' own model-building modules: layers, models, and the objects a
/// config names (activations, initializers, regularizers, constraints,
/// losses, metrics, optimizers, dtype policies, ops). Other Keras modules
/// (`utils`, `saving`, `backend`, …: file downloads, file I/O) are judged
/// like any other module.
fn keras_module(module: &str, function: bool) -> bool {
    let rest = ["keras", "tensorflow.keras", "tf_keras"].iter().find_map(|root| {
        if module == *root { Some("") } else { module.strip_prefix(root).and_then(|r| r.strip_prefix('.')) }
    });
    let Some(rest) = rest else { return false };
    let rest = rest.strip_prefix("src.").unwrap_or(rest);
    let first = rest.split('.').next().unwrap_or("");
    if function {
        matches!(first, "activations" | "initializers" | "regularizers" | "constraints" | "losses" | "metrics" | "ops")
    } else {
        matches!(
            first,
            "" | "layers"
                | "models"
                | "engine"
                | "activations"
                | "initializers"
                | "regularizers"
                | "constraints"
                | "losses"
                | "metrics"
                | "optimizers"
                | "dtype_policies"
                | "mixed_precision"
        )
    }
}

pub fn scan_keras_config(opts: &ScanOptions, location: &str, json: &[u8]) -> Vec<Finding> {
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
    scan_keras_value(opts, location, &value)
}

pub fn scan_keras_value(opts: &ScanOptions, location: &str, value: &serde_json::Value) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut stack = vec![value];
    let mut visited = 0u32;
    while let Some(v) = stack.pop() {
        visited += 1;
        if visited > 2_000_000 {
            out.push(finding(Severity::Warning, "scan-budget", location, "config too large; not judged".into()));
            break;
        }
        match v {
            serde_json::Value::Object(map) => {
                let class = map.get("class_name").and_then(|c| c.as_str());
                let name = map.get("config").and_then(|c| c.get("name")).and_then(|n| n.as_str()).unwrap_or("?");
                if class == Some("Lambda") || class == Some("__lambda__") || map.contains_key("__lambda__") {
                    out.push(finding(
                        Severity::Critical,
                        "keras-lambda-layer",
                        location,
                        format!("Lambda {name:?} carries Python code that runs when the model loads"),
                    ));
                }
                if map.get("function_type").and_then(|t| t.as_str()) == Some("lambda") {
                    out.push(finding(
                        Severity::Critical,
                        "keras-lambda-layer",
                        location,
                        "a marshalled lambda function runs when the model loads".into(),
                    ));
                }
                if let Some(class) = class {
                    judge_object(opts, location, map, class, &mut out);
                }
                for key in ["vocabulary", "vocabulary_file", "filepath", "file_path"] {
                    if let Some(path) = map.get(key).and_then(|p| p.as_str()) {
                        file_reference(location, key, path, &mut out);
                    }
                }
                stack.extend(map.values());
            }
            serde_json::Value::Array(items) => stack.extend(items.iter()),
            _ => {}
        }
    }
    out
}

fn judge_object(
    opts: &ScanOptions,
    location: &str,
    map: &serde_json::Map<String, serde_json::Value>,
    class: &str,
    out: &mut Vec<Finding>,
) {
    let module = map.get("module").and_then(|m| m.as_str());
    let registered = map.get("registered_name").and_then(|r| r.as_str());
    // A function reference: `{"module": M, "class_name": "function", "config": NAME}`.
    let (module_name, attr) = if class == "function" {
        let fname = map.get("config").and_then(|c| c.as_str()).unwrap_or("?");
        (module, fname)
    } else {
        (module, class)
    };
    if let Some(m) = module_name {
        if keras_module(m, class == "function") {
            // Keras' own objects; a registered name other than the class is custom code.
            if let Some(r) = registered
                && r != class
                && r != "function"
                && r.contains('>')
            {
                custom(opts, location, &format!("{m}.{r}"), r, out);
            }
            return;
        }
        let full = format!("{m}.{attr}");
        match judge(m, attr) {
            Verdict::Dangerous(why) => out.push(finding(
                Severity::Critical,
                "keras-dangerous-callable",
                location,
                format!("the config imports {full} on load: {why}"),
            )),
            Verdict::Safe => {}
            Verdict::Unknown => custom(opts, location, &full, attr, out),
        }
    } else if let Some(r) = registered
        && r.contains('>')
    {
        custom(opts, location, r, r, out);
    }
}

fn custom(opts: &ScanOptions, location: &str, full: &str, what: &str, out: &mut Vec<Finding>) {
    if opts.allows(full) {
        out.push(finding(
            Severity::Info,
            "keras-allowed-by-workspace",
            location,
            format!("custom object {full} is allowed by a reviewed extension (the workspace's allowlist, or --allow for this scan)"),
        ));
    } else {
        out.push(finding(
            Severity::Warning,
            "keras-custom-object",
            location,
            format!(
                "custom object {what:?} ({full}) is imported when the model loads; it is on no allowlist, so the model is not judged safe (after a review: `citadel allowlist add` for registration, `--allow` for one scan)"
            ),
        ));
    }
}

fn file_reference(location: &str, key: &str, path: &str, out: &mut Vec<Finding>) {
    let escapes = path.starts_with('/')
        || path.starts_with('\\')
        || path.contains("://")
        || path.contains('\0')
        || path.split(['/', '\\']).any(|p| p == "..")
        || path.get(1..2) == Some(":");
    let (severity, why) = if escapes {
        (Severity::Critical, "outside the model (an absolute path, a parent directory or a URL)")
    } else {
        (Severity::Warning, "a file the loader reads, which the scan cannot judge")
    };
    out.push(finding(severity, "keras-file-reference", location, format!("`{key}` names {path:?}: {why}")));
}

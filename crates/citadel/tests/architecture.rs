//! The crates' dependencies point one way: down the layers below, read from
//! `cargo metadata` (so a new dependency that points up, or sideways inside
//! a layer, fails here, not in review).
#![allow(clippy::unwrap_used)] // a test that cannot set up should stop loudly

use std::collections::BTreeMap;
use std::process::Command;

/// The layers, lowest first. A crate may depend only on crates of lower
/// layers. A crate not listed fails the test: place it.
const LAYERS: &[&[&str]] = &[
    // Pure foundations: no other Citadel crate below them.
    &["citadel-types", "citadel-pii", "citadel-infer", "citadel-sandbox", "citadel-scan", "citadel-signing"],
    &["citadel-crypto", "citadel-policy", "citadel-ml"],
    &["citadel-audit", "citadel-data"],
    &["citadel-store"],
    // The one path for authority.
    &["citadel-control"],
    // The data plane, on the control plane.
    &["citadel-serve"],
    // The control plane over HTTPS (the gateway's listener and credentials).
    &["citadel-api"],
    // Front ends: the binary, the benchmarks' binary and the fuzz bodies.
    &["citadel", "citadel-bench", "citadel-fuzz"],
];

fn layer_of(name: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&name))
}

#[test]
fn crate_dependencies_point_down_the_layers() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut deps: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for p in meta["packages"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap().to_string();
        let ours: Vec<(String, String)> = p["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["name"].as_str().is_some_and(|n| n.starts_with("citadel")))
            .map(|d| (d["name"].as_str().unwrap().to_string(), d["kind"].as_str().unwrap_or("normal").to_string()))
            .collect();
        deps.insert(name, ours);
    }
    assert!(deps.len() >= LAYERS.iter().map(|l| l.len()).sum::<usize>(), "{deps:?}");
    let mut wrong = Vec::new();
    for (krate, uses) in &deps {
        let Some(at) = layer_of(krate) else {
            wrong.push(format!("{krate} is in no layer: place it in LAYERS"));
            continue;
        };
        for (dep, kind) in uses {
            // Tests may use what they test against (dev-dependencies).
            if kind == "dev" {
                continue;
            }
            match layer_of(dep) {
                Some(l) if l < at => {}
                Some(l) => wrong.push(format!("{krate} (layer {at}) depends on {dep} (layer {l})")),
                None => wrong.push(format!("{krate} depends on {dep}, which is in no layer")),
            }
        }
    }
    assert!(wrong.is_empty(), "dependencies that do not point down:\n  {}", wrong.join("\n  "));
}

/// Only the control plane's verifiers make a `Caller` and only its
/// `authorize` makes a `Permit`: neither type has a public constructor or a
/// public field, and no other crate names a struct literal of them.
#[test]
fn callers_and_permits_are_made_only_by_the_control_plane() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let identity = std::fs::read_to_string(root.join("citadel-control/src/identity.rs")).unwrap();
    for ty in ["pub struct Caller {", "pub struct Permit {"] {
        let at = identity.find(ty).unwrap_or_else(|| panic!("{ty} moved"));
        let body = &identity[at..at + identity[at..].find("\n}").unwrap()];
        assert!(!body.lines().skip(1).any(|l| l.trim_start().starts_with("pub ")), "a public field in {ty}");
    }
    let mut literals = Vec::new();
    for entry in walk(&root) {
        let text = std::fs::read_to_string(&entry).unwrap();
        if entry.ends_with("citadel-control/src/identity.rs") || entry.ends_with("tests/architecture.rs") {
            continue;
        }
        for needle in ["Caller {", "Permit {"] {
            for (i, _) in text.match_indices(needle) {
                let before = &text[..i];
                let line_start = before.rfind('\n').map(|p| p + 1).unwrap_or(0);
                let line = &text[line_start..i + needle.len()];
                if !line.contains("struct ") && !line.contains("impl ") && !line.trim_start().starts_with("//") {
                    literals.push(format!("{}: {}", entry.display(), line.trim()));
                }
            }
        }
    }
    assert!(literals.is_empty(), "built outside the control plane's identity module:\n  {}", literals.join("\n  "));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                if !p.ends_with("target") {
                    stack.push(p);
                }
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out
}

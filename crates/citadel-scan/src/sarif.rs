//! SARIF 2.1.0 output, for code-scanning dashboards and CI gates.
//!
//! A finding inside a container points at the container file (the artifact
//! a user can open) and names the member as a logical location.

use serde_json::{Value, json};

use crate::{FileReport, Severity};

/// Builds one SARIF run from `reports`.
pub fn to_sarif(reports: &[FileReport]) -> Value {
    let mut rules: Vec<String> = reports.iter().flat_map(|r| r.findings.iter().map(|f| f.rule.clone())).collect();
    rules.sort();
    rules.dedup();
    let results: Vec<Value> = reports
        .iter()
        .flat_map(|r| r.findings.iter().map(move |f| (r, f)))
        .map(|(r, f)| {
            let level = match f.severity {
                Severity::Critical => "error",
                Severity::Warning => "warning",
                Severity::Info => "note",
            };
            let mut location = json!({"physicalLocation": {"artifactLocation": {"uri": uri(&r.path)}}});
            if let Some((_, member)) = f.location.split_once('!') {
                location["logicalLocations"] = json!([{"fullyQualifiedName": member, "kind": "member"}]);
            }
            json!({
                "ruleId": f.rule,
                "ruleIndex": rules.iter().position(|x| *x == f.rule).unwrap_or(0),
                "level": level,
                "message": {"text": f.message},
                "locations": [location],
                "properties": {"severity": f.severity.as_str()},
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "citadel-scan",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules.iter().map(|r| json!({"id": r, "shortDescription": {"text": r.replace('-', " ")}})).collect::<Vec<_>>(),
            }},
            "artifacts": reports.iter().map(|r| json!({"location": {"uri": uri(&r.path)}, "length": r.size})).collect::<Vec<_>>(),
            "results": results,
        }],
    })
}

/// A relative path as a SARIF URI reference (percent-encoding what a URI cannot hold).
fn uri(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

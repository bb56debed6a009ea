//! Encodings for SIEMs: JSON Lines, ArcSight CEF and OCSF (API Activity).

use std::str::FromStr;

use crate::{AuditRecord, Outcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Jsonl,
    Cef,
    Ocsf,
}

impl FromStr for ExportFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "jsonl" => Ok(ExportFormat::Jsonl),
            "cef" => Ok(ExportFormat::Cef),
            "ocsf" => Ok(ExportFormat::Ocsf),
            other => Err(format!("unknown export format {other:?}; use jsonl, cef or ocsf")),
        }
    }
}

/// CEF header fields escape `|` and `\`; extension values escape `=`, `\`
/// and line breaks (CEF Implementation Standard, "Character encoding").
fn cef_header(s: &str) -> String {
    s.replace('\\', "\\\\").replace('|', "\\|")
}

fn cef_ext(s: &str) -> String {
    s.replace('\\', "\\\\").replace('=', "\\=").replace('\n', "\\n").replace('\r', "\\r")
}

/// One record as one line (no trailing newline).
pub fn encode_record(rec: &AuditRecord, format: ExportFormat) -> String {
    let e = &rec.event;
    match format {
        ExportFormat::Jsonl => serde_json::to_string(rec).unwrap_or_default(),
        ExportFormat::Cef => {
            let severity = match e.outcome {
                Outcome::Success => 3,
                Outcome::Failure => 5,
                Outcome::Denied => 7,
            };
            format!(
                "CEF:0|Citadel|Citadel|{}|{}|{}|{}|rt={} suser={} act={} outcome={} cs1Label=resource cs1={} cs2Label=requestId cs2={} cn1Label=seq cn1={} cs3Label=hash cs3={} msg={}",
                env!("CARGO_PKG_VERSION"),
                cef_header(&e.action),
                cef_header(&e.action),
                severity,
                e.ts.0 / 1000,
                cef_ext(&e.actor),
                cef_ext(&e.action),
                e.outcome.as_str(),
                cef_ext(&e.resource),
                cef_ext(&e.request_id),
                rec.seq,
                rec.hash,
                cef_ext(&serde_json::to_string(&e.details).unwrap_or_default()),
            )
        }
        ExportFormat::Ocsf => {
            // OCSF 1.1 "API Activity" (class_uid 6003), category Application Activity (6).
            let (status_id, status) = match e.outcome {
                Outcome::Success => (1, "Success"),
                Outcome::Denied | Outcome::Failure => (2, "Failure"),
            };
            let activity_id = activity_for(&e.action);
            let v = serde_json::json!({
                "category_uid": 6,
                "class_uid": 6003,
                "type_uid": 6003 * 100 + activity_id,
                "activity_id": activity_id,
                "severity_id": if e.outcome == Outcome::Denied { 3 } else { 1 },
                "time": e.ts.0 / 1000,
                "status_id": status_id,
                "status": status,
                "status_detail": e.outcome.as_str(),
                "metadata": {
                    "version": "1.1.0",
                    "uid": format!("{}", rec.seq),
                    "correlation_uid": e.request_id,
                    "product": {"name": "Citadel", "vendor_name": "Citadel", "version": env!("CARGO_PKG_VERSION")},
                },
                "actor": {"user": {"uid": e.actor}},
                "api": {"operation": e.action, "request": {"uid": e.request_id}},
                "resources": [{"uid": e.resource}],
                "unmapped": {"hash": rec.hash, "prev_hash": rec.prev_hash, "details": e.details},
            });
            v.to_string()
        }
    }
}

/// OCSF API Activity ids: 1 Create, 2 Read, 3 Update, 4 Delete, 99 Other.
fn activity_for(action: &str) -> u64 {
    let verb = action.rsplit('.').next().unwrap_or("");
    match verb {
        "put" | "create" | "register" | "init" | "issue" | "add" => 1,
        "get" | "read" | "list" | "query" | "export" | "show" | "verify" => 2,
        "rotate" | "update" | "grant" | "promote" => 3,
        "delete" | "revoke" | "gc" | "disable" => 4,
        _ => 99,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AuditEvent;
    use citadel_types::{Digest, Timestamp};

    fn rec(actor: &str) -> AuditRecord {
        AuditRecord::chain(
            0,
            Digest::ZERO,
            AuditEvent {
                ts: Timestamp(1_700_000_000_000_000),
                actor: actor.into(),
                action: "artifact.put".into(),
                resource: "artifact:x".into(),
                outcome: Outcome::Denied,
                request_id: "r1".into(),
                details: serde_json::json!({"k": "a=b|c"}),
            },
        )
    }

    #[test]
    fn cef_escapes_and_has_seven_header_fields() {
        let line = encode_record(&rec("evil|actor=x\nnext"), ExportFormat::Cef);
        assert!(!line.contains('\n'));
        // Seven header fields, then the extension (where '|' needs no escape).
        let parts: Vec<&str> = line.splitn(8, '|').collect();
        assert_eq!(
            parts[..7],
            ["CEF:0", "Citadel", "Citadel", env!("CARGO_PKG_VERSION"), "artifact.put", "artifact.put", "7"]
        );
        assert!(parts[7].starts_with("rt=1700000000000 "), "{line}");
        assert!(line.contains("suser=evil|actor\\=x\\nnext"));
        assert!(line.contains("|artifact.put|artifact.put|7|"));
    }

    #[test]
    fn ocsf_and_jsonl_are_json() {
        let o: serde_json::Value = serde_json::from_str(&encode_record(&rec("a"), ExportFormat::Ocsf)).unwrap();
        assert_eq!(o["class_uid"], 6003);
        assert_eq!(o["type_uid"], 600301);
        assert_eq!(o["status"], "Failure");
        let j: AuditRecord = serde_json::from_str(&encode_record(&rec("a"), ExportFormat::Jsonl)).unwrap();
        assert_eq!(j, rec("a"));
    }
}

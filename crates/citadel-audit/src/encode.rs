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

/// The IANA "example" private enterprise number (RFC 5612), naming the
/// structured-data element until Citadel has a number of its own.
pub const SD_ID: &str = "citadel@32473";

/// One record as an RFC 5424 syslog message (no framing): facility 13
/// (log audit); severity informational (6) for a success, warning (4) for a
/// denial, error (3) for a failure; APP-NAME `citadel`, MSGID the action;
/// structured data `[citadel@32473 seq outcome actor resource hash]`; MSG
/// the record in `format` (JSON, CEF or OCSF). `hostname` is the sender's
/// (`-` when unknown). Receivers deduplicate by `seq` (with the hash).
pub fn rfc5424(rec: &AuditRecord, hostname: &str, format: ExportFormat) -> String {
    let e = &rec.event;
    let severity = match e.outcome {
        Outcome::Success => 6,
        Outcome::Denied => 4,
        Outcome::Failure => 3,
    };
    let header_field = |s: &str, max: usize| -> String {
        let t: String = s.chars().filter(|c| c.is_ascii_graphic()).take(max).collect();
        if t.is_empty() { "-".into() } else { t }
    };
    // PARAM-VALUE escapes '"', '\' and ']' (RFC 5424 §6.3.3).
    let sd = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"").replace(']', "\\]");
    format!(
        "<{}>1 {} {} citadel - {} [{SD_ID} seq=\"{}\" outcome=\"{}\" actor=\"{}\" resource=\"{}\" hash=\"{}\"] {}",
        13 * 8 + severity,
        e.ts.to_rfc3339(),
        header_field(hostname, 255),
        header_field(&e.action, 32),
        rec.seq,
        e.outcome.as_str(),
        sd(&e.actor),
        sd(&e.resource),
        rec.hash.to_hex(),
        encode_record(rec, format)
    )
}

/// RFC 5425 (syslog over TLS) framing: the message's length in octets, a space, the message.
pub fn octet_counted(msg: &str) -> Vec<u8> {
    let mut out = format!("{} ", msg.len()).into_bytes();
    out.extend_from_slice(msg.as_bytes());
    out
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

    #[test]
    fn syslog_messages_follow_rfc5424_and_escape_structured_data() {
        let mut rec = rec("ada");
        rec.event.resource = "model:a]b\"c\\d".into();
        let m = rfc5424(&rec, "host 1", ExportFormat::Jsonl);
        // Facility 13 (log audit) × 8 + severity 4 (a denial is a warning).
        assert!(m.starts_with("<108>1 2023-11-14T22:13:20.000000Z "), "{m}");
        assert!(m.contains(" host1 citadel - "), "{m}");
        assert!(m.contains(r#"resource="model:a\]b\"c\\d""#), "{m}");
        let framed = octet_counted(&m);
        assert!(framed.starts_with(format!("{} <108>", m.len()).as_bytes()));
    }
}

//! The tamper-evident audit log: records, their hash chain, signed
//! checkpoints, verification and SIEM encodings. Storage lives in
//! `citadel-store`; this crate is pure so it can be tested exhaustively.
//!
//! **Chain.** Record `n` stores `prev_hash` (the hash of record `n-1`, zero for
//! the first) and `hash = SHA-256(canonical encoding of every field of n,
//! including seq and prev_hash)`. Editing a record breaks its own hash;
//! recomputing that hash breaks the next record's link; deleting, inserting or
//! reordering records breaks the sequence numbers or the links.
//!
//! **Checkpoints.** Periodically, the chain head `(seq, hash)` is signed with
//! the workspace's Ed25519 audit key. Someone who rewrites the whole chain
//! after a checkpoint cannot produce a matching signature, and a checkpoint
//! whose seq lies past the end of the log reveals truncation.

#![forbid(unsafe_code)]

mod encode;
mod verify;

pub use encode::{ExportFormat, encode_record, octet_counted, rfc5424};
pub use verify::{ChainVerifier, Problem, verify_chain};

use citadel_types::{Digest, Timestamp};
use serde::{Deserialize, Serialize};

/// What came of an attempted action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Authorized and completed.
    Success,
    /// Refused by authorization (or authentication).
    Denied,
    /// Authorized but failed (bad input, I/O, integrity failure…).
    Failure,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Failure => "failure",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [Outcome::Success, Outcome::Denied, Outcome::Failure].into_iter().find(|o| o.as_str() == s)
    }
}

/// An event about to be appended: the chain fields are filled in on append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub ts: Timestamp,
    /// Principal id, or `anonymous` when authentication failed.
    pub actor: String,
    /// Dotted action name, e.g. `artifact.put`.
    pub action: String,
    /// `kind:name`, e.g. `artifact:3f2a…` or `principal:alice`.
    pub resource: String,
    pub outcome: Outcome,
    pub request_id: String,
    /// Structured, non-secret detail (sizes, reasons, parameters).
    pub details: serde_json::Value,
}

/// A record as stored: an event plus its place in the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: i64,
    #[serde(flatten)]
    pub event: AuditEvent,
    pub prev_hash: Digest,
    pub hash: Digest,
}

fn put_field(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    buf.extend_from_slice(bytes);
}

/// The canonical bytes hashed for a record: a domain tag, then every field
/// length-prefixed (so no two different records encode the same). `details`
/// is serialized by serde_json, whose maps are sorted by key.
pub fn canonical_bytes(seq: i64, event: &AuditEvent, prev_hash: &Digest) -> Vec<u8> {
    let mut buf = b"citadel-audit-record-v1".to_vec();
    buf.extend_from_slice(&seq.to_be_bytes());
    buf.extend_from_slice(&event.ts.0.to_be_bytes());
    put_field(&mut buf, event.actor.as_bytes());
    put_field(&mut buf, event.action.as_bytes());
    put_field(&mut buf, event.resource.as_bytes());
    put_field(&mut buf, event.outcome.as_str().as_bytes());
    put_field(&mut buf, event.request_id.as_bytes());
    put_field(&mut buf, serde_json::to_string(&event.details).unwrap_or_default().as_bytes());
    buf.extend_from_slice(&prev_hash.0);
    buf
}

impl AuditRecord {
    /// Places `event` after a record with sequence `prev_seq` and hash `prev_hash`.
    pub fn chain(prev_seq: i64, prev_hash: Digest, event: AuditEvent) -> Self {
        let seq = prev_seq + 1;
        let hash = Digest::of(&canonical_bytes(seq, &event, &prev_hash));
        AuditRecord { seq, event, prev_hash, hash }
    }

    pub fn computed_hash(&self) -> Digest {
        Digest::of(&canonical_bytes(self.seq, &self.event, &self.prev_hash))
    }
}

/// A signed statement "the chain had `seq` records and head `head` at `ts`".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: i64,
    pub head: Digest,
    pub ts: Timestamp,
    pub key_id: String,
    #[serde(with = "hex_bytes")]
    pub signature: Vec<u8>,
}

impl Checkpoint {
    pub fn message(seq: i64, head: &Digest, ts: Timestamp) -> Vec<u8> {
        let mut m = b"citadel-audit-checkpoint-v1".to_vec();
        m.extend_from_slice(&seq.to_be_bytes());
        m.extend_from_slice(&head.0);
        m.extend_from_slice(&ts.0.to_be_bytes());
        m
    }

    pub fn sign(seq: i64, head: Digest, signer: &citadel_crypto::AuditSigner) -> Self {
        let ts = Timestamp::now();
        let signature = signer.sign(&Self::message(seq, &head, ts));
        Checkpoint { seq, head, ts, key_id: signer.key_id(), signature }
    }

    pub fn verify(&self, public_key: &[u8]) -> bool {
        citadel_crypto::verify_ed25519(public_key, &Self::message(self.seq, &self.head, self.ts), &self.signature)
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod float_tests {
    use super::*;

    /// Records are stored as text and re-parsed to verify them: every float
    /// must come back bit for bit, or an honest record reads as tampered.
    /// (serde_json's default float parser may be off by one ulp; the
    /// workspace enables `float_roundtrip`.)
    #[test]
    fn details_with_floats_hash_the_same_after_a_text_round_trip() {
        let mut x = 0.123_456_789_f64;
        let mut values = Vec::new();
        for _ in 0..2000 {
            x = (x * 9_301.0 + 49_297.0) % 233_280.0 / 233_280.0 + x.sqrt() / 7.0;
            values.push(x);
        }
        let event = AuditEvent {
            ts: citadel_types::Timestamp(1),
            actor: "a".into(),
            action: "x".into(),
            resource: "r".into(),
            outcome: Outcome::Success,
            request_id: "q".into(),
            details: serde_json::json!({"values": values, "ratio": 0.23716025222874534, "tiny": 1e-7}),
        };
        let record = AuditRecord::chain(0, citadel_types::Digest([0; 32]), event.clone());
        let text = serde_json::to_string(&event.details).unwrap();
        let reparsed = AuditEvent { details: serde_json::from_str(&text).unwrap(), ..event };
        let again = AuditRecord { seq: record.seq, event: reparsed, prev_hash: record.prev_hash, hash: record.hash };
        assert_eq!(again.computed_hash(), record.hash);
    }
}

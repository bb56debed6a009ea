use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::{AuditRecord, Checkpoint};

/// One thing wrong with the log, naming the record or checkpoint concerned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// The record's content no longer matches its stored hash.
    Edited { seq: i64 },
    /// Sequence numbers jump: records in between were removed.
    Missing { from_seq: i64, to_seq: i64 },
    /// The record does not link to its predecessor: it was inserted,
    /// reordered, or its predecessor was rewritten.
    BrokenLink { seq: i64 },
    /// The same sequence number appears twice.
    Duplicate { seq: i64 },
    /// A checkpoint's signature does not verify with the audit public key.
    BadCheckpointSignature { seq: i64 },
    /// A signed checkpoint names a head hash the log no longer has at that seq.
    CheckpointMismatch { seq: i64 },
    /// A signed checkpoint covers records past the end of the log.
    Truncated { last_seq: i64, checkpoint_seq: i64 },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Edited { seq } => write!(f, "record {seq} was edited: its content does not match its hash"),
            Problem::Missing { from_seq, to_seq } if from_seq == to_seq => {
                write!(f, "record {from_seq} is missing (deleted)")
            }
            Problem::Missing { from_seq, to_seq } => write!(f, "records {from_seq}..={to_seq} are missing (deleted)"),
            Problem::BrokenLink { seq } => write!(
                f,
                "record {seq} does not link to the record before it: inserted, reordered, or its predecessor was rewritten"
            ),
            Problem::Duplicate { seq } => write!(f, "sequence number {seq} appears more than once"),
            Problem::BadCheckpointSignature { seq } => {
                write!(f, "checkpoint at record {seq} has an invalid signature")
            }
            Problem::CheckpointMismatch { seq } => {
                write!(
                    f,
                    "checkpoint at record {seq} signed a different chain head: records up to {seq} were rewritten"
                )
            }
            Problem::Truncated { last_seq, checkpoint_seq } => write!(
                f,
                "the log ends at record {last_seq} but a signed checkpoint covers record {checkpoint_seq}: the tail was deleted"
            ),
        }
    }
}

/// Checks a whole log (records in ascending `seq` order, as read) against
/// itself and against the signed checkpoints. Returns every problem found,
/// in log order; an empty list means the log is intact.
pub fn verify_chain(records: &[AuditRecord], checkpoints: &[Checkpoint], public_key: &[u8]) -> Vec<Problem> {
    let mut v = ChainVerifier::new(checkpoints);
    for rec in records {
        v.push(rec);
    }
    v.finish(public_key)
}

/// [`verify_chain`] one record at a time, for a log read page by page:
/// memory holds the previous record's link and the hashes at checkpointed
/// sequence numbers only, whatever the log's length.
#[derive(Debug)]
pub struct ChainVerifier<'a> {
    checkpoints: &'a [Checkpoint],
    /// The checkpointed sequence numbers, and the hash the log has there.
    heads: BTreeMap<i64, Option<citadel_types::Digest>>,
    prev: Option<(i64, citadel_types::Digest)>,
    problems: Vec<Problem>,
    records: usize,
}

impl<'a> ChainVerifier<'a> {
    pub fn new(checkpoints: &'a [Checkpoint]) -> Self {
        let heads = checkpoints.iter().map(|c| (c.seq, None)).collect();
        ChainVerifier { checkpoints, heads, prev: None, problems: Vec::new(), records: 0 }
    }

    /// The next record (ascending `seq`).
    pub fn push(&mut self, rec: &AuditRecord) {
        self.records += 1;
        if rec.computed_hash() != rec.hash {
            self.problems.push(Problem::Edited { seq: rec.seq });
        }
        match self.prev {
            None => {
                if rec.seq > 1 {
                    self.problems.push(Problem::Missing { from_seq: 1, to_seq: rec.seq - 1 });
                } else if rec.prev_hash != citadel_types::Digest::ZERO {
                    self.problems.push(Problem::BrokenLink { seq: rec.seq });
                }
            }
            Some((seq, hash)) => {
                if rec.seq == seq {
                    self.problems.push(Problem::Duplicate { seq: rec.seq });
                } else if rec.seq < seq {
                    self.problems.push(Problem::BrokenLink { seq: rec.seq });
                } else {
                    if rec.seq > seq + 1 {
                        self.problems.push(Problem::Missing { from_seq: seq + 1, to_seq: rec.seq - 1 });
                    }
                    if rec.prev_hash != hash {
                        self.problems.push(Problem::BrokenLink { seq: rec.seq });
                    }
                }
            }
        }
        if let Some(h) = self.heads.get_mut(&rec.seq) {
            *h = Some(rec.hash);
        }
        self.prev = Some((rec.seq, rec.hash));
    }

    /// Records pushed so far, and the last one's `(seq, hash)`.
    pub fn head(&self) -> (usize, Option<(i64, citadel_types::Digest)>) {
        (self.records, self.prev)
    }

    /// The checkpoints judged against what was pushed; every problem, in log order.
    pub fn finish(mut self, public_key: &[u8]) -> Vec<Problem> {
        let last_seq = self.prev.map(|p| p.0).unwrap_or(0);
        for cp in self.checkpoints {
            if !cp.verify(public_key) {
                self.problems.push(Problem::BadCheckpointSignature { seq: cp.seq });
                continue;
            }
            if cp.seq > last_seq {
                self.problems.push(Problem::Truncated { last_seq, checkpoint_seq: cp.seq });
            } else if let Some(Some(h)) = self.heads.get(&cp.seq) {
                if *h != cp.head {
                    self.problems.push(Problem::CheckpointMismatch { seq: cp.seq });
                }
            } else if cp.seq > 0 {
                // The record the checkpoint signed is gone; `Missing` already
                // names the gap, but the checkpoint confirms it was real.
                self.problems.push(Problem::CheckpointMismatch { seq: cp.seq });
            }
        }
        self.problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AuditEvent, Outcome};
    use citadel_crypto::{AuditSigner, DataKey};
    use citadel_types::{Digest, Timestamp};

    fn event(i: i64) -> AuditEvent {
        AuditEvent {
            ts: Timestamp(1_700_000_000_000_000 + i),
            actor: "p-alice".into(),
            action: "artifact.put".into(),
            resource: format!("artifact:{i}"),
            outcome: Outcome::Success,
            request_id: format!("req-{i}"),
            details: serde_json::json!({"size": i}),
        }
    }

    fn log(n: i64) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for i in 0..n {
            let (s, h) = out.last().map(|r| (r.seq, r.hash)).unwrap_or((0, Digest::ZERO));
            out.push(AuditRecord::chain(s, h, event(i)));
        }
        out
    }

    fn rechain(records: &mut [AuditRecord]) {
        let mut prev = Digest::ZERO;
        for r in records.iter_mut() {
            r.prev_hash = prev;
            r.hash = r.computed_hash();
            prev = r.hash;
        }
    }

    #[test]
    fn intact_log_verifies() {
        let signer = AuditSigner::from_data_key(&DataKey::generate().unwrap()).unwrap();
        let l = log(10);
        let cp = Checkpoint::sign(10, l[9].hash, &signer);
        assert!(verify_chain(&l, &[cp], &signer.public_key()).is_empty());
        assert!(verify_chain(&[], &[], &signer.public_key()).is_empty());
    }

    #[test]
    fn each_tampering_is_named() {
        let pk = AuditSigner::from_data_key(&DataKey::generate().unwrap()).unwrap().public_key();
        let mut edited = log(5);
        edited[2].event.actor = "p-mallory".into();
        assert_eq!(verify_chain(&edited, &[], &pk), vec![Problem::Edited { seq: 3 }]);

        let mut deleted = log(5);
        deleted.remove(2);
        assert_eq!(
            verify_chain(&deleted, &[], &pk),
            vec![Problem::Missing { from_seq: 3, to_seq: 3 }, Problem::BrokenLink { seq: 4 }]
        );

        let mut reordered = log(5);
        reordered.swap(1, 2);
        let p = verify_chain(&reordered, &[], &pk);
        assert!(p.contains(&Problem::BrokenLink { seq: 2 }), "{p:?}");

        let mut inserted = log(5);
        let fake = AuditRecord::chain(2, inserted[1].hash, event(99));
        inserted.insert(2, fake);
        let p = verify_chain(&inserted, &[], &pk);
        assert!(p.contains(&Problem::Duplicate { seq: 3 }), "{p:?}");
    }

    #[test]
    fn rewritten_chain_is_caught_by_checkpoint() {
        let signer = AuditSigner::from_data_key(&DataKey::generate().unwrap()).unwrap();
        let mut l = log(6);
        let cp = Checkpoint::sign(6, l[5].hash, &signer);
        l[1].event.outcome = Outcome::Denied;
        rechain(&mut l);
        assert_eq!(
            verify_chain(&l, std::slice::from_ref(&cp), &signer.public_key()),
            vec![Problem::CheckpointMismatch { seq: 6 }]
        );

        let mut truncated = log(6);
        truncated.truncate(4);
        assert_eq!(
            verify_chain(&truncated, std::slice::from_ref(&cp), &signer.public_key()),
            vec![Problem::Truncated { last_seq: 4, checkpoint_seq: 6 }]
        );

        let mut forged = cp;
        forged.seq = 5;
        assert_eq!(
            verify_chain(&log(6), &[forged], &signer.public_key()),
            vec![Problem::BadCheckpointSignature { seq: 5 }]
        );
    }
}

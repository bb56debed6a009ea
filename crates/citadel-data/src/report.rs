//! What an ingest found: the version's profile and every check's outcome.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::checks::{ColumnDrift, DuplicateReport, KAnonymityReport};
use crate::profile::ColumnProfile;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Stored and usable.
    Accepted,
    /// Stored and flagged: unusable for training until a data steward releases it.
    Quarantined,
    /// Not stored.
    Rejected,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Accepted => "accepted",
            Status::Quarantined => "quarantined",
            Status::Rejected => "rejected",
        }
    }
}

/// One failed expectation. Examples are line numbers, with the value only
/// when the column holds no personal data and is not masked or restricted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Violation {
    pub column: Option<String>,
    pub rule: String,
    pub count: u64,
    pub examples: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IngestReport {
    pub status: Status,
    /// Why the version is rejected or quarantined.
    pub reasons: Vec<String>,
    pub format: String,
    pub rows: u64,
    pub source_columns: Vec<String>,
    pub stored_columns: Vec<String>,
    pub profile: Vec<ColumnProfile>,
    pub violations: Vec<Violation>,
    pub label: Option<String>,
    /// Label value → share of rows (as stored).
    pub label_shares: BTreeMap<String, f64>,
    pub k_anonymity: Option<KAnonymityReport>,
    pub duplicates: DuplicateReport,
    /// Drift and novelty per column against the previous version.
    pub drift: Vec<ColumnDrift>,
    /// Largest change of a label's share against the previous version.
    pub label_shift: Option<f64>,
    /// The checks that made the version suspicious.
    pub suspicious: Vec<String>,
    /// Where a check ran on part of the data (bounded memory), and why.
    #[serde(default)]
    pub notes: Vec<String>,
    /// Columns that look like quasi-identifiers when none were declared.
    #[serde(default)]
    pub quasi_identifier_candidates: Vec<String>,
}

impl IngestReport {
    pub fn column(&self, name: &str) -> Option<&ColumnProfile> {
        self.profile.iter().find(|c| c.name == name)
    }
}

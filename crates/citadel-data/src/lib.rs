//! Datasets: streaming ingest of CSV and Parquet over Apache Arrow, with
//! profiles, expectations, PII detection and masking, k-anonymity, drift and
//! poisoning checks against the previous version, and keyed row hashes for
//! diffs.
//!
//! Pure: it reads the source file and writes into a directory it is given;
//! storing, versioning, authorization and audit are the control plane's.

#![forbid(unsafe_code)]

mod aligned;
pub mod checks;
pub mod erase;
pub mod ingest;
pub mod mask;
pub mod profile;
pub mod report;
pub mod sample;
pub mod sketch;
pub mod source;
pub mod spec;
pub mod stats;

pub use ingest::{IngestOutput, Previous, ingest};
pub use report::{IngestReport, Status};
pub use spec::{Classification, ColumnType, Expectations, LEGAL_BASES, Mask, OnFailure, Processing};

use std::path::PathBuf;

/// Errors of reading, checking and writing datasets. Messages name the
/// file, line, column and rule, never a value (values may be personal data).
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is empty: there is no header or no data row")]
    Empty(String),
    #[error("CSV line {line}: {reason}")]
    Csv { line: u64, reason: String },
    #[error("line {line}: a value in column {column:?} is not a {expected}")]
    Value { column: String, line: u64, expected: &'static str },
    #[error("Parquet: {0}")]
    Parquet(String),
    #[error("column {column:?} has type {data_type}, which cannot be ingested (nested and binary types are refused)")]
    Unsupported { column: String, data_type: String },
    #[error("the expectations file has {} problem(s):\n{}", .0.len(), .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Expectations(Vec<String>),
    #[error("{0}")]
    Crypto(#[from] citadel_crypto::CryptoError),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("not a subject condition{}: write COLUMN=VALUE", if given.is_empty() { String::new() } else { format!(" ({given})") })]
    BadCondition { given: String },
    #[error("the subject keys file {path}: {reason}")]
    KeysFile { path: PathBuf, reason: String },
    #[error("column {column:?} is stored {stored_as}-masked, so no stored value can name a subject")]
    NotAKey { column: String, stored_as: String },
}

impl DataError {
    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            DataError::Io { .. } => "check that the file exists and is readable",
            DataError::Empty(_) => "the file needs a header line (or dataset.columns) and at least one row",
            DataError::Csv { .. } => {
                "fix the file at that line; every record needs the header's number of fields, UTF-8 text and closed quotes"
            }
            DataError::Value { .. } => {
                "declare the column's type in the expectations file, e.g. [columns.NAME] type = \"string\""
            }
            DataError::Parquet(_) => "check that the file is a complete Parquet file",
            DataError::Unsupported { .. } => "flatten or drop the column before ingesting",
            DataError::Expectations(_) => "fix the listed problems in the expectations file",
            DataError::Crypto(_) => "check the workspace keys",
            DataError::Internal(_) => "this is a bug; please report it",
            DataError::BadCondition { .. } => {
                "name the subject as --match COLUMN=VALUE (repeat it to require several columns)"
            }
            DataError::KeysFile { .. } => {
                "the keys file is CSV: a header of column names, then one subject per line (empty cells are ignored)"
            }
            DataError::NotAKey { .. } => {
                "match on a column stored as it was or pseudonymized/tokenized (an e-mail, a customer id); `citadel data show` lists each column's mask"
            }
        }
    }
}

impl From<parquet::errors::ParquetError> for DataError {
    fn from(e: parquet::errors::ParquetError) -> Self {
        DataError::Parquet(e.to_string())
    }
}

impl From<arrow_schema::ArrowError> for DataError {
    fn from(e: arrow_schema::ArrowError) -> Self {
        DataError::Internal(e.to_string())
    }
}

//! Storage: the metadata database and the encrypted artifact store.
//!
//! **Architecture invariants**
//! - Every state change commits through an [`AuditedTx`]: the audit record is
//!   written in the same database transaction as the change it describes, so
//!   there is no change without its record and no record without its change.
//! - An artifact becomes visible only when its metadata transaction commits,
//!   and that happens only after all of its objects are written and synced.
//!   A crash at any earlier point leaves unreferenced objects for `gc`, never
//!   a half-written artifact.
//! - Every byte read back is authenticated (AES-GCM), checked against its
//!   content address, and whole artifacts against their SHA-256 id.
//! - Backend object names are keyed hashes; they reveal nothing about content.

mod artifacts;
mod db;
mod error;
mod objects;
mod repo;

pub use artifacts::{
    ArtifactInfo, ArtifactKind, ArtifactStore, ChunkParams, FsckReport, GcReport, GetReport, Manifest, ManifestFile,
    PreparedPut, Progress, decode_payload, encode_payload, parse_manifest,
};
pub use db::{AuditedTx, Db, DbBackend};
pub use error::StoreError;
pub use objects::{ObjectBackend, S3Options, StorageUrl};
pub use repo::*;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

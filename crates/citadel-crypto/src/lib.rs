//! The only crate that touches key material.
//!
//! Key hierarchy:
//!
//! ```text
//! master key (never leaves its provider: passphrase key file or PKCS#11 token)
//!   └─ wraps data keys (DEKs), stored wrapped in the metadata database
//!        ├─ chunk-encryption DEK  → per-chunk AES-256-GCM keys via HKDF
//!        ├─ object-naming DEK     → HMAC-SHA256 object names
//!        └─ audit-signing DEK     → Ed25519 seed for audit checkpoints
//! ```
//!
//! Rotating the master key re-wraps the DEKs; data is never re-encrypted.
//! All primitives come from aws-lc-rs (and Argon2id from RustCrypto's
//! `argon2`): nothing cryptographic is implemented here.

mod aead;
mod error;
mod local;
mod pkcs11;
mod protect;
mod provider;
mod secrets;
mod signing;
mod token;

pub use aead::{ChunkCipher, ObjectNamer, SEALED_OVERHEAD};
pub use error::CryptoError;
pub use local::{KdfParams, LocalKeyFile, check_key_file_text};
pub use pkcs11::{Pkcs11Config, Pkcs11Provider};
pub use protect::DataProtector;
pub use provider::{MasterKeyId, MasterKeyProvider, ProviderKind};
pub use secrets::{DataKey, DataKeyPurpose, random_bytes};
pub use signing::{AuditSigner, verify_ed25519};
pub use token::{ApiToken, TokenHash, constant_time_eq};

pub type Result<T, E = CryptoError> = std::result::Result<T, E>;

use std::path::PathBuf;

/// Errors from key management and cryptographic operations. Messages never
/// contain key material, passphrases, PINs or tokens.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("wrong passphrase for key file {path}")]
    WrongPassphrase { path: PathBuf },
    #[error("key file {path} is readable or writable by group/others (mode {mode:o}); it must be 0600")]
    KeyFilePermissions { path: PathBuf, mode: u32 },
    #[error("key file {path} is malformed: {reason}")]
    KeyFileFormat { path: PathBuf, reason: String },
    #[error("key file {path} already exists")]
    KeyFileExists { path: PathBuf },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("master key {id} is not held by the {provider} provider (retired or never created here)")]
    UnknownMasterKey { id: String, provider: &'static str },
    #[error("authentication failed while decrypting {what}: the data was modified, or the wrong key was used")]
    Decrypt { what: String },
    #[error("sealed data is malformed: {0}")]
    Malformed(&'static str),
    #[error("PKCS#11 error during {op}: {detail}")]
    Pkcs11 { op: &'static str, detail: String },
    #[error("the system random number generator failed")]
    Rng,
    #[error("invalid key parameters: {0}")]
    Params(String),
    #[error("invalid API token format: expected cit_<id>_<secret>")]
    TokenFormat,
}

use std::path::PathBuf;

/// Errors from the database and the artifact store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("metadata database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("cannot connect to the metadata database ({backend}): {source}")]
    Connect {
        backend: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("unsupported metadata database URL scheme {0:?}: use sqlite://PATH or postgres://…")]
    DbUrl(String),
    #[error(
        "the metadata database schema is at version {found}, newer than this binary supports ({supported}); upgrade citadel"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    #[error(
        "migration {version} was changed after it was applied (checksum mismatch); the database and binary disagree"
    )]
    MigrationChecksum { version: i64 },
    #[error("object store error on {what}: {source}")]
    Object {
        what: String,
        #[source]
        source: object_store::Error,
    },
    #[error("the object store is out of space while writing {what}")]
    OutOfSpace { what: String },
    #[error("unsupported storage URL {0:?}: use file://DIR or s3://BUCKET[/PREFIX]")]
    StorageUrl(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is a symbolic link or special file; only regular files and directories can be stored")]
    NotRegular { path: PathBuf },
    #[error("artifact {0} not found")]
    ArtifactNotFound(String),
    #[error("artifact reference {0:?} is ambiguous: it matches several artifacts; use the full id")]
    Ambiguous(String),
    #[error("{what} is missing from the object store")]
    MissingObject { what: String },
    #[error("integrity check failed for {what}: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("output path {0} already exists; choose another path or remove it")]
    OutputExists(PathBuf),
    #[error("{0}")]
    Crypto(#[from] citadel_crypto::CryptoError),
    #[error("garbage collection is running (lease {lease} until {until}); retry the put afterwards")]
    GcRunning { lease: String, until: String },
    #[error(
        "{count} put(s) are in progress; garbage collection must wait until they finish or their leases expire ({until})"
    )]
    PutsInProgress { count: usize, until: String },
    #[error("stored data is malformed: {0}")]
    Malformed(String),
    #[error("a background task failed: {0}")]
    Task(String),
}

impl StoreError {
    pub(crate) fn object(what: impl Into<String>, source: object_store::Error) -> Self {
        let what = what.into();
        if is_out_of_space(&source) {
            return StoreError::OutOfSpace { what };
        }
        match source {
            object_store::Error::NotFound { .. } => StoreError::MissingObject { what },
            source => StoreError::Object { what, source },
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io { path: path.into(), source }
    }
}

/// ENOSPC (or EDQUOT) anywhere in the error's source chain.
pub(crate) fn is_out_of_space(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && (io.kind() == std::io::ErrorKind::StorageFull || matches!(io.raw_os_error(), Some(28) | Some(122)))
        {
            return true;
        }
        cur = e.source();
    }
    false
}

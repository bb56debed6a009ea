//! The `hint:` under every error: what to do about it, from its kind.

use super::*;

/// A hint for each kind of failure: what to do next.
pub(crate) fn hint_for(err: &anyhow::Error) -> String {
    if let Some(c) = err.downcast_ref::<ControlError>() {
        return match c {
            ControlError::Denied { .. } => "ask an admin for a grant: citadel grant add PRINCIPAL ROLE --scope KIND:NAME".into(),
            ControlError::Unauthenticated(_) => "check CITADEL_TOKEN: it may be expired or revoked; ask an admin for a new one with `citadel token issue`".into(),
            ControlError::Config(_) => "fix the settings listed above in citadel.toml (or the named environment variables); `citadel config check` re-checks".into(),
            ControlError::AlreadyInitialized(_) => "use the existing workspace, or choose another directory".into(),
            ControlError::NotFound(what) if what.starts_with("erasure ") => "`citadel subject erasures` lists the erasures and their ids".into(),
            ControlError::NotFound(what) if what.starts_with("deployment ") => "`citadel deploy ls` lists the endpoints".into(),
            ControlError::NotFound(what) if what.starts_with("incident ") => "`citadel incident ls --all` lists the incidents".into(),
            ControlError::NotFound(_) => "check the name or id; `citadel artifact ls` and `citadel principal list` show what exists".into(),
            ControlError::Crypto(citadel_crypto::CryptoError::WrongPassphrase { .. }) => "set CITADEL_PASSPHRASE to the passphrase used at `citadel init`; nothing was changed".into(),
            ControlError::Crypto(citadel_crypto::CryptoError::KeyFilePermissions { path, .. }) => format!("run: chmod 600 {}", path.display()),
            ControlError::Crypto(citadel_crypto::CryptoError::Pkcs11 { .. }) => "check keys.pkcs11_module, keys.pkcs11_token and CITADEL_PKCS11_PIN".into(),
            ControlError::Store(s) => store_hint(s),
            ControlError::Types(_) => "names use letters, digits, '.', '_', '-' and '/' separators; each part starts with a letter or digit".into(),
            ControlError::Policy(_) => "see `citadel grant add --help` for roles and scope syntax".into(),
            ControlError::ScanBlocked { .. } => "run `citadel scan PATH` to see every finding; a model with critical findings, or content the scanner cannot judge, is not registered (after a review, `citadel allowlist add MODULE.NAME --reason ...` allows a library's global)".into(),
            ControlError::GateFailed { policy, .. } if policy.contains(", run ") => "nothing was registered; fix what the gate lists (or change the pipeline's [gate] thresholds or policy) and run again — `citadel runs show RUN` shows the run".into(),
            ControlError::GateFailed { .. } => "fix what the gate lists (or, with the workspace owner's agreement, edit policies/model-gate.rego); the request stays pending".into(),
            ControlError::RetiredModel { model, .. } => format!("deploy or promote another version; `citadel model history {model}` shows why this one was retired"),
            ControlError::RetiredSigningKey { .. } => "register the model again (it is scanned and signed with the current key), then request the stage change".into(),
            ControlError::SelfApproval { .. } => "another principal holding the approver role must approve it".into(),
            ControlError::Conflict(m) if m.contains("erase") || m.contains("erasure") => "nothing was changed; run the erasure again (on every dataset named)".into(),
            ControlError::Conflict(m) if m.contains("incident ") => "`citadel incident show ID` shows its status and timeline".into(),
            ControlError::Conflict(m) if m.contains("changed after the playbook") => "`citadel deploy history ENDPOINT` shows every revision".into(),
            ControlError::Conflict(_) => "`citadel model requests --all` shows every request and its state".into(),
            ControlError::NoSubjectRows { dataset, .. } => format!("nothing was changed or returned; check the values (`citadel data show {dataset}` lists the columns and their masks; values are matched as they were in the source file)"),
            ControlError::SubjectTooBroad { .. } => "name the person by an identifying column (an e-mail, a customer id), or raise --max-rows when one person truly has that many rows".into(),
            ControlError::ErasedSource { .. } => "remove the erased subjects' rows from the file first (`citadel subject erasures` lists the erasures; the receipts name the columns used)".into(),
            ControlError::PurposeNotAllowed { dataset, .. } => format!("declare a purpose the data was collected for in [pipeline] purpose (`citadel data show {dataset}` shows the dataset's [processing]), or ingest the data with expectations whose [processing] purposes cover this use"),
            ControlError::ErasedTrainingData { model, .. } => format!("retrain on the erased data and register the new version (`citadel subject erasures` lists what was erased; `citadel lineage model:{model}@VERSION` shows the training data)"),
            ControlError::DataRejected { .. } => data_cmd::REJECTED_HINT.into(),
            ControlError::Data(d) => d.hint().into(),
            ControlError::Signing(_) => "the stored model no longer matches its signature: run `citadel fsck` and check the audit log".into(),
            _ => "see `citadel --help`".into(),
        };
    }
    "see `citadel --help`".into()
}

/// The error and its causes, joined by ": ", each cause once: library
/// errors that already print their source (`I/O error on F: …`) do not
/// repeat it.
pub(crate) fn error_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let c = cause.to_string();
        if text.contains(&c) {
            continue;
        }
        if !text.is_empty() {
            text += ": ";
        }
        text += &c;
    }
    text
}

/// Whether an error or one of its causes says `needle`.
pub(crate) fn chain_mentions(e: &(dyn std::error::Error + 'static), needle: &str) -> bool {
    let mut cur = Some(e);
    while let Some(x) = cur {
        if x.to_string().contains(needle) {
            return true;
        }
        cur = x.source();
    }
    false
}

pub(crate) fn store_hint(s: &StoreError) -> String {
    match s {
        StoreError::OutOfSpace { .. } => {
            "free space on the storage volume, then retry; nothing partial was recorded".into()
        }
        StoreError::OutputExists(_) => "pass -o with a path that does not exist yet".into(),
        StoreError::ArtifactNotFound(_) => "`citadel artifact ls` lists artifacts; use an id (prefix) or a name".into(),
        StoreError::Corrupt { .. } | StoreError::MissingObject { .. } => {
            "run `citadel fsck` to see every damaged object and the artifacts affected".into()
        }
        StoreError::GcRunning { .. } | StoreError::PutsInProgress { .. } => {
            "wait for the other operation to finish, then retry".into()
        }
        StoreError::Connect { source, .. } if chain_mentions(source, "certificate") => {
            "the database server's certificate did not verify: with sslmode=verify-full, sslrootcert in metadata.url must name the CA that signed it, and the URL's host must be one the certificate names".into()
        }
        StoreError::Connect { .. } => "check metadata.url and that the database server is running".into(),
        StoreError::Object { source, .. } if chain_mentions(source, "certificate") => {
            "the S3 endpoint's certificate did not verify: set storage.s3_ca_file to the PEM of the CA that signed it (and check storage.s3_endpoint's host name)".into()
        }
        StoreError::NotRegular { .. } => "store the file the link points to, or copy it into the directory".into(),
        StoreError::Io { .. } => "check that the path exists and is readable".into(),
        _ => "run `citadel fsck`; if the problem persists, report it with the message above".into(),
    }
}

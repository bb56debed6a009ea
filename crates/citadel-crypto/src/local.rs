//! Master keys in a local file, each wrapped under a key derived from a
//! passphrase with Argon2id.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::aead::{open_small, seal_small};
use crate::{CryptoError, MasterKeyId, MasterKeyProvider, ProviderKind, Result, random_bytes};

const FORMAT: &str = "citadel-keyfile-v1";

/// Argon2id cost parameters, stored in the key file so they can be raised
/// later without breaking old files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// RFC 9106's second recommended option: 64 MiB, 3 passes, 1 lane.
    fn default() -> Self {
        KdfParams { memory_kib: 64 * 1024, iterations: 3, parallelism: 1 }
    }
}

impl KdfParams {
    /// OWASP's floor for Argon2id (19 MiB, 2 passes). Nothing weaker is
    /// accepted, neither when creating nor when opening a key file.
    pub const MINIMUM: KdfParams = KdfParams { memory_kib: 19 * 1024, iterations: 2, parallelism: 1 };

    fn check(&self) -> Result<()> {
        if self.memory_kib < Self::MINIMUM.memory_kib || self.iterations < Self::MINIMUM.iterations {
            return Err(CryptoError::Params(format!(
                "Argon2id parameters below the minimum (memory {} KiB, {} iterations; need at least {} KiB and {})",
                self.memory_kib,
                self.iterations,
                Self::MINIMUM.memory_kib,
                Self::MINIMUM.iterations
            )));
        }
        if self.memory_kib > 4 * 1024 * 1024 || self.iterations > 64 || self.parallelism == 0 || self.parallelism > 16 {
            return Err(CryptoError::Params("Argon2id parameters out of range".into()));
        }
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKdf {
    algorithm: String,
    #[serde(flatten)]
    params: KdfParams,
    salt: String,
}

#[derive(Serialize, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct FileKey {
    id: String,
    /// base64(nonce || AES-256-GCM(KEK, master key)), AAD = format || id.
    wrapped: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileContents {
    format: String,
    kdf: FileKdf,
    keys: Vec<FileKey>,
}

struct ParsedKeyFile {
    kdf: KdfParams,
    salt: [u8; 16],
    wrapped: Vec<(String, Vec<u8>)>,
}

/// Everything about a key file that can be checked without the passphrase.
fn parse_key_file(path: &Path, text: &str) -> Result<ParsedKeyFile> {
    let bad = |reason: String| CryptoError::KeyFileFormat { path: path.to_owned(), reason };
    let contents: FileContents = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    if contents.format != FORMAT {
        return Err(bad(format!("unknown format {:?}", contents.format)));
    }
    if contents.kdf.algorithm != "argon2id" {
        return Err(bad(format!("unknown KDF {:?}", contents.kdf.algorithm)));
    }
    contents.kdf.params.check()?;
    let salt_vec = B64.decode(&contents.kdf.salt).map_err(|e| bad(format!("salt: {e}")))?;
    let salt: [u8; 16] = salt_vec.try_into().map_err(|_| bad("salt must be 16 bytes".into()))?;
    let mut wrapped = Vec::with_capacity(contents.keys.len());
    for k in contents.keys {
        let sealed = B64.decode(&k.wrapped).map_err(|e| bad(format!("key {}: {e}", k.id)))?;
        wrapped.push((k.id, sealed));
    }
    Ok(ParsedKeyFile { kdf: contents.kdf.params, salt, wrapped })
}

/// Checks a key file's text as far as possible without the passphrase (the
/// fuzz target for the key-file parser).
pub fn check_key_file_text(text: &str) -> Result<()> {
    parse_key_file(Path::new("<input>"), text).map(|_| ())
}

/// A passphrase-protected key file holding one or more master key versions.
///
/// The file is created with mode 0600 and refused when group or others can
/// read or write it. Every change is written to a temporary file, synced and
/// renamed over the old one, so a crash leaves either the old or the new file.
pub struct LocalKeyFile {
    path: PathBuf,
    kdf: KdfParams,
    salt: [u8; 16],
    kek: Zeroizing<[u8; 32]>,
    keys: Vec<(String, Zeroizing<Vec<u8>>)>,
}

impl std::fmt::Debug for LocalKeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKeyFile").field("path", &self.path).field("keys", &self.keys.len()).finish()
    }
}

fn derive_kek(passphrase: &[u8], salt: &[u8], p: KdfParams) -> Result<Zeroizing<[u8; 32]>> {
    let params = argon2::Params::new(p.memory_kib, p.iterations, p.parallelism, Some(32))
        .map_err(|e| CryptoError::Params(e.to_string()))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon.hash_password_into(passphrase, salt, out.as_mut()).map_err(|e| CryptoError::Params(e.to_string()))?;
    Ok(out)
}

fn key_aad(id: &str) -> Vec<u8> {
    format!("{FORMAT}\0{id}").into_bytes()
}

impl LocalKeyFile {
    /// Creates a new key file with no key versions yet. Fails if it exists.
    pub fn create(path: &Path, passphrase: &[u8], kdf: KdfParams) -> Result<Self> {
        kdf.check()?;
        if passphrase.is_empty() {
            return Err(CryptoError::Params("the passphrase cannot be empty".into()));
        }
        if path.exists() {
            return Err(CryptoError::KeyFileExists { path: path.to_owned() });
        }
        let salt: [u8; 16] = random_bytes()?;
        let kek = derive_kek(passphrase, &salt, kdf)?;
        let file = LocalKeyFile { path: path.to_owned(), kdf, salt, kek, keys: Vec::new() };
        file.save()?;
        Ok(file)
    }

    /// Opens an existing key file. Refuses a file others can access, and a
    /// wrong passphrase (detected by authenticated decryption of the keys).
    pub fn open(path: &Path, passphrase: &[u8]) -> Result<Self> {
        let io = |source| CryptoError::Io { path: path.to_owned(), source };
        let meta = fs::metadata(path).map_err(io)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CryptoError::KeyFilePermissions { path: path.to_owned(), mode });
        }
        if meta.len() > 1 << 20 {
            return Err(CryptoError::KeyFileFormat { path: path.to_owned(), reason: "larger than 1 MiB".into() });
        }
        let text = fs::read_to_string(path).map_err(io)?;
        let parsed = parse_key_file(path, &text)?;
        let kek = derive_kek(passphrase, &parsed.salt, parsed.kdf)?;
        let mut keys = Vec::new();
        for (id, sealed) in parsed.wrapped {
            let key = open_small(&kek, &sealed, &key_aad(&id), "master key")
                .map_err(|_| CryptoError::WrongPassphrase { path: path.to_owned() })?;
            keys.push((id, key));
        }
        Ok(LocalKeyFile { path: path.to_owned(), kdf: parsed.kdf, salt: parsed.salt, kek, keys })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn save(&self) -> Result<()> {
        let mut file_keys = Vec::new();
        for (id, key) in &self.keys {
            let sealed = seal_small(&self.kek, key, &key_aad(id))?;
            file_keys.push(FileKey { id: id.clone(), wrapped: B64.encode(sealed) });
        }
        let contents = FileContents {
            format: FORMAT.into(),
            kdf: FileKdf { algorithm: "argon2id".into(), params: self.kdf, salt: B64.encode(self.salt) },
            keys: file_keys,
        };
        let json = serde_json::to_vec_pretty(&contents).map_err(|e| CryptoError::Params(e.to_string()))?;
        write_private_atomic(&self.path, &json)
    }

    fn key(&self, id: &str) -> Result<&[u8; 32]> {
        self.keys
            .iter()
            .find(|(k, _)| k == id)
            .and_then(|(_, v)| <&[u8; 32]>::try_from(v.as_slice()).ok())
            .ok_or_else(|| CryptoError::UnknownMasterKey { id: id.into(), provider: "local" })
    }
}

/// Writes `data` to `path` with mode 0600: temp file, fsync, rename, fsync dir.
pub(crate) fn write_private_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let io = |source| CryptoError::Io { path: path.to_owned(), source };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io)?;
    let tmp =
        dir.join(format!(".{}.tmp-{}", path.file_name().and_then(|n| n.to_str()).unwrap_or("key"), std::process::id()));
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io)?;
    let result = f.write_all(data).and_then(|_| f.sync_all());
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io(e));
    }
    fs::rename(&tmp, path).map_err(io)?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(())
}

impl MasterKeyProvider for LocalKeyFile {
    fn kind(&self) -> ProviderKind {
        ProviderKind::LocalFile
    }

    fn generate(&mut self) -> Result<MasterKeyId> {
        let id = citadel_types::random_id("mk-");
        let key: [u8; 32] = random_bytes()?;
        self.keys.push((id.clone(), Zeroizing::new(key.to_vec())));
        if let Err(e) = self.save() {
            self.keys.pop();
            return Err(e);
        }
        Ok(id)
    }

    fn wrap(&self, id: &str, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        seal_small(self.key(id)?, plaintext, aad)
    }

    fn unwrap(&self, id: &str, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        open_small(self.key(id)?, wrapped, aad, "data key")
    }

    fn destroy(&mut self, id: &str) -> Result<()> {
        let before = self.keys.len();
        let removed: Vec<_> = self.keys.iter().filter(|(k, _)| k == id).cloned().collect();
        self.keys.retain(|(k, _)| k != id);
        if self.keys.len() == before {
            return Err(CryptoError::UnknownMasterKey { id: id.into(), provider: "local" });
        }
        if let Err(e) = self.save() {
            self.keys.extend(removed);
            return Err(e);
        }
        Ok(())
    }

    fn list(&self) -> Result<Vec<MasterKeyId>> {
        Ok(self.keys.iter().map(|(k, _)| k.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams::MINIMUM;

    #[test]
    fn create_open_wrap_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let mut kf = LocalKeyFile::create(&path, b"correct horse", FAST).unwrap();
        let id = kf.generate().unwrap();
        let wrapped = kf.wrap(&id, b"data key bytes", b"aad").unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

        let mut kf2 = LocalKeyFile::open(&path, b"correct horse").unwrap();
        assert_eq!(&**kf2.unwrap(&id, &wrapped, b"aad").unwrap(), b"data key bytes");
        assert!(kf2.unwrap(&id, &wrapped, b"other aad").is_err());

        let id2 = kf2.generate().unwrap();
        kf2.destroy(&id).unwrap();
        let kf3 = LocalKeyFile::open(&path, b"correct horse").unwrap();
        assert_eq!(kf3.list().unwrap(), vec![id2]);
        assert!(matches!(kf3.unwrap(&id, &wrapped, b"aad"), Err(CryptoError::UnknownMasterKey { .. })));
    }

    #[test]
    fn wrong_passphrase_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let mut kf = LocalKeyFile::create(&path, b"right", FAST).unwrap();
        kf.generate().unwrap();
        let before = fs::read(&path).unwrap();
        assert!(matches!(LocalKeyFile::open(&path, b"wrong"), Err(CryptoError::WrongPassphrase { .. })));
        assert_eq!(fs::read(&path).unwrap(), before);
    }

    #[test]
    fn refuses_group_readable_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        LocalKeyFile::create(&path, b"pw", FAST).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(LocalKeyFile::open(&path, b"pw"), Err(CryptoError::KeyFilePermissions { mode: 0o640, .. })));
    }

    #[test]
    fn refuses_weak_kdf_params() {
        let dir = tempfile::tempdir().unwrap();
        let weak = KdfParams { memory_kib: 1024, iterations: 1, parallelism: 1 };
        assert!(LocalKeyFile::create(&dir.path().join("k"), b"pw", weak).is_err());
    }
}

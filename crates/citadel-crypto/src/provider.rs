use zeroize::Zeroizing;

use crate::Result;

/// Identifier of one master key version inside its provider.
pub type MasterKeyId = String;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    LocalFile,
    Pkcs11,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::LocalFile => "local",
            ProviderKind::Pkcs11 => "pkcs11",
        }
    }
}

/// A holder of master keys that wraps and unwraps data keys without ever
/// handing out the master key itself.
///
/// Which key is *active* is recorded in the metadata database, not here: a
/// provider only generates, uses and destroys key versions by id.
pub trait MasterKeyProvider: Send + Sync + std::fmt::Debug {
    fn kind(&self) -> ProviderKind;
    /// Creates a new master key version and returns its id.
    fn generate(&mut self) -> Result<MasterKeyId>;
    /// Encrypts `plaintext` (a data key) under master key `id`, binding `aad`.
    fn wrap(&self, id: &str, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>>;
    /// Reverses [`wrap`](Self::wrap); fails if the data or `aad` changed.
    fn unwrap(&self, id: &str, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>>;
    /// Destroys master key `id`; anything still wrapped under it is lost.
    fn destroy(&mut self, id: &str) -> Result<()>;
    /// Ids of the key versions the provider holds.
    fn list(&self) -> Result<Vec<MasterKeyId>>;
}

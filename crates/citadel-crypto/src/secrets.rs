use std::fmt;

use zeroize::Zeroizing;

use crate::{CryptoError, Result};

/// What a data key is used for. Each purpose has its own key so that a leak
/// of one (say, the naming key) gives nothing about another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataKeyPurpose {
    ChunkEncryption,
    ObjectNaming,
    AuditSigning,
}

impl DataKeyPurpose {
    pub const ALL: [DataKeyPurpose; 3] =
        [DataKeyPurpose::ChunkEncryption, DataKeyPurpose::ObjectNaming, DataKeyPurpose::AuditSigning];

    pub fn as_str(self) -> &'static str {
        match self {
            DataKeyPurpose::ChunkEncryption => "chunk-encryption",
            DataKeyPurpose::ObjectNaming => "object-naming",
            DataKeyPurpose::AuditSigning => "audit-signing",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Associated data used when wrapping a DEK of this purpose: a wrapped
    /// naming key cannot be swapped in as the encryption key.
    pub fn wrap_aad(self, dek_id: &str) -> Vec<u8> {
        format!("citadel-dek-v1\0{}\0{}", self.as_str(), dek_id).into_bytes()
    }
}

/// 256 bits of key material, zeroed on drop, never printed.
#[derive(Clone)]
pub struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    pub fn generate() -> Result<Self> {
        let mut k = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(k.as_mut()).map_err(|_| CryptoError::Rng)?;
        Ok(DataKey(k))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::Malformed("data key must be 32 bytes"))?;
        Ok(DataKey(Zeroizing::new(arr)))
    }

    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey([redacted])")
    }
}

pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| CryptoError::Rng)?;
    Ok(b)
}

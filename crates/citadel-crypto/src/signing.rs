use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use crate::{CryptoError, DataKey, Result};

/// Ed25519 key that signs audit-log checkpoints. Its seed is the
/// audit-signing data key, so it is wrapped by the master key like any other.
pub struct AuditSigner {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for AuditSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditSigner(public={})", hex::encode(self.public_key()))
    }
}

impl AuditSigner {
    pub fn from_data_key(dek: &DataKey) -> Result<Self> {
        let pair = Ed25519KeyPair::from_seed_unchecked(dek.expose())
            .map_err(|_| CryptoError::Params("invalid Ed25519 seed".into()))?;
        Ok(AuditSigner { pair })
    }

    pub fn public_key(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }

    /// A short, stable id for the public key: hex of its first 8 SHA-256 bytes.
    pub fn key_id(&self) -> String {
        citadel_types::Digest::of(&self.public_key()).to_hex()[..16].to_string()
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

pub fn verify_ed25519(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public_key).verify(message, signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let s = AuditSigner::from_data_key(&DataKey::generate().unwrap()).unwrap();
        let sig = s.sign(b"head");
        assert!(verify_ed25519(&s.public_key(), b"head", &sig));
        assert!(!verify_ed25519(&s.public_key(), b"heaD", &sig));
    }
}

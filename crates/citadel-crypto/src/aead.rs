//! Chunk encryption and keyed object names.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::{hkdf, hmac};

use crate::{CryptoError, DataKey, Result, random_bytes};

const SEALED_VERSION: u8 = 1;
/// Bytes a sealed chunk adds to its payload: version, nonce and GCM tag.
pub const SEALED_OVERHEAD: usize = 1 + NONCE_LEN + 16;

/// Seals and opens chunks with AES-256-GCM.
///
/// Each chunk gets its own key, `HKDF-SHA256(DEK, info = object name)`, and a
/// random 96-bit nonce. Since one key encrypts one chunk's content only, the
/// 2^32-messages-per-key limit of random GCM nonces never comes into play,
/// however large the store grows. The object name is also the associated
/// data, so a chunk copied under another name fails to open.
pub struct ChunkCipher {
    prk: hkdf::Prk,
}

impl std::fmt::Debug for ChunkCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChunkCipher([redacted])")
    }
}

impl ChunkCipher {
    pub fn new(dek: &DataKey) -> Self {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"citadel-chunk-key-v1");
        ChunkCipher { prk: salt.extract(dek.expose()) }
    }

    fn key_for(&self, name: &str) -> Result<LessSafeKey> {
        let info = [name.as_bytes()];
        let okm =
            self.prk.expand(&info, &AES_256_GCM).map_err(|_| CryptoError::Params("HKDF expansion failed".into()))?;
        Ok(LessSafeKey::new(UnboundKey::from(okm)))
    }

    /// Encrypts `payload` for storage under `name`.
    pub fn seal(&self, name: &str, payload: &[u8]) -> Result<Vec<u8>> {
        let key = self.key_for(name)?;
        let nonce_bytes: [u8; NONCE_LEN] = random_bytes()?;
        let mut out = Vec::with_capacity(payload.len() + SEALED_OVERHEAD);
        out.push(SEALED_VERSION);
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(payload);
        let body = &mut out[1 + NONCE_LEN..];
        let tag = key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce_bytes), Aad::from(name.as_bytes()), body)
            .map_err(|_| CryptoError::Params("AES-GCM seal failed".into()))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Decrypts and authenticates a sealed chunk stored under `name`.
    pub fn open(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        if sealed.len() < SEALED_OVERHEAD {
            return Err(CryptoError::Malformed("sealed chunk is shorter than its header"));
        }
        if sealed[0] != SEALED_VERSION {
            return Err(CryptoError::Malformed("unknown sealed-chunk version"));
        }
        let key = self.key_for(name)?;
        let nonce = Nonce::try_assume_unique_for_key(&sealed[1..1 + NONCE_LEN])
            .map_err(|_| CryptoError::Malformed("bad nonce"))?;
        let mut buf = sealed[1 + NONCE_LEN..].to_vec();
        let plain_len = key
            .open_in_place(nonce, Aad::from(name.as_bytes()), &mut buf)
            .map_err(|_| CryptoError::Decrypt { what: format!("object {name}") })?
            .len();
        buf.truncate(plain_len);
        Ok(buf)
    }
}

/// Derives backend object names that reveal nothing about the content:
/// `HMAC-SHA256(naming DEK, kind || SHA-256(plaintext))`. Equal content gives
/// equal names (deduplication) only for holders of the naming key.
pub struct ObjectNamer {
    key: hmac::Key,
}

impl std::fmt::Debug for ObjectNamer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObjectNamer([redacted])")
    }
}

impl ObjectNamer {
    pub fn new(dek: &DataKey) -> Self {
        ObjectNamer { key: hmac::Key::new(hmac::HMAC_SHA256, dek.expose()) }
    }

    /// The name for an object of `kind` ("chunk", "manifest", …) whose
    /// plaintext has SHA-256 `content_digest`.
    pub fn name(&self, kind: &str, content_digest: &[u8; 32]) -> String {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(kind.as_bytes());
        ctx.update(&[0]);
        ctx.update(content_digest);
        hex::encode(ctx.sign().as_ref())
    }

    /// A keyed hash of arbitrary bytes (used for keyed row hashes).
    pub fn keyed_hash(&self, domain: &str, data: &[u8]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(domain.as_bytes());
        ctx.update(&[0]);
        ctx.update(data);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }
}

/// AES-256-GCM with a random nonce, for small secrets (wrapping data keys
/// and master keys). Output: nonce || ciphertext || tag.
pub(crate) fn seal_small(key: &[u8; 32], plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
    let key =
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(|_| CryptoError::Params("bad AES key".into()))?);
    let nonce_bytes: [u8; NONCE_LEN] = random_bytes()?;
    let mut buf = plaintext.to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce_bytes), Aad::from(aad), &mut buf)
        .map_err(|_| CryptoError::Params("AES-GCM seal failed".into()))?;
    let mut out = nonce_bytes.to_vec();
    out.extend_from_slice(&buf);
    Ok(out)
}

pub(crate) fn open_small(key: &[u8; 32], sealed: &[u8], aad: &[u8], what: &str) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    if sealed.len() < NONCE_LEN + 16 {
        return Err(CryptoError::Malformed("wrapped key is too short"));
    }
    let key =
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(|_| CryptoError::Params("bad AES key".into()))?);
    let nonce =
        Nonce::try_assume_unique_for_key(&sealed[..NONCE_LEN]).map_err(|_| CryptoError::Malformed("bad nonce"))?;
    let mut buf = zeroize::Zeroizing::new(sealed[NONCE_LEN..].to_vec());
    let len = key
        .open_in_place(nonce, Aad::from(aad), &mut buf)
        .map_err(|_| CryptoError::Decrypt { what: what.to_string() })?
        .len();
    buf.truncate(len);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_binding() {
        let dek = DataKey::generate().unwrap();
        let c = ChunkCipher::new(&dek);
        let sealed = c.seal("abc", b"hello world").unwrap();
        assert_eq!(sealed.len(), 11 + SEALED_OVERHEAD);
        assert_eq!(c.open("abc", &sealed).unwrap(), b"hello world");
        // Bound to its name.
        assert!(matches!(c.open("abd", &sealed), Err(CryptoError::Decrypt { .. })));
        // Any bit flip is caught.
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x01;
            assert!(c.open("abc", &t).is_err(), "flip at {i} not detected");
        }
        // Another key cannot open it.
        let other = ChunkCipher::new(&DataKey::generate().unwrap());
        assert!(other.open("abc", &sealed).is_err());
        // Two seals of the same data differ (random nonce).
        assert_ne!(c.seal("abc", b"x").unwrap(), c.seal("abc", b"x").unwrap());
    }

    #[test]
    fn object_names_are_keyed() {
        let a = ObjectNamer::new(&DataKey::generate().unwrap());
        let b = ObjectNamer::new(&DataKey::generate().unwrap());
        let d = [7u8; 32];
        assert_eq!(a.name("chunk", &d), a.name("chunk", &d));
        assert_ne!(a.name("chunk", &d), b.name("chunk", &d));
        assert_ne!(a.name("chunk", &d), a.name("manifest", &d));
        assert_eq!(a.name("chunk", &d).len(), 64);
    }
}

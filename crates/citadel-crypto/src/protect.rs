//! Keys for protecting dataset values: keyed pseudonyms, reversible tokens
//! and keyed row hashes.
//!
//! All three come from one 256-bit workspace secret through HKDF with
//! distinct labels, so a leaked row-hash key says nothing about pseudonyms
//! and only token holders' key can reverse a token.
//!
//! - **Pseudonyms**: `HMAC-SHA256(k_pseudo, value)`, truncated to 128 bits.
//!   Deterministic (joins across datasets still work), not reversible, and a
//!   dictionary attack needs the key.
//! - **Tokens**: AES-256-GCM-SIV with a synthetic nonce
//!   `HMAC-SHA256(k_nonce, value)[..12]`. Deterministic (equal values give
//!   equal tokens), authenticated, reversible only with the key; the control
//!   plane allows reversal only to principals holding `detokenize`. GCM-SIV
//!   keeps confidentiality even though nonces repeat for equal values.
//! - **Row hashes**: SipHash-1-3 under a 128-bit key, for row identity in
//!   diffs and poisoning checks. Keyed so that stored hashes of low-entropy
//!   rows cannot be reversed by enumeration without the key.

use aws_lc_rs::aead::{AES_256_GCM_SIV, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::{hkdf, hmac};
use base64::Engine;
use zeroize::Zeroizing;

use crate::{CryptoError, DataKey, Result};

const TOKEN_PREFIX: &str = "tok_";
const PSEUDONYM_PREFIX: &str = "ps_";

/// Pseudonymizes, tokenizes and hashes rows for one workspace.
pub struct DataProtector {
    pseudonym: hmac::Key,
    token_nonce: hmac::Key,
    token: LessSafeKey,
    row_hash_key: Zeroizing<[u8; 16]>,
}

impl std::fmt::Debug for DataProtector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataProtector([redacted])")
    }
}

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn expand(prk: &hkdf::Prk, label: &[u8], out: &mut [u8]) -> Result<()> {
    let info = [label];
    prk.expand(&info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| CryptoError::Params("HKDF expansion failed".into()))
}

impl DataProtector {
    pub fn new(secret: &DataKey) -> Result<Self> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"citadel-data-protection-v1").extract(secret.expose());
        let mut k = Zeroizing::new([0u8; 32]);
        expand(&prk, b"pseudonym", k.as_mut())?;
        let pseudonym = hmac::Key::new(hmac::HMAC_SHA256, k.as_ref());
        expand(&prk, b"token-nonce", k.as_mut())?;
        let token_nonce = hmac::Key::new(hmac::HMAC_SHA256, k.as_ref());
        expand(&prk, b"token", k.as_mut())?;
        let token = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM_SIV, k.as_ref())
                .map_err(|_| CryptoError::Params("AES-256-GCM-SIV key".into()))?,
        );
        let mut row_hash_key = Zeroizing::new([0u8; 16]);
        expand(&prk, b"row-hash", row_hash_key.as_mut())?;
        Ok(DataProtector { pseudonym, token_nonce, token, row_hash_key })
    }

    /// `ps_` and 32 hex digits; equal inputs give equal pseudonyms.
    pub fn pseudonymize(&self, value: &str) -> String {
        let tag = hmac::sign(&self.pseudonym, value.as_bytes());
        format!("{PSEUDONYM_PREFIX}{}", hex::encode(&tag.as_ref()[..16]))
    }

    /// `tok_` and base64url(nonce ‖ ciphertext ‖ tag).
    pub fn tokenize(&self, value: &str) -> Result<String> {
        let tag = hmac::sign(&self.token_nonce, value.as_bytes());
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&tag.as_ref()[..NONCE_LEN]);
        let mut body = value.as_bytes().to_vec();
        self.token
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(b"citadel-token-v1"), &mut body)
            .map_err(|_| CryptoError::Params("AES-GCM-SIV seal failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&body);
        Ok(format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)))
    }

    /// Reverses [`DataProtector::tokenize`]; fails on anything it did not make.
    pub fn detokenize(&self, token: &str) -> Result<String> {
        let bad = || CryptoError::Malformed("not a token of this workspace");
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.strip_prefix(TOKEN_PREFIX).ok_or_else(bad)?)
            .map_err(|_| bad())?;
        if raw.len() < NONCE_LEN + 16 {
            return Err(bad());
        }
        let nonce = Nonce::try_assume_unique_for_key(&raw[..NONCE_LEN]).map_err(|_| bad())?;
        let mut body = raw[NONCE_LEN..].to_vec();
        let plain = self
            .token
            .open_in_place(nonce, Aad::from(b"citadel-token-v1"), &mut body)
            .map_err(|_| CryptoError::Decrypt { what: "a token".into() })?;
        String::from_utf8(plain.to_vec()).map_err(|_| bad())
    }

    /// The 128-bit key for keyed row hashes (SipHash).
    pub fn row_hash_key(&self) -> [u8; 16] {
        *self.row_hash_key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_deterministic_and_keyed() {
        let a = DataProtector::new(&DataKey::from_bytes(&[1; 32]).unwrap()).unwrap();
        let b = DataProtector::new(&DataKey::from_bytes(&[2; 32]).unwrap()).unwrap();
        assert_eq!(a.pseudonymize("alice@example.com"), a.pseudonymize("alice@example.com"));
        assert_ne!(a.pseudonymize("alice@example.com"), b.pseudonymize("alice@example.com"));
        assert_ne!(a.pseudonymize("alice@example.com"), a.pseudonymize("bob@example.com"));
        assert!(!a.pseudonymize("alice@example.com").contains("alice"));
    }

    #[test]
    fn tokens_round_trip_only_under_their_key() {
        let a = DataProtector::new(&DataKey::from_bytes(&[1; 32]).unwrap()).unwrap();
        let b = DataProtector::new(&DataKey::from_bytes(&[2; 32]).unwrap()).unwrap();
        let t = a.tokenize("4111 1111 1111 1111").unwrap();
        assert_eq!(t, a.tokenize("4111 1111 1111 1111").unwrap(), "deterministic");
        assert!(!t.contains("4111"));
        assert_eq!(a.detokenize(&t).unwrap(), "4111 1111 1111 1111");
        assert!(b.detokenize(&t).is_err(), "another workspace's key cannot reverse it");
        let mut forged = t.clone();
        forged.pop();
        forged.push(if t.ends_with('A') { 'B' } else { 'A' });
        assert!(a.detokenize(&forged).is_err());
        assert!(a.detokenize("tok_").is_err());
        assert!(a.detokenize("hello").is_err());
    }
}

//! API tokens: `cit_<token id>_<secret>`.
//!
//! The secret is 256 random bits; only its SHA-256 is stored. A plain hash
//! (rather than a password hash) is right here because the secret has full
//! entropy: there is nothing to brute-force. Lookup is by the public token id,
//! then the hash is compared in constant time.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;

use citadel_types::{Digest, Redacted};

use crate::{CryptoError, Result, random_bytes};

/// A freshly issued or presented token. The full string is redacted in
/// `Debug`/`Display`.
#[derive(Debug, Clone)]
pub struct ApiToken {
    pub id: String,
    secret: Redacted<String>,
}

/// SHA-256 of a token secret, as stored in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHash(pub Digest);

impl ApiToken {
    pub fn generate() -> Result<Self> {
        let id = hex::encode(random_bytes::<8>()?);
        let secret = B64URL.encode(random_bytes::<32>()?);
        Ok(ApiToken { id, secret: Redacted::new(secret) })
    }

    /// Parses a presented token. Errors never echo the input.
    pub fn parse(s: &str) -> Result<Self> {
        let rest = s.trim().strip_prefix("cit_").ok_or(CryptoError::TokenFormat)?;
        let (id, secret) = rest.split_once('_').ok_or(CryptoError::TokenFormat)?;
        if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) || secret.len() != 43 {
            return Err(CryptoError::TokenFormat);
        }
        Ok(ApiToken { id: id.to_string(), secret: Redacted::new(secret.to_string()) })
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash(Digest::of(self.secret.expose().as_bytes()))
    }

    /// The full token string, to show once to its owner.
    pub fn reveal(&self) -> String {
        format!("cit_{}_{}", self.id, self.secret.expose())
    }

    /// Constant-time check of the presented secret against a stored hash.
    pub fn matches(&self, stored: &TokenHash) -> bool {
        constant_time_eq(&self.hash().0.0, &stored.0.0)
    }
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_parse_match() {
        let t = ApiToken::generate().unwrap();
        let shown = t.reveal();
        assert!(!format!("{t:?}").contains(&shown[21..]));
        let p = ApiToken::parse(&shown).unwrap();
        assert!(p.matches(&t.hash()));
        let other = ApiToken::generate().unwrap();
        assert!(!other.matches(&t.hash()));
        for bad in ["", "cit_", "xyz_0123456789abcdef_secret", &shown[..shown.len() - 1]] {
            assert!(ApiToken::parse(bad).is_err());
        }
    }
}

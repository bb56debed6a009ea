//! Bearer JWTs verified against the IdP's keys (a JWKS): signature with
//! the algorithm of the key the header names (RS256 or ES256 only: no
//! `none`, no HS256 keyed with a public key), issuer, audience, expiry and
//! not-before (30 s leeway). The subject names a principal; the token
//! carries no roles.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};

/// Why a JWT was refused; the text is safe to return (no secret, nothing
/// an attacker could use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwtFailure(&'static str);

impl JwtFailure {
    pub fn reason(self) -> &'static str {
        self.0
    }
}

/// A token naming a key id the keys lack.
const UNKNOWN_KEY: JwtFailure = JwtFailure("token signed by an unknown key");

/// A JWKS that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("JWKS {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("JWKS {path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("JWKS {path}: only RSA (RS256) and P-256 (ES256) keys are accepted")]
    KeyType { path: String },
    #[error("JWKS {path}: a key cannot be used: {source}")]
    Key {
        path: String,
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    #[error("JWKS {path} could not be fetched: {reason}")]
    Fetch { path: String, reason: String },
    #[error("JWKS {path} holds no key")]
    Empty { path: String },
}

/// Fetches the IdP's JWKS again (over HTTPS, by the caller that built it):
/// the body, or why not.
pub type JwksFetch =
    Box<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<u8>, String>> + Send>> + Send + Sync>;

type Key = (Option<String>, Algorithm, DecodingKey);

/// The least time between two fetches a token with an unknown `kid`
/// triggers (a flood of made-up `kid`s does not become a flood of fetches).
pub const REFRESH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

pub struct JwtVerifier {
    keys: std::sync::RwLock<std::sync::Arc<Vec<Key>>>,
    fetch: Option<JwksFetch>,
    last_refresh: std::sync::Mutex<Option<std::time::Instant>>,
    source: String,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier").field("source", &self.source).field("issuer", &self.issuer).finish()
    }
}

/// RS256 and ES256 keys of a JWKS; keys of other types are refused, not skipped.
fn parse_jwks(body: &[u8], shown: &str) -> Result<Vec<Key>, JwksError> {
    let shown = || shown.to_string();
    let set: JwkSet = serde_json::from_slice(body).map_err(|source| JwksError::Parse { path: shown(), source })?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let alg = match &jwk.algorithm {
            jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
            jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(p)
                if p.curve == jsonwebtoken::jwk::EllipticCurve::P256 =>
            {
                Algorithm::ES256
            }
            _ => return Err(JwksError::KeyType { path: shown() }),
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|source| JwksError::Key { path: shown(), source })?;
        keys.push((jwk.common.key_id.clone(), alg, key));
    }
    if keys.is_empty() {
        return Err(JwksError::Empty { path: shown() });
    }
    Ok(keys)
}

impl JwtVerifier {
    fn with(keys: Vec<Key>, fetch: Option<JwksFetch>, source: &str, issuer: &str, audience: &str) -> JwtVerifier {
        JwtVerifier {
            keys: std::sync::RwLock::new(std::sync::Arc::new(keys)),
            fetch,
            last_refresh: std::sync::Mutex::new(None),
            source: source.to_string(),
            issuer: issuer.to_string(),
            audience: audience.to_string(),
        }
    }

    /// Keys from a JWKS file, read once.
    pub fn from_jwks_file(path: &Path, issuer: &str, audience: &str) -> Result<JwtVerifier, JwksError> {
        let shown = path.display().to_string();
        let body = std::fs::read(path).map_err(|source| JwksError::Read { path: shown.clone(), source })?;
        Ok(JwtVerifier::with(parse_jwks(&body, &shown)?, None, &shown, issuer, audience))
    }

    /// Keys fetched from the IdP (`source` names it in errors), and fetched
    /// again when a token names a key id they lack: the IdP rotated. A key
    /// the IdP no longer publishes is dropped at that refresh.
    pub async fn from_fetch(
        source: &str,
        fetch: JwksFetch,
        issuer: &str,
        audience: &str,
    ) -> Result<JwtVerifier, JwksError> {
        let body = fetch().await.map_err(|reason| JwksError::Fetch { path: source.to_string(), reason })?;
        Ok(JwtVerifier::with(parse_jwks(&body, source)?, Some(fetch), source, issuer, audience))
    }

    /// Fetches the keys again, at most once per [`REFRESH_INTERVAL`]; a
    /// fetch or a JWKS that fails keeps the keys there are.
    async fn refresh(&self) -> bool {
        let Some(fetch) = &self.fetch else { return false };
        {
            let Ok(mut last) = self.last_refresh.lock() else { return false };
            if last.is_some_and(|t| t.elapsed() < REFRESH_INTERVAL) {
                return false;
            }
            *last = Some(std::time::Instant::now());
        }
        match fetch().await.ok().and_then(|body| parse_jwks(&body, &self.source).ok()) {
            Some(keys) => match self.keys.write() {
                Ok(mut k) => {
                    *k = std::sync::Arc::new(keys);
                    true
                }
                Err(_) => false,
            },
            None => false,
        }
    }

    /// The verified subject; a token whose `kid` the keys lack makes them
    /// be fetched again (see [`JwtVerifier::from_fetch`]) before it is judged.
    pub async fn verify(&self, token: &str) -> Result<String, JwtFailure> {
        self.verify_claims(token).await.and_then(subject)
    }

    /// The verified claims (as [`JwtVerifier::verify`]): the principal and
    /// group mapping reads them.
    pub async fn verify_claims(&self, token: &str) -> Result<serde_json::Value, JwtFailure> {
        match self.claims_now(token) {
            Err(f) if f == UNKNOWN_KEY && self.refresh().await => self.claims_now(token),
            r => r,
        }
    }

    /// The verified subject, with the keys at hand.
    pub fn verify_now(&self, token: &str) -> Result<String, JwtFailure> {
        self.claims_now(token).and_then(subject)
    }

    /// The verified claims with the keys at hand. The header's algorithm
    /// must be the one of the key it names (no `none`, no HS256 with a
    /// public key as secret).
    fn claims_now(&self, token: &str) -> Result<serde_json::Value, JwtFailure> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtFailure("malformed bearer token"))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(JwtFailure("token algorithm not accepted"));
        }
        let keys = self.keys.read().map(|k| k.clone()).map_err(|_| JwtFailure("keys unavailable"))?;
        if let Some(kid) = &header.kid
            && !keys.iter().any(|(k, _, _)| k.as_deref() == Some(kid.as_str()))
        {
            return Err(UNKNOWN_KEY);
        }
        let candidates = keys.iter().filter(|(kid, alg, _)| {
            *alg == header.alg && (header.kid.is_none() || kid.as_deref() == header.kid.as_deref())
        });
        for (_, alg, key) in candidates {
            let mut v = Validation::new(*alg);
            v.set_issuer(&[&self.issuer]);
            v.set_audience(&[&self.audience]);
            v.validate_nbf = true;
            v.leeway = 30;
            v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            match jsonwebtoken::decode::<serde_json::Value>(token, key, &v) {
                Ok(data) => return Ok(data.claims),
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind;
                    match e.kind() {
                        ErrorKind::ExpiredSignature => return Err(JwtFailure("token expired")),
                        ErrorKind::ImmatureSignature => return Err(JwtFailure("token not yet valid")),
                        ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
                            return Err(JwtFailure("token issued for someone else"));
                        }
                        _ => continue,
                    }
                }
            }
        }
        Err(JwtFailure("token signature not valid"))
    }
}

fn subject(claims: serde_json::Value) -> Result<String, JwtFailure> {
    claims["sub"].as_str().map(str::to_string).ok_or(JwtFailure("token has no subject"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use jsonwebtoken::{EncodingKey, Header};

    struct Issuer {
        pkcs8: Vec<u8>,
        verifier: JwtVerifier,
        jwks: serde_json::Value,
        _dir: tempfile::TempDir,
    }

    fn now() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
    }

    fn issuer() -> Issuer {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap().as_ref().to_vec();
        let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8).unwrap();
        let point = kp.public_key().as_ref().to_vec();
        let jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig",
            "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])}]});
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, jwks.to_string()).unwrap();
        let verifier = JwtVerifier::from_jwks_file(&path, "https://idp.example", "citadel").unwrap();
        Issuer { pkcs8, verifier, jwks, _dir: dir }
    }

    fn sign(i: &Issuer, claims: serde_json::Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("k1".into());
        jsonwebtoken::encode(&h, &claims, &EncodingKey::from_ec_der(&i.pkcs8)).unwrap()
    }

    fn claims() -> serde_json::Value {
        serde_json::json!({"sub": "app", "iss": "https://idp.example", "aud": "citadel", "exp": now() + 300, "nbf": now() - 10})
    }

    #[test]
    fn a_valid_token_names_its_subject() {
        let i = issuer();
        assert_eq!(i.verifier.verify_now(&sign(&i, claims())).unwrap(), "app");
    }

    #[test]
    fn expired_early_foreign_and_incomplete_tokens_are_refused() {
        let i = issuer();
        let mut c = claims();
        c["exp"] = serde_json::json!(now() - 600);
        assert_eq!(i.verifier.verify_now(&sign(&i, c)).unwrap_err().reason(), "token expired");
        let mut c = claims();
        c["nbf"] = serde_json::json!(now() + 600);
        assert_eq!(i.verifier.verify_now(&sign(&i, c)).unwrap_err().reason(), "token not yet valid");
        let mut c = claims();
        c["aud"] = serde_json::json!("another-service");
        assert_eq!(i.verifier.verify_now(&sign(&i, c)).unwrap_err().reason(), "token issued for someone else");
        let mut c = claims();
        c["iss"] = serde_json::json!("https://evil.example");
        assert_eq!(i.verifier.verify_now(&sign(&i, c)).unwrap_err().reason(), "token issued for someone else");
        let mut c = claims();
        c.as_object_mut().unwrap().remove("exp");
        assert!(i.verifier.verify_now(&sign(&i, c)).is_err());
    }

    #[test]
    fn forged_signatures_alg_none_and_hs256_confusion_are_refused() {
        let i = issuer();
        let good = sign(&i, claims());
        // Another key signs the same claims.
        let other = issuer();
        assert!(i.verifier.verify_now(&sign(&other, claims())).is_err());
        // A flipped signature byte.
        let mut forged = good.clone().into_bytes();
        let n = forged.len() - 5;
        forged[n] = if forged[n] == b'A' { b'B' } else { b'A' };
        assert!(i.verifier.verify_now(std::str::from_utf8(&forged).unwrap()).is_err());
        // alg: none with no signature.
        let payload = B64.encode(claims().to_string());
        for header in [r#"{"alg":"none","typ":"JWT"}"#, r#"{"alg":"None"}"#, r#"{"alg":"NONE","kid":"k1"}"#] {
            let token = format!("{}.{payload}.", B64.encode(header));
            assert!(i.verifier.verify_now(&token).is_err(), "{header} accepted");
        }
        // HS256 keyed with the public key material (the classic confusion).
        for secret in [i.jwks.to_string().into_bytes(), i.jwks["keys"][0]["x"].as_str().unwrap().as_bytes().to_vec()] {
            let mut h = Header::new(Algorithm::HS256);
            h.kid = Some("k1".into());
            let token = jsonwebtoken::encode(&h, &claims(), &EncodingKey::from_secret(&secret)).unwrap();
            assert_eq!(i.verifier.verify_now(&token).unwrap_err().reason(), "token algorithm not accepted");
        }
        // Garbage.
        for junk in ["", "a.b.c", "....", "eyJhbGciOiJFUzI1NiJ9"] {
            assert!(i.verifier.verify_now(junk).is_err());
        }
    }

    #[test]
    fn a_jwks_with_other_key_types_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"}]}"#).unwrap();
        assert!(JwtVerifier::from_jwks_file(&path, "i", "a").is_err());
        std::fs::write(&path, r#"{"keys":[]}"#).unwrap();
        assert!(JwtVerifier::from_jwks_file(&path, "i", "a").is_err());
    }
}

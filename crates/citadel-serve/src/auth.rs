//! Who is calling: API tokens (the foundation's), JWT bearer tokens
//! verified against a JWKS file, or a client certificate mapped to a
//! principal. Every route authenticates; grants always come from the
//! workspace (a JWT names a principal, it does not carry roles).
//!
//! Verified API tokens are cached for `cache_ttl` under the SHA-256 of the
//! presented token, so the hot path does no database work; a revocation
//! takes effect within that TTL (default 5 s). Failures are never cached.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use citadel_control::{Caller, ControlError, Workspace};
use citadel_types::Digest;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};

use crate::ServeError;

const CACHE_MAX: usize = 100_000;

/// Why a credential was refused; the text is safe to return (no secret, no detail an attacker could use).
#[derive(Debug, Clone, Copy)]
pub struct AuthFailure(pub &'static str);

pub struct JwtVerifier {
    keys: Vec<(Option<String>, Algorithm, DecodingKey)>,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier").field("keys", &self.keys.len()).field("issuer", &self.issuer).finish()
    }
}

impl JwtVerifier {
    /// Loads RS256 and ES256 keys from a JWKS file. Keys of other types are refused, not skipped.
    pub fn from_jwks_file(path: &Path, issuer: &str, audience: &str) -> Result<JwtVerifier, ServeError> {
        let body = std::fs::read(path).map_err(|e| ServeError::Config(format!("JWKS {}: {e}", path.display())))?;
        let set: JwkSet =
            serde_json::from_slice(&body).map_err(|e| ServeError::Config(format!("JWKS {}: {e}", path.display())))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let alg = match &jwk.algorithm {
                jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(p)
                    if p.curve == jsonwebtoken::jwk::EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                _ => {
                    return Err(ServeError::Config(format!(
                        "JWKS {}: only RSA (RS256) and P-256 (ES256) keys are accepted",
                        path.display()
                    )));
                }
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| ServeError::Config(format!("JWKS key: {e}")))?;
            keys.push((jwk.common.key_id.clone(), alg, key));
        }
        if keys.is_empty() {
            return Err(ServeError::Config(format!("JWKS {} holds no key", path.display())));
        }
        Ok(JwtVerifier { keys, issuer: issuer.to_string(), audience: audience.to_string() })
    }

    /// The verified subject. The header's algorithm must be the one of the
    /// key it names (no `none`, no HS256 with a public key as secret).
    pub fn verify(&self, token: &str) -> Result<String, AuthFailure> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthFailure("malformed bearer token"))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(AuthFailure("token algorithm not accepted"));
        }
        let candidates = self.keys.iter().filter(|(kid, alg, _)| {
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
                Ok(data) => {
                    return data.claims["sub"].as_str().map(str::to_string).ok_or(AuthFailure("token has no subject"));
                }
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind;
                    match e.kind() {
                        ErrorKind::ExpiredSignature => return Err(AuthFailure("token expired")),
                        ErrorKind::ImmatureSignature => return Err(AuthFailure("token not yet valid")),
                        ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
                            return Err(AuthFailure("token issued for someone else"));
                        }
                        _ => continue,
                    }
                }
            }
        }
        Err(AuthFailure("token signature not valid"))
    }
}

struct Cached {
    caller: Arc<Caller>,
    until: Instant,
}

pub struct Authenticator {
    ws: Arc<Workspace>,
    jwt: Option<JwtVerifier>,
    /// Client-certificate SHA-256 fingerprint → principal name.
    client_certs: HashMap<String, String>,
    ttl: Duration,
    cache: Mutex<HashMap<Digest, Cached>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("jwt", &self.jwt).field("client_certs", &self.client_certs.len()).finish()
    }
}

impl Authenticator {
    pub fn new(
        ws: Arc<Workspace>,
        jwt: Option<JwtVerifier>,
        client_certs: HashMap<String, String>,
        ttl: Duration,
    ) -> Self {
        Authenticator { ws, jwt, client_certs, ttl, cache: Mutex::new(HashMap::new()) }
    }

    fn cached(&self, key: &Digest) -> Option<Arc<Caller>> {
        let cache = self.cache.lock().ok()?;
        cache.get(key).filter(|c| c.until > Instant::now()).map(|c| c.caller.clone())
    }

    fn remember(&self, key: Digest, caller: Arc<Caller>) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_MAX {
                let now = Instant::now();
                cache.retain(|_, c| c.until > now);
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
            }
            cache.insert(key, Cached { caller, until: Instant::now() + self.ttl });
        }
    }

    /// Authenticates a request from its `Authorization` header value and its client certificate.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        client_cert_fingerprint: Option<&str>,
    ) -> Result<Arc<Caller>, AuthFailure> {
        if let Some(value) = authorization {
            let token = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .ok_or(AuthFailure("use Authorization: Bearer TOKEN"))?
                .trim();
            let key = Digest::of(token.as_bytes());
            if let Some(c) = self.cached(&key) {
                return Ok(c);
            }
            let caller = if token.starts_with("cit_") {
                self.ws.authenticate(token).await.map_err(control_failure)?
            } else {
                let jwt = self.jwt.as_ref().ok_or(AuthFailure("unknown credential"))?;
                let subject = match jwt.verify(token) {
                    Ok(s) => s,
                    Err(f) => {
                        self.audit_refusal("auth.jwt", f.0).await;
                        return Err(f);
                    }
                };
                match self.ws.caller_for_principal_name(&subject).await {
                    Ok(c) => c,
                    Err(e) => {
                        self.audit_refusal("auth.jwt", "subject is not an enabled principal").await;
                        return Err(control_failure(e));
                    }
                }
            };
            let caller = Arc::new(caller);
            self.remember(key, caller.clone());
            return Ok(caller);
        }
        if let Some(fp) = client_cert_fingerprint {
            let name =
                self.client_certs.get(fp).ok_or(AuthFailure("client certificate is not mapped to a principal"))?;
            let key = Digest::of(format!("mtls:{fp}").as_bytes());
            if let Some(c) = self.cached(&key) {
                return Ok(c);
            }
            let caller = Arc::new(self.ws.caller_for_principal_name(name).await.map_err(control_failure)?);
            self.remember(key, caller.clone());
            return Ok(caller);
        }
        Err(AuthFailure("credentials required"))
    }

    async fn audit_refusal(&self, action: &str, reason: &str) {
        let _ = self
            .ws
            .db()
            .append_audit(citadel_control::event(
                "anonymous",
                action,
                "gateway",
                citadel_audit::Outcome::Denied,
                &citadel_types::random_id("req-"),
                serde_json::json!({"reason": reason}),
            ))
            .await;
    }
}

fn control_failure(e: ControlError) -> AuthFailure {
    match e {
        ControlError::Unauthenticated(why) => AuthFailure(why),
        _ => AuthFailure("authentication unavailable"),
    }
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
        assert_eq!(i.verifier.verify(&sign(&i, claims())).unwrap(), "app");
    }

    #[test]
    fn expired_early_foreign_and_incomplete_tokens_are_refused() {
        let i = issuer();
        let mut c = claims();
        c["exp"] = serde_json::json!(now() - 600);
        assert_eq!(i.verifier.verify(&sign(&i, c)).unwrap_err().0, "token expired");
        let mut c = claims();
        c["nbf"] = serde_json::json!(now() + 600);
        assert_eq!(i.verifier.verify(&sign(&i, c)).unwrap_err().0, "token not yet valid");
        let mut c = claims();
        c["aud"] = serde_json::json!("another-service");
        assert_eq!(i.verifier.verify(&sign(&i, c)).unwrap_err().0, "token issued for someone else");
        let mut c = claims();
        c["iss"] = serde_json::json!("https://evil.example");
        assert_eq!(i.verifier.verify(&sign(&i, c)).unwrap_err().0, "token issued for someone else");
        let mut c = claims();
        c.as_object_mut().unwrap().remove("exp");
        assert!(i.verifier.verify(&sign(&i, c)).is_err());
    }

    #[test]
    fn forged_signatures_alg_none_and_hs256_confusion_are_refused() {
        let i = issuer();
        let good = sign(&i, claims());
        // Another key signs the same claims.
        let other = issuer();
        assert!(i.verifier.verify(&sign(&other, claims())).is_err());
        // A flipped signature byte.
        let mut forged = good.clone().into_bytes();
        let n = forged.len() - 5;
        forged[n] = if forged[n] == b'A' { b'B' } else { b'A' };
        assert!(i.verifier.verify(std::str::from_utf8(&forged).unwrap()).is_err());
        // alg: none with no signature.
        let payload = B64.encode(claims().to_string());
        for header in [r#"{"alg":"none","typ":"JWT"}"#, r#"{"alg":"None"}"#, r#"{"alg":"NONE","kid":"k1"}"#] {
            let token = format!("{}.{payload}.", B64.encode(header));
            assert!(i.verifier.verify(&token).is_err(), "{header} accepted");
        }
        // HS256 keyed with the public key material (the classic confusion).
        for secret in [i.jwks.to_string().into_bytes(), i.jwks["keys"][0]["x"].as_str().unwrap().as_bytes().to_vec()] {
            let mut h = Header::new(Algorithm::HS256);
            h.kid = Some("k1".into());
            let token = jsonwebtoken::encode(&h, &claims(), &EncodingKey::from_secret(&secret)).unwrap();
            assert_eq!(i.verifier.verify(&token).unwrap_err().0, "token algorithm not accepted");
        }
        // Garbage.
        for junk in ["", "a.b.c", "....", "eyJhbGciOiJFUzI1NiJ9"] {
            assert!(i.verifier.verify(junk).is_err());
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

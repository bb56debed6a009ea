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
            .append_audit(citadel_audit::AuditEvent {
                ts: citadel_types::Timestamp::now(),
                actor: "anonymous".into(),
                action: action.into(),
                resource: "gateway".into(),
                outcome: citadel_audit::Outcome::Denied,
                request_id: citadel_types::random_id("req-"),
                details: serde_json::json!({"reason": reason}),
            })
            .await;
    }
}

fn control_failure(e: ControlError) -> AuthFailure {
    match e {
        ControlError::Unauthenticated(why) => AuthFailure(why),
        _ => AuthFailure("authentication unavailable"),
    }
}

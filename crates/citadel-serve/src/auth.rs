//! Who is calling: API tokens, JWT bearer tokens verified against a JWKS,
//! or a client certificate mapped to a principal. The verifying (and the
//! audit of every refusal, the same way for every kind) is the control
//! plane's (`citadel_control::Workspace::authenticate*`); this cache keeps
//! the gateway's hot path free of database work. Grants always come from
//! the workspace (a JWT names a principal, it does not carry roles).
//!
//! Verified API tokens are cached for `cache_ttl` under the SHA-256 of the
//! presented token, so the hot path does no database work; a revocation
//! takes effect within that TTL (default 5 s). Failures are never cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use citadel_control::JwtVerifier;
use citadel_control::{Caller, ControlError, Workspace};
use citadel_types::Digest;

const CACHE_MAX: usize = 100_000;

/// Why a credential was refused; the text is safe to return (no secret, no detail an attacker could use).
#[derive(Debug, Clone, Copy)]
pub struct AuthFailure(pub &'static str);

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
                let Some(jwt) = self.jwt.as_ref() else {
                    let refused = self.ws.refuse_credential(None, "bearer", "unknown credential").await;
                    return Err(control_failure(refused));
                };
                self.ws.authenticate_jwt(jwt, token).await.map_err(control_failure)?
            };
            let caller = Arc::new(caller);
            self.remember(key, caller.clone());
            return Ok(caller);
        }
        if let Some(fp) = client_cert_fingerprint {
            let key = Digest::of(format!("mtls:{fp}").as_bytes());
            if let Some(c) = self.cached(&key) {
                return Ok(c);
            }
            let caller =
                Arc::new(self.ws.authenticate_client_cert(&self.client_certs, fp).await.map_err(control_failure)?);
            self.remember(key, caller.clone());
            return Ok(caller);
        }
        // No credential at all is refused and recorded like any other.
        Err(control_failure(self.ws.refuse_credential(None, "none", "credentials required").await))
    }
}

fn control_failure(e: ControlError) -> AuthFailure {
    match e {
        ControlError::Unauthenticated(why) => AuthFailure(why),
        _ => AuthFailure("authentication unavailable"),
    }
}

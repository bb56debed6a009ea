//! Who is calling: API tokens, JWT bearer tokens verified against a JWKS,
//! or a client certificate mapped to a principal. The verifying is the
//! control plane's (`citadel_control::Workspace::verify_*`); this module
//! keeps the gateway's hot path free of database work and its refusals from
//! becoming a denial of service. Grants always come from the workspace (a
//! JWT names a principal, it does not carry roles).
//!
//! - Verified credentials are cached for `cache_ttl` under the SHA-256 of
//!   what was presented; a revocation takes effect within that TTL (default
//!   5 s). Refusals are never cached.
//! - Refusals are counted per client address in fixed windows: an address
//!   past its budget is answered 429 *before* any lookup or database write
//!   (a credential already in the cache still passes, so a client behind
//!   the same address as an attacker keeps being served).
//! - Every refusal is recorded, the same way for every kind (a missing or
//!   malformed credential included), through a bounded queue that one task
//!   writes in batches, one transaction each. A full queue counts what it
//!   could not take, and the count itself is recorded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use citadel_control::JwtVerifier;
use citadel_control::{AuthError, Caller, CredentialKind, Refusal, Workspace};
use citadel_types::Digest;
use tokio::sync::mpsc;

const CACHE_MAX: usize = 100_000;
/// Addresses tracked at once; past it the oldest windows are forgotten.
const ADDRESSES_MAX: usize = 100_000;
/// Refusals waiting to be written.
const QUEUE: usize = 8_192;
/// Refusals written per transaction.
const BATCH: usize = 512;
/// Refusals recorded one by one per second, all addresses together.
const RECORDED_PER_SEC: u64 = 500;

/// The network a refusal is counted against: an IPv4 address, or the /64 an
/// IPv6 address is in (one host commonly holds a whole /64).
fn network_of(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
        v4 => v4,
    }
}

/// Why a request did not authenticate.
#[derive(Debug, Clone, Copy)]
pub enum AuthFailure {
    /// 401: the credential was refused (and the refusal recorded).
    Refused(&'static str),
    /// 429: too many refusals from this address; nothing was looked up.
    TooMany { retry_after: Duration },
    /// 503: the check itself could not run (the database).
    Unavailable,
}

impl AuthFailure {
    /// What a client is told of a refusal: how to present a credential, or
    /// that the one presented was refused, never which check failed (that
    /// is in the audit record).
    pub fn public_reason(why: &'static str) -> &'static str {
        match why {
            "credentials required" | "use Authorization: Bearer TOKEN" => why,
            _ => "the credential was refused",
        }
    }
}

/// How many refusals one client address gets per window before its
/// requests are answered 429 without a lookup.
#[derive(Debug, Clone, Copy)]
pub struct RefusalBudget {
    pub per_window: u32,
    pub window: Duration,
}

impl Default for RefusalBudget {
    fn default() -> Self {
        RefusalBudget { per_window: 30, window: Duration::from_secs(60) }
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
    budget: RefusalBudget,
    /// Per address: (window start, refusals in it).
    refusals_by_address: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    queue: mpsc::Sender<Refusal>,
    /// Refusals the full queue could not take (recorded as a count).
    dropped: Arc<AtomicU64>,
    /// The global rate of recorded refusals: the current second, its count.
    started: Instant,
    second: AtomicU64,
    in_second: AtomicU64,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("jwt", &self.jwt).field("client_certs", &self.client_certs.len()).finish()
    }
}

impl Authenticator {
    /// Starts the refusal writer on the current runtime (it ends when the
    /// authenticator is dropped, after writing what it holds).
    pub fn new(
        ws: Arc<Workspace>,
        jwt: Option<JwtVerifier>,
        client_certs: HashMap<String, String>,
        ttl: Duration,
        budget: RefusalBudget,
    ) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        tokio::spawn(write_refusals(ws.clone(), rx, dropped.clone()));
        Authenticator {
            ws,
            jwt,
            client_certs,
            ttl,
            cache: Mutex::new(HashMap::new()),
            budget,
            refusals_by_address: Mutex::new(HashMap::new()),
            queue,
            dropped,
            started: Instant::now(),
            second: AtomicU64::new(0),
            in_second: AtomicU64::new(0),
        }
    }

    /// Forgets every verified credential: the next request of each is
    /// verified again (after this server revoked a token, disabled a
    /// principal or changed a grant, so its own change holds at once).
    pub fn forget_all(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
    }

    fn cached(&self, key: &Digest) -> Option<Arc<Caller>> {
        let cache = self.cache.lock().ok()?;
        cache.get(key).filter(|c| c.until > Instant::now()).map(|c| c.caller.clone())
    }

    /// Caches a verified caller for the TTL, or until `expires` (a JWT's
    /// `exp`, seconds since the epoch) if that comes first.
    fn remember(&self, key: Digest, caller: Arc<Caller>, expires: Option<u64>) {
        let mut until = Instant::now() + self.ttl;
        if let Some(exp) = expires {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
            until = until.min(Instant::now() + Duration::from_secs(exp.saturating_sub(now)));
        }
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_MAX {
                let now = Instant::now();
                cache.retain(|_, c| c.until > now);
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
            }
            cache.insert(key, Cached { caller, until });
        }
    }

    /// `Some(wait)` when `address` has used its refusals for this window,
    /// or when so many addresses are counted that a new one cannot be (the
    /// table is not cleared to make room: that would forgive everyone).
    fn over_budget(&self, address: IpAddr) -> Option<Duration> {
        let map = self.refusals_by_address.lock().ok()?;
        let Some((start, n)) = map.get(&address) else {
            return (map.len() >= ADDRESSES_MAX).then_some(self.budget.window);
        };
        let elapsed = start.elapsed();
        (elapsed < self.budget.window && *n >= self.budget.per_window).then(|| self.budget.window - elapsed)
    }

    /// Counts a refusal against `address` and queues its record.
    fn refused(&self, address: IpAddr, refusal: Refusal) -> AuthFailure {
        let reason = refusal.reason();
        if let Ok(mut map) = self.refusals_by_address.lock() {
            let now = Instant::now();
            if map.len() >= ADDRESSES_MAX && !map.contains_key(&address) {
                map.retain(|_, (start, _)| now.duration_since(*start) < self.budget.window);
            }
            if map.len() < ADDRESSES_MAX || map.contains_key(&address) {
                let entry = map.entry(address).or_insert((now, 0));
                if now.duration_since(entry.0) >= self.budget.window {
                    *entry = (now, 0);
                }
                entry.1 = entry.1.saturating_add(1);
            }
        }
        // However many addresses refuse, at most RECORDED_PER_SEC refusals a
        // second are written one by one; the rest are counted.
        let second = self.started.elapsed().as_secs();
        let recorded = match self.second.swap(second, Ordering::Relaxed) {
            s if s == second => self.in_second.fetch_add(1, Ordering::Relaxed) + 1,
            _ => {
                self.in_second.store(1, Ordering::Relaxed);
                1
            }
        };
        if recorded > RECORDED_PER_SEC || self.queue.try_send(refusal).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        AuthFailure::Refused(reason)
    }

    fn settle(&self, address: IpAddr, r: Result<Caller, AuthError>) -> Result<Caller, AuthFailure> {
        match r {
            Ok(c) => Ok(c),
            Err(AuthError::Refused(refusal)) => Err(self.refused(address, refusal)),
            Err(AuthError::Unavailable(_)) => Err(AuthFailure::Unavailable),
        }
    }

    /// Authenticates a request from its `Authorization` header value and
    /// its client certificate, coming from `address`.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        client_cert_fingerprint: Option<&str>,
        address: IpAddr,
    ) -> Result<Arc<Caller>, AuthFailure> {
        let address = network_of(address);
        // What was presented, parsed before anything is looked up; the cache
        // key says which kind it is, so one kind can never pose as another.
        let bearer =
            authorization.map(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).map(str::trim));
        let key = match (bearer, client_cert_fingerprint) {
            (Some(Some(token)), _) => Some(Digest::of(&[b"bearer\0".as_slice(), token.as_bytes()].concat())),
            (None, Some(fp)) => Some(Digest::of(&[b"cert\0".as_slice(), fp.as_bytes()].concat())),
            _ => None,
        };
        if let Some(c) = key.as_ref().and_then(|k| self.cached(k)) {
            // Each request its own id, though its credential was verified earlier.
            return Ok(Arc::new(c.renewed()));
        }
        // Past its refusals, an address gets no lookup and no write.
        if let Some(retry_after) = self.over_budget(address) {
            return Err(AuthFailure::TooMany { retry_after });
        }
        let caller = match (bearer, client_cert_fingerprint) {
            (Some(None), _) => {
                return Err(self.refused(address, Refusal::new(None, "malformed", "use Authorization: Bearer TOKEN")));
            }
            (Some(Some(token)), _) => {
                if token.starts_with("cit_") {
                    self.settle(address, self.ws.verify_token(token).await)?
                } else if let Some(jwt) = &self.jwt {
                    self.settle(address, self.ws.verify_jwt(jwt, token).await)?
                } else {
                    let kind = Some(CredentialKind::Jwt);
                    return Err(self.refused(address, Refusal::new(kind, "bearer", "unknown credential")));
                }
            }
            (None, Some(fp)) => self.settle(address, self.ws.verify_client_cert(&self.client_certs, fp).await)?,
            (None, None) => return Err(self.refused(address, Refusal::new(None, "none", "credentials required"))),
        };
        let caller = Arc::new(caller);
        if let Some(key) = key {
            // A JWT's own expiry bounds its cache entry (it was just verified,
            // so its payload is the issuer's).
            let expires = bearer.flatten().filter(|t| !t.starts_with("cit_")).and_then(jwt_exp);
            self.remember(key, caller.clone(), expires);
        }
        Ok(caller)
    }
}

/// Writes queued refusals in batches until the queue closes; a count of
/// those the full queue dropped is written with the next batch.
async fn write_refusals(ws: Arc<Workspace>, mut rx: mpsc::Receiver<Refusal>, dropped: Arc<AtomicU64>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            batch.push(Refusal::dropped(lost));
        }
        let n = batch.len() as u64;
        if let Err(e) = ws.record_refusals(std::mem::take(&mut batch)).await {
            // Not acknowledged to anyone: counted, and said in the log.
            dropped.fetch_add(n, Ordering::Relaxed);
            eprintln!("citadel serve: {n} refused credentials could not be recorded: {e}");
        }
    }
}

/// The `exp` claim of a JWT's payload (not verified here: only for a token
/// that was).
fn jwt_exp(token: &str) -> Option<u64> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes).ok()?["exp"].as_u64()
}

/// The JWT verifier of `--jwks SOURCE`: a JWKS file, or an `https://` URL
/// fetched (and fetched again when the IdP rotates its keys) over TLS that
/// trusts the certificates in `ca` (default: the system's bundle).
pub async fn jwt_verifier(
    source: &std::path::Path,
    ca: Option<&std::path::Path>,
    issuer: &str,
    audience: &str,
) -> Result<JwtVerifier, crate::ServeError> {
    let text = source.to_string_lossy();
    let Some(rest) = text.strip_prefix("https://") else {
        return Ok(JwtVerifier::from_jwks_file(source, issuer, audience)?);
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (
            h.to_string(),
            p.parse::<u16>().map_err(|_| crate::ServeError::Config(format!("JWKS URL {text}: bad port")))?,
        ),
        None => (hostport.to_string(), 443),
    };
    let ca = ca.map(std::path::Path::to_path_buf).unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into());
    let tls = crate::tls::client_connector(&ca)?;
    let url = text.to_string();
    let fetch: citadel_control::JwksFetch = Box::new(move || {
        let (tls, host, path) = (tls.clone(), host.clone(), path.clone());
        Box::pin(async move {
            let get = async {
                let io = tls.connect(&host, port).await.map_err(|e| e.to_string())?;
                let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                let req = hyper::Request::get(path.as_str())
                    .header(hyper::header::HOST, host.as_str())
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .map_err(|e| e.to_string())?;
                let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
                if resp.status() != hyper::StatusCode::OK {
                    return Err(format!("answered {}", resp.status()));
                }
                use http_body_util::BodyExt;
                let body = http_body_util::Limited::new(resp.into_body(), 1 << 20)
                    .collect()
                    .await
                    .map_err(|e| format!("reading the keys: {e}"))?;
                Ok(body.to_bytes().to_vec())
            };
            tokio::time::timeout(Duration::from_secs(10), get).await.map_err(|_| "timed out".to_string())?
        })
    });
    Ok(JwtVerifier::from_fetch(&url, fetch, issuer, audience).await?)
}

//! The data plane: `citadel serve`.
//!
//! An HTTPS gateway speaking the Open Inference Protocol V2 (REST, JSON
//! tensors and the binary tensor data extension). It serves the live
//! deployments of a workspace: every model version is obtained through
//! verified loading (AEAD, digest and signature checked), every call is
//! authenticated and authorized (`model.infer` on `model:ENDPOINT`), rate
//! limited per principal and per endpoint (GCRA), bounded in body size,
//! tensor elements, time and concurrency, and logged without tokens or
//! payload values.
//!
//! Gateways hold no state of their own: routing comes from the database,
//! polled every `poll_interval`, so many replicas can serve one workspace.

pub mod auth;
pub mod client;
pub mod feedback;
mod gateway;
pub mod grpc_pb;
mod metrics;
pub mod named;
mod openapi;
pub mod serving;
pub mod shared_limit;
pub mod tls;
pub mod v2;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use auth::{JwtVerifier, RefusalBudget};
pub use gateway::{Gateway, Listening};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("TLS: {0}")]
    Tls(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    Control(#[from] citadel_control::ControlError),
    #[error(transparent)]
    Jwks(#[from] citadel_control::JwksError),
}

/// How connections are secured.
#[derive(Debug, Clone)]
pub enum Transport {
    /// Certificate and key files (PEM), reloaded when they change.
    Tls { cert: PathBuf, key: PathBuf },
    /// A self-signed localhost certificate written into this directory.
    DevSelfSigned(PathBuf),
    /// No TLS; only allowed on a loopback address.
    PlainLoopback,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_tensor_elements: usize,
    pub request_timeout: Duration,
    pub header_timeout: Duration,
    pub max_connections: usize,
    pub max_concurrency_per_model: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 8 << 20,
            max_tensor_elements: 1 << 20,
            request_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            max_connections: 16_384,
            max_concurrency_per_model: 64,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RateLimits {
    pub per_principal_per_sec: u32,
    pub per_principal_burst: u32,
    pub per_endpoint_per_sec: u32,
    pub per_endpoint_burst: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            per_principal_per_sec: 1000,
            per_principal_burst: 2000,
            per_endpoint_per_sec: 20_000,
            per_endpoint_burst: 40_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    /// Where the Open Inference Protocol's gRPC service listens (HTTP/2,
    /// the same TLS, authentication, limits and audit as REST); none: off.
    pub grpc_listen: Option<SocketAddr>,
    pub transport: Transport,
    /// PEM CA that client certificates must chain to (mutual TLS).
    pub client_ca: Option<PathBuf>,
    pub require_client_cert: bool,
    /// Client-certificate SHA-256 fingerprint → principal name.
    pub client_principals: HashMap<String, String>,
    /// JWKS file, issuer and audience for JWT bearer tokens.
    pub jwt: Option<(PathBuf, String, String)>,
    /// The CA that signed an `https://` JWKS URL's certificate (default: the
    /// system bundle).
    pub jwks_ca: Option<PathBuf>,
    pub limits: Limits,
    pub rate: RateLimits,
    pub poll_interval: Duration,
    pub auth_cache_ttl: Duration,
    /// Refused credentials per client address and window before its
    /// requests are answered 429 without a lookup.
    pub refusal_budget: auth::RefusalBudget,
    /// Where JSON access logs go (`-` for stdout); none to disable.
    pub access_log: Option<PathBuf>,
    /// Inference records kept per endpoint for monitoring.
    pub capture_rows: usize,
    /// Redis shared by the replicas for the rate limits ([`shared_limit`]);
    /// none: each gateway limits on its own.
    pub rate_redis: Option<String>,
    /// What a replica does when that Redis does not answer.
    pub rate_fallback: shared_limit::Fallback,
    /// After SIGTERM, how long the gateway keeps serving (not ready, every
    /// response `Connection: close`) so a load balancer sees it leave
    /// before it stops accepting.
    pub shutdown_delay: Duration,
    /// After that, how long in-flight requests get to finish before the
    /// connections still open are dropped.
    pub shutdown_timeout: Duration,
    /// Live monitoring: sketch what is served and write each window to the
    /// metadata database, then judge closed windows (on by default).
    pub monitor: bool,
    /// Length of the credential detectors' windows (seconds).
    pub auth_window_secs: u64,
    /// How often an open monitoring window's sketch so far is written as a
    /// part (seconds; 0: only when the window closes). What a replica killed
    /// mid-window loses is at most this much of its traffic.
    pub monitor_part_secs: u64,
    /// The control plane models are fetched from when this gateway holds no
    /// key ([`serving::ControlClient`]); none: loaded from the workspace.
    pub control: Option<std::sync::Arc<serving::ControlClient>>,
}

impl ServeConfig {
    pub fn new(listen: SocketAddr, transport: Transport) -> ServeConfig {
        ServeConfig {
            listen,
            grpc_listen: None,
            transport,
            client_ca: None,
            require_client_cert: false,
            client_principals: HashMap::new(),
            jwt: None,
            jwks_ca: None,
            limits: Limits::default(),
            rate: RateLimits::default(),
            poll_interval: Duration::from_secs(1),
            auth_cache_ttl: Duration::from_secs(5),
            refusal_budget: auth::RefusalBudget::default(),
            access_log: None,
            capture_rows: 1000,
            rate_redis: None,
            rate_fallback: shared_limit::Fallback::Local,
            shutdown_delay: Duration::ZERO,
            shutdown_timeout: Duration::from_secs(30),
            monitor: true,
            control: None,
            auth_window_secs: 60,
            monitor_part_secs: 10,
        }
    }
}

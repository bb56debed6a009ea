//! `citadel server`: the control plane over HTTPS. One server process holds
//! the keys; people and machines hold only credentials (API tokens, JWTs,
//! client certificates) and reach every operation through `/api/v1`.
//!
//! - [`app`] is the whole API as an axum `Router` (tower layers: the body
//!   limit, authentication; routing), testable in-process without a socket.
//! - Authentication is the gateway's ([`citadel_serve::auth`]): credentials
//!   verified by the control plane, refusals recorded in batches and limited
//!   per client address before any lookup. Authorization and audit happen
//!   once, inside each control-plane operation.
//! - [`error`] maps every control-plane error to one status; a 5xx body says
//!   nothing internal.
//! - [`serve`] listens under the gateway's rules: TLS 1.2+ (a certificate
//!   pair, or a development self-signed one), plain HTTP on loopback only.

#![forbid(unsafe_code)]

pub mod error;
mod openapi;
mod routes;
pub mod transfer;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use citadel_control::Workspace;
use citadel_serve::auth::{AuthFailure, Authenticator, RefusalBudget};
use citadel_serve::{Listening, ServeError, Transport};
use serde_json::json;

pub use error::ApiError;

/// The largest JSON body the API reads (an upload's bytes are bounded by
/// its declared size instead, see [`transfer`]).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Client connections served at once.
pub const MAX_CONNECTIONS: usize = 4096;

/// Requests per principal: GCRA (governor), keyed by principal id.
pub type PrincipalLimiter = governor::RateLimiter<
    String,
    governor::state::keyed::DefaultKeyedStateStore<String>,
    governor::clock::DefaultClock,
>;

/// What every handler shares.
pub struct AppState {
    pub ws: Arc<Workspace>,
    pub auth: Authenticator,
    pub uploads: transfer::Uploads,
    /// Each principal's requests (after authentication); past it, 429.
    pub principal_limits: PrincipalLimiter,
    /// Pipeline runs and erasures at once (each holds a blocking thread, CPU
    /// and disk until it ends); past it, 429.
    pub long_jobs: Arc<tokio::sync::Semaphore>,
}

/// Pipeline runs and erasures a server runs at once.
pub const MAX_LONG_JOBS: usize = 2;

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// The client's address, set by the listener for each connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The SHA-256 fingerprint of a client certificate the TLS handshake verified.
#[derive(Debug, Clone)]
pub struct ClientCert(pub String);

/// The API (`/api/v1/…`): the routes, their authentication, the body limit.
pub fn app(state: Arc<AppState>) -> Router {
    let protected = Router::new()
        .route("/api/v1/whoami", get(routes::whoami))
        .route("/api/v1/models", get(routes::models))
        .route("/api/v1/models/{name}/versions", get(routes::model_versions).post(transfer::model_commit))
        .route("/api/v1/models/{name}/history", get(routes::model_history))
        .route("/api/v1/stage-requests", get(routes::stage_requests).post(routes::request_stage))
        .route("/api/v1/stage-requests/{id}/{verb}", post(routes::decide))
        .route("/api/v1/datasets", get(routes::datasets))
        .route("/api/v1/datasets/{name}/versions", get(routes::dataset_versions).post(transfer::dataset_commit))
        .route("/api/v1/deployments", get(routes::deployments))
        .route("/api/v1/principals", get(routes::principals).post(routes::principal_create))
        .route("/api/v1/principals/{name}/disable", post(routes::principal_disable))
        .route("/api/v1/grants/{verb}", post(routes::grant))
        .route("/api/v1/tokens", get(routes::tokens).post(routes::token_issue))
        .route("/api/v1/tokens/{id}/revoke", post(routes::token_revoke))
        .route("/api/v1/keys", get(routes::keys))
        .route("/api/v1/datasets/{name}/versions/{version}", get(routes::dataset_version))
        .route("/api/v1/deployments/{name}/history", get(routes::deployment_history))
        .route(
            "/api/v1/deployments/{name}",
            axum::routing::put(routes::deployment_set).delete(routes::deployment_remove),
        )
        .route("/api/v1/deployments/{name}/switch", post(routes::deployment_switch))
        .route("/api/v1/deployments/{name}/rollback", post(routes::deployment_rollback))
        .route("/api/v1/models/{name}/versions/{version}/retire", post(routes::model_retire))
        .route("/api/v1/models/{name}/versions/{version}/bom", get(routes::model_bom))
        .route("/api/v1/models/{name}/rollback", post(routes::model_rollback))
        .route("/api/v1/signing-key", get(routes::signing_key))
        .route("/api/v1/datasets/{name}/versions/{version}/release", post(routes::data_release))
        .route("/api/v1/dataset-diff", get(routes::data_diff))
        .route("/api/v1/runs", get(routes::runs).post(transfer::run_commit))
        .route("/api/v1/runs/{id}", get(routes::run))
        .route("/api/v1/store/gc", post(routes::gc))
        .route("/api/v1/store/fsck", post(routes::fsck))
        .route("/api/v1/report", get(routes::report))
        .route("/api/v1/subjects/erase", post(routes::subject_erase))
        .route("/api/v1/subjects/export", post(routes::subject_export))
        .route("/api/v1/erasures", get(routes::erasures))
        .route("/api/v1/erasures/{id}", get(routes::erasure))
        .route("/api/v1/secrets", get(routes::secrets))
        .route("/api/v1/secrets/{name}", axum::routing::put(routes::secret_set).delete(routes::secret_remove))
        .route("/api/v1/incidents", get(routes::incidents))
        .route("/api/v1/incidents/{id}", get(routes::incident))
        .route("/api/v1/incidents/{id}/{verb}", post(routes::incident_transition))
        .route("/api/v1/monitor/{endpoint}", get(routes::monitor_status))
        .route("/api/v1/lineage", get(routes::lineage))
        .route("/api/v1/audit/verify", get(routes::audit_verify))
        .route("/api/v1/audit/records", get(routes::audit_records))
        .route("/api/v1/audit/export", get(routes::audit_export))
        .route("/api/v1/audit/checkpoint", post(routes::audit_checkpoint))
        .route("/api/v1/scan/allowlist", get(routes::allowlist).post(routes::allowlist_add))
        .route("/api/v1/scan/allowlist/{global}", axum::routing::delete(routes::allowlist_remove))
        .route("/api/v1/uploads", post(transfer::create))
        .route("/api/v1/uploads/{id}", get(transfer::status).delete(transfer::abandon))
        .route("/api/v1/uploads/{id}", axum::routing::patch(transfer::append).layer(DefaultBodyLimit::disable()))
        .route("/api/v1/artifacts", get(routes::artifacts).post(transfer::artifact_commit))
        .route("/api/v1/artifacts/{reference}", get(transfer::artifact_describe))
        .route("/api/v1/artifacts/{reference}/content", get(transfer::artifact_content))
        .route("/api/v1/datasets/{name}/versions/{version}/rows", get(transfer::dataset_rows))
        .route("/api/v1/serving/models/{name}/versions/{version}", get(transfer::serving_model))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/api/v1/health", get(|| async { axum::Json(json!({"live": true})) }))
        .route("/api/v1/openapi.json", get(|| async { axum::Json(openapi::document()) }))
        .merge(protected)
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route; the API is described at /api/v1/openapi.json",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::map_response(json_errors))
        .with_state(state)
}

/// Every refusal is JSON (`{"error", "kind"}`), the framework's own too (a
/// body that does not parse, a method the route lacks, a body too large).
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json =
        resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if status.is_success() || is_json {
        return resp;
    }
    let kind = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let message = if status.is_server_error() {
        "the server could not complete the request".to_string()
    } else {
        let bytes = axum::body::to_bytes(resp.into_body(), 16 * 1024).await.unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes).trim().to_string();
        if text.is_empty() { status.canonical_reason().unwrap_or("refused").to_string() } else { text }
    };
    ApiError::new(status, kind, message).into_response()
}

/// Authenticates every protected route before its handler (and before its
/// body is read): the verified caller goes into the request's extensions.
async fn authenticate(State(st): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let address = req.extensions().get::<Peer>().map(|p| p.0.ip()).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let fingerprint = req.extensions().get::<ClientCert>().map(|c| c.0.clone());
    let authorization = match req.headers().get(header::AUTHORIZATION).map(|v| v.to_str()) {
        Some(Ok(v)) => Some(v.to_string()),
        Some(Err(_)) => {
            return ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", "malformed Authorization header")
                .into_response();
        }
        None => None,
    };
    match st.auth.authenticate(authorization.as_deref(), fingerprint.as_deref(), address).await {
        Ok(caller) => {
            // One principal's flood (a leaked token, a runaway script) does
            // not take the server from everyone else.
            if let Err(not_until) = st.principal_limits.check_key(&caller.id().to_string()) {
                let wait =
                    not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
                return ApiError {
                    retry_after_secs: Some(wait.as_secs().max(1)),
                    ..ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate_limited",
                        format!("{} is over its request rate; retry in {} ms", caller.name(), wait.as_millis().max(1)),
                    )
                }
                .into_response();
            }
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(AuthFailure::Refused(why)) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            format!(
                "{}; hint: send Authorization: Bearer TOKEN (citadel token issue NAME)",
                AuthFailure::public_reason(why)
            ),
        )
        .into_response(),
        Err(AuthFailure::TooMany { retry_after }) => ApiError {
            retry_after_secs: Some(retry_after.as_secs().max(1)),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many refused credentials from this address; retry later with a valid one",
            )
        }
        .into_response(),
        Err(AuthFailure::Unavailable) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "authentication is unavailable; retry")
                .into_response()
        }
    }
}

/// How `citadel server` listens and whom it trusts.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub transport: Transport,
    /// JWKS file, issuer and audience for people's bearer JWTs.
    pub jwt: Option<(PathBuf, String, String)>,
    /// The CA of an `https://` JWKS URL (default: the system bundle).
    pub jwks_ca: Option<PathBuf>,
    pub auth_cache_ttl: Duration,
    pub refusal_budget: RefusalBudget,
    /// Requests per second per principal, and the burst (GCRA).
    pub per_principal: (u32, u32),
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "plain HTTP is for loopback only; {0} is not a loopback address — hint: give --cert and --key, or --dev-self-signed"
    )]
    PlainNotLoopback(SocketAddr),
    #[error("the upload staging directory {dir}: {source}")]
    Uploads {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The state of a server over `ws` with `config`'s credentials.
pub async fn state(ws: Arc<Workspace>, config: &ServerConfig) -> Result<Arc<AppState>, ServerError> {
    let jwt = match &config.jwt {
        Some((source, iss, aud)) => {
            Some(citadel_serve::auth::jwt_verifier(source, config.jwks_ca.as_deref(), iss, aud).await?)
        }
        None => None,
    };
    let auth = Authenticator::new(ws.clone(), jwt, Default::default(), config.auth_cache_ttl, config.refusal_budget);
    let uploads = transfer::Uploads::open(ws.config.workspace.join("uploads"))
        .map_err(|source| ServerError::Uploads { dir: ws.config.workspace.join("uploads"), source })?;
    let per_sec = std::num::NonZeroU32::new(config.per_principal.0.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
    let burst = std::num::NonZeroU32::new(config.per_principal.1.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
    let principal_limits = governor::RateLimiter::keyed(governor::Quota::per_second(per_sec).allow_burst(burst));
    let long_jobs = Arc::new(tokio::sync::Semaphore::new(MAX_LONG_JOBS));
    Ok(Arc::new(AppState { ws, auth, uploads, principal_limits, long_jobs }))
}

/// Serves the API until `shutdown` completes; `on_listening` is told the
/// bound address first (and the development CA, if one was made).
pub async fn serve(
    ws: Arc<Workspace>,
    config: ServerConfig,
    on_listening: impl FnOnce(&Listening),
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServerError> {
    use citadel_serve::tls::{ReloadingCert, dev_self_signed, server_config};
    let (tls, dev_ca) = match &config.transport {
        Transport::PlainLoopback => {
            if !config.listen.ip().is_loopback() {
                return Err(ServerError::PlainNotLoopback(config.listen));
            }
            (None, None)
        }
        Transport::Tls { cert, key } => (Some(server_config(ReloadingCert::open(cert, key)?, None, false)?), None),
        Transport::DevSelfSigned(dir) => {
            let (cert, key) = dev_self_signed(dir)?;
            (Some(server_config(ReloadingCert::open(&cert, &key)?, None, false)?), Some(cert))
        }
    };
    let st = state(ws, &config).await?;
    // Idle uploads go even when nobody starts a new one.
    let sweeper = st.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            let s = sweeper.clone();
            let _ = tokio::task::spawn_blocking(move || s.uploads.expire()).await;
        }
    });
    let app = app(st);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind { addr: config.listen, source })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind { addr: config.listen, source })?;
    on_listening(&Listening { addr, grpc_addr: None, scheme: if tls.is_some() { "https" } else { "http" }, dev_ca });
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    // Bounded connections: past the limit a new one waits to be accepted.
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let Ok(slot) = connections.clone().acquire_owned().await else { return Ok(()) };
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of descriptors and the like: wait, then accept again.
                Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue; }
            },
        };
        let app = app.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let svc = tower::ServiceExt::map_request(app, move |mut r: Request<hyper::body::Incoming>| {
                r.extensions_mut().insert(Peer(peer));
                r
            });
            let http = || {
                let mut b = hyper::server::conn::http1::Builder::new();
                b.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(Duration::from_secs(10));
                b
            };
            let svc = hyper_util::service::TowerToHyperService::new(svc);
            match acceptor {
                None => {
                    let _ = http().serve_connection(hyper_util::rt::TokioIo::new(tcp), svc).await;
                }
                Some(acceptor) => {
                    let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await else {
                        return;
                    };
                    let _ = http().serve_connection(hyper_util::rt::TokioIo::new(tls), svc).await;
                }
            }
        });
    }
}

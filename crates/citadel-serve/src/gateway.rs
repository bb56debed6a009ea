//! The gateway: accept loop, routing table, request pipeline.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use citadel_audit::Outcome;
use citadel_control::{Caller, Deployment, DeploymentSpec, Strategy, Target, Workspace};
use citadel_infer::{Data, Model, Tensor};
use citadel_policy::{Action, Resource, ResourceKind};
use citadel_types::Timestamp;

use crate::auth::{AuthFailure, Authenticator};
use crate::metrics::{ErrorLabels, LimitLabels, Metrics, ModelLabels, RequestLabels};
use crate::tls::{ReloadingCert, fingerprint};
use crate::{ServeConfig, ServeError, Transport, openapi, v2};

mod explain;
mod grpc;
mod monitor;

type Keyed = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>;
type Body = Full<Bytes>;

/// A verified, compiled model version.
#[derive(Debug)]
struct Loaded {
    model: Model,
    name: String,
    version: i64,
    root_digest: String,
    /// Inputs named like a protected column of the training data: never captured.
    protected_inputs: Vec<String>,
    /// Input kinds, categories and ranges, and class names, from the model's metadata.
    schema: crate::named::Schema,
    /// A second copy of the model as a classifier over feature codes, for
    /// KernelSHAP explanations of models without a tree ensemble.
    kernel: Option<Arc<citadel_ml::OnnxClassifier>>,
    /// How live monitoring sketches this model; none: not sketched.
    monitor_plan: Option<monitor::MonitorPlan>,
}

/// One endpoint at one deployment revision.
#[derive(Debug)]
struct Endpoint {
    name: String,
    revision: i64,
    spec: DeploymentSpec,
    targets: Vec<(Target, Arc<Loaded>)>,
    concurrency: Arc<Semaphore>,
    /// Mirrored requests in flight; when all are taken a request is not mirrored (shadows never slow the answer).
    shadow_slots: Arc<Semaphore>,
    counter: AtomicU64,
}

/// A refusal or failure answered to the client.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    retry_after: Option<u64>,
}

fn api(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
    ApiError { status, message: message.into(), kind, retry_after: None }
}

/// What the access log and metrics learn about a request as it proceeds.
#[derive(Debug, Default, Clone)]
struct RequestFacts {
    /// The client's address (refusals are counted per address).
    peer: Option<std::net::IpAddr>,
    principal: Option<String>,
    endpoint: Option<String>,
    model: Option<String>,
    version: Option<String>,
}

/// Where a running gateway listens.
#[derive(Debug, Clone)]
pub struct Listening {
    pub addr: SocketAddr,
    /// Where the gRPC service listens, when it does.
    pub grpc_addr: Option<SocketAddr>,
    pub scheme: &'static str,
    pub dev_ca: Option<std::path::PathBuf>,
}

pub struct Gateway {
    ws: Arc<Workspace>,
    loader: Caller,
    config: ServeConfig,
    auth: Authenticator,
    routes: RwLock<Arc<HashMap<String, Arc<Endpoint>>>>,
    loaded: Mutex<HashMap<(String, i64), Arc<Loaded>>>,
    /// Revisions that failed to load, so a broken revision is reported once, not every poll.
    failed: Mutex<HashMap<String, i64>>,
    metrics: Metrics,
    principal_limits: Keyed,
    endpoint_limits: Keyed,
    /// The limits shared by every replica, when configured.
    shared_limits: Option<crate::shared_limit::SharedLimiter>,
    log: Option<Arc<LogBuffer>>,
    ready: AtomicBool,
    /// Set at SIGTERM: not ready, and every response closes its connection.
    draining: AtomicBool,
    request_ids: RequestIds,
    captures: Mutex<HashMap<String, VecDeque<Captured>>>,
    /// Live monitoring's windows; none when monitoring is off.
    monitor: Option<monitor::Monitor>,
    /// Playbook responses in force (throttles, quarantines), refreshed every poll.
    responses: RwLock<Arc<Responses>>,
}

type Direct = RateLimiter<governor::state::direct::NotKeyed, governor::state::InMemoryState, DefaultClock>;

/// What incident playbooks put in force, as this gateway applies it.
#[derive(Default)]
struct Responses {
    /// Principal name → (per second, burst, incident, its limiter).
    throttles: HashMap<String, (u32, u32, String, Arc<Direct>)>,
    /// Endpoint → (incident, reason).
    quarantines: HashMap<String, (String, String)>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("listen", &self.config.listen).finish()
    }
}

fn quota(per_sec: u32, burst: u32) -> Quota {
    Quota::per_second(NonZeroU32::new(per_sec.max(1)).unwrap_or(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN))
}

fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

impl Gateway {
    /// Binds, loads the deployments once, and serves until `shutdown` resolves.
    /// `on_listening` is told the bound address before the first request is accepted.
    pub async fn run(
        ws: Arc<Workspace>,
        loader: Caller,
        config: ServeConfig,
        on_listening: impl FnOnce(&Listening),
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), ServeError> {
        if matches!(config.transport, Transport::PlainLoopback)
            && let Some(a) = std::iter::once(&config.listen).chain(&config.grpc_listen).find(|a| !is_loopback(a))
        {
            return Err(ServeError::Config(format!(
                "plain HTTP is only served on loopback, not {a}; use TLS (--cert/--key) for other addresses"
            )));
        }
        let jwt = match &config.jwt {
            Some((path, iss, aud)) => Some(crate::auth::jwt_verifier(path, config.jwks_ca.as_deref(), iss, aud).await?),
            None => None,
        };
        let (tls, dev_ca, cert) = match &config.transport {
            Transport::PlainLoopback => (None, None, None),
            Transport::Tls { cert, key } => {
                let c = ReloadingCert::open(cert, key)?;
                (
                    Some(crate::tls::server_config(
                        c.clone(),
                        config.client_ca.as_deref(),
                        config.require_client_cert,
                    )?),
                    None,
                    Some(c),
                )
            }
            Transport::DevSelfSigned(dir) => {
                let (cert, key) = crate::tls::dev_self_signed(dir)?;
                let c = ReloadingCert::open(&cert, &key)?;
                (
                    Some(crate::tls::server_config(
                        c.clone(),
                        config.client_ca.as_deref(),
                        config.require_client_cert,
                    )?),
                    Some(cert),
                    Some(c),
                )
            }
        };
        let log = match &config.access_log {
            Some(path) => Some(spawn_log_writer(path)?),
            None => None,
        };
        let shared_limits = match &config.rate_redis {
            Some(url) => Some(crate::shared_limit::SharedLimiter::new(url).map_err(|e| {
                // The URL may hold a password: the message names the problem, not the URL.
                ServeError::Config(format!(
                    "the rate-limit Redis URL is not usable ({}) — hint: write redis://[:PASSWORD@]HOST:PORT/DB",
                    e.category()
                ))
            })?),
            None => None,
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| ServeError::Io(format!("binding {}: {e}", config.listen)))?;
        let addr = listener.local_addr().map_err(|e| ServeError::Io(e.to_string()))?;
        // Monitoring writes as the gateway's principal: without
        // `monitor.write` it is off, said once, rather than denied every second.
        let may_monitor = loader.holds(Action::MonitorWrite, &Resource::all(ResourceKind::Deployment));
        let monitoring = config.monitor && may_monitor;
        if config.monitor && !may_monitor {
            eprintln!(
                "WARNING: live monitoring is off: {} may not monitor.write (grant it the gateway role: citadel grant add NAME gateway; or pass --no-monitor)",
                loader.name()
            );
        }
        let gw = Arc::new(Gateway {
            auth: Authenticator::new(
                ws.clone(),
                jwt,
                config.client_principals.clone(),
                config.auth_cache_ttl,
                config.refusal_budget,
            ),
            principal_limits: RateLimiter::keyed(quota(
                config.rate.per_principal_per_sec,
                config.rate.per_principal_burst,
            )),
            endpoint_limits: RateLimiter::keyed(quota(
                config.rate.per_endpoint_per_sec,
                config.rate.per_endpoint_burst,
            )),
            shared_limits,
            ws,
            loader,
            routes: RwLock::new(Arc::new(HashMap::new())),
            loaded: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
            metrics: Metrics::new(),
            log,
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            request_ids: RequestIds::new(),
            captures: Mutex::new(HashMap::new()),
            monitor: monitoring.then(|| monitor::Monitor::new(config.auth_window_secs, config.monitor_part_secs)),
            responses: RwLock::new(Arc::new(Responses::default())),
            config,
        });
        gw.reconcile().await;
        gw.refresh_responses().await;
        gw.ready.store(true, Ordering::SeqCst);
        {
            let gw = gw.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(gw.config.poll_interval);
                loop {
                    tick.tick().await;
                    gw.reconcile().await;
                    gw.refresh_responses().await;
                    if let Some(c) = &cert
                        && let Err(e) = c.refresh()
                    {
                        gw.emit(json!({"ts": Timestamp::now().to_string(), "event": "tls.reload_failed", "error": e.to_string()}));
                    }
                    gw.principal_limits.retain_recent();
                    gw.endpoint_limits.retain_recent();
                }
            });
        }
        if gw.monitor.is_some() {
            let gw = gw.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    gw.monitor_flush(false).await;
                }
            });
        }
        let grpc = match gw.config.grpc_listen {
            Some(a) => {
                let l = TcpListener::bind(a).await.map_err(|e| ServeError::Io(format!("binding {a} (gRPC): {e}")))?;
                Some(l)
            }
            None => None,
        };
        let grpc_addr = grpc.as_ref().and_then(|l| l.local_addr().ok());
        on_listening(&Listening { addr, scheme: if tls.is_some() { "https" } else { "http" }, dev_ca, grpc_addr });
        // gRPC speaks HTTP/2 only; the REST listener keeps HTTP/1.1 (ALPN says so).
        let grpc_tls = tls.as_ref().map(|c| {
            let mut c = (**c).clone();
            c.alpn_protocols = vec![b"h2".to_vec()];
            Arc::new(c)
        });
        let budget = connection_budget(gw.config.limits.max_connections);
        let connections = Arc::new(Semaphore::new(budget));
        let mut budgets = vec![(connections.clone(), budget)];
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut loops = vec![tokio::spawn(gw.clone().accept_loop(
            listener,
            tls.map(tokio_rustls::TlsAcceptor::from),
            connections.clone(),
            stop_rx.clone(),
            false,
        ))];
        if let Some(l) = grpc {
            // Connections of its own: a gRPC flood cannot take the REST listener's.
            let grpc_budget = (budget / 4).max(64);
            let grpc_connections = Arc::new(Semaphore::new(grpc_budget));
            budgets.push((grpc_connections.clone(), grpc_budget));
            loops.push(tokio::spawn(gw.clone().accept_loop(
                l,
                grpc_tls.map(tokio_rustls::TlsAcceptor::from),
                grpc_connections,
                stop_rx,
                true,
            )));
        }
        shutdown.await;
        gw.drain(stop_tx, loops, budgets).await;
        Ok(())
    }

    /// Graceful shutdown: not ready at once (a load balancer stops sending),
    /// still serving for `shutdown_delay` with every response closing its
    /// connection; then no new connection is accepted, each open one
    /// finishes the request it is serving and closes (HTTP/2: GOAWAY), and
    /// the gateway waits for them up to `shutdown_timeout`. The access log
    /// is written out before it returns.
    async fn drain(
        &self,
        stop: tokio::sync::watch::Sender<bool>,
        loops: Vec<tokio::task::JoinHandle<()>>,
        budgets: Vec<(Arc<Semaphore>, usize)>,
    ) {
        let started = Instant::now();
        self.ready.store(false, Ordering::SeqCst);
        self.draining.store(true, Ordering::SeqCst);
        self.emit(json!({"ts": Timestamp::now().to_string(), "event": "shutdown.started", "delay_ms": self.config.shutdown_delay.as_millis() as u64}));
        tokio::time::sleep(self.config.shutdown_delay).await;
        let _ = stop.send(true);
        for l in loops {
            let _ = l.await;
        }
        // Every connection holds a permit of its listener's budget until it closes.
        let all_closed = async {
            for (sem, n) in &budgets {
                let _ = sem.acquire_many(u32::try_from(*n).unwrap_or(u32::MAX)).await;
            }
        };
        let finished = tokio::time::timeout(self.config.shutdown_timeout, all_closed).await.is_ok();
        let open: usize = budgets.iter().map(|(sem, n)| n.saturating_sub(sem.available_permits())).sum();
        self.emit(json!({"ts": Timestamp::now().to_string(), "event": "shutdown.finished", "drained": finished,
                         "connections_dropped": if finished { 0 } else { open }, "seconds": started.elapsed().as_secs_f64()}));
        // The window in progress is written too: what was served is not lost.
        self.monitor_flush(true).await;
        if let Some(log) = &self.log {
            log.close().await;
        }
    }

    /// Writes the closed monitoring windows (every window with `all`) to
    /// the metadata database, then judges the windows whose grace period is
    /// over (every replica may; each window is judged once). A failure is
    /// logged and counted, and serving goes on.
    async fn monitor_flush(&self, all: bool) {
        let Some(m) = &self.monitor else { return };
        let now = Timestamp::now();
        self.metrics.monitor_dropped.inc_by(m.take_dropped());
        let mut failed = Vec::new();
        for w in m.take_closed(now, all) {
            if let Err(e) = self.ws.monitor_write_window(&self.loader, &w).await {
                self.metrics.monitor_failures.inc();
                self.emit(json!({"ts": now.to_string(), "event": "monitor.write_failed", "endpoint": w.endpoint,
                                 "model": w.model, "version": w.version, "error": e.to_string()}));
                failed.push(w);
            }
        }
        loop {
            let (batch, dropped) = m.take_predictions(5_000);
            if dropped > 0 {
                self.emit(json!({"ts": now.to_string(), "event": "monitor.predictions_dropped", "count": dropped}));
            }
            if batch.is_empty() {
                break;
            }
            if let Err(e) = self.ws.monitor_write_predictions(&self.loader, &batch).await {
                self.metrics.monitor_failures.inc();
                self.emit(
                    json!({"ts": now.to_string(), "event": "monitor.predictions_failed", "error": e.to_string()}),
                );
                m.requeue_predictions(batch);
                break;
            }
        }
        for a in m.take_auth(now, all) {
            if a.window.is_empty() {
                continue;
            }
            if let Err(e) =
                self.ws.monitor_write_auth_window(&self.loader, a.start, a.end, m.replica(), &a.window).await
            {
                self.metrics.monitor_failures.inc();
                self.emit(json!({"ts": now.to_string(), "event": "monitor.auth_write_failed", "error": e.to_string()}));
            }
        }
        match self.ws.monitor_evaluate_auth(&self.loader, now).await {
            Ok(verdicts) => {
                for v in verdicts.iter().filter(|v| !v.incidents.is_empty()) {
                    self.emit(json!({"ts": now.to_string(), "event": "monitor.incident", "endpoint": "*",
                                     "incidents": v.incidents,
                                     "detections": v.detections.iter().map(|d| d.kind.as_str()).collect::<Vec<_>>()}));
                }
            }
            Err(e) => {
                self.metrics.monitor_failures.inc();
                self.emit(json!({"ts": now.to_string(), "event": "monitor.evaluate_failed", "error": e.to_string()}));
            }
        }
        let dropped = m.retry_later(failed);
        if dropped > 0 {
            self.emit(json!({"ts": now.to_string(), "event": "monitor.windows_dropped", "count": dropped}));
        }
        match self.ws.monitor_evaluate(&self.loader, now).await {
            Ok(verdicts) => {
                for v in verdicts.iter().filter(|v| !v.incidents.is_empty()) {
                    self.emit(json!({"ts": now.to_string(), "event": "monitor.incident", "endpoint": v.endpoint,
                                     "model": v.model, "version": v.version, "incidents": v.incidents,
                                     "detections": v.detections.iter().map(|d| d.kind.as_str()).collect::<Vec<_>>()}));
                }
            }
            Err(e) => {
                self.metrics.monitor_failures.inc();
                self.emit(json!({"ts": now.to_string(), "event": "monitor.evaluate_failed", "error": e.to_string()}));
            }
        }
        if let Ok(open) = self.ws.incident_list(&self.loader, false).await {
            let mut counts: HashMap<(String, String), i64> = HashMap::new();
            for i in open {
                *counts.entry((i.kind, i.severity.as_str().to_string())).or_default() += 1;
            }
            self.metrics.incidents_open.clear();
            for ((kind, severity), n) in counts {
                self.metrics.incidents_open.get_or_create(&crate::metrics::IncidentLabels { kind, severity }).set(n);
            }
        }
    }

    /// Accepts connections until told to stop; each is served on its own task.
    async fn accept_loop(
        self: Arc<Self>,
        listener: TcpListener,
        acceptor: Option<tokio_rustls::TlsAcceptor>,
        connections: Arc<Semaphore>,
        mut stop: tokio::sync::watch::Receiver<bool>,
        grpc: bool,
    ) {
        loop {
            let permit = tokio::select! {
                _ = stop.changed() => break,
                p = connections.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            let (stream, peer) = tokio::select! {
                _ = stop.changed() => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(_) => {
                        // Out of descriptors or similar: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let gw = self.clone();
            let acceptor = acceptor.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                gw.metrics.connections.inc();
                match acceptor {
                    None if grpc => gw.serve_grpc_connection(stream, peer, None, stop).await,
                    None => gw.serve_connection(stream, peer, None, stop).await,
                    Some(acc) => {
                        let handshake = tokio::time::timeout(gw.config.limits.header_timeout, acc.accept(stream)).await;
                        if let Ok(Ok(tls)) = handshake {
                            let fp =
                                tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| fingerprint(c));
                            if grpc {
                                gw.serve_grpc_connection(tls, peer, fp, stop).await;
                            } else {
                                gw.serve_connection(tls, peer, fp, stop).await;
                            }
                        }
                    }
                }
                gw.metrics.connections.dec();
                drop(permit);
            });
        }
    }

    /// Serves one HTTP/1.1 connection; at `stop` it finishes the request in
    /// progress and closes.
    async fn serve_connection<S>(
        self: &Arc<Self>,
        stream: S,
        peer: SocketAddr,
        client_fp: Option<String>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let gw = self.clone();
        let client_fp = client_fp.map(Arc::new);
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let gw = gw.clone();
            let fp = client_fp.clone();
            async move { Ok::<_, Infallible>(gw.handle(req, peer, fp.as_deref().map(String::as_str)).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.config.limits.header_timeout)
            .max_buf_size(64 * 1024)
            .serve_connection(TokioIo::new(stream), svc);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = stop.wait_for(|stopped| *stopped) => conn.as_mut().graceful_shutdown(),
        }
        let _ = conn.await;
    }

    fn emit(&self, line: impl serde::Serialize) {
        if let Some(log) = &self.log {
            log.push(&line);
        }
    }

    /// The gateway's own operational records (a revision it refused),
    /// under its own identity.
    async fn note(&self, name: &str, resource: &Resource, outcome: Outcome, details: Value) {
        if let Err(e) = self.ws.note(&self.loader, name, resource, outcome, details).await {
            self.emit(json!({"ts": Timestamp::now().to_string(), "event": "audit.failed", "error": e.to_string()}));
        }
    }

    /// Brings the routing table to the live deployments. A revision whose
    /// models do not all load is refused (audited once) and the endpoint
    /// keeps serving its previous revision.
    /// Reads the throttles and quarantines in force; a throttle that did
    /// not change keeps its limiter (and so its state).
    async fn refresh_responses(&self) {
        let (throttles, quarantines) = match (self.ws.throttles_active().await, self.ws.quarantines_active().await) {
            (Ok(t), Ok(q)) => (t, q),
            (Err(e), _) | (_, Err(e)) => {
                self.emit(json!({"ts": Timestamp::now().to_string(), "event": "responses.poll_failed", "error": e.to_string()}));
                return;
            }
        };
        let current = self.responses.read().map(|r| r.clone()).unwrap_or_default();
        let mut next = Responses::default();
        for t in throttles {
            let kept = current
                .throttles
                .get(&t.principal)
                .filter(|c| c.0 == t.per_sec && c.1 == t.burst && c.2 == t.incident)
                .cloned();
            let entry = kept.unwrap_or_else(|| {
                (t.per_sec, t.burst, t.incident.clone(), Arc::new(RateLimiter::direct(quota(t.per_sec, t.burst))))
            });
            next.throttles.insert(t.principal, entry);
        }
        for q in quarantines {
            next.quarantines.insert(q.endpoint, (q.incident, q.reason));
        }
        if let Ok(mut r) = self.responses.write() {
            *r = Arc::new(next);
        }
    }

    /// A quarantined endpoint answers 503; a throttled principal is held to
    /// its throttle (shared through Redis when the limits are).
    async fn check_responses(&self, caller: &Caller, endpoint: &str) -> Result<(), ApiError> {
        let r = self.responses.read().map(|r| r.clone()).unwrap_or_default();
        if let Some((incident, _)) = r.quarantines.get(endpoint) {
            let mut e = api(
                StatusCode::SERVICE_UNAVAILABLE,
                "quarantined",
                format!(
                    "endpoint {endpoint} is quarantined by incident {incident}; it serves again when a person lifts it (citadel incident undo {incident})"
                ),
            );
            e.retry_after = Some(60);
            return Err(e);
        }
        let principal = caller.name();
        if let Some((per_sec, burst, incident, limiter)) = r.throttles.get(principal) {
            let local = || limiter.check().err().map(|n| n.wait_time_from(limiter.clock().now()));
            let wait = match &self.shared_limits {
                Some(shared) => match shared.check(&format!("throttle:{principal}"), *per_sec, *burst).await {
                    crate::shared_limit::Verdict::Allow => None,
                    crate::shared_limit::Verdict::Deny(wait) => Some(wait),
                    // Redis does not answer: a throttle never lapses; this
                    // replica holds it, or refuses, as the limits are configured.
                    crate::shared_limit::Verdict::Unavailable => {
                        if self.config.rate_fallback == crate::shared_limit::Fallback::Deny {
                            Some(Duration::from_secs(1))
                        } else {
                            local()
                        }
                    }
                },
                None => local(),
            };
            if let Some(wait) = wait {
                let mut e = self.limited("throttle", endpoint, principal, wait);
                e.message = format!(
                    "{principal} is throttled to {per_sec} request(s) a second by incident {incident}; retry later (a person lifts it with `citadel incident undo {incident}`)"
                );
                return Err(e);
            }
        }
        Ok(())
    }

    async fn reconcile(&self) {
        let live = match self.ws.deployments_live().await {
            Ok(l) => l,
            Err(e) => {
                self.emit(json!({"ts": Timestamp::now().to_string(), "event": "deployments.poll_failed", "error": e.to_string()}));
                return;
            }
        };
        let current = self.routes.read().map(|r| r.clone()).unwrap_or_default();
        let unchanged = live.len() == current.len()
            && live.iter().all(|d| current.get(&d.name).is_some_and(|e| e.revision == d.revision));
        if unchanged {
            return;
        }
        let mut next: HashMap<String, Arc<Endpoint>> = HashMap::new();
        for d in live {
            if let Some(e) = current.get(&d.name).filter(|e| e.revision == d.revision) {
                next.insert(d.name.clone(), e.clone());
                continue;
            }
            let already_failed = self.failed.lock().map(|f| f.get(&d.name) == Some(&d.revision)).unwrap_or(false);
            if already_failed {
                if let Some(e) = current.get(&d.name) {
                    next.insert(d.name.clone(), e.clone());
                }
                continue;
            }
            match self.load_endpoint(&d).await {
                Ok(e) => {
                    self.emit(json!({"ts": Timestamp::now().to_string(), "event": "deployment.loaded", "endpoint": d.name, "revision": d.revision}));
                    next.insert(d.name.clone(), Arc::new(e));
                }
                Err((target, reason)) => {
                    if let Ok(mut f) = self.failed.lock() {
                        f.insert(d.name.clone(), d.revision);
                    }
                    self.metrics
                        .model_load_failures
                        .get_or_create(&ModelLabels {
                            endpoint: d.name.clone(),
                            model: target.model.clone(),
                            version: target.version.to_string(),
                        })
                        .inc();
                    self.note(
                        "deployment.load",
                        &Resource::deployment(&d.name),
                        Outcome::Failure,
                        json!({"revision": d.revision, "model": target.model, "version": target.version, "reason": reason,
                               "still_serving": current.get(&d.name).map(|e| e.revision)}),
                    )
                    .await;
                    self.emit(json!({"ts": Timestamp::now().to_string(), "event": "deployment.load_refused", "endpoint": d.name,
                                     "revision": d.revision, "model": target.model, "version": target.version, "reason": reason}));
                    if let Some(e) = current.get(&d.name) {
                        next.insert(d.name.clone(), e.clone());
                    }
                }
            }
        }
        // Compiled models no live endpoint uses any more are dropped (in-flight requests hold their own Arc).
        let used: std::collections::HashSet<(String, i64)> =
            next.values().flat_map(|e| e.targets.iter().map(|(t, _)| (t.model.clone(), t.version))).collect();
        if let Ok(mut loaded) = self.loaded.lock() {
            loaded.retain(|k, _| used.contains(k));
        }
        if let Ok(mut r) = self.routes.write() {
            *r = Arc::new(next);
        }
    }

    async fn load_endpoint(&self, d: &Deployment) -> Result<Endpoint, (Target, String)> {
        let mut targets = Vec::new();
        for t in &d.spec.targets {
            let key = (t.model.clone(), t.version);
            let cached = self.loaded.lock().ok().and_then(|l| l.get(&key).cloned());
            let loaded = match cached {
                Some(l) => l,
                None => {
                    let l = Arc::new(self.load_model(t).await.map_err(|e| (t.clone(), e))?);
                    if let Ok(mut m) = self.loaded.lock() {
                        m.insert(key, l.clone());
                    }
                    l
                }
            };
            targets.push((t.clone(), loaded));
        }
        Ok(Endpoint {
            name: d.name.clone(),
            revision: d.revision,
            spec: d.spec.clone(),
            targets,
            concurrency: Arc::new(Semaphore::new(self.config.limits.max_concurrency_per_model)),
            shadow_slots: Arc::new(Semaphore::new(self.config.limits.max_concurrency_per_model)),
            counter: AtomicU64::new(0),
        })
    }

    async fn load_model(&self, t: &Target) -> Result<Loaded, String> {
        // Verified bytes: fetched from the server when this gateway holds no
        // key (`--control`), else loaded here (restore, digest, signature).
        let (bytes, root_digest) = match &self.config.control {
            Some(control) => {
                let f = control.fetch_model(&t.model, t.version).await?;
                (f.bytes, f.root_digest)
            }
            None => {
                let verified = self
                    .ws
                    .model_load(&self.loader, &t.model, &t.version.to_string())
                    .await
                    .map_err(|e| e.to_string())?;
                let root_digest = verified.root_digest.clone();
                let bytes = tokio::task::spawn_blocking(move || {
                    let file = crate::serving::servable_onnx(&verified.path)?;
                    std::fs::read(&file).map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| e.to_string())??;
                (bytes, root_digest)
            }
        };
        let (model, kernel) = tokio::task::spawn_blocking(move || -> Result<(Model, _), String> {
            let model = Model::load(&bytes).map_err(|e| e.to_string())?;
            // Explained by KernelSHAP over feature codes: named-input exports
            // with a background sample and no tree ensemble (TreeSHAP's).
            let kernel = (!model.has_tree_ensemble()
                && model.meta("citadel.background").is_some()
                && model.meta("citadel.inputs").is_some())
            .then(|| citadel_ml::OnnxClassifier::load(&bytes).ok().map(Arc::new))
            .flatten();
            Ok((model, kernel))
        })
        .await
        .map_err(|e| e.to_string())??;
        let protected = self.ws.model_protected_columns(&t.model, t.version).await.map_err(|e| e.to_string())?;
        let protected_inputs: Vec<String> =
            model.inputs.iter().filter(|i| protected.contains(&i.name)).map(|i| i.name.clone()).collect();
        let schema = crate::named::Schema::of(&model);
        let monitor_plan = monitor::MonitorPlan::of(&model, &schema, &protected_inputs);
        Ok(Loaded {
            model,
            name: t.model.clone(),
            version: t.version,
            root_digest,
            protected_inputs,
            schema,
            kernel,
            monitor_plan,
        })
    }

    fn endpoint(&self, name: &str) -> Option<Arc<Endpoint>> {
        self.routes.read().ok().and_then(|r| r.get(name).cloned())
    }

    /// The endpoint `name`, or the 404 that says none is served.
    fn served(&self, name: &str) -> Result<Arc<Endpoint>, ApiError> {
        self.endpoint(name).ok_or_else(|| {
            api(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no deployment named {name} is served; hint: citadel deploy ls"),
            )
        })
    }

    /// Refuses a body whose declared length is over the limit, before any of it is read.
    fn refuse_oversized(&self, headers: &hyper::HeaderMap) -> Result<(), ApiError> {
        let max = self.config.limits.max_body_bytes;
        match headers
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            Some(len) if len > max as u64 => {
                Err(api(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("the body is larger than {max} bytes")))
            }
            _ => Ok(()),
        }
    }

    /// Reads a body, stopping at the body limit.
    async fn collect_body(&self, body: Incoming) -> Result<Bytes, ApiError> {
        let max = self.config.limits.max_body_bytes;
        let body = Limited::new(body, max).collect().await.map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                api(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("the body is larger than {max} bytes"))
            } else {
                api(StatusCode::BAD_REQUEST, "bad_request", "the body could not be read")
            }
        })?;
        Ok(body.to_bytes())
    }

    async fn handle(
        self: &Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        client_fp: Option<&str>,
    ) -> Response<Body> {
        let started = Instant::now();
        let request_id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| {
                !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
            .map(str::to_string)
            .unwrap_or_else(|| self.request_ids.next());
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let mut facts = RequestFacts { peer: Some(peer.ip()), ..RequestFacts::default() };
        let bytes_in = req
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let result = tokio::time::timeout(
            self.config.limits.request_timeout,
            self.route(req, client_fp, &request_id, &mut facts),
        )
        .await;
        let mut response = match result {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => self.error_response(e, &facts),
            Err(_) => self.error_response(
                api(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    "the request took longer than the gateway's request timeout",
                ),
                &facts,
            ),
        };
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert("x-request-id", v);
        }
        if self.draining.load(Ordering::Relaxed) {
            // Shutting down: the client opens its next connection elsewhere.
            response.headers_mut().insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
        }
        let status = response.status().as_u16();
        if let Some(m) = &self.monitor {
            // The credential detectors: who authenticated from where, and failures.
            let address = peer.ip().to_string();
            match (&facts.principal, status) {
                (Some(p), _) => m.observe_auth(Some(p), &address),
                (None, 401) => m.observe_auth(None, &address),
                _ => {}
            }
        }
        self.record(&facts, status, started.elapsed(), peer, method.as_str(), &path, &request_id, bytes_in);
        response
    }

    /// Counts a finished request in the metrics and writes its access-log line.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        facts: &RequestFacts,
        status: u16,
        elapsed: Duration,
        peer: SocketAddr,
        method: &str,
        path: &str,
        request_id: &str,
        bytes_in: Option<u64>,
    ) {
        if let (Some(endpoint), Some(model), Some(version)) = (&facts.endpoint, &facts.model, &facts.version) {
            self.metrics
                .requests
                .get_or_create(&RequestLabels {
                    endpoint: endpoint.clone(),
                    model: model.clone(),
                    version: version.clone(),
                    principal: facts.principal.clone().unwrap_or_else(|| "anonymous".into()),
                    code: status.to_string(),
                })
                .inc();
            if status == 200 {
                self.metrics
                    .latency
                    .get_or_create(&ModelLabels {
                        endpoint: endpoint.clone(),
                        model: model.clone(),
                        version: version.clone(),
                    })
                    .observe(elapsed.as_secs_f64());
            }
        }
        if self.log.is_some() {
            self.emit(AccessLine {
                ts: Timestamp::now(),
                request_id,
                remote: peer,
                method,
                path,
                status,
                latency_ms: (elapsed.as_secs_f64() * 1e6).round() / 1e3,
                principal: facts.principal.as_deref(),
                endpoint: facts.endpoint.as_deref(),
                model: facts.model.as_deref(),
                version: facts.version.as_deref(),
                bytes_in,
            });
        }
    }

    fn error_response(&self, e: ApiError, facts: &RequestFacts) -> Response<Body> {
        self.metrics
            .errors
            .get_or_create(&ErrorLabels {
                endpoint: facts.endpoint.clone().unwrap_or_default(),
                kind: e.kind.to_string(),
            })
            .inc();
        let mut r = json_response(e.status, &json!({"error": e.message}));
        if let Some(s) = e.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert(hyper::header::RETRY_AFTER, v);
        }
        if e.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(hyper::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        // RFC 9110 §15.5.6: a 405 lists the methods the resource takes (the
        // gateway's one 405 is the feedback route, which takes POST only).
        if e.status == StatusCode::METHOD_NOT_ALLOWED {
            r.headers_mut().insert(hyper::header::ALLOW, HeaderValue::from_static("POST"));
        }
        r
    }

    async fn authenticate(
        &self,
        headers: &hyper::HeaderMap,
        client_fp: Option<&str>,
        facts: &mut RequestFacts,
    ) -> Result<Arc<Caller>, ApiError> {
        let authz = match headers.get(hyper::header::AUTHORIZATION) {
            Some(v) => Some(
                v.to_str()
                    .map_err(|_| api(StatusCode::UNAUTHORIZED, "unauthenticated", "malformed Authorization header"))?,
            ),
            None => None,
        };
        let address = facts.peer.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let caller = self.auth.authenticate(authz, client_fp, address).await.map_err(|f| match f {
            AuthFailure::Refused(why) => api(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                format!("{}; hint: send Authorization: Bearer <token>", AuthFailure::public_reason(why)),
            ),
            AuthFailure::TooMany { retry_after } => ApiError {
                retry_after: Some(retry_after.as_secs().max(1)),
                ..api(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many refused credentials from this address; retry later with a valid one",
                )
            },
            AuthFailure::Unavailable => {
                api(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "authentication is unavailable; retry")
            }
        })?;
        facts.principal = Some(caller.name().to_string());
        Ok(caller)
    }

    /// Decides an action whose success is recorded outside the audit chain
    /// (inference, the feedback pre-check, metrics) through the control
    /// plane's one path: a denial is audited there and answered 403 here.
    async fn authorize(
        &self,
        caller: &Caller,
        action: Action,
        resource: Resource,
        request_id: &str,
    ) -> Result<(), ApiError> {
        self.ws.check(caller, action, resource, request_id).await.map_err(|e| denied(caller, e))
    }

    async fn route(
        self: &Arc<Self>,
        req: Request<Incoming>,
        client_fp: Option<&str>,
        request_id: &str,
        facts: &mut RequestFacts,
    ) -> Result<Response<Body>, ApiError> {
        let path = req.uri().path().to_string();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let method = req.method().clone();
        match (method, segments.as_slice()) {
            (Method::GET, ["v2", "health", "live"]) => Ok(json_response(StatusCode::OK, &json!({"live": true}))),
            (Method::GET, ["v2", "health", "ready"]) => {
                let ready = self.ready.load(Ordering::SeqCst);
                let mut body = json!({"ready": ready});
                if self.draining.load(Ordering::SeqCst) {
                    body["reason"] = json!("shutting down");
                }
                Ok(json_response(if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, &body))
            }
            (Method::GET, ["v2"]) => Ok(json_response(
                StatusCode::OK,
                &json!({"name": "citadel", "version": env!("CARGO_PKG_VERSION"), "extensions": ["binary_tensor_data"]}),
            )),
            (Method::GET, ["openapi.json"]) => Ok(json_response(StatusCode::OK, &openapi::document())),
            (Method::GET, ["metrics"]) => {
                let caller = self.authenticate(req.headers(), client_fp, facts).await?;
                self.authorize(
                    &caller,
                    Action::ConfigRead,
                    Resource::new(ResourceKind::Gateway, "metrics"),
                    request_id,
                )
                .await?;
                let mut r = Response::new(Full::new(Bytes::from(self.metrics.encode())));
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
                Ok(r)
            }
            (Method::GET, ["v2", "admin", "capture", name]) => {
                let caller = self.authenticate(req.headers(), client_fp, facts).await?;
                // Captured inputs are data of their own (`capture.read`, not `audit.read`).
                let permit = self
                    .ws
                    .authorize_as(&caller, Action::CaptureRead, Resource::capture(name), request_id)
                    .await
                    .map_err(|e| denied(&caller, e))?;
                let rows: Vec<Value> = self
                    .captures
                    .lock()
                    .ok()
                    .and_then(|c| c.get(*name).map(|q| q.iter().map(Captured::to_json).collect()))
                    .unwrap_or_default();
                // Recorded before a row leaves: a read that cannot be recorded is not given.
                self.ws.record(permit, json!({"records": rows.len()})).await.map_err(|_| {
                    api(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "the audit log could not record the read; retry",
                    )
                })?;
                Ok(json_response(StatusCode::OK, &json!({"endpoint": name, "records": rows})))
            }
            (m, ["v2", "models", _, "feedback"]) if m != Method::POST => Err(api(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "feedback is POSTed: {\"feedback\": [{\"request_id\", \"row\", \"label\", \"groups\"}]}",
            )),
            (Method::POST, ["v2", "models", name, "feedback"]) => {
                facts.endpoint = Some(name.to_string());
                let caller = self.authenticate(req.headers(), client_fp, facts).await?;
                self.check_rate(caller.id(), &self.principal_limits, "principal", name, caller.name()).await?;
                // Authorized before the body or the endpoint is looked at, like
                // inference: a caller learns nothing of endpoints it may not use.
                // (The control plane checks again when it stores the labels.)
                self.authorize(&caller, Action::ModelFeedback, Resource::model(name), request_id).await?;
                self.feedback(req, &caller, name).await
            }
            (m, ["v2", "models", name, rest @ ..]) => {
                let (version, tail) = match rest {
                    ["versions", v, tail @ ..] => (
                        Some(v.parse::<i64>().map_err(|_| {
                            api(StatusCode::BAD_REQUEST, "bad_request", "the model version must be a number")
                        })?),
                        tail,
                    ),
                    tail => (None, tail),
                };
                let name = name.to_string();
                facts.endpoint = Some(name.clone());
                let caller = self.authenticate(req.headers(), client_fp, facts).await?;
                // An explanation adds up to the prediction: it needs model.infer
                // as well. Its permit is spent on the record written before
                // the attributions leave.
                let explain = match tail {
                    ["explain"] => Some(
                        self.ws
                            .authorize_as(&caller, Action::Explain, Resource::model(&name), request_id)
                            .await
                            .map_err(|e| denied(&caller, e))?,
                    ),
                    _ => None,
                };
                self.authorize(&caller, Action::Infer, Resource::model(&name), request_id).await?;
                let endpoint = self.served(&name)?;
                if let Some(v) = version
                    && !endpoint.targets.iter().any(|(t, _)| t.version == v)
                {
                    return Err(api(StatusCode::NOT_FOUND, "not_found", format!("{name} does not serve version {v}")));
                }
                match (m, tail) {
                    (Method::GET, []) => Ok(json_response(StatusCode::OK, &model_metadata(&endpoint, version))),
                    (Method::GET, ["ready"]) => {
                        Ok(json_response(StatusCode::OK, &json!({"name": name, "ready": true})))
                    }
                    (Method::POST, ["infer"]) => self.infer(req, &caller, endpoint, version, request_id, facts).await,
                    (Method::POST, ["explain"]) => match explain {
                        Some(permit) => self.explain(req, &caller, permit, endpoint, version, facts).await,
                        None => Err(api(StatusCode::NOT_FOUND, "not_found", format!("no route for {path}"))),
                    },
                    _ => Err(api(StatusCode::NOT_FOUND, "not_found", format!("no route for {path}"))),
                }
            }
            _ => Err(api(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route for {path}; the API is described at /openapi.json"),
            )),
        }
    }

    /// Ground-truth labels for served predictions. The control plane
    /// authorizes (`model.feedback`) and audits; the body is checked first
    /// (labels must be classes the endpoint's models predict).
    async fn feedback(&self, req: Request<Incoming>, caller: &Caller, name: &str) -> Result<Response<Body>, ApiError> {
        self.refuse_oversized(req.headers())?;
        let body = self.collect_body(req.into_body()).await?;
        // Labels only for an endpoint this gateway serves, with feedback on.
        let endpoint = self.served(name)?;
        if !endpoint.spec.monitoring.unwrap_or_default().feedback.enabled {
            return Err(api(
                StatusCode::CONFLICT,
                "feedback_off",
                format!(
                    "{name} does not log its predictions, so labels cannot be joined; hint: set [feedback] enabled = true in its monitoring policy (citadel deploy set … --monitoring FILE)"
                ),
            ));
        }
        let classes: Option<Vec<String>> = {
            let mut all: Vec<String> =
                endpoint.targets.iter().filter_map(|(_, l)| l.schema.classes.clone()).flatten().collect();
            all.sort();
            all.dedup();
            (!all.is_empty()).then_some(all)
        };
        let items = crate::feedback::parse(&body, classes.as_deref())
            .map_err(|e| api(StatusCode::BAD_REQUEST, "bad_request", e.0))?;
        match self.ws.monitor_feedback(caller, name, &items).await {
            Ok(r) => Ok(json_response(StatusCode::OK, &json!({"accepted": r.accepted, "duplicates": r.duplicates}))),
            Err(citadel_control::ControlError::Denied { .. }) => {
                Err(api(StatusCode::FORBIDDEN, "forbidden", format!("this principal may not post feedback for {name}")))
            }
            Err(citadel_control::ControlError::Types(_)) => {
                Err(api(StatusCode::BAD_REQUEST, "bad_request", format!("{name:?} is not an endpoint name")))
            }
            Err(e) => {
                self.emit(json!({"ts": Timestamp::now().to_string(), "event": "feedback.failed", "endpoint": name, "error": e.to_string()}));
                Err(api(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the feedback could not be stored; retry"))
            }
        }
    }

    /// One request against `key`'s quota in `scope` (`principal` or
    /// `endpoint`): the replicas' shared limiter when configured (its
    /// fallback when Redis does not answer), else this gateway's own.
    async fn check_rate(
        &self,
        key: &str,
        limiter: &Keyed,
        scope: &'static str,
        endpoint: &str,
        principal: &str,
    ) -> Result<(), ApiError> {
        use crate::shared_limit::{Fallback, Verdict};
        if let Some(shared) = &self.shared_limits {
            let r = &self.config.rate;
            let (per_sec, burst) = if scope == "principal" {
                (r.per_principal_per_sec, r.per_principal_burst)
            } else {
                (r.per_endpoint_per_sec, r.per_endpoint_burst)
            };
            let verdict = shared.check(&format!("{scope}:{key}"), per_sec, burst).await;
            let reachable = verdict != Verdict::Unavailable;
            if shared.note(reachable) {
                self.emit(json!({"ts": Timestamp::now().to_string(), "event": if reachable { "rate_limiter.shared_available" } else { "rate_limiter.shared_unavailable" },
                                 "fallback": format!("{:?}", self.config.rate_fallback).to_lowercase()}));
            }
            match verdict {
                Verdict::Allow => return Ok(()),
                Verdict::Deny(wait) => return Err(self.limited(scope, endpoint, principal, wait)),
                Verdict::Unavailable if self.config.rate_fallback == Fallback::Deny => {
                    let mut e = api(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "the shared rate limiter is unavailable, so requests are refused; retry later",
                    );
                    e.retry_after = Some(1);
                    return Err(e);
                }
                Verdict::Unavailable => {}
            }
        }
        match limiter.check_key(&key.to_string()) {
            Ok(()) => Ok(()),
            // The limiter's own clock: building a clock calibrates it (CPUID), which a
            // flood of refused requests must not pay for on every refusal.
            Err(not_until) => {
                Err(self.limited(scope, endpoint, principal, not_until.wait_time_from(limiter.clock().now())))
            }
        }
    }

    /// A refusal by a rate limit, counted; allowed again after `wait`.
    fn limited(&self, scope: &'static str, endpoint: &str, principal: &str, wait: Duration) -> ApiError {
        self.metrics
            .rate_limited
            .get_or_create(&LimitLabels {
                endpoint: endpoint.to_string(),
                principal: principal.to_string(),
                scope: scope.to_string(),
            })
            .inc();
        let mut e =
            api(StatusCode::TOO_MANY_REQUESTS, "rate_limited", format!("rate limit per {scope} exceeded; retry later"));
        e.retry_after = Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0));
        e
    }

    /// Picks the target that answers, and the shadow (if any) that is mirrored.
    fn choose(
        &self,
        endpoint: &Endpoint,
        caller: &Caller,
        req_headers: &hyper::HeaderMap,
        pinned: Option<i64>,
    ) -> (usize, Option<usize>) {
        if let Some(v) = pinned {
            return (endpoint.targets.iter().position(|(t, _)| t.version == v).unwrap_or(0), None);
        }
        let n = endpoint.counter.fetch_add(1, Ordering::Relaxed);
        let spec = &endpoint.spec;
        match spec.strategy {
            Strategy::Single => (0, None),
            Strategy::Canary => {
                let total: u64 = endpoint.targets.iter().map(|(t, _)| u64::from(t.weight)).sum::<u64>().max(1);
                let mut x = splitmix(n) % total;
                for (i, (t, _)) in endpoint.targets.iter().enumerate() {
                    if x < u64::from(t.weight) {
                        return (i, None);
                    }
                    x -= u64::from(t.weight);
                }
                (0, None)
            }
            Strategy::BlueGreen => {
                (endpoint.targets.iter().position(|(t, _)| Some(&t.label) == spec.active.as_ref()).unwrap_or(0), None)
            }
            Strategy::Ab => {
                let key = spec
                    .sticky_header
                    .as_ref()
                    .and_then(|h| req_headers.get(h.as_str()))
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(caller.id());
                let mut h = std::collections::hash_map::DefaultHasher::new();
                (endpoint.name.as_str(), key).hash(&mut h);
                ((h.finish() % endpoint.targets.len() as u64) as usize, None)
            }
            Strategy::Shadow => {
                let mirror = (splitmix(n) as f64 / u64::MAX as f64) < spec.shadow_fraction;
                (0, if mirror { Some(1) } else { None })
            }
        }
    }

    async fn infer(
        self: &Arc<Self>,
        req: Request<Incoming>,
        caller: &Caller,
        endpoint: Arc<Endpoint>,
        pinned: Option<i64>,
        request_id: &str,
        facts: &mut RequestFacts,
    ) -> Result<Response<Body>, ApiError> {
        let (served, shadow) = self.admit(caller, &endpoint, req.headers(), pinned, facts, true).await?;
        let loaded = endpoint.targets[served].1.clone();
        let request = self.read_request(req, &loaded).await?;
        let done = self.run_inference(&endpoint, served, shadow, request, request_id, caller.name()).await?;
        let selected: Vec<v2::Output<'_>> = done
            .selected
            .iter()
            .map(|&(i, binary)| v2::Output {
                name: done.loaded.model.outputs[i].name.as_str(),
                tensor: &done.outputs[i],
                binary,
                classes: done.classes(i),
            })
            .collect();
        let version = done.loaded.version.to_string();
        let (body, json_len) = v2::encode(&endpoint.name, &version, done.id.as_deref(), &selected);
        let mut r = Response::new(Full::new(Bytes::from(body)));
        match json_len {
            Some(n) => {
                r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
                if let Ok(v) = HeaderValue::from_str(&n.to_string()) {
                    r.headers_mut().insert("inference-header-content-length", v);
                }
            }
            None => {
                r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
        }
        Ok(r)
    }

    /// Reads and decodes a REST inference body for `loaded`: the binary
    /// tensor extension, OIP V2 JSON, or a JSON array of records; bounded
    /// by the body limit before anything is read.
    async fn read_request(&self, req: Request<Incoming>, loaded: &Loaded) -> Result<v2::InferRequest, ApiError> {
        self.refuse_oversized(req.headers())?;
        let header_len = match req.headers().get("inference-header-content-length") {
            Some(v) => Some(v.to_str().ok().and_then(|s| s.trim().parse::<usize>().ok()).ok_or_else(|| {
                api(StatusCode::BAD_REQUEST, "bad_request", "Inference-Header-Content-Length must be a number")
            })?),
            None => None,
        };
        let body = self.collect_body(req.into_body()).await?;
        let max_elements = self.config.limits.max_tensor_elements;
        let records = header_len.is_none() && body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
        let request = if records {
            let inputs = crate::named::decode_records(&body, &loaded.model, max_elements)
                .map_err(|e| api(StatusCode::BAD_REQUEST, "bad_request", e.0))?;
            v2::InferRequest { id: None, inputs, outputs: None, binary_output: false }
        } else {
            v2::decode(&body, header_len, max_elements).map_err(|e| api(StatusCode::BAD_REQUEST, "bad_request", e.0))?
        };
        Ok(request)
    }

    /// Admits an inference request (per-principal and per-endpoint limits)
    /// and picks the target that serves it and the one that shadows it.
    async fn admit(
        &self,
        caller: &Caller,
        endpoint: &Endpoint,
        headers: &hyper::HeaderMap,
        pinned: Option<i64>,
        facts: &mut RequestFacts,
        check_principal: bool,
    ) -> Result<(usize, Option<usize>), ApiError> {
        self.check_responses(caller, &endpoint.name).await?;
        let principal = caller.name().to_string();
        if check_principal {
            self.check_rate(caller.id(), &self.principal_limits, "principal", &endpoint.name, &principal).await?;
        }
        self.check_rate(&endpoint.name, &self.endpoint_limits, "endpoint", &endpoint.name, &principal).await?;
        let (served, shadow) = self.choose(endpoint, caller, headers, pinned);
        let (target, _) = &endpoint.targets[served];
        facts.model = Some(target.model.clone());
        facts.version = Some(target.version.to_string());
        Ok((served, shadow))
    }

    /// Runs a decoded request on the served target (bounded by the
    /// endpoint's concurrency), mirrors it to the shadow, captures it, and
    /// picks the requested outputs. Shared by REST and gRPC.
    async fn run_inference(
        self: &Arc<Self>,
        endpoint: &Arc<Endpoint>,
        served: usize,
        shadow: Option<usize>,
        request: v2::InferRequest,
        request_id: &str,
        principal: &str,
    ) -> Result<Inference, ApiError> {
        let (target, loaded) = &endpoint.targets[served];
        // Shared, not copied, with the capture and the shadow.
        let inputs: Vec<Arc<Tensor>> = order_inputs(loaded, request.inputs)?.into_iter().map(Arc::new).collect();
        let _permit = concurrency_permit(endpoint).await?;
        let elements: usize = inputs.iter().map(|t| t.len()).sum();
        let shadow_inputs = shadow.map(|_| inputs.clone());
        let monitor_inputs =
            if self.monitor.is_some() && loaded.monitor_plan.is_some() { inputs.clone() } else { Vec::new() };
        let captured_inputs =
            (self.config.capture_rows > 0).then(|| CapturedInputs { loaded: loaded.clone(), inputs: inputs.clone() });
        let outputs = if elements <= 4096 {
            loaded.model.run_shared(inputs)
        } else {
            let l = loaded.clone();
            tokio::task::spawn_blocking(move || l.model.run_shared(inputs))
                .await
                .map_err(|_| api(StatusCode::INTERNAL_SERVER_ERROR, "internal", "inference failed"))?
        }
        .map_err(|e| match e {
            citadel_infer::InferError::Input(m) => api(StatusCode::BAD_REQUEST, "bad_request", m),
            other => {
                // The detail goes to the access log; the caller learns nothing of the model's insides.
                self.emit(json!({"ts": Timestamp::now().to_string(), "event": "model.error", "request_id": request_id,
                                 "endpoint": endpoint.name, "model": target.model, "version": target.version, "error": other.to_string()}));
                api(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "model_error",
                    format!("the model failed on this request (request id {request_id})"),
                )
            }
        })?;
        if let Some(list) = &request.outputs
            && let Some((missing, _)) = list.iter().find(|(n, _)| !loaded.model.outputs.iter().any(|o| &o.name == n))
        {
            return Err(api(StatusCode::BAD_REQUEST, "bad_request", format!("the model has no output {missing}")));
        }
        let mut selected = Vec::new();
        for (i, spec) in loaded.model.outputs.iter().enumerate() {
            let wanted = match &request.outputs {
                None => Some(request.binary_output),
                Some(list) => list.iter().find(|(n, _)| n == &spec.name).map(|(_, b)| *b),
            };
            if let Some(binary) = wanted {
                selected.push((i, binary));
            }
        }
        let outputs = Arc::new(outputs);
        if let Some(m) = self.monitor.as_ref().filter(|_| loaded.monitor_plan.is_some()) {
            let policy = endpoint.spec.monitoring.unwrap_or_default();
            m.observe(monitor::Sample {
                endpoint: endpoint.name.clone(),
                window_secs: policy.window_secs,
                target: target.clone(),
                loaded: loaded.clone(),
                principal: principal.to_string(),
                request_id: request_id.to_string(),
                inputs: monitor_inputs,
                outputs: outputs.clone(),
                feedback: policy.feedback.enabled,
                at: Timestamp::now().0,
            });
        }
        self.capture(&endpoint.name, request_id, target, "served", captured_inputs.clone(), outputs.clone());
        let shadow_slot = shadow.and_then(|_| endpoint.shadow_slots.clone().try_acquire_owned().ok());
        if let (Some(si), Some(inputs), Some(slot)) = (shadow, shadow_inputs, shadow_slot) {
            let (st, sl) = endpoint.targets[si].clone();
            let gw = self.clone();
            let name = endpoint.name.clone();
            let served_first = outputs.first().cloned();
            let rid = request_id.to_string();
            tokio::task::spawn_blocking(move || {
                let labels =
                    ModelLabels { endpoint: name.clone(), model: st.model.clone(), version: st.version.to_string() };
                gw.metrics.shadow_requests.get_or_create(&labels).inc();
                if let Ok(out) = sl.model.run_shared(inputs) {
                    if out.first() != served_first.as_ref() {
                        gw.metrics.shadow_disagreements.get_or_create(&labels).inc();
                    }
                    gw.capture(&name, &rid, &st, "shadow", captured_inputs, Arc::new(out));
                }
                drop(slot);
            });
        }
        Ok(Inference { loaded: loaded.clone(), outputs, selected, id: request.id })
    }

    /// Keeps the last `capture_rows` inferences per endpoint for monitoring:
    /// which version answered, the inputs (masked when read: see
    /// [`masked_inputs`]) and the outputs. Bounded: the oldest record goes
    /// first. Records are kept as tensors and turned into JSON only when read.
    fn capture(
        &self,
        endpoint: &str,
        request_id: &str,
        target: &Target,
        role: &'static str,
        inputs: Option<CapturedInputs>,
        outputs: Arc<Vec<Tensor>>,
    ) {
        if self.config.capture_rows == 0 {
            return;
        }
        let record = Captured {
            ts: Timestamp::now(),
            request_id: request_id.to_string(),
            model: target.model.clone(),
            version: target.version,
            role,
            inputs,
            outputs,
        };
        // The evicted record is dropped after the lock is released: freeing
        // its tensors is the costly part, and other requests wait on the lock.
        let evicted = {
            let Ok(mut c) = self.captures.lock() else { return };
            if !c.contains_key(endpoint) {
                c.insert(endpoint.to_string(), VecDeque::new());
            }
            let Some(q) = c.get_mut(endpoint) else { return };
            let evicted = if q.len() >= self.config.capture_rows { q.pop_front() } else { None };
            q.push_back(record);
            evicted
        };
        drop(evicted);
    }
}

/// What an inference answered: the model's outputs and which of them the caller asked for.
#[derive(Debug)]
struct Inference {
    loaded: Arc<Loaded>,
    outputs: Arc<Vec<Tensor>>,
    /// (output index, wanted as binary data).
    selected: Vec<(usize, bool)>,
    id: Option<String>,
}

impl Inference {
    /// The class names that describe output `i`, when the model has them.
    fn classes(&self, i: usize) -> Option<&[String]> {
        self.loaded
            .schema
            .classes
            .as_deref()
            .filter(|_| is_class_output(&self.loaded.model.outputs[i], self.outputs[i].shape.len()))
    }
}

/// A request's inputs as the model saw them; masked when the capture is read.
#[derive(Debug, Clone)]
struct CapturedInputs {
    loaded: Arc<Loaded>,
    inputs: Vec<Arc<Tensor>>,
}

#[derive(Debug)]
struct Captured {
    ts: Timestamp,
    request_id: String,
    model: String,
    version: i64,
    role: &'static str,
    inputs: Option<CapturedInputs>,
    outputs: Arc<Vec<Tensor>>,
}

impl Captured {
    fn to_json(&self) -> Value {
        json!({
            "ts": self.ts.to_string(),
            "request_id": self.request_id,
            "model": self.model,
            "version": self.version,
            "role": self.role,
            "inputs": self.inputs.as_ref().map(|c| masked_inputs(&c.loaded, &c.inputs)),
            "outputs": self.outputs.iter().map(|t| json!({"shape": t.shape, "data": tensor_json(t)})).collect::<Vec<_>>(),
        })
    }
}

/// A request's inputs for the capture: protected columns withheld, and
/// personal data found in strings replaced by its kind.
fn masked_inputs(loaded: &Loaded, inputs: &[impl AsRef<Tensor>]) -> Value {
    let items: Vec<Value> = loaded
        .model
        .inputs
        .iter()
        .zip(inputs)
        .map(|(spec, t)| {
            let t: &Tensor = t.as_ref();
            if loaded.protected_inputs.contains(&spec.name) {
                return json!({"name": spec.name, "shape": t.shape, "withheld": "protected column of the training data"});
            }
            let data = match &t.data {
                Data::Str(v) => json!(v
                    .iter()
                    .map(|s| match citadel_pii::detect(s).first() {
                        Some((kind, _)) => format!("[{kind:?}]"),
                        None => s.clone(),
                    })
                    .collect::<Vec<_>>()),
                _ => tensor_json(t),
            };
            json!({"name": spec.name, "shape": t.shape, "data": data})
        })
        .collect();
    Value::Array(items)
}

fn tensor_json(t: &Tensor) -> Value {
    serde_json::to_value(v2::DataRef::of(t)).unwrap_or(Value::Null)
}

/// Raises the descriptor limit to what the system allows and keeps the
/// connection cap below it (with room for the database, models and logs),
/// so a flood of connections meets the cap, not EMFILE on accept.
fn connection_budget(wanted: usize) -> usize {
    let soft = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let room = usize::try_from(soft.saturating_sub(256)).unwrap_or(usize::MAX).max(64);
    wanted.min(room)
}

/// Request ids: a random per-process prefix and a counter. Unique across
/// replicas and restarts (64 random bits), with no random draw per request;
/// they identify, they do not authorize.
#[derive(Debug)]
struct RequestIds {
    prefix: String,
    counter: AtomicU64,
}

impl RequestIds {
    fn new() -> RequestIds {
        RequestIds { prefix: citadel_types::random_id("req-"), counter: AtomicU64::new(0) }
    }

    fn next(&self) -> String {
        format!("{}-{:x}", self.prefix, self.counter.fetch_add(1, Ordering::Relaxed))
    }
}

fn splitmix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A place in the endpoint's concurrency limit, waited for at most 2 s (then 503).
async fn concurrency_permit(endpoint: &Endpoint) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    match tokio::time::timeout(Duration::from_secs(2), endpoint.concurrency.clone().acquire_owned()).await {
        Ok(Ok(p)) => Ok(p),
        _ => Err(api(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format!("{} is at its concurrency limit; retry", endpoint.name),
        )),
    }
}

/// True for an output that the class names describe: the class-name label
/// (strings of rank 1), or a probability matrix (floats of rank 2, named as
/// probabilities) with one column per class.
fn is_class_output(spec: &citadel_infer::IoSpec, rank: usize) -> bool {
    (spec.dtype == citadel_infer::DType::Str && rank == 1)
        || (spec.dtype == citadel_infer::DType::F32 && rank == 2 && spec.name.contains("probabilit"))
}

/// Puts request inputs in the model's declared order, naming what is missing
/// or unknown, and conforms each to its declaration ([`crate::named::conform`]).
fn order_inputs(loaded: &Loaded, mut given: Vec<(String, Tensor)>) -> Result<Vec<Tensor>, ApiError> {
    let model = &loaded.model;
    if let Some((extra, _)) = given.iter().find(|(n, _)| !model.inputs.iter().any(|i| &i.name == n)) {
        return Err(api(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!(
                "the model has no input {extra} — hint: its inputs are {}",
                model.inputs.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    let mut out = Vec::with_capacity(model.inputs.len());
    for spec in &model.inputs {
        let i = given.iter().position(|(n, _)| n == &spec.name).ok_or_else(|| {
            api(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!(
                    "input {} ({} {}) is missing",
                    spec.name,
                    spec.dtype.v2_name(),
                    citadel_infer::shape_text(&spec.shape)
                ),
            )
        })?;
        let (_, t) = given.swap_remove(i);
        out.push(
            crate::named::conform(spec, &loaded.schema, t)
                .map_err(|e| api(StatusCode::BAD_REQUEST, "bad_request", e.0))?,
        );
    }
    if let Some((twice, _)) = given.first() {
        return Err(api(StatusCode::BAD_REQUEST, "bad_request", format!("input {twice} is given more than once")));
    }
    model.check_inputs(&out).map_err(|e| api(StatusCode::BAD_REQUEST, "bad_request", e.to_string()))?;
    Ok(out)
}

fn model_metadata(e: &Endpoint, version: Option<i64>) -> Value {
    let (_, primary) = match version {
        Some(v) => e.targets.iter().find(|(t, _)| t.version == v).cloned().unwrap_or_else(|| e.targets[0].clone()),
        None => e
            .spec
            .primary()
            .and_then(|p| e.targets.iter().find(|(t, _)| t.label == p.label).cloned())
            .unwrap_or_else(|| e.targets[0].clone()),
    };
    let shape = |s: &citadel_infer::IoSpec| s.shape.iter().map(|d| d.map_or(-1, |d| d as i64)).collect::<Vec<_>>();
    let inputs: Vec<Value> = primary
        .model
        .inputs
        .iter()
        .map(|s| {
            let mut v = json!({"name": s.name, "datatype": s.dtype.v2_name(), "shape": shape(s)});
            // A protected column's categories and range are the training data's: withheld.
            if let Some(p) =
                primary.schema.input_parameters(&s.name).filter(|_| !primary.protected_inputs.contains(&s.name))
            {
                v["parameters"] = p;
            }
            v
        })
        .collect();
    let outputs: Vec<Value> = primary
        .model
        .outputs
        .iter()
        .map(|s| {
            let mut v = json!({"name": s.name, "datatype": s.dtype.v2_name(), "shape": shape(s)});
            if let (Some(c), true) = (&primary.schema.classes, is_class_output(s, s.shape.len())) {
                v["parameters"] = json!({"classes": c});
            }
            v
        })
        .collect();
    json!({
        "name": e.name,
        "versions": e.targets.iter().map(|(t, _)| t.version.to_string()).collect::<Vec<_>>(),
        "platform": "onnx",
        "inputs": inputs,
        "outputs": outputs,
        "parameters": {"model": primary.name, "version": primary.version, "runtime": primary.model.engine.as_str(),
                       "strategy": e.spec.strategy, "revision": e.revision, "root_digest": primary.root_digest},
    })
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// One access-log line: who, what, how it ended, how long it took. Never a
/// token, a header value or a payload value.
#[derive(serde::Serialize)]
struct AccessLine<'a> {
    #[serde(serialize_with = "rfc3339")]
    ts: Timestamp,
    request_id: &'a str,
    remote: SocketAddr,
    method: &'a str,
    path: &'a str,
    status: u16,
    latency_ms: f64,
    principal: Option<&'a str>,
    endpoint: Option<&'a str>,
    model: Option<&'a str>,
    version: Option<&'a str>,
    bytes_in: Option<u64>,
}

fn rfc3339<S: serde::Serializer>(ts: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(ts)
}

/// Log lines collect in memory and one thread writes them every 50 ms, so
/// serving never waits on the disk or wakes a writer per request. Bounded:
/// past 16 MiB unwritten, lines are dropped and counted (reported in the log).
#[derive(Debug, Default)]
struct LogBuffer {
    pending: Mutex<Vec<u8>>,
    dropped: AtomicU64,
    /// Set at shutdown: the writer writes what is pending and ends.
    closing: AtomicBool,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

const LOG_BUFFER_MAX: usize = 16 << 20;

impl LogBuffer {
    /// Writes out every pending line and stops the writer.
    async fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }

    fn push(&self, line: &impl serde::Serialize) {
        let Ok(mut bytes) = serde_json::to_vec(line) else { return };
        bytes.push(b'\n');
        match self.pending.lock() {
            Ok(mut p) if p.len() + bytes.len() <= LOG_BUFFER_MAX => p.extend_from_slice(&bytes),
            _ => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn spawn_log_writer(path: &std::path::Path) -> Result<Arc<LogBuffer>, ServeError> {
    use std::io::Write;
    let mut out: Box<dyn Write + Send> = if path.as_os_str() == "-" {
        Box::new(std::io::stdout())
    } else {
        Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| ServeError::Io(format!("access log {}: {e}", path.display())))?,
        )
    };
    let buffer = Arc::new(LogBuffer::default());
    let weak = Arc::downgrade(&buffer);
    let handle = std::thread::spawn(move || {
        let mut batch = Vec::new();
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let Some(buffer) = weak.upgrade() else { break };
            // Read before the swap: a line pushed before `close` is in this batch.
            let last = buffer.closing.load(Ordering::SeqCst);
            if let Ok(mut p) = buffer.pending.lock() {
                std::mem::swap(&mut *p, &mut batch);
            }
            let dropped = buffer.dropped.swap(0, Ordering::Relaxed);
            drop(buffer);
            if dropped > 0 {
                let _ = writeln!(
                    out,
                    "{}",
                    json!({"ts": Timestamp::now().to_string(), "event": "access_log.dropped", "lines": dropped})
                );
            }
            if !batch.is_empty() {
                let _ = out.write_all(&batch);
                let _ = out.flush();
                batch.clear();
            }
            if last {
                break;
            }
        }
    });
    if let Ok(mut w) = buffer.writer.lock() {
        *w = Some(handle);
    }
    Ok(buffer)
}

/// A control-plane refusal as the gateway answers it: 403 with the roles
/// that would allow it, 401 for a credential, 503 when the decision could
/// not be recorded (nothing is allowed unrecorded).
fn denied(caller: &Caller, e: citadel_control::ControlError) -> ApiError {
    use citadel_control::ControlError;
    match e {
        ControlError::Denied { action, resource, .. } => {
            let roles = citadel_policy::Role::ALL
                .iter()
                .filter(|r| r.actions().iter().any(|a| a.as_str() == action))
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            api(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "{} may not {action} on {resource} — hint: an admin grants a role that has it ({roles}): citadel grant add {} ROLE --scope {resource}",
                    caller.name(),
                    caller.name()
                ),
            )
        }
        ControlError::Unauthenticated(why) => api(StatusCode::UNAUTHORIZED, "unauthenticated", why),
        _ => api(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the authorization could not be recorded; retry"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn loaded(protected: &[&str]) -> Loaded {
        let bytes = include_bytes!("../../citadel-infer/tests/fixtures/models/rf_binary_nozipmap.onnx");
        Loaded {
            model: Model::load(bytes).unwrap(),
            name: "m".into(),
            version: 1,
            root_digest: String::new(),
            protected_inputs: protected.iter().map(|s| s.to_string()).collect(),
            schema: Default::default(),
            kernel: None,
            monitor_plan: None,
        }
    }

    #[test]
    fn captured_inputs_never_hold_protected_columns_or_detected_personal_data() {
        let strings = Tensor::new(
            vec![4],
            Data::Str(vec![
                "jane.doe@example.com".into(),
                "4111 1111 1111 1111".into(),
                "blue".into(),
                "+44 20 7946 0958".into(),
            ]),
        )
        .unwrap();
        let v = masked_inputs(&loaded(&[]), &[Arc::new(strings.clone())]).to_string();
        for secret in ["jane.doe", "4111", "7946"] {
            assert!(!v.contains(secret), "{secret} captured: {v}");
        }
        assert!(v.contains("blue"), "{v}");
        let v = masked_inputs(&loaded(&["X"]), &[Arc::new(strings)]).to_string();
        assert!(v.contains("withheld") && !v.contains("blue"), "{v}");
        let numbers = Tensor::f32(vec![1, 2], vec![1.5, 2.5]).unwrap();
        assert!(masked_inputs(&loaded(&[]), &[Arc::new(numbers)]).to_string().contains("1.5"));
    }

    #[test]
    fn pickles_are_recognized_by_name_and_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let named = dir.path().join("model.joblib");
        std::fs::write(&named, b"anything").unwrap();
        assert!(crate::serving::is_pickle(&named));
        let disguised = dir.path().join("weights.bin");
        std::fs::write(&disguised, b"\x80\x04\x95\x10\x00").unwrap();
        assert!(crate::serving::is_pickle(&disguised));
        let onnx = dir.path().join("model.onnx");
        std::fs::write(&onnx, b"\x08\x07\x12\x04skl2").unwrap();
        assert!(!crate::serving::is_pickle(&onnx));
    }
}

//! `citadel serve` (the data plane) and `citadel deploy …` (deployments).

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use clap::{Args, Subcommand};

use citadel_control::{Caller, DeploymentSpec, Strategy, Workspace, parse_target};
use citadel_serve::{Gateway, ServeConfig, Transport};

use crate::Out;

/// How a listener is secured: the gateway's and the control plane's flags.
#[derive(Args, Debug, Clone)]
pub struct TransportArgs {
    /// Certificate chain (PEM); reloaded when the file changes.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Serve TLS with a self-signed localhost certificate (development only).
    #[arg(long, conflicts_with_all = ["cert", "insecure_http"])]
    pub dev_self_signed: bool,
    /// Serve plain HTTP (loopback addresses only; for a local reverse proxy or benchmarks).
    #[arg(long, conflicts_with = "cert")]
    pub insecure_http: bool,
}

impl TransportArgs {
    /// The transport the flags choose (a development certificate goes into
    /// `dev_dir`), warning of the two that are not for production.
    pub fn transport(&self, listen: SocketAddr, dev_dir: PathBuf) -> Result<Transport> {
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            Ok(Transport::Tls { cert: cert.clone(), key: key.clone() })
        } else if self.dev_self_signed {
            eprintln!(
                "WARNING: serving with a self-signed development certificate. Clients cannot verify this server; never use it in production."
            );
            Ok(Transport::DevSelfSigned(dev_dir))
        } else if self.insecure_http {
            eprintln!(
                "WARNING: serving plain HTTP on {listen}: tokens and data cross the loopback interface unencrypted."
            );
            Ok(Transport::PlainLoopback)
        } else {
            Err(anyhow!(
                "no transport chosen\nhint: pass --cert FILE --key FILE, or --dev-self-signed for local use, or --insecure-http on 127.0.0.1"
            ))
        }
    }
}

/// Who may present which credential: people's JWTs, and how many refusals
/// one client address gets (the gateway's and the control plane's flags).
#[derive(Args, Debug, Clone)]
pub struct CredentialArgs {
    /// People's bearer JWTs: the IdP's JWKS (a file, or an https:// URL
    /// fetched again when the IdP rotates its keys), with its issuer and audience.
    #[arg(long, requires_all = ["jwt_issuer", "jwt_audience"])]
    pub jwks: Option<PathBuf>,
    #[arg(long)]
    pub jwt_issuer: Option<String>,
    #[arg(long)]
    pub jwt_audience: Option<String>,
    /// The CA of an https:// --jwks URL (default: the system bundle).
    #[arg(long)]
    pub jwks_ca: Option<PathBuf>,
    /// Refused credentials one client address may present per minute; past
    /// them its requests get 429 with no lookup and no write
    #[arg(long, default_value_t = 30)]
    pub auth_refusals_per_min: u32,
}

impl CredentialArgs {
    /// (JWKS source, issuer, audience), when JWTs are accepted.
    pub fn jwt(&self) -> Option<(PathBuf, String, String)> {
        match (&self.jwks, &self.jwt_issuer, &self.jwt_audience) {
            (Some(p), Some(i), Some(a)) => Some((p.clone(), i.clone(), a.clone())),
            _ => None,
        }
    }

    pub fn refusal_budget(&self) -> citadel_serve::RefusalBudget {
        citadel_serve::RefusalBudget { per_window: self.auth_refusals_per_min.max(1), window: Duration::from_secs(60) }
    }
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Also serve the Open Inference Protocol over gRPC (HTTP/2) on this
    /// address, with the same TLS, authentication, limits and audit.
    #[arg(long)]
    pub grpc_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub transport: TransportArgs,
    /// CA (PEM) that client certificates must chain to (mutual TLS).
    #[arg(long)]
    pub client_ca: Option<PathBuf>,
    /// Refuse connections without a client certificate.
    #[arg(long, requires = "client_ca")]
    pub require_client_cert: bool,
    /// Map a client certificate to a principal: SHA256_HEX=PRINCIPAL (repeatable).
    #[arg(long = "client-principal")]
    pub client_principals: Vec<String>,
    #[command(flatten)]
    pub credentials: CredentialArgs,
    #[arg(long, default_value_t = 8 << 20)]
    pub max_body_bytes: usize,
    #[arg(long, default_value_t = 1 << 20)]
    pub max_tensor_elements: usize,
    #[arg(long, default_value_t = 10_000)]
    pub request_timeout_ms: u64,
    /// After SIGTERM, keep serving this long, reporting not ready and closing
    /// every connection after its response, so a load balancer moves traffic
    /// away first (Kubernetes: a few seconds, within terminationGracePeriodSeconds)
    #[arg(long, default_value_t = 0)]
    pub shutdown_delay_ms: u64,
    /// Then wait at most this long for in-flight requests to finish
    #[arg(long, default_value_t = 30_000)]
    pub shutdown_timeout_ms: u64,
    #[arg(long, default_value_t = 16_384)]
    pub max_connections: usize,
    /// Concurrent inferences per endpoint.
    #[arg(long, default_value_t = 64)]
    pub max_concurrency: usize,
    /// Requests per second per principal (GCRA), and its burst.
    #[arg(long, default_value_t = 1000)]
    pub rate_principal: u32,
    #[arg(long, default_value_t = 2000)]
    pub rate_principal_burst: u32,
    /// Requests per second per endpoint, and its burst.
    #[arg(long, default_value_t = 20_000)]
    pub rate_endpoint: u32,
    #[arg(long, default_value_t = 40_000)]
    pub rate_endpoint_burst: u32,
    /// Redis that every replica shares the rate limits through (GCRA in one
    /// Lua script): redis://[:PASSWORD@]HOST:PORT/DB, or rediss:// for TLS.
    /// From the environment, so a password stays off the command line
    #[arg(long = "rate-redis", env = "CITADEL_RATE_REDIS_URL", hide_env_values = true, value_name = "URL")]
    pub rate_redis: Option<String>,
    /// When that Redis does not answer within 100 ms: `local` (each replica
    /// limits on its own) or `deny` (503, fail closed)
    #[arg(long, default_value = "local", value_parser = ["local", "deny"])]
    pub rate_redis_fallback: String,
    /// How often deployments are polled (ms).
    #[arg(long, default_value_t = 1000)]
    pub poll_ms: u64,
    /// JSON access log file, or - for stdout.
    #[arg(long)]
    pub access_log: Option<PathBuf>,
    /// Do not sketch served traffic for live monitoring (drift, detectors)
    #[arg(long)]
    pub no_monitor: bool,
    /// Window of the credential detectors (failed authentications per
    /// address, addresses per principal), in seconds
    #[arg(long, default_value_t = 60)]
    pub auth_window_secs: u64,
    /// Write an open monitoring window's sketch so far every this many
    /// seconds (0: only when the window closes); a gateway killed mid-window
    /// loses at most this much of what it sketched
    #[arg(long, default_value_t = 10)]
    pub monitor_part_secs: u64,
    /// Hold no key: fetch deployed models, verified, from this `citadel
    /// server` (https://HOST:PORT) with the serving credential in
    /// CITADEL_SERVING_TOKEN (a principal with the gateway role); no
    /// passphrase is read, and nothing the workspace encrypts can be.
    #[arg(long, value_name = "URL")]
    pub control: Option<String>,
    /// The CA of the control plane's certificate (default: the system's roots).
    #[arg(long, requires = "control")]
    pub control_ca: Option<PathBuf>,
}

pub async fn run_serve(
    ws: Workspace,
    caller: Caller,
    args: ServeArgs,
    out: &Out,
    workspace_dir: PathBuf,
) -> Result<i32> {
    let transport = args.transport.transport(args.listen, workspace_dir.join("tmp").join("dev-tls"))?;
    let mut config = ServeConfig::new(args.listen, transport);
    config.grpc_listen = args.grpc_listen;
    config.monitor = !args.no_monitor;
    config.auth_window_secs = args.auth_window_secs.clamp(1, 3_600);
    config.monitor_part_secs = args.monitor_part_secs.min(86_400);
    config.refusal_budget = args.credentials.refusal_budget();
    config.client_ca = args.client_ca.clone();
    config.require_client_cert = args.require_client_cert;
    config.client_principals = args
        .client_principals
        .iter()
        .map(|s| {
            s.split_once('=')
                .map(|(fp, p)| (fp.to_ascii_lowercase(), p.to_string()))
                .ok_or_else(|| anyhow!("--client-principal {s:?}: write SHA256_HEX=PRINCIPAL"))
        })
        .collect::<Result<HashMap<_, _>>>()?;
    config.jwt = args.credentials.jwt();
    config.jwks_ca = args.credentials.jwks_ca.clone();
    config.limits.max_body_bytes = args.max_body_bytes;
    config.limits.max_tensor_elements = args.max_tensor_elements;
    config.limits.request_timeout = Duration::from_millis(args.request_timeout_ms);
    config.limits.max_connections = args.max_connections;
    config.limits.max_concurrency_per_model = args.max_concurrency;
    config.rate.per_principal_per_sec = args.rate_principal;
    config.rate.per_principal_burst = args.rate_principal_burst;
    config.rate.per_endpoint_per_sec = args.rate_endpoint;
    config.rate.per_endpoint_burst = args.rate_endpoint_burst;
    config.rate_redis = args.rate_redis.clone();
    config.rate_fallback = args.rate_redis_fallback.parse().map_err(|e: String| anyhow!(e))?;
    config.poll_interval = Duration::from_millis(args.poll_ms.max(50));
    config.shutdown_delay = Duration::from_millis(args.shutdown_delay_ms);
    config.shutdown_timeout = Duration::from_millis(args.shutdown_timeout_ms);
    config.access_log = args.access_log.clone();
    if let Some(url) = &args.control {
        let token = std::env::var("CITADEL_SERVING_TOKEN").unwrap_or_default();
        config.control =
            Some(Arc::new(citadel_serve::serving::ControlClient::new(url, args.control_ca.as_deref(), token)?));
    }
    let json = out.json;
    let shutdown = shutdown_signal();
    Gateway::run(
        Arc::new(ws),
        caller,
        config,
        |l| {
            let grpc = l.grpc_addr.map(|a| a.to_string());
            let line = serde_json::json!({"listening": l.addr.to_string(), "grpc": grpc, "scheme": l.scheme, "dev_ca": l.dev_ca});
            if json {
                outln!("{line}");
            } else {
                outln!("serving on {}://{}", l.scheme, l.addr);
                if let Some(g) = &grpc {
                    outln!("gRPC (inference.GRPCInferenceService) on {g}");
                }
                if let Some(ca) = &l.dev_ca {
                    outln!("development certificate: {} (curl --cacert {})", ca.display(), ca.display());
                }
            }
            let _ = std::io::stdout().flush();
        },
        shutdown,
    )
    .await
    .context("serving")?;
    Ok(0)
}

/// The spec `deploy set`'s flags describe (targets `[LABEL=]MODEL@VERSION[:WEIGHT]`,
/// labels defaulting by strategy; the monitoring policy read from its TOML file).
pub(crate) fn deployment_spec(
    strategy: &str,
    targets: &[String],
    active: Option<String>,
    sticky_header: Option<String>,
    shadow_fraction: f64,
    monitoring: Option<&std::path::Path>,
) -> Result<DeploymentSpec> {
    let monitoring = match monitoring {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the monitoring policy {}", path.display()))?;
            Some(citadel_control::MonitoringPolicy::from_toml(&text)?)
        }
        None => None,
    };
    let strategy: Strategy = strategy.parse()?;
    let defaults: &[&str] = match strategy {
        Strategy::Single => &["primary"],
        Strategy::Canary => &["primary", "canary"],
        Strategy::BlueGreen => &["blue", "green"],
        Strategy::Ab => &["a", "b"],
        Strategy::Shadow => &["primary", "shadow"],
    };
    let targets = targets
        .iter()
        .enumerate()
        .map(|(i, t)| parse_target(t, defaults.get(i).copied().unwrap_or("extra")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DeploymentSpec { strategy, targets, active, sticky_header, shadow_fraction, monitoring })
}

/// Completes at Ctrl-C or SIGTERM (a server's and a gateway's stop).
pub(crate) async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {},
    }
}

#[derive(Subcommand, Debug, Clone)]
pub enum DeployCmd {
    /// Create or change an endpoint. Targets are [LABEL=]MODEL@VERSION[:WEIGHT].
    ///
    /// Examples: `deploy set credit --target credit@3`;
    /// canary `--strategy canary --target credit@3:90 --target credit@4:10`;
    /// blue/green `--strategy blue-green --target blue=credit@3 --target green=credit@4 --active blue`;
    /// A/B `--strategy ab --target a=credit@3 --target b=credit@4 [--sticky-header X-User]`;
    /// shadow `--strategy shadow --target credit@3 --target shadow=credit@4 --shadow-fraction 0.2`.
    Set {
        name: String,
        #[arg(long, default_value = "single")]
        strategy: String,
        #[arg(long = "target", required = true)]
        targets: Vec<String>,
        #[arg(long)]
        active: Option<String>,
        #[arg(long)]
        sticky_header: Option<String>,
        #[arg(long, default_value_t = 0.0)]
        shadow_fraction: f64,
        /// Live monitoring policy (TOML: window_secs, grace_secs, playbook,
        /// [drift], [detectors], [feedback]); without it the endpoint keeps
        /// its current policy (the defaults for a new endpoint)
        #[arg(long)]
        monitoring: Option<PathBuf>,
    },
    /// Blue/green: make LABEL the active color (instant; switch back the same way).
    Switch { name: String, label: String },
    /// Stop serving an endpoint.
    Rm { name: String },
    /// Serve an earlier revision again (as a new revision): the last one that
    /// served something else, or --to REVISION. Its targets must still be deployable.
    Rollback {
        name: String,
        /// The revision to serve again (default: the last one that served something else)
        #[arg(long)]
        to: Option<i64>,
    },
    /// Live deployments.
    Ls,
    /// Every revision of an endpoint.
    History { name: String },
}

pub async fn run_deploy(ws: &Workspace, caller: &Caller, cmd: DeployCmd, out: &Out) -> Result<i32> {
    match cmd {
        DeployCmd::Set { name, strategy, targets, active, sticky_header, shadow_fraction, monitoring } => {
            let spec =
                deployment_spec(&strategy, &targets, active, sticky_header, shadow_fraction, monitoring.as_deref())?;
            let d = ws.deploy_set(caller, &name, &spec).await?;
            out.emit(&d, || {
                format!(
                    "{} is at revision {} ({:?}); gateways pick it up within their poll interval",
                    d.name, d.revision, d.spec.strategy
                )
            });
        }
        DeployCmd::Switch { name, label } => {
            let d = ws.deploy_switch(caller, &name, &label).await?;
            out.emit(&d, || format!("{} now answers from {label} (revision {})", d.name, d.revision));
        }
        DeployCmd::Rollback { name, to } => {
            let d = ws.deploy_rollback(caller, &name, to).await?;
            let targets: Vec<String> = d.spec.targets.iter().map(|t| format!("{}@{}", t.model, t.version)).collect();
            out.emit(&d, || {
                format!(
                    "{} rolled back: revision {} serves {} again; gateways pick it up within their poll interval",
                    d.name,
                    d.revision,
                    targets.join(", ")
                )
            });
        }
        DeployCmd::Rm { name } => {
            let r = ws.deploy_remove(caller, &name).await?;
            out.emit(&serde_json::json!({"name": name, "revision": r, "removed": true}), || {
                format!("{name} removed (revision {r})")
            });
        }
        DeployCmd::Ls => {
            let list = ws.deploy_list(caller).await?;
            out.emit(&list, || {
                let mut s = String::new();
                for d in &list {
                    let targets: Vec<String> = d
                        .spec
                        .targets
                        .iter()
                        .map(|t| {
                            format!(
                                "{}={}@{}{}",
                                t.label,
                                t.model,
                                t.version,
                                if t.weight > 0 { format!(":{}", t.weight) } else { String::new() }
                            )
                        })
                        .collect();
                    // Whether live monitoring judges it by a policy of its own, and the playbook's mode.
                    let monitoring = match &d.spec.monitoring {
                        Some(m) => format!(
                            "monitoring {} s windows, playbook {}",
                            m.window_secs,
                            serde_json::to_value(m.playbook)
                                .ok()
                                .and_then(|v| v.as_str().map(String::from))
                                .unwrap_or_default()
                        ),
                        None => "monitoring: defaults".to_string(),
                    };
                    s += &format!(
                        "{:<20} rev {:<4} {:<11} {}  ({monitoring})\n",
                        d.name,
                        d.revision,
                        format!("{:?}", d.spec.strategy),
                        targets.join(" ")
                    );
                }
                if list.is_empty() { "no deployments".into() } else { s }
            });
        }
        DeployCmd::History { name } => {
            let h = ws.deploy_history(caller, &name).await?;
            out.emit(&h, || {
                h.iter()
                    .map(|r| {
                        format!(
                            "rev {:<4} {} by {}: {}",
                            r.revision,
                            r.created_at,
                            r.created_by,
                            r.spec
                                .as_ref()
                                .map_or("removed".to_string(), |s| serde_json::to_string(s).unwrap_or_default())
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
    }
    Ok(0)
}

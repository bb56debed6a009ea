//! `citadel server` (the control plane over HTTPS, holding the keys) and
//! the CLI as its client: with `CITADEL_URL` set, the commands the API
//! serves go to the server with `CITADEL_TOKEN`; nothing local is opened (no
//! passphrase, no database URL, no storage credential). A command the API
//! does not serve yet is refused rather than run locally behind the
//! server's back.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use citadel_control::Workspace;

use crate::Out;

#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    #[arg(long, default_value = "127.0.0.1:8444")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub transport: crate::serve_cmd::TransportArgs,
    #[command(flatten)]
    pub credentials: crate::serve_cmd::CredentialArgs,
    /// Requests per second per principal (GCRA), and its burst: past it, 429.
    #[arg(long, default_value_t = 200)]
    pub rate_principal: u32,
    #[arg(long, default_value_t = 400)]
    pub rate_principal_burst: u32,
}

pub async fn run_server(ws: Workspace, workspace_dir: &std::path::Path, args: &ServerArgs, out: &Out) -> Result<i32> {
    let transport = args.transport.transport(args.listen, workspace_dir.join("tmp").join("server-tls"))?;
    let config = citadel_api::ServerConfig {
        listen: args.listen,
        transport,
        jwt: args.credentials.jwt(),
        jwks_ca: args.credentials.jwks_ca.clone(),
        auth_cache_ttl: Duration::from_secs(5),
        refusal_budget: args.credentials.refusal_budget(),
        per_principal: (args.rate_principal, args.rate_principal_burst),
    };
    let json = out.json;
    let shutdown = crate::serve_cmd::shutdown_signal();
    let ws = Arc::new(ws);
    citadel_api::serve(
        ws.clone(),
        config,
        |l| {
            let url = format!("{}://{}", l.scheme, l.addr);
            if json {
                outln!("{}", serde_json::json!({"listening": url, "dev_ca": l.dev_ca}));
            } else {
                outln!("control plane on {url} (clients: CITADEL_URL={url} CITADEL_TOKEN=… citadel …)");
                if let Some(ca) = &l.dev_ca {
                    outln!("development certificate: {} (clients: CITADEL_CA={})", ca.display(), ca.display());
                }
            }
            let _ = std::io::stdout().flush();
        },
        shutdown,
    )
    .await
    .context("serving the control plane")?;
    ws.close().await?;
    Ok(0)
}

/// The server the CLI talks to, from `CITADEL_URL`, `CITADEL_TOKEN` and
/// (for a private CA) `CITADEL_CA`.
pub struct Remote {
    scheme: String,
    host: String,
    port: u16,
    token: String,
    tls: Option<citadel_serve::tls::TlsClient>,
}

impl Remote {
    /// From `CITADEL_URL`/`CITADEL_TOKEN`/`CITADEL_CA`, else from what
    /// `citadel login` kept; `None` when neither is set (local mode).
    pub fn from_env() -> Result<Option<Remote>> {
        // Set but empty: local mode, whatever `citadel login` kept.
        if std::env::var_os("CITADEL_URL").is_some_and(|u| u.is_empty()) {
            return Ok(None);
        }
        if let Some(url) = std::env::var("CITADEL_URL").ok().filter(|u| !u.is_empty()) {
            let token = std::env::var("CITADEL_TOKEN").ok().filter(|t| !t.is_empty()).ok_or_else(|| {
                anyhow!("CITADEL_URL is set but CITADEL_TOKEN is not\nhint: ask an admin: citadel token issue NAME")
            })?;
            return Remote::new(&url, token, std::env::var_os("CITADEL_CA").map(PathBuf::from)).map(Some);
        }
        match Login::load()? {
            Some(l) => {
                // Someone with the master key at hand may mean local mode: say where this goes.
                if std::env::var_os("CITADEL_PASSPHRASE").is_some() {
                    eprintln!(
                        "note: going to {} (citadel login); for this workspace locally, set CITADEL_URL= (empty) or run citadel logout",
                        l.url
                    );
                }
                // A token in the environment wins over the kept one.
                let token = std::env::var("CITADEL_TOKEN").ok().filter(|t| !t.is_empty()).unwrap_or(l.token);
                Remote::new(&l.url, token, l.ca).map(Some)
            }
            None => Ok(None),
        }
    }

    /// A client of `url` with `token`, trusting `ca` for https.
    pub fn new(url: &str, token: String, ca: Option<PathBuf>) -> Result<Remote> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| anyhow!("server URL {url:?} is not a URL\nhint: e.g. https://citadel.example:8444"))?;
        // A path after the address (`/api/v1`) names nothing the client needs.
        let hostport = rest.split('/').next().unwrap_or(rest);
        let (host, port) = hostport
            .rsplit_once(':')
            .and_then(|(h, p)| p.parse::<u16>().ok().map(|p| (h.to_string(), p)))
            .unwrap_or_else(|| (hostport.to_string(), if scheme == "https" { 443 } else { 80 }));
        let tls = match scheme {
            "https" => {
                let ca = ca.ok_or_else(|| {
                    anyhow!("an https server URL needs the CA that signed the server's certificate\nhint: set CITADEL_CA=/path/ca.pem (or citadel login URL --ca ca.pem)")
                })?;
                Some(citadel_serve::tls::client_connector(&ca)?)
            }
            // Only a literal loopback address (no name a resolver could
            // point elsewhere) gets a token in clear text.
            "http"
                if host
                    .trim_matches(|c| c == '[' || c == ']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback()) =>
            {
                None
            }
            "http" => bail!(
                "plain http is for a server on this machine only (http://127.0.0.1:PORT)\nhint: use https:// with CITADEL_CA"
            ),
            other => bail!("server URL scheme {other:?}: use https (or http on loopback)"),
        };
        let host = host.trim_matches(|c| c == '[' || c == ']').to_string();
        Ok(Remote { scheme: scheme.into(), host, port, token, tls })
    }

    /// `scheme://host:port`, for messages.
    pub(crate) fn origin(&self) -> String {
        format!("{}://{}:{}", self.scheme, self.host, self.port)
    }

    /// A request to `path` with the caller's credential.
    pub(crate) fn request(&self, method: &str, path: &str) -> hyper::http::request::Builder {
        hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("{}:{}", self.host, self.port))
            .header("authorization", format!("Bearer {}", self.token))
    }

    /// Sends `req` on a new connection; the answer with its body unread.
    /// Connection failures carry the hint about `CITADEL_URL`/`CITADEL_CA`.
    pub(crate) async fn send_raw(
        &self,
        req: hyper::Request<ReqBody>,
    ) -> Result<hyper::Response<hyper::body::Incoming>> {
        let what = self.origin();
        let exchange = async {
            match &self.tls {
                Some(tls) => {
                    let io = tls.connect(&self.host, self.port).await?;
                    send(TokioIo::new(io), req).await
                }
                None => {
                    let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                        .await
                        .with_context(|| format!("connecting to {what}"))?;
                    send(TokioIo::new(tcp), req).await
                }
            }
        };
        exchange.await.map_err(|e| {
            anyhow!(
                "calling {what}: {e:#}\nhint: check CITADEL_URL (https for a server with TLS; http only for one on 127.0.0.1) and CITADEL_CA (the CA that signed the server's certificate)"
            )
        })
    }

    /// One request; the answer's JSON, or the server's error with its hint.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        self.call_within(method, path, body, Duration::from_secs(120)).await
    }

    /// As [`Remote::call`], waiting up to `limit` for the answer (a pipeline run).
    pub async fn call_within(&self, method: &str, path: &str, body: Option<Value>, limit: Duration) -> Result<Value> {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let req = self.request(method, path).header("content-type", "application/json").body(full(bytes))?;
        let what = self.origin();
        let exchange = async {
            let resp = self.send_raw(req).await?;
            let status = resp.status().as_u16();
            // An answer is JSON metadata: bounded.
            let body = http_body_util::Limited::new(resp.into_body(), 64 << 20)
                .collect()
                .await
                .map_err(|e| anyhow!("reading the answer of {what}: {e}"))?
                .to_bytes();
            Ok::<_, anyhow::Error>((status, body))
        };
        let (status, body) = tokio::time::timeout(limit, exchange).await.map_err(|_| {
            anyhow!(
                "{what} did not answer within {} s\nhint: check that the server runs and CITADEL_URL names it",
                limit.as_secs()
            )
        })??;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            return Err(refusal(status, &v));
        }
        Ok(v)
    }
}

/// What `citadel login` keeps: `$XDG_CONFIG_HOME/citadel/client.json`
/// (default `~/.config`), 0600 in a 0700 directory, written atomically.
#[derive(serde::Serialize, serde::Deserialize)]
struct Login {
    url: String,
    ca: Option<PathBuf>,
    token: String,
}

impl Login {
    fn path() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
        Some(base.join("citadel").join("client.json"))
    }

    fn load() -> Result<Option<Login>> {
        let Some(path) = Login::path() else { return Ok(None) };
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.kind() == std::io::ErrorKind::NotADirectory => {
                return Ok(None);
            }
            Err(e) => return Err(anyhow!("reading {}: {e}", path.display())),
        };
        {
            use std::os::unix::fs::MetadataExt;
            let mode = std::fs::metadata(&path).map(|m| m.mode() & 0o077).unwrap_or(0);
            if mode != 0 {
                bail!(
                    "{} holds a token and is readable by others\nhint: chmod 600 {} (or citadel logout)",
                    path.display(),
                    path.display()
                );
            }
        }
        serde_json::from_slice(&text).map(Some).map_err(|e| {
            anyhow!("{} does not parse ({e})\nhint: citadel logout, then citadel login URL", path.display())
        })
    }

    fn save(&self) -> Result<PathBuf> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let path = Login::path().ok_or_else(|| anyhow!("no HOME or XDG_CONFIG_HOME to keep the login in"))?;
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let tmp = dir.join(format!(".client.json.{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(&serde_json::to_vec_pretty(self)?)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

/// `citadel login URL [--ca PEM]`: the token from stdin, checked with the
/// server (`whoami`) before it is kept.
pub async fn login(url: &str, ca: Option<&std::path::Path>, out: &Out) -> Result<i32> {
    use std::io::Read;
    let mut token = String::new();
    std::io::stdin().take(4096).read_to_string(&mut token).context("reading the token from stdin")?;
    let token = token.trim().to_string();
    if token.is_empty() {
        bail!(
            "no token on stdin\nhint: citadel login {url} < token-file (an admin issues one: citadel token issue NAME)"
        );
    }
    let ca = ca.map(|p| std::fs::canonicalize(p).with_context(|| format!("the CA {}", p.display()))).transpose()?;
    let remote = Remote::new(url, token.clone(), ca.clone())?;
    let me = remote.call("GET", "/api/v1/whoami", None).await?;
    let path = Login { url: url.to_string(), ca, token }.save()?;
    let who = me["principal"].as_str().unwrap_or("?").to_string();
    out.emit(&serde_json::json!({"server": url, "principal": who, "kept_in": path}), || {
        format!("signed in to {url} as {who} (kept in {}; citadel logout forgets it)", path.display())
    });
    Ok(0)
}

/// `citadel logout`.
pub fn logout(out: &Out) -> Result<i32> {
    let path = Login::path().ok_or_else(|| anyhow!("no HOME or XDG_CONFIG_HOME"))?;
    let removed = match std::fs::remove_file(&path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(anyhow!("removing {}: {e}", path.display())),
    };
    out.emit(&serde_json::json!({"removed": removed, "path": path}), || {
        if removed { format!("forgot the server (removed {})", path.display()) } else { "no login was kept".into() }
    });
    Ok(0)
}

/// `NAME@VERSION` of a dataset.
fn name_at_version(reference: &str) -> Result<(&str, i64)> {
    reference
        .rsplit_once('@')
        .and_then(|(n, v)| v.parse::<i64>().ok().map(|v| (n, v)))
        .ok_or_else(|| anyhow!("{reference:?} is not NAME@VERSION\nhint: e.g. adult@1"))
}

/// A request body: whole (JSON) or streamed (an upload's bytes).
pub(crate) type ReqBody = http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>;

pub(crate) fn full(bytes: Vec<u8>) -> ReqBody {
    Full::new(bytes::Bytes::from(bytes)).map_err(|never| match never {}).boxed()
}

/// The server's refusal (`status`, its JSON body) with the CLI's hint.
pub(crate) fn refusal(status: u16, v: &Value) -> anyhow::Error {
    let msg = v["error"].as_str().unwrap_or("no message");
    // The server's hint is for HTTP clients; the CLI gives its own.
    let msg = msg.split("; hint:").next().unwrap_or(msg).trim();
    let hint = match status {
        401 => {
            "check CITADEL_TOKEN: it may be malformed, expired or revoked; an admin issues a new one with `citadel token issue NAME`"
        }
        403 => "ask an admin for a grant that allows it: citadel grant add PRINCIPAL ROLE --scope KIND:NAME",
        404 => {
            "check the name or id; the list commands (`model requests --all`, `data ls`, `artifact ls`, `principal ls`, `incident ls --all`) show what exists"
        }
        409 => "it was changed or decided meanwhile; list it again to see its state",
        422 => "the server refused the content: the message says why",
        429 => {
            "too many refused credentials from this address, or too many requests: wait a minute, then retry with a valid token"
        }
        507 => "the server is short of disk space for this upload: ask its operator",
        s if s >= 500 => "the server could not complete it (its log has the cause): retry, or ask its operator",
        _ => "check the command's arguments: citadel COMMAND --help",
    };
    anyhow!("the server answered {status}: {msg}\nhint: {hint}")
}

/// Commits uploads; on a refusal the uploads are abandoned (a new run of
/// the command uploads again), so nothing stays staged for nobody.
async fn commit(remote: &Remote, path: &str, body: Value, files: &[Value]) -> Result<Value> {
    let r = remote.call("POST", path, Some(body)).await;
    if r.is_err() {
        crate::transfer_cmd::abandon(remote, files).await;
    }
    r
}

async fn send<I>(io: I, req: hyper::Request<ReqBody>) -> Result<hyper::Response<hyper::body::Incoming>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(conn);
    Ok(sender.send_request(req).await?)
}

/// Runs one CLI command against the server, when the API serves it.
pub async fn run_remote(remote: &Remote, cmd: &crate::Command, out: &Out) -> Result<i32> {
    use crate::Command as C;
    use crate::access_cmd::{GrantCmd, KeyCmd, PrincipalCmd, TokenCmd};
    use crate::artifact_cmd::ArtifactCmd;
    use crate::audit_cmd::AuditCmd;
    use crate::data_cmd::DataCmd;
    use crate::model_cmd::ModelCmd;
    use crate::monitor_cmd::{IncidentCmd, MonitorCmd};
    use crate::pipeline_cmd::{RunsCmd, SecretCmd};
    use crate::scan_cmd::AllowlistCmd;
    use crate::serve_cmd::DeployCmd;
    use crate::transfer_cmd as tx;
    let enc = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    let seg = |s: &str| -> Result<String> {
        if enc(s) && s != "." && s != ".." {
            Ok(s.to_string())
        } else {
            bail!("{s:?} is not a name (letters, digits, . _ -)")
        }
    };
    let v = match cmd {
        C::Model(ModelCmd::Ls { name: None }) => remote.call("GET", "/api/v1/models", None).await?,
        C::Model(ModelCmd::Ls { name: Some(name) }) => {
            remote.call("GET", &format!("/api/v1/models/{}/versions", seg(name)?), None).await?
        }
        C::Model(ModelCmd::History { name, at: None }) => {
            remote.call("GET", &format!("/api/v1/models/{}/history", seg(name)?), None).await?
        }
        C::Model(ModelCmd::Requests { all }) => {
            remote.call("GET", &format!("/api/v1/stage-requests?pending={}", !all), None).await?
        }
        C::Model(ModelCmd::Promote { model, to, .. }) => {
            let body = serde_json::json!({"model": model.name, "version": model.version, "to": to});
            remote.call("POST", "/api/v1/stage-requests", Some(body)).await?
        }
        C::Model(ModelCmd::Approve { request, note }) => {
            let path = format!("/api/v1/stage-requests/{}/approve", seg(request)?);
            remote.call("POST", &path, Some(serde_json::json!({"note": note}))).await?
        }
        C::Model(ModelCmd::Reject { request, note }) => {
            let path = format!("/api/v1/stage-requests/{}/reject", seg(request)?);
            remote.call("POST", &path, Some(serde_json::json!({"note": note}))).await?
        }
        C::Data(DataCmd::Ls) => remote.call("GET", "/api/v1/datasets", None).await?,
        C::Data(DataCmd::Versions { name }) => {
            remote.call("GET", &format!("/api/v1/datasets/{}/versions", seg(name)?), None).await?
        }
        C::Deploy(DeployCmd::Ls) => remote.call("GET", "/api/v1/deployments", None).await?,
        C::Deploy(DeployCmd::Set { name, strategy, targets, active, sticky_header, shadow_fraction, monitoring }) => {
            let spec = crate::serve_cmd::deployment_spec(
                strategy,
                targets,
                active.clone(),
                sticky_header.clone(),
                *shadow_fraction,
                monitoring.as_deref(),
            )?;
            remote
                .call("PUT", &format!("/api/v1/deployments/{}", seg(name)?), Some(serde_json::to_value(&spec)?))
                .await?
        }
        C::Deploy(DeployCmd::Switch { name, label }) => {
            let body = serde_json::json!({"label": label});
            remote.call("POST", &format!("/api/v1/deployments/{}/switch", seg(name)?), Some(body)).await?
        }
        C::Deploy(DeployCmd::Rollback { name, to }) => {
            let body = serde_json::json!({"to": to});
            remote.call("POST", &format!("/api/v1/deployments/{}/rollback", seg(name)?), Some(body)).await?
        }
        C::Deploy(DeployCmd::Rm { name }) => {
            remote.call("DELETE", &format!("/api/v1/deployments/{}", seg(name)?), None).await?
        }
        C::Secret(SecretCmd::Ls) => remote.call("GET", "/api/v1/secrets", None).await?,
        C::Model(ModelCmd::Retire { model, reason, .. }) => {
            let path = format!("/api/v1/models/{}/versions/{}/retire", tx::enc(&model.name), model.version);
            remote.call("POST", &path, Some(serde_json::json!({"reason": reason}))).await?
        }
        C::Model(ModelCmd::Rollback { name }) => {
            remote.call("POST", &format!("/api/v1/models/{}/rollback", tx::enc(name)), None).await?
        }
        C::Model(ModelCmd::Bom { model, .. }) => {
            let path = format!("/api/v1/models/{}/versions/{}/bom", tx::enc(&model.name), model.version);
            // The BOM is a document: printed as it came, whatever the flags.
            let bom = remote.call("GET", &path, None).await?;
            outln!("{}", serde_json::to_string_pretty(&bom).unwrap_or_default());
            return Ok(0);
        }
        C::Model(ModelCmd::PublicKey) => {
            let v = remote.call("GET", "/api/v1/signing-key", None).await?;
            out.emit(&v, || v["public_key_pem"].as_str().unwrap_or_default().trim_end().to_string());
            return Ok(0);
        }
        C::Data(DataCmd::Release { reference, note }) => {
            let (name, version) = name_at_version(reference)?;
            let path = format!("/api/v1/datasets/{}/versions/{version}/release", tx::enc(name));
            remote.call("POST", &path, Some(serde_json::json!({"note": note}))).await?
        }
        C::Data(DataCmd::Diff { from, to }) => {
            remote.call("GET", &format!("/api/v1/dataset-diff?from={}&to={}", tx::enc(from), tx::enc(to)), None).await?
        }
        C::Incident(IncidentCmd::Undo { id }) => {
            remote.call("POST", &format!("/api/v1/incidents/{}/undo", seg(id)?), None).await?
        }
        C::Runs(RunsCmd::Ls { limit }) => remote.call("GET", &format!("/api/v1/runs?limit={limit}"), None).await?,
        C::Runs(RunsCmd::Show { id }) => remote.call("GET", &format!("/api/v1/runs/{}", seg(id)?), None).await?,
        C::Gc { grace } => {
            remote.call("POST", "/api/v1/store/gc", Some(serde_json::json!({"grace_secs": grace}))).await?
        }
        C::Fsck => remote.call("POST", "/api/v1/store/fsck", None).await?,
        C::Subject(cmd) => return crate::subject_cmd::run_subject_remote(remote, cmd, out).await,
        C::Run { pipeline } => return crate::pipeline_cmd::run_pipeline_remote(remote, pipeline, out).await,
        C::Report { output, pdf } => {
            // The server gathers and verifies the evidence; the report is drawn here.
            let v = remote.call("GET", "/api/v1/report", None).await?;
            let evidence: citadel_control::ComplianceEvidence = serde_json::from_value(v).map_err(|e| {
                anyhow!("the server's evidence does not parse ({e})\nhint: use a CLI of the server's version")
            })?;
            return crate::report_cmd::write_report(&evidence, output, *pdf, out);
        }
        C::Secret(SecretCmd::Rm { name }) => {
            remote.call("DELETE", &format!("/api/v1/secrets/{}", seg(name)?), None).await?
        }
        C::Secret(SecretCmd::Set { name }) => {
            let value = crate::pipeline_cmd::read_secret_value(name)?;
            remote
                .call("PUT", &format!("/api/v1/secrets/{}", seg(name)?), Some(serde_json::json!({"value": value})))
                .await?
        }
        C::Principal(PrincipalCmd::List) => remote.call("GET", "/api/v1/principals", None).await?,
        C::Principal(PrincipalCmd::Create { name, kind }) => {
            remote.call("POST", "/api/v1/principals", Some(serde_json::json!({"name": name, "kind": kind}))).await?
        }
        C::Principal(PrincipalCmd::Disable { name }) => {
            remote.call("POST", &format!("/api/v1/principals/{}/disable", seg(name)?), None).await?
        }
        C::Grant(GrantCmd::Add { principal, role, scope }) | C::Grant(GrantCmd::Revoke { principal, role, scope }) => {
            let verb = if matches!(cmd, C::Grant(GrantCmd::Add { .. })) { "add" } else { "revoke" };
            let body = serde_json::json!({"principal": principal, "role": role, "scope": scope});
            remote.call("POST", &format!("/api/v1/grants/{verb}"), Some(body)).await?
        }
        C::Token(TokenCmd::Issue { principal, ttl_days, ttl_secs, label }) => {
            let body = serde_json::json!({"principal": principal, "label": label, "ttl_secs": ttl_secs.unwrap_or(ttl_days * 86_400)});
            remote.call("POST", "/api/v1/tokens", Some(body)).await?
        }
        C::Token(TokenCmd::Revoke { id }) => {
            remote.call("POST", &format!("/api/v1/tokens/{}/revoke", seg(id)?), None).await?
        }
        C::Token(TokenCmd::List) => remote.call("GET", "/api/v1/tokens", None).await?,
        C::Key(KeyCmd::List) => remote.call("GET", "/api/v1/keys", None).await?,
        C::Data(DataCmd::Show { reference, html }) => {
            let (name, version) =
                reference.rsplit_once('@').and_then(|(n, v)| v.parse::<i64>().ok().map(|v| (n, v))).ok_or_else(
                    || anyhow!("{reference:?} is not NAME@VERSION\nhint: e.g. citadel data show adult@1"),
                )?;
            let v = remote.call("GET", &format!("/api/v1/datasets/{}/versions/{version}", seg(name)?), None).await?;
            let v: citadel_control::DataVersion =
                serde_json::from_value(v).map_err(|e| anyhow!("the server's version does not parse ({e})"))?;
            return crate::data_cmd::show_version(&v, html.as_deref(), out);
        }
        C::Deploy(DeployCmd::History { name }) => {
            remote.call("GET", &format!("/api/v1/deployments/{}/history", seg(name)?), None).await?
        }
        C::Incident(IncidentCmd::Ls { all }) => {
            remote.call("GET", &format!("/api/v1/incidents?all={all}"), None).await?
        }
        C::Incident(IncidentCmd::Show { id, html: None }) => {
            remote.call("GET", &format!("/api/v1/incidents/{}", seg(id)?), None).await?
        }
        C::Incident(IncidentCmd::Ack { id, note }) => {
            let path = format!("/api/v1/incidents/{}/ack", seg(id)?);
            remote.call("POST", &path, Some(serde_json::json!({"note": note}))).await?
        }
        C::Incident(IncidentCmd::Resolve { id, note }) => {
            let path = format!("/api/v1/incidents/{}/resolve", seg(id)?);
            remote.call("POST", &path, Some(serde_json::json!({"note": note}))).await?
        }
        C::Monitor(MonitorCmd::Status { endpoint, windows, html: None }) => {
            remote.call("GET", &format!("/api/v1/monitor/{}?windows={windows}", seg(endpoint)?), None).await?
        }
        C::Lineage { reference, .. } => {
            remote.call("GET", &format!("/api/v1/lineage?reference={}", tx::enc(reference)), None).await?
        }
        C::Audit(AuditCmd::Verify) => remote.call("GET", "/api/v1/audit/verify", None).await?,
        C::Artifact(ArtifactCmd::Ls) => remote.call("GET", "/api/v1/artifacts", None).await?,
        C::Artifact(ArtifactCmd::Put { path, name, parents }) => {
            let (files, directory) = tx::upload_tree(remote, path, "artifact", name.as_deref(), out.json).await?;
            let body = serde_json::json!({"files": files, "directory": directory, "name": name, "parents": parents});
            commit(remote, "/api/v1/artifacts", body, &files).await?
        }
        C::Artifact(ArtifactCmd::Get { reference, output }) => {
            let dest = output.clone().unwrap_or_else(|| PathBuf::from(reference.replace('/', "_")));
            tx::artifact_get(remote, reference, &dest, out.json).await?
        }
        C::Data(DataCmd::Add { file, name, expect }) => {
            let spec = match expect {
                Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?),
                None => None,
            };
            let (files, _) = tx::upload_tree(remote, file, "dataset", Some(name), out.json).await?;
            if files.len() != 1 {
                bail!("{} is not one CSV or Parquet file\nhint: give the file itself", file.display());
            }
            let body = serde_json::json!({"file": files[0], "spec": spec});
            let v = commit(remote, &format!("/api/v1/datasets/{}/versions", tx::enc(name)), body, &files).await?;
            let v: citadel_control::DataVersion =
                serde_json::from_value(v).map_err(|e| anyhow!("the server's version does not parse ({e})"))?;
            return crate::data_cmd::show_version(&v, None, out);
        }
        C::Data(DataCmd::Get { reference, output, format, detokenize }) => {
            let (name, version) =
                reference.rsplit_once('@').and_then(|(n, v)| v.parse::<i64>().ok().map(|v| (n, v))).ok_or_else(
                    || anyhow!("{reference:?} is not NAME@VERSION\nhint: e.g. citadel data get adult@1 -o adult.csv"),
                )?;
            let format = format.clone().unwrap_or_else(|| {
                if output.extension().is_some_and(|e| e == "parquet") { "parquet".into() } else { "csv".into() }
            });
            tx::data_get(remote, name, version, output, &format, *detokenize, out.json).await?
        }
        C::Model(ModelCmd::Register { path, name, datasets, code_ref, params }) => {
            let params = crate::model_cmd::read_params(params.as_deref())?;
            let (files, directory) = tx::upload_tree(remote, path, "model", Some(name), out.json).await?;
            let body = serde_json::json!({"files": files, "directory": directory, "datasets": datasets, "code_ref": code_ref, "params": params});
            commit(remote, &format!("/api/v1/models/{}/versions", tx::enc(name)), body, &files).await?
        }
        C::Audit(AuditCmd::Export { format, filter }) => {
            let path = format!("/api/v1/audit/export?format={format}&{}", filter.to_query()?);
            let lines = remote.call("GET", &path, None).await?;
            for line in lines.as_array().into_iter().flatten() {
                outln!("{}", line.as_str().unwrap_or_default());
            }
            return Ok(0);
        }
        C::Audit(AuditCmd::Checkpoint) => remote.call("POST", "/api/v1/audit/checkpoint", None).await?,
        C::Allowlist(AllowlistCmd::Ls) => remote.call("GET", "/api/v1/scan/allowlist", None).await?,
        C::Allowlist(AllowlistCmd::Add { global, reason }) => {
            let body = serde_json::json!({"global": global, "reason": reason});
            remote.call("POST", "/api/v1/scan/allowlist", Some(body)).await?
        }
        C::Allowlist(AllowlistCmd::Rm { global }) => {
            remote.call("DELETE", &format!("/api/v1/scan/allowlist/{}", tx::enc(global)), None).await?
        }
        C::Audit(AuditCmd::Query { filter }) => {
            remote.call("GET", &format!("/api/v1/audit/records?{}", filter.to_query()?), None).await?
        }
        _ => bail!(
            "this command is not served by the control-plane API yet, and CITADEL_URL is set (or citadel login)\nhint: run it on the server's host without CITADEL_URL; through the server go data, model, artifact, deploy, run/runs, secret, subject, report, audit (but forward), principal, grant, token, key ls, incident, monitor status, lineage, allowlist, gc and fsck"
        ),
    };
    out.emit(&v, || render(&v));
    Ok(0)
}

/// A server's answer for people (`--json` prints it as it came): a list of
/// records as a table of their scalar fields, a record as `field: value`
/// lines; nested values are summarized (`[3]`, `{…}`).
pub(crate) fn render(v: &Value) -> String {
    const MAX_CELL: usize = 40;
    // A value as text, whole (a token, an id, a digest is never cut here).
    let text = |key: &str, v: &Value| -> String {
        let s = match v {
            Value::Null => "-".to_string(),
            Value::String(s) => s.clone(),
            // Times are microseconds since the epoch in the API's records.
            Value::Number(n) if key.ends_with("_at") && n.as_i64().is_some_and(|t| t > 1_000_000_000_000_000) => {
                citadel_types::Timestamp(n.as_i64().unwrap_or(0)).to_rfc3339()
            }
            Value::Array(a) if a.iter().all(|x| !x.is_object() && !x.is_array()) => a
                .iter()
                .map(|x| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string()))
                .collect::<Vec<_>>()
                .join(","),
            Value::Array(a) => format!("[{}]", a.len()),
            Value::Object(_) => "{…}".to_string(),
            other => other.to_string(),
        };
        s.replace(['\n', '\t'], " ")
    };
    // In a table a long cell is cut (`--json` has it whole).
    let cell = |key: &str, v: &Value| -> String {
        let s = text(key, v);
        if s.chars().count() > MAX_CELL {
            format!("{}…", s.chars().take(MAX_CELL - 1).collect::<String>())
        } else {
            s
        }
    };
    match v {
        Value::Array(rows) if rows.is_empty() => "(none)".to_string(),
        Value::Array(rows) if rows.iter().all(Value::is_object) => {
            // Columns: the fields of the first record that are not nested,
            // what names a record first.
            const FIRST: &[&str] = &[
                "id",
                "name",
                "model",
                "dataset",
                "endpoint",
                "version",
                "revision",
                "from_stage",
                "to_stage",
                "stage",
                "status",
                "kind",
            ];
            let mut columns: Vec<String> = rows[0]
                .as_object()
                .map(|o| o.iter().filter(|(_, v)| !v.is_object()).map(|(k, _)| k.clone()).collect())
                .unwrap_or_default();
            columns.sort_by_key(|c| FIRST.iter().position(|f| f == c).unwrap_or(FIRST.len()));
            columns.truncate(10);
            let table: Vec<Vec<String>> =
                rows.iter().map(|r| columns.iter().map(|c| cell(c, &r[c.as_str()])).collect()).collect();
            let widths: Vec<usize> = columns
                .iter()
                .enumerate()
                .map(|(i, c)| table.iter().map(|r| r[i].chars().count()).chain([c.len()]).max().unwrap_or(0))
                .collect();
            let line = |cells: Vec<String>| {
                cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_string()
            };
            let mut out = vec![line(columns.iter().map(|c| c.to_uppercase()).collect())];
            out.extend(table.into_iter().map(line));
            out.join("\n")
        }
        Value::Array(items) => items.iter().map(|x| text("", x)).collect::<Vec<_>>().join("\n"),
        Value::Object(o) => {
            let width = o.keys().map(String::len).max().unwrap_or(0);
            o.iter().map(|(k, v)| format!("{k:<width$}  {}", text(k, v))).collect::<Vec<_>>().join("\n")
        }
        other => text("", other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_render_as_tables_and_fields_for_people() {
        let rows = serde_json::json!([
            {"model": "fraud", "version": 1, "stage": "production", "scan": {"x": 1}, "tags": ["a", "b"]},
            {"model": "fraud", "version": 12, "stage": null, "scan": {}, "tags": []},
        ]);
        let text = render(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["MODEL", "VERSION", "STAGE", "TAGS"]);
        assert!(lines[1].contains("production") && lines[1].contains("a,b"), "{text}");
        assert_eq!(lines[2].split_whitespace().collect::<Vec<_>>(), ["fraud", "12", "-"], "{text}");
        assert!(!text.contains('{'), "nested records stay out of a table: {text}");
        let token = format!("cit_{}", "x".repeat(80));
        let one = render(
            &serde_json::json!({"id": "r-1", "token": token, "files": [{"a": 1}], "created_at": 1_796_061_592_171_077_i64}),
        );
        assert!(one.contains("r-1") && one.contains(&token) && one.contains("[1]"), "a field is never cut: {one}");
        assert!(one.contains("2026-") && !one.contains("1796061592171077"), "times are dates: {one}");
        let cut = render(&serde_json::json!([{"note": "x".repeat(100)}]));
        assert!(cut.contains('…'), "a table cell is cut: {cut}");
        assert_eq!(render(&serde_json::json!([])), "(none)");
    }
}

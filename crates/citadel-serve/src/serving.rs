//! Where a gateway's model bytes come from.
//!
//! - [`servable_onnx`]: which file of a verified model is served (exactly one
//!   `.onnx`; a pickle anywhere refuses the model). The gateway's local
//!   loading and the server's serving route share it.
//! - [`ControlClient`]: a gateway that holds no key (`citadel serve
//!   --control URL`) fetches each deployed version from `citadel server`
//!   with its serving credential (an API token of a principal with the
//!   `gateway` role, from `CITADEL_SERVING_TOKEN`). The server does the
//!   verified loading (every chunk authenticated, the digest and the
//!   signature checked) and answers only for versions a live deployment
//!   targets; the gateway checks the bytes against the SHA-256 the server
//!   states and never sees a key, a dataset or a secret.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::BodyExt;

use crate::ServeError;
use crate::tls::TlsClient;

/// The largest model a gateway fetches (bytes); the server's answer is
/// refused past it.
pub const MAX_MODEL_BYTES: usize = 4 << 30;

/// The one file of a verified model (`path`: a file or a directory) that is
/// served; an error says why there is none.
pub fn servable_onnx(path: &Path) -> Result<PathBuf, String> {
    if path.is_dir() {
        let files: Vec<_> =
            std::fs::read_dir(path).map_err(|e| e.to_string())?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        if let Some(p) = files.iter().find(|p| is_pickle(p)) {
            return Err(format!(
                "{} holds pickled weights; models with pickles are never loaded (export to ONNX)",
                p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
            ));
        }
        let onnx: Vec<_> = files.into_iter().filter(|p| p.extension().is_some_and(|x| x == "onnx")).collect();
        match onnx.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(format!("the model holds {} .onnx files; exactly one is served", onnx.len())),
        }
    } else if is_pickle(path) {
        Err("the model is pickled; models with pickles are never loaded (export to ONNX)".into())
    } else {
        Ok(path.to_path_buf())
    }
}

/// Pickle files by name (pickle, joblib, PyTorch) or by content (a pickle
/// protocol 2+ header).
pub(crate) fn is_pickle(p: &Path) -> bool {
    let ext = p.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    if matches!(ext.as_str(), "pkl" | "pickle" | "joblib" | "pt" | "pth" | "ckpt" | "sav") {
        return true;
    }
    let mut head = [0u8; 2];
    let read = std::fs::File::open(p).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head));
    read.is_ok() && head[0] == 0x80 && (2..=5).contains(&head[1])
}

/// A served model's bytes as the server verified them.
#[derive(Debug)]
pub struct FetchedModel {
    pub bytes: Vec<u8>,
    /// The signed root digest of the version's files.
    pub root_digest: String,
}

/// The gateway's client of `citadel server` (see the module docs).
pub struct ControlClient {
    host: String,
    port: u16,
    tls: Option<TlsClient>,
    token: citadel_types::Redacted<String>,
}

impl std::fmt::Debug for ControlClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlClient").field("host", &self.host).field("port", &self.port).finish_non_exhaustive()
    }
}

impl ControlClient {
    /// `url`: `https://HOST:PORT` (its certificate checked against `ca`, or
    /// the system's roots), or `http://` to a literal loopback address.
    pub fn new(url: &str, ca: Option<&Path>, token: String) -> Result<ControlClient, ServeError> {
        let bad = |m: &str| ServeError::Config(format!("--control {url:?}: {m}"));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("not a URL (https://HOST:PORT)"))?;
        let hostport = rest.split('/').next().unwrap_or(rest);
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => {
                (h.trim_matches(|c| c == '[' || c == ']').to_string(), p.parse().map_err(|_| bad("bad port"))?)
            }
            None => (hostport.to_string(), if scheme == "https" { 443 } else { 80 }),
        };
        let tls = match scheme {
            "https" => {
                let ca = ca.map(Path::to_path_buf).unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into());
                Some(crate::tls::client_connector(&ca)?)
            }
            "http" if host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()) => None,
            "http" => return Err(bad("plain http only to a loopback address; use https")),
            _ => return Err(bad("use https:// (or http:// on loopback)")),
        };
        if token.is_empty() {
            return Err(ServeError::Config(
                "--control needs the gateway's serving credential in CITADEL_SERVING_TOKEN — hint: citadel principal create gw --kind service; citadel grant add gw gateway; citadel token issue gw".into(),
            ));
        }
        Ok(ControlClient { host, port, tls, token: citadel_types::Redacted::new(token) })
    }

    /// The served file of `name` version `version`, from the server.
    pub async fn fetch_model(&self, name: &str, version: i64) -> Result<FetchedModel, String> {
        let enc: String = name
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let path = format!("/api/v1/serving/models/{enc}/versions/{version}");
        let req = hyper::Request::get(path.as_str())
            .header(hyper::header::HOST, format!("{}:{}", self.host, self.port))
            .header(hyper::header::AUTHORIZATION, format!("Bearer {}", self.token.expose()))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let resp = match &self.tls {
                Some(tls) => {
                    let io = tls.connect(&self.host, self.port).await.map_err(|e| e.to_string())?;
                    send(hyper_util::rt::TokioIo::new(io), req).await?
                }
                None => {
                    let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                        .await
                        .map_err(|e| format!("connecting to the control plane: {e}"))?;
                    send(hyper_util::rt::TokioIo::new(tcp), req).await?
                }
            };
            let status = resp.status();
            let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
            let (sha, root) = (header("x-citadel-sha256"), header("x-citadel-root-digest"));
            let body = http_body_util::Limited::new(resp.into_body(), MAX_MODEL_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the model from the control plane: {e}"))?
                .to_bytes();
            if !status.is_success() {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                return Err(format!(
                    "the control plane answered {status}: {}",
                    v["error"].as_str().unwrap_or("no message")
                ));
            }
            let (Some(sha), Some(root_digest)) = (sha, root) else {
                return Err("the control plane's answer names no digest".into());
            };
            let actual = citadel_types::Digest::of(&body).to_hex();
            if actual != sha {
                return Err(format!("the model's bytes have SHA-256 {actual}, not the {sha} the control plane stated"));
            }
            Ok(FetchedModel { bytes: body.to_vec(), root_digest })
        };
        tokio::time::timeout(Duration::from_secs(600), exchange)
            .await
            .map_err(|_| "the control plane did not send the model within 600 s".to_string())?
    }
}

/// Percent-encodes `s` for one URL path segment or query value (RFC 3986:
/// everything but unreserved characters).
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn send<I>(
    io: I,
    req: hyper::Request<http_body_util::Empty<bytes::Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    sender.send_request(req).await.map_err(|e| format!("calling the control plane: {e}"))
}

//! `citadel audit forward`: the audit log streamed to a SIEM as it grows.
//!
//! Destinations: `syslog+tls://HOST:PORT` (RFC 5425: RFC 5424 messages,
//! octet-counted, over TLS trusting `--ca`), `syslog+udp://HOST:PORT`
//! (RFC 5426: one message a datagram), `syslog+tcp://HOST:PORT` (loopback
//! only: plain text), and `https://HOST:PORT/PATH`: a webhook receiving
//! each batch as one JSON array (POST, `Idempotency-Key: NAME-FIRST-LAST`,
//! a bearer token from `CITADEL_SIEM_TOKEN`), acknowledged by a 2xx. The
//! message body is the record as JSON, CEF or OCSF.
//!
//! Delivery is at least once, with a durable cursor per destination name
//! (`audit_forward_cursors`, bound to one `scheme://host:port`). Each
//! batch goes over its own connection: a webhook's 2xx confirms it; over
//! syslog (TCP or TLS), which has no acknowledgement, the forwarder closes
//! its side (TLS close_notify) and waits for the receiver to close, which a
//! receiver does after reading everything; only then does the cursor move.
//! A receiver that dies first gets the batch again (receivers deduplicate
//! by `seq`, in the structured data). UDP has no delivery signal at all:
//! it is best effort, and clear text, so a non-loopback host needs
//! `--allow-cleartext`.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use citadel_audit::ExportFormat;
use citadel_control::{Caller, Workspace};
use tokio::io::AsyncWriteExt;

use crate::Out;

/// Records read and sent at once.
const BATCH: i64 = 500;

#[derive(clap::Args, Debug, Clone)]
pub struct ForwardArgs {
    /// syslog+tls://HOST:PORT, syslog+udp://HOST:PORT, syslog+tcp://127.0.0.1:PORT,
    /// or https://HOST:PORT/PATH (a webhook; bearer token from CITADEL_SIEM_TOKEN)
    #[arg(long)]
    to: String,
    /// The destination's name, under which its cursor is kept
    #[arg(long, default_value = "siem")]
    name: String,
    /// The message body
    #[arg(long, default_value = "jsonl", value_parser = ["jsonl", "cef", "ocsf"])]
    format: String,
    /// PEM CA that the TLS receiver's (syslog or webhook) certificate must chain to
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    /// Keep forwarding new records as they are written (else stop when caught up)
    #[arg(long)]
    follow: bool,
    /// How often to look for new records with --follow (ms)
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Allow syslog over UDP to a host other than loopback (clear text, unconfirmed)
    #[arg(long)]
    allow_cleartext: bool,
}

enum Dest {
    Tls { host: String, port: u16, connector: citadel_serve::tls::TlsClient },
    Tcp { host: String, port: u16 },
    Udp { host: String, port: u16 },
    Webhook { host: String, port: u16, path: String, tls: Option<citadel_serve::tls::TlsClient>, token: Option<String> },
}

/// The destination and its identity (`scheme://host:port`: what the
/// cursor is bound to and the audit log names; never a path, which may
/// hold a webhook's secret).
fn parse_dest(args: &ForwardArgs) -> Result<(Dest, String)> {
    // Nothing of --to is echoed in errors: a URL may carry a secret.
    if args.to.contains(['@', '?', '#']) {
        bail!(
            "--to must hold no credentials, query or fragment\nhint: a webhook token belongs in CITADEL_SIEM_TOKEN, not the URL"
        );
    }
    let (scheme, rest) = args.to.split_once("://").ok_or_else(|| {
        anyhow!("--to is not a destination\nhint: write syslog+tls://HOST:PORT, syslog+udp://HOST:PORT or https://HOST:PORT/PATH")
    })?;
    if !matches!(scheme, "syslog+tls" | "syslog+udp" | "syslog+tcp" | "https" | "http") {
        bail!("unknown destination scheme {scheme:?}\nhint: use syslog+tls, syslog+udp, syslog+tcp or https");
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let (host, port) = authority.rsplit_once(':').ok_or_else(|| {
        anyhow!("--to lacks a port\nhint: syslog over TLS listens on 6514, over UDP on 514, a webhook on 443")
    })?;
    let port: u16 = port.parse().map_err(|_| anyhow!("--to: the port is not a number"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    if host.is_empty() {
        bail!("--to lacks a host");
    }
    let loopback = host == "127.0.0.1" || host == "::1" || host == "localhost";
    let id = format!("{scheme}://{}:{port}", if host.contains(':') { format!("[{host}]") } else { host.clone() });
    if args.ca.is_some() && !matches!(scheme, "syslog+tls" | "https") {
        bail!("--ca applies to TLS destinations (syslog+tls, https), not {scheme}");
    }
    let dest = match scheme {
        "syslog+tls" => {
            let ca = args
                .ca
                .as_deref()
                .ok_or_else(|| anyhow!("syslog over TLS needs the receiver's CA\nhint: pass --ca FILE (PEM)"))?;
            Dest::Tls { host, port, connector: citadel_serve::tls::client_connector(ca)? }
        }
        "syslog+tcp" if loopback => Dest::Tcp { host, port },
        "syslog+tcp" => {
            bail!("plain TCP crosses the network in clear text; use syslog+tls (only loopback may be plain)")
        }
        "syslog+udp" if loopback || args.allow_cleartext => Dest::Udp { host, port },
        "syslog+udp" => bail!(
            "syslog over UDP crosses the network in clear text and unconfirmed\nhint: use syslog+tls, or pass --allow-cleartext to accept that"
        ),
        _ => {
            let tls = match (scheme, &args.ca) {
                ("https", Some(ca)) => Some(citadel_serve::tls::client_connector(ca)?),
                ("https", None) => bail!("a webhook over HTTPS needs the receiver's CA\nhint: pass --ca FILE (PEM)"),
                _ if loopback => None,
                _ => bail!("plain HTTP crosses the network in clear text; use https (only loopback may be plain)"),
            };
            let token = std::env::var("CITADEL_SIEM_TOKEN").ok().filter(|t| !t.is_empty());
            Dest::Webhook { host, port, path, tls, token }
        }
    };
    Ok((dest, id))
}

/// One open connection to the destination.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

enum Conn {
    Stream(Box<dyn Io>),
    Udp(tokio::net::UdpSocket),
    Http(hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>),
}

/// An HTTP/1.1 connection over `io`, its driver spawned.
async fn http<T>(io: T) -> Result<Conn>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
    tokio::spawn(conn);
    Ok(Conn::Http(send))
}

async fn connect(dest: &Dest) -> Result<Conn> {
    let timeout = Duration::from_secs(10);
    Ok(match dest {
        Dest::Tls { host, port, connector } => {
            let tls = tokio::time::timeout(timeout, connector.connect(host, *port))
                .await
                .context("connecting to the receiver timed out")??;
            Conn::Stream(Box::new(tls))
        }
        Dest::Tcp { host, port } => {
            Conn::Stream(Box::new(tokio::net::TcpStream::connect((host.as_str(), *port)).await?))
        }
        Dest::Webhook { host, port, tls: Some(tls), .. } => {
            let stream = tokio::time::timeout(timeout, tls.connect(host, *port))
                .await
                .context("connecting to the receiver timed out")??;
            http(stream).await?
        }
        Dest::Webhook { host, port, tls: None, .. } => {
            http(tokio::net::TcpStream::connect((host.as_str(), *port)).await?).await?
        }
        Dest::Udp { host, port } => {
            let s = tokio::net::UdpSocket::bind(if host.contains(':') { "[::]:0" } else { "0.0.0.0:0" }).await?;
            s.connect((host.as_str(), *port)).await?;
            Conn::Udp(s)
        }
    })
}

/// How long one write, flush or answer may take.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

async fn timed<T>(what: &str, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(IO_TIMEOUT, f).await.map_err(|_| anyhow!("{what} took longer than {IO_TIMEOUT:?}"))?
}

impl Conn {
    /// Sends one batch; Ok once the destination confirmed it (see the module docs).
    async fn deliver(
        mut self,
        dest: &Dest,
        name: &str,
        batch: &[citadel_audit::AuditRecord],
        format: ExportFormat,
        hostname: &str,
    ) -> Result<()> {
        match &mut self {
            Conn::Http(send) => {
                let Dest::Webhook { host, port, path, token, .. } = dest else { bail!("not a webhook") };
                let items: Vec<serde_json::Value> = batch
                    .iter()
                    .map(|r| {
                        let text = citadel_audit::encode_record(r, format);
                        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
                    })
                    .collect();
                let first = batch.first().map_or(0, |r| r.seq);
                let last = batch.last().map_or(0, |r| r.seq);
                let authority = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
                let mut req = hyper::Request::post(path.as_str())
                    .header(hyper::header::HOST, authority)
                    .header(hyper::header::CONTENT_TYPE, "application/json")
                    .header("idempotency-key", format!("{name}-{first}-{last}"));
                if let Some(t) = token {
                    req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
                }
                let body = http_body_util::Full::new(bytes::Bytes::from(serde_json::to_vec(&items)?));
                timed("the webhook connection", async { Ok(send.ready().await?) }).await?;
                let res =
                    timed("the webhook's answer", async { Ok(send.send_request(req.body(body)?).await?) }).await?;
                if !res.status().is_success() {
                    bail!("the webhook answered {} to records {first} to {last}", res.status());
                }
            }
            Conn::Stream(s) => {
                use tokio::io::AsyncReadExt;
                for r in batch {
                    let frame = citadel_audit::octet_counted(&citadel_audit::rfc5424(r, hostname, format));
                    timed("writing to the receiver", async { Ok(s.write_all(&frame).await?) }).await?;
                }
                timed("writing to the receiver", async { Ok(s.flush().await?) }).await?;
                // Our close, then the receiver's: it closes once it has read everything.
                timed("closing the connection", async { Ok(s.shutdown().await?) }).await?;
                let mut sink = [0u8; 512];
                timed("the receiver's close", async {
                    while s.read(&mut sink).await? > 0 {}
                    Ok(())
                })
                .await?;
            }
            Conn::Udp(sock) => {
                // A datagram carries at most 65,507 bytes; a longer message is cut at a character
                // boundary. Paced (1 ms every 32 datagrams): a burst would overrun the receiver's buffer.
                for (i, r) in batch.iter().enumerate() {
                    if i % 32 == 31 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    let msg = citadel_audit::rfc5424(r, hostname, format);
                    let mut end = msg.len().min(65_000);
                    while !msg.is_char_boundary(end) {
                        end -= 1;
                    }
                    timed("sending a datagram", async { Ok(sock.send(&msg.as_bytes()[..end]).await?) }).await?;
                }
            }
        }
        Ok(())
    }
}

/// Forwards until caught up (or forever with --follow).
pub async fn run(ws: &Workspace, caller: &Caller, args: ForwardArgs, out: &Out) -> Result<i32> {
    let format: ExportFormat = args.format.parse().map_err(|e: String| anyhow!(e))?;
    let (dest, id) = parse_dest(&args)?;
    let hostname = hostname();
    let mut cursor = ws.audit_forward_start(caller, &args.name, &id).await?;
    let start = cursor;
    let mut backoff = Duration::from_millis(500);
    let mut sent = 0u64;
    loop {
        let batch = ws.audit_forward_batch(caller, cursor, BATCH).await?;
        if batch.is_empty() {
            if !args.follow {
                break;
            }
            tokio::time::sleep(Duration::from_millis(args.interval_ms.max(50))).await;
            continue;
        }
        let last = batch.last().map_or(cursor, |r| r.seq);
        let attempt = async { connect(&dest).await?.deliver(&dest, &args.name, &batch, format, &hostname).await }.await;
        match attempt {
            Ok(()) => {
                ws.audit_forward_ack(caller, &args.name, last).await?;
                cursor = last;
                sent += batch.len() as u64;
                backoff = Duration::from_millis(500);
            }
            Err(e) if args.follow => {
                eprintln!("citadel audit forward: {e:#}; resending from record {} in {backoff:?}", cursor + 1);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(e) => {
                return Err(e.context(format!(
                    "forwarding stopped; {} has every record up to {cursor} (the next run resends from {})",
                    args.name,
                    cursor + 1
                )));
            }
        }
    }
    let v = serde_json::json!({"destination": args.name, "to": id, "from_seq": start, "to_seq": cursor, "sent": sent});
    let verb = if matches!(dest, Dest::Udp { .. }) { "sent (UDP: unconfirmed)" } else { "delivered" };
    out.emit(&v, || format!("{}: records {} to {cursor} {verb} to {id} ({sent} sent)", args.name, start + 1));
    Ok(0)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "-".into())
}

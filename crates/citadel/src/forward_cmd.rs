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
//! Delivery is at-least-once with a durable cursor per destination name
//! (`audit_forward_cursors`). A webhook's 2xx confirms its batch. Syslog
//! has no acknowledgement, so a batch
//! counts as delivered only once the next write on the same connection
//! succeeded after it, or the connection was closed cleanly (TLS
//! close_notify, TCP shutdown); after a failure the forwarder resends from
//! the cursor, so a receiver that died with records in its buffers gets
//! them again. Receivers deduplicate by `seq` (in the structured data).

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
}

enum Dest {
    Tls { host: String, port: u16, connector: citadel_serve::tls::TlsClient },
    Tcp { host: String, port: u16 },
    Udp { host: String, port: u16 },
    Webhook { host: String, port: u16, path: String, tls: Option<citadel_serve::tls::TlsClient>, token: Option<String> },
}

fn parse_dest(args: &ForwardArgs) -> Result<Dest> {
    let (scheme, rest) = args.to.split_once("://").ok_or_else(|| {
        anyhow!("--to {:?} is not a destination\nhint: write syslog+tls://HOST:PORT or syslog+udp://HOST:PORT", args.to)
    })?;
    if !matches!(scheme, "syslog+tls" | "syslog+udp" | "syslog+tcp" | "https" | "http") {
        bail!("unknown destination scheme {scheme:?}\nhint: use syslog+tls, syslog+udp, syslog+tcp or https");
    }
    let (rest, path) = match (scheme, rest.find('/')) {
        ("https" | "http", Some(i)) => (&rest[..i], rest[i..].to_string()),
        ("https" | "http", None) => (rest, "/".to_string()),
        _ => (rest, String::new()),
    };
    if path.contains('?') {
        bail!("--to must hold no query (a token belongs in CITADEL_SIEM_TOKEN, not the URL)");
    }
    let (host, port) = rest.trim_end_matches('/').rsplit_once(':').ok_or_else(|| {
        anyhow!("--to {:?} lacks a port\nhint: syslog over TLS listens on 6514, over UDP on 514", args.to)
    })?;
    if host.contains('@') {
        bail!("--to must hold no credentials");
    }
    let port: u16 = port.parse().map_err(|_| anyhow!("--to {:?}: the port is not a number", args.to))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    Ok(match scheme {
        "syslog+tls" => {
            let ca = args
                .ca
                .as_deref()
                .ok_or_else(|| anyhow!("syslog over TLS needs the receiver's CA\nhint: pass --ca FILE (PEM)"))?;
            Dest::Tls { host, port, connector: citadel_serve::tls::client_connector(ca)? }
        }
        "syslog+tcp" if host == "127.0.0.1" || host == "::1" || host == "localhost" => Dest::Tcp { host, port },
        "syslog+tcp" => {
            bail!("plain TCP crosses the network in clear text; use syslog+tls (only loopback may be plain)")
        }
        "syslog+udp" => Dest::Udp { host, port },
        "https" | "http" => {
            let loopback = host == "127.0.0.1" || host == "::1" || host == "localhost";
            let tls = match (scheme, &args.ca) {
                ("https", Some(ca)) => Some(citadel_serve::tls::client_connector(ca)?),
                ("https", None) => bail!("a webhook over HTTPS needs the receiver's CA\nhint: pass --ca FILE (PEM)"),
                _ if loopback => None,
                _ => bail!("plain HTTP crosses the network in clear text; use https (only loopback may be plain)"),
            };
            let token = std::env::var("CITADEL_SIEM_TOKEN").ok().filter(|t| !t.is_empty());
            Dest::Webhook { host, port, path, tls, token }
        }
        other => bail!("unknown destination scheme {other:?}\nhint: use syslog+tls, syslog+udp or syslog+tcp"),
    })
}

/// One open connection to the destination.
enum Conn {
    Stream(Box<dyn tokio::io::AsyncWrite + Unpin + Send>),
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

impl Conn {
    /// Posts a batch to a webhook; Ok once it answered 2xx.
    async fn post(
        &mut self,
        dest: &Dest,
        name: &str,
        batch: &[citadel_audit::AuditRecord],
        format: ExportFormat,
    ) -> Result<()> {
        let (Conn::Http(send), Dest::Webhook { host, path, token, .. }) = (self, dest) else {
            bail!("not a webhook");
        };
        let items: Vec<serde_json::Value> = batch
            .iter()
            .map(|r| {
                let text = citadel_audit::encode_record(r, format);
                serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
            })
            .collect();
        let first = batch.first().map_or(0, |r| r.seq);
        let last = batch.last().map_or(0, |r| r.seq);
        let mut req = hyper::Request::post(path.as_str())
            .header(hyper::header::HOST, host.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", format!("{name}-{first}-{last}"));
        if let Some(t) = token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = serde_json::to_vec(&items)?;
        let res = tokio::time::timeout(
            Duration::from_secs(30),
            send.send_request(req.body(http_body_util::Full::new(bytes::Bytes::from(body)))?),
        )
        .await
        .context("the webhook did not answer within 30 s")??;
        if !res.status().is_success() {
            bail!("the webhook answered {} to records {first} to {last}", res.status());
        }
        Ok(())
    }

    async fn send(&mut self, msg: &str) -> Result<()> {
        match self {
            Conn::Http(_) => bail!("a webhook takes batches"),
            Conn::Stream(s) => s.write_all(&citadel_audit::octet_counted(msg)).await?,
            Conn::Udp(s) => {
                // A datagram carries at most 65,507 bytes; RFC 5426 receivers must take 480, should take 2,048.
                let bytes = msg.as_bytes();
                s.send(&bytes[..bytes.len().min(65_000)]).await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        if let Conn::Stream(s) = self {
            s.flush().await?;
        }
        Ok(())
    }

    fn acknowledges(&self) -> bool {
        matches!(self, Conn::Http(_))
    }

    async fn close(self) -> Result<()> {
        if let Conn::Stream(mut s) = self {
            s.shutdown().await?;
        }
        Ok(())
    }
}

/// Forwards until caught up (or forever with --follow). Returns how many records were sent.
pub async fn run(ws: &Workspace, caller: &Caller, args: ForwardArgs, out: &Out) -> Result<i32> {
    let format: ExportFormat = args.format.parse().map_err(|e: String| anyhow!(e))?;
    let dest = parse_dest(&args)?;
    let hostname = hostname();
    let mut cursor = ws.audit_forward_start(caller, &args.name, &args.to).await?;
    let start = cursor;
    let mut backoff = Duration::from_millis(500);
    let mut sent = 0u64;
    loop {
        // One connection: records are sent from the durable cursor on.
        let attempt: Result<bool> = async {
            let mut conn = connect(&dest).await?;
            let mut position = cursor;
            // The last batch written but not yet confirmed by a later write or a clean close.
            let mut pending: Option<i64> = None;
            loop {
                let batch = ws.audit_forward_batch(caller, position, BATCH).await?;
                if batch.is_empty() {
                    if let Some(seq) = pending.take() {
                        if !args.follow {
                            conn.close().await?;
                            ws.audit_forward_ack(caller, &args.name, seq).await?;
                            cursor = seq;
                            return Ok(true);
                        }
                        // Idle with --follow: a clean close confirms, then reconnect.
                        conn.close().await?;
                        ws.audit_forward_ack(caller, &args.name, seq).await?;
                        cursor = seq;
                        conn = connect(&dest).await?;
                    }
                    if !args.follow {
                        conn.close().await?;
                        return Ok(true);
                    }
                    tokio::time::sleep(Duration::from_millis(args.interval_ms.max(50))).await;
                    continue;
                }
                let last = batch.last().map(|r| r.seq).unwrap_or(position);
                if conn.acknowledges() {
                    // The receiver's 2xx confirms this batch itself.
                    conn.post(&dest, &args.name, &batch, format).await?;
                    ws.audit_forward_ack(caller, &args.name, last).await?;
                    cursor = last;
                    sent += batch.len() as u64;
                    position = last;
                    continue;
                }
                for r in &batch {
                    conn.send(&citadel_audit::rfc5424(r, &hostname, format)).await?;
                }
                conn.flush().await?;
                // This batch's writes succeeded after the previous one: that one is delivered.
                if let Some(seq) = pending {
                    ws.audit_forward_ack(caller, &args.name, seq).await?;
                    cursor = seq;
                }
                sent += batch.len() as u64;
                pending = Some(last);
                position = last;
            }
        }
        .await;
        match attempt {
            Ok(_) => break,
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
    let v = serde_json::json!({"destination": args.name, "from_seq": start, "to_seq": cursor, "sent": sent});
    out.emit(&v, || format!("{}: records {} to {cursor} delivered ({sent} sent)", args.name, start + 1));
    Ok(0)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "-".into())
}

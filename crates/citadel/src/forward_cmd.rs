//! `citadel audit forward`: the audit log streamed to a SIEM as it grows.
//!
//! Destinations: `syslog+tls://HOST:PORT` (RFC 5425: RFC 5424 messages,
//! octet-counted, over TLS trusting `--ca`), `syslog+udp://HOST:PORT`
//! (RFC 5426: one message a datagram), `syslog+tcp://HOST:PORT` (loopback
//! only: plain text). The message body is the record as JSON, CEF or OCSF.
//!
//! Delivery is at-least-once with a durable cursor per destination name
//! (`audit_forward_cursors`). Syslog has no acknowledgement, so a batch
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
    /// syslog+tls://HOST:PORT, syslog+udp://HOST:PORT, or syslog+tcp://127.0.0.1:PORT
    #[arg(long)]
    to: String,
    /// The destination's name, under which its cursor is kept
    #[arg(long, default_value = "siem")]
    name: String,
    /// The message body
    #[arg(long, default_value = "jsonl", value_parser = ["jsonl", "cef", "ocsf"])]
    format: String,
    /// PEM CA that the TLS receiver's certificate must chain to
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
}

fn parse_dest(args: &ForwardArgs) -> Result<Dest> {
    let (scheme, rest) = args.to.split_once("://").ok_or_else(|| {
        anyhow!("--to {:?} is not a destination\nhint: write syslog+tls://HOST:PORT or syslog+udp://HOST:PORT", args.to)
    })?;
    if !matches!(scheme, "syslog+tls" | "syslog+udp" | "syslog+tcp") {
        bail!("unknown destination scheme {scheme:?}\nhint: use syslog+tls, syslog+udp or syslog+tcp");
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
        other => bail!("unknown destination scheme {other:?}\nhint: use syslog+tls, syslog+udp or syslog+tcp"),
    })
}

/// One open connection to the destination.
enum Conn {
    Stream(Box<dyn tokio::io::AsyncWrite + Unpin + Send>),
    Udp(tokio::net::UdpSocket),
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
        Dest::Udp { host, port } => {
            let s = tokio::net::UdpSocket::bind(if host.contains(':') { "[::]:0" } else { "0.0.0.0:0" }).await?;
            s.connect((host.as_str(), *port)).await?;
            Conn::Udp(s)
        }
    })
}

impl Conn {
    async fn send(&mut self, msg: &str) -> Result<()> {
        match self {
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
                for r in &batch {
                    conn.send(&citadel_audit::rfc5424(r, &hostname, format)).await?;
                }
                conn.flush().await?;
                // This batch's writes succeeded after the previous one: that one is delivered.
                if let Some(seq) = pending {
                    ws.audit_forward_ack(caller, &args.name, seq).await?;
                    cursor = seq;
                }
                let last = batch.last().map(|r| r.seq).unwrap_or(position);
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

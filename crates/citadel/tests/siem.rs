//! `citadel audit forward` against a real rsyslog (Debian's rsyslogd with
//! its OpenSSL stream driver) on 127.0.0.1: RFC 5425 syslog over TLS and
//! RFC 5426 over UDP; the receiver killed between and during runs loses no
//! record (at least once, by the durable cursor).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// rsyslogd receiving TLS on `tls_port` and UDP on `udp_port`, writing
/// `MSGID seq=N` lines (and the CEF body of UDP messages) to `out`.
struct Rsyslog {
    child: Child,
    dir: PathBuf,
    tls_port: u16,
}

impl Rsyslog {
    fn start(dir: &Path, pki: &Pki, tls_port: u16, udp_port: u16) -> Rsyslog {
        let (cert, key, _) = pki.issue("rsyslog", false);
        let work = dir.join("work");
        std::fs::create_dir_all(&work).unwrap();
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{work}" defaultNetstreamDriver="ossl"
       defaultNetstreamDriverCAFile="{ca}" defaultNetstreamDriverCertFile="{cert}" defaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" streamDriver.name="ossl" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imtcp" address="127.0.0.1" port="{tls_port}" ruleset="siem")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{udp_port}" ruleset="siem")
template(name="line" type="string" string="%msgid% %structured-data% %msg%\n")
ruleset(name="siem") {{ action(type="omfile" file="{out}" template="line") }}
"#,
                work = work.display(),
                ca = pki.ca.display(),
                cert = cert.display(),
                key = key.display(),
                out = dir.join("received.log").display(),
            ),
        )
        .unwrap();
        let child = Command::new("rsyslogd")
            .args(["-n", "-f"])
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslog.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rsyslogd (scripts/services.sh installs rsyslog and rsyslog-openssl)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_err() {
            assert!(Instant::now() < deadline, "rsyslogd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Rsyslog { child, dir: dir.to_path_buf(), tls_port }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.dir.join("rsyslog.pid"));
    }

    /// The audit sequence numbers received so far (each line names one).
    fn received(dir: &Path) -> (Vec<i64>, String) {
        let text = std::fs::read_to_string(dir.join("received.log")).unwrap_or_default();
        let seqs = text.lines().filter_map(|l| l.split("seq=\"").nth(1)?.split('"').next()?.parse().ok()).collect();
        (seqs, text)
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every audit record's sequence number.
fn all_seqs(ws: &Ws) -> BTreeSet<i64> {
    ws.json(&["audit", "query"]).as_array().unwrap().iter().map(|r| r["seq"].as_i64().unwrap()).collect()
}

/// Waits until rsyslog has written every record of `want`.
fn wait_for(dir: &Path, want: &BTreeSet<i64>) -> Vec<i64> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (got, text) = Rsyslog::received(dir);
        let have: BTreeSet<i64> = got.iter().copied().collect();
        if want.is_subset(&have) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "records never received: {:?}\n{text}",
            want.difference(&have).take(10).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_audit_log_reaches_rsyslog_over_tls_and_udp_and_a_receiver_outage_loses_nothing() {
    let ws = Ws::new();
    for i in 0..5 {
        let f = ws.file(&format!("f{i}.bin"), &random_bytes(10_000, i));
        ws.ok(&["artifact", "put", f.to_str().unwrap()]);
    }
    let dir = ws.root.parent().unwrap().join("siem");
    std::fs::create_dir_all(&dir).unwrap();
    let pki = Pki::new(&dir);
    let (tls_port, udp_port) = (free_port(), free_port());
    let rsyslog = Rsyslog::start(&dir, &pki, tls_port, udp_port);
    let to = format!("syslog+tls://localhost:{tls_port}");
    let ca = pki.ca.to_str().unwrap().to_string();
    let forward = |extra: &[&str]| {
        let mut a = vec!["audit", "forward", "--to", &to, "--ca", &ca, "--json"];
        a.extend_from_slice(extra);
        ws.run(&a)
    };

    // Everything so far, over TLS; the session itself is audited (and forwarded next time).
    let before = all_seqs(&ws);
    let o = forward(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["from_seq"], 0);
    assert!(v["to_seq"].as_i64().unwrap() >= *before.iter().max().unwrap());
    let got = wait_for(&dir, &before);
    let (_, text) = Rsyslog::received(&dir);
    assert!(text.contains("artifact.put [citadel@32473 seq="), "{text}");
    assert!(got.len() < 2 * before.len() + 4, "a clean run sends each record about once: {} lines", got.len());

    // The receiver is down: the run fails, says how far the destination got, and moves nothing.
    let cursor = v["to_seq"].as_i64().unwrap();
    rsyslog.kill();
    for i in 5..8 {
        let f = ws.file(&format!("f{i}.bin"), &random_bytes(10_000, i));
        ws.ok(&["artifact", "put", f.to_str().unwrap()]);
    }
    let o = forward(&[]);
    assert!(!o.status.success());
    let err = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(err.contains(&format!("siem has every record up to {cursor}")), "{err}");

    // Back up: a following forwarder resends from the cursor and keeps up; killed mid-stream, nothing is lost.
    let rsyslog = Rsyslog::start(&dir, &pki, tls_port, udp_port);
    let mut follower = ws
        .cmd(&["audit", "forward", "--to", &to, "--ca", &ca, "--follow", "--interval-ms", "100"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let want = all_seqs(&ws);
    wait_for(&dir, &want);
    rsyslog.kill();
    for i in 8..12 {
        let f = ws.file(&format!("f{i}.bin"), &random_bytes(10_000, i));
        ws.ok(&["artifact", "put", f.to_str().unwrap()]);
    }
    std::thread::sleep(Duration::from_millis(500));
    let rsyslog = Rsyslog::start(&dir, &pki, tls_port, udp_port);
    let want = all_seqs(&ws);
    let got = wait_for(&dir, &want);
    let _ = follower.kill();
    let _ = follower.wait();
    let have: BTreeSet<i64> = got.into_iter().collect();
    assert!(want.is_subset(&have), "every record arrived at least once");
    assert_eq!(rsyslog.tls_port, tls_port);

    // UDP with CEF bodies, under a cursor of its own.
    let o = ws.run(&[
        "audit",
        "forward",
        "--to",
        &format!("syslog+udp://127.0.0.1:{udp_port}"),
        "--name",
        "udp",
        "--format",
        "cef",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !Rsyslog::received(&dir).1.contains("CEF:0|") {
        assert!(Instant::now() < deadline, "no CEF message over UDP");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Bad destinations are refused before anything is sent.
    for (args, said) in [
        (vec!["audit", "forward", "--to", &to], "hint: pass --ca FILE"),
        (vec!["audit", "forward", "--to", "syslog+tcp://10.1.2.3:514"], "clear text"),
        (vec!["audit", "forward", "--to", "ftp://siem.example"], "unknown destination scheme"),
        (vec!["audit", "forward", "--to", "http://siem.example:80/in"], "clear text"),
        (vec!["audit", "forward", "--to", "syslog+tls://user:pw-secret@localhost:1", "--ca", &ca], "no credentials"),
        (vec!["audit", "forward", "--to", "https://tok-secret@siem.example/in", "--ca", &ca], "no credentials"),
        (vec!["audit", "forward", "--to", "syslog+udp://192.0.2.10:514"], "--allow-cleartext"),
        // A name stays bound to its destination: pointing it elsewhere cannot skip records.
        (
            vec!["audit", "forward", "--to", "syslog+udp://127.0.0.1:9", "--name", "siem"],
            "bound to syslog+tls://localhost",
        ),
    ] {
        let o = ws.run(&args);
        let err = stderr(&o);
        assert!(!o.status.success() && err.contains(said), "{args:?}: {err}");
        assert!(!err.contains("secret"), "a secret of the URL was echoed: {err}");
    }
    // A receiver whose certificate the given CA did not sign: refused, cursor unchanged.
    std::fs::create_dir_all(dir.join("other")).unwrap();
    let other = Pki::new(&dir.join("other"));
    let o = ws.run(&["audit", "forward", "--to", &to, "--ca", other.ca.to_str().unwrap(), "--name", "other"]);
    assert!(!o.status.success() && stderr(&o).contains("certificate"), "{}", stderr(&o));

    // A webhook over HTTPS: a batch counts once the receiver answers 2xx.
    let hook_port = free_port();
    let (cert, key, _) = pki.issue("hook", false);
    let hook_out = dir.join("hook.jsonl");
    let script = dir.join("hook.py");
    std::fs::write(&script, HOOK).unwrap();
    let _hook = Receiver(
        Command::new("python3")
            .arg(&script)
            .args([hook_port.to_string(), cert.display().to_string(), key.display().to_string()])
            .arg(&hook_out)
            .arg("hook-secret")
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", hook_port)).is_err() {
        assert!(Instant::now() < deadline, "the webhook receiver did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let hook = format!("https://localhost:{hook_port}/ingest");
    let run = |token: Option<&str>| {
        let mut c = ws.cmd(&["audit", "forward", "--to", &hook, "--ca", &ca, "--name", "hook", "--format", "ocsf"]);
        match token {
            Some(t) => c.env("CITADEL_SIEM_TOKEN", t),
            None => c.env_remove("CITADEL_SIEM_TOKEN"),
        };
        c.output().unwrap()
    };
    // No token: 401, nothing confirmed. The receiver's first answer is a 503: refused, nothing confirmed.
    let o = run(None);
    assert!(!o.status.success() && stderr(&o).contains("401"), "{}", stderr(&o));
    let o = run(Some("hook-secret"));
    assert!(
        !o.status.success() && stderr(&o).contains("503") && stderr(&o).contains("hook has every record up to 0"),
        "{}",
        stderr(&o)
    );
    let o = run(Some("hook-secret"));
    assert!(o.status.success(), "{}", stderr(&o));
    let want = all_seqs(&ws);
    let lines = std::fs::read_to_string(&hook_out).unwrap();
    let mut got = BTreeSet::new();
    for line in lines.lines() {
        let (key, body) = line.split_once(' ').unwrap();
        assert!(key.starts_with("hook-"), "{key}");
        for item in serde_json::from_str::<serde_json::Value>(body).unwrap().as_array().unwrap() {
            assert_eq!(item["class_uid"], 6003, "OCSF API Activity: {item}");
            got.insert(item["metadata"]["uid"].as_str().unwrap().parse::<i64>().unwrap());
        }
    }
    let before_this_run: BTreeSet<i64> = want.iter().copied().filter(|s| *s < *want.iter().max().unwrap()).collect();
    assert!(
        before_this_run.is_subset(&got),
        "missing: {:?}",
        before_this_run.difference(&got).take(5).collect::<Vec<_>>()
    );
    // A token in the URL is refused.
    let o = ws.run(&["audit", "forward", "--to", &format!("{hook}?token=x"), "--ca", &ca]);
    assert!(!o.status.success() && stderr(&o).contains("CITADEL_SIEM_TOKEN"), "{}", stderr(&o));
}

struct Receiver(Child);

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A webhook receiver over HTTPS: wants `Bearer TOKEN`, answers 503 to the
/// first authorized batch, then appends `IDEMPOTENCY-KEY BODY` lines.
const HOOK: &str = r#"
import http.server, ssl, sys
port, cert, key, out, token = sys.argv[1:6]
state = {"failures_left": 1}
class Hook(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self, code):
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Authorization") != "Bearer " + token:
            return self.answer(401)
        if state["failures_left"] > 0:
            state["failures_left"] -= 1
            return self.answer(503)
        with open(out, "a") as f:
            f.write(self.headers.get("Idempotency-Key", "") + " " + body.decode() + "\n")
        self.answer(204)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", int(port)), Hook)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"#;

//! Helpers shared by the end-to-end tests: a fresh workspace driven through
//! the real binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const PASS: &str = "correct horse battery staple";

pub struct Ws {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    /// The metadata database, for tests that tamper with it directly.
    pub meta_url: String,
    /// Extra environment every command of this workspace gets (PIN, …).
    pub env: Vec<(String, String)>,
}

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_citadel"));
    c.env_remove("CITADEL_TOKEN").env_remove("CITADEL_WORKSPACE").env("CITADEL_PASSPHRASE", PASS);
    // No `citadel login` of the machine's user turns a test into a client.
    c.env_remove("CITADEL_URL")
        .env("XDG_CONFIG_HOME", "/nonexistent/citadel-test-config")
        .env("XDG_CACHE_HOME", std::env::temp_dir().join(format!("citadel-test-cache-{}", std::process::id())));
    c
}

impl Ws {
    pub fn new() -> Ws {
        Ws::with(&[], &[])
    }

    /// A workspace made by `citadel init` with `init_args` added, every
    /// command run with `env` added.
    pub fn with(init_args: &[&str], env: &[(&str, &str)]) -> Ws {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ws");
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let o = bin()
            .envs(env.iter().cloned())
            .args(["init", root.to_str().unwrap(), "--kdf-memory-mib", "19"])
            .args(init_args)
            .output()
            .unwrap();
        assert!(o.status.success(), "init failed: {}", String::from_utf8_lossy(&o.stderr));
        let meta_url = init_args
            .iter()
            .position(|a| *a == "--metadata-url")
            .map(|i| init_args[i + 1].to_string())
            .unwrap_or_else(|| format!("sqlite://{}", root.join("meta.db").display()));
        Ws { _dir: dir, root, meta_url, env }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = bin();
        c.envs(self.env.iter().cloned()).arg("-w").arg(&self.root).args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "{args:?} failed:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    pub fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.root.parent().unwrap().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    pub fn db_exec(&self, sql: &str) {
        let url = self.meta_url.clone();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            sqlx::any::install_default_drivers();
            let mut c = <sqlx::AnyConnection as sqlx::Connection>::connect(&url).await.unwrap();
            sqlx::Executor::execute(&mut c, sql).await.unwrap();
        });
    }

    /// The workspace opened in this process with the owner's passphrase
    /// (for tests that call the control plane directly).
    pub async fn open_in_process(&self) -> citadel_control::Workspace {
        let env = std::collections::BTreeMap::new();
        let config = citadel_control::Config::load(&self.root, &env, &env).unwrap();
        let secrets = citadel_control::Secrets {
            passphrase: Some(citadel_types::Redacted::new(PASS.to_string())),
            pkcs11_pin: None,
        };
        citadel_control::Workspace::open(config, &secrets).await.unwrap()
    }

    /// One integer a query of the metadata database answers (`COUNT(*)`, …).
    pub fn db_query_i64(&self, sql: &str) -> i64 {
        let url = self.meta_url.clone();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            sqlx::any::install_default_drivers();
            let mut c = <sqlx::AnyConnection as sqlx::Connection>::connect(&url).await.unwrap();
            let row = sqlx::query(sql).fetch_one(&mut c).await.unwrap();
            sqlx::Row::try_get::<i64, _>(&row, 0).unwrap()
        })
    }

    /// The audit records after `after_seq`: (action, resource, outcome).
    pub fn audit_since(&self, after_seq: i64) -> Vec<(String, String, String)> {
        let url = self.meta_url.clone();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            sqlx::any::install_default_drivers();
            let mut c = <sqlx::AnyConnection as sqlx::Connection>::connect(&url).await.unwrap();
            sqlx::query_as::<_, (String, String, String)>(
                "SELECT action, resource, outcome FROM audit_log WHERE seq > $1 ORDER BY seq",
            )
            .bind(after_seq)
            .fetch_all(&mut c)
            .await
            .unwrap()
        })
    }

    /// The sequence number of the newest audit record.
    pub fn audit_head(&self) -> i64 {
        let url = self.meta_url.clone();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            sqlx::any::install_default_drivers();
            let mut c = <sqlx::AnyConnection as sqlx::Connection>::connect(&url).await.unwrap();
            let (n,): (i64,) =
                sqlx::query_as("SELECT COALESCE(MAX(seq), 0) FROM audit_log").fetch_one(&mut c).await.unwrap();
            n
        })
    }
}

/// Starts a long-running command (`serve`, `server` with `--json`) and
/// returns it with the JSON line it printed once listening.
pub fn spawn_listening(mut cmd: Command) -> (std::process::Child, serde_json::Value) {
    use std::io::BufRead;
    let mut child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let v = serde_json::from_str(&line).unwrap_or_else(|_| panic!("it did not start: {line:?}"));
    (child, v)
}

/// Runs `cmd` with its stdout closed before it writes (`citadel … | head`
/// that has already exited); stderr is captured.
pub fn run_with_closed_stdout(mut cmd: Command) -> Output {
    let mut child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    // xorshift: reproducible, incompressible enough for chunking tests.
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    citadel_types::Digest::of(data).to_hex()
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

pub fn walk_or_empty(dir: &Path) -> Vec<PathBuf> {
    if dir.exists() { walk(dir) } else { Vec::new() }
}

/// A new principal with `roles` on everything, and a token for it.
pub fn token_for(ws: &Ws, name: &str, roles: &[&str]) -> String {
    ws.ok(&["principal", "create", name]);
    for r in roles {
        ws.ok(&["grant", "add", name, r]);
    }
    ws.json(&["token", "issue", name])["token"].as_str().unwrap().to_string()
}

pub fn as_user(ws: &Ws, token: &str, args: &[&str]) -> std::process::Output {
    let mut a = args.to_vec();
    a.push("--json");
    ws.cmd(&a).env("CITADEL_TOKEN", token).output().unwrap()
}

pub fn ok_json(o: std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// A CA, a server certificate for localhost and client certificates, written as PEM files.
pub struct Pki {
    pub dir: PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub ca: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "citadel test CA");
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, cert.pem()).unwrap();
        Pki { dir: dir.to_path_buf(), issuer: rcgen::Issuer::new(params, key), ca }
    }

    /// (certificate path, key path, SHA-256 of the DER).
    pub fn issue(&self, name: &str, client: bool) -> (PathBuf, PathBuf, String) {
        let mut params =
            rcgen::CertificateParams::new(if client { vec![] } else { vec!["localhost".to_string()] }).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (c, k) = (self.dir.join(format!("{name}.pem")), self.dir.join(format!("{name}-key.pem")));
        // Written aside and renamed, as certificate tooling does.
        std::fs::write(c.with_extension("new"), cert.pem()).unwrap();
        std::fs::write(k.with_extension("new"), key.serialize_pem()).unwrap();
        std::fs::rename(k.with_extension("new"), &k).unwrap();
        std::fs::rename(c.with_extension("new"), &c).unwrap();
        (c, k, sha256_hex(cert.der()))
    }
}

/// One HTTP/1.1 request on an open connection (plain HTTP).
pub fn send_request(s: &mut std::net::TcpStream, path: &str, token: &str, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)
}

/// The status, lower-cased headers and body of a response.
pub type RawResponse = (u16, Vec<(String, String)>, Vec<u8>);

/// The status, lower-cased headers and body of one response; an error when
/// the connection ends before the whole response arrived.
pub fn read_response(r: &mut std::io::BufReader<std::net::TcpStream>) -> std::io::Result<RawResponse> {
    use std::io::{BufRead, Read};
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before a response"));
    }
    let status: u16 = line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: usize = headers.iter().find(|h| h.0 == "content-length").and_then(|h| h.1.parse().ok()).unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok((status, headers, body))
}

/// The address of a test service, or None when services are skipped on purpose.
pub fn service(var: &str) -> Option<String> {
    if std::env::var("CITADEL_TEST_SKIP_SERVICES").is_ok_and(|v| v == "1") {
        eprintln!("skipped: CITADEL_TEST_SKIP_SERVICES=1");
        return None;
    }
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => panic!(
            "{var} is not set: run ./scripts/services.sh, then `source /tmp/citadel-services/env` \
             (./scripts/test.sh does both), or set CITADEL_TEST_SKIP_SERVICES=1 to skip these tests"
        ),
    }
}

pub fn unique(prefix: &str) -> String {
    let mut b = [0u8; 6];
    std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b)).unwrap();
    format!("{prefix}{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>())
}

/// A fresh, empty PostgreSQL database; returns its URL.
pub fn fresh_pg_database(server: &str) -> String {
    let name = unique("citadel_test_");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        sqlx::any::install_default_drivers();
        let mut c = <sqlx::AnyConnection as sqlx::Connection>::connect(&format!("{server}/postgres")).await.unwrap();
        sqlx::Executor::execute(&mut c, format!("CREATE DATABASE {name}").as_str()).await.unwrap();
    });
    format!("{server}/{name}")
}

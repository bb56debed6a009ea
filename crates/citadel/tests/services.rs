//! End-to-end tests against the real servers of a scale-out deployment:
//! PostgreSQL for metadata, an S3-compatible server (moto) for objects, and a
//! PKCS#11 token (SoftHSM2) for the master key.
//!
//! `scripts/services.sh` installs and starts them on 127.0.0.1 and writes
//! their addresses to an env file that `scripts/test.sh` sources. A test that
//! finds no address fails: a silently skipped backend is an untested one. Set
//! `CITADEL_TEST_SKIP_SERVICES=1` to skip them on purpose.

#![allow(clippy::unwrap_used)] // a test that cannot set up should stop loudly

mod common;

use std::process::Command;

use common::*;

/// A new SoftHSM2 token (PIN 4711-test); returns its label.
fn fresh_softhsm_token() -> String {
    let label = unique("ct-");
    let o = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", &label, "--pin", "4711-test", "--so-pin", "so-4711-test"])
        .output()
        .unwrap();
    assert!(o.status.success(), "softhsm2-util: {}", stderr(&o));
    label
}

/// Exercises everything the foundation promises on one workspace, whatever
/// its backends: put (file and directory), get byte for byte, dedup, ls,
/// fsck, tokens and denials, key rotation, gc and the audit chain.
fn full_cycle(ws: &Ws) {
    let data = random_bytes(6 << 20, 11);
    let f = ws.file("model.bin", &data);
    let id = ws.ok(&["artifact", "put", f.to_str().unwrap(), "--name", "models/m"]).trim().to_string();
    assert_eq!(id, sha256_hex(&data));
    let dir = ws.root.parent().unwrap().join("tree");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    for i in 0..5u8 {
        std::fs::write(dir.join(format!("sub/f{i}")), random_bytes(70_000 + i as usize, 2 * i as u64 + 1)).unwrap();
    }
    let dir_put = ws.json(&["artifact", "put", dir.to_str().unwrap(), "--name", "tree"]);
    assert_eq!(dir_put["new"], true);
    let again = ws.json(&["artifact", "put", f.to_str().unwrap()]);
    assert_eq!(again["new_chunks"], 0, "the same bytes are stored once");

    let out = ws.root.parent().unwrap().join("out.bin");
    ws.ok(&["artifact", "get", "models/m", "-o", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), data);
    let out_dir = ws.root.parent().unwrap().join("tree-out");
    ws.ok(&["artifact", "get", "tree", "-o", out_dir.to_str().unwrap()]);
    for i in 0..5u8 {
        assert_eq!(
            std::fs::read(out_dir.join(format!("sub/f{i}"))).unwrap(),
            random_bytes(70_000 + i as usize, 2 * i as u64 + 1)
        );
    }
    assert_eq!(ws.json(&["artifact", "ls"]).as_array().unwrap().len(), 2);
    ws.ok(&["fsck"]);

    // A reader token may get but not put; the denial is audited.
    ws.ok(&["principal", "create", "reader"]);
    ws.ok(&["grant", "add", "reader", "auditor"]);
    let token = ws.json(&["token", "issue", "reader"])["token"].as_str().unwrap().to_string();
    let o = ws.cmd(&["artifact", "put", f.to_str().unwrap()]).env("CITADEL_TOKEN", &token).output().unwrap();
    assert!(!o.status.success() && stderr(&o).contains("hint:"), "{}", stderr(&o));
    assert!(!stderr(&o).contains(&token), "the token leaked into an error");
    let denied = ws.json(&["audit", "query", "--outcome", "denied"]);
    assert!(!denied.as_array().unwrap().is_empty());

    // Rotation re-wraps the data keys; everything still reads.
    let before = ws.json(&["key", "list"]);
    ws.ok(&["key", "rotate"]);
    let after = ws.json(&["key", "list"]);
    assert_ne!(before, after);
    ws.ok(&["artifact", "get", "models/m", "-o", ws.root.parent().unwrap().join("out2.bin").to_str().unwrap()]);

    let gc = ws.json(&["gc", "--grace", "0"]);
    assert_eq!(gc["unreferenced_chunks"], 0, "nothing referenced may be collected: {gc}");
    ws.ok(&["fsck"]);
    ws.ok(&["audit", "verify"]);
}

#[test]
fn postgres_metadata_full_cycle_and_tamper_detection() {
    let Some(server) = service("CITADEL_TEST_PG_URL") else { return };
    let url = fresh_pg_database(&server);
    let ws = Ws::with(&["--metadata-url", &url], &[]);
    assert!(!ws.root.join("meta.db").exists(), "metadata must live in PostgreSQL, not SQLite");
    full_cycle(&ws);
    // An edited audit row in PostgreSQL is named by verify.
    ws.db_exec("UPDATE audit_log SET action = 'artifact.get' WHERE seq = 2");
    let o = ws.run(&["audit", "verify"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("record 2 was edited"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

/// `sslmode=verify-full`: the metadata connection is TLS, the server's
/// certificate is checked against the CA the URL names (and its host name),
/// and a server the CA did not certify is refused with a hint.
#[test]
fn postgres_over_tls_verifies_the_server_and_refuses_one_it_cannot() {
    let Some(server) = service("CITADEL_TEST_PG_URL") else { return };
    let (Some(ca), Some(other)) = (service("CITADEL_TEST_PG_CA"), service("CITADEL_TEST_PG_OTHER_CA")) else { return };
    let url = fresh_pg_database(&server);
    let tls = |ca: &str| format!("{url}?sslmode=verify-full&sslrootcert={ca}");
    let ws = Ws::with(&["--metadata-url", &tls(&ca)], &[]);
    let f = ws.file("a.bin", &random_bytes(200_000, 7));
    ws.ok(&["artifact", "put", f.to_str().unwrap()]);
    assert_eq!(ws.json(&["artifact", "ls"]).as_array().unwrap().len(), 1);
    assert_eq!(ws.json(&["audit", "verify"])["problems"].as_array().unwrap().len(), 0);
    // The server saw a TLS session for this database's connections.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let ssl: bool = rt.block_on(async {
        sqlx::any::install_default_drivers();
        let mut c = <sqlx::AnyConnection as sqlx::Connection>::connect(&tls(&ca)).await.unwrap();
        sqlx::Row::get(
            &sqlx::query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetch_one(&mut c).await.unwrap(),
            0,
        )
    });
    assert!(ssl);

    // A CA that did not sign the server's certificate: refused, nothing created.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ws");
    let o = bin()
        .args(["init", root.to_str().unwrap(), "--kdf-memory-mib", "19", "--metadata-url", &tls(&other)])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("metadata database") && err.contains("UnknownIssuer"), "{err}");
    assert!(err.contains("hint:") && err.contains("sslrootcert"), "{err}");
    // And the working workspace refuses it too, once its URL names that CA.
    let toml = std::fs::read_to_string(ws.root.join("citadel.toml")).unwrap();
    std::fs::write(ws.root.join("citadel.toml"), toml.replace(&ca, &other)).unwrap();
    assert!(!ws.run(&["artifact", "ls"]).status.success());
}

#[test]
fn postgres_concurrent_puts_keep_one_audit_chain() {
    let Some(server) = service("CITADEL_TEST_PG_URL") else { return };
    let url = fresh_pg_database(&server);
    let ws = Ws::with(&["--metadata-url", &url], &[]);
    let files: Vec<_> = (0..6).map(|i| ws.file(&format!("c{i}.bin"), &random_bytes(300_000, 101 + 2 * i))).collect();
    let children: Vec<_> =
        files.iter().map(|f| ws.cmd(&["artifact", "put", f.to_str().unwrap()]).spawn().unwrap()).collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    assert_eq!(ws.json(&["artifact", "ls"]).as_array().unwrap().len(), 6);
    let v = ws.json(&["audit", "verify"]);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");
}

fn s3_workspace(extra: &[&str], env: &[(&str, &str)]) -> Option<Ws> {
    let endpoint = service("CITADEL_TEST_S3_ENDPOINT")?;
    let bucket = service("CITADEL_TEST_S3_BUCKET")?;
    let url = format!("storage.url=s3://{bucket}/{}", unique("ws-"));
    let ep = format!("storage.s3_endpoint={endpoint}");
    let mut args = vec![
        "--set",
        &url,
        "--set",
        &ep,
        "--set",
        "storage.s3_allow_http=true",
        "--set",
        "storage.s3_region=us-east-1",
    ];
    args.extend_from_slice(extra);
    Some(Ws::with(&args, env))
}

/// S3 over HTTPS with a private CA (`storage.s3_ca_file`): the store works
/// against an endpoint whose certificate only that CA vouches for, and
/// without the CA (or with another) it refuses the endpoint.
#[test]
fn s3_over_https_trusts_the_configured_ca_and_nothing_else() {
    let Some(endpoint) = service("CITADEL_TEST_S3_TLS_ENDPOINT") else { return };
    let (Some(bucket), Some(ca), Some(other)) =
        (service("CITADEL_TEST_S3_BUCKET"), service("CITADEL_TEST_S3_CA"), service("CITADEL_TEST_PG_OTHER_CA"))
    else {
        return;
    };
    let settings = |ca: Option<&str>| {
        let mut s = vec![
            format!("storage.url=s3://{bucket}/{}", unique("tls-")),
            format!("storage.s3_endpoint={endpoint}"),
            "storage.s3_region=us-east-1".to_string(),
        ];
        if let Some(ca) = ca {
            s.push(format!("storage.s3_ca_file={ca}"));
        }
        s.into_iter().flat_map(|kv| ["--set".to_string(), kv]).collect::<Vec<_>>()
    };
    let args = settings(Some(&ca));
    let ws = Ws::with(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    let data = random_bytes(700_000, 11);
    let f = ws.file("a.bin", &data);
    let id = ws.json(&["artifact", "put", f.to_str().unwrap()])["id"].as_str().unwrap().to_string();
    let out = ws.root.parent().unwrap().join("back.bin");
    ws.ok(&["artifact", "get", &id, "-o", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), data);
    assert!(!ws.root.join("objects").exists(), "objects live in the bucket");

    for ca in [None, Some(other.as_str())] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ws");
        let mut cmd = bin();
        cmd.args(["init", root.to_str().unwrap(), "--kdf-memory-mib", "19"]).args(settings(ca));
        let f = dir.path().join("b.bin");
        std::fs::write(&f, &data).unwrap();
        let o = cmd.output().unwrap();
        let put = if o.status.success() {
            bin().arg("-w").arg(&root).args(["artifact", "put", f.to_str().unwrap()]).output().unwrap()
        } else {
            o
        };
        assert!(!put.status.success(), "an endpoint no trusted CA vouches for was used (CA {ca:?})");
        let err = stderr(&put);
        assert!(
            err.contains("UnknownIssuer") && err.contains("hint: the S3 endpoint's certificate did not verify"),
            "{err}"
        );
    }
}

#[test]
fn s3_storage_full_cycle_and_corruption() {
    let Some(ws) = s3_workspace(&[], &[]) else { return };
    assert!(!ws.root.join("objects").exists(), "objects must live in S3, not the local directory");
    full_cycle(&ws);

    // Corrupt one chunk in the bucket: the read and fsck both name it.
    let config = std::fs::read_to_string(ws.root.join("citadel.toml")).unwrap();
    let prefix =
        config.lines().find_map(|l| l.strip_prefix("url = \"s3://")).unwrap().trim_end_matches('"').to_string();
    let (bucket, prefix) = prefix.split_once('/').unwrap();
    let store = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_endpoint(std::env::var("CITADEL_TEST_S3_ENDPOINT").unwrap())
        .with_allow_http(true)
        .with_region("us-east-1")
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let victim = rt.block_on(async {
        use futures::TryStreamExt;
        use object_store::{ObjectStore, ObjectStoreExt};
        let chunks: Vec<_> =
            store.list(Some(&object_store::path::Path::from(format!("{prefix}/chunks")))).try_collect().await.unwrap();
        assert!(chunks.len() > 10, "chunks are stored in the bucket");
        let victim = chunks.iter().max_by_key(|m| m.size).unwrap().location.clone();
        store.put(&victim, object_store::PutPayload::from(vec![0u8; 4096])).await.unwrap();
        victim
    });
    let name = victim.filename().unwrap().to_string();
    let fsck = ws.run(&["fsck", "--json"]);
    assert!(!fsck.status.success());
    assert!(
        String::from_utf8_lossy(&fsck.stdout).contains(&name[..16]),
        "fsck names the chunk: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
}

#[test]
fn pkcs11_softhsm_master_key_full_cycle() {
    let Some(module) = service("CITADEL_TEST_PKCS11_MODULE") else { return };
    let label = fresh_softhsm_token();
    let ws = Ws::with(
        &["--key-provider", "pkcs11", "--pkcs11-module", &module, "--pkcs11-token", &label],
        &[("CITADEL_PKCS11_PIN", "4711-test")],
    );
    assert!(!ws.root.join("keys/master.key").exists(), "no local key file with PKCS#11");
    full_cycle(&ws);
    // A wrong PIN is a clear error that does not echo the PIN.
    let o = ws.cmd(&["artifact", "ls"]).env("CITADEL_PKCS11_PIN", "0000-wrong").output().unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("hint:") && !stderr(&o).contains("0000-wrong"), "{}", stderr(&o));
}

#[test]
fn scale_out_postgres_s3_and_pkcs11_together() {
    let Some(server) = service("CITADEL_TEST_PG_URL") else { return };
    let Some(module) = service("CITADEL_TEST_PKCS11_MODULE") else { return };
    let label = fresh_softhsm_token();
    let url = fresh_pg_database(&server);
    let Some(ws) = s3_workspace(
        &["--metadata-url", &url, "--key-provider", "pkcs11", "--pkcs11-module", &module, "--pkcs11-token", &label],
        &[("CITADEL_PKCS11_PIN", "4711-test")],
    ) else {
        return;
    };
    full_cycle(&ws);
}

/// Data-subject erasure, retention purge and the compliance report on
/// PostgreSQL and S3: the same SQL and object deletions as on SQLite and a
/// local directory.
#[test]
fn postgres_and_s3_erasure_retention_and_report() {
    let Some(server) = service("CITADEL_TEST_PG_URL") else { return };
    let url = fresh_pg_database(&server);
    let Some(ws) = s3_workspace(&["--metadata-url", &url], &[]) else { return };
    let spec = ws.file(
        "p.toml",
        b"[dataset]\nkey = [\"id\"]\n[columns.email]\nmask = { kind = \"pseudonymize\" }\n\
          [processing]\npurposes = [\"churn\"]\nlegal_basis = \"contract\"\nretention_days = 30\n",
    );
    for (v, subject) in [(1, true), (2, false)] {
        let mut csv = String::from("id,email,spend\n");
        for i in 0..200 {
            let email = if subject && i == 5 { "pat@example.org".to_string() } else { format!("u{i}@example.org") };
            csv += &format!("{i},{email},{}\n", i * 3);
        }
        let src = ws.file(&format!("v{v}.csv"), csv.as_bytes());
        ws.json(&["data", "add", src.to_str().unwrap(), "--name", "people", "--expect", spec.to_str().unwrap()]);
    }
    let olga = token_for(&ws, "olga", &["privacy-officer"]);
    let r = ok_json(as_user(
        &ws,
        &olga,
        &["subject", "erase", "--dataset", "people", "--match", "email=pat@example.org", "--reason", "DSR-7"],
    ));
    assert_eq!((r["status"].as_str(), r["verified"].as_bool()), (Some("complete"), Some(true)), "{r}");
    assert_eq!(r["receipt"]["versions"][0]["rows_removed"], 1);
    assert!(r["receipt"]["chunks_deleted"].as_u64().unwrap() > 0);
    assert_eq!(ws.json(&["data", "show", "people@1"])["rows"], 199);
    let again = as_user(&ws, &olga, &["subject", "export", "--dataset", "people", "--match", "email=pat@example.org"]);
    assert!(!again.status.success());
    // Version 2 ages past its retention and gc purges it.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        sqlx::any::install_default_drivers();
        let mut c = <sqlx::AnyConnection as sqlx::Connection>::connect(&url).await.unwrap();
        sqlx::Executor::execute(
            &mut c,
            "UPDATE data_versions SET created_at = created_at - 2678400000000 WHERE version = 2",
        )
        .await
        .unwrap();
    });
    let gc = ws.json(&["gc"]);
    assert_eq!(gc["purged"].as_array().unwrap().len(), 1, "{gc}");
    ws.ok(&["fsck"]);
    let out = ws.root.parent().unwrap().join("report");
    ws.ok(&["report", "-o", out.to_str().unwrap()]);
    let html = std::fs::read_to_string(out.join("compliance-report.html")).unwrap();
    assert!(html.contains("Audit log verified.") && html.contains("churn") && html.contains("1 version(s) purged"));
}

/// A child process killed when dropped, so a failing test leaves none behind.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One gateway replica on a fixed port (plain HTTP, loopback).
fn gateway(ws: &Ws, port: u16) -> KillOnDrop {
    use std::io::BufRead;
    let mut child = ws
        .cmd(&[
            "serve",
            "--insecure-http",
            "--json",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--poll-ms",
            "200",
            "--shutdown-delay-ms",
            "1500",
            "--rate-principal",
            "1000000",
            "--rate-principal-burst",
            "1000000",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.contains("listening"), "serve did not start: {line}");
    KillOnDrop(child)
}

/// Waits until `port` answers `path` with 200.
fn wait_ok(port: u16, path: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let ok = std::net::TcpStream::connect(("127.0.0.1", port)).ok().and_then(|mut s| {
            use std::io::Write;
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
            read_response(&mut std::io::BufReader::new(s)).ok()
        });
        if ok.is_some_and(|r| r.0 == 200) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "127.0.0.1:{port}{path} never answered 200");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Three gateways on one PostgreSQL + S3 behind HAProxy (Debian's) on
/// 127.0.0.1, HAProxy retrying only connections refused (never a request a
/// replica accepted, so nothing masks a dropped one), with a client calling
/// through it all along: a rolling
/// restart (SIGTERM, wait, start again, one replica at a time) fails no
/// request; a deployment change reaches every replica; a replica killed
/// with SIGKILL costs at most the requests it had in flight.
#[test]
fn three_replicas_behind_haproxy_restart_one_by_one_without_a_failed_request() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    let Some(pg) = service("CITADEL_TEST_PG_URL") else { return };
    let url = fresh_pg_database(&pg);
    let Some(ws) = s3_workspace(&["--metadata-url", &url], &[]) else { return };
    let eng = token_for(&ws, "erin", &["data-scientist", "ml-engineer"]);
    let appr = token_for(&ws, "abe", &["approver"]);
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../citadel-infer/tests/fixtures");
    let data = ws.file("train.csv", b"x,y\n1,0\n");
    ws.ok(&["artifact", "put", data.to_str().unwrap(), "--name", "datasets/train"]);
    for v in [1, 2] {
        let dir = ws.root.parent().unwrap().join(format!("m{v}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(fixtures.join("models/rf_binary_nozipmap.onnx"), dir.join("model.onnx")).unwrap();
        std::fs::write(dir.join("README"), format!("version {v}")).unwrap();
        let reg = [
            "model",
            "register",
            dir.to_str().unwrap(),
            "--name",
            "credit",
            "--dataset",
            "datasets/train",
            "--code-ref",
            "git+https://example.invalid/t@1",
        ];
        ok_json(as_user(&ws, &eng, &reg));
        for stage in ["staging", "production"] {
            let r = ok_json(as_user(&ws, &eng, &["model", "promote", &format!("credit@{v}"), "--to", stage]));
            ok_json(as_user(&ws, &appr, &["model", "approve", r["id"].as_str().unwrap()]));
            if v == 2 && stage == "staging" {
                break;
            }
        }
    }
    ok_json(as_user(&ws, &eng, &["deploy", "set", "credit", "--target", "credit@1"]));
    ws.ok(&["principal", "create", "app"]);
    ws.ok(&["grant", "add", "app", "inference-client", "--scope", "model:credit"]);
    let client = ws.json(&["token", "issue", "app"])["token"].as_str().unwrap().to_string();
    let cases: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures.join("onnx_reference.json")).unwrap()).unwrap();
    let case = cases["cases"].as_array().unwrap().iter().find(|c| c["name"] == "rf_binary_nozipmap").unwrap();
    let row: Vec<f64> = serde_json::from_value(case["inputs"][0].clone()).unwrap();
    let body = serde_json::json!({"inputs": [{"name": "X", "shape": [1, row.len()], "datatype": "FP32", "data": row}]})
        .to_string()
        .into_bytes();

    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let replicas: Vec<_> = ports.iter().map(|&p| Mutex::new(Some(gateway(&ws, p)))).collect();
    for &p in &ports {
        wait_ok(p, "/v2/health/ready");
    }
    let front = free_port();
    let dir = ws.root.parent().unwrap();
    let cfg = dir.join("haproxy.cfg");
    let servers: String = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("  server g{i} 127.0.0.1:{p} check inter 200 fall 1 rise 2\n"))
        .collect();
    std::fs::write(
        &cfg,
        format!(
            "global\n  maxconn 500\ndefaults\n  mode http\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n  retries 3\n  option redispatch 1\n  retry-on conn-failure\nfrontend fe\n  bind 127.0.0.1:{front}\n  default_backend gw\nbackend gw\n  balance roundrobin\n  http-reuse never\n  option httpchk GET /v2/health/ready\n  http-check expect status 200\n{servers}"
        ),
    )
    .unwrap();
    let _haproxy = KillOnDrop(
        Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("haproxy (scripts/services.sh installs it)"),
    );
    wait_ok(front, "/v2/health/ready");

    // The client: calls through HAProxy all along, keep-alive, reconnecting when told to.
    let (stop, ok, failed) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(Vec::new())));
    let caller = {
        let (stop, ok, failed, client, body) = (stop.clone(), ok.clone(), failed.clone(), client.clone(), body.clone());
        std::thread::spawn(move || {
            let connect = || {
                let s = std::net::TcpStream::connect(("127.0.0.1", front)).unwrap();
                let r = std::io::BufReader::new(s.try_clone().unwrap());
                (s, r)
            };
            let (mut s, mut r) = connect();
            while !stop.load(Ordering::SeqCst) {
                let result = send_request(&mut s, "/v2/models/credit/infer", &client, &body)
                    .and_then(|()| read_response(&mut r));
                match result {
                    Ok((200, headers, _)) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                        if headers.iter().any(|h| h.0 == "connection" && h.1 == "close") {
                            (s, r) = connect();
                        }
                    }
                    Ok((code, _, b)) => {
                        failed.lock().unwrap().push(format!("{code}: {}", String::from_utf8_lossy(&b)));
                        (s, r) = connect();
                    }
                    Err(e) => {
                        failed.lock().unwrap().push(format!("{e}"));
                        (s, r) = connect();
                    }
                }
            }
        })
    };
    let calls = |since: usize| ok.load(Ordering::SeqCst) - since;
    // However the test ends, the caller stops.
    struct Stop(Arc<AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let _stop_caller = Stop(stop.clone());

    // Rolling restart, one replica at a time.
    for (i, &p) in ports.iter().enumerate() {
        let before = ok.load(Ordering::SeqCst);
        let mut child = replicas[i].lock().unwrap().take().unwrap();
        let pid = child.0.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = child.0.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "replica {i} did not exit");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "replica {i}: {status:?}");
        *replicas[i].lock().unwrap() = Some(gateway(&ws, p));
        wait_ok(p, "/v2/health/ready");
        std::thread::sleep(Duration::from_millis(800)); // HAProxy sees it up (rise 2 × 200 ms)
        assert!(calls(before) > 0, "the client was served while replica {i} restarted");
    }
    {
        let f = failed.lock().unwrap();
        assert!(f.is_empty(), "{} failed during the rolling restart, first: {:?}", f.len(), &f[..f.len().min(3)]);
    }

    // A deployment change reaches every replica (they poll the shared database).
    let d = ok_json(as_user(
        &ws,
        &eng,
        &["deploy", "set", "credit", "--strategy", "canary", "--target", "credit@1:50", "--target", "credit@2:50"],
    ));
    let revision = d["revision"].as_i64().unwrap();
    for &p in &ports {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", p)).unwrap();
            use std::io::Write;
            s.write_all(format!("GET /v2/models/credit HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {client}\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
            let (_, _, b) = read_response(&mut std::io::BufReader::new(s)).unwrap();
            let meta: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
            if meta["parameters"]["revision"] == revision {
                break;
            }
            assert!(Instant::now() < deadline, "replica on {p} never saw revision {revision}: {meta}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // SIGKILL: only what was in flight on that replica is lost. This client sends one request at a
    // time, so that is the one being served and at most one more whose connection the kernel had
    // already accepted into the dead listener's queue (HAProxy cannot tell it from a live one).
    let mut victim = replicas[1].lock().unwrap().take().unwrap();
    victim.0.kill().unwrap();
    victim.0.wait().unwrap();
    let before = ok.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(calls(before) > 0, "the others kept serving");
    stop.store(true, Ordering::SeqCst);
    caller.join().unwrap();
    let lost = failed.lock().unwrap().len();
    assert!(lost <= 2, "a killed replica cost {lost} requests, first: {:?}", &failed.lock().unwrap()[..lost.min(3)]);
    assert!(ok.load(Ordering::SeqCst) > 100, "{} calls", ok.load(Ordering::SeqCst));
}

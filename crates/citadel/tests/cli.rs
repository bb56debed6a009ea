//! End-to-end tests of the `citadel` binary: each drives real commands on a
//! fresh workspace and checks what a user would see, including every fault
//! the foundation promises to survive.

#![allow(clippy::unwrap_used)] // a test that cannot set up should stop loudly

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

#[test]
fn put_get_round_trip_file_and_directory() {
    let ws = Ws::new();
    let data = random_bytes(3 << 20, 1);
    let f = ws.file("model.bin", &data);
    let id = ws.ok(&["artifact", "put", f.to_str().unwrap(), "--name", "models/m1"]).trim().to_string();
    assert_eq!(id, sha256_hex(&data), "the public id is the SHA-256 of the plaintext");
    let out = ws.root.parent().unwrap().join("restored.bin");
    ws.ok(&["artifact", "get", "models/m1", "-o", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), data);
    // Refuses to overwrite.
    let o = ws.run(&["artifact", "get", &id[..12], "-o", out.to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("already exists") && stderr(&o).contains("hint:"));

    let dir = ws.root.parent().unwrap().join("tree");
    std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    std::fs::write(dir.join("a.txt"), b"alpha").unwrap();
    std::fs::write(dir.join("empty"), b"").unwrap();
    std::fs::write(dir.join("sub/deeper/b.bin"), random_bytes(700_000, 2)).unwrap();
    let r = ws.json(&["artifact", "put", dir.to_str().unwrap(), "--name", "tree"]);
    assert_eq!(r["files"], 3);
    let out = ws.root.parent().unwrap().join("tree-out");
    ws.ok(&["artifact", "get", "tree", "-o", out.to_str().unwrap()]);
    for rel in ["a.txt", "empty", "sub/deeper/b.bin"] {
        assert_eq!(std::fs::read(dir.join(rel)).unwrap(), std::fs::read(out.join(rel)).unwrap(), "{rel}");
    }
    let list = ws.json(&["artifact", "ls"]);
    assert_eq!(list.as_array().unwrap().len(), 2);
}

#[test]
fn dedup_stores_little_for_a_small_change() {
    // Content-defined chunking re-stores the changed bytes plus about one
    // chunk (avg 256 KiB) on each side of an edit, so the file must be large
    // next to a chunk for "1% changed" to mean "about 1% new".
    let ws = Ws::new();
    let size = 64 << 20;
    let original = random_bytes(size, 3);
    let f = ws.file("v1.bin", &original);
    let first = ws.json(&["artifact", "put", f.to_str().unwrap()]);
    let total = first["new_bytes"].as_u64().unwrap();
    assert!(total as usize > size, "random data does not compress: {total}");

    // 1% changed in one place.
    let mut changed = original.clone();
    for b in &mut changed[(12 << 20)..(12 << 20) + size / 100] {
        *b ^= 0x5a;
    }
    let f2 = ws.file("v2.bin", &changed);
    let second = ws.json(&["artifact", "put", f2.to_str().unwrap()]);
    let b = second["new_bytes"].as_u64().unwrap();
    assert!(b * 100 <= total * 3, "1% change stored {b} new bytes of {total}");

    // Eight bytes inserted: every later offset shifts, which would re-store
    // the whole tail with fixed-size blocks. CDC re-synchronises.
    let mut shifted = original.clone();
    shifted.splice(25 << 20..25 << 20, *b"inserted");
    let f3 = ws.file("v3.bin", &shifted);
    let third = ws.json(&["artifact", "put", f3.to_str().unwrap()]);
    let c = third["new_bytes"].as_u64().unwrap();
    assert!(c < 3 << 20, "an 8-byte insertion stored {c} new bytes");

    // Same content again: nothing new.
    let again = ws.json(&["artifact", "put", f3.to_str().unwrap()]);
    assert_eq!(again["new"], false);
    assert_eq!(again["new_chunks"], 0);
}

#[test]
fn object_names_reveal_nothing() {
    let ws = Ws::new();
    let data = b"the same text in plain sight ".repeat(10_000);
    let f = ws.file("plain.txt", &data);
    let id = ws.ok(&["artifact", "put", f.to_str().unwrap()]).trim().to_string();
    for entry in walk(&ws.root.join("objects")) {
        let name = entry.file_name().unwrap().to_str().unwrap().to_string();
        assert!(!name.contains(&id[..16]), "object name leaks the content digest");
        let bytes = std::fs::read(&entry).unwrap();
        assert!(!bytes.windows(12).any(|w| w == b"plain sight "), "plaintext stored in {}", entry.display());
    }
}

#[test]
fn wrong_passphrase_changes_nothing() {
    let ws = Ws::new();
    let before = std::fs::read(ws.root.join("keys/master.key")).unwrap();
    let o = ws.cmd(&["artifact", "ls"]).env("CITADEL_PASSPHRASE", "wrong").output().unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("wrong passphrase") && stderr(&o).contains("hint:"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("wrong\n") && !stderr(&o).contains(PASS));
    assert_eq!(std::fs::read(ws.root.join("keys/master.key")).unwrap(), before);
    ws.ok(&["audit", "verify"]);
}

#[test]
fn key_file_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let ws = Ws::new();
    let key = ws.root.join("keys/master.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = ws.run(&["artifact", "ls"]);
    assert!(!o.status.success() && stderr(&o).contains("chmod 600"), "{}", stderr(&o));
}

#[test]
fn corrupted_chunk_is_caught_on_read_and_by_fsck() {
    let ws = Ws::new();
    let data = random_bytes(2 << 20, 4);
    let f = ws.file("m.bin", &data);
    let id = ws.ok(&["artifact", "put", f.to_str().unwrap()]).trim().to_string();
    ws.ok(&["fsck"]);
    let mut chunks: Vec<PathBuf> = walk(&ws.root.join("objects/chunks"));
    chunks.sort();
    let victim = &chunks[chunks.len() / 2];
    let mut bytes = std::fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(victim, bytes).unwrap();

    let out = ws.root.parent().unwrap().join("out.bin");
    let o = ws.run(&["artifact", "get", &id, "-o", out.to_str().unwrap()]);
    assert!(!o.status.success(), "a corrupted read must fail");
    assert!(stderr(&o).contains("integrity check failed"), "{}", stderr(&o));
    assert!(!out.exists(), "no partial output is left behind");

    let o = ws.run(&["fsck", "--json"]);
    assert_eq!(o.status.code(), Some(2));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let name = victim.file_name().unwrap().to_str().unwrap();
    let corrupt = r["corrupt"].as_object().unwrap();
    assert_eq!(corrupt.len(), 1);
    let (key, (_, who)) = corrupt.iter().next().map(|(k, v)| (k, (v[0].clone(), v[1].clone()))).unwrap();
    assert!(key.ends_with(name));
    assert_eq!(who[0], id.as_str());

    std::fs::remove_file(&chunks[0]).unwrap();
    let r: serde_json::Value = serde_json::from_slice(&ws.run(&["fsck", "--json"]).stdout).unwrap();
    assert_eq!(r["missing"].as_object().unwrap().len(), 1);
}

#[test]
fn kill_9_during_put_leaves_no_artifact_and_store_stays_consistent() {
    let ws = Ws::new();
    std::fs::write(
        ws.root.join("citadel.toml"),
        std::fs::read_to_string(ws.root.join("citadel.toml"))
            .unwrap()
            .replace("# lease_ttl_secs = 300", "lease_ttl_secs = 1"),
    )
    .unwrap();
    let data = random_bytes(300 << 20, 5);
    let f = ws.file("big.bin", &data);
    let mut child = ws.cmd(&["artifact", "put", f.to_str().unwrap(), "--name", "big"]).spawn().unwrap();
    // Kill once some chunks are on disk but before the put can finish.
    let chunks_dir = ws.root.join("objects/chunks");
    let start = std::time::Instant::now();
    while walk_or_empty(&chunks_dir).len() < 20 && start.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!walk_or_empty(&chunks_dir).is_empty(), "the put was killed before writing anything");
    let list = ws.json(&["artifact", "ls"]);
    assert_eq!(list.as_array().unwrap().len(), 0, "no visible half-written artifact");
    ws.ok(&["fsck"]);
    ws.ok(&["audit", "verify"]);
    // The crashed put's lease expires; gc then removes its leftovers.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let r = ws.json(&["gc", "--grace", "0"]);
    assert!(r["orphan_objects"].as_u64().unwrap() > 0);
    let left = walk_or_empty(&chunks_dir);
    assert!(left.is_empty(), "gc left {left:?}; report {r}");
    // The next put works.
    let small = ws.file("s.bin", &random_bytes(1 << 20, 6));
    ws.ok(&["artifact", "put", small.to_str().unwrap()]);
    ws.ok(&["fsck"]);
}

#[test]
fn edited_deleted_and_reordered_audit_rows_are_named() {
    let ws = Ws::new();
    let f = ws.file("a.bin", b"hello");
    for _ in 0..3 {
        ws.ok(&["artifact", "put", f.to_str().unwrap()]);
    }
    ws.ok(&["audit", "verify"]);
    ws.db_exec("UPDATE audit_log SET actor = 'p-mallory' WHERE seq = 3");
    let o = ws.run(&["audit", "verify"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("record 3 was edited"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );

    let ws = Ws::new();
    for _ in 0..3 {
        ws.ok(&["artifact", "put", f.to_str().unwrap()]);
    }
    ws.db_exec("DELETE FROM audit_log WHERE seq = 2");
    let r: serde_json::Value = serde_json::from_slice(&ws.run(&["audit", "verify", "--json"]).stdout).unwrap();
    assert!(r["problems"].as_array().unwrap().iter().any(|p| p["kind"] == "missing" && p["from_seq"] == 2), "{r}");
}

#[test]
fn tokens_expired_revoked_and_underprivileged_are_denied_and_audited() {
    let ws = Ws::new();
    ws.ok(&["principal", "create", "alice"]);
    ws.ok(&["grant", "add", "alice", "auditor"]);
    let t = ws.json(&["token", "issue", "alice"]);
    let token = t["token"].as_str().unwrap().to_string();
    assert!(!ws.ok(&["token", "list"]).contains(&token), "the secret is never shown again");

    // Allowed as auditor.
    let o = ws.cmd(&["audit", "verify"]).env("CITADEL_TOKEN", &token).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // Under-privileged: auditors cannot put artifacts.
    let f = ws.file("x.bin", b"data");
    let o = ws.cmd(&["artifact", "put", f.to_str().unwrap()]).env("CITADEL_TOKEN", &token).output().unwrap();
    assert!(!o.status.success() && stderr(&o).contains("permission denied") && stderr(&o).contains("hint:"));
    // Forged: right id, wrong secret.
    let forged = format!("{}{}", &token[..token.len() - 4], "AAAA");
    let o = ws.cmd(&["artifact", "ls"]).env("CITADEL_TOKEN", &forged).output().unwrap();
    assert!(!o.status.success() && stderr(&o).contains("authentication failed"));
    assert!(!stderr(&o).contains(&forged[21..]), "the token secret must not be echoed");
    // Revoked.
    ws.ok(&["token", "revoke", t["id"].as_str().unwrap()]);
    let o = ws.cmd(&["artifact", "ls"]).env("CITADEL_TOKEN", &token).output().unwrap();
    assert!(!o.status.success() && stderr(&o).contains("revoked"));
    // Expired (shortest lifetime, then wait past it would take a minute:
    // instead move the expiry into the past).
    let t2 = ws.json(&["token", "issue", "alice", "--ttl-secs", "60"]);
    ws.db_exec(&format!("UPDATE api_tokens SET expires_at = 0 WHERE id = '{}'", t2["id"].as_str().unwrap()));
    let o = ws.cmd(&["artifact", "ls"]).env("CITADEL_TOKEN", t2["token"].as_str().unwrap()).output().unwrap();
    assert!(!o.status.success() && stderr(&o).contains("expired"));

    let denied = ws.json(&["audit", "query", "--outcome", "denied"]);
    let actions: Vec<&str> = denied.as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["artifact.put", "auth.api-token", "auth.api-token", "auth.api-token"], "{denied}");
    let text = ws.ok(&["audit", "export", "--format", "jsonl"]);
    assert!(!text.contains(&token[21..]), "no token secret in the audit log");
    ws.ok(&["audit", "verify"]);
}

#[test]
fn path_traversal_in_names_is_rejected() {
    let ws = Ws::new();
    let f = ws.file("x.bin", b"data");
    for bad in ["../escape", "/abs", "a/../../b", "..", "a//b"] {
        let o = ws.run(&["artifact", "put", f.to_str().unwrap(), "--name", bad]);
        assert!(!o.status.success(), "{bad} accepted");
        assert!(stderr(&o).contains("invalid name") && stderr(&o).contains("hint:"), "{}", stderr(&o));
    }
    for bad in ["../evil", "a/../b"] {
        let o = ws.run(&["principal", "create", bad]);
        assert!(!o.status.success());
    }
    // Symlinks inside a directory are refused, not followed.
    let dir = ws.root.parent().unwrap().join("linked");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd")).unwrap();
    let o = ws.run(&["artifact", "put", dir.to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("symbolic link"), "{}", stderr(&o));
    assert_eq!(ws.json(&["artifact", "ls"]).as_array().unwrap().len(), 0);
}

#[test]
fn key_rotation_rewraps_without_reencrypting() {
    let ws = Ws::new();
    let data = random_bytes(1 << 20, 7);
    let f = ws.file("m.bin", &data);
    ws.ok(&["artifact", "put", f.to_str().unwrap(), "--name", "m"]);
    let objects_before: Vec<(PathBuf, Vec<u8>)> = walk(&ws.root.join("objects"))
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    let r = ws.json(&["key", "rotate"]);
    assert_eq!(r["data_keys_rewrapped"], 3);
    for (p, b) in &objects_before {
        assert_eq!(&std::fs::read(p).unwrap(), b, "data was re-encrypted");
    }
    let keys = ws.json(&["key", "list"]);
    let statuses: Vec<&str> = keys.as_array().unwrap().iter().map(|k| k["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["retired", "active"]);
    let out = ws.root.parent().unwrap().join("m.out");
    ws.ok(&["artifact", "get", "m", "-o", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(out).unwrap(), data);
    ws.ok(&["audit", "verify"]);
}

#[test]
fn lineage_formats() {
    let ws = Ws::new();
    let a = ws.file("raw.csv", b"a,b\n1,2\n");
    let b = ws.file("clean.csv", b"a,b\n1,2\n3,4\n");
    let ida = ws.ok(&["artifact", "put", a.to_str().unwrap(), "--name", "raw"]).trim().to_string();
    ws.ok(&["artifact", "put", b.to_str().unwrap(), "--name", "clean", "--parent", "raw"]);
    let text = ws.ok(&["lineage", "clean"]);
    assert!(text.contains(&ida[..12]) && text.contains("derived-from"), "{text}");
    let dot = ws.ok(&["lineage", "raw", "--format", "dot"]);
    assert!(dot.starts_with("digraph") && dot.contains("->"));
    let mermaid = ws.ok(&["lineage", "raw", "--format", "mermaid"]);
    assert!(mermaid.starts_with("graph LR") && mermaid.contains("-->|derived-from|"));
    let j = ws.json(&["lineage", "clean"]);
    assert_eq!(j["edges"].as_array().unwrap().len(), 1);
}

#[test]
fn config_check_reports_everything_at_once() {
    let ws = Ws::new();
    std::fs::write(
        ws.root.join("citadel.toml"),
        "[audit]\ncheckpoint_every = 0\nbogus = 1\n[keys]\nprovider = \"vault\"\n",
    )
    .unwrap();
    let o = ws.run(&["config", "check", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["problems"].as_array().unwrap().len(), 3, "{r}");
}

#[test]
fn audit_query_filters_and_siem_exports() {
    let ws = Ws::new();
    let f = ws.file("a.bin", b"x");
    ws.ok(&["artifact", "put", f.to_str().unwrap()]);
    let puts = ws.json(&["audit", "query", "--action", "artifact.put"]);
    assert_eq!(puts.as_array().unwrap().len(), 1);
    let none = ws.json(&["audit", "query", "--since", "2999-01-01"]);
    assert_eq!(none.as_array().unwrap().len(), 0);
    let cef = ws.ok(&["audit", "export", "--format", "cef"]);
    assert!(cef.lines().all(|l| l.starts_with("CEF:0|Citadel|Citadel|")));
    let ocsf = ws.ok(&["audit", "export", "--format", "ocsf"]);
    for l in ocsf.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["class_uid"], 6003);
    }
}

/// A full disk: the object store lives on a 4 MiB tmpfs. Needs root and
/// permission to mount (true in CI); elsewhere the test says so and fails,
/// rather than passing without checking anything.
#[test]
fn full_disk_gives_clean_error_and_no_corruption() {
    let ws = Ws::new();
    let mnt = ws.root.join("small-objects");
    std::fs::create_dir(&mnt).unwrap();
    let o =
        Command::new("mount").args(["-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "cannot mount a tmpfs for the full-disk test (run as root): {}", stderr(&o));
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let set = format!("storage.url=file://{}", mnt.display());
    let small = ws.file("small.bin", &random_bytes(1 << 20, 8));
    let out = ws.run(&["--set", &set, "artifact", "put", small.to_str().unwrap(), "--name", "small"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let big = ws.file("big.bin", &random_bytes(16 << 20, 9));
    let o = ws.run(&["--set", &set, "artifact", "put", big.to_str().unwrap(), "--name", "big"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("out of space") && stderr(&o).contains("hint:"), "{}", stderr(&o));
    let list = ws.run(&["--set", &set, "artifact", "ls", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "only the small artifact is visible");
    let o = ws.run(&["--set", &set, "fsck"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let failure = ws.json(&["audit", "query", "--outcome", "failure"]);
    assert_eq!(failure.as_array().unwrap().len(), 1);
}

#[test]
fn no_progress_bars_when_not_a_terminal() {
    // Test output is a pipe: a bar would show as carriage returns and
    // bar characters in stderr, which scripts and log files must not get.
    let ws = Ws::new();
    let f = ws.file("p.bin", &random_bytes(4 << 20, 21));
    let o = ws.run(&["artifact", "put", f.to_str().unwrap()]);
    assert!(o.status.success());
    let err = stderr(&o);
    assert!(!err.contains('\r') && !err.contains("=>") && !err.contains("eta"), "progress output on a pipe: {err:?}");
    let o = ws.run(&["fsck"]);
    assert!(o.status.success() && !stderr(&o).contains('\r'), "{}", stderr(&o));
}

#[test]
fn scan_exit_codes_and_json() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../citadel-scan/tests/fixtures");
    let bad = fixtures.join("os_system_p4.pkl");
    let o = bin().args(["scan", bad.to_str().unwrap(), "--json"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "a critical finding fails the scan");
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["failed"], true);
    assert_eq!(r["files"][0]["findings"][0]["severity"], "critical");
    let good = fixtures.join("benign_p4.pkl");
    let o = bin().args(["scan", good.to_str().unwrap()]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stdout));
    // Fail closed: an import on no allowlist is refused by default.
    let unknown = fixtures.join("unknown_p4.pkl");
    let o = bin().args(["scan", unknown.to_str().unwrap()]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "an unjudged import is refused by default");
    assert!(String::from_utf8_lossy(&o.stdout).contains("hint:"), "{}", String::from_utf8_lossy(&o.stdout));
    let o = bin().args(["scan", unknown.to_str().unwrap(), "--fail-on", "critical"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "--fail-on critical reports without failing on warnings");
    let o = bin().args(["scan", unknown.to_str().unwrap(), "--allow", "mylib.models.Builder"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "an allowed global passes: {}", String::from_utf8_lossy(&o.stdout));
    let o = bin().args(["scan", unknown.to_str().unwrap(), "--allow", "nodot"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "an --allow that is not a global's name is refused");
    // A closed stdout drops the report, never the verdict.
    let mut scan = bin();
    scan.args(["scan", bad.to_str().unwrap(), "--json"]);
    let out = run_with_closed_stdout(scan);
    assert_eq!(out.status.code(), Some(2), "a refused scan exits 2 into a closed pipe");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    let o = bin().args(["scan", bad.to_str().unwrap(), "--allow", "posix.system"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "a dangerous global can never be allowed");
    assert!(stderr(&o).contains("dangerous") && stderr(&o).contains("hint:"), "{}", stderr(&o));
    let o = bin().args(["scan", "/nonexistent/model.pkl"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("hint:"), "{}", stderr(&o));
}

#[test]
fn scan_writes_sarif() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../citadel-scan/tests/fixtures");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("scan.sarif");
    let o = bin()
        .args(["scan", fixtures.join("nested.zip").to_str().unwrap(), "--sarif", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(s["version"], "2.1.0");
    let run = &s["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "citadel-scan");
    let result = &run["results"][0];
    assert_eq!(result["level"], "error");
    assert_eq!(result["ruleId"], "pickle-dangerous-global");
    let rule_index = result["ruleIndex"].as_u64().unwrap() as usize;
    assert_eq!(run["tool"]["driver"]["rules"][rule_index]["id"], "pickle-dangerous-global");
    assert!(
        result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].as_str().unwrap().ends_with("nested.zip")
    );
    assert_eq!(result["locations"][0]["logicalLocations"][0]["fullyQualifiedName"], "inner.zip!deep/model.pkl");
}

#[test]
fn sign_and_verify_name_what_changed() {
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("../citadel-signing/tests/fixtures");
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir_all(model.join("sub")).unwrap();
    std::fs::write(model.join("weights.bin"), random_bytes(300_000, 41)).unwrap();
    std::fs::write(model.join("sub/config.json"), b"{}").unwrap();
    let sig = model.join("model.sig"); // inside the model: must not sign itself
    let key = fx.join("keys/TEST-ONLY-ec-p256-private.pem");
    let public = fx.join("keys/TEST-ONLY-ec-p256-public.pem");
    let o = bin()
        .args(["sign", model.to_str().unwrap(), "--key", key.to_str().unwrap(), "--signature", sig.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let verify = || {
        bin()
            .args([
                "verify",
                model.to_str().unwrap(),
                "--signature",
                sig.to_str().unwrap(),
                "--public-key",
                public.to_str().unwrap(),
                "--json",
            ])
            .output()
            .unwrap()
    };
    assert_eq!(verify().status.code(), Some(0));
    std::fs::write(model.join("sub/config.json"), b"{\"x\":1}").unwrap();
    std::fs::write(model.join("added.py"), b"import os").unwrap();
    let o = verify();
    assert_eq!(o.status.code(), Some(2));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["detail"]["mismatch"]["changed"][0], "sub/config.json");
    assert_eq!(r["detail"]["mismatch"]["extra"][0], "added.py");
    let other = fx.join("keys/TEST-ONLY-other-ec-p256-public.pem");
    let o = bin()
        .args([
            "verify",
            model.to_str().unwrap(),
            "--signature",
            sig.to_str().unwrap(),
            "--public-key",
            other.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("another key") && stderr(&o).contains("hint:"), "{}", stderr(&o));
}

/// The shipped command over both corpora: exit 0 on every benign file, 2 on
/// every malicious or unjudgeable one (the registry scans with the same rules).
#[test]
fn scan_fails_closed_on_the_corpora() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../citadel-scan/tests/fixtures");
    for (dir, want) in [("benign", 0), ("malicious", 2)] {
        let text = std::fs::read_to_string(fixtures.join(dir).join("manifest.json")).unwrap();
        let files: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
        let mut wrong = Vec::new();
        for name in files.keys() {
            let path = fixtures.join(dir).join(name);
            // A file in a subfolder is scanned with its folder (ONNX external data).
            let target = if name.contains('/') { path.parent().unwrap().to_path_buf() } else { path };
            let o = bin().args(["scan", target.to_str().unwrap(), "--json"]).output().unwrap();
            if o.status.code() != Some(want) {
                wrong.push(format!("{name}: exit {:?}", o.status.code()));
            }
        }
        assert!(wrong.is_empty(), "{dir}: {} file(s) got the wrong exit code:\n{}", wrong.len(), wrong.join("\n"));
    }
}

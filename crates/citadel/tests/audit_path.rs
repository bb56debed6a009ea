//! One authorize-and-audit path: every operation writes exactly one audit
//! record per decision (denials included, and refused credentials of every
//! kind), named with the action that was decided and the resource it was
//! decided on. Counted on SQLite and on PostgreSQL.
#![allow(clippy::unwrap_used)] // a test that cannot set up should stop loudly

mod common;

use common::*;

/// Who runs a step.
#[derive(Clone, Copy)]
enum Who<'a> {
    Owner,
    Token(&'a str),
}

/// Runs `args` as `who` (success or not as `ok` says) and returns the audit
/// records it wrote: (action, resource, outcome).
fn step(ws: &Ws, who: Who, args: &[&str], ok: bool) -> Vec<(String, String, String)> {
    let head = ws.audit_head();
    let mut cmd = ws.cmd(args);
    if let Who::Token(t) = who {
        cmd.env("CITADEL_TOKEN", t);
    }
    let o = cmd.output().unwrap();
    assert_eq!(o.status.success(), ok, "{args:?}: {}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    ws.audit_since(head)
}

fn rec(action: &str, resource: &str, outcome: &str) -> (String, String, String) {
    (action.to_string(), resource.to_string(), outcome.to_string())
}

fn every_decision_writes_one_record(ws: &Ws) {
    use Who::*;
    assert_eq!(
        step(ws, Owner, &["principal", "create", "bob"], true),
        [rec("principal.create", "principal:bob", "success")]
    );
    assert_eq!(
        step(ws, Owner, &["grant", "add", "bob", "data-scientist"], true),
        [rec("grant.add", "principal:bob", "success")]
    );
    let issued = ws.json(&["token", "issue", "bob"]);
    let bob = issued["token"].as_str().unwrap().to_string();
    let bob = Token(&bob);
    let file = ws.file("a.bin", b"some bytes");

    // Writes: one record, on the created resource.
    let put = step(ws, bob, &["artifact", "put", file.to_str().unwrap(), "--name", "a"], true);
    assert_eq!(put.len(), 1, "{put:?}");
    assert_eq!((put[0].0.as_str(), put[0].2.as_str()), ("artifact.put", "success"));
    assert!(put[0].1.starts_with("artifact:"), "{put:?}");

    // Reads, lists included: one record each.
    assert_eq!(step(ws, bob, &["artifact", "ls"], true), [rec("artifact.list", "artifact:*", "success")]);
    assert_eq!(step(ws, bob, &["data", "ls"], true), [rec("dataset.read", "dataset:*", "success")]);
    assert_eq!(step(ws, Owner, &["key", "ls"], true), [rec("key.read", "key:master", "success")]);
    assert_eq!(step(ws, Owner, &["principal", "ls"], true), [rec("principal.list", "principal:*", "success")]);
    assert_eq!(step(ws, Owner, &["token", "ls"], true), [rec("token.list", "token:*", "success")]);
    assert_eq!(step(ws, Owner, &["deploy", "ls"], true), [rec("model.read", "deployment:*", "success")]);
    assert_eq!(step(ws, Owner, &["audit", "verify"], true), [rec("audit.verify", "audit:log", "success")]);

    // Denials: one record each, and nothing else.
    assert_eq!(step(ws, bob, &["principal", "ls"], false), [rec("principal.list", "principal:*", "denied")]);
    assert_eq!(step(ws, bob, &["token", "ls"], false), [rec("token.list", "token:*", "denied")]);
    assert_eq!(step(ws, bob, &["audit", "query"], false), [rec("audit.read", "audit:log", "denied")]);
    assert_eq!(step(ws, bob, &["key", "ls"], false), [rec("key.read", "key:master", "denied")]);

    // A refused credential: one record, the same shape for every reason.
    let real = issued["token"].as_str().unwrap();
    let last = if real.ends_with('x') { "y" } else { "x" };
    let forged = format!("{}{last}", &real[..real.len() - 1]);
    let refused = step(ws, Token(&forged), &["artifact", "ls"], false);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!((refused[0].0.as_str(), refused[0].2.as_str()), ("auth.api-token", "denied"));
    assert!(refused[0].1.starts_with("credential:token:"), "{refused:?}");
    assert_eq!(
        step(ws, Token("not-a-token"), &["artifact", "ls"], false),
        [rec("auth.api-token", "credential:malformed", "denied")]
    );

    // The owner acting with the master key is allowed and flagged; a
    // credential's holder is not flagged.
    let records = ws.json(&["audit", "query", "--action", "principal.list"]);
    let flags: Vec<(&str, bool)> = records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["outcome"].as_str().unwrap(), r["details"]["break_glass"] == true))
        .collect();
    assert_eq!(flags, [("success", true), ("denied", false)], "{records}");

    // Every record verifies as one chain.
    ws.ok(&["audit", "verify"]);
}

#[test]
fn sqlite_every_decision_writes_one_record() {
    every_decision_writes_one_record(&Ws::new());
}

#[test]
fn postgres_every_decision_writes_one_record() {
    let Some(server) = service("CITADEL_TEST_PG_URL") else { return };
    let url = fresh_pg_database(&server);
    every_decision_writes_one_record(&Ws::with(&["--metadata-url", &url], &[]));
}

/// `audit verify` reads the log page by page (memory does not grow with
/// it): 25,000 records verify, and a record deleted at a page's edge is
/// found.
#[test]
fn a_long_log_is_verified_page_by_page_and_a_gap_at_a_page_edge_is_found() {
    let ws = Ws::new();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let w = ws.open_in_process().await;
        let refusals = (0..25_000)
            .map(|i| citadel_control::Refusal::new(None, &format!("probe-{i}"), "unknown token"))
            .collect::<Vec<_>>();
        w.record_refusals(refusals).await.unwrap();
        w.close().await.unwrap();
    });
    let v = ws.json(&["audit", "verify"]);
    assert!(v["problems"].as_array().unwrap().is_empty(), "{v}");
    assert!(v["records"].as_u64().unwrap() > 25_000, "{v}");
    let edge = citadel_control::VERIFY_PAGE + 1;
    ws.db_exec(&format!("DELETE FROM audit_log WHERE seq = {edge}"));
    let o = ws.run(&["audit", "verify", "--json"]);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(!o.status.success() && text.contains(&format!("\"from_seq\": {edge}")), "{text}");
}

//! Data-subject rights end to end: export (Art. 15/20), erasure (Art. 17)
//! and retention (Art. 5(1)(e)) through the real binary. After an erasure every artifact left
//! in the store is fetched, decrypted and decoded (Parquet cell by cell),
//! and none holds the subject's values, raw or pseudonymized; `fsck` shows
//! no object outside an artifact.
#![allow(clippy::unwrap_used)]

mod common;

use std::fmt::Write as _;
use std::path::Path;

use arrow_array::{Array, StringArray};
use common::*;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

const SPEC: &str = r#"
[dataset]
key = ["id"]
[columns.name]
mask = { kind = "pseudonymize" }
[columns.email]
mask = { kind = "pseudonymize" }
[columns.ssn]
mask = { kind = "tokenize" }
[columns.zip]
type = "string"
mask = { kind = "generalize", keep = 2 }
"#;

const NAME: &str = "Zelda Quixote";
const EMAIL: &str = "zelda.quixote@example.org";
const SSN: &str = "219-09-9999";

/// `rows` people; the subject is row 7 (and row `rows - 3` when `twice`).
fn people(rows: usize, with_subject: bool, twice: bool) -> String {
    let mut s = String::from("id,name,email,ssn,zip,age,income\n");
    for i in 0..rows {
        let subject = with_subject && (i == 7 || (twice && i == rows - 3));
        let (name, email, ssn) = if subject {
            (NAME.to_string(), EMAIL.to_string(), SSN.to_string())
        } else {
            (
                format!("Person {i}"),
                format!("p{i}@example.org"),
                format!("{:03}-{:02}-{:04}", 100 + i % 600, 10 + i % 80, 1000 + i),
            )
        };
        writeln!(s, "{i},{name},{email},{ssn},{:05},{},{}", 10000 + i, 20 + i % 50, 30_000 + (i * 7919) % 50_000)
            .unwrap();
    }
    s
}

fn add(ws: &Ws, file: &str, csv: &str) -> serde_json::Value {
    let src = ws.file(file, csv.as_bytes());
    let spec = ws.file("people.toml", SPEC.as_bytes());
    ws.json(&["data", "add", src.to_str().unwrap(), "--name", "people", "--expect", spec.to_str().unwrap()])
}

/// Every string cell and every raw byte of every artifact in the store
/// (each fetched through the store: chunks decrypted and authenticated).
/// Returns the needles found, with where.
fn search_store(ws: &Ws, needles: &[&str]) -> Vec<String> {
    let out = ws.root.parent().unwrap().join(format!("scan-{}", rand_suffix()));
    std::fs::create_dir_all(&out).unwrap();
    let mut hits = Vec::new();
    for a in ws.json(&["artifact", "ls"]).as_array().unwrap() {
        let id = a["id"].as_str().unwrap();
        let dest = out.join(id);
        ws.ok(&["artifact", "get", id, "-o", dest.to_str().unwrap()]);
        let files = if dest.is_dir() { walk(&dest) } else { vec![dest.clone()] };
        for f in files {
            let bytes = std::fs::read(&f).unwrap();
            for n in needles {
                if bytes.windows(n.len()).any(|w| w == n.as_bytes()) {
                    hits.push(format!("{n} in the bytes of {}", f.display()));
                }
            }
            if bytes.starts_with(b"PAR1") {
                for cell in parquet_strings(&f) {
                    for n in needles {
                        if cell.contains(n) {
                            hits.push(format!("{n} in a cell of {}", f.display()));
                        }
                    }
                }
            }
        }
    }
    hits
}

fn rand_suffix() -> String {
    format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos())
}

fn parquet_strings(path: &Path) -> Vec<String> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap()).unwrap().build().unwrap();
    let mut out = Vec::new();
    for b in reader {
        let b = b.unwrap();
        for c in b.columns() {
            if let Some(s) = c.as_any().downcast_ref::<StringArray>() {
                out.extend(s.iter().flatten().map(str::to_string));
            }
        }
    }
    out
}

/// What a failed command said: the error and its hint (on stdout as JSON with --json).
fn said(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(o))
}

fn officer(ws: &Ws) -> String {
    token_for(ws, "olga", &["privacy-officer"])
}

fn erase(ws: &Ws, token: &str, args: &[&str]) -> std::process::Output {
    let mut a = vec!["subject", "erase", "--dataset", "people", "--reason", "DSR-2026-0042"];
    a.extend_from_slice(args);
    as_user(ws, token, &a)
}

#[test]
fn a_subject_is_exported_then_erased_everywhere_with_a_signed_receipt() {
    let ws = Ws::new();
    let olga = officer(&ws);
    // v1 and v2 hold the subject, v3 does not.
    add(&ws, "v1.csv", &people(300, true, false));
    add(&ws, "v2.csv", &people(400, true, true));
    add(&ws, "v3.csv", &people(200, false, false));
    // A model trained on v1 (provenance through its artifact).
    let m = ws.root.parent().unwrap().join("m");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../citadel-scan/tests/fixtures/add.onnx"),
        m.join("model.onnx"),
    )
    .unwrap();
    ws.ok(&["model", "register", m.to_str().unwrap(), "--name", "churn", "--dataset", "datasets/people@1"]);

    // Access (Art. 15): every row, tokens reversed, pseudonyms as stored.
    let e = ok_json(as_user(
        &ws,
        &olga,
        &["subject", "export", "--dataset", "people", "--match", &format!("email={EMAIL}")],
    ));
    let rows = e["rows"].as_array().unwrap();
    assert_eq!(rows.iter().map(|r| r["version"].as_i64().unwrap()).collect::<Vec<_>>(), vec![1, 2, 2]);
    assert_eq!(rows[0]["values"]["ssn"], SSN, "tokens are reversed for the subject");
    assert_eq!(rows[0]["values"]["id"], 7);
    let pseudonym = rows[0]["values"]["email"].as_str().unwrap().to_string();
    let name_pseudonym = rows[0]["values"]["name"].as_str().unwrap().to_string();
    assert!(pseudonym.starts_with("ps_"));
    assert_eq!(e["pseudonymized"], serde_json::json!(["email", "name"]));
    // The same rows by the token column, by a number, and through a CSV of keys.
    let by_ssn =
        ok_json(as_user(&ws, &olga, &["subject", "export", "--dataset", "people", "--match", &format!("ssn={SSN}")]));
    assert_eq!(by_ssn["rows"].as_array().unwrap().len(), 3);
    let keys = ws.file("keys.csv", format!("email,id\n{EMAIL},7\n").as_bytes());
    let by_keys =
        ok_json(as_user(&ws, &olga, &["subject", "export", "--dataset", "people", "--keys", keys.to_str().unwrap()]));
    assert_eq!(by_keys["rows"].as_array().unwrap().len(), 2, "both columns must hold");
    let csv_out = ws.root.parent().unwrap().join("subject.csv");
    ok_json(as_user(
        &ws,
        &olga,
        &[
            "subject",
            "export",
            "--dataset",
            "people",
            "--match",
            &format!("email={EMAIL}"),
            "--format",
            "csv",
            "-o",
            csv_out.to_str().unwrap(),
        ],
    ));
    let text = std::fs::read_to_string(&csv_out).unwrap();
    assert!(text.starts_with("dataset,version,row,") && text.lines().count() == 4 && text.contains(SSN), "{text}");

    // Before: the check finds the subject in the store (it can fail).
    let needles = [NAME, EMAIL, SSN, pseudonym.as_str(), name_pseudonym.as_str()];
    let before = search_store(&ws, &needles);
    assert!(before.iter().any(|h| h.contains(&pseudonym)), "{before:?}");

    // Erasure (Art. 17).
    let r = ok_json(erase(&ws, &olga, &["--match", &format!("email={EMAIL}")]));
    assert_eq!(r["status"], "complete");
    assert_eq!(r["verified"], true);
    let receipt = &r["receipt"];
    let versions: Vec<(i64, i64, u64)> = receipt["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["version"].as_i64().unwrap(), v["revision"].as_i64().unwrap(), v["rows_removed"].as_u64().unwrap()))
        .collect();
    assert_eq!(versions, vec![(1, 2, 1), (2, 2, 2)]);
    assert_eq!(receipt["models_flagged"], serde_json::json!(["model:churn@1"]));
    assert!(receipt["chunks_deleted"].as_u64().unwrap() > 0);
    let receipt_text = receipt.to_string();
    for n in &needles {
        assert!(!receipt_text.contains(n), "the receipt holds no subject value");
    }

    // After: nothing of the subject in any object, and no object outside an artifact.
    let after = search_store(&ws, &needles);
    assert!(after.is_empty(), "{after:?}");
    let fsck = ws.json(&["fsck"]);
    assert_eq!(fsck["orphans"], 0, "{fsck}");
    // The metadata (profiles, the audit log) is the owner's only.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(ws.root.join("meta.db")).unwrap().permissions().mode() & 0o077, 0);
    assert!(
        fsck["missing"].as_object().unwrap().is_empty() && fsck["corrupt"].as_object().unwrap().is_empty(),
        "{fsck}"
    );

    // The versions keep their numbers, one row fewer; the other rows are intact.
    let v1 = ws.json(&["data", "show", "people@1"]);
    assert_eq!(v1["rows"], 299);
    assert_eq!(v1["revision"], 2);
    assert!(ws.ok(&["data", "show", "people@1"]).contains("revision 2: data subjects' rows erased"));
    assert_eq!(ws.json(&["data", "show", "people@3"])["rows"], 200, "v3 untouched");
    let got = ws.root.parent().unwrap().join("v2.csv.out");
    let g = ws.json(&["data", "get", "people@2", "-o", got.to_str().unwrap()]);
    assert_eq!(g["rows"], 398);

    // Exporting or erasing again: a clear answer, nothing changed.
    let again =
        as_user(&ws, &olga, &["subject", "export", "--dataset", "people", "--match", &format!("email={EMAIL}")]);
    assert!(!again.status.success() && said(&again).contains("nothing was changed"), "{}", said(&again));
    let again = erase(&ws, &olga, &["--match", &format!("email={EMAIL}")]);
    assert!(!again.status.success() && said(&again).contains("no row of dataset people"), "{}", said(&again));

    // The erased file cannot bring the rows back.
    let again =
        ws.run(&["data", "add", ws.root.parent().unwrap().join("v1.csv").to_str().unwrap(), "--name", "people"]);
    assert!(!again.status.success() && said(&again).contains("source of people@1"), "{}", said(&again));
    assert_eq!(ws.json(&["data", "show", "people"])["version"], 3, "nothing was stored");

    // Auditors see the erasures (receipts are evidence).
    let aud = token_for(&ws, "audrey", &["auditor"]);
    assert_eq!(ok_json(as_user(&ws, &aud, &["subject", "erasures"])).as_array().unwrap().len(), 1);

    // The flagged model cannot be promoted.
    let denied = ws.run(&["model", "promote", "churn@1", "--to", "staging"]);
    assert!(!denied.status.success());
    let msg = said(&denied);
    assert!(msg.contains("erased") && msg.contains(receipt["id"].as_str().unwrap()), "{msg}");

    // The receipt verifies; a changed receipt does not.
    let id = receipt["id"].as_str().unwrap();
    let shown = ok_json(as_user(&ws, &olga, &["subject", "receipt", id]));
    assert_eq!(shown["verified"], true);
    ws.db_exec(&format!(
        "UPDATE erasures SET receipt = REPLACE(receipt, '\"rows_removed\":2', '\"rows_removed\":0') WHERE id = '{id}'"
    ));
    let forged = as_user(&ws, &olga, &["subject", "receipt", id]);
    assert!(!forged.status.success());
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&forged.stdout).unwrap()["verified"], false);
    // ... and the compliance report says so first.
    let out = ws.root.parent().unwrap().join("report");
    let rep = ws.run(&["report", "-o", out.to_str().unwrap()]);
    assert_eq!(rep.status.code(), Some(2), "{}", said(&rep));
    let html = std::fs::read_to_string(out.join("compliance-report.html")).unwrap();
    assert!(html.contains("FAILED VERIFICATION") && html.contains(&format!("the receipt of {id} does not verify")));

    // Audit: the erasure and its shredding, with no subject value.
    let log = ws.ok(&["audit", "query", "--json"]);
    assert!(log.contains("subject.erase") && log.contains("subject.shred") && log.contains("subject.export"));
    for n in &needles {
        assert!(!log.contains(n), "the audit log holds no subject value");
    }
}

#[test]
fn erasure_is_a_separate_duty_and_refuses_what_cannot_name_a_subject() {
    let ws = Ws::new();
    add(&ws, "v1.csv", &people(120, true, false));
    // Neither the owner (admin) nor a data steward may erase or export.
    for token in [None, Some(token_for(&ws, "stew", &["data-steward"]))] {
        let o = match &token {
            Some(t) => erase(&ws, t, &["--match", &format!("email={EMAIL}")]),
            None => ws.run(&[
                "subject",
                "erase",
                "--dataset",
                "people",
                "--match",
                &format!("email={EMAIL}"),
                "--reason",
                "x",
            ]),
        };
        assert!(!o.status.success() && said(&o).contains("permission denied"), "{}", said(&o));
    }
    let olga = officer(&ws);
    // A generalized column names nobody; malformed conditions are refused without echoing values.
    let o = erase(&ws, &olga, &["--match", "zip=10007"]);
    assert!(!o.status.success() && said(&o).contains("generalize") && said(&o).contains("hint"), "{}", said(&o));
    let o = erase(&ws, &olga, &["--match", "secret-value"]);
    assert!(!o.status.success() && !said(&o).contains("secret-value"), "{}", said(&o));
    let o = as_user(
        &ws,
        &olga,
        &["subject", "erase", "--dataset", "people", "--match", &format!("email={EMAIL}"), "--reason", " "],
    );
    assert!(!o.status.success() && said(&o).contains("--reason"));
    // A condition that names a population is refused, whole.
    let o = erase(&ws, &olga, &["--match", "age=20", "--max-rows", "2"]);
    assert!(!o.status.success() && said(&o).contains("more than the 2"), "{}", said(&o));
    let o = erase(&ws, &olga, &["--match", "age=20", "--max-rows", "5000"]);
    assert!(!o.status.success() && said(&o).contains("subject.max_rows = 1000"), "{}", said(&o));
    let o = erase(&ws, &olga, &["--match", "mail=x@example.org"]);
    assert!(
        !o.status.success()
            && said(&o).contains("no version of the dataset has a column named")
            && said(&o).contains("its columns are age, email"),
        "{}",
        said(&o)
    );
    // The reason stays forever: no personal data in it.
    let o = as_user(
        &ws,
        &olga,
        &[
            "subject",
            "erase",
            "--dataset",
            "people",
            "--match",
            &format!("email={EMAIL}"),
            "--reason",
            &format!("asked by {EMAIL}"),
        ],
    );
    assert!(!o.status.success() && said(&o).contains("personal data") && !said(&o).contains(EMAIL), "{}", said(&o));
    let o = erase(&ws, &olga, &["--match", "email=nobody@example.org"]);
    assert!(!o.status.success() && said(&o).contains("nothing was changed"), "{}", said(&o));
    assert_eq!(ws.json(&["data", "show", "people"])["rows"], 120);
}

#[test]
fn an_erasure_killed_midway_rolls_back_or_resumes_never_half_done() {
    let ws = Ws::new();
    let olga = officer(&ws);
    add(&ws, "v1.csv", &people(150, true, false));
    let m = format!("email={EMAIL}");
    let killed_at = |point: &str| {
        let o = ws
            .cmd(&["subject", "erase", "--dataset", "people", "--match", &m, "--reason", "r", "--json"])
            .env("CITADEL_TOKEN", &olga)
            .env("CITADEL_FAILPOINT", point)
            .output()
            .unwrap();
        assert!(!o.status.success(), "{point}");
    };
    // Killed after its commit, before the old objects were deleted: the
    // receipt is not complete, and the next command finishes the job.
    killed_at("erasure-committed");
    assert_eq!(ws.json(&["data", "show", "people"])["rows"], 149);
    let list = ok_json(as_user(&ws, &olga, &["subject", "erasures"]));
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["status"], "complete");
    assert_eq!(list[0]["verified"], true);
    assert!(list[0]["receipt"]["chunks_deleted"].as_u64().unwrap() > 0);
    assert!(search_store(&ws, &[EMAIL, SSN, NAME]).is_empty());
    assert_eq!(ws.json(&["fsck"])["orphans"], 0);

    // Killed before its commit: nothing changed.
    add(&ws, "v2.csv", &people(160, true, false));
    killed_at("erasure-prepared");
    assert_eq!(ws.json(&["data", "show", "people@2"])["rows"], 160);
    assert_eq!(ok_json(as_user(&ws, &olga, &["subject", "erasures"])).as_array().unwrap().len(), 1);
    let e = ok_json(as_user(&ws, &olga, &["subject", "export", "--dataset", "people", "--match", &m]));
    assert_eq!(e["rows"].as_array().unwrap().len(), 1, "the subject is still in v2, whole");
    // The killed process's decrypted work files were swept.
    let left: Vec<_> = std::fs::read_dir(ws.root.join("tmp"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

/// Storage limitation: `gc` purges the versions past the retention their
/// expectations declared, audits each purge, and keeps the version number
/// taken; nothing of a purged version stays in the store.
#[test]
fn versions_past_their_retention_are_purged_by_gc() {
    let ws = Ws::new();
    let olga = officer(&ws);
    let spec = format!(
        "{SPEC}\n[processing]\npurposes = [\"churn\"]\nlegal_basis = \"contract\"\ncategories = [\"contact\"]\nretention_days = 30\n"
    );
    let add_with = |file: &str, csv: &str| {
        let src = ws.file(file, csv.as_bytes());
        let spec = ws.file("retained.toml", spec.as_bytes());
        ws.json(&["data", "add", src.to_str().unwrap(), "--name", "people", "--expect", spec.to_str().unwrap()])
    };
    add_with("v1.csv", &people(150, false, false));
    add_with("v2.csv", &people(150, true, false));
    let e = ok_json(as_user(
        &ws,
        &olga,
        &["subject", "export", "--dataset", "people", "--match", &format!("email={EMAIL}")],
    ));
    let pseudonym = e["rows"][0]["values"]["email"].as_str().unwrap().to_string();
    assert!(!search_store(&ws, &[&pseudonym]).is_empty());

    // Nothing is due yet.
    assert!(ws.json(&["gc"])["purged"].as_array().unwrap().is_empty());
    // The latest version, 2, was ingested 31 days ago.
    ws.db_exec("UPDATE data_versions SET created_at = created_at - 2678400000000 WHERE version = 2");
    let gc = ws.json(&["gc"]);
    let purged = gc["purged"].as_array().unwrap();
    assert_eq!(purged.len(), 1, "{gc}");
    assert_eq!((purged[0]["dataset"].as_str(), purged[0]["version"].as_i64()), (Some("people"), Some(2)));
    assert!(gc["unreferenced_chunks"].as_u64().unwrap() > 0, "its chunks were deleted: {gc}");
    let gone = ws.run(&["data", "show", "people@2"]);
    assert!(
        !gone.status.success() && said(&gone).contains("purged") && said(&gone).contains("retention of 30"),
        "{}",
        said(&gone)
    );
    assert_eq!(ws.json(&["data", "show", "people@1"])["rows"], 150);
    assert_eq!(ws.json(&["data", "show", "people"])["version"], 1, "the latest kept version");
    assert!(search_store(&ws, &[&pseudonym]).is_empty(), "the purged version left the store");
    assert_eq!(ws.json(&["fsck"])["orphans"], 0);
    // The number stays taken; the purge is on record, once.
    assert_eq!(add_with("v3.csv", &people(150, false, false))["version"], 3);
    let log: serde_json::Value = serde_json::from_str(&ws.ok(&["audit", "query", "--json"])).unwrap();
    let purges: Vec<_> = log.as_array().unwrap().iter().filter(|r| r["action"] == "dataset.purge").collect();
    assert_eq!(purges.len(), 1);
    assert_eq!(purges[0]["resource"], "dataset:people@2");

    // A consent basis needs the consent's reference; an unknown basis is refused.
    for (processing, needle) in [
        ("legal_basis = \"consent\"", "consent_ref"),
        ("legal_basis = \"because\"", "not one of consent, contract"),
        ("purposes = [\"x\"]", "needs processing.legal_basis"),
    ] {
        let bad = ws.file("bad.toml", format!("{SPEC}\n[processing]\n{processing}\n").as_bytes());
        let src = ws.file("v4.csv", people(150, false, false).as_bytes());
        let o = ws.run(&["data", "add", src.to_str().unwrap(), "--name", "people", "--expect", bad.to_str().unwrap()]);
        assert!(!o.status.success() && said(&o).contains(needle), "{}", said(&o));
    }
}

/// A version where the subject's column was renamed cannot be searched by
/// it: the erasure says so and exits 3, and the receipt lists the version.
#[test]
fn versions_that_cannot_hold_the_key_are_named_and_the_exit_code_says_so() {
    let ws = Ws::new();
    let olga = officer(&ws);
    add(&ws, "v1.csv", &people(120, true, false));
    let renamed = people(130, true, false).replacen("id,name,email,", "id,name,mail,", 1);
    let spec = ws.file("renamed.toml", SPEC.replace("[columns.email]", "[columns.mail]").as_bytes());
    let src = ws.file("v2.csv", renamed.as_bytes());
    ws.json(&["data", "add", src.to_str().unwrap(), "--name", "people", "--expect", spec.to_str().unwrap()]);
    let o = erase(&ws, &olga, &["--match", &format!("email={EMAIL}")]);
    assert_eq!(o.status.code(), Some(3), "{}", said(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["receipt"]["versions"].as_array().unwrap().len(), 1);
    assert_eq!(r["receipt"]["versions_skipped"][0]["version"], 2);
    assert!(r["receipt"]["versions_skipped"][0]["reasons"][0].as_str().unwrap().contains("no such column"));
    // Named by the new column, the subject goes from version 2 too.
    let o = erase(&ws, &olga, &["--match", &format!("mail={EMAIL}")]);
    assert_eq!(o.status.code(), Some(3), "version 1 has no 'mail': {}", said(&o));
    assert_eq!(ws.json(&["data", "show", "people@2"])["rows"], 129);
}

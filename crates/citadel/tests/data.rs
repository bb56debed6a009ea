//! Datasets end to end: PII must be masked before anything is stored,
//! restricted columns and tokens are released only to the right roles,
//! versions are checked against their predecessor (drift, relabelling,
//! duplicate floods) and quarantined, diffs count rows by keyed hashes, and
//! bad input stores nothing.

#![allow(clippy::unwrap_used)] // a test that cannot set up should stop loudly

mod common;

use std::path::{Path, PathBuf};

use common::*;

const ADULT_EXPECT: &str = "../../datasets/adult/adult.expect.toml";

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn luhn_complete(prefix: &str) -> String {
    let digits: Vec<u32> = prefix.bytes().map(|b| u32::from(b - b'0')).collect();
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| if i % 2 == 0 { if d * 2 > 9 { d * 2 - 9 } else { d * 2 } } else { d })
        .sum();
    format!("{prefix}{}", (10 - sum % 10) % 10)
}

fn iban_de(bban: &str) -> String {
    let rearranged = format!("{bban}131400"); // "DE00" moved to the end, D=13, E=14
    let rem = rearranged.bytes().fold(0u32, |r, b| (r * 10 + u32::from(b - b'0')) % 97);
    format!("DE{:02}{bban}", 98 - rem)
}

struct Customer {
    id: u64,
    name: String,
    email: String,
    card: String,
    ssn: String,
    iban: String,
    birth_date: String,
    zip: String,
    age: u64,
    income: u64,
    notes: String,
    churn: &'static str,
}

const FIRST: [&str; 8] = ["Maria", "James", "Sophie", "Ahmed", "Lucas", "Yuki", "Olga", "Pedro"];
const LAST: [&str; 8] = ["Smith", "Garcia", "Muller", "Khan", "Rossi", "Tanaka", "Ivanova", "Silva"];

fn customers(n: u64, seed: u64) -> Vec<Customer> {
    let mut r = Rng(seed | 1);
    (0..n)
        .map(|id| {
            let (f, l) = (FIRST[r.below(8) as usize], LAST[r.below(8) as usize]);
            let card = luhn_complete(&format!("4{:014}", r.below(100_000_000_000_000)));
            Customer {
                id,
                name: format!("{f} {l}"),
                email: format!("{}.{}{id}@example.com", f.to_lowercase(), l.to_lowercase()),
                card,
                ssn: format!("{:03}-{:02}-{:04}", 100 + r.below(500), 10 + r.below(89), 1000 + r.below(8999)),
                iban: iban_de(&format!("{:018}", r.below(1_000_000_000_000_000_000))),
                birth_date: format!("{}-{:02}-{:02}", 1940 + r.below(60), 1 + r.below(12), 1 + r.below(28)),
                zip: format!("{:05}", 10_000 + r.below(89_999)),
                age: 18 + r.below(70),
                income: 20_000 + r.below(150_000),
                notes: if id % 25 == 0 {
                    format!("asked to be called back, wrote from {f}.{l}@mail.example.org")
                } else {
                    "no contact requested".into()
                },
                churn: if r.below(4) == 0 { "yes" } else { "no" },
            }
        })
        .collect()
}

fn customers_csv(rows: &[Customer]) -> String {
    let mut s = String::from("id,name,email,card,ssn,iban,birth_date,zip,age,income,notes,churn\n");
    for c in rows {
        s += &format!(
            "{},{},{},{},{},{},{},{},{},{},\"{}\",{}\n",
            c.id, c.name, c.email, c.card, c.ssn, c.iban, c.birth_date, c.zip, c.age, c.income, c.notes, c.churn
        );
    }
    s
}

const CUSTOMER_EXPECT: &str = r#"
[dataset]
label = "churn"
key = ["id"]
quasi_identifiers = ["birth_date", "zip"]
sensitive = "churn"
on_failure = "reject"

[columns.id]
type = "integer"
unique = true
[columns.name]
mask = { kind = "redact" }
[columns.email]
regex = '[^@\s]+@[^@\s]+'
mask = { kind = "pseudonymize" }
[columns.card]
type = "string"
mask = { kind = "tokenize" }
[columns.ssn]
mask = { kind = "drop" }
[columns.iban]
mask = { kind = "pseudonymize" }
[columns.birth_date]
classification = "restricted"
mask = { kind = "generalize", date = "year" }
[columns.zip]
mask = { kind = "generalize", keep = 2 }
[columns.income]
mask = { kind = "noise", scale = 500.0 }
[columns.notes]
mask = { kind = "redact" }
[columns.churn]
allowed = ["yes", "no"]
"#;

fn read_csv(path: &Path) -> Vec<Vec<String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let mut rows = vec![r.headers().unwrap().iter().map(str::to_string).collect()];
    for rec in r.records() {
        rows.push(rec.unwrap().iter().map(str::to_string).collect());
    }
    rows
}

fn col(rows: &[Vec<String>], name: &str) -> Vec<String> {
    let i = rows[0].iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name} in {:?}", rows[0]));
    rows[1..].iter().map(|r| r[i].clone()).collect()
}

#[test]
fn personal_data_is_masked_before_it_is_stored_and_released_by_role() {
    let ws = Ws::new();
    let people = customers(600, 11);
    let file = ws.file("customers.csv", customers_csv(&people).as_bytes());
    let file = file.to_str().unwrap();

    // Without masks: refused, nothing stored, no value echoed.
    let o = ws.run(&["data", "add", file, "--name", "customers"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    for column in ["email", "card", "ssn", "iban", "name"] {
        assert!(err.contains(&format!("column \"{column}\" is restricted")), "{column}: {err}");
    }
    assert!(err.contains("hint:"));
    for p in &people[..50] {
        assert!(!err.contains(&p.email) && !err.contains(&p.card) && !err.contains(&p.ssn), "a value leaked: {err}");
    }
    assert_eq!(ws.json(&["data", "ls"]).as_array().unwrap().len(), 0);
    assert_eq!(ws.json(&["artifact", "ls"]).as_array().unwrap().len(), 0, "nothing stored");
    assert!(walk_or_empty(&ws.root.join("tmp")).is_empty(), "no work files left behind");
    let denied = ws.json(&["audit", "query", "--action", "dataset.write", "--outcome", "denied"]);
    assert_eq!(denied.as_array().unwrap().len(), 1);

    // With masks: stored.
    let expect = ws.file("customers.toml", CUSTOMER_EXPECT.as_bytes());
    let v = ws.json(&["data", "add", file, "--name", "customers", "--expect", expect.to_str().unwrap()]);
    assert_eq!(v["status"], "accepted", "{v:#}");
    assert_eq!(v["version"], 1);
    let profile = v["report"]["profile"].as_array().unwrap();
    let p = |name: &str| profile.iter().find(|c| c["name"] == name).unwrap().clone();
    assert_eq!(p("email")["mask"], "pseudonymize");
    assert_eq!(p("email")["source_classification"], "restricted");
    assert_eq!(p("email")["classification"], "confidential");
    assert_eq!(p("card")["classification"], "restricted", "tokens can be reversed");
    assert!(p("email")["top"].as_array().unwrap().is_empty(), "no values of PII columns in the profile");
    assert!(p("notes")["pii"].as_array().unwrap().iter().any(|d| d["rule"] == "email-in-text"));
    assert!(p("birth_date")["pii"].as_array().unwrap().iter().any(|d| d["kind"] == "date-of-birth"));
    assert!(!v["report"]["stored_columns"].as_array().unwrap().iter().any(|c| c == "ssn"), "dropped");
    let report_text = v.to_string();
    for c in &people {
        assert!(!report_text.contains(&c.email) && !report_text.contains(&c.card), "a value in the report");
    }
    let k = &v["report"]["k_anonymity"];
    assert!(k["k"].as_u64().unwrap() >= 1 && k["groups"].as_u64().unwrap() > 1, "{k}");

    // The owner (admin) reads: restricted columns (tokens) are withheld.
    let out = ws.root.parent().unwrap().join("owner.csv");
    let g = ws.json(&["data", "get", "customers", "-o", out.to_str().unwrap()]);
    assert_eq!(g["withheld"], serde_json::json!(["card"]));
    let rows = read_csv(&out);
    assert_eq!(rows.len(), 601);
    let emails = col(&rows, "email");
    assert!(emails.iter().all(|e| e.starts_with("ps_")));
    assert_eq!(col(&rows, "name")[0], "[REDACTED]");
    assert_eq!(col(&rows, "birth_date")[0], &people[0].birth_date[..4]);
    assert_eq!(col(&rows, "zip")[0], format!("{}***", &people[0].zip[..2]));
    let noisy: Vec<f64> = col(&rows, "income").iter().map(|x| x.parse().unwrap()).collect();
    assert!(noisy.iter().zip(&people).any(|(n, p)| (n - p.income as f64).abs() > 1.0), "noise was added");
    let text = std::fs::read_to_string(&out).unwrap();
    for c in &people {
        assert!(
            !text.contains(&c.email) && !text.contains(&c.card) && !text.contains(&c.ssn) && !text.contains(&c.iban)
        );
    }

    // A data scientist may read, but not reverse tokens.
    let sci = token_for(&ws, "sci", &["data-scientist"]);
    let sci_out = ws.root.parent().unwrap().join("sci.csv");
    let o = as_user(&ws, &sci, &["data", "get", "customers", "-o", sci_out.to_str().unwrap(), "--detokenize"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("permission denied"));
    // A data steward reads everything and may reverse the tokens.
    let steward = token_for(&ws, "steward", &["data-steward"]);
    let out = ws.root.parent().unwrap().join("steward.csv");
    let g =
        ok_json(as_user(&ws, &steward, &["data", "get", "customers@1", "-o", out.to_str().unwrap(), "--detokenize"]));
    assert_eq!(g["withheld"], serde_json::json!([]));
    assert_eq!(g["detokenized"], serde_json::json!(["card"]));
    let rows = read_csv(&out);
    assert_eq!(col(&rows, "card"), people.iter().map(|p| p.card.clone()).collect::<Vec<_>>());

    // Pseudonyms are deterministic: another dataset joins on them.
    let orders: String = std::iter::once("email,amount\n".to_string())
        .chain(people.iter().take(40).map(|p| format!("{},{}\n", p.email, p.income % 300)))
        .collect();
    let orders_file = ws.file("orders.csv", orders.as_bytes());
    let spec = ws.file("orders.toml", b"[columns.email]\nmask = { kind = \"pseudonymize\" }\n");
    ws.ok(&["data", "add", orders_file.to_str().unwrap(), "--name", "orders", "--expect", spec.to_str().unwrap()]);
    let out2 = ws.root.parent().unwrap().join("orders-out.csv");
    ws.ok(&["data", "get", "orders", "-o", out2.to_str().unwrap()]);
    assert_eq!(col(&read_csv(&out2), "email"), emails[..40].to_vec());

    // Every read is in the audit log with its columns, and the chain holds.
    let reads = ws.json(&["audit", "query", "--action", "dataset.read"]);
    let reads = reads.as_array().unwrap();
    assert!(reads.iter().any(|r| r["details"]["detokenized"] == serde_json::json!(["card"])), "{reads:#?}");
    assert!(reads.iter().any(|r| r["details"]["withheld"] == serde_json::json!(["card"])));
    ws.ok(&["audit", "verify"]);
}

fn adult_lines() -> Vec<String> {
    std::fs::read_to_string(repo("../../datasets/adult/adult.data"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn versions_are_checked_against_their_predecessor() {
    let ws = Ws::new();
    let expect = repo(ADULT_EXPECT);
    let expect = expect.to_str().unwrap();
    let add =
        |file: &Path| ws.run(&["data", "add", file.to_str().unwrap(), "--name", "adult", "--expect", expect, "--json"]);

    let o = add(&repo("../../datasets/adult/adult.data"));
    assert!(o.status.success(), "{}", stderr(&o));
    // v2: the UCI test split (header line dropped, labels without the trailing dot).
    let test: String = std::fs::read_to_string(repo("../../datasets/adult/adult.test"))
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("{}\n", l.trim_end_matches('.')))
        .collect();
    let o = add(&ws.file("adult-test.csv", test.as_bytes()));
    assert!(o.status.success(), "{}", stderr(&o));
    let v2: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v2["status"], "accepted", "{:#}", v2["report"]["reasons"]);
    // Whole tables fit in the sample, so drift equals scipy's on the full columns.
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo("../citadel-data/tests/fixtures/drift_reference.json")).unwrap(),
    )
    .unwrap();
    let drift = v2["report"]["drift"].as_array().unwrap();
    for c in ["age", "fnlwgt", "hours-per-week"] {
        let ours = drift.iter().find(|d| d["column"] == c).unwrap();
        for stat in ["ks", "psi", "js"] {
            let (a, b) = (ours[stat].as_f64().unwrap(), reference["numeric"][c][stat].as_f64().unwrap());
            assert!((a - b).abs() < 1e-9, "{c} {stat}: {a} vs {b}");
        }
    }

    // v3: 4% of labels flipped and 3,000 duplicated rows appended.
    let mut lines = adult_lines();
    let n = lines.len();
    for (i, l) in lines.iter_mut().enumerate() {
        if i % 25 == 0 {
            *l = if l.ends_with("<=50K") { l.replace("<=50K", ">50K") } else { l.replace(">50K", "<=50K") };
        }
    }
    let flipped = n.div_ceil(25);
    let copies: Vec<String> = lines[1000..4000].to_vec();
    lines.extend(copies);
    let poisoned = ws.file("adult-poisoned.csv", (lines.join("\n") + "\n").as_bytes());
    // Checked against the clean table it came from: a new dataset whose v1 is adult.data.
    let add_p = |file: &Path| {
        ws.run(&["data", "add", file.to_str().unwrap(), "--name", "adult-p", "--expect", expect, "--json"])
    };
    assert!(add_p(&repo("../../datasets/adult/adult.data")).status.success());
    let o = add_p(&poisoned);
    assert_eq!(o.status.code(), Some(2), "quarantined: exit code 2\n{}", stderr(&o));
    let v3: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v3["status"], "quarantined");
    let reasons = v3["report"]["reasons"].to_string();
    assert!(reasons.contains("relabelled against the previous version"), "{reasons}");
    assert!(reasons.contains("duplicate rows"), "{reasons}");
    let d = &v3["report"]["duplicates"];
    let relabelled = d["label_flip_rate_vs_previous"].as_f64().unwrap();
    let expected = flipped as f64 / (n + 3000) as f64;
    assert!((relabelled - expected).abs() < 0.005, "relabelled {relabelled}, expected about {expected}");

    // Quarantined: nobody but a data steward reads it, and a steward releases it.
    let out = ws.root.parent().unwrap().join("p2.csv");
    let o = ws.run(&["data", "get", "adult-p@2", "-o", out.to_str().unwrap()]);
    assert!(!o.status.success(), "the owner (admin) may not read a quarantined version");
    let steward = token_for(&ws, "steward", &["data-steward"]);
    let released =
        ok_json(as_user(&ws, &steward, &["data", "release", "adult-p@2", "--note", "checked with the source"]));
    assert_eq!(released["status"], "accepted");
    ws.ok(&["data", "get", "adult-p@2", "-o", out.to_str().unwrap(), "--format", "csv"]);
    // An existing output is never replaced.
    let o = ws.run(&["data", "get", "adult-p@2", "-o", out.to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("exists"), "{}", stderr(&o));

    // Diff by keyed row hashes: the flipped rows are removed and re-added.
    let diff = ws.json(&["data", "diff", "adult-p@1", "adult-p@2"]);
    assert_eq!(diff["removed"].as_u64().unwrap(), flipped as u64, "{diff:#}");
    assert_eq!(diff["added"].as_u64().unwrap(), flipped as u64 + 3000);
    assert!(diff["changed"].is_null(), "no key declared");

    // The HTML report has charts.
    let html = ws.root.parent().unwrap().join("adult.html");
    ws.ok(&["data", "show", "adult-p@2", "--html", html.to_str().unwrap()]);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<svg") && page.contains("hours-per-week") && page.contains("relabelled"));
    assert_eq!(ws.json(&["data", "versions", "adult"]).as_array().unwrap().len(), 2);
    let lineage = ws.ok(&["lineage", "dataset:adult-p@2"]);
    assert!(lineage.contains("previous-version") || lineage.contains("ingested-from"), "{lineage}");
    ws.ok(&["audit", "verify"]);
}

#[test]
fn diff_counts_added_removed_and_changed_rows_by_key() {
    let ws = Ws::new();
    let people = customers(300, 5);
    let expect = ws.file(
        "c.toml",
        CUSTOMER_EXPECT.replace("[columns.income]\nmask = { kind = \"noise\", scale = 500.0 }", "").as_bytes(),
    );
    let a = ws.file("a.csv", customers_csv(&people).as_bytes());
    // b: 10 removed, 5 added, 7 changed.
    let mut b_rows: Vec<Customer> = customers(300, 5).into_iter().skip(10).collect();
    for c in b_rows.iter_mut().take(7) {
        c.age += 1;
    }
    b_rows.extend(customers(5, 99).into_iter().map(|mut c| {
        c.id += 10_000;
        c
    }));
    let b = ws.file("b.csv", customers_csv(&b_rows).as_bytes());
    for f in [&a, &b] {
        ws.ok(&["data", "add", f.to_str().unwrap(), "--name", "c", "--expect", expect.to_str().unwrap()]);
    }
    let d = ws.json(&["data", "diff", "c@1", "c@2"]);
    assert_eq!(
        (d["removed"].as_u64(), d["added"].as_u64(), d["changed"].as_u64()),
        (Some(10), Some(5), Some(7)),
        "{d:#}"
    );
    assert_eq!(d["unchanged"], 300 - 17);
}

#[test]
fn bad_input_stores_nothing_and_says_what_to_do() {
    let ws = Ws::new();
    let cases: &[(&str, &[u8], &str)] = &[
        ("ragged.csv", b"a,b\n1,2\n3\n", "line 3"),
        ("empty.csv", b"", "empty"),
        ("utf8.csv", b"a\n\xc3\x28\n", "UTF-8"),
    ];
    for (name, bytes, needle) in cases {
        let f = ws.file(name, bytes);
        let o = ws.run(&["data", "add", f.to_str().unwrap(), "--name", "bad"]);
        assert_eq!(o.status.code(), Some(1), "{name}");
        let e = stderr(&o);
        assert!(e.contains(needle) && e.contains("hint:"), "{name}: {e}");
    }
    let broken = ws.file("broken.toml", b"[columns.a]\nmin = 3\nmax = 1\nregex = \"(\"\n[dataset]\nlabel = 5\n");
    let f = ws.file("ok.csv", b"a\n1\n");
    let o = ws.run(&["data", "add", f.to_str().unwrap(), "--name", "bad", "--expect", broken.to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("expectations"), "{}", stderr(&o));
    assert_eq!(ws.json(&["artifact", "ls"]).as_array().unwrap().len(), 0);
    assert_eq!(ws.json(&["data", "ls"]).as_array().unwrap().len(), 0);
    assert!(walk_or_empty(&ws.root.join("tmp")).is_empty());
}

#[test]
fn parquet_round_trip() {
    let ws = Ws::new();
    let expect = repo(ADULT_EXPECT);
    ws.ok(&[
        "data",
        "add",
        repo("../../datasets/adult/adult.data").to_str().unwrap(),
        "--name",
        "adult",
        "--expect",
        expect.to_str().unwrap(),
    ]);
    let pq = ws.root.parent().unwrap().join("adult.parquet");
    ws.ok(&["data", "get", "adult", "-o", pq.to_str().unwrap()]);
    let v = ws.json(&["data", "add", pq.to_str().unwrap(), "--name", "adult-pq"]);
    assert_eq!(v["report"]["format"], "parquet");
    assert_eq!(v["report"]["rows"], 32_561);
    let age = v["report"]["profile"].as_array().unwrap().iter().find(|c| c["name"] == "age").unwrap().clone();
    assert_eq!((age["min"].as_f64(), age["max"].as_f64()), (Some(17.0), Some(90.0)));
    // Same rows under the same keys: diff finds nothing added or removed.
    let d = ws.json(&["data", "diff", "adult@1", "adult-pq@1"]);
    assert_eq!((d["added"].as_u64(), d["removed"].as_u64()), (Some(0), Some(0)), "{d:#}");
}

/// Runs a command and samples its peak resident memory (VmHWM) until it exits.
fn peak_rss_kib(mut cmd: std::process::Command) -> (std::process::ExitStatus, u64) {
    let mut child = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_file)
            && let Some(line) = text.lines().find(|l| l.starts_with("VmHWM:"))
        {
            peak = peak.max(line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0));
        }
        if let Some(status) = child.try_wait().unwrap() {
            return (status, peak);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn wide_table(path: &Path, rows: u64) {
    use std::io::Write;
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(w, "id,x,y,z,n,m,kind,code,label").unwrap();
    let mut r = Rng(rows | 1);
    for id in 0..rows {
        let (x, y, z) = (r.below(1_000_000) as f64 / 7.0, r.below(1000) as f64 / 3.0, r.below(100_000) as f64);
        writeln!(
            w,
            "{id},{x:.4},{y:.4},{z},{},{},k{},c{:08x},{}",
            r.below(100),
            r.below(1_000_000),
            r.below(20),
            r.next() as u32,
            if r.below(3) == 0 { "yes" } else { "no" }
        )
        .unwrap();
    }
}

/// Memory stays bounded as rows grow: batches, row groups, sketches and the
/// capped trackers, never the whole table.
#[test]
fn ingest_memory_does_not_grow_with_the_row_count() {
    let ws = Ws::new();
    let dir = ws.root.parent().unwrap().to_path_buf();
    let (small, large) = (dir.join("small.csv"), dir.join("large.csv"));
    wide_table(&small, 100_000);
    wide_table(&large, 800_000);
    let spec = ws.file("w.toml", b"[dataset]\nlabel = \"label\"\n");
    let run = |file: &Path, name: &str| {
        let mut c =
            ws.cmd(&["data", "add", file.to_str().unwrap(), "--name", name, "--expect", spec.to_str().unwrap()]);
        c.env("CITADEL_PASSPHRASE", PASS);
        let (status, kib) = peak_rss_kib(c);
        assert!(status.success(), "{name}");
        kib
    };
    // Each size twice, the lower peak kept: a peak is noisy when other
    // tests load the machine (allocator arenas, thread timing), a leak is not.
    let (a, b) = (run(&small, "small").min(run(&small, "small2")), run(&large, "large").min(run(&large, "large2")));
    let size = std::fs::metadata(&large).unwrap().len() / 1024;
    eprintln!("peak RSS: {a} KiB for 100k rows, {b} KiB for 800k rows ({size} KiB of CSV)");
    // 8x the rows, and the peak may grow by the duplicate tracker's fixed
    // table and allocator noise only.
    assert!(b < a + 32 * 1024, "peak RSS grew from {a} KiB to {b} KiB");
}

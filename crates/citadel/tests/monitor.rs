//! Live monitoring end to end through the real binary: a pipeline-trained
//! Adult model served by the gateway, fed UCI Adult's held-out rows
//! (adult.test) as live traffic, then an extraction client (a grid sweep),
//! an evasion client (a perturbation search) and shifted rows.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

const COLUMNS: [&str; 15] = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
    "income",
];
const FEATURES: [&str; 8] =
    ["age", "workclass", "education", "marital-status", "occupation", "capital-gain", "capital-loss", "hours-per-week"];
const NUMERIC: [&str; 4] = ["age", "capital-gain", "capital-loss", "hours-per-week"];

/// adult.test's complete rows as records of the model's features.
fn held_out() -> Vec<serde_json::Map<String, Value>> {
    let text = std::fs::read_to_string(repo().join("datasets/adult/adult.test")).unwrap();
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty() && !l.contains('?'))
        .map(|l| {
            let cells: Vec<&str> = l.split(", ").collect();
            FEATURES
                .iter()
                .map(|f| {
                    let i = COLUMNS.iter().position(|c| c == f).unwrap();
                    let v = cells[i].trim();
                    let value = if NUMERIC.contains(f) { json!(v.parse::<f64>().unwrap()) } else { json!(v) };
                    (f.to_string(), value)
                })
                .collect()
        })
        .collect()
}

struct Gateway {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Gateway {
    fn start(ws: &Ws) -> Gateway {
        Gateway::start_with(ws, &[])
    }

    fn start_with(ws: &Ws, extra: &[&str]) -> Gateway {
        let log = ws.root.parent().unwrap().join("access.log");
        let mut cmd = ws.cmd(&["serve", "--listen", "127.0.0.1:0", "--insecure-http", "--json", "--poll-ms", "100"]);
        cmd.args(["--auth-window-secs", "2"]).args(extra).arg("--access-log").arg(&log);
        let (child, v) = spawn_listening(cmd);
        Gateway { child, addr: v["listening"].as_str().unwrap().to_string(), log }
    }

    fn post(&self, path: &str, token: &str, body: &Value) -> (u16, Value) {
        let mut s = std::net::TcpStream::connect(&self.addr).unwrap();
        send_request(&mut s, path, token, body.to_string().as_bytes()).unwrap();
        let (status, _, b) = read_response(&mut BufReader::new(s)).unwrap();
        (status, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }

    fn infer(&self, token: &str, records: &[serde_json::Map<String, Value>]) -> (u16, Value) {
        self.post("/v2/models/income/infer", token, &Value::Array(records.iter().cloned().map(Value::Object).collect()))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for the start of the next monitoring window (`secs` long), plus a margin.
fn next_window(secs: u64) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let into = now.as_millis() as u64 % (secs * 1000);
    std::thread::sleep(Duration::from_millis(secs * 1000 - into + 150));
}

/// The verdicts of windows that started at or after `since` (ms since the epoch), once `n` exist.
fn verdicts_since(ws: &Ws, gw: &Gateway, since_ms: u128, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all = ws.json(&["monitor", "status", "income", "--windows", "50"]);
        let mut v: Vec<Value> = all
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["window_start"].as_i64().unwrap() as u128 / 1000 >= since_ms)
            .cloned()
            .collect();
        if v.len() >= n {
            v.reverse(); // oldest first
            return v;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(&gw.log).unwrap_or_default();
            let monitor: Vec<&str> = log.lines().filter(|l| l.contains("monitor")).collect();
            panic!("only {} verdicts since {since_ms}: {all}\nmonitor log: {monitor:?}", v.len());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn now_ms() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
}

fn kinds(v: &Value) -> Vec<(String, Option<String>)> {
    v["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["kind"].as_str().unwrap().to_string(), d["principal"].as_str().map(str::to_string)))
        .collect()
}

/// A pipeline file that trains boosting (`iterations`) on Adult's income
/// with FEATURES, gated at `min_accuracy` and `min_parity_ratio`, and
/// registers it as model `income`.
fn income_pipeline(name: &str, iterations: u32, min_accuracy: f64, min_parity_ratio: f64) -> String {
    format!(
        r#"
[pipeline]
name = "{name}"
purpose = "income-prediction-research"
seed = 7
[ingest]
dataset = "adult"
source = "adult.data"
expectations = "adult.expect.toml"
[train]
trainer = "gradient_boosting"
label = "income"
positive = ">50K"
features = {features:?}
params = {{ max_iter = {iterations} }}
[evaluate]
sensitive = ["sex"]
robustness = {{ rows = 20 }}
shap_rows = 2
[gate]
thresholds = {{ min_accuracy = {min_accuracy:?}, min_parity_ratio = {min_parity_ratio:?} }}
[register]
model = "income"
"#,
        features = FEATURES
    )
}

/// The workspace: Adult ingested without masks, a boosting model trained,
/// gated, registered, approved and deployed as `income` with `policy`.
fn monitored(policy: &str) -> (Ws, String) {
    monitored_on(Ws::new(), policy)
}

fn monitored_on(ws: Ws, policy: &str) -> (Ws, String) {
    let dir = ws.root.parent().unwrap().to_path_buf();
    std::fs::copy(repo().join("datasets/adult/adult.data"), dir.join("adult.data")).unwrap();
    let expect = std::fs::read_to_string(repo().join("examples/quickstart/adult.expect.toml")).unwrap();
    let expect: String = expect.lines().filter(|l| !l.starts_with("mask =")).collect::<Vec<_>>().join("\n");
    std::fs::write(dir.join("adult.expect.toml"), expect).unwrap();
    let body = income_pipeline("income", 30, 0.8, 0.1);
    let file = ws.file("income.toml", body.as_bytes());
    ws.ok(&["run", file.to_str().unwrap()]);
    let appr = token_for(&ws, "abe", &["approver"]);
    for stage in ["staging", "production"] {
        let r = ws.json(&["model", "promote", "income@1", "--to", stage])["id"].as_str().unwrap().to_string();
        ok_json(as_user(&ws, &appr, &["model", "approve", &r]));
    }
    let policy_file = ws.file("monitoring.toml", policy.as_bytes());
    ws.ok(&["deploy", "set", "income", "--target", "income@1", "--monitoring", policy_file.to_str().unwrap()]);
    let eng = token_for(&ws, "erin", &["ml-engineer"]);
    (ws, eng)
}

fn client(ws: &Ws, name: &str) -> String {
    ws.ok(&["principal", "create", name]);
    ws.ok(&["grant", "add", name, "inference-client", "--scope", "model:income"]);
    ws.json(&["token", "issue", name])["token"].as_str().unwrap().to_string()
}

const WINDOW: u64 = 4;

#[test]
fn drift_extraction_and_evasion_are_detected_and_benign_traffic_is_not() {
    let policy = format!("window_secs = {WINDOW}\ngrace_secs = 1\n[detectors]\nextraction_min_rows = 300\n");
    let (ws, eng) = monitored(&policy);
    let (app, thief, prober) = (client(&ws, "app"), client(&ws, "thief"), client(&ws, "prober"));
    let rows = held_out();
    assert!(rows.len() > 10_000);
    let gw = Gateway::start(&ws);

    // Window 1: the well-behaved client alone, real held-out rows.
    next_window(WINDOW);
    // Within window 1 (4 s long, entered 150 ms ago): its start is before this, the previous window's before that.
    let w1 = now_ms() - 1000;
    for chunk in rows[..1500].chunks(100) {
        assert_eq!(gw.infer(&app, chunk).0, 200);
    }
    // Window 2: the same client, with an extraction sweep and an evasion search alongside.
    next_window(WINDOW);
    for chunk in rows[1500..3000].chunks(100) {
        assert_eq!(gw.infer(&app, chunk).0, 200);
    }
    // A grid over the numeric features' whole ranges, categories cycled.
    let mut grid = Vec::new();
    for (i, (age, gain)) in (0..10).flat_map(|a| (0..100).map(move |g| (a, g))).enumerate() {
        let mut r = rows[i % 50].clone();
        r.insert("age".into(), json!(17 + age * 8));
        r.insert("capital-gain".into(), json!(gain * 1000));
        r.insert("hours-per-week".into(), json!(1 + (i % 10) * 10));
        grid.push(r);
    }
    for chunk in grid.chunks(100) {
        assert_eq!(gw.infer(&thief, chunk).0, 200);
    }
    // An evasion search from a real row: bisection on capital gain, then on
    // hours, one changed feature a query, for the point where the answer flips.
    let base =
        rows.iter().find(|r| r["capital-gain"] == json!(0.0) && r["age"].as_f64().unwrap() > 35.0).unwrap().clone();
    let label = |r: &serde_json::Map<String, Value>| {
        let (code, a) = gw.infer(&prober, std::slice::from_ref(r));
        assert_eq!(code, 200, "{a}");
        a["outputs"].as_array().unwrap().iter().find(|o| o["name"] == "label").unwrap()["data"][0].clone()
    };
    let mut answers = Vec::new();
    for (feature, hi) in [("capital-gain", 20_000.0), ("hours-per-week", 99.0)] {
        let mut probe = base.clone();
        let start = label(&probe);
        let (mut lo, mut hi) = (probe[feature].as_f64().unwrap(), hi);
        for _ in 0..15 {
            let mid = ((lo + hi) / 2.0).round();
            probe.insert(feature.into(), json!(mid));
            let answer = label(&probe);
            if answer == start {
                lo = mid
            } else {
                hi = mid
            }
            answers.push(answer);
        }
    }
    let flips = answers.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(flips >= 3, "the search crossed the boundary only {flips} times");
    // Window 3: shifted rows from the well-behaved client: longer hours, more education.
    next_window(WINDOW);
    let shifted: Vec<_> = rows[3000..4500]
        .iter()
        .map(|r| {
            let mut r = r.clone();
            let h = r["hours-per-week"].as_f64().unwrap();
            r.insert("hours-per-week".into(), json!((h + 25.0).min(99.0)));
            r.insert("education".into(), json!(["Doctorate", "Masters", "Prof-school"][r.len() % 3]));
            r
        })
        .collect();
    for chunk in shifted.chunks(100) {
        assert_eq!(gw.infer(&app, chunk).0, 200);
    }

    let v = verdicts_since(&ws, &gw, w1, 3);
    // Window 1: real rows are not drift, not out of distribution, not abuse.
    assert_eq!(v[0]["reference"], "dataset:adult@1", "{}", v[0]);
    assert!(v[0]["rows"].as_u64().unwrap() >= 1500);
    assert_eq!(kinds(&v[0]), vec![], "false alarm on held-out rows: {}", v[0]);
    let judged: Vec<&str> = v[0]["drift"].as_array().unwrap().iter().map(|d| d["column"].as_str().unwrap()).collect();
    // Every feature but age: a confidential quasi-identifier of the training
    // data, withheld from captures and never sketched (a sketch keeps values).
    let expected: Vec<&str> = {
        let mut f: Vec<&str> = FEATURES.iter().copied().filter(|f| *f != "age").collect();
        f.sort();
        f
    };
    assert_eq!(judged, expected);
    // The predicted classes, against the model card's held-out predictions: no drift either.
    assert_eq!(v[0]["prediction"]["column"], "prediction", "{}", v[0]);
    assert_eq!(v[0]["prediction"]["drifted"], false, "{}", v[0]["prediction"]);
    // Window 2: the sweep and the search are found, each for its principal only.
    let k2 = kinds(&v[1]);
    assert!(k2.contains(&("extraction".into(), Some("thief".into()))), "{k2:?}");
    assert!(k2.contains(&("evasion".into(), Some("prober".into()))), "{k2:?}");
    assert!(k2.iter().all(|(_, p)| p.as_deref() != Some("app")), "the well-behaved client was flagged: {k2:?}");
    // Window 3: the drift names the shifted features, and only them.
    let drifted: Vec<&str> = v[2]["drift"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["drifted"] == true)
        .map(|d| d["column"].as_str().unwrap())
        .collect();
    assert_eq!(drifted, ["education", "hours-per-week"], "{}", v[2]);
    assert!(kinds(&v[2]).iter().all(|(_, p)| p.is_none()), "{:?}", kinds(&v[2]));

    // Incidents: deduplicated per kind and principal, evidence without values.
    let incidents = ok_json(as_user(&ws, &eng, &["incident", "ls"]));
    let list = incidents.as_array().unwrap();
    let of = |kind: &str| list.iter().filter(|i| i["kind"] == kind).collect::<Vec<_>>();
    assert_eq!(of("extraction").len(), 1, "{incidents}");
    assert_eq!(of("extraction")[0]["principal"], "thief");
    assert_eq!(of("evasion").len(), 1);
    let drift = of("drift");
    assert_eq!(drift.len(), 1, "one open drift incident, updated: {incidents}");
    assert!(drift[0]["summary"].as_str().unwrap().contains("hours-per-week"), "{}", drift[0]);
    let text = incidents.to_string();
    assert!(!text.contains("Machine-op-inspct") && !text.contains("Never-married"), "payload values in incidents");
    // The playbook throttled the two abusers (1 a second, bursts of 2) and nobody else.
    let throttled = |token: &str| (0..6).map(|_| gw.infer(token, &rows[..1]).0).filter(|c| *c == 429).count();
    assert!(throttled(&thief) >= 3 && throttled(&prober) >= 3);
    assert_eq!(throttled(&app), 0, "the well-behaved client was throttled");
    let extraction = of("extraction")[0]["id"].as_str().unwrap().to_string();
    let shown = ok_json(as_user(&ws, &eng, &["incident", "show", &extraction]));
    let actions: Vec<&str> = shown["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "action")
        .map(|e| e["details"]["action"]["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["alert", "throttle"], "{shown}");
    let audit = ws.json(&["audit", "query", "--action", "incident.manage", "--resource", "principal:"]);
    assert!(audit.to_string().contains(&extraction), "the throttle's audit record names the incident: {audit}");
    // A person undoes it: the client is served again.
    let undone = ok_json(as_user(&ws, &eng, &["incident", "undo", &extraction]));
    assert_eq!(undone.as_array().unwrap().len(), 1, "{undone}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.infer(&thief, &rows[..1]).0 != 200 {
        assert!(Instant::now() < deadline, "the throttle was not lifted");
        std::thread::sleep(Duration::from_millis(600));
    }

    // Show, HTML, acknowledge, resolve; each audited; an auditor may read but not act.
    let id = drift[0]["id"].as_str().unwrap();
    // A workspace playbook that quarantines on drift: dry run says so and does nothing, a run does it.
    std::fs::write(
        ws.root.join("policies/playbook.rego"),
        "package citadel.playbook\nimport rego.v1\nactions contains {\"action\": \"quarantine\"} if input.incident.kind == \"drift\"\n",
    )
    .unwrap();
    let dry = ok_json(as_user(&ws, &eng, &["incident", "playbook", id, "--dry-run"]));
    assert_eq!(dry[0]["action"]["action"], "quarantine");
    assert_eq!(dry[0]["dry_run"], true);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(gw.infer(&app, &rows[..1]).0, 200, "a dry run changed nothing");
    ok_json(as_user(&ws, &eng, &["incident", "playbook", id]));
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (code, body) = gw.infer(&app, &rows[..1]);
        if code == 503 {
            break body;
        }
        assert!(Instant::now() < deadline, "never quarantined");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(body.to_string().contains(id) && body.to_string().contains("incident undo"), "{body}");
    ok_json(as_user(&ws, &eng, &["incident", "undo", id]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.infer(&app, &rows[..1]).0 != 200 {
        assert!(Instant::now() < deadline, "the quarantine was not lifted");
        std::thread::sleep(Duration::from_millis(100));
    }
    let html = ws.root.parent().unwrap().join("incident.html");
    let shown = ok_json(as_user(&ws, &eng, &["incident", "show", id, "--html", html.to_str().unwrap()]));
    assert_eq!(shown["timeline"][0]["kind"], "opened");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.matches("<svg").count() >= 2 && page.contains("hours-per-week") && !page.contains("<script"));
    let auditor = token_for(&ws, "aud", &["auditor"]);
    ok_json(as_user(&ws, &auditor, &["incident", "show", id]));
    assert!(!as_user(&ws, &auditor, &["incident", "ack", id]).status.success());
    ok_json(as_user(&ws, &eng, &["incident", "ack", id, "--note", "looking"]));
    ok_json(as_user(&ws, &eng, &["incident", "resolve", id, "--note", "new survey population"]));
    let again = as_user(&ws, &eng, &["incident", "resolve", id]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stdout).contains("resolved"));
    let audit = ws.json(&["audit", "query", "--action", "incident.manage", "--resource", &format!("incident:{id}")]);
    let resolved = audit.as_array().unwrap().iter().filter(|r| r["details"]["status"] == "resolved").count();
    assert_eq!(resolved, 1, "{audit}");
    let writes = ws.json(&["audit", "query", "--action", "monitor.write"]);
    let verdicts = writes.as_array().unwrap().iter().filter(|r| r["details"]["drifted"].is_array()).count();
    assert!(verdicts >= 3, "{writes}");
    let status_html = ws.root.parent().unwrap().join("status.html");
    ws.ok(&["monitor", "status", "income", "--html", status_html.to_str().unwrap()]);
    let page = std::fs::read_to_string(&status_html).unwrap();
    assert!(page.contains(">drifted<") && page.matches("<svg").count() >= expected.len(), "status report");
    ws.ok(&["audit", "verify"]);
}

/// adult.test's complete rows: (features, true label without the trailing dot, sex).
fn held_out_truth() -> Vec<(serde_json::Map<String, Value>, String, String)> {
    let text = std::fs::read_to_string(repo().join("datasets/adult/adult.test")).unwrap();
    let lines: Vec<&str> = text.lines().skip(1).filter(|l| !l.trim().is_empty() && !l.contains('?')).collect();
    held_out()
        .into_iter()
        .zip(lines)
        .map(|(r, l)| {
            let cells: Vec<&str> = l.split(", ").collect();
            (r, cells[14].trim().trim_end_matches('.').to_string(), cells[9].trim().to_string())
        })
        .collect()
}

#[test]
fn a_canary_whose_live_accuracy_drops_is_rolled_back_with_no_failed_request() {
    canary_rollback(Ws::new());
}

/// The same on PostgreSQL: predictions, labels, the join, incidents and the
/// playbook's rollback through sqlx's Any driver on the other backend.
#[test]
fn a_canary_is_rolled_back_on_postgresql_too() {
    let Some(server) = service("CITADEL_TEST_PG_URL") else { return };
    let url = fresh_pg_database(&server);
    canary_rollback(Ws::with(&["--metadata-url", &url], &[]));
}

fn canary_rollback(ws: Ws) {
    let policy = "window_secs = 2\ngrace_secs = 1\n[feedback]\nenabled = true\nmin_labels = 300\n";
    let (ws, eng) = monitored_on(ws, policy);
    // Version 2: a much weaker model (one boosting iteration: it answers the
    // majority class), registered and approved into staging.
    let body = income_pipeline("income-small", 1, 0.7, 0.0);
    let file = ws.file("small.toml", body.as_bytes());
    ws.ok(&["run", file.to_str().unwrap()]);
    let appr = token_for(&ws, "abe2", &["approver"]);
    let r = ws.json(&["model", "promote", "income@2", "--to", "staging"])["id"].as_str().unwrap().to_string();
    ok_json(as_user(&ws, &appr, &["model", "approve", &r]));
    let policy_file = ws.root.parent().unwrap().join("monitoring.toml");
    let canary = ws.json(&[
        "deploy",
        "set",
        "income",
        "--strategy",
        "canary",
        "--target",
        "income@1:50",
        "--target",
        "income@2:50",
        "--monitoring",
        policy_file.to_str().unwrap(),
    ]);
    assert_eq!(canary["revision"], 2);
    let app = client(&ws, "app");
    ws.ok(&["principal", "create", "grader"]);
    ws.ok(&["grant", "add", "grader", "feedback-client", "--scope", "model:income"]);
    let grader = ws.json(&["token", "issue", "grader"])["token"].as_str().unwrap().to_string();
    let gw = Gateway::start(&ws);
    let rows = held_out_truth();

    // A steady client keeps calling through the whole episode.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let steady = {
        let (addr, token, stop) = (gw.addr.clone(), app.clone(), stop.clone());
        let body = Value::Array(vec![Value::Object(rows[0].0.clone())]).to_string();
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u64, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let mut s = std::net::TcpStream::connect(&addr).unwrap();
                send_request(&mut s, "/v2/models/income/infer", &token, body.as_bytes()).unwrap();
                match read_response(&mut BufReader::new(s)) {
                    Ok((200, _, _)) => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (ok, failed)
        })
    };

    // Served rows, and their true labels fed back by the grader.
    let mut per_version = std::collections::BTreeMap::new();
    for chunk in rows[..1600].chunks(50) {
        let records: Vec<Value> = chunk.iter().map(|(r, _, _)| Value::Object(r.clone())).collect();
        let mut s = std::net::TcpStream::connect(&gw.addr).unwrap();
        send_request(&mut s, "/v2/models/income/infer", &app, Value::Array(records).to_string().as_bytes()).unwrap();
        let (code, headers, b) = read_response(&mut BufReader::new(s)).unwrap();
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&b));
        let answer: Value = serde_json::from_slice(&b).unwrap();
        *per_version.entry(answer["model_version"].as_str().unwrap().to_string()).or_insert(0) += 1;
        let rid = headers.iter().find(|h| h.0 == "x-request-id").unwrap().1.clone();
        let feedback: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, (_, label, sex))| json!({"request_id": rid, "row": i, "label": label, "groups": {"sex": sex}}))
            .collect();
        let (code, r) = gw.post("/v2/models/income/feedback", &grader, &json!({ "feedback": feedback }));
        assert_eq!(code, 200, "{r}");
        assert_eq!(r["accepted"], chunk.len());
    }
    assert_eq!(per_version.len(), 2, "both versions served: {per_version:?}");

    // The canary answers worse: a performance incident rolls it back.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let live = ws.json(&["deploy", "ls"]);
        let income = live.as_array().unwrap().iter().find(|d| d["name"] == "income").unwrap().clone();
        if income["spec"]["strategy"] == "single" {
            assert_eq!(income["spec"]["targets"][0]["version"], 1, "{income}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never rolled back: {income}\n{}",
            ws.json(&["monitor", "status", "income"])
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // The gateway follows; then the steady client stops: not one request failed.
    std::thread::sleep(Duration::from_millis(800));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed) = steady.join().unwrap();
    assert!(ok > 20 && failed.is_empty(), "{ok} answered, failed: {failed:?}");

    let incidents = ok_json(as_user(&ws, &eng, &["incident", "ls"]));
    let perf: Vec<&Value> = incidents.as_array().unwrap().iter().filter(|i| i["kind"] == "performance").collect();
    assert_eq!(perf.len(), 1, "{incidents}");
    assert_eq!(perf[0]["version"], 2);
    let evidence = &perf[0]["evidence"];
    assert!(evidence["accuracy"].as_f64().unwrap() < evidence["baseline"][1].as_f64().unwrap() - 0.05, "{evidence}");
    assert!(evidence["groups"]["sex"]["Female"][0].as_u64().unwrap() > 0, "accuracy per group: {evidence}");
    let shown = ok_json(as_user(&ws, &eng, &["incident", "show", perf[0]["id"].as_str().unwrap()]));
    assert!(shown["timeline"].to_string().contains("rollback"), "{shown}");

    // Bad feedback gets clean 4xx answers, and nothing of it is stored.
    let bad = [
        (json!({"feedback": [{"request_id": "x", "label": "maybe"}]}), &grader, 400),
        (json!({"feedback": [{"request_id": "../etc", "label": ">50K"}]}), &grader, 400),
        (json!({"labels": []}), &grader, 400),
        (json!({"feedback": [{"request_id": "x", "label": ">50K"}]}), &app, 403),
        // Refused for its principal before its body is judged.
        (json!({"feedback": []}), &app, 403),
        (json!({"feedback": [{"request_id": "x", "label": ">50K"}]}), &"ctk_forged".to_string(), 401),
    ];
    for (body, token, want) in bad {
        let (code, r) = gw.post("/v2/models/income/feedback", token, &body);
        assert_eq!(code, want, "{body}: {r}");
        assert!(r["error"].is_string(), "{r}");
    }
    let huge = json!({"feedback": vec![json!({"request_id": "x", "label": ">50K"}); 10_001]});
    assert_eq!(gw.post("/v2/models/income/feedback", &grader, &huge).0, 400);
    // Another method: 405 with the one it takes.
    let mut s = std::net::TcpStream::connect(&gw.addr).unwrap();
    write!(s, "GET /v2/models/income/feedback HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let (status, headers, _) = read_response(&mut BufReader::new(s)).unwrap();
    assert_eq!(status, 405);
    assert!(headers.iter().any(|(k, v)| k == "allow" && v == "POST"), "{headers:?}");
    ws.ok(&["audit", "verify"]);
}

/// A connection to `addr` from the loopback address `from` (127.0.0.N).
fn connect_from(from: &str, addr: &str) -> std::net::TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let s = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        socket.connect(addr.parse().unwrap()).await.unwrap()
    });
    let s = s.into_std().unwrap();
    s.set_nonblocking(false).unwrap();
    s
}

#[test]
fn failed_authentication_bursts_and_a_token_used_from_many_addresses_open_incidents() {
    let (ws, eng) = monitored("window_secs = 2\ngrace_secs = 1\n");
    let app = client(&ws, "app");
    let shared = client(&ws, "leaked");
    let gw = Gateway::start(&ws);
    let rows = held_out();
    let body = Value::Array(vec![Value::Object(rows[0].clone())]).to_string();
    let call = |from: &str, token: &str| {
        let mut s = connect_from(from, &gw.addr);
        send_request(&mut s, "/v2/models/income/infer", token, body.as_bytes()).unwrap();
        read_response(&mut BufReader::new(s)).unwrap().0
    };
    next_window(2);
    // A guesser from 127.0.0.9; the well-behaved client from 127.0.0.1; the
    // leaked token from six addresses.
    for i in 0..30 {
        assert_eq!(call("127.0.0.9", &format!("ctk_guess{i}")), 401);
    }
    for _ in 0..10 {
        assert_eq!(call("127.0.0.1", &app), 200);
    }
    for n in 2..8 {
        assert_eq!(call(&format!("127.0.0.{n}"), &shared), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let (stuffing, reuse) = loop {
        let list = ok_json(as_user(&ws, &eng, &["incident", "ls"]));
        let find = |k: &str| list.as_array().unwrap().iter().filter(|i| i["kind"] == k).cloned().collect::<Vec<_>>();
        let (s, r) = (find("credential_stuffing"), find("token_reuse"));
        if !s.is_empty() && !r.is_empty() {
            break (s, r);
        }
        assert!(Instant::now() < deadline, "no credential incidents: {list}");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(stuffing.len(), 1, "{stuffing:?}");
    assert_eq!(stuffing[0]["evidence"]["address"], "127.0.0.9");
    assert!(stuffing[0]["evidence"]["failures"].as_u64().unwrap() >= 30);
    assert_eq!(reuse.len(), 1, "only the leaked token: {reuse:?}");
    assert_eq!(reuse[0]["principal"], "leaked");
    assert!(!reuse[0].to_string().contains("ctk_"), "no credential in an incident");

    // A crash between opening an incident and running its playbook: the
    // incident is queued in the opening transaction, so the next evaluation
    // (the gateway's or `monitor check`) runs it; an action already on the
    // timeline is not run again.
    let id = stuffing[0]["id"].as_str().unwrap().to_string();
    let actions = |ws: &Ws| {
        ws.db_query_i64(&format!("SELECT COUNT(*) FROM incident_events WHERE incident_id = '{id}' AND kind = 'action'"))
    };
    assert_eq!(actions(&ws), 1, "the default playbook alerts once");
    let pending = |ws: &Ws| ws.db_query_i64("SELECT COUNT(*) FROM playbook_pending");
    assert_eq!(pending(&ws), 0, "a playbook that ran is not pending");
    // A person's dry run leaves a queued enforcing playbook where it is.
    ws.db_exec(&format!(
        "INSERT INTO playbook_pending (incident_id, mode, opened_by, queued_at, claimed_until) \
         SELECT '{id}', 'enforce', value, 0, 4102444800000000 FROM workspace_meta WHERE key = 'owner'"
    ));
    ws.json(&["incident", "playbook", &id, "--dry-run"]);
    assert_eq!(pending(&ws), 1);
    ws.db_exec("DELETE FROM playbook_pending");
    ws.db_exec(&format!("DELETE FROM incident_events WHERE incident_id = '{id}' AND kind = 'action'"));
    ws.db_exec(&format!(
        "INSERT INTO playbook_pending (incident_id, mode, opened_by, queued_at, claimed_until) \
         SELECT '{id}', 'enforce', value, 0, 0 FROM workspace_meta WHERE key = 'owner'"
    ));
    ws.json(&["monitor", "check"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while pending(&ws) > 0 {
        assert!(Instant::now() < deadline, "the unfinished playbook was never resumed");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(actions(&ws), 1, "the lost action ran once");
    // Resumed again (a crash after the action, before the queue row went): nothing runs twice.
    ws.db_exec(&format!(
        "INSERT INTO playbook_pending (incident_id, mode, opened_by, queued_at, claimed_until) \
         SELECT '{id}', 'enforce', value, 0, 0 FROM workspace_meta WHERE key = 'owner'"
    ));
    ws.json(&["monitor", "check"]);
    assert_eq!((pending(&ws), actions(&ws)), (0, 1));

    // Monitoring records past their retention (30 days) go at gc; incidents stay.
    drop(gw);
    let old = 40i64 * 86_400 * 1_000_000;
    for sql in [
        format!("UPDATE monitor_windows SET window_start = window_start - {old}, window_end = window_end - {old}"),
        format!("UPDATE monitor_evaluations SET window_start = window_start - {old}"),
        format!("UPDATE auth_windows SET window_start = window_start - {old}, window_end = window_end - {old}"),
    ] {
        ws.db_exec(&sql);
    }
    let gc = ws.json(&["gc"]);
    // At least the authentication window and its verdict.
    assert!(gc["monitoring_rows_purged"].as_u64().unwrap() >= 2, "{gc}");
    assert_eq!(ws.json(&["gc"])["monitoring_rows_purged"], 0, "nothing left past retention");
    assert_eq!(ok_json(as_user(&ws, &eng, &["incident", "ls"])).as_array().unwrap().len(), 2);
    assert!(ws.json(&["audit", "query", "--action", "monitor.purge"]).as_array().unwrap().len() == 1);
}

/// A gateway killed (SIGKILL) mid-window loses only what it sketched since
/// its last part: the parts it wrote and those of the gateway that replaced
/// it merge into one window, judged once.
#[test]
fn a_gateway_killed_mid_window_loses_only_its_last_part() {
    const LONG: u64 = 12;
    let (ws, _) = monitored(&format!("window_secs = {LONG}\ngrace_secs = 1\n"));
    let app = client(&ws, "app");
    let rows = held_out();
    let mut first = Gateway::start_with(&ws, &["--monitor-part-secs", "1"]);
    next_window(LONG);
    let start = now_ms() - 1000;
    for chunk in rows[..300].chunks(100) {
        assert_eq!(first.infer(&app, chunk).0, 200);
    }
    // Its parts are written within a second or two; then it dies without a word.
    let deadline = Instant::now() + Duration::from_secs(5);
    while ws.db_query_i64("SELECT CAST(COALESCE(SUM(rows_seen), 0) AS BIGINT) FROM monitor_windows") < 300 {
        assert!(Instant::now() < deadline, "no part was written while the window was open");
        std::thread::sleep(Duration::from_millis(100));
    }
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let second = Gateway::start_with(&ws, &["--monitor-part-secs", "1"]);
    for chunk in rows[300..500].chunks(100) {
        assert_eq!(second.infer(&app, chunk).0, 200);
    }
    assert!(now_ms() < start + 1000 + u128::from(LONG) * 1000, "the test ran past its window; too slow a machine?");
    let v = verdicts_since(&ws, &second, start, 1);
    assert_eq!((v[0]["rows"].as_u64(), v[0]["requests"].as_u64()), (Some(500), Some(5)), "{}", v[0]);
    assert_eq!(v[0]["replicas"], 2, "{}", v[0]);
    // Judged once, from several parts.
    let this = format!("endpoint = 'income' AND window_start = {}", v[0]["window_start"].as_i64().unwrap());
    let parts = ws.db_query_i64(&format!("SELECT COUNT(*) FROM monitor_windows WHERE {this}"));
    assert!(parts >= 2, "{parts} parts");
    assert_eq!(ws.db_query_i64(&format!("SELECT COUNT(*) FROM monitor_evaluations WHERE {this}")), 1);
}

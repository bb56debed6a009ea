//! Pipelines end to end through the real binary: the quickstart, the stage
//! cache, the gate, external training in the sandbox, and bad pipeline files.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A pipeline file in the workspace's parent directory, with the Adult
/// data and the quickstart's expectations beside it.
fn pipeline(ws: &Ws, name: &str, body: &str) -> PathBuf {
    let dir = ws.root.parent().unwrap();
    for (f, src) in
        [("adult.data", "datasets/adult/adult.data"), ("adult.expect.toml", "examples/quickstart/adult.expect.toml")]
    {
        if !dir.join(f).exists() {
            std::fs::copy(repo().join(src), dir.join(f)).unwrap();
        }
    }
    ws.file(name, body.as_bytes())
}

const FEATURES: &str = r#"["age", "workclass", "education", "education-num", "marital-status", "occupation", "relationship", "capital-gain", "capital-loss", "hours-per-week"]"#;

/// Runs a pipeline with --json: the exit code, the report, and the error
/// text (with --json an error is a JSON object on stdout).
fn run_json(ws: &Ws, file: &Path) -> (i32, Value, String) {
    let o = ws.run(&["run", file.to_str().unwrap(), "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    let err = format!("{}{} hint: {}", stderr(&o), v["error"].as_str().unwrap_or(""), v["hint"].as_str().unwrap_or(""));
    (o.status.code().unwrap_or(-1), v, err)
}

#[test]
fn the_quickstart_runs_the_whole_platform_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("qs");
    let o = bin()
        .env_remove("CITADEL_PASSPHRASE")
        .args(["quickstart", "--dir", dir.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["model"], "adult-income@1");
    assert_eq!(v["calls"]["authenticated_ok"], 3);
    assert_eq!(v["calls"]["unauthenticated_status"], 401);
    assert_eq!(v["calls"]["forged_token_status"], 401);
    assert_eq!(v["calls"]["predicted_labels"].as_array().unwrap().len(), 5);
    assert!(v["audit"]["verified_records"].as_u64().unwrap() > 20);
    // The first run did the work; the ones after the approvals reused it.
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3, "{runs:?}");
    let stage = |r: &Value, s: &str| {
        r["stages"].as_array().unwrap().iter().find(|x| x[0] == s).unwrap()[1].as_str().unwrap().to_string()
    };
    assert_eq!(stage(&runs[0], "train"), "ran");
    assert_eq!(stage(&runs[2], "train"), "cached");
    assert_eq!(stage(&runs[2], "evaluate"), "cached");
    assert_eq!(stage(&runs[2], "gate"), "ran", "the gate is never cached");
    assert_eq!(stage(&runs[2], "deploy"), "ran");
    assert_eq!(runs[2]["status"], "succeeded");

    // The model card: HTML with charts, JSON with every section.
    let html = std::fs::read_to_string(v["model_card"].as_str().unwrap()).unwrap();
    assert!(html.matches("<svg").count() >= 8, "charts: {}", html.matches("<svg").count());
    for section in
        ["Fairness", "Robustness", "Permutation importance", "Mean |SHAP value|", "Confusion matrix", "Calibration"]
    {
        assert!(html.contains(section), "{section}");
    }
    assert!(!html.contains("<script"), "the card runs no script");
    let card: Value = serde_json::from_slice(&std::fs::read(v["model_card_json"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(card["schema"], "citadel.model-card/v1");
    let attrs: Vec<&str> =
        card["evaluation"]["fairness"].as_array().unwrap().iter().map(|f| f["attribute"].as_str().unwrap()).collect();
    assert_eq!(attrs, ["sex", "race"]);
    assert!(card["evaluation"]["metrics"]["accuracy"].as_f64().unwrap() > 0.8);
    assert_eq!(card["gate"]["passed"], true);
    // Masked on ingest: age in bands, the country pseudonymized.
    assert!(card["dataset"]["masked_columns"].as_array().unwrap().iter().any(|c| c == "age"));
    // Served with named raw inputs: the answers are class names, and the
    // record form (what the printed curl sends) answers like the column form.
    let classes = card["evaluation"]["classes"].clone();
    for l in v["calls"]["predicted_labels"].as_array().unwrap() {
        assert!(classes.as_array().unwrap().contains(l), "{l} is not a class name of {classes}");
    }
    let answer = &v["calls"]["record_answer"]["outputs"];
    let probs = answer.as_array().unwrap().iter().find(|o| o["name"] == "probabilities").unwrap();
    assert_eq!(probs["parameters"]["classes"], classes);
    let label = answer.as_array().unwrap().iter().find(|o| o["name"] == "label").unwrap();
    assert_eq!(label["datatype"], "BYTES");
    assert_eq!(label["data"][0], v["calls"]["predicted_labels"][0], "the record and column forms agree");
    assert!(v["calls"]["record"]["workclass"].is_string(), "{}", v["calls"]["record"]);
    assert!(html.contains("One input per feature"), "the card documents the named inputs");

    // The workspace works from the CLI afterwards; the ML-BOM carries the card.
    let pass = std::fs::read_to_string(dir.join("quickstart-passphrase")).unwrap();
    let cli = |args: &[&str]| {
        let o = bin().env("CITADEL_PASSPHRASE", pass.trim()).arg("-w").arg(&dir).args(args).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    let bom: Value = serde_json::from_str(&cli(&["model", "bom", "adult-income@1"])).unwrap();
    let model = &bom["components"][0];
    let metrics = model["modelCard"]["quantitativeAnalysis"]["performanceMetrics"].as_array().unwrap();
    assert!(metrics.iter().any(|m| m["type"] == "accuracy"), "{model}");
    assert!(
        bom["externalReferences"].to_string().contains("model-card")
            || model["externalReferences"].to_string().contains("model-card"),
        "{bom}"
    );
    let show: Value = serde_json::from_str(&cli(&["runs", "show", runs[0]["id"].as_str().unwrap(), "--json"])).unwrap();
    assert_eq!(show["stages"].as_array().unwrap().len(), 7);
    let verify = cli(&["audit", "verify"]);
    assert!(verify.contains("audit log intact"), "{verify}");
    // The client token is in a 0600 file, never in the output.
    let token = std::fs::read_to_string(dir.join("reports/client.token")).unwrap();
    assert!(!String::from_utf8_lossy(&o.stdout).contains(token.trim()));
    assert!(!std::fs::read_to_string(dir.join("reports/audit.jsonl")).unwrap().contains(token.trim()));

    // The compliance report: each statement rests on evidence it cites.
    let report = std::fs::read_to_string(v["compliance_report"].as_str().unwrap()).unwrap();
    assert!(report.contains("Audit log verified.") && !report.contains("FAILED VERIFICATION"));
    for needle in [
        "GDPR Article 30",
        "income-prediction-research",
        "legitimate-interests",
        "kept 3650 day(s)",
        "EU AI Act Annex IV",
        "adult-income@1",
        "passed by",
        "NIST AI RMF",
        "GOVERN 4.1",
    ] {
        assert!(report.contains(needle), "{needle:?} missing from the report");
    }
    let evidence: Value = serde_json::from_slice(&std::fs::read(dir.join("reports/evidence.json")).unwrap()).unwrap();
    let m = &evidence["models"][0];
    assert_eq!(m["training_data"][0]["purposes"][0], "income-prediction-research");
    let cited = m["register_audit"].as_i64().unwrap();
    let rec = &evidence["records"][cited.to_string()];
    assert_eq!(rec["action"], "model.register");
    assert!(report.contains(&format!("id=\"rec-{cited}\"")) && report.contains(rec["hash"].as_str().unwrap()));
    assert!(!report.contains("<script"));

    // A report on a tampered audit log says so first, and exits 2.
    let db = format!("sqlite://{}", dir.join("meta.db").display());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        sqlx::any::install_default_drivers();
        let mut c = <sqlx::AnyConnection as sqlx::Connection>::connect(&db).await.unwrap();
        sqlx::Executor::execute(&mut c, "UPDATE audit_log SET actor = 'someone-else' WHERE seq = 5").await.unwrap();
    });
    let out_dir = tmp.path().join("report");
    let o = bin()
        .env("CITADEL_PASSPHRASE", pass.trim())
        .arg("-w")
        .arg(&dir)
        .args(["report", "-o", out_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let tampered = std::fs::read_to_string(out_dir.join("compliance-report.html")).unwrap();
    let first = tampered.find("THE AUDIT LOG FAILED VERIFICATION").expect("the warning");
    assert!(first < tampered.find("GDPR Article 30").unwrap(), "on the first page");
    assert!(tampered.contains("record 5 was edited"));
}

#[test]
fn a_pipeline_file_with_several_errors_reports_them_all_and_runs_nothing() {
    let ws = Ws::new();
    let file = pipeline(
        &ws,
        "bad.toml",
        r#"
[pipeline]
name = "bad name!"

[ingest]
dataset = "adult"
source = "missing.csv"

[split]
test_fraction = 1.5

[train]
trainer = "deep_magic"
label = "income"
features = ["age", "income", "age"]
colour = "blue"

[gate]
policy = "nope.rego"

[register]
model = "m"

[extra]
x = 1
"#,
    );
    let o = ws.run(&["run", file.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = stderr(&o);
    for needle in ["unknown section [extra]", "colour", "split.test_fraction", "gate.policy", "pipeline.name"] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(err.contains("hint:"), "{err}");
    // The [train] section failed to parse as a whole (unknown key), so its
    // other problems are reported once it parses; fix that and see them.
    let file = pipeline(
        &ws,
        "bad2.toml",
        r#"
[pipeline]
name = "p"
purpose = "income-prediction-research"
[ingest]
dataset = "adult"
source = "missing.csv"
[train]
trainer = "deep_magic"
label = "income"
features = ["age", "income", "age"]
[register]
model = "m"
"#,
    );
    let err = stderr(&ws.run(&["run", file.to_str().unwrap()]));
    for needle in ["missing.csv", "deep_magic", "contains the label", "lists \"age\" twice"] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    // Nothing ran: no dataset, no run.
    assert!(ws.json(&["data", "ls"]).as_array().unwrap().is_empty());
    assert!(ws.json(&["runs", "ls"]).as_array().unwrap().is_empty());
}

#[test]
fn a_failed_gate_stops_the_run_registers_nothing_and_is_audited_and_a_second_run_is_cached() {
    let ws = Ws::new();
    // Gradient boosting, no fairness mitigation, the default thresholds:
    // the parity ratio across sex is far below 0.8.
    let body = format!(
        r#"
[pipeline]
name = "gbt"
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
features = {FEATURES}
params = {{ max_iter = 30 }}
[evaluate]
sensitive = ["sex"]
robustness = {{ rows = 50 }}
shap_rows = 3
[register]
model = "gbt"
"#
    );
    let file = pipeline(&ws, "gbt.toml", &body);
    let (code, _, err) = run_json(&ws, &file);
    assert_ne!(code, 0);
    assert!(err.contains("demographic parity ratio across sex"), "{err}");
    assert!(err.contains("nothing was registered"), "{err}");
    assert_eq!(versions(&ws, "gbt"), 0);
    let denied = ws.json(&["audit", "query", "--action", "pipeline.gate"]);
    assert!(denied.to_string().contains("Denied") || denied.to_string().contains("denied"), "{denied}");
    let runs = ws.json(&["runs", "ls"]);
    assert_eq!(runs[0]["status"], "gate-failed");
    let show = ws.json(&["runs", "show", runs[0]["id"].as_str().unwrap()]);
    let stages: Vec<(String, String)> = show["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["stage"].as_str().unwrap().into(), s["status"].as_str().unwrap().into()))
        .collect();
    assert!(stages.contains(&("gate".into(), "failed".into())), "{stages:?}");
    assert!(stages.contains(&("register".into(), "not-reached".into())), "{stages:?}");

    // Same inputs: nothing is re-trained or re-evaluated; the gate decides again.
    let (code, _, _) = run_json(&ws, &file);
    assert_ne!(code, 0);
    let runs = ws.json(&["runs", "ls"]);
    let show = ws.json(&["runs", "show", runs[0]["id"].as_str().unwrap()]);
    let status = |s: &str| {
        show["stages"].as_array().unwrap().iter().find(|x| x["stage"] == s).unwrap()["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(status("ingest"), "cached");
    assert_eq!(status("train"), "cached");
    assert_eq!(status("evaluate"), "cached");
    assert_eq!(status("gate"), "failed");

    // A changed setting re-runs the stage it feeds and those after it.
    let relaxed = body
        .replace("[register]", "[gate]\nthresholds = { min_parity_ratio = 0.2, min_accuracy = 0.8 }\n[register]")
        .replace("max_iter = 30", "max_iter = 31");
    let file = pipeline(&ws, "gbt2.toml", &relaxed);
    let (code, v, err) = run_json(&ws, &file);
    assert_eq!(code, 0, "{err}");
    let status = |s: &str| {
        v["stages"].as_array().unwrap().iter().find(|x| x["stage"] == s).unwrap()["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(status("ingest"), "cached");
    assert_eq!(status("train"), "ran");
    assert_eq!(status("register"), "ran");
    assert_eq!(v["model"], "gbt@1");
    let card: Value = serde_json::from_slice(&std::fs::read(v["card_json"].as_str().unwrap()).unwrap()).unwrap();
    // The export (run by tract) is what was measured.
    assert!(card["evaluation"]["metrics"]["accuracy"].as_f64().unwrap() > 0.85, "{}", card["evaluation"]["metrics"]);
    let evaluate = v["stages"].as_array().unwrap().iter().find(|x| x["stage"] == "evaluate").unwrap().clone();
    assert!(evaluate["outputs"]["export_agreement"]["max_abs_difference"].as_f64().unwrap() < 1e-4, "{evaluate}");

    // Only the evaluation changes: the model is reused, and its trainer's own
    // model (kept beside it) still answers the attack and the explanations,
    // after agreeing with the export.
    let reevaluated = relaxed.replace("robustness = { rows = 50 }", "robustness = { rows = 60 }");
    let file = pipeline(&ws, "gbt3.toml", &reevaluated);
    let (code, v, err) = run_json(&ws, &file);
    assert_eq!(code, 0, "{err}");
    let stage = |s: &str| v["stages"].as_array().unwrap().iter().find(|x| x["stage"] == s).unwrap().clone();
    assert_eq!(stage("train")["status"], "cached");
    assert_eq!(stage("evaluate")["status"], "ran");
    assert!(stage("evaluate")["outputs"]["export_agreement"]["rows"].as_u64().unwrap() > 1000, "{}", stage("evaluate"));
}

/// How many versions a model has (none when it was never registered).
fn versions(ws: &Ws, model: &str) -> usize {
    let o = ws.run(&["model", "ls", model, "--json"]);
    serde_json::from_slice::<Value>(&o.stdout).ok().and_then(|v| v.as_array().map(Vec::len)).unwrap_or(0)
}

fn train_venv() -> PathBuf {
    PathBuf::from(
        std::env::var("CITADEL_TEST_TRAIN_VENV")
            .expect("CITADEL_TEST_TRAIN_VENV: run through scripts/test.sh (scripts/services.sh makes the venv)"),
    )
}

#[test]
fn an_external_training_command_runs_sandboxed_with_its_secret_and_escapes_are_stopped() {
    let ws = Ws::new();
    let venv = train_venv();
    let code_dir = repo().join("crates/citadel/tests/fixtures/trainer");
    let body = |script: &str, model: &str| {
        format!(
            r#"
[pipeline]
name = "ext-{model}"
purpose = "income-prediction-research"
seed = 3
[ingest]
dataset = "adult"
source = "adult.data"
expectations = "adult.expect.toml"
[train]
trainer = "command"
command = ["{py}", "{{code}}/{script}"]
code = "{code}"
read_paths = ["{venv}"]
secrets = ["TRAIN_API_KEY"]
label = "income"
positive = ">50K"
features = {FEATURES}
limits = {{ wall_seconds = 300, cpu_seconds = 300, memory_bytes = 4294967296 }}
[evaluate]
sensitive = ["sex"]
robustness = {{ rows = 40 }}
shap_rows = 2
[gate]
thresholds = {{ min_parity_ratio = 0.0, min_accuracy = 0.8 }}
[register]
model = "{model}"
"#,
            py = venv.join("bin/python").display(),
            code = code_dir.display(),
            venv = venv.display(),
        )
    };
    // The secret is missing: the run says how to set it, and nothing runs.
    let file = pipeline(&ws, "ext.toml", &body("train.py", "ext"));
    let (code, _, err) = run_json(&ws, &file);
    assert_ne!(code, 0);
    assert!(err.contains("citadel secret set TRAIN_API_KEY"), "{err}");

    let secret = "s3cr3t-training-key-value";
    let mut c = ws.cmd(&["secret", "set", "TRAIN_API_KEY"]);
    c.stdin(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), secret.as_bytes()).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());

    let (code, v, err) = run_json(&ws, &file);
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(v["model"], "ext@1");
    let train = v["stages"].as_array().unwrap().iter().find(|s| s["stage"] == "train").unwrap();
    // The command's single-tensor model is served with named raw inputs, like a built-in one.
    assert_eq!(train["outputs"]["details"]["inputs"], "named", "{train}");
    let sandbox = &train["outputs"]["details"]["sandbox"]["enforcement"];
    assert_eq!(sandbox["landlock"], "fully enforced", "{sandbox}");
    assert!(sandbox["namespaces"].as_array().unwrap().iter().any(|n| n == "net"));
    // Served by the same executor as any registered model; scanned and signed.
    let listed = ws.json(&["model", "ls", "ext"]);
    assert_eq!(listed[0]["scan"]["critical"], 0, "{listed}");
    // The secret never lands in the audit log, the run record or the output.
    let audit = ws.ok(&["audit", "export", "--format", "jsonl"]);
    assert!(!audit.contains(secret));
    assert!(audit.contains("secret.use"));
    assert!(!v.to_string().contains(secret));

    assert_eq!(ws.json(&["secret", "ls"]), serde_json::json!(["TRAIN_API_KEY"]));

    // The same command on a multi-class label gets class indices (not 0/1) and the task in
    // spec.json; its six-class model is evaluated as one and served with named inputs.
    let multi = body("train.py", "ext-rel")
        .replace("label = \"income\"\npositive = \">50K\"", "label = \"relationship\"")
        .replace(", \"relationship\"", "")
        .replace("min_parity_ratio = 0.0, min_accuracy = 0.8", "min_accuracy = 0.5, min_group_ratio = 0.3");
    assert!(multi.contains("label = \"relationship\"") && !multi.contains("positive"), "{multi}");
    let file = pipeline(&ws, "ext-rel.toml", &multi);
    let (code, v, err) = run_json(&ws, &file);
    assert_eq!(code, 0, "{err}\n{v}");
    let card: Value = serde_json::from_slice(&std::fs::read(v["card_json"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(card["evaluation"]["task"], "multiclass");
    assert_eq!(card["evaluation"]["classes"].as_array().unwrap().len(), 6);
    assert!(card["evaluation"]["metrics"]["accuracy"].as_f64().unwrap() > 0.6, "{}", card["evaluation"]["metrics"]);

    // A command that reaches for the network is stopped, and the run says so.
    let file = pipeline(&ws, "escape.toml", &body("escape.py", "escape"));
    let (code, _, err) = run_json(&ws, &file);
    assert_ne!(code, 0);
    assert!(err.contains("the training command exited with code"), "{err}");
    // Landlock refuses the connect (EACCES) before the empty network namespace could.
    assert!(err.contains("PermissionError") || err.contains("Network is unreachable"), "{err}");
    assert_eq!(versions(&ws, "escape"), 0);

    // A removed secret is gone for the next run.
    assert_eq!(ws.json(&["secret", "rm", "TRAIN_API_KEY"])["removed"], true);
    assert!(ws.json(&["secret", "ls"]).as_array().unwrap().is_empty());
}

/// Purpose limitation (GDPR Art. 5(1)(b)): the quickstart's Adult data is
/// declared for one purpose; a pipeline for another, or for none, is
/// refused before a row is read, and nothing is trained or registered.
#[test]
fn a_pipeline_whose_purpose_the_dataset_does_not_declare_is_refused() {
    let ws = Ws::new();
    for (name, purpose_line, needle) in
        [("mkt", "purpose = \"marketing\"", "\"marketing\" is not among them"), ("none", "", "declares no purpose")]
    {
        let file = pipeline(
            &ws,
            &format!("{name}.toml"),
            &format!(
                r#"
[pipeline]
name = "{name}"
{purpose_line}
[ingest]
dataset = "adult"
source = "adult.data"
expectations = "adult.expect.toml"
[train]
trainer = "logistic_regression"
label = "income"
positive = ">50K"
features = {FEATURES}
[register]
model = "{name}"
"#
            ),
        );
        let (code, _, err) = run_json(&ws, &file);
        assert_ne!(code, 0);
        assert!(
            err.contains(needle) && err.contains("income-prediction-research") && err.contains("Art. 5(1)(b)"),
            "{err}"
        );
        assert!(err.contains("hint: declare a purpose"), "{err}");
    }
    assert_eq!(versions(&ws, "mkt") + versions(&ws, "none"), 0, "nothing was registered");
    assert!(ws.json(&["data", "ls"]).as_array().unwrap().is_empty(), "nothing was ingested");
}

/// A label with more than two values trains a multi-class model, and
/// `task = "regression"` a regressor: each is evaluated with its own
/// metrics and fairness frames, gated by its own rules, and registered
/// with a card that shows them. (That the metrics equal scikit-learn's and
/// Fairlearn's is held by citadel-ml's `task_metrics` test.)
#[test]
fn multi_class_and_regression_pipelines_train_evaluate_gate_and_register() {
    let ws = Ws::new();
    let features =
        r#"["age", "workclass", "education", "marital-status", "occupation", "capital-gain", "hours-per-week"]"#;
    let head = |name: &str| {
        format!(
            r#"
[pipeline]
name = "{name}"
purpose = "income-prediction-research"
seed = 3
[ingest]
dataset = "adult"
source = "adult.data"
expectations = "adult.expect.toml"
"#
        )
    };
    let stage = |v: &Value, s: &str| v["stages"].as_array().unwrap().iter().find(|x| x["stage"] == s).unwrap().clone();

    // ---- multi-class: `relationship` has six values.
    let body = format!(
        r#"{}[train]
trainer = "gradient_boosting"
label = "relationship"
features = {features}
params = {{ max_iter = 20 }}
[evaluate]
sensitive = ["sex"]
[gate]
thresholds = {{ min_accuracy = 0.5, min_group_ratio = 0.5 }}
[register]
model = "rel"
"#,
        head("rel")
    );
    let file = pipeline(&ws, "rel.toml", &body);
    let (code, v, err) = run_json(&ws, &file);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["model"], "rel@1");
    assert!(stage(&v, "evaluate")["outputs"]["export_agreement"]["max_abs_difference"].as_f64().unwrap() < 1e-4);
    let card: Value = serde_json::from_slice(&std::fs::read(v["card_json"].as_str().unwrap()).unwrap()).unwrap();
    let e = &card["evaluation"];
    assert_eq!(e["task"], "multiclass");
    let classes: Vec<&str> = e["classes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert_eq!(classes, ["Husband", "Not-in-family", "Other-relative", "Own-child", "Unmarried", "Wife"]);
    let m = &e["metrics"];
    let confusion: Vec<Vec<u64>> = serde_json::from_value(m["confusion"].clone()).unwrap();
    let rows: u64 = confusion.iter().flatten().sum();
    assert_eq!(rows, m["rows"].as_u64().unwrap());
    assert!(rows > 5000, "a fifth of Adult is held out: {rows}");
    let diagonal: u64 = (0..6).map(|k| confusion[k][k]).sum();
    assert!((m["accuracy"].as_f64().unwrap() - diagonal as f64 / rows as f64).abs() < 1e-12);
    assert!(m["accuracy"].as_f64().unwrap() > 0.6, "{m}");
    assert!(m["macro_f1"].as_f64().unwrap() < m["accuracy"].as_f64().unwrap(), "rare classes pull macro F1 down: {m}");
    // The fairness frame's groups add up to the whole.
    let frame = &e["fairness"][0]["frames"][0];
    assert_eq!(e["fairness"][0]["attribute"], "sex");
    assert_eq!(frame["metric"], "accuracy");
    let groups = frame["by_group"].as_array().unwrap();
    assert_eq!(groups.iter().map(|g| g[0].as_str().unwrap()).collect::<Vec<_>>(), ["Female", "Male"]);
    let weighted: f64 =
        groups.iter().map(|g| g[1].as_f64().unwrap() * g[2].as_f64().unwrap()).sum::<f64>() / rows as f64;
    assert!((weighted - m["accuracy"].as_f64().unwrap()).abs() < 1e-9, "{frame}");
    assert_eq!(card["dataset"]["task"], "multiclass");
    let html = std::fs::read_to_string(v["card_html"].as_str().unwrap()).unwrap();
    for section in ["Per class", "Confusion matrix", "macro F1", "Permutation importance", "Other-relative", "[N, 6]"] {
        assert!(html.contains(section), "{section}");
    }
    // The registry's ML-BOM carries the headline metrics.
    let bom = ws.json(&["model", "bom", "rel@1"]).to_string();
    assert!(bom.contains("\"macro_f1\"") && bom.contains("log_loss") && !bom.contains("roc_auc"), "{bom}");

    // A class named as positive in a multi-class label is refused, saying why.
    let file = pipeline(
        &ws,
        "rel-pos.toml",
        &body.replace("label = \"relationship\"", "label = \"relationship\"\npositive = \"Wife\""),
    );
    let (code, _, err) = run_json(&ws, &file);
    assert_ne!(code, 0);
    assert!(err.contains("has 6 classes") && err.contains("remove `positive`"), "{err}");

    // ---- regression: hours worked per week, by the ridge.
    let features = r#"["age", "workclass", "education", "marital-status", "occupation", "sex", "capital-gain"]"#;
    let body = format!(
        r#"{}[train]
trainer = "linear_regression"
task = "regression"
label = "hours-per-week"
features = {features}
[evaluate]
sensitive = ["race"]
[gate]
thresholds = {{ min_r2 = 0.9, min_group_ratio = 0.5 }}
[register]
model = "hours"
"#,
        head("hours")
    );
    let file = pipeline(&ws, "hours.toml", &body);
    let (code, _, err) = run_json(&ws, &file);
    assert_ne!(code, 0, "no linear model explains 90% of the hours");
    assert!(err.contains("R²") && err.contains("below the floor of 0.9"), "{err}");
    assert_eq!(versions(&ws, "hours"), 0);
    let file = pipeline(&ws, "hours2.toml", &body.replace("min_r2 = 0.9", "min_r2 = 0.05"));
    let (code, v, err) = run_json(&ws, &file);
    assert_eq!(code, 0, "{err}");
    assert_eq!(stage(&v, "train")["status"], "cached", "only the gate changed");
    let card: Value = serde_json::from_slice(&std::fs::read(v["card_json"].as_str().unwrap()).unwrap()).unwrap();
    let e = &card["evaluation"];
    assert_eq!(e["task"], "regression");
    assert_eq!(e["target"], "hours-per-week");
    let m = &e["metrics"];
    let (mae, rmse, mse, r2) = (
        m["mae"].as_f64().unwrap(),
        m["rmse"].as_f64().unwrap(),
        m["mse"].as_f64().unwrap(),
        m["r2"].as_f64().unwrap(),
    );
    assert!((rmse * rmse - mse).abs() < 1e-6 * mse && mae <= rmse && rmse <= m["max_error"].as_f64().unwrap(), "{m}");
    assert!(r2 > 0.05 && r2 < 0.9, "{m}");
    let frame = &e["fairness"][0]["frames"][0];
    assert_eq!(frame["metric"], "mean_absolute_error");
    let n: f64 = frame["by_group"].as_array().unwrap().iter().map(|g| g[1].as_f64().unwrap()).sum();
    let weighted: f64 = frame["by_group"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g[1].as_f64().unwrap() * g[2].as_f64().unwrap())
        .sum::<f64>()
        / n;
    assert!((weighted - mae).abs() < 1e-9, "{frame}");
    assert_eq!(card["split"]["stratified"], false);
    let html = std::fs::read_to_string(v["card_html"].as_str().unwrap()).unwrap();
    for section in
        ["R²", "root mean squared error", "mean absolute error", "R² drop", "<code>predictions</code> [N, 1]"]
    {
        assert!(html.contains(section), "{section}");
    }

    // A text label cannot be a regression target; the trainer must fit the task.
    let file = pipeline(&ws, "bad.toml", &body.replace("label = \"hours-per-week\"", "label = \"income\""));
    let (code, _, err) = run_json(&ws, &file);
    assert_ne!(code, 0);
    assert!(err.contains("income") && err.contains("holds text"), "{err}");
    let file = pipeline(&ws, "bad2.toml", &body.replace("linear_regression", "logistic_regression"));
    let (code, _, err) = run_json(&ws, &file);
    assert_ne!(code, 0);
    assert!(err.contains("use linear_regression"), "{err}");
    // A misspelt threshold of the built-in gate would weaken it silently: refused, naming the real ones.
    let file = pipeline(&ws, "bad3.toml", &body.replace("min_r2 = 0.9", "min_r_2 = 0.9"));
    let (code, _, err) = run_json(&ws, &file);
    assert_ne!(code, 0);
    assert!(
        err.contains("gate.thresholds.min_r_2 is not read by the built-in gate") && err.contains("min_r2"),
        "{err}"
    );
}

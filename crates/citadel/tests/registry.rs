//! The model registry end to end: scan gate, signing, versions, provenance,
//! stage requests with separation of duties, verified approval, rollback and
//! point-in-time history.

#![allow(clippy::unwrap_used)] // a test that cannot set up should stop loudly

mod common;

use serde_json::json;
use std::path::Path;

use common::*;

fn model_dir(ws: &Ws, name: &str, seed: u64) -> std::path::PathBuf {
    let dir = ws.root.parent().unwrap().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../citadel-scan/tests/fixtures");
    std::fs::copy(fixtures.join("add.onnx"), dir.join("model.onnx")).unwrap();
    std::fs::write(dir.join("weights.safetensors"), {
        let header = br#"{"w":{"dtype":"U8","shape":[64],"data_offsets":[0,64]}}"#;
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header);
        v.extend(random_bytes(64, seed));
        v
    })
    .unwrap();
    dir
}

/// The stage of each of a model's versions, in version order.
fn stages_of(ws: &Ws, model: &str) -> Vec<String> {
    ws.json(&["model", "ls", model])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["stage"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_malicious_model_is_refused_and_the_refusal_audited() {
    let ws = Ws::new();
    let evil = Path::new(env!("CARGO_MANIFEST_DIR")).join("../citadel-scan/tests/fixtures/torch_evil.pt");
    let o = ws.run(&["model", "register", evil.to_str().unwrap(), "--name", "fraud"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("blocked") && stderr(&o).contains("posix.system") && stderr(&o).contains("hint:"),
        "{}",
        stderr(&o)
    );
    let denied = ws.json(&["audit", "query", "--outcome", "denied", "--action", "model.register"]);
    assert_eq!(denied.as_array().unwrap().len(), 1, "{denied}");
    assert_eq!(ws.json(&["artifact", "ls"]).as_array().unwrap().len(), 0, "nothing was stored");
}

#[test]
fn an_unjudged_model_is_refused_until_the_workspace_allows_its_global() {
    let ws = Ws::new();
    let dir = ws.root.parent().unwrap().join("custom");
    std::fs::create_dir_all(&dir).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../citadel-scan/tests/fixtures");
    std::fs::copy(fixtures.join("unknown_p4.pkl"), dir.join("model.pkl")).unwrap();
    let o = ws.run(&["model", "register", dir.to_str().unwrap(), "--name", "custom"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("could not judge") && stderr(&o).contains("mylib.models.Builder"), "{}", stderr(&o));
    assert_eq!(ws.json(&["artifact", "ls"]).as_array().unwrap().len(), 0, "nothing was stored");

    // A dangerous global can never be allowed; a reason is required.
    let o = ws.run(&["allowlist", "add", "posix.system", "--reason", "trust me"]);
    assert!(!o.status.success() && stderr(&o).contains("dangerous"), "{}", stderr(&o));
    let o = ws.run(&["allowlist", "add", "mylib.models.Builder", "--reason", " "]);
    assert!(!o.status.success() && stderr(&o).contains("reason"), "{}", stderr(&o));
    // Only an admin duty: a data scientist cannot widen the list.
    let eng = token_for(&ws, "erin", &["data-scientist"]);
    let o = as_user(&ws, &eng, &["allowlist", "add", "mylib.models.Builder", "--reason", "reviewed"]);
    assert!(!o.status.success(), "a data scientist widened the allowlist");

    ws.ok(&["allowlist", "add", "mylib.models.Builder", "--reason", "reviewed by the platform team (PR 12)"]);
    let list = ws.json(&["allowlist", "ls"]);
    assert_eq!(list[0]["global"], "mylib.models.Builder", "{list}");
    let allowed = ws.json(&["audit", "query", "--action", "scan.allow", "--outcome", "success"]);
    assert_eq!(allowed.as_array().unwrap().len(), 1, "{allowed}");
    assert_eq!(allowed[0]["details"]["reason"], "reviewed by the platform team (PR 12)");
    let denied = ws.json(&["audit", "query", "--action", "scan.allow", "--outcome", "denied"]);
    assert_eq!(denied.as_array().unwrap().len(), 1, "the data scientist's attempt is audited: {denied}");

    let v = ws.json(&["model", "register", dir.to_str().unwrap(), "--name", "custom"]);
    assert_eq!(v["scan"]["warnings"], 0, "{v}");
    assert!(v["scan"]["allowed_by_workspace"][0].as_str().unwrap().contains("mylib.models.Builder"), "{v}");
    let bom = ws.json(&["model", "bom", "custom@1"]);
    assert!(bom.to_string().contains("citadel:scan.allowed_by_workspace"), "{bom}");
    assert!(bom.to_string().contains("mylib.models.Builder"), "{bom}");

    // Removed again: the next registration is refused again.
    ws.ok(&["allowlist", "rm", "mylib.models.Builder"]);
    let o = ws.run(&["model", "register", dir.to_str().unwrap(), "--name", "custom"]);
    assert!(!o.status.success(), "{}", stderr(&o));
}

#[test]
fn register_promote_approve_rollback_and_history() {
    let ws = Ws::new();
    let eng = token_for(&ws, "erin", &["data-scientist"]);
    let appr = token_for(&ws, "abe", &["approver"]);
    let both = token_for(&ws, "carol", &["data-scientist", "approver"]);

    // Register v1 with provenance pointing at a dataset.
    let data = ws.file("train.csv", b"age,income\n30,1\n");
    ws.ok(&["artifact", "put", data.to_str().unwrap(), "--name", "datasets/train"]);
    let params = ws.file("params.json", br#"{"C": 1.0}"#);
    let m1 = model_dir(&ws, "m1", 1);
    let v1 = ok_json(as_user(
        &ws,
        &eng,
        &[
            "model",
            "register",
            m1.to_str().unwrap(),
            "--name",
            "fraud",
            "--dataset",
            "datasets/train",
            "--code-ref",
            "git+https://example.invalid/repo@abc123",
            "--params",
            params.to_str().unwrap(),
        ],
    ));
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["stage"], "none");
    let prov = &v1["provenance"];
    assert_eq!(prov["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(prov["subject"][0]["digest"]["sha256"], v1["artifact_id"]);
    assert_eq!(
        prov["predicate"]["buildDefinition"]["externalParameters"]["code_ref"],
        "git+https://example.invalid/repo@abc123"
    );
    assert_eq!(prov["predicate"]["buildDefinition"]["externalParameters"]["parameters"]["C"], 1.0);
    assert_eq!(prov["predicate"]["buildDefinition"]["resolvedDependencies"].as_array().unwrap().len(), 1);

    // The stored signature verifies with the published public key.
    let pem = ws.json(&["model", "public-key"])["public_key_pem"].as_str().unwrap().to_string();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));

    // none -> staging -> production, each approved by someone else.
    let promote = |tok: &str, v: &str, to: &str| {
        ok_json(as_user(&ws, tok, &["model", "promote", &format!("fraud@{v}"), "--to", to]))["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let r = promote(&eng, "1", "staging");
    // The engineer cannot approve (no approver role).
    assert!(!as_user(&ws, &eng, &["model", "approve", &r]).status.success());
    ok_json(as_user(&ws, &appr, &["model", "approve", &r]));
    let r = promote(&eng, "1", "production");
    ok_json(as_user(&ws, &appr, &["model", "approve", &r]));
    // Skipping a stage is refused.
    let m2 = model_dir(&ws, "m2", 2);
    let v2 = ok_json(as_user(
        &ws,
        &eng,
        &[
            "model",
            "register",
            m2.to_str().unwrap(),
            "--name",
            "fraud",
            "--dataset",
            "datasets/train",
            "--code-ref",
            "git+https://example.invalid/repo@def456",
        ],
    ));
    assert_eq!(v2["version"], 2);
    assert!(!as_user(&ws, &eng, &["model", "promote", "fraud@2", "--to", "production"]).status.success());

    // Separation of duties: carol holds both roles but cannot approve her own request.
    let r = promote(&both, "2", "staging");
    let o = as_user(&ws, &both, &["model", "approve", &r]);
    let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(!o.status.success() && said.contains("separation of duties") && said.contains("hint"), "{said}");
    ok_json(as_user(&ws, &appr, &["model", "approve", &r]));
    std::thread::sleep(std::time::Duration::from_millis(20));
    let between = ws.json(&["model", "history", "fraud"])["events"].as_array().unwrap().last().unwrap()["at"]
        .as_str()
        .unwrap()
        .to_string();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let r = promote(&eng, "2", "production");
    ok_json(as_user(&ws, &appr, &["model", "approve", &r]));
    let versions = ws.json(&["model", "ls", "fraud"]);
    let stages: Vec<&str> = versions.as_array().unwrap().iter().map(|v| v["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["archived", "production"], "entering production archives the previous version");

    // Point in time: before v2's promotion, v1 was in production.
    let h = ws.json(&["model", "history", "fraud", "--at", &between]);
    assert_eq!(h["in_production_at"], 1, "{h}");
    let h = ws.json(&["model", "history", "fraud", "--at", "2000-01-01T00:00:00Z"]);
    assert!(h["in_production_at"].is_null());

    // Rollback restores v1.
    assert!(!as_user(&ws, &eng, &["model", "rollback", "fraud"]).status.success(), "rollback needs approver");
    let rb = ok_json(as_user(&ws, &appr, &["model", "rollback", "fraud"]));
    assert_eq!(rb["version"], 1);
    let stages = stages_of(&ws, "fraud");
    assert_eq!(stages, ["production", "archived"]);
    let now = ws.json(&["model", "history", "fraud", "--at", "2100-01-01T00:00:00Z"]);
    assert_eq!(now["in_production_at"], 1);
    ws.ok(&["audit", "verify"]);
    let lineage = ws.ok(&["lineage", "models/fraud", "--format", "json"]);
    assert!(!lineage.is_empty());
}

#[test]
fn a_model_whose_bytes_changed_on_storage_is_not_approved() {
    let ws = Ws::new();
    let eng = token_for(&ws, "erin", &["data-scientist"]);
    let appr = token_for(&ws, "abe", &["approver"]);
    let m = model_dir(&ws, "m", 3);
    ok_json(as_user(&ws, &eng, &["model", "register", m.to_str().unwrap(), "--name", "fraud"]));
    // Corrupt every chunk object on storage.
    for f in walk(&ws.root.join("objects/chunks")) {
        let mut b = std::fs::read(&f).unwrap();
        let n = b.len();
        b[n / 2] ^= 1;
        std::fs::write(&f, b).unwrap();
    }
    let r = ok_json(as_user(&ws, &eng, &["model", "promote", "fraud@1", "--to", "staging"]))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let o = as_user(&ws, &appr, &["model", "approve", &r]);
    assert!(!o.status.success(), "a corrupted model was approved");
    assert_eq!(ws.json(&["model", "ls", "fraud"])[0]["stage"], "none");
    let failures = ws.json(&["audit", "query", "--outcome", "failure", "--action", "model.approve"]);
    assert_eq!(failures.as_array().unwrap().len(), 1, "{failures}");
    // Verified loading refuses it too, and says so in the audit log.
    let out = ws.root.parent().unwrap().join("loaded");
    let o = ws.run(&["model", "get", "fraud@1", "-o", out.to_str().unwrap()]);
    assert!(!o.status.success() && !out.exists(), "{}", stderr(&o));
    let failures = ws.json(&["audit", "query", "--outcome", "failure", "--action", "model.read"]);
    assert_eq!(failures.as_array().unwrap().len(), 1, "{failures}");
}

#[test]
fn verified_loading_hands_out_exactly_the_signed_files() {
    let ws = Ws::new();
    let m = model_dir(&ws, "m", 5);
    ws.ok(&["model", "register", m.to_str().unwrap(), "--name", "fraud"]);
    let out = ws.root.parent().unwrap().join("loaded");
    let r = ws.json(&["model", "get", "fraud@1", "-o", out.to_str().unwrap()]);
    assert_eq!(r["version"], 1);
    for f in ["model.onnx", "weights.safetensors"] {
        assert_eq!(std::fs::read(out.join(f)).unwrap(), std::fs::read(m.join(f)).unwrap());
    }
    // The load is recorded as the read it is (`model.read`), naming what was verified.
    let reads = ws.json(&["audit", "query", "--action", "model.read", "--resource", "model:fraud"]);
    let load =
        reads.as_array().unwrap().iter().find(|r| r["details"]["root_digest"].is_string()).expect("a load record");
    assert_eq!(load["details"]["version"], 1);
    // No production version yet.
    let o = ws.run(&["model", "get", "fraud@production", "-o", ws.root.parent().unwrap().join("p").to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("hint:"));
}

#[test]
fn the_rego_gate_lists_every_violation_and_keeps_the_request_pending() {
    let ws = Ws::new();
    assert!(ws.root.join("policies/model-gate.rego").exists(), "init writes the default gate");
    let eng = token_for(&ws, "erin", &["data-scientist"]);
    let appr = token_for(&ws, "abe", &["approver"]);
    let m = model_dir(&ws, "m", 4);
    ok_json(as_user(&ws, &eng, &["model", "register", m.to_str().unwrap(), "--name", "churn"]));
    let r = ok_json(as_user(&ws, &eng, &["model", "promote", "churn@1", "--to", "staging"]))["id"]
        .as_str()
        .unwrap()
        .to_string();
    ok_json(as_user(&ws, &appr, &["model", "approve", &r]));
    let r = ok_json(as_user(&ws, &eng, &["model", "promote", "churn@1", "--to", "production"]))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let o = ws.cmd(&["model", "approve", &r]).env("CITADEL_TOKEN", &appr).output().unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("training data") && err.contains("code that trained it") && err.contains("hint:"), "{err}");
    assert_eq!(ws.json(&["model", "ls", "churn"])[0]["stage"], "staging");
    let pending = ws.json(&["model", "requests"]);
    assert_eq!(pending.as_array().unwrap().len(), 1, "the request stays pending: {pending}");
    let gate = ws.json(&["audit", "query", "--action", "model.gate"]);
    assert_eq!(gate[0]["outcome"], "denied");
    assert_eq!(gate[0]["details"]["violations"].as_array().unwrap().len(), 2, "{gate}");

    // The workspace's own policy is what counts: relax it, and the same request passes.
    std::fs::write(
        ws.root.join("policies/model-gate.rego"),
        "package citadel.gate\nimport rego.v1\ndeny contains msg if { input.scan.critical > 0; msg := \"critical\" }\n",
    )
    .unwrap();
    ok_json(as_user(&ws, &appr, &["model", "approve", &r]));
    assert_eq!(ws.json(&["model", "ls", "churn"])[0]["stage"], "production");

    // A broken policy fails closed.
    std::fs::write(ws.root.join("policies/model-gate.rego"), "package citadel.gate\ndeny contains").unwrap();
    let r = ok_json(as_user(&ws, &eng, &["model", "promote", "churn@1", "--to", "archived"]))["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!as_user(&ws, &appr, &["model", "approve", &r]).status.success(), "a broken gate must not pass");
}

#[test]
fn the_ml_bom_validates_against_the_cyclonedx_1_6_schema() {
    if std::env::var("CITADEL_TEST_SKIP_SERVICES").is_ok_and(|v| v == "1") {
        return;
    }
    let python = std::env::var("CITADEL_TEST_VENV_PYTHON")
        .expect("CITADEL_TEST_VENV_PYTHON is not set: run ./scripts/services.sh and source /tmp/citadel-services/env");
    let ws = Ws::new();
    let data = ws.file("train.csv", b"age,income\n30,1\n");
    let id = ws.ok(&["artifact", "put", data.to_str().unwrap(), "--name", "datasets/train"]).trim().to_string();
    let m = model_dir(&ws, "m", 6);
    let v = ws.json(&["model", "register", m.to_str().unwrap(), "--name", "fraud", "--dataset", "datasets/train"]);
    let text = ws.ok(&["model", "bom", "fraud@1"]);
    let bom: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(bom["specVersion"], "1.6");
    assert_eq!(bom["components"][0]["type"], "machine-learning-model");
    assert_eq!(bom["components"][0]["hashes"][0]["content"], v["artifact_id"]);
    assert_eq!(bom["components"][1]["hashes"][0]["content"], id.as_str());
    assert_eq!(bom["dependencies"][0]["dependsOn"][0], format!("dataset:{id}"));
    let file = ws.file("bom.json", text.as_bytes());
    let check = "import sys\nfrom cyclonedx.validation.json import JsonStrictValidator\nfrom cyclonedx.schema import SchemaVersion\ne = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())\nprint(e or 'valid')\nsys.exit(1 if e else 0)\n";
    let o = std::process::Command::new(&python).args(["-c", check]).arg(&file).output().unwrap();
    assert!(o.status.success(), "the ML-BOM does not validate: {}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    // The validator is not a rubber stamp: a broken BOM fails.
    let broken = ws.file("broken.json", text.replace("machine-learning-model", "not-a-type").as_bytes());
    let o = std::process::Command::new(&python).args(["-c", check]).arg(&broken).output().unwrap();
    assert!(!o.status.success());
}

#[test]
fn a_model_signed_by_a_retired_key_is_refused() {
    let ws = Ws::new();
    let appr = token_for(&ws, "abe", &["approver"]);
    let m = model_dir(&ws, "m", 7);
    ws.ok(&["model", "register", m.to_str().unwrap(), "--name", "fraud"]);
    let before = ws.json(&["model", "public-key"])["public_key_pem"].as_str().unwrap().to_string();
    let r = ws.json(&["model", "rotate-signing-key"]);
    assert_ne!(r["retired"], r["new"]);
    // A version shows the key that signed it, not the current one.
    assert_eq!(ws.json(&["model", "ls", "fraud"])[0]["signature_key_hint"], r["retired"]);
    assert_ne!(ws.json(&["model", "public-key"])["public_key_pem"].as_str().unwrap(), before);
    let req = ws.json(&["model", "promote", "fraud@1", "--to", "staging"])["id"].as_str().unwrap().to_string();
    let o = ws.cmd(&["model", "approve", &req]).env("CITADEL_TOKEN", &appr).output().unwrap();
    assert!(
        !o.status.success() && stderr(&o).contains("retired signing key") && stderr(&o).contains("hint:"),
        "{}",
        stderr(&o)
    );
    let out = ws.root.parent().unwrap().join("o");
    assert!(!ws.run(&["model", "get", "fraud@1", "-o", out.to_str().unwrap()]).status.success());
    // Registered again, it is signed by the new key and verifies.
    ws.ok(&["model", "register", m.to_str().unwrap(), "--name", "fraud"]);
    ws.ok(&["model", "get", "fraud@2", "-o", out.to_str().unwrap()]);
}

/// No principal approves its own request, whatever its roles: the owner
/// neither (it has no `model.approve`), and the old switch that allowed it
/// is refused as configuration, with a hint.
#[test]
fn no_principal_approves_its_own_request() {
    let ws = Ws::new();
    let both = token_for(&ws, "carol", &["data-scientist", "approver"]);
    let m = model_dir(&ws, "m", 8);
    ok_json(as_user(&ws, &both, &["model", "register", m.to_str().unwrap(), "--name", "fraud"]));
    let r = ok_json(as_user(&ws, &both, &["model", "promote", "fraud@1", "--to", "staging"]))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let o = as_user(&ws, &both, &["model", "approve", &r]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stdout).contains("separation of duties"));
    let o = ws
        .cmd(&["model", "approve", &r, "--json"])
        .env("CITADEL_TOKEN", &both)
        .env("CITADEL_REGISTRY_ALLOW_SELF_APPROVAL", "true")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(!o.status.success() && text.contains("registry.allow_self_approval") && text.contains("hint:"), "{text}");
    assert!(!ws.run(&["model", "approve", &r]).status.success(), "the owner holds no model.approve");
    let refused = ws.json(&["audit", "query", "--action", "model.approve", "--outcome", "denied"]);
    assert_eq!(refused.as_array().unwrap().len(), 2, "{refused}");
}

#[test]
fn a_retired_version_is_never_deployed_served_or_moved_and_the_history_says_why() {
    let ws = Ws::new();
    let eng = token_for(&ws, "erin", &["data-scientist", "ml-engineer"]);
    let appr = token_for(&ws, "abe", &["approver"]);
    let data = ws.file("train.csv", b"age,income\n30,1\n");
    ws.ok(&["artifact", "put", data.to_str().unwrap(), "--name", "datasets/train"]);
    let register = |seed: u64| {
        let dir = model_dir(&ws, &format!("m{seed}"), seed);
        let args = ["model", "register", dir.to_str().unwrap(), "--name", "fraud", "--dataset", "datasets/train"];
        let code = ["--code-ref", "git+https://example.invalid/repo@abc123"];
        ok_json(as_user(&ws, &eng, &[&args[..], &code[..]].concat()))
    };
    register(1);
    register(2);
    for to in ["staging", "production"] {
        let r = ok_json(as_user(&ws, &eng, &["model", "promote", "fraud@1", "--to", to]));
        ok_json(as_user(&ws, &appr, &["model", "approve", r["id"].as_str().unwrap()]));
    }
    let said = |o: &std::process::Output| format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(o));

    // Only an approver retires, and only with a reason.
    assert!(!as_user(&ws, &eng, &["model", "retire", "fraud@2", "--reason", "x"]).status.success());
    let o = as_user(&ws, &appr, &["model", "retire", "fraud@2", "--reason", "  "]);
    assert!(!o.status.success() && said(&o).contains("needs a reason"), "{}", said(&o));
    // A request pending when the version is retired can no longer be approved.
    let pending = ok_json(as_user(&ws, &eng, &["model", "promote", "fraud@2", "--to", "staging"]));
    let r = ok_json(as_user(&ws, &appr, &["model", "retire", "fraud@2", "--reason", "trained on erased rows"]));
    assert_eq!((r["to_stage"].as_str(), r["status"].as_str()), (Some("retired"), Some("approved")));
    let stages = stages_of(&ws, "fraud");
    assert_eq!(stages, ["production", "retired"]);

    let o = as_user(&ws, &appr, &["model", "approve", pending["id"].as_str().unwrap()]);
    assert!(!o.status.success(), "{}", said(&o));
    let requests = ws.json(&["model", "requests", "--all"]);
    let request = requests.as_array().unwrap().iter().find(|q| q["id"] == pending["id"]).unwrap().clone();
    assert_eq!(request["status"], "rejected", "{request}");
    // Terminal: no stage request, no second retirement, no loading for serving, no deployment.
    let o = as_user(&ws, &eng, &["model", "promote", "fraud@2", "--to", "staging"]);
    assert!(!o.status.success() && said(&o).contains("retired (trained on erased rows)"), "{}", said(&o));
    assert!(!as_user(&ws, &appr, &["model", "retire", "fraud@2", "--reason", "again"]).status.success());
    let out = ws.root.parent().unwrap().join("got");
    let o = as_user(&ws, &eng, &["model", "get", "fraud@2", "-o", out.to_str().unwrap()]);
    assert!(
        !o.status.success() && said(&o).contains("is retired") && said(&o).contains("model history fraud"),
        "{}",
        said(&o)
    );
    assert!(!out.exists(), "nothing of a retired model is handed out");
    let o = as_user(&ws, &eng, &["deploy", "set", "fraud", "--target", "fraud@2"]);
    assert!(!o.status.success() && said(&o).contains("retired"), "{}", said(&o));

    // The history keeps the retirement, who decided it, and why.
    let h = ws.json(&["model", "history", "fraud"]);
    let last = h["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["version"].as_i64(), last["to_stage"].as_str()), (Some(2), Some("retired")), "{h}");
    assert_eq!(last["note"], "trained on erased rows");
    assert_eq!(last["by"], "abe");

    // Retiring a deployed version takes it out of serving in the same
    // transaction: the endpoint it alone served is removed, and the record says so.
    let d = ok_json(as_user(&ws, &eng, &["deploy", "set", "fraud", "--target", "fraud@1"]));
    let r = ok_json(as_user(&ws, &appr, &["model", "retire", "fraud@1", "--reason", "replaced"]));
    let next = d["revision"].as_i64().unwrap() + 1;
    assert_eq!(r["withdrawn"], json!([{"endpoint": "fraud", "revision": next, "removed": true, "targets": []}]), "{r}");
    assert_eq!(ok_json(as_user(&ws, &eng, &["deploy", "ls"])), json!([]));
    let rec = ws.json(&["audit", "query", "--action", "model.retire"]);
    let rec = rec.as_array().unwrap().iter().find(|r| r["details"]["version"] == 1).unwrap().clone();
    assert_eq!(rec["details"]["withdrawn"][0]["removed"], true, "{rec}");
    ws.ok(&["audit", "verify"]);
}

/// What a gateway withholds from captures is decided from the training
/// data's stored profile: a record that does not parse fails the decision
/// (and so the model's load) instead of withholding nothing.
#[test]
fn protected_columns_fail_closed_when_their_record_does_not_parse() {
    let ws = Ws::new();
    let mut csv = String::from("id,salary,score\n");
    for i in 0..300 {
        csv.push_str(&format!("{i},{},{}\n", 30_000 + i * 17 % 5_000, i % 7));
    }
    let data = ws.file("staff.csv", csv.as_bytes());
    let expect = ws.file("staff.toml", b"[columns.salary]\nclassification = \"confidential\"\n");
    ws.ok(&["data", "add", data.to_str().unwrap(), "--name", "staff", "--expect", expect.to_str().unwrap()]);
    let m = model_dir(&ws, "m", 9);
    ws.ok(&["model", "register", m.to_str().unwrap(), "--name", "pay", "--dataset", "datasets/staff@1"]);

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let protected = |ws: &Ws| {
        rt.block_on(async {
            let w = ws.open_in_process().await;
            let r = w.model_protected_columns("pay", 1).await;
            w.close().await.unwrap();
            r
        })
    };
    assert_eq!(protected(&ws).unwrap(), ["salary"]);
    ws.db_exec("UPDATE data_versions SET report = '{\"profile\": 7}' WHERE dataset_name = 'staff'");
    let err = protected(&ws).unwrap_err();
    assert!(
        matches!(err, citadel_control::ControlError::UnreadableRecord { .. })
            && err.to_string().contains("does not parse"),
        "{err}"
    );
}

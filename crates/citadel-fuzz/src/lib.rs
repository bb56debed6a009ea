//! One function per parser of untrusted input. Each takes arbitrary bytes and
//! must return without panicking, within bounded memory; where a parser has
//! an inverse, the round trip is checked too.
//!
//! `fuzz/` (cargo-fuzz, libFuzzer) drives these for coverage-guided fuzzing;
//! the tests below drive them with deterministic mutations of valid inputs on
//! every test run, so a regression shows up without a fuzzing session.

use std::str::FromStr;
use std::sync::OnceLock;

use citadel_crypto::{ChunkCipher, DataKey};

/// A fuzz body: arbitrary bytes in, no panic out.
pub type FuzzBody = fn(&[u8]);

/// Every fuzz body, by name (the cargo-fuzz target names).
pub const TARGETS: &[(&str, FuzzBody)] = &[
    ("manifest", manifest),
    ("object_payload", object_payload),
    ("sealed_object", sealed_object),
    ("identifiers", identifiers),
    ("key_file", key_file),
    ("audit_records", audit_records),
    ("model_scan", model_scan),
    ("signature_bundle", signature_bundle),
    ("pii_value", pii_value),
    ("table_file", table_file),
    ("expectations", expectations),
    ("v2_request", v2_request),
    ("named_request", named_request),
    ("grpc_request", grpc_request),
    ("onnx_model", onnx_model),
    ("pipeline_file", pipeline_file),
    ("scan_tar", scan_tar),
    ("scan_hdf5", scan_hdf5),
    ("scan_gguf", scan_gguf),
    ("scan_codecs", scan_codecs),
    ("feedback_body", feedback_body),
    ("window_sketch", window_sketch),
    ("monitoring_policy", monitoring_policy),
    ("transfer_request", transfer_request),
];

/// A tar archive (members are scanned as streams).
pub fn scan_tar(data: &[u8]) {
    let _ = citadel_scan::scan_as(citadel_scan::Parser::Tar, data);
}

/// An HDF5 file: every embedded JSON config judged, bounded parse attempts.
pub fn scan_hdf5(data: &[u8]) {
    let _ = citadel_scan::scan_as(citadel_scan::Parser::Hdf5, data);
}

/// GGUF metadata and tensor infos, chat templates included.
pub fn scan_gguf(data: &[u8]) {
    let _ = citadel_scan::scan_as(citadel_scan::Parser::Gguf, data);
}

/// Every codec on the same bytes (first byte picks the order); each decodes
/// within the bomb bound and never panics.
pub fn scan_codecs(data: &[u8]) {
    use citadel_scan::codec::Codec;
    for c in [Codec::Gzip, Codec::Zlib, Codec::Bzip2, Codec::Xz, Codec::LzmaAlone, Codec::Zstd] {
        let _ = citadel_scan::scan_as(citadel_scan::Parser::Codec(c), data);
    }
}

/// An inference request body as the gateway receives it. A leading 0 byte
/// means JSON only; otherwise four bytes (LE) give the
/// `Inference-Header-Content-Length` of the binary tensor extension.
pub fn v2_request(data: &[u8]) {
    let (header_len, body) = match data {
        [0, body @ ..] => (None, body),
        [_, a, b, c, d, body @ ..] => (Some(u32::from_le_bytes([*a, *b, *c, *d]) as usize), body),
        _ => return,
    };
    if let Ok(req) = citadel_serve::v2::decode(body, header_len, 1 << 16) {
        let total: usize = req.inputs.iter().map(|(_, t)| t.len()).sum();
        assert!(total <= 1 << 16);
    }
}

/// A small model with named raw inputs (`age` FP32, `workclass` BYTES), as
/// the built-in trainers export them.
fn named_model() -> &'static citadel_infer::Model {
    static MODEL: std::sync::OnceLock<citadel_infer::Model> = std::sync::OnceLock::new();
    MODEL.get_or_init(|| {
        let csv = "39,Private,no\n50,Self-emp,yes\n28,Private,no\n61,?,yes\n45,Private,yes\n33,Self-emp,no\n";
        let names = ["age", "workclass", "income"];
        let t = citadel_ml::Table::from_unquoted_csv(csv, &names, &["age"], "?").expect("table");
        let labels = citadel_ml::Labels::fit(&t, "income", Some("yes")).expect("labels");
        let y = labels.encode(&t).expect("y");
        let enc = citadel_ml::FeatureEncoder::fit(&t, &["age".into(), "workclass".into()], &y).expect("encoder");
        let x = enc.encode(&t).expect("x");
        let m = citadel_ml::lr::fit(&enc, &x, &y, &citadel_ml::lr::LrParams::default(), &[]).expect("fit");
        let bytes = m.to_onnx(&enc, citadel_ml::Interface::Named { classes: &labels.classes }, vec![]).expect("export");
        citadel_infer::Model::load(&bytes).expect("load")
    })
}

/// A JSON body of records to a named-input model: decoded, conformed to the
/// declared inputs, and run when every check passes.
pub fn named_request(data: &[u8]) {
    let model = named_model();
    let schema = citadel_serve::named::Schema::of(model);
    let Ok(given) = citadel_serve::named::decode_records(data, model, 1 << 12) else { return };
    let mut inputs = Vec::new();
    for (spec, (name, t)) in model.inputs.iter().zip(given) {
        assert_eq!(spec.name, name, "records decode in declared order");
        match citadel_serve::named::conform(spec, &schema, t) {
            Ok(t) => inputs.push(t),
            Err(_) => return,
        }
    }
    let out = model.run(inputs).expect("a conformed request runs");
    assert_eq!(out.len(), 2);
}

/// A gRPC `ModelInferRequest` message (protobuf bytes) through decoding
/// into the gateway's request, with the REST path's element bound.
pub fn grpc_request(data: &[u8]) {
    use prost::Message;
    let Ok(msg) = citadel_serve::grpc_pb::ModelInferRequest::decode(data) else { return };
    if let Ok(req) = citadel_serve::grpc_pb::decode_infer(msg, 1 << 16) {
        let total: usize = req.inputs.iter().map(|(_, t)| t.len()).sum();
        assert!(total <= 1 << 16);
    }
}

/// A model file through loading and, when it loads, one run on zeros.
pub fn onnx_model(data: &[u8]) {
    let Ok(model) = citadel_infer::Model::load(data) else { return };
    let mut inputs = Vec::new();
    for spec in &model.inputs {
        let shape: Vec<usize> = spec.shape.iter().map(|d| d.unwrap_or(1).min(64)).collect();
        let Ok(n) = citadel_infer::element_count(&shape) else { return };
        if n > 1 << 16 {
            return;
        }
        let data = match spec.dtype {
            citadel_infer::DType::F32 => citadel_infer::Data::F32(vec![0.5; n]),
            citadel_infer::DType::F64 => citadel_infer::Data::F64(vec![0.5; n]),
            citadel_infer::DType::I64 => citadel_infer::Data::I64(vec![1; n]),
            citadel_infer::DType::I32 => citadel_infer::Data::I32(vec![1; n]),
            citadel_infer::DType::Bool => citadel_infer::Data::Bool(vec![true; n]),
            citadel_infer::DType::Str => citadel_infer::Data::Str(vec![String::new(); n]),
        };
        let Ok(t) = citadel_infer::Tensor::new(shape, data) else { return };
        inputs.push(t);
    }
    let _ = model.run(inputs);
}

/// Any cell value from an ingested file through the PII detectors.
pub fn pii_value(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let mut col = citadel_pii::ColumnScan::new(s);
        col.observe(Some(s));
        for d in col.finish(0.0) {
            assert!(d.confidence <= 1.0 && d.matches <= d.non_null.max(1));
        }
    }
}

/// An uploaded table (CSV or Parquet, chosen by content) through the whole
/// ingest: reading, typing, PII detection, profiling, hashing, writing.
pub fn table_file(data: &[u8]) {
    static PROTECTOR: OnceLock<citadel_crypto::DataProtector> = OnceLock::new();
    let protector = PROTECTOR.get_or_init(|| {
        citadel_crypto::DataProtector::new(&DataKey::from_bytes(&[9; 32]).expect("key")).expect("protector")
    });
    let Ok(dir) = tempfile::tempdir() else { return };
    let input = dir.path().join("input");
    if std::fs::write(&input, data).is_err() {
        return;
    }
    let spec = citadel_data::Expectations::default();
    if let Ok(out) = citadel_data::ingest(&input, &spec, protector, &dir.path().join("out"), None, &|_| {}) {
        let r = out.report;
        assert!(r.profile.iter().all(|c| c.count == r.rows && c.nulls <= c.count));
    }
}

/// An expectations file: every problem reported, never a panic.
pub fn expectations(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = citadel_data::Expectations::parse(text);
    }
}

/// A pipeline file: every problem reported at once, never a panic.
pub fn pipeline_file(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = citadel_control::pipeline_spec::PipelineSpec::parse(
            text,
            std::path::Path::new("/nonexistent/pipeline.toml"),
        );
    }
}

/// A model-signing bundle from anywhere: must be rejected cleanly unless
/// genuinely signed by the test key.
pub fn signature_bundle(data: &[u8]) {
    static KEY: OnceLock<citadel_signing::VerifyingKey> = OnceLock::new();
    let key = KEY.get_or_init(|| {
        citadel_signing::VerifyingKey::from_pem(include_str!(
            "../../citadel-signing/tests/fixtures/keys/TEST-ONLY-ec-p256-public.pem"
        ))
        .expect("test key")
    });
    if let Ok(text) = std::str::from_utf8(data) {
        let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../citadel-signing/tests/fixtures/model");
        let _ = citadel_signing::verify(&model, text, key, &[]);
    }
}

/// Any file handed to `citadel scan`: bounded, never a panic, and never
/// silent (every input yields a verdict or a finding).
pub fn model_scan(data: &[u8]) {
    let r = citadel_scan::scan_bytes("fuzz", data);
    if r.format == citadel_scan::Format::Unknown {
        assert!(!r.findings.is_empty(), "unknown content passed silently");
    }
}

/// A manifest as read back from storage (after decryption: a compromised
/// storage key or a bug upstream must still not crash us).
pub fn manifest(data: &[u8]) {
    if let Ok(m) = citadel_store::parse_manifest(data) {
        let _ = m.artifact_id();
    }
}

/// The codec layer under the AEAD: decoding is bounded, and encoding round-trips.
pub fn object_payload(data: &[u8]) {
    const MAX: usize = 1 << 20;
    if let Ok(out) = citadel_store::decode_payload(data, MAX, "fuzz") {
        assert!(out.len() <= MAX, "decode exceeded its bound");
    }
    if data.len() <= MAX {
        let encoded = citadel_store::encode_payload(data);
        let decoded = citadel_store::decode_payload(&encoded, MAX, "fuzz").expect("own encoding decodes");
        assert_eq!(decoded, data, "payload round trip");
    }
}

fn cipher() -> &'static ChunkCipher {
    static C: OnceLock<ChunkCipher> = OnceLock::new();
    C.get_or_init(|| ChunkCipher::new(&DataKey::from_bytes(&[7u8; 32]).expect("32-byte key")))
}

/// A sealed object as fetched from the backend: must fail cleanly unless it
/// is authentic; a forgery is a failed assertion.
pub fn sealed_object(data: &[u8]) {
    if let Ok(plain) = cipher().open("fuzz-object", data) {
        // Only our own seal can open; re-sealing must give something that opens the same.
        let again = cipher().seal("fuzz-object", &plain).expect("seal");
        assert_eq!(cipher().open("fuzz-object", &again).expect("open"), plain);
    }
}

/// Strings from users and clients: tokens, names, digests, times, URLs.
pub fn identifiers(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(t) = citadel_crypto::ApiToken::parse(s) {
        let _ = t.hash();
    }
    if let Ok(n) = citadel_types::Name::parse(s) {
        let n = n.as_str();
        let safe = !n.contains('\0') && n.split('/').all(|part| !part.is_empty() && part != "." && part != "..");
        assert!(safe, "unsafe name accepted: {n:?}");
    }
    if let Ok(d) = citadel_types::Digest::from_str(s) {
        assert_eq!(citadel_types::Digest::from_str(&d.to_hex()).ok(), Some(d));
    }
    let _ = citadel_types::ArtifactId::from_str(s);
    let _ = citadel_types::Timestamp::parse(s);
    let _ = citadel_store::StorageUrl::parse(s);
    let _ = citadel_audit::ExportFormat::from_str(s);
    let _ = citadel_audit::Outcome::parse(s);
}

/// The passphrase key file, up to (not including) the key derivation.
pub fn key_file(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = citadel_crypto::check_key_file_text(s);
    }
}

/// Audit records as exported or read back: verification reports problems,
/// it never panics, whatever the records say.
pub fn audit_records(data: &[u8]) {
    if let Ok(records) = serde_json::from_slice::<Vec<citadel_audit::AuditRecord>>(data) {
        let _ = citadel_audit::verify_chain(&records, &[], &[0u8; 32]);
        for r in &records {
            let _ = citadel_audit::encode_record(r, citadel_audit::ExportFormat::Cef);
            let _ = citadel_audit::encode_record(r, citadel_audit::ExportFormat::Ocsf);
        }
    }
}

/// A feedback API body: refused with a reason or parsed within its bounds.
pub fn feedback_body(data: &[u8]) {
    let classes = ["<=50K".to_string(), ">50K".to_string()];
    if let Ok(items) = citadel_serve::feedback::parse(data, Some(&classes)) {
        assert!(!items.is_empty() && items.len() <= citadel_serve::feedback::MAX_ITEMS);
        assert!(items.iter().all(|i| classes.contains(&i.label) && i.groups.len() <= 8));
    }
}

/// What a client sends with a transfer: a `Range` header (first line) and
/// a commit's file path (the rest). A range is accepted only ordered; a
/// path only as plain names that stay beneath the staging directory.
pub fn transfer_request(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (range, path) = text.split_once('\n').unwrap_or((&text, ""));
    if let Some((start, end)) = citadel_api::transfer::parse_range_value(range) {
        assert!(end.is_none_or(|e| e >= start));
    }
    if let Some(p) = citadel_api::transfer::safe_relative(path) {
        assert!(p.components().all(|c| matches!(c, std::path::Component::Normal(_))));
        assert!(std::path::Path::new("/staging").join(&p).starts_with("/staging"));
    }
}

/// A stored window sketch (read back from the database): refused when its
/// KLL sketches are inconsistent; a sketch that is accepted merges and
/// answers queries without panicking.
pub fn window_sketch(data: &[u8]) {
    use citadel_data::sketch::{FeatureReference, WindowSketch};
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Some(w) = WindowSketch::from_json(text) else { return };
    let mut merged = w.clone();
    merged.merge(&w);
    assert_eq!(merged.rows, w.rows.saturating_mul(2).min(merged.rows));
    let refs = w.features.keys().map(|k| (k.clone(), FeatureReference::Numeric(vec![0.0, 1.0, 2.0]))).collect();
    let _ = citadel_data::sketch::live_drift(&merged, &refs, &Default::default());
}

/// A deployment's monitoring policy file and a workspace playbook.
pub fn monitoring_policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(p) = citadel_control::MonitoringPolicy::from_toml(text) {
        assert!(p.problems().is_empty());
    }
    let input = serde_json::json!({"incident": {"kind": "drift", "principal": "p"}, "deployment": null});
    let _ = citadel_policy::evaluate_playbook("fuzz.rego", text, &input);
}

/// Valid inputs to start mutating from, per target (also the fuzz corpus seeds).
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "manifest" => vec![
            br#"{"format":"citadel-manifest-v1","kind":"file","files":[{"path":"model.bin","size":3,"sha256":"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad","executable":false,"chunks":[["ab",3]]}]}"#.to_vec(),
            br#"{"format":"citadel-manifest-v1","kind":"directory","files":[{"path":"a/b","size":0,"sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","executable":true,"chunks":[]}]}"#.to_vec(),
        ],
        "object_payload" => vec![
            citadel_store::encode_payload(&b"weights ".repeat(5000)),
            citadel_store::encode_payload(b"raw"),
            vec![],
        ],
        "sealed_object" => vec![cipher().seal("fuzz-object", b"a sealed chunk").expect("seal")],
        "identifiers" => vec![
            b"cit_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_vec(),
            b"models/fraud/v1".to_vec(),
            b"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".to_vec(),
            b"2026-11-23T15:00:00Z".to_vec(),
            b"s3://bucket/prefix".to_vec(),
        ],
        "key_file" => vec![
            br#"{"format":"citadel-keyfile-v1","kdf":{"algorithm":"argon2id","memory_kib":19456,"iterations":2,"parallelism":1,"salt":"AAAAAAAAAAAAAAAAAAAAAA=="},"keys":[{"id":"mk-1","wrapped":"AAAA"}]}"#.to_vec(),
        ],
        "audit_records" => {
            let event = citadel_audit::AuditEvent {
                ts: citadel_types::Timestamp(1_700_000_000_000_000),
                actor: "p-1".into(),
                action: "artifact.put".into(),
                resource: "artifact:x".into(),
                outcome: citadel_audit::Outcome::Success,
                request_id: "req-1".into(),
                details: serde_json::json!({"size": 3}),
            };
            let r1 = citadel_audit::AuditRecord::chain(0, citadel_types::Digest([0; 32]), event.clone());
            let r2 = citadel_audit::AuditRecord::chain(1, r1.hash, event);
            vec![serde_json::to_vec(&vec![r1, r2]).expect("json")]
        }
        "model_scan" => vec![
            b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x05posix\x94\x8c\x06system\x94\x93\x8c\x02id\x85R.".to_vec(),
            b"(S'echo hi'\nios\nsystem\n.".to_vec(),
            b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01K\x01s.".to_vec(),
            include_bytes!("../../citadel-scan/tests/fixtures/torch_evil.pt").to_vec(),
            include_bytes!("../../citadel-scan/tests/fixtures/object.npz").to_vec(),
            include_bytes!("../../citadel-scan/tests/fixtures/good.safetensors").to_vec(),
            include_bytes!("../../citadel-scan/tests/fixtures/good.gguf").to_vec(),
            include_bytes!("../../citadel-scan/tests/fixtures/subgraph_custom.onnx").to_vec(),
            include_bytes!("../../citadel-scan/tests/fixtures/lambda.keras").to_vec(),
        ],
        "scan_tar" => vec![
            include_bytes!("../../citadel-scan/tests/fixtures/malicious/tar_evil_pickle.tar").to_vec(),
            include_bytes!("../../citadel-scan/tests/fixtures/malicious/tar_symlink_etc_passwd.tar").to_vec(),
        ],
        "scan_hdf5" => vec![
            include_bytes!("../../citadel-scan/tests/fixtures/benign/keras2_legacy_vlen_str.h5").to_vec(),
            include_bytes!("../../citadel-scan/tests/fixtures/malicious/h5_lambda_fixed_bytes_config.h5").to_vec(),
        ],
        "scan_gguf" => vec![
            include_bytes!("../../citadel-scan/tests/fixtures/benign/gguf_qwen2_chatml_f16.gguf").to_vec(),
            include_bytes!("../../citadel-scan/tests/fixtures/malicious/gguf_ssti_attr_filter_concat.gguf").to_vec(),
        ],
        "scan_codecs" => vec![
            include_bytes!("../../citadel-scan/tests/fixtures/malicious/comp_evil.pkl.bz2").to_vec(),
            include_bytes!("../../citadel-scan/tests/fixtures/malicious/comp_evil.pkl.xz").to_vec(),
            include_bytes!("../../citadel-scan/tests/fixtures/malicious/comp_evil.pkl.lzma").to_vec(),
            include_bytes!("../../citadel-scan/tests/fixtures/malicious/comp_evil.pkl.gz").to_vec(),
        ],
        "signature_bundle" => vec![
            include_bytes!("../../citadel-signing/tests/fixtures/signatures/model.sig").to_vec(),
            include_bytes!("../../citadel-signing/tests/fixtures/signatures/negative/no-key-hint.sig").to_vec(),
        ],
        "pii_value" => vec![
            b"4111 1111 1111 1111".to_vec(),
            b"GB82 WEST 1234 5698 7654 32".to_vec(),
            b"jane.doe@example.com".to_vec(),
            b"+44 20 7946 0958".to_vec(),
            b"2001:db8::1".to_vec(),
        ],
        "table_file" => vec![
            b"id,email,amount,when\n1,a@x.org,10.5,2024-01-02\n2,\"b,c\"\"q\"\"\",,2024-02-03\n3,c@z.org,7,\n".to_vec(),
            b"\xEF\xBB\xBFa;b\r\n1;2\r\n".to_vec(),
            include_bytes!("../../citadel-data/tests/fixtures/small.parquet").to_vec(),
        ],
        "expectations" => vec![include_bytes!("../../../datasets/adult/adult.expect.toml").to_vec()],
        "pipeline_file" => vec![include_bytes!("../../../examples/quickstart/pipeline.toml").to_vec()],
        "transfer_request" => vec![b"bytes=0-\nmodel/weights.bin".to_vec(), b"bytes=10-19\na/b/c.txt".to_vec()],
        "feedback_body" => vec![
            br#"{"feedback": [{"request_id": "r-1", "row": 0, "label": ">50K", "groups": {"sex": "Female"}}, {"request_id": "r_2", "label": "<=50K"}]}"#.to_vec(),
        ],
        "window_sketch" => {
            let mut w = citadel_data::sketch::WindowSketch { requests: 2, rows: 300, ..Default::default() };
            let mut f = citadel_data::sketch::FeatureSketch::numeric(Some((1.0, 90.0)));
            let mut c = citadel_data::sketch::FeatureSketch::categorical(vec!["a".into(), "b".into()]);
            for i in 0..300 {
                f.observe_number(f64::from(i % 97));
                c.observe_category(Some(if i % 7 == 0 { "unseen" } else if i % 3 == 0 { "a" } else { "b" }));
            }
            w.features.insert("age".into(), f);
            w.features.insert("kind".into(), c);
            w.principals.insert("app".into(), Default::default());
            vec![serde_json::to_vec(&w).expect("json")]
        }
        "monitoring_policy" => vec![
            b"window_secs = 60\ngrace_secs = 10\nplaybook = \"dry_run\"\n[drift]\npsi = 0.25\n[detectors]\nextraction_min_rows = 300\n[feedback]\nenabled = true\n".to_vec(),
            citadel_policy::DEFAULT_PLAYBOOK.as_bytes().to_vec(),
        ],
        "grpc_request" => {
            use prost::Message;
            use citadel_serve::grpc_pb as pb;
            let typed = pb::ModelInferRequest {
                model_name: "income".into(),
                inputs: vec![
                    pb::InferInputTensor {
                        name: "age".into(),
                        datatype: "FP32".into(),
                        shape: vec![2, 1],
                        contents: Some(pb::InferTensorContents { fp32_contents: vec![39.0, 50.0], ..Default::default() }),
                        ..Default::default()
                    },
                    pb::InferInputTensor {
                        name: "workclass".into(),
                        datatype: "BYTES".into(),
                        shape: vec![2, 1],
                        contents: Some(pb::InferTensorContents {
                            bytes_contents: vec![b"Private".to_vec(), b"".to_vec()],
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            };
            let mut raw = typed.clone();
            raw.inputs.iter_mut().for_each(|i| i.contents = None);
            let mut strings = Vec::new();
            for s in ["Private", "Self-emp"] {
                strings.extend_from_slice(&(s.len() as u32).to_le_bytes());
                strings.extend_from_slice(s.as_bytes());
            }
            raw.raw_input_contents = vec![[39f32, 50.0].iter().flat_map(|x| x.to_le_bytes()).collect(), strings];
            vec![typed.encode_to_vec(), raw.encode_to_vec()]
        }
        "named_request" => vec![
            br#"[{"age": 39, "workclass": "Private"}, {"age": null, "workclass": null}, {"age": 70.5, "workclass": "never seen"}]"#.to_vec(),
            br#"[{"workclass": "Self-emp", "age": 1e3}]"#.to_vec(),
        ],
        "v2_request" => {
            let json = br#"{"id":"1","inputs":[{"name":"X","shape":[1,3],"datatype":"FP32","data":[[1.0,2.5,-3]]},{"name":"s","shape":[2],"datatype":"BYTES","data":["a","b"]}],"outputs":[{"name":"label","parameters":{"binary_data":true}}]}"#;
            let head = br#"{"inputs":[{"name":"X","shape":[2],"datatype":"INT64","parameters":{"binary_data_size":16}},{"name":"s","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":7}}]}"#;
            let mut binary = vec![1u8];
            binary.extend_from_slice(&(head.len() as u32).to_le_bytes());
            binary.extend_from_slice(head);
            binary.extend_from_slice(&7i64.to_le_bytes());
            binary.extend_from_slice(&(-1i64).to_le_bytes());
            binary.extend_from_slice(&3u32.to_le_bytes());
            binary.extend_from_slice(b"abc");
            let mut plain = vec![0u8];
            plain.extend_from_slice(json);
            vec![plain, binary]
        }
        "onnx_model" => vec![
            include_bytes!("../../citadel-infer/tests/fixtures/models/lr_multiclass_zipmap.onnx").to_vec(),
            include_bytes!("../../citadel-infer/tests/fixtures/models/gb_binary_nozipmap.onnx").to_vec(),
            include_bytes!("../../citadel-infer/tests/fixtures/models/mlp_binary_nozipmap.onnx").to_vec(),
            include_bytes!("../../citadel-infer/tests/fixtures/models/standard_mlp.onnx").to_vec(),
        ],
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic mutations: bit flips, truncation, insertion, splicing
    /// bytes that parsers care about.
    fn mutations(seed: &[u8], n: usize) -> Vec<Vec<u8>> {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D ^ seed.len() as u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let special: &[&[u8]] =
            &[b"\0", b"..", b"/", b"\"", b"{", b"}", b"[", b"]", b"-1", b"99999999999999999999", b"\xff", b"\\u0000"];
        (0..n)
            .map(|_| {
                let mut v = seed.to_vec();
                for _ in 0..1 + next() % 4 {
                    let len = v.len().max(1);
                    match next() % 5 {
                        0 if !v.is_empty() => {
                            let i = next() as usize % v.len();
                            v[i] ^= 1 << (next() % 8);
                        }
                        1 => v.truncate(next() as usize % len),
                        2 => {
                            let i = next() as usize % (v.len() + 1);
                            let s = special[next() as usize % special.len()];
                            v.splice(i..i, s.iter().copied());
                        }
                        3 if !v.is_empty() => {
                            let i = next() as usize % v.len();
                            v[i] = next() as u8;
                        }
                        _ => {
                            let i = next() as usize % (v.len() + 1);
                            let j = (i + next() as usize % 16).min(v.len());
                            let copy = v[i..j].to_vec();
                            v.splice(i..i, copy);
                        }
                    }
                }
                v
            })
            .collect()
    }

    #[test]
    fn every_target_survives_mutated_seeds() {
        for (name, body) in TARGETS {
            let seeds = seeds(name);
            assert!(!seeds.is_empty(), "target {name} has no seeds");
            for seed in &seeds {
                body(seed);
                // An ingest writes files: fewer mutations keep the test short.
                let n = if *name == "table_file" { 300 } else { 3000 };
                for m in mutations(seed, n) {
                    body(&m);
                }
            }
        }
    }

    #[test]
    fn seeds_are_valid_inputs() {
        // A seed that does not parse would make the mutations test nothing.
        let plain = &seeds("v2_request")[0];
        assert!(citadel_serve::v2::decode(&plain[1..], None, 1 << 16).is_ok());
        let binary = &seeds("v2_request")[1];
        let n = u32::from_le_bytes(binary[1..5].try_into().unwrap()) as usize;
        let req = citadel_serve::v2::decode(&binary[5..], Some(n), 1 << 16).unwrap();
        assert_eq!(req.inputs[0].1.data, citadel_infer::Data::I64(vec![7, -1]));
        for m in seeds("onnx_model") {
            assert!(citadel_infer::Model::load(&m).is_ok());
        }
        for g in seeds("grpc_request") {
            use prost::Message;
            let msg = citadel_serve::grpc_pb::ModelInferRequest::decode(g.as_slice()).unwrap();
            assert_eq!(citadel_serve::grpc_pb::decode_infer(msg, 1 << 16).unwrap().inputs.len(), 2);
        }
        for r in seeds("named_request") {
            let inputs = citadel_serve::named::decode_records(&r, named_model(), 1 << 12).unwrap();
            assert_eq!(inputs.len(), 2);
        }
        assert!(citadel_store::parse_manifest(&seeds("manifest")[0]).is_ok());
        assert!(citadel_store::parse_manifest(&seeds("manifest")[1]).is_ok());
        assert!(cipher().open("fuzz-object", &seeds("sealed_object")[0]).is_ok());
        // The quickstart's pipeline names files beside it: here only those
        // problems may be reported.
        let seed = seeds("pipeline_file").remove(0);
        let text = std::str::from_utf8(&seed).unwrap();
        let problems =
            citadel_control::pipeline_spec::PipelineSpec::parse(text, std::path::Path::new("/nonexistent/p.toml"))
                .unwrap_err();
        assert!(problems.iter().all(|p| p.starts_with("ingest.")), "{problems:?}");
        assert!(citadel_crypto::ApiToken::parse(std::str::from_utf8(&seeds("identifiers")[0]).unwrap()).is_ok());
        let k = citadel_crypto::check_key_file_text(std::str::from_utf8(&seeds("key_file")[0]).unwrap());
        assert!(k.is_ok(), "{k:?}");
        let recs: Vec<citadel_audit::AuditRecord> = serde_json::from_slice(&seeds("audit_records")[0]).unwrap();
        assert!(citadel_audit::verify_chain(&recs, &[], &[0; 32]).is_empty());
        let protector = citadel_crypto::DataProtector::new(&DataKey::from_bytes(&[9; 32]).unwrap()).unwrap();
        for (i, seed) in seeds("table_file").iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("in"), seed).unwrap();
            let spec = citadel_data::Expectations::default();
            let r =
                citadel_data::ingest(&dir.path().join("in"), &spec, &protector, &dir.path().join("o"), None, &|_| {});
            assert!(r.is_ok(), "table seed {i}: {r:?}");
        }
        assert!(citadel_data::Expectations::parse(std::str::from_utf8(&seeds("expectations")[0]).unwrap()).is_ok());
    }

    #[test]
    fn a_forged_object_never_opens() {
        let mut sealed = seeds("sealed_object")[0].clone();
        for i in 0..sealed.len() {
            sealed[i] ^= 0x01;
            assert!(cipher().open("fuzz-object", &sealed).is_err(), "flipped byte {i} still opened");
            sealed[i] ^= 0x01;
        }
        assert!(cipher().open("another-object", &sealed).is_err(), "an object opened under another name");
    }
}

//! The scanner against pickles written by CPython's own pickler
//! (`tests/fixtures/make_pickles.py`, which also writes `expected.json`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use citadel_scan::{Format, Severity, pickle};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[derive(serde::Deserialize)]
struct Expected {
    worst: Option<String>,
    globals: Vec<String>,
    #[serde(default)]
    rules: Vec<String>,
    #[serde(default)]
    format: Option<String>,
}

#[test]
fn every_fixture_gets_its_expected_verdict() {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).expect("expected.json");
    let expected: BTreeMap<String, Expected> = serde_json::from_str(&text).expect("valid expected.json");
    assert!(expected.len() >= 35);
    for (name, want) in expected {
        let data = std::fs::read(fixtures().join(&name)).expect("fixture");
        let format = serde_json::to_value(citadel_scan::detect(&data)).unwrap();
        assert_eq!(format.as_str(), Some(want.format.as_deref().unwrap_or("pickle")), "{name}: detected by content");
        let report = citadel_scan::scan_bytes(&name, &data);
        for rule in &want.rules {
            assert!(
                report.findings.iter().any(|f| &f.rule == rule),
                "{name}: no {rule} finding in {:#?}",
                report.findings
            );
        }
        let worst = report.findings.iter().map(|f| f.severity).max();
        assert_eq!(worst.map(|s| s.as_str().to_string()), want.worst, "{name}: {:#?}", report.findings);
        if want.format.is_some() {
            continue;
        }
        let walk = pickle::walk(&data, &name, pickle::PickleLimits::default());
        let got: Vec<String> = walk.globals.iter().map(|g| format!("{}.{}", g.module, g.name)).collect();
        for g in &want.globals {
            assert!(got.contains(g), "{name}: {g} not resolved; got {got:?}");
        }
    }
}

#[test]
fn benign_pickles_of_every_protocol_are_clean() {
    for p in 0..=5 {
        let data = std::fs::read(fixtures().join(format!("benign_p{p}.pkl"))).expect("fixture");
        let walk = pickle::walk(&data, "b", pickle::PickleLimits::default());
        assert!(walk.findings.is_empty(), "protocol {p}: {:?}", walk.findings);
        assert_eq!(walk.pickles, 1);
    }
}

#[test]
fn findings_name_the_callable_and_offset() {
    let data = std::fs::read(fixtures().join("os_system_p4.pkl")).expect("fixture");
    let r = citadel_scan::scan_bytes("model.pkl", &data);
    let f = r.findings.iter().find(|f| f.severity == Severity::Critical).expect("a critical finding");
    assert_eq!(f.rule, "pickle-dangerous-global");
    assert!(f.message.contains("posix.system") && f.message.contains("at byte"), "{}", f.message);
    assert_eq!(f.location, "model.pkl");
}

#[test]
fn a_malicious_pickle_after_a_benign_one_is_found() {
    let data = std::fs::read(fixtures().join("two_pickles.pkl")).expect("fixture");
    let walk = pickle::walk(&data, "t", pickle::PickleLimits::default());
    assert_eq!(walk.pickles, 2);
    assert!(walk.findings.iter().any(|f| f.severity == Severity::Critical));
}

#[test]
fn unknown_content_is_a_finding_never_a_pass() {
    let r = citadel_scan::scan_bytes("weights.bin", b"\x00\x01 arbitrary bytes that are no known format");
    assert_eq!(r.format, Format::Unknown);
    assert_eq!(r.findings.len(), 1);
    assert_eq!(r.findings[0].rule, "unknown-format");
    let empty = citadel_scan::scan_bytes("empty", b"");
    assert!(!empty.findings.is_empty(), "an empty file is not judged safe");
}

#[test]
fn opcode_budget_bounds_the_walk() {
    // 10,000 EMPTY_LIST + POP pairs under a budget of 1,000 opcodes.
    let mut data = b"\x80\x04".to_vec();
    for _ in 0..10_000 {
        data.extend_from_slice(b"]0");
    }
    data.extend_from_slice(b"N.");
    let walk = pickle::walk(&data, "big", pickle::PickleLimits { max_opcodes: 1_000, ..Default::default() });
    assert!(walk.findings.iter().any(|f| f.rule == "pickle-too-large"));
    assert!(walk.opcodes <= 1_000);
}

#[test]
fn every_truncation_of_every_fixture_is_handled() {
    // Never a panic; a truncated malicious pickle still reports what it imports so far.
    for entry in std::fs::read_dir(fixtures()).expect("dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e != "json" && e != "py") {
            let data = std::fs::read(&path).expect("fixture");
            for cut in 0..data.len() {
                let _ = citadel_scan::scan_bytes("cut", &data[..cut]);
            }
        }
    }
}

#[test]
fn container_findings_name_the_member() {
    let data = std::fs::read(fixtures().join("nested.zip")).expect("fixture");
    let r = citadel_scan::scan_bytes("nested.zip", &data);
    let f = r.findings.iter().find(|f| f.severity == Severity::Critical).expect("critical");
    assert_eq!(f.location, "nested.zip!inner.zip!deep/model.pkl");
}

#[test]
fn raw_torch_storages_are_not_noise() {
    let data = std::fs::read(fixtures().join("torch_like.pt")).expect("fixture");
    let r = citadel_scan::scan_bytes("m.pt", &data);
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
}

fn zip_of(members: &[(&str, &[u8])], method: zip::CompressionMethod) -> Vec<u8> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in members {
        w.start_file(*name, zip::write::SimpleFileOptions::default().compression_method(method)).expect("start");
        w.write_all(data).expect("write");
    }
    w.finish().expect("finish").into_inner()
}

#[test]
fn a_zip_bomb_is_not_unpacked() {
    let zeros = vec![0u8; 200 << 20];
    let bomb = zip_of(&[("archive/data.pkl", &zeros)], zip::CompressionMethod::Deflated);
    assert!(bomb.len() < 1 << 20, "the bomb compresses: {}", bomb.len());
    let r = citadel_scan::scan_bytes("bomb.zip", &bomb);
    assert!(r.findings.iter().any(|f| f.rule == "zip-bomb" && f.severity == Severity::Critical), "{:#?}", r.findings);
}

#[test]
fn deep_nesting_stops_at_the_bound() {
    let evil = std::fs::read(fixtures().join("os_system_p2.pkl")).expect("fixture");
    let mut inner = zip_of(&[("model.pkl", &evil)], zip::CompressionMethod::Stored);
    for _ in 0..6 {
        inner = zip_of(&[("nested.zip", &inner)], zip::CompressionMethod::Stored);
    }
    let r = citadel_scan::scan_bytes("deep.zip", &inner);
    assert!(r.findings.iter().any(|f| f.rule == "archive-too-deep"), "{:#?}", r.findings);
    // Within the bound, the payload is found.
    let mut shallow = zip_of(&[("model.pkl", &evil)], zip::CompressionMethod::Stored);
    shallow = zip_of(&[("a.zip", &shallow)], zip::CompressionMethod::Stored);
    let r = citadel_scan::scan_bytes("shallow.zip", &shallow);
    assert!(r.findings.iter().any(|f| f.rule == "pickle-dangerous-global"), "{:#?}", r.findings);
}

#[test]
fn a_corrupted_zip_is_a_finding() {
    let good = std::fs::read(fixtures().join("torch_evil.pt")).expect("fixture");
    // Central directory destroyed: the archive cannot be read at all.
    let mut broken = good.clone();
    let n = broken.len();
    for b in &mut broken[n - 40..] {
        *b = 0xff;
    }
    let r = citadel_scan::scan_bytes("broken.pt", &broken);
    assert!(!r.findings.is_empty(), "a broken zip passed silently");
}

#[test]
fn symlinks_are_reported_not_followed() {
    let dir = std::env::temp_dir().join(format!("citadel-scan-link-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    std::os::unix::fs::symlink("/etc/passwd", dir.join("escape.pkl")).expect("symlink");
    let reports = citadel_scan::scan_path(&dir).expect("scan");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].findings[0].rule, "symlink");
}

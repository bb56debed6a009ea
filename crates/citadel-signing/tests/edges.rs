//! Edge cases of what a signature covers (`../shared/cases/sign/shard-empty-files`,
//! and the kinds it stands for): empty files under both methods, names that
//! are not UTF-8, names that collide once normalized, special files.

#![allow(clippy::unwrap_used)] // a test that cannot set up should stop loudly

use std::path::Path;

use citadel_signing::{Method, SignOptions, SigningError, SigningKey, VerifyingKey, sign, verify};

fn keys() -> (SigningKey, VerifyingKey) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys");
    (
        SigningKey::from_pem_file(&dir.join("TEST-ONLY-ec-p256-private.pem")).unwrap(),
        VerifyingKey::from_pem_file(&dir.join("TEST-ONLY-ec-p256-public.pem")).unwrap(),
    )
}

fn model(root: &Path) {
    std::fs::create_dir_all(root.join("pkg")).unwrap();
    std::fs::write(root.join("weights.bin"), vec![b'w'; 2048]).unwrap();
    std::fs::write(root.join("config.json"), b"{\"hidden\": 4}\n").unwrap();
    std::fs::write(root.join("pkg/__init__.py"), b"").unwrap();
    std::fs::write(root.join("READY"), b"").unwrap();
}

#[test]
fn empty_files_are_covered_by_both_methods() {
    let (sk, vk) = keys();
    for method in [Method::Files, Method::Shards(1024)] {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("m");
        model(&m);
        let bundle = sign(&m, &sk, &SignOptions { method, ..Default::default() }).unwrap();
        assert!(verify(&m, &bundle, &vk, &[]).unwrap().mismatch.is_empty(), "{method:?}: untouched");
        std::fs::remove_file(m.join("pkg/__init__.py")).unwrap();
        let v = verify(&m, &bundle, &vk, &[]).unwrap();
        assert!(!v.mismatch.is_empty(), "{method:?}: a deleted empty file went unnoticed");
        std::fs::write(m.join("pkg/__init__.py"), b"").unwrap();
        std::fs::create_dir_all(m.join("pkg/plugins")).unwrap();
        std::fs::write(m.join("pkg/plugins/__init__.py"), b"").unwrap();
        let v = verify(&m, &bundle, &vk, &[]).unwrap();
        assert!(!v.mismatch.is_empty(), "{method:?}: an added empty file went unnoticed");
    }
}

#[test]
fn names_that_are_not_utf8_are_refused() {
    use std::os::unix::ffi::OsStrExt;
    let (sk, _) = keys();
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    model(&m);
    std::fs::write(m.join(std::ffi::OsStr::from_bytes(b"w\xffeights.bin")), b"x").unwrap();
    let err = sign(&m, &sk, &SignOptions::default()).unwrap_err();
    assert!(matches!(err, SigningError::NonUtf8Name { .. }), "{err}");
}

#[test]
fn names_that_collide_once_normalized_are_refused() {
    let (sk, _) = keys();
    for (a, b) in [("caf\u{e9}.bin", "cafe\u{301}.bin"), ("Model.bin", "model.bin")] {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("m");
        model(&m);
        std::fs::write(m.join(a), b"1").unwrap();
        std::fs::write(m.join(b), b"2").unwrap();
        let err = sign(&m, &sk, &SignOptions::default()).unwrap_err();
        assert!(matches!(err, SigningError::NameCollision { .. }), "{a} / {b}: {err}");
    }
}

#[test]
fn fifos_are_refused_at_sign_and_at_verify() {
    let (sk, vk) = keys();
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    model(&m);
    let bundle = sign(&m, &sk, &SignOptions::default()).unwrap();
    nix_mkfifo(&m.join("pipe"));
    assert!(matches!(sign(&m, &sk, &SignOptions::default()), Err(SigningError::SpecialFile { .. })));
    assert!(matches!(verify(&m, &bundle, &vk, &[]), Err(SigningError::SpecialFile { .. })));
}

fn nix_mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo").arg(path).status().expect("mkfifo runs");
    assert!(status.success());
}

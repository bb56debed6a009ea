//! Interoperability with the OpenSSF model-signing tool (private-key method),
//! against the fixtures it produced (`tests/fixtures`, see its README and
//! transcript.txt for the exact commands and outputs).

#![allow(clippy::unwrap_used)] // a test that cannot set up should stop loudly

use std::path::{Path, PathBuf};

use citadel_signing::{Method, SignOptions, SigningError, SigningKey, VerifyingKey, hash_model, sign, verify};

fn fx(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(p)
}

fn read(p: &str) -> String {
    std::fs::read_to_string(fx(p)).unwrap()
}

fn p256() -> VerifyingKey {
    VerifyingKey::from_pem_file(&fx("keys/TEST-ONLY-ec-p256-public.pem")).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn their_signatures_verify_with_ours() {
    for (sig, key) in [
        ("signatures/model.sig", "keys/TEST-ONLY-ec-p256-public.pem"),
        ("signatures/model.p384.sig", "keys/TEST-ONLY-ec-p384-public.pem"),
        ("signatures/model.sharded-262144.sig", "keys/TEST-ONLY-ec-p256-public.pem"),
        ("signatures/model.independent-files.sig", "keys/TEST-ONLY-ec-p256-public.pem"),
        ("signatures/model.independent-shards-262144.sig", "keys/TEST-ONLY-ec-p256-public.pem"),
    ] {
        let key = VerifyingKey::from_pem_file(&fx(key)).unwrap();
        let v = verify(&fx("model"), &read(sig), &key, &[]).unwrap_or_else(|e| panic!("{sig}: {e}"));
        assert!(v.mismatch.is_empty(), "{sig}: {:?}", v.mismatch);
    }
    let v = verify(&fx("model"), &read("signatures/model.sig"), &p256(), &[]).unwrap();
    assert_eq!(v.root_digest, "0ed7207928a125b5b7baea2f8f456ce39852b57f3ed38631756e737ae96a0c4f");
    // Single-file model; the resource is named "." so a renamed copy verifies.
    let dir = tempfile::tempdir().unwrap();
    let renamed = dir.path().join("renamed.bin");
    std::fs::copy(fx("single/toy-model.bin"), &renamed).unwrap();
    assert!(verify(&renamed, &read("signatures/single.sig"), &p256(), &[]).unwrap().mismatch.is_empty());
    // The ordering fixture signs itself; its payload lists model.sig in ignore_paths.
    assert!(verify(&fx("ordering"), &read("ordering/model.sig"), &p256(), &[]).unwrap().mismatch.is_empty());
}

#[test]
fn key_hints_match_the_reference_values() {
    assert_eq!(p256().hint(), "b643729e14b62a4cb71ef396a024cba131f5c79a5d0381bb5e252f27b1664a9e");
    let p384 = VerifyingKey::from_pem_file(&fx("keys/TEST-ONLY-ec-p384-public.pem")).unwrap();
    assert_eq!(p384.hint(), "57b8de03da0a92c726f107c80a0cb355da7a9aaa12568f76978972b88c5ecc49");
    // SEC1 and PKCS#8 private keys both load and give the public key's hint.
    let sk = SigningKey::from_pem_file(&fx("keys/TEST-ONLY-ec-p256-private.pem")).unwrap();
    assert_eq!(sk.hint(), p256().hint());
    let sk384 = SigningKey::from_pem_file(&fx("keys/TEST-ONLY-ec-p384-private.pem")).unwrap();
    assert_eq!(sk384.hint(), p384.hint());
}

#[test]
fn our_order_and_root_digest_equal_theirs() {
    // Same files, same order (by path segments), same root digest as model-signing.
    let ours = hash_model(&fx("model"), Method::Files, &[".git".to_string()].into_iter().collect()).unwrap();
    let names: Vec<_> = ours.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["config.json", "sub/tokenizer.json", "weights.bin"]);
    let payload: serde_json::Value = serde_json::from_str(&read("decoded/ordering.model.payload.json")).unwrap();
    let theirs: Vec<String> = payload["predicate"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    let ignore = ["model.sig".to_string()].into_iter().collect();
    let ours: Vec<String> =
        hash_model(&fx("ordering"), Method::Files, &ignore).unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(ours, theirs);
    // Shards: same names and digests as their sharded signature.
    let sharded: serde_json::Value = serde_json::from_str(&read("decoded/model.sharded-262144.payload.json")).unwrap();
    let mut theirs: Vec<(String, String)> = sharded["predicate"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap().to_string(), r["digest"].as_str().unwrap().to_string()))
        .collect();
    let mut ours: Vec<(String, String)> = hash_model(&fx("model"), Method::Shards(262_144), &Default::default())
        .unwrap()
        .into_iter()
        .map(|r| (r.name, r.digest))
        .collect();
    theirs.sort();
    ours.sort();
    assert_eq!(ours, theirs);
}

#[test]
fn tampering_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("model");
    copy_dir(&fx("model"), &m);
    let sig = read("signatures/model.sig");
    // Byte flipped.
    let mut w = std::fs::read(m.join("weights.bin")).unwrap();
    w[1000] ^= 1;
    std::fs::write(m.join("weights.bin"), &w).unwrap();
    // File added, file deleted.
    std::fs::write(m.join("extra.txt"), b"x").unwrap();
    std::fs::remove_file(m.join("sub/tokenizer.json")).unwrap();
    let v = verify(&m, &sig, &p256(), &[]).unwrap();
    assert_eq!(v.mismatch.changed, ["weights.bin"]);
    assert_eq!(v.mismatch.extra, ["extra.txt"]);
    assert_eq!(v.mismatch.missing, ["sub/tokenizer.json"]);
}

#[test]
fn negative_fixtures_fail_like_model_signing() {
    let m = fx("model");
    assert!(matches!(
        verify(&m, &read("signatures/negative/payload-modified.sig"), &p256(), &[]),
        Err(SigningError::BadSignature)
    ));
    assert!(matches!(
        verify(&m, &read("signatures/negative/signature-bitflip.sig"), &p256(), &[]),
        Err(SigningError::BadSignature)
    ));
    assert!(matches!(
        verify(&m, &read("signatures/negative/other-media-type.sig"), &p256(), &[]),
        Err(SigningError::Format(_))
    ));
    // No hint: verifies with the right key, fails with another.
    assert!(verify(&m, &read("signatures/negative/no-key-hint.sig"), &p256(), &[]).is_ok());
    let other = VerifyingKey::from_pem_file(&fx("keys/TEST-ONLY-other-ec-p256-public.pem")).unwrap();
    assert!(matches!(
        verify(&m, &read("signatures/negative/no-key-hint.sig"), &other, &[]),
        Err(SigningError::BadSignature)
    ));
    assert!(matches!(verify(&m, &read("signatures/model.sig"), &other, &[]), Err(SigningError::KeyMismatch)));
    assert!(matches!(verify(&m, "not json", &p256(), &[]), Err(SigningError::Format(_))));
}

#[test]
fn our_signatures_round_trip_with_every_curve_and_method() {
    for (key, pubkey) in [
        ("keys/TEST-ONLY-ec-p256-private.pem", "keys/TEST-ONLY-ec-p256-public.pem"),
        ("keys/TEST-ONLY-ec-p384-private.pem", "keys/TEST-ONLY-ec-p384-public.pem"),
    ] {
        let sk = SigningKey::from_pem_file(&fx(key)).unwrap();
        let vk = VerifyingKey::from_pem_file(&fx(pubkey)).unwrap();
        for method in [Method::Files, Method::Shards(100_000)] {
            let bundle = sign(&fx("model"), &sk, &SignOptions { method, ..Default::default() }).unwrap();
            let v = verify(&fx("model"), &bundle, &vk, &[]).unwrap();
            assert!(v.mismatch.is_empty());
            // Same root digest as model-signing for the files method.
            if method == Method::Files {
                assert_eq!(v.root_digest, "0ed7207928a125b5b7baea2f8f456ce39852b57f3ed38631756e737ae96a0c4f");
            }
        }
    }
}

#[test]
fn symlinks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    copy_dir(&fx("model"), &m);
    std::os::unix::fs::symlink("/etc/passwd", m.join("link")).unwrap();
    let sk = SigningKey::from_pem_file(&fx("keys/TEST-ONLY-ec-p256-private.pem")).unwrap();
    assert!(matches!(sign(&m, &sk, &SignOptions::default()), Err(SigningError::Symlink { .. })));
}

/// The reference tool, installed by scripts/services.sh; None only when
/// skipped on purpose (CITADEL_TEST_SKIP_SERVICES=1).
fn model_signing_cli() -> Option<String> {
    if std::env::var("CITADEL_TEST_SKIP_SERVICES").is_ok_and(|v| v == "1") {
        return None;
    }
    Some(std::env::var("CITADEL_TEST_MODEL_SIGNING").unwrap_or_else(|_| {
        panic!("CITADEL_TEST_MODEL_SIGNING is not set: run ./scripts/services.sh and source /tmp/citadel-services/env (./scripts/test.sh does both)")
    }))
}

#[test]
fn our_signatures_verify_with_the_model_signing_cli() {
    let Some(cli) = model_signing_cli() else { return };
    let dir = tempfile::tempdir().unwrap();
    for (key, pubkey) in [
        ("keys/TEST-ONLY-ec-p256-private.pem", "keys/TEST-ONLY-ec-p256-public.pem"),
        ("keys/TEST-ONLY-ec-p384-private.pem", "keys/TEST-ONLY-ec-p384-public.pem"),
    ] {
        let sk = SigningKey::from_pem_file(&fx(key)).unwrap();
        for (model, name) in [(fx("model"), "dir"), (fx("single/toy-model.bin"), "single")] {
            let sig = dir.path().join(format!("{name}.sig"));
            std::fs::write(&sig, sign(&model, &sk, &SignOptions::default()).unwrap()).unwrap();
            let o = std::process::Command::new(&cli)
                .args(["verify", "key"])
                .arg(&model)
                .arg("--signature")
                .arg(&sig)
                .arg("--public_key")
                .arg(fx(pubkey))
                .output()
                .unwrap();
            let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            assert!(o.status.success() && out.contains("Verification succeeded"), "{key} {name}: {out}");
        }
    }
    // And the reference tool rejects our signature over a changed model.
    let m = dir.path().join("changed");
    copy_dir(&fx("model"), &m);
    let sk = SigningKey::from_pem_file(&fx("keys/TEST-ONLY-ec-p256-private.pem")).unwrap();
    let sig = dir.path().join("changed.sig");
    std::fs::write(&sig, sign(&m, &sk, &SignOptions::default()).unwrap()).unwrap();
    std::fs::write(m.join("config.json"), b"{}").unwrap();
    let o = std::process::Command::new(&cli)
        .args(["verify", "key"])
        .arg(&m)
        .arg("--signature")
        .arg(&sig)
        .arg("--public_key")
        .arg(fx("keys/TEST-ONLY-ec-p256-public.pem"))
        .output()
        .unwrap();
    assert!(!o.status.success(), "model-signing accepted a changed model");
}

#[test]
fn a_signature_made_for_another_model_does_not_verify_it() {
    // model.sig covers model/; checked against single/, every file differs.
    let v = verify(&fx("single"), &read("signatures/model.sig"), &p256(), &[]).unwrap();
    assert!(!v.mismatch.is_empty());
    assert_eq!(v.mismatch.missing.len(), 3, "{:?}", v.mismatch);
    assert_eq!(v.mismatch.extra, ["toy-model.bin"]);
}

#[test]
fn our_sharded_signatures_verify_with_the_model_signing_api() {
    // The CLI cannot check sharded signatures (it always rehashes files), so
    // the reference library's API does, through the fixtures' helper script.
    let Some(cli) = model_signing_cli() else { return };
    let python = Path::new(&cli).with_file_name("python");
    let dir = tempfile::tempdir().unwrap();
    let sig = dir.path().join("sharded.sig");
    let sk = SigningKey::from_pem_file(&fx("keys/TEST-ONLY-ec-p256-private.pem")).unwrap();
    let opts = SignOptions { method: Method::Shards(262_144), ..Default::default() };
    std::fs::write(&sig, sign(&fx("model"), &sk, &opts).unwrap()).unwrap();
    let o = std::process::Command::new(&python)
        .arg(fx("tools/api_verify.py"))
        .arg(fx("model"))
        .arg(fx("keys/TEST-ONLY-ec-p256-public.pem"))
        .arg(&sig)
        .args(["shards", "262144"])
        .output()
        .unwrap();
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success() && out.contains("API verification succeeded"), "{out}");
}

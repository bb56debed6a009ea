//! The Kubernetes manifests (`deploy/kubernetes`): valid against the
//! Kubernetes API schema (kubernetes-validate, strict), within the
//! restricted Pod Security Standard and Citadel's own rules
//! (`scripts/check_k8s_restricted.py`, whose every rule is shown to bite
//! here), and asking the binary only for flags it has.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python of the test venv (scripts/services.sh), with kubernetes-validate and PyYAML.
fn python() -> PathBuf {
    PathBuf::from(
        std::env::var("CITADEL_TEST_VENV_PYTHON").expect("CITADEL_TEST_VENV_PYTHON (scripts/services.sh sets it)"),
    )
}

fn manifests() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    assert!(v.len() >= 3, "{v:?}");
    v
}

fn check(files: &[PathBuf]) -> std::process::Output {
    Command::new(python()).arg(repo().join("scripts/check_k8s_restricted.py")).args(files).output().unwrap()
}

#[test]
fn the_kubernetes_manifests_validate_and_hold_the_restricted_profile() {
    let files = manifests();
    let validate = python().with_file_name("kubernetes-validate");
    let o = Command::new(&validate).args(["--strict", "-k", "1.31.0"]).args(&files).output().unwrap();
    assert!(o.status.success(), "kubernetes-validate: {}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));

    let o = check(&files);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // Every flag the gateway is started with is one `citadel serve` has.
    let help = String::from_utf8_lossy(&bin().args(["serve", "--help"]).output().unwrap().stdout).to_string()
        + &String::from_utf8_lossy(&bin().arg("--help").output().unwrap().stdout);
    let args = v["args"]["gateway"].as_array().unwrap();
    assert!(args.iter().any(|a| a == "serve"), "{args:?}");
    for a in args.iter().map(|a| a.as_str().unwrap()).filter(|a| a.starts_with("--")) {
        let flag = a.split('=').next().unwrap();
        assert!(
            help.contains(&format!("{flag} "))
                || help.contains(&format!("{flag}="))
                || help.contains(&format!("{flag} <")),
            "{flag} is not a flag of citadel serve"
        );
    }

    // Each rule bites: a manifest that breaks it is refused, naming it.
    let gateway = std::fs::read_to_string(repo().join("deploy/kubernetes/gateway.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (from, to, said) in [
        ("allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true", "allowPrivilegeEscalation must be false"),
        ("            runAsNonRoot: true", "            runAsNonRoot: false", "runAsNonRoot must be true"),
        ("drop: [\"ALL\"]", "drop: [\"NET_RAW\"]", "capabilities must drop ALL"),
        ("readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "readOnlyRootFilesystem must be true"),
        ("emptyDir: {sizeLimit: 1Gi}", "hostPath: {path: /var/tmp}", "forbids: ['hostPath']"),
        ("automountServiceAccountToken: false", "automountServiceAccountToken: true", "automountServiceAccountToken"),
        ("          readinessProbe:", "          x-readinessProbe:", "no readinessProbe"),
        ("limits: {cpu: \"2\", memory: 2Gi}", "limits: {memory: 2Gi}", "no cpu limit"),
        (
            "        fsGroup: 65532\n",
            "        fsGroup: 65532\n        sysctls: [{name: kernel.msgmax, value: \"65536\"}]\n",
            "sysctl kernel.msgmax",
        ),
        (
            "            readOnlyRootFilesystem: true\n",
            "            readOnlyRootFilesystem: true\n            seLinuxOptions: {user: system_u}\n",
            "seLinuxOptions.user",
        ),
        (
            "        runAsNonRoot: true\n        runAsUser",
            "        runAsNonRoot: false\n        runAsUser",
            "runAsNonRoot is false",
        ),
    ] {
        assert!(gateway.contains(from), "the manifest no longer has {from:?}");
        let bad = dir.path().join("gateway.yaml");
        std::fs::write(&bad, gateway.replacen(from, to, 1)).unwrap();
        let mut files: Vec<PathBuf> = manifests().into_iter().filter(|p| !p.ends_with("gateway.yaml")).collect();
        files.push(bad);
        let o = check(&files);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(!o.status.success() && out.contains(said), "{from:?} → {to:?} was not refused: {out}");
    }
    // Without the namespace's enforcement or the default-deny policy: refused.
    let only_gateway = [repo().join("deploy/kubernetes/gateway.yaml")];
    let out = String::from_utf8_lossy(&check(&only_gateway).stdout).to_string();
    assert!(out.contains("is not defined here") && out.contains("no default-deny NetworkPolicy"), "{out}");
}

/// `scripts/build-image.sh`: an OCI image whose config runs the binary as
/// uid 65532, holding no shell, whose content alone runs Citadel as that
/// user writing nowhere but /workspace/tmp, with an SBOM that names the
/// Debian packages of the libraries it links and the binary's digest.
#[test]
fn the_oci_image_runs_citadel_as_non_root_from_its_own_content() {
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(repo().join("scripts/build-image.sh"))
        .arg(out.path())
        .env("CITADEL_BIN", env!("CARGO_BIN_EXE_citadel"))
        .output()
        .unwrap();
    assert!(o.status.success(), "build-image.sh: {}", stderr(&o));
    let oci = out.path().join("oci");
    let blob = |digest: &str| -> serde_json::Value {
        let hex = digest.strip_prefix("sha256:").unwrap();
        serde_json::from_slice(&std::fs::read(oci.join("blobs/sha256").join(hex)).unwrap()).unwrap()
    };
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(oci.join("index.json")).unwrap()).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    let m = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == version)
        .unwrap();
    let manifest = blob(m["digest"].as_str().unwrap());
    let config = blob(manifest["config"]["digest"].as_str().unwrap());
    assert_eq!(config["config"]["User"], "65532:65532", "{config}");
    assert_eq!(config["config"]["Entrypoint"], serde_json::json!(["/usr/local/bin/citadel"]));
    assert!(config["config"]["Env"].as_array().unwrap().iter().any(|e| e == "TMPDIR=/workspace/tmp"));

    // Unpacked as a runtime would: no shell, the binary, its libraries.
    let bundle = out.path().join("bundle");
    let mut unpack = Command::new("umoci");
    unpack.arg("unpack");
    if !is_root() {
        unpack.arg("--rootless");
    }
    let o = unpack.args(["--image", &format!("{}:{version}", oci.display())]).arg(&bundle).output().unwrap();
    assert!(o.status.success(), "umoci unpack: {}", stderr(&o));
    let rootfs = bundle.join("rootfs");
    for absent in ["bin/sh", "usr/bin/sh", "bin/bash", "usr/bin/apt"] {
        assert!(!rootfs.join(absent).exists(), "{absent} is in the image");
    }
    let binary = std::fs::read(rootfs.join("usr/local/bin/citadel")).unwrap();
    let sbom: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("citadel-image.cdx.json")).unwrap()).unwrap();
    assert_eq!(sbom["bomFormat"], "CycloneDX");
    assert_eq!(sbom["components"][0]["hashes"][0]["content"], sha256_hex(&binary));
    let libc =
        String::from_utf8(Command::new("dpkg-query").args(["-W", "-f=${Version}", "libc6"]).output().unwrap().stdout)
            .unwrap();
    let comps = sbom["components"].as_array().unwrap();
    assert!(
        comps.iter().any(|c| c["name"] == "libc6" && c["version"] == libc.as_str()),
        "libc6 {libc} not in the SBOM"
    );
    assert!(
        comps.iter().any(|c| c["purl"].as_str().is_some_and(|p| p.starts_with("pkg:cargo/tokio@"))),
        "crates are listed"
    );

    // Its content alone runs Citadel as uid 65532, writing only under /workspace/tmp.
    if is_root() {
        let run = |args: &[&str]| {
            Command::new("/usr/sbin/chroot")
                .arg("--userspec=65532:65532")
                .arg(&rootfs)
                .arg("/usr/local/bin/citadel")
                .args(args)
                .env_clear()
                .env("CITADEL_PASSPHRASE", "image-test-passphrase")
                .env("TMPDIR", "/workspace/tmp")
                .output()
                .unwrap()
        };
        let o = run(&["--version"]);
        assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains(version), "{}", stderr(&o));
        let o = run(&["init", "/workspace/tmp/ws", "--kdf-memory-mib", "19"]);
        assert!(o.status.success(), "init in the image: {}", stderr(&o));
        let o = run(&["-w", "/workspace/tmp/ws", "artifact", "put", "/etc/passwd", "--json"]);
        assert!(o.status.success(), "put in the image: {}", stderr(&o));
        let o = run(&["-w", "/workspace/tmp/ws", "audit", "verify"]);
        assert!(o.status.success(), "audit verify in the image: {}", stderr(&o));
    } else {
        eprintln!("not root: the chroot run of the image's content is skipped");
    }
}

/// Whether this process runs as root (chroot needs it).
fn is_root() -> bool {
    String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap().trim() == "0"
}

#![allow(clippy::unwrap_used)]
//! The training sandbox against commands that try to escape it. Each is
//! stopped, and the outcome says how. Runs the real binary as the helper.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use citadel_sandbox::{Limits, Outcome, Spec};

struct Dirs {
    _root: tempfile::TempDir,
    data: PathBuf,
    out: PathBuf,
    outside: PathBuf,
}

/// A layout like the pipeline's: data readable by everyone, the output
/// directory the command's own, and a secret file next to them.
fn dirs() -> Dirs {
    let root = tempfile::Builder::new().prefix("citadel-sbx-").tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let data = root.path().join("data");
    let out = root.path().join("out");
    let outside = root.path().join("outside");
    for d in [&data, &out, &outside] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(data.join("train.csv"), "a,b\n1,2\n").unwrap();
    std::fs::write(outside.join("secret.txt"), "do not read").unwrap();
    std::fs::set_permissions(outside.join("secret.txt"), std::fs::Permissions::from_mode(0o644)).unwrap();
    citadel_sandbox::prepare_output_dir(&out).unwrap();
    Dirs { _root: root, data, out, outside }
}

fn python(d: &Dirs, code: &str, limits: Limits) -> Outcome {
    let spec = Spec {
        argv: vec!["/usr/bin/python3".into(), "-c".into(), code.into()],
        read_paths: vec![d.data.clone()],
        output_dir: d.out.clone(),
        env: vec![("PATH".into(), "/usr/bin:/bin".into()), ("CITADEL_SECRET_TOKEN".into(), "s3cr3t-value".into())],
        limits,
        allow_partial_landlock: false,
    };
    citadel_sandbox::run(Path::new(env!("CARGO_BIN_EXE_citadel")), &spec).unwrap()
}

fn quick() -> Limits {
    Limits { wall_seconds: 20, cpu_seconds: 10, ..Limits::default() }
}

#[test]
fn a_well_behaved_command_reads_its_data_writes_its_output_and_sees_only_its_environment() {
    let d = dirs();
    let o = python(
        &d,
        "import os; open('model.onnx','w').write(open(os.environ.get('X','') or '../data/train.csv').read()); print(sorted(os.environ)); print(os.getuid())",
        quick(),
    );
    assert!(o.succeeded(), "{o:?}");
    assert_eq!(std::fs::read_to_string(d.out.join("model.onnx")).unwrap(), "a,b\n1,2\n");
    // Python adds LC_CTYPE itself (PEP 538); nothing else is inherited.
    let env_line = o.stdout_tail.lines().next().unwrap().replace("'LC_CTYPE', ", "");
    assert_eq!(env_line, "['CITADEL_SECRET_TOKEN', 'PATH']");
    let e = o.enforcement.unwrap();
    assert_eq!(e.landlock, "fully enforced");
    assert!(e.no_new_privs);
    assert!(e.namespaces.contains(&"net".to_string()) && e.namespaces.contains(&"pid".to_string()));
    if citadel_sandbox::drops_to_nobody() {
        assert_eq!(e.uid, 65534);
        assert!(o.stdout_tail.trim_end().ends_with("65534"));
    }
}

#[test]
fn network_is_unreachable() {
    let d = dirs();
    let o = python(
        &d,
        "import socket\ns=socket.socket(); s.settimeout(3)\ntry:\n s.connect(('1.1.1.1',443)); print('CONNECTED')\nexcept OSError as e: print('refused', e); raise SystemExit(3)",
        quick(),
    );
    assert!(!o.stdout_tail.contains("CONNECTED"), "{o:?}");
    assert_eq!(o.exit_code, Some(3), "{o:?}");
    // Loopback too: nothing outside the namespace is reachable.
    let o = python(&d, "import socket\ns=socket.socket()\ns.connect(('127.0.0.1',22))", quick());
    assert!(!o.succeeded(), "{o:?}");
}

#[test]
fn reading_outside_the_data_is_denied() {
    let d = dirs();
    let secret = d.outside.join("secret.txt");
    let o = python(&d, &format!("print(open({:?}).read())", secret.display().to_string()), quick());
    assert!(!o.succeeded() && o.stderr_tail.contains("PermissionError"), "{o:?}");
    assert!(!o.stdout_tail.contains("do not read"));
    let o = python(&d, "print(open('/proc/1/environ').read())", quick());
    assert!(!o.succeeded(), "{o:?}");
}

#[test]
fn writing_outside_the_output_is_denied() {
    let d = dirs();
    let target = d.data.join("poisoned.csv");
    let o = python(&d, &format!("open({:?},'w').write('x')", target.display().to_string()), quick());
    assert!(!o.succeeded() && o.stderr_tail.contains("PermissionError"), "{o:?}");
    assert!(!target.exists());
    let o = python(&d, "open('/tmp/citadel-sandbox-escape','w').write('x')", quick());
    assert!(!o.succeeded(), "{o:?}");
    assert!(!Path::new("/tmp/citadel-sandbox-escape").exists());
}

#[test]
fn a_fork_bomb_is_contained_and_cleaned_up() {
    let d = dirs();
    let limits = Limits { wall_seconds: 5, cpu_seconds: 30, processes: 32, ..Limits::default() };
    let marker = format!("bomb-{}", std::process::id());
    let o = python(
        &d,
        &format!(
            "# {marker}\nimport os, time\nn=0\nwhile True:\n try:\n  if os.fork()==0:\n   time.sleep(60)\n  n+=1\n except OSError:\n  print('fork refused after', n, flush=True); time.sleep(60)"
        ),
        limits,
    );
    assert_eq!(o.stopped_by.as_deref(), Some("wall-clock time"), "{o:?}");
    assert!(o.stdout_tail.contains("fork refused after"), "{o:?}");
    let n: usize = o.stdout_tail.split_whitespace().last().unwrap().parse().unwrap();
    assert!(n < 32, "{n} children");
    // PID 1 died, so its namespace died with it: no sleeper survives.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let left = std::process::Command::new("pgrep").args(["-f", &marker]).output().unwrap();
    assert!(String::from_utf8_lossy(&left.stdout).trim().is_empty(), "left behind: {left:?}");
}

#[test]
fn memory_cpu_and_file_size_limits_stop_the_command() {
    let d = dirs();
    let o = python(&d, "x = bytearray(2 << 30); print('ALLOCATED')", Limits { memory_bytes: 512 << 20, ..quick() });
    assert!(!o.succeeded() && !o.stdout_tail.contains("ALLOCATED") && o.stderr_tail.contains("MemoryError"), "{o:?}");
    let o = python(&d, "while True: pass", Limits { cpu_seconds: 2, wall_seconds: 30, ..quick() });
    assert_eq!(o.stopped_by.as_deref(), Some("CPU time"), "{o:?}");
    let o =
        python(&d, "f=open('big','wb')\nwhile True: f.write(b'x'*65536)", Limits { file_bytes: 1 << 20, ..quick() });
    // Python ignores SIGXFSZ, so the write fails with EFBIG instead of the
    // process being killed; either way nothing past the limit is written.
    assert!(!o.succeeded() && o.stderr_tail.contains("File too large"), "{o:?}");
    assert!(std::fs::metadata(d.out.join("big")).unwrap().len() <= 1 << 20);
}

//! The training sandbox: runs an untrusted command (a user's `train.py`)
//! so that it can read only what it is given and write only its output.
//!
//! Three processes, so no `unsafe` is needed and every restriction is set
//! by the process it restricts:
//!
//! 1. the caller ([`run`]) starts `citadel __sandbox` with an empty
//!    environment and writes the [`Spec`] (which holds the declared secrets)
//!    to its stdin — never to its command line;
//! 2. that *supervisor* (single-threaded, so it may `unshare`) enters new
//!    PID, network, IPC and UTS namespaces (plus a user namespace when not
//!    root), starts `citadel __sandbox-init` as PID 1 of the new PID
//!    namespace, enforces the wall-clock limit, and reports the outcome;
//! 3. the *init* sets rlimits (CPU time, address space, file size,
//!    processes, open files, no core dumps), drops to `nobody` when it
//!    runs as root, sets `no_new_privs`, restricts itself with Landlock
//!    (read/execute beneath the allowed paths, write beneath the output
//!    directory only, no TCP bind/connect, no signals or abstract sockets
//!    outside the sandbox) and `exec`s the command, which stays PID 1: when
//!    it exits or is killed, the kernel kills everything it started.
//!
//! The network namespace has only a loopback device, down: no route exists
//! to anywhere. Landlock refuses TCP on top of that.

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub const SUPERVISOR_ARG: &str = "__sandbox";
pub const INIT_ARG: &str = "__sandbox-init";
/// The unprivileged user a root caller's command runs as.
pub const NOBODY: u32 = 65534;
/// Bytes of stdout/stderr kept for the report (the end of each).
const TAIL: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("sandbox: {0}")]
    Setup(String),
    #[error("sandbox: cannot {what}: {detail} — hint: {hint}")]
    Unavailable { what: String, detail: String, hint: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub cpu_seconds: u64,
    pub wall_seconds: u64,
    pub memory_bytes: u64,
    pub file_bytes: u64,
    pub processes: u64,
    pub open_files: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cpu_seconds: 600,
            wall_seconds: 900,
            memory_bytes: 4 << 30,
            file_bytes: 1 << 30,
            processes: 64,
            open_files: 256,
        }
    }
}

/// What to run and what it may touch. Paths must be absolute.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// The program (absolute) and its arguments.
    pub argv: Vec<String>,
    /// Readable and executable, recursively.
    pub read_paths: Vec<PathBuf>,
    /// The one writable directory; also the working directory.
    pub output_dir: PathBuf,
    /// The complete environment of the command (secrets included).
    pub env: Vec<(String, String)>,
    pub limits: Limits,
    /// Accept a kernel that enforces only part of the Landlock rules.
    pub allow_partial_landlock: bool,
}

impl std::fmt::Debug for Spec {
    // The environment holds secrets: only names are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spec")
            .field("argv", &self.argv)
            .field("read_paths", &self.read_paths)
            .field("output_dir", &self.output_dir)
            .field("env", &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("limits", &self.limits)
            .finish()
    }
}

/// System directories every command may read and execute (interpreters,
/// shared libraries, certificates, locale data).
pub const SYSTEM_READ_PATHS: &[&str] = &["/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enforcement {
    pub namespaces: Vec<String>,
    pub landlock: String,
    pub no_new_privs: bool,
    pub uid: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Why the sandbox stopped it, when it did (a limit's name).
    pub stopped_by: Option<String>,
    pub wall_seconds: f64,
    pub cpu_seconds: f64,
    pub max_rss_bytes: u64,
    pub stdout_tail: String,
    pub stderr_tail: String,
    pub enforcement: Option<Enforcement>,
    /// Set when the sandbox itself could not be set up.
    pub setup_error: Option<String>,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && self.setup_error.is_none() && self.stopped_by.is_none()
    }

    /// One line for people: what happened and why.
    pub fn summary(&self) -> String {
        if let Some(e) = &self.setup_error {
            return format!("the sandbox could not start: {e}");
        }
        let how = match (self.exit_code, self.signal) {
            (Some(c), _) => format!("exited with code {c}"),
            (None, Some(s)) => format!("was killed by signal {s} ({})", signal_name(s)),
            _ => "ended".into(),
        };
        match &self.stopped_by {
            Some(limit) => format!("{how}: stopped by the sandbox's {limit} limit"),
            None => how,
        }
    }
}

fn signal_name(s: i32) -> &'static str {
    match s {
        9 => "SIGKILL",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        11 => "SIGSEGV",
        6 => "SIGABRT",
        15 => "SIGTERM",
        _ => "signal",
    }
}

/// Whether commands will run as [`NOBODY`] (Citadel runs as root).
pub fn drops_to_nobody() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Makes `dir` the command's own: when the command will run as [`NOBODY`],
/// the output directory is handed to that user.
pub fn prepare_output_dir(dir: &Path) -> Result<(), SandboxError> {
    if drops_to_nobody() {
        let id = (nix::unistd::Uid::from_raw(NOBODY), nix::unistd::Gid::from_raw(NOBODY));
        nix::unistd::chown(dir, Some(id.0), Some(id.1))
            .map_err(|e| SandboxError::Setup(format!("handing {} to uid {NOBODY}: {e}", dir.display())))?;
    }
    Ok(())
}

/// Runs `spec` through `helper` (the citadel binary) and waits for it.
/// Output streams are kept (their ends) for the report.
pub fn run(helper: &Path, spec: &Spec) -> Result<Outcome, SandboxError> {
    if !spec.argv.first().is_some_and(|p| p.starts_with('/')) {
        return Err(SandboxError::Setup("the command must be an absolute path (resolve it before sandboxing)".into()));
    }
    let status_dir = tempfile_dir()?;
    let status_path = status_dir.join("status.json");
    let request = serde_json::json!({"spec": spec, "status": status_path});
    let mut child = Command::new(helper)
        .arg(SUPERVISOR_ARG)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| SandboxError::Setup(format!("starting {}: {e}", helper.display())))?;
    let mut stdin = child.stdin.take().ok_or_else(|| SandboxError::Setup("no stdin".into()))?;
    let body = serde_json::to_vec(&request).map_err(|e| SandboxError::Setup(e.to_string()))?;
    let writer = std::thread::spawn(move || stdin.write_all(&body));
    let out = child.stdout.take().map(|s| std::thread::spawn(move || tail(s)));
    let err = child.stderr.take().map(|s| std::thread::spawn(move || tail(s)));
    let _ = child.wait();
    let _ = writer.join();
    let stdout_tail = out.and_then(|h| h.join().ok()).unwrap_or_default();
    let stderr_tail = err.and_then(|h| h.join().ok()).unwrap_or_default();
    let status = std::fs::read(&status_path);
    let _ = std::fs::remove_dir_all(&status_dir);
    let mut outcome: Outcome = match status {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| SandboxError::Setup(format!("sandbox status: {e}")))?,
        Err(_) => failed(format!("the supervisor ended without a report: {}", stderr_tail.trim())),
    };
    outcome.stdout_tail = stdout_tail;
    outcome.stderr_tail = stderr_tail;
    Ok(outcome)
}

fn tempfile_dir() -> Result<PathBuf, SandboxError> {
    use std::os::unix::fs::DirBuilderExt;
    let mut r = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut r))
        .map_err(|e| SandboxError::Setup(format!("/dev/urandom: {e}")))?;
    let dir = std::env::temp_dir()
        .join(format!("citadel-sandbox-{}", r.iter().map(|b| format!("{b:02x}")).collect::<String>()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| SandboxError::Setup(format!("creating {}: {e}", dir.display())))?;
    Ok(dir)
}

/// Reads a stream to its end, keeping the last [`TAIL`] bytes.
fn tail(mut r: impl Read) -> String {
    let mut keep: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 {
            break;
        }
        keep.extend_from_slice(&buf[..n]);
        if keep.len() > 2 * TAIL {
            keep.drain(..keep.len() - TAIL);
        }
    }
    if keep.len() > TAIL {
        keep.drain(..keep.len() - TAIL);
    }
    String::from_utf8_lossy(&keep).into_owned()
}

#[derive(Deserialize)]
struct Request {
    spec: Spec,
    status: PathBuf,
}

fn read_request() -> Result<Request, String> {
    let mut body = Vec::new();
    std::io::stdin().take(1 << 20).read_to_end(&mut body).map_err(|e| e.to_string())?;
    serde_json::from_slice(&body).map_err(|e| format!("bad sandbox request: {e}"))
}

/// `citadel __sandbox`: the supervisor. Never returns.
pub fn supervisor_main() -> ! {
    let request = match read_request() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("citadel sandbox: {e}");
            std::process::exit(70);
        }
    };
    let outcome = supervise(&request.spec);
    let bytes = serde_json::to_vec(&outcome).unwrap_or_default();
    let ok = std::fs::write(&request.status, bytes).is_ok();
    std::process::exit(if ok { 0 } else { 71 });
}

fn failed(e: String) -> Outcome {
    Outcome {
        exit_code: None,
        signal: None,
        stopped_by: None,
        wall_seconds: 0.0,
        cpu_seconds: 0.0,
        max_rss_bytes: 0,
        stdout_tail: String::new(),
        stderr_tail: String::new(),
        enforcement: None,
        setup_error: Some(e),
    }
}

fn supervise(spec: &Spec) -> Outcome {
    use nix::sched::{CloneFlags, unshare};
    let root = nix::unistd::geteuid().is_root();
    let mut flags =
        CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS;
    let mut namespaces = vec!["pid", "net", "ipc", "uts"];
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    if !root {
        flags |= CloneFlags::CLONE_NEWUSER;
        namespaces.push("user");
    }
    if let Err(e) = unshare(flags) {
        return failed(format!(
            "unshare({}) failed: {e} — hint: run as root, or enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces > 0)",
            namespaces.join(", ")
        ));
    }
    if !root {
        // Identity maps: the command keeps the caller's (unprivileged) ids.
        let maps = [
            ("/proc/self/setgroups", "deny".to_string()),
            ("/proc/self/uid_map", format!("{uid} {uid} 1")),
            ("/proc/self/gid_map", format!("{gid} {gid} 1")),
        ];
        for (path, text) in maps {
            if let Err(e) = std::fs::write(path, text) {
                return failed(format!("writing {path}: {e}"));
            }
        }
    }
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => return failed(format!("finding the citadel binary: {e}")),
    };
    let started = Instant::now();
    let mut init = match Command::new(exe).arg(INIT_ARG).env_clear().stdin(Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) => return failed(format!("starting the sandbox init: {e}")),
    };
    let report_path = spec.output_dir.join(".citadel-sandbox-enforcement.json");
    let _ = std::fs::remove_file(&report_path);
    if let Some(mut stdin) = init.stdin.take() {
        let _ = stdin.write_all(&serde_json::to_vec(spec).unwrap_or_default());
    }
    let wall = Duration::from_secs(spec.limits.wall_seconds.max(1));
    let mut stopped_by = None;
    let status = loop {
        match init.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if started.elapsed() >= wall => {
                stopped_by = Some("wall-clock time".to_string());
                // PID 1 of the namespace: killing it kills everything in it.
                let _ = init.kill();
                break init.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break None,
        }
    };
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).ok();
    let cpu = usage
        .map(|u| {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or(0.0);
    let max_rss = usage.map(|u| u.max_rss().max(0) as u64 * 1024).unwrap_or(0);
    let (exit_code, signal) = match status {
        Some(s) => (s.code(), s.signal()),
        None => (None, None),
    };
    if stopped_by.is_none() {
        stopped_by = match signal {
            Some(24) => Some("CPU time".into()),
            Some(9) if cpu + 0.5 >= spec.limits.cpu_seconds as f64 => Some("CPU time".into()),
            Some(25) => Some("file size".into()),
            _ => None,
        };
    }
    // The init writes what it enforced before exec; read it back (it is in
    // the output directory, which the command could overwrite, so it is
    // only trusted for the fields the supervisor cannot know).
    let enforcement = std::fs::read(&report_path).ok().and_then(|b| serde_json::from_slice::<Enforcement>(&b).ok());
    let _ = std::fs::remove_file(&report_path);
    let setup_error = if exit_code == Some(INIT_FAILED) {
        Some("the sandbox init could not apply its restrictions (its message is in stderr)".into())
    } else {
        None
    };
    Outcome {
        exit_code,
        signal,
        stopped_by,
        wall_seconds: started.elapsed().as_secs_f64(),
        cpu_seconds: cpu,
        max_rss_bytes: max_rss,
        stdout_tail: String::new(),
        stderr_tail: String::new(),
        enforcement: enforcement.map(|mut e| {
            e.namespaces = namespaces.iter().map(|s| s.to_string()).collect();
            e
        }),
        setup_error,
    }
}

/// The init's exit code when a restriction could not be applied.
pub const INIT_FAILED: i32 = 125;

/// `citadel __sandbox-init`: restricts itself and becomes the command.
pub fn init_main() -> ! {
    let spec: Spec = {
        let mut body = Vec::new();
        let parsed = std::io::stdin()
            .take(1 << 20)
            .read_to_end(&mut body)
            .map_err(|e| e.to_string())
            .and_then(|_| serde_json::from_slice(&body).map_err(|e| e.to_string()));
        match parsed {
            Ok(s) => s,
            Err(e) => {
                eprintln!("citadel sandbox init: {e}");
                std::process::exit(INIT_FAILED);
            }
        }
    };
    let e = restrict_and_exec(&spec);
    eprintln!("citadel sandbox init: {e}");
    std::process::exit(INIT_FAILED);
}

fn restrict_and_exec(spec: &Spec) -> String {
    use landlock::{
        ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
        RulesetCreatedAttr, RulesetStatus, Scope,
    };
    use nix::sys::resource::{Resource, setrlimit};
    use std::os::unix::process::CommandExt;

    let l = &spec.limits;
    let limits = [
        (Resource::RLIMIT_CPU, l.cpu_seconds, l.cpu_seconds + 1),
        (Resource::RLIMIT_AS, l.memory_bytes, l.memory_bytes),
        (Resource::RLIMIT_FSIZE, l.file_bytes, l.file_bytes),
        (Resource::RLIMIT_NPROC, l.processes, l.processes),
        (Resource::RLIMIT_NOFILE, l.open_files, l.open_files),
        (Resource::RLIMIT_CORE, 0, 0),
    ];
    for (r, soft, hard) in limits {
        if let Err(e) = setrlimit(r, soft, hard) {
            return format!("setrlimit {r:?}: {e}");
        }
    }
    // /dev/stdin is the supervisor's pipe, already drained.
    let Ok(devnull) = std::fs::File::open("/dev/null") else { return "opening /dev/null".into() };
    let mut uid = nix::unistd::getuid().as_raw();
    if drops_to_nobody() {
        // Least privilege, and RLIMIT_NPROC binds only non-root users.
        let nobody_u = nix::unistd::Uid::from_raw(NOBODY);
        let nobody_g = nix::unistd::Gid::from_raw(NOBODY);
        if let Err(e) = nix::unistd::setgroups(&[])
            .and_then(|_| nix::unistd::setresgid(nobody_g, nobody_g, nobody_g))
            .and_then(|_| nix::unistd::setresuid(nobody_u, nobody_u, nobody_u))
        {
            return format!("dropping to uid {NOBODY}: {e}");
        }
        uid = NOBODY;
    }
    if let Err(e) = nix::sys::prctl::set_no_new_privs() {
        return format!("no_new_privs: {e}");
    }
    let abi = ABI::V6;
    let level = if spec.allow_partial_landlock { CompatLevel::BestEffort } else { CompatLevel::HardRequirement };
    let read = AccessFs::from_read(abi);
    let all = AccessFs::from_all(abi);
    let mut read_paths: Vec<PathBuf> = SYSTEM_READ_PATHS.iter().map(PathBuf::from).collect();
    read_paths.extend(spec.read_paths.iter().cloned());
    let ruleset = (|| -> Result<_, String> {
        let fd = |p: &Path| PathFd::new(p).map_err(|e| format!("{}: {e}", p.display()));
        let rs = |e: landlock::RulesetError| e.to_string();
        let mut created = Ruleset::default()
            .set_compatibility(level)
            .handle_access(all)
            .and_then(|r| r.handle_access(AccessNet::from_all(abi)))
            .and_then(|r| r.scope(Scope::from_all(abi)))
            .and_then(|r| r.create())
            .map_err(rs)?;
        for p in read_paths.iter().filter(|p| p.exists()) {
            created = created.add_rule(PathBeneath::new(fd(p)?, read)).map_err(rs)?;
        }
        // Character devices a program reads or writes as a matter of course.
        for dev in ["/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"] {
            if Path::new(dev).exists() {
                created = created
                    .add_rule(PathBeneath::new(fd(Path::new(dev))?, AccessFs::ReadFile | AccessFs::WriteFile))
                    .map_err(rs)?;
            }
        }
        created = created.add_rule(PathBeneath::new(fd(&spec.output_dir)?, all)).map_err(rs)?;
        created.restrict_self().map_err(rs)
    })();
    let status = match ruleset {
        Ok(s) => s,
        Err(e) => {
            return format!(
                "Landlock: {e} — hint: a kernel with Landlock ABI 6 or later (Linux 6.12+) enforces every rule; set train.allow_partial_landlock = true in the pipeline to accept less"
            );
        }
    };
    let landlock = match status.ruleset {
        RulesetStatus::FullyEnforced => "fully enforced".to_string(),
        RulesetStatus::PartiallyEnforced => "partially enforced (the kernel lacks some Landlock features)".to_string(),
        RulesetStatus::NotEnforced => "not enforced (the kernel has no Landlock)".to_string(),
    };
    if status.ruleset == RulesetStatus::NotEnforced && !spec.allow_partial_landlock {
        return "Landlock is not enforced by this kernel".into();
    }
    let enforcement = Enforcement { namespaces: Vec::new(), landlock, no_new_privs: true, uid };
    let _ = std::fs::write(
        spec.output_dir.join(".citadel-sandbox-enforcement.json"),
        serde_json::to_vec(&enforcement).unwrap_or_default(),
    );
    let mut cmd = Command::new(&spec.argv[0]);
    cmd.args(&spec.argv[1..]).env_clear().envs(spec.env.iter().map(|(k, v)| (k, v))).current_dir(&spec.output_dir);
    cmd.stdin(devnull);
    let e = cmd.exec();
    format!("exec {}: {e}", spec.argv[0])
}

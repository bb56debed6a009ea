//! `citadel-bench store`: the artifact store next to the machine's limits and
//! a peer tool, in one run, on the same data.
//!
//! Every tool is timed the same way, as a whole command a user would run
//! (`citadel artifact put`, `restic backup`, `openssl dgst`), so process start,
//! key unlock and the final sync are all inside the measurement. The data is
//! written once and then read from the page cache by every tool alike.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;

const BENCH_PASSPHRASE: &str = "citadel-bench-throwaway-passphrase";

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub dir: PathBuf,
    pub size_mib: u64,
    pub files: u64,
    pub file_kib: u64,
    pub keep: bool,
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub cores: usize,
    pub limits: Limits,
    pub workloads: Vec<Workload>,
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Limits {
    /// Writing the benchmark file and fsyncing it.
    pub disk_write_fsync_mb_s: f64,
    /// `openssl dgst -sha256` of the large file.
    pub openssl_sha256_mb_s: Option<f64>,
    /// `openssl speed -evp aes-256-gcm`, one core, 16 KiB blocks.
    pub openssl_aes_256_gcm_1core_mb_s: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Workload {
    pub name: String,
    pub bytes: u64,
    pub citadel_put_mb_s: f64,
    pub citadel_get_mb_s: f64,
    pub restic_backup_mb_s: Option<f64>,
    pub restic_restore_mb_s: Option<f64>,
    /// citadel put / restic backup.
    pub put_vs_restic: Option<f64>,
    /// citadel get / citadel put.
    pub get_vs_put: f64,
    /// How the data was changed for the re-put.
    pub change: String,
    pub reput_new_bytes: u64,
    /// New bytes stored by the re-put, as a fraction of the data.
    pub reput_new_fraction: f64,
}

#[derive(Debug, Serialize)]
pub struct Target {
    pub what: String,
    pub measured: String,
    pub met: Option<bool>,
}

pub(crate) struct Cleanup(pub(crate) PathBuf, pub(crate) bool);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.1 {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Cleanup {
    /// A fresh `DIR/citadel-bench-WHAT-<random>` directory, removed when the
    /// guard drops unless `keep`; a kept one is named in `notes`.
    pub(crate) fn fresh(dir: &Path, what: &str, keep: bool, notes: &mut Vec<String>) -> Result<Cleanup> {
        let root = dir.join(format!("citadel-bench-{what}-{}", citadel_types::random_id("")));
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        if keep {
            notes.push(format!("kept {}", root.display()));
        }
        Ok(Cleanup(root, keep))
    }
}

/// A fast, reproducible stream of incompressible bytes (xorshift64*). The
/// benchmark needs data zstd cannot shrink, not secrecy.
pub(crate) struct Noise(pub(crate) u64);

impl Noise {
    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

pub(crate) fn mb_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs.max(1e-9)
}

pub(crate) fn say(quiet: bool, msg: &str) {
    if !quiet {
        eprintln!("bench: {msg}");
    }
}

/// Runs a command to completion and returns its wall time in seconds.
pub(crate) fn timed(cmd: &mut Command, what: &str) -> Result<(f64, String)> {
    let start = Instant::now();
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("running {what}"))?;
    let secs = start.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok((secs, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// `cmd` (program, arguments, environment) wrapped in `/usr/bin/time -f %M`
/// when that exists, and the file its peak RSS goes to; read it back with
/// [`peak_rss_mib`] after the run.
pub(crate) fn with_peak_rss(cmd: &Command) -> Result<(Command, Option<tempfile::NamedTempFile>)> {
    let time = Path::new("/usr/bin/time");
    let mut wrapped = if time.exists() { Command::new(time) } else { Command::new(cmd.get_program()) };
    let rss_file = if time.exists() {
        let f = tempfile::NamedTempFile::new()?;
        wrapped.arg("-f").arg("%M").arg("-o").arg(f.path()).arg(cmd.get_program());
        Some(f)
    } else {
        None
    };
    wrapped.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    Ok((wrapped, rss_file))
}

/// The peak RSS `/usr/bin/time -f %M` wrote, in MiB.
pub(crate) fn peak_rss_mib(rss_file: &Option<tempfile::NamedTempFile>) -> Option<f64> {
    let text = std::fs::read_to_string(rss_file.as_ref()?.path()).ok()?;
    let kib: f64 = text.trim().lines().last()?.parse().ok()?;
    Some(kib / 1024.0)
}

/// A peer tool: from the test services' venv (scripts/services.sh installs
/// model_signing there, and picklescan/modelscan may be added beside it),
/// else from PATH. None when neither answers `--help`.
pub(crate) fn find_tool(tool: &str) -> Option<PathBuf> {
    [PathBuf::from(format!("/tmp/citadel-services/venv/bin/{tool}")), PathBuf::from(tool)]
        .into_iter()
        .find(|p| Command::new(p).arg("--help").output().is_ok_and(|o| o.status.success()))
}

pub(crate) fn have(tool: &str) -> bool {
    Command::new(tool).arg("version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

pub fn run(opts: &BenchOptions, quiet: bool) -> Result<BenchReport> {
    let root = opts.dir.join(format!("citadel-bench-{}", citadel_types::random_id("")));
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let _cleanup = Cleanup(root.clone(), opts.keep);
    let exe = crate::citadel_exe()?;
    let mut notes = Vec::new();
    let mut noise = Noise(0x9E37_79B9_7F4A_7C15);

    // ------------------------------------------------------------ data
    let big = root.join("data/random.bin");
    std::fs::create_dir_all(big.parent().unwrap_or(&root))?;
    let big_bytes = opts.size_mib << 20;
    say(quiet, &format!("writing {} MiB of random bytes", opts.size_mib));
    let start = Instant::now();
    {
        let mut f = std::fs::File::create(&big)?;
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..opts.size_mib {
            noise.fill(&mut buf);
            f.write_all(&buf)?;
        }
        f.sync_all()?;
    }
    let disk = mb_s(big_bytes, start.elapsed().as_secs_f64());

    let small_dir = root.join("data/small");
    let small_bytes = opts.files * (opts.file_kib << 10);
    say(quiet, &format!("writing {} files of {} KiB", opts.files, opts.file_kib));
    write_small_files(&small_dir, opts, &mut noise)?;

    // ------------------------------------------------------------ limits
    say(quiet, "measuring openssl sha256 and aes-256-gcm");
    let sha = if have("openssl") {
        Some(mb_s(big_bytes, timed(Command::new("openssl").args(["dgst", "-sha256"]).arg(&big), "openssl dgst")?.0))
    } else {
        notes.push("openssl not found: no SHA-256 / AES limits".into());
        None
    };
    let aes = if have("openssl") { openssl_aes_gcm().ok() } else { None };

    // ------------------------------------------------------------ citadel
    let ws = root.join("ws");
    let citadel = |args: &[&str]| -> Command {
        let mut c = Command::new(&exe);
        c.env("CITADEL_PASSPHRASE", BENCH_PASSPHRASE).env_remove("CITADEL_TOKEN").arg("-w").arg(&ws).args(args);
        c
    };
    timed(citadel(&["init", "--kdf-memory-mib", "19"]).arg(&ws), "citadel init")?;
    let restic_repo = root.join("restic");
    let restic = have("restic");
    if restic {
        let mut c = restic_cmd(&restic_repo);
        c.arg("init");
        timed(&mut c, "restic init")?;
    } else {
        notes.push("restic not found (apt-get install restic): no peer comparison".into());
    }

    let mut workloads = Vec::new();
    for (name, path, bytes) in [
        (format!("{} MiB random file", opts.size_mib), big.clone(), big_bytes),
        (format!("{} files x {} KiB", opts.files, opts.file_kib), small_dir.clone(), small_bytes),
    ] {
        say(quiet, &format!("{name}: citadel put"));
        let (put_s, out) = timed(citadel(&["artifact", "put", "--json"]).arg(&path), "citadel artifact put")?;
        let put: serde_json::Value = serde_json::from_str(&out)?;
        let id = put["id"].as_str().ok_or_else(|| anyhow!("artifact put printed no id"))?.to_string();
        say(quiet, &format!("{name}: citadel get"));
        let restored = root.join(format!("restore-{}", workloads.len()));
        let (get_s, _) = timed(citadel(&["artifact", "get", &id, "-o"]).arg(&restored), "citadel artifact get")?;
        let _ = std::fs::remove_dir_all(&restored).or_else(|_| std::fs::remove_file(&restored));

        let (mut rb, mut rr) = (None, None);
        if restic {
            say(quiet, &format!("{name}: restic backup and restore"));
            let mut c = restic_cmd(&restic_repo);
            c.args(["backup", "-q"]).arg(&path);
            rb = Some(mb_s(bytes, timed(&mut c, "restic backup")?.0));
            let target = root.join("restic-restore");
            let mut c = restic_cmd(&restic_repo);
            c.args(["restore", "latest", "-q", "--target"]).arg(&target);
            rr = Some(mb_s(bytes, timed(&mut c, "restic restore")?.0));
            let _ = std::fs::remove_dir_all(&target);
        }

        // Change 1% and put again.
        let change = if path.is_dir() {
            rewrite_one_percent_of_files(&path, opts, &mut noise)?
        } else {
            change_one_percent_in_place(&path, bytes, &mut noise)?
        };
        say(quiet, &format!("{name}: citadel put after {change}"));
        let (_, out) = timed(citadel(&["artifact", "put", "--json"]).arg(&path), "citadel artifact put (1% changed)")?;
        let reput: serde_json::Value = serde_json::from_str(&out)?;
        let new_bytes = reput["new_bytes"].as_u64().unwrap_or(0);

        let put_mb = mb_s(bytes, put_s);
        let get_mb = mb_s(bytes, get_s);
        workloads.push(Workload {
            name,
            bytes,
            citadel_put_mb_s: put_mb,
            citadel_get_mb_s: get_mb,
            restic_backup_mb_s: rb,
            restic_restore_mb_s: rr,
            put_vs_restic: rb.map(|r| put_mb / r),
            get_vs_put: get_mb / put_mb,
            change,
            reput_new_bytes: new_bytes,
            reput_new_fraction: new_bytes as f64 / bytes as f64,
        });
    }

    let mut targets = Vec::new();
    for w in &workloads {
        targets.push(Target {
            what: format!("{}: put >= 4x restic backup", w.name),
            measured: w.put_vs_restic.map_or("restic not installed".into(), |r| format!("{r:.2}x")),
            met: w.put_vs_restic.map(|r| r >= 4.0),
        });
        targets.push(Target {
            what: format!("{}: re-put of 1%-changed data stores <= 3% new bytes", w.name),
            measured: format!("{:.2}%", w.reput_new_fraction * 100.0),
            met: Some(w.reput_new_fraction <= 0.03),
        });
        targets.push(Target {
            what: format!("{}: get at least as fast as put", w.name),
            measured: format!("{:.2}x", w.get_vs_put),
            met: Some(w.get_vs_put >= 1.0),
        });
    }
    notes.push("every tool reads its input from the page cache (the data was just written)".into());
    Ok(BenchReport {
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        limits: Limits { disk_write_fsync_mb_s: disk, openssl_sha256_mb_s: sha, openssl_aes_256_gcm_1core_mb_s: aes },
        workloads,
        targets,
        notes,
    })
}

fn restic_cmd(repo: &Path) -> Command {
    let mut c = Command::new("restic");
    c.env("RESTIC_PASSWORD", BENCH_PASSPHRASE)
        .env("RESTIC_CACHE_DIR", repo.with_extension("cache"))
        .arg("-r")
        .arg(repo);
    c
}

fn openssl_aes_gcm() -> Result<f64> {
    let (_, out) = timed(
        Command::new("openssl").args(["speed", "-evp", "aes-256-gcm", "-bytes", "16384", "-seconds", "2"]),
        "openssl speed",
    )?;
    // The result line: "AES-256-GCM   2800000.00k" (thousands of bytes per second).
    let line = out
        .lines()
        .rev()
        .find(|l| l.to_ascii_lowercase().starts_with("aes-256-gcm"))
        .ok_or_else(|| anyhow!("no aes-256-gcm line in openssl speed output"))?;
    let k = line
        .split_whitespace()
        .last()
        .and_then(|v| v.strip_suffix('k'))
        .ok_or_else(|| anyhow!("unexpected openssl speed output"))?;
    Ok(k.parse::<f64>()? * 1000.0 / 1e6)
}

fn small_path(dir: &Path, i: u64) -> PathBuf {
    dir.join(format!("{:03}/file-{i:05}.bin", i / 100))
}

fn write_small_files(dir: &Path, opts: &BenchOptions, noise: &mut Noise) -> Result<()> {
    let mut buf = vec![0u8; (opts.file_kib << 10) as usize];
    for i in 0..opts.files {
        let p = small_path(dir, i);
        if i % 100 == 0 {
            std::fs::create_dir_all(p.parent().unwrap_or(dir))?;
        }
        noise.fill(&mut buf);
        std::fs::write(&p, &buf)?;
    }
    Ok(())
}

/// Rewrites 1% of the files (spread evenly) with new content.
fn rewrite_one_percent_of_files(dir: &Path, opts: &BenchOptions, noise: &mut Noise) -> Result<String> {
    let count = (opts.files / 100).max(1);
    let step = opts.files / count;
    let mut buf = vec![0u8; (opts.file_kib << 10) as usize];
    for k in 0..count {
        noise.fill(&mut buf);
        std::fs::write(small_path(dir, k * step), &buf)?;
    }
    Ok(format!("rewriting {count} of {} files", opts.files))
}

/// Overwrites 1% of the file, as one contiguous region in the middle.
fn change_one_percent_in_place(path: &Path, size: u64, noise: &mut Noise) -> Result<String> {
    use std::os::unix::fs::FileExt;
    let len = (size / 100) as usize;
    let mut buf = vec![0u8; len];
    noise.fill(&mut buf);
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all_at(&buf, size / 2)?;
    f.sync_all()?;
    Ok(format!("overwriting {} KiB in the middle", len >> 10))
}

pub fn render(r: &BenchReport) -> String {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0} MB/s"));
    let mut s = format!("citadel-bench store ({} cores)\n\nmachine limits\n", r.cores);
    s += &format!("  disk write + fsync              {:.0} MB/s\n", r.limits.disk_write_fsync_mb_s);
    s += &format!("  openssl dgst -sha256            {}\n", opt(r.limits.openssl_sha256_mb_s));
    s += &format!("  openssl aes-256-gcm, one core   {}\n", opt(r.limits.openssl_aes_256_gcm_1core_mb_s));
    for w in &r.workloads {
        s += &format!("\n{} ({:.0} MB)\n", w.name, w.bytes as f64 / 1e6);
        s += &format!(
            "  citadel put     {:>8.0} MB/s    restic backup   {:>8}",
            w.citadel_put_mb_s,
            opt(w.restic_backup_mb_s)
        );
        s += &w.put_vs_restic.map_or(String::new(), |x| format!("    ratio {x:.2}x"));
        s += &format!(
            "\n  citadel get     {:>8.0} MB/s    restic restore  {:>8}",
            w.citadel_get_mb_s,
            opt(w.restic_restore_mb_s)
        );
        if let Some(rr) = w.restic_restore_mb_s {
            s += &format!("    ratio {:.2}x", w.citadel_get_mb_s / rr);
        }
        s += &format!("\n  put / disk write+fsync limit {:.2}", w.citadel_put_mb_s / r.limits.disk_write_fsync_mb_s);
        if let Some(sha) = r.limits.openssl_sha256_mb_s {
            s += &format!("    put / sha256 limit {:.2}", w.citadel_put_mb_s / sha);
        }
        s += &format!(
            "\n  re-put after {}: {} new bytes ({:.2}% of the data)\n",
            w.change,
            w.reput_new_bytes,
            w.reput_new_fraction * 100.0
        );
    }
    s += "\ntargets\n";
    for t in &r.targets {
        let mark = match t.met {
            Some(true) => "met    ",
            Some(false) => "MISSED ",
            None => "n/a    ",
        };
        s += &format!("  {mark} {} ({})\n", t.what, t.measured);
    }
    for n in &r.notes {
        s += &format!("note: {n}\n");
    }
    s
}

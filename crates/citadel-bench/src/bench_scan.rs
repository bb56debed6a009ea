//! `citadel-bench scan`: scanner throughput next to picklescan and modelscan
//! on the same files, in one run.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::bench::{Cleanup, Noise, find_tool, peak_rss_mib, say, with_peak_rss};

#[derive(Debug, Serialize)]
pub struct ScanBench {
    pub files: u64,
    pub bytes: u64,
    pub malicious_files: u64,
    pub tools: Vec<ScanTool>,
    /// The ~50 MB pickle of two million tuples, benign and with a tail payload.
    pub large_pickle: Vec<LargePickleRun>,
    /// In-process throughput over the benign corpus (every kind of ordinary model file).
    pub benign_corpus: Option<CorpusRun>,
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct LargePickleRun {
    pub tool: String,
    pub file: String,
    pub bytes: u64,
    pub seconds: f64,
    pub peak_rss_mib: Option<f64>,
    pub exit_code: Option<i32>,
    /// citadel's time divided into this tool's (>1: citadel is faster).
    pub citadel_speedup: f64,
}

#[derive(Debug, Serialize)]
pub struct CorpusRun {
    pub files: usize,
    pub bytes: u64,
    pub passes: u32,
    pub seconds: f64,
    pub gb_s: f64,
    /// Files refused (must be 0: the corpus is benign).
    pub false_alarms: usize,
}

const MAKE_LARGE_PICKLE: &str = include_str!("../../citadel-scan/tests/fixtures/cases/scan/make_large_pickle.py");

/// Runs `cmd` under `/usr/bin/time -f %M` when available, whatever its exit
/// code: (seconds, exit code, peak RSS MiB).
fn measured(cmd: &mut Command, what: &str) -> Result<(f64, Option<i32>, Option<f64>)> {
    let (mut run, rss_file) = with_peak_rss(cmd)?;
    let start = Instant::now();
    let status = run
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .with_context(|| format!("running {what}"))?;
    Ok((start.elapsed().as_secs_f64(), status.code(), peak_rss_mib(&rss_file)))
}

/// The large-pickle comparison: python3 writes the two pickles with
/// CPython's own pickler (`make_large_pickle.py`), then each tool scans each.
fn large_pickle(root: &Path, exe: &Path, quiet: bool, notes: &mut Vec<String>) -> Result<Vec<LargePickleRun>> {
    let dir = root.join("large");
    std::fs::create_dir_all(&dir)?;
    let script = root.join("make_large_pickle.py");
    std::fs::write(&script, MAKE_LARGE_PICKLE)?;
    say(quiet, "writing the large pickles (python3 make_large_pickle.py)");
    let ok = Command::new("python3").arg(&script).arg(&dir).status().is_ok_and(|s| s.success());
    if !ok {
        notes.push("python3 could not write the large pickles: large-pickle rows skipped".into());
        return Ok(Vec::new());
    }
    let mut runs = Vec::new();
    for file in ["large-benign.pkl", "large-tail-payload.pkl"] {
        let path = dir.join(file);
        let bytes = std::fs::metadata(&path)?.len();
        let mut mine = None;
        let mut tools: Vec<(String, Command)> = Vec::new();
        let mut c = Command::new(exe);
        c.arg("scan").arg(&path).arg("--json");
        tools.push(("citadel scan".into(), c));
        for (tool, flag) in [("picklescan", "--path"), ("modelscan", "-p")] {
            match find_tool(tool) {
                Some(p) => {
                    let mut c = Command::new(p);
                    c.arg(flag).arg(&path);
                    tools.push((tool.into(), c));
                }
                None => notes.push(format!("{tool} not found (pip install {tool}): not compared on the large pickle")),
            }
        }
        for (name, mut cmd) in tools {
            say(quiet, &format!("{name} on {file}"));
            let (seconds, exit_code, peak_rss_mib) = measured(&mut cmd, &name)?;
            let base = *mine.get_or_insert(seconds);
            runs.push(LargePickleRun {
                tool: name,
                file: file.into(),
                bytes,
                seconds,
                peak_rss_mib,
                exit_code,
                citadel_speedup: seconds / base,
            });
        }
    }
    Ok(runs)
}

/// Scans the benign corpus in this process from memory (files read once),
/// several passes after a warm-up: the scanner's own throughput on ordinary
/// model files, without process start or file opens. A file in a subfolder
/// is scanned with its folder (ONNX external data needs its model).
fn benign_corpus() -> Option<CorpusRun> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../citadel-scan/tests/fixtures/benign");
    let manifest: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).ok()?).ok()?;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut folders = std::collections::BTreeSet::new();
    for k in manifest.keys() {
        match k.split_once('/') {
            Some((folder, _)) => {
                folders.insert(dir.join(folder));
            }
            None => files.push((k.clone(), std::fs::read(dir.join(k)).ok()?)),
        }
    }
    let bytes: u64 = files.iter().map(|f| f.1.len() as u64).sum::<u64>()
        + folders
            .iter()
            .flat_map(|f| std::fs::read_dir(f).into_iter().flatten().flatten())
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum::<u64>();
    let scan_all = || {
        files.iter().filter(|(name, data)| citadel_scan::refused(&[citadel_scan::scan_bytes(name, data)])).count()
            + folders.iter().filter(|f| citadel_scan::scan_path(f).map_or(true, |r| citadel_scan::refused(&r))).count()
    };
    scan_all();
    let passes = 20;
    let start = Instant::now();
    let mut false_alarms = 0;
    for _ in 0..passes {
        false_alarms = scan_all();
    }
    let seconds = start.elapsed().as_secs_f64();
    Some(CorpusRun {
        files: manifest.len(),
        bytes,
        passes,
        seconds,
        gb_s: bytes as f64 * f64::from(passes) / 1e9 / seconds,
        false_alarms,
    })
}

#[derive(Debug, Serialize)]
pub struct ScanTool {
    pub name: String,
    pub seconds: f64,
    pub mb_s: f64,
    pub files_s: f64,
    pub exit_code: Option<i32>,
    /// citadel's throughput divided by this tool's.
    pub citadel_ratio: f64,
}

const EVIL: &[u8] = include_bytes!("../../citadel-scan/tests/fixtures/os_system_p4.pkl");

fn tensor_pickle(payload: &[u8]) -> Vec<u8> {
    let mut p = b"\x80\x04\x8c\x0ctorch._utils\x94\x8c\x12_rebuild_tensor_v2\x94\x93\x94\x8e".to_vec();
    p.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    p.extend_from_slice(payload);
    p.extend_from_slice(b"\x85\x94R\x94.");
    p
}

fn run_tool(cmd: &mut Command, what: &str) -> Result<(f64, Option<i32>)> {
    let start = Instant::now();
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    Ok((start.elapsed().as_secs_f64(), out.status.code()))
}

pub fn run(
    dir: &Path,
    pickles: u64,
    pickle_kib: u64,
    archives: u64,
    archive_mib: u64,
    quiet: bool,
) -> Result<ScanBench> {
    let root = dir.join(format!("citadel-bench-scan-{}", citadel_types::random_id("")));
    let corpus = root.join("models");
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let _cleanup = Cleanup(root.clone(), false);
    let mut noise = Noise(0xFEED_F00D_1234_5678);
    say(
        quiet,
        &format!("writing {pickles} pickles of {pickle_kib} KiB and {archives} PyTorch archives of {archive_mib} MiB"),
    );
    let mut bytes = 0u64;
    let mut malicious = 0u64;
    let mut payload = vec![0u8; (pickle_kib << 10) as usize];
    for i in 0..pickles {
        // One in 50 is malicious, so every tool has something to find.
        let data = if i % 50 == 0 {
            malicious += 1;
            EVIL.to_vec()
        } else {
            noise.fill(&mut payload);
            tensor_pickle(&payload)
        };
        bytes += data.len() as u64;
        std::fs::write(corpus.join(format!("model-{i:05}.pkl")), data)?;
    }
    let mut storage = vec![0u8; (archive_mib << 20) as usize];
    for i in 0..archives {
        noise.fill(&mut storage);
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        w.start_file("archive/data.pkl", opts)?;
        w.write_all(&tensor_pickle(b"storage-0"))?;
        w.start_file("archive/data/0", opts)?;
        w.write_all(&storage)?;
        w.start_file("archive/version", opts)?;
        w.write_all(b"3\n")?;
        let data = w.finish()?.into_inner();
        bytes += data.len() as u64;
        std::fs::write(corpus.join(format!("checkpoint-{i:03}.pt")), data)?;
    }
    let files = pickles + archives;
    let exe = crate::citadel_exe()?;
    let mut notes = Vec::new();
    let mut tools = Vec::new();
    say(quiet, "citadel scan");
    let (secs, code) = run_tool(Command::new(&exe).arg("scan").arg(&corpus).arg("--json"), "citadel scan")?;
    let citadel_mb_s = bytes as f64 / 1e6 / secs;
    tools.push(ScanTool {
        name: "citadel scan".into(),
        seconds: secs,
        mb_s: citadel_mb_s,
        files_s: files as f64 / secs,
        exit_code: code,
        citadel_ratio: 1.0,
    });
    for (tool, args) in [("picklescan", vec!["--path"]), ("modelscan", vec!["-p"])] {
        let Some(path) = find_tool(tool) else {
            notes.push(format!("{tool} not found (pip install {tool}): not compared"));
            continue;
        };
        say(quiet, tool);
        let (secs, code) = run_tool(Command::new(&path).args(&args).arg(&corpus), tool)?;
        let mb_s = bytes as f64 / 1e6 / secs;
        tools.push(ScanTool {
            name: tool.into(),
            seconds: secs,
            mb_s,
            files_s: files as f64 / secs,
            exit_code: code,
            citadel_ratio: citadel_mb_s / mb_s,
        });
    }
    let large_pickle = large_pickle(&root, &exe, quiet, &mut notes)?;
    say(quiet, "benign corpus, in process");
    let benign_corpus = benign_corpus();
    if benign_corpus.is_none() {
        notes.push(
            "the benign corpus (crates/citadel-scan/tests/fixtures/benign) was not found: run from a checkout".into(),
        );
    }
    notes.push("whole commands are timed (process start included); files are read from the page cache".into());
    Ok(ScanBench { files, bytes, malicious_files: malicious, tools, large_pickle, benign_corpus, notes })
}

pub fn render(r: &ScanBench) -> String {
    let mut s = format!(
        "citadel-bench scan: {} files, {:.0} MB, {} malicious\n\n{:<14} {:>9} {:>10} {:>10} {:>6} {:>14}\n",
        r.files,
        r.bytes as f64 / 1e6,
        r.malicious_files,
        "tool",
        "seconds",
        "MB/s",
        "files/s",
        "exit",
        "citadel ratio"
    );
    for t in &r.tools {
        s += &format!(
            "{:<14} {:>9.2} {:>10.0} {:>10.0} {:>6} {:>13.1}x\n",
            t.name,
            t.seconds,
            t.mb_s,
            t.files_s,
            t.exit_code.map_or("-".into(), |c| c.to_string()),
            t.citadel_ratio
        );
    }
    s += "\ntarget: scan >= 20x picklescan's throughput\n";
    if !r.large_pickle.is_empty() {
        s += &format!(
            "\nlarge pickle (2M tuples, ~12M opcodes)\n{:<14} {:<24} {:>9} {:>10} {:>6} {:>16}\n",
            "tool", "file", "seconds", "peak MiB", "exit", "citadel speedup"
        );
        for l in &r.large_pickle {
            s += &format!(
                "{:<14} {:<24} {:>9.2} {:>10} {:>6} {:>15.1}x\n",
                l.tool,
                l.file,
                l.seconds,
                l.peak_rss_mib.map_or("-".into(), |m| format!("{m:.0}")),
                l.exit_code.map_or("-".into(), |c| c.to_string()),
                l.citadel_speedup
            );
        }
        s += "target: >= 20x picklescan, read to its end, peak memory <= 256 MiB; exit 2 on the tail payload\n";
    }
    if let Some(c) = &r.benign_corpus {
        s += &format!(
            "\nbenign corpus (in memory): {} files, {:.2} MB x {} passes in {:.2} s = {:.3} GB/s (target >= 1 GB/s), {} false alarm(s)\n",
            c.files,
            c.bytes as f64 / 1e6,
            c.passes,
            c.seconds,
            c.gb_s,
            c.false_alarms
        );
    }
    for n in &r.notes {
        s += &format!("note: {n}\n");
    }
    s
}

//! `citadel bench scan`: scanner throughput next to picklescan and modelscan
//! on the same files, in one run.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::bench::{Cleanup, Noise, find_tool, say};

#[derive(Debug, Serialize)]
pub struct ScanBench {
    pub files: u64,
    pub bytes: u64,
    pub malicious_files: u64,
    pub tools: Vec<ScanTool>,
    pub notes: Vec<String>,
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
    let exe = std::env::current_exe()?;
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
    notes.push("whole commands are timed (process start included); files are read from the page cache".into());
    Ok(ScanBench { files, bytes, malicious_files: malicious, tools, notes })
}

pub fn render(r: &ScanBench) -> String {
    let mut s = format!(
        "citadel bench scan: {} files, {:.0} MB, {} malicious\n\n{:<14} {:>9} {:>10} {:>10} {:>6} {:>14}\n",
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
    for n in &r.notes {
        s += &format!("note: {n}\n");
    }
    s
}

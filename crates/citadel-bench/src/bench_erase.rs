//! `citadel-bench erase`: erasing one data subject from VERSIONS versions of
//! a ROWS-row dataset (the 25-column synthetic table of `bench data`).
//!
//! Each version is a different table (seed), with the subject's row placed
//! inside one Parquet row group (at a different group in each version).
//! Reported: the erasure's wall time (one `citadel subject erase` command,
//! process start included), the bytes it stored against the bytes of the
//! whole dataset (rewriting every version in full, the naive approach and
//! what crypto-shredding a per-version key would force), and the time of
//! re-ingesting every version (measured while building them) beside it.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use serde::Serialize;

use crate::bench::{Cleanup, say, timed};
use crate::bench_data::{SYNTH_EXPECT, generate_with_subject};

const PASSPHRASE: &str = "citadel-bench-throwaway-passphrase";
const SUBJECT: &str = "erase.me@example.org";
/// Rows per Parquet row group at ingest (citadel-data's ROW_GROUP_ROWS).
const ROW_GROUP_ROWS: u64 = 65_536;

#[derive(Debug, Serialize)]
pub struct EraseBench {
    pub rows: u64,
    pub versions: usize,
    pub ingest_seconds_total: f64,
    pub erase_seconds: f64,
    pub rows_removed: u64,
    pub row_groups: u64,
    pub row_groups_changed: u64,
    pub bytes_written: u64,
    pub bytes_whole_dataset: u64,
    /// bytes_written / bytes_whole_dataset.
    pub bytes_ratio: f64,
    /// erase_seconds / ingest_seconds_total.
    pub time_ratio_vs_reingest: f64,
    pub chunks_deleted: u64,
    pub bytes_freed: u64,
    pub receipt_verified: bool,
    pub notes: Vec<String>,
}

pub fn run(dir: &Path, rows: u64, versions: usize, keep: bool, quiet: bool) -> Result<EraseBench> {
    let mut notes = Vec::new();
    let cleanup = Cleanup::fresh(dir, "erase", keep, &mut notes)?;
    let root = cleanup.0.clone();
    let exe = crate::citadel_exe()?;
    let ws = root.join("ws");
    let citadel = |args: &[&str]| -> Command {
        let mut c = Command::new(&exe);
        c.env("CITADEL_PASSPHRASE", PASSPHRASE).env_remove("CITADEL_TOKEN").arg("-w").arg(&ws).args(args);
        c
    };
    timed(citadel(&["init", "--kdf-memory-mib", "19"]).arg(&ws), "citadel init")?;
    let spec = root.join("synthetic.expect.toml");
    std::fs::write(&spec, SYNTH_EXPECT)?;
    let groups = rows.div_ceil(ROW_GROUP_ROWS).max(1);
    let mut ingest_total = 0.0;
    for v in 0..versions {
        // The subject sits in row group (v mod groups), away from its edges.
        let row = ((v as u64 % groups) * ROW_GROUP_ROWS + 1000).min(rows - 1);
        let csv = root.join(format!("v{v}.csv"));
        say(quiet, &format!("version {}: writing {rows} rows (the subject at row {row})", v + 1));
        generate_with_subject(&csv, rows, 100 + v as u64, 0.0, Some((row, SUBJECT)))?;
        say(quiet, &format!("version {}: citadel data add", v + 1));
        let mut c = citadel(&["data", "add", "--json", "--name", "bench", "--expect"]);
        c.arg(&spec).arg(&csv);
        let (secs, _) = timed(&mut c, "citadel data add")?;
        ingest_total += secs;
        std::fs::remove_file(&csv)?;
    }
    let tok = |args: &[&str]| timed(&mut citadel(args), "citadel");
    tok(&["principal", "create", "bench-officer"])?;
    tok(&["grant", "add", "bench-officer", "privacy-officer"])?;
    let (_, out) = tok(&["token", "issue", "bench-officer", "--json"])?;
    let token: serde_json::Value = serde_json::from_str(&out)?;
    let token = token["token"].as_str().context("token issue printed no token")?.to_string();

    say(quiet, "citadel subject erase");
    let mut c = citadel(&[
        "subject",
        "erase",
        "--dataset",
        "bench",
        "--match",
        &format!("email={SUBJECT}"),
        "--reason",
        "bench",
        "--json",
    ]);
    c.env("CITADEL_TOKEN", &token);
    let (erase_seconds, out) = timed(&mut c, "citadel subject erase")?;
    let r: serde_json::Value = serde_json::from_str(&out)?;
    let vs = r["receipt"]["versions"].as_array().context("the receipt lists no versions")?;
    ensure!(vs.len() == versions, "the erasure rewrote {} of {versions} versions", vs.len());
    let sum = |k: &str| vs.iter().map(|v| v[k].as_u64().unwrap_or(0)).sum::<u64>();
    let (bytes_written, bytes_whole) = (sum("bytes_written"), sum("bytes_total"));
    notes.push(format!(
        "bytes of the whole dataset: the {versions} versions' stored directories (Parquet, zstd level 1), what rewriting each in full would store"
    ));
    Ok(EraseBench {
        rows,
        versions,
        ingest_seconds_total: ingest_total,
        erase_seconds,
        rows_removed: sum("rows_removed"),
        row_groups: sum("row_groups"),
        row_groups_changed: sum("row_groups_changed"),
        bytes_written,
        bytes_whole_dataset: bytes_whole,
        bytes_ratio: bytes_written as f64 / bytes_whole.max(1) as f64,
        time_ratio_vs_reingest: erase_seconds / ingest_total.max(1e-9),
        chunks_deleted: r["receipt"]["chunks_deleted"].as_u64().unwrap_or(0),
        bytes_freed: r["receipt"]["bytes_freed"].as_u64().unwrap_or(0),
        receipt_verified: r["verified"].as_bool().unwrap_or(false),
        notes,
    })
}

pub fn render(b: &EraseBench) -> String {
    let mut s = format!(
        "bench erase: one subject from {} versions of {} rows\n\
         \x20 erase (one command)        {:>8.2} s\n\
         \x20 re-ingest every version    {:>8.2} s   (erase / re-ingest = {:.3})\n\
         \x20 rows removed               {:>8}\n\
         \x20 row groups rewritten       {:>8} of {}\n\
         \x20 bytes stored               {:>8.1} MB of {:.1} MB = {:.2}% of rewriting the whole dataset (target <= 5%)\n\
         \x20 deleted from the store     {:>8} chunks, {:.1} MB\n\
         \x20 receipt signature          {}\n",
        b.versions,
        b.rows,
        b.erase_seconds,
        b.ingest_seconds_total,
        b.time_ratio_vs_reingest,
        b.rows_removed,
        b.row_groups_changed,
        b.row_groups,
        b.bytes_written as f64 / 1e6,
        b.bytes_whole_dataset as f64 / 1e6,
        b.bytes_ratio * 100.0,
        b.chunks_deleted,
        b.bytes_freed as f64 / 1e6,
        if b.receipt_verified { "verified" } else { "NOT verified" },
    );
    for n in &b.notes {
        s += &format!("note: {n}\n");
    }
    s
}

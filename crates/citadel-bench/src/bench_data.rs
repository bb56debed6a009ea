//! `citadel-bench data`: dataset ingest and drift next to pandas + scipy
//! (and Evidently's DataDriftPreset when installed), in one run, on the same
//! synthetic table of ROWS × 25 columns.
//!
//! Workloads, each timed as a whole command (process start included):
//! 1. ingest: `citadel data add` (profile, expectations, PII scan, masking,
//!    keyed row hashes, poisoning checks, encrypted store) against
//!    `data_pandas.py ingest` (profile, the same expectations, regex PII
//!    scan, HMAC masking, duplicate count, Parquet write);
//! 2. drift of table B against table A (both ROWS rows, all columns, exact):
//!    citadel's drift engine (`citadel_data::ingest::drift_tables`, in
//!    process) against `data_pandas.py drift` (ks_2samp, chisquare, numpy
//!    PSI/JS) on the same two Parquet files; Evidently when importable.
//!
//! Peak RSS comes from `/usr/bin/time -f %M`. Memory independence is shown
//! by ingesting a quarter of the rows too: the two peaks should be close.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use serde::Serialize;

use crate::bench::{Cleanup, peak_rss_mib, say, timed, with_peak_rss};

const PASSPHRASE: &str = "citadel-bench-throwaway-passphrase";
const PANDAS_SCRIPT: &str = include_str!("../../../scripts/bench/data_pandas.py");

/// Expectations for the synthetic table: types, ranges, sets, a regex,
/// uniqueness, masks for the personal columns.
pub const SYNTH_EXPECT: &str = r#"
[dataset]
label = "label"
key = ["id"]
quasi_identifiers = ["age", "zip"]
on_failure = "warn"

[columns.id]
type = "integer"
unique = true
[columns.age]
type = "integer"
min = 18
max = 90
[columns.num_0]
min = -100
max = 100
[columns.cat_0]
allowed = ["a0", "a1", "a2", "a3", "a4"]
[columns.cat_1]
allowed = ["b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8", "b9", "b10", "b11"]
[columns.label]
allowed = ["yes", "no"]
max_null_rate = 0.0
[columns.email]
regex = '[^@\s]+@[^@\s]+'
mask = { kind = "pseudonymize" }
[columns.phone]
mask = { kind = "pseudonymize" }
[columns.name]
mask = { kind = "redact" }
[columns.zip]
type = "string"
mask = { kind = "generalize", keep = 2 }

[drift]
# The synthetic B table is meant to drift; the bench measures, it does not gate.
psi_max = 100.0
ks_max = 1.0
js_max = 1.0
label_shift_max = 1.0
out_of_range_rate_max = 1.0
new_category_rate_max = 1.0
outlier_rate_max = 1.0
"#;

pub(crate) struct Rng(pub(crate) u64);
impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(crate) fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        (-2.0 * self.unit().ln()).sqrt() * (2.0 * std::f64::consts::PI * self.unit()).cos()
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const FIRST: [&str; 10] = ["Maria", "James", "Sophie", "Ahmed", "Lucas", "Yuki", "Olga", "Pedro", "Emma", "Noah"];
const LAST: [&str; 10] = ["Smith", "Garcia", "Muller", "Khan", "Rossi", "Tanaka", "Ivanova", "Silva", "Brown", "Lee"];

/// Writes the synthetic table: id, 8 float columns, 5 integer columns, age,
/// 5 categorical columns, e-mail, phone, name, zip and a label (25 columns).
/// `shift` moves some distributions (table B of the drift workload).
pub fn generate(path: &Path, rows: u64, seed: u64, shift: f64) -> Result<u64> {
    generate_with_subject(path, rows, seed, shift, None)
}

/// [`generate`], with row `subject.0` given the e-mail `subject.1` (the
/// data subject of `bench erase`).
pub fn generate_with_subject(
    path: &Path,
    rows: u64,
    seed: u64,
    shift: f64,
    subject: Option<(u64, &str)>,
) -> Result<u64> {
    let mut r = Rng(seed | 1);
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut header: Vec<String> = vec!["id".into()];
    header.extend((0..8).map(|i| format!("num_{i}")));
    header.extend((0..5).map(|i| format!("int_{i}")));
    header.push("age".into());
    header.extend((0..5).map(|i| format!("cat_{i}")));
    header.extend(["email", "phone", "name", "zip", "label"].map(String::from));
    writeln!(w, "{}", header.join(","))?;
    let mut line = String::with_capacity(512);
    for id in 0..rows {
        use std::fmt::Write as _;
        line.clear();
        let _ = write!(line, "{id}");
        for i in 0..8 {
            let x = (i as f64) * 3.0 + (1.0 + i as f64) * r.normal() + if i == 0 { shift } else { 0.0 };
            let _ = write!(line, ",{x:.6}");
        }
        for i in 0..5u64 {
            let _ = write!(line, ",{}", r.below(10u64.pow(1 + i as u32 % 4)));
        }
        let age = 18 + ((r.unit() + r.unit()) / 2.0 * 72.0 + shift * 5.0).min(72.0) as u64;
        let _ = write!(line, ",{age}");
        let a = if shift > 0.0 && r.below(10) == 0 { 4 } else { r.below(5) };
        let _ = write!(line, ",a{a},b{},c{},d{},e{}", r.below(12), r.below(30), r.below(100), r.below(3));
        let (f, l) = (FIRST[r.below(10) as usize], LAST[r.below(10) as usize]);
        let email = match subject {
            Some((row, email)) if row == id => email.to_string(),
            _ => format!("{}.{}{id}@example.com", f.to_lowercase(), l.to_lowercase()),
        };
        let _ = write!(
            line,
            ",{email},+44 20 {:04} {:04},{f} {l},{:05},{}",
            r.below(10_000),
            r.below(10_000),
            10_000 + r.below(89_999),
            if r.unit() < 0.25 + shift * 0.05 { "yes" } else { "no" }
        );
        line.push('\n');
        w.write_all(line.as_bytes())?;
    }
    w.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

#[derive(Debug, Serialize)]
pub struct DataBench {
    pub rows: u64,
    pub columns: usize,
    pub csv_bytes: u64,
    pub ingest: Vec<Timing>,
    pub drift: Vec<Timing>,
    pub ingest_ratio_vs_pandas: Option<f64>,
    pub drift_ratio_vs_scipy: Option<f64>,
    pub drift_ratio_vs_evidently: Option<f64>,
    /// Peak RSS of `citadel data add` on ROWS/4 and on ROWS rows.
    pub citadel_peak_rss_mib_quarter: Option<f64>,
    pub citadel_peak_rss_mib_full: Option<f64>,
    pub agreement: Vec<String>,
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Timing {
    pub tool: String,
    pub seconds: f64,
    pub rows_per_s: f64,
    pub peak_rss_mib: Option<f64>,
}

/// Runs `cmd` under `/usr/bin/time -f %M` when available: (seconds, stdout, peak RSS MiB).
fn measured(cmd: Command, what: &str) -> Result<(f64, String, Option<f64>)> {
    let (mut wrapped, rss_file) = with_peak_rss(&cmd)?;
    let (s, out) = timed(&mut wrapped, what)?;
    Ok((s, out, peak_rss_mib(&rss_file)))
}

/// A Python with pandas, scipy and pyarrow: $CITADEL_BENCH_PYTHON, the test
/// services' venv, or python3.
fn find_python() -> Option<PathBuf> {
    std::env::var_os("CITADEL_BENCH_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/tmp/citadel-services/venv/bin/python"), PathBuf::from("python3")])
        .find(|p| {
            Command::new(p).args(["-c", "import pandas, scipy, pyarrow"]).output().is_ok_and(|o| o.status.success())
        })
}

pub fn run(dir: &Path, rows: u64, evidently: bool, keep: bool, quiet: bool) -> Result<DataBench> {
    let mut notes = Vec::new();
    let cleanup = Cleanup::fresh(dir, "data", keep, &mut notes)?;
    let root = cleanup.0.clone();
    let exe = crate::citadel_exe()?;
    let mut agreement = Vec::new();

    say(quiet, &format!("writing tables A and B ({rows} rows x 25 columns) and A/4"));
    let (a_csv, b_csv, q_csv) = (root.join("a.csv"), root.join("b.csv"), root.join("a-quarter.csv"));
    let csv_bytes = generate(&a_csv, rows, 7, 0.0)?;
    generate(&b_csv, rows, 8, 0.3)?;
    generate(&q_csv, rows / 4, 9, 0.0)?;
    let spec = root.join("synthetic.expect.toml");
    std::fs::write(&spec, SYNTH_EXPECT)?;
    let script = root.join("data_pandas.py");
    std::fs::write(&script, PANDAS_SCRIPT)?;

    let ws = root.join("ws");
    let citadel = |args: &[&str]| -> Command {
        let mut c = Command::new(&exe);
        c.env("CITADEL_PASSPHRASE", PASSPHRASE).env_remove("CITADEL_TOKEN").arg("-w").arg(&ws).args(args);
        c
    };
    timed(citadel(&["init", "--kdf-memory-mib", "19"]).arg(&ws), "citadel init")?;
    let add = |file: &Path, name: &str| {
        let mut c = citadel(&["data", "add", "--json", "--name", name, "--expect"]);
        c.arg(&spec).arg(file);
        c
    };

    // ---- 1. ingest
    let mut ingest = Vec::new();
    say(quiet, "citadel data add (A/4, for the memory bound)");
    let (_, _, rss_q) = measured(add(&q_csv, "quarter"), "citadel data add")?;
    say(quiet, "citadel data add (A)");
    let (secs, out, rss_full) = measured(add(&a_csv, "synthetic"), "citadel data add")?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let columns = v["report"]["source_columns"].as_array().map_or(0, Vec::len);
    ingest.push(Timing {
        tool: "citadel data add".into(),
        seconds: secs,
        rows_per_s: rows as f64 / secs,
        peak_rss_mib: rss_full,
    });
    let python = find_python();
    let mut pandas_ingest = None;
    match &python {
        Some(py) => {
            say(quiet, "pandas + scipy ingest (A)");
            let mut c = Command::new(py);
            c.arg(&script).arg("ingest").arg(&a_csv).arg(root.join("pandas-a.parquet"));
            let (s, out, rss) = measured(c, "data_pandas.py ingest")?;
            let p: serde_json::Value = serde_json::from_str(out.trim()).context("pandas ingest output")?;
            agreement.push(format!(
                "PII columns found: pandas regexes {}, citadel {}",
                p["pii"],
                v["report"]["profile"]
                    .as_array()
                    .map(|cols| cols.iter().filter(|c| !c["pii"].as_array().is_none_or(Vec::is_empty)).map(|c| c["name"].clone()).collect::<Vec<_>>())
                    .unwrap_or_default()
                    .len()
            ));
            pandas_ingest = Some(s);
            ingest.push(Timing { tool: "pandas + scipy".into(), seconds: s, rows_per_s: rows as f64 / s, peak_rss_mib: rss });
        }
        None => notes.push(
            "no Python with pandas, scipy and pyarrow (set CITADEL_BENCH_PYTHON or pip install pandas scipy pyarrow): no peer comparison".into(),
        ),
    }

    // ---- 2. drift: B against A on the stored tables
    say(quiet, "citadel data add (B)");
    timed(&mut add(&b_csv, "synthetic"), "citadel data add B")?;
    let (a_pq, b_pq) = (root.join("a.parquet"), root.join("b.parquet"));
    for (reference, out) in [("synthetic@1", &a_pq), ("synthetic@2", &b_pq)] {
        let mut c = citadel(&["data", "get", reference, "--format", "parquet", "-o"]);
        c.arg(out);
        timed(&mut c, "citadel data get")?;
    }
    let mut drift = Vec::new();
    say(quiet, "citadel drift engine (B vs A, every row)");
    let start = Instant::now();
    let ours = citadel_data::ingest::drift_tables(&a_pq, &b_pq).map_err(|e| anyhow!("drift: {e}"))?;
    let secs = start.elapsed().as_secs_f64();
    drift.push(Timing {
        tool: "citadel drift (in process)".into(),
        seconds: secs,
        rows_per_s: 2.0 * rows as f64 / secs,
        peak_rss_mib: None,
    });
    let (mut scipy_s, mut evidently_s) = (None, None);
    if let Some(py) = &python {
        say(quiet, "pandas + scipy drift (B vs A)");
        let mut c = Command::new(py);
        c.arg(&script).arg("drift").arg(&a_pq).arg(&b_pq);
        let (s, out, rss) = measured(c, "data_pandas.py drift")?;
        let p: serde_json::Value = serde_json::from_str(out.trim()).context("pandas drift output")?;
        let mut worst: f64 = 0.0;
        for d in &ours {
            if let Some(ks) = d.ks
                && let Some(theirs) = p["drift"][&d.column]["ks"].as_f64()
            {
                worst = worst.max((ks - theirs).abs());
            }
        }
        agreement.push(format!("largest KS difference from scipy over all numeric columns: {worst:e}"));
        scipy_s = Some(s);
        drift.push(Timing {
            tool: "pandas + scipy".into(),
            seconds: s,
            rows_per_s: 2.0 * rows as f64 / s,
            peak_rss_mib: rss,
        });
        if evidently {
            say(quiet, "Evidently DataDriftPreset (B vs A)");
            let mut c = Command::new(py);
            c.arg(&script).arg("drift").arg(&a_pq).arg(&b_pq).arg("--evidently");
            let (_, out, _) = measured(c, "data_pandas.py drift --evidently")?;
            let p: serde_json::Value = serde_json::from_str(out.trim()).context("evidently output")?;
            match p["evidently_seconds"].as_f64() {
                Some(e) => {
                    evidently_s = Some(e);
                    drift.push(Timing {
                        tool: "Evidently DataDriftPreset".into(),
                        seconds: e,
                        rows_per_s: 2.0 * rows as f64 / e,
                        peak_rss_mib: None,
                    });
                }
                None => {
                    notes.push(format!("Evidently not run: {}", p["evidently_error"].as_str().unwrap_or("unknown")))
                }
            }
        }
    }
    Ok(DataBench {
        rows,
        columns,
        csv_bytes,
        ingest_ratio_vs_pandas: pandas_ingest.map(|p| p / ingest[0].seconds),
        drift_ratio_vs_scipy: scipy_s.map(|p| p / secs),
        drift_ratio_vs_evidently: evidently_s.map(|e| e / secs),
        ingest,
        drift,
        citadel_peak_rss_mib_quarter: rss_q,
        citadel_peak_rss_mib_full: rss_full,
        agreement,
        notes,
    })
}

pub fn render(r: &DataBench) -> String {
    let mut s = format!(
        "dataset benchmark: {} rows x {} columns ({:.0} MB of CSV)\n\ningest (profile + expectations + PII + masking + store):\n",
        r.rows,
        r.columns,
        r.csv_bytes as f64 / 1e6
    );
    let rows = |s: &mut String, ts: &[Timing]| {
        for t in ts {
            *s += &format!(
                "  {:<28} {:>8.2} s {:>12.0} rows/s {:>10}\n",
                t.tool,
                t.seconds,
                t.rows_per_s,
                t.peak_rss_mib.map_or("-".into(), |m| format!("{m:.0} MiB"))
            );
        }
    };
    rows(&mut s, &r.ingest);
    if let Some(x) = r.ingest_ratio_vs_pandas {
        s += &format!("  citadel is {x:.1}x pandas + scipy (target 10x)\n");
    }
    s += &format!(
        "  peak RSS: {} on {} rows, {} on {} rows (bounded: should not grow with rows)\n",
        r.citadel_peak_rss_mib_quarter.map_or("-".into(), |m| format!("{m:.0} MiB")),
        r.rows / 4,
        r.citadel_peak_rss_mib_full.map_or("-".into(), |m| format!("{m:.0} MiB")),
        r.rows
    );
    s += "\ndrift of B against A, every row of both:\n";
    rows(&mut s, &r.drift);
    if let Some(x) = r.drift_ratio_vs_scipy {
        s += &format!("  citadel is {x:.1}x pandas + scipy (target 20x)\n");
    }
    if let Some(x) = r.drift_ratio_vs_evidently {
        s += &format!("  citadel is {x:.1}x Evidently (target 100x)\n");
    }
    for a in &r.agreement {
        s += &format!("  check: {a}\n");
    }
    for n in &r.notes {
        s += &format!("note: {n}\n");
    }
    s
}

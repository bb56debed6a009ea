//! `citadel-bench monitor`: drift of ROWS live rows against the training
//! reference, the way the gateway and the control plane do it, next to
//! Evidently's DataDriftPreset and NannyML's univariate drift on the same
//! rows, in one run; and the sketch's statistics against the exact ones.
//!
//! Reference: UCI Adult's training rows (adult.data). Live: adult.test's
//! rows drawn with replacement up to ROWS, the second half with
//! `hours-per-week` raised by 5 (a drift the tools should find).
//!
//! Citadel's side, timed: every live row folded into four replicas'
//! window sketches (KLL for numbers, counts for categories: what the
//! gateway does per served request of 100 rows, input by input; the four
//! folds on the machine's cores, and on one), the four merged (what the evaluator does),
//! and judged against the reference (`live_drift`). The "judge" time alone
//! is what runs when a window closes; the fold is spread over the requests.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use citadel_data::sketch::{DriftPolicy, FeatureReference, FeatureSketch, KLL_RANK_ERROR, WindowSketch, live_drift};
use serde::Serialize;

use crate::bench::{Cleanup, say};

const SCRIPT: &str = include_str!("../../../scripts/bench/monitor_peers.py");
use crate::bench_pipeline::ADULT_COLUMNS as COLUMNS;
const NUMERIC: [&str; 5] = ["age", "education-num", "capital-gain", "capital-loss", "hours-per-week"];
const CATEGORICAL: [&str; 6] = ["workclass", "education", "marital-status", "occupation", "relationship", "sex"];

#[derive(Debug, Serialize)]
pub struct MonitorBench {
    pub live_rows: u64,
    pub reference_rows: u64,
    /// The four replicas' folds on as many cores as there are (each replica is its own process in production).
    pub citadel_fold_seconds: f64,
    /// The same folds one after another on one core.
    pub citadel_fold_one_core_seconds: f64,
    /// The cores the parallel folds had.
    pub cores: usize,
    pub citadel_judge_seconds: f64,
    pub citadel_total_seconds: f64,
    pub evidently_seconds: Option<f64>,
    pub nannyml_seconds: Option<f64>,
    pub ratio_vs_evidently: Option<f64>,
    /// The same with the four folds on one core.
    pub ratio_vs_evidently_one_core: Option<f64>,
    pub ratio_vs_nannyml: Option<f64>,
    /// Per numeric column: (sketch KS, exact KS, |difference|); the bound is KLL_RANK_ERROR.
    pub ks: BTreeMap<String, (f64, f64, f64)>,
    pub ks_bound: f64,
    pub citadel_drifted: Vec<String>,
    pub evidently_drifted: Option<Vec<String>>,
    pub nannyml_drifted: Option<Vec<String>>,
    pub notes: Vec<String>,
}

type Row = Vec<String>;

fn read_adult(text: &str) -> Vec<Row> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('|') && !l.contains('?'))
        .map(|l| l.split(',').map(|c| c.trim().trim_end_matches('.').to_string()).collect::<Row>())
        .filter(|r| r.len() == COLUMNS.len())
        .collect()
}

fn col(name: &str) -> usize {
    COLUMNS.iter().position(|c| *c == name).unwrap_or(0)
}

fn write_csv(path: &Path, rows: &[Row]) -> Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    let names: Vec<&str> = NUMERIC.iter().chain(CATEGORICAL.iter()).copied().collect();
    writeln!(w, "{}", names.join(","))?;
    for r in rows {
        let cells: Vec<&str> = names.iter().map(|n| r[col(n)].as_str()).collect();
        writeln!(w, "{}", cells.join(","))?;
    }
    Ok(())
}

fn python() -> Option<PathBuf> {
    std::env::var_os("CITADEL_BENCH_MONITOR_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/tmp/citadel-services/monitor-venv/bin/python"), PathBuf::from("python3")])
        .find(|p| Command::new(p).args(["-c", "import pandas, scipy"]).output().is_ok_and(|o| o.status.success()))
}

pub fn run(dir: &Path, rows: u64, adult_test: &Path, keep: bool, quiet: bool) -> Result<MonitorBench> {
    let mut notes = Vec::new();
    let cleanup = Cleanup::fresh(dir, "monitor", keep, &mut notes)?;
    let root = cleanup.0.clone();
    let reference = read_adult(std::str::from_utf8(crate::ADULT_DATA)?);
    let test_text = std::fs::read_to_string(adult_test).with_context(|| {
        format!("reading {} (hint: run from the repository, or pass --adult-test)", adult_test.display())
    })?;
    let base = read_adult(&test_text);
    anyhow::ensure!(!base.is_empty(), "{} holds no complete rows", adult_test.display());
    say(quiet, &format!("drawing {rows} live rows from adult.test (second half: hours-per-week + 5)"));
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let hours = col("hours-per-week");
    let live: Vec<Row> = (0..rows)
        .map(|i| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut r = base[(seed % base.len() as u64) as usize].clone();
            if i >= rows / 2 {
                let h: f64 = r[hours].parse().unwrap_or(40.0);
                r[hours] = format!("{}", (h + 5.0).min(99.0));
            }
            r
        })
        .collect();

    // The reference, as the evaluator builds it: sorted numbers, category counts.
    let mut references = BTreeMap::new();
    for n in NUMERIC {
        let mut v: Vec<f64> = reference.iter().filter_map(|r| r[col(n)].parse().ok()).collect();
        citadel_data::stats::sort_f64(&mut v);
        references.insert(n.to_string(), FeatureReference::Numeric(v));
    }
    // Each categorical feature's vocabulary and lookup table, as a model's plan holds them.
    type Index = std::collections::HashMap<String, usize, foldhash::fast::RandomState>;
    let mut vocabulary: Vec<(Vec<String>, Index)> = Vec::new();
    for c in CATEGORICAL {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for r in &reference {
            *counts.entry(r[col(c)].clone()).or_default() += 1;
        }
        let names: Vec<String> = counts.keys().cloned().collect();
        let index = names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
        vocabulary.push((names, index));
        references.insert(c.to_string(), FeatureReference::Categorical(counts.into_iter().collect()));
    }

    // ---- citadel: fold into four replicas' sketches, merge, judge.
    say(quiet, "citadel: sketch every live row (4 replicas), merge, judge");
    let numeric_idx: Vec<(String, usize)> = NUMERIC.iter().map(|n| (n.to_string(), col(n))).collect();
    let categorical_idx: Vec<(String, usize)> = CATEGORICAL.iter().map(|n| (n.to_string(), col(n))).collect();
    // The live rows as the gateway receives them: requests of 100 rows, one
    // tensor a named input (numbers parsed, categories as strings), built
    // before the clock starts as a request's decoding is.
    struct Request {
        numbers: Vec<Vec<f64>>,
        strings: Vec<Vec<String>>,
    }
    let requests: Vec<Request> = live
        .chunks(100)
        .map(|rows| Request {
            numbers: numeric_idx
                .iter()
                .map(|(_, i)| rows.iter().map(|r| r[*i].parse().unwrap_or(f64::NAN)).collect())
                .collect(),
            strings: categorical_idx.iter().map(|(_, i)| rows.iter().map(|r| r[*i].clone()).collect()).collect(),
        })
        .collect();
    // Each replica is its own process on its own core in production; here
    // the four folds run on scoped threads (as many at once as the machine
    // has cores), and the single-threaded time is measured too. A request is
    // folded input by input, as the gateway's folding thread does.
    let chunk = requests.len().div_ceil(4).max(1);
    let fold_one = |part: &[Request]| -> WindowSketch {
        let mut w = WindowSketch::default();
        let mut numeric: Vec<FeatureSketch> = numeric_idx.iter().map(|_| FeatureSketch::numeric(None)).collect();
        let mut categorical: Vec<FeatureSketch> =
            vocabulary.iter().map(|(names, _)| FeatureSketch::categorical(names.clone())).collect();
        for request in part {
            for (f, column) in numeric.iter_mut().zip(&request.numbers) {
                for x in column {
                    f.observe_number(*x);
                }
            }
            for ((f, column), (_, index)) in categorical.iter_mut().zip(&request.strings).zip(&vocabulary) {
                for v in column {
                    f.observe_code(index.get(v.as_str()).copied());
                }
            }
            w.requests += 1;
            w.rows += request.numbers.first().map_or(0, |c| c.len() as u64);
        }
        for ((name, _), f) in numeric_idx.iter().zip(numeric) {
            w.features.insert(name.clone(), f);
        }
        for ((name, _), f) in categorical_idx.iter().zip(categorical) {
            w.features.insert(name.clone(), f);
        }
        w
    };
    // The parallel folds first, so the one-core run is the one that finds warm caches.
    let start = Instant::now();
    let replicas: Vec<WindowSketch> = std::thread::scope(|scope| {
        let handles: Vec<_> = requests.chunks(chunk).map(|part| scope.spawn(move || fold_one(part))).collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow!("a replica's fold panicked")))
            .collect::<Result<Vec<_>>>()
    })?;
    let fold = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let serial: Vec<WindowSketch> = requests.chunks(chunk).map(fold_one).collect();
    let fold_serial = start.elapsed().as_secs_f64();
    drop(serial);
    let start = Instant::now();
    let mut merged = WindowSketch::default();
    for w in &replicas {
        merged.merge(w);
    }
    let verdict = live_drift(&merged, &references, &DriftPolicy::default());
    let judge = start.elapsed().as_secs_f64();
    let total = fold + judge;
    let citadel_drifted: Vec<String> = verdict.iter().filter(|d| d.drifted).map(|d| d.stats.column.clone()).collect();

    // ---- the peers, and the exact KS.
    let (ref_csv, live_csv) = (root.join("reference.csv"), root.join("live.csv"));
    write_csv(&ref_csv, &reference)?;
    write_csv(&live_csv, &live)?;
    let script = root.join("monitor_peers.py");
    std::fs::write(&script, SCRIPT)?;
    let mut report = MonitorBench {
        live_rows: rows,
        reference_rows: reference.len() as u64,
        citadel_fold_seconds: fold,
        citadel_fold_one_core_seconds: fold_serial,
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        citadel_judge_seconds: judge,
        citadel_total_seconds: total,
        evidently_seconds: None,
        nannyml_seconds: None,
        ratio_vs_evidently: None,
        ratio_vs_evidently_one_core: None,
        ratio_vs_nannyml: None,
        ks: BTreeMap::new(),
        ks_bound: KLL_RANK_ERROR,
        citadel_drifted,
        evidently_drifted: None,
        nannyml_drifted: None,
        notes,
    };
    let Some(py) = python() else {
        report.notes.push(
            "no Python with pandas and scipy: no peer comparison, no exact KS (python3 -m venv /tmp/citadel-services/monitor-venv && /tmp/citadel-services/monitor-venv/bin/pip install evidently==0.7.23 nannyml==0.13.1 'pandas<3' — Evidently 0.7 does not import with pandas 3 — or set CITADEL_BENCH_MONITOR_PYTHON)".into(),
        );
        return Ok(report);
    };
    say(quiet, "Evidently DataDriftPreset, NannyML univariate drift and exact KS (scipy) on the same rows");
    let o = Command::new(&py)
        .arg(&script)
        .arg(&ref_csv)
        .arg(&live_csv)
        .arg(NUMERIC.join(","))
        .arg(CATEGORICAL.join(","))
        .output()
        .context("running monitor_peers.py")?;
    if !o.status.success() {
        return Err(anyhow!("monitor_peers.py failed: {}", String::from_utf8_lossy(&o.stderr)));
    }
    let p: serde_json::Value = serde_json::from_slice(&o.stdout).context("monitor_peers.py output")?;
    for d in &verdict {
        if let (Some(sketch), Some(exact)) = (d.stats.ks, p["exact_ks"][&d.stats.column].as_f64()) {
            report.ks.insert(d.stats.column.clone(), (sketch, exact, (sketch - exact).abs()));
        }
    }
    report.evidently_seconds = p["evidently_seconds"].as_f64();
    report.nannyml_seconds = p["nannyml_seconds"].as_f64();
    report.ratio_vs_evidently = report.evidently_seconds.map(|e| e / total);
    report.ratio_vs_evidently_one_core = report.evidently_seconds.map(|e| e / (fold_serial + judge));
    report.ratio_vs_nannyml = report.nannyml_seconds.map(|e| e / total);
    let list =
        |v: &serde_json::Value| v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect());
    report.evidently_drifted = list(&p["evidently_drifted"]);
    report.nannyml_drifted = list(&p["nannyml_drifted"]);
    for k in ["evidently_error", "nannyml_error"] {
        if let Some(e) = p[k].as_str() {
            report.notes.push(format!("{k}: {e}"));
        }
    }
    Ok(report)
}

pub fn render(r: &MonitorBench) -> String {
    let mut s = format!(
        "drift of {} live rows against {} training rows (11 features)\n\
         citadel: sketch {:.3} s (4 replicas, {} cores; {:.3} s on one) + merge and judge {:.4} s = {:.3} s\n",
        r.live_rows,
        r.reference_rows,
        r.citadel_fold_seconds,
        r.cores,
        r.citadel_fold_one_core_seconds,
        r.citadel_judge_seconds,
        r.citadel_total_seconds
    );
    if let Some(e) = r.evidently_seconds {
        s += &format!(
            "Evidently DataDriftPreset: {e:.2} s → citadel is {:.0}x Evidently (target 100x; {:.0}x with the folds on one core)\n",
            r.ratio_vs_evidently.unwrap_or(0.0),
            r.ratio_vs_evidently_one_core.unwrap_or(0.0)
        );
    }
    if let Some(n) = r.nannyml_seconds {
        s += &format!(
            "NannyML univariate drift: {n:.2} s → citadel is {:.0}x NannyML\n",
            r.ratio_vs_nannyml.unwrap_or(0.0)
        );
    }
    s += &format!("KS from the sketch vs exact (bound {:.4}):\n", r.ks_bound);
    for (c, (sk, ex, d)) in &r.ks {
        s += &format!(
            "  {c:<16} sketch {sk:.4}  exact {ex:.4}  |diff| {d:.4}{}\n",
            if *d <= r.ks_bound { "" } else { "  OVER" }
        );
    }
    s += &format!("drifted: citadel {:?}", r.citadel_drifted);
    if let Some(e) = &r.evidently_drifted {
        s += &format!(", Evidently {e:?}");
    }
    if let Some(n) = &r.nannyml_drifted {
        s += &format!(", NannyML {n:?}");
    }
    s.push('\n');
    for n in &r.notes {
        s += &format!("note: {n}\n");
    }
    s
}

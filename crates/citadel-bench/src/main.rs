//! `citadel-bench`: Citadel's benchmarks, each next to the machine's limits
//! and the peer tools on the same machine in one run, printing the ratios.
//! A binary of its own so the shipped `citadel` carries no benchmark code;
//! it drives the `citadel` binary built beside it (or `CITADEL_BIN`).

mod bench;
mod bench_control;
mod bench_data;
mod bench_erase;
mod bench_monitor;
mod bench_named;
mod bench_pii;
mod bench_pipeline;
mod bench_scan;
mod bench_serve;
mod bench_sign;
mod bench_transfer;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use serde::Serialize;

/// UCI Adult's training rows (the benchmarks that need a real table).
pub(crate) const ADULT_DATA: &[u8] = include_bytes!("../../../datasets/adult/adult.data");

#[derive(Parser, Debug)]
#[command(name = "citadel-bench", version, about = "Citadel's benchmarks, next to the machine's limits and peer tools")]
struct Cli {
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: BenchCmd,
}

#[derive(Subcommand, Debug)]
enum BenchCmd {
    /// The control plane (citadel server) next to MLflow's tracking server:
    /// metadata reads of a registered model's versions, 1 and 8 clients.
    /// MLflow from CITADEL_BENCH_MLFLOW (pip install mlflow).
    Control {
        #[arg(long, default_value_os_t = std::env::temp_dir())]
        dir: PathBuf,
        /// Reads per client.
        #[arg(long, default_value_t = 1000)]
        requests: usize,
        /// Size of the artifact put and got, locally and through the API (MiB).
        #[arg(long, default_value_t = 256)]
        transfer_mib: u64,
        /// Keep the workspace and MLflow's store afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// The quickstart end to end, and the built-in trainers next to
    /// scikit-learn (LogisticRegression, HistGradientBoostingClassifier) on
    /// the same Adult split: times, ratios, accuracies. Needs a Python with
    /// scikit-learn (CITADEL_BENCH_PYTHON).
    Pipeline {
        #[arg(long, default_value_os_t = std::env::temp_dir())]
        dir: PathBuf,
        /// Fits per trainer (the best is reported).
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Skip the quickstart.
        #[arg(long)]
        no_quickstart: bool,
    },
    /// Put and get a large random file and many small files, next to
    /// openssl (SHA-256, AES-GCM), the disk, and restic when installed.
    Store {
        /// Where to write the benchmark data (a fresh subdirectory, removed afterwards).
        #[arg(long, default_value_os_t = std::env::temp_dir())]
        dir: PathBuf,
        #[arg(long, default_value_t = 1024)]
        size_mib: u64,
        #[arg(long, default_value_t = 10_000)]
        files: u64,
        #[arg(long, default_value_t = 100)]
        file_kib: u64,
        /// Keep the data, workspace and restic repository afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// Scan pickles and PyTorch archives, next to picklescan and modelscan.
    Scan {
        #[arg(long, default_value_os_t = std::env::temp_dir())]
        dir: PathBuf,
        #[arg(long, default_value_t = 500)]
        pickles: u64,
        #[arg(long, default_value_t = 1024)]
        pickle_kib: u64,
        #[arg(long, default_value_t = 20)]
        archives: u64,
        #[arg(long, default_value_t = 20)]
        archive_mib: u64,
    },
    /// Single-row inference under load (wrk) on citadel serve (TLS and plain
    /// HTTP), MLServer's scikit-learn runtime and a minimal hyper server.
    Serve {
        #[arg(long, default_value_os_t = std::env::temp_dir())]
        dir: PathBuf,
        /// Seconds per load run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Concurrencies (connections) to run, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = vec![1u32, 16, 64])]
        concurrency: Vec<u32>,
        /// Keep the workspace and models afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// Ingest and drift of a synthetic table (ROWS x 25 columns), next to
    /// pandas + scipy and, with --evidently, Evidently's DataDriftPreset.
    Data {
        #[arg(long, default_value_os_t = std::env::temp_dir())]
        dir: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Also time Evidently's DataDriftPreset (pip install evidently).
        #[arg(long)]
        evidently: bool,
        /// Keep the tables and the workspace afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// Drift of ROWS live rows (UCI Adult's test rows, half of them shifted)
    /// against the training rows as gateways and the evaluator compute it
    /// (sketch, merge, judge), next to Evidently's DataDriftPreset and
    /// NannyML's univariate drift, with the sketch's KS against the exact one.
    Monitor {
        #[arg(long, default_value_os_t = std::env::temp_dir())]
        dir: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// adult.test (live rows are drawn from it)
        #[arg(long, default_value = "datasets/adult/adult.test")]
        adult_test: PathBuf,
        /// Keep the tables afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// Erase one data subject from VERSIONS versions of a ROWS-row dataset:
    /// time, bytes rewritten and their share of rewriting the whole dataset.
    Erase {
        #[arg(long, default_value_os_t = std::env::temp_dir())]
        dir: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        #[arg(long, default_value_t = 10)]
        versions: usize,
        /// Keep the workspace afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// PII detection on a large CSV of people (names, dates of birth,
    /// e-mails, phones, free text), next to Microsoft Presidio on the same
    /// rows: throughput and per-kind recall and precision. Needs a Python
    /// with presidio-analyzer (CITADEL_BENCH_PRESIDIO_PYTHON) for the peer.
    Pii {
        #[arg(long, default_value_os_t = std::env::temp_dir())]
        dir: PathBuf,
        /// Size of the table, in MB.
        #[arg(long, default_value_t = 100)]
        mb: u64,
        /// Rows Presidio analyses (and both tools are scored on).
        #[arg(long, default_value_t = 5000)]
        presidio_rows: usize,
        /// Keep the table afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// Sign and verify a large file and many files, next to the model_signing
    /// CLI and openssl dgst -sha256.
    Sign {
        #[arg(long, default_value_os_t = std::env::temp_dir())]
        dir: PathBuf,
        #[arg(long, default_value_t = 1024)]
        size_mib: u64,
        #[arg(long, default_value_t = 100)]
        files: u64,
        #[arg(long, default_value_t = 10)]
        file_mib: u64,
    },
}

/// The `citadel` binary the benchmarks drive: `CITADEL_BIN`, else the one
/// built beside this binary (`cargo build --release` builds both).
pub(crate) fn citadel_exe() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("CITADEL_BIN") {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe().context("locating citadel-bench")?;
    let beside = me.parent().map(|d| d.join("citadel")).filter(|p| p.is_file());
    beside.ok_or_else(|| {
        anyhow::anyhow!(
            "no citadel binary beside {}\nhint: cargo build --release (builds both), or set CITADEL_BIN",
            me.display()
        )
    })
}

struct Out {
    json: bool,
}

impl Out {
    fn emit<T: Serialize>(&self, value: &T, text: impl FnOnce() -> String) {
        let mut stdout = std::io::stdout().lock();
        let body =
            if self.json { serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into()) } else { text() };
        // A closed pipe (`| head`) ends quietly.
        let _ = writeln!(stdout, "{}", body.trim_end());
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(&cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli) -> Result<()> {
    let out = Out { json: cli.json };
    match &cli.command {
        BenchCmd::Control { dir, requests, transfer_mib, keep } => {
            anyhow::ensure!(*requests >= 10, "--requests must be at least 10\nhint: e.g. --requests 1000");
            let quiet = cli.json || !std::io::stderr().is_terminal();
            anyhow::ensure!(*transfer_mib >= 1, "--transfer-mib must be at least 1");
            let (dir, requests, mib, keep) = (dir.clone(), *requests, *transfer_mib, *keep);
            let report =
                tokio::task::spawn_blocking(move || bench_control::run(&dir, requests, mib, keep, quiet)).await??;
            out.emit(&report, || bench_control::render(&report));
        }
        BenchCmd::Scan { dir, pickles, pickle_kib, archives, archive_mib } => {
            anyhow::ensure!(
                *pickles > 0 && *pickle_kib > 0,
                "--pickles and --pickle-kib must be at least 1\nhint: e.g. --pickles 500"
            );
            let quiet = cli.json || !std::io::stderr().is_terminal();
            let (dir, p, pk, a, am) = (dir.clone(), *pickles, *pickle_kib, *archives, *archive_mib);
            let report = tokio::task::spawn_blocking(move || bench_scan::run(&dir, p, pk, a, am, quiet)).await??;
            out.emit(&report, || bench_scan::render(&report));
        }
        BenchCmd::Serve { dir, seconds, concurrency, keep } => {
            anyhow::ensure!(
                *seconds >= 1 && !concurrency.is_empty(),
                "--seconds must be at least 1\nhint: e.g. --seconds 10 --concurrency 1,16,64"
            );
            let quiet = cli.json || !std::io::stderr().is_terminal();
            let (dir, secs, conc, keep) = (dir.clone(), *seconds, concurrency.clone(), *keep);
            let report =
                tokio::task::spawn_blocking(move || bench_serve::run(&dir, secs, &conc, keep, quiet)).await??;
            out.emit(&report, || bench_serve::render(&report));
        }
        BenchCmd::Pipeline { dir, repeats, no_quickstart } => {
            let quiet = cli.json || !std::io::stderr().is_terminal();
            let (dir, repeats, qs) = (dir.clone(), *repeats, !*no_quickstart);
            let report = tokio::task::spawn_blocking(move || bench_pipeline::run(&dir, repeats, qs, quiet)).await??;
            out.emit(&report, || bench_pipeline::render(&report));
        }
        BenchCmd::Data { dir, rows, evidently, keep } => {
            anyhow::ensure!(*rows >= 1000, "--rows must be at least 1000\nhint: e.g. --rows 1000000");
            let quiet = cli.json || !std::io::stderr().is_terminal();
            let (dir, rows, evidently, keep) = (dir.clone(), *rows, *evidently, *keep);
            let report =
                tokio::task::spawn_blocking(move || bench_data::run(&dir, rows, evidently, keep, quiet)).await??;
            out.emit(&report, || bench_data::render(&report));
        }
        BenchCmd::Monitor { dir, rows, adult_test, keep } => {
            anyhow::ensure!(*rows >= 1000, "--rows must be at least 1000\nhint: e.g. --rows 1000000");
            let quiet = cli.json || !std::io::stderr().is_terminal();
            let (dir, rows, adult_test, keep) = (dir.clone(), *rows, adult_test.clone(), *keep);
            let report =
                tokio::task::spawn_blocking(move || bench_monitor::run(&dir, rows, &adult_test, keep, quiet)).await??;
            out.emit(&report, || bench_monitor::render(&report));
        }
        BenchCmd::Erase { dir, rows, versions, keep } => {
            anyhow::ensure!(*rows >= 1000, "--rows must be at least 1000\nhint: e.g. --rows 1000000");
            anyhow::ensure!(*versions >= 1, "--versions must be at least 1\nhint: e.g. --versions 10");
            let quiet = cli.json || !std::io::stderr().is_terminal();
            let (dir, rows, versions, keep) = (dir.clone(), *rows, *versions, *keep);
            let report =
                tokio::task::spawn_blocking(move || bench_erase::run(&dir, rows, versions, keep, quiet)).await??;
            out.emit(&report, || bench_erase::render(&report));
        }
        BenchCmd::Pii { dir, mb, presidio_rows, keep } => {
            anyhow::ensure!(*mb >= 1, "--mb must be at least 1\nhint: e.g. --mb 100");
            anyhow::ensure!(
                *presidio_rows >= 100,
                "--presidio-rows must be at least 100\nhint: e.g. --presidio-rows 5000"
            );
            let quiet = cli.json || !std::io::stderr().is_terminal();
            let (dir, mb, pr, keep) = (dir.clone(), *mb, *presidio_rows, *keep);
            let report = tokio::task::spawn_blocking(move || bench_pii::run(&dir, mb, pr, keep, quiet)).await??;
            out.emit(&report, || bench_pii::render(&report));
        }
        BenchCmd::Sign { dir, size_mib, files, file_mib } => {
            anyhow::ensure!(
                *size_mib > 0 && *files > 0 && *file_mib > 0,
                "sizes and counts must be at least 1\nhint: e.g. --size-mib 1024"
            );
            let quiet = cli.json || !std::io::stderr().is_terminal();
            let (dir, size_mib, files, file_mib) = (dir.clone(), *size_mib, *files, *file_mib);
            let report =
                tokio::task::spawn_blocking(move || bench_sign::run(&dir, size_mib, files, file_mib, quiet)).await??;
            out.emit(&report, || bench_sign::render(&report));
        }
        BenchCmd::Store { dir, size_mib, files, file_kib, keep } => {
            if *size_mib == 0 || *files == 0 || *file_kib == 0 {
                anyhow::bail!("--size-mib, --files and --file-kib must be at least 1");
            }
            let opts = bench::BenchOptions {
                dir: dir.clone(),
                size_mib: *size_mib,
                files: *files,
                file_kib: *file_kib,
                keep: *keep,
            };
            let quiet = cli.json || !std::io::stderr().is_terminal();
            let report = tokio::task::spawn_blocking(move || bench::run(&opts, quiet)).await??;
            out.emit(&report, || bench::render(&report));
        }
    }
    Ok(())
}

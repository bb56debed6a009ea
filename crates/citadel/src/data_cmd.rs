//! `citadel data …`: dataset versions from the command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Subcommand;

use citadel_control::{Caller, DataVersion, Workspace};
use citadel_data::IngestReport;

use crate::Out;

#[derive(Subcommand, Debug)]
pub enum DataCmd {
    /// Ingest a CSV or Parquet file as the next version of a dataset:
    /// validate, detect PII, mask, profile, check against the previous
    /// version, store. Exit code 2 when the version is quarantined.
    Add {
        file: PathBuf,
        #[arg(long)]
        name: String,
        /// The expectations file (TOML): types, rules, classification, masks, drift thresholds.
        #[arg(long)]
        expect: Option<PathBuf>,
    },
    /// Every dataset with its latest version.
    Ls,
    /// Every version of one dataset.
    Versions { name: String },
    /// A version's profile and checks (NAME or NAME@VERSION).
    Show {
        reference: String,
        /// Also write an HTML report with charts to this file.
        #[arg(long)]
        html: Option<PathBuf>,
    },
    /// Release a quarantined version for use (data stewards).
    Release {
        reference: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Export a version as CSV or Parquet (audited; restricted columns only
    /// for `dataset.read_restricted` holders).
    Get {
        reference: String,
        #[arg(short, long)]
        output: PathBuf,
        /// csv or parquet (default: from the output's extension).
        #[arg(long, value_parser = ["csv", "parquet"])]
        format: Option<String>,
        /// Reverse tokenized columns (needs `dataset.detokenize`).
        #[arg(long)]
        detokenize: bool,
    },
    /// Rows added, removed and changed between two versions, schema changes and drift.
    Diff { from: String, to: String },
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn num(x: Option<f64>) -> String {
    match x {
        None => "-".into(),
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{}", v as i64),
        Some(v) => format!("{v:.4}"),
    }
}

/// What became of the version a report describes.
#[derive(Clone, Copy, PartialEq)]
pub enum Outcome {
    Stored,
    /// Nothing stored: the error that follows lists the reasons.
    Rejected,
}

pub fn render_report(head: &str, r: &IngestReport, outcome: Outcome) -> String {
    let mut s = format!("{head}\n");
    s += &match outcome {
        Outcome::Stored => format!(
            "  {} rows · {} of {} columns stored · format {}\n",
            r.rows,
            r.stored_columns.len(),
            r.source_columns.len(),
            r.format
        ),
        Outcome::Rejected => {
            format!("  {} rows · {} columns read · format {}\n", r.rows, r.source_columns.len(), r.format)
        }
    };
    s += &format!(
        "\n  {:<18} {:<8} {:<13} {:<13} {:>7} {:>9} {:>12} {:>12}  pii\n",
        "column", "type", "class", "mask", "nulls", "distinct", "min", "max"
    );
    for c in &r.profile {
        let pii: Vec<String> =
            c.pii.iter().map(|d| format!("{:?} {:.0}% ({})", d.kind, d.confidence * 100.0, d.rule)).collect();
        s += &format!(
            "  {:<18} {:<8} {:<13} {:<13} {:>7} {:>9} {:>12} {:>12}  {}\n",
            c.name,
            c.column_type.as_str(),
            c.classification,
            c.mask.as_deref().unwrap_or("-"),
            pct(c.null_rate),
            format!("{}{}", if c.distinct_exact { "" } else { "~" }, c.distinct),
            num(c.min),
            num(c.max),
            if pii.is_empty() { "-".into() } else { pii.join(", ") }
        );
    }
    let dropped: Vec<&String> = r.source_columns.iter().filter(|c| !r.stored_columns.contains(c)).collect();
    if !dropped.is_empty() {
        s += &format!("  dropped: {}\n", dropped.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", "));
    }
    if !r.violations.is_empty() {
        s += "\n  violations:\n";
        for v in &r.violations {
            s += &format!(
                "    {}{}: {} row(s){}\n",
                v.column.as_ref().map(|c| format!("{c}: ")).unwrap_or_default(),
                v.rule,
                v.count,
                if v.examples.is_empty() { String::new() } else { format!(" — e.g. {}", v.examples.join("; ")) }
            );
        }
    }
    if !r.label_shares.is_empty() {
        let shares: Vec<String> = r.label_shares.iter().map(|(k, v)| format!("{k} {}", pct(*v))).collect();
        s += &format!("\n  label {}: {}\n", r.label.as_deref().unwrap_or("?"), shares.join(", "));
    }
    if let Some(k) = &r.k_anonymity {
        s += &format!(
            "  k-anonymity over {:?}: k = {}{} · {} groups · {} rows in groups below k={}{}\n",
            k.quasi_identifiers,
            k.k.map_or("?".into(), |k| k.to_string()),
            k.l.map(|l| format!(", l = {l} ({})", k.sensitive.as_deref().unwrap_or(""))).unwrap_or_default(),
            k.groups,
            k.rows_below_min_k,
            k.min_k,
            k.note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
        );
    }
    let d = &r.duplicates;
    s += &format!(
        "  duplicates {} · label flips on repeated features {}{}{}\n",
        pct(d.duplicate_rate),
        pct(d.label_flip_rate),
        d.label_flip_rate_vs_previous.map(|x| format!(" · relabelled vs previous {}", pct(x))).unwrap_or_default(),
        if d.measured_fraction < 1.0 {
            format!(" (measured on {} of rows)", pct(d.measured_fraction))
        } else {
            String::new()
        }
    );
    if !r.drift.is_empty() {
        s += &format!(
            "\n  drift against the previous version{}:\n",
            r.label_shift.map(|x| format!(" (label shift {})", pct(x))).unwrap_or_default()
        );
        s += &format!(
            "    {:<18} {:>8} {:>8} {:>8} {:>10} {:>10} {:>10}\n",
            "column", "PSI", "KS", "JS", "out-range", "outliers", "new-cat"
        );
        for c in &r.drift {
            s += &format!(
                "    {:<18} {:>8} {:>8} {:>8} {:>10} {:>10} {:>10}\n",
                c.column,
                num(c.psi),
                num(c.ks),
                num(c.js),
                c.out_of_range_rate.map_or("-".into(), pct),
                c.outlier_rate.map_or("-".into(), pct),
                c.new_category_rate.map_or("-".into(), pct)
            );
        }
    }
    for note in &r.notes {
        s += &format!("  note: {note}\n");
    }
    if !r.reasons.is_empty() && outcome == Outcome::Stored {
        s += "\n  reasons:\n";
        for reason in &r.reasons {
            s += &format!("    - {reason}\n");
        }
    }
    s
}

/// A version's report as `data show` prints it (and its HTML when asked),
/// gathered here or by the server.
pub(crate) fn show_version(v: &DataVersion, html: Option<&std::path::Path>, out: &Out) -> Result<i32> {
    if let Some(path) = html {
        crate::data_html::write(path, v).with_context(|| format!("writing {}", path.display()))?;
    }
    out.emit(v, || {
        let mut s = render_report(&version_head(v), &v.report, Outcome::Stored);
        if let Some(p) = html {
            s += &format!("\nHTML report: {}\n", p.display());
        }
        if v.status == "quarantined" {
            s += &format!(
                "hint: nothing reads it until a data steward reviews the reasons and runs `citadel data release {}@{} --note \"…\"`\n",
                v.dataset, v.version
            );
        }
        s
    });
    Ok(0)
}

pub(crate) fn version_head(v: &DataVersion) -> String {
    format!(
        "dataset {}@{}: {} (by {} at {}{}{})\n  artifact {} · source sha256 {}",
        v.dataset,
        v.version,
        v.status,
        v.created_by,
        v.created_at,
        v.released_by.as_ref().map(|r| format!(", released by {r}")).unwrap_or_default(),
        if v.revision > 1 {
            format!("; revision {}: data subjects' rows erased, see `citadel subject erasures`", v.revision)
        } else {
            String::new()
        },
        &v.artifact_id[..16.min(v.artifact_id.len())],
        &v.source_digest[..16.min(v.source_digest.len())]
    )
}

fn rows_progress(json: bool) -> (Arc<dyn Fn(u64) + Send + Sync>, Option<indicatif::ProgressBar>) {
    if json || !std::io::stderr().is_terminal() {
        return (Arc::new(|_| {}), None);
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} ingesting {human_pos} rows ({per_sec}) {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let b = bar.clone();
    (Arc::new(move |n| b.set_position(n)), Some(bar))
}

pub async fn run_data(ws: &Workspace, caller: &Caller, cmd: &DataCmd, out: &Out) -> Result<i32> {
    match cmd {
        DataCmd::Add { file, name, expect } => {
            let spec = match expect {
                Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?),
                None => None,
            };
            let (progress, bar) = rows_progress(out.json);
            let result = ws.data_add(caller, file, name, spec, progress).await;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            let v = match result {
                Ok(v) => v,
                Err(citadel_control::ControlError::DataRejected { dataset, report }) => {
                    if !out.json {
                        eprintln!(
                            "{}",
                            render_report(
                                &format!("dataset {dataset}: REJECTED, nothing stored"),
                                &report,
                                Outcome::Rejected
                            )
                        );
                    }
                    return Err(citadel_control::ControlError::DataRejected { dataset, report }.into());
                }
                Err(e) => return Err(e.into()),
            };
            out.emit(&v, || {
                let mut s = render_report(&version_head(&v), &v.report, Outcome::Stored);
                if v.status == "quarantined" {
                    s += &format!(
                        "hint: nothing reads it until a data steward reviews the reasons and runs `citadel data release {}@{} --note \"…\"`\n",
                        v.dataset, v.version
                    );
                }
                s
            });
            Ok(if v.status == "quarantined" { 2 } else { 0 })
        }
        DataCmd::Ls => {
            let list = ws.data_list(caller).await?;
            let rows: Vec<_> = list
                .iter()
                .map(|(n, v, s, r)| serde_json::json!({"dataset": n, "version": v, "status": s, "rows": r}))
                .collect();
            out.emit(&rows, || {
                let mut s = format!("{:<24} {:>7} {:<12} {:>12}\n", "dataset", "latest", "status", "rows");
                for (n, v, st, r) in &list {
                    s += &format!("{n:<24} {v:>7} {st:<12} {r:>12}\n");
                }
                s
            });
            Ok(0)
        }
        DataCmd::Versions { name } => {
            let list = ws.data_versions(caller, name).await?;
            out.emit(&list, || {
                let mut s = format!(
                    "{:>7} {:<12} {:>10} {:<16} {:<26} {}\n",
                    "version", "status", "rows", "by", "at", "source sha256"
                );
                for v in &list {
                    s += &format!(
                        "{:>7} {:<12} {:>10} {:<16} {:<26} {}\n",
                        v.version,
                        v.status,
                        v.rows,
                        v.created_by,
                        v.created_at,
                        &v.source_digest[..16.min(v.source_digest.len())]
                    );
                }
                s
            });
            Ok(0)
        }
        DataCmd::Show { reference, html } => {
            let v = ws.data_show(caller, reference).await?;
            show_version(&v, html.as_deref(), out)
        }
        DataCmd::Release { reference, note } => {
            let v = ws.data_release(caller, reference, note).await?;
            out.emit(&v, || format!("released {}@{}: now {}", v.dataset, v.version, v.status));
            Ok(0)
        }
        DataCmd::Get { reference, output, format, detokenize } => {
            let format = format.clone().unwrap_or_else(|| {
                if output.extension().is_some_and(|e| e == "parquet") { "parquet".into() } else { "csv".into() }
            });
            let r = ws.data_get(caller, reference, output, &format, *detokenize).await?;
            out.emit(&r, || {
                let mut s = format!(
                    "wrote {}@{} to {} ({} rows, {} columns, {})",
                    r.dataset,
                    r.version,
                    r.output.display(),
                    r.rows,
                    r.columns.len(),
                    r.format
                );
                if !r.withheld.is_empty() {
                    s += &format!("\nwithheld (restricted, needs dataset.read_restricted): {}", r.withheld.join(", "));
                }
                if !r.detokenized.is_empty() {
                    s += &format!("\ndetokenized: {}", r.detokenized.join(", "));
                }
                s
            });
            Ok(0)
        }
        DataCmd::Diff { from, to } => {
            let d = ws.data_diff(caller, from, to).await?;
            out.emit(&d, || {
                let mut s = format!(
                    "{} ({} rows) → {} ({} rows)\n  added {} · removed {} · changed {} · unchanged {}\n",
                    d.from,
                    d.rows_from,
                    d.to,
                    d.rows_to,
                    d.added,
                    d.removed,
                    d.changed.map_or("n/a (no dataset.key)".into(), |c| c.to_string()),
                    d.unchanged
                );
                if !d.columns_added.is_empty() {
                    s += &format!("  columns added: {}\n", d.columns_added.join(", "));
                }
                if !d.columns_removed.is_empty() {
                    s += &format!("  columns removed: {}\n", d.columns_removed.join(", "));
                }
                for t in &d.type_changes {
                    s += &format!("  type changed: {t}\n");
                }
                if !d.drift.is_empty() {
                    s += &format!("  {:<18} {:>8} {:>8} {:>8} {:>10}\n", "column", "PSI", "KS", "JS", "chi2 p");
                    for c in &d.drift {
                        s += &format!(
                            "  {:<18} {:>8} {:>8} {:>8} {:>10}\n",
                            c.column,
                            num(c.psi),
                            num(c.ks),
                            num(c.js),
                            c.chi2_pvalue.map_or("-".into(), |p| format!("{p:.3e}"))
                        );
                    }
                }
                s
            });
            Ok(0)
        }
    }
}

/// The hint for a rejected version.
pub const REJECTED_HINT: &str = "fix the data or the expectations file (the reasons above say which); with dataset.on_failure = \"quarantine\" failing versions are stored for a data steward to review";

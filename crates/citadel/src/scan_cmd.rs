//! `citadel scan` (fail closed by default) and `citadel allowlist` (the
//! workspace's reviewed extension of the scanner's allowlist).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use citadel_control::{Caller, Workspace};

use crate::Out;

#[derive(Debug, clap::Subcommand)]
pub enum AllowlistCmd {
    /// Allow one global (exact module.name) that a review found safe; audited with the reason.
    Add {
        global: String,
        /// Who reviewed it and why it is safe to import.
        #[arg(long)]
        reason: String,
    },
    /// Remove a global: later scans refuse it again.
    Rm { global: String },
    /// The globals this workspace allows beyond the built-in list.
    Ls,
}

/// `citadel scan PATH`: exit 2 when a finding reaches `fail_on`.
pub fn run_scan(path: &Path, fail_on: &str, sarif: &Option<PathBuf>, allow: &[String], out: &Out) -> Result<i32> {
    let opts = citadel_scan::ScanOptions { allow: allow.iter().cloned().collect() };
    for g in allow {
        if !citadel_scan::is_global_name(g) {
            anyhow::bail!(
                "--allow {g:?} is not a global's exact name\nhint: give module.name, e.g. --allow mylib.models.Builder"
            );
        }
        if let Some(why) = citadel_scan::known_dangerous(g) {
            anyhow::bail!(
                "--allow {g}: the scanner knows it as dangerous ({why})\nhint: a dangerous global is never allowed"
            );
        }
    }
    let reports = citadel_scan::scan_path_with(path, &opts)
        .map_err(|e| anyhow!("{e}\nhint: check the path exists and is readable"))?;
    let worst = citadel_scan::worst(&reports);
    let failed = match fail_on {
        "never" => false,
        "critical" => worst == Some(citadel_scan::Severity::Critical),
        _ => worst.is_some_and(citadel_scan::Severity::refuses),
    };
    out.emit(&serde_json::json!({"files": reports, "failed": failed, "fail_on": fail_on}), || {
        let mut s = String::new();
        let mut counts = [0usize; 3];
        for r in &reports {
            for f in &r.findings {
                counts[f.severity as usize] += 1;
                s += &format!("{:<8} {} [{}]: {}\n", f.severity.as_str(), f.location, f.rule, f.message);
            }
        }
        s += &format!(
            "{} file(s) scanned: {} critical, {} not judged (warning), {} info{}",
            reports.len(),
            counts[2],
            counts[1],
            counts[0],
            if failed {
                format!(
                    " - REFUSED (--fail-on {fail_on})\nhint: critical findings are known-dangerous and are never allowed; warnings are what the scanner could not judge. An import on no allowlist can be accepted after a review: --allow MODULE.NAME for this scan, or `citadel allowlist add MODULE.NAME --reason ...` (a workspace admin) for registration"
                )
            } else {
                String::new()
            }
        );
        s
    });
    // The report is out before the SARIF file is written: a bad --sarif path
    // does not hide the findings.
    if let Some(sarif) = sarif {
        let text = serde_json::to_vec_pretty(&citadel_scan::to_sarif(&reports))?;
        std::fs::write(sarif, text).with_context(|| format!("writing the SARIF file {}", sarif.display()))?;
    }
    Ok(if failed { 2 } else { 0 })
}

pub async fn run_allowlist(ws: &Workspace, caller: &Caller, cmd: &AllowlistCmd, out: &Out) -> Result<i32> {
    match cmd {
        AllowlistCmd::Add { global, reason } => {
            let e = ws.scan_allow_add(caller, global, reason).await?;
            out.emit(&e, || format!("allowed {} (audited; later scans in this workspace accept it)", e.global));
        }
        AllowlistCmd::Rm { global } => {
            ws.scan_allow_remove(caller, global).await?;
            out.emit(&serde_json::json!({"global": global, "removed": true}), || format!("removed {global}"));
        }
        AllowlistCmd::Ls => {
            let entries = ws.scan_allowlist(caller).await?;
            out.emit(&entries, || {
                if entries.is_empty() {
                    return "no globals allowed beyond the built-in list".into();
                }
                entries
                    .iter()
                    .map(|e| format!("{:<40} {} ({}, {})", e.global, e.reason, e.added_by, e.added_at))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
    }
    Ok(0)
}

//! `citadel report`: the compliance report (HTML, and PDF when Chromium is
//! installed) with the evidence it rests on as JSON beside it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use citadel_control::{Caller, Workspace};

use crate::Out;

#[derive(Debug, Serialize)]
struct Written {
    html: PathBuf,
    evidence: PathBuf,
    pdf: Option<PathBuf>,
    audit_verified: bool,
    datasets: usize,
    models: usize,
    notes: Vec<String>,
}

/// Chromium (Debian's `chromium`) or Google Chrome, when installed.
fn find_chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|t| {
        std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(t)).find(|p| p.is_file()))
    })
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::out_file::write(path, bytes, crate::out_file::Existing::Replace)
        .with_context(|| format!("writing {}", path.display()))
}

pub async fn run_report(ws: &Workspace, caller: &Caller, dir: &Path, pdf: bool, out: &Out) -> Result<i32> {
    let evidence = ws.compliance_evidence(caller).await?;
    write_report(&evidence, dir, pdf, out)
}

/// Writes the report of `evidence` (gathered here or by the server) into `dir`.
pub fn write_report(evidence: &citadel_control::ComplianceEvidence, dir: &Path, pdf: bool, out: &Out) -> Result<i32> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let html = dir.join("compliance-report.html");
    let json = dir.join("evidence.json");
    write_new(&html, crate::report_html::render(evidence).as_bytes())?;
    write_new(&json, &serde_json::to_vec_pretty(evidence)?)?;
    let mut notes = Vec::new();
    let pdf_path = if pdf {
        let Some(chromium) = find_chromium() else {
            bail!(
                "no PDF converter: --pdf needs Chromium (Debian: apt-get install chromium)\nhint: open {} in a browser and print it",
                html.display()
            );
        };
        let target = dir.join("compliance-report.pdf");
        let profile = tempfile::tempdir()?;
        let o = Command::new(chromium)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--print-to-pdf={}", target.display()))
            .arg(format!("file://{}", std::fs::canonicalize(&html)?.display()))
            .output()
            .context("running chromium")?;
        if !o.status.success() || !target.is_file() {
            bail!(
                "chromium could not print the report: {}",
                String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("")
            );
        }
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600))?;
        }
        Some(target)
    } else {
        if find_chromium().is_some() {
            notes.push("add --pdf for a PDF copy".into());
        }
        None
    };
    let w = Written {
        html,
        evidence: json,
        pdf: pdf_path,
        audit_verified: evidence.audit.verified,
        datasets: evidence.datasets.len(),
        models: evidence.models.len(),
        notes,
    };
    out.emit(&w, || {
        let mut s = format!(
            "compliance report: {} ({} dataset(s), {} model version(s)); evidence: {}\n",
            w.html.display(),
            w.datasets,
            w.models,
            w.evidence.display()
        );
        if let Some(p) = &w.pdf {
            s += &format!("PDF: {}\n", p.display());
        }
        if !w.audit_verified {
            s += "WARNING: the audit log failed verification; the report says so on its first page\n";
        }
        s
    });
    // A report on a tampered log is still written, and the exit code says so.
    Ok(if evidence.audit.verified { 0 } else { 2 })
}

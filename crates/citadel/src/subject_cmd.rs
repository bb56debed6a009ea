//! `citadel subject …`: data-subject rights (GDPR Art. 15, 17, 20).

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use citadel_control::{Caller, SignedReceipt, SubjectExport, Workspace};
use citadel_data::erase::Subject;

use crate::Out;

/// Who the subject is: `--match column=value` (all must hold) or a CSV of keys.
#[derive(Args, Debug, Clone)]
pub struct SubjectArgs {
    /// The dataset to search.
    #[arg(long)]
    dataset: String,
    /// COLUMN=VALUE as the value was in the source file; repeat to require
    /// several columns. Pseudonymized and tokenized columns match too.
    #[arg(long = "match", value_name = "COLUMN=VALUE")]
    matches: Vec<String>,
    /// A CSV file of subjects: a header of column names, one subject per line.
    #[arg(long, value_name = "FILE", conflicts_with = "matches")]
    keys: Option<PathBuf>,
    /// The most rows the request may touch across versions: conditions that
    /// match more name a population, not a person, and are refused.
    #[arg(long, default_value_t = 1000)]
    max_rows: u64,
}

impl SubjectArgs {
    /// The request body for the server: the subjects as `[column, value]`
    /// conditions (in a body, never a URL).
    fn body(&self, reason: Option<&str>) -> Result<serde_json::Value> {
        let subjects: Vec<Vec<(String, String)>> = self
            .subjects()?
            .into_iter()
            .map(|s| s.conditions.into_iter().map(|c| (c.column, c.value)).collect())
            .collect();
        Ok(
            serde_json::json!({"dataset": self.dataset, "subjects": subjects, "max_rows": self.max_rows, "reason": reason}),
        )
    }

    fn subjects(&self) -> Result<Vec<Subject>> {
        match &self.keys {
            Some(path) => Ok(Subject::from_csv(path)?),
            None if self.matches.is_empty() => bail!("name the subject with --match COLUMN=VALUE or --keys FILE"),
            None => Ok(vec![Subject::parse(&self.matches)?]),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum SubjectCmd {
    /// Erase a data subject's rows from every version of a dataset (Art. 17):
    /// each version holding them is rewritten without them, the old data is
    /// deleted from the store, models trained on it are flagged, and a
    /// signed receipt records what was done (without the subject's values).
    Erase {
        #[command(flatten)]
        who: SubjectArgs,
        /// The request's reference (a ticket id); never the subject's name.
        #[arg(long)]
        reason: String,
    },
    /// Every stored row of a data subject across versions (Art. 15, 20), as
    /// JSON or CSV. Audited; tokens are reversed, pseudonyms cannot be.
    Export {
        #[command(flatten)]
        who: SubjectArgs,
        /// Write here (a new file) instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[arg(long, value_parser = ["json", "csv"], default_value = "json")]
        format: String,
    },
    /// Every erasure with its state.
    Erasures,
    /// One erasure's receipt and whether its signature verifies.
    Receipt { id: String },
}

fn render_receipt(r: &SignedReceipt) -> String {
    let c = &r.receipt;
    let mut s = format!(
        "erasure {} on dataset {}: {}{}\n  requested by {} ({}), committed {}, completed {}\n  versions searched: {}, rewritten: {}, could not hold the subject: {}\n",
        c.id,
        c.dataset,
        r.status,
        if r.verified { ", receipt signature verified" } else { ", receipt NOT signed or not verified" },
        c.requested_by,
        c.reason,
        c.committed_at,
        c.completed_at.as_deref().unwrap_or("-"),
        c.versions_searched,
        c.versions.len(),
        c.versions_skipped.len(),
    );
    s += &format!("  subjects: {} (named by keyed hashes), columns: {}\n", c.subjects.len(), c.columns.join(", "));
    for v in &c.versions {
        s += &format!(
            "  {}@{} → revision {}: {} of {} rows removed, {}/{} row groups rewritten, {} new bytes of {} ({:.2}%)\n",
            c.dataset,
            v.version,
            v.revision,
            v.rows_removed,
            v.rows_before,
            v.row_groups_changed,
            v.row_groups,
            v.bytes_written,
            v.bytes_total,
            100.0 * v.bytes_written as f64 / v.bytes_total.max(1) as f64
        );
    }
    s += &format!(
        "  deleted from the store: {} chunk(s), {} object(s), {} bytes\n",
        c.chunks_deleted, c.objects_deleted, c.bytes_freed
    );
    if c.models_flagged.is_empty() {
        s += "  models flagged: none\n";
    } else {
        s += &format!("  models flagged (not promoted until retrained): {}\n", c.models_flagged.join(", "));
    }
    s
}

fn export_csv(e: &SubjectExport) -> Result<Vec<u8>> {
    let mut columns: Vec<String> = Vec::new();
    for r in &e.rows {
        for k in r.values.keys() {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut head = vec!["dataset".to_string(), "version".into(), "row".into()];
    head.extend(columns.iter().cloned());
    w.write_record(&head)?;
    for r in &e.rows {
        let mut rec = vec![r.dataset.clone(), r.version.to_string(), r.row.to_string()];
        for c in &columns {
            rec.push(match r.values.get(c) {
                None | Some(serde_json::Value::Null) => String::new(),
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
            });
        }
        w.write_record(&rec)?;
    }
    w.into_inner().map_err(|e| anyhow::anyhow!("writing CSV: {e}"))
}

/// The same commands through `citadel server` (the rendering is shared).
pub async fn run_subject_remote(remote: &crate::server_cmd::Remote, cmd: &SubjectCmd, out: &Out) -> Result<i32> {
    let parse = |v: serde_json::Value| -> Result<SignedReceipt> {
        serde_json::from_value(v).map_err(|e| anyhow::anyhow!("the server's receipt does not parse ({e})"))
    };
    match cmd {
        SubjectCmd::Erase { who, reason } => {
            let r = parse(remote.call("POST", "/api/v1/subjects/erase", Some(who.body(Some(reason))?)).await?)?;
            let skipped = !r.receipt.versions_skipped.is_empty();
            out.emit(&r, || render_receipt(&r));
            Ok(if skipped { 3 } else { 0 })
        }
        SubjectCmd::Export { who, output, format } => {
            if let Some(o) = output
                && o.symlink_metadata().is_ok()
            {
                bail!("{} exists; choose a new file (an export never replaces one)", o.display());
            }
            let v = remote.call("POST", "/api/v1/subjects/export", Some(who.body(None)?)).await?;
            let e: SubjectExport =
                serde_json::from_value(v).map_err(|e| anyhow::anyhow!("the server's export does not parse ({e})"))?;
            write_export(&e, output.as_ref(), format, out)
        }
        SubjectCmd::Erasures => {
            let v = remote.call("GET", "/api/v1/erasures", None).await?;
            let list: Vec<SignedReceipt> =
                serde_json::from_value(v).map_err(|e| anyhow::anyhow!("the server's receipts do not parse ({e})"))?;
            out.emit(&list, || {
                if list.is_empty() {
                    "no erasures\n".into()
                } else {
                    list.iter().map(render_receipt).collect::<Vec<_>>().join("\n")
                }
            });
            Ok(0)
        }
        SubjectCmd::Receipt { id } => {
            let id: String =
                id.bytes().filter(|b| b.is_ascii_alphanumeric() || b"-_".contains(b)).map(char::from).collect();
            let r = parse(remote.call("GET", &format!("/api/v1/erasures/{id}"), None).await?)?;
            out.emit(&r, || render_receipt(&r));
            Ok(if r.verified { 0 } else { 1 })
        }
    }
}

/// Writes an export (to `output`, a new file, or stdout) as JSON or CSV.
fn write_export(e: &SubjectExport, output: Option<&PathBuf>, format: &str, out: &Out) -> Result<i32> {
    if e.rows.is_empty() {
        return Err(citadel_control::ControlError::NoSubjectRows {
            dataset: e.dataset.clone(),
            versions: e.versions_searched,
        }
        .into());
    }
    let bytes = if format == "csv" { export_csv(e)? } else { serde_json::to_vec_pretty(e)? };
    match output {
        Some(path) => {
            crate::out_file::write(path, &bytes, crate::out_file::Existing::Keep)
                .with_context(|| format!("writing {}", path.display()))?;
            let summary = serde_json::json!({"dataset": e.dataset, "rows": e.rows.len(), "output": path, "format": format, "pseudonymized": e.pseudonymized});
            out.emit(&summary, || {
                let mut s =
                    format!("{} row(s) of the subject in {} written to {}\n", e.rows.len(), e.dataset, path.display());
                if !e.pseudonymized.is_empty() {
                    s += &format!(
                        "note: {} stored as keyed pseudonyms; the original values are not held\n",
                        e.pseudonymized.join(", ")
                    );
                }
                s
            });
        }
        None => crate::write_stdout(&String::from_utf8_lossy(&bytes)),
    }
    Ok(0)
}

pub async fn run_subject(ws: &Workspace, caller: &Caller, cmd: &SubjectCmd, out: &Out) -> Result<i32> {
    match cmd {
        SubjectCmd::Erase { who, reason } => {
            let subjects = who.subjects()?;
            let show = !out.json && std::io::stderr().is_terminal();
            let bar = show.then(|| {
                let b = indicatif::ProgressBar::new_spinner();
                b.enable_steady_tick(std::time::Duration::from_millis(120));
                b
            });
            let b2 = bar.clone();
            let progress = move |msg: &str| {
                if let Some(b) = &b2 {
                    b.set_message(msg.to_string());
                }
            };
            let result = ws.subject_erase(caller, &who.dataset, subjects, reason, who.max_rows, &progress).await;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            let r = result?;
            let skipped = !r.receipt.versions_skipped.is_empty();
            out.emit(&r, || {
                let mut s = render_receipt(&r);
                if skipped {
                    s += "WARNING: some versions could not be searched for this subject:\n";
                    for v in &r.receipt.versions_skipped {
                        s += &format!("  {}@{}: {}\n", r.receipt.dataset, v.version, v.reasons.join("; "));
                    }
                    s += "hint: erase again naming the subject by the columns those versions have (e.g. a renamed column); exit code 3\n";
                }
                if r.status != "complete" {
                    s += "note: the rows are gone from every version; the old objects are deleted (and the receipt signed) as soon as no other write is in progress\nhint: `citadel subject erasures` finishes it\n";
                }
                s
            });
            // Done, but some versions could not hold this subject's key: say so.
            Ok(if skipped { 3 } else { 0 })
        }
        SubjectCmd::Export { who, output, format } => {
            let subjects = who.subjects()?;
            if let Some(o) = output
                && o.symlink_metadata().is_ok()
            {
                bail!("{} exists; choose a new file (an export never replaces one)", o.display());
            }
            let e = ws.subject_export(caller, &who.dataset, subjects, who.max_rows).await?;
            write_export(&e, output.as_ref(), format, out)
        }
        SubjectCmd::Erasures => {
            let list = ws.erasure_list(caller).await?;
            out.emit(&list, || {
                if list.is_empty() {
                    return "no erasures\n".into();
                }
                list.iter().map(render_receipt).collect::<Vec<_>>().join("\n")
            });
            Ok(0)
        }
        SubjectCmd::Receipt { id } => {
            let r = ws.erasure_receipt(caller, id).await?;
            out.emit(&r, || render_receipt(&r));
            Ok(if r.verified { 0 } else { 1 })
        }
    }
}

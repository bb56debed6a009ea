//! `citadel monitor` (live drift verdicts, judging closed windows now) and
//! `citadel incident` (list, show with a timeline, acknowledge, resolve).

use std::path::PathBuf;

use anyhow::{Context, Result};
use citadel_control::{Caller, Workspace};
use citadel_types::Timestamp;

use crate::Out;

#[derive(clap::Subcommand, Debug, Clone)]
pub enum MonitorCmd {
    /// The latest window verdicts of an endpoint: drift per feature (PSI,
    /// KS, JS against the training data), out-of-distribution rates, the
    /// predicted classes' drift and the detections.
    Status {
        endpoint: String,
        /// Windows to show, newest first
        #[arg(long, default_value_t = 5)]
        windows: i64,
        /// Also write an HTML report with charts of each feature (reference vs live)
        #[arg(long)]
        html: Option<PathBuf>,
    },
    /// Judge every closed window whose grace period is over now (gateways do
    /// this on their own every second; this is for when none runs).
    Check,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum IncidentCmd {
    /// Open and acknowledged incidents, newest first.
    Ls {
        /// Resolved ones too
        #[arg(long)]
        all: bool,
    },
    /// One incident: its evidence and timeline.
    Show {
        id: String,
        /// Also write an HTML report (evidence charts and timeline)
        #[arg(long)]
        html: Option<PathBuf>,
    },
    /// Say someone is on it.
    Ack {
        id: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Close it (the next detection opens a new one).
    Resolve {
        id: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Reverse what the playbook did for it: lift throttles and quarantines,
    /// enable a disabled principal, serve again what a rollback replaced.
    Undo { id: String },
    /// Evaluate the playbook for it now (policies/playbook.rego, else the
    /// built-in one) and run its actions, or with --dry-run only say them.
    Playbook {
        id: String,
        #[arg(long)]
        dry_run: bool,
    },
}

pub async fn run_monitor(ws: &Workspace, caller: &Caller, cmd: MonitorCmd, out: &Out) -> Result<i32> {
    match cmd {
        MonitorCmd::Status { endpoint, windows, html } => {
            let verdicts = ws.monitor_status(caller, &endpoint, windows).await?;
            if let Some(path) = &html {
                crate::out_file::write(
                    path,
                    crate::monitor_html::render_status(&endpoint, &verdicts).as_bytes(),
                    crate::out_file::Existing::Replace,
                )
                .with_context(|| format!("writing {}", path.display()))?;
            }
            out.emit(&verdicts, || {
                if verdicts.is_empty() {
                    return format!(
                        "no window of {endpoint} has been judged yet\nhint: windows are judged after they close and their grace period passes (monitoring.window_secs + grace_secs); a gateway must be serving the endpoint"
                    );
                }
                let mut s = String::new();
                for v in &verdicts {
                    s.push_str(&format!(
                        "{} → {}  {}@{}  {} requests, {} rows, {} replica(s){}\n",
                        v.window_start.to_rfc3339(),
                        v.window_end.to_rfc3339(),
                        v.model,
                        v.version,
                        v.requests,
                        v.rows,
                        v.replicas,
                        v.reference.as_deref().map(|r| format!(", against {r}")).unwrap_or_default()
                    ));
                    if let Some(n) = &v.note {
                        s.push_str(&format!("  note: {n}\n"));
                    }
                    for d in &v.drift {
                        s.push_str(&format!(
                            "  {:<20} {:<11} PSI {:>6.3}  {} {}  OOD {:>5.1}%{}\n",
                            d.stats.column,
                            d.stats.test,
                            d.stats.psi.unwrap_or(f64::NAN),
                            if d.stats.ks.is_some() { "KS" } else { "χ²" },
                            d.stats
                                .ks
                                .map(|k| format!("{k:>7.3}"))
                                .or(d.stats.chi2.map(|c| format!("{c:>7.1}")))
                                .unwrap_or_else(|| "      -".into()),
                            d.ood_rate * 100.0,
                            match (d.judged, d.drifted, d.out_of_distribution) {
                                (false, ..) => "  (not judged: too few rows)",
                                (true, true, true) => "  DRIFTED, OUT OF DISTRIBUTION",
                                (true, true, false) => "  DRIFTED",
                                (true, false, true) => "  OUT OF DISTRIBUTION",
                                _ => "",
                            }
                        ));
                    }
                    if let Some(p) = &v.prediction {
                        s.push_str(&format!(
                            "  predictions          classes     PSI {:>6.3}{}\n",
                            p.stats.psi.unwrap_or(f64::NAN),
                            if p.drifted { "  DRIFTED" } else { "" }
                        ));
                    }
                    for p in &v.performance {
                        s.push_str(&format!(
                            "  live accuracy {}@{}: {:.1}% on {} labels (ECE {:.3}){}{}\n",
                            p.model,
                            p.version,
                            p.accuracy * 100.0,
                            p.labels,
                            p.ece,
                            p.baseline.as_ref().map(|(what, a)| format!(", vs {what} {:.1}%", a * 100.0)).unwrap_or_default(),
                            if p.degraded { "  DEGRADED" } else { "" }
                        ));
                    }
                    for d in &v.detections {
                        s.push_str(&format!("  ! {} ({}): {}\n", d.kind, d.severity.as_str(), d.summary));
                    }
                    if !v.incidents.is_empty() {
                        s.push_str(&format!("  incidents: {}\n", v.incidents.join(", ")));
                    }
                }
                if let Some(p) = &html {
                    s.push_str(&format!("report: {}\n", p.display()));
                }
                s
            });
            Ok(0)
        }
        MonitorCmd::Check => {
            let now = Timestamp::now();
            let verdicts = ws.monitor_evaluate(caller, now).await?;
            let auth = ws.monitor_evaluate_auth(caller, now).await?;
            if !out.json {
                for a in &auth {
                    for d in &a.detections {
                        outln!("authentication window {}: {} ({})", a.window_start.to_rfc3339(), d.summary, d.kind);
                    }
                }
            }
            out.emit(&verdicts, || {
                if verdicts.is_empty() {
                    "no closed window was waiting to be judged".into()
                } else {
                    verdicts
                        .iter()
                        .map(|v| {
                            format!(
                                "{} {}@{} window {}: {} rows, {} detection(s){}",
                                v.endpoint,
                                v.model,
                                v.version,
                                v.window_start.to_rfc3339(),
                                v.rows,
                                v.detections.len(),
                                if v.incidents.is_empty() {
                                    String::new()
                                } else {
                                    format!(" → {}", v.incidents.join(", "))
                                }
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                }
            });
            Ok(0)
        }
    }
}

pub async fn run_incident(ws: &Workspace, caller: &Caller, cmd: IncidentCmd, out: &Out) -> Result<i32> {
    match cmd {
        IncidentCmd::Ls { all } => {
            let list = ws.incident_list(caller, all).await?;
            out.emit(&list, || {
                if list.is_empty() {
                    return if all { "no incidents".into() } else { "no open incidents".into() };
                }
                list.iter()
                    .map(|i| {
                        format!(
                            "{}  {:<8} {:<12} {:<26} {}{}  ×{}  {}",
                            i.id,
                            i.severity.as_str(),
                            i.status,
                            i.kind,
                            i.endpoint,
                            i.principal.as_deref().map(|p| format!(" ({p})")).unwrap_or_default(),
                            i.occurrences,
                            i.summary
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Ok(0)
        }
        IncidentCmd::Show { id, html } => {
            let (incident, events) = ws.incident_show(caller, &id).await?;
            if let Some(path) = &html {
                crate::out_file::write(
                    path,
                    crate::monitor_html::render_incident(&incident, &events).as_bytes(),
                    crate::out_file::Existing::Replace,
                )
                .with_context(|| format!("writing {}", path.display()))?;
            }
            let value = serde_json::json!({"incident": incident, "timeline": events});
            out.emit(&value, || {
                let last_detected = crate::monitor_html::last_detected(&incident, &events);
                let mut s = format!(
                    "{} ({}, {}): {}\nendpoint {}{}{}\nopened {}, last detected {}, {} window(s)\n",
                    incident.id,
                    incident.severity.as_str(),
                    incident.status,
                    incident.summary,
                    incident.endpoint,
                    incident
                        .model
                        .as_ref()
                        .map(|m| format!(", model {m}@{}", incident.version.unwrap_or(0)))
                        .unwrap_or_default(),
                    incident.principal.as_deref().map(|p| format!(", principal {p}")).unwrap_or_default(),
                    incident.opened_at.to_rfc3339(),
                    last_detected.to_rfc3339(),
                    incident.occurrences
                );
                if incident.evidence.as_object().is_some_and(|o| !o.is_empty()) {
                    // Statistics and counts only (incidents never hold payload values).
                    s.push_str("\nevidence:\n");
                    s.push_str(&evidence_text(&incident.evidence));
                }
                s.push_str("\ntimeline:\n");
                for e in &events {
                    let detail = crate::monitor_html::event_detail(e);
                    let detail = if detail.is_empty() { detail } else { format!(": {detail}") };
                    s.push_str(&format!("  {}  {:<16} by {}{detail}\n", e.at.to_rfc3339(), e.kind, e.actor));
                }
                if let Some(p) = &html {
                    s.push_str(&format!("report: {}\n", p.display()));
                }
                s
            });
            Ok(0)
        }
        IncidentCmd::Ack { id, note } => {
            let i = ws.incident_ack(caller, &id, &note).await?;
            out.emit(&i, || format!("{} acknowledged", i.id));
            Ok(0)
        }
        IncidentCmd::Resolve { id, note } => {
            let i = ws.incident_resolve(caller, &id, &note).await?;
            out.emit(&i, || format!("{} resolved", i.id));
            Ok(0)
        }
        IncidentCmd::Undo { id } => {
            let done = ws.incident_undo(caller, &id).await?;
            out.emit(
                &done,
                || {
                    if done.is_empty() { format!("nothing of {id} is left to undo") } else { done.join("\n") }
                },
            );
            Ok(0)
        }
        IncidentCmd::Playbook { id, dry_run } => {
            let mode =
                if dry_run { citadel_control::PlaybookMode::DryRun } else { citadel_control::PlaybookMode::Enforce };
            let outcomes = ws.playbook_run(caller, &id, mode).await?;
            out.emit(&outcomes, || {
                if outcomes.is_empty() {
                    return "the playbook decides no action for this incident".into();
                }
                outcomes
                    .iter()
                    .map(|o| format!("{:<18} {}{}", o.action.name(), if o.ok { "" } else { "FAILED: " }, o.result))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Ok(if outcomes.iter().all(|o| o.ok) { 0 } else { 1 })
        }
    }
}

/// An incident's evidence as text, a line a figure: scalars as they are; an
/// object (the prediction's drift), and each object of a list (the drifted
/// features) a line, with its scalar fields (histogram bins are in `--json`
/// and the HTML report); anything else as compact JSON, cut at 160
/// characters.
fn evidence_text(evidence: &serde_json::Value) -> String {
    use serde_json::Value;
    fn scalar(v: &Value) -> Option<String> {
        match v {
            Value::String(t) => Some(t.clone()),
            Value::Number(n) => Some(match n.as_f64() {
                Some(x) if n.is_f64() => format!("{x:.4}"),
                _ => n.to_string(),
            }),
            Value::Bool(b) => Some(b.to_string()),
            Value::Null => Some("null".into()),
            Value::Array(_) | Value::Object(_) => None,
        }
    }
    // An object's scalar fields, `name=value` joined.
    let fields = |item: &Value| -> String {
        let fields: Vec<String> =
            item.as_object().into_iter().flatten().filter_map(|(f, x)| scalar(x).map(|t| format!("{f}={t}"))).collect();
        fields.join(", ")
    };
    let mut out = String::new();
    for (k, v) in evidence.as_object().into_iter().flatten() {
        match (scalar(v), v) {
            (Some(text), _) => out.push_str(&format!("  {k}: {text}\n")),
            (None, Value::Object(_)) => out.push_str(&format!("  {k}: {}\n", fields(v))),
            (None, Value::Array(items)) if !items.is_empty() && items.iter().all(Value::is_object) => {
                for (i, item) in items.iter().enumerate() {
                    out.push_str(&format!("  {k}[{i}]: {}\n", fields(item)));
                }
            }
            (None, other) => {
                let text = other.to_string();
                let text =
                    if text.chars().count() > 160 { text.chars().take(157).collect::<String>() + "…" } else { text };
                out.push_str(&format!("  {k}: {text}\n"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::evidence_text;

    #[test]
    fn drift_evidence_is_a_line_a_feature_without_its_bins() {
        let e = serde_json::json!({"rows": 1500, "prediction": {"column": "label", "psi": 0.5, "bins": []}, "features": [
            {"column": "hours-per-week", "psi": 0.3112345, "ks": 0.25, "bins": [["< 40", 0.1, 0.2]]},
            {"column": "education", "psi": 0.21, "drifted": true}
        ]});
        let text = evidence_text(&e);
        assert_eq!(
            text,
            "  features[0]: column=hours-per-week, ks=0.2500, psi=0.3112\n  features[1]: column=education, drifted=true, psi=0.2100\n  prediction: column=label, psi=0.5000\n  rows: 1500\n"
        );
    }
}

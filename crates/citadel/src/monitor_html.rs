//! Self-contained HTML for live monitoring: an endpoint's window verdicts
//! (one chart per feature: the training reference's share of each bin next
//! to the live share) and an incident (its evidence charts and timeline).
//! No scripts, no external resources.

use std::fmt::Write as _;

use citadel_control::{Incident, IncidentEvent, WindowVerdict};
use citadel_data::sketch::LiveDrift;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}\
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em}table{border-collapse:collapse;margin:.5em 0}\
td,th{border-bottom:1px solid #ddd;padding:.25em .6em;text-align:left;font-size:.9em}\
.bad{color:#b00020;font-weight:600}.ok{color:#2e7d32}.grid{display:flex;flex-wrap:wrap;gap:1em}\
.card{border:1px solid #ddd;border-radius:6px;padding:.6em}.legend span{display:inline-block;width:.8em;height:.8em;margin:0 .3em 0 1em}\
.note{color:#555;font-style:italic}";

/// Paired bars: reference share (grey) and live share (blue, red when drifted) per bin.
fn paired_bars(d: &LiveDrift) -> String {
    let (width, height) = (320.0, 110.0);
    let max = d.bins.iter().map(|b| b.1.max(b.2)).fold(0.0, f64::max).max(1e-12);
    let n = d.bins.len().max(1) as f64;
    let w = width / n;
    let live = if d.drifted || d.out_of_distribution { "#c62828" } else { "#3b6ea5" };
    let mut svg =
        format!(r#"<svg width="{width}" height="{}" role="img" aria-label="{}">"#, height + 16.0, esc(&d.stats.column));
    for (i, (label, r, l)) in d.bins.iter().enumerate() {
        let x = i as f64 * w;
        for (j, (v, color, who)) in [(r, "#b0b0b0", "training"), (l, live, "live")].into_iter().enumerate() {
            let h = v / max * height;
            let _ = write!(
                svg,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{}: {who} {:.1}%</title></rect>"##,
                x + 1.0 + j as f64 * (w / 2.0 - 1.0),
                height - h,
                (w / 2.0 - 1.5).max(0.5),
                h,
                esc(label),
                v * 100.0
            );
        }
    }
    if let (Some(first), Some(last)) = (d.bins.first(), d.bins.last()) {
        let _ = write!(
            svg,
            r##"<text x="0" y="{}" font-size="10">{}</text><text x="{width}" y="{}" font-size="10" text-anchor="end">{}</text>"##,
            height + 13.0,
            esc(&first.0),
            height + 13.0,
            esc(&last.0)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn feature_card(d: &LiveDrift) -> String {
    let verdict = match (d.judged, d.drifted, d.out_of_distribution) {
        (false, ..) => r#"<span class="note">not judged (too few rows)</span>"#,
        (true, true, true) => r#"<span class="bad">drifted, out of distribution</span>"#,
        (true, true, false) => r#"<span class="bad">drifted</span>"#,
        (true, false, true) => r#"<span class="bad">out of distribution</span>"#,
        _ => r#"<span class="ok">stable</span>"#,
    };
    let stat = match (d.stats.ks, d.stats.chi2) {
        (Some(ks), _) => format!("KS {ks:.3} (p {:.2e})", d.stats.ks_pvalue.unwrap_or(f64::NAN)),
        (_, Some(c)) => format!("χ² {c:.1} (p {:.2e})", d.stats.chi2_pvalue.unwrap_or(f64::NAN)),
        _ => String::new(),
    };
    format!(
        r#"<div class="card"><b>{}</b> — {verdict}<br><small>PSI {:.3} · JS {:.3} · {stat} · outside training {:.1}% · {} rows</small><br>{}</div>"#,
        esc(&d.stats.column),
        d.stats.psi.unwrap_or(f64::NAN),
        d.stats.js.unwrap_or(f64::NAN),
        d.ood_rate * 100.0,
        d.rows,
        paired_bars(d)
    )
}

const LEGEND: &str = r##"<p class="legend">bins: <span style="background:#b0b0b0"></span>training data <span style="background:#3b6ea5"></span>live <span style="background:#c62828"></span>live, flagged</p>"##;

/// An endpoint's latest verdicts, newest first.
pub fn render_status(endpoint: &str, verdicts: &[WindowVerdict]) -> String {
    let mut h = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Monitoring: {e}</title><style>{STYLE}</style></head><body><h1>Live monitoring: {e}</h1>{LEGEND}",
        e = esc(endpoint)
    );
    if verdicts.is_empty() {
        h.push_str("<p class=\"note\">No window has been judged yet.</p>");
    }
    for v in verdicts {
        let _ = write!(
            h,
            "<h2>{} → {} · {}@{}</h2><p>{} requests, {} rows, {} replica(s){}</p>",
            esc(&v.window_start.to_rfc3339()),
            esc(&v.window_end.to_rfc3339()),
            esc(&v.model),
            v.version,
            v.requests,
            v.rows,
            v.replicas,
            v.reference.as_deref().map(|r| format!(", compared with {}", esc(r))).unwrap_or_default()
        );
        if let Some(n) = &v.note {
            let _ = write!(h, "<p class=\"note\">{}</p>", esc(n));
        }
        if !v.detections.is_empty() {
            h.push_str("<table><tr><th>detection</th><th>severity</th><th>principal</th><th>what</th></tr>");
            for d in &v.detections {
                let _ = write!(
                    h,
                    "<tr><td class=\"bad\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&d.kind),
                    d.severity.as_str(),
                    esc(d.principal.as_deref().unwrap_or("—")),
                    esc(&d.summary)
                );
            }
            h.push_str("</table>");
        }
        h.push_str("<div class=\"grid\">");
        // Flagged features first.
        let mut features: Vec<&LiveDrift> = v.drift.iter().chain(v.prediction.iter()).collect();
        features.sort_by_key(|d| !(d.drifted || d.out_of_distribution));
        for d in features {
            h.push_str(&feature_card(d));
        }
        h.push_str("</div>");
    }
    h.push_str("</body></html>");
    h
}

/// What a timeline entry says: for an action, which one, whether it was a
/// dry run or failed, and its result; else its summary, note, result or error.
pub fn event_detail(e: &IncidentEvent) -> String {
    let d = &e.details;
    if e.kind == "action" {
        format!(
            "{}{} — {}",
            d["action"]["action"].as_str().unwrap_or("?"),
            if d["dry_run"] == true {
                " (dry run)"
            } else if d["ok"] == false {
                " (FAILED)"
            } else {
                ""
            },
            d["result"].as_str().unwrap_or("")
        )
    } else {
        ["summary", "note", "result", "error"]
            .iter()
            .find_map(|k| d.get(*k).and_then(|v| v.as_str()).filter(|t| !t.is_empty()))
            .unwrap_or_default()
            .to_string()
    }
}

/// When an incident was last detected (its timeline's last `opened` or
/// `detected`; `updated_at` also moves on ack and resolve).
pub fn last_detected(i: &Incident, events: &[IncidentEvent]) -> citadel_types::Timestamp {
    events.iter().filter(|e| e.kind == "opened" || e.kind == "detected").map(|e| e.at).max().unwrap_or(i.opened_at)
}

/// One incident: summary, evidence (charts for drifted features) and timeline.
pub fn render_incident(i: &Incident, events: &[IncidentEvent]) -> String {
    let mut h = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Incident {id}</title><style>{STYLE}</style></head><body><h1>Incident {id}</h1>",
        id = esc(&i.id)
    );
    let _ = write!(
        h,
        "<table><tr><th>kind</th><td>{}</td></tr><tr><th>severity</th><td>{}</td></tr><tr><th>status</th><td>{}</td></tr>\
         <tr><th>endpoint</th><td>{}</td></tr><tr><th>model</th><td>{}</td></tr><tr><th>principal</th><td>{}</td></tr>\
         <tr><th>opened</th><td>{}</td></tr><tr><th>last detected</th><td>{} ({} window(s))</td></tr></table><p><b>{}</b></p>",
        esc(&i.kind),
        i.severity.as_str(),
        esc(&i.status),
        esc(&i.endpoint),
        esc(&i.model.as_ref().map(|m| format!("{m}@{}", i.version.unwrap_or(0))).unwrap_or_else(|| "—".into())),
        esc(i.principal.as_deref().unwrap_or("—")),
        esc(&i.opened_at.to_rfc3339()),
        esc(&last_detected(i, events).to_rfc3339()),
        i.occurrences,
        esc(&i.summary)
    );
    let features: Vec<LiveDrift> = i
        .evidence
        .get("features")
        .and_then(|f| serde_json::from_value::<Vec<LiveDrift>>(f.clone()).ok())
        .or_else(|| {
            i.evidence
                .get("prediction")
                .and_then(|p| serde_json::from_value::<LiveDrift>(p.clone()).ok())
                .map(|p| vec![p])
        })
        .unwrap_or_default();
    if features.is_empty() {
        // Shares (of a principal's rows) as bars, then every figure.
        let shares: Vec<(&String, f64)> = i
            .evidence
            .as_object()
            .map(|o| {
                o.iter().filter(|(k, _)| k.ends_with("share")).filter_map(|(k, v)| Some((k, v.as_f64()?))).collect()
            })
            .unwrap_or_default();
        if !shares.is_empty() {
            let _ = write!(h, r#"<h2>Evidence</h2><svg width="520" height="{}" role="img">"#, shares.len() * 22 + 4);
            for (n, (k, v)) in shares.iter().enumerate() {
                let y = n * 22 + 2;
                let _ = write!(
                    h,
                    r##"<text x="0" y="{}" font-size="12">{}</text><rect x="170" y="{y}" width="300" height="16" fill="#eee"/><rect x="170" y="{y}" width="{:.1}" height="16" fill="#c62828"/><text x="478" y="{}" font-size="12">{:.0}%</text>"##,
                    y + 12,
                    esc(&k.replace('_', " ")),
                    300.0 * v.clamp(0.0, 1.0),
                    y + 12,
                    v * 100.0
                );
            }
            h.push_str("</svg>");
        }
        h.push_str("<table>");
        if let Some(o) = i.evidence.as_object() {
            for (k, v) in o {
                let shown = match v.as_f64() {
                    Some(x) if k.ends_with("share") => format!("{:.1}%", x * 100.0),
                    _ => v.to_string(),
                };
                let _ = write!(h, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&shown));
            }
        }
        h.push_str("</table>");
    } else {
        let _ = write!(h, "<h2>Evidence</h2>{LEGEND}<div class=\"grid\">");
        for d in &features {
            h.push_str(&feature_card(d));
        }
        h.push_str("</div>");
    }
    h.push_str("<h2>Timeline</h2><table><tr><th>when</th><th>what</th><th>who</th><th>details</th></tr>");
    for e in events {
        let detail = event_detail(e);
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&e.at.to_rfc3339()),
            esc(&e.kind),
            esc(&e.actor),
            esc(&detail)
        );
    }
    h.push_str("</table></body></html>");
    h
}

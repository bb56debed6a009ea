//! The credential detectors: each gateway replica counts, per window,
//! failed authentications per client address and the addresses each
//! principal authenticated from (`citadel_data::sketch::AuthWindow`);
//! replicas' windows merge here and are judged once, like the endpoint
//! windows (their verdict row has endpoint `*`).
//!
//! - **Credential stuffing / brute force**: at least
//!   `detectors.auth_failures_per_address` failed authentications from one
//!   address in a window.
//! - **Token reuse**: one principal authenticating from at least
//!   `detectors.addresses_per_principal` addresses in a window (a leaked
//!   token used from elsewhere; a service whose replicas share one token
//!   trips it too, so the default playbook only alerts).
//!
//! Thresholds are fixed ([`AUTH_FAILURES_PER_ADDRESS`],
//! [`ADDRESSES_PER_PRINCIPAL`]) and the playbook always enforces:
//! authentication happens before an endpoint, and so its policy, is known.
//! The address is the TCP peer's: behind a load balancer that does not
//! keep client addresses (PROXY protocol), every client shares the
//! balancer's address, and these detectors see one client.

use citadel_policy::{Resource, ResourceKind};
use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::Row;

use citadel_data::sketch::AuthWindow;
use citadel_policy::Action;
use citadel_types::Timestamp;

use crate::incident::{Detection, Severity};
use crate::{Caller, ControlError, Result, Workspace};

/// Failed authentications from one address in a window that open a
/// `credential_stuffing` incident.
pub const AUTH_FAILURES_PER_ADDRESS: u64 = 20;
/// Addresses one principal authenticates from in a window that open a
/// `token_reuse` incident.
pub const ADDRESSES_PER_PRINCIPAL: u64 = 5;

/// A judged authentication window.
#[derive(Debug, Clone, Serialize)]
pub struct AuthVerdict {
    pub window_start: Timestamp,
    pub window_end: Timestamp,
    pub replicas: u64,
    pub failures: u64,
    pub principals: u64,
    pub detections: Vec<Detection>,
    pub incidents: Vec<String>,
}

impl Workspace {
    /// Stores one replica's authentication window (audited as `monitor.auth_window`).
    pub async fn monitor_write_auth_window(
        &self,
        caller: &Caller,
        start: Timestamp,
        end: Timestamp,
        replica: &str,
        w: &AuthWindow,
    ) -> Result<()> {
        let permit = self.authorize(caller, Action::MonitorWrite, Resource::all(ResourceKind::Deployment)).await?;
        let sketch = serde_json::to_string(w)
            .map_err(|e| ControlError::Invalid(format!("the window does not serialize: {e}")))?;
        let mut tx = self.db.begin_audited().await?;
        let inserted = sqlx::query(
            "INSERT INTO auth_windows (window_start, window_end, replica, sketch, written_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT DO NOTHING",
        )
        .bind(start.0)
        .bind(end.0)
        .bind(replica)
        .bind(sketch)
        .bind(Timestamp::now().0)
        .execute(&mut *tx.conn())
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(());
        }
        tx.commit(permit.success(serde_json::json!({"window_start": start.to_rfc3339(), "replica": replica,
                               "failures": w.failures.values().sum::<u64>(), "principals": w.addresses.len()})))
            .await?;
        Ok(())
    }

    /// Judges the authentication windows that closed (grace: half the
    /// window, at most 10 s) and have no verdict; opens or updates
    /// incidents and runs the playbook for new ones.
    pub async fn monitor_evaluate_auth(&self, caller: &Caller, now: Timestamp) -> Result<Vec<AuthVerdict>> {
        let permit = self.authorize(caller, Action::MonitorWrite, Resource::all(ResourceKind::Deployment)).await?;
        let pending = sqlx::query(
            "SELECT w.window_start, MAX(w.window_end) AS window_end FROM auth_windows w WHERE NOT EXISTS \
             (SELECT 1 FROM monitor_evaluations v WHERE v.endpoint = '*' AND v.model = '*' AND v.version = 0 \
             AND v.window_start = w.window_start) GROUP BY w.window_start ORDER BY w.window_start LIMIT 50",
        )
        .fetch_all(self.db.pool())
        .await?;
        let mut out = Vec::new();
        for row in pending {
            let start: i64 = row.try_get("window_start")?;
            let end: i64 = row.try_get("window_end")?;
            if end + ((end - start) / 2).min(10_000_000) > now.0 {
                continue;
            }
            let rows = sqlx::query("SELECT sketch FROM auth_windows WHERE window_start = $1")
                .bind(start)
                .fetch_all(self.db.pool())
                .await?;
            let mut merged = AuthWindow::default();
            let mut replicas = 0;
            for r in &rows {
                if let Ok(w) = serde_json::from_str::<AuthWindow>(&r.try_get::<String, _>("sketch")?) {
                    merged.merge(&w);
                    replicas += 1;
                }
            }
            let detections = credential_detections(&merged);
            let mut tx = self.db.begin_audited().await?;
            let claimed = sqlx::query(
                "INSERT INTO monitor_evaluations (endpoint, model, version, window_start, evaluated_at, result) \
                 VALUES ('*', '*', 0, $1, $2, '') ON CONFLICT DO NOTHING",
            )
            .bind(start)
            .bind(now.0)
            .execute(&mut *tx.conn())
            .await?
            .rows_affected();
            if claimed == 0 {
                continue;
            }
            let mut incidents = Vec::new();
            let mut opened = Vec::new();
            for d in &detections {
                let (id, new) = crate::incident::upsert(&mut tx, d, "*", None, caller.name(), now).await?;
                if new {
                    crate::playbook::queue_playbook(&mut tx, &id, crate::PlaybookMode::Enforce, caller).await?;
                    opened.push(id.clone());
                }
                incidents.push(id);
            }
            let verdict = AuthVerdict {
                window_start: Timestamp(start),
                window_end: Timestamp(end),
                replicas,
                failures: merged.failures.values().sum(),
                principals: merged.addresses.len() as u64,
                detections,
                incidents,
            };
            sqlx::query(
                "UPDATE monitor_evaluations SET result = $1 WHERE endpoint = '*' AND model = '*' AND version = 0 AND window_start = $2",
            )
            .bind(serde_json::to_string(&verdict).unwrap_or_default())
            .bind(start)
            .execute(&mut *tx.conn())
            .await?;
            tx.commit(permit.item(
                serde_json::json!({"window_start": Timestamp(start).to_rfc3339(), "failures": verdict.failures,
                                   "detections": verdict.detections.iter().map(|d| d.kind.clone()).collect::<Vec<_>>(),
                                   "incidents": verdict.incidents}),
            ))
            .await?;
            for id in opened {
                // The default playbook only alerts on these; a failed playbook is on the timeline.
                let _ = self.playbook_run(caller, &id, crate::PlaybookMode::Enforce).await;
            }
            out.push(verdict);
        }
        Ok(out)
    }
}

fn credential_detections(w: &AuthWindow) -> Vec<Detection> {
    let mut out = Vec::new();
    for (address, n) in &w.failures {
        if *n >= AUTH_FAILURES_PER_ADDRESS {
            out.push(Detection {
                kind: "credential_stuffing".into(),
                severity: Severity::High,
                principal: None,
                summary: format!("{n} failed authentications from {address} in one window"),
                evidence: serde_json::json!({"address": address, "failures": n}),
            });
        }
    }
    let busiest: BTreeMap<&String, usize> = w.addresses.iter().map(|(p, a)| (p, a.len())).collect();
    for (principal, n) in busiest {
        if n as u64 >= ADDRESSES_PER_PRINCIPAL {
            out.push(Detection {
                kind: "token_reuse".into(),
                severity: Severity::Warning,
                principal: Some(principal.clone()),
                summary: format!("{principal} authenticated from {n} addresses in one window"),
                evidence: serde_json::json!({"addresses": n,
                    "examples": w.addresses[principal].iter().take(10).collect::<Vec<_>>()}),
            });
        }
    }
    out
}

//! Incidents: what a detection opens, deduplicated by kind, endpoint, model
//! version and principal (one open incident per key; a detection that
//! matches one updates it), with a timeline of events. Evidence is
//! aggregates (rates, statistics, counts), never payload values.
//!
//! Status: `open` → `acknowledged` → `resolved` (or `open` → `resolved`).
//! A resolved incident is closed for good; the next detection of its key
//! opens a new one.

use citadel_policy::{Resource, ResourceKind};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use citadel_policy::Action;
use citadel_store::AuditedTx;
use citadel_types::Timestamp;

use crate::{Caller, ControlError, Result, Workspace};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    fn parse(s: &str) -> Severity {
        match s {
            "info" => Severity::Info,
            "high" => Severity::High,
            "critical" => Severity::Critical,
            _ => Severity::Warning,
        }
    }
}

/// What a detector found in one window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Detection {
    /// `drift`, `out_of_distribution`, `prediction_drift`, `extraction`,
    /// `evasion`, `out_of_distribution_client`.
    pub kind: String,
    pub severity: Severity,
    /// The principal the detection is about (abuse detectors).
    pub principal: Option<String>,
    pub summary: String,
    /// Aggregates only.
    pub evidence: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct Incident {
    pub id: String,
    pub kind: String,
    pub severity: Severity,
    pub status: String,
    pub endpoint: String,
    pub model: Option<String>,
    pub version: Option<i64>,
    pub principal: Option<String>,
    pub summary: String,
    pub evidence: serde_json::Value,
    /// Windows in which it was detected.
    pub occurrences: i64,
    pub opened_at: Timestamp,
    pub updated_at: Timestamp,
    pub closed_at: Option<Timestamp>,
}

/// One entry of an incident's timeline.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentEvent {
    pub seq: i64,
    pub at: Timestamp,
    /// `opened`, `detected`, `acknowledged`, `resolved`, `action`.
    pub kind: String,
    pub actor: String,
    pub details: serde_json::Value,
}

const COLUMNS: &str = "id, kind, severity, status, endpoint, model, version, principal, summary, evidence, occurrences, opened_at, updated_at, closed_at";

fn from_row(r: &sqlx::any::AnyRow) -> Result<Incident> {
    Ok(Incident {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        severity: Severity::parse(&r.try_get::<String, _>("severity")?),
        status: r.try_get("status")?,
        endpoint: r.try_get("endpoint")?,
        model: r.try_get("model")?,
        version: r.try_get("version")?,
        principal: r.try_get("principal")?,
        summary: r.try_get("summary")?,
        evidence: serde_json::from_str(&r.try_get::<String, _>("evidence")?).unwrap_or(serde_json::Value::Null),
        occurrences: r.try_get("occurrences")?,
        opened_at: Timestamp(r.try_get("opened_at")?),
        updated_at: Timestamp(r.try_get("updated_at")?),
        closed_at: r.try_get::<Option<i64>, _>("closed_at")?.map(Timestamp),
    })
}

pub(crate) async fn add_event(
    conn: &mut sqlx::AnyConnection,
    id: &str,
    at: Timestamp,
    kind: &str,
    actor: &str,
    details: serde_json::Value,
) -> Result<()> {
    let next: i64 = sqlx::query("SELECT COALESCE(MAX(seq), 0) + 1 AS n FROM incident_events WHERE incident_id = $1")
        .bind(id)
        .fetch_one(&mut *conn)
        .await?
        .try_get("n")?;
    sqlx::query(
        "INSERT INTO incident_events (incident_id, seq, at, kind, actor, details) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(next)
    .bind(at.0)
    .bind(kind)
    .bind(actor)
    .bind(details.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Opens an incident for `d`, or updates the open one with its key, inside
/// the caller's audited transaction. Returns the incident's id, and
/// whether this detection opened it.
pub(crate) async fn upsert(
    tx: &mut AuditedTx,
    d: &Detection,
    endpoint: &str,
    target: Option<(&str, i64)>,
    actor: &str,
    now: Timestamp,
) -> Result<(String, bool)> {
    // Who it is about: the principal, else the client address (credential detectors).
    let who = d
        .principal
        .clone()
        .or_else(|| d.evidence.get("address").and_then(|a| a.as_str()).map(|a| format!("address:{a}")))
        .unwrap_or_else(|| "-".into());
    let (model, version) = (target.map(|t| t.0.to_string()), target.map(|t| t.1));
    let key = format!(
        "{}|{endpoint}|{}@{}|{who}",
        d.kind,
        model.as_deref().unwrap_or("*"),
        version.map(|v| v.to_string()).unwrap_or_else(|| "*".into())
    );
    let open = sqlx::query("SELECT id, severity FROM incidents WHERE dedup_key = $1 AND status <> 'resolved'")
        .bind(&key)
        .fetch_optional(&mut *tx.conn())
        .await?;
    let evidence = d.evidence.to_string();
    if let Some(r) = open {
        let id: String = r.try_get("id")?;
        let severity = Severity::parse(&r.try_get::<String, _>("severity")?).max(d.severity);
        sqlx::query(
            "UPDATE incidents SET occurrences = occurrences + 1, updated_at = $1, summary = $2, evidence = $3, severity = $4 WHERE id = $5",
        )
        .bind(now.0)
        .bind(&d.summary)
        .bind(&evidence)
        .bind(severity.as_str())
        .bind(&id)
        .execute(&mut *tx.conn())
        .await?;
        add_event(tx.conn(), &id, now, "detected", actor, serde_json::json!({"summary": d.summary})).await?;
        return Ok((id, false));
    }
    let id = citadel_types::random_id("inc-");
    sqlx::query(
        "INSERT INTO incidents (id, kind, severity, status, dedup_key, endpoint, model, version, principal, summary, evidence, occurrences, opened_at, updated_at) \
         VALUES ($1, $2, $3, 'open', $4, $5, $6, $7, $8, $9, $10, 1, $11, $11)",
    )
    .bind(&id)
    .bind(&d.kind)
    .bind(d.severity.as_str())
    .bind(&key)
    .bind(endpoint)
    .bind(model)
    .bind(version)
    .bind(d.principal.clone())
    .bind(&d.summary)
    .bind(&evidence)
    .bind(now.0)
    .execute(&mut *tx.conn())
    .await?;
    add_event(tx.conn(), &id, now, "opened", actor, serde_json::json!({"summary": d.summary, "severity": d.severity}))
        .await?;
    Ok((id, true))
}

impl Workspace {
    /// Incidents, newest first: open and acknowledged ones, or all with `all`.
    pub async fn incident_list(&self, caller: &Caller, all: bool) -> Result<Vec<Incident>> {
        let permit = self.authorize(caller, Action::MonitorRead, Resource::all(ResourceKind::Incident)).await?;
        // A read: recorded before anything it returns.
        self.record(permit, serde_json::json!({})).await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM incidents {} ORDER BY opened_at DESC LIMIT 1000",
            if all { "" } else { "WHERE status <> 'resolved'" }
        );
        let rows = sqlx::query(&sql).fetch_all(self.db.pool()).await?;
        rows.iter().map(from_row).collect()
    }

    /// One incident and its timeline (oldest first).
    pub async fn incident_show(&self, caller: &Caller, id: &str) -> Result<(Incident, Vec<IncidentEvent>)> {
        let permit = self.authorize(caller, Action::MonitorRead, Resource::new(ResourceKind::Incident, id)).await?;
        // A read: recorded before anything it returns.
        self.record(permit, serde_json::json!({})).await?;
        let incident = self.incident_row(id).await?;
        let rows = sqlx::query(
            "SELECT seq, at, kind, actor, details FROM incident_events WHERE incident_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(self.db.pool())
        .await?;
        let events = rows
            .iter()
            .map(|r| {
                Ok(IncidentEvent {
                    seq: r.try_get("seq")?,
                    at: Timestamp(r.try_get("at")?),
                    kind: r.try_get("kind")?,
                    actor: r.try_get("actor")?,
                    details: serde_json::from_str(&r.try_get::<String, _>("details")?)
                        .unwrap_or(serde_json::Value::Null),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((incident, events))
    }

    pub(crate) async fn incident_row(&self, id: &str) -> Result<Incident> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM incidents WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?
            .ok_or_else(|| ControlError::NotFound(format!("incident {id}")))?;
        from_row(&row)
    }

    /// Acknowledges an open incident: someone is on it.
    pub async fn incident_ack(&self, caller: &Caller, id: &str, note: &str) -> Result<Incident> {
        self.incident_transition(caller, id, note, "acknowledged").await
    }

    /// Resolves an open or acknowledged incident.
    pub async fn incident_resolve(&self, caller: &Caller, id: &str, note: &str) -> Result<Incident> {
        self.incident_transition(caller, id, note, "resolved").await
    }

    async fn incident_transition(&self, caller: &Caller, id: &str, note: &str, to: &str) -> Result<Incident> {
        let resource = Resource::new(ResourceKind::Incident, id);
        let permit = self.authorize(caller, Action::IncidentManage, resource.clone()).await?;
        let result = async {
            let now = Timestamp::now();
            let mut tx = self.db.begin_audited().await?;
            let status: Option<String> = sqlx::query("SELECT status FROM incidents WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx.conn())
                .await?
                .map(|r| r.try_get("status"))
                .transpose()?;
            match (status.as_deref(), to) {
                (None, _) => {
                    return Err(ControlError::NotFound(format!("incident {id}")));
                }
                (Some("resolved"), _) => {
                    return Err(ControlError::Conflict(format!(
                        "incident {id} is resolved; a new detection opens a new one"
                    )));
                }
                (Some("acknowledged"), "acknowledged") => {
                    return Err(ControlError::Conflict(format!("incident {id} is already acknowledged")));
                }
                _ => {}
            }
            sqlx::query("UPDATE incidents SET status = $1, updated_at = $2, closed_at = $3 WHERE id = $4")
                .bind(to)
                .bind(now.0)
                .bind((to == "resolved").then_some(now.0))
                .bind(id)
                .execute(&mut *tx.conn())
                .await?;
            add_event(tx.conn(), id, now, to, caller.name(), serde_json::json!({"note": note})).await?;
            tx.commit(permit.item(serde_json::json!({"note": note, "status": to}))).await?;
            self.incident_row(id).await
        }
        .await;
        if let Err(e) = &result {
            self.record_failure(permit, e).await;
        }
        result
    }
}

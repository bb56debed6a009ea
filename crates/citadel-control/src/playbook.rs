//! Automated incident response: the workspace's Rego playbook
//! (`policies/playbook.rego`, else the built-in default) maps a new
//! incident's facts to actions, which run here through the same
//! authorize-and-audit path as a person's commands, each recorded on the
//! incident's timeline (with what undoing it needs) and in the audit log
//! with the incident's id. `dry_run` records what would be done and does
//! nothing. [`Workspace::incident_undo`] reverses what can be reversed.
//!
//! Gateways read the throttles and quarantines on every poll
//! ([`Workspace::throttles_active`], [`Workspace::quarantines_active`]).

use citadel_policy::{Resource, ResourceKind};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use citadel_audit::Outcome;
use citadel_policy::{Action, PlaybookAction};
use citadel_types::Timestamp;

use crate::incident::Incident;
use crate::{Caller, ControlError, Permit, Result, Strategy, Workspace};

/// Where a workspace's playbook lives.
pub const PLAYBOOK_FILE: &str = "policies/playbook.rego";

/// What a deployment's playbook does with the actions it decides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlaybookMode {
    /// Run them.
    #[default]
    Enforce,
    /// Record what would be done, do nothing.
    DryRun,
    /// Do not evaluate the playbook.
    Off,
}

/// A principal limited by a playbook, as gateways apply it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Throttle {
    pub principal: String,
    pub per_sec: u32,
    pub burst: u32,
    pub until: Timestamp,
    pub incident: String,
}

/// An endpoint a playbook took out of service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Quarantine {
    pub endpoint: String,
    pub incident: String,
    pub reason: String,
}

/// One action taken (or, in a dry run, not) for an incident.
#[derive(Debug, Clone, Serialize)]
pub struct ActionOutcome {
    pub action: PlaybookAction,
    pub dry_run: bool,
    /// What happened, or why it did not.
    pub result: String,
    pub ok: bool,
}

impl Workspace {
    fn playbook_source(&self) -> Result<(String, String)> {
        let path = self.config.workspace.join(PLAYBOOK_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok((path.display().to_string(), text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(("built-in playbook.rego".into(), citadel_policy::DEFAULT_PLAYBOOK.to_string()))
            }
            Err(e) => Err(ControlError::Invalid(format!("reading {}: {e}", path.display()))),
        }
    }

    /// The playbook's input for an incident: its facts and its endpoint's
    /// live deployment (with the role of the incident's version in it).
    async fn playbook_input(&self, i: &Incident) -> Result<serde_json::Value> {
        let live = self.deployments_live().await?.into_iter().find(|d| d.name == i.endpoint);
        let deployment = live.map(|d| {
            let role = d
                .spec
                .targets
                .iter()
                .find(|t| Some(&t.model) == i.model.as_ref() && Some(t.version) == i.version)
                .map(|t| t.label.clone());
            serde_json::json!({"strategy": d.spec.strategy, "revision": d.revision, "targets": d.spec.targets, "role": role})
        });
        Ok(serde_json::json!({
            "incident": {"id": i.id, "kind": i.kind, "severity": i.severity, "endpoint": i.endpoint, "model": i.model,
                         "version": i.version, "principal": i.principal, "occurrences": i.occurrences, "evidence": i.evidence},
            "deployment": deployment,
        }))
    }

    /// Evaluates the playbook for incident `id` and runs (or, in a dry run,
    /// records) its actions. A playbook that does not evaluate runs nothing
    /// and says so on the timeline (fail closed: no action is guessed).
    pub async fn playbook_run(&self, caller: &Caller, id: &str, mode: PlaybookMode) -> Result<Vec<ActionOutcome>> {
        self.playbook_run_as(caller, id, mode, false).await
    }

    /// Runs the playbooks a crash left unfinished ([`queue_playbook`] rows
    /// no one holds), skipping every action already on its incident's
    /// timeline. Called before each evaluation; returns the incidents
    /// resumed.
    pub async fn playbook_resume(&self, caller: &Caller, now: Timestamp) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT incident_id, mode FROM playbook_pending WHERE claimed_until < $1 AND opened_by = $2 \
             ORDER BY queued_at LIMIT 20",
        )
        .bind(now.0)
        .bind(caller.id().to_string())
        .fetch_all(self.db.pool())
        .await?;
        let mut out = Vec::new();
        for r in rows {
            let id: String = r.try_get("incident_id")?;
            let claimed = sqlx::query(
                "UPDATE playbook_pending SET claimed_until = $1 WHERE incident_id = $2 AND claimed_until < $3",
            )
            .bind(now.0 + CLAIM_MICROS)
            .bind(&id)
            .bind(now.0)
            .execute(self.db.pool())
            .await?
            .rows_affected();
            if claimed != 1 {
                continue; // another replica took it
            }
            let mode = match r.try_get::<String, _>("mode")?.as_str() {
                "dry_run" => PlaybookMode::DryRun,
                _ => PlaybookMode::Enforce,
            };
            match self.playbook_run_as(caller, &id, mode, true).await {
                // A resolved incident's playbook no longer runs: nothing is left to do.
                Ok(_) | Err(ControlError::Conflict(_)) => {
                    playbook_done(self, &id, mode).await?;
                    out.push(id);
                }
                // Left for a later try once the claim lapses; the next
                // incident's playbook is not held up by this one.
                Err(_) => {}
            }
        }
        Ok(out)
    }

    async fn playbook_run_as(
        &self,
        caller: &Caller,
        id: &str,
        mode: PlaybookMode,
        resuming: bool,
    ) -> Result<Vec<ActionOutcome>> {
        let resource = Resource::new(ResourceKind::Incident, id);
        let permit = self.authorize(caller, Action::IncidentManage, resource.clone()).await?;
        if mode == PlaybookMode::Off {
            playbook_done(self, id, mode).await?;
            return Ok(Vec::new());
        }
        let incident = self.incident_row(id).await?;
        if incident.status == "resolved" {
            return Err(ControlError::Conflict(format!(
                "incident {id} is resolved; its playbook no longer runs (a new detection opens a new incident)"
            )));
        }
        let input = self.playbook_input(&incident).await?;
        let (name, policy) = self.playbook_source()?;
        let actions = match citadel_policy::evaluate_playbook(&name, &policy, &input) {
            Ok(a) => a,
            Err(e) => {
                self.incident_note(&permit, caller, id, "playbook_failed", serde_json::json!({"error": e.to_string()}))
                    .await?;
                playbook_done(self, id, mode).await?;
                return Err(e.into());
            }
        };
        let dry_run = mode == PlaybookMode::DryRun;
        // Resuming after a crash: what the timeline already holds was done (or tried).
        let recorded: Vec<serde_json::Value> = if resuming {
            sqlx::query("SELECT details FROM incident_events WHERE incident_id = $1 AND kind = 'action'")
                .bind(id)
                .fetch_all(self.db.pool())
                .await?
                .iter()
                .filter_map(|r| r.try_get::<String, _>("details").ok())
                .filter_map(|d| serde_json::from_str::<serde_json::Value>(&d).ok())
                .filter_map(|d| d.get("action").cloned())
                .collect()
        } else {
            Vec::new()
        };
        let mut out = Vec::new();
        for action in actions {
            if serde_json::to_value(&action).is_ok_and(|a| recorded.contains(&a)) {
                continue;
            }
            let (ok, result, undo) = if dry_run {
                (true, "not done: the playbook would run it".to_string(), serde_json::Value::Null)
            } else {
                match self.playbook_act(caller, &incident, &action).await {
                    Ok((result, undo)) => (true, result, undo),
                    Err(e) => (false, e.to_string(), serde_json::Value::Null),
                }
            };
            self.incident_note(
                &permit,
                caller,
                id,
                "action",
                serde_json::json!({"action": action, "dry_run": dry_run, "ok": ok, "result": result, "undo": undo}),
            )
            .await?;
            out.push(ActionOutcome { action, dry_run, result, ok });
        }
        playbook_done(self, id, mode).await?;
        Ok(out)
    }

    /// Runs one action; returns what happened and what undoing it needs.
    async fn playbook_act(
        &self,
        caller: &Caller,
        i: &Incident,
        action: &PlaybookAction,
    ) -> Result<(String, serde_json::Value)> {
        let principal = || {
            i.principal.clone().ok_or_else(|| {
                ControlError::Invalid(format!(
                    "{} applies to a principal and incident {} names none",
                    action.name(),
                    i.id
                ))
            })
        };
        match action {
            PlaybookAction::Alert => Ok((format!("alerted: {}", i.summary), serde_json::Value::Null)),
            PlaybookAction::Throttle { per_sec, burst, minutes } => {
                let p = principal()?;
                let resource = Resource::new(ResourceKind::Principal, &p);
                // A throttle is incident response (bounded in time, lifted by
                // undo): `incident.manage`, which the gateway role holds.
                let permit = self.authorize(caller, Action::IncidentManage, resource.clone()).await?;
                let now = Timestamp::now();
                let until = Timestamp(now.0 + i64::from(*minutes) * 60_000_000);
                let tid = citadel_types::random_id("thr-");
                let mut tx = self.db.begin_audited().await?;
                sqlx::query(
                    "INSERT INTO principal_throttles (id, principal, per_sec, burst, until, incident_id, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&tid)
                .bind(&p)
                .bind(i64::from(*per_sec))
                .bind(i64::from((*burst).max(1)))
                .bind(until.0)
                .bind(&i.id)
                .bind(now.0)
                .execute(&mut *tx.conn())
                .await?;
                tx.commit(permit.success(serde_json::json!({"incident": i.id, "per_sec": per_sec, "burst": burst, "until": until.to_rfc3339()})))
                .await?;
                Ok((
                    format!("{p} limited to {per_sec}/s until {}", until.to_rfc3339()),
                    serde_json::json!({"throttle": tid}),
                ))
            }
            PlaybookAction::RevokeTokens => {
                let p = principal()?;
                let owner = self.principal_named(&p).await?;
                let tokens = citadel_store::token_list(self.db.pool(), Some(&owner.id)).await?;
                let mut n = 0;
                for t in tokens.iter().filter(|t| t.revoked_at.is_none()) {
                    if self.token_revoke(caller, &t.id).await? {
                        n += 1;
                    }
                }
                Ok((format!("{n} token(s) of {p} revoked (not undoable: issue new ones)"), serde_json::Value::Null))
            }
            PlaybookAction::DisablePrincipal => {
                let p = principal()?;
                // Undo enables only a principal this action disabled.
                let was_enabled = self.principal_named(&p).await?.disabled_at.is_none();
                self.principal_disable(caller, &p).await?;
                let undo = if was_enabled { serde_json::json!({"enable": p}) } else { serde_json::Value::Null };
                Ok((format!("{p} disabled{}", if was_enabled { "" } else { " (it already was)" }), undo))
            }
            PlaybookAction::Rollback => {
                let live = self.deploy_get(caller, &i.endpoint).await?;
                // Only while the endpoint still serves the incident's version:
                // a person's change since (or this rollback, run before a
                // crash lost its record) is not rolled back again.
                if let (Some(model), Some(version)) = (&i.model, i.version)
                    && !live
                        .as_ref()
                        .is_some_and(|d| d.spec.targets.iter().any(|t| &t.model == model && t.version == version))
                {
                    return Err(ControlError::Conflict(format!(
                        "{} no longer serves {model}@{version}; nothing to roll back",
                        i.endpoint
                    )));
                }
                let before = live.map(|d| d.revision);
                let d = self.deploy_rollback(caller, &i.endpoint, None).await?;
                Ok((
                    format!("{} rolled back: revision {} serves what an earlier one did", i.endpoint, d.revision),
                    serde_json::json!({"restore_revision": before, "created_revision": d.revision}),
                ))
            }
            PlaybookAction::PauseCanary => {
                let d = self
                    .deploy_get(caller, &i.endpoint)
                    .await?
                    .ok_or_else(|| ControlError::NotFound(format!("deployment {}", i.endpoint)))?;
                if d.spec.strategy != Strategy::Canary {
                    return Err(ControlError::Invalid(format!("{} is not a canary deployment", i.endpoint)));
                }
                let mut spec = d.spec.clone();
                let mut paused = false;
                for t in spec.targets.iter_mut() {
                    if Some(&t.model) == i.model.as_ref() && Some(t.version) == i.version {
                        t.weight = 0;
                        paused = true;
                    }
                }
                if !paused {
                    return Err(ControlError::Invalid(format!(
                        "{} no longer serves the incident's version",
                        i.endpoint
                    )));
                }
                let n = self.deploy_set(caller, &i.endpoint, &spec).await?;
                Ok((
                    format!("{}'s canary weight set to 0 (revision {})", i.endpoint, n.revision),
                    serde_json::json!({"restore_revision": d.revision, "created_revision": n.revision}),
                ))
            }
            PlaybookAction::Quarantine => {
                if citadel_types::Name::parse(&i.endpoint).is_err() {
                    return Err(ControlError::Invalid(format!(
                        "quarantine applies to an endpoint; incident {} is gateway-wide",
                        i.id
                    )));
                }
                let resource = Resource::deployment(&i.endpoint);
                let permit = self.authorize(caller, Action::DeploymentManage, resource.clone()).await?;
                let mut tx = self.db.begin_audited().await?;
                sqlx::query(
                    "INSERT INTO endpoint_quarantines (endpoint, incident_id, reason, since) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(&i.endpoint)
                .bind(&i.id)
                .bind(&i.summary)
                .bind(Timestamp::now().0)
                .execute(&mut *tx.conn())
                .await?;
                tx.commit(permit.success(serde_json::json!({"incident": i.id}))).await?;
                Ok((format!("{} quarantined (503)", i.endpoint), serde_json::json!({"lift": i.endpoint})))
            }
        }
    }

    /// Adds an event to an incident's timeline, audited as `incident.event`.
    async fn incident_note(
        &self,
        permit: &Permit,
        caller: &Caller,
        id: &str,
        kind: &str,
        details: serde_json::Value,
    ) -> Result<()> {
        let mut tx = self.db.begin_audited().await?;
        crate::incident::add_event(tx.conn(), id, Timestamp::now(), kind, caller.name(), details.clone()).await?;
        tx.commit(permit.step(&format!("incident.{kind}"), Outcome::Success, details)).await?;
        Ok(())
    }

    /// Reverses what the playbook did for an incident and was not undone
    /// yet: throttles and quarantines lifted, a disabled principal enabled,
    /// a rollback or paused canary rolled forward to the revision it
    /// replaced. Revoked tokens stay revoked. Returns what was undone.
    pub async fn incident_undo(&self, caller: &Caller, id: &str) -> Result<Vec<String>> {
        let resource = Resource::new(ResourceKind::Incident, id);
        let permit = self.authorize(caller, Action::IncidentManage, resource.clone()).await?;
        let (_, events) = self.incident_show(caller, id).await?;
        let undone_before: Vec<i64> = events
            .iter()
            .filter(|e| e.kind == "undo")
            .filter_map(|e| e.details.get("action_seq").and_then(|s| s.as_i64()))
            .collect();
        let mut done = Vec::new();
        for e in events.iter().filter(|e| e.kind == "action" && !undone_before.contains(&e.seq)) {
            let undo = &e.details["undo"];
            let what = if let Some(t) = undo.get("throttle").and_then(|t| t.as_str()) {
                let mut tx = self.db.begin_audited().await?;
                sqlx::query("UPDATE principal_throttles SET lifted_at = $1 WHERE id = $2 AND lifted_at IS NULL")
                    .bind(Timestamp::now().0)
                    .bind(t)
                    .execute(&mut *tx.conn())
                    .await?;
                tx.commit(permit.item(serde_json::json!({"throttle": t}))).await?;
                format!("throttle {t} lifted")
            } else if let Some(ep) = undo.get("lift").and_then(|t| t.as_str()) {
                // Lifting takes what imposing took.
                let permit = self
                    .authorize(caller, Action::DeploymentManage, Resource::new(ResourceKind::Deployment, ep))
                    .await?;
                let mut tx = self.db.begin_audited().await?;
                sqlx::query("DELETE FROM endpoint_quarantines WHERE endpoint = $1 AND incident_id = $2")
                    .bind(ep)
                    .bind(id)
                    .execute(&mut *tx.conn())
                    .await?;
                tx.commit(permit.success(serde_json::json!({"incident": id}))).await?;
                format!("{ep} back in service")
            } else if let Some(p) = undo.get("enable").and_then(|t| t.as_str()) {
                self.principal_enable(caller, p).await?;
                format!("{p} enabled")
            } else if let Some(r) = undo.get("restore_revision").and_then(|t| t.as_i64()) {
                let endpoint = self.incident_row(id).await?.endpoint;
                // Only what the action left in place is undone: a person's
                // later change to the endpoint is never overwritten.
                let live = self.deploy_get(caller, &endpoint).await?.map(|d| d.revision);
                let created = undo.get("created_revision").and_then(|t| t.as_i64());
                if created.is_some() && live != created {
                    return Err(ControlError::Conflict(format!(
                        "{endpoint} changed after the playbook's action (it is at revision {}, the action made {}); roll it back by hand — hint: citadel deploy history {endpoint}",
                        live.map(|r| r.to_string()).unwrap_or_else(|| "none".into()),
                        created.unwrap_or_default()
                    )));
                }
                let d = self.deploy_rollback(caller, &endpoint, Some(r)).await?;
                format!("{endpoint} serves revision {r}'s targets again (revision {})", d.revision)
            } else {
                continue;
            };
            self.incident_note(&permit, caller, id, "undo", serde_json::json!({"action_seq": e.seq, "result": what}))
                .await?;
            done.push(what);
        }
        Ok(done)
    }

    /// Throttles in force now (what gateways poll; no caller, like deployments).
    pub async fn throttles_active(&self) -> Result<Vec<Throttle>> {
        let rows = sqlx::query(
            "SELECT principal, per_sec, burst, until, incident_id FROM principal_throttles \
             WHERE lifted_at IS NULL AND until > $1 ORDER BY created_at",
        )
        .bind(Timestamp::now().0)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Throttle {
                    principal: r.try_get("principal")?,
                    per_sec: u32::try_from(r.try_get::<i64, _>("per_sec")?).unwrap_or(1),
                    burst: u32::try_from(r.try_get::<i64, _>("burst")?).unwrap_or(1),
                    until: Timestamp(r.try_get("until")?),
                    incident: r.try_get("incident_id")?,
                })
            })
            .collect()
    }

    /// Endpoints in quarantine (what gateways poll).
    pub async fn quarantines_active(&self) -> Result<Vec<Quarantine>> {
        let rows = sqlx::query("SELECT endpoint, incident_id, reason FROM endpoint_quarantines ORDER BY endpoint")
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Quarantine {
                    endpoint: r.try_get("endpoint")?,
                    incident: r.try_get("incident_id")?,
                    reason: r.try_get("reason")?,
                })
            })
            .collect()
    }
}

/// How long a replica holds a playbook it is running before another may
/// resume it (µs).
const CLAIM_MICROS: i64 = 60_000_000;

/// Queues incident `id`'s playbook inside the transaction that opens it, so
/// a crash before the playbook ran to its end leaves it for
/// [`Workspace::playbook_resume`]. The opener holds it for [`CLAIM_MICROS`].
pub(crate) async fn queue_playbook(
    tx: &mut citadel_store::AuditedTx,
    id: &str,
    mode: PlaybookMode,
    opened_by: &Caller,
) -> Result<()> {
    if mode == PlaybookMode::Off {
        return Ok(());
    }
    // The claim runs from now, not from when the evaluation began.
    let now = Timestamp::now();
    sqlx::query(
        "INSERT INTO playbook_pending (incident_id, mode, opened_by, queued_at, claimed_until) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(mode_name(mode))
    .bind(opened_by.id().to_string())
    .bind(now.0)
    .bind(now.0 + CLAIM_MICROS)
    .execute(&mut *tx.conn())
    .await?;
    Ok(())
}

fn mode_name(mode: PlaybookMode) -> &'static str {
    match mode {
        PlaybookMode::Enforce => "enforce",
        PlaybookMode::DryRun => "dry_run",
        PlaybookMode::Off => "off",
    }
}

/// The playbook of `id` ran to its end in `mode` (its record is the
/// timeline); a run in another mode (a person's dry run) leaves a queued
/// one where it is.
async fn playbook_done(ws: &Workspace, id: &str, mode: PlaybookMode) -> Result<()> {
    sqlx::query("DELETE FROM playbook_pending WHERE incident_id = $1 AND mode = $2")
        .bind(id)
        .bind(mode_name(mode))
        .execute(ws.db.pool())
        .await?;
    Ok(())
}

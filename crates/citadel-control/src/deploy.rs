//! Deployments: an endpoint name mapped to model versions under a strategy.
//!
//! Decisions:
//! - A change is a new revision of the endpoint (kept forever, removals
//!   included), committed with its audit record. Gateways poll the live
//!   revisions and swap their routing atomically, so a change needs no
//!   restart and in-flight requests finish on the models they started on.
//! - Stage rules: every target must have been approved into `staging` or
//!   `production` (each passed approval, signature verification and the
//!   workspace's Rego gate); a single-target deployment serves a
//!   `production` version, and every deployment includes at least one.
//!   Staging versions take traffic only beside it (canary, the other color,
//!   an A/B arm, a shadow), because entering production archives the
//!   previous production version.
//! - Deploying does not load models; gateways load each version through
//!   verified loading and refuse (and audit) any whose bytes changed.

use citadel_policy::{Resource, ResourceKind};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use citadel_audit::Outcome;
use citadel_policy::Action;
use citadel_store::AuditedTx;
use citadel_types::{Name, Timestamp};

use crate::{Caller, ControlError, Permit, Result, Workspace};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// One version takes all traffic.
    Single,
    /// Traffic split by weight, per request.
    Canary,
    /// Two colors; `active` takes all traffic; switching is one revision.
    BlueGreen,
    /// Sticky assignment by a hash of the principal (or a header).
    Ab,
    /// The primary answers; a fraction is mirrored to the candidate, whose answers are recorded only.
    Shadow,
}

impl std::str::FromStr for Strategy {
    type Err = ControlError;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "single" => Strategy::Single,
            "canary" => Strategy::Canary,
            "blue-green" | "bluegreen" => Strategy::BlueGreen,
            "ab" | "a-b" | "a/b" => Strategy::Ab,
            "shadow" => Strategy::Shadow,
            other => {
                return Err(ControlError::Invalid(format!(
                    "unknown strategy {other:?}; use single, canary, blue-green, ab or shadow"
                )));
            }
        })
    }
}

/// One model version an endpoint routes to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// `primary`, `canary`, `blue`, `green`, `a`, `b`, `shadow`… (unique within the deployment).
    pub label: String,
    pub model: String,
    pub version: i64,
    /// Canary weight (relative); ignored by other strategies.
    #[serde(default)]
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentSpec {
    pub strategy: Strategy,
    pub targets: Vec<Target>,
    /// Blue/green: the label that takes traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<String>,
    /// A/B: hash this request header instead of the principal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_header: Option<String>,
    /// Shadow: the fraction of requests mirrored to the candidate.
    #[serde(default)]
    pub shadow_fraction: f64,
    /// Live monitoring's window and thresholds (defaults when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<crate::monitor::MonitoringPolicy>,
}

impl DeploymentSpec {
    /// Checks the shape of a spec (not the registry): every problem at once.
    pub fn check(&self) -> Result<()> {
        let mut problems = Vec::new();
        let labels: std::collections::HashSet<&str> = self.targets.iter().map(|t| t.label.as_str()).collect();
        if labels.len() != self.targets.len() {
            problems.push("target labels must be unique".to_string());
        }
        for t in &self.targets {
            if Name::parse(&t.model).is_err() {
                problems.push(format!("{:?} is not a model name", t.model));
            }
            if t.version < 1 {
                problems.push(format!("{}: versions start at 1", t.label));
            }
            if t.label.is_empty()
                || t.label.len() > 32
                || !t.label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                problems.push(format!("{:?} is not a target label (letters, digits, '-')", t.label));
            }
        }
        let n = self.targets.len();
        match self.strategy {
            Strategy::Single if n != 1 => problems.push("single takes exactly one target".into()),
            Strategy::Canary => {
                if n < 2 {
                    problems.push("canary takes two or more targets".into());
                }
                if self.targets.iter().map(|t| u64::from(t.weight)).sum::<u64>() == 0 {
                    problems.push("canary weights must not all be 0 (write MODEL@V:WEIGHT)".into());
                }
            }
            Strategy::BlueGreen => {
                if n != 2 {
                    problems.push("blue-green takes exactly two targets".into());
                }
                match &self.active {
                    Some(a) if labels.contains(a.as_str()) => {}
                    Some(a) => problems.push(format!("active color {a:?} is not a target label")),
                    None => problems.push("blue-green needs --active LABEL".into()),
                }
            }
            Strategy::Ab if n < 2 => problems.push("ab takes two or more targets".into()),
            Strategy::Shadow => {
                if n != 2 {
                    problems.push("shadow takes a primary and one shadow target".into());
                }
                if !(self.shadow_fraction > 0.0 && self.shadow_fraction <= 1.0) {
                    problems.push("shadow needs --shadow-fraction in (0, 1]".into());
                }
            }
            _ => {}
        }
        if let Some(h) = &self.sticky_header
            && (h.is_empty() || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        {
            problems.push(format!("{h:?} is not a header name"));
        }
        if let Some(m) = &self.monitoring {
            problems.extend(m.problems());
        }
        if problems.is_empty() { Ok(()) } else { Err(ControlError::Invalid(problems.join("; "))) }
    }

    /// The target that answers by default.
    pub fn primary(&self) -> Option<&Target> {
        match self.strategy {
            // The heaviest target; the first listed among equals.
            Strategy::Canary => self.targets.iter().rev().max_by_key(|t| t.weight),
            Strategy::BlueGreen => self.targets.iter().find(|t| Some(&t.label) == self.active.as_ref()),
            _ => self.targets.first(),
        }
    }
}

/// A live deployment revision.
#[derive(Debug, Clone, Serialize)]
pub struct Deployment {
    pub name: String,
    pub revision: i64,
    pub spec: DeploymentSpec,
    pub updated_by: String,
    pub updated_at: Timestamp,
}

/// One entry of an endpoint's history (`spec` is `None` for a removal).
#[derive(Debug, Clone, Serialize)]
pub struct DeploymentRevision {
    pub revision: i64,
    pub spec: Option<DeploymentSpec>,
    pub created_by: String,
    pub created_at: Timestamp,
}

impl Workspace {
    /// Creates or changes an endpoint. Returns the new revision.
    /// A spec without a monitoring policy keeps the live one (a policy stays
    /// until another replaces it: a new target must not silently turn a
    /// dry-run playbook into an enforcing one).
    pub async fn deploy_set(&self, caller: &Caller, name: &str, spec: &DeploymentSpec) -> Result<Deployment> {
        let name = Name::parse(name)?;
        let resource = Resource::new(ResourceKind::Deployment, &name);
        let permit = self.authorize(caller, Action::DeploymentManage, resource.clone()).await?;
        let mut spec = spec.clone();
        if spec.monitoring.is_none() {
            spec.monitoring = self
                .deployments_live()
                .await?
                .into_iter()
                .find(|d| d.name == name.as_str())
                .and_then(|d| d.spec.monitoring);
        }
        let spec = &spec;
        let result = self.deploy_commit(&permit, name.as_str(), Some(spec)).await;
        if let Err(e) = &result {
            self.record_failure(permit, e).await;
        }
        let revision = result?;
        Ok(Deployment {
            name: name.to_string(),
            revision,
            spec: spec.clone(),
            updated_by: caller.name().to_string(),
            updated_at: Timestamp::now(),
        })
    }

    /// Blue/green: makes `label` the active color (one new revision; switching back is the same call).
    pub async fn deploy_switch(&self, caller: &Caller, name: &str, label: &str) -> Result<Deployment> {
        let current =
            self.deploy_get(caller, name).await?.ok_or_else(|| ControlError::NotFound(format!("deployment {name}")))?;
        if current.spec.strategy != Strategy::BlueGreen {
            return Err(ControlError::Invalid(format!("{name} is not a blue-green deployment")));
        }
        let mut spec = current.spec;
        spec.active = Some(label.to_string());
        self.deploy_set(caller, name, &spec).await
    }

    /// Puts an earlier revision's spec back as a new revision: `to`, or else
    /// the newest earlier revision that served something different from
    /// the live one (a removed endpoint gets its last spec back). The
    /// restored targets pass today's checks (a version archived, retired or
    /// flagged since is refused). Audited as `deployment.rollback` with the
    /// revision restored.
    ///
    /// Errors: no such endpoint or revision, nothing earlier to go back to,
    /// or a restored target that may no longer be deployed.
    pub async fn deploy_rollback(&self, caller: &Caller, name: &str, to: Option<i64>) -> Result<Deployment> {
        let name = Name::parse(name)?;
        let resource = Resource::new(ResourceKind::Deployment, &name);
        let permit = self.authorize(caller, Action::DeploymentManage, resource.clone()).await?;
        let result = async {
            let history = self.deploy_history_unchecked(name.as_str()).await?;
            let Some(last) = history.last() else {
                return Err(ControlError::NotFound(format!("deployment {name}")));
            };
            let restored = match to {
                Some(r) if r == last.revision => {
                    return Err(ControlError::Invalid(format!(
                        "revision {r} is the one {name} serves now; roll back to an earlier one — hint: `citadel deploy history {name}`"
                    )));
                }
                Some(r) => history.iter().find(|h| h.revision == r && r < last.revision).ok_or_else(|| {
                    ControlError::Invalid(format!(
                        "{name} has no earlier revision {r} (its revisions are 1 to {}) — hint: `citadel deploy history {name}`",
                        last.revision
                    ))
                })?,
                None => history
                    .iter()
                    .rev()
                    .skip(1)
                    .find(|h| h.spec.is_some() && h.spec.as_ref().map(spec_key) != last.spec.as_ref().map(spec_key))
                    .ok_or_else(|| {
                        ControlError::Invalid(format!("{name} has no earlier revision that served something else"))
                    })?,
            };
            let spec = restored.spec.clone().ok_or_else(|| {
                ControlError::Invalid(format!("revision {} of {name} removed the endpoint; pick another", restored.revision))
            })?;
            let revision = self
                .deploy_commit_as(&permit, name.as_str(), Some(&spec), Some((last.revision, restored.revision)))
                .await?;
            Ok(Deployment {
                name: name.to_string(),
                revision,
                spec,
                updated_by: caller.name().to_string(),
                updated_at: Timestamp::now(),
            })
        }
        .await;
        if let Err(e) = &result {
            self.record_failure(permit, e).await;
        }
        result
    }

    /// Removes an endpoint (gateways stop serving it at their next poll).
    pub async fn deploy_remove(&self, caller: &Caller, name: &str) -> Result<i64> {
        let name = Name::parse(name)?;
        let resource = Resource::new(ResourceKind::Deployment, &name);
        let permit = self.authorize(caller, Action::DeploymentManage, resource.clone()).await?;
        let out = self.deploy_commit(&permit, name.as_str(), None).await?;
        self.record(permit, serde_json::json!({})).await?;
        Ok(out)
    }

    async fn deploy_commit(&self, permit: &Permit, name: &str, spec: Option<&DeploymentSpec>) -> Result<i64> {
        self.deploy_commit_as(permit, name, spec, None).await
    }

    /// Commits a revision; `rollback` = (live revision, revision restored).
    /// Its record (`deployment.set`, `.rollback` or `.remove`, a step of the
    /// permitted `deployment.manage`) commits with it.
    async fn deploy_commit_as(
        &self,
        permit: &Permit,
        name: &str,
        spec: Option<&DeploymentSpec>,
        rollback: Option<(i64, i64)>,
    ) -> Result<i64> {
        if let Some(spec) = spec {
            spec.check()?;
            self.check_stages(spec).await?;
        }
        let now = Timestamp::now();
        let mut tx = self.db.begin_audited().await?;
        let row = sqlx::query("SELECT MAX(revision) AS r FROM deployment_revisions WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *tx.conn())
            .await?;
        let revision = row.try_get::<Option<i64>, _>("r")?.unwrap_or(0) + 1;
        // A rollback restores what was live when it chose: a change since then wins.
        if let Some((from, _)) = rollback
            && revision - 1 != from
        {
            return Err(ControlError::Invalid(format!(
                "{name} changed while rolling back (now at revision {}); run the rollback again",
                revision - 1
            )));
        }
        // A target retired since the checks above: refused inside the
        // transaction, so a retirement and a deployment never both win.
        for t in spec.map(|s| s.targets.as_slice()).unwrap_or_default() {
            let stage = crate::registry::stage_of(&mut tx, &t.model, t.version).await?;
            if stage.as_deref() == Some("retired") {
                return Err(ControlError::Invalid(format!(
                    "{}@{} is retired; a retired version is never deployed",
                    t.model, t.version
                )));
            }
            // Archived (or back to none) since the checks above: an archive
            // that committed first has taken it out of serving; it stays out.
            if matches!(stage.as_deref(), Some("archived" | "none") | None) {
                return Err(ControlError::Conflict(format!(
                    "{}@{} left staging and production while this deployment was checked; run it again",
                    t.model, t.version
                )));
            }
        }
        write_revision(&mut tx, name, revision, spec, permit.actor(), now).await?;
        let (action, details) = match rollback {
            Some((from, restored)) => (
                "deployment.rollback",
                serde_json::json!({"revision": revision, "spec": spec, "from_revision": from, "restored_revision": restored}),
            ),
            None if spec.is_some() => ("deployment.set", serde_json::json!({"revision": revision, "spec": spec})),
            None => ("deployment.remove", serde_json::json!({"revision": revision, "spec": spec})),
        };
        tx.commit(permit.step(action, Outcome::Success, details)).await?;
        Ok(revision)
    }

    /// Takes `model@version` out of every live deployment, inside the
    /// transaction that archives or retires it (`registry.rs`), so the
    /// version leaves the registry's serving stages and every endpoint
    /// together. Each affected endpoint gets a new revision without it: one
    /// target left becomes `single`; an endpoint left with nothing to serve
    /// (no target, or none in production, or a `single` target that is not
    /// in production) is removed, and gateways stop serving it (404) at
    /// their next poll. The caller's one audit record lists the result.
    /// Decision: this is the registry's decision about the version, so it
    /// needs no `deployment.manage` of the approver who retires or archives:
    /// a version judged unfit leaves serving whoever deployed it.
    pub(crate) async fn withdraw_from_serving(
        tx: &mut AuditedTx,
        actor: &str,
        model: &str,
        version: i64,
        now: Timestamp,
    ) -> Result<Vec<Withdrawal>> {
        let live = sqlx::query("SELECT name, revision, spec FROM deployments ORDER BY name")
            .fetch_all(&mut *tx.conn())
            .await?;
        let mut out = Vec::new();
        for row in live {
            let name: String = row.try_get("name")?;
            let revision: i64 = row.try_get("revision")?;
            let spec: DeploymentSpec = serde_json::from_str(&row.try_get::<String, _>("spec")?)
                .map_err(|e| ControlError::Invalid(format!("stored deployment {name}: {e}")))?;
            if !spec.targets.iter().any(|t| t.model == model && t.version == version) {
                continue;
            }
            let mut left = spec.clone();
            left.targets.retain(|t| !(t.model == model && t.version == version));
            if left.targets.len() == 1 {
                left.strategy = Strategy::Single;
                left.active = None;
                left.sticky_header = None;
                left.shadow_fraction = 0.0;
            }
            let (mut in_production, mut unservable) = (0, false);
            for t in &left.targets {
                match crate::registry::stage_of(tx, &t.model, t.version).await?.as_deref() {
                    Some("production") => in_production += 1,
                    // Beside a production version: a staging arm, or the
                    // fallback a promotion archived and left deployed.
                    Some("staging" | "archived") if left.strategy != Strategy::Single => {}
                    _ => unservable = true,
                }
            }
            let servable = in_production > 0 && !unservable && left.check().is_ok();
            let kept = servable.then_some(&left);
            write_revision(tx, &name, revision + 1, kept, actor, now).await?;
            out.push(Withdrawal {
                endpoint: name,
                revision: revision + 1,
                removed: kept.is_none(),
                targets: kept
                    .map(|s| s.targets.iter().map(|t| format!("{}@{}", t.model, t.version)).collect())
                    .unwrap_or_default(),
            });
        }
        Ok(out)
    }

    async fn check_stages(&self, spec: &DeploymentSpec) -> Result<()> {
        let mut problems = Vec::new();
        let mut in_production = 0;
        for t in &spec.targets {
            let row = sqlx::query("SELECT stage FROM model_versions WHERE model_name = $1 AND version = $2")
                .bind(&t.model)
                .bind(t.version)
                .fetch_optional(self.db.pool())
                .await?;
            let Some(row) = row else {
                problems.push(format!("{}@{} is not registered", t.model, t.version));
                continue;
            };
            let stage: String = row.try_get("stage")?;
            if !crate::subject::model_erasure_flags(self.db.pool(), &t.model, t.version).await?.is_empty() {
                problems.push(format!(
                    "{}@{} was trained on data from which a data subject's rows were erased; deploy a retrained version",
                    t.model, t.version
                ));
            }
            match stage.as_str() {
                "production" => in_production += 1,
                "retired" => problems.push(format!("{}@{} is retired; a retired version is never deployed", t.model, t.version)),
                "staging" if spec.strategy != Strategy::Single => {}
                "staging" => problems.push(format!(
                    "{}@{} is in staging; a single-target deployment serves production versions only (use canary, blue-green, ab or shadow beside a production version)",
                    t.model, t.version
                )),
                other => problems.push(format!(
                    "{}@{} is in {other}; only versions approved into staging or production are deployed",
                    t.model, t.version
                )),
            }
        }
        if problems.is_empty() && in_production == 0 {
            problems.push("at least one target must be in production".into());
        }
        if problems.is_empty() { Ok(()) } else { Err(ControlError::Invalid(problems.join("; "))) }
    }

    /// One endpoint's live revision.
    pub async fn deploy_get(&self, caller: &Caller, name: &str) -> Result<Option<Deployment>> {
        let name = Name::parse(name)?;
        let permit = self.authorize(caller, Action::ModelRead, Resource::new(ResourceKind::Deployment, &name)).await?;
        let out = self.deployments_live().await?.into_iter().find(|d| d.name == name.as_str());
        self.record(permit, serde_json::json!({})).await?;
        Ok(out)
    }

    /// Every live deployment (what gateways poll; no caller: the gateway holds the workspace).
    pub async fn deployments_live(&self) -> Result<Vec<Deployment>> {
        let rows = sqlx::query("SELECT name, revision, spec, updated_by, updated_at FROM deployments ORDER BY name")
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|r| {
                let spec: String = r.try_get("spec")?;
                Ok(Deployment {
                    name: r.try_get("name")?,
                    revision: r.try_get("revision")?,
                    spec: serde_json::from_str(&spec)
                        .map_err(|e| ControlError::Invalid(format!("stored deployment: {e}")))?,
                    updated_by: r.try_get("updated_by")?,
                    updated_at: Timestamp(r.try_get("updated_at")?),
                })
            })
            .collect()
    }

    pub async fn deploy_list(&self, caller: &Caller) -> Result<Vec<Deployment>> {
        let permit = self.authorize(caller, Action::ModelRead, Resource::all(ResourceKind::Deployment)).await?;
        let out = self.deployments_live().await?;
        self.record(permit, serde_json::json!({})).await?;
        Ok(out)
    }

    /// Every revision of an endpoint, oldest first.
    pub async fn deploy_history(&self, caller: &Caller, name: &str) -> Result<Vec<DeploymentRevision>> {
        let name = Name::parse(name)?;
        let permit = self.authorize(caller, Action::ModelRead, Resource::new(ResourceKind::Deployment, &name)).await?;
        let out = self.deploy_history_unchecked(name.as_str()).await?;
        self.record(permit, serde_json::json!({})).await?;
        Ok(out)
    }

    /// The history, for a caller already authorized.
    async fn deploy_history_unchecked(&self, name: &str) -> Result<Vec<DeploymentRevision>> {
        let rows = sqlx::query(
            "SELECT revision, spec, created_by, created_at FROM deployment_revisions WHERE name = $1 ORDER BY revision",
        )
        .bind(name)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let spec: Option<String> = r.try_get("spec")?;
                Ok(DeploymentRevision {
                    revision: r.try_get("revision")?,
                    spec: spec
                        .map(|s| serde_json::from_str(&s))
                        .transpose()
                        .map_err(|e| ControlError::Invalid(format!("stored deployment: {e}")))?,
                    created_by: r.try_get("created_by")?,
                    created_at: Timestamp(r.try_get("created_at")?),
                })
            })
            .collect()
    }
}

/// What a spec serves, for comparing revisions.
/// An endpoint a version was taken out of when it was archived or retired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Withdrawal {
    pub endpoint: String,
    /// The endpoint's new revision.
    pub revision: i64,
    /// Nothing servable was left: the endpoint was removed.
    pub removed: bool,
    /// What the endpoint serves now (`MODEL@VERSION`), empty when removed.
    #[serde(default)]
    pub targets: Vec<String>,
}

/// Writes revision `revision` of `name` (`None`: a removal) and makes it live.
async fn write_revision(
    tx: &mut AuditedTx,
    name: &str,
    revision: i64,
    spec: Option<&DeploymentSpec>,
    actor: &str,
    now: Timestamp,
) -> Result<()> {
    let spec_json = spec.map(serde_json::to_string).transpose().map_err(|e| ControlError::Invalid(e.to_string()))?;
    sqlx::query(
        "INSERT INTO deployment_revisions (name, revision, spec, created_by, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(name)
    .bind(revision)
    .bind(spec_json.clone())
    .bind(actor)
    .bind(now.0)
    .execute(&mut *tx.conn())
    .await?;
    match &spec_json {
        Some(json) => {
            sqlx::query("DELETE FROM deployments WHERE name = $1").bind(name).execute(&mut *tx.conn()).await?;
            sqlx::query(
                "INSERT INTO deployments (name, revision, spec, updated_by, updated_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(name)
            .bind(revision)
            .bind(json)
            .bind(actor)
            .bind(now.0)
            .execute(&mut *tx.conn())
            .await?;
        }
        None => {
            let gone =
                sqlx::query("DELETE FROM deployments WHERE name = $1").bind(name).execute(&mut *tx.conn()).await?;
            if gone.rows_affected() == 0 {
                return Err(ControlError::NotFound(format!("deployment {name}")));
            }
        }
    }
    Ok(())
}

fn spec_key(s: &DeploymentSpec) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// Parses `[LABEL=]MODEL@VERSION[:WEIGHT]`.
pub fn parse_target(s: &str, default_label: &str) -> Result<Target> {
    let bad = || ControlError::Invalid(format!("{s:?} is not a target; write [LABEL=]MODEL@VERSION[:WEIGHT]"));
    let (label, rest) = match s.split_once('=') {
        Some((l, r)) => (l.to_string(), r),
        None => (default_label.to_string(), s),
    };
    let (model_version, weight) = match rest.split_once(':') {
        Some((mv, w)) => (mv, w.parse::<u32>().map_err(|_| bad())?),
        None => (rest, 0),
    };
    let (model, version) = model_version.split_once('@').ok_or_else(bad)?;
    Ok(Target { label, model: model.to_string(), version: version.parse().map_err(|_| bad())?, weight })
}

impl Workspace {
    /// The source columns of a model version's training datasets that must
    /// not be copied out of a request: those classified confidential or
    /// restricted, masked, or found to hold personal data when the dataset
    /// was ingested. Datasets that are plain artifacts (not ingested through
    /// `data add`) contribute nothing.
    pub async fn model_protected_columns(&self, model: &str, version: i64) -> Result<Vec<String>> {
        let row = sqlx::query("SELECT provenance FROM model_versions WHERE model_name = $1 AND version = $2")
            .bind(model)
            .bind(version)
            .fetch_optional(self.db.pool())
            .await?
            .ok_or_else(|| ControlError::NotFound(format!("model {model}@{version}")))?;
        // What is withheld is decided from these records: one that does not
        // parse withholds nothing it could name, so it fails the load instead.
        let unreadable = |what: String| move |source| ControlError::UnreadableRecord { what, source };
        let provenance: serde_json::Value = serde_json::from_str(&row.try_get::<String, _>("provenance")?)
            .map_err(unreadable(format!("provenance of model {model}@{version}")))?;
        let mut protected = std::collections::BTreeSet::new();
        let deps =
            provenance["predicate"]["buildDefinition"]["resolvedDependencies"].as_array().cloned().unwrap_or_default();
        for d in deps {
            let Some(artifact) = d["digest"]["sha256"].as_str() else { continue };
            let reports = sqlx::query("SELECT report FROM data_versions WHERE artifact_id = $1")
                .bind(artifact)
                .fetch_all(self.db.pool())
                .await?;
            for r in reports {
                let report: citadel_data::IngestReport = serde_json::from_str(&r.try_get::<String, _>("report")?)
                    .map_err(unreadable(format!("report of the dataset version stored as {artifact}")))?;
                for c in &report.profile {
                    let sensitive = matches!(c.source_classification.as_str(), "confidential" | "restricted")
                        || c.mask.is_some()
                        || !c.pii.is_empty();
                    if sensitive {
                        protected.insert(c.name.clone());
                    }
                }
            }
        }
        Ok(protected.into_iter().collect())
    }
}

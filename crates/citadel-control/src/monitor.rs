//! Live monitoring, the control plane's side: the windows gateways write,
//! each judged once against the training reference, the abuse detectors,
//! and the incidents they open (`incident.rs`).
//!
//! A gateway replica sketches what it serves per endpoint and model version
//! (`citadel_data::sketch`) and writes each closed window here
//! ([`Workspace::monitor_write_window`]). [`Workspace::monitor_evaluate`]
//! merges every replica's sketch of a window once the window is closed and
//! its grace period over, and judges it exactly once (the first evaluator to
//! insert the window's verdict wins, so replicas may all run it).

use citadel_policy::{Resource, ResourceKind};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::Row;

use citadel_audit::Outcome;
use citadel_data::sketch::{DriftPolicy, FeatureReference, FeatureSketch, LiveDrift, WindowSketch, live_drift};
use citadel_policy::Action;
use citadel_types::{Name, Timestamp};

use crate::incident::{Detection, Severity};
use crate::{Caller, ControlError, Permit, Result, Workspace};

/// A deployment's monitoring: window length, drift thresholds, detectors.
/// Every replica reads it from the deployment, so their windows align.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringPolicy {
    /// Window length in seconds (windows start at multiples of it since the epoch).
    pub window_secs: u64,
    /// How long after a window ends its verdict waits for late replicas (seconds).
    pub grace_secs: u64,
    pub drift: DriftPolicy,
    pub detectors: DetectorPolicy,
    /// What happens to the actions the playbook decides for a new incident.
    pub playbook: crate::playbook::PlaybookMode,
    /// Ground truth: prediction logging and live accuracy.
    pub feedback: crate::feedback::FeedbackPolicy,
}

impl Default for MonitoringPolicy {
    fn default() -> Self {
        MonitoringPolicy {
            window_secs: 60,
            grace_secs: 10,
            drift: DriftPolicy::default(),
            detectors: DetectorPolicy::default(),
            playbook: crate::playbook::PlaybookMode::Enforce,
            feedback: crate::feedback::FeedbackPolicy::default(),
        }
    }
}

/// Thresholds of the per-principal abuse detectors (per window).
///
/// - **Extraction** (model stealing by many queries, Tramèr et al., USENIX
///   Security 2016): at least `extraction_min_rows` rows, and either a share
///   of out-of-distribution rows of at least `extraction_ood_share` (a grid
///   or random sweep covers the input space, not the data's) or a share of
///   rows near the decision boundary of at least `extraction_boundary_share`
///   (boundary-seeking queries).
/// - **Evasion probing** (adversarial search by small perturbations,
///   e.g. HopSkipJump): at least `evasion_min_rows` rows, of which a share
///   of at least `evasion_near_share` change at most two features from the
///   principal's previous row, and at least `evasion_min_flips` of those
///   flipped the answer.
/// - **Out-of-distribution use**: at least `ood_min_rows` rows with a share of
///   out-of-distribution rows of at least `ood_share`.
///
/// Out-of-distribution shares are also held to twice what training-like
/// rows give (see `abuse_detections`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorPolicy {
    pub extraction_min_rows: u64,
    pub extraction_ood_share: f64,
    pub extraction_boundary_share: f64,
    pub evasion_min_rows: u64,
    pub evasion_near_share: f64,
    pub evasion_min_flips: u64,
    pub ood_min_rows: u64,
    pub ood_share: f64,
}

impl Default for DetectorPolicy {
    fn default() -> Self {
        DetectorPolicy {
            extraction_min_rows: 500,
            extraction_ood_share: 0.25,
            extraction_boundary_share: 0.3,
            evasion_min_rows: 20,
            evasion_near_share: 0.5,
            evasion_min_flips: 3,
            ood_min_rows: 50,
            ood_share: 0.5,
        }
    }
}

impl MonitoringPolicy {
    /// Every problem of the policy, for [`crate::DeploymentSpec::check`].
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(1..=86_400).contains(&self.window_secs) {
            p.push(format!("monitoring.window_secs must be 1 to 86400 (got {})", self.window_secs));
        }
        if self.grace_secs > 3_600 {
            p.push(format!("monitoring.grace_secs must be at most 3600 (got {})", self.grace_secs));
        }
        let d = &self.drift;
        let share = |name: &str, v: f64, p: &mut Vec<String>| {
            if !(0.0..=1.0).contains(&v) {
                p.push(format!("monitoring.{name} must be in [0, 1] (got {v})"));
            }
        };
        if !(d.psi.is_finite() && d.psi > 0.0) {
            p.push(format!("monitoring.drift.psi must be a positive number (got {})", d.psi));
        }
        if !(d.alpha > 0.0 && d.alpha < 1.0) {
            p.push(format!("monitoring.drift.alpha must be in (0, 1) (got {})", d.alpha));
        }
        share("drift.ood_rate", d.ood_rate, &mut p);
        share("drift.ks", d.ks, &mut p);
        if d.min_rows == 0 {
            p.push("monitoring.drift.min_rows must be at least 1".into());
        }
        let t = &self.detectors;
        share("detectors.extraction_ood_share", t.extraction_ood_share, &mut p);
        share("detectors.extraction_boundary_share", t.extraction_boundary_share, &mut p);
        share("detectors.evasion_near_share", t.evasion_near_share, &mut p);
        share("detectors.ood_share", t.ood_share, &mut p);
        let f = &self.feedback;
        share("feedback.max_drop", f.max_drop, &mut p);
        if !(f.alpha > 0.0 && f.alpha < 1.0) {
            p.push(format!("monitoring.feedback.alpha must be in (0, 1) (got {})", f.alpha));
        }
        if f.min_labels == 0 {
            p.push("monitoring.feedback.min_labels must be at least 1".into());
        }
        p
    }

    /// Reads a policy file (TOML: `window_secs`, `grace_secs`, `[drift]`, `[detectors]`).
    pub fn from_toml(text: &str) -> Result<MonitoringPolicy> {
        let p: MonitoringPolicy = toml::from_str(text).map_err(|e| {
            ControlError::Invalid(format!(
                "the monitoring policy does not parse: {} — hint: its keys are window_secs, grace_secs, playbook (\"enforce\", \"dry_run\", \"off\"), [drift] (psi, ks, alpha, min_rows, ood_rate), [detectors] (extraction_min_rows, extraction_ood_share, extraction_boundary_share, evasion_min_rows, evasion_near_share, evasion_min_flips, ood_min_rows, ood_share) and [feedback] (enabled, min_labels, max_drop, alpha, lookback_secs)",
                e.message().trim_end()
            ))
        })?;
        let problems = p.problems();
        if !problems.is_empty() {
            return Err(ControlError::Invalid(problems.join("; ")));
        }
        Ok(p)
    }
}

/// One replica's sketch of one window, as a gateway writes it.
#[derive(Debug, Clone)]
pub struct WindowRecord {
    pub endpoint: String,
    pub model: String,
    pub version: i64,
    pub window_start: Timestamp,
    pub window_end: Timestamp,
    pub replica: String,
    /// The part's id, chosen once by the replica and kept through retries
    /// (a replica writes a window in parts; see `citadel_serve`'s monitor).
    pub part: String,
    pub sketch: WindowSketch,
}

/// A window's verdict: its drift per feature, the prediction's drift, the
/// detections, and the incidents they opened or updated.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WindowVerdict {
    pub endpoint: String,
    pub model: String,
    pub version: i64,
    pub window_start: Timestamp,
    pub window_end: Timestamp,
    pub replicas: u64,
    pub requests: u64,
    pub rows: u64,
    /// The training data the window is compared with (`dataset:NAME@VERSION`).
    pub reference: Option<String>,
    /// Why there is no comparison, when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub drift: Vec<LiveDrift>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<LiveDrift>,
    pub detections: Vec<Detection>,
    pub incidents: Vec<String>,
    /// Live accuracy per version from the labels fed back (when enabled).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub performance: Vec<crate::feedback::LivePerformance>,
}

/// References by model version (see [`Workspace`]'s field).
pub(crate) type ReferenceCache = std::sync::Mutex<BTreeMap<(String, i64), std::sync::Arc<Reference>>>;

/// What a model version is compared with.
#[derive(Debug)]
pub(crate) struct Reference {
    dataset: Option<String>,
    features: BTreeMap<String, FeatureReference>,
    predicted: Option<Vec<(String, u64)>>,
    note: Option<String>,
}

impl Workspace {
    /// Stores one part of one replica's sketch of a window (the same part
    /// written twice, a retry after a lost acknowledgement, is stored once).
    /// Audited as `monitor.write` with the part's id.
    pub async fn monitor_write_window(&self, caller: &Caller, w: &WindowRecord) -> Result<()> {
        let endpoint = Name::parse(&w.endpoint)?;
        let resource = Resource::new(ResourceKind::Deployment, &endpoint);
        let permit = self.authorize(caller, Action::MonitorWrite, resource.clone()).await?;
        let sketch = serde_json::to_string(&w.sketch)
            .map_err(|e| ControlError::Invalid(format!("the window sketch does not serialize: {e}")))?;
        let mut tx = self.db.begin_audited().await?;
        let inserted = sqlx::query(
            "INSERT INTO monitor_windows (endpoint, model, version, window_start, window_end, replica, part, requests, rows_seen, sketch, written_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING",
        )
        .bind(endpoint.as_str())
        .bind(w.model.as_str())
        .bind(w.version)
        .bind(w.window_start.0)
        .bind(w.window_end.0)
        .bind(w.replica.as_str())
        .bind(w.part.as_str())
        .bind(w.sketch.requests as i64)
        .bind(w.sketch.rows as i64)
        .bind(sketch)
        .bind(Timestamp::now().0)
        .execute(&mut *tx.conn())
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(());
        }
        tx.commit(permit.success(
            serde_json::json!({"model": w.model, "version": w.version, "window_start": w.window_start.to_rfc3339(),
                               "replica": w.replica, "part": w.part, "requests": w.sketch.requests, "rows": w.sketch.rows}),
        ))
        .await?;
        Ok(())
    }

    /// Judges every window that closed at least its grace period before
    /// `now` and has no verdict yet (at most 50 per call), opening or
    /// updating incidents. Returns the verdicts this call made.
    pub async fn monitor_evaluate(&self, caller: &Caller, now: Timestamp) -> Result<Vec<WindowVerdict>> {
        let permit = self.authorize(caller, Action::MonitorWrite, Resource::all(ResourceKind::Deployment)).await?;
        // Playbooks a crash left unfinished come first (each resumed once);
        // one that cannot run now stays queued and does not stop the judging.
        let _ = self.playbook_resume(caller, now).await;
        let pending = sqlx::query(
            "SELECT w.endpoint, w.model, w.version, w.window_start, MAX(w.window_end) AS window_end, \
             MAX(w.written_at) AS written_at FROM monitor_windows w \
             WHERE NOT EXISTS (SELECT 1 FROM monitor_evaluations v WHERE v.endpoint = w.endpoint AND v.model = w.model \
             AND v.version = w.version AND v.window_start = w.window_start) \
             GROUP BY w.endpoint, w.model, w.version, w.window_start HAVING MAX(w.window_end) <= $1 \
             ORDER BY w.window_start LIMIT 500",
        )
        .bind(now.0)
        .fetch_all(self.db.pool())
        .await?;
        let live = self.deployments_live().await?;
        let live_targets: BTreeMap<String, Vec<(String, i64)>> = live
            .iter()
            .map(|d| (d.name.clone(), d.spec.targets.iter().map(|t| (t.model.clone(), t.version)).collect()))
            .collect();
        let policies: BTreeMap<String, MonitoringPolicy> =
            live.into_iter().map(|d| (d.name, d.spec.monitoring.unwrap_or_default())).collect();
        let mut references: BTreeMap<(String, i64), std::result::Result<std::sync::Arc<Reference>, String>> =
            BTreeMap::new();
        let mut verdicts = Vec::new();
        for row in pending {
            let endpoint: String = row.try_get("endpoint")?;
            let model: String = row.try_get("model")?;
            let version: i64 = row.try_get("version")?;
            let window_start: i64 = row.try_get("window_start")?;
            let window_end: i64 = row.try_get("window_end")?;
            let written_at: i64 = row.try_get("written_at")?;
            let policy = policies.get(&endpoint).copied().unwrap_or_default();
            // Judged once the window ended and its last sketch arrived, plus the
            // grace for replicas that flush later.
            if window_end.max(written_at) + policy.grace_secs as i64 * 1_000_000 > now.0 {
                continue;
            }
            let sketches = sqlx::query(
                "SELECT replica, sketch FROM monitor_windows WHERE endpoint = $1 AND model = $2 AND version = $3 AND window_start = $4",
            )
            .bind(&endpoint)
            .bind(&model)
            .bind(version)
            .bind(window_start)
            .fetch_all(self.db.pool())
            .await?;
            let mut merged = WindowSketch::default();
            let mut unreadable = 0u64;
            let mut writers = std::collections::BTreeSet::new();
            for s in &sketches {
                match WindowSketch::from_json(&s.try_get::<String, _>("sketch")?) {
                    Some(w) => {
                        merged.merge(&w);
                        writers.insert(s.try_get::<String, _>("replica")?);
                    }
                    None => unreadable += 1,
                }
            }
            let replicas = writers.len() as u64;
            let key = (model.clone(), version);
            if !references.contains_key(&key) {
                // A reference that cannot be read is this window's note, not
                // every endpoint's failure (the window is still judged once).
                let r = self.monitor_reference(&permit, &model, version).await.map_err(|e| e.to_string());
                references.insert(key.clone(), r);
            }
            let reference = match &references[&key] {
                Ok(r) => r.clone(),
                Err(e) => std::sync::Arc::new(Reference {
                    dataset: None,
                    features: BTreeMap::new(),
                    predicted: None,
                    note: Some(format!("the training reference could not be read ({e}): input drift is not judged")),
                }),
            };
            let drift = live_drift(&merged, &reference.features, &policy.drift);
            let prediction = prediction_drift(&merged, reference.predicted.as_deref(), &policy.drift);
            let mut detections = drift_detections(&drift, prediction.as_ref());
            detections.extend(abuse_detections(&merged, &policy.detectors));
            let mut note = reference.note.clone();
            if unreadable > 0 {
                note = Some(format!("{unreadable} replica sketch(es) of this window were unreadable and left out"));
            }
            if merged.rows < policy.drift.min_rows && !reference.features.is_empty() {
                note.get_or_insert_with(|| {
                    format!("{} rows: drift is judged from {} rows a window", merged.rows, policy.drift.min_rows)
                });
            }
            let mut verdict = WindowVerdict {
                endpoint: endpoint.clone(),
                model: model.clone(),
                version,
                window_start: Timestamp(window_start),
                window_end: Timestamp(window_end),
                replicas,
                requests: merged.requests,
                rows: merged.rows,
                reference: reference.dataset.clone(),
                note,
                drift,
                prediction,
                detections,
                incidents: Vec::new(),
                performance: Vec::new(),
            };
            let mut tx = self.db.begin_audited().await?;
            let claimed = sqlx::query(
                "INSERT INTO monitor_evaluations (endpoint, model, version, window_start, evaluated_at, result) \
                 VALUES ($1, $2, $3, $4, $5, '') ON CONFLICT DO NOTHING",
            )
            .bind(&endpoint)
            .bind(&model)
            .bind(version)
            .bind(window_start)
            .bind(now.0)
            .execute(&mut *tx.conn())
            .await?
            .rows_affected();
            if claimed == 0 {
                continue; // another evaluator judged it
            }
            let mut opened = Vec::new();
            for d in &verdict.detections {
                let (id, new) =
                    crate::incident::upsert(&mut tx, d, &endpoint, Some((&model, version)), caller.name(), now).await?;
                if new {
                    crate::playbook::queue_playbook(&mut tx, &id, policy.playbook, caller).await?;
                    opened.push(id.clone());
                }
                if !verdict.incidents.contains(&id) {
                    verdict.incidents.push(id);
                }
            }
            store_verdict(tx.conn(), &verdict).await?;
            tx.commit(permit.item(serde_json::json!({
                    "model": model, "version": version, "window_start": Timestamp(window_start).to_rfc3339(),
                    "rows": verdict.rows, "replicas": replicas,
                    "drifted": verdict.drift.iter().filter(|d| d.drifted).map(|d| d.stats.column.clone()).collect::<Vec<_>>(),
                    "detections": verdict.detections.iter().map(|d| d.kind.clone()).collect::<Vec<_>>(),
                    "incidents": verdict.incidents,
                })))
            .await?;
            // The playbook answers new incidents only: an update is the same incident.
            for id in opened {
                if let Err(e) = self.playbook_run(caller, &id, policy.playbook).await {
                    verdict.note = Some(format!("the playbook failed for {id}: {e}"));
                }
            }
            verdicts.push(verdict);
        }
        // Live performance of every endpoint judged now that has feedback on.
        let endpoints: std::collections::BTreeSet<String> = verdicts.iter().map(|v| v.endpoint.clone()).collect();
        for endpoint in endpoints {
            let policy = policies.get(&endpoint).copied().unwrap_or_default();
            if !policy.feedback.enabled {
                continue;
            }
            let served: Vec<(String, i64)> = live_targets.get(&endpoint).cloned().unwrap_or_default();
            let (performance, detections) = self.live_performance(&endpoint, &policy.feedback, &served, now).await?;
            let Some(v) = verdicts.iter_mut().rev().find(|v| v.endpoint == endpoint) else { continue };
            // Incidents and the verdict's performance in one audited transaction.
            let mut tx = self.db.begin_audited().await?;
            let mut opened = Vec::new();
            let mut ids = Vec::new();
            for (model, version, d) in &detections {
                let (id, new) =
                    crate::incident::upsert(&mut tx, d, &endpoint, Some((model, *version)), caller.name(), now).await?;
                if new {
                    crate::playbook::queue_playbook(&mut tx, &id, policy.playbook, caller).await?;
                    opened.push(id.clone());
                }
                ids.push(id);
            }
            v.performance = performance;
            v.detections.extend(detections.iter().map(|(_, _, d)| d.clone()));
            v.incidents.extend(ids.iter().cloned());
            store_verdict(tx.conn(), v).await?;
            tx.commit(permit.item(serde_json::json!({
                    "versions": v.performance.iter().map(|p| serde_json::json!({"version": format!("{}@{}", p.model, p.version), "labels": p.labels, "accuracy": p.accuracy})).collect::<Vec<_>>(),
                    "degraded": detections.iter().map(|(m, ver, _)| format!("{m}@{ver}")).collect::<Vec<_>>(),
                    "incidents": ids,
                })))
            .await?;
            for id in opened {
                if let Err(e) = self.playbook_run(caller, &id, policy.playbook).await {
                    v.note = Some(format!("the playbook failed for {id}: {e}"));
                }
            }
        }
        Ok(verdicts)
    }

    /// The latest verdicts of an endpoint, newest first (at most `limit`).
    pub async fn monitor_status(&self, caller: &Caller, endpoint: &str, limit: i64) -> Result<Vec<WindowVerdict>> {
        let endpoint = Name::parse(endpoint)?;
        let permit =
            self.authorize(caller, Action::MonitorRead, Resource::new(ResourceKind::Deployment, &endpoint)).await?;
        // A read: recorded before anything it returns.
        self.record(permit, serde_json::json!({})).await?;
        let known = self.deployments_live().await?.iter().any(|d| d.name == endpoint.as_str())
            || sqlx::query("SELECT 1 AS x FROM monitor_windows WHERE endpoint = $1 LIMIT 1")
                .bind(endpoint.as_str())
                .fetch_optional(self.db.pool())
                .await?
                .is_some();
        if !known {
            return Err(ControlError::NotFound(format!("deployment {endpoint}")));
        }
        let rows = sqlx::query(
            "SELECT result FROM monitor_evaluations WHERE endpoint = $1 AND result <> '' ORDER BY window_start DESC LIMIT $2",
        )
        .bind(endpoint.as_str())
        .bind(limit.clamp(1, 10_000))
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get("result")?;
                serde_json::from_str(&text)
                    .map_err(|e| ControlError::Invalid(format!("a stored verdict of {endpoint} is unreadable: {e}")))
            })
            .collect()
    }

    /// The training reference of a model version: its training dataset
    /// (found through lineage: `model:M@V` trained-on an artifact a dataset
    /// version is stored as), numeric features from the version's stored
    /// row sample, categorical ones from its exact category counts, and the
    /// held-out predictions' class counts from the model card. Reading the
    /// dataset is audited.
    async fn monitor_reference(&self, permit: &Permit, model: &str, version: i64) -> Result<std::sync::Arc<Reference>> {
        let key = (model.to_string(), version);
        if let Some(r) = self.monitor_references.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(r);
        }
        let r = std::sync::Arc::new(self.read_reference(permit, model, version).await?);
        if let Ok(mut c) = self.monitor_references.lock() {
            if c.len() >= 64 {
                c.clear();
            }
            c.insert(key, r.clone());
        }
        Ok(r)
    }

    async fn read_reference(&self, permit: &Permit, model: &str, version: i64) -> Result<Reference> {
        let predicted = match sqlx::query("SELECT evaluation FROM model_cards WHERE model_name = $1 AND version = $2")
            .bind(model)
            .bind(version)
            .fetch_optional(self.db.pool())
            .await?
        {
            // The card's summary (`Evaluation::headline`) carries the held-out
            // predictions' class counts since they were added; older versions
            // have none, and get no prediction drift.
            Some(r) => serde_json::from_str::<serde_json::Value>(&r.try_get::<String, _>("evaluation")?)
                .ok()
                .and_then(|h| serde_json::from_value::<Vec<(String, u64)>>(h["predicted_classes"].clone()).ok())
                .filter(|c| !c.is_empty()),
            None => None,
        };
        let mut dataset = None;
        for e in citadel_store::lineage_edges(self.db.pool(), &format!("model:{model}@{version}"), true).await? {
            if e.relation != "trained-on" {
                continue;
            }
            for d in citadel_store::lineage_edges(self.db.pool(), &e.parent, false).await? {
                if d.relation == "stored-as"
                    && let Some(r) = d.child.strip_prefix("dataset:")
                {
                    dataset = Some(crate::parse_dataset_ref(r)?);
                }
            }
        }
        let Some((name, Some(dv))) = dataset else {
            return Ok(Reference {
                dataset: None,
                features: BTreeMap::new(),
                predicted,
                note: Some(format!("{model}@{version}'s lineage names no training dataset: input drift is not judged")),
            });
        };
        let v = match self.data_version_row(name.as_str(), Some(dv)).await {
            Ok(v) => v,
            Err(ControlError::NotFound(what)) => {
                return Ok(Reference {
                    dataset: Some(format!("dataset:{name}@{dv}")),
                    features: BTreeMap::new(),
                    predicted,
                    note: Some(format!("the training data is gone ({what}): input drift is not judged")),
                });
            }
            Err(e) => return Err(e),
        };
        self.audit_data_read(
            permit,
            &Resource::dataset_version(&v.dataset, v.version),
            serde_json::json!({"what": "monitoring reference", "for": format!("model:{model}@{version}"), "columns": "profile, sample"}),
        )
        .await?;
        let work = crate::data::WorkDir::new(&self.config.workspace)?;
        let dir = self.restore_data(&v, &work.0).await?;
        let report = v.report.clone();
        let features = tokio::task::spawn_blocking(move || {
            let sample = citadel_data::ingest::read_sample(&dir.join(citadel_data::ingest::SAMPLE_FILE))?;
            let mut out = BTreeMap::new();
            for col in &report.profile {
                if let Some(values) = sample.get(&col.name) {
                    let mut v = values.clone();
                    citadel_data::stats::sort_f64(&mut v);
                    out.insert(col.name.clone(), FeatureReference::Numeric(v));
                } else if let Some(c) = &col.categories {
                    out.insert(col.name.clone(), FeatureReference::Categorical(c.clone()));
                }
            }
            Ok::<_, ControlError>(out)
        })
        .await
        .map_err(crate::data::join_err)??;
        Ok(Reference { dataset: Some(format!("dataset:{}@{}", v.dataset, v.version)), features, predicted, note: None })
    }
}

/// Writes a verdict into its window's claimed `monitor_evaluations` row.
async fn store_verdict(conn: &mut sqlx::AnyConnection, v: &WindowVerdict) -> Result<()> {
    let result =
        serde_json::to_string(v).map_err(|e| ControlError::Invalid(format!("the verdict does not serialize: {e}")))?;
    sqlx::query(
        "UPDATE monitor_evaluations SET result = $1 WHERE endpoint = $2 AND model = $3 AND version = $4 AND window_start = $5",
    )
    .bind(result)
    .bind(&v.endpoint)
    .bind(&v.model)
    .bind(v.version)
    .bind(v.window_start.0)
    .execute(conn)
    .await?;
    Ok(())
}

/// How long monitoring records are kept (windows, verdicts, authentication
/// windows, logged predictions, labels); `citadel gc` deletes older ones.
/// Incidents and their timelines are kept.
pub const MONITORING_RETENTION_DAYS: i64 = 30;

impl Workspace {
    /// Deletes monitoring records older than [`MONITORING_RETENTION_DAYS`]
    /// (judged or not: a month is far past any grace period) in one audited
    /// transaction; returns how many rows went.
    pub(crate) async fn monitor_purge(&self, permit: &Permit, now: Timestamp) -> Result<u64> {
        let before = now.0 - MONITORING_RETENTION_DAYS * 86_400 * 1_000_000;
        let mut tx = self.db.begin_audited().await?;
        let mut n = 0;
        for sql in [
            "DELETE FROM monitor_windows WHERE window_end < $1",
            "DELETE FROM auth_windows WHERE window_end < $1",
            "DELETE FROM monitor_evaluations WHERE window_start < $1",
            "DELETE FROM predictions WHERE at < $1",
            "DELETE FROM feedback WHERE received_at < $1",
        ] {
            n += sqlx::query(sql).bind(before).execute(&mut *tx.conn()).await?.rows_affected();
        }
        if n == 0 {
            return Ok(0);
        }
        tx.commit(permit.step("monitor.purge", Outcome::Success, serde_json::json!({"rows": n, "before": Timestamp(before).to_rfc3339(), "retention_days": MONITORING_RETENTION_DAYS})))
        .await?;
        Ok(n)
    }
}

/// The predicted classes' live distribution against the held-out one.
fn prediction_drift(w: &WindowSketch, reference: Option<&[(String, u64)]>, policy: &DriftPolicy) -> Option<LiveDrift> {
    let (Some(r), Some(p @ FeatureSketch::Categorical { .. })) = (reference, &w.prediction) else { return None };
    let mut window = WindowSketch { rows: w.rows, ..Default::default() };
    window.features.insert("prediction".into(), p.clone());
    let refs = BTreeMap::from([("prediction".to_string(), FeatureReference::Categorical(r.to_vec()))]);
    live_drift(&window, &refs, policy).into_iter().next()
}

fn drift_detections(drift: &[LiveDrift], prediction: Option<&LiveDrift>) -> Vec<Detection> {
    let mut out = Vec::new();
    let drifted: Vec<&LiveDrift> = drift.iter().filter(|d| d.drifted).collect();
    if !drifted.is_empty() {
        let worst = drifted.iter().filter_map(|d| d.stats.psi).fold(0.0, f64::max);
        out.push(Detection {
            kind: "drift".into(),
            severity: if drifted.len() >= 3 || worst >= 0.5 { Severity::High } else { Severity::Warning },
            principal: None,
            summary: format!(
                "input drift in {} feature(s): {}",
                drifted.len(),
                drifted
                    .iter()
                    .map(|d| format!("{} (PSI {:.2})", d.stats.column, d.stats.psi.unwrap_or(0.0)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            evidence: serde_json::json!({"features": drifted}),
        });
    }
    let ood: Vec<&LiveDrift> = drift.iter().filter(|d| d.out_of_distribution).collect();
    if !ood.is_empty() {
        out.push(Detection {
            kind: "out_of_distribution".into(),
            severity: Severity::Warning,
            principal: None,
            summary: format!(
                "inputs outside the training data in {} feature(s): {}",
                ood.len(),
                ood.iter()
                    .map(|d| format!("{} ({:.0}%)", d.stats.column, d.ood_rate * 100.0))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            evidence: serde_json::json!({"features": ood}),
        });
    }
    if let Some(p) = prediction.filter(|p| p.drifted) {
        out.push(Detection {
            kind: "prediction_drift".into(),
            severity: Severity::Warning,
            principal: None,
            summary: format!(
                "the predicted classes drifted from the held-out ones (PSI {:.2})",
                p.stats.psi.unwrap_or(0.0)
            ),
            evidence: serde_json::json!({"prediction": p}),
        });
    }
    out
}

/// The per-principal detectors (see [`DetectorPolicy`]). Evidence is counts and shares.
///
/// A row is out of distribution when any numeric feature lies outside the
/// training rows' p1–p99 (2% of training values each) or a category is
/// unseen, so even training-like rows are flagged at about `1 − 0.98^F`
/// with F numeric features: an out-of-distribution share counts only at
/// twice that or more, and only when a one-sided binomial test against it
/// is significant at 0.01.
fn abuse_detections(w: &WindowSketch, policy: &DetectorPolicy) -> Vec<Detection> {
    let mut out = Vec::new();
    let numeric =
        w.features.values().filter(|f| matches!(f, FeatureSketch::Numeric { range: Some(_), .. })).count() as i32;
    let expected_ood = 1.0 - 0.98f64.powi(numeric);
    let ood_significant = |ood: u64, rows: u64, floor: f64| {
        let share = ood as f64 / rows as f64;
        share >= floor.max(2.0 * expected_ood)
            && citadel_data::stats::binom_sf(ood, rows, expected_ood.max(1e-9)) < 0.01
    };
    for (principal, p) in &w.principals {
        if p.rows == 0 {
            continue;
        }
        let share = |n: u64| n as f64 / p.rows as f64;
        let evidence = serde_json::json!({
            "requests": p.requests, "rows": p.rows,
            "ood_share": share(p.ood_rows), "boundary_share": share(p.boundary_rows),
            "repeated_share": share(p.repeated_rows), "near_previous_share": share(p.near_previous),
            "flips_near_previous": p.flips_near_previous,
        });
        let detection = |kind: &str, severity: Severity, summary: String| Detection {
            kind: kind.into(),
            severity,
            principal: Some(principal.clone()),
            summary,
            evidence: evidence.clone(),
        };
        if p.rows >= policy.extraction_min_rows
            && (ood_significant(p.ood_rows, p.rows, policy.extraction_ood_share)
                || share(p.boundary_rows) >= policy.extraction_boundary_share)
        {
            out.push(detection(
                "extraction",
                Severity::High,
                format!(
                    "{principal} sent {} rows in one window, {:.0}% outside the training data and {:.0}% near the decision boundary: a model-extraction pattern",
                    p.rows,
                    share(p.ood_rows) * 100.0,
                    share(p.boundary_rows) * 100.0
                ),
            ));
        } else if p.rows >= policy.ood_min_rows && ood_significant(p.ood_rows, p.rows, policy.ood_share) {
            out.push(detection(
                "out_of_distribution_client",
                Severity::Warning,
                format!(
                    "{:.0}% of {principal}'s {} rows lie outside the training data",
                    share(p.ood_rows) * 100.0,
                    p.rows
                ),
            ));
        }
        if p.rows >= policy.evasion_min_rows
            && share(p.near_previous) >= policy.evasion_near_share
            && p.flips_near_previous >= policy.evasion_min_flips
        {
            out.push(detection(
                "evasion",
                Severity::High,
                format!(
                    "{principal} sent {} rows, {:.0}% of them small changes of the previous one, and {} of those flipped the answer: an evasion search",
                    p.rows,
                    share(p.near_previous) * 100.0,
                    p.flips_near_previous
                ),
            ));
        }
    }
    out
}

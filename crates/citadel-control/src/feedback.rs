//! Ground truth for live performance: the predictions gateways log (when a
//! deployment's `monitoring.feedback.enabled`), the labels the feedback API
//! receives, and the join that gives each served version's live accuracy,
//! calibration and accuracy per group.
//!
//! A label is joined to the prediction made for `(endpoint, request id,
//! row)`, only when exactly one principal's prediction has that key:
//! request ids can be chosen by clients (`x-request-id`), and a client that
//! claims another's id makes that row ungraded, never graded against its
//! own answer. The first prediction a principal logs and the first label
//! received for a key are kept. Live accuracy of a version is compared with
//! the best other version the endpoint serves now (a canary with its
//! primary: a two-proportion z-test) or, alone, with its held-out accuracy
//! (a one-sided binomial test); a drop of at least `max_drop` that is
//! significant at `alpha` opens a `performance` incident. The test is
//! repeated every window over a sliding lookback (no correction for the
//! repeated looks): a lower `alpha` buys fewer false alarms.

use citadel_policy::{Resource, ResourceKind};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::Row;

use citadel_policy::Action;
use citadel_types::{Name, Timestamp};

use crate::incident::{Detection, Severity};
use crate::{Caller, ControlError, Result, Workspace};

/// Rows a multi-row INSERT carries (× 9 parameters stays under SQLite's
/// and PostgreSQL's parameter limits).
const INSERT_CHUNK: usize = 500;

/// `($1, $2, …), ($n+1, …)`: `rows` groups of `cols` placeholders.
fn placeholders(rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|r| format!("({})", (1..=cols).map(|c| format!("${}", r * cols + c)).collect::<Vec<_>>().join(", ")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Live performance settings of a deployment.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FeedbackPolicy {
    /// Log predictions so labels can be joined to them.
    pub enabled: bool,
    /// Labels a version needs before it is judged.
    pub min_labels: u64,
    /// An accuracy drop (absolute) that opens an incident when significant.
    pub max_drop: f64,
    pub alpha: f64,
    /// How far back labels count (seconds, by when they were received).
    pub lookback_secs: u64,
}

impl Default for FeedbackPolicy {
    fn default() -> Self {
        FeedbackPolicy { enabled: false, min_labels: 100, max_drop: 0.05, alpha: 0.01, lookback_secs: 3_600 }
    }
}

/// One served row's prediction, as a gateway logs it.
#[derive(Debug, Clone)]
pub struct PredictionRecord {
    pub endpoint: String,
    pub request_id: String,
    pub row: u32,
    pub model: String,
    pub version: i64,
    pub predicted: String,
    /// The predicted class's probability.
    pub score: f64,
    pub at: Timestamp,
    /// Who asked for the prediction.
    pub principal: String,
}

/// One label, as the feedback API takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackItem {
    pub request_id: String,
    #[serde(default)]
    pub row: u32,
    pub label: String,
    /// Group attributes (e.g. `{"sex": "Female"}`) for fairness per group.
    #[serde(default)]
    pub groups: BTreeMap<String, String>,
}

/// What a feedback call stored.
#[derive(Debug, Clone, Serialize)]
pub struct FeedbackReceipt {
    pub accepted: u64,
    /// Labels for a key that already had one (the first is kept).
    pub duplicates: u64,
}

/// A version's live performance over the lookback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LivePerformance {
    pub model: String,
    pub version: i64,
    pub labels: u64,
    pub correct: u64,
    pub accuracy: f64,
    /// Expected calibration error over 10 equal-width bins of the predicted
    /// class's probability (Naeini et al., AAAI 2015).
    pub ece: f64,
    /// Per group attribute, per value: (labels, accuracy).
    pub groups: BTreeMap<String, BTreeMap<String, (u64, f64)>>,
    /// What it is compared with: another version's live accuracy, or the held-out one.
    pub baseline: Option<(String, f64)>,
    pub p_value: Option<f64>,
    pub degraded: bool,
}

impl Workspace {
    /// Stores logged predictions (one audited transaction per endpoint).
    pub async fn monitor_write_predictions(&self, caller: &Caller, records: &[PredictionRecord]) -> Result<()> {
        let mut by_endpoint: BTreeMap<&str, Vec<&PredictionRecord>> = BTreeMap::new();
        for r in records {
            by_endpoint.entry(r.endpoint.as_str()).or_default().push(r);
        }
        for (endpoint, rows) in by_endpoint {
            let resource = Resource::deployment(Name::parse(endpoint)?);
            let permit = self.authorize(caller, Action::MonitorWrite, resource.clone()).await?;
            let mut tx = self.db.begin_audited().await?;
            // Multi-row inserts: a batch of thousands holds the write lock briefly.
            for chunk in rows.chunks(INSERT_CHUNK) {
                let sql = format!(
                    "INSERT INTO predictions (endpoint, request_id, row_index, model, version, predicted, score, at, principal) \
                     VALUES {} ON CONFLICT DO NOTHING",
                    placeholders(chunk.len(), 9)
                );
                let mut q = sqlx::query(&sql);
                for r in chunk {
                    q = q
                        .bind(endpoint)
                        .bind(&r.request_id)
                        .bind(i64::from(r.row))
                        .bind(&r.model)
                        .bind(r.version)
                        .bind(&r.predicted)
                        .bind(r.score)
                        .bind(r.at.0)
                        .bind(&r.principal);
                }
                q.execute(&mut *tx.conn()).await?;
            }
            tx.commit(permit.success(serde_json::json!({"rows": rows.len()}))).await?;
        }
        Ok(())
    }

    /// Stores ground-truth labels for an endpoint's predictions
    /// (`model.feedback` on `model:ENDPOINT`). Audited as `model.feedback`.
    pub async fn monitor_feedback(
        &self,
        caller: &Caller,
        endpoint: &str,
        items: &[FeedbackItem],
    ) -> Result<FeedbackReceipt> {
        let endpoint = Name::parse(endpoint)?;
        let resource = Resource::new(ResourceKind::Model, &endpoint);
        let permit = self.authorize(caller, Action::ModelFeedback, resource.clone()).await?;
        let now = Timestamp::now();
        let mut tx = self.db.begin_audited().await?;
        let mut accepted = 0;
        for chunk in items.chunks(INSERT_CHUNK) {
            let sql = format!(
                "INSERT INTO feedback (endpoint, request_id, row_index, label, groups, principal, received_at) \
                 VALUES {} ON CONFLICT DO NOTHING",
                placeholders(chunk.len(), 7)
            );
            let mut q = sqlx::query(&sql);
            for i in chunk {
                let groups = serde_json::to_string(&i.groups)
                    .map_err(|e| ControlError::Invalid(format!("feedback groups do not serialize: {e}")))?;
                q = q
                    .bind(endpoint.as_str())
                    .bind(&i.request_id)
                    .bind(i64::from(i.row))
                    .bind(&i.label)
                    .bind(groups)
                    .bind(caller.name())
                    .bind(now.0);
            }
            accepted += q.execute(&mut *tx.conn()).await?.rows_affected();
        }
        let receipt = FeedbackReceipt { accepted, duplicates: items.len() as u64 - accepted };
        tx.commit(permit.success(serde_json::json!({"labels": items.len(), "accepted": receipt.accepted}))).await?;
        Ok(receipt)
    }

    /// Live performance of each version an endpoint served, over labels
    /// received since `now − lookback`, and the `performance` detections.
    pub(crate) async fn live_performance(
        &self,
        endpoint: &str,
        policy: &FeedbackPolicy,
        served: &[(String, i64)],
        now: Timestamp,
    ) -> Result<(Vec<LivePerformance>, Vec<(String, i64, Detection)>)> {
        let rows = sqlx::query(
            "SELECT p.model, p.version, p.predicted, p.score, f.label, f.groups FROM predictions p JOIN feedback f \
             ON f.endpoint = p.endpoint AND f.request_id = p.request_id AND f.row_index = p.row_index \
             WHERE p.endpoint = $1 AND f.received_at >= $2 AND (SELECT COUNT(*) FROM predictions q \
             WHERE q.endpoint = p.endpoint AND q.request_id = p.request_id AND q.row_index = p.row_index) = 1",
        )
        .bind(endpoint)
        .bind(now.0 - policy.lookback_secs as i64 * 1_000_000)
        .fetch_all(self.db.pool())
        .await?;
        struct Acc {
            n: u64,
            correct: u64,
            bins: [(u64, f64, u64); 10],
            groups: BTreeMap<String, BTreeMap<String, (u64, u64)>>,
        }
        let mut per: BTreeMap<(String, i64), Acc> = BTreeMap::new();
        for r in &rows {
            let key = (r.try_get::<String, _>("model")?, r.try_get::<i64, _>("version")?);
            let predicted: String = r.try_get("predicted")?;
            let label: String = r.try_get("label")?;
            let score: f64 = r.try_get("score")?;
            let groups: BTreeMap<String, String> =
                serde_json::from_str(&r.try_get::<String, _>("groups")?).unwrap_or_default();
            let a = per.entry(key).or_insert_with(|| Acc {
                n: 0,
                correct: 0,
                bins: [(0, 0.0, 0); 10],
                groups: BTreeMap::new(),
            });
            let ok = predicted == label;
            a.n += 1;
            a.correct += ok as u64;
            let b = &mut a.bins[((score.clamp(0.0, 1.0) * 10.0) as usize).min(9)];
            b.0 += 1;
            b.1 += score;
            b.2 += ok as u64;
            for (attr, value) in groups {
                let g = a.groups.entry(attr).or_default().entry(value).or_default();
                g.0 += 1;
                g.1 += ok as u64;
            }
        }
        let mut out: Vec<LivePerformance> = per
            .into_iter()
            .map(|((model, version), a)| {
                let ece = a
                    .bins
                    .iter()
                    .filter(|b| b.0 > 0)
                    .map(|b| (b.0 as f64 / a.n as f64) * (b.1 / b.0 as f64 - b.2 as f64 / b.0 as f64).abs())
                    .sum();
                LivePerformance {
                    model,
                    version,
                    labels: a.n,
                    correct: a.correct,
                    accuracy: a.correct as f64 / a.n as f64,
                    ece,
                    groups: a
                        .groups
                        .into_iter()
                        .map(|(k, v)| (k, v.into_iter().map(|(g, (n, c))| (g, (n, c as f64 / n as f64))).collect()))
                        .collect(),
                    baseline: None,
                    p_value: None,
                    degraded: false,
                }
            })
            .collect();
        // Each served version against the best other served one, else its held-out accuracy.
        let judged: Vec<(usize, f64, u64, u64)> = out
            .iter()
            .enumerate()
            .filter(|(_, p)| p.labels >= policy.min_labels && served.iter().any(|s| s.0 == p.model && s.1 == p.version))
            .map(|(i, p)| (i, p.accuracy, p.correct, p.labels))
            .collect();
        let mut detections = Vec::new();
        for &(i, acc, correct, n) in &judged {
            let best_other = judged.iter().filter(|j| j.0 != i).max_by(|a, b| a.1.total_cmp(&b.1));
            let (baseline, p) = match best_other {
                Some(&(j, other, oc, on)) => (
                    Some((format!("{}@{} live", out[j].model, out[j].version), other)),
                    (other - acc >= policy.max_drop).then(|| citadel_data::stats::two_proportion_p(correct, n, oc, on)),
                ),
                None => {
                    let held_out = self.held_out_accuracy(&out[i].model, out[i].version).await?;
                    match held_out {
                        Some(h) => (
                            Some((format!("{}@{} held-out", out[i].model, out[i].version), h)),
                            // P(X ≤ correct) under the held-out rate: the lower tail.
                            (h - acc >= policy.max_drop)
                                .then(|| 1.0 - citadel_data::stats::binom_sf(correct + 1, n, h)),
                        ),
                        None => (None, None),
                    }
                }
            };
            let p_out = &mut out[i];
            p_out.baseline = baseline.clone();
            p_out.p_value = p;
            p_out.degraded = p.is_some_and(|p| p < policy.alpha);
            if p_out.degraded {
                let (what, base) = baseline.unwrap_or_default();
                detections.push((
                    p_out.model.clone(),
                    p_out.version,
                    Detection {
                        kind: "performance".into(),
                        severity: Severity::High,
                        principal: None,
                        summary: format!(
                            "{}@{} answers {:.1}% right on {} labelled rows, {:.1} points under {what} ({:.1}%)",
                            p_out.model,
                            p_out.version,
                            acc * 100.0,
                            n,
                            (base - acc) * 100.0,
                            base * 100.0
                        ),
                        evidence: serde_json::to_value(&*p_out).unwrap_or_default(),
                    },
                ));
            }
        }
        Ok((out, detections))
    }

    async fn held_out_accuracy(&self, model: &str, version: i64) -> Result<Option<f64>> {
        let row = sqlx::query("SELECT evaluation FROM model_cards WHERE model_name = $1 AND version = $2")
            .bind(model)
            .bind(version)
            .fetch_optional(self.db.pool())
            .await?;
        // The card's summary (`Evaluation::headline`): its `accuracy`.
        Ok(row.and_then(|r| {
            let h: serde_json::Value = serde_json::from_str(&r.try_get::<String, _>("evaluation").ok()?).ok()?;
            h.get("accuracy").and_then(|a| a.as_f64())
        }))
    }
}

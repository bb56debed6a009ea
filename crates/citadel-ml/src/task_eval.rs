//! One evaluation of any task's model on held-out rows, and the report
//! every later step reads: the binary report of [`crate::evaluate`], or a
//! multi-class or regression report with metrics equal to scikit-learn's,
//! fairness as Fairlearn's `MetricFrame` gives it per sensitive attribute
//! ([`crate::task_metrics`]) and permutation importance.
//!
//! The binary report also carries robustness and KernelSHAP summaries; for
//! the other tasks those are not computed (the attack and the explanation
//! summary are defined on one positive-class probability) and the model
//! card says so.

use serde::{Deserialize, Serialize};

use crate::encode::{Labels, Matrix};
use crate::evaluate::{EvaluationConfig, EvaluationReport, HeldOut};
use crate::explain::PermutationImportance;
use crate::gbt::Objective;
use crate::task_metrics::{GroupFrame, MulticlassMetrics, RegressionMetrics};
use crate::{MlError, explain, task_metrics};

/// A model's answers for a matrix of encoded rows: row-major `[N, K]` class
/// probabilities of a K-class classifier, `[N]` predictions of a regressor.
pub trait Scorer: Sync {
    fn scores(&self, x: &Matrix) -> Result<Vec<f64>, MlError>;
}

impl Scorer for crate::OnnxClassifier {
    fn scores(&self, x: &Matrix) -> Result<Vec<f64>, MlError> {
        Ok(crate::OnnxClassifier::scores(self, x)?.0)
    }
}

impl Scorer for crate::gbt::GbtModel {
    fn scores(&self, x: &Matrix) -> Result<Vec<f64>, MlError> {
        Ok(match self.objective {
            Objective::Binary => self.predict_proba(x).into_iter().flat_map(|p| [1.0 - p, p]).collect(),
            Objective::Multiclass { .. } => self.predict_classes(x),
            Objective::Squared => self.predict_values(x),
        })
    }
}

/// One sensitive attribute's `MetricFrame`s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskFairness {
    pub attribute: String,
    pub frames: Vec<GroupFrame>,
}

impl TaskFairness {
    /// min / max of the frame's metric over the groups with at least
    /// `min_rows` rows (1 when fewer than two such groups or the largest is 0).
    pub fn ratio_over(frame: &GroupFrame, min_rows: u64) -> f64 {
        crate::fairness::ratio_over(frame.by_group.iter().map(|g| (g.1, g.2)), min_rows)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MulticlassReport {
    pub metrics: MulticlassMetrics,
    /// Per attribute: accuracy and macro recall by group.
    pub fairness: Vec<TaskFairness>,
    /// Drop in accuracy when a feature is shuffled.
    pub permutation_importance: Vec<PermutationImportance>,
    pub features: Vec<String>,
    /// In probability-column order.
    pub classes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionReport {
    pub metrics: RegressionMetrics,
    /// Per attribute: mean absolute error by group.
    pub fairness: Vec<TaskFairness>,
    /// Drop in R² when a feature is shuffled (scikit-learn's default score of a regressor).
    pub permutation_importance: Vec<PermutationImportance>,
    pub features: Vec<String>,
    /// The label column predicted.
    pub target: String,
}

/// The evaluation of a model of any task, tagged by `task` in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)]
pub enum Evaluation {
    Binary(EvaluationReport),
    Multiclass(MulticlassReport),
    Regression(RegressionReport),
}

impl Evaluation {
    /// Reads a report; one without `task` (written when every evaluation
    /// was binary) is binary.
    pub fn from_json(bytes: &[u8]) -> Result<Evaluation, serde_json::Error> {
        let mut v: serde_json::Value = serde_json::from_slice(bytes)?;
        if let Some(o) = v.as_object_mut()
            && !o.contains_key("task")
        {
            o.insert("task".into(), "binary".into());
        }
        serde_json::from_value(v)
    }

    /// `binary`, `multiclass` or `regression`.
    pub fn task(&self) -> &'static str {
        match self {
            Evaluation::Binary(_) => "binary",
            Evaluation::Multiclass(_) => "multiclass",
            Evaluation::Regression(_) => "regression",
        }
    }

    /// How often the served model predicted each class on the held-out
    /// split: the confusion matrix's column sums, as (class name, count).
    /// The reference that live prediction drift is measured against; none
    /// for regression.
    pub fn predicted_classes(&self) -> Option<Vec<(String, u64)>> {
        match self {
            Evaluation::Binary(e) => {
                let c = &e.metrics.confusion;
                Some(vec![(e.classes[0].clone(), c.tn + c.fn_), (e.classes[1].clone(), c.fp + c.tp)])
            }
            Evaluation::Multiclass(e) => Some(
                e.classes
                    .iter()
                    .enumerate()
                    .map(|(j, name)| {
                        (name.clone(), e.metrics.confusion.iter().map(|row| row.get(j).copied().unwrap_or(0)).sum())
                    })
                    .collect(),
            ),
            Evaluation::Regression(_) => None,
        }
    }

    pub fn features(&self) -> &[String] {
        match self {
            Evaluation::Binary(e) => &e.features,
            Evaluation::Multiclass(e) => &e.features,
            Evaluation::Regression(e) => &e.features,
        }
    }

    /// The few numbers a registry listing and the compliance report show:
    /// `task`, the task's headline metrics, and `fairness.worst_group_ratio`
    /// (binary: the demographic-parity ratio, also as
    /// `fairness.demographic_parity_ratio`; multi-class: the accuracy ratio;
    /// regression: the mean-absolute-error ratio, over groups of at least
    /// `min_group_rows`).
    pub fn headline(&self, min_group_rows: u64) -> serde_json::Value {
        let worst = |fairness: &[TaskFairness]| {
            fairness
                .iter()
                .flat_map(|f| f.frames.first())
                .map(|fr| TaskFairness::ratio_over(fr, min_group_rows))
                .fold(1.0, f64::min)
        };
        match self {
            Evaluation::Binary(e) => serde_json::json!({
                "task": "binary",
                "accuracy": e.metrics.accuracy,
                "roc_auc": e.metrics.roc_auc,
                "fairness": {"demographic_parity_ratio": e.worst_parity_ratio(), "worst_group_ratio": e.worst_parity_ratio(), "metric": "selection_rate"},
                "robustness": {"attack_success_rate": e.robustness.attack_success_rate},
            }),
            Evaluation::Multiclass(e) => serde_json::json!({
                "task": "multiclass",
                "classes": e.classes.len(),
                "accuracy": e.metrics.accuracy,
                "macro_f1": e.metrics.macro_f1,
                "log_loss": e.metrics.log_loss,
                "fairness": {"worst_group_ratio": worst(&e.fairness), "metric": "accuracy"},
            }),
            Evaluation::Regression(e) => serde_json::json!({
                "task": "regression",
                "r2": e.metrics.r2,
                "rmse": e.metrics.rmse,
                "mae": e.metrics.mae,
                "fairness": {"worst_group_ratio": worst(&e.fairness), "metric": "mean_absolute_error"},
            }),
        }
    }

    /// One line for progress output.
    pub fn summary(&self) -> String {
        match self {
            Evaluation::Binary(e) => format!("accuracy {:.4}", e.metrics.accuracy),
            Evaluation::Multiclass(e) => {
                format!("accuracy {:.4}, macro F1 {:.4}", e.metrics.accuracy, e.metrics.macro_f1)
            }
            Evaluation::Regression(e) => format!("R² {:.4}, RMSE {:.4}", e.metrics.r2, e.metrics.rmse),
        }
    }
}

/// Evaluates a multi-class classifier or a regressor (`labels.objective`)
/// on the held-out rows: `served` gives the metrics and the fairness
/// frames, `probe` (the served model or one checked to agree with it) the
/// many queries of permutation importance. A binary label is refused here:
/// it has [`crate::evaluate::evaluate`].
pub fn evaluate(
    served: &dyn Scorer,
    probe: &dyn Scorer,
    labels: &Labels,
    features: Vec<String>,
    held_out: HeldOut<'_>,
    cfg: &EvaluationConfig,
) -> Result<Evaluation, MlError> {
    let HeldOut { table, x, y } = held_out;
    let groups = |attr: &String| -> Result<Vec<Option<String>>, MlError> {
        let col = table.column(attr)?;
        Ok((0..col.len()).map(|i| col.text(i)).collect())
    };
    match labels.objective {
        Objective::Binary => Err(MlError::Config("a binary label is evaluated by evaluate::evaluate".into())),
        Objective::Multiclass { classes: k } => {
            let yc: Vec<usize> = y.iter().map(|&v| v as usize).collect();
            let proba = served.scores(x)?;
            let metrics = task_metrics::multiclass(&yc, &proba, k)?;
            let pred = task_metrics::argmax_rows(&proba, k);
            let mut fairness = Vec::new();
            for attr in &cfg.sensitive {
                let g = groups(attr)?;
                fairness.push(TaskFairness {
                    attribute: attr.clone(),
                    frames: task_metrics::multiclass_fairness(&yc, &pred, &g, k),
                });
            }
            let accuracy = |m: &Matrix| -> Result<f64, MlError> {
                let pred = task_metrics::argmax_rows(&probe.scores(m)?, k);
                Ok(pred.iter().zip(&yc).filter(|(p, t)| p == t).count() as f64 / yc.len().max(1) as f64)
            };
            let permutation_importance =
                explain::permutation_importance_by(&accuracy, &features, x, cfg.importance_repeats, cfg.seed)?;
            Ok(Evaluation::Multiclass(MulticlassReport {
                metrics,
                fairness,
                permutation_importance,
                features,
                classes: labels.classes.clone(),
            }))
        }
        Objective::Squared => {
            let yv: Vec<f64> = y.iter().map(|&v| f64::from(v)).collect();
            let pred = served.scores(x)?;
            let metrics = task_metrics::regression(&yv, &pred)?;
            let mut fairness = Vec::new();
            for attr in &cfg.sensitive {
                let g = groups(attr)?;
                fairness.push(TaskFairness {
                    attribute: attr.clone(),
                    frames: vec![task_metrics::regression_fairness(&yv, &pred, &g)],
                });
            }
            let r2 = |m: &Matrix| -> Result<f64, MlError> { Ok(task_metrics::regression(&yv, &probe.scores(m)?)?.r2) };
            let permutation_importance =
                explain::permutation_importance_by(&r2, &features, x, cfg.importance_repeats, cfg.seed)?;
            Ok(Evaluation::Regression(RegressionReport {
                metrics,
                fairness,
                permutation_importance,
                features,
                target: labels.column.clone(),
            }))
        }
    }
}

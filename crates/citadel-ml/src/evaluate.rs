//! One evaluation of a binary classifier on held-out rows: metrics,
//! fairness per sensitive attribute, robustness, and explanations.

use serde::{Deserialize, Serialize};

use crate::encode::{FeatureEncoder, Matrix};
use crate::explain::{PermutationImportance, ShapExplanation};
use crate::fairness::AttributeFairness;
use crate::metrics::Metrics;
use crate::robust::{Robustness, RobustnessConfig};
use crate::table::Table;
use crate::{Classifier, MlError, explain, fairness, metrics, robust, split};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvaluationConfig {
    /// Columns whose groups fairness is measured across (need not be features).
    pub sensitive: Vec<String>,
    pub robustness: RobustnessConfig,
    pub importance_repeats: usize,
    /// Rows explained by KernelSHAP, and background rows they are explained against.
    pub shap_rows: usize,
    pub shap_background: usize,
    pub shap_samples: usize,
    pub seed: u64,
}

impl Default for EvaluationConfig {
    fn default() -> Self {
        EvaluationConfig {
            sensitive: Vec::new(),
            robustness: RobustnessConfig::default(),
            importance_repeats: 5,
            shap_rows: 10,
            shap_background: 20,
            shap_samples: 2048,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShapSummary {
    pub method: String,
    pub background_rows: u64,
    /// Mean |SHAP value| per feature over the explained rows.
    pub global: Vec<(String, f64)>,
    pub examples: Vec<ShapExplanation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationReport {
    pub metrics: Metrics,
    pub fairness: Vec<AttributeFairness>,
    pub robustness: Robustness,
    pub permutation_importance: Vec<PermutationImportance>,
    pub shap: ShapSummary,
    pub features: Vec<String>,
    pub classes: [String; 2],
}

impl EvaluationReport {
    /// The smallest demographic-parity ratio over the sensitive attributes
    /// (1 when none were declared).
    pub fn worst_parity_ratio(&self) -> f64 {
        self.fairness.iter().map(|f| f.demographic_parity_ratio).fold(1.0, f64::min)
    }
}

/// The held-out rows: the table (for sensitive columns), their encoding and labels.
#[derive(Debug, Clone, Copy)]
pub struct HeldOut<'a> {
    pub table: &'a Table,
    pub x: &'a Matrix,
    pub y: &'a [f32],
}

/// Evaluates `served` (the exported model, for metrics and fairness) on the
/// held-out `table`/`x`/`y`. `probe` answers the many queries of the attack
/// and the explanations; it is `served` itself or a model checked to agree
/// with it (the trainer's own, faster to query).
pub fn evaluate(
    served: &dyn Classifier,
    probe: &dyn Classifier,
    encoder: &FeatureEncoder,
    classes: [String; 2],
    held_out: HeldOut<'_>,
    cfg: &EvaluationConfig,
) -> Result<EvaluationReport, MlError> {
    let HeldOut { table, x, y } = held_out;
    let proba = served.predict_proba(x)?;
    let m = metrics::evaluate(y, &proba);
    let pred = metrics::predict(&proba);
    let mut fair = Vec::new();
    for attr in &cfg.sensitive {
        let col = table.column(attr)?;
        let groups: Vec<Option<String>> = (0..col.len()).map(|i| col.text(i)).collect();
        fair.push(fairness::evaluate(attr, y, &pred, &groups));
    }
    let robustness = robust::evaluate(probe, encoder, x, y, &cfg.robustness)?;
    let names = encoder.names();
    let importance = explain::permutation_importance(probe, &names, x, y, cfg.importance_repeats, cfg.seed)?;

    let mut rng = split::rng(cfg.seed ^ 0x5eed);
    let mut idx: Vec<usize> = (0..x.rows).collect();
    split::shuffle(&mut rng, &mut idx);
    let background = x.take(&idx[..cfg.shap_background.min(x.rows)]);
    let explained = &idx[cfg.shap_background.min(x.rows)..];
    let mut examples = Vec::new();
    for &i in explained.iter().take(cfg.shap_rows) {
        examples.push(explain::kernel_shap(probe, x.row(i), &background, cfg.shap_samples, cfg.seed)?);
    }
    let global = names
        .iter()
        .enumerate()
        .map(|(j, n)| {
            let mean = examples.iter().map(|e| e.values[j].abs()).sum::<f64>() / examples.len().max(1) as f64;
            (n.clone(), mean)
        })
        .collect();
    let method = if names.len() <= explain::EXACT_MAX_FEATURES {
        "KernelSHAP, every coalition evaluated (exact Shapley values of the background expectation)"
    } else {
        "KernelSHAP, sampled coalitions (kernel-weighted least squares)"
    };
    Ok(EvaluationReport {
        metrics: m,
        fairness: fair,
        robustness,
        permutation_importance: importance,
        shap: ShapSummary { method: method.into(), background_rows: background.rows as u64, global, examples },
        features: names,
        classes,
    })
}

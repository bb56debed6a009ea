//! Group fairness, defined as Fairlearn defines it: per-group metrics
//! (`MetricFrame.by_group`), and the between-groups aggregates of
//! `demographic_parity_difference/ratio` and
//! `equalized_odds_difference/ratio` (worst case of TPR and FPR).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::metrics::{Confusion, ratio};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupMetrics {
    pub group: String,
    pub count: u64,
    pub selection_rate: f64,
    pub true_positive_rate: f64,
    pub false_positive_rate: f64,
    pub accuracy: f64,
    pub confusion: Confusion,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributeFairness {
    pub attribute: String,
    pub groups: Vec<GroupMetrics>,
    pub demographic_parity_difference: f64,
    pub demographic_parity_ratio: f64,
    pub equalized_odds_difference: f64,
    pub equalized_odds_ratio: f64,
}

fn spread(v: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let max = v.clone().fold(f64::NEG_INFINITY, f64::max);
    let min = v.fold(f64::INFINITY, f64::min);
    let diff = max - min;
    // Fairlearn divides min by max (NaN when every group's rate is 0);
    // all-zero rates are parity, so the ratio is 1 there.
    let ratio = if max == 0.0 { 1.0 } else { min / max };
    (diff, ratio)
}

/// Fairness of predictions `pred` (0/1) against labels `y` across the
/// groups named in `groups` (one entry per row; nulls are their own group,
/// "(missing)").
pub fn evaluate(attribute: &str, y: &[f32], pred: &[u8], groups: &[Option<String>]) -> AttributeFairness {
    let mut by: BTreeMap<String, (Vec<f32>, Vec<u8>)> = BTreeMap::new();
    for ((t, p), g) in y.iter().zip(pred).zip(groups) {
        let e = by.entry(g.clone().unwrap_or_else(|| crate::encode::MISSING.to_string())).or_default();
        e.0.push(*t);
        e.1.push(*p);
    }
    let groups: Vec<GroupMetrics> = by
        .into_iter()
        .map(|(group, (y, p))| {
            let c = Confusion::of(&y, &p);
            GroupMetrics {
                group,
                count: c.total(),
                selection_rate: ratio(c.tp + c.fp, c.total()),
                true_positive_rate: ratio(c.tp, c.tp + c.fn_),
                false_positive_rate: ratio(c.fp, c.fp + c.tn),
                accuracy: ratio(c.tp + c.tn, c.total()),
                confusion: c,
            }
        })
        .collect();
    let (dpd, dpr) = spread(groups.iter().map(|g| g.selection_rate));
    let (tprd, tprr) = spread(groups.iter().map(|g| g.true_positive_rate));
    let (fprd, fprr) = spread(groups.iter().map(|g| g.false_positive_rate));
    AttributeFairness {
        attribute: attribute.into(),
        groups,
        demographic_parity_difference: dpd,
        demographic_parity_ratio: dpr,
        equalized_odds_difference: tprd.max(fprd),
        equalized_odds_ratio: tprr.min(fprr),
    }
}

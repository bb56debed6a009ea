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

impl AttributeFairness {
    /// The demographic-parity ratio over the groups with at least
    /// `min_rows` rows (1 when fewer than two groups are that large): a
    /// rate over a handful of rows is noise. The pipeline gate's Rego rule
    /// computes the same.
    pub fn parity_ratio_over(&self, min_rows: u64) -> f64 {
        ratio_over(self.groups.iter().map(|g| (g.count, g.selection_rate)), min_rows)
    }
}

/// min / max of the values of the (rows, value) groups with at least
/// `min_rows` rows; 1 when fewer than two groups are that large.
pub(crate) fn ratio_over(groups: impl Iterator<Item = (u64, f64)>, min_rows: u64) -> f64 {
    let v: Vec<f64> = groups.filter(|g| g.0 >= min_rows).map(|g| g.1).collect();
    if v.len() < 2 { 1.0 } else { spread(v.into_iter()).1 }
}

/// (max − min, min / max) of a metric over groups, as Fairlearn's
/// `difference()` and `ratio()` give them.
pub(crate) fn spread(v: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
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

/// Reweighing (Kamiran & Calders, 2012): the weight of a row in group `g`
/// with label `y` is `P(g)·P(y) / P(g, y)`, which makes label and group
/// independent in the weighted training data; `strength` raises it to a
/// power (1 is the original method, larger pushes further). Groups are
/// whatever key identifies them (a joint key for several attributes).
pub fn reweigh(groups: &[String], y: &[f32], strength: f64) -> Vec<f64> {
    let n = y.len().max(1) as f64;
    let mut count_g: BTreeMap<&str, f64> = BTreeMap::new();
    let mut count_gy: BTreeMap<(&str, bool), f64> = BTreeMap::new();
    let mut pos = 0.0;
    for (g, &label) in groups.iter().zip(y) {
        *count_g.entry(g).or_default() += 1.0;
        *count_gy.entry((g, label > 0.5)).or_default() += 1.0;
        if label > 0.5 {
            pos += 1.0;
        }
    }
    groups
        .iter()
        .zip(y)
        .map(|(g, &label)| {
            let p_y = if label > 0.5 { pos / n } else { 1.0 - pos / n };
            let w = (count_g[g.as_str()] / n) * p_y / (count_gy[&(g.as_str(), label > 0.5)] / n);
            w.powf(strength)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::needless_range_loop)]
mod tests {
    use super::*;

    #[test]
    fn reweighing_makes_label_and_group_independent() {
        // Group a: 3 of 4 positive; group b: 1 of 4.
        let g: Vec<String> = "aaaabbbb".chars().map(|c| c.to_string()).collect();
        let y = [1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0];
        let w = reweigh(&g, &y, 1.0);
        let share = |grp: &str| {
            let (mut p, mut t) = (0.0, 0.0);
            for i in 0..8 {
                if g[i] == grp {
                    t += w[i];
                    if y[i] > 0.5 {
                        p += w[i];
                    }
                }
            }
            p / t
        };
        assert!((share("a") - 0.5).abs() < 1e-12 && (share("b") - 0.5).abs() < 1e-12);
        assert!((w.iter().sum::<f64>() - 8.0).abs() < 1e-9, "weights keep the total");
    }
}

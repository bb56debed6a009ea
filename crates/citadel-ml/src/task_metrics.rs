//! Metrics of multi-class classifiers and regressors, defined as
//! scikit-learn defines them, and their fairness across groups as
//! Fairlearn's `MetricFrame` computes it (`by_group`, `difference()` =
//! max − min, `ratio()` = min / max over the groups). Checked against both
//! tools on UCI Adult (`tests/fixtures/make_task_reference.py`).
//!
//! Multi-class: labels are class indices `0..K`, scores a row-major
//! `[N, K]` probability matrix; the prediction is the first class of
//! largest probability (numpy's `argmax`). A zero denominator gives 0, as
//! `zero_division=0` does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::MlError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Rows whose true class this is.
    pub support: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MulticlassMetrics {
    pub rows: u64,
    pub accuracy: f64,
    /// Mean recall of the classes the labels hold (`balanced_accuracy_score`).
    pub balanced_accuracy: f64,
    pub macro_precision: f64,
    pub macro_recall: f64,
    pub macro_f1: f64,
    /// Equal to accuracy for single-label classes, as scikit-learn's is.
    pub micro_f1: f64,
    pub weighted_f1: f64,
    /// `log_loss`, probabilities clipped to `[ε, 1 − ε]` (ε of f64).
    pub log_loss: f64,
    pub per_class: Vec<ClassMetrics>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u64>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionMetrics {
    pub rows: u64,
    pub mae: f64,
    pub mse: f64,
    pub rmse: f64,
    /// `r2_score` with `force_finite=True`: 1 for a perfect fit of constant
    /// targets, 0 for an imperfect one.
    pub r2: f64,
    pub max_error: f64,
}

/// The predicted class of each row of a `[N, K]` probability matrix.
pub fn argmax_rows(proba: &[f64], k: usize) -> Vec<usize> {
    proba
        .chunks(k.max(1))
        .map(|r| {
            r.iter().enumerate().fold((0, f64::NEG_INFINITY), |best, (j, &p)| if p > best.1 { (j, p) } else { best }).0
        })
        .collect()
}

fn div(a: f64, b: f64) -> f64 {
    if b == 0.0 { 0.0 } else { a / b }
}

/// Metrics of class indices `y` (each `< k`) against probabilities `proba` (`[N, k]`).
pub fn multiclass(y: &[usize], proba: &[f64], k: usize) -> Result<MulticlassMetrics, MlError> {
    if k < 2 || proba.len() != y.len() * k {
        return Err(MlError::Config(format!("{} labels and {} probabilities for {k} classes", y.len(), proba.len())));
    }
    if let Some(&bad) = y.iter().find(|&&c| c >= k) {
        return Err(MlError::Config(format!("class index {bad} outside 0..{k}")));
    }
    let pred = argmax_rows(proba, k);
    let mut confusion = vec![vec![0u64; k]; k];
    for (&t, &p) in y.iter().zip(&pred) {
        confusion[t][p] += 1;
    }
    let n = y.len() as f64;
    let per_class: Vec<ClassMetrics> = (0..k)
        .map(|c| {
            let tp = confusion[c][c] as f64;
            let predicted: u64 = (0..k).map(|t| confusion[t][c]).sum();
            let support: u64 = confusion[c].iter().sum();
            let precision = div(tp, predicted as f64);
            let recall = div(tp, support as f64);
            let f1 = div(2.0 * precision * recall, precision + recall);
            ClassMetrics { precision, recall, f1, support }
        })
        .collect();
    // scikit-learn averages over the classes present in the labels or the
    // predictions; balanced accuracy over those present in the labels.
    let in_union: Vec<&ClassMetrics> = per_class
        .iter()
        .enumerate()
        .filter(|(c, m)| m.support > 0 || (0..k).any(|t| confusion[t][*c] > 0))
        .map(|(_, m)| m)
        .collect();
    let mean = |f: fn(&ClassMetrics) -> f64| div(in_union.iter().map(|m| f(m)).sum::<f64>(), in_union.len() as f64);
    let supported: Vec<&ClassMetrics> = per_class.iter().filter(|m| m.support > 0).collect();
    let correct: u64 = (0..k).map(|c| confusion[c][c]).sum();
    let accuracy = div(correct as f64, n);
    let eps = f64::EPSILON;
    let log_loss =
        y.iter().enumerate().map(|(i, &t)| -proba[i * k + t].clamp(eps, 1.0 - eps).ln()).sum::<f64>() / n.max(1.0);
    Ok(MulticlassMetrics {
        rows: y.len() as u64,
        accuracy,
        balanced_accuracy: div(supported.iter().map(|m| m.recall).sum::<f64>(), supported.len() as f64),
        macro_precision: mean(|c| c.precision),
        macro_recall: mean(|c| c.recall),
        macro_f1: mean(|c| c.f1),
        micro_f1: accuracy,
        weighted_f1: div(per_class.iter().map(|c| c.f1 * c.support as f64).sum(), n),
        log_loss,
        per_class,
        confusion,
    })
}

/// Metrics of predictions `pred` against targets `y`.
pub fn regression(y: &[f64], pred: &[f64]) -> Result<RegressionMetrics, MlError> {
    if y.is_empty() || y.len() != pred.len() {
        return Err(MlError::Config(format!("{} targets and {} predictions", y.len(), pred.len())));
    }
    let n = y.len() as f64;
    let mae = y.iter().zip(pred).map(|(a, b)| (a - b).abs()).sum::<f64>() / n;
    let ss_res: f64 = y.iter().zip(pred).map(|(a, b)| (a - b) * (a - b)).sum();
    let mean = y.iter().sum::<f64>() / n;
    let ss_tot: f64 = y.iter().map(|a| (a - mean) * (a - mean)).sum();
    let r2 = match (ss_tot == 0.0, ss_res == 0.0) {
        (false, _) => 1.0 - ss_res / ss_tot,
        (true, true) => 1.0,
        (true, false) => 0.0,
    };
    let mse = ss_res / n;
    Ok(RegressionMetrics {
        rows: y.len() as u64,
        mae,
        mse,
        rmse: mse.sqrt(),
        r2,
        max_error: y.iter().zip(pred).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max),
    })
}

/// One metric over groups, as Fairlearn's `MetricFrame` gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupFrame {
    pub metric: String,
    pub overall: f64,
    /// (group, rows, value), groups in sorted order; nulls are "(missing)".
    pub by_group: Vec<(String, u64, f64)>,
    /// max − min over the groups.
    pub difference: f64,
    /// min / max over the groups (1 when the largest is 0).
    pub ratio: f64,
}

/// `metric` of the rows of each group: `metric` gets row indices.
pub fn group_frame(name: &str, groups: &[Option<String>], metric: impl Fn(&[usize]) -> f64) -> GroupFrame {
    let mut by: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, g) in groups.iter().enumerate() {
        by.entry(g.clone().unwrap_or_else(|| crate::encode::MISSING.to_string())).or_default().push(i);
    }
    let all: Vec<usize> = (0..groups.len()).collect();
    let by_group: Vec<(String, u64, f64)> =
        by.into_iter().map(|(g, rows)| (g, rows.len() as u64, metric(&rows))).collect();
    let (difference, ratio) = crate::fairness::spread(by_group.iter().map(|g| g.2));
    GroupFrame { metric: name.to_string(), overall: metric(&all), difference, ratio, by_group }
}

/// Accuracy and macro recall per group of a multi-class classifier
/// (`MetricFrame(metrics=accuracy_score / recall_score(average="macro"))`).
pub fn multiclass_fairness(y: &[usize], pred: &[usize], groups: &[Option<String>], k: usize) -> Vec<GroupFrame> {
    let accuracy = |rows: &[usize]| div(rows.iter().filter(|&&i| y[i] == pred[i]).count() as f64, rows.len() as f64);
    // scikit-learn's macro recall averages over the classes present in the group's labels or predictions.
    let macro_recall = |rows: &[usize]| {
        let mut present = vec![false; k];
        let (mut tp, mut support) = (vec![0u64; k], vec![0u64; k]);
        for &i in rows {
            present[y[i]] = true;
            present[pred[i]] = true;
            support[y[i]] += 1;
            if y[i] == pred[i] {
                tp[y[i]] += 1;
            }
        }
        let classes: Vec<usize> = (0..k).filter(|&c| present[c]).collect();
        div(classes.iter().map(|&c| div(tp[c] as f64, support[c] as f64)).sum(), classes.len() as f64)
    };
    vec![group_frame("accuracy", groups, accuracy), group_frame("macro_recall", groups, macro_recall)]
}

/// Mean absolute error per group of a regressor (`MetricFrame(metrics=mean_absolute_error)`).
pub fn regression_fairness(y: &[f64], pred: &[f64], groups: &[Option<String>]) -> GroupFrame {
    group_frame("mean_absolute_error", groups, |rows| {
        div(rows.iter().map(|&i| (y[i] - pred[i]).abs()).sum(), rows.len() as f64)
    })
}

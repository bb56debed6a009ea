//! Classification metrics, defined as scikit-learn defines them (binary,
//! positive class 1; a zero denominator gives 0 as `zero_division=0`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Confusion {
    pub tn: u64,
    pub fp: u64,
    pub fn_: u64,
    pub tp: u64,
}

impl Confusion {
    pub fn of(y: &[f32], pred: &[u8]) -> Confusion {
        let mut c = Confusion { tn: 0, fp: 0, fn_: 0, tp: 0 };
        for (&t, &p) in y.iter().zip(pred) {
            match (t > 0.5, p == 1) {
                (false, false) => c.tn += 1,
                (false, true) => c.fp += 1,
                (true, false) => c.fn_ += 1,
                (true, true) => c.tp += 1,
            }
        }
        c
    }

    pub fn total(&self) -> u64 {
        self.tn + self.fp + self.fn_ + self.tp
    }
}

pub(crate) fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// `calibration_curve(y, p, n_bins, strategy="uniform")`: per non-empty bin,
/// the observed positive fraction and the mean prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub prob_true: Vec<f64>,
    pub prob_pred: Vec<f64>,
    pub counts: Vec<u64>,
    /// Expected calibration error: Σ (n_bin / n)·|true − pred|.
    pub ece: f64,
    pub brier: f64,
    pub log_loss: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub rows: u64,
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub roc_auc: f64,
    pub confusion: Confusion,
    pub calibration: Calibration,
    /// Points of the ROC curve (fpr, tpr), thinned for charts.
    pub roc_curve: Vec<(f64, f64)>,
}

/// Predictions at the 0.5 threshold, as `predict` (ties go to class 0, as
/// ArgMax over `[1 − p, p]` does).
pub fn predict(proba: &[f64]) -> Vec<u8> {
    proba.iter().map(|&p| u8::from(p > 0.5)).collect()
}

pub fn evaluate(y: &[f32], proba: &[f64]) -> Metrics {
    let pred = predict(proba);
    let c = Confusion::of(y, &pred);
    let precision = ratio(c.tp, c.tp + c.fp);
    let recall = ratio(c.tp, c.tp + c.fn_);
    let f1 = if precision + recall == 0.0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) };
    Metrics {
        rows: y.len() as u64,
        accuracy: ratio(c.tp + c.tn, c.total()),
        precision,
        recall,
        f1,
        roc_auc: roc_auc(y, proba),
        calibration: calibration(y, proba, 10),
        roc_curve: roc_curve(y, proba, 200),
        confusion: c,
    }
}

/// The area under the ROC curve, via the Mann–Whitney U statistic with
/// tied scores given their average rank (equal to the trapezoidal area
/// scikit-learn computes). With one class absent the area is undefined
/// (scikit-learn raises); 0.5 is reported and the counts show why.
pub fn roc_auc(y: &[f32], score: &[f64]) -> f64 {
    let mut idx: Vec<usize> = (0..y.len()).collect();
    idx.sort_by(|&a, &b| score[a].total_cmp(&score[b]));
    let (mut rank_sum, mut pos) = (0.0, 0u64);
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && score[idx[j + 1]] == score[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if y[k] > 0.5 {
                rank_sum += avg;
                pos += 1;
            }
        }
        i = j + 1;
    }
    let neg = y.len() as u64 - pos;
    if pos == 0 || neg == 0 {
        return 0.5;
    }
    (rank_sum - (pos * (pos + 1)) as f64 / 2.0) / (pos as f64 * neg as f64)
}

fn roc_curve(y: &[f32], score: &[f64], points: usize) -> Vec<(f64, f64)> {
    let mut idx: Vec<usize> = (0..y.len()).collect();
    idx.sort_by(|&a, &b| score[b].total_cmp(&score[a]));
    let pos = y.iter().filter(|&&v| v > 0.5).count().max(1) as f64;
    let neg = (y.len() as f64 - pos).max(1.0);
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut out = vec![(0.0, 0.0)];
    let step = (y.len() / points).max(1);
    for (k, &i) in idx.iter().enumerate() {
        if y[i] > 0.5 {
            tp += 1.0
        } else {
            fp += 1.0
        }
        if k % step == step - 1 || k + 1 == idx.len() {
            out.push((fp / neg, tp / pos));
        }
    }
    out
}

pub fn calibration(y: &[f32], p: &[f64], bins: usize) -> Calibration {
    let mut sum_true = vec![0.0; bins];
    let mut sum_pred = vec![0.0; bins];
    let mut counts = vec![0u64; bins];
    let (mut brier, mut ll) = (0.0, 0.0);
    for (&t, &q) in y.iter().zip(p) {
        // scikit-learn: np.searchsorted(np.linspace(0, 1, bins + 1)[1:-1], p),
        // the number of inner edges strictly below p.
        let step = 1.0 / bins as f64;
        let b = (1..bins).filter(|&k| (k as f64 * step) < q).count();
        sum_true[b] += f64::from(t);
        sum_pred[b] += q;
        counts[b] += 1;
        brier += (q - f64::from(t)).powi(2);
        let qc = q.clamp(1e-15, 1.0 - 1e-15);
        ll -= if t > 0.5 { qc.ln() } else { (1.0 - qc).ln() };
    }
    let n = y.len().max(1) as f64;
    let mut c = Calibration {
        prob_true: vec![],
        prob_pred: vec![],
        counts: vec![],
        ece: 0.0,
        brier: brier / n,
        log_loss: ll / n,
    };
    for b in 0..bins {
        if counts[b] > 0 {
            let (t, q) = (sum_true[b] / counts[b] as f64, sum_pred[b] / counts[b] as f64);
            c.ece += counts[b] as f64 / n * (t - q).abs();
            c.prob_true.push(t);
            c.prob_pred.push(q);
            c.counts.push(counts[b]);
        }
    }
    c
}

//! Robustness of a tabular classifier under a declared perturbation budget.
//!
//! **Attack:** a black-box greedy coordinate search (only predictions are
//! used, as an attacker behind an API has). Each mutable numeric feature may
//! move by at most `ε·σ_j` (σ_j its standard deviation in the evaluation
//! data), stays within its observed range, and stays an integer when it was
//! one; immutable features (and all categorical ones unless declared
//! mutable) never change. Per round the search tries every feature at
//! several step sizes in both directions, keeps the change that lowers the
//! true class's probability most, and stops when the prediction flips.
//! Reported: attack success rate (flipped / correctly classified rows
//! attacked) and robust accuracy (rows still correct under attack / rows).
//!
//! **Noise:** accuracy when Gaussian noise `N(0, (s·σ_j)²)` is added to every
//! mutable numeric feature, for several `s`.

use serde::{Deserialize, Serialize};

use crate::encode::{FeatureEncoder, FeatureKind, Matrix};
use crate::{Classifier, MlError, split};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RobustnessConfig {
    /// Budgets ε in standard deviations; the first is the headline one.
    pub epsilons: Vec<f64>,
    /// Features the attacker cannot change (names).
    pub immutable: Vec<String>,
    /// Categorical features the attacker may change to any category.
    pub mutable_categorical: Vec<String>,
    /// Rows attacked (a seeded sample of the evaluation rows).
    pub rows: usize,
    pub rounds: usize,
    pub noise_levels: Vec<f64>,
    pub seed: u64,
}

impl Default for RobustnessConfig {
    fn default() -> Self {
        RobustnessConfig {
            epsilons: vec![0.1, 0.05, 0.25, 0.5, 1.0],
            immutable: Vec::new(),
            mutable_categorical: Vec::new(),
            rows: 200,
            rounds: 5,
            noise_levels: vec![0.1, 0.25, 0.5, 1.0],
            seed: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttackPoint {
    pub epsilon: f64,
    pub attack_success_rate: f64,
    pub robust_accuracy: f64,
    /// Mean number of model queries per attacked row.
    pub queries_per_row: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoisePoint {
    pub scale: f64,
    pub accuracy: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Robustness {
    pub method: String,
    pub rows: u64,
    pub clean_accuracy: f64,
    pub epsilon: f64,
    pub attack_success_rate: f64,
    pub robust_accuracy: f64,
    pub curve: Vec<AttackPoint>,
    pub noise: Vec<NoisePoint>,
    pub mutable_features: Vec<String>,
}

struct Mutable {
    col: usize,
    std: f64,
    lo: f32,
    hi: f32,
    integer: bool,
    /// Codes a mutable categorical feature may take.
    codes: Option<usize>,
}

pub fn evaluate(
    model: &dyn Classifier,
    encoder: &FeatureEncoder,
    x: &Matrix,
    y: &[f32],
    cfg: &RobustnessConfig,
) -> Result<Robustness, MlError> {
    if cfg.epsilons.is_empty() || cfg.epsilons.iter().any(|e| !(*e > 0.0 && e.is_finite())) {
        return Err(MlError::Config("robustness.epsilons must be positive numbers".into()));
    }
    for name in cfg.immutable.iter().chain(&cfg.mutable_categorical) {
        if !encoder.features.iter().any(|f| &f.name == name) {
            return Err(MlError::Config(format!("robustness names {name:?}, which is not a feature of the model")));
        }
    }
    let mut mutable = Vec::new();
    for (j, f) in encoder.features.iter().enumerate() {
        if cfg.immutable.contains(&f.name) {
            continue;
        }
        match &f.kind {
            FeatureKind::Numeric { .. } => {
                let n = x.rows.max(1) as f64;
                let mean = x.column(j).map(f64::from).sum::<f64>() / n;
                let std = (x.column(j).map(|v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n).sqrt();
                let lo = x.column(j).fold(f32::INFINITY, f32::min);
                let hi = x.column(j).fold(f32::NEG_INFINITY, f32::max);
                let integer = x.column(j).all(|v| v.fract() == 0.0);
                if std > 0.0 {
                    mutable.push(Mutable { col: j, std, lo, hi, integer, codes: None });
                }
            }
            FeatureKind::Categorical { categories } if cfg.mutable_categorical.contains(&f.name) => {
                mutable.push(Mutable {
                    col: j,
                    std: 0.0,
                    lo: 0.0,
                    hi: 0.0,
                    integer: true,
                    codes: Some(categories.len()),
                });
            }
            FeatureKind::Categorical { .. } => {}
        }
    }
    let mut rng = split::rng(cfg.seed);
    let mut rows: Vec<usize> = (0..x.rows).collect();
    split::shuffle(&mut rng, &mut rows);
    rows.truncate(cfg.rows.max(1));
    rows.sort_unstable();
    let sample = x.take(&rows);
    let ys: Vec<f32> = rows.iter().map(|&i| y[i]).collect();
    let clean = model.predict_proba(&sample)?;
    let correct: Vec<bool> = clean.iter().zip(&ys).map(|(&p, &t)| (p > 0.5) == (t > 0.5)).collect();
    let n = rows.len() as f64;
    let clean_accuracy = correct.iter().filter(|&&c| c).count() as f64 / n;

    let mut curve = Vec::new();
    let mut eps_sorted = cfg.epsilons.clone();
    eps_sorted.sort_by(f64::total_cmp);
    eps_sorted.dedup();
    for &eps in &eps_sorted {
        let (mut flipped, mut attacked, mut queries) = (0u64, 0u64, 0u64);
        for (k, &ok) in correct.iter().enumerate() {
            if !ok {
                continue;
            }
            attacked += 1;
            let (f, q) = attack_row(model, sample.row(k), ys[k] > 0.5, &mutable, eps, cfg.rounds)?;
            queries += q;
            if f {
                flipped += 1;
            }
        }
        let still = attacked - flipped;
        curve.push(AttackPoint {
            epsilon: eps,
            attack_success_rate: if attacked == 0 { 0.0 } else { flipped as f64 / attacked as f64 },
            robust_accuracy: still as f64 / n,
            queries_per_row: if attacked == 0 { 0.0 } else { queries as f64 / attacked as f64 },
        });
    }
    let headline = cfg.epsilons[0];
    let head = curve
        .iter()
        .find(|p| p.epsilon == headline)
        .cloned()
        .ok_or_else(|| MlError::Config("no attack point".into()))?;

    let mut noise = Vec::new();
    for &s in &cfg.noise_levels {
        let mut noisy = sample.clone();
        for i in 0..noisy.rows {
            for m in mutable.iter().filter(|m| m.codes.is_none()) {
                let v = &mut noisy.data[i * noisy.cols + m.col];
                *v = (f64::from(*v) + split::normal(&mut rng) * s * m.std) as f32;
            }
        }
        let p = model.predict_proba(&noisy)?;
        let acc = p.iter().zip(&ys).filter(|&(&p, &t)| (p > 0.5) == (t > 0.5)).count() as f64 / n;
        noise.push(NoisePoint { scale: s, accuracy: acc });
    }
    Ok(Robustness {
        method: "black-box greedy coordinate search (L∞ budget ε·σ per feature, integers kept integral, immutable features fixed)".into(),
        rows: rows.len() as u64,
        clean_accuracy,
        epsilon: headline,
        attack_success_rate: head.attack_success_rate,
        robust_accuracy: head.robust_accuracy,
        curve,
        noise,
        mutable_features: mutable.iter().map(|m| encoder.features[m.col].name.clone()).collect(),
    })
}

/// Attacks one row; returns whether the prediction flipped and the queries.
fn attack_row(
    model: &dyn Classifier,
    row: &[f32],
    positive: bool,
    mutable: &[Mutable],
    eps: f64,
    rounds: usize,
) -> Result<(bool, u64), MlError> {
    let original = row.to_vec();
    let mut current = row.to_vec();
    let mut queries = 0u64;
    // The probability of the true class; the attack lowers it below 0.5.
    let true_prob = |p: f64| if positive { p } else { 1.0 - p };
    let mut best = f64::INFINITY;
    for _ in 0..rounds {
        let mut candidates: Vec<Vec<f32>> = Vec::new();
        for m in mutable {
            let j = m.col;
            if let Some(k) = m.codes {
                for code in 0..k {
                    if code as f32 != current[j] {
                        let mut c = current.clone();
                        c[j] = code as f32;
                        candidates.push(c);
                    }
                }
                continue;
            }
            let budget = eps * m.std;
            for frac in [1.0, 0.5, 0.25] {
                for dir in [-1.0, 1.0] {
                    let mut v = f64::from(current[j]) + dir * frac * budget;
                    let o = f64::from(original[j]);
                    v = v.clamp(o - budget, o + budget);
                    if m.integer {
                        // Round toward the original so the budget holds.
                        v = if v > o { v.floor() } else { v.ceil() };
                    }
                    let v = (v as f32).clamp(m.lo, m.hi);
                    if v != current[j] {
                        let mut c = current.clone();
                        c[j] = v;
                        candidates.push(c);
                    }
                }
            }
        }
        if candidates.is_empty() {
            break;
        }
        let cols = current.len();
        let batch =
            Matrix { rows: candidates.len(), cols, data: candidates.iter().flat_map(|c| c.iter().copied()).collect() };
        let p = model.predict_proba(&batch)?;
        queries += candidates.len() as u64;
        let (k, score) = p
            .iter()
            .map(|&q| true_prob(q))
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or((0, f64::INFINITY));
        if score >= best {
            break;
        }
        best = score;
        current = candidates.swap_remove(k);
        // Predictions are `p > 0.5`: the true class is lost when its
        // probability is below 0.5 (positive) or at/above it (negative).
        let flipped = if positive { score <= 0.5 } else { score < 0.5 };
        if flipped {
            return Ok((true, queries));
        }
    }
    Ok((false, queries))
}

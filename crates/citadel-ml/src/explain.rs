//! Explanations: permutation importance (global) and KernelSHAP values
//! (per prediction, and their mean magnitude as a global ranking).
//!
//! KernelSHAP (Lundberg & Lee, 2017) explains `f(x)` against a background
//! sample `B`: a coalition `S` of features is valued
//! `v(S) = mean_b f(x_S, b_{¬S})`, and the Shapley values of `v` are the
//! explanation (they sum to `f(x) − mean_b f(b)`). With at most
//! [`EXACT_MAX_FEATURES`] features every coalition is evaluated and the
//! values are exact; this is also what `shap.KernelExplainer` computes when
//! its sample budget covers every coalition (its weighted regression over
//! all coalitions has the Shapley values as its solution). Above that,
//! coalitions are sampled as KernelSHAP does (sizes drawn by the Shapley
//! kernel, each with its complement) and the kernel-weighted least squares
//! with the efficiency constraint is solved.

use serde::{Deserialize, Serialize};

use crate::encode::Matrix;
use crate::{Classifier, MlError, split};

pub const EXACT_MAX_FEATURES: usize = 12;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PermutationImportance {
    pub feature: String,
    /// Mean drop in accuracy when the feature's column is shuffled.
    pub importance_mean: f64,
    pub importance_std: f64,
}

/// scikit-learn's `permutation_importance` with accuracy as the score.
pub fn permutation_importance(
    model: &dyn Classifier,
    names: &[String],
    x: &Matrix,
    y: &[f32],
    repeats: usize,
    seed: u64,
) -> Result<Vec<PermutationImportance>, MlError> {
    let acc =
        |p: &[f64]| p.iter().zip(y).filter(|&(&p, &t)| (p > 0.5) == (t > 0.5)).count() as f64 / y.len().max(1) as f64;
    permutation_importance_by(&|m: &Matrix| Ok(acc(&model.predict_proba(m)?)), names, x, repeats, seed)
}

/// scikit-learn's `permutation_importance` with any score (higher is
/// better): per feature, the mean and standard deviation over `repeats`
/// of the score's drop when that column alone is shuffled.
pub fn permutation_importance_by(
    score: &dyn Fn(&Matrix) -> Result<f64, MlError>,
    names: &[String],
    x: &Matrix,
    repeats: usize,
    seed: u64,
) -> Result<Vec<PermutationImportance>, MlError> {
    let base = score(x)?;
    let mut rng = split::rng(seed);
    let mut out = Vec::new();
    for (j, name) in names.iter().enumerate() {
        let mut drops = Vec::with_capacity(repeats);
        for _ in 0..repeats.max(1) {
            let mut shuffled = x.clone();
            let mut col: Vec<f32> = x.column(j).collect();
            split::shuffle(&mut rng, &mut col);
            for (i, v) in col.into_iter().enumerate() {
                shuffled.data[i * x.cols + j] = v;
            }
            drops.push(base - score(&shuffled)?);
        }
        let mean = drops.iter().sum::<f64>() / drops.len() as f64;
        let std = (drops.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / drops.len() as f64).sqrt();
        out.push(PermutationImportance { feature: name.clone(), importance_mean: mean, importance_std: std });
    }
    Ok(out)
}

/// The background sample an export carries (`citadel.background`), so a
/// served model can be explained against its training data without reading
/// that data: `n` rows (at most `x.rows`) whose every feature is drawn from a
/// different training row (a seeded shuffle per feature). No row is a
/// person's row, and the features are independent, which is what
/// interventional SHAP assumes of its background anyway; each feature's
/// values keep their training distribution.
pub fn background_sample(x: &Matrix, n: usize) -> Matrix {
    let k = n.min(x.rows);
    let mut data = vec![0f32; k * x.cols];
    let mut rng = split::rng(0x6261_636b);
    for j in 0..x.cols {
        // k distinct training rows for this feature (a partial Fisher-Yates shuffle).
        let mut idx: Vec<usize> = (0..x.rows).collect();
        for i in 0..k {
            let r = i + (split::unit(&mut rng) * (x.rows - i) as f64) as usize;
            idx.swap(i, r.min(x.rows - 1));
            data[i * x.cols + j] = x.data[idx[i] * x.cols + j];
        }
    }
    Matrix { rows: k, cols: x.cols, data }
}

/// The metadata entry holding a background sample: `citadel.background` →
/// `{"cols": F, "rows": [[...], ...]}` (feature codes, the model's feature order).
pub fn background_metadata(background: &Matrix) -> (String, String) {
    let rows: Vec<&[f32]> = (0..background.rows).map(|i| background.row(i)).collect();
    ("citadel.background".into(), serde_json::json!({"cols": background.cols, "rows": rows}).to_string())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShapExplanation {
    /// `mean_b f(b)`: the prediction with no feature known.
    pub base_value: f64,
    /// `f(x)`.
    pub prediction: f64,
    pub values: Vec<f64>,
}

fn binom(n: usize, k: usize) -> f64 {
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

/// `v(S)` for each coalition mask in `masks`, from one batched prediction.
fn coalition_values(
    model: &dyn Classifier,
    x: &[f32],
    background: &Matrix,
    masks: &[Vec<bool>],
) -> Result<Vec<f64>, MlError> {
    let m = x.len();
    let k = background.rows;
    let mut out = Vec::with_capacity(masks.len());
    // Batches of whole coalitions, about 64k rows each.
    let per = (65_536 / k.max(1)).max(1);
    for chunk in masks.chunks(per) {
        let mut data = Vec::with_capacity(chunk.len() * k * m);
        for mask in chunk {
            for b in 0..k {
                let row = background.row(b);
                data.extend((0..m).map(|j| if mask[j] { x[j] } else { row[j] }));
            }
        }
        let p = model.predict_proba(&Matrix { rows: chunk.len() * k, cols: m, data })?;
        out.extend(p.chunks(k).map(|c| c.iter().sum::<f64>() / k as f64));
    }
    Ok(out)
}

/// KernelSHAP values of `x` against `background`.
pub fn kernel_shap(
    model: &dyn Classifier,
    x: &[f32],
    background: &Matrix,
    samples: usize,
    seed: u64,
) -> Result<ShapExplanation, MlError> {
    let m = x.len();
    if background.rows == 0 || background.cols != m {
        return Err(MlError::Config("KernelSHAP needs a background sample with the model's features".into()));
    }
    if m <= EXACT_MAX_FEATURES {
        let all: Vec<Vec<bool>> = (0..1usize << m).map(|bits| (0..m).map(|j| bits >> j & 1 == 1).collect()).collect();
        let v = coalition_values(model, x, background, &all)?;
        let mut values = vec![0.0; m];
        for (j, value) in values.iter_mut().enumerate() {
            for bits in 0..1usize << m {
                if bits >> j & 1 == 1 {
                    continue;
                }
                let s = bits.count_ones() as usize;
                // |S|!(M−|S|−1)!/M! = 1 / (M · C(M−1, |S|)).
                let w = 1.0 / (m as f64 * binom(m - 1, s));
                *value += w * (v[bits | 1 << j] - v[bits]);
            }
        }
        return Ok(ShapExplanation { base_value: v[0], prediction: v[(1 << m) - 1], values });
    }
    // Sampled: pairs (S, complement) with |S| drawn ∝ the kernel's mass.
    let mut rng = split::rng(seed);
    let sizes: Vec<usize> = (1..m).collect();
    let mass: Vec<f64> = sizes.iter().map(|&s| (m - 1) as f64 / (s * (m - s)) as f64).collect();
    let total: f64 = mass.iter().sum();
    let mut masks: Vec<Vec<bool>> = vec![vec![false; m], vec![true; m]];
    let pairs = samples.max(2 * m) / 2;
    for _ in 0..pairs {
        let mut r = split::unit(&mut rng) * total;
        let mut size = sizes[sizes.len() - 1];
        for (k, &w) in mass.iter().enumerate() {
            if r < w {
                size = sizes[k];
                break;
            }
            r -= w;
        }
        let mut idx: Vec<usize> = (0..m).collect();
        split::shuffle(&mut rng, &mut idx);
        let mut mask = vec![false; m];
        for &j in &idx[..size] {
            mask[j] = true;
        }
        let complement = mask.iter().map(|b| !b).collect();
        masks.push(mask);
        masks.push(complement);
    }
    let v = coalition_values(model, x, background, &masks)?;
    let (base, full) = (v[0], v[1]);
    // Sampling already follows the kernel, so each sample weighs the same.
    // Eliminate the last feature with Σφ = full − base, then solve the
    // normal equations (M−1 unknowns).
    let d = m - 1;
    let mut ata = vec![0.0; d * d];
    let mut atb = vec![0.0; d];
    for (mask, &val) in masks.iter().zip(&v).skip(2) {
        let zl = f64::from(u8::from(mask[m - 1]));
        let target = val - base - zl * (full - base);
        let row: Vec<f64> = (0..d).map(|j| f64::from(u8::from(mask[j])) - zl).collect();
        for a in 0..d {
            atb[a] += row[a] * target;
            for b in 0..d {
                ata[a * d + b] += row[a] * row[b];
            }
        }
    }
    let head =
        solve(ata, atb, d).ok_or_else(|| MlError::Model("KernelSHAP system is singular; use more samples".into()))?;
    let last = (full - base) - head.iter().sum::<f64>();
    let mut values = head;
    values.push(last);
    Ok(ShapExplanation { base_value: base, prediction: full, values })
}

/// Gaussian elimination with partial pivoting.
fn solve(mut a: Vec<f64>, mut b: Vec<f64>, n: usize) -> Option<Vec<f64>> {
    for c in 0..n {
        let p = (c..n).max_by(|&i, &j| a[i * n + c].abs().total_cmp(&a[j * n + c].abs()))?;
        if a[p * n + c].abs() < 1e-12 {
            return None;
        }
        if p != c {
            for k in 0..n {
                a.swap(p * n + k, c * n + k);
            }
            b.swap(p, c);
        }
        for r in c + 1..n {
            let f = a[r * n + c] / a[c * n + c];
            for k in c..n {
                a[r * n + k] -= f * a[c * n + k];
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|k| a[r * n + k] * x[k]).sum();
        x[r] = (b[r] - s) / a[r * n + r];
    }
    Some(x)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::needless_range_loop)]
mod tests {
    use super::*;

    struct Linear(Vec<f64>);
    impl Classifier for Linear {
        fn predict_proba(&self, x: &Matrix) -> Result<Vec<f64>, MlError> {
            Ok((0..x.rows).map(|i| x.row(i).iter().zip(&self.0).map(|(a, w)| f64::from(*a) * w).sum()).collect())
        }
    }

    #[test]
    fn a_linear_model_gets_w_times_the_distance_to_the_background_mean() {
        // For f(x) = w·x the Shapley values are w_j (x_j − E b_j), exactly.
        let model = Linear(vec![1.0, -2.0, 0.5, 3.0]);
        let bg = Matrix { rows: 3, cols: 4, data: vec![0., 1., 2., 3., 1., 1., 1., 1., 2., 0., 3., -1.] };
        let x = [4.0, 2.0, -1.0, 0.5];
        let e = kernel_shap(&model, &x, &bg, 0, 0).unwrap();
        for j in 0..4 {
            let mean = (bg.data[j] + bg.data[4 + j] + bg.data[8 + j]) as f64 / 3.0;
            assert!((e.values[j] - model.0[j] * (f64::from(x[j]) - mean)).abs() < 1e-9, "{j}: {:?}", e.values);
        }
        assert!((e.values.iter().sum::<f64>() - (e.prediction - e.base_value)).abs() < 1e-9);
    }

    #[test]
    fn sampled_kernel_shap_recovers_a_linear_model() {
        let w: Vec<f64> = (0..14).map(|j| j as f64 - 6.0).collect();
        let model = Linear(w.clone());
        let bg = Matrix { rows: 2, cols: 14, data: (0..28).map(|k| (k % 5) as f32).collect() };
        let x: Vec<f32> = (0..14).map(|j| (j % 3) as f32 + 0.5).collect();
        let e = kernel_shap(&model, &x, &bg, 2000, 1).unwrap();
        for j in 0..14 {
            let mean = (bg.data[j] + bg.data[14 + j]) as f64 / 2.0;
            assert!((e.values[j] - w[j] * (f64::from(x[j]) - mean)).abs() < 1e-6, "{j}: {:?}", e.values);
        }
    }
}

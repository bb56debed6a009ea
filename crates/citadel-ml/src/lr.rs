//! L2-regularized logistic regression, fitted by L-BFGS on the mean log
//! loss + `1/(2·C·n)·‖w‖²` (scikit-learn's objective; the intercept is not
//! penalized). Numeric features are standardized, categorical codes one-hot
//! encoded; both happen inside the exported graph, so callers send codes.
//! Rows may carry weights (scikit-learn's `sample_weight`), which is how
//! fairness reweighing reaches it.

use serde::{Deserialize, Serialize};

use crate::MlError;
use crate::encode::{FeatureEncoder, FeatureKind, Matrix};
use crate::gbt::Objective;
use crate::math::{sigmoid, softmax_into, softplus};
use crate::onnx_build::{Attr, GraphBuilder, Interface};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LrParams {
    /// Inverse regularization strength, as scikit-learn's `C`.
    pub c: f64,
    pub max_iter: usize,
    /// Stop when the largest gradient component is below this (scikit-learn's
    /// `tol` for lbfgs; its defaults are `C = 1`, 100 iterations, `1e-4`).
    pub tol: f64,
}

impl Default for LrParams {
    fn default() -> Self {
        LrParams { c: 1.0, max_iter: 100, tol: 1e-4 }
    }
}

/// How one input column enters the linear model.
#[derive(Debug, Clone, PartialEq)]
enum Term {
    Numeric { mean: f64, std: f64 },
    OneHot { categories: usize },
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogisticModel {
    terms: Vec<Term>,
    /// Weights in design order (one per numeric term, one per category),
    /// output after output: `outputs × width`.
    pub weights: Vec<f64>,
    /// The first output's intercept (a binary model's, a regressor's).
    pub intercept: f64,
    /// Every output's intercept.
    pub intercepts: Vec<f64>,
    pub objective: Objective,
    pub iterations: usize,
    pub converged: bool,
}

/// Where each term's weights start in the weight vector (one per numeric
/// term, one per category), and the total width.
fn term_offsets(terms: &[Term]) -> (Vec<usize>, usize) {
    let mut offsets = Vec::with_capacity(terms.len());
    let mut width = 0;
    for t in terms {
        offsets.push(width);
        width += match t {
            Term::Numeric { .. } => 1,
            Term::OneHot { categories } => *categories,
        };
    }
    (offsets, width)
}

/// Fits on `x` (encoded by `encoder`) and 0/1 labels `y`, rows weighted by
/// `weights` (empty: every row 1).
pub fn fit(
    encoder: &FeatureEncoder,
    x: &Matrix,
    y: &[f32],
    params: &LrParams,
    weights: &[f64],
) -> Result<LogisticModel, MlError> {
    fit_objective(encoder, x, y, params, weights, Objective::Binary)
}

/// Fits a linear model to `objective`: binary logistic regression (labels
/// 0/1), multinomial logistic regression (labels `0..K`, softmax of `K`
/// linear scores, scikit-learn's `multinomial` objective) or ridge
/// regression (squared error `½(y − f)²`); all with the penalty
/// `‖W‖²/(2·C·n)` on the weights (not the intercepts).
pub fn fit_objective(
    encoder: &FeatureEncoder,
    x: &Matrix,
    y: &[f32],
    params: &LrParams,
    weights: &[f64],
    objective: Objective,
) -> Result<LogisticModel, MlError> {
    let k = objective.outputs();
    objective.check(y)?;
    if !weights.is_empty() && (weights.len() != y.len() || weights.iter().any(|w| !(*w >= 0.0 && w.is_finite()))) {
        return Err(MlError::Config("sample weights must be one finite non-negative number per row".into()));
    }
    if x.rows == 0 || x.rows != y.len() {
        return Err(MlError::Config(format!("{} rows of features and {} labels", x.rows, y.len())));
    }
    if params.c <= 0.0 || !params.c.is_finite() {
        return Err(MlError::Config(format!("C must be a positive number, not {}", params.c)));
    }
    let mut terms = Vec::new();
    for (j, f) in encoder.features.iter().enumerate() {
        match &f.kind {
            FeatureKind::Numeric { .. } => {
                let n = x.rows as f64;
                let mean = x.column(j).map(f64::from).sum::<f64>() / n;
                let var = x.column(j).map(|v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
                // A constant column keeps std 1 so it does not divide by zero.
                let std = if var > 0.0 { var.sqrt() } else { 1.0 };
                terms.push(Term::Numeric { mean, std });
            }
            FeatureKind::Categorical { categories } => terms.push(Term::OneHot { categories: categories.len() }),
        }
    }
    let (offsets, width) = term_offsets(&terms);
    // scikit-learn scales the data term by the total weight: with C and
    // weights summing to n this is its objective exactly.
    let n: f64 = if weights.is_empty() { x.rows as f64 } else { weights.iter().sum() };
    if n <= 0.0 {
        return Err(MlError::Config("the sample weights sum to zero".into()));
    }
    let alpha = 1.0 / (params.c * n);
    let weight = |i: usize| if weights.is_empty() { 1.0 } else { weights[i] };

    // The design, precomputed once: each row's standardized numbers and the
    // positions of its categories' weights (no division or branch per
    // evaluation).
    let mut numeric: Vec<(usize, usize, f64, f64)> = Vec::new(); // (column, weight index, mean, std)
    let mut categorical: Vec<(usize, usize, usize)> = Vec::new(); // (column, first weight, categories)
    for (j, t) in terms.iter().enumerate() {
        match t {
            Term::Numeric { mean, std } => numeric.push((j, offsets[j], *mean, *std)),
            Term::OneHot { categories } => categorical.push((j, offsets[j], *categories)),
        }
    }
    let (nn, nc) = (numeric.len(), categorical.len());
    let mut num_values = vec![0f64; x.rows * nn];
    // usize::MAX marks an unknown category (no weight).
    let mut cat_index = vec![usize::MAX; x.rows * nc];
    for i in 0..x.rows {
        let row = x.row(i);
        for (k, &(j, _, mean, std)) in numeric.iter().enumerate() {
            num_values[i * nn + k] = (f64::from(row[j]) - mean) / std;
        }
        for (k, &(j, first, cats)) in categorical.iter().enumerate() {
            let v = row[j];
            if v >= 0.0 && (v as usize) < cats {
                cat_index[i * nc + k] = first + v as usize;
            }
        }
    }
    let num_slot: Vec<usize> = numeric.iter().map(|t| t.1).collect();
    // Loss and gradient over rows [lo, hi): the data part, unscaled.
    // θ = [W (k × width, output after output), b (k)].
    let partial = |theta: &[f64], lo: usize, hi: usize| -> (f64, Vec<f64>) {
        let (w, b) = theta.split_at(k * width);
        let mut grad = vec![0.0; k * width + k];
        let mut loss = 0.0;
        let mut z = vec![0f64; k];
        let mut r = vec![0f64; k];
        for i in lo..hi {
            let nv = &num_values[i * nn..(i + 1) * nn];
            let ci = &cat_index[i * nc..(i + 1) * nc];
            for c in 0..k {
                let wc = &w[c * width..(c + 1) * width];
                let mut zc = b[c];
                for (v, &slot) in nv.iter().zip(&num_slot) {
                    zc += v * wc[slot];
                }
                for &j in ci {
                    if j != usize::MAX {
                        zc += wc[j];
                    }
                }
                z[c] = zc;
            }
            let yi = f64::from(y[i]);
            let wi = weight(i);
            match objective {
                Objective::Binary => {
                    loss += wi * (softplus(z[0]) - yi * z[0]);
                    r[0] = wi * (sigmoid(z[0]) - yi);
                }
                Objective::Multiclass { .. } => {
                    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = z.iter().map(|v| (v - max).exp()).sum();
                    let truth = y[i] as usize;
                    loss += wi * (max + sum.ln() - z[truth]);
                    for c in 0..k {
                        let p = (z[c] - max).exp() / sum;
                        r[c] = wi * (p - if c == truth { 1.0 } else { 0.0 });
                    }
                }
                Objective::Squared => {
                    loss += wi * 0.5 * (z[0] - yi) * (z[0] - yi);
                    r[0] = wi * (z[0] - yi);
                }
            }
            for c in 0..k {
                let gc = &mut grad[c * width..(c + 1) * width];
                for (v, &slot) in nv.iter().zip(&num_slot) {
                    gc[slot] += r[c] * v;
                }
                for &j in ci {
                    if j != usize::MAX {
                        gc[j] += r[c];
                    }
                }
                grad[k * width + c] += r[c];
            }
        }
        (loss, grad)
    };
    // Two threads share the rows of large problems.
    let loss_and_gradient = |theta: &[f64], grad: &mut [f64]| -> f64 {
        let (mut loss, mut g) = if x.rows >= 8192 {
            let mid = x.rows / 2;
            std::thread::scope(|scope| {
                let other = scope.spawn(|| partial(theta, mid, x.rows));
                let (l1, mut g1) = partial(theta, 0, mid);
                let (l2, g2) = other.join().unwrap_or_else(|_| partial(theta, mid, x.rows));
                g1.iter_mut().zip(&g2).for_each(|(a, b)| *a += b);
                (l1 + l2, g1)
            })
        } else {
            partial(theta, 0, x.rows)
        };
        loss /= n;
        g.iter_mut().for_each(|v| *v /= n);
        let w = &theta[..k * width];
        for j in 0..k * width {
            loss += 0.5 * alpha * w[j] * w[j];
            g[j] += alpha * w[j];
        }
        grad.copy_from_slice(&g);
        loss
    };
    let (theta, iterations, converged) = lbfgs(k * width + k, params.max_iter, params.tol, loss_and_gradient);
    let intercepts = theta[k * width..].to_vec();
    Ok(LogisticModel {
        terms,
        weights: theta[..k * width].to_vec(),
        intercept: intercepts[0],
        intercepts,
        objective,
        iterations,
        converged,
    })
}

/// Minimizes `f` by L-BFGS (memory 10) with a backtracking Armijo line
/// search. Returns the point, the iterations used and whether the gradient
/// fell below `tol`.
fn lbfgs(
    dim: usize,
    max_iter: usize,
    tol: f64,
    mut f: impl FnMut(&[f64], &mut [f64]) -> f64,
) -> (Vec<f64>, usize, bool) {
    const M: usize = 10;
    let mut x = vec![0.0; dim];
    let mut g = vec![0.0; dim];
    let mut fx = f(&x, &mut g);
    let mut s_hist: Vec<Vec<f64>> = Vec::new();
    let mut y_hist: Vec<Vec<f64>> = Vec::new();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(a, b)| a * b).sum::<f64>();
    let mut xn = vec![0.0; dim];
    let mut gn = vec![0.0; dim];
    for it in 0..max_iter {
        if g.iter().fold(0.0f64, |m, v| m.max(v.abs())) < tol {
            return (x, it, true);
        }
        // Two-loop recursion for the search direction.
        let mut q = g.clone();
        let mut alphas = vec![0.0; s_hist.len()];
        for k in (0..s_hist.len()).rev() {
            let rho = 1.0 / dot(&y_hist[k], &s_hist[k]);
            alphas[k] = rho * dot(&s_hist[k], &q);
            q.iter_mut().zip(&y_hist[k]).for_each(|(q, y)| *q -= alphas[k] * y);
        }
        let gamma = match (s_hist.last(), y_hist.last()) {
            (Some(s), Some(y)) => dot(s, y) / dot(y, y),
            _ => 1.0 / g.iter().map(|v| v * v).sum::<f64>().sqrt().max(1.0),
        };
        q.iter_mut().for_each(|v| *v *= gamma);
        for k in 0..s_hist.len() {
            let rho = 1.0 / dot(&y_hist[k], &s_hist[k]);
            let beta = rho * dot(&y_hist[k], &q);
            q.iter_mut().zip(&s_hist[k]).for_each(|(q, s)| *q += s * (alphas[k] - beta));
        }
        let mut dir: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&g, &dir);
        if slope >= 0.0 {
            // Not a descent direction (curvature went bad): restart.
            s_hist.clear();
            y_hist.clear();
            dir = g.iter().map(|v| -v).collect();
            slope = dot(&g, &dir);
        }
        let mut step = 1.0;
        let mut accepted = false;
        for _ in 0..40 {
            xn.iter_mut().zip(&x).zip(&dir).for_each(|((xn, x), d)| *xn = x + step * d);
            let fnew = f(&xn, &mut gn);
            if fnew <= fx + 1e-4 * step * slope {
                let s: Vec<f64> = xn.iter().zip(&x).map(|(a, b)| a - b).collect();
                let yv: Vec<f64> = gn.iter().zip(&g).map(|(a, b)| a - b).collect();
                if dot(&s, &yv) > 1e-12 {
                    if s_hist.len() == M {
                        s_hist.remove(0);
                        y_hist.remove(0);
                    }
                    s_hist.push(s);
                    y_hist.push(yv);
                }
                std::mem::swap(&mut x, &mut xn);
                std::mem::swap(&mut g, &mut gn);
                fx = fnew;
                accepted = true;
                break;
            }
            step *= 0.5;
        }
        if !accepted {
            // No decrease possible at machine precision: as converged as it gets.
            return (x, it, true);
        }
    }
    let done = g.iter().fold(0.0f64, |m, v| m.max(v.abs())) < tol;
    (x, max_iter, done)
}

impl LogisticModel {
    /// Every output's linear score of each row (`[N, K]`, row-major).
    pub fn raw_scores(&self, x: &Matrix) -> Vec<f64> {
        let k = self.objective.outputs();
        let (offsets, width) = term_offsets(&self.terms);
        let mut out = Vec::with_capacity(x.rows * k);
        for i in 0..x.rows {
            for c in 0..k {
                let w = &self.weights[c * width..(c + 1) * width];
                let mut z = self.intercepts.get(c).copied().unwrap_or(self.intercept);
                for ((t, &off), &v) in self.terms.iter().zip(&offsets).zip(x.row(i)) {
                    let v = f64::from(v);
                    match t {
                        Term::Numeric { mean, std } => z += w[off] * (v - mean) / std,
                        Term::OneHot { categories } => {
                            if v >= 0.0 && (v as usize) < *categories {
                                z += w[off + v as usize];
                            }
                        }
                    }
                }
                out.push(z);
            }
        }
        out
    }

    /// Class probabilities `[N, K]` of a multinomial model (softmax of the scores).
    pub fn predict_classes(&self, x: &Matrix) -> Vec<f64> {
        let k = self.objective.outputs();
        let z = self.raw_scores(x);
        let mut p = vec![0f64; z.len()];
        for (row, out) in z.chunks(k).zip(p.chunks_mut(k)) {
            softmax_into(row.iter().copied(), out);
        }
        p
    }

    /// Predictions of a ridge regression.
    pub fn predict_values(&self, x: &Matrix) -> Vec<f64> {
        self.raw_scores(x)
    }

    /// The positive-class probability of each row, computed here (the
    /// export computes the same in f32).
    pub fn predict_proba(&self, x: &Matrix) -> Vec<f64> {
        self.raw_scores(x).into_iter().map(sigmoid).collect()
    }

    /// The ONNX graph: one-hot (`Equal` against the codes) and standardize
    /// inside, then `MatMul` (one column per output), `Add`, and the
    /// objective's tail ([`GraphBuilder::objective_outputs`]).
    pub fn to_onnx(
        &self,
        encoder: &FeatureEncoder,
        interface: Interface<'_>,
        metadata: Vec<(String, String)>,
    ) -> Result<Vec<u8>, MlError> {
        let mut g = GraphBuilder::new(encoder, interface)?;
        let x = g.x();
        let mut parts = Vec::new();
        let mut weights: Vec<f32> = Vec::new();
        let numeric: Vec<(usize, f64, f64)> = self
            .terms
            .iter()
            .enumerate()
            .filter_map(|(j, t)| match t {
                Term::Numeric { mean, std } => Some((j, *mean, *std)),
                Term::OneHot { .. } => None,
            })
            .collect();
        // Weights follow the order of `parts`: numeric block first, then each
        // one-hot block; `self.weights` is in term order, so pick by offset.
        let (offsets, width) = term_offsets(&self.terms);
        let k = self.objective.outputs();
        // Row d of the exported weight matrix [design, k]: design position d's weight for each output.
        let row = |slot: usize| -> Vec<f32> { (0..k).map(|c| self.weights[c * width + slot] as f32).collect() };
        if !numeric.is_empty() {
            let idx = g.i64s("numeric_idx", &[numeric.len() as i64], numeric.iter().map(|n| n.0 as i64).collect());
            let cols = g.op("Gather", &[x, &idx], vec![Attr::Int("axis", 1)]);
            let mean = g.f32s("mean", &[numeric.len() as i64], numeric.iter().map(|n| n.1 as f32).collect());
            let std = g.f32s("std", &[numeric.len() as i64], numeric.iter().map(|n| n.2 as f32).collect());
            let centered = g.op("Sub", &[&cols, &mean], vec![]);
            parts.push(g.op("Div", &[&centered, &std], vec![]));
            weights.extend(numeric.iter().flat_map(|n| row(offsets[n.0])));
        }
        // One-hot blocks, grouped so a group is one Gather → Reshape → Equal →
        // Cast → Reshape over a [features, widest] code table padded with NaN
        // (equal to nothing, so a padded column is always 0 and weighs 0):
        // fewer nodes for the executor to step through per row. A group's
        // padding is bounded (its table at most twice its real width plus 16).
        let mut cats: Vec<(usize, usize)> = self
            .terms
            .iter()
            .enumerate()
            .filter_map(|(j, t)| match t {
                Term::OneHot { categories } => Some((j, *categories)),
                Term::Numeric { .. } => None,
            })
            .collect();
        cats.sort_by_key(|c| c.1);
        let mut groups: Vec<Vec<(usize, usize)>> = Vec::new();
        for c in cats {
            let fits = groups.last().is_some_and(|g| {
                let real: usize = g.iter().map(|m| m.1).sum::<usize>() + c.1;
                (g.len() + 1) * c.1 <= 2 * real + 16
            });
            match groups.last_mut() {
                Some(g) if fits => g.push(c),
                _ => groups.push(vec![c]),
            }
        }
        let zeros = vec![0f32; k];
        for group in &groups {
            let (n, width) = (group.len(), group.iter().map(|m| m.1).max().unwrap_or(0));
            let idx = g.i64s("cat_idx", &[n as i64], group.iter().map(|m| m.0 as i64).collect());
            let cols = g.op("Gather", &[x, &idx], vec![Attr::Int("axis", 1)]);
            let col = if n == 1 {
                cols
            } else {
                let shape = g.i64s("shape", &[3], vec![-1, n as i64, 1]);
                g.op("Reshape", &[&cols, &shape], vec![])
            };
            let table: Vec<f32> =
                group.iter().flat_map(|m| (0..width).map(move |c| if c < m.1 { c as f32 } else { f32::NAN })).collect();
            let dims: Vec<i64> = if n == 1 { vec![width as i64] } else { vec![n as i64, width as i64] };
            let codes = g.f32s("codes", &dims, table);
            let hit = g.op("Equal", &[&col, &codes], vec![]);
            let onehot = g.op("Cast", &[&hit], vec![Attr::Int("to", 1)]);
            parts.push(if n == 1 {
                onehot
            } else {
                let flat = g.i64s("shape", &[2], vec![-1, (n * width) as i64]);
                g.op("Reshape", &[&onehot, &flat], vec![])
            });
            for &(j, categories) in group {
                for c in 0..width {
                    weights.extend(if c < categories { row(offsets[j] + c) } else { zeros.clone() });
                }
            }
        }
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        let design = if refs.len() == 1 { parts[0].clone() } else { g.op("Concat", &refs, vec![Attr::Int("axis", 1)]) };
        let wname = g.f32s("weights", &[(weights.len() / k) as i64, k as i64], weights);
        let z = g.op("MatMul", &[&design, &wname], vec![]);
        let b = g.f32s("intercept", &[k as i64], self.intercepts.iter().map(|&v| v as f32).collect());
        let logit = g.op("Add", &[&z, &b], vec![]);
        g.objective_outputs(self.objective, &logit);
        Ok(g.finish("logistic regression trained by citadel", metadata))
    }
}

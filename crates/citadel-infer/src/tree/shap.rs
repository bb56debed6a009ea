//! Interventional TreeSHAP: exact Shapley values of a tree ensemble's raw
//! score with respect to a background sample (Lundberg et al., "From local
//! explanations to global understanding with explainable AI for trees",
//! Nature Machine Intelligence 2020, Methods: "Interventional Tree SHAP";
//! what `shap.TreeExplainer(model, data, feature_perturbation=
//! "interventional")` computes).
//!
//! For one row `x` and one background row `z`, a walk down each tree
//! follows the branch both rows take; where they part on a feature not yet
//! seen it goes both ways, the feature joining the set taken from `x` on one
//! side and from `z` on the other. At a leaf of value `v` reached with `a`
//! features from `x` and `b` from `z`, each `x` feature gains
//! `v·(a−1)!·b!/(a+b)!` and each `z` feature loses `v·a!·(b−1)!/(a+b)!`:
//! the baseline Shapley values of `f(x) − f(z)`. Averaged over the
//! background they are the interventional SHAP values, and the base value is
//! the mean raw score of the background. Time: rows × background rows ×
//! the leaves each pair reaches; the walk recurses once per split on a path,
//! so trees deeper than [`MAX_DEPTH`] are refused, and a deadline is checked
//! between pairs.

use super::{Aggregate, Ensemble, Mode, Node};
use crate::InferError;

/// The deepest tree TreeSHAP walks (its recursion and factorial table grow with depth).
pub const MAX_DEPTH: usize = 128;

/// SHAP values of rows, in the ensemble's raw-score space (before its post transform).
#[derive(Debug, Clone, PartialEq)]
pub struct TreeShap {
    /// Mean raw score of the background rows.
    pub base_value: f64,
    /// One value per feature per row (`rows × cols`, row-major).
    pub values: Vec<f64>,
    /// The raw score of each row (`base_value` + the row's values, up to float rounding).
    pub scores: Vec<f64>,
}

fn goes_true(node: &Node, x: f32) -> bool {
    let t = node.threshold;
    (match node.mode {
        Mode::Leq => x <= t,
        Mode::Lt => x < t,
        Mode::Gte => x >= t,
        Mode::Gt => x > t,
        Mode::Eq => x == t,
        Mode::Neq => x != t,
        Mode::Leaf => false,
    }) || (node.missing_true && x.is_nan())
}

/// Per-walk state: which features are taken from `x` or from `z`.
struct Walk<'a> {
    e: &'a Ensemble,
    target: u32,
    x: &'a [f32],
    z: &'a [f32],
    from_x: Vec<u32>,
    from_z: Vec<u32>,
    /// 0: unseen, 1: from x, 2: from z.
    side: Vec<u8>,
    /// `factorial[n]` as f64.
    factorial: &'a [f64],
    phi: &'a mut [f64],
}

impl Walk<'_> {
    fn leaf_value(&self, node: &Node) -> f64 {
        self.e.weights[node.a as usize..node.b as usize]
            .iter()
            .filter(|(t, _)| *t == self.target)
            .map(|(_, w)| f64::from(*w))
            .sum()
    }

    fn go(&mut self, i: u32) {
        let node = self.e.nodes[i as usize];
        if node.mode == Mode::Leaf {
            let v = self.leaf_value(&node);
            let (a, b) = (self.from_x.len(), self.from_z.len());
            let f = self.factorial;
            if a > 0 {
                let w = v * f[a - 1] * f[b] / f[a + b];
                for &j in &self.from_x {
                    self.phi[j as usize] += w;
                }
            }
            if b > 0 {
                let w = v * f[a] * f[b - 1] / f[a + b];
                for &j in &self.from_z {
                    self.phi[j as usize] -= w;
                }
            }
            return;
        }
        let j = node.feature as usize;
        let (gx, gz) = (goes_true(&node, self.x[j]), goes_true(&node, self.z[j]));
        let child = |t: bool| if t { node.a } else { node.b };
        if gx == gz {
            return self.go(child(gx));
        }
        match self.side[j] {
            1 => self.go(child(gx)),
            2 => self.go(child(gz)),
            _ => {
                self.side[j] = 1;
                self.from_x.push(j as u32);
                self.go(child(gx));
                self.from_x.pop();
                self.side[j] = 2;
                self.from_z.push(j as u32);
                self.go(child(gz));
                self.from_z.pop();
                self.side[j] = 0;
            }
        }
    }
}

impl Ensemble {
    /// The output whose raw score is explained: the only target, or the
    /// one class a binary classifier scores.
    fn explained_target(&self) -> Result<u32, InferError> {
        if self.n_outputs == 1 {
            return Ok(0);
        }
        if self.binary_case {
            // The one class with weights; onnxruntime derives the other from it.
            return self.weights.first().map(|(t, _)| *t).ok_or_else(|| InferError::Model("no leaf weights".into()));
        }
        Err(InferError::Unsupported(format!(
            "TreeSHAP of an ensemble with {} outputs (one output or a binary classifier is explained)",
            self.n_outputs
        )))
    }

    /// The raw score (aggregated leaves plus base value) of one row for `target`.
    fn raw_score(&self, row: &[f32], target: u32) -> f64 {
        let mut s = 0f64;
        for &r in &self.roots {
            let mut node = &self.nodes[r as usize];
            while node.mode != Mode::Leaf {
                node = &self.nodes[if goes_true(node, row[node.feature as usize]) { node.a } else { node.b } as usize];
            }
            s += self.weights[node.a as usize..node.b as usize]
                .iter()
                .filter(|(t, _)| *t == target)
                .map(|(_, w)| f64::from(*w))
                .sum::<f64>();
        }
        if self.aggregate == Aggregate::Average {
            s /= self.roots.len().max(1) as f64;
        }
        s + self.base_values.get(target as usize).or(self.base_values.first()).copied().map_or(0.0, f64::from)
    }

    /// Interventional TreeSHAP of `x` (`rows × cols`) against `background`
    /// (`n × cols`), both row-major. Sum and average aggregation only (the
    /// min and max of trees are not additive).
    pub fn tree_shap(
        &self,
        x: &[f32],
        background: &[f32],
        cols: usize,
        deadline: Option<std::time::Instant>,
    ) -> Result<TreeShap, InferError> {
        if self.max_depth > MAX_DEPTH {
            return Err(InferError::Unsupported(format!(
                "TreeSHAP of trees {} splits deep (at most {MAX_DEPTH})",
                self.max_depth
            )));
        }
        if matches!(self.aggregate, Aggregate::Min | Aggregate::Max) {
            return Err(InferError::Unsupported("TreeSHAP of a MIN or MAX ensemble".into()));
        }
        if cols < self.max_feature
            || cols == 0
            || !x.len().is_multiple_of(cols)
            || !background.len().is_multiple_of(cols)
        {
            return Err(InferError::Input(format!(
                "the ensemble reads {} features; rows of {cols} were given",
                self.max_feature
            )));
        }
        let n = background.len() / cols;
        if n == 0 {
            return Err(InferError::Input("TreeSHAP needs at least one background row".into()));
        }
        let target = self.explained_target()?;
        let rows = x.len() / cols;
        let factorial: Vec<f64> = (0..=cols)
            .scan(1f64, |acc, k| {
                if k > 0 {
                    *acc *= k as f64;
                }
                Some(*acc)
            })
            .collect();
        let scale = if self.aggregate == Aggregate::Average { 1.0 / self.roots.len().max(1) as f64 } else { 1.0 };
        let base_value = background.chunks(cols).map(|z| self.raw_score(z, target)).sum::<f64>() / n as f64;
        let mut values = vec![0f64; rows * cols];
        for (r, row) in x.chunks(cols).enumerate() {
            let phi = &mut values[r * cols..(r + 1) * cols];
            for z in background.chunks(cols) {
                if deadline.is_some_and(|d| std::time::Instant::now() > d) {
                    return Err(InferError::Deadline);
                }
                let mut walk = Walk {
                    e: self,
                    target,
                    x: row,
                    z,
                    from_x: Vec::new(),
                    from_z: Vec::new(),
                    side: vec![0; cols],
                    factorial: &factorial,
                    phi: &mut *phi,
                };
                for &root in &self.roots {
                    walk.go(root);
                }
            }
            phi.iter_mut().for_each(|v| *v *= scale / n as f64);
        }
        let scores = x.chunks(cols).map(|row| self.raw_score(row, target)).collect();
        Ok(TreeShap { base_value, values, scores })
    }
}

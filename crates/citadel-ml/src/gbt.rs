//! Histogram gradient-boosted trees for binary classification, after
//! scikit-learn's `HistGradientBoostingClassifier` (same defaults): features
//! binned into at most 255 bins, trees grown best-first to 31 leaves with
//! at least 20 samples each, the histogram of the larger child obtained by
//! subtraction, log loss, and early stopping on a 10% stratified validation
//! split when there are more than 10,000 rows.
//!
//! The export is one ONNX-ML `TreeEnsembleRegressor` (what skl2onnx writes
//! for scikit-learn's boosting), run by citadel-infer's native tree
//! executor and by onnxruntime. (Until 2026-11 it was a Hummingbird-style
//! traversal in standard operators for tract, 20x slower than LightGBM;
//! such models still load and run on tract.)

use serde::{Deserialize, Serialize};

use crate::MlError;
use crate::encode::{FeatureEncoder, Matrix};
use crate::math::{sigmoid, softmax_into, softplus};
use crate::onnx_build::{Attr, GraphBuilder, Interface};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GbtParams {
    pub learning_rate: f64,
    pub max_iter: usize,
    pub max_leaf_nodes: usize,
    pub min_samples_leaf: usize,
    pub l2_regularization: f64,
    pub max_bins: usize,
    /// `auto` (on above 10,000 rows), `on` or `off`.
    pub early_stopping: String,
    pub validation_fraction: f64,
    pub n_iter_no_change: usize,
    pub tol: f64,
    pub seed: u64,
}

impl Default for GbtParams {
    fn default() -> Self {
        GbtParams {
            learning_rate: 0.1,
            max_iter: 100,
            max_leaf_nodes: 31,
            min_samples_leaf: 20,
            l2_regularization: 0.0,
            max_bins: 255,
            early_stopping: "auto".into(),
            validation_fraction: 0.1,
            n_iter_no_change: 10,
            tol: 1e-7,
            seed: 0,
        }
    }
}

/// A tree node. Internal nodes send `x[feature] < threshold` left.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Node {
    Split { feature: usize, threshold: f32, bin: u8, left: usize, right: usize },
    Leaf { value: f64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

/// What the trees are fitted to (scikit-learn's HistGradientBoosting losses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Objective {
    /// Labels 0/1; one tree per iteration on the log-odds (log loss).
    #[default]
    Binary,
    /// Labels `0..classes` (as f32); one tree per class per iteration on
    /// the class's raw score, probabilities by softmax (multinomial log
    /// loss; gradient `p − y`, hessian `p(1 − p)`).
    Multiclass { classes: usize },
    /// Real targets; squared error (`0.5·(y − f)²`), baseline the mean.
    Squared,
}

impl Objective {
    /// Refuses labels the objective cannot learn from.
    pub fn check(self, y: &[f32]) -> Result<(), MlError> {
        let bad = match self {
            Objective::Binary => y.iter().any(|&v| v != 0.0 && v != 1.0),
            Objective::Multiclass { classes } => {
                classes < 2 || y.iter().any(|&v| v < 0.0 || v.fract() != 0.0 || v as usize >= classes)
            }
            Objective::Squared => y.iter().any(|v| !v.is_finite()),
        };
        if !bad {
            return Ok(());
        }
        Err(MlError::Config(match self {
            Objective::Binary => "binary labels must be 0 or 1".into(),
            Objective::Multiclass { classes } => format!("multi-class labels must be class indices 0..{classes}"),
            Objective::Squared => "regression targets must be finite numbers".into(),
        }))
    }

    /// Raw scores per row: one, or one per class.
    pub fn outputs(self) -> usize {
        match self {
            Objective::Multiclass { classes } => classes,
            _ => 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GbtModel {
    /// The starting raw score of a single-output model.
    pub baseline: f64,
    /// Trees in fitting order; with `k` outputs, tree `t` adds to output `t % k`.
    pub trees: Vec<Tree>,
    pub features: usize,
    /// Validation loss per iteration, when early stopping was on.
    pub validation_loss: Vec<f64>,
    #[serde(default)]
    pub objective: Objective,
    /// The starting raw scores of a multi-class model, one per class.
    #[serde(default)]
    pub baselines: Vec<f64>,
}

/// Per feature, the cut points: bin(x) = number of cuts `<= x`, so
/// `x < cut[k]` exactly when `bin(x) <= k`.
struct Binner {
    cuts: Vec<Vec<f32>>,
}

impl Binner {
    fn fit(x: &Matrix, rows: &[usize], max_bins: usize) -> Binner {
        let mut cuts = Vec::with_capacity(x.cols);
        for j in 0..x.cols {
            let mut v: Vec<f32> = rows.iter().map(|&i| x.data[i * x.cols + j]).collect();
            v.sort_by(f32::total_cmp);
            let mut distinct = v.clone();
            distinct.dedup();
            let candidates: Vec<(f32, f32)> = if distinct.len() <= max_bins {
                distinct.windows(2).map(|w| (w[0], w[1])).collect()
            } else {
                // Quantiles of the data, then cut between neighbouring
                // distinct values.
                let mut qs: Vec<f32> = (1..max_bins).map(|k| v[k * (v.len() - 1) / (max_bins - 1)]).collect();
                qs.dedup();
                qs.windows(2).map(|w| (w[0], w[1])).collect()
            };
            let mut c: Vec<f32> = candidates
                .into_iter()
                .map(|(a, b)| {
                    let mid = ((f64::from(a) + f64::from(b)) / 2.0) as f32;
                    if mid <= a { b } else { mid }
                })
                .collect();
            c.dedup();
            cuts.push(c);
        }
        Binner { cuts }
    }

    fn bin(&self, j: usize, v: f32) -> u8 {
        self.cuts[j].partition_point(|&c| c <= v) as u8
    }

    /// Row-major bins of `rows`: one sample's bins share a cache line, so
    /// a histogram pass touches each sample once.
    fn transform(&self, x: &Matrix, rows: &[usize]) -> Vec<u8> {
        let mut out = Vec::with_capacity(rows.len() * x.cols);
        for &i in rows {
            out.extend((0..x.cols).map(|j| self.bin(j, x.data[i * x.cols + j])));
        }
        out
    }
}

#[derive(Clone, Copy, Default)]
struct Bin {
    g: f64,
    h: f64,
    n: u32,
}

struct Candidate {
    gain: f64,
    feature: usize,
    bin: u8,
    /// Gradient and hessian sums of the left child.
    gl: f64,
    hl: f64,
}

struct Grow {
    /// Position of the node in `tree.nodes`.
    node: usize,
    start: usize,
    end: usize,
    g: f64,
    h: f64,
    hist: Hist,
    split: Option<Candidate>,
}

fn log_loss(raw: &[f64], y: &[f32]) -> f64 {
    raw.iter().zip(y).map(|(&z, &y)| softplus(z) - f64::from(y) * z).sum::<f64>() / raw.len().max(1) as f64
}

/// Every feature's histogram in one flat array: feature `j`'s bins start
/// at `offsets[j]`.
#[derive(Clone)]
struct Hist {
    bins: Vec<Bin>,
}

/// Builds the histograms of `samples` (indices into the training rows); a
/// large node is split across two threads, whose histograms are added.
fn histograms(bins: &[u8], f: usize, offsets: &[usize], samples: &[u32], g: &[f64], h: &[f64]) -> Hist {
    let total = offsets[f];
    let build = |part: &[u32]| {
        let mut hist = vec![Bin::default(); total];
        for &s in part {
            let s = s as usize;
            let (gs, hs) = (g[s], h[s]);
            let row = &bins[s * f..(s + 1) * f];
            for (j, &b) in row.iter().enumerate() {
                let cell = &mut hist[offsets[j] + b as usize];
                cell.g += gs;
                cell.h += hs;
                cell.n += 1;
            }
        }
        hist
    };
    if samples.len() < 8192 {
        return Hist { bins: build(samples) };
    }
    let (a, b) = samples.split_at(samples.len() / 2);
    std::thread::scope(|scope| {
        let other = scope.spawn(|| build(b));
        let mut first = build(a);
        // A panic in the helper would be a bug in `build`; redo its half.
        let second = other.join().unwrap_or_else(|_| build(b));
        for (x, y) in first.iter_mut().zip(&second) {
            x.g += y.g;
            x.h += y.h;
            x.n += y.n;
        }
        Hist { bins: first }
    })
}

fn best_split(hist: &Hist, offsets: &[usize], g: f64, h: f64, n: usize, p: &GbtParams) -> Option<Candidate> {
    let lambda = p.l2_regularization;
    let parent = g * g / (h + lambda);
    let mut best: Option<Candidate> = None;
    for j in 0..offsets.len() - 1 {
        let hj = &hist.bins[offsets[j]..offsets[j + 1]];
        let (mut gl, mut hl, mut nl) = (0.0, 0.0, 0usize);
        for (b, bin) in hj.iter().enumerate().take(hj.len().saturating_sub(1)) {
            gl += bin.g;
            hl += bin.h;
            nl += bin.n as usize;
            let nr = n - nl;
            if nl < p.min_samples_leaf {
                continue;
            }
            if nr < p.min_samples_leaf {
                break;
            }
            let (gr, hr) = (g - gl, h - hl);
            if hl < 1e-3 || hr < 1e-3 {
                continue;
            }
            let gain = gl * gl / (hl + lambda) + gr * gr / (hr + lambda) - parent;
            if gain > 1e-12 && best.as_ref().is_none_or(|c| gain > c.gain) {
                best = Some(Candidate { gain, feature: j, bin: b as u8, gl, hl });
            }
        }
    }
    best
}

/// Fits a binary classifier on 0/1 labels (see [`fit_objective`]).
pub fn fit(x: &Matrix, y: &[f32], params: &GbtParams, weights: &[f64]) -> Result<GbtModel, MlError> {
    fit_objective(x, y, params, weights, Objective::Binary)
}

/// Fits trees to `objective` on `y` (0/1 labels, class indices, or targets),
/// rows weighted by `weights` (empty: every row 1; gradients and hessians
/// are scaled, as scikit-learn's `sample_weight` does).
pub fn fit_objective(
    x: &Matrix,
    y: &[f32],
    params: &GbtParams,
    weights: &[f64],
    objective: Objective,
) -> Result<GbtModel, MlError> {
    let p = params;
    let k = objective.outputs();
    match objective {
        Objective::Binary if y.iter().any(|&v| v != 0.0 && v != 1.0) => {
            return Err(MlError::Config("binary labels must be 0 or 1".into()));
        }
        Objective::Multiclass { classes }
            if classes < 2 || y.iter().any(|&v| v < 0.0 || v.fract() != 0.0 || v as usize >= classes) =>
        {
            return Err(MlError::Config(format!("multi-class labels must be class indices 0..{classes}")));
        }
        Objective::Squared if y.iter().any(|v| !v.is_finite()) => {
            return Err(MlError::Config("regression targets must be finite numbers".into()));
        }
        _ => {}
    }
    if !weights.is_empty() && (weights.len() != y.len() || weights.iter().any(|w| !(*w >= 0.0 && w.is_finite()))) {
        return Err(MlError::Config("sample weights must be one finite non-negative number per row".into()));
    }
    if x.rows == 0 || x.rows != y.len() {
        return Err(MlError::Config(format!("{} rows of features and {} labels", x.rows, y.len())));
    }
    if !(2..=256).contains(&p.max_bins) || p.max_leaf_nodes < 2 || p.learning_rate <= 0.0 || p.min_samples_leaf == 0 {
        return Err(MlError::Config(
            "gbt needs 2 <= max_bins <= 256, max_leaf_nodes >= 2, learning_rate > 0 and min_samples_leaf >= 1".into(),
        ));
    }
    let early = match p.early_stopping.as_str() {
        "auto" => x.rows > 10_000,
        "on" => true,
        "off" => false,
        other => return Err(MlError::Config(format!("early_stopping must be auto, on or off, not {other:?}"))),
    };
    let (train_rows, val_rows) = if early {
        match objective {
            Objective::Binary => crate::split::stratified(y, p.validation_fraction, p.seed),
            Objective::Multiclass { classes } => {
                crate::split::stratified_classes(y, classes, p.validation_fraction, p.seed)
            }
            Objective::Squared => crate::split::random(y.len(), p.validation_fraction, p.seed),
        }
    } else {
        ((0..x.rows).collect(), Vec::new())
    };
    let binner = Binner::fit(x, &train_rows, p.max_bins);
    let mut offsets = vec![0usize];
    for c in &binner.cuts {
        offsets.push(offsets[offsets.len() - 1] + c.len() + 1);
    }
    let bins = binner.transform(x, &train_rows);
    let val_bins = binner.transform(x, &val_rows);
    let yt: Vec<f32> = train_rows.iter().map(|&i| y[i]).collect();
    let yv: Vec<f32> = val_rows.iter().map(|&i| y[i]).collect();
    let wt: Vec<f64> = train_rows.iter().map(|&i| if weights.is_empty() { 1.0 } else { weights[i] }).collect();
    let n = yt.len();
    let wsum: f64 = wt.iter().sum::<f64>().max(f64::MIN_POSITIVE);
    // Starting raw scores: the log-odds of the positive rate, the log of
    // each class's share (centred, as scikit-learn's), or the mean target.
    let baselines: Vec<f64> = match objective {
        Objective::Binary => {
            let pos =
                (yt.iter().zip(&wt).map(|(&v, w)| f64::from(v) * w).sum::<f64>() / wsum).clamp(1e-12, 1.0 - 1e-12);
            vec![(pos / (1.0 - pos)).ln()]
        }
        Objective::Multiclass { classes } => {
            let mut share = vec![0f64; classes];
            for (&v, w) in yt.iter().zip(&wt) {
                share[v as usize] += w / wsum;
            }
            let logs: Vec<f64> = share.iter().map(|s| s.clamp(1e-12, 1.0).ln()).collect();
            let mean = logs.iter().sum::<f64>() / classes as f64;
            logs.iter().map(|l| l - mean).collect()
        }
        Objective::Squared => vec![yt.iter().zip(&wt).map(|(&v, w)| f64::from(v) * w).sum::<f64>() / wsum],
    };
    // raw[c][i]: output c's raw score of training row i.
    let mut raw: Vec<Vec<f64>> = baselines.iter().map(|&b| vec![b; n]).collect();
    let mut raw_val: Vec<Vec<f64>> = baselines.iter().map(|&b| vec![b; yv.len()]).collect();
    let mut g: Vec<Vec<f64>> = vec![vec![0.0; n]; k];
    let mut h: Vec<Vec<f64>> = vec![vec![0.0; n]; k];
    let mut trees = Vec::new();
    let mut val_losses = Vec::new();
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut probs = vec![0f64; k];
    for _ in 0..p.max_iter {
        // Gradients and hessians of every output from the scores before this iteration's trees.
        for i in 0..n {
            match objective {
                Objective::Binary => {
                    let pr = sigmoid(raw[0][i]);
                    g[0][i] = wt[i] * (pr - f64::from(yt[i]));
                    h[0][i] = wt[i] * pr * (1.0 - pr);
                }
                Objective::Multiclass { .. } => {
                    softmax_into((0..k).map(|c| raw[c][i]), &mut probs);
                    for c in 0..k {
                        let yc = if yt[i] as usize == c { 1.0 } else { 0.0 };
                        g[c][i] = wt[i] * (probs[c] - yc);
                        h[c][i] = wt[i] * probs[c] * (1.0 - probs[c]);
                    }
                }
                Objective::Squared => {
                    g[0][i] = wt[i] * (raw[0][i] - f64::from(yt[i]));
                    h[0][i] = wt[i];
                }
            }
        }
        for c in 0..k {
            let tree = grow_tree(&bins, x.cols, &binner, &offsets, &g[c], &h[c], &mut order, p, &mut raw[c]);
            for (r, raw) in raw_val[c].iter_mut().enumerate() {
                *raw += tree.predict_binned(|j| val_bins[r * x.cols + j]);
            }
            trees.push(tree);
        }
        if early {
            val_losses.push(validation_loss(objective, &raw_val, &yv));
            let m = val_losses.len();
            if m > p.n_iter_no_change {
                let reference = val_losses[m - 1 - p.n_iter_no_change];
                if val_losses[m - p.n_iter_no_change..].iter().all(|&l| l > reference - p.tol) {
                    break;
                }
            }
        }
    }
    let (baseline, baselines) = if k == 1 { (baselines[0], Vec::new()) } else { (0.0, baselines) };
    Ok(GbtModel { baseline, trees, features: x.cols, validation_loss: val_losses, objective, baselines })
}

/// The objective's mean loss on the validation rows.
fn validation_loss(objective: Objective, raw: &[Vec<f64>], y: &[f32]) -> f64 {
    let n = y.len().max(1) as f64;
    match objective {
        Objective::Binary => log_loss(&raw[0], y),
        Objective::Multiclass { classes } => {
            let mut p = vec![0f64; classes];
            (0..y.len())
                .map(|i| {
                    softmax_into((0..classes).map(|c| raw[c][i]), &mut p);
                    -p[y[i] as usize].max(1e-300).ln()
                })
                .sum::<f64>()
                / n
        }
        Objective::Squared => raw[0].iter().zip(y).map(|(&f, &t)| 0.5 * (f - f64::from(t)).powi(2)).sum::<f64>() / n,
    }
}

#[allow(clippy::too_many_arguments)]
fn grow_tree(
    bins: &[u8],
    f: usize,
    binner: &Binner,
    offsets: &[usize],
    g: &[f64],
    h: &[f64],
    order: &mut [u32],
    p: &GbtParams,
    raw: &mut [f64],
) -> Tree {
    let n = order.len();
    let mut nodes = vec![Node::Leaf { value: 0.0 }];
    let (gs, hs) = (g.iter().sum::<f64>(), h.iter().sum::<f64>());
    let hist = histograms(bins, f, offsets, order, g, h);
    let split = best_split(&hist, offsets, gs, hs, n, p);
    let mut open = vec![Grow { node: 0, start: 0, end: n, g: gs, h: hs, hist, split }];
    let mut scratch: Vec<u32> = Vec::with_capacity(n);
    let mut count = 1;
    while count < p.max_leaf_nodes {
        // Best-first: the open node with the largest gain splits next.
        let Some(k) = (0..open.len())
            .filter(|&k| open[k].split.is_some())
            .max_by(|&a, &b| gain(&open[a]).total_cmp(&gain(&open[b])))
        else {
            break;
        };
        let parent = open.swap_remove(k);
        let Some(c) = parent.split.as_ref() else { break };
        let (feature, bin, gl, hl) = (c.feature, c.bin, c.gl, c.hl);
        // Stable partition of the node's samples, left (bin <= split bin)
        // first, through a scratch buffer.
        let slice = &mut order[parent.start..parent.end];
        scratch.clear();
        let mut nl = 0;
        for idx in 0..slice.len() {
            let s = slice[idx];
            if bins[s as usize * f + feature] <= bin {
                slice[nl] = s;
                nl += 1;
            } else {
                scratch.push(s);
            }
        }
        slice[nl..].copy_from_slice(&scratch);
        let mid = parent.start + nl;
        let (gr, hr) = (parent.g - gl, parent.h - hl);
        let (nleft, nright) = (nl, parent.end - mid);
        let small_is_left = nleft <= nright;
        let small = if small_is_left { &order[parent.start..mid] } else { &order[mid..parent.end] };
        let small_hist = histograms(bins, f, offsets, small, g, h);
        let mut big_hist = parent.hist;
        for (a, b) in big_hist.bins.iter_mut().zip(&small_hist.bins) {
            a.g -= b.g;
            a.h -= b.h;
            a.n -= b.n;
        }
        let (lh, rh) = if small_is_left { (small_hist, big_hist) } else { (big_hist, small_hist) };
        let li = nodes.len();
        nodes.push(Node::Leaf { value: 0.0 });
        nodes.push(Node::Leaf { value: 0.0 });
        nodes[parent.node] =
            Node::Split { feature, threshold: binner.cuts[feature][bin as usize], bin, left: li, right: li + 1 };
        let ls = best_split(&lh, offsets, gl, hl, nleft, p);
        let rs = best_split(&rh, offsets, gr, hr, nright, p);
        open.push(Grow { node: li, start: parent.start, end: mid, g: gl, h: hl, hist: lh, split: ls });
        open.push(Grow { node: li + 1, start: mid, end: parent.end, g: gr, h: hr, hist: rh, split: rs });
        count += 1;
    }
    for leaf in open {
        let value = -leaf.g / (leaf.h + p.l2_regularization).max(1e-12) * p.learning_rate;
        nodes[leaf.node] = Node::Leaf { value };
        for &s in &order[leaf.start..leaf.end] {
            raw[s as usize] += value;
        }
    }
    Tree { nodes }
}

fn gain(g: &Grow) -> f64 {
    g.split.as_ref().map_or(f64::NEG_INFINITY, |c| c.gain)
}

impl Tree {
    fn predict_binned(&self, bin_of: impl Fn(usize) -> u8) -> f64 {
        let mut k = 0;
        loop {
            match &self.nodes[k] {
                Node::Leaf { value } => return *value,
                Node::Split { feature, bin, left, right, .. } => {
                    k = if bin_of(*feature) <= *bin { *left } else { *right };
                }
            }
        }
    }

    pub fn predict(&self, row: &[f32]) -> f64 {
        let mut k = 0;
        loop {
            match &self.nodes[k] {
                Node::Leaf { value } => return *value,
                Node::Split { feature, threshold, left, right, .. } => {
                    k = if row[*feature] < *threshold { *left } else { *right };
                }
            }
        }
    }
}

impl GbtModel {
    /// The raw score (log-odds) of one row, by walking the trees.
    pub fn raw_score(&self, row: &[f32]) -> f64 {
        self.baseline + self.trees.iter().map(|t| t.predict(row)).sum::<f64>()
    }

    /// Every output's raw score of one row: one (log-odds or prediction),
    /// or one per class.
    pub fn raw_scores(&self, row: &[f32]) -> Vec<f64> {
        let k = self.objective.outputs();
        if k == 1 {
            return vec![self.raw_score(row)];
        }
        let mut out = self.baselines.clone();
        for (t, tree) in self.trees.iter().enumerate() {
            out[t % k] += tree.predict(row);
        }
        out
    }

    /// Class probabilities `[N, K]` (row-major) of a multi-class model.
    pub fn predict_classes(&self, x: &Matrix) -> Vec<f64> {
        let k = self.objective.outputs();
        let mut out = vec![0f64; x.rows * k];
        for i in 0..x.rows {
            softmax_into(self.raw_scores(x.row(i)).into_iter(), &mut out[i * k..(i + 1) * k]);
        }
        out
    }

    /// Predictions of a regression model.
    pub fn predict_values(&self, x: &Matrix) -> Vec<f64> {
        (0..x.rows).map(|i| self.raw_score(x.row(i))).collect()
    }

    /// The positive-class probability of each row, by walking the trees.
    pub fn predict_proba(&self, x: &Matrix) -> Vec<f64> {
        (0..x.rows).map(|i| sigmoid(self.raw_score(x.row(i)))).collect()
    }

    /// The ONNX graph: the trees as one ONNX-ML `TreeEnsembleRegressor`
    /// (`BRANCH_LT`: a row goes left when its value is below the threshold;
    /// a missing value compares false and goes right, as in [`Tree::predict`]),
    /// summed with the baselines as `base_values` (one target per output),
    /// then the objective's tail ([`GraphBuilder::objective_outputs`]).
    /// onnxruntime and citadel-infer's native tree executor
    /// run it; the operator is the one skl2onnx writes for scikit-learn's
    /// gradient boosting.
    pub fn to_onnx(
        &self,
        encoder: &FeatureEncoder,
        interface: Interface<'_>,
        metadata: Vec<(String, String)>,
    ) -> Result<Vec<u8>, MlError> {
        let mut a = EnsembleAttrs::default();
        for (t, tree) in self.trees.iter().enumerate() {
            for (k, node) in tree.nodes.iter().enumerate() {
                a.tree.push(t as i64);
                a.node.push(k as i64);
                a.missing.push(0);
                match node {
                    Node::Split { feature, threshold, left, right, .. } => {
                        a.feature.push(*feature as i64);
                        a.mode.push("BRANCH_LT");
                        a.value.push(*threshold);
                        a.yes.push(*left as i64);
                        a.no.push(*right as i64);
                    }
                    Node::Leaf { value } => {
                        a.feature.push(0);
                        a.mode.push("LEAF");
                        a.value.push(0.0);
                        a.yes.push(0);
                        a.no.push(0);
                        a.leaf_tree.push(t as i64);
                        a.leaf_target.push((t % self.objective.outputs()) as i64);
                        a.leaf_node.push(k as i64);
                        a.leaf_weight.push(*value as f32);
                    }
                }
            }
        }
        if self.trees.is_empty() {
            // No trees: one leaf worth 0.
            a = EnsembleAttrs::default();
            (a.tree, a.node, a.feature, a.mode, a.value, a.yes, a.no, a.missing) =
                (vec![0], vec![0], vec![0], vec!["LEAF"], vec![0.0], vec![0], vec![0], vec![0]);
            (a.leaf_tree, a.leaf_node, a.leaf_weight, a.leaf_target) = (vec![0], vec![0], vec![0.0], vec![0]);
        }
        let k = self.objective.outputs();
        let base_values: Vec<f32> =
            if k == 1 { vec![self.baseline as f32] } else { self.baselines.iter().map(|&b| b as f32).collect() };
        let mut g = GraphBuilder::new(encoder, interface)?;
        let x = g.x();
        let logit = g.ml_op(
            "TreeEnsembleRegressor",
            &[x],
            vec![
                Attr::Int("n_targets", k as i64),
                Attr::Str("aggregate_function", "SUM"),
                Attr::Str("post_transform", "NONE"),
                Attr::Floats("base_values", base_values),
                Attr::Ints("nodes_treeids", a.tree),
                Attr::Ints("nodes_nodeids", a.node),
                Attr::Ints("nodes_featureids", a.feature),
                Attr::Strs("nodes_modes", a.mode),
                Attr::Floats("nodes_values", a.value),
                Attr::Ints("nodes_truenodeids", a.yes),
                Attr::Ints("nodes_falsenodeids", a.no),
                Attr::Ints("nodes_missing_value_tracks_true", a.missing),
                Attr::Ints("target_treeids", a.leaf_tree),
                Attr::Ints("target_nodeids", a.leaf_node),
                Attr::Ints("target_ids", a.leaf_target),
                Attr::Floats("target_weights", a.leaf_weight),
            ],
        );
        g.objective_outputs(self.objective, &logit);
        Ok(g.finish("gradient-boosted trees trained by citadel", metadata))
    }
}

/// The per-node and per-leaf attribute lists of a `TreeEnsembleRegressor`.
#[derive(Default)]
struct EnsembleAttrs {
    tree: Vec<i64>,
    node: Vec<i64>,
    feature: Vec<i64>,
    mode: Vec<&'static str>,
    value: Vec<f32>,
    yes: Vec<i64>,
    no: Vec<i64>,
    missing: Vec<i64>,
    leaf_tree: Vec<i64>,
    leaf_node: Vec<i64>,
    leaf_weight: Vec<f32>,
    leaf_target: Vec<i64>,
}

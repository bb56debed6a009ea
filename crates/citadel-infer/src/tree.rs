//! ONNX-ML `TreeEnsembleClassifier` and `TreeEnsembleRegressor`.
//!
//! The trees are compiled at load into flat arrays (one struct per node,
//! children as indices) and checked: every child exists, every tree is
//! acyclic with one root, every feature and class index is bounded. Scores
//! are aggregated exactly as onnxruntime's CPU kernels do (f32 accumulation,
//! its binary-case rules), so outputs match it to float rounding.

use crate::InferError;
use crate::graph::{Attrs, PostTransform};
use std::collections::HashMap;

mod shap;
pub use shap::TreeShap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
    Leaf,
}

#[derive(Debug, Clone, Copy)]
struct Node {
    mode: Mode,
    feature: u32,
    missing_true: bool,
    threshold: f32,
    /// For branches, the child indices; for leaves, the range in `weights`.
    a: u32,
    b: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Sum,
    Average,
    Min,
    Max,
}

/// A compiled tree ensemble.
#[derive(Debug)]
pub struct Ensemble {
    nodes: Vec<Node>,
    roots: Vec<u32>,
    /// (target or class index, weight) per leaf entry.
    weights: Vec<(u32, f32)>,
    pub n_outputs: usize,
    pub max_feature: usize,
    base_values: Vec<f32>,
    post: PostTransform,
    aggregate: Aggregate,
    /// Classifier facts (onnxruntime's rules for two classes).
    binary_case: bool,
    weights_all_positive: bool,
    /// Set when every branch has this mode (`Lt` or `Leq`) and none sends
    /// missing values to the true branch: the walk then needs one
    /// comparison per node (what boosting exports look like).
    uniform: Option<Mode>,
    /// With a uniform mode: the trees as flat arrays for a branch-free walk.
    flat: Option<Flat>,
    /// Splits on the longest root-to-leaf path of any tree.
    max_depth: usize,
}

/// The trees for a branch-free walk of several rows at once: a leaf's
/// children are itself, so every row of a block takes the tree's depth in
/// steps, and the rows' independent loads overlap (the memory latency of one
/// walk is hidden by the others).
#[derive(Debug)]
struct Flat {
    feature: Vec<u32>,
    threshold: Vec<f32>,
    /// [false child, true child]; a leaf's are its own index.
    child: Vec<[u32; 2]>,
    /// Splits on the longest path of each tree, by root.
    depth: Vec<u32>,
}

/// Rows walked together in the branch-free walk.
const BLOCK: usize = 8;

/// Batches from this many rows are split over the cores.
const PARALLEL_ROWS: usize = 1024;

impl Ensemble {
    /// Compiles the attributes of a TreeEnsemble node. `prefix` is `class` or `target`.
    pub fn compile(attrs: &Attrs, prefix: &str, n_outputs: usize) -> Result<Ensemble, InferError> {
        let tree_ids = attrs.ints("nodes_treeids")?;
        let node_ids = attrs.ints("nodes_nodeids")?;
        let features = attrs.ints("nodes_featureids")?;
        let modes = attrs.strings("nodes_modes")?;
        let values = attrs.floats_or_tensor("nodes_values")?;
        let true_ids = attrs.ints("nodes_truenodeids")?;
        let false_ids = attrs.ints("nodes_falsenodeids")?;
        let missing = attrs.ints_or_empty("nodes_missing_value_tracks_true");
        let n = tree_ids.len();
        for (name, len) in [
            ("nodes_nodeids", node_ids.len()),
            ("nodes_featureids", features.len()),
            ("nodes_modes", modes.len()),
            ("nodes_values", values.len()),
            ("nodes_truenodeids", true_ids.len()),
            ("nodes_falsenodeids", false_ids.len()),
        ] {
            if len != n {
                return Err(bad(format!("{name} has {len} entries, nodes_treeids has {n}")));
            }
        }
        if !missing.is_empty() && missing.len() != n {
            return Err(bad("nodes_missing_value_tracks_true does not match the node count".into()));
        }
        if n_outputs == 0 || n_outputs > 1 << 20 {
            return Err(bad(format!("{n_outputs} outputs")));
        }
        let mut index: HashMap<(i64, i64), u32> = HashMap::with_capacity(n);
        for i in 0..n {
            if index.insert((tree_ids[i], node_ids[i]), i as u32).is_some() {
                return Err(bad(format!("node {} of tree {} is declared twice", node_ids[i], tree_ids[i])));
            }
        }
        let mut nodes = Vec::with_capacity(n);
        let mut is_child = vec![false; n];
        let mut max_feature = 0usize;
        for i in 0..n {
            let mode = match modes[i].as_slice() {
                b"BRANCH_LEQ" => Mode::Leq,
                b"BRANCH_LT" => Mode::Lt,
                b"BRANCH_GTE" => Mode::Gte,
                b"BRANCH_GT" => Mode::Gt,
                b"BRANCH_EQ" => Mode::Eq,
                b"BRANCH_NEQ" => Mode::Neq,
                b"LEAF" => Mode::Leaf,
                other => return Err(bad(format!("unknown node mode {:?}", String::from_utf8_lossy(other)))),
            };
            let (mut a, mut b) = (0, 0);
            let mut feature = 0;
            if mode != Mode::Leaf {
                let child = |id: i64| {
                    index
                        .get(&(tree_ids[i], id))
                        .copied()
                        .ok_or_else(|| bad(format!("tree {} refers to a missing node {id}", tree_ids[i])))
                };
                a = child(true_ids[i])?;
                b = child(false_ids[i])?;
                is_child[a as usize] = true;
                is_child[b as usize] = true;
                feature = usize::try_from(features[i])
                    .ok()
                    .filter(|&f| f < 1 << 24)
                    .ok_or_else(|| bad(format!("feature index {} out of range", features[i])))?;
                max_feature = max_feature.max(feature + 1);
            }
            nodes.push(Node {
                mode,
                feature: feature as u32,
                missing_true: missing.get(i).copied().unwrap_or(0) != 0,
                threshold: values[i],
                a,
                b,
            });
        }
        // Leaf weights, grouped per leaf.
        let w_tree = attrs.ints(&format!("{prefix}_treeids"))?;
        let w_node = attrs.ints(&format!("{prefix}_nodeids"))?;
        let w_id = attrs.ints(&format!("{prefix}_ids"))?;
        let w_val = attrs.floats_or_tensor(&format!("{prefix}_weights"))?;
        let m = w_tree.len();
        if w_node.len() != m || w_id.len() != m || w_val.len() != m {
            return Err(bad(format!("the {prefix}_* attributes differ in length")));
        }
        let mut per_leaf: Vec<Vec<(u32, f32)>> = vec![Vec::new(); n];
        let mut classes_seen = std::collections::HashSet::new();
        let mut weights_all_positive = true;
        for j in 0..m {
            let leaf = *index
                .get(&(w_tree[j], w_node[j]))
                .ok_or_else(|| bad(format!("a weight names missing node {} of tree {}", w_node[j], w_tree[j])))?;
            let target = usize::try_from(w_id[j])
                .ok()
                .filter(|&t| t < n_outputs)
                .ok_or_else(|| bad(format!("{prefix} id {} is outside 0..{n_outputs}", w_id[j])))?;
            classes_seen.insert(target);
            if w_val[j] < 0.0 {
                weights_all_positive = false;
            }
            per_leaf[leaf as usize].push((target as u32, w_val[j]));
        }
        let mut weights = Vec::with_capacity(m);
        for (i, node) in nodes.iter_mut().enumerate() {
            if node.mode == Mode::Leaf {
                node.a = weights.len() as u32;
                weights.extend_from_slice(&per_leaf[i]);
                node.b = weights.len() as u32;
            }
        }
        // Roots: the nodes no other node points to, in declaration order of their trees.
        let mut roots = Vec::new();
        let mut root_of_tree: HashMap<i64, u32> = HashMap::new();
        for i in 0..n {
            if !is_child[i] {
                if root_of_tree.insert(tree_ids[i], i as u32).is_some() {
                    return Err(bad(format!("tree {} has more than one root", tree_ids[i])));
                }
                roots.push(i as u32);
            }
        }
        let trees: std::collections::HashSet<i64> = tree_ids.iter().copied().collect();
        if roots.len() != trees.len() {
            return Err(bad("a tree has no root (its nodes form a cycle)".into()));
        }
        // Every node reachable from its root exactly once: no cycles, no shared children.
        let mut seen = vec![false; n];
        let mut max_depth = 0usize;
        for &r in &roots {
            let mut stack = vec![(r, 0usize)];
            while let Some((i, depth)) = stack.pop() {
                if std::mem::replace(&mut seen[i as usize], true) {
                    return Err(bad(format!("tree {} is not a tree (a node is reached twice)", tree_ids[i as usize])));
                }
                let node = nodes[i as usize];
                if node.mode != Mode::Leaf {
                    stack.push((node.a, depth + 1));
                    stack.push((node.b, depth + 1));
                } else {
                    max_depth = max_depth.max(depth);
                }
            }
        }
        let base_values = attrs.floats_or_tensor_or_empty("base_values")?;
        let aggregate = match attrs.string_or("aggregate_function", "SUM").as_str() {
            "SUM" => Aggregate::Sum,
            "AVERAGE" => Aggregate::Average,
            "MIN" => Aggregate::Min,
            "MAX" => Aggregate::Max,
            other => return Err(bad(format!("unknown aggregate_function {other}"))),
        };
        let branches = || nodes.iter().filter(|n| n.mode != Mode::Leaf);
        let uniform = [Mode::Lt, Mode::Leq].into_iter().find(|&m| branches().all(|n| n.mode == m && !n.missing_true));
        let flat = uniform.map(|_| Flat::new(&nodes, &roots));
        Ok(Ensemble {
            max_depth,
            uniform,
            flat,
            nodes,
            roots,
            weights,
            n_outputs,
            max_feature,
            base_values,
            post: PostTransform::parse(&attrs.string_or("post_transform", "NONE"))?,
            aggregate,
            binary_case: n_outputs == 2 && classes_seen.len() == 1,
            weights_all_positive,
        })
    }

    /// Nodes, branches and leaves, of all trees.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    #[inline]
    fn leaf(&self, row: &[f32], root: u32) -> &Node {
        match self.uniform {
            // NaN compares false: the false branch, as with no missing tracking.
            Some(Mode::Lt) => self.walk(row, root, |x, t| x < t),
            Some(Mode::Leq) => self.walk(row, root, |x, t| x <= t),
            _ => self.walk_any(row, root),
        }
    }

    #[inline]
    fn walk(&self, row: &[f32], root: u32, go_true: impl Fn(f32, f32) -> bool) -> &Node {
        let mut node = &self.nodes[root as usize];
        while node.mode != Mode::Leaf {
            let x = row[node.feature as usize];
            node = &self.nodes[if go_true(x, node.threshold) { node.a } else { node.b } as usize];
        }
        node
    }

    fn walk_any(&self, row: &[f32], root: u32) -> &Node {
        let mut node = &self.nodes[root as usize];
        loop {
            let x = row[node.feature as usize];
            let go_true = match node.mode {
                Mode::Leaf => return node,
                Mode::Leq => x <= node.threshold,
                Mode::Lt => x < node.threshold,
                Mode::Gte => x >= node.threshold,
                Mode::Gt => x > node.threshold,
                Mode::Eq => x == node.threshold,
                Mode::Neq => x != node.threshold,
            } || (node.missing_true && x.is_nan());
            node = &self.nodes[if go_true { node.a } else { node.b } as usize];
        }
    }

    /// Raw per-output scores of one row, with a has-score flag per output.
    fn raw(&self, row: &[f32], scores: &mut [f32], has: &mut [bool]) {
        scores.fill(0.0);
        has.fill(false);
        for &r in &self.roots {
            self.accumulate(self.leaf(row, r), scores, has);
        }
    }

    /// Adds one leaf's weights to a row's scores.
    #[inline]
    fn accumulate(&self, leaf: &Node, scores: &mut [f32], has: &mut [bool]) {
        for &(t, w) in &self.weights[leaf.a as usize..leaf.b as usize] {
            let (s, h) = (&mut scores[t as usize], &mut has[t as usize]);
            match self.aggregate {
                Aggregate::Sum | Aggregate::Average => *s += w,
                Aggregate::Min => *s = if !*h || w < *s { w } else { *s },
                Aggregate::Max => *s = if !*h || w > *s { w } else { *s },
            }
            *h = true;
        }
    }

    /// Raw scores of up to [`BLOCK`] rows (`scores`/`has`: `k` per row), the
    /// trees taken in the same order as [`Self::raw`], so each row's sum is
    /// the same float for float.
    fn raw_block(&self, flat: &Flat, rows: &[&[f32]], scores: &mut [f32], has: &mut [bool]) {
        let k = self.n_outputs;
        scores.fill(0.0);
        has.fill(false);
        let leq = self.uniform == Some(Mode::Leq);
        let n = rows.len();
        for (&root, &depth) in self.roots.iter().zip(&flat.depth) {
            let mut idx = [root; BLOCK];
            for _ in 0..depth {
                for j in 0..n {
                    let i = idx[j] as usize;
                    let (x, t) = (rows[j][flat.feature[i] as usize], flat.threshold[i]);
                    let go = if leq { x <= t } else { x < t };
                    idx[j] = flat.child[i][usize::from(go)];
                }
            }
            for j in 0..n {
                let leaf = &self.nodes[idx[j] as usize];
                self.accumulate(leaf, &mut scores[j * k..(j + 1) * k], &mut has[j * k..(j + 1) * k]);
            }
        }
    }

    /// Raw scores of the rows `first..first + count` into `scores`/`has`
    /// (`k` per row), calling `each(row_in_chunk, scores, has)` per row.
    fn raw_rows(
        &self,
        x: &[f32],
        cols: usize,
        first: usize,
        count: usize,
        mut each: impl FnMut(usize, &mut [f32], &mut [bool]),
    ) {
        let k = self.n_outputs;
        let (mut s, mut h) = (vec![0f32; k * BLOCK], vec![false; k * BLOCK]);
        let row = |r: usize| &x[r * cols..(r + 1) * cols];
        match &self.flat {
            // A few rows walk faster one by one (they stop at their leaves);
            // a model of leaves alone may be fed zero columns.
            Some(flat) if cols > 0 && count >= BLOCK / 2 => {
                let mut rows: [&[f32]; BLOCK] = [&[]; BLOCK];
                for start in (0..count).step_by(BLOCK) {
                    let n = BLOCK.min(count - start);
                    for (j, r) in rows.iter_mut().take(n).enumerate() {
                        *r = row(first + start + j);
                    }
                    self.raw_block(flat, &rows[..n], &mut s[..n * k], &mut h[..n * k]);
                    for j in 0..n {
                        each(start + j, &mut s[j * k..(j + 1) * k], &mut h[j * k..(j + 1) * k]);
                    }
                }
            }
            _ => {
                for i in 0..count {
                    self.raw(row(first + i), &mut s[..k], &mut h[..k]);
                    each(i, &mut s[..k], &mut h[..k]);
                }
            }
        }
    }

    /// Runs `f(first_row, out_chunk)` over `out` (`k` values a row), split by
    /// rows over the cores when the batch is large (as LightGBM and
    /// onnxruntime do); each row's result does not depend on the split.
    fn par_rows<T: Send>(&self, out: &mut [T], k: usize, f: impl Fn(usize, &mut [T]) + Sync) {
        static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        let rows = out.len() / k.max(1);
        // available_parallelism reads cgroup files: once per process.
        let threads = || *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        // One batch at a time is split: under concurrent requests (a
        // serving gateway) the others run on their own thread, so the
        // process never runs more than cores + requests walkers.
        static SPLITTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        use std::sync::atomic::Ordering;
        if rows < PARALLEL_ROWS
            || k == 0
            || threads() < 2
            || SPLITTING.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err()
        {
            f(0, out);
            return;
        }
        struct Release;
        impl Drop for Release {
            fn drop(&mut self) {
                SPLITTING.store(false, Ordering::Release);
            }
        }
        let _release = Release;
        let per = rows.div_ceil(threads());
        std::thread::scope(|scope| {
            for (i, chunk) in out.chunks_mut(per * k).enumerate() {
                let f = &f;
                scope.spawn(move || f(i * per, chunk));
            }
        });
    }

    /// Regressor: `[rows, n_targets]`.
    pub fn regress(&self, x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        let k = self.n_outputs;
        let mut out = vec![0f32; rows * k];
        self.par_rows(&mut out, k, |first, chunk| {
            let n_trees = self.roots.len() as f32;
            let count = chunk.len() / k;
            self.raw_rows(x, cols, first, count, |i, s, _| {
                let o = &mut chunk[i * k..(i + 1) * k];
                for t in 0..k {
                    let mut v = s[t];
                    if self.aggregate == Aggregate::Average {
                        v /= n_trees;
                    }
                    if self.base_values.len() == k {
                        v += self.base_values[t];
                    } else if k == 1 && self.base_values.len() == 1 {
                        v += self.base_values[0];
                    }
                    o[t] = v;
                }
                if k > 1 || self.post == PostTransform::Probit {
                    self.post.apply(o);
                }
            });
        });
        out
    }

    /// Classifier: the index of the predicted class per row and `[rows, n_classes]` scores.
    pub fn classify(&self, x: &[f32], rows: usize, cols: usize) -> (Vec<usize>, Vec<f32>) {
        let k = self.n_outputs;
        // Each row: its label, then its k scores.
        let mut out: Vec<(usize, f32)> = vec![(0, 0.0); rows * k];
        self.par_rows(&mut out, k, |first, chunk| {
            let count = chunk.len() / k;
            self.raw_rows(x, cols, first, count, |i, s, h| {
                let (label, row_scores) = self.finalize_class(s, h);
                for (slot, v) in chunk[i * k..(i + 1) * k].iter_mut().zip(&row_scores[..k]) {
                    *slot = (label, *v);
                }
            });
        });
        let labels = out.chunks(k.max(1)).map(|o| o.first().map_or(0, |p| p.0)).take(rows).collect();
        (labels, out.into_iter().map(|p| p.1).collect())
    }

    /// onnxruntime's `TreeAggregatorClassifier::FinalizeScores`.
    fn finalize_class(&self, s: &mut [f32], h: &mut [bool]) -> (usize, Vec<f32>) {
        let k = self.n_outputs;
        let b = &self.base_values;
        if k > 2 {
            for j in 0..b.len().min(k) {
                if h[j] {
                    s[j] += b[j];
                } else {
                    s[j] = b[j];
                    h[j] = true;
                }
            }
            let mut best: Option<usize> = None;
            for j in 0..k {
                if h[j] && best.is_none_or(|m| s[j] > s[m]) {
                    best = Some(j);
                }
            }
            let mut scores = s.to_vec();
            for (v, &has) in scores.iter_mut().zip(h.iter()) {
                if !has {
                    *v = 0.0;
                }
            }
            self.post.apply(&mut scores);
            return (best.unwrap_or(0), scores);
        }
        // Two classes.
        let mut additional: i32 = -1;
        let mut two = true;
        if b.len() == 2 {
            if h[1] {
                s[1] = b[1] + s[0];
                s[0] = -s[1];
            } else {
                s[1] += b[1];
                s[0] += b[0];
            }
        } else if b.len() == 1 {
            s[0] += b[0];
            two = h[1];
        } else if b.is_empty() {
            additional = 3;
            two = h[1];
        }
        let pos_weight = if two && h[1] {
            s[1]
        } else if h[0] {
            s[0]
        } else {
            0.0
        };
        let label = if self.binary_case {
            if self.weights_all_positive {
                if pos_weight > 0.5 {
                    additional = 0;
                    1
                } else {
                    additional = 1;
                    0
                }
            } else if pos_weight > 0.0 {
                additional = 2;
                1
            } else {
                additional = 3;
                0
            }
        } else if pos_weight > 0.0 {
            1
        } else {
            0
        };
        let scores = if two {
            let mut v = vec![s[0], s[1]];
            self.post.apply(&mut v);
            v
        } else {
            binary_scores(s[0], self.post, additional)
        };
        (label, scores)
    }
}

/// onnxruntime's `write_scores` for a single score: the two-column output.
pub fn binary_scores(score: f32, post: PostTransform, additional: i32) -> Vec<f32> {
    if post == PostTransform::Probit {
        return vec![crate::graph::probit(score), 0.0];
    }
    match additional {
        0 | 1 => vec![1.0 - score, score],
        2 if post == PostTransform::Logistic => vec![crate::graph::logistic(-score), crate::graph::logistic(score)],
        2 => vec![-score, score],
        3 if post == PostTransform::Logistic => vec![crate::graph::logistic(-score), crate::graph::logistic(score)],
        3 => vec![score, -score],
        _ => vec![score, 0.0],
    }
}

impl Flat {
    fn new(nodes: &[Node], roots: &[u32]) -> Flat {
        let mut flat = Flat {
            feature: Vec::with_capacity(nodes.len()),
            threshold: Vec::with_capacity(nodes.len()),
            child: Vec::with_capacity(nodes.len()),
            depth: Vec::with_capacity(roots.len()),
        };
        for (i, n) in nodes.iter().enumerate() {
            let leaf = n.mode == Mode::Leaf;
            flat.feature.push(if leaf { 0 } else { n.feature });
            flat.threshold.push(n.threshold);
            flat.child.push(if leaf { [i as u32; 2] } else { [n.b, n.a] });
        }
        // Compile checked every tree is acyclic, so the walk ends.
        for &r in roots {
            let (mut best, mut stack) = (0u32, vec![(r, 0u32)]);
            while let Some((i, d)) = stack.pop() {
                let n = &nodes[i as usize];
                if n.mode == Mode::Leaf {
                    best = best.max(d);
                } else {
                    stack.extend([(n.a, d + 1), (n.b, d + 1)]);
                }
            }
            flat.depth.push(best);
        }
        flat
    }
}

fn bad(m: String) -> InferError {
    InferError::Model(format!("TreeEnsemble: {m}"))
}

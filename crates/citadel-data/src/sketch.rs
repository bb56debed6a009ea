//! Mergeable summaries of live traffic, and their drift against a training
//! reference.
//!
//! A gateway replica keeps one [`WindowSketch`] per endpoint and model
//! version for each monitoring window; replicas' sketches of the same window
//! [`merge`](WindowSketch::merge) into one view, which [`live_drift`]
//! compares with the training data's reference (its stored row sample for
//! numeric features, its exact category counts for categorical ones).
//!
//! Numeric values go into a KLL quantile sketch (Karnin, Lang & Liberty,
//! "Optimal Quantile Approximation in Streams", FOCS 2016) with the capacity
//! schedule of Apache DataSketches' `KllDoublesSketch` (level capacities
//! `k·(2/3)^depth`, at least 2). Its rank error is bounded: with `k = 200`,
//! any estimated CDF value is within [`KLL_RANK_ERROR`] of the exact one with
//! 99% confidence (DataSketches' published table, double-sided), so a KS
//! statistic computed from a sketch is within the same distance of the exact
//! two-sample statistic, and each PSI bin's share within it too. Categories
//! are counted exactly over the model's own vocabulary; any other value is
//! counted as unseen (its text is never kept), so memory is bounded by the
//! vocabulary and untrusted strings never reach storage.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::checks::{self, ColumnDrift};
use crate::stats;

/// The KLL accuracy parameter: about 3·k values are kept however many are seen.
pub const KLL_K: u16 = 200;

/// With `k = 200`, the normalized rank error at 99% confidence (double-sided):
/// DataSketches' `KllSketch.getNormalizedRankError(200, true)` ≈ 0.0165.
pub const KLL_RANK_ERROR: f64 = 0.0165;

/// Key under which unseen categories are counted in a live distribution. It
/// starts with a control character, which no category of the model's
/// vocabulary is checked against here: were one to have this exact name, its
/// live count would merely be added to the unseen count in the statistics.
pub const UNSEEN: &str = "\u{1}unseen";

/// A KLL quantile sketch of `f64` values (NaN is not a value: callers count
/// nulls themselves). Mergeable; serializable; memory O(k · log(n / k)).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Kll {
    k: u16,
    n: u64,
    /// ±∞ while empty, written as null (JSON has no infinity).
    #[serde(with = "finite_or_null_min")]
    min: f64,
    #[serde(with = "finite_or_null_max")]
    max: f64,
    /// `levels[h]` holds values of weight 2^h.
    levels: Vec<Vec<f64>>,
    /// State of the coin that picks which half a compaction keeps.
    rng: u64,
    #[serde(skip)]
    capacity: usize,
    /// Level 0's capacity (cached: `update` checks it on every value).
    #[serde(skip)]
    capacity0: usize,
    /// Every level's capacity (cached: a compaction looks for the lowest
    /// full level, and `powi` per level per compaction was most of the
    /// cost of a value).
    #[serde(skip)]
    capacities: Vec<usize>,
    /// Values retained (cached: `update` checks it on every value).
    #[serde(skip)]
    size: usize,
}

impl Default for Kll {
    fn default() -> Self {
        Kll::new(KLL_K)
    }
}

impl Kll {
    pub fn new(k: u16) -> Kll {
        let mut s = Kll {
            k: k.max(8),
            n: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            levels: vec![Vec::new()],
            // A random coin per sketch: which half a compaction keeps is not
            // predictable, so inputs cannot be chosen to bias it.
            rng: random_seed(),
            capacity: 0,
            capacity0: 0,
            capacities: Vec::new(),
            size: 0,
        };
        s.recache();
        s
    }

    fn recache(&mut self) {
        self.capacities = (0..self.levels.len()).map(|h| self.level_capacity(h)).collect();
        self.capacity = self.total_capacity();
        self.capacity0 = self.level_capacity(0);
        self.size = self.retained();
    }

    /// Values seen.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Smallest and largest value seen (exact), when any was.
    pub fn range(&self) -> Option<(f64, f64)> {
        (self.n > 0).then_some((self.min, self.max))
    }

    /// Values retained (for tests of the memory bound).
    pub fn retained(&self) -> usize {
        self.levels.iter().map(Vec::len).sum()
    }

    fn level_capacity(&self, level: usize) -> usize {
        let depth = (self.levels.len() - 1 - level) as i32;
        ((self.k as f64) * (2.0f64 / 3.0).powi(depth)).ceil().max(2.0) as usize
    }

    fn total_capacity(&self) -> usize {
        (0..self.levels.len()).map(|h| self.level_capacity(h)).sum()
    }

    fn coin(&mut self) -> usize {
        // xorshift64: the compaction only needs an unbiased, cheap bit.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 32) as usize & 1
    }

    /// Adds one value; NaN and infinities are ignored.
    pub fn update(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        self.n += 1;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        self.levels[0].push(x);
        self.size += 1;
        if self.size > self.capacity && self.levels[0].len() >= self.capacity0 {
            self.compress();
        }
    }

    /// Compacts levels until the sketch fits its capacity: the lowest full
    /// level is sorted and every other value (from a random offset) moves up
    /// one level with twice the weight; an odd one out stays.
    fn compress(&mut self) {
        // Deserialized without `checked`: the caches are computed first.
        if self.capacities.len() != self.levels.len() {
            self.recache();
        }
        while self.retained() > self.capacity {
            let Some(h) = (0..self.levels.len()).find(|&h| self.levels[h].len() >= self.capacities[h]) else {
                break;
            };
            if h + 1 == self.levels.len() {
                self.levels.push(Vec::new());
                self.recache();
            }
            let offset = self.coin();
            // The level keeps its allocation: level 0 refills at once.
            let (low, high) = self.levels.split_at_mut(h + 1);
            let level = &mut low[h];
            level.sort_unstable_by(f64::total_cmp);
            let odd = if level.len() % 2 == 1 { level.pop() } else { None };
            high[0].extend(level.iter().skip(offset).step_by(2));
            level.clear();
            level.extend(odd);
        }
        self.size = self.retained();
    }

    /// Adds every value `other` summarized; the result has the same error bound.
    pub fn merge(&mut self, other: &Kll) {
        if other.n == 0 {
            return;
        }
        while self.levels.len() < other.levels.len() {
            self.levels.push(Vec::new());
        }
        for (h, l) in other.levels.iter().enumerate() {
            self.levels[h].extend_from_slice(l);
        }
        self.n += other.n;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.rng ^= other.rng.rotate_left(17);
        if self.rng == 0 {
            self.rng = 0x9e37_79b9_7f4a_7c15;
        }
        self.recache();
        self.compress();
    }

    /// The weighted values in order, for CDF queries.
    pub fn sorted_view(&self) -> SortedView {
        let mut items: Vec<(f64, u64)> = Vec::with_capacity(self.retained());
        for (h, l) in self.levels.iter().enumerate() {
            items.extend(l.iter().map(|&v| (v, 1u64 << h.min(63))));
        }
        items.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let mut cumulative = Vec::with_capacity(items.len());
        let mut total = 0u64;
        for (_, w) in &items {
            total += w;
            cumulative.push(total);
        }
        SortedView { values: items.into_iter().map(|(v, _)| v).collect(), cumulative, total }
    }

    /// Restores the capacity cache after deserialization and refuses
    /// sketches that could not come from [`Kll::update`] and [`Kll::merge`].
    pub fn checked(mut self) -> Option<Kll> {
        let weight: u128 = self.levels.iter().enumerate().map(|(h, l)| (l.len() as u128) << h.min(63)).sum();
        let plausible = self.k >= 8
            && self.levels.len() <= 64
            && !self.levels.is_empty()
            && weight == self.n as u128
            && self.levels.iter().flatten().all(|v| v.is_finite());
        if !plausible {
            return None;
        }
        self.recache();
        Some(self)
    }
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x9e37_79b9_7f4a_7c15);
    h.finish() | 1
}

/// `min`/`max` of a sketch: a finite number, or null for the empty sketch's ±∞.
macro_rules! finite_or_null {
    ($module:ident, $empty:expr) => {
        mod $module {
            pub fn serialize<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
                if v.is_finite() { s.serialize_some(v) } else { s.serialize_none() }
            }
            pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
                Ok(<Option<f64> as serde::Deserialize>::deserialize(d)?.unwrap_or($empty))
            }
        }
    };
}
finite_or_null!(finite_or_null_min, f64::INFINITY);
finite_or_null!(finite_or_null_max, f64::NEG_INFINITY);

/// A sketch's values in order with their cumulative weights.
#[derive(Debug, Clone)]
pub struct SortedView {
    values: Vec<f64>,
    cumulative: Vec<u64>,
    total: u64,
}

impl SortedView {
    /// Estimated share of values ≤ `x`.
    pub fn cdf(&self, x: f64) -> f64 {
        if self.total == 0 {
            return f64::NAN;
        }
        let i = self.values.partition_point(|v| *v <= x);
        if i == 0 { 0.0 } else { self.cumulative[i - 1] as f64 / self.total as f64 }
    }

    /// Estimated `q`-quantile (the smallest retained value whose CDF ≥ q).
    pub fn quantile(&self, q: f64) -> f64 {
        if self.total == 0 {
            return f64::NAN;
        }
        let target = (q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64;
        let i = self.cumulative.partition_point(|c| *c < target.max(1));
        self.values[i.min(self.values.len() - 1)]
    }

    /// Estimated counts per bin, bins as [`stats::bin_counts`] makes them
    /// (bin `i` holds values with exactly `i` edges ≤ them), scaled to `n`.
    pub fn bin_counts(&self, edges: &[f64], n: u64) -> Vec<f64> {
        let mut out = Vec::with_capacity(edges.len() + 1);
        let mut below = 0.0;
        for e in edges {
            // Values < e: the CDF just below e.
            let i = self.values.partition_point(|v| *v < *e);
            let c = if i == 0 { 0.0 } else { self.cumulative[i - 1] as f64 / self.total as f64 };
            out.push((c - below) * n as f64);
            below = c;
        }
        out.push((1.0 - below) * n as f64);
        out
    }

    /// The two-sample KS statistic between an exact sorted sample and this
    /// sketch: the largest gap between the two CDFs, taken at every jump of
    /// either (where a supremum of two step functions' difference lies).
    pub fn ks_against(&self, sorted_reference: &[f64]) -> Option<f64> {
        if sorted_reference.is_empty() || self.total == 0 {
            return None;
        }
        let m = sorted_reference.len() as f64;
        let f_ref = |x: f64| sorted_reference.partition_point(|v| *v <= x) as f64 / m;
        let d = sorted_reference
            .iter()
            .chain(self.values.iter())
            .map(|&x| (f_ref(x) - self.cdf(x)).abs())
            .fold(0.0, f64::max);
        Some(d)
    }
}

/// One feature over one window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FeatureSketch {
    Numeric {
        count: u64,
        nulls: u64,
        /// Values below the training rows' 1st percentile.
        below_p1: u64,
        /// Values above the training rows' 99th percentile.
        above_p99: u64,
        /// (p1, p99) of the training rows, as the model states them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        range: Option<(f64, f64)>,
        sketch: Kll,
    },
    Categorical {
        count: u64,
        nulls: u64,
        /// The model's vocabulary, and the count of each category (same order).
        categories: Vec<String>,
        counts: Vec<u64>,
        /// Values outside the vocabulary (their text is never kept).
        unseen: u64,
    },
}

impl FeatureSketch {
    /// A numeric feature; `range` is the training rows' (p1, p99).
    pub fn numeric(range: Option<(f64, f64)>) -> FeatureSketch {
        FeatureSketch::Numeric { count: 0, nulls: 0, below_p1: 0, above_p99: 0, range, sketch: Kll::default() }
    }

    /// A categorical feature over `vocabulary` (the model's categories, in
    /// the order [`FeatureSketch::observe_code`] indexes them).
    pub fn categorical(vocabulary: Vec<String>) -> FeatureSketch {
        let counts = vec![0; vocabulary.len()];
        FeatureSketch::Categorical { count: 0, nulls: 0, categories: vocabulary, counts, unseen: 0 }
    }

    /// Adds a category by its index in the vocabulary (`None`: unseen);
    /// the hot path, with the index from the caller's own lookup table.
    pub fn observe_code(&mut self, code: Option<usize>) {
        if let FeatureSketch::Categorical { count, counts, unseen, .. } = self {
            *count += 1;
            match code.and_then(|i| counts.get_mut(i)) {
                Some(n) => *n += 1,
                None => *unseen += 1,
            }
        }
    }

    /// Adds a null.
    pub fn observe_null(&mut self) {
        match self {
            FeatureSketch::Categorical { count, nulls, .. } | FeatureSketch::Numeric { count, nulls, .. } => {
                *count += 1;
                *nulls += 1;
            }
        }
    }

    /// Each category of the vocabulary seen, with its count.
    pub fn category_counts(&self) -> Vec<(String, u64)> {
        match self {
            FeatureSketch::Categorical { categories, counts, .. } => {
                categories.iter().zip(counts).filter(|(_, n)| **n > 0).map(|(c, n)| (c.clone(), *n)).collect()
            }
            FeatureSketch::Numeric { .. } => Vec::new(),
        }
    }

    /// Rows seen, nulls included.
    pub fn count(&self) -> u64 {
        match self {
            FeatureSketch::Numeric { count, .. } | FeatureSketch::Categorical { count, .. } => *count,
        }
    }

    /// Adds a number (NaN or an infinity is a null). Returns true when it
    /// lies outside the training rows' 1st–99th percentiles. A categorical
    /// sketch ignores it.
    pub fn observe_number(&mut self, x: f64) -> bool {
        let FeatureSketch::Numeric { count, nulls, below_p1, above_p99, range, sketch } = self else {
            return false;
        };
        *count += 1;
        if !x.is_finite() {
            *nulls += 1;
            return false;
        }
        sketch.update(x);
        match range {
            Some((lo, _)) if x < *lo => {
                *below_p1 += 1;
                true
            }
            Some((_, hi)) if x > *hi => {
                *above_p99 += 1;
                true
            }
            _ => false,
        }
    }

    /// Adds a category by its text (a linear search of the vocabulary: for
    /// small vocabularies such as class names). Returns true for an unseen
    /// category, whose text is not kept.
    pub fn observe_category(&mut self, value: Option<&str>) -> bool {
        let FeatureSketch::Categorical { categories, .. } = self else {
            return false;
        };
        match value {
            None => {
                self.observe_null();
                false
            }
            Some(v) => {
                let code = categories.iter().position(|c| c == v);
                self.observe_code(code);
                code.is_none()
            }
        }
    }

    /// Adds `other` (same feature, same kind) into `self`; a kind mismatch
    /// (a model whose input changed kind cannot share a key) keeps `self`.
    pub fn merge(&mut self, other: &FeatureSketch) {
        match (self, other) {
            (
                FeatureSketch::Numeric { count, nulls, below_p1, above_p99, range, sketch },
                FeatureSketch::Numeric { count: c2, nulls: n2, below_p1: b2, above_p99: a2, range: r2, sketch: s2 },
            ) => {
                *count += c2;
                *nulls += n2;
                *below_p1 += b2;
                *above_p99 += a2;
                if range.is_none() {
                    *range = *r2;
                }
                sketch.merge(s2);
            }
            (
                FeatureSketch::Categorical { count, nulls, categories, counts, unseen },
                FeatureSketch::Categorical { count: c2, nulls: n2, categories: v2, counts: k2, unseen: u2 },
            ) => {
                *count += c2;
                *nulls += n2;
                *unseen += u2;
                for (name, n) in v2.iter().zip(k2) {
                    match categories.iter().position(|c| c == name) {
                        Some(i) => counts[i] += n,
                        None => {
                            categories.push(name.clone());
                            counts.push(*n);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// What one principal did in one window, for the abuse detectors (counts
/// only: no input values).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PrincipalWindow {
    pub requests: u64,
    pub rows: u64,
    /// Rows with a value outside the training range or an unseen category.
    pub ood_rows: u64,
    /// Rows whose top class probability was below [`BOUNDARY_MARGIN`] of a tie.
    pub boundary_rows: u64,
    /// Rows identical (all features) to one this principal sent earlier in the window.
    pub repeated_rows: u64,
    /// Rows within a small distance of the principal's previous row whose answer flipped.
    pub flips_near_previous: u64,
    /// Rows that changed at most two features from the principal's previous row.
    pub near_previous: u64,
    /// Per numeric feature, distinct values seen (capped), for grid detection.
    #[serde(default)]
    pub distinct_numeric: BTreeMap<String, u64>,
}

/// A row is near the decision boundary when its top class probability is
/// below `1/K + BOUNDARY_MARGIN` (for two classes: under 0.6).
pub const BOUNDARY_MARGIN: f64 = 0.1;

impl PrincipalWindow {
    pub fn merge(&mut self, o: &PrincipalWindow) {
        self.requests += o.requests;
        self.rows += o.rows;
        self.ood_rows += o.ood_rows;
        self.boundary_rows += o.boundary_rows;
        self.repeated_rows += o.repeated_rows;
        self.flips_near_previous += o.flips_near_previous;
        self.near_previous += o.near_previous;
        for (k, v) in &o.distinct_numeric {
            let e = self.distinct_numeric.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }
}

/// One endpoint, one model version, one window, as one or more replicas saw it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WindowSketch {
    pub requests: u64,
    pub rows: u64,
    /// Per input feature.
    pub features: BTreeMap<String, FeatureSketch>,
    /// The predicted class (categorical) or the predicted value (numeric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<FeatureSketch>,
    /// Per principal name.
    #[serde(default)]
    pub principals: BTreeMap<String, PrincipalWindow>,
}

impl WindowSketch {
    pub fn merge(&mut self, other: &WindowSketch) {
        self.requests += other.requests;
        self.rows += other.rows;
        for (name, f) in &other.features {
            match self.features.get_mut(name) {
                Some(mine) => mine.merge(f),
                None => {
                    self.features.insert(name.clone(), f.clone());
                }
            }
        }
        match (&mut self.prediction, &other.prediction) {
            (Some(a), Some(b)) => a.merge(b),
            (None, Some(b)) => self.prediction = Some(b.clone()),
            _ => {}
        }
        for (p, w) in &other.principals {
            self.principals.entry(p.clone()).or_default().merge(w);
        }
    }

    /// Reads a stored sketch, refusing one whose KLL sketches are not
    /// internally consistent (a corrupted row must not skew a verdict).
    pub fn from_json(text: &str) -> Option<WindowSketch> {
        let mut w: WindowSketch = serde_json::from_str(text).ok()?;
        for f in w.features.values_mut().chain(w.prediction.iter_mut()) {
            match f {
                FeatureSketch::Numeric { sketch, .. } => *sketch = std::mem::take(sketch).checked()?,
                FeatureSketch::Categorical { categories, counts, .. } => {
                    if categories.len() != counts.len() {
                        return None;
                    }
                }
            }
        }
        Some(w)
    }
}

/// Authentication on one gateway over one window, for the credential
/// detectors: failed authentications per client address, and the client
/// addresses each principal authenticated from. Bounded: at most
/// [`AUTH_MAX_ADDRESSES`] addresses are counted apart (the rest under
/// [`AUTH_OTHERS`]), at most [`AUTH_MAX_PER_PRINCIPAL`] addresses kept per
/// principal (the count saturates there, which is past any threshold).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AuthWindow {
    pub failures: BTreeMap<String, u64>,
    pub addresses: BTreeMap<String, std::collections::BTreeSet<String>>,
}

pub const AUTH_MAX_ADDRESSES: usize = 10_000;
pub const AUTH_MAX_PER_PRINCIPAL: usize = 64;
pub const AUTH_OTHERS: &str = "(others)";

impl AuthWindow {
    pub fn failure(&mut self, address: &str) {
        let key = if self.failures.contains_key(address) || self.failures.len() < AUTH_MAX_ADDRESSES {
            address
        } else {
            AUTH_OTHERS
        };
        *self.failures.entry(key.to_string()).or_default() += 1;
    }

    /// Called on every authenticated request: allocates only for a
    /// principal or address new to the window.
    pub fn success(&mut self, principal: &str, address: &str) {
        let tracked = self.addresses.len();
        match self.addresses.get_mut(principal) {
            Some(set) if set.len() < AUTH_MAX_PER_PRINCIPAL && !set.contains(address) => {
                set.insert(address.to_string());
            }
            Some(_) => {}
            None if tracked < AUTH_MAX_ADDRESSES => {
                self.addresses.insert(principal.to_string(), [address.to_string()].into());
            }
            None => {}
        }
    }

    pub fn merge(&mut self, other: &AuthWindow) {
        for (a, n) in &other.failures {
            *self.failures.entry(a.clone()).or_default() += n;
        }
        for (p, set) in &other.addresses {
            let mine = self.addresses.entry(p.clone()).or_default();
            for a in set {
                if mine.len() < AUTH_MAX_PER_PRINCIPAL {
                    mine.insert(a.clone());
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.failures.is_empty() && self.addresses.is_empty()
    }
}

/// The training data's side of one feature.
#[derive(Debug, Clone)]
pub enum FeatureReference {
    /// The stored row sample's values, sorted.
    Numeric(Vec<f64>),
    /// Exact category counts of the training data.
    Categorical(Vec<(String, u64)>),
}

/// When a live window counts as drifted: the effect (PSI at least `psi`,
/// or for numbers the KS statistic at least `ks`: decile bins of a column
/// that is mostly one value cannot show a shift that KS sees) and the test
/// (KS, or chi-square for categories) significant at `alpha` after Holm's
/// correction across the window's features; a window with fewer than
/// `min_rows` rows is not judged. Out-of-distribution: the share of
/// values outside the training rows' 1st–99th percentiles (2% expected) or
/// of unseen categories (0 expected) at least `ood_rate`, and significant.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DriftPolicy {
    pub psi: f64,
    pub ks: f64,
    pub alpha: f64,
    pub min_rows: u64,
    pub ood_rate: f64,
}

impl Default for DriftPolicy {
    fn default() -> Self {
        // PSI ≥ 0.2: the usual "significant shift" rule (Siddiqi, Credit Risk Scorecards, 2006).
        // KS ≥ 0.1: a tenth of the distribution moved.
        DriftPolicy { psi: 0.2, ks: 0.1, alpha: 0.01, min_rows: 200, ood_rate: 0.1 }
    }
}

/// One feature's live drift.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiveDrift {
    #[serde(flatten)]
    pub stats: ColumnDrift,
    pub rows: u64,
    /// Share of values outside the training p1–p99, or of unseen categories.
    pub ood_rate: f64,
    pub ood_pvalue: f64,
    pub drifted: bool,
    pub out_of_distribution: bool,
    /// Whether the window had enough rows to be judged (`min_rows`): when
    /// not, `drifted` and `out_of_distribution` say nothing.
    #[serde(default)]
    pub judged: bool,
    /// For charts: (bin label, reference share, live share).
    pub bins: Vec<(String, f64, f64)>,
}

/// Expected share of training rows outside their own p1–p99.
const EXPECTED_TAIL: f64 = 0.02;

/// Drift of each feature of `window` that has a reference, in feature
/// order. Statistics: KS (numeric, from the sketch; within
/// [`KLL_RANK_ERROR`] of the exact statistic), chi-square (categorical,
/// exact), PSI and JS distance on the reference's deciles or categories.
pub fn live_drift(
    window: &WindowSketch,
    references: &BTreeMap<String, FeatureReference>,
    policy: &DriftPolicy,
) -> Vec<LiveDrift> {
    let mut out: Vec<LiveDrift> = Vec::new();
    for (name, feature) in &window.features {
        let Some(reference) = references.get(name) else { continue };
        let d = match (feature, reference) {
            (
                FeatureSketch::Numeric { count, nulls, below_p1, above_p99, sketch, .. },
                FeatureReference::Numeric(r),
            ) => {
                let n = count - nulls;
                if n == 0 || r.is_empty() {
                    continue;
                }
                let view = sketch.sorted_view();
                let ks = view.ks_against(r);
                let ks_p = ks.map(|d| {
                    let en = (n as f64) * (r.len() as f64) / (n as f64 + r.len() as f64);
                    stats::kolmogorov_sf(en.sqrt() * d)
                });
                let edges = stats::decile_edges(r);
                let (rc, lc) = (stats::bin_counts(r, &edges), view.bin_counts(&edges, n));
                let tails = below_p1 + above_p99;
                let bins = numeric_bin_labels(&edges)
                    .into_iter()
                    .zip(rc.iter().zip(&lc))
                    .map(|(l, (a, b))| (l, a / r.len() as f64, b / n as f64))
                    .collect();
                LiveDrift {
                    stats: ColumnDrift {
                        column: name.clone(),
                        test: "numeric".into(),
                        ks,
                        ks_pvalue: ks_p,
                        chi2: None,
                        chi2_pvalue: None,
                        psi: Some(stats::psi(&rc, &lc)),
                        js: Some(stats::jensenshannon(&rc, &lc)),
                        out_of_range_rate: Some(tails as f64 / n as f64),
                        outlier_rate: None,
                        new_category_rate: None,
                    },
                    rows: *count,
                    ood_rate: tails as f64 / n as f64,
                    ood_pvalue: stats::binom_sf(tails, n, EXPECTED_TAIL),
                    drifted: false,
                    out_of_distribution: false,
                    judged: false,
                    bins,
                }
            }
            (f @ FeatureSketch::Categorical { count, nulls, unseen, .. }, FeatureReference::Categorical(r)) => {
                let n = count - nulls;
                if n == 0 || r.is_empty() {
                    continue;
                }
                let mut live: Vec<(String, u64)> = f.category_counts();
                if *unseen > 0 {
                    live.push((UNSEEN.to_string(), *unseen));
                }
                let stats = checks::categorical_drift(name, r, &live);
                let rn: u64 = r.iter().map(|x| x.1).sum();
                let mut labels: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
                for (k, v) in r {
                    labels.entry(k).or_default().0 = *v as f64 / rn.max(1) as f64;
                }
                for (k, v) in &live {
                    labels.entry(k).or_default().1 = *v as f64 / n as f64;
                }
                LiveDrift {
                    stats: ColumnDrift { new_category_rate: Some(*unseen as f64 / n as f64), ..stats },
                    rows: *count,
                    ood_rate: *unseen as f64 / n as f64,
                    ood_pvalue: if *unseen == 0 { 1.0 } else { 0.0 },
                    drifted: false,
                    out_of_distribution: false,
                    judged: false,
                    bins: labels
                        .into_iter()
                        .map(|(k, (a, b))| (if k == UNSEEN { "(unseen)".to_string() } else { k.to_string() }, a, b))
                        .collect(),
                }
            }
            _ => continue,
        };
        out.push(d);
    }
    judge(&mut out, window.rows, policy);
    out
}

/// Marks drifted and out-of-distribution features (Holm across features).
fn judge(out: &mut [LiveDrift], rows: u64, policy: &DriftPolicy) {
    if rows < policy.min_rows {
        return;
    }
    let p: Vec<f64> = out.iter().map(|d| d.stats.ks_pvalue.or(d.stats.chi2_pvalue).unwrap_or(1.0)).collect();
    let significant = stats::holm(&p, policy.alpha);
    let p_ood: Vec<f64> = out.iter().map(|d| d.ood_pvalue).collect();
    let significant_ood = stats::holm(&p_ood, policy.alpha);
    for (i, d) in out.iter_mut().enumerate() {
        d.judged = true;
        d.drifted = significant[i]
            && (d.stats.psi.is_some_and(|x| x >= policy.psi) || d.stats.ks.is_some_and(|x| x >= policy.ks));
        d.out_of_distribution = significant_ood[i] && d.ood_rate >= policy.ood_rate;
    }
}

fn numeric_bin_labels(edges: &[f64]) -> Vec<String> {
    let f = |x: f64| format!("{}", (x * 1000.0).round() / 1000.0);
    let mut out = Vec::with_capacity(edges.len() + 1);
    for i in 0..=edges.len() {
        out.push(match (i.checked_sub(1).map(|j| edges[j]), edges.get(i)) {
            (None, Some(hi)) => format!("< {}", f(*hi)),
            (Some(lo), Some(hi)) => format!("{}–{}", f(lo), f(*hi)),
            (Some(lo), None) => format!("≥ {}", f(lo)),
            (None, None) => "all".into(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(n: usize, mean: f64, seed: u64) -> Vec<f64> {
        let mut s = seed;
        let mut u = move || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        (0..n).map(|_| mean + (-2.0 * u().ln()).sqrt() * (2.0 * std::f64::consts::PI * u()).cos()).collect()
    }

    #[test]
    fn kll_ranks_stay_within_the_documented_error_and_memory_stays_bounded() {
        let values = normal(1_000_000, 0.0, 7);
        let mut s = Kll::default();
        for v in &values {
            s.update(*v);
        }
        // Σ k·(2/3)^d < 3k, plus a rounding and the minimum width per level.
        assert!(s.retained() <= 3 * KLL_K as usize + 2 * 40, "retained {}", s.retained());
        let mut sorted = values.clone();
        stats::sort_f64(&mut sorted);
        let view = s.sorted_view();
        let worst = (1..100)
            .map(|i| sorted[i * sorted.len() / 100])
            .map(|x| (view.cdf(x) - sorted.partition_point(|v| *v <= x) as f64 / sorted.len() as f64).abs())
            .fold(0.0, f64::max);
        assert!(worst <= KLL_RANK_ERROR, "worst rank error {worst}");
        assert_eq!(s.range(), Some((sorted[0], sorted[sorted.len() - 1])));
    }

    #[test]
    fn merged_sketches_answer_like_one_sketch_of_all_values() {
        let (a, b) = (normal(200_000, 0.0, 1), normal(300_000, 1.0, 2));
        let (mut sa, mut sb) = (Kll::default(), Kll::default());
        a.iter().for_each(|v| sa.update(*v));
        b.iter().for_each(|v| sb.update(*v));
        sa.merge(&sb);
        assert_eq!(sa.count(), 500_000);
        let mut all: Vec<f64> = a.into_iter().chain(b).collect();
        stats::sort_f64(&mut all);
        let view = sa.sorted_view();
        for q in [0.05, 0.25, 0.5, 0.75, 0.95] {
            let x = all[(q * all.len() as f64) as usize];
            assert!((view.cdf(x) - q).abs() <= KLL_RANK_ERROR, "q {q}: {}", view.cdf(x));
        }
        let json = serde_json::to_string(&sa).unwrap();
        let back: Kll = serde_json::from_str::<Kll>(&json).unwrap().checked().unwrap();
        assert_eq!(back.sorted_view().cdf(0.5), view.cdf(0.5));
    }

    #[test]
    fn sketch_ks_is_within_the_rank_error_of_the_exact_statistic() {
        let mut reference = normal(20_000, 0.0, 3);
        stats::sort_f64(&mut reference);
        for shift in [0.0, 0.1, 0.5] {
            let mut live = normal(100_000, shift, 4);
            let mut s = Kll::default();
            live.iter().for_each(|v| s.update(*v));
            stats::sort_f64(&mut live);
            let exact = stats::ks_2samp(&reference, &live).unwrap().0;
            let est = s.sorted_view().ks_against(&reference).unwrap();
            assert!((exact - est).abs() <= KLL_RANK_ERROR, "shift {shift}: exact {exact}, sketch {est}");
        }
    }

    #[test]
    fn a_shifted_feature_drifts_and_an_unchanged_one_does_not() {
        let mut reference = normal(5_000, 0.0, 5);
        stats::sort_f64(&mut reference);
        let refs = BTreeMap::from([
            ("a".to_string(), FeatureReference::Numeric(reference.clone())),
            ("b".to_string(), FeatureReference::Numeric(reference)),
            ("c".to_string(), FeatureReference::Categorical(vec![("x".into(), 500), ("y".into(), 500)])),
        ]);
        let mut w = WindowSketch::default();
        let (mut fa, mut fb, mut fc) = (
            FeatureSketch::numeric(Some((-2.3, 2.3))),
            FeatureSketch::numeric(Some((-2.3, 2.3))),
            FeatureSketch::categorical(vec!["x".into(), "y".into()]),
        );
        for (i, (x, y)) in normal(2_000, 0.0, 6).into_iter().zip(normal(2_000, 1.5, 8)).enumerate() {
            fa.observe_number(x);
            fb.observe_number(y);
            fc.observe_category(Some(if i % 2 == 0 { "x" } else { "y" }));
        }
        w.rows = 2_000;
        w.features.insert("a".into(), fa);
        w.features.insert("b".into(), fb);
        w.features.insert("c".into(), fc);
        let d = live_drift(&w, &refs, &DriftPolicy::default());
        let by: BTreeMap<&str, &LiveDrift> = d.iter().map(|x| (x.stats.column.as_str(), x)).collect();
        assert!(!by["a"].drifted && !by["c"].drifted, "{d:?}");
        assert!(by["b"].drifted && by["b"].out_of_distribution, "{:?}", by["b"]);
        // Too few rows: nothing is judged.
        w.rows = 10;
        assert!(live_drift(&w, &refs, &DriftPolicy::default()).iter().all(|x| !x.drifted));
    }

    #[test]
    fn unseen_categories_are_counted_without_their_text() {
        let mut f = FeatureSketch::categorical(vec!["x".into()]);
        f.observe_category(Some("x"));
        f.observe_category(Some("john@example.com"));
        f.observe_category(None);
        let json = serde_json::to_string(&f).unwrap();
        assert!(!json.contains("john"), "{json}");
        assert!(matches!(f, FeatureSketch::Categorical { unseen: 1, nulls: 1, count: 3, .. }));
    }

    #[test]
    fn a_window_with_an_all_null_feature_round_trips() {
        let mut w = WindowSketch { rows: 3, ..Default::default() };
        let mut f = FeatureSketch::numeric(Some((0.0, 1.0)));
        for x in [f64::NAN, f64::INFINITY, f64::NAN] {
            f.observe_number(x);
        }
        w.features.insert("empty".into(), f);
        w.prediction = Some(FeatureSketch::numeric(None));
        let back = WindowSketch::from_json(&serde_json::to_string(&w).unwrap()).expect("an empty sketch reads back");
        assert_eq!(back.features["empty"].count(), 3);
        let mut merged = back.clone();
        merged.merge(&back);
        assert!(matches!(&merged.features["empty"], FeatureSketch::Numeric { nulls: 6, .. }));
    }

    #[test]
    fn a_tampered_sketch_is_refused() {
        let mut s = Kll::default();
        (0..10_000).for_each(|i| s.update(i as f64));
        let mut w = WindowSketch::default();
        w.features.insert(
            "a".into(),
            FeatureSketch::Numeric { count: 10_000, nulls: 0, below_p1: 0, above_p99: 0, range: None, sketch: s },
        );
        let json = serde_json::to_string(&w).unwrap();
        assert!(WindowSketch::from_json(&json).is_some());
        let forged = json.replace("\"n\":10000", "\"n\":99");
        assert!(WindowSketch::from_json(&forged).is_none());
    }
}

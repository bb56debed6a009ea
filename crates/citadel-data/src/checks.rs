//! Row identity (keyed hashes), poisoning checks, k-anonymity and drift.
//!
//! Memory is bounded: the duplicate/flip tracker and the k-anonymity groups
//! are capped. When the duplicate tracker reaches its cap it keeps only the
//! rows whose feature hash falls in half of the hash space (then a quarter,
//! …): duplicates and flips stay exact inside that subspace, so the rates
//! are unbiased estimates, reported with the fraction they were taken on.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hasher;

use arrow_array::{Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use serde::{Deserialize, Serialize};
use siphasher::sip::SipHasher13;

use crate::profile::ColumnProfile;
use crate::stats;

/// Keyed hashes of each row of a batch.
#[derive(Debug, Default)]
pub struct RowHashes {
    pub row: Vec<u64>,
    pub features: Vec<u64>,
    pub label: Vec<Option<u64>>,
    pub key: Vec<u64>,
}

fn feed(hashers: &mut [SipHasher13], array: &ArrayRef) {
    macro_rules! each {
        ($t:ty, $bytes:expr) => {
            if let Some(a) = array.as_any().downcast_ref::<$t>() {
                for (h, v) in hashers.iter_mut().zip(a.iter()) {
                    match v {
                        None => h.write_u8(0),
                        Some(v) => {
                            h.write_u8(1);
                            let b = $bytes(v);
                            let b: &[u8] = <_ as AsRef<[u8]>>::as_ref(&b);
                            h.write_usize(b.len());
                            h.write(b);
                        }
                    }
                }
                return;
            }
        };
    }
    each!(Int64Array, |v: i64| v.to_le_bytes());
    each!(Float64Array, |v: f64| v.to_bits().to_le_bytes());
    each!(BooleanArray, |v: bool| [v as u8]);
    if let Some(a) = array.as_any().downcast_ref::<StringArray>() {
        for (h, v) in hashers.iter_mut().zip(a.iter()) {
            match v {
                None => h.write_u8(0),
                Some(v) => {
                    h.write_u8(1);
                    h.write_usize(v.len());
                    h.write(v.as_bytes());
                }
            }
        }
    }
}

/// Hashes a batch's rows under `key`: features (every column but the label),
/// label, whole row, and the declared key columns.
pub fn hash_rows(batch: &RecordBatch, label: Option<usize>, keys: &[usize], key: &[u8; 16]) -> RowHashes {
    let n = batch.num_rows();
    let fresh = || vec![SipHasher13::new_with_key(key); n];
    let mut f = fresh();
    for (i, col) in batch.columns().iter().enumerate() {
        if Some(i) != label {
            feed(&mut f, col);
        }
    }
    let features: Vec<u64> = f.iter().map(|h| h.finish()).collect();
    let label_hashes: Vec<Option<u64>> = match label {
        Some(l) => {
            let col = batch.column(l);
            let mut h = fresh();
            feed(&mut h, col);
            h.into_iter().enumerate().map(|(i, h)| col.is_valid(i).then(|| h.finish())).collect()
        }
        None => vec![None; n],
    };
    // The row hash covers every column whether or not one is declared the
    // label, so versions ingested with different expectations still diff.
    let row = match label {
        None => features.clone(),
        // The label is usually the last column: continue the feature hashes.
        Some(l) if l + 1 == batch.num_columns() => {
            feed(&mut f, batch.column(l));
            f.iter().map(|h| h.finish()).collect()
        }
        Some(_) => {
            let mut h = fresh();
            for col in batch.columns() {
                feed(&mut h, col);
            }
            h.into_iter().map(|h| h.finish()).collect()
        }
    };
    let key_hashes = if keys.is_empty() {
        vec![0; n]
    } else {
        let mut h = fresh();
        for &k in keys {
            feed(&mut h, batch.column(k));
        }
        h.into_iter().map(|h| h.finish()).collect()
    };
    RowHashes { row, features, label: label_hashes, key: key_hashes }
}

#[derive(Debug, Clone, Copy)]
struct Group {
    label: u64,
    rows: u32,
    duplicates: u32,
    flips: u32,
}

/// Duplicate rows and label flips on duplicate features.
#[derive(Debug)]
pub struct DuplicateTracker {
    groups: HashMap<u64, Group>,
    /// Rows are tracked when their feature hash has `shift` leading zeros.
    shift: u32,
    cap: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DuplicateReport {
    /// Share of rows that repeat an earlier row exactly.
    pub duplicate_rate: f64,
    /// Share of rows whose features repeat an earlier row's with another label.
    pub label_flip_rate: f64,
    /// Share of rows whose features appear in the previous version with another label.
    pub label_flip_rate_vs_previous: Option<f64>,
    /// The fraction of rows the rates were measured on (1 = all).
    pub measured_fraction: f64,
}

impl DuplicateTracker {
    pub fn new(cap: usize) -> Self {
        // Sized once: growing a large table would briefly hold two copies.
        DuplicateTracker { groups: HashMap::with_capacity(cap + 1), shift: 0, cap }
    }

    fn tracked(&self, h: u64) -> bool {
        self.shift == 0 || h >> (64 - self.shift) == 0
    }

    pub fn observe(&mut self, features: u64, label: Option<u64>) {
        if !self.tracked(features) {
            return;
        }
        let label = label.unwrap_or(0);
        match self.groups.get_mut(&features) {
            Some(g) => {
                g.rows = g.rows.saturating_add(1);
                if g.label == label {
                    g.duplicates = g.duplicates.saturating_add(1);
                } else {
                    g.flips = g.flips.saturating_add(1);
                }
            }
            None => {
                self.groups.insert(features, Group { label, rows: 1, duplicates: 0, flips: 0 });
                if self.groups.len() > self.cap {
                    self.shift += 1;
                    let shift = self.shift;
                    self.groups.retain(|h, _| h >> (64 - shift) == 0);
                }
            }
        }
    }

    /// `previous`: (features, label) of the previous version's rows.
    pub fn finish(self, previous: Option<&mut dyn Iterator<Item = (u64, Option<u64>)>>) -> DuplicateReport {
        let rows: u64 = self.groups.values().map(|g| u64::from(g.rows)).sum();
        let rate = |x: u64| if rows == 0 { 0.0 } else { x as f64 / rows as f64 };
        let vs_previous = previous.map(|prev| {
            let mut flipped = 0u64;
            let mut seen: HashMap<u64, bool> = HashMap::new();
            for (f, l) in prev {
                if let Some(g) = self.groups.get(&f)
                    && g.label != l.unwrap_or(0)
                {
                    seen.entry(f).or_insert_with(|| {
                        flipped += u64::from(g.rows);
                        true
                    });
                }
            }
            rate(flipped)
        });
        DuplicateReport {
            duplicate_rate: rate(self.groups.values().map(|g| u64::from(g.duplicates)).sum()),
            label_flip_rate: rate(self.groups.values().map(|g| u64::from(g.flips)).sum()),
            label_flip_rate_vs_previous: vs_previous,
            measured_fraction: 0.5f64.powi(self.shift as i32),
        }
    }
}

pub const MAX_QI_GROUPS: usize = 2_000_000;
const MAX_SENSITIVE_PER_GROUP: usize = 64;

/// k-anonymity and l-diversity over the quasi-identifiers (as stored, i.e.
/// after masking and generalization).
#[derive(Debug, Default)]
pub struct KAnonymity {
    groups: HashMap<u64, (u64, Vec<u64>)>,
    overflow: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KAnonymityReport {
    pub quasi_identifiers: Vec<String>,
    pub sensitive: Option<String>,
    /// The smallest equivalence class (None when there were too many groups to count).
    pub k: Option<u64>,
    /// The fewest distinct sensitive values in a class.
    pub l: Option<u64>,
    pub groups: u64,
    /// Rows in classes smaller than `min_k`.
    pub rows_below_min_k: u64,
    pub min_k: u64,
    pub note: Option<String>,
}

impl KAnonymity {
    pub fn observe(&mut self, qi_hash: u64, sensitive: Option<u64>) {
        if self.overflow {
            return;
        }
        let len = self.groups.len();
        let g = self.groups.entry(qi_hash).or_insert((0, Vec::new()));
        g.0 += 1;
        if let Some(s) = sensitive
            && g.1.len() < MAX_SENSITIVE_PER_GROUP
            && !g.1.contains(&s)
        {
            g.1.push(s);
        }
        if len > MAX_QI_GROUPS {
            self.overflow = true;
            self.groups = HashMap::new();
        }
    }

    pub fn finish(self, qis: Vec<String>, sensitive: Option<String>, min_k: u64) -> KAnonymityReport {
        if self.overflow {
            return KAnonymityReport {
                quasi_identifiers: qis,
                sensitive,
                k: None,
                l: None,
                groups: MAX_QI_GROUPS as u64,
                rows_below_min_k: 0,
                min_k,
                note: Some(format!(
                    "more than {MAX_QI_GROUPS} distinct quasi-identifier combinations: almost every row is unique; generalize the quasi-identifiers"
                )),
            };
        }
        let k = self.groups.values().map(|g| g.0).min();
        let l = sensitive.as_ref().and_then(|_| self.groups.values().map(|g| g.1.len() as u64).min());
        let below = self.groups.values().filter(|g| g.0 < min_k).map(|g| g.0).sum();
        KAnonymityReport {
            quasi_identifiers: qis,
            sensitive,
            k,
            l,
            groups: self.groups.len() as u64,
            rows_below_min_k: below,
            min_k,
            note: None,
        }
    }
}

/// Per-column rates of values the previous version never had.
#[derive(Debug, Default)]
pub struct NoveltyCounter {
    pub checked: u64,
    pub out_of_range: u64,
    pub outliers: u64,
    pub new_categories: u64,
}

/// What a column is compared with.
#[derive(Debug)]
pub struct Reference {
    min: f64,
    max: f64,
    fences: Option<(f64, f64)>,
    categories: Option<std::collections::HashSet<String>>,
}

impl Reference {
    pub fn from_profile(p: &ColumnProfile) -> Self {
        // Tukey's IQR fences flag most values of zero-inflated columns
        // (capital gains: Q1 = Q3 = 0), so the fences are the previous
        // version's p1 and p99 widened by half their spread on each side.
        let fences = p.quantiles.as_ref().map(|q| {
            let spread = q[6] - q[0];
            (q[0] - 0.5 * spread, q[6] + 0.5 * spread)
        });
        Reference {
            min: p.min.unwrap_or(f64::NEG_INFINITY),
            max: p.max.unwrap_or(f64::INFINITY),
            fences,
            // "New category" only means something where values repeat: a
            // column of mostly distinct values (amounts, ids) has no categories.
            categories: p
                .categories
                .as_ref()
                .filter(|_| p.distinct * 2 <= p.count - p.nulls)
                .map(|c| c.iter().map(|(v, _)| v.clone()).collect()),
        }
    }
}

impl NoveltyCounter {
    pub fn observe(&mut self, reference: &Reference, array: &ArrayRef) {
        let number = |x: f64, counter: &mut Self| {
            counter.checked += 1;
            if x < reference.min || x > reference.max {
                counter.out_of_range += 1;
            }
            if let Some((lo, hi)) = reference.fences
                && (x < lo || x > hi)
            {
                counter.outliers += 1;
            }
        };
        if let Some(a) = array.as_any().downcast_ref::<Int64Array>() {
            for v in a.iter().flatten() {
                number(v as f64, self);
                if let Some(c) = &reference.categories
                    && !c.contains(&v.to_string())
                {
                    self.new_categories += 1;
                }
            }
        } else if let Some(a) = array.as_any().downcast_ref::<Float64Array>() {
            for v in a.iter().flatten() {
                number(v, self);
            }
        } else if let Some(a) = array.as_any().downcast_ref::<StringArray>()
            && let Some(c) = &reference.categories
        {
            for v in a.iter().flatten() {
                self.checked += 1;
                if !c.contains(v) {
                    self.new_categories += 1;
                }
            }
        }
    }
}

/// Drift of one column against the previous version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ColumnDrift {
    pub column: String,
    pub test: String,
    pub ks: Option<f64>,
    pub ks_pvalue: Option<f64>,
    pub chi2: Option<f64>,
    pub chi2_pvalue: Option<f64>,
    pub psi: Option<f64>,
    pub js: Option<f64>,
    pub out_of_range_rate: Option<f64>,
    pub outlier_rate: Option<f64>,
    pub new_category_rate: Option<f64>,
}

/// Numeric drift on the two versions' samples.
pub fn numeric_drift(column: &str, reference: &mut [f64], current: &mut [f64]) -> ColumnDrift {
    stats::sort_f64(reference);
    stats::sort_f64(current);
    let ks = stats::ks_2samp(reference, current);
    let edges = stats::decile_edges(reference);
    let (r, c) = (stats::bin_counts(reference, &edges), stats::bin_counts(current, &edges));
    ColumnDrift {
        column: column.into(),
        test: "numeric".into(),
        ks: ks.map(|k| k.0),
        ks_pvalue: ks.map(|k| k.1),
        chi2: None,
        chi2_pvalue: None,
        psi: (!reference.is_empty() && !current.is_empty()).then(|| stats::psi(&r, &c)),
        js: (!reference.is_empty() && !current.is_empty()).then(|| stats::jensenshannon(&r, &c)),
        out_of_range_rate: None,
        outlier_rate: None,
        new_category_rate: None,
    }
}

/// Categorical drift on exact counts. Expected counts for chi-square use the
/// reference shares with add-½ smoothing, so a new category stays finite.
pub fn categorical_drift(column: &str, reference: &[(String, u64)], current: &[(String, u64)]) -> ColumnDrift {
    let mut union: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for (v, n) in reference {
        union.entry(v).or_default().0 = *n as f64;
    }
    for (v, n) in current {
        union.entry(v).or_default().1 = *n as f64;
    }
    let r: Vec<f64> = union.values().map(|v| v.0).collect();
    let c: Vec<f64> = union.values().map(|v| v.1).collect();
    let (rn, cn) = (r.iter().sum::<f64>(), c.iter().sum::<f64>());
    let k = r.len() as f64;
    let expected: Vec<f64> = r.iter().map(|x| (x + 0.5) / (rn + 0.5 * k) * cn).collect();
    let chi = stats::chisquare(&c, &expected);
    ColumnDrift {
        column: column.into(),
        test: "categorical".into(),
        ks: None,
        ks_pvalue: None,
        chi2: chi.map(|x| x.0),
        chi2_pvalue: chi.map(|x| x.1),
        psi: Some(stats::psi(&r, &c)),
        js: Some(stats::jensenshannon(&r, &c)),
        out_of_range_rate: None,
        outlier_rate: None,
        new_category_rate: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_flips_are_counted() {
        let mut t = DuplicateTracker::new(1_000);
        for (f, l) in [(1, 10), (1, 10), (2, 20), (2, 21), (3, 30)] {
            t.observe(f, Some(l));
        }
        let r = t.finish(Some(&mut [(3u64, Some(31u64))].into_iter()));
        assert!((r.duplicate_rate - 0.2).abs() < 1e-12);
        assert!((r.label_flip_rate - 0.2).abs() < 1e-12);
        assert!((r.label_flip_rate_vs_previous.unwrap() - 0.2).abs() < 1e-12);
        assert_eq!(r.measured_fraction, 1.0);
    }

    #[test]
    fn the_tracker_stays_within_its_cap_and_estimates_rates() {
        let mut t = DuplicateTracker::new(10_000);
        let mix = |i: u64| {
            let mut z = i.wrapping_add(0x9E3779B97F4A7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
            z ^ (z >> 31)
        };
        let mut prev = 0;
        for i in 0..200_000u64 {
            // Every tenth row repeats the row before it.
            let f = if i % 10 == 9 { prev } else { mix(i) };
            t.observe(f, Some(0));
            prev = f;
        }
        let r = t.finish(None);
        assert!(r.measured_fraction < 1.0, "the cap was reached");
        assert!((r.duplicate_rate - 0.1).abs() < 0.02, "{}", r.duplicate_rate);
        assert_eq!(r.label_flip_rate, 0.0);
    }

    #[test]
    fn k_anonymity_and_l_diversity() {
        let mut k = KAnonymity::default();
        for (qi, s) in [(1, 1), (1, 2), (1, 1), (2, 5), (2, 5)] {
            k.observe(qi, Some(s));
        }
        let r = k.finish(vec!["age".into()], Some("income".into()), 3);
        assert_eq!((r.k, r.l, r.groups, r.rows_below_min_k), (Some(2), Some(1), 2, 2));
    }
}

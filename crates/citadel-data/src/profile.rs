//! Column profiles, accumulated one batch at a time in bounded memory.
//!
//! - count, nulls, min/max, mean and standard deviation: exact (Welford);
//! - distinct values: exact up to [`MAX_CATEGORIES`], then a KMV sketch
//!   (k = 4096 smallest keyed hashes, about 1.6% standard error);
//! - category counts: exact while a column has at most [`MAX_CATEGORIES`]
//!   distinct values (they feed the chi-square and PSI drift tests);
//! - quantiles and histograms: from the version's row sample (a keyed-hash
//!   sample of `drift.sample_rows` rows; exact when the table is smaller).
//!
//! Top values are kept out of the profile for columns holding PII or
//! classified restricted: a profile is readable by every dataset reader.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hasher;

use arrow_array::{Array, ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
use serde::{Deserialize, Serialize};
use siphasher::sip::SipHasher13;

use crate::spec::ColumnType;

pub const MAX_CATEGORIES: usize = 1000;
const KMV_K: usize = 4096;
pub const HISTOGRAM_BINS: usize = 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Bin {
    pub lo: f64,
    pub hi: f64,
    /// Share of the sampled non-null values in [lo, hi) (the last bin is closed).
    pub share: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ColumnProfile {
    pub name: String,
    /// The stored column's type.
    #[serde(rename = "type")]
    pub column_type: ColumnType,
    /// The stored column's classification: a restricted column masked
    /// irreversibly (pseudonymize, redact, generalize, noise) is stored as
    /// confidential; tokens stay restricted (they can be reversed).
    pub classification: String,
    /// The source column's classification (declared or detected).
    pub source_classification: String,
    pub mask: Option<String>,
    /// PII kinds detected in the source values, with evidence (never values).
    pub pii: Vec<citadel_pii::Detection>,
    pub count: u64,
    pub nulls: u64,
    pub null_rate: f64,
    pub distinct: u64,
    pub distinct_exact: bool,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
    pub std: Option<f64>,
    /// p1, p5, p25, p50, p75, p95, p99 (from the sample).
    pub quantiles: Option<Vec<f64>>,
    pub histogram: Vec<Bin>,
    /// Most frequent values and their counts (withheld for PII and restricted columns).
    pub top: Vec<(String, u64)>,
    /// Exact counts of every category, when there are at most MAX_CATEGORIES
    /// and the column is not withheld.
    pub categories: Option<Vec<(String, u64)>>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
}

pub const QUANTILES: [f64; 7] = [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99];

/// Accumulates one column.
#[derive(Debug)]
pub struct ColumnAccumulator {
    pub name: String,
    pub column_type: ColumnType,
    count: u64,
    nulls: u64,
    min: f64,
    max: f64,
    mean: f64,
    m2: f64,
    categories: Option<HashMap<String, u64>>,
    /// Integer columns count their categories by value (no formatting per row).
    int_categories: Option<HashMap<i64, u64>>,
    kmv: BTreeSet<u64>,
    kmv_key: [u8; 16],
    min_len: u64,
    max_len: u64,
}

impl ColumnAccumulator {
    pub fn new(name: &str, column_type: ColumnType, key: [u8; 16]) -> Self {
        ColumnAccumulator {
            name: name.into(),
            column_type,
            count: 0,
            nulls: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            mean: 0.0,
            m2: 0.0,
            categories: Some(HashMap::new()),
            int_categories: Some(HashMap::new()),
            kmv: BTreeSet::new(),
            kmv_key: key,
            min_len: u64::MAX,
            max_len: 0,
        }
    }

    fn distinct(&mut self, bytes: &[u8]) {
        let mut h = SipHasher13::new_with_key(&self.kmv_key);
        h.write(bytes);
        let v = h.finish();
        if self.kmv.len() < KMV_K {
            self.kmv.insert(v);
        } else if let Some(&top) = self.kmv.last()
            && v < top
            && self.kmv.insert(v)
        {
            self.kmv.pop_last();
        }
    }

    fn category(&mut self, v: &str) {
        if let Some(map) = &mut self.categories {
            if let Some(c) = map.get_mut(v) {
                *c += 1;
            } else if map.len() < MAX_CATEGORIES {
                map.insert(v.to_string(), 1);
            } else {
                self.categories = None;
            }
        }
    }

    pub fn observe(&mut self, array: &ArrayRef) {
        self.count += array.len() as u64;
        self.nulls += array.null_count() as u64;
        match self.column_type {
            ColumnType::Integer => {
                if let Some(a) = array.as_any().downcast_ref::<Int64Array>() {
                    let mut seen = self.count - self.nulls - (a.len() - a.null_count()) as u64;
                    for v in a.iter().flatten() {
                        seen += 1;
                        self.count_adjusted_number(seen, v as f64);
                        self.distinct(&v.to_le_bytes());
                        if let Some(map) = &mut self.int_categories {
                            if let Some(c) = map.get_mut(&v) {
                                *c += 1;
                            } else if map.len() < MAX_CATEGORIES {
                                map.insert(v, 1);
                            } else {
                                self.int_categories = None;
                            }
                        }
                    }
                }
            }
            ColumnType::Float => {
                if let Some(a) = array.as_any().downcast_ref::<Float64Array>() {
                    let mut seen = self.count - self.nulls - (a.len() - a.null_count()) as u64;
                    for v in a.iter().flatten() {
                        seen += 1;
                        self.count_adjusted_number(seen, v);
                        self.distinct(&v.to_bits().to_le_bytes());
                        // Floats are not categories.
                    }
                    self.categories = None;
                }
            }
            ColumnType::Boolean => {
                if let Some(a) = array.as_any().downcast_ref::<BooleanArray>() {
                    for v in a.iter().flatten() {
                        self.category(if v { "true" } else { "false" });
                        self.distinct(&[v as u8]);
                    }
                }
            }
            ColumnType::String => {
                if let Some(a) = array.as_any().downcast_ref::<StringArray>() {
                    for v in a.iter().flatten() {
                        self.min_len = self.min_len.min(v.chars().count() as u64);
                        self.max_len = self.max_len.max(v.chars().count() as u64);
                        self.distinct(v.as_bytes());
                        self.category(v);
                    }
                }
            }
        }
    }

    /// Welford with an explicit running count (the batch's nulls were added
    /// to the totals up front).
    fn count_adjusted_number(&mut self, n: u64, x: f64) {
        let d = x - self.mean;
        self.mean += d / n as f64;
        self.m2 += d * (x - self.mean);
        self.min = self.min.min(x);
        self.max = self.max.max(x);
    }

    /// The finished profile. `sample` holds the sampled non-null values of a
    /// numeric column; `withhold` keeps values out of the profile.
    pub fn finish(
        mut self,
        source_classification: crate::spec::Classification,
        mask: Option<String>,
        pii: Vec<citadel_pii::Detection>,
        sample: Option<&mut Vec<f64>>,
        withhold: bool,
    ) -> ColumnProfile {
        if self.column_type == ColumnType::Integer {
            self.categories =
                self.int_categories.take().map(|m| m.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
        }
        let non_null = self.count - self.nulls;
        let numeric = matches!(self.column_type, ColumnType::Integer | ColumnType::Float) && non_null > 0;
        let (distinct, distinct_exact) = match (&self.categories, self.column_type) {
            (Some(m), _) => (m.len() as u64, true),
            _ if self.kmv.len() < KMV_K => (self.kmv.len() as u64, true),
            _ => {
                let kth = *self.kmv.last().unwrap_or(&u64::MAX) as f64 / u64::MAX as f64;
                (((KMV_K - 1) as f64 / kth).round() as u64, false)
            }
        };
        let mut quantiles = None;
        let mut histogram = Vec::new();
        if let Some(s) = sample
            && numeric
            && !s.is_empty()
        {
            crate::stats::sort_f64(s);
            quantiles = Some(QUANTILES.iter().map(|q| crate::stats::quantile_sorted(s, *q)).collect());
            histogram = histogram_of(s);
        }
        let mut categories = if withhold { None } else { self.categories.map(|m| m.into_iter().collect::<Vec<_>>()) };
        if let Some(c) = &mut categories {
            c.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        }
        let top = categories.as_ref().map(|c| c.iter().take(10).cloned().collect()).unwrap_or_default();
        ColumnProfile {
            name: self.name,
            column_type: self.column_type,
            classification: stored_classification(source_classification, mask.as_deref()).as_str().into(),
            source_classification: source_classification.as_str().into(),
            mask,
            pii,
            count: self.count,
            nulls: self.nulls,
            null_rate: if self.count == 0 { 0.0 } else { self.nulls as f64 / self.count as f64 },
            distinct,
            distinct_exact,
            min: numeric.then_some(self.min),
            max: numeric.then_some(self.max),
            mean: numeric.then_some(self.mean),
            std: (numeric && non_null > 1).then(|| (self.m2 / (non_null - 1) as f64).sqrt()),
            quantiles,
            histogram,
            top,
            categories: if matches!(self.column_type, ColumnType::Float) { None } else { categories },
            min_length: (self.max_len > 0 || self.min_len != u64::MAX).then_some(self.min_len),
            max_length: (self.min_len != u64::MAX).then_some(self.max_len),
        }
    }
}

fn stored_classification(source: crate::spec::Classification, mask: Option<&str>) -> crate::spec::Classification {
    use crate::spec::Classification::*;
    match (source, mask) {
        (Restricted, Some("pseudonymize" | "redact" | "generalize" | "noise")) => Confidential,
        (c, _) => c,
    }
}

fn histogram_of(sorted: &[f64]) -> Vec<Bin> {
    let (lo, hi) = (sorted[0], sorted[sorted.len() - 1]);
    if lo == hi {
        return vec![Bin { lo, hi, share: 1.0 }];
    }
    let width = (hi - lo) / HISTOGRAM_BINS as f64;
    let mut counts = [0u64; HISTOGRAM_BINS];
    for v in sorted {
        let i = (((v - lo) / width) as usize).min(HISTOGRAM_BINS - 1);
        counts[i] += 1;
    }
    counts
        .iter()
        .enumerate()
        .map(|(i, c)| Bin {
            lo: lo + width * i as f64,
            hi: lo + width * (i + 1) as f64,
            share: *c as f64 / sorted.len() as f64,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn exact_moments_and_categories() {
        let mut acc = ColumnAccumulator::new("age", ColumnType::Integer, [7; 16]);
        acc.observe(&(Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])) as ArrayRef));
        acc.observe(&(Arc::new(Int64Array::from(vec![Some(5), Some(3)])) as ArrayRef));
        let mut sample = vec![1.0, 3.0, 5.0, 3.0];
        let p = acc.finish(crate::spec::Classification::Internal, None, vec![], Some(&mut sample), false);
        assert_eq!((p.count, p.nulls, p.distinct), (5, 1, 3));
        assert_eq!((p.min, p.max, p.mean), (Some(1.0), Some(5.0), Some(3.0)));
        assert!((p.std.unwrap() - (8.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(p.top[0], ("3".to_string(), 2));
        assert_eq!(p.quantiles.unwrap()[3], 3.0);
    }

    #[test]
    fn kmv_estimates_large_cardinalities() {
        let mut acc = ColumnAccumulator::new("id", ColumnType::Integer, [9; 16]);
        let values: Vec<i64> = (0..200_000).collect();
        acc.observe(&(Arc::new(Int64Array::from(values)) as ArrayRef));
        let p = acc.finish(crate::spec::Classification::Internal, None, vec![], None, true);
        assert!(!p.distinct_exact);
        let err = (p.distinct as f64 - 200_000.0).abs() / 200_000.0;
        assert!(err < 0.06, "estimate {} is {err:.3} off", p.distinct);
        assert!(p.top.is_empty(), "withheld");
    }
}

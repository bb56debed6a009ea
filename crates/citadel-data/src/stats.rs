//! Two-sample drift statistics. Each is checked against scipy / numpy on real
//! data (tests/drift_reference.rs; the script that made the reference values
//! is tests/fixtures/make_drift_reference.py).

/// Kolmogorov–Smirnov two-sample test on sorted samples.
///
/// The statistic is `scipy.stats.ks_2samp(a, b).statistic` exactly (the
/// largest gap between the two empirical CDFs, ties handled as scipy does).
/// The p-value is the asymptotic Kolmogorov distribution at
/// `sqrt(n·m/(n+m))·D` — `scipy.special.kolmogorov`, i.e. `kstwobign.sf`.
/// (ks_2samp's own p-value uses an exact small-sample method; on the sample
/// sizes drift runs on, the two differ in the third decimal at most.)
pub fn ks_2samp(a: &[f64], b: &[f64]) -> Option<(f64, f64)> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    debug_assert!(a.windows(2).all(|w| w[0] <= w[1]) && b.windows(2).all(|w| w[0] <= w[1]));
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
    while i < a.len() && j < b.len() {
        let v = a[i].min(b[j]);
        while i < a.len() && a[i] <= v {
            i += 1;
        }
        while j < b.len() && b[j] <= v {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    // One side is exhausted: the gap can only shrink from here but the
    // value at the exhausted point still counts (already covered above).
    d = d.max((i as f64 / n - j as f64 / m).abs());
    let en = n * m / (n + m);
    Some((d, kolmogorov_sf(en.sqrt() * d)))
}

/// Survival function of the Kolmogorov distribution, `P(K > x)`.
pub fn kolmogorov_sf(x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    if x < 1.0 {
        // 1 − CDF with the Jacobi-theta form, which converges fast for small x.
        let w = (2.0 * std::f64::consts::PI).sqrt() / x;
        let t = -std::f64::consts::PI.powi(2) / (8.0 * x * x);
        let mut sum = 0.0;
        for k in (1..=41).step_by(2) {
            let term = (t * (k * k) as f64).exp();
            sum += term;
            if term < 1e-300 {
                break;
            }
        }
        (1.0 - w * sum).clamp(0.0, 1.0)
    } else {
        let mut sum = 0.0;
        for k in 1..=200 {
            let term = (-2.0 * (k * k) as f64 * x * x).exp();
            sum += if k % 2 == 1 { term } else { -term };
            if term < 1e-300 {
                break;
            }
        }
        (2.0 * sum).clamp(0.0, 1.0)
    }
}

/// Pearson's chi-square test: `scipy.stats.chisquare(observed, expected)`.
/// Returns (statistic, p-value with k − 1 degrees of freedom).
pub fn chisquare(observed: &[f64], expected: &[f64]) -> Option<(f64, f64)> {
    if observed.len() != expected.len() || observed.len() < 2 || expected.iter().any(|e| *e <= 0.0) {
        return None;
    }
    let stat: f64 = observed.iter().zip(expected).map(|(o, e)| (o - e) * (o - e) / e).sum();
    let dof = (observed.len() - 1) as f64;
    Some((stat, puruspe::gammq(dof / 2.0, stat / 2.0)))
}

/// Bin edges for numeric PSI/JS: the reference's deciles
/// (`numpy.quantile(reference, linspace(0, 1, 11))`, linear), inner edges
/// only, duplicates removed.
pub fn decile_edges(sorted_reference: &[f64]) -> Vec<f64> {
    // numpy.linspace(0, 1, 11) is i * 0.1 (so 0.30000000000000004, not 0.3).
    let mut edges: Vec<f64> = (1..10).map(|i| quantile_sorted(sorted_reference, i as f64 * 0.1)).collect();
    edges.dedup();
    edges
}

/// numpy's default (linear) quantile of sorted data, with numpy's rounding:
/// virtual index `(n − 1)·q`, and its two-sided linear interpolation.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = (sorted.len() - 1) as f64 * q;
    let lo = (pos.floor() as usize).min(sorted.len() - 1);
    let hi = (lo + 1).min(sorted.len() - 1);
    let t = pos - pos.floor();
    let (a, b) = (sorted[lo], sorted[hi]);
    let diff = b - a;
    if t >= 0.5 { b - diff * (1.0 - t) } else { a + diff * t }
}

/// Counts per bin, where bin `i` holds values `v` with exactly `i` edges ≤ `v`
/// (`numpy.searchsorted(edges, v, side="right")`).
pub fn bin_counts(values: &[f64], edges: &[f64]) -> Vec<f64> {
    let mut counts = vec![0.0; edges.len() + 1];
    for v in values {
        counts[edges.partition_point(|e| e <= v)] += 1.0;
    }
    counts
}

/// Floor applied to proportions in PSI, so an empty bin stays finite.
pub const PSI_EPSILON: f64 = 1e-4;

/// Population stability index of two count vectors over the same bins:
/// `Σ (c − r)·ln(c / r)` over proportions floored at [`PSI_EPSILON`].
pub fn psi(reference_counts: &[f64], current_counts: &[f64]) -> f64 {
    let (rn, cn) = (reference_counts.iter().sum::<f64>(), current_counts.iter().sum::<f64>());
    if rn == 0.0 || cn == 0.0 {
        return f64::NAN;
    }
    reference_counts
        .iter()
        .zip(current_counts)
        .map(|(r, c)| {
            let (r, c) = ((r / rn).max(PSI_EPSILON), (c / cn).max(PSI_EPSILON));
            (c - r) * (c / r).ln()
        })
        .sum()
}

/// Jensen–Shannon distance in bits: `scipy.spatial.distance.jensenshannon(p, q, base=2)`.
pub fn jensenshannon(p: &[f64], q: &[f64]) -> f64 {
    let (ps, qs) = (p.iter().sum::<f64>(), q.iter().sum::<f64>());
    if ps == 0.0 || qs == 0.0 {
        return f64::NAN;
    }
    let rel = |x: f64, y: f64| if x > 0.0 { x * (x / y).ln() } else { 0.0 };
    let mut js = 0.0;
    for (a, b) in p.iter().zip(q) {
        let (a, b) = (a / ps, b / qs);
        let m = (a + b) / 2.0;
        js += rel(a, m) + rel(b, m);
    }
    (js / 2.0 / std::f64::consts::LN_2).max(0.0).sqrt()
}

/// One-sided binomial test: P(X ≥ k) for X ~ Binomial(n, p), i.e.
/// `scipy.stats.binomtest(k, n, p, alternative="greater").pvalue`, through
/// the regularized incomplete beta function I_p(k, n − k + 1).
pub fn binom_sf(k: u64, n: u64, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n || p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    puruspe::betai(k as f64, (n - k + 1) as f64, p).clamp(0.0, 1.0)
}

/// Two-sided two-proportion z-test (pooled): the p-value that successes
/// k1 of n1 and k2 of n2 come from one rate.
pub fn two_proportion_p(k1: u64, n1: u64, k2: u64, n2: u64) -> f64 {
    if n1 == 0 || n2 == 0 {
        return 1.0;
    }
    let (p1, p2) = (k1 as f64 / n1 as f64, k2 as f64 / n2 as f64);
    let pooled = (k1 + k2) as f64 / (n1 + n2) as f64;
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 as f64 + 1.0 / n2 as f64)).sqrt();
    if se == 0.0 {
        return if p1 == p2 { 1.0 } else { 0.0 };
    }
    let z = (p1 - p2).abs() / se;
    puruspe::erfc(z / std::f64::consts::SQRT_2).clamp(0.0, 1.0)
}

/// Holm–Bonferroni: which of `pvalues` are rejected at family-wise level `alpha`.
pub fn holm(pvalues: &[f64], alpha: f64) -> Vec<bool> {
    let mut order: Vec<usize> = (0..pvalues.len()).collect();
    order.sort_by(|&a, &b| pvalues[a].total_cmp(&pvalues[b]));
    let m = pvalues.len();
    let mut rejected = vec![false; m];
    for (rank, &i) in order.iter().enumerate() {
        if pvalues[i] <= alpha / (m - rank) as f64 {
            rejected[i] = true;
        } else {
            break;
        }
    }
    rejected
}

/// Sorts `v` in the order of [`f64::total_cmp`] (−NaN < −∞ < … < −0 < +0 <
/// … < +∞ < +NaN), the same order `sort_unstable_by(f64::total_cmp)` gives,
/// by an LSD radix sort on the order-preserving bit pattern (the one
/// `total_cmp` itself compares): 8 passes of one byte at most, a pass
/// skipped when every key has the same byte there. O(n), one scratch
/// buffer of `n` words; small slices use the comparison sort.
pub fn sort_f64(v: &mut [f64]) {
    const SMALL: usize = 2048;
    if v.len() < SMALL {
        v.sort_unstable_by(f64::total_cmp);
        return;
    }
    // Sign-magnitude to two's-complement order: flip all bits of negatives,
    // the sign bit of positives (total_cmp's transform, made unsigned).
    let key = |x: f64| {
        let b = x.to_bits();
        if b >> 63 == 1 { !b } else { b | (1 << 63) }
    };
    let unkey = |k: u64| f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k });
    let mut a: Vec<u64> = v.iter().map(|&x| key(x)).collect();
    let mut b: Vec<u64> = vec![0; a.len()];
    let mut counts = [[0usize; 256]; 8];
    for &k in &a {
        for (d, c) in counts.iter_mut().enumerate() {
            c[((k >> (8 * d)) & 0xff) as usize] += 1;
        }
    }
    let n = a.len();
    for (d, c) in counts.iter().enumerate() {
        if c.contains(&n) {
            continue; // every key has the same byte here
        }
        let mut offsets = [0usize; 256];
        let mut sum = 0;
        for (o, &x) in offsets.iter_mut().zip(c.iter()) {
            *o = sum;
            sum += x;
        }
        for &k in &a {
            let byte = ((k >> (8 * d)) & 0xff) as usize;
            b[offsets[byte]] = k;
            offsets[byte] += 1;
        }
        std::mem::swap(&mut a, &mut b);
    }
    for (x, k) in v.iter_mut().zip(a) {
        *x = unkey(k);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn radix_sort_orders_like_total_cmp() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for n in [0usize, 1, 7, 2047, 2048, 100_000] {
            let mut v: Vec<f64> = (0..n)
                .map(|i| match i % 11 {
                    0 => f64::from_bits(next()),
                    1 => (next() % 1000) as f64 - 500.0,
                    2 => -0.0,
                    3 => 0.0,
                    4 => f64::INFINITY,
                    5 => f64::NEG_INFINITY,
                    6 => f64::NAN,
                    7 => -f64::NAN,
                    _ => (next() as f64 / u64::MAX as f64 - 0.5) * 1e6,
                })
                .collect();
            let mut want = v.clone();
            want.sort_unstable_by(f64::total_cmp);
            sort_f64(&mut v);
            let bits = |x: &[f64]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&v), bits(&want), "n = {n}");
        }
    }

    use super::*;

    #[test]
    fn ks_of_identical_samples_is_zero_and_of_disjoint_is_one() {
        let a = [1.0, 2.0, 3.0];
        assert_eq!(ks_2samp(&a, &a).unwrap().0, 0.0);
        assert_eq!(ks_2samp(&a, &[4.0, 5.0]).unwrap().0, 1.0);
        assert!(ks_2samp(&a, &[]).is_none());
    }

    #[test]
    fn psi_and_js_are_zero_for_equal_distributions() {
        assert!(psi(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]).abs() < 1e-15);
        assert!(jensenshannon(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]).abs() < 1e-7);
        assert!((jensenshannon(&[1.0, 0.0], &[0.0, 1.0]) - 1.0).abs() < 1e-12);
    }
}

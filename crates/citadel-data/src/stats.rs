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

#[cfg(test)]
mod tests {
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

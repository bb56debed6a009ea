//! Numerically safe logistic and softmax functions, shared by the trainers.

/// `1 / (1 + e^-z)` without overflow for large |z|.
pub(crate) fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 { 1.0 / (1.0 + (-z).exp()) } else { z.exp() / (1.0 + z.exp()) }
}

/// `log(1 + e^z)` without overflow.
pub(crate) fn softplus(z: f64) -> f64 {
    if z > 0.0 { z + (-z).exp().ln_1p() } else { z.exp().ln_1p() }
}

/// Softmax of `scores` into `out` (max-shifted).
pub(crate) fn softmax_into(scores: impl Iterator<Item = f64> + Clone, out: &mut [f64]) {
    let max = scores.clone().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for (o, s) in out.iter_mut().zip(scores) {
        *o = (s - max).exp();
        sum += *o;
    }
    out.iter_mut().for_each(|o| *o /= sum);
}

//! Deterministic, stratified splits. The generator is ChaCha8 seeded by the
//! caller, so a pipeline re-run with the same seed splits the same rows.

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// A seeded generator for splits, sampling and attacks.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A uniform draw in `[0, n)` (Lemire's multiply-shift; the bias for
/// `n` far below 2^64 is negligible for sampling rows).
pub fn below(rng: &mut ChaCha8Rng, n: usize) -> usize {
    ((u128::from(rng.next_u64()) * n as u128) >> 64) as usize
}

/// A uniform draw in `[0, 1)`.
pub fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A standard normal draw (Box–Muller).
pub fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1 = unit(rng).max(f64::MIN_POSITIVE);
    let u2 = unit(rng);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

pub fn shuffle<T>(rng: &mut ChaCha8Rng, v: &mut [T]) {
    for i in (1..v.len()).rev() {
        let j = below(rng, i + 1);
        v.swap(i, j);
    }
}

/// Splits row indices into (train, held out) with `fraction` of each class
/// held out, so both sides keep the label balance. Both lists are sorted.
pub fn stratified(y: &[f32], fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    stratified_classes(y, 2, fraction, seed)
}

/// Like [`stratified`], for labels that are class indices `0..classes`.
pub fn stratified_classes(y: &[f32], classes: usize, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut r = rng(seed);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for class in 0..classes {
        let mut idx: Vec<usize> = (0..y.len()).filter(|&i| y[i] as usize == class).collect();
        shuffle(&mut r, &mut idx);
        let k = ((idx.len() as f64) * fraction).round() as usize;
        test.extend_from_slice(&idx[..k]);
        train.extend_from_slice(&idx[k..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    (train, test)
}

/// Splits `0..n` into (train, held out) at random, `fraction` held out; both sorted.
pub fn random(n: usize, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut r = rng(seed);
    let mut idx: Vec<usize> = (0..n).collect();
    shuffle(&mut r, &mut idx);
    let k = ((n as f64) * fraction).round() as usize;
    let (mut test, mut train) = (idx[..k].to_vec(), idx[k..].to_vec());
    train.sort_unstable();
    test.sort_unstable();
    (train, test)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratified_keeps_the_balance_and_is_deterministic() {
        let y: Vec<f32> = (0..1000).map(|i| if i % 4 == 0 { 1.0 } else { 0.0 }).collect();
        let (tr, te) = stratified(&y, 0.2, 7);
        assert_eq!(tr.len() + te.len(), 1000);
        assert_eq!(te.iter().filter(|&&i| y[i] == 1.0).count(), 50);
        assert_eq!(stratified(&y, 0.2, 7), (tr.clone(), te.clone()));
        assert_ne!(stratified(&y, 0.2, 8).1, te);
    }
}

//! Masking transforms on Arrow arrays. A masked column's stored type is
//! string for redact, pseudonymize, tokenize and generalize, and the source
//! type for noise.

use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, StringArray};
use citadel_crypto::DataProtector;
use rand_core::{RngCore, SeedableRng};

use crate::DataError;
use crate::spec::{ColumnType, Mask};

/// Applies masks; holds the keys and the noise generator.
pub struct Masker<'a> {
    protector: &'a DataProtector,
    rng: rand_chacha::ChaCha20Rng,
}

impl std::fmt::Debug for Masker<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Masker")
    }
}

pub const REDACTED: &str = "[REDACTED]";

/// The stored type of a column of `source` type under `mask`.
pub fn masked_type(source: ColumnType, mask: Option<&Mask>) -> Option<ColumnType> {
    match mask {
        None => Some(source),
        Some(Mask::Drop) => None,
        Some(Mask::Noise { .. }) => Some(match source {
            ColumnType::Integer | ColumnType::Float => ColumnType::Float,
            other => other,
        }),
        Some(_) => Some(ColumnType::String),
    }
}

fn strings(array: &ArrayRef) -> Vec<Option<String>> {
    if let Some(s) = array.as_any().downcast_ref::<StringArray>() {
        return s.iter().map(|v| v.map(str::to_string)).collect();
    }
    if let Some(i) = array.as_any().downcast_ref::<Int64Array>() {
        return i.iter().map(|v| v.map(|v| v.to_string())).collect();
    }
    if let Some(f) = array.as_any().downcast_ref::<Float64Array>() {
        return f.iter().map(|v| v.map(|v| v.to_string())).collect();
    }
    if let Some(b) = array.as_any().downcast_ref::<arrow_array::BooleanArray>() {
        return b.iter().map(|v| v.map(|v| v.to_string())).collect();
    }
    vec![None; array.len()]
}

fn numbers(array: &ArrayRef) -> Option<Vec<Option<f64>>> {
    if let Some(i) = array.as_any().downcast_ref::<Int64Array>() {
        return Some(i.iter().map(|v| v.map(|v| v as f64)).collect());
    }
    array.as_any().downcast_ref::<Float64Array>().map(|f| f.iter().collect())
}

/// "1990-07-14" → "1990" or "1990-07"; anything not starting with a date
/// shape becomes null (it cannot be generalized safely).
fn generalize_date(v: &str, unit: &str) -> Option<String> {
    let b = v.as_bytes();
    let ok =
        b.len() >= 7 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && b[5..7].iter().all(u8::is_ascii_digit);
    if !ok {
        return None;
    }
    Some(if unit == "year" { v[..4].to_string() } else { v[..7].to_string() })
}

/// "90210" keeping 3 → "902**".
fn generalize_prefix(v: &str, keep: usize) -> String {
    v.chars().enumerate().map(|(i, c)| if i < keep || !c.is_alphanumeric() { c } else { '*' }).collect()
}

fn band_label(x: f64, band: f64) -> String {
    let lo = (x / band).floor() * band;
    let hi = lo + band;
    if band.fract() == 0.0 && lo.fract() == 0.0 {
        format!("{}-{}", lo as i64, hi as i64 - 1)
    } else {
        format!("[{lo}, {hi})")
    }
}

impl<'a> Masker<'a> {
    pub fn new(protector: &'a DataProtector) -> Result<Self, DataError> {
        let seed = citadel_crypto::random_bytes::<32>()?;
        Ok(Masker { protector, rng: rand_chacha::ChaCha20Rng::from_seed(seed) })
    }

    /// Uniform in (0, 1).
    fn unit(&mut self) -> f64 {
        ((self.rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn noise(&mut self, scale: f64, distribution: &str) -> f64 {
        if distribution == "gaussian" {
            let (u1, u2) = (self.unit(), self.unit());
            scale * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        } else {
            let u = self.unit() - 0.5;
            -scale * u.signum() * (1.0 - 2.0 * u.abs()).ln()
        }
    }

    /// The masked array, or `None` when the column is dropped.
    pub fn apply(&mut self, mask: &Mask, array: &ArrayRef) -> Result<Option<ArrayRef>, DataError> {
        let out: ArrayRef = match mask {
            Mask::Drop => return Ok(None),
            Mask::Redact => {
                Arc::new((0..array.len()).map(|i| array.is_valid(i).then_some(REDACTED)).collect::<StringArray>())
            }
            Mask::Pseudonymize => {
                let mut b = StringBuilder::with_capacity(array.len(), array.len() * 35);
                if let Some(s) = array.as_any().downcast_ref::<StringArray>() {
                    for v in s.iter() {
                        b.append_option(v.map(|v| self.protector.pseudonymize(v)));
                    }
                } else {
                    for v in strings(array) {
                        b.append_option(v.map(|v| self.protector.pseudonymize(&v)));
                    }
                }
                Arc::new(b.finish())
            }
            Mask::Tokenize => {
                let mut b = StringBuilder::with_capacity(array.len(), array.len() * 40);
                for v in strings(array) {
                    b.append_option(v.map(|v| self.protector.tokenize(&v)).transpose()?);
                }
                Arc::new(b.finish())
            }
            Mask::Generalize { band: Some(band), .. } => match numbers(array) {
                Some(nums) => Arc::new(nums.iter().map(|v| v.map(|x| band_label(x, *band))).collect::<StringArray>()),
                None => {
                    // A numeric band on a string column: parse what parses.
                    let s = strings(array);
                    Arc::new(
                        s.iter()
                            .map(|v| v.as_deref().and_then(|v| v.parse::<f64>().ok()).map(|x| band_label(x, *band)))
                            .collect::<StringArray>(),
                    )
                }
            },
            Mask::Generalize { keep: Some(keep), .. } => Arc::new(
                strings(array)
                    .iter()
                    .map(|v| v.as_deref().map(|v| generalize_prefix(v, *keep)))
                    .collect::<StringArray>(),
            ),
            Mask::Generalize { date: Some(unit), .. } => Arc::new(
                strings(array)
                    .iter()
                    .map(|v| v.as_deref().and_then(|v| generalize_date(v, unit)))
                    .collect::<StringArray>(),
            ),
            Mask::Generalize { .. } => return Err(DataError::Internal("generalize without a parameter".into())),
            Mask::Noise { scale, distribution } => {
                let Some(nums) = numbers(array) else {
                    return Err(DataError::Internal("noise on a non-numeric column".into()));
                };
                Arc::new(nums.iter().map(|v| v.map(|x| x + self.noise(*scale, distribution))).collect::<Float64Array>())
            }
        };
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protector() -> DataProtector {
        DataProtector::new(&citadel_crypto::DataKey::from_bytes(&[3; 32]).unwrap()).unwrap()
    }

    fn strs(a: &ArrayRef) -> Vec<Option<String>> {
        strings(a)
    }

    #[test]
    fn generalization() {
        let p = protector();
        let mut m = Masker::new(&p).unwrap();
        let ages: ArrayRef = Arc::new(Int64Array::from(vec![Some(37), None, Some(40), Some(-3)]));
        let g = m.apply(&Mask::Generalize { band: Some(10.0), keep: None, date: None }, &ages).unwrap().unwrap();
        assert_eq!(strs(&g), [Some("30-39".into()), None, Some("40-49".into()), Some("-10--1".into())]);
        let zips: ArrayRef = Arc::new(StringArray::from(vec![Some("90210"), Some("SW1A 1AA")]));
        let g = m.apply(&Mask::Generalize { band: None, keep: Some(3), date: None }, &zips).unwrap().unwrap();
        assert_eq!(strs(&g), [Some("902**".into()), Some("SW1* ***".into())]);
        let dob: ArrayRef = Arc::new(StringArray::from(vec![Some("1990-07-14"), Some("14/07/1990")]));
        let g =
            m.apply(&Mask::Generalize { band: None, keep: None, date: Some("year".into()) }, &dob).unwrap().unwrap();
        assert_eq!(strs(&g), [Some("1990".into()), None]);
    }

    #[test]
    fn pseudonyms_keep_joins_and_hide_values() {
        let p = protector();
        let mut m = Masker::new(&p).unwrap();
        let a: ArrayRef = Arc::new(StringArray::from(vec!["a@x.org", "b@x.org", "a@x.org"]));
        let out = strs(&m.apply(&Mask::Pseudonymize, &a).unwrap().unwrap());
        assert_eq!(out[0], out[2]);
        assert_ne!(out[0], out[1]);
        assert!(out.iter().flatten().all(|v| v.starts_with("ps_") && !v.contains('@')));
        assert!(m.apply(&Mask::Drop, &a).unwrap().is_none());
        assert_eq!(strs(&m.apply(&Mask::Redact, &a).unwrap().unwrap())[1].as_deref(), Some(REDACTED));
    }

    #[test]
    fn laplace_noise_has_the_declared_scale() {
        let p = protector();
        let mut m = Masker::new(&p).unwrap();
        let n = 200_000;
        let xs: ArrayRef = Arc::new(Float64Array::from(vec![0.0; n]));
        let out = m.apply(&Mask::Noise { scale: 2.0, distribution: "laplace".into() }, &xs).unwrap().unwrap();
        let f = out.as_any().downcast_ref::<Float64Array>().unwrap();
        // E|X| = b for Laplace(0, b).
        let mean_abs = f.iter().flatten().map(f64::abs).sum::<f64>() / n as f64;
        assert!((mean_abs - 2.0).abs() < 0.05, "{mean_abs}");
    }
}

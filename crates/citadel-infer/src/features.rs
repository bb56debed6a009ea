//! Operators that turn raw named features into numbers inside a graph, so a
//! served model takes the columns a caller has (strings as `BYTES`) and the
//! encoding cannot drift from training:
//!
//! - ONNX-ML `LabelEncoder` (opset 1 `classes_strings`; opset 2
//!   `keys_*`/`values_*`/`default_*`): a lookup table, unknown keys take the
//!   default (`-1`, `"_Unused"`, `-0.0` by the specification);
//! - ONNX-ML `Imputer`: replaces a sentinel (NaN by default for floats) by a
//!   per-column value;
//! - ONNX-ML `OneHotEncoder`: strings or integers to indicator columns
//!   (`zeros = 1`: an unknown value is all zeros; `zeros = 0`: an error);
//! - ONNX `Gather` and `Equal`, which the built-in linear model's one-hot
//!   block uses.
//!
//! Semantics follow the ONNX operator specification and were checked against
//! onnxruntime (`citadel-ml/tests/onnxruntime_exports.rs`).

use std::collections::HashMap;

use crate::InferError;
use crate::graph::{Attrs, Pairing, broadcast_shape, norm_axis};
use crate::tensor::{DType, Data, Tensor, element_count};

/// The keys of a lookup table.
#[derive(Debug)]
enum Keys {
    Str(HashMap<String, usize>),
    I64(HashMap<i64, usize>),
    /// Floats by bit pattern (NaN keys never match, as in onnxruntime).
    F32(HashMap<u32, usize>),
}

#[derive(Debug)]
enum Values {
    Str(Vec<String>, String),
    I64(Vec<i64>, i64),
    F32(Vec<f32>, f32),
}

/// A compiled `LabelEncoder`.
#[derive(Debug)]
pub struct LabelEncoder {
    keys: Keys,
    values: Values,
    /// Opset 1: integers map back to their class (the default string when out of range).
    reverse: Option<(Vec<String>, String)>,
}

fn index<K: std::hash::Hash + Eq>(keys: impl Iterator<Item = K>) -> HashMap<K, usize> {
    let mut map = HashMap::new();
    for (i, k) in keys.enumerate() {
        // The first of duplicate keys wins, as a scan would find it.
        map.entry(k).or_insert(i);
    }
    map
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

impl LabelEncoder {
    pub(crate) fn compile(a: &Attrs<'_>) -> Result<LabelEncoder, InferError> {
        if a.has("keys_tensor") || a.has("values_tensor") {
            return Err(InferError::Unsupported("LabelEncoder with tensor keys (opset 4)".into()));
        }
        // Opset 1: one class list; strings map to their index, integers to their class.
        if let Ok(classes) = a.strings("classes_strings") {
            let classes: Vec<String> = classes.iter().map(|c| text(c)).collect();
            let n = classes.len() as i64;
            return Ok(LabelEncoder {
                keys: Keys::Str(index(classes.iter().cloned())),
                values: Values::I64((0..n).collect(), a.int_or("default_int64", -1)),
                reverse: Some((classes, a.string_or("default_string", "_Unused"))),
            });
        }
        let (keys, nk) = if let Ok(k) = a.strings("keys_strings") {
            (Keys::Str(index(k.iter().map(|s| text(s)))), k.len())
        } else if let Ok(k) = a.ints("keys_int64s") {
            (Keys::I64(index(k.iter().copied())), k.len())
        } else if a.has("keys_floats") {
            let k = a.floats_or_empty("keys_floats");
            (Keys::F32(index(k.iter().map(|&f| float_key(f)))), k.len())
        } else {
            return Err(InferError::Model("LabelEncoder: no keys (keys_strings, keys_int64s or keys_floats)".into()));
        };
        let values = if let Ok(v) = a.strings("values_strings") {
            Values::Str(v.iter().map(|s| text(s)).collect(), a.string_or("default_string", "_Unused"))
        } else if let Ok(v) = a.ints("values_int64s") {
            Values::I64(v.to_vec(), a.int_or("default_int64", -1))
        } else if a.has("values_floats") {
            Values::F32(a.floats_or_empty("values_floats").to_vec(), a.float_or("default_float", -0.0))
        } else {
            return Err(InferError::Model("LabelEncoder: no values".into()));
        };
        // The declared lists must pair up one to one (duplicate keys count: the first wins).
        let nv = values.len();
        if nk != nv {
            return Err(InferError::Model(format!("LabelEncoder: {nk} keys but {nv} values")));
        }
        Ok(LabelEncoder { keys, values, reverse: None })
    }

    pub(crate) fn run(&self, x: &Tensor) -> Result<Tensor, InferError> {
        if let Some((classes, default)) = &self.reverse
            && matches!(x.dtype(), DType::I64 | DType::I32)
        {
            let pick = |i: i64| usize::try_from(i).ok().and_then(|i| classes.get(i)).unwrap_or(default).clone();
            return Ok(Tensor { shape: x.shape.clone(), data: Data::Str(x.to_i64()?.into_iter().map(pick).collect()) });
        }
        let found: Vec<Option<usize>> = match (&self.keys, &x.data) {
            (Keys::Str(m), Data::Str(v)) => v.iter().map(|s| m.get(s.as_str()).copied()).collect(),
            (Keys::I64(m), Data::I64(v)) => v.iter().map(|k| m.get(k).copied()).collect(),
            (Keys::I64(m), Data::I32(v)) => v.iter().map(|k| m.get(&i64::from(*k)).copied()).collect(),
            (Keys::F32(m), Data::F32(v)) => v.iter().map(|&k| m.get(&float_key(k)).copied()).collect(),
            (_, other) => {
                return Err(InferError::Input(format!("LabelEncoder: input of type {}", other.dtype().v2_name())));
            }
        };
        let data = match &self.values {
            Values::Str(v, d) => {
                Data::Str(found.iter().map(|i| i.and_then(|i| v.get(i)).unwrap_or(d).clone()).collect())
            }
            Values::I64(v, d) => Data::I64(found.iter().map(|i| *i.and_then(|i| v.get(i)).unwrap_or(d)).collect()),
            Values::F32(v, d) => Data::F32(found.iter().map(|i| *i.and_then(|i| v.get(i)).unwrap_or(d)).collect()),
        };
        Ok(Tensor { shape: x.shape.clone(), data })
    }
}

/// A float key compared by value: `-0.0` is `0.0`; NaN matches nothing (a NaN bit pattern no lookup produces).
fn float_key(f: f32) -> u32 {
    if f == 0.0 {
        0
    } else if f.is_nan() {
        u32::MAX
    } else {
        f.to_bits()
    }
}

impl Values {
    fn len(&self) -> usize {
        match self {
            Values::Str(v, _) => v.len(),
            Values::I64(v, _) => v.len(),
            Values::F32(v, _) => v.len(),
        }
    }
}

/// A compiled `Imputer`: values equal to `replaced` (NaN matches NaN) become
/// the column's imputed value.
#[derive(Debug)]
pub struct Imputer {
    floats: Vec<f32>,
    replaced_float: f32,
    ints: Vec<i64>,
    replaced_int: i64,
}

impl Imputer {
    pub(crate) fn compile(a: &Attrs<'_>) -> Result<Imputer, InferError> {
        let floats = a.floats_or_empty("imputed_value_floats").to_vec();
        let ints = a.ints_or_empty("imputed_value_int64s").to_vec();
        if floats.is_empty() == ints.is_empty() {
            return Err(InferError::Model(
                "Imputer: exactly one of imputed_value_floats and imputed_value_int64s".into(),
            ));
        }
        Ok(Imputer {
            floats,
            replaced_float: a.float_or("replaced_value_float", 0.0),
            ints,
            replaced_int: a.int_or("replaced_value_int64", 0),
        })
    }

    pub(crate) fn run(&self, x: &Tensor) -> Result<Tensor, InferError> {
        let cols = *x.shape.last().unwrap_or(&1);
        let pick = |list_len: usize, j: usize| if list_len == 1 { 0 } else { j };
        let data =
            match &x.data {
                Data::F32(v) if !self.floats.is_empty() => {
                    check_width(self.floats.len(), cols)?;
                    let nan = self.replaced_float.is_nan();
                    Data::F32(
                        v.iter()
                            .enumerate()
                            .map(|(i, &x)| {
                                let hit = if nan { x.is_nan() } else { x == self.replaced_float };
                                if hit { self.floats[pick(self.floats.len(), i % cols.max(1))] } else { x }
                            })
                            .collect(),
                    )
                }
                Data::I64(v) if !self.ints.is_empty() => {
                    check_width(self.ints.len(), cols)?;
                    Data::I64(
                        v.iter()
                            .enumerate()
                            .map(|(i, &x)| {
                                if x == self.replaced_int {
                                    self.ints[pick(self.ints.len(), i % cols.max(1))]
                                } else {
                                    x
                                }
                            })
                            .collect(),
                    )
                }
                Data::F64(v) if !self.floats.is_empty() => {
                    check_width(self.floats.len(), cols)?;
                    let (nan, r) = (self.replaced_float.is_nan(), f64::from(self.replaced_float));
                    Data::F64(
                        v.iter()
                            .enumerate()
                            .map(|(i, &x)| {
                                let hit = if nan { x.is_nan() } else { x == r };
                                if hit { f64::from(self.floats[pick(self.floats.len(), i % cols.max(1))]) } else { x }
                            })
                            .collect(),
                    )
                }
                Data::I32(v) if !self.ints.is_empty() => {
                    check_width(self.ints.len(), cols)?;
                    Data::I32(
                        v.iter()
                            .enumerate()
                            .map(|(i, &x)| {
                                if i64::from(x) == self.replaced_int {
                                    i32::try_from(self.ints[pick(self.ints.len(), i % cols.max(1))]).unwrap_or(x)
                                } else {
                                    x
                                }
                            })
                            .collect(),
                    )
                }
                other => {
                    return Err(InferError::Model(format!(
                        "Imputer: its imputed values do not fit an input of type {}",
                        other.dtype().v2_name()
                    )));
                }
            };
        Ok(Tensor { shape: x.shape.clone(), data })
    }
}

fn check_width(values: usize, cols: usize) -> Result<(), InferError> {
    if values != 1 && values != cols {
        return Err(InferError::Input(format!("Imputer: {values} imputed values for {cols} columns")));
    }
    Ok(())
}

/// A compiled `OneHotEncoder`.
#[derive(Debug)]
pub struct OneHot {
    keys: Keys,
    width: usize,
    /// Unknown values give all zeros (`true`) or an error.
    zeros: bool,
}

impl OneHot {
    pub(crate) fn compile(a: &Attrs<'_>) -> Result<OneHot, InferError> {
        let keys = if let Ok(k) = a.strings("cats_strings") {
            Keys::Str(index(k.iter().map(|s| text(s))))
        } else if let Ok(k) = a.ints("cats_int64s") {
            Keys::I64(index(k.iter().copied()))
        } else {
            return Err(InferError::Model("OneHotEncoder: no categories".into()));
        };
        let width = match (a.strings("cats_strings"), a.ints("cats_int64s")) {
            (Ok(s), _) => s.len(),
            (_, Ok(i)) => i.len(),
            _ => 0,
        };
        Ok(OneHot { keys, width, zeros: a.int_or("zeros", 1) != 0 })
    }

    pub(crate) fn run(&self, x: &Tensor) -> Result<Tensor, InferError> {
        let found: Vec<Option<usize>> = match (&self.keys, &x.data) {
            (Keys::Str(m), Data::Str(v)) => v.iter().map(|s| m.get(s.as_str()).copied()).collect(),
            (Keys::I64(m), Data::I64(v)) => v.iter().map(|k| m.get(k).copied()).collect(),
            (Keys::I64(m), Data::I32(v)) => v.iter().map(|k| m.get(&i64::from(*k)).copied()).collect(),
            // A float matches an integer category only when it is that integer (NaN never).
            (Keys::I64(m), Data::F32(v)) => {
                v.iter().map(|&k| (k.fract() == 0.0).then(|| m.get(&(k as i64)).copied()).flatten()).collect()
            }
            (Keys::I64(m), Data::F64(v)) => {
                v.iter().map(|&k| (k.fract() == 0.0).then(|| m.get(&(k as i64)).copied()).flatten()).collect()
            }
            (_, other) => {
                return Err(InferError::Input(format!("OneHotEncoder: input of type {}", other.dtype().v2_name())));
            }
        };
        let mut shape = x.shape.clone();
        shape.push(self.width);
        let mut out = vec![0f32; element_count(&shape)?];
        for (i, f) in found.iter().enumerate() {
            match f {
                Some(k) => out[i * self.width + k] = 1.0,
                None if self.zeros => {}
                None => return Err(InferError::Input("OneHotEncoder: a value is not among the categories".into())),
            }
        }
        Ok(Tensor { shape, data: Data::F32(out) })
    }
}

/// ONNX `Gather`: takes `indices` (negative counts from the end) along `axis`.
pub(crate) fn gather(x: &Tensor, indices: &Tensor, axis: i64) -> Result<Tensor, InferError> {
    let axis = norm_axis(axis, x.shape.len())?;
    let n = x.shape[axis];
    if !matches!(indices.dtype(), DType::I64 | DType::I32) {
        return Err(InferError::Model(format!(
            "Gather: indices must be INT32 or INT64, not {}",
            indices.dtype().v2_name()
        )));
    }
    let idx: Vec<usize> = indices
        .to_i64()?
        .into_iter()
        .map(|i| {
            let j = if i < 0 { i + n as i64 } else { i };
            usize::try_from(j)
                .ok()
                .filter(|&j| j < n)
                .ok_or_else(|| InferError::Input(format!("Gather: index {i} outside 0..{n}")))
        })
        .collect::<Result<_, _>>()?;
    let outer = element_count(&x.shape[..axis])?;
    let inner = element_count(&x.shape[axis + 1..])?;
    let mut shape = x.shape[..axis].to_vec();
    shape.extend_from_slice(&indices.shape);
    shape.extend_from_slice(&x.shape[axis + 1..]);
    element_count(&shape)?;
    macro_rules! take {
        ($variant:ident, $v:expr) => {{
            let mut out = Vec::with_capacity(outer * idx.len() * inner);
            for o in 0..outer {
                for &j in &idx {
                    let start = (o * n + j) * inner;
                    out.extend_from_slice(&$v[start..start + inner]);
                }
            }
            Data::$variant(out)
        }};
    }
    let data = match &x.data {
        Data::F32(v) => take!(F32, v),
        Data::F64(v) => take!(F64, v),
        Data::I32(v) => take!(I32, v),
        Data::I64(v) => take!(I64, v),
        Data::Bool(v) => take!(Bool, v),
        Data::Str(v) => take!(Str, v),
    };
    Ok(Tensor { shape, data })
}

/// ONNX `Equal` with numpy broadcasting; both operands have one type.
pub(crate) fn equal(a: &Tensor, b: &Tensor) -> Result<Tensor, InferError> {
    let shape = broadcast_shape(&a.shape, &b.shape)?;
    element_count(&shape)?;
    let p = Pairing::of(&a.shape, &b.shape, &shape);
    fn go<T: PartialEq>(x: &[T], y: &[T], p: &Pairing) -> Vec<bool> {
        p.map(x, y, |a, b| a == b)
    }
    let out = match (&a.data, &b.data) {
        (Data::F32(x), Data::F32(y)) => go(x, y, &p),
        (Data::F64(x), Data::F64(y)) => go(x, y, &p),
        (Data::I32(x), Data::I32(y)) => go(x, y, &p),
        (Data::I64(x), Data::I64(y)) => go(x, y, &p),
        (Data::Bool(x), Data::Bool(y)) => go(x, y, &p),
        (Data::Str(x), Data::Str(y)) => go(x, y, &p),
        _ => return Err(InferError::Input(format!("Equal of {} and {}", a.dtype().v2_name(), b.dtype().v2_name()))),
    };
    Ok(Tensor { shape, data: Data::Bool(out) })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::proto::AttributeProto;

    fn strings(name: &str, v: &[&str]) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            strings: v.iter().map(|s| s.as_bytes().to_vec()).collect(),
            r#type: 8,
            ..Default::default()
        }
    }
    fn floats(name: &str, v: &[f32]) -> AttributeProto {
        AttributeProto { name: name.into(), floats: v.to_vec(), r#type: 6, ..Default::default() }
    }

    #[test]
    fn label_encoder_lists_must_pair_up_and_unknown_keys_take_the_default() {
        // Duplicate keys with one value fewer than keys: refused at load, never a panic at run time.
        let bad = [strings("keys_strings", &["a", "a", "b"]), floats("values_floats", &[1.0, 2.0])];
        assert!(LabelEncoder::compile(&Attrs::new("LabelEncoder", &bad)).is_err());
        let ok = [strings("keys_strings", &["a", "a", "b"]), floats("values_floats", &[1.0, 2.0, 3.0])];
        let e = LabelEncoder::compile(&Attrs::new("LabelEncoder", &ok)).unwrap();
        let x = Tensor::new(vec![4], Data::Str(vec!["a".into(), "b".into(), "zz".into(), String::new()])).unwrap();
        // The first of duplicate keys wins; unknown keys get the specification's default -0.0.
        let Data::F32(v) = e.run(&x).unwrap().data else { panic!() };
        assert_eq!(&v[..2], &[1.0, 3.0]);
        assert!(v[2] == 0.0 && v[2].is_sign_negative() && v[3] == 0.0);
    }

    #[test]
    fn float_keys_compare_by_value_and_nan_matches_nothing() {
        let attrs = [floats("keys_floats", &[0.0, 1.5]), strings("values_strings", &["zero", "one and a half"])];
        let e = LabelEncoder::compile(&Attrs::new("LabelEncoder", &attrs)).unwrap();
        let x = Tensor::new(vec![3], Data::F32(vec![-0.0, 1.5, f32::NAN])).unwrap();
        let Data::Str(v) = e.run(&x).unwrap().data else { panic!() };
        assert_eq!(v, ["zero", "one and a half", "_Unused"]);
    }

    #[test]
    fn gather_takes_negative_integer_indices_and_refuses_float_ones() {
        let x = Tensor::new(vec![2, 3], Data::F32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])).unwrap();
        let idx = Tensor::new(vec![2], Data::I64(vec![-1, 0])).unwrap();
        let g = gather(&x, &idx, 1).unwrap();
        assert_eq!((g.shape.clone(), g.data), (vec![2, 2], Data::F32(vec![3.0, 1.0, 6.0, 4.0])));
        assert!(gather(&x, &Tensor::new(vec![1], Data::F32(vec![0.0])).unwrap(), 1).is_err());
        assert!(gather(&x, &Tensor::new(vec![1], Data::I64(vec![3])).unwrap(), 1).is_err());
    }
}

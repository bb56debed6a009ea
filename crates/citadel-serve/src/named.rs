//! Requests in the caller's own terms: named raw features.
//!
//! A model exported with named inputs (the built-in trainers' exports, or
//! any ONNX graph with one `[N, 1]` input per column, as skl2onnx writes a
//! `ColumnTransformer`) is called with one input per feature. Three request
//! shapes reach it:
//!
//! - an Open Inference Protocol V2 body whose inputs are the columns (what
//!   MLServer's pandas codec, `"content_type": "pd"`, and KServe/Triton
//!   clients send); a column may have shape `[N]` or `[N, 1]`, and a numeric
//!   column may come as any V2 number type;
//! - a JSON array of records, `[{"age": 39, "workclass": "Private", …}, …]`;
//! - the single-tensor form, for models that declare it.
//!
//! Missing values: JSON `null` in a numeric column is NaN, which the graph
//! fills with the training median (accepted only for inputs the model
//! declares as imputed numeric features in its `citadel.inputs` metadata);
//! `null` in a `BYTES` column is the empty string, the graph's missing
//! category. A category training never saw is not an error: the graph gives
//! it the code training's encoder gives unknown categories (-1), and the
//! model's metadata lists the categories it knows.

use std::collections::HashMap;

use citadel_infer::{DType, Data, IoSpec, Model, Tensor};
use serde_json::{Map, Value};

use crate::v2::BadRequest;

fn bad(m: impl Into<String>) -> BadRequest {
    BadRequest(m.into())
}

/// Background rows an explanation uses at most (pipelines' exports carry 100).
pub const MAX_BACKGROUND: usize = 100;

/// What a loaded model says about its inputs and outputs beyond their types.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    /// Per input name: the `citadel.inputs` entry (kind, categories, range, fill).
    pub inputs: HashMap<String, Value>,
    /// Class names in probability-column order (`citadel.classes`).
    pub classes: Option<Vec<String>>,
    /// Training rows as feature codes (`citadel.background`: row-major, and
    /// the width), the background `/explain` explains against.
    pub background: Option<(Vec<f32>, usize)>,
}

impl Schema {
    /// Reads the model's metadata; metadata that does not parse is ignored
    /// (it only describes), but then no NaN is accepted (fail closed).
    pub fn of(model: &Model) -> Schema {
        let inputs = model
            .meta("citadel.inputs")
            .and_then(|j| serde_json::from_str::<Vec<Value>>(j).ok())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| Some((v.get("name")?.as_str()?.to_string(), v)))
            .collect();
        let classes = model
            .meta("citadel.classes")
            .and_then(|j| serde_json::from_str::<Vec<String>>(j).ok())
            .filter(|c| !c.is_empty());
        let background = model.meta("citadel.background").and_then(|j| {
            #[derive(serde::Deserialize)]
            struct Background {
                cols: usize,
                rows: Vec<Vec<f32>>,
            }
            let b: Background = serde_json::from_str(j).ok()?;
            let ok =
                b.cols > 0 && !b.rows.is_empty() && b.rows.iter().all(|r| r.len() == b.cols) && b.rows.len() <= 1000;
            ok.then(|| (b.rows.concat(), b.cols))
        });
        Schema { inputs, classes, background }
    }

    /// True when the graph fills a missing (NaN) value of `input`.
    pub fn imputes(&self, input: &str) -> bool {
        self.inputs.get(input).is_some_and(|v| v["kind"] == "numeric")
    }

    /// The metadata `parameters` of an input: kind, categories, range, fill.
    pub fn input_parameters(&self, input: &str) -> Option<Value> {
        let mut v = self.inputs.get(input)?.as_object()?.clone();
        v.remove("name");
        Some(Value::Object(v))
    }
}

/// True when every input is one column (`[N, 1]` or `[N]`), so the model can be called with records.
pub fn takes_columns(model: &Model) -> bool {
    model.inputs.iter().all(|i| matches!(i.shape.as_slice(), [None, Some(1)] | [None]))
}

/// Decodes a JSON array of records into one tensor per declared input.
/// Every record must hold every input and nothing else.
pub fn decode_records(body: &[u8], model: &Model, max_elements: usize) -> Result<Vec<(String, Tensor)>, BadRequest> {
    if !takes_columns(model) {
        return Err(bad(format!(
            "this model takes tensors ({}), not records — hint: send an Open Inference Protocol request with `inputs`",
            model
                .inputs
                .iter()
                .map(|i| format!("{} {}", i.name, citadel_infer::shape_text(&i.shape)))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let max_records = (max_elements / model.inputs.len().max(1)).max(1);
    let mut de = serde_json::Deserializer::from_slice(body);
    let records = serde::Deserializer::deserialize_seq(&mut de, RecordsVisitor { max: max_records })
        .and_then(|r| de.end().map(|()| r))
        .map_err(|e| bad(format!("the body is not a JSON array of records (objects of feature → value): {e}")))?;
    if records.is_empty() {
        return Err(bad("the body holds no records"));
    }
    for (i, r) in records.iter().enumerate() {
        if let Some(k) = r.keys().find(|k| !model.inputs.iter().any(|s| &s.name == *k)) {
            return Err(unknown_feature(k, i, model));
        }
    }
    let n = records.len();
    model
        .inputs
        .iter()
        .map(|spec| {
            let values: Vec<Scalar> = records
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    r.get(&spec.name).map(Scalar::of).ok_or_else(|| {
                        bad(format!(
                            "record {i} lacks feature {} ({}) — hint: send it, as null if the value is missing",
                            spec.name,
                            spec.dtype.v2_name()
                        ))
                    })
                })
                .collect::<Result<_, _>>()?;
            let data = column(&spec.name, spec.dtype, values, |i| format!("record {i}"))?;
            let shape = if spec.shape.len() == 2 { vec![n, 1] } else { vec![n] };
            Ok((spec.name.clone(), Tensor::new(shape, data).map_err(|e| bad(e.to_string()))?))
        })
        .collect()
}

/// A JSON array of objects, read without building more than `max` records
/// and refusing an object that names a feature twice (`{"age": 1, "age": 99}`
/// would otherwise mean whatever the last value says, and a proxy reading the
/// first would see other data).
struct RecordsVisitor {
    max: usize,
}

impl<'de> serde::de::Visitor<'de> for RecordsVisitor {
    type Value = Vec<Map<String, Value>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "an array of at most {} records", self.max)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(r) = seq.next_element_seed(RecordVisitor)? {
            if out.len() == self.max {
                return Err(serde::de::Error::custom(format!("more than {} records", self.max)));
            }
            out.push(r);
        }
        Ok(out)
    }
}

struct RecordVisitor;

impl<'de> serde::de::DeserializeSeed<'de> for RecordVisitor {
    type Value = Map<String, Value>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for RecordVisitor {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a record: an object of feature → value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Map::new();
        while let Some((k, v)) = map.next_entry::<String, Value>()? {
            if out.contains_key(&k) {
                return Err(serde::de::Error::custom(format!("feature {k:?} appears twice in one record")));
            }
            out.insert(k, v);
        }
        Ok(out)
    }
}

fn unknown_feature(k: &str, record: usize, model: &Model) -> BadRequest {
    bad(format!(
        "record {record}: the model has no feature {k:?} — hint: its features are {}",
        model.inputs.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
    ))
}

/// One element of a tensor's JSON data, as read: what [`column`] decodes.
/// Requests' `data` arrays are read straight into these (see
/// `v2::FlatData`), records' fields are converted from their JSON values.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Null,
    Bool(bool),
    Num(serde_json::Number),
    Str(String),
    /// An array or an object where an element belongs: refused by [`column`].
    Nested(&'static str),
}

impl Scalar {
    pub fn of(v: &Value) -> Scalar {
        match v {
            Value::Null => Scalar::Null,
            Value::Bool(b) => Scalar::Bool(*b),
            Value::Number(n) => Scalar::Num(n.clone()),
            Value::String(s) => Scalar::Str(s.clone()),
            Value::Array(_) => Scalar::Nested("an array"),
            Value::Object(_) => Scalar::Nested("an object"),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Scalar::Null => "null",
            Scalar::Bool(_) => "a boolean",
            Scalar::Num(_) => "a number",
            Scalar::Str(_) => "a string",
            Scalar::Nested(k) => k,
        }
    }
}

/// JSON values of one column as the input's type. `where_` names element `i` in messages.
pub fn column(
    name: &str,
    dtype: DType,
    values: Vec<Scalar>,
    where_: impl Fn(usize) -> String,
) -> Result<Data, BadRequest> {
    let number = |i: usize, v: &Scalar| -> Result<f64, BadRequest> {
        match v {
            Scalar::Num(x) => x.as_f64().ok_or_else(|| bad(format!("{}: {name} is out of range", where_(i)))),
            Scalar::Null => Ok(f64::NAN),
            Scalar::Str(_) => Err(bad(format!(
                "{}: {name} is a number, sent as a string — hint: send it as a JSON number",
                where_(i)
            ))),
            other => Err(bad(format!("{}: {name} must be a number, not {}", where_(i), other.kind()))),
        }
    };
    Ok(match dtype {
        DType::F32 => {
            Data::F32(values.iter().enumerate().map(|(i, v)| number(i, v).map(|x| x as f32)).collect::<Result<_, _>>()?)
        }
        DType::F64 => Data::F64(values.iter().enumerate().map(|(i, v)| number(i, v)).collect::<Result<_, _>>()?),
        DType::I64 | DType::I32 => {
            let ints: Vec<i64> = values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let int = if let Scalar::Num(x) = v { x.as_i64() } else { None };
                    int.ok_or_else(|| bad(format!("{}: {name} must be an integer, not {}", where_(i), v.kind())))
                })
                .collect::<Result<_, _>>()?;
            if dtype == DType::I64 {
                Data::I64(ints)
            } else {
                Data::I32(
                    ints.into_iter()
                        .map(|x| i32::try_from(x).map_err(|_| bad(format!("{name}: {x} does not fit INT32"))))
                        .collect::<Result<_, _>>()?,
                )
            }
        }
        DType::Bool => Data::Bool(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Scalar::Bool(b) => Ok(*b),
                    _ => Err(bad(format!("{}: {name} must be true or false", where_(i)))),
                })
                .collect::<Result<_, _>>()?,
        ),
        DType::Str => Data::Str(
            values
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Scalar::Str(s) => Ok(s),
                    Scalar::Null => Ok(String::new()),
                    other => Err(bad(format!(
                        "{}: {name} is a category; send it as a string, not {}",
                        where_(i),
                        other.kind()
                    ))),
                })
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// Brings a given column to the declared input where nothing can be lost
/// in meaning: `[N]` to `[N, 1]`, and any V2 number type to the declared
/// float type (pandas sends integer columns as `INT64`) when every value
/// survives the conversion. Inputs that are not
/// one column (a tensor `X` `[N, F]`) must match their declaration exactly.
/// NaN passes only where the graph imputes it; infinities never.
pub fn conform(spec: &IoSpec, schema: &Schema, mut t: Tensor) -> Result<Tensor, BadRequest> {
    let is_column = matches!(spec.shape.as_slice(), [None, Some(1)] | [None]);
    if let ([None, Some(1)], [n]) = (spec.shape.as_slice(), t.shape.as_slice()) {
        t.shape = vec![*n, 1];
    }
    let numeric = |d: DType| matches!(d, DType::F32 | DType::F64 | DType::I32 | DType::I64);
    if is_column && spec.dtype != t.dtype() && matches!(spec.dtype, DType::F32 | DType::F64) && numeric(t.dtype()) {
        // Only conversions that keep the value: integers up to 2^24 (2^53 for
        // FP64) and FP64 values within FP32's range.
        let exact = match (&t.data, spec.dtype) {
            (Data::I64(v), DType::F32) => v.iter().position(|x| x.unsigned_abs() > 1 << 24),
            (Data::I32(v), DType::F32) => v.iter().position(|x| x.unsigned_abs() > 1 << 24),
            (Data::I64(v), DType::F64) => v.iter().position(|x| x.unsigned_abs() > 1 << 53),
            (Data::F64(v), DType::F32) => v.iter().position(|x| x.is_finite() && x.abs() > f64::from(f32::MAX)),
            _ => None,
        };
        if let Some(i) = exact {
            return Err(bad(format!(
                "input {}: element {i} does not fit {} without changing its value — hint: send it as {}",
                spec.name,
                spec.dtype.v2_name(),
                spec.dtype.v2_name()
            )));
        }
        let v = t.to_f32().map_err(|e| bad(e.to_string()))?;
        t.data = match spec.dtype {
            DType::F64 => match &t.data {
                Data::I64(x) => Data::F64(x.iter().map(|&x| x as f64).collect()),
                Data::I32(x) => Data::F64(x.iter().map(|&x| f64::from(x)).collect()),
                _ => Data::F64(v.into_iter().map(f64::from).collect()),
            },
            _ => Data::F32(v),
        };
    }
    if spec.dtype != t.dtype() {
        let hint = match (spec.dtype, t.dtype()) {
            (DType::F32 | DType::F64, DType::Str) => " — a number sent as a string; send it as a number",
            (DType::Str, _) => " — a category; send it as a string (BYTES)",
            _ => "",
        };
        return Err(bad(format!(
            "input {} must be {}, got {}{hint}",
            spec.name,
            spec.dtype.v2_name(),
            t.dtype().v2_name()
        )));
    }
    let nan_ok = schema.imputes(&spec.name);
    let bad_at = match &t.data {
        Data::F32(v) => v.iter().position(|x| x.is_infinite() || (x.is_nan() && !nan_ok)),
        Data::F64(v) => v.iter().position(|x| x.is_infinite() || (x.is_nan() && !nan_ok)),
        _ => None,
    };
    if let Some(i) = bad_at {
        return Err(bad(if nan_ok {
            format!("input {}: element {i} is infinite; send finite numbers", spec.name)
        } else {
            format!("input {}: element {i} is NaN, null or infinite; send finite numbers", spec.name)
        }));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, dtype: DType) -> IoSpec {
        IoSpec { name: name.into(), dtype, shape: vec![None, Some(1)] }
    }

    #[test]
    fn columns_are_reshaped_and_numbers_widened_but_strings_never_become_numbers() {
        let schema = Schema::default();
        let t = Tensor::new(vec![2], Data::I64(vec![39, 50])).unwrap();
        let c = conform(&spec("age", DType::F32), &schema, t).unwrap();
        assert_eq!(c.shape, vec![2, 1]);
        assert_eq!(c.data, Data::F32(vec![39.0, 50.0]));
        let s = Tensor::new(vec![1, 1], Data::Str(vec!["39".into()])).unwrap();
        let e = conform(&spec("age", DType::F32), &schema, s).unwrap_err();
        assert!(e.0.contains("sent as a string"), "{}", e.0);
        let nan = Tensor::new(vec![1, 1], Data::F32(vec![f32::NAN])).unwrap();
        assert!(conform(&spec("age", DType::F32), &schema, nan.clone()).is_err(), "NaN only where imputed");
        let imputing = Schema {
            inputs: [("age".into(), serde_json::json!({"name": "age", "kind": "numeric"}))].into(),
            ..Default::default()
        };
        assert!(conform(&spec("age", DType::F32), &imputing, nan).is_ok());
        let inf = Tensor::new(vec![1, 1], Data::F32(vec![f32::INFINITY])).unwrap();
        assert!(conform(&spec("age", DType::F32), &imputing, inf).is_err());
    }

    #[test]
    fn a_category_must_be_a_string_and_null_is_the_missing_category() {
        let v = vec![Scalar::Str("Private".into()), Scalar::Null];
        assert_eq!(
            column("workclass", DType::Str, v, |i| format!("row {i}")).unwrap(),
            Data::Str(vec!["Private".into(), String::new()])
        );
        let n = vec![Scalar::of(&serde_json::json!(3))];
        let e = column("workclass", DType::Str, n, |i| format!("row {i}")).unwrap_err();
        assert!(e.0.contains("send it as a string"), "{}", e.0);
    }
}

//! Open Inference Protocol V2 bodies: JSON tensors and the binary tensor
//! data extension (`Inference-Header-Content-Length`), decoded with bounds
//! checked before anything is allocated.

use crate::named::Scalar;
use citadel_infer::{DType, Data, Tensor, element_count};
use serde::Deserialize;
use serde_json::{Map, Value};

/// A request the gateway refuses, with the status and a message for the caller.
#[derive(Debug)]
pub struct BadRequest(pub String);

fn bad(m: impl Into<String>) -> BadRequest {
    BadRequest(m.into())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputJson {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default)]
    data: Option<FlatData>,
}

/// An input's `data`, flat (`[1, 2, 3, 4]`) or nested (`[[1, 2], [3, 4]]`),
/// read straight into its elements in row-major order: no JSON tree is
/// built for it. Serde's recursion limit bounds the nesting.
#[derive(Debug, Default)]
struct FlatData(Vec<Scalar>);

impl<'de> Deserialize<'de> for FlatData {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<FlatData, D::Error> {
        let mut out = Vec::new();
        d.deserialize_any(Append(&mut out))?;
        Ok(FlatData(out))
    }
}

/// Appends the elements of one JSON value to the flat list.
struct Append<'a>(&'a mut Vec<Scalar>);

impl<'de> serde::de::DeserializeSeed<'de> for Append<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Append<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("tensor data: values or arrays of them")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Append(&mut *self.0))?.is_some() {}
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
        self.0.push(Scalar::Nested("an object"));
        Ok(())
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.0.push(Scalar::Bool(v));
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.0.push(Scalar::Num(v.into()));
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.0.push(Scalar::Num(v.into()));
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.0.push(serde_json::Number::from_f64(v).map_or(Scalar::Null, Scalar::Num));
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.push(Scalar::Str(v.to_string()));
        Ok(())
    }
    fn visit_string<E>(self, v: String) -> Result<(), E> {
        self.0.push(Scalar::Str(v));
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.push(Scalar::Null);
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        self.0.push(Scalar::Null);
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputJson {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestJson {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    inputs: Vec<InputJson>,
    #[serde(default)]
    outputs: Option<Vec<OutputJson>>,
}

/// A decoded infer request.
#[derive(Debug)]
pub struct InferRequest {
    pub id: Option<String>,
    /// Inputs by name, in request order.
    pub inputs: Vec<(String, Tensor)>,
    /// Requested outputs (None: all) and whether each wants binary data.
    pub outputs: Option<Vec<(String, bool)>>,
    /// Request-level `binary_data_output`.
    pub binary_output: bool,
}

/// Decodes a request body. `header_len` is `Inference-Header-Content-Length` when present.
pub fn decode(body: &[u8], header_len: Option<usize>, max_elements: usize) -> Result<InferRequest, BadRequest> {
    let (json_part, mut binary) = match header_len {
        Some(n) if n <= body.len() => (&body[..n], &body[n..]),
        Some(n) => {
            return Err(bad(format!("Inference-Header-Content-Length {n} exceeds the body ({} bytes)", body.len())));
        }
        None => (body, &[][..]),
    };
    let req: RequestJson =
        serde_json::from_slice(json_part).map_err(|e| bad(format!("the request is not a V2 infer request: {e}")))?;
    if req.inputs.is_empty() {
        return Err(bad("the request has no inputs"));
    }
    let mut total = 0usize;
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for input in req.inputs {
        let dtype = DType::from_v2_name(&input.datatype).ok_or_else(|| {
            bad(format!(
                "input {}: datatype {} is not served (FP32, FP64, INT32, INT64, BOOL, BYTES)",
                input.name, input.datatype
            ))
        })?;
        let shape: Vec<usize> = input
            .shape
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| bad(format!("input {}: negative dimension in shape", input.name))))
            .collect::<Result<_, _>>()?;
        let n = element_count(&shape).map_err(|_| bad(format!("input {}: shape overflows", input.name)))?;
        total = total.saturating_add(n);
        if total > max_elements {
            return Err(bad(format!("the request holds more than {max_elements} tensor elements")));
        }
        let binary_size = input
            .parameters
            .as_ref()
            .and_then(|p| p.get("binary_data_size"))
            .map(|v| {
                v.as_u64().ok_or_else(|| bad(format!("input {}: binary_data_size must be an integer", input.name)))
            })
            .transpose()?;
        let data = match (binary_size, input.data) {
            (Some(_), Some(_)) => return Err(bad(format!("input {} has both data and binary_data_size", input.name))),
            (Some(size), None) => {
                let size = usize::try_from(size).map_err(|_| bad("binary_data_size too large"))?;
                if size > binary.len() {
                    return Err(bad(format!(
                        "input {}: binary_data_size {size} exceeds the remaining body",
                        input.name
                    )));
                }
                let (chunk, rest) = binary.split_at(size);
                binary = rest;
                from_binary(&input.name, dtype, n, chunk)?
            }
            (None, Some(v)) => from_json(&input.name, dtype, n, v)?,
            (None, None) => return Err(bad(format!("input {} has no data", input.name))),
        };
        let t = Tensor::new(shape, data).map_err(|e| bad(format!("input {}: {e}", input.name)))?;
        inputs.push((input.name, t));
    }
    if !binary.is_empty() {
        return Err(bad(format!("{} binary bytes are not claimed by any input", binary.len())));
    }
    let flag = |p: &Option<Map<String, Value>>, key: &str| p.as_ref().and_then(|p| p.get(key)).and_then(Value::as_bool);
    let binary_output = flag(&req.parameters, "binary_data_output").unwrap_or(false);
    let outputs = req.outputs.map(|o| {
        o.into_iter().map(|o| (o.name, flag(&o.parameters, "binary_data").unwrap_or(binary_output))).collect()
    });
    Ok(InferRequest { id: req.id, inputs, outputs, binary_output })
}

fn from_json(name: &str, dtype: DType, n: usize, data: FlatData) -> Result<Data, BadRequest> {
    let flat = data.0;
    if flat.len() > n {
        return Err(bad("data holds more elements than its shape"));
    }
    if flat.len() != n {
        return Err(bad(format!("input {name}: shape holds {n} elements, data has {}", flat.len())));
    }
    // One decoder for JSON values, shared with records: null is a missing
    // number (NaN, accepted only where the model fills it) or the missing
    // category (the empty string).
    crate::named::column(name, dtype, flat, |i| format!("input {name}: element {i}"))
}

pub(crate) fn from_binary(name: &str, dtype: DType, n: usize, b: &[u8]) -> Result<Data, BadRequest> {
    if let Some(w) = dtype.width()
        && b.len() != n * w
    {
        return Err(bad(format!("input {name}: {} binary bytes for {n} {} elements", b.len(), dtype.v2_name())));
    }
    Ok(match dtype {
        DType::F32 => Data::F32(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
        DType::F64 => Data::F64(
            b.chunks_exact(8).map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect(),
        ),
        DType::I32 => Data::I32(b.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
        DType::I64 => Data::I64(
            b.chunks_exact(8).map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect(),
        ),
        DType::Bool => Data::Bool(b.iter().map(|&x| x != 0).collect()),
        DType::Str => {
            let mut out = Vec::with_capacity(n.min(1 << 16));
            let mut rest = b;
            while rest.len() >= 4 {
                let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                rest = &rest[4..];
                if len > rest.len() {
                    return Err(bad(format!("input {name}: a BYTES element runs past its buffer")));
                }
                out.push(
                    String::from_utf8(rest[..len].to_vec())
                        .map_err(|_| bad(format!("input {name}: BYTES element is not UTF-8")))?,
                );
                rest = &rest[len..];
            }
            if !rest.is_empty() || out.len() != n {
                return Err(bad(format!("input {name}: BYTES buffer holds {} elements, shape {n}", out.len())));
            }
            Data::Str(out)
        }
    })
}

pub(crate) fn binary_data(t: &Tensor) -> Vec<u8> {
    let mut out = Vec::new();
    match &t.data {
        Data::F32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Data::F64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Data::I32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Data::I64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Data::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        Data::Str(v) => v.iter().for_each(|s| {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }),
    }
    out
}

#[derive(serde::Serialize)]
#[serde(untagged)]
pub(crate) enum DataRef<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
    I32(&'a [i32]),
    I64(&'a [i64]),
    Bool(&'a [bool]),
    Str(&'a [String]),
}

impl<'a> DataRef<'a> {
    pub(crate) fn of(t: &'a Tensor) -> DataRef<'a> {
        match &t.data {
            Data::F32(v) => DataRef::F32(v),
            Data::F64(v) => DataRef::F64(v),
            Data::I32(v) => DataRef::I32(v),
            Data::I64(v) => DataRef::I64(v),
            Data::Bool(v) => DataRef::Bool(v),
            Data::Str(v) => DataRef::Str(v),
        }
    }
}

#[derive(serde::Serialize)]
struct OutputParameters<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    binary_data_size: Option<usize>,
    /// Class names, in the order of a probability tensor's columns.
    #[serde(skip_serializing_if = "Option::is_none")]
    classes: Option<&'a [String]>,
}

/// One output of a response.
#[derive(Debug)]
pub struct Output<'a> {
    pub name: &'a str,
    pub tensor: &'a Tensor,
    /// Sent as binary data after the JSON header.
    pub binary: bool,
    pub classes: Option<&'a [String]>,
}

#[derive(serde::Serialize)]
struct OutputTensor<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<OutputParameters<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<DataRef<'a>>,
}

#[derive(serde::Serialize)]
struct ResponseHead<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: Vec<OutputTensor<'a>>,
}

/// Encodes a response: JSON, or JSON header + binary buffers when any output asked for binary.
/// Returns the body and the JSON header length when binary.
pub fn encode(model: &str, version: &str, id: Option<&str>, outputs: &[Output<'_>]) -> (Vec<u8>, Option<usize>) {
    let mut buffers = Vec::new();
    let items = outputs
        .iter()
        .map(|o| {
            let t = o.tensor;
            let (size, data) = if o.binary {
                let b = binary_data(t);
                let n = b.len();
                buffers.push(b);
                (Some(n), None)
            } else {
                (None, Some(DataRef::of(t)))
            };
            let parameters = (size.is_some() || o.classes.is_some())
                .then_some(OutputParameters { binary_data_size: size, classes: o.classes });
            OutputTensor { name: o.name, datatype: t.dtype().v2_name(), shape: &t.shape, parameters, data }
        })
        .collect();
    let head = ResponseHead { model_name: model, model_version: version, id, outputs: items };
    let mut body = serde_json::to_vec(&head).unwrap_or_default();
    if buffers.is_empty() {
        return (body, None);
    }
    let n = body.len();
    for b in buffers {
        body.extend_from_slice(&b);
    }
    (body, Some(n))
}

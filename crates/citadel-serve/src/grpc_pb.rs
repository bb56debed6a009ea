//! The messages of the Open Inference Protocol's gRPC service
//! (`inference.GRPCInferenceService`, KServe `grpc_predict_v2.proto`, the
//! same field numbers as Triton's `grpc_service.proto`; checked against
//! `tritonclient.grpc.service_pb2` in the tests), written as prost structs
//! so no protoc runs at build time, and their decoding into the gateway's
//! [`InferRequest`](crate::v2::InferRequest) with the REST path's bounds.

#![allow(missing_docs)]

use std::collections::HashMap;

use citadel_infer::{DType, Data, Tensor, element_count};

use crate::v2::{BadRequest, InferRequest};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Empty {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerLiveResponse {
    #[prost(bool, tag = "1")]
    pub live: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerReadyResponse {
    #[prost(bool, tag = "1")]
    pub ready: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelRef {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelReadyResponse {
    #[prost(bool, tag = "1")]
    pub ready: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerMetadataResponse {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub version: String,
    #[prost(string, repeated, tag = "3")]
    pub extensions: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorMetadata {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub datatype: String,
    #[prost(int64, repeated, tag = "3")]
    pub shape: Vec<i64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelMetadataResponse {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, repeated, tag = "2")]
    pub versions: Vec<String>,
    #[prost(string, tag = "3")]
    pub platform: String,
    #[prost(message, repeated, tag = "4")]
    pub inputs: Vec<TensorMetadata>,
    #[prost(message, repeated, tag = "5")]
    pub outputs: Vec<TensorMetadata>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ParameterChoice {
    #[prost(bool, tag = "1")]
    BoolParam(bool),
    #[prost(int64, tag = "2")]
    Int64Param(i64),
    #[prost(string, tag = "3")]
    StringParam(String),
    #[prost(double, tag = "4")]
    DoubleParam(f64),
    #[prost(uint64, tag = "5")]
    Uint64Param(u64),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct InferParameter {
    #[prost(oneof = "ParameterChoice", tags = "1, 2, 3, 4, 5")]
    pub parameter_choice: Option<ParameterChoice>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct InferTensorContents {
    #[prost(bool, repeated, tag = "1")]
    pub bool_contents: Vec<bool>,
    #[prost(int32, repeated, tag = "2")]
    pub int_contents: Vec<i32>,
    #[prost(int64, repeated, tag = "3")]
    pub int64_contents: Vec<i64>,
    #[prost(uint32, repeated, tag = "4")]
    pub uint_contents: Vec<u32>,
    #[prost(uint64, repeated, tag = "5")]
    pub uint64_contents: Vec<u64>,
    #[prost(float, repeated, tag = "6")]
    pub fp32_contents: Vec<f32>,
    #[prost(double, repeated, tag = "7")]
    pub fp64_contents: Vec<f64>,
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub bytes_contents: Vec<Vec<u8>>,
}

/// A tensor of a request or a response (the two messages have the same fields and numbers).
pub type InferInputTensor = InferTensor;
pub type InferOutputTensor = InferTensor;

#[derive(Clone, PartialEq, prost::Message)]
pub struct InferTensor {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub datatype: String,
    #[prost(int64, repeated, tag = "3")]
    pub shape: Vec<i64>,
    #[prost(map = "string, message", tag = "4")]
    pub parameters: HashMap<String, InferParameter>,
    #[prost(message, optional, tag = "5")]
    pub contents: Option<InferTensorContents>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct InferRequestedOutputTensor {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(map = "string, message", tag = "2")]
    pub parameters: HashMap<String, InferParameter>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelInferRequest {
    #[prost(string, tag = "1")]
    pub model_name: String,
    #[prost(string, tag = "2")]
    pub model_version: String,
    #[prost(string, tag = "3")]
    pub id: String,
    #[prost(map = "string, message", tag = "4")]
    pub parameters: HashMap<String, InferParameter>,
    #[prost(message, repeated, tag = "5")]
    pub inputs: Vec<InferInputTensor>,
    #[prost(message, repeated, tag = "6")]
    pub outputs: Vec<InferRequestedOutputTensor>,
    #[prost(bytes = "vec", repeated, tag = "7")]
    pub raw_input_contents: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelInferResponse {
    #[prost(string, tag = "1")]
    pub model_name: String,
    #[prost(string, tag = "2")]
    pub model_version: String,
    #[prost(string, tag = "3")]
    pub id: String,
    #[prost(map = "string, message", tag = "4")]
    pub parameters: HashMap<String, InferParameter>,
    #[prost(message, repeated, tag = "5")]
    pub outputs: Vec<InferOutputTensor>,
    #[prost(bytes = "vec", repeated, tag = "6")]
    pub raw_output_contents: Vec<Vec<u8>>,
}

fn bad(m: impl Into<String>) -> BadRequest {
    BadRequest(m.into())
}

/// A decoded gRPC request as the gateway's request, bounded like the REST
/// path: at most `max_elements` tensor elements in all; each input's data
/// either in `raw_input_contents` (one buffer per input, the binary tensor
/// layout: little-endian numbers, `BYTES` as 4-byte length + bytes) or in
/// its typed `contents`, never both; `BYTES` must be UTF-8.
pub fn decode_infer(msg: ModelInferRequest, max_elements: usize) -> Result<InferRequest, BadRequest> {
    if msg.inputs.is_empty() {
        return Err(bad("the request has no inputs"));
    }
    if !msg.raw_input_contents.is_empty() && msg.raw_input_contents.len() != msg.inputs.len() {
        return Err(bad(format!(
            "raw_input_contents holds {} buffers for {} inputs",
            msg.raw_input_contents.len(),
            msg.inputs.len()
        )));
    }
    let mut raw = msg.raw_input_contents.into_iter();
    let mut total = 0usize;
    let mut inputs = Vec::with_capacity(msg.inputs.len());
    for input in msg.inputs {
        let name = input.name;
        let dtype = DType::from_v2_name(&input.datatype).ok_or_else(|| {
            bad(format!(
                "input {name}: datatype {} is not served (FP32, FP64, INT32, INT64, BOOL, BYTES)",
                input.datatype
            ))
        })?;
        let shape: Vec<usize> = input
            .shape
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| bad(format!("input {name}: negative dimension in shape"))))
            .collect::<Result<_, _>>()?;
        let n = element_count(&shape).map_err(|_| bad(format!("input {name}: shape overflows")))?;
        total = total.saturating_add(n);
        if total > max_elements {
            return Err(bad(format!("the request holds more than {max_elements} tensor elements")));
        }
        let data = match (raw.next(), input.contents) {
            (Some(_), Some(_)) => return Err(bad(format!("input {name} has both contents and raw_input_contents"))),
            (Some(buf), None) => crate::v2::from_binary(&name, dtype, n, &buf)?,
            (None, Some(c)) => from_contents(&name, dtype, n, c)?,
            (None, None) => return Err(bad(format!("input {name} has no data"))),
        };
        let t = Tensor::new(shape, data).map_err(|e| bad(format!("input {name}: {e}")))?;
        inputs.push((name, t));
    }
    // gRPC answers always carry raw output buffers, as Triton's do.
    let outputs =
        (!msg.outputs.is_empty()).then(|| msg.outputs.into_iter().map(|o| (o.name, true)).collect::<Vec<_>>());
    Ok(InferRequest { id: (!msg.id.is_empty()).then_some(msg.id), inputs, outputs, binary_output: true })
}

fn from_contents(name: &str, dtype: DType, n: usize, c: InferTensorContents) -> Result<Data, BadRequest> {
    let count = |len: usize| {
        if len == n { Ok(()) } else { Err(bad(format!("input {name}: shape holds {n} elements, contents have {len}"))) }
    };
    Ok(match dtype {
        DType::F32 => {
            count(c.fp32_contents.len())?;
            Data::F32(c.fp32_contents)
        }
        DType::F64 => {
            count(c.fp64_contents.len())?;
            Data::F64(c.fp64_contents)
        }
        DType::I32 => {
            count(c.int_contents.len())?;
            Data::I32(c.int_contents)
        }
        DType::I64 => {
            count(c.int64_contents.len())?;
            Data::I64(c.int64_contents)
        }
        DType::Bool => {
            count(c.bool_contents.len())?;
            Data::Bool(c.bool_contents)
        }
        DType::Str => {
            count(c.bytes_contents.len())?;
            Data::Str(
                c.bytes_contents
                    .into_iter()
                    .map(|b| String::from_utf8(b).map_err(|_| bad(format!("input {name}: BYTES element is not UTF-8"))))
                    .collect::<Result<_, _>>()?,
            )
        }
    })
}

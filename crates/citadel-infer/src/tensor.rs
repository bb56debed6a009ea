//! Dense tensors: a shape and one typed buffer.

use crate::InferError;

/// Element types the runtime computes with (ONNX `TensorProto.DataType` numbers in brackets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F64,
    I32,
    I64,
    Bool,
    Str,
}

impl DType {
    pub fn from_onnx(code: i32) -> Option<DType> {
        Some(match code {
            1 => DType::F32,
            6 => DType::I32,
            7 => DType::I64,
            8 => DType::Str,
            9 => DType::Bool,
            11 => DType::F64,
            _ => return None,
        })
    }

    /// The Open Inference Protocol's name for the type.
    pub fn v2_name(self) -> &'static str {
        match self {
            DType::F32 => "FP32",
            DType::F64 => "FP64",
            DType::I32 => "INT32",
            DType::I64 => "INT64",
            DType::Bool => "BOOL",
            DType::Str => "BYTES",
        }
    }

    pub fn from_v2_name(name: &str) -> Option<DType> {
        Some(match name {
            "FP32" => DType::F32,
            "FP64" => DType::F64,
            "INT32" => DType::I32,
            "INT64" => DType::I64,
            "BOOL" => DType::Bool,
            "BYTES" => DType::Str,
            _ => return None,
        })
    }

    /// Bytes per element in the binary tensor encoding; strings have none.
    pub fn width(self) -> Option<usize> {
        match self {
            DType::F32 | DType::I32 => Some(4),
            DType::F64 | DType::I64 => Some(8),
            DType::Bool => Some(1),
            DType::Str => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
    Str(Vec<String>),
}

impl Data {
    pub fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::F64(v) => v.len(),
            Data::I32(v) => v.len(),
            Data::I64(v) => v.len(),
            Data::Bool(v) => v.len(),
            Data::Str(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> DType {
        match self {
            Data::F32(_) => DType::F32,
            Data::F64(_) => DType::F64,
            Data::I32(_) => DType::I32,
            Data::I64(_) => DType::I64,
            Data::Bool(_) => DType::Bool,
            Data::Str(_) => DType::Str,
        }
    }
}

/// A dense row-major tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Data,
}

impl Tensor {
    /// A tensor whose element count must equal the product of `shape`.
    pub fn new(shape: Vec<usize>, data: Data) -> Result<Tensor, InferError> {
        let n = element_count(&shape)?;
        if n != data.len() {
            return Err(InferError::Input(format!("shape {shape:?} holds {n} elements but {} were given", data.len())));
        }
        Ok(Tensor { shape, data })
    }

    pub fn f32(shape: Vec<usize>, v: Vec<f32>) -> Result<Tensor, InferError> {
        Tensor::new(shape, Data::F32(v))
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The values as f32, converting numeric types (as ONNX-ML operators do with their input).
    pub fn to_f32(&self) -> Result<Vec<f32>, InferError> {
        Ok(match &self.data {
            Data::F32(v) => v.clone(),
            Data::F64(v) => v.iter().map(|&x| x as f32).collect(),
            Data::I32(v) => v.iter().map(|&x| x as f32).collect(),
            Data::I64(v) => v.iter().map(|&x| x as f32).collect(),
            Data::Bool(v) => v.iter().map(|&x| if x { 1.0 } else { 0.0 }).collect(),
            Data::Str(_) => return Err(InferError::Model("a numeric operator was given strings".into())),
        })
    }

    pub fn to_i64(&self) -> Result<Vec<i64>, InferError> {
        Ok(match &self.data {
            Data::I64(v) => v.clone(),
            Data::I32(v) => v.iter().map(|&x| i64::from(x)).collect(),
            Data::F32(v) => v.iter().map(|&x| x as i64).collect(),
            Data::F64(v) => v.iter().map(|&x| x as i64).collect(),
            Data::Bool(v) => v.iter().map(|&x| i64::from(x)).collect(),
            Data::Str(_) => return Err(InferError::Model("an integer operand was given strings".into())),
        })
    }
}

/// The product of a shape's dimensions, refusing overflow.
pub fn element_count(shape: &[usize]) -> Result<usize, InferError> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| InferError::Input(format!("shape {shape:?} overflows")))
}

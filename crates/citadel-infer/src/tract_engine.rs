//! Graphs of standard ONNX operators on tract.

use crate::{DType, Data, InferError, IoSpec, Tensor};
use tract_onnx::prelude::{
    Datum, Framework, InferenceFact, InferenceModelExt, IntoRunnable, TDim, TVec, Tensor as TractTensor,
    TypedRunnableModel,
};

pub struct TractModel {
    plan: std::sync::Arc<TypedRunnableModel>,
}

fn err(e: impl std::fmt::Display) -> InferError {
    InferError::Model(format!("tract: {e}"))
}

impl TractModel {
    /// tract is a large parser of untrusted bytes: a panic inside it (seen
    /// on malformed graphs) becomes an error here instead of taking the
    /// gateway down.
    pub fn load(bytes: &[u8], inputs: &[IoSpec]) -> Result<TractModel, InferError> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Self::load_unguarded(bytes, inputs)))
            .unwrap_or_else(|_| Err(InferError::Model("tract could not load the graph".into())))
    }

    fn load_unguarded(bytes: &[u8], inputs: &[IoSpec]) -> Result<TractModel, InferError> {
        let mut model = tract_onnx::onnx().model_for_read(&mut &bytes[..]).map_err(err)?;
        // Unknown dimensions become one symbol (the batch), so the plan is optimized once for every batch size.
        let batch = model.symbols.sym("N");
        for (i, spec) in inputs.iter().enumerate() {
            if spec.shape.is_empty() {
                continue;
            }
            let dims: TVec<TDim> = spec
                .shape
                .iter()
                .map(|d| d.map_or_else(|| TDim::from(batch.clone()), |d| TDim::from(d as i64)))
                .collect();
            let fact = InferenceFact::dt_shape(datum(spec.dtype)?, dims);
            model.set_input_fact(i, fact).map_err(err)?;
        }
        let plan = model.into_optimized().map_err(err)?.into_runnable().map_err(err)?;
        Ok(TractModel { plan })
    }

    pub fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, InferError> {
        let mut values = TVec::new();
        for t in inputs {
            let tt = match &t.data {
                Data::F32(v) => TractTensor::from_shape(&t.shape, v),
                Data::F64(v) => TractTensor::from_shape(&t.shape, v),
                Data::I32(v) => TractTensor::from_shape(&t.shape, v),
                Data::I64(v) => TractTensor::from_shape(&t.shape, v),
                Data::Bool(v) => TractTensor::from_shape(&t.shape, v),
                Data::Str(_) => return Err(InferError::Input("string inputs are not supported by tract".into())),
            }
            .map_err(|e| InferError::Input(e.to_string()))?;
            values.push(tt.into());
        }
        let outputs = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.plan.run(values)))
            .map_err(|_| InferError::Model("tract failed while running the graph".into()))?
            .map_err(|e| InferError::Input(format!("tract: {e}")))?;
        outputs.iter().map(|v| from_tract(v)).collect()
    }
}

fn datum(d: DType) -> Result<tract_onnx::prelude::DatumType, InferError> {
    Ok(match d {
        DType::F32 => f32::datum_type(),
        DType::F64 => f64::datum_type(),
        DType::I32 => i32::datum_type(),
        DType::I64 => i64::datum_type(),
        DType::Bool => bool::datum_type(),
        DType::Str => return Err(InferError::Unsupported("string inputs on tract".into())),
    })
}

fn from_tract(t: &TractTensor) -> Result<Tensor, InferError> {
    fn values<D: Datum + Clone>(t: &TractTensor) -> Result<Vec<D>, InferError> {
        Ok(t.to_plain_array_view::<D>().map_err(err)?.iter().cloned().collect())
    }
    let dt = t.datum_type();
    let data = if dt == f32::datum_type() {
        Data::F32(values(t)?)
    } else if dt == f64::datum_type() {
        Data::F64(values(t)?)
    } else if dt == i64::datum_type() {
        Data::I64(values(t)?)
    } else if dt == i32::datum_type() {
        Data::I32(values(t)?)
    } else if dt == bool::datum_type() {
        Data::Bool(values(t)?)
    } else {
        return Err(InferError::Unsupported(format!("an output of type {dt:?}")));
    };
    Tensor::new(t.shape().to_vec(), data)
}

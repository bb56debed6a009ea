//! Machine learning for tabular classification, kept pure (tables and bytes
//! in, models and reports out):
//!
//! - [`table`]/[`encode`]: a dataset version's Parquet → features `X`;
//! - [`lr`], [`gbt`]: built-in trainers exporting standard-operator ONNX;
//! - [`metrics`], [`fairness`], [`robust`], [`explain`]: evaluation of any
//!   binary classifier behind [`Classifier`] (in practice an ONNX model run
//!   by citadel-infer, so what is evaluated is what is served);
//! - [`card`]: the model card, JSON and HTML with SVG charts.

pub mod card;
pub mod encode;
pub mod evaluate;
pub mod explain;
pub mod fairness;
pub mod gbt;
pub mod lr;
mod math;
pub mod metrics;
mod onnx_build;
pub mod robust;
pub mod split;
pub mod table;

pub use encode::{FeatureEncoder, Labels, Matrix};
pub use table::{Column, Table};

#[derive(Debug, thiserror::Error)]
pub enum MlError {
    #[error("column {column}: {detail}")]
    Column { column: String, detail: String },
    #[error("{0}")]
    Config(String),
    #[error("reading {0}")]
    Io(String),
    #[error("model: {0}")]
    Model(String),
}

/// A binary classifier: the positive-class probability of each row.
pub trait Classifier: Sync {
    fn predict_proba(&self, x: &Matrix) -> Result<Vec<f64>, MlError>;
}

/// An ONNX classifier run in-process by citadel-infer. The input is the
/// model's one float input `[N, F]`; the positive-class probability is
/// column 1 of its probability output (`probabilities`, or skl2onnx's
/// `output_probability`, or the only float output).
#[derive(Debug)]
pub struct OnnxClassifier {
    model: citadel_infer::Model,
    /// The input's name, for messages.
    pub input: String,
    output: String,
    pub features: usize,
}

impl OnnxClassifier {
    pub fn load(bytes: &[u8]) -> Result<OnnxClassifier, MlError> {
        let model = citadel_infer::Model::load(bytes).map_err(|e| MlError::Model(e.to_string()))?;
        let [input] = model.inputs.as_slice() else {
            return Err(MlError::Model(format!(
                "a tabular classifier takes one input tensor [N, features]; this model takes {}",
                model.inputs.len()
            )));
        };
        if input.dtype != citadel_infer::DType::F32 || input.shape.len() != 2 {
            return Err(MlError::Model(format!(
                "input {} must be float [N, features], not {} {}",
                input.name,
                input.dtype.v2_name(),
                citadel_infer::shape_text(&input.shape)
            )));
        }
        let features = input.shape[1]
            .ok_or_else(|| MlError::Model(format!("input {} must fix its feature dimension", input.name)))?;
        let floats: Vec<&citadel_infer::IoSpec> =
            model.outputs.iter().filter(|o| o.dtype == citadel_infer::DType::F32).collect();
        let output = ["probabilities", "output_probability"]
            .iter()
            .find_map(|n| floats.iter().find(|o| o.name == *n))
            .or(if floats.len() == 1 { floats.first() } else { None })
            .map(|o| o.name.clone())
            .ok_or_else(|| MlError::Model("no probability output (probabilities or output_probability)".into()))?;
        let input = input.name.clone();
        Ok(OnnxClassifier { model, input, output, features })
    }

    pub fn engine(&self) -> &'static str {
        self.model.engine.as_str()
    }
}

impl Classifier for OnnxClassifier {
    fn predict_proba(&self, x: &Matrix) -> Result<Vec<f64>, MlError> {
        if x.cols != self.features {
            return Err(MlError::Model(format!("the model takes {} features, got {}", self.features, x.cols)));
        }
        let mut out = Vec::with_capacity(x.rows);
        // Chunks bound the memory of the dense tree graph.
        for start in (0..x.rows).step_by(4096) {
            let end = (start + 4096).min(x.rows);
            let t =
                citadel_infer::Tensor::f32(vec![end - start, x.cols], x.data[start * x.cols..end * x.cols].to_vec())
                    .map_err(|e| MlError::Model(e.to_string()))?;
            let mut outputs = self.model.run(vec![t]).map_err(|e| MlError::Model(e.to_string()))?;
            let pos = self
                .model
                .outputs
                .iter()
                .position(|o| o.name == self.output)
                .ok_or_else(|| MlError::Model("probability output missing".into()))?;
            let probs = outputs.swap_remove(pos);
            let v = probs.to_f32().map_err(|e| MlError::Model(e.to_string()))?;
            let width = probs.shape.get(1).copied().unwrap_or(1);
            if width < 2 || v.len() != (end - start) * width {
                return Err(MlError::Model(format!(
                    "probabilities have shape {:?}; a binary classifier gives [N, 2]",
                    probs.shape
                )));
            }
            out.extend(v.chunks(width).map(|r| f64::from(r[1])));
        }
        Ok(out)
    }
}

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
pub mod onnx_build;
pub mod robust;
pub mod split;
pub mod table;
pub mod task_eval;
pub mod task_metrics;

pub use encode::{FeatureEncoder, Labels, Matrix};
pub use onnx_build::Interface;
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

/// A binary classifier: the positive-class probability of each row (for
/// [`OnnxClassifier`] of a regressor, its prediction).
pub trait Classifier: Sync {
    fn predict_proba(&self, x: &Matrix) -> Result<Vec<f64>, MlError>;
}

/// An ONNX classifier run in-process by citadel-infer. The input is the
/// model's one float input `[N, F]`, or, for a model exported with named
/// inputs (its `citadel.encoder` metadata names them), one input per
/// feature built from the encoded rows by reversing the codes; the
/// positive-class probability is column 1 of its probability output
/// (`probabilities`, or skl2onnx's `output_probability`, or the only float
/// output).
#[derive(Debug)]
pub struct OnnxClassifier {
    model: citadel_infer::Model,
    /// The input's name, for messages.
    pub input: String,
    output: String,
    pub features: usize,
    feed: Feed,
}

/// How encoded rows become the model's inputs.
#[derive(Debug)]
pub(crate) enum Feed {
    Codes,
    /// Per declared input: the matrix column, and for a category its codes' names.
    Named(Vec<(usize, Option<Codes>)>),
}

/// A category's names by code, and a string no category has (for code -1).
type Codes = (Vec<String>, String);

impl Feed {
    /// The named feed of a model exported with [`Interface::Named`] (its
    /// `citadel.inputs` metadata lists the features in matrix order).
    pub(crate) fn named(model: &citadel_infer::Model) -> Result<Option<Feed>, MlError> {
        #[derive(serde::Deserialize)]
        struct Input {
            name: String,
            #[serde(default)]
            categories: Option<Vec<String>>,
        }
        let Some(json) = model.meta("citadel.inputs") else { return Ok(None) };
        let schema: Vec<Input> =
            serde_json::from_str(json).map_err(|e| MlError::Model(format!("citadel.inputs metadata: {e}")))?;
        if schema.len() != model.inputs.len() {
            return Err(MlError::Model("the model's inputs are not the ones its metadata lists".into()));
        }
        let mut feed = Vec::with_capacity(model.inputs.len());
        for input in &model.inputs {
            let j = schema.iter().position(|f| f.name == input.name).ok_or_else(|| {
                MlError::Model(format!("input {} is not in the model's citadel.inputs metadata", input.name))
            })?;
            let cats = schema[j].categories.clone().map(|categories| {
                let mut unseen = "(unseen)".to_string();
                while categories.contains(&unseen) {
                    unseen.push('*');
                }
                (categories, unseen)
            });
            feed.push((j, cats));
        }
        Ok(Some(Feed::Named(feed)))
    }

    /// The model's inputs for rows `start..end` of `x`: the codes as one
    /// tensor, or one named tensor per feature (codes back to categories).
    pub(crate) fn tensors(&self, x: &Matrix, start: usize, end: usize) -> Result<Vec<citadel_infer::Tensor>, MlError> {
        let err = |e: citadel_infer::InferError| MlError::Model(e.to_string());
        let n = end - start;
        match self {
            Feed::Codes => Ok(vec![
                citadel_infer::Tensor::f32(vec![n, x.cols], x.data[start * x.cols..end * x.cols].to_vec())
                    .map_err(err)?,
            ]),
            Feed::Named(feed) => feed
                .iter()
                .map(|(j, cats)| {
                    let col = (start..end).map(|i| x.data[i * x.cols + j]);
                    let data = match cats {
                        None => citadel_infer::Data::F32(col.collect()),
                        Some((categories, unseen)) => citadel_infer::Data::Str(
                            col.map(|code| {
                                let k = code.round();
                                if k >= 0.0 && (k as usize) < categories.len() {
                                    categories[k as usize].clone()
                                } else {
                                    unseen.clone()
                                }
                            })
                            .collect(),
                        ),
                    };
                    citadel_infer::Tensor::new(vec![n, 1], data).map_err(err)
                })
                .collect(),
        }
    }
}

impl OnnxClassifier {
    pub fn load(bytes: &[u8]) -> Result<OnnxClassifier, MlError> {
        let model = citadel_infer::Model::load(bytes).map_err(|e| MlError::Model(e.to_string()))?;
        if let Some(feed) = Feed::named(&model)? {
            let output = probability_output(&model)?;
            let features = model.inputs.len();
            let input = "named features".to_string();
            return Ok(OnnxClassifier { model, input, output, features, feed });
        }
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
        let output = probability_output(&model)?;
        let input = input.name.clone();
        Ok(OnnxClassifier { model, input, output, features, feed: Feed::Codes })
    }

    pub fn engine(&self) -> &'static str {
        self.model.engine.as_str()
    }
}

impl OnnxClassifier {
    /// The model's answer for every row of `x`, row-major `[N, width]`, and
    /// the width: the class probabilities of a classifier (`width` = K) or
    /// the predictions of a regressor (`width` = 1). Run in chunks of 4,096
    /// rows, which bounds the memory of a dense tree graph.
    pub fn scores(&self, x: &Matrix) -> Result<(Vec<f64>, usize), MlError> {
        if x.cols != self.features {
            return Err(MlError::Model(format!("the model takes {} features, got {}", self.features, x.cols)));
        }
        let pos = self
            .model
            .outputs
            .iter()
            .position(|o| o.name == self.output)
            .ok_or_else(|| MlError::Model(format!("output {} missing", self.output)))?;
        let mut out = Vec::new();
        let mut width = None;
        for start in (0..x.rows).step_by(4096) {
            let end = (start + 4096).min(x.rows);
            let inputs = self.feed.tensors(x, start, end)?;
            let mut outputs = self.model.run(inputs).map_err(|e| MlError::Model(e.to_string()))?;
            let scores = outputs.swap_remove(pos);
            let v = scores.to_f32().map_err(|e| MlError::Model(e.to_string()))?;
            let w = scores.shape.get(1).copied().unwrap_or(1).max(1);
            if v.len() != (end - start) * w || width.is_some_and(|k| k != w) {
                return Err(MlError::Model(format!(
                    "output {} has shape {:?} for {} rows",
                    self.output,
                    scores.shape,
                    end - start
                )));
            }
            width = Some(w);
            out.extend(v.into_iter().map(f64::from));
        }
        Ok((out, width.unwrap_or(1)))
    }
}

impl Classifier for OnnxClassifier {
    fn predict_proba(&self, x: &Matrix) -> Result<Vec<f64>, MlError> {
        let (v, width) = self.scores(x)?;
        match width {
            2 => Ok(v.chunks(2).map(|r| r[1]).collect()),
            // A regressor's one output: what its explanations explain.
            1 => Ok(v),
            _ => Err(MlError::Model(format!("probabilities have {width} columns; a binary classifier gives [N, 2]"))),
        }
    }
}

/// The float output holding class probabilities (or a regressor's predictions).
fn probability_output(model: &citadel_infer::Model) -> Result<String, MlError> {
    let floats: Vec<&citadel_infer::IoSpec> =
        model.outputs.iter().filter(|o| o.dtype == citadel_infer::DType::F32).collect();
    ["probabilities", "output_probability", "predictions"]
        .iter()
        .find_map(|n| floats.iter().find(|o| o.name == *n))
        .or(if floats.len() == 1 { floats.first() } else { None })
        .map(|o| o.name.clone())
        .ok_or_else(|| MlError::Model("no probability output (probabilities or output_probability)".into()))
}

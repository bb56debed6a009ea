//! In-process inference for ONNX models.
//!
//! Two engines, chosen per model at load:
//! - the **native executor** ([`graph`]) runs graphs that use the ONNX-ML
//!   domain — what skl2onnx writes for scikit-learn models (linear models,
//!   MLPs, random forests, gradient boosting, histogram gradient boosting).
//!   tract rejects ZipMap, mislabels TreeEnsembleClassifier and refuses
//!   GradientBoosting's two base values, so these operators are ours and
//!   match onnxruntime to float rounding;
//! - **tract** runs every other graph (standard ONNX operators only: the
//!   networks exported from PyTorch, Keras, JAX).
//!
//! A graph that ends in ZipMap serves the probability tensor that feeds it.
//! A model is bytes in, tensors out: nothing is read from disk, nothing
//! executes but the listed operators, and declared sizes are bounded before
//! anything is allocated.

mod features;
mod graph;
pub mod proto;
mod tensor;
mod tract_engine;
mod tree;

pub use tensor::{DType, Data, Tensor, element_count};
/// The complete `onnx.proto` as prost types (tract's), for rewriting a graph
/// without losing fields the inference structs leave out.
pub use tract_onnx::pb as onnx_pb;
pub use tree::TreeShap;

use prost::Message;
use std::collections::HashMap;

/// Model files above this size are refused before decoding.
pub const MAX_MODEL_BYTES: usize = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// The model file is malformed or inconsistent.
    #[error("model: {0}")]
    Model(String),
    /// The model uses something this runtime does not execute.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The request's tensors do not fit the model.
    #[error("{0}")]
    Input(String),
    /// The work did not finish before its deadline.
    #[error("the computation took longer than its deadline")]
    Deadline,
}

/// A declared input or output.
#[derive(Debug, Clone, PartialEq)]
pub struct IoSpec {
    pub name: String,
    pub dtype: DType,
    /// `None` marks a dynamic dimension (usually the batch).
    pub shape: Vec<Option<usize>>,
}

/// Which engine runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Native,
    Tract,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Native => "citadel-native",
            Engine::Tract => "tract",
        }
    }
}

enum Runner {
    Native(graph::Plan),
    Tract(tract_engine::TractModel),
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Runner::Native(_) => f.write_str("Native"),
            Runner::Tract(_) => f.write_str("Tract"),
        }
    }
}

/// A loaded model, ready to run on many threads at once.
#[derive(Debug)]
pub struct Model {
    pub inputs: Vec<IoSpec>,
    pub outputs: Vec<IoSpec>,
    pub engine: Engine,
    pub producer: String,
    /// The model's `metadata_props`, in file order.
    pub metadata: Vec<(String, String)>,
    runner: Runner,
}

fn tensor_spec(name: &str, t: &proto::TypeProto) -> Result<IoSpec, InferError> {
    let tt = t.tensor_type.as_ref().ok_or_else(|| {
        InferError::Unsupported(format!("{name} is not a tensor (sequences and maps are not served)"))
    })?;
    let dtype = DType::from_onnx(tt.elem_type)
        .ok_or_else(|| InferError::Unsupported(format!("{name} has ONNX element type {}", tt.elem_type)))?;
    let shape = tt
        .shape
        .as_ref()
        .map(|s| s.dim.iter().map(|d| d.dim_value.and_then(|v| usize::try_from(v).ok()).filter(|&v| v > 0)).collect())
        .unwrap_or_default();
    Ok(IoSpec { name: name.to_string(), dtype, shape })
}

impl Model {
    /// Decodes, checks and compiles a model.
    pub fn load(bytes: &[u8]) -> Result<Model, InferError> {
        if bytes.len() > MAX_MODEL_BYTES {
            return Err(InferError::Model(format!("{} bytes; at most {MAX_MODEL_BYTES} are served", bytes.len())));
        }
        let model =
            proto::ModelProto::decode(bytes).map_err(|e| InferError::Model(format!("not an ONNX model ({e})")))?;
        let graph = model.graph.as_ref().ok_or_else(|| InferError::Model("the model has no graph".into()))?;
        let onnx_opset = model
            .opset_import
            .iter()
            .filter(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map(|o| o.version)
            .max()
            .unwrap_or(1);
        let constants: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let mut inputs = Vec::new();
        for i in graph.input.iter().filter(|i| !constants.contains(i.name.as_str())) {
            let t = i.r#type.as_ref().ok_or_else(|| InferError::Model(format!("input {} has no type", i.name)))?;
            inputs.push(tensor_spec(&i.name, t)?);
        }
        if inputs.is_empty() {
            return Err(InferError::Model("the model declares no inputs".into()));
        }
        let producer: HashMap<&str, &proto::NodeProto> =
            graph.node.iter().flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n))).collect();
        let mut outputs = Vec::new();
        for o in &graph.output {
            match producer.get(o.name.as_str()) {
                Some(n) if n.op_type == "ZipMap" => {
                    let classes = n
                        .attribute
                        .iter()
                        .find(|a| a.name == "classlabels_int64s" || a.name == "classlabels_strings")
                        .map(|a| a.ints.len().max(a.strings.len()));
                    outputs.push(IoSpec { name: o.name.clone(), dtype: DType::F32, shape: vec![None, classes] });
                }
                _ => {
                    let t =
                        o.r#type.as_ref().ok_or_else(|| InferError::Model(format!("output {} has no type", o.name)))?;
                    outputs.push(tensor_spec(&o.name, t)?);
                }
            }
        }
        let uses_ml = graph.node.iter().any(|n| n.domain == "ai.onnx.ml");
        let native = uses_ml && graph.node.iter().all(|n| graph::supports(&n.domain, &n.op_type));
        let (engine, runner) = if native {
            (Engine::Native, Runner::Native(graph::Plan::compile(graph, graph::Opsets { onnx: onnx_opset }, &inputs)?))
        } else if uses_ml {
            let n = graph
                .node
                .iter()
                .find(|n| !graph::supports(&n.domain, &n.op_type))
                .map(|n| format!("{}:{}", if n.domain.is_empty() { "ai.onnx" } else { &n.domain }, n.op_type))
                .unwrap_or_default();
            return Err(InferError::Unsupported(format!(
                "operator {n} (graphs that use ONNX-ML operators run on the native executor, which lacks it)"
            )));
        } else {
            check_wiring(graph)?;
            (Engine::Tract, Runner::Tract(tract_engine::TractModel::load(bytes, &inputs)?))
        };
        let metadata = model.metadata_props.iter().map(|p| (p.key.clone(), p.value.clone())).collect();
        Ok(Model { inputs, outputs, engine, producer: model.producer_name.clone(), metadata, runner })
    }

    /// The value of metadata property `key`, if the model has one.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The value `name` of the graph (an intermediate result, such as the
    /// features matrix a named-input export builds) for these inputs. Only
    /// graphs on the native executor expose their values.
    pub fn run_value(&self, inputs: Vec<Tensor>, name: &str) -> Result<Tensor, InferError> {
        self.check_inputs(&inputs)?;
        let Runner::Native(plan) = &self.runner else {
            return Err(InferError::Unsupported("reading intermediate values of a tract graph".into()));
        };
        let slot = plan.slot(name).ok_or_else(|| InferError::Model(format!("the graph has no value {name}")))?;
        plan.run_to(inputs, slot)
    }

    /// True when the graph computes exactly one tree ensemble ([`Model::tree_shap`] applies).
    pub fn has_tree_ensemble(&self) -> bool {
        matches!(&self.runner, Runner::Native(p) if p.tree_ensemble().is_some())
    }

    /// Interventional TreeSHAP of the graph's one tree ensemble for these
    /// inputs, against `background` rows of the ensemble's input features
    /// (row-major, `cols` wide). Returns the explanation and the features'
    /// count. The explained output is the ensemble's raw score (for a
    /// boosted classifier, the log-odds), before any post transform.
    pub fn tree_shap(
        &self,
        inputs: Vec<Tensor>,
        background: &[f32],
        deadline: Option<std::time::Instant>,
    ) -> Result<(TreeShap, usize), InferError> {
        self.check_inputs(&inputs)?;
        let Runner::Native(plan) = &self.runner else {
            return Err(InferError::Unsupported("TreeSHAP needs a tree ensemble on the native executor".into()));
        };
        let (ensemble, slot) = plan
            .tree_ensemble()
            .ok_or_else(|| InferError::Unsupported("TreeSHAP needs a graph with exactly one tree ensemble".into()))?;
        let x = plan.run_to(inputs, slot)?;
        let cols = match x.shape.as_slice() {
            [_, c] => *c,
            [c] => *c,
            other => return Err(InferError::Input(format!("the ensemble's input has shape {other:?}"))),
        };
        Ok((ensemble.tree_shap(&x.to_f32()?, background, cols, deadline)?, cols))
    }

    /// The node count of the graph's one tree ensemble (the size TreeSHAP's cost grows with).
    pub fn tree_nodes(&self) -> Option<usize> {
        match &self.runner {
            Runner::Native(p) => p.tree_ensemble().map(|(e, _)| e.node_count()),
            Runner::Tract(_) => None,
        }
    }

    /// Checks tensors against the declared inputs: count, element type, rank and fixed dimensions.
    pub fn check_inputs(&self, inputs: &[Tensor]) -> Result<(), InferError> {
        self.check_refs(inputs.iter())
    }

    fn check_refs<'a>(&self, inputs: impl ExactSizeIterator<Item = &'a Tensor>) -> Result<(), InferError> {
        let given = inputs.len();
        if given != self.inputs.len() {
            return Err(InferError::Input(format!(
                "the model takes {} input(s) ({}), {given} given",
                self.inputs.len(),
                self.inputs.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", "),
            )));
        }
        for (spec, t) in self.inputs.iter().zip(inputs) {
            if t.dtype() != spec.dtype {
                return Err(InferError::Input(format!(
                    "input {} must be {}, got {}",
                    spec.name,
                    spec.dtype.v2_name(),
                    t.dtype().v2_name()
                )));
            }
            if !spec.shape.is_empty() {
                let fits = spec.shape.len() == t.shape.len()
                    && spec.shape.iter().zip(&t.shape).all(|(d, &n)| d.is_none_or(|d| d == n));
                if !fits {
                    return Err(InferError::Input(format!(
                        "input {} must have shape {}, got {:?}",
                        spec.name,
                        shape_text(&spec.shape),
                        t.shape
                    )));
                }
            }
        }
        Ok(())
    }

    /// Like [`Model::run`], on inputs the caller keeps too (a capture of the
    /// request, say): the native executor reads them without copying.
    pub fn run_shared(&self, inputs: Vec<std::sync::Arc<Tensor>>) -> Result<Vec<Tensor>, InferError> {
        self.check_refs(inputs.iter().map(|t| t.as_ref()))?;
        match &self.runner {
            Runner::Native(plan) => plan.run_shared(inputs),
            Runner::Tract(m) => m.run(
                inputs.into_iter().map(|t| std::sync::Arc::try_unwrap(t).unwrap_or_else(|t| (*t).clone())).collect(),
            ),
        }
    }

    /// Runs the model on inputs in declared order; outputs come in declared order.
    pub fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, InferError> {
        self.check_inputs(&inputs)?;
        match &self.runner {
            Runner::Native(plan) => plan.run(inputs),
            Runner::Tract(m) => m.run(inputs),
        }
    }
}

/// Every node input and graph output names a value that exists before it is
/// used, and no value is produced twice. tract assumes this (and panics when
/// it does not hold), so it is checked before a graph reaches tract.
fn check_wiring(graph: &proto::GraphProto) -> Result<(), InferError> {
    let mut defined: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    defined.extend(graph.input.iter().map(|i| i.name.as_str()));
    for n in &graph.node {
        if let Some(missing) = n.input.iter().find(|i| !i.is_empty() && !defined.contains(i.as_str())) {
            return Err(InferError::Model(format!("{} reads {missing}, which nothing before it defines", n.op_type)));
        }
        for o in &n.output {
            if !o.is_empty() && !defined.insert(o.as_str()) {
                return Err(InferError::Model(format!("value {o} is defined twice")));
            }
        }
    }
    if let Some(o) = graph.output.iter().find(|o| !defined.contains(o.name.as_str())) {
        return Err(InferError::Model(format!("output {} is never computed", o.name)));
    }
    Ok(())
}

/// `[-1, 10]` style text for a declared shape.
pub fn shape_text(shape: &[Option<usize>]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.map_or("-1".to_string(), |d| d.to_string())).collect();
    format!("[{}]", dims.join(", "))
}

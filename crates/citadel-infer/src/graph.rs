//! The native executor: a checked, topologically ordered plan over the
//! operators that scikit-learn exports (skl2onnx) use, including the ONNX-ML
//! domain that tract does not implement correctly. Every node is compiled
//! once at load (attributes parsed and validated); running a plan only moves
//! tensors between slots.

use crate::proto::{AttributeProto, GraphProto, NodeProto, TensorProto};
use crate::tensor::{DType, Data, Tensor, element_count};
use crate::tree::{Ensemble, binary_scores};
use crate::{InferError, IoSpec};
use smallvec::{SmallVec, smallvec};
use std::collections::HashMap;
use std::sync::Arc;

/// Bounds on what a model file may declare.
pub const MAX_NODES: usize = 200_000;
pub const MAX_CONSTANT_ELEMENTS: usize = 256 << 20;

/// Read access to a node's attributes.
#[derive(Debug)]
pub struct Attrs<'a> {
    op: &'a str,
    list: &'a [AttributeProto],
}

impl<'a> Attrs<'a> {
    #[cfg(test)]
    pub(crate) fn new(op: &'a str, list: &'a [AttributeProto]) -> Attrs<'a> {
        Attrs { op, list }
    }
    fn get(&self, name: &str) -> Option<&'a AttributeProto> {
        self.list.iter().find(|a| a.name == name)
    }
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
    fn missing(&self, name: &str) -> InferError {
        InferError::Model(format!("{}: attribute {name} is missing", self.op))
    }
    pub fn ints(&self, name: &str) -> Result<&'a [i64], InferError> {
        self.get(name).map(|a| a.ints.as_slice()).ok_or_else(|| self.missing(name))
    }
    pub fn ints_or_empty(&self, name: &str) -> &'a [i64] {
        self.get(name).map(|a| a.ints.as_slice()).unwrap_or(&[])
    }
    pub fn floats_or_empty(&self, name: &str) -> &'a [f32] {
        self.get(name).map(|a| a.floats.as_slice()).unwrap_or(&[])
    }
    pub fn strings(&self, name: &str) -> Result<&'a [Vec<u8>], InferError> {
        self.get(name).map(|a| a.strings.as_slice()).ok_or_else(|| self.missing(name))
    }
    pub fn int_or(&self, name: &str, default: i64) -> i64 {
        self.get(name).map(|a| a.i).unwrap_or(default)
    }
    pub fn float_or(&self, name: &str, default: f32) -> f32 {
        self.get(name).map(|a| a.f).unwrap_or(default)
    }
    pub fn string_or(&self, name: &str, default: &str) -> String {
        self.get(name).map(|a| String::from_utf8_lossy(&a.s).into_owned()).unwrap_or_else(|| default.to_string())
    }
    /// A float list given either as `name` or as the opset-3 `name_as_tensor` (doubles, narrowed to f32).
    pub fn floats_or_tensor(&self, name: &str) -> Result<Vec<f32>, InferError> {
        let v = self.floats_or_tensor_or_empty(name)?;
        if v.is_empty() && self.get(name).is_none() && self.get(&format!("{name}_as_tensor")).is_none() {
            return Err(self.missing(name));
        }
        Ok(v)
    }
    pub fn floats_or_tensor_or_empty(&self, name: &str) -> Result<Vec<f32>, InferError> {
        if let Some(a) = self.get(name) {
            return Ok(a.floats.clone());
        }
        if let Some(t) = self.get(&format!("{name}_as_tensor")).and_then(|a| a.t.as_ref()) {
            return decode_tensor(t)?.to_f32();
        }
        Ok(Vec::new())
    }
    fn labels(&self) -> Result<Labels, InferError> {
        for name in ["classlabels_int64s", "classlabels_ints"] {
            if let Some(a) = self.get(name) {
                return Ok(Labels::Ints(a.ints.clone()));
            }
        }
        if let Some(a) = self.get("classlabels_strings") {
            return Ok(Labels::Strs(a.strings.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect()));
        }
        Err(InferError::Model(format!("{}: no class labels", self.op)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostTransform {
    None,
    Logistic,
    Softmax,
    SoftmaxZero,
    Probit,
}

impl PostTransform {
    pub fn parse(s: &str) -> Result<PostTransform, InferError> {
        Ok(match s {
            "NONE" => PostTransform::None,
            "LOGISTIC" => PostTransform::Logistic,
            "SOFTMAX" => PostTransform::Softmax,
            "SOFTMAX_ZERO" => PostTransform::SoftmaxZero,
            "PROBIT" => PostTransform::Probit,
            other => return Err(InferError::Model(format!("unknown post_transform {other}"))),
        })
    }

    /// Applies the transform to one row of scores.
    pub fn apply(self, v: &mut [f32]) {
        match self {
            PostTransform::None => {}
            PostTransform::Logistic => v.iter_mut().for_each(|x| *x = logistic(*x)),
            PostTransform::Probit => v.iter_mut().for_each(|x| *x = probit(*x)),
            PostTransform::Softmax => softmax_row(v),
            PostTransform::SoftmaxZero => {
                let max = v.iter().copied().fold(-f32::MAX, f32::max);
                let exp_neg_max = (-max).exp();
                let mut sum = 0f32;
                for x in v.iter_mut() {
                    if *x > 1e-7 || *x < -1e-7 {
                        *x = (*x - max).exp();
                        sum += *x;
                    } else {
                        *x *= exp_neg_max;
                    }
                }
                v.iter_mut().for_each(|x| *x /= sum);
            }
        }
    }
}

/// The logistic function in onnxruntime's numerically symmetric form.
pub fn logistic(x: f32) -> f32 {
    let v = 1.0 / (1.0 + (-x.abs()).exp());
    if x < 0.0 { 1.0 - v } else { v }
}

/// onnxruntime's probit (Winitzki's inverse-erf approximation).
pub fn probit(p: f32) -> f32 {
    let x = 2.0 * p - 1.0;
    let sgn = if x < 0.0 { -1.0 } else { 1.0 };
    let y = (1.0 - x) * (1.0 + x);
    let log = y.ln();
    let v = 2.0 / (std::f32::consts::PI * 0.147) + 0.5 * log;
    let v2 = 1.0 / 0.147 * log;
    let v3 = -v + (v * v - v2).sqrt();
    std::f32::consts::SQRT_2 * sgn * v3.sqrt()
}

fn softmax_row(v: &mut [f32]) {
    let max = v.iter().copied().fold(-f32::MAX, f32::max);
    let mut sum = 0f32;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    v.iter_mut().for_each(|x| *x /= sum);
}

#[derive(Debug, Clone)]
enum Labels {
    Ints(Vec<i64>),
    Strs(Vec<String>),
}

impl Labels {
    fn len(&self) -> usize {
        match self {
            Labels::Ints(v) => v.len(),
            Labels::Strs(v) => v.len(),
        }
    }
    fn pick(&self, idx: &[usize]) -> Data {
        match self {
            Labels::Ints(v) => Data::I64(idx.iter().map(|&i| v.get(i).copied().unwrap_or(i as i64)).collect()),
            Labels::Strs(v) => Data::Str(idx.iter().map(|&i| v.get(i).cloned().unwrap_or_default()).collect()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Binary {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unary {
    Relu,
    Sigmoid,
    Tanh,
    Exp,
    Log,
    Abs,
    Neg,
    Sqrt,
}

#[derive(Debug)]
enum Op {
    Identity,
    Cast(DType),
    MatMul,
    Gemm {
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
    },
    Binary(Binary),
    Unary(Unary),
    Softmax {
        axis: i64,
        legacy: bool,
    },
    Concat {
        axis: i64,
    },
    ArgMax {
        axis: i64,
        keepdims: bool,
        last: bool,
    },
    Reshape {
        allowzero: bool,
    },
    Flatten {
        axis: i64,
    },
    ArrayFeatureExtractor,
    Gather {
        axis: i64,
    },
    Equal,
    LabelEncoder(crate::features::LabelEncoder),
    Imputer(crate::features::Imputer),
    OneHot(crate::features::OneHot),
    LinearClassifier {
        coef: Vec<f32>,
        intercepts: Vec<f32>,
        labels: Labels,
        post: PostTransform,
    },
    LinearRegressor {
        coef: Vec<f32>,
        intercepts: Vec<f32>,
        targets: usize,
        post: PostTransform,
    },
    Normalizer(Norm),
    Scaler {
        offset: Vec<f32>,
        scale: Vec<f32>,
    },
    TreeClassifier {
        ensemble: Ensemble,
        labels: Labels,
    },
    TreeRegressor(Ensemble),
    /// ZipMap turns probabilities into a list of maps; we serve the probability tensor that feeds it.
    ZipMap,
}

#[derive(Debug, Clone, Copy)]
enum Norm {
    Max,
    L1,
    L2,
}

#[derive(Debug)]
struct Step {
    op: Op,
    name: String,
    inputs: Vec<Option<usize>>,
    outputs: Vec<usize>,
}

/// A compiled graph.
#[derive(Debug)]
pub struct Plan {
    slots: usize,
    /// Value name → slot, for reading intermediate values.
    names: HashMap<String, usize>,
    /// The initializers, by slot: read in place, never copied into a run.
    constants: Vec<Option<Tensor>>,
    input_slots: Vec<usize>,
    output_slots: Vec<usize>,
    steps: Vec<Step>,
}

/// The opsets a node's semantics depend on.
#[derive(Debug, Clone, Copy)]
pub struct Opsets {
    pub onnx: i64,
}

/// True when the executor implements `op` of `domain`.
pub fn supports(domain: &str, op: &str) -> bool {
    match domain {
        "" | "ai.onnx" => matches!(
            op,
            "Identity"
                | "Cast"
                | "MatMul"
                | "Gemm"
                | "Add"
                | "Sub"
                | "Mul"
                | "Div"
                | "Relu"
                | "Sigmoid"
                | "Tanh"
                | "Exp"
                | "Log"
                | "Abs"
                | "Neg"
                | "Sqrt"
                | "Softmax"
                | "Concat"
                | "ArgMax"
                | "Reshape"
                | "Flatten"
                | "Gather"
                | "Equal"
        ),
        "ai.onnx.ml" => matches!(
            op,
            "ArrayFeatureExtractor"
                | "LabelEncoder"
                | "Imputer"
                | "OneHotEncoder"
                | "LinearClassifier"
                | "LinearRegressor"
                | "Normalizer"
                | "Scaler"
                | "TreeEnsembleClassifier"
                | "TreeEnsembleRegressor"
                | "ZipMap"
        ),
        _ => false,
    }
}

impl Plan {
    /// Compiles `graph`. Its declared inputs (those without an initializer) are `inputs`, in order.
    pub fn compile(graph: &GraphProto, opsets: Opsets, inputs: &[IoSpec]) -> Result<Plan, InferError> {
        if graph.node.len() > MAX_NODES {
            return Err(InferError::Model(format!("{} nodes; at most {MAX_NODES} are served", graph.node.len())));
        }
        let mut slot_of: HashMap<String, usize> = HashMap::new();
        let mut next = 0usize;
        let mut slot = |name: &str, slot_of: &mut HashMap<String, usize>| -> usize {
            *slot_of.entry(name.to_string()).or_insert_with(|| {
                next += 1;
                next - 1
            })
        };
        let mut constants = Vec::new();
        let mut total = 0usize;
        for init in &graph.initializer {
            let t = decode_tensor(init)?;
            total = total.saturating_add(t.len());
            if total > MAX_CONSTANT_ELEMENTS {
                return Err(InferError::Model("the model's constants exceed 256M elements".into()));
            }
            let s = slot(&init.name, &mut slot_of);
            constants.push((s, t));
        }
        let input_slots: Vec<usize> = inputs.iter().map(|i| slot(&i.name, &mut slot_of)).collect();
        let mut available: std::collections::HashSet<usize> =
            constants.iter().map(|(s, _)| *s).chain(input_slots.iter().copied()).collect();
        // Topological order: repeatedly take nodes whose inputs exist (ONNX
        // requires sorted graphs, but exporters are not all careful).
        let mut pending: Vec<&NodeProto> = graph.node.iter().collect();
        let mut steps = Vec::with_capacity(pending.len());
        while !pending.is_empty() {
            let before = pending.len();
            let mut rest = Vec::new();
            for node in pending {
                let ready =
                    node.input.iter().all(|i| i.is_empty() || slot_of.get(i).is_some_and(|s| available.contains(s)));
                if !ready {
                    rest.push(node);
                    continue;
                }
                let op = compile_op(node, opsets)?;
                let ins =
                    node.input.iter().map(|i| if i.is_empty() { None } else { slot_of.get(i).copied() }).collect();
                let outs: Vec<usize> = node.output.iter().map(|o| slot(o, &mut slot_of)).collect();
                available.extend(outs.iter().copied());
                steps.push(Step { op, name: node_label(node), inputs: ins, outputs: outs });
            }
            if rest.len() == before {
                let names: Vec<String> = rest.iter().take(3).map(|n| node_label(n)).collect();
                return Err(InferError::Model(format!(
                    "the graph has a cycle or an undefined input (at {})",
                    names.join(", ")
                )));
            }
            pending = rest;
        }
        let mut output_slots = Vec::new();
        for o in &graph.output {
            let s = slot_of
                .get(&o.name)
                .copied()
                .filter(|s| available.contains(s))
                .ok_or_else(|| InferError::Model(format!("output {} is never computed", o.name)))?;
            output_slots.push(s);
        }
        let mut by_slot: Vec<Option<Tensor>> = (0..next).map(|_| None).collect();
        for (s, t) in constants {
            by_slot[s] = Some(t);
        }
        Ok(Plan { slots: next, names: slot_of, constants: by_slot, input_slots, output_slots, steps })
    }

    /// The slot of a named value (input, constant or node output).
    pub fn slot(&self, name: &str) -> Option<usize> {
        self.names.get(name).copied()
    }

    /// The graph's one tree ensemble and the slot of its input, when it has exactly one.
    pub fn tree_ensemble(&self) -> Option<(&Ensemble, usize)> {
        let mut found = self.steps.iter().filter_map(|s| match &s.op {
            Op::TreeRegressor(e) | Op::TreeClassifier { ensemble: e, .. } => {
                Some((e, s.inputs.first().copied().flatten()?))
            }
            _ => None,
        });
        let one = found.next()?;
        found.next().is_none().then_some(one)
    }

    /// Runs the plan until `slot` holds its value, and returns it.
    pub fn run_to(&self, inputs: Vec<Tensor>, slot: usize) -> Result<Tensor, InferError> {
        let mut values = self.execute(inputs.into_iter().map(Arc::new).collect(), Some(slot))?;
        self.take(&mut values, slot).ok_or_else(|| InferError::Model("the value is never computed".into()))
    }

    /// Runs the plan on inputs in declared order.
    pub fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, InferError> {
        self.run_shared(inputs.into_iter().map(Arc::new).collect())
    }

    /// Runs the plan on shared inputs in declared order.
    pub fn run_shared(&self, inputs: Vec<Arc<Tensor>>) -> Result<Vec<Tensor>, InferError> {
        let mut values = self.execute(inputs, None)?;
        self.output_slots
            .iter()
            .map(|&s| self.take(&mut values, s).ok_or_else(|| InferError::Model("an output was not computed".into())))
            .collect()
    }

    /// The value in `slot`: computed, an input, or a constant.
    fn get<'a>(&'a self, values: &'a [Val], slot: usize) -> Option<&'a Tensor> {
        match &values[slot] {
            Val::Owned(t) => Some(t),
            Val::Shared(t) => Some(t),
            Val::Empty => self.constants[slot].as_ref(),
        }
    }

    /// Moves the value out of `slot` (a copy of a shared input or a constant).
    fn take(&self, values: &mut [Val], slot: usize) -> Option<Tensor> {
        match std::mem::replace(&mut values[slot], Val::Empty) {
            Val::Owned(t) => Some(t),
            Val::Shared(t) => Some(Arc::try_unwrap(t).unwrap_or_else(|shared| (*shared).clone())),
            Val::Empty => self.constants[slot].clone(),
        }
    }

    /// Every slot's value after running the steps in order, stopping once
    /// `until` (when given) holds its value. Operators read their inputs in
    /// place (constants stay in the plan, inputs stay shared) and their
    /// outputs are owned by the run: no reference count is touched per step.
    fn execute(&self, inputs: Vec<Arc<Tensor>>, until: Option<usize>) -> Result<Vec<Val>, InferError> {
        let mut values: Vec<Val> = (0..self.slots).map(|_| Val::Empty).collect();
        for (s, t) in self.input_slots.iter().zip(inputs) {
            values[*s] = Val::Shared(t);
        }
        for step in &self.steps {
            if until.is_some_and(|u| self.get(&values, u).is_some()) {
                break;
            }
            let outs = {
                let args: SmallVec<[Option<&Tensor>; 8]> =
                    step.inputs.iter().map(|i| i.and_then(|s| self.get(&values, s))).collect();
                exec(&step.op, &args).map_err(|e| match e {
                    InferError::Input(m) => InferError::Input(format!("{}: {m}", step.name)),
                    InferError::Model(m) => InferError::Model(format!("{}: {m}", step.name)),
                    other => other,
                })?
            };
            for (s, t) in step.outputs.iter().zip(outs) {
                values[*s] = Val::Owned(t);
            }
        }
        Ok(values)
    }
}

/// A slot's value during one run.
enum Val {
    Empty,
    Shared(Arc<Tensor>),
    Owned(Tensor),
}

fn node_label(n: &NodeProto) -> String {
    if n.name.is_empty() { n.op_type.clone() } else { format!("{} ({})", n.op_type, n.name) }
}

fn compile_op(node: &NodeProto, opsets: Opsets) -> Result<Op, InferError> {
    let a = Attrs { op: &node.op_type, list: &node.attribute };
    let domain = node.domain.as_str();
    if !supports(domain, &node.op_type) {
        return Err(InferError::Unsupported(format!(
            "operator {}{} is not supported by the native executor",
            if domain.is_empty() { String::new() } else { format!("{domain}:") },
            node.op_type
        )));
    }
    Ok(match node.op_type.as_str() {
        "Identity" => Op::Identity,
        "Cast" => Op::Cast(
            DType::from_onnx(a.int_or("to", 0) as i32)
                .ok_or_else(|| InferError::Unsupported(format!("Cast to ONNX type {}", a.int_or("to", 0))))?,
        ),
        "MatMul" => Op::MatMul,
        "Gemm" => Op::Gemm {
            alpha: a.float_or("alpha", 1.0),
            beta: a.float_or("beta", 1.0),
            trans_a: a.int_or("transA", 0) != 0,
            trans_b: a.int_or("transB", 0) != 0,
        },
        "Add" => Op::Binary(Binary::Add),
        "Sub" => Op::Binary(Binary::Sub),
        "Mul" => Op::Binary(Binary::Mul),
        "Div" => Op::Binary(Binary::Div),
        "Relu" => Op::Unary(Unary::Relu),
        "Sigmoid" => Op::Unary(Unary::Sigmoid),
        "Tanh" => Op::Unary(Unary::Tanh),
        "Exp" => Op::Unary(Unary::Exp),
        "Log" => Op::Unary(Unary::Log),
        "Abs" => Op::Unary(Unary::Abs),
        "Neg" => Op::Unary(Unary::Neg),
        "Sqrt" => Op::Unary(Unary::Sqrt),
        "Softmax" => {
            let legacy = opsets.onnx < 13;
            Op::Softmax { axis: a.int_or("axis", if legacy { 1 } else { -1 }), legacy }
        }
        "Concat" => Op::Concat { axis: a.int_or("axis", 0) },
        "ArgMax" => Op::ArgMax {
            axis: a.int_or("axis", 0),
            keepdims: a.int_or("keepdims", 1) != 0,
            last: a.int_or("select_last_index", 0) != 0,
        },
        "Reshape" => Op::Reshape { allowzero: a.int_or("allowzero", 0) != 0 },
        "Flatten" => Op::Flatten { axis: a.int_or("axis", 1) },
        "ArrayFeatureExtractor" => Op::ArrayFeatureExtractor,
        "Gather" => Op::Gather { axis: a.int_or("axis", 0) },
        "Equal" => Op::Equal,
        "LabelEncoder" => Op::LabelEncoder(crate::features::LabelEncoder::compile(&a)?),
        "Imputer" => Op::Imputer(crate::features::Imputer::compile(&a)?),
        "OneHotEncoder" => Op::OneHot(crate::features::OneHot::compile(&a)?),
        "ZipMap" => Op::ZipMap,
        "LinearClassifier" => {
            let coef = a.floats_or_empty("coefficients").to_vec();
            let intercepts = a.floats_or_empty("intercepts").to_vec();
            let labels = a.labels()?;
            if intercepts.is_empty() || coef.is_empty() || !coef.len().is_multiple_of(intercepts.len()) {
                return Err(InferError::Model(
                    "LinearClassifier: coefficients do not divide into one row per intercept".into(),
                ));
            }
            if intercepts.len() > 1 && labels.len() != intercepts.len() {
                return Err(InferError::Model("LinearClassifier: one label per class is needed".into()));
            }
            Op::LinearClassifier {
                coef,
                intercepts,
                labels,
                post: PostTransform::parse(&a.string_or("post_transform", "NONE"))?,
            }
        }
        "LinearRegressor" => {
            let coef = a.floats_or_empty("coefficients").to_vec();
            let targets = usize::try_from(a.int_or("targets", 1)).unwrap_or(0);
            let intercepts = a.floats_or_empty("intercepts").to_vec();
            if targets == 0
                || coef.is_empty()
                || !coef.len().is_multiple_of(targets)
                || !(intercepts.is_empty() || intercepts.len() == targets)
            {
                return Err(InferError::Model("LinearRegressor: coefficients, intercepts and targets disagree".into()));
            }
            Op::LinearRegressor {
                coef,
                intercepts,
                targets,
                post: PostTransform::parse(&a.string_or("post_transform", "NONE"))?,
            }
        }
        "Normalizer" => Op::Normalizer(match a.string_or("norm", "MAX").as_str() {
            "MAX" => Norm::Max,
            "L1" => Norm::L1,
            "L2" => Norm::L2,
            other => return Err(InferError::Model(format!("Normalizer: unknown norm {other}"))),
        }),
        "Scaler" => {
            Op::Scaler { offset: a.floats_or_empty("offset").to_vec(), scale: a.floats_or_empty("scale").to_vec() }
        }
        "TreeEnsembleClassifier" => {
            let labels = a.labels()?;
            Op::TreeClassifier { ensemble: Ensemble::compile(&a, "class", labels.len())?, labels }
        }
        "TreeEnsembleRegressor" => {
            let n = usize::try_from(a.int_or("n_targets", 1)).unwrap_or(0);
            Op::TreeRegressor(Ensemble::compile(&a, "target", n)?)
        }
        other => return Err(InferError::Unsupported(format!("operator {other}"))),
    })
}

/// Decodes an initializer or attribute tensor (inline data only).
pub fn decode_tensor(t: &TensorProto) -> Result<Tensor, InferError> {
    if t.data_location == 1 || !t.external_data.is_empty() {
        return Err(InferError::Model(format!("tensor {} keeps its data outside the model file; not served", t.name)));
    }
    let shape: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| InferError::Model(format!("tensor {} has a negative dimension", t.name)))
        })
        .collect::<Result<_, _>>()?;
    let n = element_count(&shape)?;
    if n > MAX_CONSTANT_ELEMENTS {
        return Err(InferError::Model(format!("tensor {} is too large", t.name)));
    }
    let dtype = DType::from_onnx(t.data_type)
        .ok_or_else(|| InferError::Unsupported(format!("tensor {} has ONNX type {}", t.name, t.data_type)))?;
    let raw = &t.raw_data;
    let from_raw = !raw.is_empty();
    if let Some(w) = dtype.width()
        && from_raw
        && raw.len() != n * w
    {
        return Err(InferError::Model(format!("tensor {}: {} raw bytes for {n} elements", t.name, raw.len())));
    }
    let data = match dtype {
        DType::F32 if from_raw => {
            Data::F32(raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
        }
        DType::F32 => Data::F32(t.float_data.clone()),
        DType::F64 if from_raw => {
            Data::F64(raw.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect())
        }
        DType::F64 => Data::F64(t.double_data.clone()),
        DType::I32 if from_raw => {
            Data::I32(raw.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
        }
        DType::I32 => Data::I32(t.int32_data.clone()),
        DType::I64 if from_raw => {
            Data::I64(raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect())
        }
        DType::I64 => Data::I64(t.int64_data.clone()),
        DType::Bool if from_raw => Data::Bool(raw.iter().map(|&b| b != 0).collect()),
        DType::Bool => Data::Bool(t.int32_data.iter().map(|&b| b != 0).collect()),
        DType::Str => Data::Str(t.string_data.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect()),
    };
    Tensor::new(shape, data).map_err(|_| InferError::Model(format!("tensor {}: data does not match its shape", t.name)))
}

fn arg<'a>(args: &[Option<&'a Tensor>], i: usize) -> Result<&'a Tensor, InferError> {
    args.get(i).copied().flatten().ok_or_else(|| InferError::Model(format!("input {i} is missing")))
}

/// One operator's outputs (one, or a classifier's two).
type Outs = SmallVec<[Tensor; 2]>;

fn exec(op: &Op, args: &[Option<&Tensor>]) -> Result<Outs, InferError> {
    let x = arg(args, 0)?;
    Ok(match op {
        Op::Identity | Op::ZipMap => smallvec![x.clone()],
        Op::Cast(to) => smallvec![cast(x, *to)?],
        Op::MatMul => smallvec![matmul(x, arg(args, 1)?)?],
        Op::Gemm { alpha, beta, trans_a, trans_b } => {
            smallvec![gemm(x, arg(args, 1)?, args.get(2).copied().flatten(), *alpha, *beta, *trans_a, *trans_b)?]
        }
        Op::Binary(b) => smallvec![binary(*b, x, arg(args, 1)?)?],
        Op::Unary(u) => smallvec![unary(*u, x)?],
        Op::Softmax { axis, legacy } => smallvec![softmax(x, *axis, *legacy)?],
        Op::Concat { axis } => smallvec![concat(args, *axis)?],
        Op::ArgMax { axis, keepdims, last } => smallvec![argmax(x, *axis, *keepdims, *last)?],
        Op::Reshape { allowzero } => smallvec![reshape(x, arg(args, 1)?, *allowzero)?],
        Op::Flatten { axis } => {
            let axis = norm_axis(*axis, x.shape.len() + 1)?;
            let outer = element_count(&x.shape[..axis])?;
            let inner = element_count(&x.shape[axis..])?;
            smallvec![Tensor { shape: vec![outer, inner], data: x.data.clone() }]
        }
        Op::ArrayFeatureExtractor => smallvec![array_feature_extractor(x, arg(args, 1)?)?],
        Op::Gather { axis } => smallvec![crate::features::gather(x, arg(args, 1)?, *axis)?],
        Op::Equal => smallvec![crate::features::equal(x, arg(args, 1)?)?],
        Op::LabelEncoder(e) => smallvec![e.run(x)?],
        Op::Imputer(i) => smallvec![i.run(x)?],
        Op::OneHot(o) => smallvec![o.run(x)?],
        Op::LinearClassifier { coef, intercepts, labels, post } => {
            linear_classifier(x, coef, intercepts, labels, *post)?.into()
        }
        Op::LinearRegressor { coef, intercepts, targets, post } => {
            let (rows, cols, v) = rows_of(x)?;
            let k = *targets;
            check_cols(cols, coef.len() / k)?;
            let mut out = linear(&v, rows, cols, coef, intercepts, k);
            if k > 1 || *post == PostTransform::Probit {
                out.chunks_mut(k).for_each(|r| post.apply(r));
            }
            smallvec![Tensor { shape: vec![rows, k], data: Data::F32(out) }]
        }
        Op::Normalizer(norm) => {
            let (rows, cols, mut v) = rows_of(x)?;
            for r in v.chunks_mut(cols.max(1)) {
                let d = match norm {
                    Norm::Max => r.iter().copied().fold(f32::MIN, f32::max),
                    Norm::L1 => r.iter().map(|x| x.abs()).sum(),
                    Norm::L2 => r.iter().map(|x| x * x).sum::<f32>().sqrt(),
                };
                if d != 0.0 {
                    r.iter_mut().for_each(|x| *x /= d);
                }
            }
            smallvec![Tensor { shape: vec![rows, cols], data: Data::F32(v) }]
        }
        Op::Scaler { offset, scale } => {
            let (rows, cols, mut v) = rows_of(x)?;
            for r in v.chunks_mut(cols.max(1)) {
                for (j, x) in r.iter_mut().enumerate() {
                    let o = if offset.len() == 1 { offset[0] } else { offset.get(j).copied().unwrap_or(0.0) };
                    let s = if scale.len() == 1 { scale[0] } else { scale.get(j).copied().unwrap_or(1.0) };
                    *x = (*x - o) * s;
                }
            }
            smallvec![Tensor { shape: vec![rows, cols], data: Data::F32(v) }]
        }
        Op::TreeClassifier { ensemble, labels } => {
            let (rows, cols, v) = rows_of(x)?;
            check_features(cols, ensemble.max_feature)?;
            let (idx, scores) = ensemble.classify(&v, rows, cols);
            smallvec![
                Tensor { shape: vec![rows], data: labels.pick(&idx) },
                Tensor { shape: vec![rows, ensemble.n_outputs], data: Data::F32(scores) },
            ]
        }
        Op::TreeRegressor(ensemble) => {
            let (rows, cols, v) = rows_of(x)?;
            check_features(cols, ensemble.max_feature)?;
            smallvec![Tensor {
                shape: vec![rows, ensemble.n_outputs],
                data: Data::F32(ensemble.regress(&v, rows, cols))
            }]
        }
    })
}

fn check_features(cols: usize, needed: usize) -> Result<(), InferError> {
    if cols < needed {
        return Err(InferError::Input(format!("the model reads {needed} features, the input has {cols}")));
    }
    Ok(())
}

fn check_cols(cols: usize, needed: usize) -> Result<(), InferError> {
    if cols != needed {
        return Err(InferError::Input(format!("the model takes {needed} features, the input has {cols}")));
    }
    Ok(())
}

/// A 1-D or 2-D numeric tensor as (rows, columns, f32 values), as ONNX-ML operators read their input.
fn rows_of(x: &Tensor) -> Result<(usize, usize, Vec<f32>), InferError> {
    let (rows, cols) = match x.shape.as_slice() {
        [c] => (1, *c),
        [r, c] => (*r, *c),
        other => return Err(InferError::Input(format!("expected a 1-D or 2-D tensor, got shape {other:?}"))),
    };
    Ok((rows, cols, x.to_f32()?))
}

fn linear(v: &[f32], rows: usize, cols: usize, coef: &[f32], intercepts: &[f32], k: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows * k];
    for r in 0..rows {
        let row = &v[r * cols..(r + 1) * cols];
        for c in 0..k {
            let w = &coef[c * cols..(c + 1) * cols];
            let mut s = intercepts.get(c).copied().unwrap_or(0.0);
            for (a, b) in row.iter().zip(w) {
                s += a * b;
            }
            out[r * k + c] = s;
        }
    }
    out
}

fn linear_classifier(
    x: &Tensor,
    coef: &[f32],
    intercepts: &[f32],
    labels: &Labels,
    post: PostTransform,
) -> Result<Vec<Tensor>, InferError> {
    let (rows, cols, v) = rows_of(x)?;
    let k = intercepts.len();
    check_cols(cols, coef.len() / k)?;
    let scores = linear(&v, rows, cols, coef, intercepts, k);
    if k == 1 {
        // One score per row: onnxruntime labels by its sign and, with two labels, writes two columns.
        let idx: Vec<usize> = scores.iter().map(|&s| usize::from(s > 0.0)).collect();
        let label = match labels {
            Labels::Ints(l) if l.len() == 2 => Data::I64(idx.iter().map(|&i| l[i]).collect()),
            Labels::Strs(l) if l.len() == 2 => Data::Str(idx.iter().map(|&i| l[i].clone()).collect()),
            Labels::Strs(_) => Data::Str(idx.iter().map(|i| i.to_string()).collect()),
            Labels::Ints(_) => Data::I64(idx.iter().map(|&i| i as i64).collect()),
        };
        let two = labels.len() == 2;
        let mut out = Vec::with_capacity(rows * 2);
        for &s in &scores {
            if two {
                let p = match post {
                    PostTransform::Logistic => logistic(s),
                    PostTransform::Probit => probit(s),
                    _ => s,
                };
                out.extend(binary_scores(p, PostTransform::None, 0));
            } else {
                let mut one = [s];
                post.apply(&mut one);
                out.push(one[0]);
            }
        }
        let width = if two { 2 } else { 1 };
        return Ok(vec![
            Tensor { shape: vec![rows], data: label },
            Tensor { shape: vec![rows, width], data: Data::F32(out) },
        ]);
    }
    let mut idx = Vec::with_capacity(rows);
    let mut out = scores;
    for r in out.chunks_mut(k) {
        let mut best = 0;
        for j in 1..k {
            if r[j] > r[best] {
                best = j;
            }
        }
        idx.push(best);
        post.apply(r);
    }
    Ok(vec![
        Tensor { shape: vec![rows], data: labels.pick(&idx) },
        Tensor { shape: vec![rows, k], data: Data::F32(out) },
    ])
}

fn cast(x: &Tensor, to: DType) -> Result<Tensor, InferError> {
    if x.dtype() == to {
        return Ok(x.clone());
    }
    let data = match to {
        DType::F32 => Data::F32(x.to_f32()?),
        DType::F64 => Data::F64(match &x.data {
            Data::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            _ => x.to_i64()?.into_iter().map(|x| x as f64).collect(),
        }),
        DType::I64 => Data::I64(x.to_i64()?),
        DType::I32 => Data::I32(x.to_i64()?.into_iter().map(|x| x as i32).collect()),
        DType::Bool => Data::Bool(x.to_f32()?.into_iter().map(|x| x != 0.0).collect()),
        DType::Str => Data::Str(match &x.data {
            Data::I64(v) => v.iter().map(|x| x.to_string()).collect(),
            Data::I32(v) => v.iter().map(|x| x.to_string()).collect(),
            _ => return Err(InferError::Unsupported("Cast of floats to strings".into())),
        }),
    };
    Ok(Tensor { shape: x.shape.clone(), data })
}

fn matrix(t: &Tensor) -> Result<(usize, usize, Vec<f32>), InferError> {
    match t.shape.as_slice() {
        [r, c] => Ok((*r, *c, t.to_f32()?)),
        [c] => Ok((1, *c, t.to_f32()?)),
        other => Err(InferError::Unsupported(format!("matrix products of rank {} (shape {other:?})", other.len()))),
    }
}

fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor, InferError> {
    let (m, k, av) = matrix(a)?;
    let (k2, n, bv) = match b.shape.as_slice() {
        [c] => (*c, 1, b.to_f32()?),
        _ => matrix(b)?,
    };
    if k != k2 {
        return Err(InferError::Input(format!("MatMul of {:?} by {:?}", a.shape, b.shape)));
    }
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        let o = &mut out[i * n..(i + 1) * n];
        for p in 0..k {
            let x = av[i * k + p];
            let row = &bv[p * n..(p + 1) * n];
            for (dst, w) in o.iter_mut().zip(row) {
                *dst += x * w;
            }
        }
    }
    Tensor::f32(vec![m, n], out)
}

fn gemm(
    a: &Tensor,
    b: &Tensor,
    c: Option<&Tensor>,
    alpha: f32,
    beta: f32,
    ta: bool,
    tb: bool,
) -> Result<Tensor, InferError> {
    let (ar, ac, av) = matrix(a)?;
    let (br, bc, bv) = matrix(b)?;
    let (m, k) = if ta { (ac, ar) } else { (ar, ac) };
    let (k2, n) = if tb { (bc, br) } else { (br, bc) };
    if k != k2 {
        return Err(InferError::Input(format!("Gemm of {:?} by {:?}", a.shape, b.shape)));
    }
    let at = |i: usize, p: usize| if ta { av[p * ac + i] } else { av[i * ac + p] };
    let bt = |p: usize, j: usize| if tb { bv[j * bc + p] } else { bv[p * bc + j] };
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f32;
            for p in 0..k {
                s += at(i, p) * bt(p, j);
            }
            out[i * n + j] = alpha * s;
        }
    }
    let mut t = Tensor::f32(vec![m, n], out)?;
    if let Some(c) = c
        && beta != 0.0
    {
        let scaled =
            Tensor { shape: c.shape.clone(), data: Data::F32(c.to_f32()?.into_iter().map(|x| x * beta).collect()) };
        t = binary(Binary::Add, &t, &scaled)?;
    }
    Ok(t)
}

/// The broadcast shape of two shapes (numpy rules).
pub(crate) fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, InferError> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
        let db = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(InferError::Input(format!("shapes {a:?} and {b:?} do not broadcast")));
        };
    }
    Ok(out)
}

/// For each output index, the index into a tensor of `shape` broadcast to `out`.
pub(crate) fn broadcast_index(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let total: usize = out.iter().product();
    if shape == out {
        return (0..total).collect();
    }
    let offset = out.len() - shape.len();
    let mut strides = vec![0usize; out.len()];
    let mut s = 1;
    for i in (0..shape.len()).rev() {
        strides[i + offset] = if shape[i] == 1 { 0 } else { s };
        s *= shape[i];
    }
    let mut idx = Vec::with_capacity(total);
    let mut counter = vec![0usize; out.len()];
    for _ in 0..total {
        idx.push(counter.iter().zip(&strides).map(|(c, s)| c * s).sum());
        for d in (0..out.len()).rev() {
            counter[d] += 1;
            if counter[d] < out[d] {
                break;
            }
            counter[d] = 0;
        }
    }
    idx
}

/// How the elements of two broadcast operands pair up: by strides when the
/// result has at most two dimensions (no index vectors to build: the common
/// case, rows × features), else by index vectors.
pub(crate) enum Pairing {
    Strided { rows: usize, cols: usize, a: (usize, usize), b: (usize, usize) },
    Indexed(Vec<usize>, Vec<usize>),
}

impl Pairing {
    /// The pairing of operands shaped `a` and `b` broadcast to `out`.
    pub(crate) fn of(a: &[usize], b: &[usize], out: &[usize]) -> Pairing {
        if out.len() > 2 {
            return Pairing::Indexed(broadcast_index(a, out), broadcast_index(b, out));
        }
        // (rows, cols) of a shape of rank ≤ 2, right-aligned as numpy aligns it.
        let dims = |s: &[usize]| match s {
            [] => (1, 1),
            [c] => (1, *c),
            [.., r, c] => (*r, *c),
        };
        let strides = |s: &[usize]| {
            let (r, c) = dims(s);
            (if r == 1 { 0 } else { c }, if c == 1 { 0 } else { 1 })
        };
        let (rows, cols) = dims(out);
        Pairing::Strided { rows, cols, a: strides(a), b: strides(b) }
    }

    pub(crate) fn map<T, U>(&self, x: &[T], y: &[T], f: impl Fn(&T, &T) -> U) -> Vec<U> {
        match self {
            Pairing::Strided { rows, cols, a, b } => {
                let mut out = Vec::with_capacity(rows * cols);
                for r in 0..*rows {
                    for c in 0..*cols {
                        out.push(f(&x[r * a.0 + c * a.1], &y[r * b.0 + c * b.1]));
                    }
                }
                out
            }
            Pairing::Indexed(ia, ib) => ia.iter().zip(ib).map(|(&i, &j)| f(&x[i], &y[j])).collect(),
        }
    }
}

fn binary(op: Binary, a: &Tensor, b: &Tensor) -> Result<Tensor, InferError> {
    let shape = broadcast_shape(&a.shape, &b.shape)?;
    element_count(&shape)?;
    let pairing = Pairing::of(&a.shape, &b.shape, &shape);
    fn go<T: Copy>(x: &[T], y: &[T], p: &Pairing, f: impl Fn(T, T) -> T) -> Vec<T> {
        p.map(x, y, |&a, &b| f(a, b))
    }
    let data = match (&a.data, &b.data) {
        (Data::F32(x), Data::F32(y)) => Data::F32(match op {
            Binary::Add => go(x, y, &pairing, |p, q| p + q),
            Binary::Sub => go(x, y, &pairing, |p, q| p - q),
            Binary::Mul => go(x, y, &pairing, |p, q| p * q),
            Binary::Div => go(x, y, &pairing, |p, q| p / q),
        }),
        (Data::F64(x), Data::F64(y)) => Data::F64(match op {
            Binary::Add => go(x, y, &pairing, |p, q| p + q),
            Binary::Sub => go(x, y, &pairing, |p, q| p - q),
            Binary::Mul => go(x, y, &pairing, |p, q| p * q),
            Binary::Div => go(x, y, &pairing, |p, q| p / q),
        }),
        (Data::I64(x), Data::I64(y)) => Data::I64(match op {
            Binary::Add => go(x, y, &pairing, i64::wrapping_add),
            Binary::Sub => go(x, y, &pairing, i64::wrapping_sub),
            Binary::Mul => go(x, y, &pairing, i64::wrapping_mul),
            Binary::Div => go(x, y, &pairing, |p, q| if q == 0 { 0 } else { p.wrapping_div(q) }),
        }),
        _ => {
            return Err(InferError::Input(format!("arithmetic on {:?} and {:?}", a.dtype(), b.dtype())));
        }
    };
    Ok(Tensor { shape, data })
}

fn unary(op: Unary, x: &Tensor) -> Result<Tensor, InferError> {
    let v = match &x.data {
        Data::F32(v) => v,
        _ => return Err(InferError::Input(format!("{op:?} of {:?}", x.dtype()))),
    };
    let f: fn(f32) -> f32 = match op {
        Unary::Relu => |x| x.max(0.0),
        Unary::Sigmoid => logistic,
        Unary::Tanh => f32::tanh,
        Unary::Exp => f32::exp,
        Unary::Log => f32::ln,
        Unary::Abs => f32::abs,
        Unary::Neg => |x| -x,
        Unary::Sqrt => f32::sqrt,
    };
    Ok(Tensor { shape: x.shape.clone(), data: Data::F32(v.iter().map(|&x| f(x)).collect()) })
}

pub(crate) fn norm_axis(axis: i64, rank: usize) -> Result<usize, InferError> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r.max(1) {
        return Err(InferError::Input(format!("axis {axis} is out of range for rank {rank}")));
    }
    Ok(a as usize)
}

fn softmax(x: &Tensor, axis: i64, legacy: bool) -> Result<Tensor, InferError> {
    let mut v = x.to_f32()?;
    let rank = x.shape.len();
    let axis = norm_axis(axis, rank)?;
    if legacy || axis == rank - 1 {
        let inner = element_count(&x.shape[axis..])?.max(1);
        v.chunks_mut(inner).for_each(softmax_row);
    } else {
        let outer = element_count(&x.shape[..axis])?;
        let n = x.shape[axis];
        let inner = element_count(&x.shape[axis + 1..])?;
        let mut buf = vec![0f32; n];
        for o in 0..outer {
            for i in 0..inner {
                for j in 0..n {
                    buf[j] = v[(o * n + j) * inner + i];
                }
                softmax_row(&mut buf);
                for j in 0..n {
                    v[(o * n + j) * inner + i] = buf[j];
                }
            }
        }
    }
    Ok(Tensor { shape: x.shape.clone(), data: Data::F32(v) })
}

fn concat(args: &[Option<&Tensor>], axis: i64) -> Result<Tensor, InferError> {
    let parts: SmallVec<[&Tensor; 16]> = args.iter().filter_map(|a| *a).collect();
    let first = parts.first().ok_or_else(|| InferError::Model("Concat without inputs".into()))?;
    let rank = first.shape.len();
    let axis = norm_axis(axis, rank)?;
    for p in &parts {
        if p.shape.len() != rank
            || p.dtype() != first.dtype()
            || p.shape.iter().enumerate().any(|(i, &d)| i != axis && d != first.shape[i])
        {
            return Err(InferError::Input(format!("Concat of {:?} and {:?}", first.shape, p.shape)));
        }
    }
    let outer = element_count(&first.shape[..axis])?;
    let mut shape = first.shape.clone();
    shape[axis] = parts.iter().map(|p| p.shape[axis]).sum();
    macro_rules! cat {
        ($variant:ident) => {{
            let mut out = Vec::with_capacity(element_count(&shape)?);
            for o in 0..outer {
                for p in &parts {
                    let Data::$variant(v) = &p.data else { unreachable!() };
                    let chunk = element_count(&p.shape[axis..])?;
                    out.extend_from_slice(&v[o * chunk..(o + 1) * chunk]);
                }
            }
            Data::$variant(out)
        }};
    }
    let data = match first.dtype() {
        DType::F32 => cat!(F32),
        DType::F64 => cat!(F64),
        DType::I32 => cat!(I32),
        DType::I64 => cat!(I64),
        DType::Bool => cat!(Bool),
        DType::Str => cat!(Str),
    };
    Ok(Tensor { shape, data })
}

fn argmax(x: &Tensor, axis: i64, keepdims: bool, last: bool) -> Result<Tensor, InferError> {
    let v = x.to_f32()?;
    let axis = norm_axis(axis, x.shape.len())?;
    let outer = element_count(&x.shape[..axis])?;
    let n = x.shape[axis];
    let inner = element_count(&x.shape[axis + 1..])?;
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let mut best = 0usize;
            for j in 1..n {
                let (cur, b) = (v[(o * n + j) * inner + i], v[(o * n + best) * inner + i]);
                if cur > b || (last && cur == b) {
                    best = j;
                }
            }
            out.push(best as i64);
        }
    }
    let mut shape = x.shape.clone();
    if keepdims {
        shape[axis] = 1;
    } else {
        shape.remove(axis);
    }
    Ok(Tensor { shape, data: Data::I64(out) })
}

fn reshape(x: &Tensor, spec: &Tensor, allowzero: bool) -> Result<Tensor, InferError> {
    let spec = spec.to_i64()?;
    let total = x.len();
    let mut shape = Vec::with_capacity(spec.len());
    let mut infer_at = None;
    for (i, &d) in spec.iter().enumerate() {
        shape.push(match d {
            -1 if infer_at.is_none() => {
                infer_at = Some(i);
                1
            }
            0 if !allowzero => {
                *x.shape.get(i).ok_or_else(|| InferError::Input("Reshape copies a missing dimension".into()))?
            }
            d if d >= 0 => d as usize,
            _ => return Err(InferError::Input(format!("Reshape to {spec:?}"))),
        });
    }
    let known = element_count(&shape)?;
    if let Some(i) = infer_at {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(InferError::Input(format!("Reshape of {:?} to {spec:?}", x.shape)));
        }
        shape[i] = total / known;
    }
    if element_count(&shape)? != total {
        return Err(InferError::Input(format!("Reshape of {:?} to {spec:?}", x.shape)));
    }
    Ok(Tensor { shape, data: x.data.clone() })
}

fn array_feature_extractor(x: &Tensor, idx: &Tensor) -> Result<Tensor, InferError> {
    let idx = idx.to_i64()?;
    let last = *x.shape.last().ok_or_else(|| InferError::Input("ArrayFeatureExtractor of a scalar".into()))?;
    let picks: Vec<usize> = idx
        .iter()
        .map(|&i| {
            usize::try_from(i)
                .ok()
                .filter(|&i| i < last)
                .ok_or_else(|| InferError::Input(format!("index {i} outside 0..{last}")))
        })
        .collect::<Result<_, _>>()?;
    let rows = x.len() / last.max(1);
    let shape = if x.shape.len() == 1 {
        vec![1, picks.len()]
    } else {
        let mut s = x.shape[..x.shape.len() - 1].to_vec();
        s.push(picks.len());
        s
    };
    macro_rules! pick {
        ($variant:ident, $v:expr) => {{
            let mut out = Vec::with_capacity(rows * picks.len());
            for r in 0..rows {
                for &p in &picks {
                    out.push($v[r * last + p].clone());
                }
            }
            Data::$variant(out)
        }};
    }
    let data = match &x.data {
        Data::F32(v) => pick!(F32, v),
        Data::F64(v) => pick!(F64, v),
        Data::I32(v) => pick!(I32, v),
        Data::I64(v) => pick!(I64, v),
        Data::Bool(v) => pick!(Bool, v),
        Data::Str(v) => pick!(Str, v),
    };
    Ok(Tensor { shape, data })
}

#[cfg(test)]
mod pairing_tests {
    use super::*;

    #[test]
    fn strided_pairing_pairs_elements_as_index_vectors_do() {
        let shapes: [(&[usize], &[usize]); 9] = [
            (&[3, 4], &[3, 4]),
            (&[3, 1], &[4]),
            (&[3, 1], &[1, 4]),
            (&[1, 4], &[3, 1]),
            (&[3, 4], &[]),
            (&[], &[3, 4]),
            (&[4], &[1]),
            (&[1, 1], &[3, 4]),
            (&[5], &[5]),
        ];
        for (a, b) in shapes {
            let out = broadcast_shape(a, b).unwrap_or_else(|_| panic!("{a:?} {b:?}"));
            let (na, nb) = (element_count(a).unwrap_or(0), element_count(b).unwrap_or(0));
            let x: Vec<usize> = (0..na).collect();
            let y: Vec<usize> = (100..100 + nb).collect();
            let strided = Pairing::of(a, b, &out).map(&x, &y, |p, q| (*p, *q));
            let indexed =
                Pairing::Indexed(broadcast_index(a, &out), broadcast_index(b, &out)).map(&x, &y, |p, q| (*p, *q));
            assert_eq!(strided, indexed, "{a:?} with {b:?}");
        }
    }
}

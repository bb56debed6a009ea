//! Writing ONNX graphs of standard operators (opset 13), and of ONNX-ML
//! operators (opset 2) where one exists for the model (tree ensembles, the
//! feature encoder), so onnxruntime and citadel-infer run what the trainers
//! export.
//!
//! A model's [`Interface`] is what callers send and get back. With
//! [`Interface::Named`] the encoder lives inside the graph: one input per
//! training column, categories as strings turned into codes by ONNX-ML
//! `LabelEncoder`, missing numbers filled by `Imputer`, and the class name
//! as the label, so the served artifact is the whole model (signed and
//! scanned as one) and a caller cannot encode a row differently from
//! training.

use citadel_infer::proto::{
    AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TensorTypeProto, TypeProto, ValueInfoProto,
};
use prost::Message;

use crate::MlError;
use crate::encode::{FeatureEncoder, FeatureKind, MISSING, UNKNOWN_CODE};

pub const OPSET: i64 = 13;
const FLOAT: i32 = 1;
const INT64: i32 = 7;
const ATTR_FLOAT: i32 = 1;
const ATTR_INT: i32 = 2;
const ATTR_STRING: i32 = 3;
const ATTR_FLOATS: i32 = 6;
const ATTR_INTS: i32 = 7;
const ATTR_STRINGS: i32 = 8;
const STRING: i32 = 8;
/// The ONNX-ML operator set the exports use (LabelEncoder needs 2;
/// TreeEnsembleRegressor and Imputer are unchanged since 1).
pub const ML_OPSET: i64 = 2;

/// What a served model takes and gives.
#[derive(Debug, Clone, Copy)]
pub enum Interface<'a> {
    /// One float input `X` `[N, F]` of category codes and numbers, encoded
    /// by the caller with the model's encoder; `label` is the class index
    /// (int64, 1 = positive).
    Codes,
    /// One input per feature, named as its training column, shape `[N, 1]`:
    /// numeric features `FP32` (NaN is a missing value and becomes the
    /// training median, as in training), categorical ones `BYTES` (a
    /// category training never saw takes code -1, as training's encoder
    /// gives it; the empty string is the missing category). `label` is the
    /// class name (`BYTES`, `classes[1]` when the positive-class
    /// probability is above 0.5; the first most probable class of several).
    /// A regressor's `classes` is empty.
    Named { classes: &'a [String] },
}

/// The name of the internal features matrix `[N, F]` (category codes and
/// filled numbers) in a named-input graph: never an input, so a column
/// called `X` cannot collide with it; read by the gateway's `/explain`.
pub const FEATURES_VALUE: &str = "citadel/X";
/// Names a named-input graph gives its outputs; no feature may take them.
pub const OUTPUTS: [&str; 2] = ["label", "probabilities"];

#[derive(Debug)]
pub struct GraphBuilder<'a> {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    next: usize,
    /// Whether a node of the `ai.onnx.ml` domain was added.
    uses_ml: bool,
    encoder: &'a FeatureEncoder,
    interface: Interface<'a>,
    /// The graph's outputs: the model's tail adds them.
    outputs: Vec<ValueInfoProto>,
}

#[derive(Debug)]
pub enum Attr {
    Int(&'static str, i64),
    Str(&'static str, &'static str),
    Ints(&'static str, Vec<i64>),
    Floats(&'static str, Vec<f32>),
    Float(&'static str, f32),
    Strs(&'static str, Vec<&'static str>),
    Strings(&'static str, Vec<String>),
}

impl Attr {
    fn proto(self) -> AttributeProto {
        let base = |n: &str, t: i32| AttributeProto { name: n.into(), r#type: t, ..Default::default() };
        match self {
            Attr::Int(n, i) => AttributeProto { i, ..base(n, ATTR_INT) },
            Attr::Str(n, s) => AttributeProto { s: s.as_bytes().to_vec(), ..base(n, ATTR_STRING) },
            Attr::Ints(n, ints) => AttributeProto { ints, ..base(n, ATTR_INTS) },
            Attr::Floats(n, floats) => AttributeProto { floats, ..base(n, ATTR_FLOATS) },
            Attr::Float(n, f) => AttributeProto { f, ..base(n, ATTR_FLOAT) },
            Attr::Strs(n, v) => {
                AttributeProto { strings: v.iter().map(|s| s.as_bytes().to_vec()).collect(), ..base(n, ATTR_STRINGS) }
            }
            Attr::Strings(n, v) => {
                AttributeProto { strings: v.into_iter().map(String::into_bytes).collect(), ..base(n, ATTR_STRINGS) }
            }
        }
    }
}

impl<'a> GraphBuilder<'a> {
    /// A builder for a model over `encoder`'s features. With a named
    /// interface every feature must have a name no output takes.
    pub fn new(encoder: &'a FeatureEncoder, interface: Interface<'a>) -> Result<GraphBuilder<'a>, MlError> {
        if let Interface::Named { .. } = interface
            && let Some(f) =
                encoder.features.iter().find(|f| OUTPUTS.contains(&f.name.as_str()) || f.name.starts_with("citadel/"))
        {
            return Err(MlError::Column {
                column: f.name.clone(),
                detail: format!(
                    "has the name of one of the served model's outputs ({}) — hint: rename the column in the data",
                    OUTPUTS.join(", ")
                ),
            });
        }
        Ok(GraphBuilder {
            nodes: Vec::new(),
            initializers: Vec::new(),
            next: 0,
            uses_ml: false,
            encoder,
            interface,
            outputs: Vec::new(),
        })
    }

    /// The name of the features matrix `[N, F]` the model's body reads.
    pub fn x(&self) -> &'static str {
        match self.interface {
            Interface::Codes => "X",
            Interface::Named { .. } => FEATURES_VALUE,
        }
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.next += 1;
        format!("citadel/{hint}_{}", self.next)
    }

    pub fn f32s(&mut self, hint: &str, dims: &[i64], data: Vec<f32>) -> String {
        let name = self.fresh(hint);
        self.initializers.push(TensorProto {
            dims: dims.to_vec(),
            data_type: FLOAT,
            float_data: data,
            name: name.clone(),
            ..Default::default()
        });
        name
    }

    pub fn i64s(&mut self, hint: &str, dims: &[i64], data: Vec<i64>) -> String {
        let name = self.fresh(hint);
        self.initializers.push(TensorProto {
            dims: dims.to_vec(),
            data_type: INT64,
            int64_data: data,
            name: name.clone(),
            ..Default::default()
        });
        name
    }

    /// Adds a node with one output; returns the output's name.
    pub fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<Attr>) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.op_named(op, inputs, &out, attrs);
        out
    }

    pub fn op_named(&mut self, op: &str, inputs: &[&str], output: &str, attrs: Vec<Attr>) {
        self.node("", op, inputs, output, attrs);
    }

    /// Adds a node of the ONNX-ML domain (`ai.onnx.ml`); returns its output's name.
    pub fn ml_op(&mut self, op: &str, inputs: &[&str], attrs: Vec<Attr>) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.uses_ml = true;
        self.node("ai.onnx.ml", op, inputs, &out, attrs);
        out
    }

    fn node(&mut self, domain: &str, op: &str, inputs: &[&str], output: &str, attrs: Vec<Attr>) {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            name: format!("n{}", self.nodes.len()),
            op_type: op.into(),
            domain: domain.into(),
            attribute: attrs.into_iter().map(Attr::proto).collect(),
        });
    }

    /// Adds the standard classifier tail to a `[N, 1]` positive-class
    /// probability: `probabilities` `[N, 2]` and `label` `[N]` (int64 class
    /// index, 1 = positive, or the class name), as skl2onnx names them.
    pub fn classifier_outputs(&mut self, p1: &str) {
        let one = self.f32s("one", &[], vec![1.0]);
        let p0 = self.op("Sub", &[&one, p1], vec![]);
        self.op_named("Concat", &[&p0, p1], "probabilities", vec![Attr::Int("axis", 1)]);
        self.label_outputs(2);
    }

    /// The tail of a model fitted to `objective`, on its raw scores: the
    /// logistic and [`Self::classifier_outputs`], the softmax and
    /// [`Self::multiclass_outputs`], or [`Self::regression_outputs`].
    pub fn objective_outputs(&mut self, objective: crate::gbt::Objective, raw: &str) {
        match objective {
            crate::gbt::Objective::Binary => {
                let p1 = self.op("Sigmoid", &[raw], vec![]);
                self.classifier_outputs(&p1);
            }
            crate::gbt::Objective::Multiclass { classes } => self.multiclass_outputs(raw, classes),
            crate::gbt::Objective::Squared => self.regression_outputs(raw),
        }
    }

    /// The multi-class tail on raw scores `[N, K]`: `probabilities` by
    /// softmax, and `label`.
    pub fn multiclass_outputs(&mut self, scores: &str, classes: usize) {
        self.op_named("Softmax", &[scores], "probabilities", vec![Attr::Int("axis", 1)]);
        self.label_outputs(classes);
    }

    /// A regressor's tail: `predictions` `[N, 1]`.
    pub fn regression_outputs(&mut self, predictions: &str) {
        self.op_named("Identity", &[predictions], "predictions", vec![]);
        self.outputs
            .push(ValueInfoProto { name: "predictions".into(), r#type: Some(tensor(FLOAT, vec![batch(), fixed(1)])) });
    }

    /// `label` from `probabilities` `[N, classes]`, and both as outputs.
    fn label_outputs(&mut self, classes: usize) {
        let label = match self.interface {
            Interface::Codes => {
                self.op_named(
                    "ArgMax",
                    &["probabilities"],
                    "label",
                    vec![Attr::Int("axis", 1), Attr::Int("keepdims", 0)],
                );
                tensor(INT64, vec![batch()])
            }
            Interface::Named { classes: names } => {
                let idx = self.op("ArgMax", &["probabilities"], vec![Attr::Int("axis", 1), Attr::Int("keepdims", 0)]);
                self.uses_ml = true;
                self.node(
                    "ai.onnx.ml",
                    "LabelEncoder",
                    &[&idx],
                    "label",
                    vec![
                        Attr::Ints("keys_int64s", (0..names.len() as i64).collect()),
                        Attr::Strings("values_strings", names.to_vec()),
                        Attr::Str("default_string", ""),
                    ],
                );
                tensor(STRING, vec![batch()])
            }
        };
        self.outputs.push(ValueInfoProto { name: "label".into(), r#type: Some(label) });
        self.outputs.push(ValueInfoProto {
            name: "probabilities".into(),
            r#type: Some(tensor(FLOAT, vec![batch(), fixed(classes as i64)])),
        });
    }

    /// The nodes that turn the named inputs into the features matrix, each
    /// feature as training's encoder turns it (`FeatureEncoder::encode`).
    fn named_prefix(&mut self) -> Vec<ValueInfoProto> {
        let mut inputs = Vec::new();
        let mut parts = Vec::new();
        for f in &self.encoder.features {
            let column = |elem: i32| ValueInfoProto {
                name: f.name.clone(),
                r#type: Some(tensor(elem, vec![batch(), fixed(1)])),
            };
            match &f.kind {
                FeatureKind::Numeric { fill, .. } => {
                    inputs.push(column(FLOAT));
                    parts.push(self.ml_op(
                        "Imputer",
                        &[&f.name],
                        vec![
                            Attr::Floats("imputed_value_floats", vec![*fill as f32]),
                            Attr::Float("replaced_value_float", f32::NAN),
                        ],
                    ));
                }
                FeatureKind::Categorical { categories } => {
                    inputs.push(column(STRING));
                    let mut keys = categories.clone();
                    let mut codes: Vec<f32> = (0..categories.len()).map(|k| k as f32).collect();
                    // A missing value arrives as the empty string (JSON null, an empty CSV cell).
                    if let Some(m) = categories.iter().position(|c| c == MISSING)
                        && !categories.iter().any(|c| c.is_empty())
                    {
                        keys.push(String::new());
                        codes.push(m as f32);
                    }
                    parts.push(self.ml_op(
                        "LabelEncoder",
                        &[&f.name],
                        vec![
                            Attr::Strings("keys_strings", keys),
                            Attr::Floats("values_floats", codes),
                            Attr::Float("default_float", UNKNOWN_CODE),
                        ],
                    ));
                }
            }
        }
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        self.op_named("Concat", &refs, FEATURES_VALUE, vec![Attr::Int("axis", 1)]);
        inputs
    }

    /// The finished model (inputs and outputs as its [`Interface`] says);
    /// `metadata` is stored as ONNX metadata properties, with
    /// `citadel.inputs` (each input's kind, categories, range and fill, for
    /// the served metadata) added for a named interface.
    pub fn finish(mut self, doc: &str, mut metadata: Vec<(String, String)>) -> Vec<u8> {
        let features = self.encoder.features.len();
        let input = match self.interface {
            Interface::Codes => vec![ValueInfoProto {
                name: "X".into(),
                r#type: Some(tensor(FLOAT, vec![batch(), fixed(features as i64)])),
            }],
            Interface::Named { .. } => {
                let body = self.nodes.len();
                let inputs = self.named_prefix();
                // The prefix runs first: ONNX wants nodes in topological order.
                let prefix = self.nodes.len() - body;
                self.nodes.rotate_right(prefix);
                metadata.push(("citadel.inputs".into(), input_schema(self.encoder).to_string()));
                inputs
            }
        };
        let graph = GraphProto {
            node: self.nodes,
            name: "citadel".into(),
            initializer: self.initializers,
            input,
            output: self.outputs,
        };
        let model = ModelProto {
            ir_version: 7,
            opset_import: std::iter::once(OperatorSetIdProto { domain: String::new(), version: OPSET })
                .chain(self.uses_ml.then(|| OperatorSetIdProto { domain: "ai.onnx.ml".into(), version: ML_OPSET }))
                .collect(),
            producer_name: "citadel".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(graph),
            doc_string: doc.into(),
            metadata_props: metadata.into_iter().map(|(key, value)| StringStringEntryProto { key, value }).collect(),
        };
        model.encode_to_vec()
    }
}

fn tensor(elem: i32, dims: Vec<Dimension>) -> TypeProto {
    TypeProto {
        tensor_type: Some(TensorTypeProto { elem_type: elem, shape: Some(TensorShapeProto { dim: dims }) }),
        ..Default::default()
    }
}

fn batch() -> Dimension {
    Dimension { dim_value: None, dim_param: Some("N".into()) }
}

fn fixed(v: i64) -> Dimension {
    Dimension { dim_value: Some(v), dim_param: None }
}

/// What a caller needs to know of each named input: `[{"name", "kind":
/// "numeric", "p1", "p99", "fill"} | {"name", "kind": "categorical",
/// "categories"}]`: the 1st and 99th percentiles and the median of the
/// training rows, and the categories in code order.
pub fn input_schema(encoder: &FeatureEncoder) -> serde_json::Value {
    encoder
        .features
        .iter()
        .map(|f| match &f.kind {
            FeatureKind::Numeric { fill, min, max } => {
                serde_json::json!({"name": f.name, "kind": "numeric", "p1": min, "p99": max, "fill": fill})
            }
            FeatureKind::Categorical { categories } => {
                serde_json::json!({"name": f.name, "kind": "categorical", "categories": categories})
            }
        })
        .collect()
}

/// Wraps a single-tensor model (one float input `[N, F]` of codes, as an
/// external training command writes it) so it takes named raw features: the
/// same prefix a built-in export has ([`Interface::Named`]) feeds its input,
/// and the model's own nodes and outputs are kept as they are. The result is
/// checked: on `probe` (encoded rows) the wrapped graph must answer exactly
/// what the original answers. Returns `None`, and the model is served as it
/// is, when it cannot be wrapped without loss: its input is not `[N, F]`
/// float, a name the prefix brings is taken, or the check fails (a field the
/// schema here does not know, dropped by re-encoding, would show there).
pub fn wrap_named(
    model: &[u8],
    encoder: &FeatureEncoder,
    mut metadata: Vec<(String, String)>,
    probe: &crate::encode::Matrix,
) -> Result<Option<Vec<u8>>, MlError> {
    use citadel_infer::onnx_pb as pb;
    let bad = |m: String| MlError::Model(m);
    let Ok(mut m) = pb::ModelProto::decode(model) else { return Ok(None) };
    let Some(graph) = m.graph.as_mut() else { return Ok(None) };
    let constants: std::collections::HashSet<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();
    let inputs: Vec<&pb::ValueInfoProto> = graph.input.iter().filter(|i| !constants.contains(&i.name)).collect();
    let [input] = inputs.as_slice() else { return Ok(None) };
    let tensor = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(pb::type_proto::Value::TensorType(t)) => t,
        _ => return Ok(None),
    };
    let width = tensor.shape.as_ref().and_then(|s| s.dim.get(1)).and_then(|d| match d.value {
        Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) => Some(v),
        _ => None,
    });
    let rank = tensor.shape.as_ref().map_or(0, |s| s.dim.len());
    if tensor.elem_type != FLOAT || rank != 2 || width != Some(encoder.features.len() as i64) {
        return Ok(None);
    }
    let name = input.name.clone();
    if encoder.features.iter().any(|f| f.name == name || f.name.starts_with("citadel/"))
        || graph.output.iter().any(|o| encoder.features.iter().any(|f| f.name == o.name))
    {
        return Ok(None);
    }
    // The prefix, built as a built-in export builds it, read back in the complete schema.
    let mut g = GraphBuilder::new(encoder, Interface::Named { classes: &[] })?;
    let named_inputs = g.named_prefix();
    let prefix = GraphProto {
        node: g.nodes,
        name: "prefix".into(),
        initializer: g.initializers,
        input: named_inputs,
        output: vec![],
    };
    let mut prefix = pb::GraphProto::decode(prefix.encode_to_vec().as_slice())
        .map_err(|e| bad(format!("the named-input prefix: {e}")))?;
    for (i, n) in prefix.node.iter_mut().enumerate() {
        n.name = format!("citadel/prefix_{i}");
    }
    // The names the prefix brings must be new to the model.
    let brought: std::collections::HashSet<&str> = prefix
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(String::as_str).chain(std::iter::once(n.name.as_str())))
        .chain(prefix.initializer.iter().map(|t| t.name.as_str()))
        .collect();
    if graph
        .node
        .iter()
        .any(|n| brought.contains(n.name.as_str()) || n.output.iter().any(|o| brought.contains(o.as_str())))
        || graph.initializer.iter().any(|t| brought.contains(t.name.as_str()))
    {
        return Ok(None);
    }
    fn rename(graph: &mut pb::GraphProto, from: &str, to: &str) {
        for node in &mut graph.node {
            node.input.iter_mut().filter(|i| *i == from).for_each(|i| *i = to.to_string());
            for a in &mut node.attribute {
                // Subgraphs (If, Loop, Scan) may read the outer input by name.
                if let Some(sub) = a.g.as_mut() {
                    rename(sub, from, to);
                }
                a.graphs.iter_mut().for_each(|sub| rename(sub, from, to));
            }
        }
        graph.output.iter_mut().filter(|o| o.name == from).for_each(|o| o.name = to.to_string());
    }
    rename(graph, &name, FEATURES_VALUE);
    graph.input.retain(|i| i.name != name);
    graph.input.splice(0..0, prefix.input);
    graph.node.splice(0..0, prefix.node);
    graph.initializer.extend(prefix.initializer);
    // LabelEncoder with float values needs ONNX-ML 2; the ML operators the
    // model may use are unchanged from 1 to 2.
    match m.opset_import.iter_mut().find(|o| o.domain == "ai.onnx.ml") {
        Some(o) => o.version = o.version.max(ML_OPSET),
        None => m.opset_import.push(pb::OperatorSetIdProto { domain: "ai.onnx.ml".into(), version: ML_OPSET }),
    }
    metadata.push(("citadel.inputs".into(), input_schema(encoder).to_string()));
    m.metadata_props.retain(|p| !metadata.iter().any(|(k, _)| *k == p.key));
    m.metadata_props.extend(metadata.into_iter().map(|(key, value)| pb::StringStringEntryProto { key, value }));
    let wrapped = m.encode_to_vec();
    Ok(same_answers(model, &wrapped, probe).then_some(wrapped))
}

/// True when `wrapped` (named inputs) answers on `probe`'s rows exactly what
/// `original` (one tensor of codes) answers.
fn same_answers(original: &[u8], wrapped: &[u8], probe: &crate::encode::Matrix) -> bool {
    let (Ok(a), Ok(b)) = (citadel_infer::Model::load(original), citadel_infer::Model::load(wrapped)) else {
        return false;
    };
    let rows = probe.rows.min(256);
    // The evaluation's own feed turns codes back into named tensors.
    let Ok(Some(feed)) = crate::Feed::named(&b) else { return false };
    let (Ok(direct), Ok(named)) = (crate::Feed::Codes.tensors(probe, 0, rows), feed.tensors(probe, 0, rows)) else {
        return false;
    };
    match (a.run(direct), b.run(named)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

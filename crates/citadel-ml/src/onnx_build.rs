//! Writing ONNX graphs of standard operators (opset 13), and of ONNX-ML
//! operators (opset 1) where one exists for the model (tree ensembles), so
//! onnxruntime and citadel-infer run what the trainers export.

use citadel_infer::proto::{
    AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TensorTypeProto, TypeProto, ValueInfoProto,
};
use prost::Message;

pub const OPSET: i64 = 13;
const FLOAT: i32 = 1;
const INT64: i32 = 7;
const ATTR_INT: i32 = 2;
const ATTR_STRING: i32 = 3;
const ATTR_FLOATS: i32 = 6;
const ATTR_INTS: i32 = 7;
const ATTR_STRINGS: i32 = 8;
/// The ONNX-ML operator set the exports use (TreeEnsembleRegressor v1).
pub const ML_OPSET: i64 = 1;

#[derive(Debug, Default)]
pub struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    next: usize,
    /// Whether a node of the `ai.onnx.ml` domain was added.
    uses_ml: bool,
}

pub enum Attr {
    Int(&'static str, i64),
    Str(&'static str, &'static str),
    Ints(&'static str, Vec<i64>),
    Floats(&'static str, Vec<f32>),
    Strs(&'static str, Vec<&'static str>),
}

impl Attr {
    fn proto(self) -> AttributeProto {
        let base = |n: &str, t: i32| AttributeProto { name: n.into(), r#type: t, ..Default::default() };
        match self {
            Attr::Int(n, i) => AttributeProto { i, ..base(n, ATTR_INT) },
            Attr::Str(n, s) => AttributeProto { s: s.as_bytes().to_vec(), ..base(n, ATTR_STRING) },
            Attr::Ints(n, ints) => AttributeProto { ints, ..base(n, ATTR_INTS) },
            Attr::Floats(n, floats) => AttributeProto { floats, ..base(n, ATTR_FLOATS) },
            Attr::Strs(n, v) => {
                AttributeProto { strings: v.iter().map(|s| s.as_bytes().to_vec()).collect(), ..base(n, ATTR_STRINGS) }
            }
        }
    }
}

impl GraphBuilder {
    fn fresh(&mut self, hint: &str) -> String {
        self.next += 1;
        format!("{hint}_{}", self.next)
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
    /// index, 1 = positive), as skl2onnx names them.
    pub fn classifier_outputs(&mut self, p1: &str) {
        let one = self.f32s("one", &[], vec![1.0]);
        let p0 = self.op("Sub", &[&one, p1], vec![]);
        self.op_named("Concat", &[&p0, p1], "probabilities", vec![Attr::Int("axis", 1)]);
        self.op_named("ArgMax", &["probabilities"], "label", vec![Attr::Int("axis", 1), Attr::Int("keepdims", 0)]);
    }

    /// The finished model: input `X` `[N, features]` float, outputs `label`
    /// and `probabilities`. `metadata` is stored as ONNX metadata properties.
    pub fn finish(self, features: usize, doc: &str, metadata: Vec<(String, String)>) -> Vec<u8> {
        let tensor = |elem: i32, dims: Vec<Dimension>| TypeProto {
            tensor_type: Some(TensorTypeProto { elem_type: elem, shape: Some(TensorShapeProto { dim: dims }) }),
            ..Default::default()
        };
        let batch = || Dimension { dim_value: None, dim_param: Some("N".into()) };
        let fixed = |v: i64| Dimension { dim_value: Some(v), dim_param: None };
        let graph = GraphProto {
            node: self.nodes,
            name: "citadel".into(),
            initializer: self.initializers,
            input: vec![ValueInfoProto {
                name: "X".into(),
                r#type: Some(tensor(FLOAT, vec![batch(), fixed(features as i64)])),
            }],
            output: vec![
                ValueInfoProto { name: "label".into(), r#type: Some(tensor(INT64, vec![batch()])) },
                ValueInfoProto { name: "probabilities".into(), r#type: Some(tensor(FLOAT, vec![batch(), fixed(2)])) },
            ],
        };
        let model = ModelProto {
            ir_version: 7,
            opset_import: std::iter::once(OperatorSetIdProto { domain: String::new(), version: OPSET })
                .chain(self.uses_ml.then(|| OperatorSetIdProto { domain: "ai.onnx.ml".into(), version: ML_OPSET }))
                .collect(),
            producer_name: "citadel".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(graph),
        };
        let mut bytes = model.encode_to_vec();
        // doc_string (6) and metadata_props (14) are written by hand: the
        // decoding structs leave them out because inference never reads them.
        let doc = StringStringEntryProto { key: "doc".into(), value: doc.into() };
        prost::encoding::string::encode(6, &doc.value, &mut bytes);
        for (key, value) in metadata {
            prost::encoding::message::encode(14, &StringStringEntryProto { key, value }, &mut bytes);
        }
        bytes
    }
}

//! ONNX models: external data that escapes the model directory, and
//! operators from non-standard domains (which need native custom-op
//! libraries to run). Only the fields needed are declared; prost skips the
//! rest of the protobuf without interpreting it.

use prost::Message;

use crate::{Finding, Severity};

#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(int64, tag = "1")]
    ir_version: i64,
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "8")]
    opset_import: Vec<OperatorSetId>,
    #[prost(message, repeated, tag = "25")]
    functions: Vec<FunctionProto>,
}

#[derive(Clone, PartialEq, Message)]
struct OperatorSetId {
    #[prost(string, tag = "1")]
    domain: String,
}

#[derive(Clone, PartialEq, Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeProto>,
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<TensorProto>,
    #[prost(message, repeated, tag = "15")]
    sparse_initializer: Vec<SparseTensorProto>,
}

#[derive(Clone, PartialEq, Message)]
struct FunctionProto {
    #[prost(message, repeated, tag = "7")]
    node: Vec<NodeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct NodeProto {
    #[prost(string, tag = "3")]
    name: String,
    #[prost(string, tag = "4")]
    op_type: String,
    #[prost(string, tag = "7")]
    domain: String,
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<AttributeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct AttributeProto {
    #[prost(message, optional, tag = "5")]
    t: Option<TensorProto>,
    #[prost(message, optional, tag = "6")]
    g: Option<GraphProto>,
    #[prost(message, repeated, tag = "10")]
    tensors: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    graphs: Vec<GraphProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorProto {
    #[prost(string, tag = "8")]
    name: String,
    #[prost(message, repeated, tag = "13")]
    external_data: Vec<StringStringEntry>,
    #[prost(int32, tag = "14")]
    data_location: i32,
}

#[derive(Clone, PartialEq, Message)]
struct SparseTensorProto {
    #[prost(message, optional, tag = "1")]
    values: Option<TensorProto>,
    #[prost(message, optional, tag = "2")]
    indices: Option<TensorProto>,
}

#[derive(Clone, PartialEq, Message)]
struct StringStringEntry {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "2")]
    value: String,
}

/// Operator domains defined by the ONNX standard.
const STANDARD_DOMAINS: &[&str] = &["", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training"];

/// True when `data` decodes as an ONNX model with a graph.
pub fn looks_like_onnx(data: &[u8]) -> bool {
    data.first() == Some(&0x08)
        && ModelProto::decode(data).is_ok_and(|m| m.ir_version > 0 && m.ir_version < 100 && m.graph.is_some())
}

pub fn scan_onnx(location: &str, data: &[u8]) -> Vec<Finding> {
    let model = match ModelProto::decode(data) {
        Ok(m) => m,
        Err(e) => {
            return vec![Finding {
                severity: Severity::Warning,
                rule: "onnx-malformed".into(),
                location: location.into(),
                message: format!("not a valid ONNX protobuf ({e}); not judged"),
            }];
        }
    };
    let mut out = Vec::new();
    let mut custom_domains = std::collections::BTreeSet::new();
    for o in &model.opset_import {
        if !STANDARD_DOMAINS.contains(&o.domain.as_str()) {
            custom_domains.insert(o.domain.clone());
        }
    }
    let (nodes, tensors) = nodes_and_tensors(&model);
    for n in nodes {
        if !STANDARD_DOMAINS.contains(&n.domain.as_str()) {
            custom_domains.insert(n.domain.clone());
            out.push(Finding {
                severity: Severity::Warning,
                rule: "onnx-custom-domain".into(),
                location: location.into(),
                message: format!(
                    "node {:?} uses operator {}.{} outside the ONNX standard domains; running it needs a native custom-op library",
                    n.name, n.domain, n.op_type
                ),
            });
        }
    }
    for t in tensors {
        let mut keys = std::collections::HashSet::new();
        for e in &t.external_data {
            if !keys.insert(e.key.as_str()) {
                out.push(Finding {
                    severity: Severity::Critical,
                    rule: "onnx-external-data-duplicate-key".into(),
                    location: location.into(),
                    message: format!(
                        "tensor {:?} lists external-data key {:?} twice; loaders use the last, a reviewer sees the first",
                        t.name, e.key
                    ),
                });
            }
        }
        for path in t.external_data.iter().filter(|e| e.key == "location").map(|e| e.value.as_str()) {
            check_location(location, &t.name, path, &mut out);
        }
    }
    out
}

/// Every node (graphs, subgraphs, functions) and every tensor (initializers,
/// sparse initializers, attribute tensors) of a model, subgraphs bounded.
fn nodes_and_tensors(model: &ModelProto) -> (Vec<&NodeProto>, Vec<&TensorProto>) {
    let mut graphs: Vec<&GraphProto> = model.graph.iter().collect();
    let mut nodes: Vec<&NodeProto> = model.functions.iter().flat_map(|f| f.node.iter()).collect();
    let mut tensors: Vec<&TensorProto> = Vec::new();
    let mut visited = 0usize;
    while let Some(g) = graphs.pop() {
        visited += 1;
        if visited > 100_000 {
            break;
        }
        nodes.extend(g.node.iter());
        tensors.extend(g.initializer.iter());
        for s in &g.sparse_initializer {
            tensors.extend(s.values.iter().chain(s.indices.iter()));
        }
        for n in &g.node {
            for a in &n.attribute {
                graphs.extend(a.g.iter().chain(a.graphs.iter()));
                tensors.extend(a.t.iter().chain(a.tensors.iter()));
            }
        }
    }
    (nodes, tensors)
}

/// The external data files a model names (every `location`, inside or not).
pub fn external_locations(data: &[u8]) -> Vec<String> {
    let Ok(model) = ModelProto::decode(data) else { return Vec::new() };
    let (_, tensors) = nodes_and_tensors(&model);
    let mut out: Vec<String> = tensors
        .iter()
        .flat_map(|t| t.external_data.iter().filter(|e| e.key == "location").map(|e| e.value.clone()))
        .collect();
    out.sort();
    out.dedup();
    out
}

fn check_location(location: &str, tensor: &str, path: &str, out: &mut Vec<Finding>) {
    {
        let escapes = path.starts_with('/')
            || path.starts_with('\\')
            || path.contains(':')
            || path.contains('\0')
            || path.split(['/', '\\']).any(|p| p == "..");
        if escapes {
            out.push(Finding {
                severity: Severity::Critical,
                rule: "onnx-external-data-escape".into(),
                location: location.into(),
                message: format!(
                    "tensor {tensor:?} reads its data from {path:?}, outside the model's directory (arbitrary file read on load)"
                ),
            });
        }
    }
}

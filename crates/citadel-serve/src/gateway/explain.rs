//! `POST /v2/models/{name}/explain`: SHAP values of a request's rows.
//!
//! The body is any inference body (OIP V2 columns or tensors, a JSON array of
//! records). The rows are explained against the background sample the
//! export carries (`citadel.background`, training rows):
//!
//! - a graph with one tree ensemble: interventional TreeSHAP of the
//!   ensemble's raw score (log-odds for a boosted classifier), exact and
//!   equal to `shap.TreeExplainer(..., feature_perturbation="interventional")`;
//! - any other named-input export: KernelSHAP of the positive-class
//!   probability, every coalition evaluated up to 12 features (exact
//!   Shapley values of the background expectation).
//!
//! Authorized by `model.explain` and `model.infer` both (attributions reveal
//! more of a model than its answers, and they add up to the prediction, so
//! an explanation is also an answer), limited like inference (rate limits
//! and the endpoint's concurrency permit), bounded in rows, in work (rows ×
//! background rows × tree nodes) and in time (a deadline the computation
//! checks, so a timed-out explanation stops burning CPU), and audited on
//! success with the rows' count and the method (never values); a failed
//! audit write fails the request.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::json;

use super::{ApiError, Body, Endpoint, Gateway, RequestFacts, api, json_response, order_inputs};
use citadel_control::Caller;

/// Rows one explain request may hold (TreeSHAP costs rows × background × leaves reached).
pub const MAX_TREE_ROWS: usize = 64;
/// Rows one KernelSHAP request may hold (each costs 2^features × background model rows).
pub const MAX_KERNEL_ROWS: usize = 8;
/// Background rows KernelSHAP uses (the first of the carried sample).
const KERNEL_BACKGROUND: usize = 32;
/// TreeSHAP work one request may ask for: rows × background rows × tree nodes.
pub const MAX_TREE_WORK: usize = 400_000_000;

impl Gateway {
    pub(super) async fn explain(
        self: &Arc<Self>,
        req: Request<Incoming>,
        caller: &Caller,
        audit_permit: citadel_control::Permit,
        endpoint: Arc<Endpoint>,
        pinned: Option<i64>,
        facts: &mut RequestFacts,
    ) -> Result<Response<Body>, ApiError> {
        let (served, _) = self.admit(caller, &endpoint, req.headers(), pinned, facts, true).await?;
        let loaded = endpoint.targets[served].1.clone();
        let Some((background, cols)) = loaded.schema.background.clone() else {
            return Err(api(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "this model carries no background sample, so it cannot be explained — hint: models trained by citadel pipelines carry one",
            ));
        };
        let request = self.read_request(req, &loaded).await?;
        let rows = request.inputs.first().and_then(|(_, t)| t.shape.first().copied()).unwrap_or(0);
        let tree = loaded.model.has_tree_ensemble();
        let limit = if tree { MAX_TREE_ROWS } else { MAX_KERNEL_ROWS };
        if rows == 0 || rows > limit {
            return Err(api(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("an explanation covers 1 to {limit} rows; this request has {rows}"),
            ));
        }
        if let Some(k) = loaded.schema.classes.as_ref().map(Vec::len).filter(|&k| k > 2) {
            return Err(api(
                StatusCode::NOT_IMPLEMENTED,
                "not_implemented",
                format!("explanations cover binary classifiers and regressors; this model has {k} classes"),
            ));
        }
        let inputs = order_inputs(&loaded, request.inputs)?;
        let bg_rows = background.len() / cols;
        if tree {
            let work = rows.saturating_mul(bg_rows).saturating_mul(loaded.model.tree_nodes().unwrap_or(0));
            if work > MAX_TREE_WORK {
                let fit = (MAX_TREE_WORK / (bg_rows * loaded.model.tree_nodes().unwrap_or(1)).max(1)).max(1);
                return Err(api(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!(
                        "explaining {rows} rows of this model is too much work for one request — hint: send at most {fit}"
                    ),
                ));
            }
        } else if loaded.kernel.is_none() {
            return Err(api(
                StatusCode::NOT_IMPLEMENTED,
                "not_implemented",
                "this model's graph cannot be explained (no tree ensemble and no named features)",
            ));
        }
        // Explanations share the endpoint's concurrency with inference.
        let permit = super::concurrency_permit(&endpoint).await?;
        let deadline = std::time::Instant::now() + self.config.limits.request_timeout;
        let features: Vec<String> = match loaded.schema.inputs.len() {
            n if n == cols => loaded.model.inputs.iter().map(|i| i.name.clone()).collect(),
            _ => (0..cols).map(|j| format!("feature {j}")).collect(),
        };
        let positive = loaded.schema.classes.as_ref().and_then(|c| c.last().cloned());
        // A classifier without class names still explains a probability; a regressor its prediction.
        let classifier = loaded.model.outputs.iter().any(|o| super::is_class_output(o, o.shape.len().max(2)));
        let l = loaded.clone();
        let work = tokio::task::spawn_blocking(move || -> Result<serde_json::Value, ApiError> {
            let _permit = permit;
            if tree {
                let (shap, width) = l.model.tree_shap(inputs, &background, Some(deadline)).map_err(infer_error)?;
                if width != cols {
                    return Err(api(
                        StatusCode::NOT_IMPLEMENTED,
                        "not_implemented",
                        "the model's background sample does not fit its features",
                    ));
                }
                let values: Vec<&[f64]> = shap.values.chunks(cols).collect();
                Ok(json!({
                    "method": "TreeSHAP (interventional, exact)",
                    "output": match &positive { Some(c) => format!("raw score (log-odds of {c})"), None => "raw score".into() },
                    "base_value": shap.base_value,
                    "predictions": shap.scores,
                    "shap_values": values,
                    "background_rows": bg_rows,
                }))
            } else {
                let clf = l.kernel.as_ref().ok_or_else(|| {
                    api(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        "this model's graph cannot be explained (no tree ensemble and no named features)",
                    )
                })?;
                let x = l.model.run_value(inputs, citadel_ml::onnx_build::FEATURES_VALUE).map_err(infer_error)?;
                let x = x.to_f32().map_err(infer_error)?;
                let bg_rows = (background.len() / cols).min(KERNEL_BACKGROUND);
                let bg = citadel_ml::Matrix { rows: bg_rows, cols, data: background[..bg_rows * cols].to_vec() };
                let mut values = Vec::with_capacity(rows);
                let (mut base, mut predictions) = (0.0, Vec::with_capacity(rows));
                for row in x.chunks(cols) {
                    if std::time::Instant::now() > deadline {
                        return Err(infer_error(citadel_infer::InferError::Deadline));
                    }
                    let e = citadel_ml::explain::kernel_shap(clf.as_ref(), row, &bg, 2048, 0).map_err(|_| {
                        api(StatusCode::INTERNAL_SERVER_ERROR, "model_error", "the model failed on this request")
                    })?;
                    base = e.base_value;
                    predictions.push(e.prediction);
                    values.push(e.values);
                }
                Ok(json!({
                    "method": if cols <= citadel_ml::explain::EXACT_MAX_FEATURES { "KernelSHAP (every coalition: exact)" } else { "KernelSHAP (2,048 sampled coalitions)" },
                    "output": match &positive { Some(c) => format!("probability of {c}"), None if classifier => "positive-class probability".into(), None => "prediction".into() },
                    "base_value": base,
                    "predictions": predictions,
                    "shap_values": values,
                    "background_rows": bg_rows,
                }))
            }
        });
        let mut body = tokio::time::timeout(self.config.limits.request_timeout, work)
            .await
            .map_err(|_| {
                api(StatusCode::GATEWAY_TIMEOUT, "timeout", "the explanation took longer than the request timeout")
            })?
            .map_err(|_| api(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the explanation failed"))??;
        let method = body["method"].clone();
        // Audited before a value leaves: an explanation that cannot be recorded is not given.
        self.ws
            .record(
                audit_permit,
                json!({"model": loaded.name, "version": loaded.version, "rows": rows, "method": method, "via": "gateway"}),
            )
            .await
            .map_err(|_| api(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the audit log could not record the explanation; retry"))?;
        body["model_name"] = json!(endpoint.name);
        body["model_version"] = json!(loaded.version.to_string());
        body["features"] = json!(features);
        Ok(json_response(StatusCode::OK, &body))
    }
}

/// A failure as the caller sees it: their input named, the model's own problems not described.
fn infer_error(e: citadel_infer::InferError) -> ApiError {
    match e {
        citadel_infer::InferError::Input(m) => api(StatusCode::BAD_REQUEST, "bad_request", m),
        citadel_infer::InferError::Deadline => {
            api(StatusCode::GATEWAY_TIMEOUT, "timeout", "the explanation took longer than the request timeout")
        }
        citadel_infer::InferError::Unsupported(_) => {
            api(StatusCode::NOT_IMPLEMENTED, "not_implemented", "this model cannot be explained")
        }
        citadel_infer::InferError::Model(_) => {
            api(StatusCode::INTERNAL_SERVER_ERROR, "model_error", "the model failed on this request")
        }
    }
}

//! The OpenAPI 3 document of the whole HTTP surface, served at `/openapi.json`.

use serde_json::{Value, json};

pub fn document() -> Value {
    let error = json!({"description": "Refused or failed; `error` says why", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let auth_errors = json!({
        "400": error, "401": error, "403": error, "404": error, "413": error, "429": error, "503": error, "504": error
    });
    let name = json!({"name": "model_name", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"}});
    let version = json!({"name": "model_version", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"}});
    let body = json!({"required": true, "content": {"application/json": {"schema": {"oneOf": [
        {"$ref": "#/components/schemas/InferRequest"}, {"$ref": "#/components/schemas/Records"}]}}}});
    let infer_op = |params: Value| {
        let mut responses = auth_errors.clone();
        responses["200"] = json!({"description": "Inference result", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/InferResponse"}}}});
        json!({"post": {
            "summary": "Run inference (JSON tensors or columns, a JSON array of records, or the binary tensor data extension with Inference-Header-Content-Length)",
            "security": [{"bearer": []}],
            "parameters": params,
            "requestBody": body.clone(),
            "responses": responses
        }})
    };
    let explain_op = |params: Value| {
        let mut responses = auth_errors.clone();
        responses["501"] = json!({"description": "The model cannot be explained (no background sample it fits, or no supported graph)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
        responses["200"] = json!({"description": "SHAP values of the rows", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Explanation"}}}});
        json!({"post": {
            "summary": "SHAP values of the request's rows against the model's background sample (model.explain)",
            "security": [{"bearer": []}],
            "parameters": params,
            "requestBody": body.clone(),
            "responses": responses
        }})
    };
    let get_op = |summary: &str, params: Value, schema: Value, secured: bool| {
        let mut responses = if secured { auth_errors.clone() } else { json!({}) };
        responses["200"] = json!({"description": summary, "content": {"application/json": {"schema": schema}}});
        let mut op = json!({"summary": summary, "parameters": params, "responses": responses});
        if secured {
            op["security"] = json!([{"bearer": []}]);
        }
        json!({"get": op})
    };
    let ready = json!({"type": "object", "properties": {"ready": {"type": "boolean"}}});
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Citadel inference gateway", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Open Inference Protocol V2 (REST) with authentication, authorization and abuse limits."},
        "paths": {
            "/v2/health/live": {"get": {"summary": "Liveness", "responses": {"200": {"description": "Live", "content": {"application/json": {"schema": ready.clone()}}}}}},
            "/v2/health/ready": {"get": {"summary": "Readiness (deployments loaded)", "responses": {
                "200": {"description": "Ready", "content": {"application/json": {"schema": ready.clone()}}},
                "503": {"description": "Not ready", "content": {"application/json": {"schema": ready.clone()}}}}}},
            "/v2": get_op("Server metadata", json!([]), json!({"$ref": "#/components/schemas/ServerMetadata"}), false),
            "/v2/models/{model_name}": get_op("Model metadata", json!([name]), json!({"$ref": "#/components/schemas/ModelMetadata"}), true),
            "/v2/models/{model_name}/ready": get_op("Model readiness", json!([name]), ready.clone(), true),
            "/v2/models/{model_name}/infer": infer_op(json!([name])),
            "/v2/models/{model_name}/explain": explain_op(json!([name])),
            "/v2/models/{model_name}/versions/{model_version}/explain": explain_op(json!([name, version])),
            "/v2/models/{model_name}/versions/{model_version}": get_op("Model version metadata", json!([name, version]), json!({"$ref": "#/components/schemas/ModelMetadata"}), true),
            "/v2/models/{model_name}/versions/{model_version}/ready": get_op("Model version readiness", json!([name, version]), ready, true),
            "/v2/models/{model_name}/versions/{model_version}/infer": infer_op(json!([name, version])),
            "/v2/admin/capture/{model_name}": get_op("Recent inference records of an endpoint (capture.read)", json!([name]), json!({"type": "object"}), true),
            "/metrics": {"get": {"summary": "Prometheus metrics (config.read)", "security": [{"bearer": []}],
                "responses": {"200": {"description": "Prometheus text exposition", "content": {"text/plain": {"schema": {"type": "string"}}}}, "401": error, "403": error, "429": error, "503": error}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3", "content": {"application/json": {"schema": {"type": "object"}}}}}}}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "A Citadel API token (cit_…) or a JWT (RS256/ES256)"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
                "Tensor": {"type": "object", "required": ["name", "shape", "datatype"], "properties": {
                    "name": {"type": "string"},
                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    "datatype": {"type": "string", "enum": ["FP32", "FP64", "INT32", "INT64", "BOOL", "BYTES"]},
                    "parameters": {"type": "object"},
                    "data": {"type": "array", "items": {}}}},
                "InferRequest": {"type": "object", "required": ["inputs"], "properties": {
                    "id": {"type": "string"}, "parameters": {"type": "object"},
                    "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/Tensor"}},
                    "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}}}}}},
                "Records": {"type": "array", "minItems": 1, "items": {"type": "object", "additionalProperties": {}},
                    "description": "Rows as objects of feature name → value (null: missing), for models with one input per feature"},
                "Explanation": {"type": "object", "required": ["model_name", "method", "features", "base_value", "shap_values"], "properties": {
                    "model_name": {"type": "string"}, "model_version": {"type": "string"}, "method": {"type": "string"},
                    "output": {"type": "string"}, "features": {"type": "array", "items": {"type": "string"}},
                    "base_value": {"type": "number"}, "predictions": {"type": "array", "items": {"type": "number"}},
                    "shap_values": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
                    "background_rows": {"type": "integer"}}},
                "InferResponse": {"type": "object", "required": ["model_name", "outputs"], "properties": {
                    "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
                    "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/Tensor"}}}},
                "ServerMetadata": {"type": "object", "properties": {"name": {"type": "string"}, "version": {"type": "string"}, "extensions": {"type": "array", "items": {"type": "string"}}}},
                "ModelMetadata": {"type": "object", "properties": {
                    "name": {"type": "string"}, "versions": {"type": "array", "items": {"type": "string"}}, "platform": {"type": "string"},
                    "inputs": {"type": "array", "items": {"type": "object"}}, "outputs": {"type": "array", "items": {"type": "object"}}}}
            }
        }
    })
}

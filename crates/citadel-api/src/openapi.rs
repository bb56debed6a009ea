//! The OpenAPI 3.1 document of `/api/v1`, served at `/api/v1/openapi.json`.

use serde_json::{Value, json};

fn error() -> Value {
    json!({"description": "Refused or failed", "content": {"application/json": {"schema": {
        "type": "object", "required": ["error", "kind"],
        "properties": {"error": {"type": "string"}, "kind": {"type": "string"}}}}}})
}

fn errors() -> Value {
    let e = error();
    json!({"400": e, "401": e, "403": e, "404": e, "405": e, "409": e, "413": e, "415": e, "422": e, "429": e, "500": e, "503": e})
}

fn ok(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn op(summary: &str, params: &[&str], body: Option<Value>, answer: Value) -> Value {
    let mut responses = errors();
    responses["200"] = ok(summary, answer);
    let mut o = json!({
        "summary": summary,
        "security": [{"bearer": []}],
        "parameters": params.iter().map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,128}$"}})).collect::<Vec<_>>(),
        "responses": responses,
    });
    if let Some(b) = body {
        o["requestBody"] = json!({"required": false, "content": {"application/json": {"schema": b}}});
    }
    o
}

pub fn document() -> Value {
    let list = json!({"type": "array", "items": {"type": "object"}});
    let obj = json!({"type": "object"});
    let decision = json!({"type": "object", "additionalProperties": false, "properties": {"note": {"type": "string", "maxLength": 10000}}});
    let mut records = op("Audit records, filtered", &[], None, list.clone());
    records["parameters"] = json!(
        ["actor", "action", "resource", "outcome", "after_seq", "limit"]
            .iter()
            .map(|p| {
                let schema = if p.ends_with("seq") || *p == "limit" {
                    json!({"type": "integer"})
                } else {
                    json!({"type": "string"})
                };
                json!({"name": p, "in": "query", "required": false, "schema": schema})
            })
            .collect::<Vec<_>>()
    );
    let mut requests = op("Stage requests", &[], None, list.clone());
    requests["parameters"] =
        json!([{"name": "pending", "in": "query", "required": false, "schema": {"type": "boolean"}}]);
    let new_request = json!({"type": "object", "additionalProperties": false, "required": ["model", "version", "to"],
        "properties": {"model": {"type": "string"}, "version": {"type": "integer", "minimum": 1},
                       "to": {"type": "string", "enum": ["staging", "production", "archived"]}}});
    let mut verb_op = op("Approve or reject (never the requester)", &["id"], Some(decision), obj.clone());
    if let Some(p) = verb_op["parameters"].as_array_mut() {
        p.push(json!({"name": "verb", "in": "path", "required": true, "schema": {"type": "string", "enum": ["approve", "reject"]}}));
    }
    let mut create = op("Request a stage change", &[], None, obj.clone());
    create["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": new_request}}});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Citadel control plane", "version": "1"},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": {
            "/api/v1/health": {"get": {"summary": "Liveness", "responses": {"200": ok("Live", obj.clone())}}},
            "/api/v1/openapi.json": {"get": {"summary": "This document", "responses": {"200": ok("OpenAPI 3.1", obj.clone())}}},
            "/api/v1/whoami": {"get": op("The caller's principal and grants", &[], None, obj.clone())},
            "/api/v1/models/{name}/versions": {"get": op("A model's versions", &["name"], None, list.clone())},
            "/api/v1/models/{name}/history": {"get": op("A model's stage changes", &["name"], None, list.clone())},
            "/api/v1/stage-requests": {"get": requests, "post": create},
            "/api/v1/stage-requests/{id}/{verb}": {"post": verb_op},
            "/api/v1/datasets": {"get": op("Datasets and their latest versions", &[], None, list.clone())},
            "/api/v1/datasets/{name}/versions": {"get": op("A dataset's versions", &["name"], None, list.clone())},
            "/api/v1/deployments": {"get": op("Live deployments", &[], None, list.clone())},
            "/api/v1/principals": {"get": op("Principals and grants", &[], None, list)},
            "/api/v1/audit/verify": {"get": op("Verify the audit chain", &[], None, obj)},
            "/api/v1/audit/records": {"get": records},
        }
    })
}

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
    let body = |schema: Value| json!({"required": true, "content": {"application/json": {"schema": schema}}});
    let name_schema = json!({"type": "string", "pattern": "^[A-Za-z0-9._-]{1,128}$"});
    let mut principal_new = op("Create a principal", &[], None, obj.clone());
    principal_new["requestBody"] = body(json!({"type": "object", "additionalProperties": false, "required": ["name"],
        "properties": {"name": name_schema, "kind": {"type": "string", "enum": ["user", "service"]}}}));
    let mut grant = op("Add or revoke a role grant", &[], None, obj.clone());
    grant["parameters"] = json!([{"name": "verb", "in": "path", "required": true, "schema": {"type": "string", "enum": ["add", "revoke"]}}]);
    grant["requestBody"] =
        body(json!({"type": "object", "additionalProperties": false, "required": ["principal", "role"],
        "properties": {"principal": {"type": "string"}, "role": {"type": "string"}, "scope": {"type": "string"}}}));
    let mut token_new = op("Issue an API token (shown once)", &[], None, obj.clone());
    token_new["requestBody"] = body(json!({"type": "object", "additionalProperties": false, "required": ["principal"],
        "properties": {"principal": {"type": "string"}, "label": {"type": "string", "maxLength": 200},
                       "ttl_secs": {"type": "integer", "minimum": 60, "maximum": 31_622_400}}}));
    let mut dataset_version = op("One dataset version's profile and checks", &["name"], None, obj.clone());
    if let Some(p) = dataset_version["parameters"].as_array_mut() {
        p.push(json!({"name": "version", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 1}}));
    }
    let mut incidents = op("Incidents (open ones, or all)", &[], None, list.clone());
    incidents["parameters"] = json!([{"name": "all", "in": "query", "required": false, "schema": {"type": "boolean"}}]);
    let mut incident_verb = op(
        "Acknowledge or resolve an incident",
        &["id"],
        Some(json!({"type": "object", "additionalProperties": false, "properties": {"note": {"type": "string"}}})),
        obj.clone(),
    );
    if let Some(p) = incident_verb["parameters"].as_array_mut() {
        p.push(json!({"name": "verb", "in": "path", "required": true, "schema": {"type": "string", "enum": ["ack", "resolve"]}}));
    }
    let mut monitor = op("Monitoring windows of an endpoint, newest first", &["endpoint"], None, list.clone());
    if let Some(p) = monitor["parameters"].as_array_mut() {
        p.push(json!({"name": "windows", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 10_000}}));
    }
    let mut lineage = op("The lineage graph around a version or an artifact", &[], None, obj.clone());
    lineage["parameters"] =
        json!([{"name": "reference", "in": "query", "required": true, "schema": {"type": "string"}}]);
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
            "/api/v1/principals": {"get": op("Principals and grants", &[], None, list.clone()), "post": principal_new},
            "/api/v1/principals/{name}/disable": {"post": op("Disable a principal", &["name"], None, obj.clone())},
            "/api/v1/grants/{verb}": {"post": grant},
            "/api/v1/tokens": {"get": op("API tokens (never their secrets)", &[], None, list.clone()), "post": token_new},
            "/api/v1/tokens/{id}/revoke": {"post": op("Revoke a token", &["id"], None, obj.clone())},
            "/api/v1/keys": {"get": op("Master keys (ids and states)", &[], None, list.clone())},
            "/api/v1/datasets/{name}/versions/{version}": {"get": dataset_version},
            "/api/v1/deployments/{name}/history": {"get": op("An endpoint's revisions", &["name"], None, list.clone())},
            "/api/v1/incidents": {"get": incidents},
            "/api/v1/incidents/{id}": {"get": op("An incident and its timeline", &["id"], None, obj.clone())},
            "/api/v1/incidents/{id}/{verb}": {"post": incident_verb},
            "/api/v1/monitor/{endpoint}": {"get": monitor},
            "/api/v1/lineage": {"get": lineage},
            "/api/v1/audit/verify": {"get": op("Verify the audit chain", &[], None, obj)},
            "/api/v1/audit/records": {"get": records},
        }
    })
}

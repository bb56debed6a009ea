//! The OpenAPI 3.1 document of `/api/v1`, served at `/api/v1/openapi.json`.

use serde_json::{Value, json};

fn error() -> Value {
    json!({"description": "Refused or failed", "content": {"application/json": {"schema": {
        "type": "object", "required": ["error", "kind"],
        "properties": {"error": {"type": "string"}, "kind": {"type": "string"}}}}}})
}

fn errors() -> Value {
    let e = error();
    json!({"400": e, "401": e, "403": e, "404": e, "405": e, "408": e, "409": e, "413": e, "415": e, "416": e, "422": e, "429": e, "500": e, "503": e, "507": e})
}

fn commit_file_schema() -> Value {
    json!({"type": "object", "additionalProperties": false, "required": ["path", "upload", "sha256"],
        "properties": {"path": {"type": "string", "minLength": 1, "maxLength": 4096}, "upload": {"type": "string"},
                       "sha256": {"type": "string", "pattern": "^(sha256:)?[0-9a-f]{64}$"}}})
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
        "properties": {"name": name_schema, "kind": {"type": "string", "enum": ["user", "service", "oidc"]}}}));
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
        p.push(json!({"name": "verb", "in": "path", "required": true, "schema": {"type": "string", "enum": ["ack", "resolve", "undo"]}}));
    }
    let mut monitor = op("Monitoring windows of an endpoint, newest first", &["endpoint"], None, list.clone());
    if let Some(p) = monitor["parameters"].as_array_mut() {
        p.push(json!({"name": "windows", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 10_000}}));
    }
    let mut lineage = op("The lineage graph around a version or an artifact", &[], None, obj.clone());
    lineage["parameters"] =
        json!([{"name": "reference", "in": "query", "required": true, "schema": {"type": "string"}}]);
    // Transfers (see `transfer.rs`).
    let sha = json!({"type": "string", "pattern": "^(sha256:)?[0-9a-f]{64}$"});
    let commit_file = json!({"type": "object", "additionalProperties": false, "required": ["path", "upload", "sha256"],
        "properties": {"path": {"type": "string", "minLength": 1, "maxLength": 4096}, "upload": {"type": "string"}, "sha256": sha}});
    let created = |mut o: Value, what: &str| {
        if let Some(r) = o["responses"].as_object_mut() {
            let answer = r.remove("200").unwrap_or(Value::Null);
            r.insert("201".into(), json!({"description": what, "content": answer["content"].clone()}));
        }
        o
    };
    let mut upload_new = created(
        op("Start an upload (its bytes change nothing until committed)", &[], None, obj.clone()),
        "The upload, offset 0",
    );
    upload_new["requestBody"] = body(
        json!({"type": "object", "additionalProperties": false, "required": ["size", "for"],
        "properties": {"size": {"type": "integer", "minimum": 0}, "for": {"type": "string", "enum": ["artifact", "dataset", "model", "pipeline"]}, "name": {"type": "string"}}}),
    );
    let mut upload_patch = op("Append bytes at Upload-Offset", &["id"], None, obj.clone());
    if let Some(r) = upload_patch["responses"].as_object_mut() {
        r.remove("200");
        r.insert("204".into(), json!({"description": "Appended; Upload-Offset says what the server holds"}));
    }
    if let Some(p) = upload_patch["parameters"].as_array_mut() {
        p.push(json!({"name": "upload-offset", "in": "header", "required": true, "schema": {"type": "integer", "minimum": 0}}));
    }
    upload_patch["requestBody"] = json!({"required": true, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}});
    let mut upload_delete = op("Abandon an upload", &["id"], None, obj.clone());
    if let Some(r) = upload_delete["responses"].as_object_mut() {
        r.remove("200");
        r.insert("204".into(), json!({"description": "Removed"}));
    }
    let mut artifact_new = created(op("Commit uploads as an artifact", &[], None, obj.clone()), "The artifact");
    artifact_new["requestBody"] = body(json!({"type": "object", "additionalProperties": false, "required": ["files"],
        "properties": {"files": {"type": "array", "items": commit_file.clone(), "minItems": 1}, "directory": {"type": "boolean"},
                       "name": {"type": "string"}, "parents": {"type": "array", "items": {"type": "string"}}}}));
    let mut dataset_new =
        created(op("Ingest an upload as the next version", &["name"], None, obj.clone()), "The version");
    dataset_new["requestBody"] = body(json!({"type": "object", "additionalProperties": false, "required": ["file"],
        "properties": {"file": commit_file.clone(), "spec": {"type": "string"}}}));
    let mut model_new = created(
        op("Register uploads as the next version (scan, sign, store)", &["name"], None, obj.clone()),
        "The version",
    );
    model_new["requestBody"] = body(json!({"type": "object", "additionalProperties": false, "required": ["files"],
        "properties": {"files": {"type": "array", "items": commit_file, "minItems": 1}, "directory": {"type": "boolean"},
                       "datasets": {"type": "array", "items": {"type": "string"}}, "code_ref": {"type": "string"}, "params": {"type": "object"}}}));
    let bytes = |what: &str| json!({"description": what, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}});
    let mut content = op("One file's bytes (Range: bytes=N- resumes)", &["reference"], None, obj.clone());
    if let Some(p) = content["parameters"].as_array_mut() {
        p.push(json!({"name": "path", "in": "query", "required": false, "schema": {"type": "string"}}));
    }
    content["responses"]["200"] = bytes("The file");
    content["responses"]["206"] = bytes("The range asked for");
    let mut rows = op("A version's rows as the caller may see them", &["name"], None, obj.clone());
    if let Some(p) = rows["parameters"].as_array_mut() {
        p.push(json!({"name": "version", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 1}}));
        p.push(json!({"name": "format", "in": "query", "required": false, "schema": {"type": "string", "enum": ["csv", "parquet"]}}));
        p.push(json!({"name": "detokenize", "in": "query", "required": false, "schema": {"type": "boolean"}}));
    }
    rows["responses"]["200"] = json!({"description": "The rows", "content": {"text/csv": {"schema": {"type": "string"}}, "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}}}});
    let mut serving =
        op("A deployed version's served file, verified (gateways with the gateway role)", &["name"], None, obj.clone());
    if let Some(p) = serving["parameters"].as_array_mut() {
        p.push(json!({"name": "version", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 1}}));
    }
    serving["responses"]["200"] = bytes("The model file; x-citadel-sha256 and x-citadel-root-digest");
    let target = json!({"type": "object", "additionalProperties": false, "required": ["label", "model", "version"],
        "properties": {"label": {"type": "string"}, "model": {"type": "string"}, "version": {"type": "integer", "minimum": 1}, "weight": {"type": "integer", "minimum": 0}}});
    let mut deploy_put = op("Create or change an endpoint (the spec checked whole)", &["name"], None, obj.clone());
    deploy_put["requestBody"] = body(json!({"type": "object", "required": ["strategy", "targets"],
        "properties": {"strategy": {"type": "string", "enum": ["single", "canary", "blue-green", "ab", "shadow"]},
                       "targets": {"type": "array", "items": target, "minItems": 1},
                       "active": {"type": "string"}, "sticky_header": {"type": "string"},
                       "shadow_fraction": {"type": "number", "minimum": 0, "maximum": 1}, "monitoring": {"type": "object"}}}));
    let mut switch = op("Blue/green: the active color", &["name"], None, obj.clone());
    switch["requestBody"] = body(
        json!({"type": "object", "additionalProperties": false, "required": ["label"], "properties": {"label": {"type": "string"}}}),
    );
    let mut rollback = op("Serve an earlier revision again", &["name"], None, obj.clone());
    rollback["requestBody"] = body(
        json!({"type": "object", "additionalProperties": false, "properties": {"to": {"type": "integer", "minimum": 1}}}),
    );
    let version_param =
        json!({"name": "version", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 1}});
    let with_version = |mut o: Value| {
        if let Some(p) = o["parameters"].as_array_mut() {
            p.push(version_param.clone());
        }
        o
    };
    let mut retire = with_version(op("Retire a version for good (a reason is kept)", &["name"], None, obj.clone()));
    retire["requestBody"] = body(
        json!({"type": "object", "additionalProperties": false, "required": ["reason"], "properties": {"reason": {"type": "string", "minLength": 1}}}),
    );
    let mut release = with_version(op("Release a quarantined version", &["name"], None, obj.clone()));
    release["requestBody"] =
        body(json!({"type": "object", "additionalProperties": false, "properties": {"note": {"type": "string"}}}));
    let mut diff = op("Rows, schema and drift between two versions", &[], None, obj.clone());
    diff["parameters"] = json!([{"name": "from", "in": "query", "required": true, "schema": {"type": "string"}}, {"name": "to", "in": "query", "required": true, "schema": {"type": "string"}}]);
    let mut run_new = created(
        op("Run a pipeline with the files it names (uploaded for pipeline)", &[], None, obj.clone()),
        "The run's report",
    );
    run_new["requestBody"] = body(json!({"type": "object", "additionalProperties": false, "required": ["pipeline"],
        "properties": {"pipeline": {"type": "string"}, "files": {"type": "array", "items": commit_file_schema()}}}));
    let mut runs = op("Recent pipeline runs, newest first", &[], None, list.clone());
    runs["parameters"] = json!([{"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 10000}}]);
    let mut gc = op("Purge what retention ends, then sweep unreferenced objects", &[], None, obj.clone());
    gc["requestBody"] = body(
        json!({"type": "object", "additionalProperties": false, "properties": {"grace_secs": {"type": "integer", "minimum": 0}}}),
    );
    let subject_body = |erase: bool| {
        let mut props = json!({"dataset": {"type": "string"},
            "subjects": {"type": "array", "minItems": 1, "items": {"type": "array", "minItems": 1,
                "items": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "string"}], "minItems": 2, "maxItems": 2}}},
            "max_rows": {"type": "integer", "minimum": 1}});
        if erase {
            props["reason"] = json!({"type": "string"});
        }
        body(
            json!({"type": "object", "additionalProperties": false, "required": ["dataset", "subjects"], "properties": props}),
        )
    };
    let mut erase =
        op("Erase a data subject's rows from every version (Art. 17); the signed receipt", &[], None, obj.clone());
    erase["requestBody"] = subject_body(true);
    let mut export = op("Every stored row of a data subject (Art. 15, 20)", &[], None, obj.clone());
    export["requestBody"] = subject_body(false);
    let mut export_op = op(
        "Audit records encoded for a SIEM, one string each",
        &[],
        None,
        json!({"type": "array", "items": {"type": "string"}}),
    );
    export_op["parameters"] = json!(
        ["format", "actor", "action", "resource", "outcome", "after_seq", "limit"]
            .iter()
            .map(|p| {
                let schema = match *p {
                    "format" => json!({"type": "string", "enum": ["jsonl", "cef", "ocsf"]}),
                    "after_seq" | "limit" => json!({"type": "integer"}),
                    _ => json!({"type": "string"}),
                };
                json!({"name": p, "in": "query", "required": false, "schema": schema})
            })
            .collect::<Vec<_>>()
    );
    let mut allow_add = op("Allow one global in scans (exact name, with a reason)", &[], None, obj.clone());
    allow_add["requestBody"] =
        body(json!({"type": "object", "additionalProperties": false, "required": ["global", "reason"],
        "properties": {"global": {"type": "string"}, "reason": {"type": "string"}}}));
    let mut secret_put = op("Store a training secret (sealed; never echoed)", &["name"], None, obj.clone());
    secret_put["requestBody"] = body(
        json!({"type": "object", "additionalProperties": false, "required": ["value"], "properties": {"value": {"type": "string", "minLength": 1, "maxLength": 65536}}}),
    );
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {"title": "Citadel control plane", "version": "1"},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": {
            "/api/v1/health": {"get": {"summary": "Liveness", "responses": {"200": ok("Live", obj.clone())}}},
            "/api/v1/openapi.json": {"get": {"summary": "This document", "responses": {"200": ok("OpenAPI 3.1", obj.clone())}}},
            "/api/v1/whoami": {"get": op("The caller's principal and grants", &[], None, obj.clone())},
            "/api/v1/models": {"get": op("Every registered model: versions, latest, production, staging", &[], None, list.clone())},
            "/api/v1/models/{name}/versions": {"get": op("A model's versions", &["name"], None, list.clone()), "post": model_new},
            "/api/v1/models/{name}/history": {"get": op("A model's stage changes", &["name"], None, list.clone())},
            "/api/v1/stage-requests": {"get": requests, "post": create},
            "/api/v1/stage-requests/{id}/{verb}": {"post": verb_op},
            "/api/v1/datasets": {"get": op("Datasets and their latest versions", &[], None, list.clone())},
            "/api/v1/datasets/{name}/versions": {"get": op("A dataset's versions", &["name"], None, list.clone()), "post": dataset_new},
            "/api/v1/datasets/{name}/versions/{version}/rows": {"get": rows},
            "/api/v1/uploads": {"post": upload_new},
            "/api/v1/uploads/{id}": {"get": op("An upload's offset", &["id"], None, obj.clone()), "patch": upload_patch, "delete": upload_delete},
            "/api/v1/artifacts": {"get": op("Artifacts", &[], None, list.clone()), "post": artifact_new},
            "/api/v1/artifacts/{reference}": {"get": op("An artifact and its files", &["reference"], None, obj.clone())},
            "/api/v1/artifacts/{reference}/content": {"get": content},
            "/api/v1/serving/models/{name}/versions/{version}": {"get": serving},
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
            "/api/v1/audit/verify": {"get": op("Verify the audit chain", &[], None, obj.clone())},
            "/api/v1/audit/records": {"get": records},
        }
    });
    // The macro's recursion limit: the rest of the paths are added here.
    let more = json!({
            "/api/v1/deployments/{name}": {"put": deploy_put, "delete": op("Stop serving an endpoint", &["name"], None, obj.clone())},
            "/api/v1/deployments/{name}/switch": {"post": switch},
            "/api/v1/deployments/{name}/rollback": {"post": rollback},
            "/api/v1/secrets": {"get": op("Training secrets' names (never values)", &[], None, json!({"type": "array", "items": {"type": "string"}}))},
            "/api/v1/models/{name}/versions/{version}/retire": {"post": retire},
            "/api/v1/models/{name}/versions/{version}/bom": {"get": with_version(op("The CycloneDX 1.6 ML-BOM", &["name"], None, obj.clone()))},
            "/api/v1/models/{name}/rollback": {"post": op("Put the previous production version back", &["name"], None, obj.clone())},
            "/api/v1/signing-key": {"get": op("The model-signing public key (PEM)", &[], None, obj.clone())},
            "/api/v1/datasets/{name}/versions/{version}/release": {"post": release},
            "/api/v1/dataset-diff": {"get": diff},
            "/api/v1/runs": {"get": runs, "post": run_new},
            "/api/v1/runs/{id}": {"get": op("One pipeline run and its stages", &["id"], None, obj.clone())},
            "/api/v1/store/gc": {"post": gc},
            "/api/v1/subjects/erase": {"post": erase},
            "/api/v1/subjects/export": {"post": export},
            "/api/v1/erasures": {"get": op("Every erasure with its state", &[], None, list.clone())},
            "/api/v1/erasures/{id}": {"get": op("An erasure's receipt and its verification", &["id"], None, obj.clone())},
            "/api/v1/audit/export": {"get": export_op},
            "/api/v1/audit/checkpoint": {"post": op("Sign a checkpoint of the chain head now", &[], None, json!({"type": ["object", "null"]}))},
            "/api/v1/scan/allowlist": {"get": op("The workspace's scan allowlist extension", &[], None, list.clone()), "post": allow_add},
            "/api/v1/scan/allowlist/{global}": {"delete": op("Remove a global from the allowlist", &["global"], None, obj.clone())},
            "/api/v1/report": {"get": op("The compliance evidence (audit chain verified first)", &[], None, obj.clone())},
            "/api/v1/store/fsck": {"post": op("Read and authenticate every stored object", &[], None, obj.clone())},
            "/api/v1/secrets/{name}": {"put": secret_put, "delete": op("Remove a training secret", &["name"], None, obj.clone())},
    });
    if let (Some(paths), Some(more)) = (doc["paths"].as_object_mut(), more.as_object()) {
        paths.extend(more.clone());
    }
    doc
}

//! The handlers of `/api/v1`: each parses its input, calls the one
//! control-plane operation (which authorizes and audits), and answers JSON.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use citadel_control::Caller;
use citadel_store::AuditFilter;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;

type Reply = Result<Json<Value>, ApiError>;

fn to_json<T: serde::Serialize>(v: &T) -> Reply {
    serde_json::to_value(v).map(Json).map_err(|_| {
        ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal", "the answer could not be encoded")
    })
}

/// Who the credential names, and what it holds (no protected data).
pub async fn whoami(Extension(caller): Extension<Arc<Caller>>) -> Reply {
    Ok(Json(json!({
        "principal": caller.name(),
        "id": caller.id(),
        "credential": caller.credential().as_str(),
        "grants": caller.grants().iter().map(|g| json!({"role": g.role.as_str(), "scope": g.scope.as_str()})).collect::<Vec<_>>(),
    })))
}

pub async fn model_versions(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(name): Path<String>,
) -> Reply {
    to_json(&st.ws.model_versions(&caller, &name).await?)
}

pub async fn model_history(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(name): Path<String>,
) -> Reply {
    let (events, _) = st.ws.model_history(&caller, &name, None).await?;
    to_json(&events)
}

#[derive(Debug, Deserialize)]
pub struct RequestsQuery {
    #[serde(default)]
    pending: bool,
}

pub async fn stage_requests(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Query(q): Query<RequestsQuery>,
) -> Reply {
    to_json(&st.ws.model_requests(&caller, q.pending).await?)
}

/// `{"model": NAME, "version": N, "to": STAGE}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRequest {
    model: String,
    version: i64,
    to: String,
}

pub async fn request_stage(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Json(r): Json<NewRequest>,
) -> Reply {
    to_json(&st.ws.model_request_stage(&caller, &r.model, r.version, &r.to).await?)
}

/// `{"note": TEXT}` (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    #[serde(default)]
    note: String,
}

/// `POST /api/v1/stage-requests/{id}/{verb}`: `approve` or `reject`.
pub async fn decide(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Path((id, verb)): Path<(String, String)>,
    body: Option<Json<Decision>>,
) -> Reply {
    let approve = match verb.as_str() {
        "approve" => true,
        "reject" => false,
        _ => return Err(ApiError::new(axum::http::StatusCode::NOT_FOUND, "not_found", "use approve or reject")),
    };
    let note = body.map(|Json(d)| d.note).unwrap_or_default();
    to_json(&st.ws.model_decide(&caller, &id, approve, &note).await?)
}

pub async fn datasets(State(st): State<Arc<AppState>>, Extension(caller): Extension<Arc<Caller>>) -> Reply {
    let list = st.ws.data_list(&caller).await?;
    Ok(Json(Value::Array(
        list.into_iter()
            .map(|(name, version, status, rows)| json!({"dataset": name, "version": version, "status": status, "rows": rows}))
            .collect(),
    )))
}

pub async fn dataset_versions(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(name): Path<String>,
) -> Reply {
    to_json(&st.ws.data_versions(&caller, &name).await?)
}

pub async fn deployments(State(st): State<Arc<AppState>>, Extension(caller): Extension<Arc<Caller>>) -> Reply {
    to_json(&st.ws.deploy_list(&caller).await?)
}

pub async fn principals(State(st): State<Arc<AppState>>, Extension(caller): Extension<Arc<Caller>>) -> Reply {
    let list = st.ws.principal_list(&caller).await?;
    // One record per principal, its grants as ROLE@SCOPE (a table's cells).
    Ok(Json(Value::Array(
        list.iter()
            .map(|(p, g)| {
                json!({"id": p.id, "name": p.name, "kind": p.kind, "created_at": p.created_at, "created_by": p.created_by,
                       "disabled_at": p.disabled_at,
                       "grants": g.iter().map(|g| format!("{}@{}", g.role, g.scope)).collect::<Vec<_>>()})
            })
            .collect(),
    )))
}

pub async fn audit_verify(State(st): State<Arc<AppState>>, Extension(caller): Extension<Arc<Caller>>) -> Reply {
    to_json(&st.ws.audit_verify(&caller).await?)
}

/// Filters of `GET /api/v1/audit/records` (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordsQuery {
    actor: Option<String>,
    action: Option<String>,
    /// A prefix of the resource (`model:` for every model).
    resource: Option<String>,
    /// success, denied or failure.
    outcome: Option<String>,
    after_seq: Option<i64>,
    limit: Option<i64>,
}

pub async fn audit_records(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Query(q): Query<RecordsQuery>,
) -> Reply {
    let filter = audit_filter(q)?;
    to_json(&st.ws.audit_query(&caller, &filter).await?)
}

fn audit_filter(q: RecordsQuery) -> Result<AuditFilter, ApiError> {
    let outcome = match q.outcome.as_deref() {
        None => None,
        Some(o) => Some(citadel_audit::Outcome::parse(o).ok_or_else(|| {
            ApiError::new(axum::http::StatusCode::BAD_REQUEST, "bad_request", "outcome is success, denied or failure")
        })?),
    };
    let filter = AuditFilter {
        actor: q.actor,
        action: q.action,
        resource_prefix: q.resource,
        outcome,
        since: None,
        until: None,
        after_seq: q.after_seq,
        limit: Some(q.limit.unwrap_or(1_000).clamp(1, 10_000)),
    };
    Ok(filter)
}

#[derive(Debug, Deserialize)]
pub struct ExportQuery {
    #[serde(default = "jsonl")]
    format: String,
    #[serde(flatten)]
    filter: RecordsQuery,
}

fn jsonl() -> String {
    "jsonl".into()
}

/// `GET /api/v1/audit/export?format=jsonl|cef|ocsf&…`: the records encoded
/// for a SIEM, one string per record.
pub async fn audit_export(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Query(q): Query<ExportQuery>,
) -> Reply {
    let format: citadel_audit::ExportFormat =
        q.format.parse().map_err(|e: String| ApiError::new(axum::http::StatusCode::BAD_REQUEST, "bad_request", e))?;
    let filter = audit_filter(q.filter)?;
    to_json(&st.ws.audit_export(&caller, &filter, format).await?)
}

/// `POST /api/v1/audit/checkpoint`: signs the chain head now.
pub async fn audit_checkpoint(State(st): State<Arc<AppState>>, Extension(caller): Extension<Arc<Caller>>) -> Reply {
    to_json(&st.ws.audit_checkpoint(&caller).await?)
}

/// `GET /api/v1/scan/allowlist`: the workspace's reviewed extension.
pub async fn allowlist(State(st): State<Arc<AppState>>, Extension(caller): Extension<Arc<Caller>>) -> Reply {
    to_json(&st.ws.scan_allowlist(&caller).await?)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowBody {
    global: String,
    reason: String,
}

/// `POST /api/v1/scan/allowlist`: allow one global by its exact name, with a reason.
pub async fn allowlist_add(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Json(b): Json<AllowBody>,
) -> Reply {
    to_json(&st.ws.scan_allow_add(&caller, &b.global, &b.reason).await?)
}

/// `DELETE /api/v1/scan/allowlist/{global}`.
pub async fn allowlist_remove(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(global): Path<String>,
) -> Reply {
    st.ws.scan_allow_remove(&caller, &global).await?;
    Ok(Json(json!({"global": global, "removed": true})))
}

// ---------------------------------------------------------------- access

/// `{"name", "kind"}` (kind: user, service or oidc).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPrincipal {
    name: String,
    #[serde(default = "user")]
    kind: String,
}

fn user() -> String {
    "user".into()
}

pub async fn principal_create(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Json(p): Json<NewPrincipal>,
) -> Reply {
    to_json(&st.ws.principal_create(&caller, &p.name, &p.kind).await?)
}

pub async fn principal_disable(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(name): Path<String>,
) -> Reply {
    st.ws.principal_disable(&caller, &name).await?;
    st.auth.forget_all();
    Ok(Json(json!({"disabled": name})))
}

/// `{"principal", "role", "scope"}` (scope defaults to `*`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    principal: String,
    role: String,
    #[serde(default = "everything")]
    scope: String,
}

fn everything() -> String {
    "*".into()
}

/// `POST /api/v1/grants/{verb}`: `add` or `revoke`.
pub async fn grant(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(verb): Path<String>,
    Json(g): Json<GrantBody>,
) -> Reply {
    let changed = match verb.as_str() {
        "add" => st.ws.grant_add(&caller, &g.principal, &g.role, &g.scope).await?,
        "revoke" => st.ws.grant_revoke(&caller, &g.principal, &g.role, &g.scope).await?,
        _ => return Err(ApiError::new(axum::http::StatusCode::NOT_FOUND, "not_found", "use add or revoke")),
    };
    st.auth.forget_all();
    Ok(Json(json!({"changed": changed, "principal": g.principal, "role": g.role, "scope": g.scope})))
}

/// `{"principal", "label", "ttl_secs"}`; the token is in the answer, once.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    principal: String,
    #[serde(default)]
    label: String,
    #[serde(default = "ninety_days")]
    ttl_secs: i64,
}

fn ninety_days() -> i64 {
    90 * 86_400
}

pub async fn token_issue(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Json(t): Json<NewToken>,
) -> Reply {
    to_json(&st.ws.token_issue(&caller, &t.principal, &t.label, t.ttl_secs).await?)
}

pub async fn tokens(State(st): State<Arc<AppState>>, Extension(caller): Extension<Arc<Caller>>) -> Reply {
    to_json(&st.ws.token_list(&caller).await?)
}

pub async fn token_revoke(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(id): Path<String>,
) -> Reply {
    let changed = st.ws.token_revoke(&caller, &id).await?;
    st.auth.forget_all();
    Ok(Json(json!({"revoked": id, "changed": changed})))
}

pub async fn keys(State(st): State<Arc<AppState>>, Extension(caller): Extension<Arc<Caller>>) -> Reply {
    to_json(&st.ws.key_list(&caller).await?)
}

pub async fn artifacts(State(st): State<Arc<AppState>>, Extension(caller): Extension<Arc<Caller>>) -> Reply {
    to_json(&st.ws.artifact_list(&caller).await?)
}

// ---------------------------------------------------------------- reads

pub async fn dataset_version(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Path((name, version)): Path<(String, i64)>,
) -> Reply {
    to_json(&st.ws.data_show(&caller, &format!("{name}@{version}")).await?)
}

pub async fn deployment_history(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(name): Path<String>,
) -> Reply {
    to_json(&st.ws.deploy_history(&caller, &name).await?)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentsQuery {
    #[serde(default)]
    all: bool,
}

pub async fn incidents(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Query(q): Query<IncidentsQuery>,
) -> Reply {
    to_json(&st.ws.incident_list(&caller, q.all).await?)
}

pub async fn incident(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(id): Path<String>,
) -> Reply {
    let (incident, events) = st.ws.incident_show(&caller, &id).await?;
    let (Json(incident), Json(timeline)) = (to_json(&incident)?, to_json(&events)?);
    Ok(Json(json!({"incident": incident, "timeline": timeline})))
}

/// `POST /api/v1/incidents/{id}/{verb}`: `ack` or `resolve`, `{"note"}`.
pub async fn incident_transition(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Path((id, verb)): Path<(String, String)>,
    body: Option<Json<Decision>>,
) -> Reply {
    let note = body.map(|Json(d)| d.note).unwrap_or_default();
    let i = match verb.as_str() {
        "ack" => st.ws.incident_ack(&caller, &id, &note).await?,
        "resolve" => st.ws.incident_resolve(&caller, &id, &note).await?,
        // The playbook's actions undone.
        "undo" => return Ok(Json(json!({"incident": id, "undone": st.ws.incident_undo(&caller, &id).await?}))),
        _ => return Err(ApiError::new(axum::http::StatusCode::NOT_FOUND, "not_found", "use ack, resolve or undo")),
    };
    to_json(&i)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowsQuery {
    windows: Option<i64>,
}

pub async fn monitor_status(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(endpoint): Path<String>,
    Query(q): Query<WindowsQuery>,
) -> Reply {
    to_json(&st.ws.monitor_status(&caller, &endpoint, q.windows.unwrap_or(24).clamp(1, 10_000)).await?)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineageQuery {
    /// `dataset:NAME@V`, `model:NAME@V`, or an artifact id or name.
    reference: String,
}

pub async fn lineage(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Query(q): Query<LineageQuery>,
) -> Reply {
    to_json(&st.ws.lineage(&caller, &q.reference).await?)
}

// ---------------------------------------------------------------- deployments, secrets

/// `PUT /api/v1/deployments/{name}`: the endpoint's new spec (checked whole).
pub async fn deployment_set(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(name): Path<String>,
    Json(spec): Json<citadel_control::DeploymentSpec>,
) -> Reply {
    to_json(&st.ws.deploy_set(&caller, &name, &spec).await?)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchBody {
    label: String,
}

/// `POST /api/v1/deployments/{name}/switch`: blue/green's active color.
pub async fn deployment_switch(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(name): Path<String>,
    Json(b): Json<SwitchBody>,
) -> Reply {
    to_json(&st.ws.deploy_switch(&caller, &name, &b.label).await?)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    #[serde(default)]
    to: Option<i64>,
}

/// `POST /api/v1/deployments/{name}/rollback`.
pub async fn deployment_rollback(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(name): Path<String>,
    Json(b): Json<RollbackBody>,
) -> Reply {
    to_json(&st.ws.deploy_rollback(&caller, &name, b.to).await?)
}

/// `DELETE /api/v1/deployments/{name}`: stop serving it.
pub async fn deployment_remove(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(name): Path<String>,
) -> Reply {
    let revision = st.ws.deploy_remove(&caller, &name).await?;
    Ok(Json(json!({"name": name, "removed": true, "revision": revision})))
}

pub async fn secrets(State(st): State<Arc<AppState>>, Extension(caller): Extension<Arc<Caller>>) -> Reply {
    to_json(&st.ws.secret_list(&caller).await?)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretBody {
    /// The value (at most 64 KiB; sealed at once, never echoed or logged).
    value: String,
}

/// `PUT /api/v1/secrets/{name}`: stores a training secret, sealed.
pub async fn secret_set(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(name): Path<String>,
    Json(b): Json<SecretBody>,
) -> Reply {
    if b.value.is_empty() || b.value.len() > 64 * 1024 {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "bad_request",
            "a secret's value is 1 byte to 64 KiB",
        ));
    }
    st.ws.secret_set(&caller, &name, &b.value).await?;
    Ok(Json(json!({"secret": name, "stored": true})))
}

/// `DELETE /api/v1/secrets/{name}`.
pub async fn secret_remove(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(name): Path<String>,
) -> Reply {
    let removed = st.ws.secret_remove(&caller, &name).await?;
    Ok(Json(json!({"secret": name, "removed": removed})))
}

// ---------------------------------------------------------------- registry, data, runs, store

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetireBody {
    reason: String,
}

/// `POST /api/v1/models/{name}/versions/{version}/retire`.
pub async fn model_retire(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Path((name, version)): Path<(String, i64)>,
    Json(b): Json<RetireBody>,
) -> Reply {
    to_json(&st.ws.model_retire(&caller, &name, version, &b.reason).await?)
}

/// `POST /api/v1/models/{name}/rollback`: the previous production version back.
pub async fn model_rollback(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(name): Path<String>,
) -> Reply {
    to_json(&st.ws.model_rollback(&caller, &name).await?)
}

/// `GET /api/v1/models/{name}/versions/{version}/bom`: the CycloneDX ML-BOM.
pub async fn model_bom(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Path((name, version)): Path<(String, i64)>,
) -> Reply {
    Ok(Json(st.ws.model_bom(&caller, &name, version).await?))
}

/// `GET /api/v1/signing-key`: the model-signing public key (PEM).
pub async fn signing_key(State(st): State<Arc<AppState>>, Extension(caller): Extension<Arc<Caller>>) -> Reply {
    Ok(Json(json!({"public_key_pem": st.ws.model_signing_public_key(&caller).await?})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoteBody {
    #[serde(default)]
    note: String,
}

/// `POST /api/v1/datasets/{name}/versions/{version}/release`: a quarantined version released.
pub async fn data_release(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Path((name, version)): Path<(String, i64)>,
    Json(b): Json<NoteBody>,
) -> Reply {
    to_json(&st.ws.data_release(&caller, &format!("{name}@{version}"), &b.note).await?)
}

#[derive(Debug, Deserialize)]
pub struct DiffQuery {
    from: String,
    to: String,
}

/// `GET /api/v1/dataset-diff?from=NAME@V&to=NAME@V`.
pub async fn data_diff(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Query(q): Query<DiffQuery>,
) -> Reply {
    to_json(&st.ws.data_diff(&caller, &q.from, &q.to).await?)
}

#[derive(Debug, Deserialize)]
pub struct RunsQuery {
    #[serde(default = "twenty")]
    limit: i64,
}

fn twenty() -> i64 {
    20
}

/// `GET /api/v1/runs?limit=N`: recent pipeline runs, newest first.
pub async fn runs(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Query(q): Query<RunsQuery>,
) -> Reply {
    to_json(&st.ws.run_list(&caller, q.limit.clamp(1, 10_000)).await?)
}

/// `GET /api/v1/runs/{id}`.
pub async fn run(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(id): Path<String>,
) -> Reply {
    Ok(Json(st.ws.run_show(&caller, &id).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcBody {
    #[serde(default)]
    grace_secs: Option<i64>,
}

/// `POST /api/v1/store/gc`.
pub async fn gc(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Json(b): Json<GcBody>,
) -> Reply {
    to_json(&st.ws.gc(&caller, b.grace_secs).await?)
}

/// `POST /api/v1/store/fsck`: every object read and authenticated.
pub async fn fsck(State(st): State<Arc<AppState>>, Extension(caller): Extension<Arc<Caller>>) -> Reply {
    to_json(&st.ws.fsck(&caller, None).await?)
}

/// `GET /api/v1/report`: the compliance evidence (the CLI renders the report from it).
pub async fn report(State(st): State<Arc<AppState>>, Extension(caller): Extension<Arc<Caller>>) -> Reply {
    to_json(&st.ws.compliance_evidence(&caller).await?)
}

// ---------------------------------------------------------------- data subjects

/// A data-subject request's body: the subject's values travel only in a
/// body (never in a URL, never logged). `subjects`: each a list of
/// `[column, value]` conditions that must all hold.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectBody {
    dataset: String,
    subjects: Vec<Vec<(String, String)>>,
    #[serde(default = "thousand")]
    max_rows: u64,
    #[serde(default)]
    reason: Option<String>,
}

fn thousand() -> u64 {
    1000
}

fn subjects_of(b: &SubjectBody) -> Result<Vec<citadel_data::erase::Subject>, ApiError> {
    if b.subjects.is_empty() || b.subjects.len() > 100_000 {
        return Err(ApiError::new(axum::http::StatusCode::BAD_REQUEST, "bad_request", "name 1 to 100,000 subjects"));
    }
    b.subjects
        .iter()
        .map(|conds| {
            let pairs: Vec<String> = conds.iter().map(|(c, v)| format!("{c}={v}")).collect();
            citadel_data::erase::Subject::parse(&pairs).map_err(|e| {
                ApiError::new(axum::http::StatusCode::BAD_REQUEST, "bad_request", format!("a subject: {e}"))
            })
        })
        .collect()
}

/// `POST /api/v1/subjects/erase` (Art. 17): the signed receipt.
pub async fn subject_erase(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Json(b): Json<SubjectBody>,
) -> Reply {
    let subjects = subjects_of(&b)?;
    let reason = b.reason.clone().unwrap_or_default();
    let Ok(slot) = st.long_jobs.clone().try_acquire_owned() else {
        return Err(ApiError {
            retry_after_secs: Some(30),
            ..ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "busy",
                "the server is running as many pipelines and erasures as it takes; retry later",
            )
        });
    };
    // The erasure's future is not `Send` (a higher-ranked closure inside):
    // it runs to completion on a blocking thread of this runtime.
    let (ws, handle) = (st.ws.clone(), tokio::runtime::Handle::current());
    let receipt = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        handle.block_on(ws.subject_erase(&caller, &b.dataset, subjects, &reason, b.max_rows, &|_| {}))
    })
    .await
    .map_err(|_| {
        ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal", "the erasure task failed")
    })??;
    to_json(&receipt)
}

/// `POST /api/v1/subjects/export` (Art. 15, 20): every stored row of the subject.
pub async fn subject_export(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Json(b): Json<SubjectBody>,
) -> Reply {
    let subjects = subjects_of(&b)?;
    to_json(&st.ws.subject_export(&caller, &b.dataset, subjects, b.max_rows).await?)
}

/// `GET /api/v1/erasures`.
pub async fn erasures(State(st): State<Arc<AppState>>, Extension(caller): Extension<Arc<Caller>>) -> Reply {
    to_json(&st.ws.erasure_list(&caller).await?)
}

/// `GET /api/v1/erasures/{id}`: the receipt and whether its signature verifies.
pub async fn erasure(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(id): Path<String>,
) -> Reply {
    to_json(&st.ws.erasure_receipt(&caller, &id).await?)
}

/// `GET /api/v1/models`: every registered model with its latest and staged versions.
pub async fn models(State(st): State<Arc<AppState>>, Extension(caller): Extension<Arc<Caller>>) -> Reply {
    to_json(&st.ws.model_list(&caller).await?)
}

//! Typed reads and writes of the metadata tables. Writes take a connection
//! (usually an [`AuditedTx`](crate::AuditedTx)'s) so the caller decides the
//! transaction; reads take the pool.

use serde::Serialize;
use sqlx::{AnyConnection, AnyPool, Row};

use citadel_audit::{AuditEvent, AuditRecord, Checkpoint, Outcome};
use citadel_types::Timestamp;

use crate::{Result, StoreError};

fn malformed(what: &str) -> StoreError {
    StoreError::Malformed(what.to_string())
}

// ---------------------------------------------------------------- workspace

pub async fn meta_get(pool: &AnyPool, key: &str) -> Result<Option<String>> {
    let row = sqlx::query("SELECT value FROM workspace_meta WHERE key = $1").bind(key).fetch_optional(pool).await?;
    Ok(row.map(|r| r.try_get("value")).transpose()?)
}

pub async fn meta_set(conn: &mut AnyConnection, key: &str, value: &str) -> Result<()> {
    sqlx::query("INSERT INTO workspace_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = $2")
        .bind(key)
        .bind(value)
        .execute(conn)
        .await?;
    Ok(())
}

// ---------------------------------------------------------------- principals

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Principal {
    pub id: String,
    pub name: String,
    /// `user` or `service`.
    pub kind: String,
    pub created_at: Timestamp,
    pub created_by: String,
    pub disabled_at: Option<Timestamp>,
}

fn principal_from(row: &sqlx::any::AnyRow) -> Result<Principal> {
    Ok(Principal {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        kind: row.try_get("kind")?,
        created_at: Timestamp(row.try_get("created_at")?),
        created_by: row.try_get("created_by")?,
        disabled_at: row.try_get::<Option<i64>, _>("disabled_at")?.map(Timestamp),
    })
}

const PRINCIPAL_COLS: &str = "id, name, kind, created_at, created_by, disabled_at";

pub async fn principal_insert(conn: &mut AnyConnection, p: &Principal) -> Result<()> {
    sqlx::query("INSERT INTO principals (id, name, kind, created_at, created_by) VALUES ($1, $2, $3, $4, $5)")
        .bind(p.id.clone())
        .bind(p.name.clone())
        .bind(p.kind.clone())
        .bind(p.created_at.0)
        .bind(p.created_by.clone())
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn principal_by_id(pool: &AnyPool, id: &str) -> Result<Option<Principal>> {
    let q = format!("SELECT {PRINCIPAL_COLS} FROM principals WHERE id = $1");
    sqlx::query(&q).bind(id).fetch_optional(pool).await?.as_ref().map(principal_from).transpose()
}

pub async fn principal_by_name(pool: &AnyPool, name: &str) -> Result<Option<Principal>> {
    let q = format!("SELECT {PRINCIPAL_COLS} FROM principals WHERE name = $1");
    sqlx::query(&q).bind(name).fetch_optional(pool).await?.as_ref().map(principal_from).transpose()
}

pub async fn principal_list(pool: &AnyPool) -> Result<Vec<Principal>> {
    let q = format!("SELECT {PRINCIPAL_COLS} FROM principals ORDER BY name");
    sqlx::query(&q).fetch_all(pool).await?.iter().map(principal_from).collect()
}

/// Clears a principal's `disabled_at`; true when it was disabled.
pub async fn principal_enable(conn: &mut AnyConnection, id: &str) -> Result<bool> {
    let r = sqlx::query("UPDATE principals SET disabled_at = NULL WHERE id = $1 AND disabled_at IS NOT NULL")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(r.rows_affected() > 0)
}

pub async fn principal_disable(conn: &mut AnyConnection, id: &str, at: Timestamp) -> Result<bool> {
    let r = sqlx::query("UPDATE principals SET disabled_at = $1 WHERE id = $2 AND disabled_at IS NULL")
        .bind(at.0)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(r.rows_affected() > 0)
}

// ---------------------------------------------------------------- tokens

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TokenRow {
    pub id: String,
    pub principal_id: String,
    #[serde(skip)]
    pub secret_hash: String,
    pub label: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

fn token_from(row: &sqlx::any::AnyRow) -> Result<TokenRow> {
    Ok(TokenRow {
        id: row.try_get("id")?,
        principal_id: row.try_get("principal_id")?,
        secret_hash: row.try_get("secret_hash")?,
        label: row.try_get("label")?,
        created_at: Timestamp(row.try_get("created_at")?),
        expires_at: Timestamp(row.try_get("expires_at")?),
        revoked_at: row.try_get::<Option<i64>, _>("revoked_at")?.map(Timestamp),
    })
}

const TOKEN_COLS: &str = "id, principal_id, secret_hash, label, created_at, expires_at, revoked_at";

pub async fn token_insert(conn: &mut AnyConnection, t: &TokenRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO api_tokens (id, principal_id, secret_hash, label, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(t.id.clone())
    .bind(t.principal_id.clone())
    .bind(t.secret_hash.clone())
    .bind(t.label.clone())
    .bind(t.created_at.0)
    .bind(t.expires_at.0)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn token_by_id(pool: &AnyPool, id: &str) -> Result<Option<TokenRow>> {
    let q = format!("SELECT {TOKEN_COLS} FROM api_tokens WHERE id = $1");
    sqlx::query(&q).bind(id).fetch_optional(pool).await?.as_ref().map(token_from).transpose()
}

pub async fn token_list(pool: &AnyPool, principal_id: Option<&str>) -> Result<Vec<TokenRow>> {
    let rows = match principal_id {
        Some(p) => {
            let q = format!("SELECT {TOKEN_COLS} FROM api_tokens WHERE principal_id = $1 ORDER BY created_at");
            sqlx::query(&q).bind(p).fetch_all(pool).await?
        }
        None => {
            let q = format!("SELECT {TOKEN_COLS} FROM api_tokens ORDER BY created_at");
            sqlx::query(&q).fetch_all(pool).await?
        }
    };
    rows.iter().map(token_from).collect()
}

pub async fn token_revoke(conn: &mut AnyConnection, id: &str, at: Timestamp) -> Result<bool> {
    let r = sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(at.0)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(r.rows_affected() > 0)
}

// ---------------------------------------------------------------- grants

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GrantRow {
    pub principal_id: String,
    pub role: String,
    pub scope: String,
    pub created_at: Timestamp,
    pub created_by: String,
}

pub async fn grant_insert(conn: &mut AnyConnection, g: &GrantRow) -> Result<bool> {
    let r = sqlx::query(
        "INSERT INTO grants (principal_id, role, scope, created_at, created_by) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (principal_id, role, scope) DO NOTHING",
    )
    .bind(g.principal_id.clone())
    .bind(g.role.clone())
    .bind(g.scope.clone())
    .bind(g.created_at.0)
    .bind(g.created_by.clone())
    .execute(conn)
    .await?;
    Ok(r.rows_affected() > 0)
}

pub async fn grant_delete(conn: &mut AnyConnection, principal_id: &str, role: &str, scope: &str) -> Result<bool> {
    let r = sqlx::query("DELETE FROM grants WHERE principal_id = $1 AND role = $2 AND scope = $3")
        .bind(principal_id)
        .bind(role)
        .bind(scope)
        .execute(conn)
        .await?;
    Ok(r.rows_affected() > 0)
}

pub async fn grants_of(pool: &AnyPool, principal_id: &str) -> Result<Vec<GrantRow>> {
    let rows = sqlx::query(
        "SELECT principal_id, role, scope, created_at, created_by FROM grants WHERE principal_id = $1 ORDER BY role, scope",
    )
    .bind(principal_id)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(GrantRow {
                principal_id: r.try_get("principal_id")?,
                role: r.try_get("role")?,
                scope: r.try_get("scope")?,
                created_at: Timestamp(r.try_get("created_at")?),
                created_by: r.try_get("created_by")?,
            })
        })
        .collect()
}

// ---------------------------------------------------------------- keys

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MasterKeyRow {
    pub id: String,
    pub provider: String,
    /// `active` or `retired`.
    pub status: String,
    pub created_at: Timestamp,
    pub retired_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataKeyRow {
    pub id: String,
    pub purpose: String,
    pub master_key_id: String,
    pub wrapped: Vec<u8>,
    pub created_at: Timestamp,
}

pub async fn master_key_insert(conn: &mut AnyConnection, k: &MasterKeyRow) -> Result<()> {
    sqlx::query("INSERT INTO master_keys (id, provider, status, created_at) VALUES ($1, $2, $3, $4)")
        .bind(k.id.clone())
        .bind(k.provider.clone())
        .bind(k.status.clone())
        .bind(k.created_at.0)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn master_key_retire(conn: &mut AnyConnection, id: &str, at: Timestamp) -> Result<()> {
    sqlx::query("UPDATE master_keys SET status = 'retired', retired_at = $1 WHERE id = $2")
        .bind(at.0)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn master_keys(pool: &AnyPool) -> Result<Vec<MasterKeyRow>> {
    let rows = sqlx::query("SELECT id, provider, status, created_at, retired_at FROM master_keys ORDER BY created_at")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(MasterKeyRow {
                id: r.try_get("id")?,
                provider: r.try_get("provider")?,
                status: r.try_get("status")?,
                created_at: Timestamp(r.try_get("created_at")?),
                retired_at: r.try_get::<Option<i64>, _>("retired_at")?.map(Timestamp),
            })
        })
        .collect()
}

pub async fn data_key_insert(conn: &mut AnyConnection, k: &DataKeyRow) -> Result<()> {
    sqlx::query("INSERT INTO data_keys (id, purpose, master_key_id, wrapped, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(k.id.clone())
        .bind(k.purpose.clone())
        .bind(k.master_key_id.clone())
        .bind(hex::encode(&k.wrapped))
        .bind(k.created_at.0)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn data_key_rewrap(conn: &mut AnyConnection, id: &str, master_key_id: &str, wrapped: &[u8]) -> Result<()> {
    sqlx::query("UPDATE data_keys SET master_key_id = $1, wrapped = $2 WHERE id = $3")
        .bind(master_key_id)
        .bind(hex::encode(wrapped))
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn data_keys(pool: &AnyPool) -> Result<Vec<DataKeyRow>> {
    let rows = sqlx::query("SELECT id, purpose, master_key_id, wrapped, created_at FROM data_keys ORDER BY purpose")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(DataKeyRow {
                id: r.try_get("id")?,
                purpose: r.try_get("purpose")?,
                master_key_id: r.try_get("master_key_id")?,
                wrapped: hex::decode(r.try_get::<String, _>("wrapped")?).map_err(|_| malformed("wrapped data key"))?,
                created_at: Timestamp(r.try_get("created_at")?),
            })
        })
        .collect()
}

// ---------------------------------------------------------------- lineage

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LineageEdge {
    pub child: String,
    pub parent: String,
    pub relation: String,
}

pub async fn lineage_insert(conn: &mut AnyConnection, e: &LineageEdge) -> Result<()> {
    sqlx::query(
        "INSERT INTO lineage_edges (child, parent, relation, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (child, parent, relation) DO NOTHING",
    )
    .bind(e.child.clone())
    .bind(e.parent.clone())
    .bind(e.relation.clone())
    .bind(Timestamp::now().0)
    .execute(conn)
    .await?;
    Ok(())
}

/// Edges touching `node`, in one direction: its parents (`upstream`) or its
/// children.
pub async fn lineage_edges(pool: &AnyPool, node: &str, upstream: bool) -> Result<Vec<LineageEdge>> {
    let q = if upstream {
        "SELECT child, parent, relation FROM lineage_edges WHERE child = $1 ORDER BY parent"
    } else {
        "SELECT child, parent, relation FROM lineage_edges WHERE parent = $1 ORDER BY child"
    };
    let rows = sqlx::query(q).bind(node).fetch_all(pool).await?;
    rows.iter()
        .map(|r| {
            Ok(LineageEdge {
                child: r.try_get("child")?,
                parent: r.try_get("parent")?,
                relation: r.try_get("relation")?,
            })
        })
        .collect()
}

// ---------------------------------------------------------------- audit

/// Filters for `audit query`; all optional, combined with AND.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    /// Prefix match on the resource (`artifact:` matches every artifact).
    pub resource_prefix: Option<String>,
    pub outcome: Option<Outcome>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    /// Only records with a greater sequence number.
    pub after_seq: Option<i64>,
    pub limit: Option<i64>,
}

fn audit_from(row: &sqlx::any::AnyRow) -> Result<AuditRecord> {
    let outcome: String = row.try_get("outcome")?;
    let details: String = row.try_get("details")?;
    Ok(AuditRecord {
        seq: row.try_get("seq")?,
        event: AuditEvent {
            ts: Timestamp(row.try_get("ts")?),
            actor: row.try_get("actor")?,
            action: row.try_get("action")?,
            resource: row.try_get("resource")?,
            // An unparseable outcome or details is a tampered row: keep it
            // readable so verification can name it instead of erroring out.
            outcome: Outcome::parse(&outcome).unwrap_or(Outcome::Failure),
            request_id: row.try_get("request_id")?,
            details: serde_json::from_str(&details).unwrap_or(serde_json::Value::String(details)),
        },
        prev_hash: row.try_get::<String, _>("prev_hash")?.parse().unwrap_or(citadel_types::Digest::ZERO),
        hash: row.try_get::<String, _>("hash")?.parse().unwrap_or(citadel_types::Digest::ZERO),
    })
}

const AUDIT_COLS: &str = "seq, ts, actor, action, resource, outcome, request_id, details, prev_hash, hash";

pub async fn audit_query(pool: &AnyPool, f: &AuditFilter) -> Result<Vec<AuditRecord>> {
    let mut q = format!("SELECT {AUDIT_COLS} FROM audit_log WHERE 1 = 1");
    let mut n = 0;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    if f.actor.is_some() {
        q += &format!(" AND actor = {}", next());
    }
    if f.action.is_some() {
        q += &format!(" AND action = {}", next());
    }
    if f.resource_prefix.is_some() {
        q += &format!(" AND substr(resource, 1, {}) = {}", f.resource_prefix.as_ref().map_or(0, |s| s.len()), next());
    }
    if f.outcome.is_some() {
        q += &format!(" AND outcome = {}", next());
    }
    if f.since.is_some() {
        q += &format!(" AND ts >= {}", next());
    }
    if f.until.is_some() {
        q += &format!(" AND ts < {}", next());
    }
    if f.after_seq.is_some() {
        q += &format!(" AND seq > {}", next());
    }
    q += " ORDER BY seq";
    if let Some(limit) = f.limit {
        q += &format!(" LIMIT {}", limit.max(0));
    }
    let mut query = sqlx::query(&q);
    if let Some(v) = &f.actor {
        query = query.bind(v.clone());
    }
    if let Some(v) = &f.action {
        query = query.bind(v.clone());
    }
    if let Some(v) = &f.resource_prefix {
        query = query.bind(v.clone());
    }
    if let Some(v) = f.outcome {
        query = query.bind(v.as_str());
    }
    if let Some(v) = f.since {
        query = query.bind(v.0);
    }
    if let Some(v) = f.until {
        query = query.bind(v.0);
    }
    if let Some(v) = f.after_seq {
        query = query.bind(v);
    }
    query.fetch_all(pool).await?.iter().map(audit_from).collect()
}

pub async fn audit_checkpoints(pool: &AnyPool) -> Result<Vec<Checkpoint>> {
    let rows = sqlx::query("SELECT seq, head, ts, key_id, signature FROM audit_checkpoints ORDER BY seq")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Checkpoint {
                seq: r.try_get("seq")?,
                head: r.try_get::<String, _>("head")?.parse().unwrap_or(citadel_types::Digest::ZERO),
                ts: Timestamp(r.try_get("ts")?),
                key_id: r.try_get("key_id")?,
                signature: hex::decode(r.try_get::<String, _>("signature")?).unwrap_or_default(),
            })
        })
        .collect()
}

/// Forwarding destination `name`: the destination it is bound to and the
/// last audit sequence number it has confirmed (None when it never forwarded).
pub async fn forward_cursor(pool: &AnyPool, name: &str) -> Result<Option<(String, i64)>> {
    let row = sqlx::query("SELECT destination, last_seq FROM audit_forward_cursors WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await?;
    Ok(match row {
        Some(r) => Some((r.try_get("destination")?, r.try_get("last_seq")?)),
        None => None,
    })
}

/// Binds `name` to `destination` with its cursor at 0, unless it exists.
pub async fn bind_forward_cursor(pool: &AnyPool, name: &str, destination: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_forward_cursors (name, destination, last_seq, updated_at) VALUES ($1, $2, 0, $3) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(destination)
    .bind(Timestamp::now().0)
    .execute(pool)
    .await?;
    Ok(())
}

/// Moves destination `name`'s cursor forward to `seq` (never back).
pub async fn set_forward_cursor(pool: &AnyPool, name: &str, seq: i64) -> Result<()> {
    sqlx::query("UPDATE audit_forward_cursors SET last_seq = $1, updated_at = $2 WHERE name = $3 AND last_seq < $1")
        .bind(seq)
        .bind(Timestamp::now().0)
        .bind(name)
        .execute(pool)
        .await?;
    Ok(())
}

/// Points destination `name` at `destination`, only while it has confirmed nothing.
pub async fn rebind_forward_cursor(pool: &AnyPool, name: &str, destination: &str) -> Result<()> {
    sqlx::query("UPDATE audit_forward_cursors SET destination = $1, updated_at = $2 WHERE name = $3 AND last_seq = 0")
        .bind(destination)
        .bind(Timestamp::now().0)
        .bind(name)
        .execute(pool)
        .await?;
    Ok(())
}

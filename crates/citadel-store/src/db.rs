//! The metadata database: one sqlx code path over SQLite (default) and
//! PostgreSQL, with versioned, checksummed migrations embedded in the binary.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyConnection, AnyPool, Executor, Row, Transaction};

use citadel_audit::{AuditEvent, AuditRecord, Checkpoint};
use citadel_crypto::AuditSigner;
use citadel_types::{Digest, Timestamp};

use crate::{Result, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbBackend {
    Sqlite,
    Postgres,
}

impl DbBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            DbBackend::Sqlite => "sqlite",
            DbBackend::Postgres => "postgres",
        }
    }
}

/// (version, description, SQL). Append only: never edit an applied migration.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "foundation", include_str!("../migrations/0001_foundation.sql")),
    (2, "registry", include_str!("../migrations/0002_registry.sql")),
    (3, "data", include_str!("../migrations/0003_data.sql")),
    (4, "deployments", include_str!("../migrations/0004_deployments.sql")),
    (5, "pipelines", include_str!("../migrations/0005_pipelines.sql")),
    (6, "subjects", include_str!("../migrations/0006_subjects.sql")),
    (7, "audit_forward", include_str!("../migrations/0007_audit_forward.sql")),
    (8, "monitoring", include_str!("../migrations/0008_monitoring.sql")),
    (9, "monitor_parts", include_str!("../migrations/0009_monitor_parts.sql")),
    (10, "playbook_pending", include_str!("../migrations/0010_playbook_pending.sql")),
];

/// A handle to the metadata database. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    backend: DbBackend,
    signer: Option<Arc<AuditSigner>>,
    checkpoint_every: i64,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("backend", &self.backend).finish()
    }
}

impl Db {
    /// Connects to `url` (`sqlite://PATH` or `postgres://…`), creating the
    /// SQLite file if needed, and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            DbBackend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            DbBackend::Postgres
        } else {
            return Err(StoreError::DbUrl(url.split(':').next().unwrap_or("").to_string()));
        };
        let url = match backend {
            DbBackend::Sqlite if !url.contains("mode=") => {
                format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
            }
            _ => url.to_string(),
        };
        if backend == DbBackend::Sqlite {
            // The metadata holds profiles and the audit log: a new file is
            // the owner's only (SQLite gives its -wal and -shm the same
            // mode). An existing file keeps the mode its operator chose.
            let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or("");
            let path = path.split('?').next().unwrap_or("");
            if !path.is_empty() && !path.contains(":memory:") && !std::path::Path::new(path).exists() {
                use std::os::unix::fs::OpenOptionsExt;
                let _ = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path);
            }
        }
        let opts = AnyConnectOptions::from_str(&url)
            .map_err(|source| StoreError::Connect { backend: backend.as_str(), source })?;
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == DbBackend::Sqlite { 4 } else { 8 })
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == DbBackend::Sqlite {
                        // WAL: readers never block the writer. FULL sync: a
                        // committed transaction survives power loss.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute("PRAGMA busy_timeout = 30000").await?;
                        // Deleted rows (an erased version's profile, a purged
                        // version) are overwritten, not left in free pages.
                        conn.execute("PRAGMA secure_delete = ON").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await
            .map_err(|source| StoreError::Connect { backend: backend.as_str(), source })?;
        let db = Db { pool, backend, signer: None, checkpoint_every: 64 };
        db.migrate().await?;
        Ok(db)
    }

    pub fn backend(&self) -> DbBackend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Enables signed checkpoints: one every `every` audit records.
    pub fn with_audit_signer(mut self, signer: Arc<AuditSigner>, every: i64) -> Self {
        self.signer = Some(signer);
        self.checkpoint_every = every.max(1);
        self
    }

    pub fn audit_signer(&self) -> Option<&Arc<AuditSigner>> {
        self.signer.as_ref()
    }

    /// SQLite only: writes the WAL back into the database and truncates it,
    /// so pages of deleted rows (overwritten by `secure_delete`) leave the
    /// `-wal` file too. A no-op on PostgreSQL.
    pub async fn truncate_wal(&self) -> Result<()> {
        if self.backend == DbBackend::Sqlite {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").fetch_all(&self.pool).await?;
        }
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await
    }

    async fn migrate(&self) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        tx.execute(
            "CREATE TABLE IF NOT EXISTS citadel_migrations (version BIGINT PRIMARY KEY, \
             description TEXT NOT NULL, checksum TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .await?;
        if self.backend == DbBackend::Postgres {
            // Two processes starting at once must not both apply migrations.
            tx.execute("LOCK TABLE citadel_migrations IN EXCLUSIVE MODE").await?;
        }
        let applied = sqlx::query("SELECT version, checksum FROM citadel_migrations ORDER BY version")
            .fetch_all(&mut *tx)
            .await?;
        let supported = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
        for row in &applied {
            let version: i64 = row.try_get("version")?;
            let checksum: String = row.try_get("checksum")?;
            match MIGRATIONS.iter().find(|m| m.0 == version) {
                None => return Err(StoreError::SchemaTooNew { found: version, supported }),
                Some(m) if Digest::of(m.2.as_bytes()).to_hex() != checksum => {
                    return Err(StoreError::MigrationChecksum { version });
                }
                Some(_) => {}
            }
        }
        for (version, description, sql) in MIGRATIONS {
            if applied.iter().any(|r| r.try_get::<i64, _>("version").ok() == Some(*version)) {
                continue;
            }
            for statement in split_statements(sql) {
                tx.execute(statement.as_str()).await?;
            }
            sqlx::query(
                "INSERT INTO citadel_migrations (version, description, checksum, applied_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(*version)
            .bind(*description)
            .bind(Digest::of(sql.as_bytes()).to_hex())
            .bind(Timestamp::now().0)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Starts a transaction that will commit together with one audit record.
    ///
    /// Its first statement advances the chain head, which takes the write
    /// lock (SQLite) or the head row's lock (PostgreSQL): audited
    /// transactions are serialized, so the chain never forks.
    pub async fn begin_audited(&self) -> Result<AuditedTx> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash")
            .fetch_one(&mut *tx)
            .await?;
        let seq: i64 = row.try_get("seq")?;
        let prev: String = row.try_get("hash")?;
        let prev_hash = prev.parse().map_err(|_| StoreError::Malformed("audit head hash".into()))?;
        Ok(AuditedTx { tx, seq, prev_hash, db: self.clone() })
    }

    /// Appends one audit record on its own (denials, failures, reads).
    pub async fn append_audit(&self, event: AuditEvent) -> Result<AuditRecord> {
        self.begin_audited().await?.commit(event).await
    }

    /// Appends several records in one transaction (a gateway's batch of
    /// refused credentials): one write however many there are, so a flood
    /// of bad credentials is not a flood of serialized commits. The records
    /// chain exactly as if appended one by one.
    pub async fn append_audit_batch(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditRecord>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let n = events.len() as i64;
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("UPDATE audit_head SET seq = seq + $1 WHERE id = 1 RETURNING seq, hash")
            .bind(n)
            .fetch_one(&mut *tx)
            .await?;
        let last: i64 = row.try_get("seq")?;
        let mut prev: Digest =
            row.try_get::<String, _>("hash")?.parse().map_err(|_| StoreError::Malformed("audit head hash".into()))?;
        let mut records = Vec::with_capacity(events.len());
        for (i, event) in events.into_iter().enumerate() {
            let record = AuditRecord::chain(last - n + i as i64, prev, event);
            insert_record(&mut tx, &record).await?;
            if let Some(signer) = &self.signer
                && record.seq % self.checkpoint_every == 0
            {
                insert_checkpoint(&mut tx, &Checkpoint::sign(record.seq, record.hash, signer)).await?;
            }
            prev = record.hash;
            records.push(record);
        }
        sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1").bind(prev.to_hex()).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(records)
    }

    /// Signs a checkpoint of the current head, if it is not signed yet.
    pub async fn checkpoint_now(&self) -> Result<Option<Checkpoint>> {
        let Some(signer) = &self.signer else { return Ok(None) };
        let mut tx = self.pool.begin().await?;
        let row =
            sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash").fetch_one(&mut *tx).await?;
        let seq: i64 = row.try_get("seq")?;
        if seq == 0 {
            return Ok(None);
        }
        let head: Digest =
            row.try_get::<String, _>("hash")?.parse().map_err(|_| StoreError::Malformed("audit head hash".into()))?;
        let cp = Checkpoint::sign(seq, head, signer);
        let inserted = insert_checkpoint(&mut tx, &cp).await?;
        tx.commit().await?;
        Ok(inserted.then_some(cp))
    }
}

async fn insert_record(conn: &mut AnyConnection, record: &AuditRecord) -> Result<()> {
    let e = &record.event;
    sqlx::query(
        "INSERT INTO audit_log (seq, ts, actor, action, resource, outcome, request_id, details, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(record.seq)
    .bind(e.ts.0)
    .bind(e.actor.clone())
    .bind(e.action.clone())
    .bind(e.resource.clone())
    .bind(e.outcome.as_str())
    .bind(e.request_id.clone())
    .bind(serde_json::to_string(&e.details).unwrap_or_else(|_| "null".into()))
    .bind(record.prev_hash.to_hex())
    .bind(record.hash.to_hex())
    .execute(conn)
    .await?;
    Ok(())
}

async fn insert_checkpoint(conn: &mut AnyConnection, cp: &Checkpoint) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO audit_checkpoints (seq, head, ts, key_id, signature) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (seq) DO NOTHING",
    )
    .bind(cp.seq)
    .bind(cp.head.to_hex())
    .bind(cp.ts.0)
    .bind(cp.key_id.clone())
    .bind(hex::encode(&cp.signature))
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Splits a migration file on `;` at line ends. Migrations are ours, so a
/// simple rule suffices: no `;` inside string literals at a line's end.
fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
        if trimmed.ends_with(';') {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

/// A database transaction bound to the audit record that describes it.
/// Dropping it without [`commit`](Self::commit) rolls everything back,
/// including the reserved sequence number.
pub struct AuditedTx {
    tx: Transaction<'static, Any>,
    seq: i64,
    prev_hash: Digest,
    db: Db,
}

impl std::fmt::Debug for AuditedTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditedTx").field("seq", &self.seq).finish()
    }
}

impl AuditedTx {
    pub fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    /// Writes `event` as the next chain record and commits everything.
    pub async fn commit(mut self, event: AuditEvent) -> Result<AuditRecord> {
        let record = AuditRecord::chain(self.seq - 1, self.prev_hash, event);
        insert_record(&mut self.tx, &record).await?;
        sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
            .bind(record.hash.to_hex())
            .execute(&mut *self.tx)
            .await?;
        if let Some(signer) = &self.db.signer
            && record.seq % self.db.checkpoint_every == 0
        {
            let cp = Checkpoint::sign(record.seq, record.hash, signer);
            insert_checkpoint(&mut self.tx, &cp).await?;
        }
        self.tx.commit().await?;
        Ok(record)
    }
}

-- Portable SQL: runs unchanged on SQLite and PostgreSQL.
-- Binary values are stored as lowercase hex TEXT, times as BIGINT
-- microseconds since the Unix epoch (UTC).

CREATE TABLE workspace_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE principals (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    disabled_at BIGINT
);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    principal_id TEXT NOT NULL REFERENCES principals (id),
    secret_hash TEXT NOT NULL,
    label TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX api_tokens_by_principal ON api_tokens (principal_id);

CREATE TABLE grants (
    principal_id TEXT NOT NULL REFERENCES principals (id),
    role TEXT NOT NULL,
    scope TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (principal_id, role, scope)
);

CREATE TABLE master_keys (
    id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT
);

CREATE TABLE data_keys (
    id TEXT PRIMARY KEY,
    purpose TEXT NOT NULL UNIQUE,
    master_key_id TEXT NOT NULL REFERENCES master_keys (id),
    wrapped TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE chunks (
    name TEXT PRIMARY KEY,
    stored_size BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE artifacts (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    size BIGINT NOT NULL,
    file_count BIGINT NOT NULL,
    chunk_count BIGINT NOT NULL,
    stored_bytes_new BIGINT NOT NULL,
    manifest_object TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE artifact_names (
    name TEXT NOT NULL,
    artifact_id TEXT NOT NULL REFERENCES artifacts (id),
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (name, artifact_id)
);
CREATE INDEX artifact_names_by_artifact ON artifact_names (artifact_id);

CREATE TABLE artifact_chunks (
    artifact_id TEXT NOT NULL REFERENCES artifacts (id),
    chunk_name TEXT NOT NULL REFERENCES chunks (name),
    PRIMARY KEY (artifact_id, chunk_name)
);
CREATE INDEX artifact_chunks_by_chunk ON artifact_chunks (chunk_name);

CREATE TABLE lineage_edges (
    child TEXT NOT NULL,
    parent TEXT NOT NULL,
    relation TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (child, parent, relation)
);
CREATE INDEX lineage_by_parent ON lineage_edges (parent);

-- One row; every audited transaction updates it first, which serializes
-- appends to the chain on both SQLite and PostgreSQL.
CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    ts BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    resource TEXT NOT NULL,
    outcome TEXT NOT NULL,
    request_id TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_log_by_ts ON audit_log (ts);
CREATE INDEX audit_log_by_actor ON audit_log (actor);

CREATE TABLE audit_checkpoints (
    seq BIGINT PRIMARY KEY,
    head TEXT NOT NULL,
    ts BIGINT NOT NULL,
    key_id TEXT NOT NULL,
    signature TEXT NOT NULL
);

-- Puts and garbage collection exclude each other through leases.
CREATE TABLE store_leases (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE TABLE store_lock (
    id INTEGER PRIMARY KEY,
    n BIGINT NOT NULL
);
INSERT INTO store_lock (id, n) VALUES (1, 0);

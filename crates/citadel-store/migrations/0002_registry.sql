-- Model registry: versions with their scan, signature and provenance;
-- stage-change requests and the full history of stage changes.

CREATE TABLE model_versions (
    model_name TEXT NOT NULL,
    version BIGINT NOT NULL,
    artifact_id TEXT NOT NULL REFERENCES artifacts (id),
    stage TEXT NOT NULL,
    signature TEXT NOT NULL,
    scan TEXT NOT NULL,
    provenance TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (model_name, version)
);

CREATE TABLE stage_requests (
    id TEXT PRIMARY KEY,
    model_name TEXT NOT NULL,
    version BIGINT NOT NULL,
    to_stage TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_at BIGINT NOT NULL,
    status TEXT NOT NULL,
    decided_by TEXT,
    decided_at BIGINT,
    note TEXT NOT NULL
);
CREATE INDEX stage_requests_by_model ON stage_requests (model_name, version);

CREATE TABLE stage_events (
    model_name TEXT NOT NULL,
    seq BIGINT NOT NULL,
    version BIGINT NOT NULL,
    from_stage TEXT NOT NULL,
    to_stage TEXT NOT NULL,
    at BIGINT NOT NULL,
    by_principal TEXT NOT NULL,
    request_id TEXT NOT NULL,
    PRIMARY KEY (model_name, seq)
);

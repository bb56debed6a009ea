-- Data-subject erasures (GDPR Art. 17) and retention purges. An erasure replaces each dataset
-- version that held the subject by a new revision without the rows, drops
-- the old artifacts, and flags the model versions trained on them.
-- status: 'shredding' once the database no longer references the old
-- objects (they may still exist), 'complete' once they are deleted and the
-- receipt is signed.

ALTER TABLE data_versions ADD COLUMN revision BIGINT NOT NULL DEFAULT 1;

CREATE TABLE erasures (
    id TEXT PRIMARY KEY,
    dataset_name TEXT NOT NULL,
    status TEXT NOT NULL,
    receipt TEXT NOT NULL,
    -- JSON: the chunks of the dropped artifacts no new revision uses; each
    -- must be gone (or named as kept by another artifact) before 'complete'.
    chunks TEXT NOT NULL,
    signature TEXT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    completed_at BIGINT
);

CREATE TABLE model_flags (
    model_name TEXT NOT NULL,
    version BIGINT NOT NULL,
    erasure_id TEXT NOT NULL REFERENCES erasures (id),
    reason TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (model_name, version, erasure_id)
);

-- Versions purged when their retention period (processing.retention_days
-- of the expectations they were ingested with) ran out. The version
-- number stays taken.
CREATE TABLE data_purges (
    dataset_name TEXT NOT NULL,
    version BIGINT NOT NULL,
    artifact_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    purged_at BIGINT NOT NULL,
    purged_by TEXT NOT NULL,
    reason TEXT NOT NULL,
    -- The [processing] facts it was ingested with (JSON), for the records of processing.
    processing TEXT NOT NULL,
    PRIMARY KEY (dataset_name, version)
);

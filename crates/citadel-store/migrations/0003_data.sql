-- Dataset versions: each stored version's artifact, the digests of its
-- source file and expectations, and its report (profile and checks;
-- aggregates only). Rejected versions are never stored here (only audited).

CREATE TABLE data_versions (
    dataset_name TEXT NOT NULL,
    version BIGINT NOT NULL,
    status TEXT NOT NULL,
    artifact_id TEXT NOT NULL REFERENCES artifacts (id),
    source_digest TEXT NOT NULL,
    spec_digest TEXT NOT NULL,
    spec TEXT NOT NULL,
    rows_count BIGINT NOT NULL,
    report TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    released_by TEXT,
    released_at BIGINT,
    PRIMARY KEY (dataset_name, version)
);

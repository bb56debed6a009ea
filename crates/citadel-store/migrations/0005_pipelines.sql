-- Pipeline runs, the stage cache, and model cards.
-- A run keeps every stage's record (inputs, outputs, digests, skipped or
-- not) as JSON; the cache maps a stage's input digest to its outputs so an
-- unchanged stage is skipped on the next run.

CREATE TABLE pipeline_runs (
    id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    spec_digest TEXT NOT NULL,
    status TEXT NOT NULL,
    started_by TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    stages TEXT NOT NULL
);

CREATE INDEX pipeline_runs_by_pipeline ON pipeline_runs (pipeline, started_at);

CREATE TABLE pipeline_cache (
    pipeline TEXT NOT NULL,
    stage TEXT NOT NULL,
    cache_key TEXT NOT NULL,
    outputs TEXT NOT NULL,
    run_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (pipeline, stage, cache_key)
);

CREATE TABLE model_cards (
    model_name TEXT NOT NULL,
    version BIGINT NOT NULL,
    run_id TEXT NOT NULL,
    evaluation TEXT NOT NULL,
    card_json_artifact TEXT NOT NULL,
    card_html_artifact TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (model_name, version)
);

CREATE TABLE training_secrets (
    name TEXT PRIMARY KEY,
    sealed TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Deployments: an endpoint name mapped to model versions under a strategy.
-- `deployments` holds the live revision (what gateways poll); every change,
-- removals included (spec NULL), is kept in `deployment_revisions`, so the
-- version that served an endpoint at any instant can be answered.

CREATE TABLE deployments (
    name TEXT PRIMARY KEY,
    revision BIGINT NOT NULL,
    spec TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE deployment_revisions (
    name TEXT NOT NULL,
    revision BIGINT NOT NULL,
    spec TEXT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (name, revision)
);

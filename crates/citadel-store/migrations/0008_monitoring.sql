-- Live monitoring. Each gateway replica writes, per endpoint and model
-- version, one sketch of each closed window (aligned to wall-clock multiples
-- of the window length, so replicas' windows merge by their start). A window
-- is judged once (`monitor_evaluations`, first writer wins) after every
-- replica had time to write it.
CREATE TABLE monitor_windows (
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    version BIGINT NOT NULL,
    window_start BIGINT NOT NULL,
    window_end BIGINT NOT NULL,
    replica TEXT NOT NULL,
    requests BIGINT NOT NULL,
    rows_seen BIGINT NOT NULL,
    sketch TEXT NOT NULL,
    written_at BIGINT NOT NULL,
    PRIMARY KEY (endpoint, model, version, window_start, replica)
);

CREATE TABLE monitor_evaluations (
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    version BIGINT NOT NULL,
    window_start BIGINT NOT NULL,
    evaluated_at BIGINT NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (endpoint, model, version, window_start)
);

-- Incidents: one open incident per dedup key (kind, endpoint, version,
-- principal); a detection that matches an open incident updates it.
CREATE TABLE incidents (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    status TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    model TEXT,
    version BIGINT,
    principal TEXT,
    summary TEXT NOT NULL,
    evidence TEXT NOT NULL,
    occurrences BIGINT NOT NULL,
    opened_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    closed_at BIGINT
);
CREATE UNIQUE INDEX incidents_one_open_per_key ON incidents (dedup_key) WHERE status <> 'resolved';

CREATE TABLE incident_events (
    incident_id TEXT NOT NULL REFERENCES incidents (id),
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    details TEXT NOT NULL,
    PRIMARY KEY (incident_id, seq)
);

-- Playbook responses gateways apply: a principal throttled on every
-- endpoint until `until` (or lifted), an endpoint quarantined (503) until
-- a person lifts it. Each names the incident that caused it.
CREATE TABLE principal_throttles (
    id TEXT PRIMARY KEY,
    principal TEXT NOT NULL,
    per_sec BIGINT NOT NULL,
    burst BIGINT NOT NULL,
    until BIGINT NOT NULL,
    incident_id TEXT NOT NULL REFERENCES incidents (id),
    created_at BIGINT NOT NULL,
    lifted_at BIGINT
);

CREATE TABLE endpoint_quarantines (
    endpoint TEXT PRIMARY KEY,
    incident_id TEXT NOT NULL REFERENCES incidents (id),
    reason TEXT NOT NULL,
    since BIGINT NOT NULL
);

-- Ground truth. With `monitoring.feedback.enabled`, gateways log each
-- classifier prediction (batched every second) with the principal that
-- asked; labels posted to the feedback API later are joined to them by
-- (endpoint, request id, row), and only where exactly one principal's
-- prediction has that key (a client cannot take over another's request id).
-- `groups` holds the group attributes the feedback carried (JSON), for
-- fairness per group.
CREATE TABLE predictions (
    endpoint TEXT NOT NULL,
    request_id TEXT NOT NULL,
    row_index BIGINT NOT NULL,
    model TEXT NOT NULL,
    version BIGINT NOT NULL,
    predicted TEXT NOT NULL,
    score DOUBLE PRECISION NOT NULL,
    at BIGINT NOT NULL,
    principal TEXT NOT NULL,
    PRIMARY KEY (endpoint, request_id, row_index, principal)
);

CREATE TABLE feedback (
    endpoint TEXT NOT NULL,
    request_id TEXT NOT NULL,
    row_index BIGINT NOT NULL,
    label TEXT NOT NULL,
    groups TEXT NOT NULL,
    principal TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (endpoint, request_id, row_index)
);

-- Authentication per gateway replica and window (gateway-wide, not per
-- endpoint), for the credential detectors; judged once like the windows
-- above (their verdict row has endpoint '*').
CREATE TABLE auth_windows (
    window_start BIGINT NOT NULL,
    window_end BIGINT NOT NULL,
    replica TEXT NOT NULL,
    sketch TEXT NOT NULL,
    written_at BIGINT NOT NULL,
    PRIMARY KEY (window_start, replica)
);

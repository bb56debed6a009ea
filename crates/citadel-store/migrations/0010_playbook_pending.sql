-- Incidents whose playbook has not been run to its end. A row is written
-- in the transaction that opens the incident and removed once every action
-- the playbook decided is on the incident's timeline (or its failure to
-- evaluate is), so a crash between the two leaves a row that any replica's
-- next evaluation resumes; an action already on the timeline is not run
-- again. `claimed_until` keeps two replicas from running one at once;
-- `opened_by` is the principal whose evaluation opened the incident: only
-- that principal's evaluations resume it (its authority, not a caller's who
-- happens to evaluate next).
CREATE TABLE playbook_pending (
    incident_id TEXT PRIMARY KEY REFERENCES incidents (id),
    mode TEXT NOT NULL,
    opened_by TEXT NOT NULL,
    queued_at BIGINT NOT NULL,
    claimed_until BIGINT NOT NULL
);

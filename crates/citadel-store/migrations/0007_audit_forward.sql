-- Where each SIEM forwarding destination has got to in the audit log:
-- records after last_seq are (re)sent when forwarding resumes. A name is
-- bound to one destination (scheme://host:port), so pointing a name
-- elsewhere cannot skip the records the first destination has not had.
CREATE TABLE audit_forward_cursors (
    name TEXT PRIMARY KEY,
    destination TEXT NOT NULL,
    last_seq BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

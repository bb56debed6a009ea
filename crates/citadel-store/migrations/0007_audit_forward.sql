-- Where each SIEM forwarding destination has got to in the audit log:
-- records after last_seq are (re)sent when forwarding resumes.
CREATE TABLE audit_forward_cursors (
    name TEXT PRIMARY KEY,
    last_seq BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- A replica writes each monitoring window in parts: what it sketched since
-- its last part, every few seconds while the window is open and the rest
-- when it closes, so a replica that dies mid-window loses only its last few
-- seconds, and a request folded after its window was written is a later
-- part instead of a refused duplicate. A part's id is chosen once by the
-- replica and kept through retries, so a write retried after its
-- acknowledgement was lost is stored once. Existing rows become part 'p0', as do
-- the writes of a gateway not yet upgraded (rolling upgrades).
CREATE TABLE monitor_window_parts (
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    version BIGINT NOT NULL,
    window_start BIGINT NOT NULL,
    window_end BIGINT NOT NULL,
    replica TEXT NOT NULL,
    part TEXT NOT NULL DEFAULT 'p0',
    requests BIGINT NOT NULL,
    rows_seen BIGINT NOT NULL,
    sketch TEXT NOT NULL,
    written_at BIGINT NOT NULL,
    PRIMARY KEY (endpoint, model, version, window_start, replica, part)
);

INSERT INTO monitor_window_parts (endpoint, model, version, window_start, window_end, replica, part, requests, rows_seen, sketch, written_at)
    SELECT endpoint, model, version, window_start, window_end, replica, 'p0', requests, rows_seen, sketch, written_at FROM monitor_windows;

DROP TABLE monitor_windows;

ALTER TABLE monitor_window_parts RENAME TO monitor_windows;

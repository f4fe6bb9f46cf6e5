-- The audit trail: one row per security event, kept for AUDIT_RETENTION. user_id is NULL
-- when the event concerns no known account (a failed login for an unknown name); it is
-- not a foreign key, so the trail outlives the account it describes.
CREATE TABLE audit_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    INTEGER,
    event      TEXT    NOT NULL,
    ip         TEXT,
    user_agent TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX audit_events_user ON audit_events (user_id, created_at);
CREATE INDEX audit_events_created_at ON audit_events (created_at);

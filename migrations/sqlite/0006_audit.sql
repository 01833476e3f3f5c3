-- Security events (logins, key and role changes, refused admin calls).
CREATE TABLE audit_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at BIGINT NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL,
    actor_id TEXT,
    target TEXT,
    client_ip TEXT,
    detail TEXT
);
CREATE INDEX audit_events_action ON audit_events (action, id);
CREATE INDEX audit_events_actor ON audit_events (actor_id, id);
CREATE INDEX audit_events_target ON audit_events (target, id);
CREATE INDEX audit_events_at ON audit_events (at);

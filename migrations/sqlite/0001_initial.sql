-- Timestamps are Unix seconds (INTEGER) so both backends share one SQL text.
CREATE TABLE groups (
    name                TEXT PRIMARY KEY NOT NULL,
    requests_per_period INTEGER,
    period_seconds      INTEGER,
    burst               INTEGER,
    created_at          INTEGER NOT NULL
);

INSERT INTO groups (name, created_at) VALUES ('default', CAST(strftime('%s', 'now') AS INTEGER));

CREATE TABLE users (
    id            TEXT PRIMARY KEY NOT NULL,
    email         TEXT NOT NULL UNIQUE,
    name          TEXT,
    role          TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    group_name    TEXT NOT NULL REFERENCES groups (name),
    password_hash TEXT,
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    secret_hash  BLOB NOT NULL,
    permissions  TEXT,
    expires_at   INTEGER,
    revoked_at   INTEGER,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER
);

CREATE INDEX api_keys_user_id ON api_keys (user_id);

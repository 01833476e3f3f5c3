-- Timestamps are Unix seconds (BIGINT) so both backends share one SQL text.
CREATE TABLE groups (
    name                TEXT PRIMARY KEY,
    requests_per_period BIGINT,
    period_seconds      BIGINT,
    burst               BIGINT,
    created_at          BIGINT NOT NULL
);

INSERT INTO groups (name, created_at) VALUES ('default', EXTRACT(EPOCH FROM now())::BIGINT);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    name          TEXT,
    role          TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    group_name    TEXT NOT NULL REFERENCES groups (name),
    password_hash TEXT,
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    secret_hash  BYTEA NOT NULL,
    permissions  TEXT,
    expires_at   BIGINT,
    revoked_at   BIGINT,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT
);

CREATE INDEX api_keys_user_id ON api_keys (user_id);

-- The change feed: every change to a key, user or group that a replica may
-- have cached is written here by a trigger, in the same transaction as the
-- change itself, whichever door made it (REST, gRPC, the CLI, or SQL by
-- hand). Every replica polls it (`id > last seen`) and evicts what changed,
-- so a revocation takes effect everywhere within the poll interval, with or
-- without Redis. Rows older than an hour are pruned.
CREATE TABLE changes (
    id   INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    ref  TEXT NOT NULL,
    at   INTEGER NOT NULL DEFAULT (unixepoch())
);
CREATE INDEX changes_at ON changes (at);

CREATE TRIGGER api_keys_changed AFTER UPDATE OF
    secret_hash, permissions, expires_at, revoked_at, rate_limit, allowed_models, previous_secret_hash,
    previous_secret_expires_at, user_id
ON api_keys BEGIN
    INSERT INTO changes (kind, ref) VALUES ('key', NEW.id);
END;
CREATE TRIGGER api_keys_deleted AFTER DELETE ON api_keys BEGIN
    INSERT INTO changes (kind, ref) VALUES ('key', OLD.id);
END;
CREATE TRIGGER users_changed AFTER UPDATE OF email, name, role, group_name, disabled, rate_limit, password_hash
ON users BEGIN
    INSERT INTO changes (kind, ref) VALUES ('user', NEW.id);
END;
CREATE TRIGGER users_deleted AFTER DELETE ON users BEGIN
    INSERT INTO changes (kind, ref) VALUES ('user', OLD.id);
END;
CREATE TRIGGER groups_inserted AFTER INSERT ON groups BEGIN
    INSERT INTO changes (kind, ref) VALUES ('group', NEW.name);
END;
CREATE TRIGGER groups_changed AFTER UPDATE ON groups BEGIN
    INSERT INTO changes (kind, ref) VALUES ('group', NEW.name);
END;
CREATE TRIGGER groups_deleted AFTER DELETE ON groups BEGIN
    INSERT INTO changes (kind, ref) VALUES ('group', OLD.name);
END;
-- A revoked session token: `expires_at:jti`.
CREATE TRIGGER revoked_tokens_inserted AFTER INSERT ON revoked_tokens BEGIN
    INSERT INTO changes (kind, ref) VALUES ('token', NEW.expires_at || ':' || NEW.jti);
END;

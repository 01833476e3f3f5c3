-- The change feed: every change to a key, user or group that a replica may
-- have cached is written here by a trigger, in the same transaction as the
-- change itself, whichever door made it (REST, gRPC, the CLI, or SQL by
-- hand). Every replica polls it and evicts what changed, so a revocation
-- takes effect everywhere within the poll interval, with or without Redis.
-- Ids are assigned before commit, so pollers look back a few seconds for
-- late commits. Rows older than an hour are pruned.
CREATE TABLE changes (
    id   BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    ref  TEXT NOT NULL,
    at   BIGINT NOT NULL DEFAULT (EXTRACT(EPOCH FROM now())::BIGINT)
);
CREATE INDEX changes_at ON changes (at);

CREATE FUNCTION gatehouse_record_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO changes (kind, ref) VALUES (TG_ARGV[0], OLD.id);
    ELSE
        INSERT INTO changes (kind, ref) VALUES (TG_ARGV[0], NEW.id);
    END IF;
    RETURN NULL;
END
$$;

-- Groups are named, not numbered.
CREATE FUNCTION gatehouse_record_group_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO changes (kind, ref) VALUES ('group', OLD.name);
    ELSE
        INSERT INTO changes (kind, ref) VALUES ('group', NEW.name);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER api_keys_changed AFTER UPDATE OF
    secret_hash, permissions, expires_at, revoked_at, rate_limit, allowed_models, previous_secret_hash,
    previous_secret_expires_at, user_id
ON api_keys FOR EACH ROW EXECUTE FUNCTION gatehouse_record_change('key');
CREATE TRIGGER api_keys_deleted AFTER DELETE ON api_keys FOR EACH ROW EXECUTE FUNCTION gatehouse_record_change('key');
CREATE TRIGGER users_changed AFTER UPDATE OF email, name, role, group_name, disabled, rate_limit, password_hash
ON users FOR EACH ROW EXECUTE FUNCTION gatehouse_record_change('user');
CREATE TRIGGER users_deleted AFTER DELETE ON users FOR EACH ROW EXECUTE FUNCTION gatehouse_record_change('user');
CREATE TRIGGER groups_changed AFTER INSERT OR UPDATE OR DELETE ON groups
FOR EACH ROW EXECUTE FUNCTION gatehouse_record_group_change();

-- A revoked session token: `expires_at:jti`.
CREATE FUNCTION gatehouse_record_token_revocation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO changes (kind, ref) VALUES ('token', NEW.expires_at::TEXT || ':' || NEW.jti);
    RETURN NULL;
END
$$;
CREATE TRIGGER revoked_tokens_inserted AFTER INSERT ON revoked_tokens
FOR EACH ROW EXECUTE FUNCTION gatehouse_record_token_revocation();

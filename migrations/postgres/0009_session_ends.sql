-- Ending a user's sessions: session tokens issued at or before
-- `tokens_valid_after` (Unix seconds, their `iat`) are refused by Check and
-- by /auth/refresh. A password change, disabling the user and "sign out
-- everywhere" move it forward. The change feed learns of it like any other
-- change to a user, so every replica's user cache drops the old value.
ALTER TABLE users ADD COLUMN tokens_valid_after BIGINT NOT NULL DEFAULT 0;

DROP TRIGGER users_changed ON users;
CREATE TRIGGER users_changed AFTER UPDATE OF
    email, name, role, group_name, disabled, rate_limit, password_hash, tokens_valid_after
ON users FOR EACH ROW EXECUTE FUNCTION gatehouse_record_change('user');

-- Revocations are loaded at start-up for as long as a token can still be
-- refreshed after it expires.
CREATE INDEX revoked_tokens_expires_at ON revoked_tokens (expires_at);

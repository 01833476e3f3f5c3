-- Key rotation: the secret replaced by the last rotation stays valid until
-- previous_secret_expires_at (the grace period); only its hash is stored.
ALTER TABLE api_keys ADD COLUMN previous_secret_hash BLOB;
ALTER TABLE api_keys ADD COLUMN previous_secret_expires_at INTEGER;
ALTER TABLE api_keys ADD COLUMN rotated_at INTEGER;

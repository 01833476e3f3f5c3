-- Accounts at external identity providers (OIDC issuers, GitHub), linked to
-- users provisioned just in time.
CREATE TABLE user_identities (
    provider   TEXT NOT NULL,
    subject    TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (provider, subject)
);

CREATE INDEX user_identities_user_id ON user_identities (user_id);

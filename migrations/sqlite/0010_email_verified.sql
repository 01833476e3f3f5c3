-- Whether Gatehouse knows the address belongs to the account's holder: true
-- for accounts an admin, the CLI or the bootstrap made, and for accounts a
-- provider created with a verified email; false for self-registration (which
-- sends no mail) and for provider accounts without an email. A provider's
-- identity is linked by email only to an account whose address is verified,
-- so nobody can register someone else's address first and wait for them.
ALTER TABLE users ADD COLUMN email_verified BOOLEAN NOT NULL DEFAULT FALSE;

-- Existing accounts: verified when they have no password (made by an admin or
-- the CLI, or by a provider), are admins, or are linked to a provider
-- already; an account with a password and nothing else to go on may have
-- registered itself, and stays unverified until an admin says otherwise.
UPDATE users SET email_verified = TRUE
WHERE email NOT LIKE '%.invalid'
  AND (password_hash IS NULL
       OR role = 'admin'
       OR EXISTS (SELECT 1 FROM user_identities i WHERE i.user_id = users.id));

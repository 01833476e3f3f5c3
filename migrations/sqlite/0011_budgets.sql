-- Token and spend budgets: `TOKENS/SECONDS` and `USD/PERIOD` text; NULL: none.
ALTER TABLE users ADD COLUMN token_limit TEXT;
ALTER TABLE users ADD COLUMN spend_limit TEXT;
ALTER TABLE api_keys ADD COLUMN token_limit TEXT;
ALTER TABLE api_keys ADD COLUMN spend_limit TEXT;
ALTER TABLE groups ADD COLUMN token_limit TEXT;
ALTER TABLE groups ADD COLUMN spend_limit TEXT;

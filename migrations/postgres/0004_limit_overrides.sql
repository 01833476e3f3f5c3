-- Rate limit overrides as REQUESTS/SECONDS/BURST text; NULL: the group's limit.
ALTER TABLE users ADD COLUMN rate_limit TEXT;
ALTER TABLE api_keys ADD COLUMN rate_limit TEXT;

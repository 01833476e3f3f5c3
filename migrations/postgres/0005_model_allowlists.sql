-- Models a group's members, or one API key, may call: comma-separated names
-- or `*` patterns; NULL: any model.
ALTER TABLE groups ADD COLUMN allowed_models TEXT;
ALTER TABLE api_keys ADD COLUMN allowed_models TEXT;

-- LLM usage, summed per UTC day, user, group, API key and model. Gatehouse
-- adds to these counters in batches (src/store/metering.rs); it never writes
-- a row per request. `key_id` is '' for sessions and provider tokens, so it
-- can be part of the key. No foreign keys: usage is a record of what was
-- spent, kept whatever happens to the user, the key or the group later.
CREATE TABLE usage_daily (
    day               TEXT   NOT NULL,   -- 'YYYY-MM-DD', UTC
    user_id           TEXT   NOT NULL,
    group_name        TEXT   NOT NULL,
    key_id            TEXT   NOT NULL DEFAULT '',
    model             TEXT   NOT NULL,
    requests          BIGINT NOT NULL DEFAULT 0,
    prompt_tokens     BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    cost_nano_usd     BIGINT NOT NULL DEFAULT 0,  -- 1e-9 USD
    unmeasured        BIGINT NOT NULL DEFAULT 0,  -- requests charged their reservation: no usage was reported
    PRIMARY KEY (day, user_id, group_name, key_id, model)
);
-- A user's, a group's or a key's usage over a range of days (the primary key
-- serves a range of days over everyone).
CREATE INDEX usage_daily_user ON usage_daily (user_id, day);
CREATE INDEX usage_daily_group ON usage_daily (group_name, day);
CREATE INDEX usage_daily_key ON usage_daily (key_id, day);
CREATE INDEX usage_daily_model ON usage_daily (model, day);

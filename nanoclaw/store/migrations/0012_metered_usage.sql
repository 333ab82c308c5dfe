-- Tokens the upstream itself reported through the credential proxy: what budgets count.
CREATE TABLE metered_usage (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT,
    group_name TEXT NOT NULL,
    mapping TEXT NOT NULL,
    ts REAL NOT NULL,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens INTEGER NOT NULL DEFAULT 0,
    cache_creation_tokens INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX metered_usage_group_ts ON metered_usage (group_name, ts);
CREATE INDEX metered_usage_run ON metered_usage (run_id);

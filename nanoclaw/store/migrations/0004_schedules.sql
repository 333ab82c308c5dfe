-- Scheduled tasks and one log row per run, catch-up, skipped slot and error.
-- Times of firing are integer milliseconds (exact interval arithmetic).
CREATE TABLE schedules (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    -- Deleting a namespace deletes its schedules.
    group_name TEXT NOT NULL REFERENCES namespaces (name) ON DELETE CASCADE,
    prompt TEXT NOT NULL,
    schedule_type TEXT NOT NULL CHECK (schedule_type IN ('cron', 'interval', 'once')),
    schedule_value TEXT NOT NULL,
    timezone TEXT NOT NULL,
    chat_jid TEXT,
    -- JSON of the containerConfig fields that override the namespace's, or NULL.
    container_config TEXT,
    context_mode TEXT NOT NULL CHECK (context_mode IN ('isolated', 'group')),
    status TEXT NOT NULL CHECK (status IN ('active', 'paused', 'completed')),
    next_run_ms INTEGER,
    last_run_ms INTEGER,
    last_result TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX schedules_due ON schedules (status, next_run_ms);
CREATE INDEX schedules_group ON schedules (group_name);

CREATE TABLE schedule_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    schedule_id TEXT NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    planned_ms INTEGER NOT NULL,
    run_at_ms INTEGER NOT NULL,
    duration_ms INTEGER,
    status TEXT NOT NULL CHECK (status IN ('running', 'success', 'error', 'skipped', 'timeout')),
    catch_up INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    error TEXT,
    -- run_history.id of the run (plain text: run history is pruned on its own).
    run_id TEXT
);
CREATE INDEX schedule_logs_schedule ON schedule_logs (schedule_id, id);

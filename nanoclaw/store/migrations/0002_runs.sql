-- Container runs and the session each group continues.
CREATE TABLE run_history (
    id TEXT PRIMARY KEY,
    group_name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('message', 'task', 'adhoc')),
    status TEXT NOT NULL,
    container_name TEXT NOT NULL,
    session_id TEXT,
    schedule_id TEXT,
    prompt TEXT,
    started_at REAL NOT NULL,
    finished_at REAL,
    duration_ms INTEGER,
    exit_code INTEGER,
    results TEXT NOT NULL DEFAULT '[]',
    error TEXT
);
CREATE INDEX run_history_started ON run_history (started_at);
CREATE INDEX run_history_group ON run_history (group_name, started_at);
CREATE INDEX run_history_status ON run_history (status);

CREATE TABLE group_sessions (
    group_name TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    updated_at REAL NOT NULL
);

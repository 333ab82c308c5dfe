-- Foundation: API keys, audit log, group namespaces and their chats, settings.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL
);

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    severity TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'violation', 'error')),
    category TEXT NOT NULL,
    message TEXT NOT NULL,
    group_name TEXT,
    details TEXT
);
CREATE INDEX audit_log_group ON audit_log (group_name, id);
CREATE INDEX audit_log_severity ON audit_log (severity, id);

CREATE TABLE namespaces (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    trigger TEXT NOT NULL,
    requires_trigger INTEGER NOT NULL,
    is_main INTEGER NOT NULL,
    container_config TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE UNIQUE INDEX namespaces_one_main ON namespaces (is_main) WHERE is_main = 1;

-- A chat belongs to at most one namespace: the JID is the primary key.
CREATE TABLE namespace_chats (
    jid TEXT PRIMARY KEY,
    namespace_id TEXT NOT NULL REFERENCES namespaces (id) ON DELETE CASCADE,
    position INTEGER NOT NULL
);
CREATE INDEX namespace_chats_ns ON namespace_chats (namespace_id, position);

CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

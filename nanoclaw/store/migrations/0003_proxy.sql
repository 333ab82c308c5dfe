-- Credential proxy mappings. The credential is sealed with the SecretBox
-- (AES-256-GCM, the mapping id as associated data); it is never stored in clear.
CREATE TABLE credential_mappings (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    -- NAME in <NAME>_BASE_URL: two names that give the same variables would collide.
    env_prefix TEXT NOT NULL UNIQUE,
    upstream_url TEXT NOT NULL,
    credential_type TEXT NOT NULL,
    credential_sealed TEXT NOT NULL,
    created_at REAL NOT NULL
);

-- Channels: platform connections, chats, messages and per-group cursors.

-- One row per connected channel; credentials are a SecretBox-sealed JSON object.
CREATE TABLE channel_configs (
    name TEXT PRIMARY KEY,
    credentials TEXT NOT NULL,
    account TEXT,
    connected_at REAL NOT NULL
);

-- Small per-channel state an adapter keeps across restarts (Telegram's update offset).
CREATE TABLE channel_state (
    channel TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (channel, key)
);

CREATE TABLE chats (
    jid TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    name TEXT,
    is_group INTEGER NOT NULL DEFAULT 0,
    last_message_at REAL NOT NULL
);
CREATE INDEX chats_channel ON chats (channel, last_message_at);

-- external_id is the platform's id of an inbound message ('<chat id>:<message id>'
-- on Telegram, the wamid on WhatsApp); it does not change when a chat's JID moves.
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    chat_jid TEXT NOT NULL,
    external_id TEXT,
    sender_jid TEXT NOT NULL,
    sender_name TEXT NOT NULL DEFAULT '',
    content TEXT NOT NULL,
    ts REAL NOT NULL,
    is_bot INTEGER NOT NULL DEFAULT 0,
    -- a DM or an @mention of the bot: triggers whatever the namespace's trigger word
    addressed INTEGER NOT NULL DEFAULT 0,
    UNIQUE (channel, external_id)
);
CREATE INDEX messages_chat ON messages (chat_jid, id);
CREATE INDEX messages_chat_ts ON messages (chat_jid, ts);

-- The last message id of a chat that reached a group's agent.
CREATE TABLE group_cursors (
    group_name TEXT NOT NULL,
    chat_jid TEXT NOT NULL,
    message_id INTEGER NOT NULL,
    PRIMARY KEY (group_name, chat_jid)
);

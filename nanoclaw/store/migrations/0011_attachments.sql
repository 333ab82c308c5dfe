-- Files attached to a chat message: a JSON list of {kind, name, mimeType, size, path}
-- (path is where the agent's container sees the file, /workspace/group/inbox/...).
ALTER TABLE messages ADD COLUMN attachments TEXT;

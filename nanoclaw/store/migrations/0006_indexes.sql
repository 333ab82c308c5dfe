-- GET /channels/chats lists chats newest first (ORDER BY last_message_at DESC, jid):
-- without this index SQLite sorts every chat on each call (a temp B-tree; grows with the
-- number of chats); with it, it reads the first page in order (bench/store.py).
CREATE INDEX chats_recent ON chats (last_message_at DESC, jid);

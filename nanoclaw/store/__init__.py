"""SQLite store: one file in WAL mode, numbered migrations, never on the event loop."""
from nanoclaw.store._db import Database, StoreError, inserted_id, sync_connection

__all__ = ["Database", "StoreError", "inserted_id", "sync_connection"]

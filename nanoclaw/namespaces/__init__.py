"""Group namespaces: records in the store, folders and instructions on disk."""
from nanoclaw.namespaces._service import GLOBAL, Namespace, Namespaces, check_jid

__all__ = ["GLOBAL", "Namespace", "Namespaces", "check_jid"]

"""Deny-by-default policies: which host folders a container may see, which senders reach agents.

Its modules are its face: `nanoclaw.security.mounts` and `nanoclaw.security.senders`."""
__all__ = ["mounts", "senders"]

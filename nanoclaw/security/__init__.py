"""Deny-by-default policies: which host folders a container may see, which senders reach agents."""

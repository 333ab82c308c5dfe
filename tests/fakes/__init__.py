"""Fake servers for the platform APIs we cannot reach from tests; each speaks the real wire protocol."""

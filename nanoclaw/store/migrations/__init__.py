"""Numbered SQL migrations, read as package data."""
__all__: list[str] = []

"""The agent runner: scripts that run inside the agent image (not imported by the server)."""
__all__: list[str] = []

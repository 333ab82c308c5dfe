"""An MCP server on the official `mcp` Python SDK (runs inside the MCP test image).

``python server.py`` serves stdio; ``python server.py http PORT`` serves Streamable HTTP on
127.0.0.1:PORT/mcp. Tool ``add_note(text)`` appends to notes.txt in the working directory.
"""
import sys
from pathlib import Path

from mcp.server import MCPServer

server = MCPServer("notes")


@server.tool()
def add_note(text: str) -> str:
    """Save a note in the group's notes.txt."""
    with Path("notes.txt").open("a") as notes:
        notes.write(text + "\n")
    return f"noted: {text} (in {Path.cwd()})"


if __name__ == "__main__":
    if sys.argv[1:2] == ["http"]:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()

"""A stdio MCP server, standard library only, for the runner's MCP client tests.

``python3 mcp_stdio.py MODE``; MODE is one of:
- ``good``: protocol 2025-06-18, tools over two tools/list pages: ``note`` (appends its
  ``text`` to notes.txt in the working directory) and ``picture`` (an image block);
  prints a log line on stdout first (clients must skip it) and pings the client once.
- ``garbage``: answers every line with text that is not JSON.
- ``exit``: exits with code 3 at once.
- ``hang``: reads and never answers.
- ``oldversion``: answers initialize with a protocol version nobody knows.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
PAGES = {
    None: ([{"name": "note", "description": "Save a note.", "inputSchema": {
        "type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}}], "page-2"),
    "page-2": ([{"name": "picture", "description": "A tiny picture.",
                 "inputSchema": {"type": "object", "properties": {}}}], None),
}


def send(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main(mode: str) -> None:
    if mode == "exit":
        sys.exit(3)
    if mode == "good":
        print("fake MCP server starting (a log line on stdout)", flush=True)
    for line in sys.stdin:
        if mode == "hang":
            continue
        if mode == "garbage":
            print("<html>this is not JSON-RPC</html>", flush=True)
            continue
        message = json.loads(line)
        method, params = message.get("method"), message.get("params") or {}
        if "id" not in message or method is None:
            continue  # notifications, and the answer to our ping
        if method == "initialize":
            version = "1999-01-01" if mode == "oldversion" else "2025-06-18"
            send({"jsonrpc": "2.0", "id": message["id"], "result": {
                "protocolVersion": version, "capabilities": {"tools": {}},
                "serverInfo": {"name": "fake", "version": "0"}}})
        elif method == "tools/list":
            tools, cursor = PAGES[params.get("cursor")]
            send({"jsonrpc": "2.0", "id": message["id"],
                  "result": {"tools": tools, **({"nextCursor": cursor} if cursor else {})}})
        elif method == "tools/call" and params.get("name") == "note":
            send({"jsonrpc": "2.0", "id": "srv-1", "method": "ping"})
            with Path("notes.txt").open("a") as notes:
                notes.write(params["arguments"]["text"] + "\n")
            send({"jsonrpc": "2.0", "id": message["id"],
                  "result": {"content": [{"type": "text", "text": f"saved {params['arguments']['text']}"}]}})
        elif method == "tools/call":
            send({"jsonrpc": "2.0", "id": message["id"], "result": {
                "content": [{"type": "image", "data": PIXEL, "mimeType": "image/png"}]}})
        else:
            send({"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32601, "message": "no such method"}})


if __name__ == "__main__":
    main(sys.argv[1])

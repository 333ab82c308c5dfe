"""A small MCP client for the agent runner: standard library only.

``McpHub(servers, cwd, on_event)`` connects to every configured server:

- stdio: ``{"command": str, "args": [str], "env": {str: str}}``, started with the group
  folder as its working directory, one JSON-RPC 2.0 message per line;
- Streamable HTTP: ``{"url": str, "headers"?: {str: str}}``, one POST per message, the
  answer as JSON or as a Server-Sent Events stream, ``Mcp-Session-Id`` kept.

It runs ``initialize`` (protocol version negotiation), ``notifications/initialized`` and
``tools/list`` (all pages). ``tools()`` offers the tools as ``mcp__<server>__<tool>``;
``call(name, args)`` runs ``tools/call`` and returns ``(content blocks, is_error)`` with
text and image blocks in the Anthropic tool_result shape. Every call has a timeout. A
server that fails to start, answers garbage or times out is reported through
``on_event({"kind": "mcp_error", "server", "error"})`` and left out; the run goes on.
Everything a server sends is treated as hostile: sizes are capped, shapes are checked.
"""
from __future__ import annotations

import itertools
import json
import os
import re
import threading
import time
from collections.abc import Callable

from mcp_transport import START_TIMEOUT, McpError, _Http, _kill, _Stdio

PROTOCOL_VERSIONS = ("2025-06-18", "2025-03-26", "2024-11-05", "2025-11-25")  # offered first, then accepted
CLIENT_INFO = {"name": "nanoclaw-agent", "version": "1.0"}
CALL_TIMEOUT = float(os.environ.get("NANOCLAW_MCP_CALL_TIMEOUT") or 120)
MAX_TEXT = 256 * 1024  # text handed back to the model per tool call
MAX_TOOLS = 200  # per server
MAX_PAGES = 20
NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class _Server:
    def __init__(self, name: str, transport) -> None:
        self.name = name
        self.transport = transport
        self.ids = itertools.count(1)
        self.protocol = PROTOCOL_VERSIONS[0]

    def request(self, method: str, params: dict, timeout: float) -> dict:
        message = {"jsonrpc": "2.0", "id": next(self.ids), "method": method, "params": params}
        answer = self.transport.exchange(message, time.monotonic() + timeout)
        if isinstance(answer.get("error"), dict):
            error = answer["error"]
            raise McpError(f"{method} failed: {str(error.get('message'))[:300]} (code {error.get('code')})")
        result = answer.get("result")
        if not isinstance(result, dict):
            raise McpError(f"{method} answered without a result object")
        return result

    def start(self, deadline: float) -> list[dict]:
        result = self.request("initialize", {
            "protocolVersion": PROTOCOL_VERSIONS[0], "capabilities": {}, "clientInfo": CLIENT_INFO,
        }, deadline - time.monotonic())
        version = result.get("protocolVersion")
        if version not in PROTOCOL_VERSIONS:
            raise McpError(f"unsupported protocol version {str(version)[:40]!r}")
        self.protocol = version
        if isinstance(self.transport, _Http):
            self.transport.headers["MCP-Protocol-Version"] = version
        self.transport.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        tools: list[dict] = []
        cursor = None
        for _ in range(MAX_PAGES):
            page = self.request("tools/list", {"cursor": cursor} if cursor else {}, deadline - time.monotonic())
            listed = page.get("tools")
            if not isinstance(listed, list):
                raise McpError("tools/list answered without a tools list")
            tools += [t for t in listed if isinstance(t, dict)]
            cursor = page.get("nextCursor")
            if not isinstance(cursor, str) or not cursor or len(tools) >= MAX_TOOLS:
                break
        return tools[:MAX_TOOLS]


class McpHub:
    """Every configured MCP server of one run, their tools and calls."""

    def __init__(self, servers: object, cwd: str, on_event: Callable[[dict], None], *,
                 start_timeout: float = START_TIMEOUT, call_timeout: float = CALL_TIMEOUT) -> None:
        self.on_event = on_event
        self.call_timeout = call_timeout
        self.errors: list[dict] = []
        self._servers: dict[str, _Server] = {}
        self._tools: list[dict] = []
        self._routes: dict[str, tuple[_Server, str]] = {}
        if not servers:
            return
        if not isinstance(servers, dict):
            self._fail("*", "mcpServers must be an object")
            return
        started: list[tuple[str, object]] = []
        for name, config in servers.items():
            if not isinstance(name, str) or not NAME.fullmatch(name) or "__" in name:
                self._fail(str(name)[:64], "server name must match [A-Za-z0-9_-]{1,64} without '__'")
                continue
            try:
                if not isinstance(config, dict):
                    raise McpError("config must be an object")
                transport = _Http(config) if "url" in config else _Stdio(config, cwd)
            except McpError as exc:
                self._fail(name, str(exc))
                continue
            started.append((name, transport))
        # Servers start in parallel: one slow server costs its timeout once, not per server.
        results: dict[str, object] = {}

        def connect(name: str, transport) -> None:
            server = _Server(name, transport)
            try:
                results[name] = (server, server.start(time.monotonic() + start_timeout))
            except McpError as exc:
                results[name] = exc
            except Exception as exc:  # noqa: BLE001 - a hostile server must not crash the run
                results[name] = McpError(f"protocol error: {exc!r}"[:300])

        threads = [threading.Thread(target=connect, args=item, daemon=True) for item in started]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(start_timeout + 5)
        for name, transport in started:
            outcome = results.get(name, McpError("timed out"))
            if isinstance(outcome, Exception):
                transport.close() if isinstance(transport, _Http) else _kill(transport)
                self._fail(name, f"{outcome}")
                continue
            server, tools = outcome
            self._servers[name] = server
            for spec in tools:
                self._add_tool(server, spec)

    def _fail(self, server: str, error: str) -> None:
        event = {"kind": "mcp_error", "server": server, "error": error[:500]}
        self.errors.append(event)
        try:
            self.on_event(event)
        except Exception:  # noqa: BLE001 - reporting must not end the run
            pass

    def _add_tool(self, server: _Server, spec: dict) -> None:
        tool = spec.get("name")
        full = f"mcp__{server.name}__{tool}"
        if not isinstance(tool, str) or not NAME.fullmatch(full) or full in self._routes:
            self._fail(server.name, f"tool {str(tool)[:64]!r} skipped: bad or duplicate name")
            return
        schema = spec.get("inputSchema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            schema = {"type": "object", "properties": {}}
        description = spec.get("description")
        self._routes[full] = (server, tool)
        self._tools.append({"name": full, "description": str(description or tool)[:2000], "input_schema": schema})

    def tools(self) -> list[dict]:
        return list(self._tools)

    def handles(self, name: object) -> bool:
        return name in self._routes

    def call(self, name: str, args: dict) -> tuple[list[dict], bool]:
        """Run one tool; a failure comes back as an error result, never as an exception."""
        server, tool = self._routes[name]
        try:
            result = server.request("tools/call", {"name": tool, "arguments": args}, self.call_timeout)
        except McpError as exc:
            return [{"type": "text", "text": f"MCP server {server.name!r}: {exc}"}], True
        blocks = _content(result.get("content"))
        if not blocks and "structuredContent" in result:
            blocks = [{"type": "text", "text": json.dumps(result["structuredContent"])[:MAX_TEXT]}]
        return blocks or [{"type": "text", "text": "(no content)"}], result.get("isError") is True

    def close(self) -> None:
        for server in self._servers.values():
            transport = server.transport
            transport.close() if isinstance(transport, _Http) else _kill(transport, graceful=True)
        self._servers.clear()


def _content(items: object) -> list[dict]:
    """MCP content -> Anthropic tool_result blocks (text and image; the rest described as text)."""
    blocks: list[dict] = []
    budget = MAX_TEXT
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "image" and isinstance(item.get("data"), str) and isinstance(item.get("mimeType"), str):
            blocks.append({"type": "image", "source": {"type": "base64", "media_type": item["mimeType"],
                                                       "data": item["data"]}})
            continue
        if kind == "text" and isinstance(item.get("text"), str):
            text = item["text"]
        elif kind == "resource" and isinstance(item.get("resource"), dict):
            resource = item["resource"]
            text = resource.get("text") if isinstance(resource.get("text"), str) else \
                f"[resource {str(resource.get('uri'))[:500]}]"
        elif kind == "resource_link":
            text = f"[resource {str(item.get('uri'))[:500]}]"
        else:
            text = f"[{str(kind)[:40]} content omitted]"
        text = text[:budget]
        budget -= len(text)
        blocks.append({"type": "text", "text": text})
    return blocks


def add_tools(toolbox, servers: object, on_event: Callable[[dict], None], cwd: str) -> McpHub:
    """The runner's hook: connect the servers and register each tool as mcp__<server>__<tool>."""
    from tools import ToolError

    hub = McpHub(servers, cwd, on_event)
    for spec in hub.tools():
        def call(args: dict, name: str = spec["name"]) -> list[dict]:
            blocks, failed = hub.call(name, args)
            if failed:
                raise ToolError("".join(b.get("text", "") for b in blocks) or "the MCP tool failed")
            return blocks
        toolbox.add_schema(spec, call)
    return hub

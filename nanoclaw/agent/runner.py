"""NanoClaw agent runner: one agent conversation inside a container.

Standard library only; it runs under the image's plain ``python3`` (>= 3.11). Its
modules sit next to it (tools, files, shell, providers, compaction).

Protocol (host <-> container):
- stdin: one JSON object ``{prompt, sessionId, group, chatJid, isMain, isScheduledTask}``
  with optional ``agent: {provider, model, mapping, maxSteps, maxTokens, maxContextTokens,
  vision, mcpServers}`` and ``attachments: [{kind, name, mimeType, size, path}]``.
  ``sessionId: null`` starts a new session.
- stdout: every frame as three lines, ``---NANOCLAW_OUTPUT_START---``, one line of JSON,
  ``---NANOCLAW_OUTPUT_END---``. Results: ``{status: success|error, result, newSessionId,
  error, usage, model}`` (usage: the turn's tokens summed over its model calls);
  progress: ``{status: "progress", event: {kind: tool_start|tool_end|text|compaction, ...}}``.
- ``<ws>/ipc/input/*.json`` ``{"type": "message", "text", "attachments"?}``: follow-ups,
  one turn each; ``<ws>/ipc/input/_close``: exit 0.
- ``<ws>/ipc/messages`` and ``<ws>/ipc/tasks``: requests to the host, written
  atomically as ``<ms>-<rand>.json``.
- Exit code 1 after an error result (provider failure, bad input).

Environment: ``NANOCLAW_WORKSPACE`` (default ``/workspace``); per credential proxy mapping
``<PREFIX>_BASE_URL`` / ``<PREFIX>_API_KEY`` (``ANTHROPIC_*`` for anthropic);
``NANOCLAW_AGENT_PROVIDER`` and ``<PROVIDER>_MODEL`` as fallbacks for ``agent``.
"""
from __future__ import annotations

import base64
import json
import os
import re
import secrets
import signal
import sys
import time
import traceback
from collections.abc import Mapping
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its modules, also under python -I

from compaction import DEFAULT_BUDGET, compact, estimate  # noqa: E402
from files import Workspace, add_file_tools  # noqa: E402
from providers import ProviderError, add_usage, make_provider, new_usage  # noqa: E402
from shell import add_shell_tools  # noqa: E402
from tools import Toolbox, add_host_tools, write_atomic  # noqa: E402

OUTPUT_START = "---NANOCLAW_OUTPUT_START---"
OUTPUT_END = "---NANOCLAW_OUTPUT_END---"
MAX_STEPS = 50
POLL_INTERVAL = 0.05  # follow-ups are picked up within 50 ms; an idle agent costs 20 listdir calls a second
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
IMAGE_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp"}
IMAGE_BYTES = 5 * 1024 * 1024
IMAGE_SENT = "[an image was attached here; its file is listed with the attachments]"


class RunnerError(Exception):
    """Ends the run with an error result."""


def emit(frame: dict) -> None:
    sys.stdout.write(f"{OUTPUT_START}\n{json.dumps(frame)}\n{OUTPUT_END}\n")
    sys.stdout.flush()


def progress(event: dict) -> None:
    emit({"status": "progress", "event": event})


def read_request() -> dict:
    """Read stdin until it holds one complete JSON object (the host may keep stdin open)."""
    text = ""
    while line := sys.stdin.readline():
        text += line
        try:
            value = json.loads(text)
        except ValueError:
            continue
        if not isinstance(value, dict):
            raise RunnerError("stdin must hold one JSON object")
        return value
    raise RunnerError("stdin ended before one complete JSON object was read")


def _positive(config: Mapping, key: str, default: int) -> int:
    value = config.get(key)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise RunnerError(f"agent.{key} must be a positive whole number")
    return value


class Agent:
    def __init__(self, workspace: Path, request: dict, env: Mapping[str, str]) -> None:
        config = request.get("agent") or {}
        if not isinstance(config, dict):
            raise RunnerError("agent must be a JSON object")
        self.usage = new_usage()
        self.max_steps = _positive(config, "maxSteps", MAX_STEPS)
        self.budget = _positive(config, "maxContextTokens", DEFAULT_BUDGET)
        self.vision = config.get("vision") is not False
        self.ws = Workspace(workspace)
        self.chat_jid = request.get("chatJid")
        session_id = request.get("sessionId")
        if session_id is None:
            session_id = secrets.token_hex(16)
        elif not isinstance(session_id, str) or not SESSION_ID.fullmatch(session_id):
            raise RunnerError("sessionId must match [A-Za-z0-9_-]{1,64}")
        self.session_id = session_id
        self.provider = make_provider(config, env)
        self.session_file = workspace / "sessions" / f"{session_id}.json"
        self.messages = self._load_session()
        self.system = "\n\n".join(
            path.read_text(encoding="utf-8")
            for path in (workspace / "global" / "CLAUDE.md", workspace / "group" / "CLAUDE.md")
            if path.is_file()
        )
        self.toolbox = Toolbox()
        self.mcp = None
        self.mcp_note = ""
        add_host_tools(self.toolbox, self.ws, self.chat_jid)
        add_file_tools(self.toolbox, self.ws)
        add_shell_tools(self.toolbox, self.ws.group)
        if config.get("mcpServers"):
            self._add_mcp_tools(config["mcpServers"])

    def _add_mcp_tools(self, servers: object) -> None:
        """The hook for MCP servers: the optional mcp_client module adds their tools to the toolbox;
        servers left out are reported as progress and noted in the first result."""
        try:
            import mcp_client
        except ImportError:
            progress({"kind": "mcp_error", "error": "this agent image has no MCP client"})
            return
        self.mcp = mcp_client.add_tools(self.toolbox, servers, progress, str(self.ws.group))
        self.mcp_note = "".join(f"\n\n[MCP server {e['server']!r} unavailable: {e['error']}]"
                                for e in self.mcp.errors)

    def _load_session(self) -> list:
        if not self.session_file.exists():
            return []
        try:
            messages = json.loads(self.session_file.read_text(encoding="utf-8"))["messages"]
            if isinstance(messages, list):
                return messages
        except (ValueError, KeyError, TypeError):
            pass
        # A broken session must not block the group forever: start it afresh.
        print(f"session file {self.session_file.name} is unreadable; starting a new conversation", file=sys.stderr)
        return []

    def frame(self, status: str, result: str | None, error: str | None = None) -> dict:
        return {"status": status, "result": result, "newSessionId": self.session_id, "error": error,
                "usage": dict(self.usage), "model": self.provider.model}

    # -- one turn ---------------------------------------------------------------

    def turn(self, prompt: str, attachments: object = None) -> str | None:
        """One user message -> the model's final text (None when it said nothing)."""
        self.usage = new_usage()
        messages = self.messages + [{"role": "user", "content": self._user_content(prompt, attachments)}]
        specs = self.toolbox.specs()
        overhead = estimate(self.system) + estimate(specs)
        steps = 0
        while True:
            shorter = compact(messages, self.budget, overhead, self._summarise)
            if shorter is not None:
                progress({"kind": "compaction", "messagesBefore": len(messages), "messagesAfter": len(shorter)})
                messages = shorter
            content = self._call(self.system, messages, specs) or [{"type": "text", "text": "(no answer)"}]
            messages.append({"role": "assistant", "content": content})
            text = "".join(b.get("text", "") for b in content if b.get("type") == "text")
            uses = [block for block in content if block.get("type") == "tool_use"]
            if not uses:
                return self._finish(messages, text or None)
            if text:
                progress({"kind": "text", "text": text[:2000]})
            if steps >= self.max_steps:
                note = f"(stopped: the limit of {self.max_steps} tool steps per turn was reached)"
                messages.append({"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": use.get("id"), "content": note, "is_error": True}
                    for use in uses]})
                messages.append({"role": "assistant", "content": [{"type": "text", "text": note}]})
                return self._finish(messages, f"{text}\n\n{note}".strip())
            steps += 1
            messages.append({"role": "user", "content": [self._use_tool(use, steps) for use in uses]})

    def _call(self, system: str, messages: list, specs: list) -> list[dict]:
        content, usage = self.provider.create(system, messages, specs)
        add_usage(self.usage, usage)
        # An empty text block may not be sent back (the Messages API refuses it).
        return [b for b in content if isinstance(b, dict) and not (b.get("type") == "text" and not b.get("text"))]

    def _summarise(self, system: str, messages: list) -> str:
        return "".join(b.get("text", "") for b in self._call(system, messages, []) if b.get("type") == "text")

    def _finish(self, messages: list, text: str | None) -> str | None:
        for index, message in enumerate(messages):  # images go to the model once; the session keeps paths
            content = message.get("content")
            if isinstance(content, list) and any(b.get("type") == "image" for b in content):
                messages[index] = dict(message, content=[
                    {"type": "text", "text": IMAGE_SENT} if b.get("type") == "image" else b for b in content])
        self.messages = messages
        write_atomic(self.session_file, {"sessionId": self.session_id, "messages": messages})
        return text

    def _use_tool(self, use: dict, step: int) -> dict:
        name, use_id = use.get("name"), use.get("id")
        progress({"kind": "tool_start", "tool": name, "toolUseId": use_id, "step": step})
        started = time.monotonic()
        text, is_error = self.toolbox.call(name, use.get("input"))
        progress({"kind": "tool_end", "tool": name, "toolUseId": use_id, "isError": is_error,
                  "durationMs": round((time.monotonic() - started) * 1000, 1)})
        result = {"type": "tool_result", "tool_use_id": use_id, "content": text or "(no output)"}
        if is_error:
            result["is_error"] = True
        return result

    def _user_content(self, prompt: str, attachments: object) -> str | list:
        """The prompt, the attachment paths listed after it, images as image blocks."""
        if not isinstance(attachments, list) or not attachments:
            return prompt
        lines, images = [], []
        for item in attachments:
            if not isinstance(item, dict) or not isinstance(item.get("path"), str):
                continue
            mime = item.get("mimeType") if isinstance(item.get("mimeType"), str) else "application/octet-stream"
            name = f", {item['name']}" if isinstance(item.get("name"), str) else ""
            lines.append(f"- {item['path']} ({mime}{name})")
            if self.vision and mime in IMAGE_TYPES:
                data = self._image(item["path"])
                if data is not None:
                    images.append({"type": "image", "source": {
                        "type": "base64", "media_type": mime, "data": base64.b64encode(data).decode()}})
        if not lines:
            return prompt
        text = f"{prompt}\n\nAttachments (files in the workspace):\n" + "\n".join(lines)
        return [{"type": "text", "text": text}, *images] if images else text

    def _image(self, path: str) -> bytes | None:
        try:
            target = self.ws.resolve(path)
            if target.stat().st_size > IMAGE_BYTES:
                return None
            return target.read_bytes()
        except Exception as exc:  # an unreadable attachment is listed, not sent
            print(f"attachment {path!r} not sent as an image: {exc}", file=sys.stderr)
            return None


def next_follow_up(input_dir: Path) -> dict | bool | None:
    """The oldest follow-up message (deleted once read), True on _close, None when idle."""
    for path in sorted(input_dir.glob("*.json")):
        if path.name.startswith("."):
            continue
        try:
            message = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            message = None
        path.unlink(missing_ok=True)
        if isinstance(message, dict) and message.get("type") == "message" and isinstance(message.get("text"), str):
            return message
        print(f"skipping follow-up {path.name}: not a JSON {{type: message, text}} object", file=sys.stderr)
    return True if (input_dir / "_close").exists() else None


def main() -> int:
    # As PID 1 in a container SIGTERM is ignored unless handled: make `docker stop` quick.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workspace = Path(os.environ.get("NANOCLAW_WORKSPACE") or "/workspace")
    input_dir = workspace / "ipc" / "input"
    input_dir.mkdir(parents=True, exist_ok=True)
    (input_dir / "_close").unlink(missing_ok=True)
    agent = None
    try:
        message = read_request()
        if not isinstance(message.get("prompt"), str):
            raise RunnerError("prompt must be a string")
        agent = Agent(workspace, message, os.environ)
        while True:
            answer = agent.turn(message["prompt"], message.get("attachments"))
            if agent.mcp_note:  # the first result tells which MCP servers were left out
                answer, agent.mcp_note = (answer or "").lstrip() + agent.mcp_note, ""
            emit(agent.frame("success", answer))
            while (follow_up := next_follow_up(input_dir)) is None:
                time.sleep(POLL_INTERVAL)
            if follow_up is True:
                return 0
            message = {"prompt": follow_up["text"], "attachments": follow_up.get("attachments")}
    except (RunnerError, ProviderError) as exc:
        emit_error(agent, str(exc))
        return 1
    except Exception as exc:  # a bug: still tell the host why the run failed
        traceback.print_exc()
        emit_error(agent, f"agent runner crashed: {exc!r}")
        return 1
    finally:
        if agent is not None and agent.mcp is not None:
            agent.mcp.close()


def emit_error(agent: Agent | None, error: str) -> None:
    if agent is None:
        emit({"status": "error", "result": None, "newSessionId": None, "error": error})
    else:
        emit(agent.frame("error", None, error))


if __name__ == "__main__":
    sys.exit(main())

"""NanoClaw agent runner: one agent conversation inside a container.

Standard library only; it runs under the image's plain ``python3`` (>= 3.11).

Protocol (host <-> container):
- stdin: one JSON object ``{prompt, sessionId, group, chatJid, isMain, isScheduledTask}``.
  ``sessionId: null`` starts a new session.
- stdout: every result as three lines, ``---NANOCLAW_OUTPUT_START---``, one line of
  JSON ``{status, result, newSessionId, error}``, ``---NANOCLAW_OUTPUT_END---``.
  ``newSessionId`` is always the session the conversation is kept under.
- ``<ws>/ipc/input/*.json`` ``{"type": "message", "text": ...}``: follow-ups, one turn
  each; ``<ws>/ipc/input/_close``: exit 0.
- ``<ws>/ipc/messages`` and ``<ws>/ipc/tasks``: requests to the host, written
  atomically as ``<ms>-<rand>.json``.
- Exit code 1 after an error result (API failure, bad input).

Environment: ``NANOCLAW_WORKSPACE`` (default ``/workspace``), ``ANTHROPIC_BASE_URL``,
``ANTHROPIC_API_KEY``, ``ANTHROPIC_MODEL`` (default ``claude-sonnet-4-5``).
"""
from __future__ import annotations

import datetime
import json
import os
import re
import secrets
import signal
import sys
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

OUTPUT_START = "---NANOCLAW_OUTPUT_START---"
OUTPUT_END = "---NANOCLAW_OUTPUT_END---"
DEFAULT_MODEL = "claude-sonnet-4-5"
MAX_TOKENS = 4096
MAX_TOOL_STEPS = 25
API_TIMEOUT = 300
POLL_INTERVAL = 0.05  # follow-ups are picked up within 50 ms; an idle agent costs 20 listdir calls a second
READ_LIMIT = 256 * 1024
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

TOOLS = [
    {
        "name": "send_message",
        "description": "Send a message to the chat right away (the final answer is sent anyway).",
        "input_schema": {
            "type": "object",
            "properties": {
                "text": {"type": "string"},
                "chatJid": {"type": "string", "description": "Defaults to the current chat."},
            },
            "required": ["text"],
        },
    },
    {
        "name": "schedule_task",
        "description": "Schedule a prompt to run later: cron (5 fields), interval (milliseconds) or once (ISO 8601).",
        "input_schema": {
            "type": "object",
            "properties": {
                "prompt": {"type": "string"},
                "scheduleType": {"type": "string", "enum": ["cron", "interval", "once"]},
                "scheduleValue": {"type": "string"},
                "contextMode": {"type": "string", "enum": ["group", "isolated"]},
                "targetGroup": {"type": "string", "description": "Main group only: schedule for another group."},
            },
            "required": ["prompt", "scheduleType", "scheduleValue"],
        },
    },
    *(
        {
            "name": name,
            "description": f"{verb} a scheduled task.",
            "input_schema": {"type": "object", "properties": {"taskId": {"type": "string"}}, "required": ["taskId"]},
        }
        for name, verb in (("pause_task", "Pause"), ("resume_task", "Resume"), ("cancel_task", "Cancel"))
    ),
    {
        "name": "read_file",
        "description": "Read a text file from the group folder.",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    },
    {
        "name": "write_file",
        "description": "Write a text file in the group folder (parent folders are created).",
        "input_schema": {
            "type": "object",
            "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
            "required": ["path", "content"],
        },
    },
    {
        "name": "list_files",
        "description": "List a folder of the group folder (default: its top level).",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
    },
]


class RunnerError(Exception):
    """Ends the run with an error result."""


class ToolError(Exception):
    """Goes back to the model as an error tool_result; the run goes on."""


def write_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def ipc_name() -> str:
    return f"{int(time.time() * 1000)}-{secrets.token_hex(4)}.json"


def emit(status: str, result: str | None, session_id: str | None, error: str | None = None) -> None:
    frame = json.dumps({"status": status, "result": result, "newSessionId": session_id, "error": error})
    sys.stdout.write(f"{OUTPUT_START}\n{frame}\n{OUTPUT_END}\n")
    sys.stdout.flush()


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


class Api:
    def __init__(self, env: Mapping[str, str]) -> None:
        base = env.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com"
        self.url = base.rstrip("/") + "/v1/messages"
        self.key = env.get("ANTHROPIC_API_KEY", "")
        self.model = env.get("ANTHROPIC_MODEL") or DEFAULT_MODEL
        # The base URL already points where the host wants us to go (the credential proxy).
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def create(self, system: str, messages: list) -> dict:
        body = {"model": self.model, "max_tokens": MAX_TOKENS, "messages": messages, "tools": TOOLS}
        if system:
            body["system"] = system
        request = urllib.request.Request(
            self.url, data=json.dumps(body).encode(), method="POST",
            headers={"x-api-key": self.key, "anthropic-version": "2023-06-01", "content-type": "application/json"},
        )
        try:
            with self._opener.open(request, timeout=API_TIMEOUT) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise RunnerError(self._redact(f"API answered HTTP {exc.code}: {_error_detail(exc.read())}")) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RunnerError(self._redact(f"could not reach the API at {self.url}: {reason}")) from None
        try:
            data = json.loads(raw)
        except ValueError:
            raise RunnerError("API answered with a body that is not JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("content"), list):
            raise RunnerError("API answer has no content list")
        return data

    def _redact(self, text: str) -> str:
        return text.replace(self.key, "[redacted]") if self.key else text


def _error_detail(raw: bytes) -> str:
    try:
        error = json.loads(raw)["error"]
        return f"{error['type']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return raw[:200].decode(errors="replace") or "(empty body)"


class Agent:
    def __init__(self, workspace: Path, request: dict, api: Api) -> None:
        self.ws = workspace
        self.group_dir = workspace / "group"
        self.ipc = workspace / "ipc"
        self.api = api
        self.chat_jid = request.get("chatJid")
        session_id = request.get("sessionId")
        if session_id is None:
            session_id = secrets.token_hex(16)
        elif not isinstance(session_id, str) or not SESSION_ID.fullmatch(session_id):
            raise RunnerError("sessionId must match [A-Za-z0-9_-]{1,64}")
        self.session_id = session_id
        self.session_file = workspace / "sessions" / f"{session_id}.json"
        self.messages = self._load_session()
        self.system = "\n\n".join(
            path.read_text(encoding="utf-8")
            for path in (workspace / "global" / "CLAUDE.md", self.group_dir / "CLAUDE.md")
            if path.is_file()
        )

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

    def turn(self, prompt: str) -> str | None:
        """One user message -> the model's final text (None when it said nothing)."""
        messages = self.messages + [{"role": "user", "content": prompt}]
        for _ in range(MAX_TOOL_STEPS):
            answer = self.api.create(self.system, messages)
            content = answer["content"]
            messages.append({"role": "assistant", "content": content})
            uses = [block for block in content if isinstance(block, dict) and block.get("type") == "tool_use"]
            if not uses:
                self.messages = messages
                write_atomic(self.session_file, {"sessionId": self.session_id, "messages": messages})
                text = "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
                return text or None
            messages.append({"role": "user", "content": [self._use_tool(use) for use in uses]})
        raise RunnerError(f"the model kept calling tools for {MAX_TOOL_STEPS} steps")

    def _use_tool(self, use: dict) -> dict:
        handler = getattr(self, f"tool_{use.get('name')}", None)
        args = use.get("input")
        result = {"type": "tool_result", "tool_use_id": use.get("id")}
        try:
            if handler is None:
                raise ToolError(f"unknown tool {use.get('name')!r}")
            if not isinstance(args, dict):
                raise ToolError("tool input must be an object")
            result["content"] = handler(args)
        except ToolError as exc:
            result.update(content=str(exc), is_error=True)
        except OSError as exc:
            result.update(content=f"{exc.strerror or exc}", is_error=True)
        return result

    # --- host requests over IPC -------------------------------------------------

    def tool_send_message(self, args: dict) -> str:
        text = _string(args, "text")
        chat_jid = args.get("chatJid") or self.chat_jid
        if not isinstance(chat_jid, str):
            raise ToolError("no chatJid given and this run has no current chat")
        name = ipc_name()
        write_atomic(self.ipc / "messages" / name, {"type": "message", "chatJid": chat_jid, "text": text})
        return f"Message queued for {chat_jid}."

    def tool_schedule_task(self, args: dict) -> str:
        prompt = _string(args, "prompt")
        kind = args.get("scheduleType")
        value = args.get("scheduleValue")
        if isinstance(value, int) and kind == "interval":
            value = str(value)
        value = value.strip() if isinstance(value, str) else ""
        _check_schedule(kind, value)
        mode = args.get("contextMode") or "group"
        if mode not in ("group", "isolated"):
            raise ToolError("contextMode must be 'group' or 'isolated'")
        target = args.get("targetGroup") or None
        if target is not None and not isinstance(target, str):
            raise ToolError("targetGroup must be a string")
        write_atomic(self.ipc / "tasks" / ipc_name(), {
            "type": "schedule_task", "prompt": prompt,
            # An interval is a number of milliseconds on the wire, as the host expects.
            "schedule": {"type": kind, "value": int(value) if kind == "interval" else value},
            "contextMode": mode, "targetGroup": target,
        })
        return f"Task requested: {kind} {value}."

    def _task_request(self, kind: str, args: dict) -> str:
        task_id = _string(args, "taskId")
        write_atomic(self.ipc / "tasks" / ipc_name(), {"type": kind, "taskId": task_id})
        return f"Requested {kind.replace('_', ' ')} for {task_id}."

    def tool_pause_task(self, args: dict) -> str:
        return self._task_request("pause_task", args)

    def tool_resume_task(self, args: dict) -> str:
        return self._task_request("resume_task", args)

    def tool_cancel_task(self, args: dict) -> str:
        return self._task_request("cancel_task", args)

    # --- files, confined to the group folder -------------------------------------

    def _inside_group(self, raw: object) -> Path:
        if not isinstance(raw, str):
            raise ToolError("path must be a string")
        root = self.group_dir.resolve()
        # resolve() follows every symlink, so a link pointing out is judged by its target.
        target = (root / raw).resolve()
        if target != root and root not in target.parents:
            raise ToolError(f"{raw!r} is outside the group folder")
        return target

    def tool_read_file(self, args: dict) -> str:
        path = self._inside_group(args.get("path"))
        if not path.is_file():
            raise ToolError(f"{args['path']!r} is not a file")
        with path.open("rb") as handle:
            data = handle.read(READ_LIMIT + 1)
        text = data[:READ_LIMIT].decode("utf-8", errors="replace")
        return text + ("\n[truncated]" if len(data) > READ_LIMIT else "")

    def tool_write_file(self, args: dict) -> str:
        path = self._inside_group(args.get("path"))
        content = args.get("content")
        if not isinstance(content, str):
            raise ToolError("content must be a string")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        return f"Wrote {len(content.encode())} bytes to {path.relative_to(self.group_dir.resolve())}."

    def tool_list_files(self, args: dict) -> str:
        path = self._inside_group(args.get("path") or ".")
        if not path.is_dir():
            raise ToolError(f"{args.get('path')!r} is not a folder")
        names = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in path.iterdir())
        return "\n".join(names) or "(empty)"


def _string(args: dict, key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ToolError(f"{key} must be a non-empty string")
    return value


def _check_schedule(kind: object, value: str) -> None:
    if kind == "cron":
        if len(value.split()) != 5:
            raise ToolError("a cron schedule has 5 fields")
    elif kind == "interval":
        if not value.isdigit() or int(value) <= 0:
            raise ToolError("an interval is a positive number of milliseconds")
    elif kind == "once":
        try:
            datetime.datetime.fromisoformat(value)
        except ValueError:
            raise ToolError("a once schedule is an ISO 8601 time") from None
    else:
        raise ToolError("scheduleType must be cron, interval or once")


def next_follow_up(input_dir: Path) -> str | None | bool:
    """The text of the oldest follow-up (deleted once read), True on _close, None when idle."""
    for path in sorted(input_dir.glob("*.json")):
        if path.name.startswith("."):
            continue
        try:
            message = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            message = None
        path.unlink(missing_ok=True)
        if isinstance(message, dict) and message.get("type") == "message" and isinstance(message.get("text"), str):
            return message["text"]
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
        request = read_request()
        prompt = request.get("prompt")
        if not isinstance(prompt, str):
            raise RunnerError("prompt must be a string")
        agent = Agent(workspace, request, Api(os.environ))
        while True:
            emit("success", agent.turn(prompt), agent.session_id)
            while (follow_up := next_follow_up(input_dir)) is None:
                time.sleep(POLL_INTERVAL)
            if follow_up is True:
                return 0
            prompt = follow_up
    except RunnerError as exc:
        emit("error", None, agent.session_id if agent else None, str(exc))
        return 1
    except Exception as exc:  # a bug: still tell the host why the run failed
        traceback.print_exc()
        emit("error", None, agent.session_id if agent else None, f"agent runner crashed: {exc!r}")
        return 1


if __name__ == "__main__":
    sys.exit(main())

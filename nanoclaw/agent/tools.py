"""The agent's tool registry and the tools that talk to the host over IPC.

A tool is a schema (``{name, description, input_schema}``, JSON Schema for the input)
and a function ``fn(args: dict) -> str``. A function raises ``ToolError`` (or
``OSError``) for a failure the model should see; ``Toolbox.call`` turns every failure
into ``(text, is_error=True)`` so a tool never crashes a turn.

Extra tool sources (e.g. an MCP client module) plug in with ``toolbox.add(...)``:
``runner.py`` imports the optional module ``mcp_client`` next to it and, when the run's
``agent.mcpServers`` is set, calls ``mcp_client.add_tools(toolbox, servers, progress)``.
"""
from __future__ import annotations

import datetime
import json
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from files import Workspace

ToolFn = Callable[[dict], str]


class ToolError(Exception):
    """Goes back to the model as an error tool_result; the turn goes on."""


class Toolbox:
    """Tool name -> (schema, function)."""

    def __init__(self) -> None:
        self.tools: dict[str, tuple[dict, ToolFn]] = {}

    def add(self, name: str, description: str, properties: dict, required: tuple[str, ...] | list[str],
            fn: ToolFn) -> None:
        schema = {"name": name, "description": description,
                  "input_schema": {"type": "object", "properties": properties, "required": list(required)}}
        self.add_schema(schema, fn)

    def add_schema(self, schema: dict, fn: ToolFn) -> None:
        """Register a ready schema ``{name, description, input_schema}`` (later ones win)."""
        self.tools[schema["name"]] = (schema, fn)

    def specs(self) -> list[dict]:
        return [schema for schema, _ in self.tools.values()]

    def call(self, name: object, args: object) -> tuple[str, bool]:
        """(result text, is_error); never raises for a tool's own failure."""
        entry = self.tools.get(name) if isinstance(name, str) else None
        try:
            if entry is None:
                raise ToolError(f"unknown tool {name!r}")
            if not isinstance(args, dict):
                raise ToolError("tool input must be a JSON object")
            return entry[1](args), False
        except ToolError as exc:
            return str(exc), True
        except OSError as exc:
            return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""), True
        except Exception as exc:  # a bug in a tool must not end the turn
            return f"tool {name} failed: {exc!r}", True


def write_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def ipc_name() -> str:
    return f"{int(time.time() * 1000)}-{secrets.token_hex(4)}.json"


def string_arg(args: dict, key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ToolError(f"{key} must be a non-empty string")
    return value


def int_arg(args: dict, key: str, default: int, low: int, high: int) -> int:
    value = args.get(key, default)
    if value is None:
        return default
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ToolError(f"{key} must be a whole number from {low} to {high}")
    return value


def add_host_tools(box: Toolbox, ws: Workspace, chat_jid: object) -> None:
    """send_message, send_file and the four task tools: each writes one request file for the host."""
    ipc = ws.root / "ipc"

    def current_chat(args: dict) -> str:
        jid = args.get("chatJid") or chat_jid
        if not isinstance(jid, str):
            raise ToolError("no chatJid given and this run has no current chat")
        return jid

    def send_message(args: dict) -> str:
        text, jid = string_arg(args, "text"), current_chat(args)
        write_atomic(ipc / "messages" / ipc_name(), {"type": "message", "chatJid": jid, "text": text})
        return f"Message queued for {jid}."

    def send_file(args: dict) -> str:
        path = ws.resolve(args.get("path"))
        if not path.is_file():
            raise ToolError(f"{args.get('path')!r} is not a file")
        caption = args.get("caption")
        if caption is not None and not isinstance(caption, str):
            raise ToolError("caption must be a string")
        jid = current_chat({})
        request = {"type": "send_file", "chatJid": jid, "path": ws.container_path(path)}
        if caption:
            request["caption"] = caption
        write_atomic(ipc / "messages" / ipc_name(), request)
        return f"File {request['path']} queued for {jid}."

    def schedule_task(args: dict) -> str:
        prompt = string_arg(args, "prompt")
        kind, value = args.get("scheduleType"), args.get("scheduleValue")
        if isinstance(value, str):
            value = value.strip()
        value = check_schedule(kind, value)
        mode = args.get("contextMode") or "group"
        if mode not in ("group", "isolated"):
            raise ToolError("contextMode must be 'group' or 'isolated'")
        target = args.get("targetGroup") or None
        if target is not None and not isinstance(target, str):
            raise ToolError("targetGroup must be a string")
        write_atomic(ipc / "tasks" / ipc_name(), {
            "type": "schedule_task", "prompt": prompt, "schedule": {"type": kind, "value": value},
            "contextMode": mode, "targetGroup": target,
        })
        return f"Task requested: {kind} {value}."

    def task_request(kind: str) -> ToolFn:
        def request(args: dict) -> str:
            task_id = string_arg(args, "taskId")
            write_atomic(ipc / "tasks" / ipc_name(), {"type": kind, "taskId": task_id})
            return f"Requested {kind.replace('_', ' ')} for {task_id}."
        return request

    text = {"type": "string"}
    box.add("send_message", "Send a message to the chat right away (the final answer is sent anyway).",
            {"text": text, "chatJid": {"type": "string", "description": "Defaults to the current chat."}},
            ["text"], send_message)
    box.add("send_file", "Send a file from the workspace to the current chat, with an optional caption.",
            {"path": text, "caption": text}, ["path"], send_file)
    box.add("schedule_task",
            "Schedule a prompt to run later: cron (5 fields), interval (milliseconds, a number) or once (ISO 8601).",
            {"prompt": text, "scheduleType": {"type": "string", "enum": ["cron", "interval", "once"]},
             "scheduleValue": {"type": ["string", "integer"]},
             "contextMode": {"type": "string", "enum": ["group", "isolated"]},
             "targetGroup": {"type": "string", "description": "Main group only: schedule for another group."}},
            ["prompt", "scheduleType", "scheduleValue"], schedule_task)
    for name, verb in (("pause_task", "Pause"), ("resume_task", "Resume"), ("cancel_task", "Cancel")):
        box.add(name, f"{verb} a scheduled task.", {"taskId": text}, ["taskId"], task_request(name))


def check_schedule(kind: object, value: object) -> str | int:
    """The schedule value to send: interval milliseconds as a number, others as text."""
    if kind == "interval":
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ToolError("an interval is a positive number of milliseconds")
        return value
    if not isinstance(value, str):
        raise ToolError("scheduleValue must be a string for cron and once schedules")
    if kind == "cron":
        if len(value.split()) != 5:
            raise ToolError("a cron schedule has 5 fields")
    elif kind == "once":
        try:
            datetime.datetime.fromisoformat(value)
        except ValueError:
            raise ToolError("a once schedule is an ISO 8601 time") from None
    else:
        raise ToolError("scheduleType must be cron, interval or once")
    return value

"""The claude-code flavour's entry point: our stdin / stdout / IPC protocol around a Claude Code session.

Same protocol as runner.py (stdin JSON request, framed results, ``ipc/input`` follow-ups and
``_close``, requests to the host in ``ipc/messages`` and ``ipc/tasks``), but each turn is run
by the Claude Code CLI bundled in ``claude-agent-sdk``:

- tools: Bash, Read, Write, Edit, Glob, Grep, WebFetch, plus our send_message and task tools
  as the in-process SDK MCP server ``nanoclaw`` (``mcp__nanoclaw__send_message`` ...), plus
  the request's ``agent.mcpServers`` passed through;
- permissions bypassed (the container is the sandbox); Claude Code refuses that as root, so a
  root start drops to the image's user (uid 1000) after handing it the writable mounts;
- cwd ``/workspace/group`` with project settings, so the group's CLAUDE.md is loaded; the
  global ``/workspace/global/CLAUDE.md`` is appended to the system prompt;
- Claude's session id is our session id; transcripts live in ``/workspace/sessions/claude``;
- the model is reached only through ``ANTHROPIC_BASE_URL`` (the credential proxy) with the
  placeholder key the host put in ``ANTHROPIC_API_KEY``;
- result frames carry ``usage`` and ``model``; tool calls are reported as progress frames.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import traceback
import uuid
from pathlib import Path

import anyio
from claude_agent_sdk import (AssistantMessage, ClaudeAgentOptions, ClaudeSDKClient, ResultMessage, SystemMessage,
                              TextBlock, ToolUseBlock, create_sdk_mcp_server, tool)

from files import Workspace
from runner import OUTPUT_END, OUTPUT_START, POLL_INTERVAL, RunnerError, next_follow_up, read_request
from tools import Toolbox, add_host_tools

BUILTIN_TOOLS = ["Bash", "Read", "Write", "Edit", "Glob", "Grep", "WebFetch"]
HOST_TOOLS = ("send_message", "send_file", "schedule_task", "pause_task", "resume_task", "cancel_task")
AGENT_UID = 1000


def frame(status: str, **fields) -> None:
    body = json.dumps({"status": status, **fields})
    sys.stdout.write(f"{OUTPUT_START}\n{body}\n{OUTPUT_END}\n")
    sys.stdout.flush()


def sdk_server(workspace: Path, chat_jid: object):
    """Our IPC tools (send_message, send_file, task tools) as an in-process MCP server, with the
    runner's own schemas and checks."""
    box = Toolbox()
    add_host_tools(box, Workspace(workspace), chat_jid)

    def make(spec: dict):
        async def call(args: dict) -> dict:
            text, failed = box.call(spec["name"], args)
            return {"content": [{"type": "text", "text": text}], **({"is_error": True} if failed else {})}
        return tool(spec["name"], spec["description"], spec["input_schema"])(call)

    return create_sdk_mcp_server("nanoclaw", tools=[make(s) for s in box.specs() if s["name"] in HOST_TOOLS])


def drop_root(workspace: Path) -> None:
    """Claude Code will not bypass permissions as root: hand the writable mounts to uid 1000, become it."""
    if os.getuid() != 0:
        return
    try:
        for sub in ("group", "ipc", "sessions"):
            for root, dirs, files in os.walk(workspace / sub):
                for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                    os.lchown(name, AGENT_UID, AGENT_UID)
        os.setgroups([])
        os.setgid(AGENT_UID)
        os.setuid(AGENT_UID)
    except PermissionError:
        raise RunnerError("Claude Code refuses to run as root and this container may not change its user; "
                          "run it as a non-root user") from None
    os.environ["HOME"] = "/home/agent"


def session_options(session_id: object, config_dir: Path) -> dict:
    """resume= an existing Claude session, session_id= a new one under our id when it is a UUID."""
    if not isinstance(session_id, str):
        return {}
    try:
        wanted = str(uuid.UUID(session_id))
    except ValueError:
        return {}  # not a UUID: Claude picks one, the host learns it from newSessionId
    if any(config_dir.glob(f"projects/*/{wanted}.jsonl")):
        return {"resume": wanted}
    return {"session_id": wanted}


def claude_servers(servers: object) -> dict:
    """Our mcpServers map in Claude Code's terms: {"url"} servers are type "http"; "nanoclaw" is ours."""
    if not isinstance(servers, dict):
        return {}
    passed = {}
    for name, config in servers.items():
        if isinstance(name, str) and name != "nanoclaw" and isinstance(config, dict):
            passed[name] = {"type": "http", **config} if "url" in config and "type" not in config else config
    return passed


def usage_of(result: ResultMessage) -> dict | None:
    usage = result.usage if isinstance(result.usage, dict) else None
    if usage is None:
        return None
    keys = {"inputTokens": "input_tokens", "outputTokens": "output_tokens",
            "cacheReadTokens": "cache_read_input_tokens", "cacheCreationTokens": "cache_creation_input_tokens"}
    return {ours: int(usage.get(theirs) or 0) for ours, theirs in keys.items()}


def report_mcp(data: dict, session: dict) -> None:
    """Servers Claude Code could not connect (its init message) -> mcp_error progress frames, once each."""
    for server in data.get("mcp_servers") or []:
        if not isinstance(server, dict) or server.get("status") in ("connected", "pending"):
            continue
        name = str(server.get("name"))[:64]
        if name not in session.setdefault("mcp_reported", set()):
            session["mcp_reported"].add(name)
            session.setdefault("mcp_notes", []).append(f"[MCP server {name!r} unavailable: {server.get('status')}]")
            frame("progress", event={"kind": "mcp_error", "server": name, "error": str(server.get("status"))[:200]})


async def turn(client: ClaudeSDKClient, prompt: str, session: dict) -> bool:
    """One prompt -> one result frame; False after an error result."""
    await client.query(prompt)
    texts: list[str] = []
    model = None
    async for message in client.receive_response():
        if isinstance(message, SystemMessage) and message.subtype == "init" and isinstance(message.data, dict):
            report_mcp(message.data, session)
        elif isinstance(message, AssistantMessage) and message.parent_tool_use_id is None:
            model = message.model or model
            for block in message.content:
                if isinstance(block, TextBlock):
                    texts.append(block.text)
                elif isinstance(block, ToolUseBlock):
                    frame("progress", event={"kind": "tool_start", "tool": block.name})
        elif isinstance(message, ResultMessage):
            session["id"] = message.session_id or session.get("id")
            if message.is_error:
                detail = "; ".join(message.errors or []) or message.result or message.subtype
                frame("error", result=None, newSessionId=session.get("id"), error=f"Claude Code: {detail}"[:2000])
                return False
            text = message.result if isinstance(message.result, str) else "\n".join(texts)
            if session.get("mcp_notes"):  # like the built-in runner: the result names servers left out
                text = "\n\n".join([text or "", *session.pop("mcp_notes")]).lstrip()
            frame("success", result=text or None, newSessionId=session.get("id"), error=None,
                  usage=usage_of(message), model=model)
            return True
    frame("error", result=None, newSessionId=session.get("id"), error="Claude Code ended without a result")
    return False


async def run(workspace: Path, request: dict) -> int:
    prompt = request.get("prompt")
    if not isinstance(prompt, str):
        raise RunnerError("prompt must be a string")
    config = request.get("agent") if isinstance(request.get("agent"), dict) else {}
    servers = claude_servers(config.get("mcpServers"))
    config_dir = workspace / "sessions" / "claude"
    config_dir.mkdir(parents=True, exist_ok=True)
    global_md = workspace / "global" / "CLAUDE.md"
    system: dict = {"type": "preset", "preset": "claude_code"}
    if global_md.is_file():
        system["append"] = global_md.read_text(encoding="utf-8", errors="replace")
    model = os.environ.get("ANTHROPIC_MODEL") or config.get("model")
    options = ClaudeAgentOptions(
        tools=BUILTIN_TOOLS,
        allowed_tools=BUILTIN_TOOLS + [f"mcp__nanoclaw__{name}" for name in HOST_TOOLS]
        + [f"mcp__{name}" for name in servers],
        mcp_servers={**servers, "nanoclaw": sdk_server(workspace, request.get("chatJid"))},
        permission_mode="bypassPermissions",
        cwd=str(workspace / "group"),
        setting_sources=["project"],
        system_prompt=system,
        model=model if isinstance(model, str) else None,
        env={"CLAUDE_CONFIG_DIR": str(config_dir), "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
             "DISABLE_AUTOUPDATER": "1", "DISABLE_TELEMETRY": "1"},
        stderr=lambda line: print(line, file=sys.stderr),
        **session_options(request.get("sessionId"), config_dir),
    )
    session: dict = {"id": options.session_id or options.resume}
    input_dir = workspace / "ipc" / "input"
    async with ClaudeSDKClient(options=options) as client:
        while True:
            if not await turn(client, prompt, session):
                return 1
            while (follow_up := next_follow_up(input_dir)) is None:
                await anyio.sleep(POLL_INTERVAL)
            if follow_up is True:
                return 0
            prompt = follow_up["text"]


def main() -> int:
    # As PID 1 in a container SIGTERM is ignored unless handled: make `docker stop` quick.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workspace = Path(os.environ.get("NANOCLAW_WORKSPACE") or "/workspace")
    input_dir = workspace / "ipc" / "input"
    try:
        input_dir.mkdir(parents=True, exist_ok=True)
        (input_dir / "_close").unlink(missing_ok=True)
        request = read_request()
        drop_root(workspace)
        return anyio.run(run, workspace, request)
    except RunnerError as exc:
        frame("error", result=None, newSessionId=None, error=str(exc))
        return 1
    except Exception as exc:  # noqa: BLE001 - tell the host why the run failed
        traceback.print_exc()
        frame("error", result=None, newSessionId=None, error=f"claude adapter failed: {exc!r}"[:2000])
        return 1


if __name__ == "__main__":
    sys.exit(main())

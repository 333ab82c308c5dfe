"""The runner's MCP client against stdio servers, run as local python3 subprocesses."""
from __future__ import annotations

import sys
from pathlib import Path

import trio

from fakes.anthropic import tool_reply
from test_agent_runner import START, Runner, close, fake, make_workspace, request, start  # noqa: F401 (fixtures)

FAKE_SERVER = Path(__file__).parent / "fakes" / "mcp_stdio.py"


def server(mode: str) -> dict:
    return {"command": sys.executable, "args": [str(FAKE_SERVER), mode]}


async def frames_until_result(runner: Runner, timeout: float = 30) -> tuple[list[dict], dict]:
    """The progress events seen before the next result frame, and that result."""
    seen = len(runner.events)
    frame = await runner.result(timeout=timeout)
    return runner.events[seen:], frame


# A hanging server costs its start timeout once: 3 s here.
MCP_ENV = {"NANOCLAW_MCP_START_TIMEOUT": "3"}


async def test_mcp_tools_are_offered_called_and_their_results_reach_the_model(tmp_path, fake, start):
    ws = make_workspace(tmp_path / "ws")
    fake.queue(tool_reply("mcp__notes__note", {"text": "buy milk"}, id="toolu_note"),
               tool_reply("mcp__notes__picture", {}, id="toolu_pic"))
    runner = await start(ws, request("remember milk", agent={"mcpServers": {"notes": server("good")}}), env=MCP_ENV)

    events, result = await frames_until_result(runner)

    assert not [e for e in events if e["kind"] == "mcp_error"] and result["status"] == "success", result
    assert [e["tool"] for e in events if e["kind"] == "tool_start"] == ["mcp__notes__note", "mcp__notes__picture"]
    assert (ws / "group" / "notes.txt").read_text() == "buy milk\n"  # cwd is the group folder
    offered = {t["name"]: t for t in fake.requests[0].body["tools"]}
    assert {"mcp__notes__note", "mcp__notes__picture", "send_message"} <= set(offered)  # both tools/list pages
    assert offered["mcp__notes__note"]["input_schema"]["required"] == ["text"]
    [note] = fake.requests[1].body["messages"][-1]["content"]
    assert note == {"type": "tool_result", "tool_use_id": "toolu_note",
                    "content": [{"type": "text", "text": "saved buy milk"}]}
    [picture] = fake.requests[2].body["messages"][-1]["content"]
    assert picture["content"][0]["type"] == "image"
    assert picture["content"][0]["source"]["media_type"] == "image/png"
    close(ws)
    assert await runner.exit_code() == 0


async def test_broken_servers_are_reported_and_left_out_while_the_turn_goes_on(tmp_path, fake, start):
    ws = make_workspace(tmp_path / "ws")
    servers = {"good": server("good"), "junk": server("garbage"), "dead": server("exit"),
               "slow": server("hang"), "old": server("oldversion"),
               "missing": {"command": "/nonexistent/mcp-server"}, "bad": {"command": 7}}
    runner = await start(ws, request("what is 2+2?", agent={"mcpServers": servers}), env=MCP_ENV)

    with trio.fail_after(20):  # the hanging server costs its 3 s start timeout once
        events, result = await frames_until_result(runner)

    failed = {e["server"]: e["error"] for e in events if e["kind"] == "mcp_error"}
    assert set(failed) == {"junk", "dead", "slow", "old", "missing", "bad"}
    assert failed["dead"] == "exited with code 3"
    assert failed["slow"] == failed["junk"] == "timed out"
    assert "unsupported protocol version" in failed["old"]
    assert result["status"] == "success" and result["result"].startswith("2+2 = 4")
    assert "[MCP server 'slow' unavailable: timed out]" in result["result"]
    names = {t["name"] for t in fake.requests[0].body["tools"]}
    assert "mcp__good__note" in names and not any(n.startswith(("mcp__junk", "mcp__slow")) for n in names)
    close(ws)
    assert await runner.exit_code() == 0


async def test_a_server_that_dies_mid_run_gives_an_error_tool_result(tmp_path, fake, start):
    ws = make_workspace(tmp_path / "ws")
    (ws / "group" / "notes.txt").mkdir()  # the note tool's write fails: the server crashes
    fake.queue(tool_reply("mcp__notes__note", {"text": "x"}, id="toolu_1"))
    runner = await start(ws, request("note it", agent={"mcpServers": {"notes": server("good")}}), env=MCP_ENV)

    _, result = await frames_until_result(runner)

    [block] = fake.requests[1].body["messages"][-1]["content"]
    assert block["is_error"] is True and "MCP server 'notes'" in block["content"]
    assert result["status"] == "success"
    assert START in runner.lines

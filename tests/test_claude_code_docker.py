"""The claude-code flavour end to end: Telegram chat -> Claude Code in a container -> streaming
fake Anthropic API through the credential proxy -> chat.

The image is built by the suite through the server's builder (wheels from the host's cache,
build offline); Claude Code's tool calls are the real CLI's (Bash, our send_message).
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
import trio

from conftest import docker_settings, start_server
from docker_support import agent_image, docker_engine  # noqa: F401  (fixtures)
from fakes.anthropic import text_reply, tool_reply
from fakes.anthropic_stream import serve_claude_code_fake
from fakes.telegram import TOKEN
from image_support import WHEEL_WORK, claude_image  # noqa: F401  (fixture)
from test_agent_image import image_workspace
from test_agent_runner import close, request
from test_end_to_end import container_env, proxied_telegram_server
from test_mcp_docker import containers, free_port, wait_for_port  # noqa: F401  (containers: a fixture)
from test_mcp_runner import frames_until_result

pytestmark = pytest.mark.usefixtures("docker_engine")

REAL_KEY = "sk-ant-claude-code-real-secret-5e4d3c"
GROUP = -1005678


def shared_wheel_cache(tmp_path) -> None:
    """Point the server's wheel cache at the suite's, so the 180 MB wheel is not fetched again."""
    (tmp_path / "data").mkdir(exist_ok=True)
    WHEEL_WORK.mkdir(parents=True, exist_ok=True)
    os.symlink(WHEEL_WORK, tmp_path / "data" / "image-build")


async def test_build_api_makes_a_labelled_claude_code_image_and_namespaces_show_their_flavour(
        nursery, tmp_path, claude_image, agent_image):
    shared_wheel_cache(tmp_path)
    settings = docker_settings(tmp_path, agent_image, agent_base_image="nanoclaw-test-base:bookworm-tools")
    server = await start_server(nursery, settings)
    client = server.client

    with trio.fail_after(600):
        r = await client.post("/container/image/build", json={"imageTag": claude_image, "flavor": "claude-code"})
    build = r.json()
    assert r.status_code == 200 and build["success"] is True, build
    assert build["flavor"] == "claude-code"
    assert "File was already downloaded" in build["output"]  # the wheel cache served the 180 MB wheel
    status = (await client.get("/container/image/status", params={"imageTag": claude_image})).json()
    assert status["exists"] is True and status["flavor"] == "claude-code"
    assert status["sizeBytes"] > 400_000_000  # the bundled CLI alone is ~400 MB
    assert (await client.get("/container/image/status")).json()["flavor"] == "builtin"
    assert os.listdir(WHEEL_WORK) == ["wheelhouse"]  # the build context was removed

    for name, image in (("coder", claude_image), ("plain", None)):
        r = await client.post("/container/namespaces", json={"name": name, "containerConfig": {"image": image}})
        assert r.status_code == 201, r.text
    assert (await client.get("/container/namespaces/coder")).json()["imageFlavor"] == "claude-code"
    assert (await client.get("/container/namespaces/plain")).json()["imageFlavor"] == "builtin"
    r = await client.post("/container/image/build", json={"flavor": "gpt"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    await client.aclose()


async def test_a_chat_runs_claude_code_with_bash_send_message_and_a_follow_up_in_the_same_session(
        nursery, tmp_path, claude_image):
    server, tg, llm = await proxied_telegram_server(nursery, tmp_path, claude_image, serve_claude_code_fake, REAL_KEY)
    settings, client = server.settings, server.client
    r = await client.post("/container/namespaces", json={
        "name": "coders", "chatJids": [f"tg:{GROUP}"],
        "containerConfig": {"image": claude_image, "idleTimeoutSecs": 120, "timeoutSecs": 300}})
    assert r.status_code == 201, r.text
    groups = settings.data_dir / "groups"
    (groups / "coders" / "CLAUDE.md").write_text("You are the coders' assistant.")
    (groups / "global").mkdir(exist_ok=True)
    (groups / "global" / "CLAUDE.md").write_text("Global rule: be brief.")
    assert (await client.post("/channels/telegram/connect", json={"token": TOKEN})).status_code == 200

    llm.queue(tool_reply("Bash", {"command": "echo made by claude > proof.txt && id -u", "description": "write"},
                         id="toolu_bash"),
              tool_reply("mcp__nanoclaw__send_message", {"text": "Working on it"}, id="toolu_send"),
              text_reply("The file is written."))
    with trio.fail_after(300):
        tg.push_message(GROUP, "@Andy write proof.txt", first_name="Alice")
        await tg.wait_for(lambda: len(tg.sent) >= 2, timeout=240)
        assert tg.sent == [{"chat_id": str(GROUP), "text": "Working on it"},
                           {"chat_id": str(GROUP), "text": "The file is written."}]
        assert (groups / "coders" / "proof.txt").read_text() == "made by claude\n"

        live = server.services.supervisor.live_run("coders")
        env = container_env(live.container_name)
        assert REAL_KEY not in json.dumps(env)
        assert any(e.startswith("ANTHROPIC_API_KEY=CREDENTIAL_PROXY_PLACEHOLDER.") for e in env)

        # A follow-up goes through IPC into the same container and the same Claude session.
        llm.queue(text_reply("Still here."))
        tg.push_message(GROUP, "@Andy are you there?", first_name="Alice")
        await tg.wait_for(lambda: len(tg.sent) >= 3, timeout=120)
        assert tg.sent[2] == {"chat_id": str(GROUP), "text": "Still here."}
        assert server.services.supervisor.live_run("coders").container_name == live.container_name

    calls = llm.agent_requests
    assert all(c.headers["x-api-key"] == REAL_KEY for c in llm.requests if c.path == "/v1/messages")
    assert all(c.body.get("stream") is True for c in calls)
    first, bash_done, send_done, follow_up = calls[:4]
    system = json.dumps(first.body.get("system"))
    assert "Global rule: be brief." in system
    assert "You are the coders' assistant." in json.dumps(first.body)  # the group's CLAUDE.md
    assert {"Bash", "Read", "Write", "Edit", "Glob", "Grep", "WebFetch",
            "mcp__nanoclaw__send_message", "mcp__nanoclaw__schedule_task"} <= {t["name"] for t in first.body["tools"]}
    [bash_result] = [b for b in bash_done.body["messages"][-1]["content"] if b.get("type") == "tool_result"]
    assert bash_result["tool_use_id"] == "toolu_bash" and "1000" in json.dumps(bash_result["content"])  # not root
    # The follow-up carries the first turn: the Claude session went on.
    assert "toolu_bash" in json.dumps(follow_up.body["messages"])

    runs = (await client.get("/container/run-history", params={"group": "coders"})).json()["runs"]
    [run] = runs
    assert run["results"] == ["The file is written.", "Still here."]
    session = run["sessionId"]
    transcripts = list((settings.data_dir / "sessions" / "coders" / "claude" / "projects").glob("*/*.jsonl"))
    # Claude's session id is ours (the host's hex id in UUID form, which the host then keeps).
    assert [uuid.UUID(t.stem) for t in transcripts] == [uuid.UUID(session)]
    await client.aclose()


async def test_the_adapter_passes_mcp_servers_through_and_reports_usage_and_broken_servers(
        nursery, tmp_path, claude_image, containers):
    llm = await nursery.start(serve_claude_code_fake)
    ws = image_workspace(tmp_path)
    server_script = Path(__file__).parent / "fakes" / "mcp_sdk_server.py"
    http_dir = tmp_path / "http-server"
    http_dir.mkdir()
    http_dir.chmod(0o777)  # the image's user (uid 1000) runs that server
    port = free_port()
    await containers(["-v", f"{http_dir}:/srv", "-w", "/srv", "-v", f"{server_script}:/opt/test/server.py:ro",
                      "--entrypoint", "/opt/claude/bin/python"], claude_image, ["/opt/test/server.py", "http", str(port)])
    await wait_for_port(port)
    servers = {"notes": {"command": "/opt/claude/bin/python", "args": ["/opt/test/server.py"]},
               "remote": {"url": f"http://127.0.0.1:{port}/mcp"},
               "broken": {"command": "/bin/false"}}
    llm.queue(tool_reply("mcp__notes__add_note", {"text": "from claude"}, id="toolu_note"),
              tool_reply("mcp__remote__add_note", {"text": "over http"}, id="toolu_http"), text_reply("Noted."))
    mounts = [arg for sub in ("group", "ipc", "sessions") for arg in ("-v", f"{ws / sub}:/workspace/{sub}")]
    # Started as root, as a root host starts it: the adapter hands the mounts to uid 1000 and drops to it.
    runner = await containers(
        ["--user", "0:0", *mounts, "-v", f"{ws / 'global'}:/workspace/global:ro",
         "-v", f"{server_script}:/opt/test/server.py:ro", "-e", f"ANTHROPIC_BASE_URL={llm.url}",
         "-e", "ANTHROPIC_API_KEY=placeholder", "-e", "ANTHROPIC_MODEL=claude-test-model"],
        claude_image, [], request("note it", None, agent={"mcpServers": servers}))

    events, result = await frames_until_result(runner, timeout=180)

    assert result["status"] == "success", (events, result, runner.output[-3000:])
    assert result["result"] == "Noted.\n\n[MCP server 'broken' unavailable: failed]"
    assert [(e["kind"], e.get("server")) for e in events if e["kind"] == "mcp_error"] == [("mcp_error", "broken")]
    assert {"kind": "tool_start", "tool": "mcp__notes__add_note"} in events
    assert result["model"] == "claude-test-model" and result["usage"]["inputTokens"] > 0
    session = str(uuid.UUID(result["newSessionId"]))  # Claude's own id, now the group's
    assert (ws / "group" / "notes.txt").read_text() == "from claude\n"
    tool_results = [b for b in llm.agent_requests[1].body["messages"][-1]["content"] if b.get("type") == "tool_result"]
    assert tool_results[0]["tool_use_id"] == "toolu_note"
    assert "noted: from claude (in /workspace/group)" in json.dumps(tool_results[0]["content"])
    http_results = [b for b in llm.agent_requests[2].body["messages"][-1]["content"] if b.get("type") == "tool_result"]
    assert "noted: over http (in /srv)" in json.dumps(http_results[0]["content"]), http_results
    assert (http_dir / "notes.txt").read_text() == "over http\n"
    assert list((ws / "sessions" / "claude" / "projects").glob(f"*/{session}.jsonl"))
    close(ws)
    assert await runner.exit_code(timeout=60) == 0

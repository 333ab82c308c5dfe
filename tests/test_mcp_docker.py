"""The built-in runner in a real container with MCP servers on the official `mcp` SDK.

The test image is the agent image plus `mcp`, installed offline from the host's wheelhouse.
A stdio server runs inside the agent's container (cwd: the group folder); a Streamable HTTP
server runs in a second container, reached over the host network.
"""
from __future__ import annotations

import socket

import pytest
import trio

from docker_support import agent_image, docker_engine  # noqa: F401  (fixtures)
from fakes.anthropic import serve_fake_anthropic, text_reply, tool_reply
from image_support import mcp_image  # noqa: F401  (fixture)
from test_agent_image import image_workspace
from test_agent_runner import API_KEY, Runner, close, request
from test_mcp_runner import frames_until_result

pytestmark = pytest.mark.usefixtures("docker_engine")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def containers(run_container):
    """Start containers as Runners; every one is removed at the end."""
    async def start(options: list[str], image: str, command: list[str], stdin: dict | None = None) -> Runner:
        return Runner(*await run_container(options, image, command, stdin))

    return start


async def wait_for_port(port: int, timeout: float = 60) -> None:
    with trio.fail_after(timeout):
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.2)  # bounded: a real server starts in real time
                continue
            await stream.aclose()
            return


async def test_sdk_mcp_servers_over_stdio_and_http_are_called_by_the_model(nursery, tmp_path, mcp_image,
                                                                           containers):
    fake = await nursery.start(serve_fake_anthropic)
    ws = image_workspace(tmp_path)
    http_dir = tmp_path / "http-server"
    http_dir.mkdir()
    port = free_port()
    await containers(["-v", f"{http_dir}:/srv", "-w", "/srv", "--entrypoint", "/opt/mcp/bin/python"], mcp_image,
                     ["/opt/mcp/server.py", "http", str(port)])
    await wait_for_port(port)
    fake.queue(tool_reply("mcp__notes__add_note", {"text": "buy milk"}, id="toolu_stdio"),
               tool_reply("mcp__remote__add_note", {"text": "call mum"}, id="toolu_http"),
               text_reply("Both noted."))
    servers = {"notes": {"command": "/opt/mcp/bin/python", "args": ["/opt/mcp/server.py"]},
               "remote": {"url": f"http://127.0.0.1:{port}/mcp"}}
    mounts = [arg for sub in ("group", "ipc", "sessions") for arg in ("-v", f"{ws / sub}:/workspace/{sub}")]
    runner = await containers([*mounts, "-e", f"ANTHROPIC_BASE_URL={fake.url}", "-e", f"ANTHROPIC_API_KEY={API_KEY}"],
                              mcp_image, [], request("note these", agent={"mcpServers": servers}))

    events, result = await frames_until_result(runner, timeout=90)

    assert not [e for e in events if e["kind"] == "mcp_error"], events
    assert result["status"] == "success" and result["result"] == "Both noted.", result
    # The side effects, on the host: the stdio server ran in the group folder.
    assert (ws / "group" / "notes.txt").read_text() == "buy milk\n"
    assert (http_dir / "notes.txt").read_text() == "call mum\n"
    tools = {t["name"]: t for t in fake.requests[0].body["tools"]}
    assert tools["mcp__notes__add_note"]["input_schema"]["properties"]["text"]["type"] == "string"
    assert "mcp__remote__add_note" in tools
    # Each tool's result reached the next model request.
    [stdio_result] = fake.requests[1].body["messages"][-1]["content"]
    assert stdio_result["tool_use_id"] == "toolu_stdio" and "is_error" not in stdio_result
    assert "noted: buy milk (in /workspace/group)" in stdio_result["content"][0]["text"]
    [http_result] = fake.requests[2].body["messages"][-1]["content"]
    assert "noted: call mum (in /srv)" in http_result["content"][0]["text"]
    close(ws)
    assert await runner.exit_code(timeout=30) == 0


async def test_a_server_that_cannot_start_in_the_container_is_reported_and_the_turn_goes_on(
        nursery, tmp_path, mcp_image, containers):
    fake = await nursery.start(serve_fake_anthropic)
    ws = image_workspace(tmp_path)
    servers = {"broken": {"command": "/opt/mcp/bin/python", "args": ["-c", "import sys; sys.exit(5)"]},
               "nowhere": {"url": f"http://127.0.0.1:{free_port()}/mcp"}}
    mounts = [arg for sub in ("group", "ipc", "sessions") for arg in ("-v", f"{ws / sub}:/workspace/{sub}")]
    runner = await containers([*mounts, "-e", f"ANTHROPIC_BASE_URL={fake.url}", "-e", f"ANTHROPIC_API_KEY={API_KEY}"],
                              mcp_image, [], request("what is 2+2?", agent={"mcpServers": servers}))

    events, result = await frames_until_result(runner, timeout=90)

    assert {e.get("server") for e in events if e["kind"] == "mcp_error"} == {"broken", "nowhere"}
    assert result["status"] == "success" and result["result"].startswith("2+2 = 4")
    assert "[MCP server 'broken' unavailable: exited with code 5]" in result["result"]
    close(ws)
    assert await runner.exit_code(timeout=30) == 0

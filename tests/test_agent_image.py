"""The agent image under a real Docker engine, talking to the fake LLM on 127.0.0.1."""
from __future__ import annotations

import json
import os

import pytest

from fakes.anthropic import serve_fake_anthropic, tool_reply
from nanoclaw.runtime import container_user, give_to_container, hardening_args
from test_agent_runner import API_KEY, END, START, Runner, close, follow_up, make_workspace, request


@pytest.fixture
async def fake(nursery):
    return await nursery.start(serve_fake_anthropic)


@pytest.fixture
def run_image(fake, agent_image, run_container):
    async def run(ws, stdin: dict) -> Runner:
        mounts = [arg for sub in ("group", "ipc", "sessions") for arg in ("-v", f"{ws / sub}:/workspace/{sub}")]
        mounts += ["-v", f"{ws / 'global'}:/workspace/global:ro"]
        # As the supervisor runs it: the image's uid 1000 (or ours), confined, owning its folders.
        user = container_user()
        give_to_container([ws / sub for sub in ("group", "ipc", "ipc/input", "ipc/messages", "ipc/tasks",
                                                "sessions")], user)
        env = ["-e", f"ANTHROPIC_BASE_URL={fake.url}", "-e", f"ANTHROPIC_API_KEY={API_KEY}"]
        return Runner(*await run_container([*mounts, *hardening_args(256, 1, user), *env], agent_image, stdin=stdin))

    return run


def image_workspace(tmp_path):
    ws = make_workspace(tmp_path / "workspace")
    (ws / "global").mkdir()
    (ws / "global" / "CLAUDE.md").write_text("Global rule: be kind.")
    (ws / "group" / "CLAUDE.md").write_text("You help the family group.")
    return ws


async def test_container_answers_with_the_fakes_reply_framed_on_stdout(tmp_path, fake, run_image):
    ws = image_workspace(tmp_path)
    runner = await run_image(ws, request("what is 2+2?"))

    result = await runner.result(timeout=60)

    assert runner.lines[-3:] == [START, json.dumps(result), END]
    assert result["status"] == "success" and "4" in result["result"]
    [sent] = fake.requests
    assert sent.headers["x-api-key"] == API_KEY
    assert sent.body["system"] == "Global rule: be kind.\n\nYou help the family group."
    close(ws)
    assert await runner.exit_code(timeout=30) == 0


async def test_container_takes_follow_ups_and_writes_ipc_and_session_through_its_mounts(tmp_path, fake, run_image):
    ws = image_workspace(tmp_path)
    fake.queue(tool_reply("send_message", {"text": "On my way"}))
    runner = await run_image(ws, request("tell them", "fam-7"))

    first = await runner.result(timeout=60)
    follow_up(ws, "what is 6*7?")
    second = await runner.result(timeout=30)

    assert first["status"] == "success" and first["newSessionId"] == "fam-7"
    assert "42" in second["result"]
    [name] = os.listdir(ws / "ipc" / "messages")
    assert json.loads((ws / "ipc" / "messages" / name).read_text()) == {
        "type": "message", "chatJid": "tg:42", "text": "On my way"}
    saved = json.loads((ws / "sessions" / "fam-7.json").read_text())
    assert saved["messages"][-1] == {"role": "assistant", "content": [{"type": "text", "text": "6*7 = 42"}]}
    close(ws)
    assert await runner.exit_code(timeout=30) == 0

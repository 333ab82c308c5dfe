"""The in-container agent runner, run as a local python3 subprocess against the fake LLM."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

import nanoclaw.agent
from fakes.anthropic import error_reply, serve_fake_anthropic, text_reply, tool_reply

RUNNER = Path(nanoclaw.agent.__file__).parent / "runner.py"
START, END = "---NANOCLAW_OUTPUT_START---", "---NANOCLAW_OUTPUT_END---"
API_KEY = "sk-test-do-not-print-7f3a"
IPC_NAME = re.compile(r"^\d{13}-[0-9a-f]{8}\.json$")


class Runner:
    """A running runner.py: read its framed results, watch it exit."""

    def __init__(self, process: trio.Process, stderr_path: Path) -> None:
        self.process = process
        self.stderr_path = stderr_path
        self.lines: list[str] = []  # every stdout line, as printed
        self._pending = b""

    async def _line(self) -> str:
        while b"\n" not in self._pending:
            chunk = await self.process.stdout.receive_some(65536)
            if not chunk:
                raise AssertionError(f"runner stdout ended; stderr:\n{self.stderr_path.read_text()}")
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        self.lines.append(line.decode())
        return self.lines[-1]

    async def result(self, timeout: float = 15) -> dict:
        with trio.fail_after(timeout):
            while await self._line() != START:
                pass
            body = await self._line()
            assert await self._line() == END
        return json.loads(body)

    async def exit_code(self, timeout: float = 15) -> int:
        with trio.fail_after(timeout):
            return await self.process.wait()

    @property
    def output(self) -> str:
        return "\n".join(self.lines) + self._pending.decode() + self.stderr_path.read_text()


def make_workspace(root: Path) -> Path:
    for sub in ("group", "ipc/input", "ipc/messages", "ipc/tasks", "sessions"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


def request(prompt: str, session_id: str | None = None, **extra) -> dict:
    return {"prompt": prompt, "sessionId": session_id, "group": "family", "chatJid": "tg:42",
            "isMain": False, "isScheduledTask": False, **extra}


def follow_up(ws: Path, text: str) -> Path:
    """Write a follow-up the way the host does: tmp file, then rename."""
    name = f"{int(time.time() * 1000)}-{os.urandom(4).hex()}.json"
    tmp = ws / "ipc" / "input" / f".{name}.tmp"
    tmp.write_text(json.dumps({"type": "message", "text": text}))
    tmp.rename(ws / "ipc" / "input" / name)
    return ws / "ipc" / "input" / name


def close(ws: Path) -> None:
    (ws / "ipc" / "input" / "_close").write_bytes(b"")


def tool_result_sent(fake, index: int) -> dict:
    """The tool_result block carried by the fake's request number `index`."""
    [block] = fake.requests[index].body["messages"][-1]["content"]
    assert block["type"] == "tool_result"
    return block


@pytest.fixture
async def fake(nursery):
    return await nursery.start(serve_fake_anthropic)


@pytest.fixture
def ws(tmp_path) -> Path:
    return make_workspace(tmp_path / "workspace")


@pytest.fixture
async def start(tmp_path, fake):
    started: list[Runner] = []

    async def start(ws: Path, stdin: dict, *, base_url: str | None = None) -> Runner:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NANOCLAW_WORKSPACE": str(ws),
               "ANTHROPIC_BASE_URL": base_url or fake.url, "ANTHROPIC_API_KEY": API_KEY}
        stderr_path = tmp_path / f"stderr-{len(started)}.txt"
        with stderr_path.open("wb") as stderr:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-I", str(RUNNER)], env=env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr)
        await process.stdin.send_all(json.dumps(stdin).encode() + b"\n")
        runner = Runner(process, stderr_path)
        started.append(runner)
        return runner

    yield start
    for runner in started:
        if runner.process.returncode is None:
            runner.process.kill()
            await runner.process.wait()


async def test_result_is_framed_and_request_carries_prompt_system_prompt_and_key(ws, fake, start):
    (ws / "global").mkdir()
    (ws / "global" / "CLAUDE.md").write_text("Global rule: answer briefly.")
    (ws / "group" / "CLAUDE.md").write_text("You are the family group's assistant.")
    runner = await start(ws, request("what is 2+2?"))

    result = await runner.result()

    assert runner.lines[-3] == START and runner.lines[-1] == END
    assert result["status"] == "success" and result["error"] is None
    assert "4" in result["result"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", result["newSessionId"])
    [sent] = fake.requests
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == API_KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.body["model"] == "claude-sonnet-4-5" and sent.body["max_tokens"] == 4096
    assert sent.body["messages"] == [{"role": "user", "content": "what is 2+2?"}]
    assert sent.body["system"] == "Global rule: answer briefly.\n\nYou are the family group's assistant."
    assert {tool["name"] for tool in sent.body["tools"]} >= {"send_message", "schedule_task", "read_file"}
    assert API_KEY not in runner.output


async def test_follow_up_file_starts_a_second_turn_that_sends_the_history(ws, fake, start):
    runner = await start(ws, request("what is 2+2?"))
    first = await runner.result()

    path = follow_up(ws, "and what is 3*5?")
    second = await runner.result()

    assert "15" in second["result"]
    assert second["newSessionId"] == first["newSessionId"]
    assert not path.exists()
    assert fake.requests[1].body["messages"] == [
        {"role": "user", "content": "what is 2+2?"},
        {"role": "assistant", "content": [{"type": "text", "text": first["result"]}]},
        {"role": "user", "content": "and what is 3*5?"},
    ]


async def test_close_file_ends_the_run_with_exit_code_0(ws, start):
    runner = await start(ws, request("what is 2+2?"))
    await runner.result()

    close(ws)

    assert await runner.exit_code() == 0


async def test_stale_close_file_is_removed_at_start(ws, start):
    close(ws)
    runner = await start(ws, request("what is 2+2?"))
    await runner.result()

    assert not (ws / "ipc" / "input" / "_close").exists()
    follow_up(ws, "what is 1+1?")  # still listening: the stale _close did not end it
    assert "2" in (await runner.result())["result"]


async def test_send_message_tool_writes_an_ipc_message_file(ws, fake, start):
    fake.queue(tool_reply("send_message", {"text": "Dinner is at 7"}, id="toolu_a"),
               tool_reply("send_message", {"text": "Hi team", "chatJid": "tg:99"}, id="toolu_b"),
               text_reply("Both sent."))
    runner = await start(ws, request("tell them"))

    result = await runner.result()

    assert result["result"] == "Both sent."
    names = sorted(os.listdir(ws / "ipc" / "messages"))
    assert len(names) == 2 and all(IPC_NAME.match(name) for name in names)  # no tmp file left behind
    written = [json.loads((ws / "ipc" / "messages" / name).read_text()) for name in names]
    assert sorted(written, key=lambda m: m["text"]) == [
        {"type": "message", "chatJid": "tg:42", "text": "Dinner is at 7"},
        {"type": "message", "chatJid": "tg:99", "text": "Hi team"},
    ]
    assert tool_result_sent(fake, 1)["tool_use_id"] == "toolu_a"
    assert "is_error" not in tool_result_sent(fake, 2)


async def test_task_tools_write_task_files_and_refuse_bad_schedules(ws, fake, start):
    fake.queue(
        tool_reply("schedule_task", {"prompt": "Water the plants", "scheduleType": "cron",
                                     "scheduleValue": "0 9 * * 1"}),
        tool_reply("schedule_task", {"prompt": "Ping", "scheduleType": "interval", "scheduleValue": "60000",
                                     "contextMode": "isolated", "targetGroup": "work"}),
        tool_reply("pause_task", {"taskId": "task-7"}),
        tool_reply("schedule_task", {"prompt": "Never", "scheduleType": "interval", "scheduleValue": "soon"}),
        text_reply("Scheduled."),
    )
    runner = await start(ws, request("plan my week"))

    assert (await runner.result())["result"] == "Scheduled."

    names = os.listdir(ws / "ipc" / "tasks")
    assert all(IPC_NAME.match(name) for name in names)
    written = [json.loads((ws / "ipc" / "tasks" / name).read_text()) for name in names]
    assert sorted(written, key=json.dumps) == sorted([
        {"type": "schedule_task", "prompt": "Water the plants", "schedule": {"type": "cron", "value": "0 9 * * 1"},
         "contextMode": "group", "targetGroup": None},
        {"type": "schedule_task", "prompt": "Ping", "schedule": {"type": "interval", "value": 60000},
         "contextMode": "isolated", "targetGroup": "work"},
        {"type": "pause_task", "taskId": "task-7"},
    ], key=json.dumps)
    refused = tool_result_sent(fake, 4)
    assert refused["is_error"] is True and "milliseconds" in refused["content"]


async def test_file_tools_work_inside_the_group_folder_and_refuse_escapes(tmp_path, ws, fake, start):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret")
    (ws / "group" / "escape").symlink_to(outside)
    fake.queue(
        tool_reply("write_file", {"path": "notes/todo.txt", "content": "buy milk"}),
        tool_reply("read_file", {"path": "notes/todo.txt"}),
        tool_reply("list_files", {}),
        tool_reply("read_file", {"path": "../../outside/secret.txt"}),
        tool_reply("read_file", {"path": "escape/secret.txt"}),
        tool_reply("write_file", {"path": "../evil.txt", "content": "x"}),
        tool_reply("write_file", {"path": "escape/planted.txt", "content": "x"}),
        tool_reply("read_file", {"path": str(outside / "secret.txt")}),
        text_reply("done"),
    )
    runner = await start(ws, request("organise"))

    assert (await runner.result())["result"] == "done"

    assert (ws / "group" / "notes" / "todo.txt").read_text() == "buy milk"
    assert tool_result_sent(fake, 2)["content"] == "buy milk"
    assert tool_result_sent(fake, 3)["content"].split("\n") == ["escape/", "notes/"]
    for index in range(4, 9):
        refused = tool_result_sent(fake, index)
        assert refused["is_error"] is True and "outside the group folder" in refused["content"]
        assert "top secret" not in refused["content"]
    assert not (ws / "evil.txt").exists()
    assert sorted(os.listdir(outside)) == ["secret.txt"]


async def test_session_persists_across_two_runs_with_the_same_session_id(ws, fake, start):
    first = await start(ws, request("what is 2+2?", "family-1"))
    assert (await first.result())["newSessionId"] == "family-1"
    close(ws)
    assert await first.exit_code() == 0

    second = await start(ws, request("what is 10-3?", "family-1"))
    result = await second.result()

    assert "7" in result["result"] and result["newSessionId"] == "family-1"
    assert [m["content"] for m in fake.requests[1].body["messages"]] == [
        "what is 2+2?", [{"type": "text", "text": "2+2 = 4"}], "what is 10-3?"]
    saved = json.loads((ws / "sessions" / "family-1.json").read_text())
    assert len(saved["messages"]) == 4


async def test_upstream_500_is_an_error_result_and_exit_code_1(ws, fake, start):
    fake.queue(error_reply(500, "the fake upstream broke"))
    runner = await start(ws, request("hello"))

    result = await runner.result()

    assert result["status"] == "error" and result["result"] is None
    assert "500" in result["error"] and "the fake upstream broke" in result["error"]
    assert await runner.exit_code() == 1
    assert API_KEY not in runner.output


async def test_unreachable_api_is_an_error_result_and_exit_code_1(ws, start):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    runner = await start(ws, request("hello"), base_url=f"http://127.0.0.1:{port}")

    result = await runner.result()

    assert result["status"] == "error" and "could not reach the API" in result["error"]
    assert await runner.exit_code() == 1


async def test_bad_session_id_is_refused(ws, fake, start):
    runner = await start(ws, request("hello", "../etc/passwd"))

    result = await runner.result()

    assert result["status"] == "error" and "sessionId" in result["error"]
    assert await runner.exit_code() == 1
    assert fake.requests == []

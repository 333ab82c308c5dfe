"""An in-process stand-in for the container engine, for queue tests under autojump_clock.

Each "container" is a Trio task speaking the agent runner's protocol: it reads
the JSON on stdin, prints framed results, watches its IPC input folder and
exits on `_close`. What it does is read from the prompt:

  "work <seconds>"       answer after that many seconds, then wait for input
  "once <seconds>"       answer after that many seconds and exit
  "silent"               never answer (hard timeout)
  "chatter <seconds>"    a success frame every that many seconds, forever, ignoring `_close`
  "fail"                 exit with code 1 at once
  "steps <n>"            send n progress frames, then answer and exit
  "spend <n>"            answer twice, each frame reporting usage (n input, n/10 output,
                         5 cache-read, 1 cache-creation tokens, model "fake-model"), and exit
  "tell <text>"          send <text> through an IPC message file, then answer at once
  "stream <n>"           send n growing texts as "text" progress frames 0.2 s apart,
                         then the whole text as the answer, and exit
  "burst <n>"            the same frames and answer written at once, then exit
A prompt of chat messages (<messages>...) is read from its last message's text.
Follow-ups are answered at once with "re: <text>".
"""
from __future__ import annotations

import html
import json
import os
import re
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import trio
import trio.testing

from nanoclaw.runtime._engine import RuntimeState

START, END = "---NANOCLAW_OUTPUT_START---", "---NANOCLAW_OUTPUT_END---"


@dataclass
class FakeContainer:
    name: str
    args: list[str]
    started_at: float
    stdin: dict | None = None
    # The session it keeps the conversation under (a new one when stdin's sessionId is null).
    session: str | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    stopped: bool = False
    outputs: list[str] = field(default_factory=list)
    inputs: list[dict] = field(default_factory=list)  # IPC input messages, as read
    cancel: trio.CancelScope = field(default_factory=trio.CancelScope)

    def mount(self, target: str) -> Path:
        for i, arg in enumerate(self.args):
            if arg == "-v":
                host, _, rest = self.args[i + 1].partition(":")
                if rest.split(":")[0] == target:
                    return Path(host)
        raise KeyError(target)


class FakeProcess:
    def __init__(self) -> None:
        self.stdin, self._stdin_recv = trio.testing.memory_stream_one_way_pair()
        self._stdout_send, self.stdout = trio.testing.memory_stream_one_way_pair()
        self._stderr_send, self.stderr = trio.testing.memory_stream_one_way_pair()
        self._exited = trio.Event()
        self.code: int | None = None

    async def wait(self) -> int:
        await self._exited.wait()
        return self.code

    def kill(self) -> None:
        pass


class FakeRuntime:
    def __init__(self, nursery: trio.Nursery) -> None:
        # Containers live in the test's nursery: like real ones, they outlive the server.
        self._nursery = nursery
        self.state = RuntimeState(available=True, backend="docker", version="fake",
                                  host_gateway="127.0.0.1", message="fake runtime")
        self.containers: list[FakeContainer] = []
        self.running: dict[str, FakeContainer] = {}
        self.max_running = 0

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    def info(self) -> dict:
        return {"available": True, "backend": "docker", "version": "fake",
                "networking": {"mode": "host", "hostGateway": "127.0.0.1", "extraRunArgs": []},
                "message": "fake"}

    def mark_down(self, reason: str) -> None:
        pass

    def proxy_bind_host(self) -> str:
        return "127.0.0.1"

    async def remove_labelled(self, label: str) -> list[str]:
        return []

    async def image_exists(self, tag: str) -> bool:
        return True

    async def cli(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        # Only `image inspect` reaches here (the image's flavour): fake images carry no labels.
        return subprocess.CompletedProcess(["docker", *args], 0, b"{}\t0\n", b"")

    async def start_container(self, args: list[str]) -> FakeProcess:
        name = args[args.index("--name") + 1]
        container = FakeContainer(name, args, trio.current_time())
        self.containers.append(container)
        self.running[name] = container
        self.max_running = max(self.max_running, len(self.running))
        process = FakeProcess()
        self._nursery.start_soon(self._container, container, process)
        return process

    async def stop_container(self, name: str, *, grace: int = 1) -> None:
        container = self.running.get(name)
        if container is not None:
            container.stopped = True
            container.cancel.cancel()

    async def _container(self, container: FakeContainer, process: FakeProcess) -> None:
        code = 137
        with container.cancel:
            code = await self._behave(container, process)
        container.exit_code = code
        container.ended_at = trio.current_time()
        self.running.pop(container.name, None)
        process.code = code
        await process._stdout_send.aclose()
        await process._stderr_send.aclose()
        process._exited.set()

    async def _behave(self, container: FakeContainer, process: FakeProcess) -> int:
        data = b""
        while not data.endswith(b"\n"):
            chunk = await process._stdin_recv.receive_some()
            if not chunk:
                break
            data += chunk
        request = json.loads(data)
        container.stdin = request
        container.session = request.get("sessionId") or uuid.uuid4().hex
        verb, _, arg = _command(request["prompt"]).partition(" ")
        if verb == "fail":
            await process._stderr_send.send_all(b"boom\n")
            return 1
        if verb == "silent":
            await trio.sleep_forever()
        if verb == "chatter":
            while True:
                await trio.sleep(float(arg))
                await self._say(container, process, "still here")
        if verb == "steps":
            for i in range(int(arg)):
                frame = json.dumps({"status": "progress", "event": {"kind": "tool_start", "step": i}})
                await process._stdout_send.send_all(f"{START}\n{frame}\n{END}\n".encode())
            await self._say(container, process, "stepped")
            return 0
        if verb == "spend":
            usage = {"inputTokens": int(arg), "outputTokens": int(arg) // 10, "cacheReadTokens": 5,
                     "cacheCreationTokens": 1}
            for part in (1, 2):
                await self._say(container, process, f"part {part}", usage=usage, model="fake-model")
            return 0
        if verb == "stream":
            words = [f"word{i}" for i in range(int(arg))]
            for i in range(len(words)):
                frame = json.dumps({"status": "progress", "event": {"kind": "text", "text": " ".join(words[:i + 1])}})
                await process._stdout_send.send_all(f"{START}\n{frame}\n{END}\n".encode())
                await trio.sleep(0.2)
            await self._say(container, process, " ".join(words))
            return 0
        if verb == "burst":
            words = [f"word{i}" for i in range(int(arg))]
            frames = [{"status": "progress", "event": {"kind": "text", "text": " ".join(words[:i + 1])}}
                      for i in range(len(words))] + [{"status": "success", "result": " ".join(words)}]
            container.outputs.append(" ".join(words))
            await process._stdout_send.send_all("".join(f"{START}\n{json.dumps(f)}\n{END}\n" for f in frames).encode())
            return 0
        if verb == "tell":
            outbox = container.mount("/workspace/ipc") / "messages"
            outbox.mkdir(parents=True, exist_ok=True)
            (outbox / "1.json").write_text(json.dumps({"type": "message", "text": arg}))
        else:
            await trio.sleep(float(arg or 0))
        await self._say(container, process, f"done: {request['prompt']}")
        if verb == "once":
            return 0
        inbox = container.mount("/workspace/ipc") / "input"
        while True:
            await trio.sleep(0.1)
            names = sorted(os.listdir(inbox)) if inbox.exists() else []
            if "_close" in names:
                return 0
            for name in names:
                if name.endswith(".json") and not name.startswith("."):
                    container.inputs.append(json.loads((inbox / name).read_text()))
                    text = container.inputs[-1]["text"]
                    (inbox / name).unlink()
                    await self._say(container, process, f"re: {text}")

    @staticmethod
    async def _say(container: FakeContainer, process: FakeProcess, text: str, **extra) -> None:
        container.outputs.append(text)
        frame = json.dumps({"status": "success", "result": text, "newSessionId": container.session, **extra})
        await process._stdout_send.send_all(f"log line\n{START}\n{frame}\n{END}\n".encode())


def _command(prompt: str) -> str:
    """The verb of a prompt; for chat messages, the text of the last one."""
    if not prompt.startswith("<messages>"):
        return prompt
    found = re.findall(r"<message [^>]*>(.*?)(?:\n<attachment [^>]*/>)*</message>", prompt, re.DOTALL)
    return html.unescape(found[-1]) if found else ""

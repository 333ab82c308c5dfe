"""The agent runner's own overhead per tool step, and the cold start of a turn, in the real image.

step: the fake LLM finished sending an answer that asks for `bash true` -> the runner's next
      model request arrives at the fake (200 steps in one turn, one container).
cold start: POST /api/v1/container/runs -> the first model request arrives at the fake (through
      the whole server: queue, mounts, `docker run`, python start, runner), against the bare
      `docker run --rm --entrypoint true` of the same image; alternated, COLD_RUNS each.
Needs a running Docker engine and the base image made by .ci/setup-docker.sh.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

from bench._report import percentile, write_section
from nanoclaw.app import create_app
from nanoclaw.config import Settings
from nanoclaw.main import hypercorn_config
from nanoclaw.services import build

STEPS = 200
COLD_RUNS = 10
BASE = "nanoclaw-test-base:bookworm-tools"
AGENT = "nanoclaw-agent:bench-agent"
STEP_TARGET = 0.020
COLD_MARGIN = 0.300


class Timed:
    """Wraps the fake LLM's ASGI app: when each request arrived, when each answer was fully sent."""

    def __init__(self, app) -> None:
        self.app = app
        self.arrived: list[float] = []
        self.answered: list[float] = []
        self.changed = trio.Event()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            self.arrived.append(time.perf_counter())
            self.changed.set()
            self.changed = trio.Event()

        async def timed_send(message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self.answered.append(time.perf_counter())

        await self.app(scope, receive, timed_send)

    async def wait_arrivals(self, count: int) -> float:
        while len(self.arrived) < count:
            await self.changed.wait()
        return self.arrived[count - 1]


def build_image() -> None:
    agent_dir = Path(__file__).resolve().parent.parent / "nanoclaw" / "agent"
    subprocess.run(["docker", "build", "--pull=false", "-q", "-t", AGENT, "--build-arg", f"BASE_IMAGE={BASE}",
                    str(agent_dir)], check=True, capture_output=True)


async def measure_steps(tmp: Path, nursery, fake, timed: Timed) -> tuple[list[float], list[float]]:
    from tests.fakes.anthropic import text_reply, tool_reply

    ws = tmp / "steps"
    for sub in ("group", "global", "ipc/input", "ipc/messages", "ipc/tasks", "sessions"):
        (ws / sub).mkdir(parents=True, exist_ok=True)
    fake.queue(*[tool_reply("bash", {"command": "true"}) for _ in range(STEPS + 1)], text_reply("done"))
    mounts = [arg for sub in ("group", "global", "ipc", "sessions") for arg in ("-v", f"{ws / sub}:/workspace/{sub}")]
    before = len(timed.arrived)
    request = {"prompt": "step", "sessionId": None, "group": "bench", "chatJid": "tg:1", "isMain": False,
               "isScheduledTask": False, "agent": {"maxSteps": STEPS + 10}}
    process = await trio.lowlevel.open_process(
        ["docker", "run", "-i", "--rm", "--network", "host", *mounts, "-e", f"ANTHROPIC_BASE_URL={fake.url}",
         "-e", "ANTHROPIC_API_KEY=bench", AGENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    await process.stdin.send_all(json.dumps(request).encode() + b"\n")
    output = bytearray()
    with trio.fail_after(300):
        while chunk := await process.stdout.receive_some(65536):
            output += chunk
            if b'"status": "success"' in output:
                break
        (ws / "ipc" / "input" / "_close").write_bytes(b"")
        while await process.stdout.receive_some(65536):
            pass
        await process.wait()
    # The bash process's own time per step, from the runner's tool_end progress frames.
    tool_ms = [json.loads(line)["event"]["durationMs"] / 1000 for line in output.decode().splitlines()
               if line.startswith('{"status": "progress"') and '"tool_end"' in line]
    # Step k: answer k (a bash call) fully sent -> request k+1 arrived; the first step warms up.
    steps = [timed.arrived[before + k + 1] - timed.answered[before + k] for k in range(1, STEPS + 1)]
    return steps, [step - tool for step, tool in zip(steps, tool_ms[1:STEPS + 1])]


async def measure_cold(tmp: Path, nursery, fake, timed: Timed) -> tuple[list[float], list[float]]:
    from nanoclaw.models import ContainerConfig

    settings = Settings(host="127.0.0.1", port=0, data_dir=tmp / "data", config_dir=tmp / "config",
                        container_runtime="docker", container_network="host", agent_image=AGENT, max_concurrent=5)
    services = build(settings)
    await nursery.start(services.serve)
    from hypercorn.trio import serve

    binds = await nursery.start(lambda task_status: serve(create_app(services), hypercorn_config(settings),
                                                          task_status=task_status))
    cold, bare = [], []
    async with httpx.AsyncClient(base_url=binds[0] + "/api/v1", timeout=60) as client:
        for i in range(COLD_RUNS):
            group = f"cold-{i}"
            await services.namespaces.create({"name": group, "containerConfig": ContainerConfig(
                idleTimeoutSecs=5, env=[f"ANTHROPIC_BASE_URL={fake.url}", "ANTHROPIC_API_KEY=bench"])})
            count = len(timed.arrived)
            start = time.perf_counter()
            r = await client.post("/container/runs", json={"group": group, "prompt": "what is 2+2?"})
            assert r.status_code == 202, r.text
            with trio.fail_after(60):
                cold.append(await timed.wait_arrivals(count + 1) - start)
                while services.supervisor.live_run(group) is not None:
                    await trio.sleep(0.05)
            start = time.perf_counter()
            await trio.run_process(["docker", "run", "--rm", "--network", "host", "--entrypoint", "true", AGENT])
            bare.append(time.perf_counter() - start)
    return cold, bare


async def measure(tmp: Path) -> tuple[list[float], list[float], list[float], list[float]]:
    from tests.fakes import serve_on_loopback
    from tests.fakes.anthropic import FakeAnthropic

    async with trio.open_nursery() as nursery:
        fake = FakeAnthropic()
        timed = Timed(fake)
        fake.url = await serve_on_loopback(nursery, timed)
        steps, own = await measure_steps(tmp, nursery, fake, timed)
        cold, bare = await measure_cold(tmp, nursery, fake, timed)
        nursery.cancel_scope.cancel()
    return steps, own, cold, bare


def main() -> None:
    build_image()
    with tempfile.TemporaryDirectory() as tmp:
        steps, own, cold, bare = trio.run(measure, Path(tmp))
    ms = lambda v: f"{v * 1000:.1f} ms"  # noqa: E731
    step_p99 = percentile(own, 99)
    cold_p50, bare_p50 = percentile(cold, 50), percentile(bare, 50)
    lines = [
        "| measure | samples | p50 | p99 | max |", "|---|---|---|---|---|",
        f"| tool step (answer sent -> next request arrived, `bash true`) | {len(steps)} "
        f"| {ms(percentile(steps, 50))} | {ms(percentile(steps, 99))} | {ms(max(steps))} |",
        f"| the runner's own overhead per step (the step minus the bash process) | {len(own)} "
        f"| {ms(percentile(own, 50))} | {ms(step_p99)} | {ms(max(own))} |",
        f"| cold start (POST /container/runs -> first model request) | {len(cold)} | {ms(cold_p50)} "
        f"| {ms(percentile(cold, 99))} | {ms(max(cold))} |",
        f"| bare `docker run --rm` of the same image (`--entrypoint true`) | {len(bare)} | {ms(bare_p50)} "
        f"| {ms(percentile(bare, 99))} | {ms(max(bare))} |",
    ]
    verdicts = [
        f"Runner step overhead p99 < {ms(STEP_TARGET)}: {'met' if step_p99 < STEP_TARGET else 'not met'}.",
        f"Cold start p50 < bare docker run p50 + {ms(COLD_MARGIN)} ({ms(cold_p50)} vs {ms(bare_p50 + COLD_MARGIN)}): "
        f"{'met' if cold_p50 < bare_p50 + COLD_MARGIN else 'not met'}.",
    ]
    body = "\n".join(lines) + "\n\n" + "\n".join(verdicts) + (
        "\n\nThe step is timed at the loopback fake LLM: from the last byte of an answer that asks for "
        "`bash true` to the arrival of the runner's next request, so it holds the stream parsing, the bash "
        f"process (`bash -lc true`), the progress frames and re-encoding the growing history ({STEPS} steps in "
        "one turn, the real image under Docker, host networking). The runner's own overhead subtracts the "
        "time of the bash process (`bash -lc` runs the login profile: a few forks) as the runner's `tool_end` "
        "progress frame reports it. The cold start goes through the whole server "
        "(queue, mounts, `docker run`, python start, the runner reading its input); the bare run is the same "
        "image with `--entrypoint true`, its container removed (`--rm`) before it counts as done.")
    write_section("Agent runner: tool step overhead and cold start", body, "python -m bench agent")
    print(body)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())

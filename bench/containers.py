"""Dispatch and follow-up latency of the supervisor against a real Docker engine.

dispatch: a group is notified of a message -> the container process is spawned (200 runs,
          a trivial image that answers at once and exits).
follow-up: POST /api/v1/container/ipc/follow-up -> the agent runner in the live container has
          read the file and its answer is back on the host (200 follow-ups, the real agent
          image, the fake LLM on loopback); an upper bound on "file visible in the container".
Needs a running Docker engine and the base image made by .ci/setup-docker.sh.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

from bench._feed import BenchFeed
from bench._report import percentile, write_section
from nanoclaw.app import create_app
from nanoclaw.config import Settings
from nanoclaw.main import hypercorn_config
from nanoclaw.services import build

RUNS = 200
BASE = "nanoclaw-test-base:bookworm-tools"
TRIVIAL = "nanoclaw-bench-trivial:latest"
AGENT = "nanoclaw-agent:bench"
TRIVIAL_AGENT = (
    "import json, sys\nsys.stdin.readline()\n"
    "print('---NANOCLAW_OUTPUT_START---'); print(json.dumps({'status': 'success', 'result': 'ok'}));"
    " print('---NANOCLAW_OUTPUT_END---')\n"
)


def build_images() -> None:
    with tempfile.TemporaryDirectory() as context:
        Path(context, "agent.py").write_text(TRIVIAL_AGENT)
        Path(context, "Dockerfile").write_text(
            f'FROM {BASE}\nCOPY agent.py /agent.py\nENTRYPOINT ["python3", "/agent.py"]\n')
        subprocess.run(["docker", "build", "--pull=false", "-q", "-t", TRIVIAL, context], check=True,
                       capture_output=True)
    agent_dir = Path(__file__).resolve().parent.parent / "nanoclaw" / "agent"
    subprocess.run(["docker", "build", "--pull=false", "-q", "-t", AGENT, "--build-arg", f"BASE_IMAGE={BASE}",
                    str(agent_dir)], check=True, capture_output=True)


async def measure(tmp: Path) -> tuple[list[float], list[float]]:
    from tests.fakes.anthropic import serve_fake_anthropic

    settings = Settings(host="127.0.0.1", port=0, data_dir=tmp / "data", config_dir=tmp / "config",
                        container_runtime="docker", container_network="host", agent_image=TRIVIAL,
                        max_concurrent=5)
    feed = BenchFeed()
    services = build(settings, feed=feed)
    spawned: list[float] = []
    real_start = services.runtime.start_container

    async def timed_start(args):
        process = await real_start(args)
        spawned.append(time.perf_counter())
        return process

    services.runtime.start_container = timed_start
    dispatch, follow_up = [], []
    async with trio.open_nursery() as nursery:
        fake = await nursery.start(serve_fake_anthropic)
        await nursery.start(services.serve)
        app = create_app(services)
        from hypercorn.trio import serve

        binds = await nursery.start(lambda task_status: serve(app, hypercorn_config(settings), task_status=task_status))
        await services.namespaces.create({"name": "bench"})
        for i in range(RUNS):
            answered = feed.say("bench", f"message {i}")
            before = len(spawned)
            start = time.perf_counter()
            services.supervisor.notify("bench")
            with trio.fail_after(30):
                await answered.wait()
                while services.supervisor.live_run("bench") is not None:
                    await trio.sleep(0.005)
            dispatch.append(spawned[before] - start)

        from nanoclaw.models import ContainerConfig

        await services.namespaces.create({
            "name": "chat", "containerConfig": ContainerConfig(
                image=AGENT, idleTimeoutSecs=600,
                env=[f"ANTHROPIC_BASE_URL={fake.url}", "ANTHROPIC_API_KEY=bench"])})
        answered = feed.say("chat", "hello")
        services.supervisor.notify("chat")
        with trio.fail_after(60):
            await answered.wait()
        session = services.supervisor.live_run("chat").session_id
        async with httpx.AsyncClient(base_url=binds[0] + "/api/v1") as client:
            for i in range(RUNS):
                answered = feed.next_answer("chat")
                start = time.perf_counter()
                r = await client.post("/container/ipc/follow-up",
                                      json={"group": "chat", "sessionId": session, "content": f"ping {i}"})
                assert r.json()["containerAttached"], r.text
                with trio.fail_after(30):
                    await answered.wait()
                follow_up.append(time.perf_counter() - start)
        nursery.cancel_scope.cancel()
    return dispatch, follow_up


def main() -> None:
    build_images()
    with tempfile.TemporaryDirectory() as tmp:
        dispatch, follow_up = trio.run(measure, Path(tmp))
    ms = lambda v: f"{v * 1000:.1f} ms"  # noqa: E731
    rows = [
        ("dispatch (notified -> process spawned)", dispatch, 0.050),
        ("follow-up (API call -> answer from the live container)", follow_up, 0.150),
    ]
    lines = ["| measure | runs | p50 | p99 | max | target p99 | met |", "|---|---|---|---|---|---|---|"]
    for name, values, target in rows:
        p99 = percentile(values, 99)
        lines.append(f"| {name} | {len(values)} | {ms(percentile(values, 50))} | {ms(p99)} | {ms(max(values))} "
                     f"| < {ms(target)} | {'yes' if p99 < target else 'no'} |")
    body = "\n".join(lines) + (
        "\n\nDispatch is measured sequentially (one group, one run at a time) from `Supervisor.notify` to the "
        "moment the `docker run` process exists. Follow-up is measured from the HTTP call to the answer frame "
        "arriving on the host, so it includes the runner's input poll (every 50 ms), the fake LLM round trip "
        "and the output path: an upper bound on the time until the file is visible in the container.")
    write_section("Container dispatch and follow-up latency", body, "python -m bench containers")
    print(body)


if __name__ == "__main__":
    sys.exit(main())

"""Event-loop lag of the server while 5 containers run and schedules fire.

    python -m bench.looplag [--idle 10] [--load 60] [--schedules 3]

The server runs in this process as `nanoclaw serve` does (services.serve and
Hypercorn in one Trio loop, real SQLite file, real Docker engine). A probe task in
the same loop repeatedly sleeps 10 ms and records how late it wakes up.
  idle phase: nothing happens (the floor of the measurement);
  load phase: 5 agent containers (the real agent image, talking to the fake
              Anthropic server of tests/fakes/anthropic.py, run in its own process on
              loopback) stay live and each gets a follow-up through
              POST /api/v1/container/ipc/follow-up every second, while --schedules
              interval schedules of 1,000 ms fire, each starting a short task
              container (the trivial image of bench/containers.py).
Needs a running Docker engine and the base image made by .ci/setup-docker.sh; when
the engine is not reachable the section says so and the exit status is 1.
The figures replace the "Event-loop lag" section of docs/benchmarks.md and draw
docs/bench/looplag.png.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import trio

from bench._plot import cdf_points, draw
from bench._report import load_sentence, percentile, write_section

ROOT = Path(__file__).resolve().parent.parent
TITLE = "Event-loop lag"
TARGET_MS = 10.0
CONTAINERS = 5
PROBE_S = 0.010


def docker_problem() -> str | None:
    try:
        out = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                             timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`docker info` failed: {exc}"
    if out.returncode != 0:
        return f"`docker info` failed: {(out.stderr or out.stdout).strip()[:300]}"
    return None


def start_fake_llm(log: Path) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "tests.fakes.anthropic", "--port", "0"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    line = process.stdout.readline()
    if "fake Anthropic API on " not in line:
        process.kill()
        raise RuntimeError(f"the fake Anthropic server did not start: {log.read_text()[-1000:]}")
    return process, line.rsplit(" ", 1)[1].strip()


async def probe(samples: list[tuple[float, float, float]], until: float) -> None:
    """Sleep 10 ms again and again; record (time, lateness in ms) of every wake-up."""
    while time.perf_counter() < until:
        start, cpu = time.perf_counter(), time.thread_time()
        await trio.sleep(PROBE_S)
        woke = time.perf_counter()
        # CPU the loop's thread used meanwhile: high when our own work delayed the wake-up,
        # low when the thread waited for a CPU (other processes) or for the GIL (worker threads).
        samples.append((woke, (woke - start - PROBE_S) * 1000, (time.thread_time() - cpu) * 1000))


async def measure(tmp: Path, llm_url: str, args) -> dict:
    from bench._feed import BenchFeed
    from bench.containers import AGENT, TRIVIAL
    from nanoclaw.app import create_app
    from nanoclaw.config import Settings
    from nanoclaw.main import hypercorn_config
    from nanoclaw.models import ContainerConfig
    from nanoclaw.scheduler import ScheduleCreate
    from nanoclaw.services import build
    from hypercorn.trio import serve

    settings = Settings(host="127.0.0.1", port=0, data_dir=tmp / "data", config_dir=tmp / "config",
                        container_runtime="docker", container_network="host", agent_image=TRIVIAL,
                        max_concurrent=CONTAINERS + args.schedules + 2, proxy_port=0)
    feed = BenchFeed()
    services = build(settings, feed=feed)
    groups = [f"agent-{i}" for i in range(CONTAINERS)]
    out: dict = {"idle": [], "load": [], "followups": 0, "followup_errors": 0}
    async with trio.open_nursery() as nursery:
        await nursery.start(services.serve)
        app = create_app(services)
        binds = await nursery.start(lambda task_status: serve(app, hypercorn_config(settings),
                                                              task_status=task_status))
        for group in groups:
            await services.namespaces.create({"name": group, "containerConfig": ContainerConfig(
                image=AGENT, idleTimeoutSecs=600,
                env=[f"ANTHROPIC_BASE_URL={llm_url}", "ANTHROPIC_API_KEY=bench"])})
        for i in range(args.schedules):
            await services.namespaces.create({"name": f"tick-{i}"})

        await trio.sleep(1)
        await probe(out["idle"], time.perf_counter() + args.idle)

        # 5 live agent containers.
        first_answers = [feed.say(group, "hello") for group in groups]
        for group in groups:
            services.supervisor.notify(group)
        with trio.fail_after(120):
            for answered in first_answers:
                await answered.wait()
        sessions = {g: services.supervisor.live_run(g).session_id for g in groups}
        schedules = []
        for i in range(args.schedules):
            schedules.append(await services.scheduler.create(ScheduleCreate(
                name=f"tick {i}", group=f"tick-{i}", prompt="tick", schedule={"type": "interval", "value": 1000})))

        load_start = time.perf_counter()
        until = load_start + args.load

        async def follow_ups(client: httpx.AsyncClient, group: str, offset: float) -> None:
            await trio.sleep(offset)
            n = 0
            while time.perf_counter() < until - 1:
                n += 1
                r = await client.post("/container/ipc/follow-up",
                                      json={"group": group, "sessionId": sessions[group], "content": f"ping {n}"})
                if r.status_code == 200 and r.json().get("containerAttached"):
                    out["followups"] += 1
                else:
                    out["followup_errors"] += 1
                await trio.sleep(1)

        async with httpx.AsyncClient(base_url=binds[0] + "/api/v1", timeout=30) as client:
            async with trio.open_nursery() as load:
                load.start_soon(probe, out["load"], until)
                for k, group in enumerate(groups):
                    load.start_soon(follow_ups, client, group, k / CONTAINERS)
        out["load_start"] = load_start
        out["answers"] = sum(feed.answers.values())
        out["live"] = sum(services.supervisor.live_run(g) is not None for g in groups)
        statuses: Counter = Counter()
        for schedule in schedules:
            logs, _ = await services.scheduler.logs(schedule.id, limit=500, offset=0)
            statuses.update(log.status for log in logs)
        out["schedule_logs"] = dict(statuses)
        runs = await services.db.fetchall(
            "SELECT kind, status, COUNT(*) AS n FROM run_history GROUP BY kind, status")
        out["runs"] = {f"{r['kind']}/{r['status']}": r["n"] for r in runs}
        nursery.cancel_scope.cancel()
    return out


def report(out: dict, args, load: tuple) -> str:
    def stats(values):
        return percentile(values, 50), percentile(values, 99), max(values)

    idle = [lag for _, lag, _ in out["idle"]]
    busy = [lag for _, lag, _ in out["load"]]
    late = [(lag, cpu) for _, lag, cpu in out["load"] if lag >= TARGET_MS]
    own = sum(1 for lag, cpu in late if cpu >= (lag + PROBE_S * 1000) / 2)
    i50, i99, imax = stats(idle)
    b50, b99, bmax = stats(busy)
    met = b99 < TARGET_MS

    def paint(fig):
        left = fig.add_subplot(1, 2, 1)
        for values, label in ((idle, "idle"), (busy, f"{CONTAINERS} containers + schedules")):
            xs, ys = cdf_points([max(v, 0.01) for v in values])
            left.plot(xs, ys, label=label)
        left.axvline(TARGET_MS, color="red", linestyle=":", label=f"target {TARGET_MS:g} ms")
        left.set_xscale("log")
        left.set_xlabel("wake-up lateness of trio.sleep(0.01) (ms)")
        left.set_ylabel("percentile")
        left.grid(alpha=0.3)
        left.legend(fontsize=8)
        right = fig.add_subplot(1, 2, 2)
        right.plot([t - out["load_start"] for t, _, _ in out["load"]], busy, ".", markersize=2)
        right.axhline(TARGET_MS, color="red", linestyle=":")
        right.set_xlabel("seconds into the load phase")
        right.set_ylabel("lateness (ms)")
        right.grid(alpha=0.3)

    figure = draw("looplag", paint, size=(11, 4.5))
    logs = ", ".join(f"{k} {v}" for k, v in sorted(out["schedule_logs"].items())) or "none"
    runs = ", ".join(f"{k} {v}" for k, v in sorted(out["runs"].items()))
    return "\n".join([
        "How late a task in the server's Trio loop wakes up from `trio.sleep(0.01)`, with the server running",
        "as `nanoclaw serve` runs it (services and Hypercorn in one loop, real SQLite file, real Docker).",
        f"Idle phase: {args.idle:g} s with nothing to do. Load phase: {args.load:g} s with {CONTAINERS} live agent",
        "containers (the real agent image against the fake Anthropic server, in its own process on loopback),",
        "each sent a follow-up through `POST /api/v1/container/ipc/follow-up` every second (the HTTP client",
        f"runs in the server's loop too), while {args.schedules} interval schedules of 1,000 ms fire, each",
        "starting a short task container. Target: p99 < 10 ms.",
        "",
        "| phase | samples | p50 | p99 | max |",
        "|---|---|---|---|---|",
        f"| idle | {len(idle):,} | {i50:.2f} ms | {i99:.2f} ms | {imax:.2f} ms |",
        f"| {CONTAINERS} containers + schedules | {len(busy):,} | {b50:.2f} ms | {b99:.2f} ms | {bmax:.2f} ms |",
        "",
        f"p99 < {TARGET_MS:g} ms under load: {'**met**' if met else '**missed**'} ({b99:.2f} ms). "
        f"{len(late)} of {len(busy):,} wake-ups were {TARGET_MS:g} ms late or more; in {own} of them the loop's "
        "thread was on the CPU for more than half the wait (the server's own work held the loop), in the other "
        f"{len(late) - own} it was mostly off the CPU (waiting for a core, the machine being shared, or for the GIL).",
        "",
        f"Activity in the load phase: {out['followups']} follow-ups delivered to live containers "
        f"({out['followup_errors']} not attached), {out['answers']} agent answers in all, "
        f"{out['live']} of {CONTAINERS} agent containers still live at the end; schedule log rows: {logs}; "
        f"run history: {runs}.",
        "",
        load_sentence(load, "2 cores, shared with dockerd, the containers and other work on the machine"),
        "",
        figure,
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of the idle phase")
    parser.add_argument("--load", type=float, default=60.0, help="seconds of the load phase")
    parser.add_argument("--schedules", type=int, default=3, help="interval schedules of 1,000 ms")
    args = parser.parse_args()
    command = "python -m bench looplag"
    problem = docker_problem()
    if problem:
        write_section(TITLE, f"Not measured: the Docker engine is not reachable ({problem}). "
                             "Start it (see .ci/setup-docker.sh) and run again.", command)
        print(problem, file=sys.stderr)
        return 1
    from bench.containers import build_images

    build_images()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        llm, url = start_fake_llm(Path(tmp) / "fake-llm.log")
        try:
            out = trio.run(measure, Path(tmp), url, args)
        finally:
            llm.terminate()
            llm.wait(timeout=10)
    body = report(out, args, (load_before, os.getloadavg()))
    write_section(TITLE, body, command)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

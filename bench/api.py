"""API throughput and latency under concurrent load, against the bare-framework ceiling.

    python -m bench.api [--duration 3] [--connections 1,8,32,64] [--no-wrk] [--rounds 1]

Two servers, each in its own process, on 127.0.0.1:
  NanoClaw: `nanoclaw serve` (temporary data dir, NANOCLAW_CONTAINER_RUNTIME=none),
            seeded with 20 namespaces of 2 chats each;
  bare:     bench/_bare.py, a Quart-Trio app on the same Hypercorn settings
            answering the same routes with the bodies NanoClaw gave, doing no work.
A third process generates the load: `wrk` (installed with apt-get in the set-up
step when missing and we are root) for the GET and PUT endpoints, and
bench/_load.py (httpx, keep-alive) for POST + DELETE pairs, or for everything
with --no-wrk / without wrk. For each endpoint and connection count the two
servers are measured back to back, so drift (other work on the machine) hits
both alike. Every run is bounded by time (--duration) and by count.
The figures replace the "API throughput vs the framework ceiling" section of
docs/benchmarks.md and draw docs/bench/api_throughput.png and api_latency.png.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench._plot import draw
from bench._report import load_sentence, percentile, write_section

ROOT = Path(__file__).resolve().parent.parent
TITLE = "API throughput vs the framework ceiling"
TARGET_RATIO = 0.80
WRITE_TARGET_RATIO = 0.50
MAX_REQUESTS = 200_000
RUNS = 200
INSTRUCTIONS = {"instructions": "# Bench group\n\nAnswer briefly. " + "x" * 400}
# (label, kind, mode, path); kind "read" is held to the target.
ENDPOINTS = [
    ("GET /health", "read", "get", "/health"),
    ("GET /container/namespaces", "read", "get", "/container/namespaces"),
    ("GET /container/queue/counts", "read", "get", "/container/queue/counts"),
    ("GET /container/run-history", "read", "get", "/container/run-history"),
    ("GET /container/metrics", "read", "get", "/container/metrics"),
    ("GET /container/schedules", "read", "get", "/container/schedules"),
    ("PUT /container/namespaces/{name}/instructions", "write", "put", "/container/namespaces/bench/instructions"),
    ("POST + DELETE /container/namespaces", "write", "pair", "/container/namespaces"),
]
WRK_QUANTILES = [q / 2 for q in range(2, 199)] + [99.5, 99.9]


def start_process(cmd: list[str], env: dict, log: Path, timeout: float = 60) -> tuple[subprocess.Popen, str]:
    """Start a server process; its URL is on the stdout line that says 'serving on URL'."""
    process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    try:
        for line in process.stdout:
            if "serving on " in line:
                url = line.split("serving on ", 1)[1].split()[0]
                # Keep draining stdout so the server never blocks on a full pipe.
                threading.Thread(target=process.stdout.read, daemon=True).start()
                return process, url
    finally:
        timer.cancel()
    raise RuntimeError(f"{cmd[:4]} did not start; see {log}: {log.read_text()[-2000:]}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def ensure_wrk() -> str | None:
    """The set-up step: wrk from apt when missing (root only); None means use httpx."""
    found = shutil.which("wrk")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    for step in (["apt-get", "install", "-y", "-qq", "wrk"], ["apt-get", "update", "-qq"],
                 ["apt-get", "install", "-y", "-qq", "wrk"]):
        try:
            subprocess.run(step, env=env, capture_output=True, timeout=180)
        except subprocess.TimeoutExpired:
            break
        if shutil.which("wrk"):
            break
    return shutil.which("wrk")


def summarise(requests: int, errors: int, elapsed: float, quantiles: dict[float, float], worst: float) -> dict:
    return {"requests": requests, "errors": errors, "rps": requests / elapsed if elapsed else 0.0,
            "p50": quantiles[50.0], "p99": quantiles[99.0], "max": worst,
            "cdf": sorted((ms, q) for q, ms in quantiles.items())}


def run_wrk(wrk: str, base: str, mode: str, path: str, connections: int, duration: float, tmp: Path) -> dict:
    script = tmp / f"{mode}.lua"
    lines = []
    if mode == "put":
        lines += ['wrk.method = "PUT"', f"wrk.body = [==[{json.dumps(INSTRUCTIONS)}]==]",
                  'wrk.headers["Content-Type"] = "application/json"']
    quantiles = ", ".join(repr(q) for q in WRK_QUANTILES)
    lines += [
        "done = function(summary, latency, requests)",
        "  local e = summary.errors",
        f"  local qs = {{{quantiles}}}",
        '  io.write(string.format("WRKJSON {\\"requests\\": %d, \\"duration_us\\": %d, \\"errors\\": %d, '
        '\\"max_us\\": %d, \\"q\\": [", summary.requests, summary.duration, '
        "e.connect + e.read + e.write + e.timeout + e.status, latency.max))",
        "  for i, q in ipairs(qs) do",
        '    if i > 1 then io.write(", ") end',
        '    io.write(string.format("[%g, %d]", q, latency:percentile(q)))',
        "  end",
        '  io.write("]}\\n")',
        "end",
    ]
    script.write_text("\n".join(lines) + "\n")
    cmd = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "5s", "-s", str(script),
           base + "/api/v1" + path]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no summary: {out[-2000:]}")
    data = json.loads(line[len("WRKJSON "):])
    quantiles = {float(q): us / 1000 for q, us in data["q"]}
    return summarise(data["requests"], data["errors"], data["duration_us"] / 1e6, quantiles, data["max_us"] / 1000)


def run_httpx(base: str, mode: str, path: str, connections: int, duration: float, tag: str) -> dict:
    cmd = [sys.executable, "-m", "bench._load", "--base", base + "/api/v1", "--mode", mode, "--path", path,
           "--connections", str(connections), "--duration", str(duration), "--max-requests", str(MAX_REQUESTS),
           "--tag", tag]
    if mode == "put":
        cmd += ["--body", json.dumps(INSTRUCTIONS)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=duration + 60)
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed: {out.stderr[-2000:]}")
    data = json.loads(out.stdout)
    values = data["latencies_ms"]
    quantiles = {q: percentile(values, q) for q in WRK_QUANTILES}
    return summarise(data["requests"], data["errors"], data["elapsed"], quantiles, max(values, default=0.0))


def seed_runs(database: Path) -> None:
    """RUNS finished runs in the run history (no container engine here to make real ones)."""
    now = time.time()
    with sqlite3.connect(database, timeout=30) as conn:
        conn.executemany(
            "INSERT INTO run_history (id, group_name, kind, status, container_name, schedule_id, prompt, started_at, "
            "finished_at, duration_ms, exit_code, results, input_tokens, output_tokens, model) "
            "VALUES (?, ?, ?, ?, ?, NULL, 'prompt', ?, ?, 4000, 0, ?, 1200, 300, 'bench-model')",
            [(f"run-{i:04d}", f"team-{i % 20:02d}", "message", "success" if i % 10 else "error",
              f"nanoclaw-team-{i % 20:02d}-{i}", now - 60 * i, now - 60 * i + 4, json.dumps([f"answer {i}"]))
             for i in range(RUNS)])
    conn.close()


def seed(base: str, database: Path) -> dict:
    """20 namespaces with 2 chats each plus 'bench', 20 schedules and RUNS runs; returns the bodies the
    bare app will give."""
    with httpx.Client(base_url=base + "/api/v1", timeout=30, trust_env=False) as client:
        for i in range(20):
            r = client.post("/container/namespaces", json={
                "name": f"team-{i:02d}", "description": f"Team {i}", "chatJids": [f"tg:-100{i}", f"wa:{i}@g.us"]})
            r.raise_for_status()
            client.post("/container/schedules", json={
                "name": f"daily {i}", "group": f"team-{i:02d}", "prompt": "Summarise the day",
                "schedule": {"type": "cron", "value": "0 9 * * *"}}).raise_for_status()
        seed_runs(database)
        client.post("/container/namespaces", json={"name": "bench"}).raise_for_status()
        client.put("/container/namespaces/bench/instructions", json=INSTRUCTIONS).raise_for_status()
        created = client.post("/container/namespaces", json={"name": "shape"})
        created.raise_for_status()
        client.delete("/container/namespaces/shape").raise_for_status()
        return {
            "health": client.get("/health").json(),
            "namespaces": client.get("/container/namespaces").json(),
            "queue_counts": client.get("/container/queue/counts").json(),
            "run_history": client.get("/container/run-history").json(),
            "metrics": client.get("/container/metrics").json(),
            "schedules": client.get("/container/schedules").json(),
            "created": created.json(),
        }


def measure(args, tmp: Path) -> tuple[dict, str]:
    env = os.environ | {"NANOCLAW_CONTAINER_RUNTIME": "none", "NANOCLAW_PROXY_PORT": "0",
                        "PYTHONUNBUFFERED": "1"}
    nanoclaw, nano_url = start_process(
        [sys.executable, "-m", "nanoclaw", "serve", "--port", "0", "--data-dir", str(tmp / "data"),
         "--config-dir", str(tmp / "config")], env, tmp / "nanoclaw.log")
    bare = None
    try:
        canned = seed(nano_url, tmp / "data" / "nanoclaw.db")
        (tmp / "canned.json").write_text(json.dumps(canned))
        bare, bare_url = start_process([sys.executable, "-m", "bench._bare", str(tmp / "canned.json")], env,
                                       tmp / "bare.log")
        targets = {"nanoclaw": nano_url, "bare": bare_url}
        wrk = None if args.no_wrk else ensure_wrk()
        tool = f"wrk ({wrk}, 1 thread)" if wrk else "httpx (bench/_load.py)"
        results: dict = {}
        for label, _kind, mode, path in ENDPOINTS:
            use_wrk = wrk is not None and mode != "pair"

            def once(target: str, connections: int, duration: float, tag: str) -> dict:
                if use_wrk:
                    return run_wrk(wrk, targets[target], mode, path, connections, duration, tmp)
                return run_httpx(targets[target], mode, path, connections, duration, tag)

            for target in targets:  # warm-up, not recorded
                once(target, 8, 1, f"warm-{target}")
            for connections in args.connections:
                # NanoClaw, bare, bare, NanoClaw: the better of each pair is kept, so a burst of
                # other work on the machine during one run does not decide the ratio.
                for k, target in enumerate(["nanoclaw", "bare", "bare", "nanoclaw"] * args.rounds):
                    result = once(target, connections, args.duration, f"{target}-c{connections}-{k}")
                    result["tool"] = "wrk" if use_wrk else "httpx"
                    slot = results.setdefault(label, {}).setdefault(connections, {})
                    if target not in slot or result["rps"] > slot[target]["rps"]:
                        slot[target] = result
                    print(f"{label:48s} c={connections:<3d} {target:8s} {result['rps']:8.0f} req/s "
                          f"p50 {result['p50']:7.2f} ms p99 {result['p99']:7.2f} ms errors {result['errors']}",
                          flush=True)
        return results, tool
    finally:
        for process in (bare, nanoclaw):
            if process is not None:
                stop(process)


def plots(results: dict, connections: list[int]) -> list[str]:
    def throughput(fig):
        labels = list(results)
        for i, label in enumerate(labels, 1):
            ax = fig.add_subplot(3, 3, i)
            for target, style in (("nanoclaw", "o-"), ("bare", "s--")):
                ax.plot(connections, [results[label][c][target]["rps"] for c in connections], style,
                        label="NanoClaw" if target == "nanoclaw" else "bare Quart-Trio")
            ax.set_xscale("log", base=2)
            ax.set_xticks(connections, [str(c) for c in connections])
            ax.set_ylim(bottom=0)
            ax.set_title(label, fontsize=8)
            ax.set_xlabel("connections", fontsize=8)
            ax.set_ylabel("requests/s", fontsize=8)
            ax.tick_params(labelsize=7)
            if i == 1:
                ax.legend(fontsize=7)

    pick = 32 if 32 in connections else connections[-1]

    def latency(fig):
        labels = list(results)
        for i, label in enumerate(labels, 1):
            ax = fig.add_subplot(3, 3, i)
            for target, style in (("nanoclaw", "-"), ("bare", "--")):
                cdf = results[label][pick][target]["cdf"]
                ax.plot([ms for ms, _ in cdf], [q for _, q in cdf], style,
                        label="NanoClaw" if target == "nanoclaw" else "bare Quart-Trio")
            ax.set_xscale("log")
            ax.set_title(f"{label} ({pick} conn.)", fontsize=8)
            ax.set_xlabel("latency (ms)", fontsize=8)
            ax.set_ylabel("percentile", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            if i == 1:
                ax.legend(fontsize=7)

    return [draw("api_throughput", throughput, size=(11, 9.5)), draw("api_latency", latency, size=(11, 9.5))]


def report(results: dict, tool: str, args, load: tuple) -> str:
    rows = ["| endpoint | conn. | NanoClaw req/s | p50 | p99 | bare req/s | p50 | p99 | ratio | errors |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    read_ratios, write_ratios = [], []
    for label, kind, _, _ in ENDPOINTS:
        for c in args.connections:
            n, b = results[label][c]["nanoclaw"], results[label][c]["bare"]
            ratio = n["rps"] / b["rps"] if b["rps"] else float("nan")
            if kind == "read":
                read_ratios.append((label, c, ratio))
            if kind == "write":
                write_ratios.append((label, c, ratio))
            target = TARGET_RATIO if kind == "read" else WRITE_TARGET_RATIO
            mark = " ✓" if ratio >= target else " ✗"
            rows.append(f"| {label} | {c} | {n['rps']:,.0f} | {n['p50']:.2f} ms | {n['p99']:.2f} ms "
                        f"| {b['rps']:,.0f} | {b['p50']:.2f} ms | {b['p99']:.2f} ms | {ratio:.0%}{mark} "
                        f"| {n['errors']}/{b['errors']} |")
    missed = [f"{label} at {c} conn. ({ratio:.0%})" for label, c, ratio in read_ratios if ratio < TARGET_RATIO]
    worst = min(read_ratios, key=lambda r: r[2])
    verdict = ("**met** at every connection count" if not missed else
               f"**missed** for {len(missed)} of {len(read_ratios)} read measurements: " + "; ".join(missed))
    missed_writes = [f"{label} at {c} conn. ({ratio:.0%})" for label, c, ratio in write_ratios
                     if ratio < WRITE_TARGET_RATIO]
    write_verdict = ("**met** at every connection count" if not missed_writes else
                     f"**missed** for {len(missed_writes)} of {len(write_ratios)} write measurements: "
                     + "; ".join(missed_writes))
    figures = plots(results, args.connections)
    tools = sorted({r[c][t]["tool"] for r in results.values() for c in r for t in r[c]})
    return "\n".join([
        "Requests per second and latency of NanoClaw (`nanoclaw serve`, no container engine, 20 namespaces of",
        f"2 chats, 20 schedules, {RUNS} runs in the history) against a bare Quart-Trio app on the same Hypercorn settings that answers the same routes",
        "with the same bodies and does no work (`bench/_bare.py`): the framework ceiling. Both servers and the",
        f"load generator run in separate processes on loopback; load generator: {tool}",
        f"({', '.join(tools)} used; POST + DELETE pairs always use httpx). Each endpoint and connection count",
        f"is measured {4 * args.rounds} times, {args.duration:g} s each, in the order NanoClaw, bare, bare, NanoClaw"
        f"{f' (repeated {args.rounds} times)' if args.rounds > 1 else ''}; the table shows the best run of each",
        "server (a burst of other work during one run does not decide).",
        "Writes do their real work: the PUT writes CLAUDE.md atomically and an audit row; POST creates the",
        "namespace row, its folder and an audit row, DELETE removes the row and writes an audit row.",
        "The ratio is NanoClaw's throughput over the bare app's. Errors: non-2xx or transport errors",
        "(NanoClaw/bare).",
        "",
        f"Target: reads >= {TARGET_RATIO:.0%} of the ceiling. Result: {verdict}; lowest read ratio "
        f"{worst[2]:.0%} ({worst[0]}, {worst[1]} conn.).",
        f"Target: writes >= {WRITE_TARGET_RATIO:.0%} of the ceiling. Result: {write_verdict}.",
        "",
        *rows,
        "",
        load_sentence(load, "2 cores shared with the load generator and with other work on the machine"),
        "",
        *figures,
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--connections", default="1,8,32,64")
    parser.add_argument("--no-wrk", action="store_true", help="use the httpx load generator for everything")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat the NanoClaw, bare, bare, NanoClaw order this often (a loaded machine)")
    args = parser.parse_args()
    args.connections = [int(c) for c in args.connections.split(",")]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        results, tool = measure(args, Path(tmp))
    body = report(results, tool, args, (load_before, os.getloadavg()))
    options = (" --no-wrk" if args.no_wrk else "") + \
        (f" --duration {args.duration:g}" if args.duration != 2.0 else "") + \
        (f" --rounds {args.rounds}" if args.rounds != 1 else "")
    command = "python -m bench.api" + options if options else "python -m bench api"
    write_section(TITLE, body, command)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

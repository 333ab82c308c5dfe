"""Where a request's time goes: `nanoclaw serve` under pyinstrument, loaded by wrk, one endpoint at a time.

    python -m bench._profile_api OUT_DIR [LABEL_PART ...]

For each endpoint of bench/api.py (or those whose label contains a LABEL_PART) a fresh
server runs under pyinstrument (0.5 ms samples), seeded as bench/api.py seeds it, and
gets 4 s of load at 8 connections; then it stops and its profile is split by the
innermost module of each sample taken while handling a request: our code (by function),
quart-schema and pydantic, json, Quart/Flask, Hypercorn, h11, Trio. Prints one summary
per endpoint; OUT_DIR keeps each pyinstrument JSON profile. Needs pyinstrument (bench extra).
"""
from __future__ import annotations

import collections
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

from bench.api import ENDPOINTS, ensure_wrk, run_httpx, run_wrk, seed, start_process

CONNECTIONS = 8
SECONDS = 4
# Our frames that only pass the request on (the ASGI wrappers, the process entry).
PASS_ON = {("nanoclaw/app.py", "app"), ("nanoclaw/app.py", "shielded_send")}
ENTRY = ("nanoclaw/main.py", "nanoclaw/cli.py", "nanoclaw/__main__.py")
LIBRARIES = ("to_thread", "quart_schema", "pydantic", "json/", "werkzeug", "quart/", "flask/", "h11", "hypercorn",
             "trio/", "sqlite")


def category(stack: list[tuple[str, str]]) -> str:
    """Innermost of our frames when there is one, else the innermost known library."""
    for function, file in reversed(stack):
        ours = "/nanoclaw/" in file and "site-packages" not in file
        short = "nanoclaw/" + file.rsplit("/nanoclaw/", 1)[1] if ours else None
        if short and not short.endswith(ENTRY) and (short, function) not in PASS_ON:
            return f"ours {short[len('nanoclaw/'):]}:{function}"
    for function, file in reversed(stack):
        for key in LIBRARIES:
            if key in file or key in function:
                return key.strip("/")
    return "other"


def split(profile: dict) -> collections.Counter:
    totals: collections.Counter = collections.Counter()

    def walk(node: dict, stack: list, handling: bool) -> None:
        function = node["function"]
        stack = stack + [(function, node.get("file_path") or "")]
        handling = handling or function.endswith("handle_request")
        children = node.get("children", [])
        own = node["time"] - sum(child["time"] for child in children)
        if handling and own > 0:
            totals[category(stack)] += own
        for child in children:
            walk(child, stack, handling)

    walk(profile["root_frame"], [], False)
    return totals


def main(argv: list[str]) -> int:
    out_dir = Path(argv[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = argv[1:]
    wrk = ensure_wrk()
    env = os.environ | {"NANOCLAW_CONTAINER_RUNTIME": "none", "NANOCLAW_PROXY_PORT": "0", "PYTHONUNBUFFERED": "1"}
    for label, _, mode, path in ENDPOINTS:
        if wanted and not any(part in label for part in wanted):
            continue
        name = "".join(c if c.isalnum() else "_" for c in label).strip("_")
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            server, url = start_process(
                [sys.executable, "-m", "pyinstrument", "-i", "0.0005", "-r", "json", "-o", str(out_dir / f"{name}.json"),
                 "-m", "nanoclaw", "serve", "--port", "0", "--data-dir", str(tmp / "data"),
                 "--config-dir", str(tmp / "config")], env, tmp / "server.log")
            seed(url, tmp / "data" / "nanoclaw.db")
            if mode == "pair" or wrk is None:
                result = run_httpx(url, mode, path, CONNECTIONS, SECONDS, "profile")
            else:
                result = run_wrk(wrk, url, mode, path, CONNECTIONS, SECONDS, tmp)
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)
        totals = split(json.loads((out_dir / f"{name}.json").read_text()))
        handling = sum(totals.values())
        requests = result["requests"] or 1
        ours = {k: v for k, v in totals.items() if k.startswith("ours ")}
        print(f"{label}: {requests} requests, {handling:.2f} s handling them "
              f"({handling / requests * 1000:.2f} ms each, profiled), ours {sum(ours.values()):.3f} s")
        for key, seconds in totals.most_common():
            if not key.startswith("ours ") and seconds >= 0.01:
                print(f"    {key:52s} {seconds:.3f} s")
        for key, seconds in sorted(ours.items(), key=lambda kv: -kv[1])[:8]:
            print(f"    {key:52s} {seconds:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

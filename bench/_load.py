"""Load generator for bench/api.py, run in its own process: httpx with keep-alive.

    python -m bench._load --base URL --mode get|put|pair --path P [--body JSON]
                          --connections N --duration S --max-requests M [--tag T]

N concurrent workers share one httpx client of at most N keep-alive connections;
each sends requests back to back until the duration or the request count is
reached (whichever comes first). `pair` is POST /container/namespaces with a
fresh name, then DELETE of that name (two requests). Prints one JSON object:
requests, errors (non-2xx or transport errors), elapsed seconds, latencies in ms.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import httpx
import trio


async def run(args) -> dict:
    latencies: list[float] = []
    errors = 0
    sent = 0
    deadline = time.perf_counter() + args.duration
    limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=args.connections)
    body = json.loads(args.body) if args.body else None

    async with httpx.AsyncClient(base_url=args.base, limits=limits, timeout=10, trust_env=False) as client:
        async def one(method: str, path: str, payload=None) -> None:
            nonlocal errors
            start = time.perf_counter()
            try:
                response = await client.request(method, path, json=payload)
                ok = response.status_code < 300
            except httpx.HTTPError:
                ok = False
            latencies.append((time.perf_counter() - start) * 1000)
            if not ok:
                errors += 1

        async def worker(index: int) -> None:
            nonlocal sent
            i = 0
            while time.perf_counter() < deadline and sent < args.max_requests:
                if args.mode == "pair":
                    name = f"{args.tag}-{index}-{i}"
                    sent += 2
                    await one("POST", args.path, {"name": name})
                    await one("DELETE", f"{args.path}/{name}")
                else:
                    sent += 1
                    await one("GET" if args.mode == "get" else "PUT", args.path, body)
                i += 1

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for index in range(args.connections):
                nursery.start_soon(worker, index)
        elapsed = time.perf_counter() - started
    return {"requests": len(latencies), "errors": errors, "elapsed": elapsed, "latencies_ms": latencies}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--mode", choices=["get", "put", "pair"], required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--body", default=None)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument("--tag", default="bench")
    args = parser.parse_args()
    print(json.dumps(trio.run(run, args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

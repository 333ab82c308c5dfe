"""Latency the credential proxy adds in front of a loopback upstream.

    python -m bench.proxy [--requests 2000] [--streams 200]

The upstream is a small ASGI app under Hypercorn in a child process. The proxy
runs as in production (real SQLite file, one audit entry per request written in
a worker thread) in this process, with the client. Requests are sequential on
keep-alive connections, alternating direct and proxied so drift hits both alike.
small: GET of a ~100-byte JSON answer, full response read.
first byte: POST of a streamed (SSE) answer, time until the first body chunk arrives.
The figures replace the "Credential proxy" section of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from bench._report import percentile, write_section
from nanoclaw.audit import Audit
from nanoclaw.clock import Clock
from nanoclaw.config import Settings
from nanoclaw.lifespan import answer_lifespan
from nanoclaw.proxy import CredentialProxy
from nanoclaw.secrets import SecretBox
from nanoclaw.store import Database

SMALL = b'{"id":"msg_bench","type":"message","content":[{"type":"text","text":"ok"}],"stop_reason":"end_turn"}'
TARGET_ADDED_P50_MS = 2.0
TARGET_FIRST_BYTE_MS = 5.0


async def upstream_app(scope, receive, send):
    if scope["type"] == "lifespan":
        await answer_lifespan(receive, send)
        return
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"event: message_start\ndata: {}\n\n",
                    "more_body": True})
        await trio.sleep(0.005)  # the rest of the stream comes later, as from an LLM
        await send({"type": "http.response.body", "body": b"event: message_stop\ndata: {}\n\n"})
    else:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(SMALL)).encode())]})
        await send({"type": "http.response.body", "body": SMALL})


async def serve_upstream() -> None:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(hypercorn_serve, upstream_app, config)
        print(binds[0], flush=True)


async def timed_small(client: httpx.AsyncClient, url: str, headers: dict) -> float:
    start = trio.current_time()
    response = await client.get(url, headers=headers)
    elapsed = trio.current_time() - start
    assert response.status_code == 200 and response.content == SMALL, response.text
    return elapsed * 1000


async def timed_first_byte(client: httpx.AsyncClient, url: str, headers: dict) -> float:
    start = trio.current_time()
    async with client.stream("POST", url, headers=headers, content=b'{"stream": true}') as response:
        chunks = response.aiter_raw()
        await chunks.__anext__()
        elapsed = trio.current_time() - start
        async for _ in chunks:
            pass
    assert response.status_code == 200
    return elapsed * 1000


async def measure(upstream: str, requests: int, streams: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", config_dir=Path(tmp) / "config", proxy_port=0)
        db = Database(settings.database_path)
        clock = Clock()
        secrets = SecretBox(settings.config_dir)
        proxy = CredentialProxy(settings, db, secrets, clock, Audit(db, clock, secrets))
        await db.open()
        async with trio.open_nursery() as nursery:
            await nursery.start(proxy.run)
            await proxy.add_mapping("bench", upstream, "api_key", "sk-bench-secret-0123456789")
            await proxy.start()
            token = proxy.register_run("bench")
            env = proxy.container_env(token, "127.0.0.1")
            routes = {
                "direct": (upstream, {"x-api-key": "sk-bench-secret-0123456789"}),
                "proxied": (env["BENCH_BASE_URL"], {"x-api-key": env["BENCH_API_KEY"]}),
            }
            results: dict[str, list[float]] = {}
            async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
                for _ in range(100):  # warm up connections and code paths
                    for base, headers in routes.values():
                        await timed_small(client, base + "/small", headers)
                for kind, count, probe in (("small", requests, timed_small), ("first_byte", streams, timed_first_byte)):
                    path = "/small" if kind == "small" else "/stream"
                    for _ in range(count):
                        for route, (base, headers) in routes.items():
                            results.setdefault(f"{kind}_{route}", []).append(await probe(client, base + path, headers))
            await proxy.wait_idle()
            nursery.cancel_scope.cancel()
        await db.close()
    return results


def report(results: dict[str, list[float]], requests: int, streams: int) -> str:
    def p(key, q):
        return percentile(results[key], q)

    added_p50 = p("small_proxied", 50) - p("small_direct", 50)
    added_p99 = p("small_proxied", 99) - p("small_direct", 99)
    first_byte_delta = p("first_byte_proxied", 50) - p("first_byte_direct", 50)
    verdict = lambda ok: "met" if ok else "**missed**"  # noqa: E731
    return f"""
Added latency of the proxy against calling the loopback upstream directly (`python -m bench.proxy`).
{requests:,} small GET requests (~100-byte JSON answer) and {streams} streamed (SSE) answers,
sequential on keep-alive connections, alternating direct and proxied. The proxy runs as in
production: run-token check, credential swap, one audit entry per request on a real SQLite file.
Upstream: Hypercorn in a child process. Targets: p50 added < {TARGET_ADDED_P50_MS:.0f} ms;
first streamed byte within {TARGET_FIRST_BYTE_MS:.0f} ms of direct.

| | direct | proxied | added |
|---|---|---|---|
| small request p50 | {p("small_direct", 50):.2f} ms | {p("small_proxied", 50):.2f} ms | {added_p50:.2f} ms |
| small request p99 | {p("small_direct", 99):.2f} ms | {p("small_proxied", 99):.2f} ms | {added_p99:.2f} ms |
| first streamed byte p50 | {p("first_byte_direct", 50):.2f} ms | {p("first_byte_proxied", 50):.2f} ms | {first_byte_delta:.2f} ms |
| first streamed byte p99 | {p("first_byte_direct", 99):.2f} ms | {p("first_byte_proxied", 99):.2f} ms | {p("first_byte_proxied", 99) - p("first_byte_direct", 99):.2f} ms |

p50 added < {TARGET_ADDED_P50_MS:.0f} ms: {verdict(added_p50 < TARGET_ADDED_P50_MS)}.
First streamed byte within {TARGET_FIRST_BYTE_MS:.0f} ms of direct (p50): {verdict(first_byte_delta < TARGET_FIRST_BYTE_MS)}.
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--serve-upstream", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        trio.run(serve_upstream)
        return 0
    child = subprocess.Popen([sys.executable, "-m", "bench.proxy", "--serve-upstream"],
                             stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
    try:
        upstream = child.stdout.readline().strip()
        if not upstream.startswith("http://"):
            print("the upstream did not start", file=sys.stderr)
            return 1
        results = trio.run(measure, upstream, args.requests, args.streams)
    finally:
        child.terminate()
        child.wait(timeout=10)
    body = report(results, args.requests, args.streams)
    print(body)
    write_section("Credential proxy", body, "python -m bench.proxy")
    return 0


if __name__ == "__main__":
    sys.exit(main())

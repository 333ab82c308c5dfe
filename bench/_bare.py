"""The framework ceiling for bench/api.py: a bare Quart-Trio app, same Hypercorn settings.

    python -m bench._bare CANNED.json

Answers the routes bench/api.py loads with the very bodies NanoClaw gave for them
(CANNED.json, captured at the start of the run), doing no work of its own: no
store, no validation models, no audit. Quart still routes, parses JSON request
bodies and serialises the answers, and Hypercorn is configured by
nanoclaw.main.hypercorn_config, as `nanoclaw serve` does. Prints its URL.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import trio
from hypercorn.trio import serve
from quart import request
from quart_trio import QuartTrio

from nanoclaw.config import Settings
from nanoclaw.main import hypercorn_config

PREFIX = "/api/v1"


# The reads the bench measures: path -> key of its canned answer.
CANNED_READS = {"/health": "health", "/container/namespaces": "namespaces", "/container/queue/counts": "queue_counts",
                "/container/run-history": "run_history", "/container/metrics": "metrics",
                "/container/schedules": "schedules"}


def _canned(body):
    async def read():
        return body
    return read


def create_bare_app(canned: dict) -> QuartTrio:
    app = QuartTrio("bare")
    app.json.sort_keys = False

    for path, key in CANNED_READS.items():
        app.add_url_rule(PREFIX + path, key, _canned(canned[key]), methods=["GET"])

    @app.post(PREFIX + "/container/namespaces")
    async def create_namespace():
        data = await request.get_json()
        return canned["created"] | {"name": data["name"]}, 201

    @app.delete(PREFIX + "/container/namespaces/<name>")
    async def delete_namespace(name: str):
        return "", 204

    @app.put(PREFIX + "/container/namespaces/<name>/instructions")
    async def put_instructions(name: str):
        data = await request.get_json()
        return {"group": name, "instructions": data["instructions"]}

    return app


async def main(canned_path: str) -> None:
    app = create_bare_app(json.loads(Path(canned_path).read_text()))
    config = hypercorn_config(Settings(host="127.0.0.1", port=0, data_dir="/nonexistent", config_dir="/nonexistent"))
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(lambda task_status: serve(app, config, task_status=task_status))
        print(f"bare Quart-Trio serving on {binds[0]}", flush=True)


if __name__ == "__main__":
    try:
        trio.run(main, sys.argv[1])
    except KeyboardInterrupt:
        pass

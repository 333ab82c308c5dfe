"""Schemathesis against our own OpenAPI document: every operation, a bounded number of examples.

A real `nanoclaw serve` process with an API key and the Docker runtime; the chat platforms'
base URLs point at a loopback responder that refuses every credential, so connect/validate
calls get a platform answer instead of leaving the machine. Checks: no 5xx, and every
answer matches its documented status codes, content type and schema.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import trio

from docker_support import docker_engine  # noqa: F401  (fixture)
from serverproc import cli_env, create_api_key, serve_process
from fakes import serve_on_loopback
from nanoclaw.lifespan import answer_lifespan

pytestmark = pytest.mark.usefixtures("docker_engine")

EXAMPLES = 10
CHECKS = ",".join([
    "not_a_server_error", "status_code_conformance", "content_type_conformance",
    "response_schema_conformance", "response_headers_conformance",
])


async def refuse_everything(scope, receive, send):
    """Answers like a platform that does not know the credential (the shapes of all four)."""
    if scope["type"] == "lifespan":
        await answer_lifespan(receive, send)
        return
    body = json.dumps({"ok": False, "error": "invalid_auth", "error_code": 401,
                       "description": "Unauthorized", "message": "401: Unauthorized", "code": 0}).encode()
    await send({"type": "http.response.start", "status": 401,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


async def test_every_operation_holds_up_under_generated_requests(nursery, tmp_path):
    platform = await serve_on_loopback(nursery, refuse_everything)
    bases = {f"NANOCLAW_{name}_API_BASE": platform for name in ("TELEGRAM", "WHATSAPP", "SLACK", "DISCORD")}
    _, key = await create_api_key(tmp_path, "fuzz")
    env = cli_env(tmp_path, NANOCLAW_CONTAINER_RUNTIME="docker", **bases)
    async with serve_process(tmp_path, env=env) as server:
        with trio.fail_after(540):
            done = await trio.run_process(
                [str(Path(sys.executable).parent / "st"), "run", f"{server.url}/api/v1/openapi.json",
                 "-H", f"X-API-Key: {key}", "--max-examples", str(EXAMPLES), "--checks", CHECKS,
                 "--seed", "20261122", "--no-color",
                 # An endless event stream: covered by test_events.py.
                 "--exclude-path", "/api/v1/events"],
                capture_stdout=True, capture_stderr=True, check=False, cwd=tmp_path,
            )
        report = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
        assert done.returncode == 0, report[-20000:]
        assert " passed" in report and "failures" not in report.splitlines()[-1]
        assert "Traceback" not in server.log(), server.log()[-5000:]

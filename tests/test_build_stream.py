"""Image build progress: POST /container/image/build with Accept: text/event-stream, and the CLI showing it.

Real Docker, the local base image, a tag of this test's own (removed afterwards)."""
from __future__ import annotations

import subprocess

import trio

from conftest import make_settings, start_server
from docker_support import BASE_IMAGE
from serverproc import cli_env, run_cli
from sse_support import SseReader

TAG = "nanoclaw-agent:console-stream-test"


async def test_build_output_streams_line_by_line_then_one_result_and_the_cli_prints_it(
        nursery, tmp_path, docker_engine):
    settings = make_settings(tmp_path, container_runtime="docker", agent_base_image=BASE_IMAGE)
    server = await start_server(nursery, settings)
    subprocess.run([docker_engine, "rmi", "-f", TAG], capture_output=True)
    try:
        with trio.fail_after(600):
            async with server.client.stream("POST", "/container/image/build", json={"imageTag": TAG},
                                            headers={"Accept": "text/event-stream"}, timeout=600) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                events = await SseReader(response).until(lambda m: m["event"] == "result", timeout=600)
        output = [m["data"]["line"] for m in events if m["event"] == "output"]
        assert len(output) > 1 and events[-1]["event"] == "result"
        assert [m["event"] for m in events[:-1]] == ["output"] * (len(events) - 1)
        result = events[-1]["data"]
        assert set(result) == {"success", "imageTag", "flavor", "message", "output"}
        assert result["success"] is True and result["imageTag"] == TAG
        assert result["message"] == "Build completed successfully"
        assert "\n".join(output).strip() in result["output"].replace("\r", "")

        # The plain JSON answer stays the default.
        plain = await server.client.post("/container/image/build", json={"imageTag": TAG}, timeout=600)
        assert plain.headers["content-type"].startswith("application/json") and plain.json()["success"] is True

        done = await run_cli("image", "build", "--tag", TAG, "--base-image", BASE_IMAGE, "--url", server.url,
                             env=cli_env(tmp_path))
        out = done.stdout.decode()
        assert done.returncode == 0, done.stderr.decode()
        lines = out.splitlines()
        assert len(lines) > 2 and lines[-1] == f"{TAG}: Build completed successfully"
    finally:
        subprocess.run([docker_engine, "rmi", "-f", TAG], capture_output=True)


async def test_the_cli_says_why_a_build_cannot_start(tmp_path, nursery):
    server = await start_server(nursery, make_settings(tmp_path))  # no container engine
    done = await run_cli("image", "build", "--url", server.url, env=cli_env(tmp_path))
    assert done.returncode == 1 and "error: 503" in done.stderr.decode()
    done = await run_cli("image", "build", "--url", "http://127.0.0.1:9", env=cli_env(tmp_path))
    assert done.returncode == 1 and "cannot reach the server" in done.stderr.decode()

"""The agent in a real container: a shell step per provider through the credential proxy, read-only mounts.

Host networking: the container reaches the proxy (and the proxy the fake LLM) on 127.0.0.1.
"""
from __future__ import annotations

import json

import pytest
import trio

from conftest import docker_settings, start_server
from docker_support import agent_image, docker_engine  # noqa: F401  (fixtures)
from fakes import anthropic, openai
from test_agent_image import fake, image_workspace, run_image  # noqa: F401  (fixtures)
from test_agent_runner import close, request

pytestmark = pytest.mark.usefixtures("docker_engine")

REAL_KEY = "sk-real-key-only-the-host-knows-5678"
FINISHED = {"success", "error", "timeout", "cancelled"}
COMMAND = "echo from-$((6*7)) > made.txt; echo printed-ok; env"
PROVIDERS = {
    # provider: (fake server, mapping body, group env, scripted replies)
    "anthropic": (anthropic.serve_fake_anthropic, {"credentialType": "api_key"}, None,
                  lambda: [anthropic.tool_reply("bash", {"command": COMMAND}),
                           anthropic.text_reply("All done.", usage={"input_tokens": 120, "output_tokens": 9})]),
    "openai": (openai.serve_fake_openai, {"credentialType": "bearer", "path": "/v1"},
               {"provider": "openai", "model": "fake-model"},
               lambda: [openai.tool_reply("bash", {"command": COMMAND}),
                        openai.text_reply("All done.", usage={"prompt_tokens": 120, "completion_tokens": 9})]),
}


def tool_output(provider: str, body: dict) -> str:
    last = body["messages"][-1]
    if provider == "openai":
        assert last["role"] == "tool"
        return last["content"]
    [block] = last["content"]
    assert block["type"] == "tool_result"
    return block["content"]


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
async def test_a_bash_step_in_a_real_container_through_the_proxy(provider, nursery, tmp_path, agent_image):
    serve, mapping, agent, replies = PROVIDERS[provider]
    with trio.fail_after(120):
        llm = await nursery.start(lambda task_status: serve(api_key=REAL_KEY, task_status=task_status))
        llm.queue(*replies())
        settings = docker_settings(tmp_path, agent_image)
        server = await start_server(nursery, settings)
        client = server.client
        r = await client.post("/container/credential-proxy/mappings", json={
            "name": provider, "upstreamUrl": llm.url + mapping.get("path", ""),
            "credentialType": mapping["credentialType"], "credential": REAL_KEY})
        assert r.status_code == 201, r.text
        assert (await client.post("/container/credential-proxy/start")).json()["running"] is True
        r = await client.post("/container/namespaces", json={
            "name": "shell", "containerConfig": {"idleTimeoutSecs": 5, "agent": agent}})
        assert r.status_code == 201, r.text

        r = await client.post("/container/runs", json={"group": "shell", "prompt": "make a file"})
        assert r.status_code == 202, r.text
        run_id = r.json()["runId"]
        while (run := (await client.get(f"/container/runs/{run_id}")).json())["status"] not in FINISHED:
            await trio.sleep(0.05)  # bounded polling: a real container runs in real time

    assert run["status"] == "success", run
    assert run["results"] == ["All done."]
    assert (settings.groups_dir / "shell" / "made.txt").read_text() == "from-42\n"
    first, second = llm.requests
    output = tool_output(provider, second.body)
    assert output.startswith("exit code: 0\n[stdout]\nprinted-ok\n")
    # The container's environment holds the proxy's placeholder, never the real key; the proxy adds it.
    assert "CREDENTIAL_PROXY_PLACEHOLDER" in output and REAL_KEY not in output
    auth = first.headers.get("x-api-key") or first.headers.get("authorization")
    assert auth in (REAL_KEY, f"Bearer {REAL_KEY}")
    if provider == "openai":
        assert first.body["model"] == "fake-model" and first.path == "/v1/chat/completions"
    # The usage the fake reported reaches the run record (summed over the turn's two calls).
    assert run["usage"]["inputTokens"] >= 120 and run["usage"]["outputTokens"] >= 9
    assert run["model"] == ("fake-model" if provider == "openai" else first.body["model"])
    await client.aclose()


async def test_a_write_to_a_read_only_mount_is_refused_in_the_container(tmp_path, fake, run_image):
    ws = image_workspace(tmp_path)
    fake.queue(anthropic.tool_reply("write_file", {"path": "/workspace/global/CLAUDE.md", "content": "x"}),
               anthropic.tool_reply("bash", {"command": "touch /workspace/global/y"}),
               anthropic.tool_reply("write_file", {"path": "ok.txt", "content": "fine"}),
               anthropic.text_reply("tried"))
    runner = await run_image(ws, request("try writing"))

    result = await runner.result(timeout=60)

    assert result["status"] == "success"
    refused = fake.requests[1].body["messages"][-1]["content"][0]
    assert refused["is_error"] is True and "read-only mount" in refused["content"]
    shell = fake.requests[2].body["messages"][-1]["content"][0]["content"]
    assert "Read-only file system" in shell and not shell.startswith("exit code: 0")
    assert (ws / "global" / "CLAUDE.md").read_text() == "Global rule: be kind."
    assert (ws / "group" / "ok.txt").read_text() == "fine"
    assert json.loads(json.dumps(result["usage"]))["inputTokens"] > 0
    close(ws)
    assert await runner.exit_code(timeout=30) == 0


async def test_the_image_has_a_shells_tools(docker_engine, agent_image):
    probe = "command -v bash git curl python3 ls sed && test -s /etc/ssl/certs/ca-certificates.crt && echo ok"
    done = await trio.run_process([docker_engine, "run", "--rm", "--entrypoint", "sh", agent_image, "-c", probe],
                                  capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().split()[-1] == "ok"
    files = await trio.run_process([docker_engine, "run", "--rm", "--entrypoint", "ls", agent_image, "/app"],
                                   capture_stdout=True)
    assert {"runner.py", "tools.py", "files.py", "shell.py", "providers.py", "compaction.py"} <= set(
        files.stdout.decode().split())

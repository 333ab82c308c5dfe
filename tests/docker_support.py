"""Fixtures for tests that need a real container engine and the agent image.

`docker_engine` skips (with the reason) when no engine answers, but fails when
NANOCLAW_REQUIRE_DOCKER=1 (CI). `agent_image` builds nanoclaw-agent:test from the
packaged nanoclaw/agent/ context on a local base image, never pulling.
`run_container` starts containers by hand (`docker run`) and removes them after the test.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import trio

import nanoclaw.agent

# Parallel checkouts on one engine each set their own tag.
AGENT_TAG = os.environ.get("NANOCLAW_TEST_AGENT_TAG", "nanoclaw-agent:test")
BASE_IMAGE = os.environ.get("NANOCLAW_TEST_BASE_IMAGE", "nanoclaw-test-base:bookworm-tools")
AGENT_CONTEXT = Path(nanoclaw.agent.__file__).parent


def engine_problem(command: str = "docker") -> str | None:
    """Why the engine cannot be used, or None when `docker info` answers."""
    if shutil.which(command) is None:
        return f"the {command} CLI is not installed"
    try:
        probe = subprocess.run([command, "info", "--format", "{{.ServerVersion}}"],
                               capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return f"`{command} info` did not answer within 20 s"
    if probe.returncode != 0:
        return f"`{command} info` failed: {(probe.stderr or probe.stdout).strip()[-500:]}"
    return None


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """The container runtime command ("docker")."""
    problem = engine_problem()
    if problem is None:
        return "docker"
    if os.environ.get("NANOCLAW_REQUIRE_DOCKER") == "1":
        pytest.fail(f"NANOCLAW_REQUIRE_DOCKER=1 but no container engine is reachable: {problem}")
    pytest.skip(f"no container engine reachable: {problem}")


@pytest.fixture(scope="session")
def agent_image(docker_engine: str) -> str:
    """Build the agent image once per session; returns its tag."""
    if subprocess.run([docker_engine, "image", "inspect", BASE_IMAGE], capture_output=True).returncode != 0:
        pytest.fail(f"base image {BASE_IMAGE} is not present locally and may not be pulled; "
                    "make it with `bash .ci/setup-docker.sh`")
    build = subprocess.run(
        [docker_engine, "build", "--pull=false", "-t", AGENT_TAG, "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
         str(AGENT_CONTEXT)],
        capture_output=True, text=True, timeout=600,
    )
    if build.returncode != 0:
        pytest.fail(f"building {AGENT_TAG} failed (exit {build.returncode}):\n{(build.stdout + build.stderr)[-4000:]}")
    return AGENT_TAG


@pytest.fixture
async def run_container(docker_engine: str, tmp_path: Path):
    """`await run_container(options, image, command, stdin)` starts
    `docker run -i --rm --network host *options image *command` with its stderr in a file and
    `stdin` (when given) written as one JSON line; returns (process, stderr path). Every container
    it started is removed at the end, whatever the test did."""
    names: list[str] = []
    processes: list[trio.Process] = []

    async def run(options: list[str], image: str, command: tuple[str, ...] | list[str] = (),
                  stdin: dict | None = None) -> tuple[trio.Process, Path]:
        name = f"nanoclaw-test-{os.getpid()}-{len(names)}-{int(time.time() * 1000)}"
        names.append(name)
        stderr_path = tmp_path / f"{name}.stderr"
        with stderr_path.open("wb") as stderr:
            process = await trio.lowlevel.open_process(
                [docker_engine, "run", "-i", "--rm", "--name", name, "--network", "host", *options, image, *command],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr)
        processes.append(process)
        if stdin is not None:
            await process.stdin.send_all(json.dumps(stdin).encode() + b"\n")
        return process, stderr_path

    yield run
    with trio.CancelScope(shield=True):
        for name in names:  # a failed test must not leave a container behind
            await trio.run_process([docker_engine, "rm", "-f", name], capture_stdout=True, capture_stderr=True,
                                   check=False)
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()


def build_script_image(engine: str, context: Path, tag: str, script: str) -> str:
    """Build the base image plus `script` as its Python entrypoint (a stand-in agent); returns tag."""
    (context / "agent.py").write_text(script)
    (context / "Dockerfile").write_text(
        f'FROM {BASE_IMAGE}\nCOPY agent.py /agent.py\nENTRYPOINT ["python3", "-u", "/agent.py"]\n')
    build = subprocess.run([engine, "build", "--pull=false", "-q", "-t", tag, str(context)],
                           capture_output=True, text=True, timeout=600)
    if build.returncode != 0:
        pytest.fail(f"building {tag} failed:\n{(build.stdout + build.stderr)[-4000:]}")
    return tag

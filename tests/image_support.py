"""Session fixtures for the image flavours: built by the suite through the server's own builder.

Wheels are cached in NANOCLAW_TEST_WHEELHOUSE (default ~/.cache/nanoclaw-tests/image-build),
so only the first session downloads them (claude-agent-sdk is ~180 MB); Docker's layer
cache makes a rebuild with unchanged files quick.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import trio

from conftest import make_settings
from docker_support import AGENT_TAG, BASE_IMAGE
from nanoclaw.runtime import ImageBuilder, Runtime
from nanoclaw.runtime._wheelhouse import base_python, download

WHEEL_WORK = Path(os.environ.get("NANOCLAW_TEST_WHEELHOUSE") or Path.home() / ".cache" / "nanoclaw-tests" / "image-build")
CLAUDE_TAG = f"{AGENT_TAG}-claude-code"  # nanoclaw-agent:<branch>-claude-code
MCP_TAG = f"{AGENT_TAG}-mcp"


async def _runtime(tmp: Path) -> Runtime:
    runtime = Runtime(make_settings(tmp, container_runtime="docker"))
    runtime.state = await runtime.detect()
    return runtime


def build_flavor(tmp: Path, tag: str, flavor: str):
    """Build `tag` with the server's ImageBuilder; returns the finished Build."""
    async def main():
        builder = ImageBuilder(await _runtime(tmp), BASE_IMAGE, work_dir=WHEEL_WORK)
        async with trio.open_nursery() as nursery:
            await nursery.start(builder.run)
            build = builder.start(tag, flavor=flavor)
            await build.done.wait()
            nursery.cancel_scope.cancel()
        return build
    return trio.run(main)


def wheelhouse(tmp: Path, *requirements: str) -> Path:
    """The cached wheels of `requirements` for the base image's Python."""
    async def main():
        runtime = await _runtime(tmp)
        python, machine = await base_python(runtime, BASE_IMAGE)
        return await download(requirements, WHEEL_WORK / "wheelhouse", python, machine, lambda chunk: None)
    return trio.run(main)


@pytest.fixture(scope="session")
def claude_image(docker_engine, tmp_path_factory) -> str:
    build = build_flavor(tmp_path_factory.mktemp("claude-build"), CLAUDE_TAG, "claude-code")
    if not build.success:
        pytest.fail(f"building {CLAUDE_TAG} failed: {build.message}\n{build.text[-4000:]}")
    return CLAUDE_TAG


MCP_DOCKERFILE = """\
ARG AGENT_IMAGE
FROM ${AGENT_IMAGE}
USER root
COPY wheels/ /tmp/wheels/
RUN python3 -m venv /opt/mcp && /opt/mcp/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels mcp \\
    && rm -rf /tmp/wheels
COPY mcp_sdk_server.py /opt/mcp/server.py
"""


@pytest.fixture(scope="session")
def mcp_image(docker_engine, agent_image, tmp_path_factory) -> str:
    """The built-in agent image plus the official `mcp` SDK and a server on it (/opt/mcp/server.py)."""
    tmp = tmp_path_factory.mktemp("mcp-image")
    wheels = wheelhouse(tmp, "mcp")
    context = tmp / "context"
    (context / "wheels").mkdir(parents=True)
    for wheel in wheels.glob("*.whl"):
        if not wheel.name.startswith("claude_agent_sdk"):  # mcp does not need the 180 MB one
            os.link(wheel, context / "wheels" / wheel.name)
    shutil.copy(Path(__file__).parent / "fakes" / "mcp_sdk_server.py", context)
    (context / "Dockerfile").write_text(MCP_DOCKERFILE)
    done = subprocess.run([docker_engine, "build", "--pull=false", "--network", "none", "-t", MCP_TAG,
                           "--build-arg", f"AGENT_IMAGE={agent_image}", str(context)],
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        pytest.fail(f"building {MCP_TAG} failed:\n{(done.stdout + done.stderr)[-4000:]}")
    return MCP_TAG

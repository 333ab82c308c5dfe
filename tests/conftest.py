"""Shared fixtures: a real server on 127.0.0.1 (port 0) with its own data and config dirs
(`docker_server`: one whose runs are containers of the agent image)."""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from docker_support import agent_image, docker_engine, run_container  # noqa: F401
from nanoclaw.config import Settings
from nanoclaw.main import serve
from nanoclaw.services import Services, build


@dataclass
class Server:
    url: str
    settings: Settings
    services: Services
    client: httpx.AsyncClient
    output: io.StringIO

    @property
    def api(self) -> str:
        return self.url + "/api/v1"


def make_settings(tmp_path: Path, **overrides) -> Settings:
    # No container engine unless a test asks for one: detection costs time.
    values = dict(host="127.0.0.1", port=0, data_dir=tmp_path / "data", config_dir=tmp_path / "config",
                  container_runtime="none", proxy_port=0)
    values.update(overrides)
    return Settings(**values)


async def start_server(nursery, settings: Settings, **build_kwargs) -> Server:
    services = build(settings, **build_kwargs)
    out = io.StringIO()
    binds = await nursery.start(lambda task_status: serve(settings, services, out=out, task_status=task_status))
    # No keep-alive: under autojump_clock an idle pooled connection can hit the server's
    # keep-alive timeout between two requests (the clock jumps while the client waits).
    client = httpx.AsyncClient(base_url=binds[0] + "/api/v1", timeout=30,
                               limits=httpx.Limits(max_keepalive_connections=0))
    return Server(binds[0], settings, services, client, out)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
async def server(nursery, settings) -> Server:
    srv = await start_server(nursery, settings)
    yield srv
    await srv.client.aclose()


def docker_settings(tmp_path: Path, image: str | None = None, **overrides) -> Settings:
    """A test server's settings for the real engine: Docker, host networking (the containers reach
    the loopback fakes), `image` as the agent image."""
    if image is not None:
        overrides["agent_image"] = image
    return make_settings(tmp_path, container_runtime="docker", container_network="host", **overrides)


@pytest.fixture
async def docker_server(nursery, tmp_path, agent_image):
    """A server whose runs are containers of the agent image."""
    server = await start_server(nursery, docker_settings(tmp_path, agent_image))
    yield server
    await server.client.aclose()


@pytest.fixture
async def client(server) -> httpx.AsyncClient:
    return server.client

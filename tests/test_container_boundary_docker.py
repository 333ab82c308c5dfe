"""The container as a boundary (issue 11, items 3 and 4) against a real Docker engine.

The tests run as root here: that is the path exercised (the image's uid 1000, folders handed
over). Containers use host networking, except the proxy-only ones, which are only inspected:
no traffic goes to a non-loopback address.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import struct
import subprocess

import pytest
import trio

from conftest import docker_settings, start_server
from docker_support import AGENT_TAG, agent_image, docker_engine  # noqa: F401  (fixtures)
from fakes.anthropic import serve_fake_anthropic
from nanoclaw.runtime._args import AGENT_HOME, PIDS_LIMIT, container_user
from test_containers_docker import wait_for, wait_run

pytestmark = pytest.mark.usefixtures("docker_engine")
SLEEPER_TAG = AGENT_TAG + "-sleeper"


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=60)


@pytest.fixture(scope="session")
def sleeper_image(agent_image, tmp_path_factory):
    """The agent image (its user included) whose entrypoint reads stdin and then sleeps."""
    context = tmp_path_factory.mktemp("sleeper")
    (context / "Dockerfile").write_text(
        f"FROM {agent_image}\n"
        'ENTRYPOINT ["python3", "-c", "import sys, time; sys.stdin.read(); time.sleep(600)"]\n')
    docker("build", "--pull=false", "-q", "-t", SLEEPER_TAG, str(context))
    return SLEEPER_TAG


async def live_container(client, group: str, body: dict) -> tuple[str, str]:
    r = await client.post("/container/namespaces", json={"name": group, **body})
    assert r.status_code == 201, r.text
    run_id = (await client.post("/container/runs", json={"group": group, "prompt": "what is 2+2?"})).json()["runId"]

    async def running():
        state = (await client.get(f"/container/queue/groups/{group}")).json()
        if state["active"]:
            return docker("inspect", state["containerName"], check=False).returncode == 0
        return False

    await wait_for(running, timeout=60)
    return run_id, (await client.get(f"/container/queue/groups/{group}")).json()["containerName"]


async def test_an_agent_container_runs_without_privileges_and_cannot_plant_a_setuid_root_file(
        docker_server, nursery):
    fake = await nursery.start(serve_fake_anthropic)
    client = docker_server.client
    env = [f"ANTHROPIC_BASE_URL={fake.url}", "ANTHROPIC_API_KEY=sk-test"]
    run_id, name = await live_container(client, "locked", {"containerConfig": {
        "env": env, "idleTimeoutSecs": 120, "memoryMb": 256}})
    assert (await client.get("/health")).json()["runningAsRoot"] is (os.geteuid() == 0)

    host = json.loads(docker("inspect", name).stdout)[0]["HostConfig"]
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert host["ReadonlyRootfs"] is True
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["Memory"] == 256 * 1024 * 1024 and host["MemorySwap"] == host["Memory"]
    assert host["PidsLimit"] == PIDS_LIMIT
    assert set(host["Tmpfs"]) == {"/tmp", AGENT_HOME}
    assert all("nosuid" in options and "size=" in options for options in host["Tmpfs"].values())

    uid, gid = container_user()
    assert docker("exec", name, "id", "-u").stdout.strip() == str(uid)
    if os.geteuid() == 0:
        assert uid == 1000
    # The group folder is the agent's; the image root is not; /tmp and $HOME are small tmpfs.
    group_dir = docker_server.settings.groups_dir / "locked"
    assert os.stat(group_dir).st_uid == uid
    assert docker("exec", name, "touch", "/etc/owned", check=False).returncode != 0
    assert docker("exec", name, "sh", "-c", f"touch /tmp/x {AGENT_HOME}/x").returncode == 0

    # The attack: a setuid-root shell planted in the group folder for a local host user.
    attack = docker("exec", name, "sh", "-c",
                    "cp /bin/sh /workspace/group/rootsh && chmod u+s /workspace/group/rootsh; "
                    "chown 0:0 /workspace/group/rootsh; echo chown=$?", check=False)
    assert "chown=1" in attack.stdout, attack  # no CAP_CHOWN
    planted = os.lstat(group_dir / "rootsh")
    assert planted.st_uid == uid != 0
    assert not (planted.st_mode & stat.S_ISUID and planted.st_uid == 0)
    # Nor can it become root inside: no setuid binary works under no-new-privileges.
    assert docker("exec", name, "sh", "-c", "su -c id root </dev/null", check=False).returncode != 0

    r = await client.post("/container/ipc/close", json={
        "group": "locked", "sessionId": (await client.get("/container/queue/groups/locked")).json()["sessionId"]})
    assert r.status_code == 200
    run = await wait_run(client, run_id, timeout=60)
    assert run["status"] == "success" and run["results"] == ["2+2 = 4"]


async def test_a_proxy_only_group_sits_on_an_internal_network_without_a_route_out(
        nursery, tmp_path, agent_image, sleeper_image):
    fake = await nursery.start(serve_fake_anthropic)
    settings = docker_settings(tmp_path, agent_image)
    async with trio.open_nursery() as inner:
        server = await start_server(inner, settings)
        client = server.client
        r = await client.post("/container/credential-proxy/mappings", json={
            "name": "anthropic", "upstreamUrl": fake.url, "credentialType": "api_key", "credential": "sk-real"})
        assert r.status_code == 201
        assert (await client.post("/container/credential-proxy/start")).json()["running"]
        bad = await client.post("/container/namespaces", json={"name": "x", "containerConfig": {"network": "none"}})
        assert bad.status_code == 400 and bad.json()["error"]["code"]
        _, name = await live_container(client, "sealed", {"containerConfig": {
            "network": "proxy-only", "image": sleeper_image}})

        instance = server.services.supervisor.instance_id
        network = f"nanoclaw-{instance}-internal"
        inspected = json.loads(docker("network", "inspect", network).stdout)[0]
        assert inspected["Internal"] is True
        assert inspected["Labels"]["nanoclaw.instance"] == instance
        gateway = inspected["IPAM"]["Config"][0]["Gateway"]
        container = json.loads(docker("inspect", name).stdout)[0]
        # Host networking of the server's setting is overridden for this group.
        assert container["HostConfig"]["NetworkMode"] == network
        assert list(container["NetworkSettings"]["Networks"]) == [network]
        # Only the internal subnet: every route leads through its one interface, to the gateway
        # (the host, where the proxy listens) at most. Docker 20.10 gives internal networks a
        # default route to the gateway; the host then drops whatever would leave the subnet.
        routes = [line.split() for line in docker("exec", name, "cat", "/proc/net/route").stdout.splitlines()[1:]]
        assert routes and {route[0] for route in routes} == {"eth0"}
        hops = {socket.inet_ntoa(struct.pack("<I", int(route[2], 16))) for route in routes}
        assert hops <= {"0.0.0.0", gateway}
        if any(route[1] == "00000000" for route in routes) and shutil.which("iptables") and os.geteuid() == 0:
            bridge = "br-" + inspected["Id"][:12]
            rules = subprocess.run(["iptables", "-S", "DOCKER-ISOLATION-STAGE-1"], capture_output=True,
                                   text=True).stdout
            subnet = inspected["IPAM"]["Config"][0]["Subnet"]
            assert f"! -d {subnet} -i {bridge} -j DROP" in rules
        stats = server.services.proxy.statistics()
        assert gateway in stats.extra_hosts
        assert (await client.get("/container/credential-proxy/status")).json()["extraBindHosts"] == [gateway]
        env = dict(item.partition("=")[::2] for item in container["Config"]["Env"])
        assert env["ANTHROPIC_BASE_URL"] == f"http://{gateway}:{stats.port}/anthropic"
        assert "sk-real" not in json.dumps(env)
        await client.aclose()
        inner.cancel_scope.cancel()
    # The server removes its network when it stops.
    assert docker("network", "inspect", network, check=False).returncode != 0

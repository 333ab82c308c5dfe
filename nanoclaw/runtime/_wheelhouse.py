"""Image flavours and their offline build contexts.

A flavour is a Dockerfile in nanoclaw/agent/ plus the Python packages it installs. Those
are fetched on the host (``pip download`` into a cache under the data dir, so a rebuild does
not download again) and hard-linked into ``wheels/`` of a throw-away build context; the
Dockerfile installs them with ``pip install --no-index``, so the build needs no network.
"""
from __future__ import annotations

import os
import shutil
import sys
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import trio

FLAVOR_LABEL = "nanoclaw.flavor"
DOWNLOAD_TIMEOUT = 20 * 60


@dataclass(frozen=True)
class Flavor:
    name: str
    dockerfile: str
    requirements: tuple[str, ...]


FLAVORS = {
    "builtin": Flavor("builtin", "Dockerfile", ()),
    "claude-code": Flavor("claude-code", "Dockerfile.claude-code", ("claude-agent-sdk",)),
}

PROBE = "import platform, sys; print(f'{sys.version_info[0]}.{sys.version_info[1]} {platform.machine()}')"


async def base_python(runtime, base_image: str) -> tuple[str, str]:
    """(python version "3.11", machine "x86_64") of the base image, from a throw-away container."""
    done = await runtime.cli("run", "--rm", "--pull", "never", "--network", "none", "--entrypoint", "python3",
                             base_image, "-c", PROBE, timeout=120)
    parts = done.stdout.decode(errors="replace").split()
    if done.returncode != 0 or len(parts) != 2:
        raise WheelhouseError(f"could not find python3 in {base_image}: "
                              f"{done.stderr.decode(errors='replace').strip()[-300:]}")
    return parts[0], parts[1]


class WheelhouseError(Exception):
    pass


def pip_download_command(requirements: tuple[str, ...], dest: Path, python: str, machine: str) -> list[str]:
    platforms = [f"manylinux{tag}_{machine}" for tag in ("2014", "_2_17", "_2_28", "_2_34")]
    command = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:",
               "--python-version", python, "--implementation", "cp", "--dest", str(dest)]
    for platform in [*platforms, f"linux_{machine}", "any"]:
        command += ["--platform", platform]
    return command + list(requirements)


async def download(requirements: tuple[str, ...], cache: Path, python: str, machine: str, output) -> Path:
    """pip download into cache/<python>-<machine> (files already there are not fetched again)."""
    dest = cache / f"py{python}-{machine}"
    await trio.to_thread.run_sync(lambda: dest.mkdir(parents=True, exist_ok=True))
    process = await trio.lowlevel.open_process(pip_download_command(requirements, dest, python, machine),
                                               stdout=-1, stderr=-2)
    assert process.stdout is not None
    with trio.move_on_after(DOWNLOAD_TIMEOUT) as scope:
        async for chunk in process.stdout:
            output(chunk)
        code = await process.wait()
    if scope.cancelled_caught:
        process.kill()
        await process.wait()
        raise WheelhouseError(f"pip download took over {DOWNLOAD_TIMEOUT} s")
    if code != 0:
        raise WheelhouseError(f"pip download failed (exit code {code}); see output")
    return dest


def make_context(wheels: Path | None, work_dir: Path) -> Path:
    """A fresh build context: the agent files, and the wheels hard-linked (copied across devices)."""
    context = work_dir / f"context-{uuid.uuid4().hex[:12]}"
    context.mkdir(parents=True)
    with resources.as_file(resources.files("nanoclaw.agent")) as agent:
        for path in Path(agent).iterdir():
            if path.is_file() and path.suffix != ".pyc":
                shutil.copy2(path, context / path.name)
    (context / "wheels").mkdir()
    for wheel in (wheels.glob("*.whl") if wheels else ()):
        try:
            os.link(wheel, context / "wheels" / wheel.name)
        except OSError:
            shutil.copy2(wheel, context / "wheels" / wheel.name)
    return context

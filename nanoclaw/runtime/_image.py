from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import NoReturn

import trio

from nanoclaw.runtime._engine import Runtime
from nanoclaw.runtime._wheelhouse import FLAVOR_LABEL, FLAVORS, WheelhouseError, base_python, download, make_context

log = logging.getLogger("nanoclaw.runtime.image")
OUTPUT_KEEP = 64 * 1024
BUILD_TIMEOUT = 30 * 60
INSPECT_TTL = 60.0  # seconds an image's flavour and size are remembered


@dataclass
class Build:
    tag: str
    base_image: str
    pull: bool = True
    done: trio.Event = field(default_factory=trio.Event)
    output: bytearray = field(default_factory=bytearray)
    success: bool | None = None
    message: str = "Build running"
    flavor: str = "builtin"
    # Bytes appended ever, and an event set (then replaced) whenever output arrives or the build ends.
    total: int = 0
    changed: trio.Event = field(default_factory=trio.Event)

    def append(self, chunk: bytes | bytearray) -> None:
        self.output += chunk
        if len(self.output) > OUTPUT_KEEP:
            del self.output[: len(self.output) - OUTPUT_KEEP]
        self.total += len(chunk)
        self._notify()

    def _notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def since(self, offset: int) -> tuple[bytes, int]:
        """The output after byte offset (as far as it is still kept) and the new offset."""
        kept_from = self.total - len(self.output)
        return bytes(self.output[max(offset, kept_from) - kept_from:]), self.total

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")


class ImageBuilder:
    """Builds the agent image as supervised background jobs in its own nursery.

    A client that disconnects does not stop a build; two requests for one tag share it.
    `await nursery.start(builder.run)`.
    """

    def __init__(self, runtime: Runtime, default_base: str, work_dir: Path | None = None) -> None:
        self.runtime = runtime
        self.default_base = default_base
        self.work_dir = work_dir  # wheel cache and build contexts of flavours that install packages
        self._inspected: dict[str, tuple[float, dict | None]] = {}
        self.builds: dict[str, Build] = {}
        # start() sends each new build here; run() starts it in its nursery.
        self._send_build, self._receive_build = trio.open_memory_channel[Build](math.inf)
        self._running = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        async with trio.open_nursery() as nursery:
            self._running = True
            task_status.started()
            async for build in self._receive_build:
                nursery.start_soon(self._build, build)
        raise AssertionError("the build channel never closes")

    def building(self, tag: str) -> bool:
        build = self.builds.get(tag)
        return build is not None and not build.done.is_set()

    async def inspect(self, tag: str) -> dict | None:
        """{"flavor", "size"} of a local image (None when missing), remembered for INSPECT_TTL seconds."""
        now = trio.current_time()
        cached = self._inspected.get(tag)
        if cached is not None and now - cached[0] < INSPECT_TTL:
            return cached[1]
        done = await self.runtime.cli("image", "inspect", "--format", "{{json .Config.Labels}}\t{{.Size}}", tag)
        info = None
        if done.returncode == 0:
            labels, _, size = done.stdout.decode(errors="replace").strip().partition("\t")
            try:
                labels = json.loads(labels) or {}
            except ValueError:
                labels = {}
            flavor = labels.get(FLAVOR_LABEL) if isinstance(labels, dict) else None
            info = {"flavor": flavor if flavor in FLAVORS else None,
                    "size": int(size) if size.isdigit() else None}
        self._inspected[tag] = (now, info)
        return info

    def start(self, tag: str, base_image: str | None = None, flavor: str = "builtin", *, pull: bool = True) -> Build:
        """Start (or join) the build of `tag`. pull: fetch the base image when it is not local."""
        current = self.builds.get(tag)
        if current is not None and not current.done.is_set():
            return current
        if not self._running:
            raise RuntimeError("ImageBuilder is not running")
        build = Build(tag=tag, base_image=base_image or self.default_base, pull=pull, flavor=flavor)
        self.builds[tag] = build
        self._send_build.send_nowait(build)
        return build

    async def _build(self, build: Build) -> None:
        own_context: Path | None = None
        try:
            if not await self.runtime.image_exists(build.base_image):
                if not build.pull:
                    # `build --pull=false` still pulls a base that is missing: refuse instead.
                    build.success = False
                    build.message = (f"Base image {build.base_image} is not present locally and \"pull\" is "
                                     "false: load it into the engine first (docker pull / docker load)")
                    return
                code = await self._stream(build, [self.runtime.command, "pull", build.base_image])
                if code != 0:
                    build.success = False
                    build.message = (f"Base image {build.base_image} could not be pulled "
                                     f"({_ended(code)}); see output")
                    return
            flavor = FLAVORS[build.flavor]
            if flavor.requirements:  # wheels fetched on the host: the build itself needs no network
                if self.work_dir is None:
                    raise WheelhouseError("no work dir for the wheelhouse")
                python, machine = await base_python(self.runtime, build.base_image)
                wheels = await download(flavor.requirements, self.work_dir / "wheelhouse", python, machine,
                                        build.append)
                own_context = await trio.to_thread.run_sync(make_context, wheels, self.work_dir)
            with resources.as_file(resources.files("nanoclaw.agent")) as context:
                context = own_context or context
                code = await self._stream(build, [
                    self.runtime.command, "build", "--pull=false", "-t", build.tag, "--network", "none",
                    "-f", str(Path(context) / flavor.dockerfile), "--label", f"{FLAVOR_LABEL}={flavor.name}",
                    "--build-arg", f"BASE_IMAGE={build.base_image}", str(context)])
            if code == 0:
                build.success, build.message = True, "Build completed successfully"
            else:
                build.success, build.message = False, f"Build failed ({_ended(code)}); see output"
        except WheelhouseError as exc:
            build.success, build.message = False, f"Preparing the wheelhouse failed: {exc}"
        except Exception as exc:  # a failed build is reported, never crashes the server
            log.exception("image build of %s failed", build.tag)
            build.success, build.message = False, f"Build could not run: {exc}"
        finally:
            self._inspected.pop(build.tag, None)
            if own_context is not None:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(shutil.rmtree, own_context, True)
            build.done.set()
            build._notify()

    async def _stream(self, build: Build, command: list[str]) -> int | None:
        """Run command, its output appended to the build's; the exit code, None on timeout."""
        process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert process.stdout is not None
        try:
            with trio.move_on_after(BUILD_TIMEOUT):
                async for chunk in process.stdout:
                    build.append(chunk)
                return await process.wait()
            return None
        finally:
            if process.returncode is None:
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()


def _ended(code: int | None) -> str:
    return f"timed out after {BUILD_TIMEOUT} s" if code is None else f"exit code {code}"

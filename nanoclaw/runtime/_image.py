from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass, field
from importlib import resources

import trio

from nanoclaw.runtime._engine import Runtime

log = logging.getLogger("nanoclaw.runtime.image")
OUTPUT_KEEP = 64 * 1024
BUILD_TIMEOUT = 30 * 60


@dataclass
class Build:
    tag: str
    base_image: str
    done: trio.Event = field(default_factory=trio.Event)
    output: bytearray = field(default_factory=bytearray)
    success: bool | None = None
    message: str = "Build running"
    # Bytes appended ever, and an event set (then replaced) whenever output arrives or the build ends.
    total: int = 0
    changed: trio.Event = field(default_factory=trio.Event)

    def append(self, chunk: bytes) -> None:
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

    def __init__(self, runtime: Runtime, default_base: str) -> None:
        self.runtime = runtime
        self.default_base = default_base
        self.builds: dict[str, Build] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def building(self, tag: str) -> bool:
        build = self.builds.get(tag)
        return build is not None and not build.done.is_set()

    def start(self, tag: str, base_image: str | None = None) -> Build:
        current = self.builds.get(tag)
        if current is not None and not current.done.is_set():
            return current
        if self._nursery is None:
            raise RuntimeError("ImageBuilder is not running")
        build = Build(tag=tag, base_image=base_image or self.default_base)
        self.builds[tag] = build
        self._nursery.start_soon(self._build, build)
        return build

    async def _build(self, build: Build) -> None:
        try:
            if not await self.runtime.image_exists(build.base_image):
                # `build --pull=false` still pulls a base that is missing: refuse instead.
                build.success = False
                build.message = (f"Base image {build.base_image} is not present locally and is never pulled: "
                                 "load it into the engine first (docker pull / docker load)")
                return
            with resources.as_file(resources.files("nanoclaw.agent")) as context:
                command = [self.runtime.command, "build", "--pull=false", "-t", build.tag,
                           "--build-arg", f"BASE_IMAGE={build.base_image}", str(context)]
                process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE,
                                                           stderr=subprocess.STDOUT)
                with trio.move_on_after(BUILD_TIMEOUT) as scope:
                    async for chunk in process.stdout:
                        build.append(chunk)
                    code = await process.wait()
                if scope.cancelled_caught:
                    process.kill()
                    await process.wait()
                    build.success, build.message = False, f"Build timed out after {BUILD_TIMEOUT} s"
                elif code == 0:
                    build.success, build.message = True, "Build completed successfully"
                else:
                    build.success, build.message = False, f"Build failed (exit code {code}); see output"
        except Exception as exc:  # a failed build is reported, never crashes the server
            log.exception("image build of %s failed", build.tag)
            build.success, build.message = False, f"Build could not run: {exc}"
        finally:
            build.done.set()
            build._notify()

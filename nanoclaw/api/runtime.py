"""/container/runtime and /container/image: the engine and the agent image."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field
from quart import Blueprint
from quart_schema import validate_querystring, validate_request, validate_response

from nanoclaw.api._build_stream import stream_build, streams_with
from nanoclaw.api._common import Answer, ApiModel, services
from nanoclaw.api.errors import ApiError
from nanoclaw.runtime import RuntimeUnavailable

bp = Blueprint("runtime", __name__)
# How much of a failed build's output its error answer carries.
OUTPUT_TAIL = 8 * 1024
IMAGE_TAG = r"^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?$"


class Networking(Answer):
    mode: str
    hostGateway: str | None
    extraRunArgs: list[str]


class RuntimeInfo(Answer):
    available: bool
    backend: str | None = Field(description='"apple_container" | "docker" | "podman" | null')
    version: str | None
    networking: Networking
    message: str


class BuildRequest(ApiModel):
    imageTag: str | None = Field(default=None, pattern=IMAGE_TAG, max_length=255)
    baseImage: str | None = Field(default=None, pattern=IMAGE_TAG, max_length=255,
                                  description="Base image; NANOCLAW_AGENT_BASE_IMAGE by default")
    pull: bool = Field(default=True, description="Pull the base image when it is not present locally")
    flavor: Literal["builtin", "claude-code"] = Field(
        default="builtin", description="builtin: our stdlib runner; claude-code: Claude Code via claude-agent-sdk "
                                        "(its wheels are downloaded on the host, the build runs offline)")


class BuildResult(Answer):
    success: bool
    imageTag: str
    flavor: str
    message: str
    output: str


class ImageQuery(BaseModel):
    imageTag: str | None = Field(default=None, pattern=IMAGE_TAG, max_length=255)


class ImageStatus(Answer):
    exists: bool
    imageTag: str
    building: bool
    message: str
    output: str | None = None
    flavor: str | None = Field(default=None, description='"builtin" | "claude-code" (image label nanoclaw.flavor); '
                                                         "null when missing or unlabelled")
    sizeBytes: int | None = None


@bp.get("/container/runtime")
@validate_response(RuntimeInfo)
async def get_runtime():
    """The detected container engine and how containers reach the host."""
    return services().runtime.info()


def _start_build(data: BuildRequest):
    svc = services()
    if not svc.runtime.state.available:
        raise RuntimeUnavailable(svc.runtime.state.message)
    tag = data.imageTag or svc.settings.agent_image
    return svc.images.start(tag, data.baseImage, data.flavor, pull=data.pull), tag


def _build_result(build, tag: str) -> BuildResult:
    return BuildResult(success=bool(build.success), imageTag=tag, flavor=build.flavor, message=build.message,
                       output=build.text)


async def _stream_build(data: BuildRequest):
    build, tag = _start_build(data)
    return stream_build(build, lambda done: _build_result(done, tag).model_dump())


@bp.post("/container/image/build")
@validate_request(BuildRequest)
@streams_with(_stream_build)
@validate_response(BuildResult)
async def build_image(data: BuildRequest):
    """Build the agent image; answers when the build ends (a failure: 422 BUILD_FAILED with the output's
    tail; Accept: text/event-stream streams the output instead). A disconnecting client does not stop it,
    and concurrent requests for one tag share one build."""
    build, tag = _start_build(data)
    await build.done.wait()
    if not build.success:
        # The tail of the output says why; GET /container/image/status keeps the last 64 KiB.
        raise ApiError(422, f"{tag}: {build.message}", code="BUILD_FAILED",
                       details={"imageTag": tag, "flavor": build.flavor, "output": build.text[-OUTPUT_TAIL:]})
    return _build_result(build, tag)


@bp.get("/container/image/status")
@validate_querystring(ImageQuery)
@validate_response(ImageStatus)
async def image_status(query_args: ImageQuery):
    """Whether the image exists, whether a build runs, and the last build's output (last 64 KiB)."""
    svc = services()
    tag = query_args.imageTag or svc.settings.agent_image
    building = svc.images.building(tag)
    build = svc.images.builds.get(tag)
    exists = False
    info = None
    if svc.runtime.state.available:
        try:
            exists = await svc.runtime.image_exists(tag)
            info = await svc.images.inspect(tag) if exists else None
        except RuntimeUnavailable:
            exists = False
    if building:
        message = "Build in progress"
    elif exists:
        message = "Image is ready"
    elif not svc.runtime.state.available:
        message = svc.runtime.state.message
    else:
        message = "Image not built yet: POST /api/v1/container/image/build"
    return ImageStatus(exists=exists, imageTag=tag, building=building, message=message,
                       output=build.text if build else None, flavor=info["flavor"] if info else None,
                       sizeBytes=info["size"] if info else None)

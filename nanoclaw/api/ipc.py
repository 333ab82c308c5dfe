"""/container/ipc: folders, follow-ups and the close sentinel of a group's session."""
from __future__ import annotations

from pydantic import Field
from quart import Blueprint
from quart_schema import validate_request, validate_response

from nanoclaw.api._common import Answer, ApiModel, services
from nanoclaw.ipc import ipc_paths, prepare_audited, write_close, write_follow_up
from nanoclaw.models import GROUP_NAME_PATTERN

bp = Blueprint("ipc", __name__)
SESSION_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


class IpcTarget(ApiModel):
    group: str = Field(pattern=GROUP_NAME_PATTERN)
    sessionId: str = Field(pattern=SESSION_PATTERN)


class FollowUp(IpcTarget):
    content: str = Field(min_length=1, max_length=256 * 1024)


class IpcDirectories(Answer):
    group: str
    sessionId: str
    input: str
    messages: str
    tasks: str


class IpcWritten(Answer):
    written: bool
    file: str
    containerAttached: bool = Field(description="A live container of this group and session will read it")


async def _folder(target: IpcTarget):
    await services().namespaces.get(target.group)
    return ipc_paths(services().settings, target.group, target.sessionId)


@bp.post("/container/ipc/directories")
@validate_request(IpcTarget)
@validate_response(IpcDirectories, 201)
async def create_directories(data: IpcTarget):
    """Create <data>/ipc/<group>/<sessionId>/{input,messages,tasks}."""
    folder = await _folder(data)

    await prepare_audited(services().audit, data.group, folder)
    return IpcDirectories(group=data.group, sessionId=data.sessionId, input=str(folder / "input"),
                          messages=str(folder / "messages"), tasks=str(folder / "tasks")), 201


@bp.post("/container/ipc/follow-up")
@validate_request(FollowUp)
@validate_response(IpcWritten)
async def follow_up(data: FollowUp):
    """Write a follow-up message atomically into the session's input folder."""
    folder = await _folder(data)
    name = await write_follow_up(folder, data.content, audit=services().audit)
    attached = services().supervisor.live_run(data.group, data.sessionId) is not None
    return IpcWritten(written=True, file=name, containerAttached=attached)


@bp.post("/container/ipc/close")
@validate_request(IpcTarget)
@validate_response(IpcWritten)
async def close(data: IpcTarget):
    """Write the _close sentinel: the container finishes its turn and exits."""
    folder = await _folder(data)
    await write_close(services().audit, data.group, folder)
    run = services().supervisor.live_run(data.group, data.sessionId)
    if run is not None:
        run.closing = True
    return IpcWritten(written=True, file="_close", containerAttached=run is not None)

"""/container/namespaces: group namespaces and their instructions."""
from __future__ import annotations

from pydantic import Field
from quart import Blueprint
from quart_schema import validate_querystring, validate_request, validate_response

from nanoclaw.api._common import Answer, ApiModel, Kept, answers, services
from nanoclaw.errors import Invalid
from nanoclaw.models import GROUP_NAME_PATTERN, ContainerConfig
from nanoclaw.namespaces import GLOBAL, Namespace
from nanoclaw.runtime import RuntimeUnavailable
from nanoclaw.supervisor import agent_settings

bp = Blueprint("namespaces", __name__)
MAX_INSTRUCTIONS = 512 * 1024


class NamespaceCreate(ApiModel):
    name: str = Field(pattern=GROUP_NAME_PATTERN, description="Also the folder name; 'global' is reserved")
    description: str = Field(default="", max_length=2000)
    chatJids: list[str] = Field(default_factory=list, max_length=1000)
    trigger: str = Field(default="@Andy", min_length=1, max_length=100)
    requiresTrigger: bool = True
    isMain: bool = False
    containerConfig: ContainerConfig = Field(default_factory=ContainerConfig)


class NamespaceUpdate(ApiModel):
    """Every field is optional; only the ones given change. The name cannot change."""

    id: str | None = None
    name: str | None = None
    description: str | None = Field(default=None, max_length=2000)
    chatJids: list[str] | None = Field(default=None, max_length=1000)
    trigger: str | None = Field(default=None, min_length=1, max_length=100)
    requiresTrigger: bool | None = None
    isMain: bool | None = None
    containerConfig: ContainerConfig | None = None
    createdAt: str | None = None
    updatedAt: str | None = None


class NamespaceList(Kept):
    namespaces: list[Namespace]


class Instructions(ApiModel):
    instructions: str = Field(max_length=MAX_INSTRUCTIONS)


class InstructionsAnswer(Answer):
    group: str
    instructions: str


class MergeRequest(ApiModel):
    groupName: str = Field(min_length=1, max_length=64)


class Merged(Answer):
    merged: str


class NamespaceDetail(Namespace):
    imageFlavor: str | None = Field(default=None, description='Flavour of the image this namespace runs: '
                                    '"builtin" | "claude-code"; null when the image is missing or unlabelled')


class DeleteQuery(ApiModel):
    purge: bool = False


async def check_config(config: ContainerConfig | None, group: str) -> None:
    if config is None:
        return
    if config.agent is not None:
        agent_settings(config.agent, services().settings)  # refuses an agent config no run could use
    await services().mounts.refuse_any(config.additionalMounts, group=group)


@bp.get("/container/namespaces")
@answers(NamespaceList)
async def list_namespaces():
    """All group namespaces, by name."""
    svc = services()

    async def build() -> NamespaceList:
        return NamespaceList(namespaces=await svc.namespaces.list())

    return await svc.db.cached("namespaces", build)


@bp.post("/container/namespaces")
@validate_request(NamespaceCreate)
@validate_response(Namespace, 201)
async def create_namespace(data: NamespaceCreate):
    """Create a namespace and its folder <data>/groups/<name>/."""
    if data.name.lower() == GLOBAL:
        raise Invalid("'global' is reserved for the global instructions")
    await check_config(data.containerConfig, data.name)
    created = await services().namespaces.create(data.model_dump(exclude={"containerConfig"})
                                                 | {"containerConfig": data.containerConfig})
    return created, 201


@bp.post("/container/namespaces/merge-instructions")
@validate_request(MergeRequest)
@validate_response(Merged)
async def merge_instructions(data: MergeRequest):
    """Global and group instructions as one document; an empty section is left out."""
    return Merged(merged=await services().namespaces.merged_instructions(data.groupName))


@bp.get("/container/namespaces/<name>")
@validate_response(NamespaceDetail)
async def get_namespace(name: str):
    """One namespace, with the flavour of its image (containerConfig.image or the server default)."""
    svc = services()
    namespace = await svc.namespaces.get(name)
    info = None
    if svc.runtime.state.available:
        try:
            info = await svc.images.inspect(namespace.containerConfig.image or svc.settings.agent_image)
        except RuntimeUnavailable:
            info = None
    return NamespaceDetail(**namespace.model_dump(), imageFlavor=info["flavor"] if info else None)


@bp.put("/container/namespaces/<name>")
@validate_request(NamespaceUpdate)
@validate_response(Namespace)
async def update_namespace(name: str, data: NamespaceUpdate):
    """Change the given fields; chatJids, when given, replaces the list."""
    ns = services().namespaces
    current = await ns.get(name)
    if data.name is not None and data.name != name:
        raise Invalid("Namespaces cannot be renamed; create a new one instead")
    if data.id is not None and data.id != current.id:
        raise Invalid("id is read-only")
    await check_config(data.containerConfig, name)
    fields = {k: getattr(data, k) for k in
              ("description", "chatJids", "trigger", "requiresTrigger", "isMain", "containerConfig")}
    return await ns.update(name, fields)


@bp.delete("/container/namespaces/<name>")
@validate_querystring(DeleteQuery)
async def delete_namespace(name: str, query_args: DeleteQuery):
    """Delete the record; the folder stays unless ?purge=true."""
    await services().namespaces.delete(name, purge=query_args.purge)
    return "", 204


@bp.get("/container/namespaces/<name>/instructions")
@validate_response(InstructionsAnswer)
async def get_instructions(name: str):
    """The group's CLAUDE.md; the name 'global' reads the global instructions."""
    text = await services().namespaces.read_instructions(name)
    return InstructionsAnswer(group=name, instructions=text)


@bp.put("/container/namespaces/<name>/instructions")
@validate_request(Instructions)
@validate_response(InstructionsAnswer)
async def put_instructions(name: str, data: Instructions):
    """Replace the group's (or, for 'global', the global) CLAUDE.md atomically."""
    await services().namespaces.write_instructions(name, data.instructions)
    return InstructionsAnswer(group=name, instructions=data.instructions)

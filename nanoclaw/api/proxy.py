"""/container/credential-proxy: the proxy's status, start/stop, port and credential mappings."""
from __future__ import annotations

from typing import Annotated

from pydantic import Field
from quart import Blueprint
from quart_schema import validate_request, validate_response

from nanoclaw.api._common import Answer, ApiModel, services
from nanoclaw.proxy import (ALLOWED_PATH_PATTERN, CREDENTIAL_PATTERN, CREDENTIAL_TYPE_PATTERN, NAME_PATTERN,
                            PLACEHOLDER)
from nanoclaw.models import GROUP_NAME_PATTERN

bp = Blueprint("credential_proxy", __name__)
PREFIX = "/container/credential-proxy"


class ProxyStatus(Answer):
    running: bool
    port: int = Field(description="The port listened on; when stopped, the one start will use")
    mappingCount: int
    bindHost: str = Field(description="Where it listens: reachable by containers, nothing else")
    extraBindHosts: list[str] = Field(default_factory=list,
                                      description="Internal networks' gateways it also listens on (proxy-only groups)")


class MappingCreate(ApiModel):
    name: str = Field(pattern=NAME_PATTERN,
                      description="Served under /<name>/ on the proxy; containers get <NAME>_BASE_URL")
    upstreamUrl: str = Field(min_length=1, max_length=2048, description="http:// or https:// base URL")
    credentialType: str = Field(
        pattern=CREDENTIAL_TYPE_PATTERN,
        description="api_key (sent as x-api-key), bearer (Authorization: Bearer) or header:<Name>")
    credential: str = Field(max_length=8192, pattern=CREDENTIAL_PATTERN,
                            description="Encrypted at rest; never shown again. Empty for a local server "
                                        "that needs no key (no credential header is sent upstream)")
    groups: list[Annotated[str, Field(pattern=GROUP_NAME_PATTERN)]] | None = Field(
        default=None, min_length=1, max_length=1000,
        description="Groups whose runs may use it; null (default): every group. Others get 403")
    allowedPaths: list[Annotated[str, Field(pattern=ALLOWED_PATH_PATTERN)]] | None = Field(
        default=None, min_length=1, max_length=100,
        description="Path prefixes below the mapping, e.g. /v1/messages (raw, not percent-decoded); "
                    "null (default): every path. Others get 403")


class MappingCreated(Answer):
    id: str
    name: str
    placeholder: str


class MappingInfo(Answer):
    id: str
    name: str
    upstreamUrl: str
    credentialType: str
    credentialMasked: str
    placeholder: str
    createdAt: str
    groups: list[str] | None = None
    allowedPaths: list[str] | None = None


class MappingList(Answer):
    mappings: list[MappingInfo]


class PortChange(ApiModel):
    port: int = Field(ge=0, le=65535, description="0 lets the system pick a free port")


def _status() -> ProxyStatus:
    stats = services().proxy.statistics()
    return ProxyStatus(running=stats.running, port=stats.port, mappingCount=stats.mapping_count,
                       bindHost=stats.bind_host, extraBindHosts=stats.extra_hosts)


@bp.get(f"{PREFIX}/status")
@validate_response(ProxyStatus)
async def proxy_status():
    """Whether the credential proxy listens, its port and bind address, how many mappings."""
    return _status()


@bp.post(f"{PREFIX}/start")
@validate_response(ProxyStatus)
async def start_proxy():
    """Start listening (no change when running); 409 when the port cannot be bound."""
    await services().proxy.start()
    return _status()


@bp.post(f"{PREFIX}/stop")
@validate_response(ProxyStatus)
async def stop_proxy():
    """Stop listening at once; requests in flight get the graceful timeout to finish."""
    await services().proxy.stop()
    return _status()


@bp.get(f"{PREFIX}/mappings")
@validate_response(MappingList)
async def list_mappings():
    """Every mapping, without its credential (only a mask of it)."""
    return MappingList(mappings=[MappingInfo(**m.public()) for m in services().proxy.mappings()])


@bp.post(f"{PREFIX}/mappings")
@validate_request(MappingCreate)
@validate_response(MappingCreated, 201)
async def add_mapping(data: MappingCreate):
    """Add a mapping; the running proxy serves it at once. 409 when the name is taken."""
    mapping = await services().proxy.add_mapping(data.name, data.upstreamUrl, data.credentialType, data.credential,
                                                 groups=data.groups, allowed_paths=data.allowedPaths)
    return MappingCreated(id=mapping.id, name=mapping.name, placeholder=PLACEHOLDER), 201


@bp.delete(f"{PREFIX}/mappings/<mapping_id>")
async def remove_mapping(mapping_id: str):
    """Delete a mapping; the running proxy stops serving it at once."""
    await services().proxy.remove_mapping(mapping_id)
    return "", 204


@bp.put(f"{PREFIX}/port")
@validate_request(PortChange)
@validate_response(ProxyStatus)
async def set_port(data: PortChange):
    """Change the port live: new requests use the new port, requests in flight finish on the old one."""
    await services().proxy.set_port(data.port)
    return _status()

"""/container/mount: the allowlist and mount validation."""
from quart import Blueprint
from quart_schema import validate_request, validate_response

from nanoclaw.api._common import services
from nanoclaw.models import MountRequest
from nanoclaw.security.mounts import MountAllowlist, MountDecision

bp = Blueprint("mounts", __name__)


@bp.post("/container/mount/validate")
@validate_request(MountRequest)
@validate_response(MountDecision)
async def validate_mount(data: MountRequest):
    """Would this mount be allowed? Always 200; `allowed` and `message` say why (a refusal is audited as info)."""
    return await services().mounts.validate(data, severity="info")


@bp.get("/container/mount/allowlist")
@validate_response(MountAllowlist)
async def get_allowlist():
    """Allowed roots and blocked patterns (the built-in patterns always apply)."""
    return await services().mounts.allowlist()


@bp.put("/container/mount/allowlist")
@validate_request(MountAllowlist)
@validate_response(MountAllowlist)
async def put_allowlist(data: MountAllowlist):
    """Replace the allowlist file in the config dir (written atomically)."""
    return await services().mounts.set_allowlist(data)

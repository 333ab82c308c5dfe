"""GET /health: always open."""
from pydantic import Field
from quart import Blueprint
from quart_schema import security_scheme

from nanoclaw import __version__
from nanoclaw.api._common import Answer, answers, services
from nanoclaw.runtime import running_as_root

bp = Blueprint("health", __name__)


class Health(Answer):
    status: str
    version: str
    auth: bool
    runningAsRoot: bool = Field(description="The server runs as root (containers still run as uid 1000)")


@bp.get("/health")
@security_scheme([])
@answers(Health)
async def health() -> Health:
    """Liveness, version and whether API keys are required."""

    return Health(status="ok", version=__version__, auth=await services().api_keys.required(),
                  runningAsRoot=running_as_root())

"""/container/audit-log."""
from typing import Any, Literal

from pydantic import BaseModel, Field
from quart import Blueprint
from quart_schema import validate_querystring, validate_response

from nanoclaw.api._common import Answer, clamp, services

bp = Blueprint("audit", __name__)


class AuditQuery(BaseModel):
    limit: int | None = Field(default=None, description="default 50, at most 500")
    group: str | None = None
    severity: Literal["info", "warning", "violation", "error"] | None = None


class AuditEntry(Answer):
    id: int
    timestamp: str
    severity: str
    category: str
    message: str
    group: str | None
    details: Any = None


class AuditLog(Answer):
    entries: list[AuditEntry]


@bp.get("/container/audit-log")
@validate_querystring(AuditQuery)
@validate_response(AuditLog)
async def audit_log(query_args: AuditQuery):
    """Newest first. Entries never hold a secret."""
    limit = clamp(query_args.limit, default=50, maximum=500)
    entries = await services().audit.entries(limit=limit, group=query_args.group,
                                             severity=query_args.severity)
    return AuditLog.model_validate({"entries": entries})

"""Domain errors. Each carries the HTTP status and code the API answers with."""
from __future__ import annotations

from typing import Any


class NanoclawError(Exception):
    status = 500
    code = "INTERNAL_ERROR"

    def __init__(self, message: str, *, details: Any = None, code: str | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class Invalid(NanoclawError):
    status, code = 400, "BAD_REQUEST"


class Unauthorized(NanoclawError):
    status, code = 401, "UNAUTHORIZED"


class Forbidden(NanoclawError):
    status, code = 403, "FORBIDDEN"


class NotFound(NanoclawError):
    status, code = 404, "NOT_FOUND"


class Conflict(NanoclawError):
    status, code = 409, "CONFLICT"


class QuotaExceeded(Conflict):
    code = "QUOTA_EXCEEDED"


class Unavailable(NanoclawError):
    status, code = 503, "SERVICE_UNAVAILABLE"


class UpstreamError(NanoclawError):
    status, code = 502, "BAD_GATEWAY"


def innermost(error: BaseException) -> BaseException:
    """The first plain exception inside (possibly nested) exception groups."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error

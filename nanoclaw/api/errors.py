"""One JSON error envelope for every non-2xx answer."""
from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from quart import Quart, jsonify
from quart_schema import RequestSchemaValidationError
from werkzeug.exceptions import HTTPException

from nanoclaw.errors import NanoclawError

log = logging.getLogger("nanoclaw.api")

CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "UNPROCESSABLE",
    429: "TOO_MANY_REQUESTS",
    500: "INTERNAL_ERROR",
    502: "BAD_GATEWAY",
    503: "SERVICE_UNAVAILABLE",
    504: "GATEWAY_TIMEOUT",
}


class ApiError(NanoclawError):
    """Raise from a handler to answer with the error envelope and any status."""

    def __init__(self, status: int, message: str, *, code: str | None = None, details: Any = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message, details=details, code=code or CODES.get(status, "ERROR"), status=status)
        self.headers = headers or {}


def envelope(status: int, code: str, message: str, details: Any = None):
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    response = jsonify({"error": body})
    response.status_code = status
    return response


def validation_details(error: ValidationError) -> list[dict[str, str]]:
    out = []
    for item in error.errors(include_url=False):
        field = ".".join(str(p) for p in item.get("loc", ())) or "(body)"
        out.append({"field": field, "message": item.get("msg", "invalid")})
    return out


def install(app: Quart) -> None:
    @app.errorhandler(NanoclawError)
    async def _domain_error(error: NanoclawError):
        response = envelope(error.status, error.code, error.message, error.details)
        response.headers.update(getattr(error, "headers", None) or {})
        return response

    @app.errorhandler(RequestSchemaValidationError)
    async def _schema_error(error: RequestSchemaValidationError):
        cause = error.validation_error
        if isinstance(cause, ValidationError):
            details = validation_details(cause)
            if any(d["field"] == "(body)" for d in details):
                return envelope(400, "VALIDATION_ERROR", "The request body must be a JSON object", details)
            fields = ", ".join(d["field"] for d in details)
            return envelope(400, "VALIDATION_ERROR", f"Invalid fields: {fields}", details)
        if isinstance(cause, TypeError):
            return envelope(400, "VALIDATION_ERROR", "The request body must be a JSON object")
        return envelope(400, "VALIDATION_ERROR", str(cause) or "Invalid request")

    @app.errorhandler(HTTPException)
    async def _http_error(error: HTTPException):
        status = error.code or 500
        message = {
            404: "No such endpoint",
            405: "Method not allowed on this endpoint",
            413: "Request body is larger than 1 MiB",
        }.get(status, error.description or error.name)
        response = envelope(status, CODES.get(status, "ERROR"), message)
        if status == 413:
            # The rest of the body was never read: the connection cannot be reused.
            response.headers["Connection"] = "close"
        allowed = getattr(error, "valid_methods", None) if status == 405 else None
        if allowed:
            response.headers["Allow"] = ", ".join(allowed)
        return response

    @app.errorhandler(Exception)
    async def _unexpected(error: Exception):
        log.exception("unhandled error in request", exc_info=error)
        return envelope(500, "INTERNAL_ERROR", "Internal server error; see the server log")

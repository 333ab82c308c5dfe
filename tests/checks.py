"""Assertions shared by the API tests."""
from __future__ import annotations

import httpx


def assert_error(answer: httpx.Response, status: int, code: str | None = None) -> dict:
    """The answer is the JSON error envelope with this status (and code); returns its "error"."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json"), answer.headers["content-type"]
    body = answer.json()
    assert list(body) == ["error"], body
    error = body["error"]
    assert isinstance(error.get("code"), str) and error["code"], body
    assert isinstance(error.get("message"), str) and error["message"], body
    assert set(error) <= {"code", "message", "details"}, body
    if code is not None:
        assert error["code"] == code, body
    return error


def error_fields(error: dict) -> set[str]:
    """The offending fields a 400 VALIDATION_ERROR names."""
    return {item["field"] for item in error.get("details") or []}

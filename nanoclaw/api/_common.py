"""Helpers every blueprint uses."""
from __future__ import annotations

from functools import wraps
from typing import TYPE_CHECKING, Any, Callable, cast

from pydantic import BaseModel, ConfigDict, PrivateAttr, TypeAdapter, ValidationError
from quart import Response, current_app, request
from quart_schema.validation import (
    QUART_SCHEMA_QUERYSTRING_ATTRIBUTE,
    QUART_SCHEMA_RESPONSE_ATTRIBUTE,
    QuerystringValidationError,
)

from nanoclaw.clock import iso  # noqa: F401  (re-exported for blueprints)

if TYPE_CHECKING:
    from nanoclaw.services import Services


class ApiModel(BaseModel):
    """Request bodies: unknown fields are an error, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid")


class Answer(BaseModel):
    """Response bodies."""


class Kept(Answer):
    """A response body kept between requests (Database.cached): dumped and encoded once, that
    reused, so a poll costs no model work and no JSON encoding. Never change a Kept answer."""

    _dumped: dict | None = PrivateAttr(default=None)
    _body: bytes | None = PrivateAttr(default=None)

    def model_dump(self, **kwargs) -> dict:
        if kwargs:
            return super().model_dump(**kwargs)
        if self._dumped is None:
            self._dumped = super().model_dump()
        return self._dumped


async def _json_response(value: Answer) -> Response:
    """What quart-schema's conversion and Quart's JSON provider make of value, byte for byte."""
    # Quart's provider makes a Quart Response; its stubs name werkzeug's base class.
    if not isinstance(value, Kept):
        return cast(Response, current_app.json.response(value.model_dump()))
    if value._body is None:
        value._body = await cast(Response, current_app.json.response(value.model_dump())).get_data(as_text=False)
    return current_app.response_class(value._body, mimetype=current_app.json.mimetype)  # type: ignore[attr-defined]


def answers(model_class: type[Answer]) -> Callable:
    """quart_schema.validate_response(model_class) for the routes dashboards poll: the same
    OpenAPI entry, but the handler's answer (an instance of model_class) goes straight to a
    JSON response instead of through quart-schema's per-request conversion."""

    def decorator(func: Callable) -> Callable:
        schemas = getattr(func, QUART_SCHEMA_RESPONSE_ATTRIBUTE, {})
        schemas[200] = (model_class, None)
        setattr(func, QUART_SCHEMA_RESPONSE_ATTRIBUTE, schemas)

        @wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> Response:
            value = await func(*args, **kwargs)
            if type(value) is not model_class:
                value = model_class.model_validate(value)
            return await _json_response(value)

        return wrapper

    return decorator


def query(model_class: type[BaseModel]) -> Callable:
    """quart_schema.validate_querystring(model_class) with its validator built once instead of
    on every request; the same OpenAPI entry and the same QuerystringValidationError."""
    adapter = TypeAdapter(model_class)

    def decorator(func: Callable) -> Callable:
        setattr(func, QUART_SCHEMA_QUERYSTRING_ATTRIBUTE, model_class)

        @wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            given = request.args
            values: dict[str, Any] = {}
            for key in given:
                found = given.getlist(key)
                if key.endswith("[]"):
                    values[key.removesuffix("[]")] = found
                else:
                    values[key] = found if len(found) > 1 else found[0]
            try:
                model = adapter.validate_python(values)
            except (TypeError, ValidationError, ValueError) as error:
                raise QuerystringValidationError(error) from None
            return await func(*args, query_args=model, **kwargs)

        return wrapper

    return decorator


def services() -> Services:
    return current_app.config["NANOCLAW_SERVICES"]


def clamp(value: int | None, *, default: int, maximum: int, minimum: int = 1) -> int:
    if value is None:
        return default
    return max(minimum, min(maximum, value))

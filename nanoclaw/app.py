"""The Quart-Trio application factory: routes, conventions, auth, docs."""
from __future__ import annotations

import logging

import trio
from quart import Response, request
from quart_schema import QuartSchema, hide
from quart_trio import QuartTrio
from werkzeug.exceptions import BadRequest

from nanoclaw import __version__, webui
from nanoclaw.api import BLUEPRINTS, errors
from nanoclaw.api.errors import ApiError
from nanoclaw.api.openapi import NanoclawOpenAPI
from nanoclaw.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

log = logging.getLogger("nanoclaw.app")

API_PREFIX = "/api/v1"
MAX_BODY = 1024 * 1024
# Routes that do their own verification instead of X-API-Key (every other /api/v1 route
# needs the key). The OpenAPI document holds no data: /docs reads it before any key is typed.
OPEN_PATHS = {f"{API_PREFIX}/health", f"{API_PREFIX}/channels/whatsapp/webhook", f"{API_PREFIX}/openapi.json"}
# Routes that must see the raw body before anything parses it.
RAW_BODY_PATHS = {f"{API_PREFIX}/channels/whatsapp/webhook"}


class _OpenAPI(NanoclawOpenAPI):
    open_paths = OPEN_PATHS


def create_app(services, *, manage_services: bool = False) -> QuartTrio:
    """Build the app around already-constructed services.

    manage_services: start the services inside the ASGI lifespan (used when an
    external server such as `hypercorn nanoclaw.asgi:app` runs the app); when
    `nanoclaw serve` runs it, main() owns the services and this stays False.
    """
    app = QuartTrio("nanoclaw")
    app.config["NANOCLAW_SERVICES"] = services
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    QuartSchema(
        app,
        openapi_path=f"{API_PREFIX}/openapi.json",
        swagger_ui_path=None,
        redoc_ui_path=None,
        scalar_ui_path=None,
        info={"title": "NanoClaw server", "version": __version__},
        security_schemes={"ApiKey": {"type": "apiKey", "in_": "header", "name": "X-API-Key"}},
        security=[{"ApiKey": []}],
        openapi_provider_class=_OpenAPI,
    )
    app.json.sort_keys = False
    app.asgi_app = _shield_sends(app.asgi_app)
    errors.install(app)

    @app.before_request
    async def _conventions():
        path = request.path
        if not path.startswith(API_PREFIX + "/"):
            return None
        if path not in OPEN_PATHS and await services.api_keys.required():
            if not await services.api_keys.check(request.headers.get("X-API-Key")):
                await services.audit.record(
                    "warning", "auth", f"rejected {request.method} {path}: missing or invalid API key",
                    details={"remoteAddr": request.remote_addr},
                )
                if not await services.api_keys.enabled():
                    # The last key was revoked while serving a non-loopback address: fail closed.
                    raise ApiError(401, "No API key exists and this server is not on loopback: "
                                        "create one with `nanoclaw api-key create --name NAME`")
                raise ApiError(401, "A valid X-API-Key header is required")
        if request.method in {"POST", "PUT", "PATCH"} and path not in RAW_BODY_PATHS:
            await _check_json_body()
        return None

    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint, url_prefix=API_PREFIX)

    @app.get("/health")
    @hide
    async def health_root():
        from nanoclaw.api.health import health

        return await health()

    @app.get("/metrics")
    @hide
    async def metrics():
        # Prometheus sends `Authorization: Bearer <key>` natively; X-API-Key works too.
        if await services.api_keys.required():
            bearer = request.headers.get("Authorization", "")
            key = request.headers.get("X-API-Key") or (bearer[7:] if bearer[:7].lower() == "bearer " else None)
            if not await services.api_keys.check(key):
                raise ApiError(401, "A valid X-API-Key or Authorization: Bearer header is required")
        return Response(services.metrics.text(), content_type=METRICS_CONTENT_TYPE)

    webui.install(app)

    if manage_services:
        scope_holder: list[trio.CancelScope] = []

        @app.before_serving
        async def _start_services():
            scope_holder.append(await app.nursery.start(services.serve))

        @app.after_serving
        async def _stop_services():
            for scope in scope_holder:
                scope.cancel()

    return app


def _shield_sends(asgi_app):
    """Run every ASGI send() shielded from Quart-Trio's request cancellation.

    Quart-Trio cancels its per-request nursery once the response is out. Under
    Hypercorn's trio worker, the last send() restarts the connection's keep-alive
    idle timer from inside that nursery, so the cancel kills the timer: an idle
    keep-alive connection then never closes, and Ctrl-C waits the whole graceful
    timeout for it. Hypercorn already shields the socket write itself, so this
    adds no new way to block.
    """

    async def app(scope, receive, send):
        async def shielded_send(message):
            with trio.CancelScope(shield=True):
                await send(message)

        await asgi_app(scope, receive, shielded_send)

    return app


async def _check_json_body() -> None:
    has_body = (request.content_length or 0) > 0 or "chunked" in request.headers.get(
        "Transfer-Encoding", ""
    ).lower()
    if not has_body:
        return
    if not request.is_json:
        raise ApiError(415, "Send the request body as application/json")
    try:
        await request.get_json()
    except (BadRequest, UnicodeDecodeError, RecursionError):
        # Not UTF-8, not JSON, or nested too deeply for the parser: all bad input, never a 500.
        raise ApiError(400, "The request body is not valid JSON", code="MALFORMED_JSON") from None

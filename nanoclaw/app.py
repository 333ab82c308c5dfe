"""The Quart-Trio application factory: routes, conventions, auth, docs."""
from __future__ import annotations

import functools
import logging
import signal
import threading

import trio
from quart import Response, request
from quart_schema import QuartSchema, hide
from quart_trio import QuartTrio
from werkzeug.exceptions import BadRequest

from nanoclaw import __version__, webui
from nanoclaw.api import BLUEPRINTS, errors
from nanoclaw.api.errors import ApiError
from nanoclaw.api.openapi import NanoclawOpenAPI
from nanoclaw.config import is_loopback
from nanoclaw.jsondepth import TooDeep, check_depth
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
    app.json.sort_keys = False  # type: ignore[attr-defined]  # the default provider has it
    app.make_response = _responses_as_they_are(app.make_response)  # type: ignore[method-assign]
    app.asgi_app = _shield_sends(_valid_text_path(app.asgi_app))  # type: ignore[method-assign]
    errors.install(app)

    @app.before_request
    async def _conventions():
        path = request.path
        if not path.startswith(API_PREFIX + "/"):
            return None
        if path not in OPEN_PATHS and await services.api_keys.required():
            if not await services.api_keys.check(request.headers.get("X-API-Key")):
                address = request.remote_addr or "unknown"
                wait = services.auth_guard.retry_after(address)
                await services.auth_guard.rejected(address, request.method, path, throttled=wait is not None)
                if wait is not None:
                    raise ApiError(429, f"Too many requests without a valid API key from {address}; "
                                        f"try again in {wait} s", headers={"Retry-After": str(wait)})
                if not await services.api_keys.enabled():
                    # The last key was revoked while serving a non-loopback address: fail closed.
                    raise ApiError(401, "No API key exists and this server is not on loopback: "
                                        "create one with `nanoclaw api-key create --name NAME`")
                raise ApiError(401, "A valid X-API-Key header is required")
        elif path not in OPEN_PATHS and not services.settings.allow_insecure and not _on_loopback(request.scope):
            # Auth is off, but an external server (hypercorn nanoclaw.asgi:app --bind 0.0.0.0:...)
            # took this request on a non-loopback address: refuse it, as `nanoclaw serve` would.
            address = request.remote_addr or "unknown"
            await services.auth_guard.rejected(address, request.method, path, throttled=False)
            raise ApiError(401, "No API key exists and this request arrived on a non-loopback address: "
                                "create one with `nanoclaw api-key create --name NAME`, listen on "
                                "127.0.0.1, or set NANOCLAW_ALLOW_INSECURE=1")
        if request.method in {"POST", "PUT", "PATCH"} and path not in RAW_BODY_PATHS:
            await _check_json_body()
        return None

    @app.after_request
    async def _close_if_body_unread(response):
        # An early answer (401, 415, 413, 429, 404...) leaves the rest of the body unread, and
        # the server then closes the connection: say so, so keep-alive clients do not reuse it.
        if not request.body._complete.is_set() and _has_body():
            response.headers["Connection"] = "close"
        return response

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
            app.nursery.start_soon(_stop_on_signals)

        @app.after_serving
        async def _stop_services():
            for scope in scope_holder:
                scope.cancel()

    return app


async def _stop_on_signals() -> None:
    """Under `hypercorn --workers 0` Ctrl-C and SIGTERM (systemd's stop) end the process.

    Trio's own Ctrl-C handling raises KeyboardInterrupt in whatever task runs at that
    moment, and Hypercorn swallows it when that is a request: the process then hangs.
    So both signals are taken here, and the KeyboardInterrupt is raised from Trio's own
    (protected) code, which hands it to the main task: Hypercorn stops, the lifespan ends
    and the services stop. A spawned Hypercorn worker ignores SIGINT: its parent process
    handles the stop, so nothing is done there.
    """
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        return
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("%s received: stopping", signal.Signals(signum).name)
            break
    trio.lowlevel.current_trio_token().run_sync_soon(signal.raise_signal, signal.SIGINT)


def _on_loopback(scope) -> bool:
    """Did the request arrive on a loopback address? (scope["server"] is the listening side;
    None, e.g. a Unix socket, counts as local.)"""
    server = scope.get("server")
    return not server or _is_loopback(str(server[0]))


# Parsing the address costs more than the rest of the request checks; few distinct ones arrive.
_is_loopback = functools.lru_cache(maxsize=1024)(is_loopback)


def _responses_as_they_are(make_response):
    """quart-schema converts every handler's return value (models to dicts); a Response (the
    answer of the polled routes, nanoclaw.api._common.answers) passes its conversion unchanged,
    so it skips it."""
    unconverted = make_response.__wrapped__

    @functools.wraps(make_response)
    async def app_make_response(result):
        if isinstance(result, Response):
            return await unconverted(result)
        return await make_response(result)

    return app_make_response


def _valid_text_path(asgi_app):
    """A path that is not valid Unicode text (an ASGI server may decode raw bytes with
    surrogateescape) gets U+FFFD for each bad byte, so routing answers with the JSON
    envelope instead of failing with a 500."""

    async def app(scope, receive, send):
        path = scope.get("path")
        if isinstance(path, str) and not path.isascii():
            try:
                path.encode("utf-8")
            except UnicodeEncodeError:
                try:
                    data = path.encode("utf-8", "surrogateescape")
                except UnicodeEncodeError:  # a lone surrogate that escapes no byte
                    data = path.encode("utf-8", "replace")
                scope = dict(scope, path=data.decode("utf-8", "replace"))
        await asgi_app(scope, receive, send)

    return app


def _shield_sends(asgi_app):
    """Run the last ASGI send() of a response shielded from Quart-Trio's request cancellation.

    Quart-Trio cancels its per-request nursery once the response is out. Under
    Hypercorn's trio worker, the last send() restarts the connection's keep-alive
    idle timer from inside that nursery, so the cancel kills the timer: an idle
    keep-alive connection then never closes, and Ctrl-C waits the whole graceful
    timeout for it. Hypercorn already shields the socket write itself, so this
    adds no new way to block. The other sends need no shield (a cancel scope per
    send is a measurable part of a small request).
    """

    async def app(scope, receive, send):
        async def shielded_send(message):
            if message.get("more_body") or message.get("type") != "http.response.body":
                await send(message)
                return
            with trio.CancelScope(shield=True):
                await send(message)

        await asgi_app(scope, receive, shielded_send)

    return app


def _has_body() -> bool:
    return (request.content_length or 0) > 0 or "chunked" in request.headers.get("Transfer-Encoding", "").lower()


async def _check_json_body() -> None:
    if not _has_body():
        return
    if not request.is_json:
        raise ApiError(415, "Send the request body as application/json")
    try:
        check_depth(await request.get_data())
    except TooDeep as exc:
        raise ApiError(400, f"The request body {exc}", code="MALFORMED_JSON") from None
    try:
        await request.get_json()
    except (BadRequest, UnicodeDecodeError, RecursionError):
        # Not UTF-8, not JSON, or nested too deeply for the parser: all bad input, never a 500.
        raise ApiError(400, "The request body is not valid JSON", code="MALFORMED_JSON") from None

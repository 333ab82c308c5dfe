"""Browser pages served by the app itself: /docs (Swagger UI, offline) and /dashboard/.

Every file comes from this package or from the swagger-ui-bundle package: no CDN.
"""
from __future__ import annotations

import re
from importlib import resources

import trio
from quart import Quart, Response, redirect
from quart_schema import hide
from swagger_ui_bundle import swagger_ui_path

from nanoclaw.webui._reference import render_reference

__all__ = ["install", "static_file"]

STATIC = resources.files("nanoclaw.webui") / "static"
# The Swagger UI files /docs needs, from the packaged distribution.
SWAGGER_FILES = {"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "favicon-16x16.png"}
CONTENT_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".html": "text/html; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}
SAFE_NAME = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9]+)+$")
CACHE_SECONDS = 300
_cache: dict[str, bytes] = {}

DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>NanoClaw API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png">
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head><body>
<p style="font-family:sans-serif;margin:1em 2em">Plain HTML reference: <a href="/docs/reference">/docs/reference</a>
&middot; console: <a href="/dashboard/">/dashboard/</a></p>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/docs.js"></script>
</body></html>
"""


def _content_type(name: str) -> str:
    return CONTENT_TYPES.get(name[name.rfind("."):], "application/octet-stream")


async def _read(key: str, path) -> bytes | None:
    """A packaged file's bytes, read once off the event loop and kept (they never change)."""
    data = _cache.get(key)
    if data is None:
        def _load():
            try:
                return path.read_bytes()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                return None

        data = await trio.to_thread.run_sync(_load)
        if data is None:
            return None
        _cache[key] = data
    return data


async def _file(key: str, path, name: str) -> Response:
    data = await _read(key, path)
    if data is None:
        from nanoclaw.errors import NotFound

        raise NotFound(f"No file {name!r}")
    response = Response(data, content_type=_content_type(name))
    response.headers["Cache-Control"] = f"public, max-age={CACHE_SECONDS}"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


async def static_file(name: str) -> Response:
    """A file of nanoclaw/webui/static (only plain names: no folders, no '..')."""
    from nanoclaw.errors import NotFound

    if not SAFE_NAME.match(name):
        raise NotFound(f"No file {name!r}")
    return await _file(f"static/{name}", STATIC / name, name)


def install(app: Quart) -> None:
    @app.get("/docs")
    @hide
    async def docs():
        response = Response(DOCS_PAGE, content_type="text/html; charset=utf-8")
        response.headers["Cache-Control"] = "no-cache"
        return response

    @app.get("/docs/reference")
    @hide
    async def docs_reference():
        document = app.extensions["QUART_SCHEMA"].openapi_provider.schema()
        return Response(render_reference(document), content_type="text/html; charset=utf-8")

    @app.get("/docs/assets/<name>")
    @hide
    async def docs_asset(name: str):
        if name in SWAGGER_FILES:
            return await _file(f"swagger/{name}", swagger_ui_path / name, name)
        return await static_file(name)

    @app.get("/dashboard")
    @hide
    async def dashboard_redirect():
        return redirect("/dashboard/", 308)

    @app.get("/dashboard/")
    @hide
    async def dashboard_index():
        response = await static_file("dashboard.html")
        response.headers["Cache-Control"] = "no-cache"
        return response

    @app.get("/dashboard/<name>")
    @hide
    async def dashboard_asset(name: str):
        return await static_file(name)

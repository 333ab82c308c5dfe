"""/docs/reference: a plain HTML reference built from the OpenAPI document (readable with curl)."""
from __future__ import annotations

import html
import json

def render_reference(document: dict) -> str:
    """A plain HTML reference built from the OpenAPI document: readable with curl, no CDN."""
    out = [
        "<!doctype html><html><head><meta charset='utf-8'><title>NanoClaw API</title>",
        "<style>body{font-family:sans-serif;max-width:70em;margin:auto}pre{background:#f4f4f4;"
        "padding:.5em;overflow:auto}h3{margin-bottom:.2em}</style></head><body>",
        f"<h1>NanoClaw API {html.escape(document['info']['version'])}</h1>",
        "<p>Machine-readable: <a href='/api/v1/openapi.json'>/api/v1/openapi.json</a>. "
        "Send <code>X-API-Key</code> when auth is on.</p>",
    ]
    for path, operations in sorted(document.get("paths", {}).items()):
        for method, op in operations.items():
            out.append(f"<h3>{method.upper()} {html.escape(path)}</h3>")
            if op.get("summary") or op.get("description"):
                out.append(f"<p>{html.escape(op.get('summary') or op.get('description'))}</p>")
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body:
                out.append(f"<p>Request body:</p><pre>{html.escape(json.dumps(body, indent=1))}</pre>")
            for status, resp in op.get("responses", {}).items():
                schema = resp.get("content", {}).get("application/json", {}).get("schema")
                text = html.escape(json.dumps(schema, indent=1)) if schema else ""
                out.append(f"<p>{status} {html.escape(resp.get('description', ''))}</p>")
                if text:
                    out.append(f"<pre>{text}</pre>")
    schemas = document.get("components", {}).get("schemas", {})
    if schemas:
        out.append("<h2>Models</h2>")
        for name, schema in sorted(schemas.items()):
            out.append(f"<h3 id='{html.escape(name)}'>{html.escape(name)}</h3>")
            out.append(f"<pre>{html.escape(json.dumps(schema, indent=1))}</pre>")
    out.append("</body></html>")
    return "\n".join(out)

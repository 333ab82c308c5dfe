"""The OpenAPI document: generated from the pydantic models, plus what every operation shares."""
from __future__ import annotations

from typing import Any

from quart_schema.openapi import OpenAPIProvider

ERROR_SCHEMA = {
    "type": "object",
    "title": "ErrorEnvelope",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "Machine-readable, e.g. NOT_FOUND, VALIDATION_ERROR"},
                "message": {"type": "string", "description": "What went wrong and what to do about it"},
                "details": {"description": "Offending fields or other specifics, when there are any"},
            },
        }
    },
}


# Streaming answers (Server-Sent Events): path -> what the stream carries.
EVENT_STREAMS = {"/api/v1/events": "Server-Sent Events: `id`, `event` (the type) and `data` (JSON) per message"}

# Operation tags come from the blueprint's name; these read better than the name itself.
TAG_NAMES = {"ipc": "IPC", "proxy": "Credential proxy", "senders": "Sender allowlist", "audit": "Audit log"}


class NanoclawOpenAPI(OpenAPIProvider):
    """Adds the error envelope as every operation's `default` answer, tags every operation
    with its blueprint, and marks open routes."""

    open_paths: set[str] = set()

    def build_paths(self, rule):
        paths, components = super().build_paths(rule)
        blueprint = rule.endpoint.rsplit(".", 1)[0] if "." in rule.endpoint else "server"
        tag = TAG_NAMES.get(blueprint, blueprint.replace("_", " ").capitalize())
        for operations in paths.values():
            for operation in operations.values():
                if isinstance(operation, dict) and not operation.get("tags"):
                    operation["tags"] = [tag]
        return paths, components

    def schema(self) -> dict[str, Any]:
        document = super().schema()
        document.setdefault("components", {}).setdefault("schemas", {})["ErrorEnvelope"] = ERROR_SCHEMA
        error = {
            "description": "Any error: 4xx for bad input, 5xx when a dependency is down",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}},
        }
        for path, operations in document.get("paths", {}).items():
            for method, operation in operations.items():
                if isinstance(operation, dict) and "responses" in operation:
                    responses = operation["responses"]
                    if method == "delete" and not any(code.startswith("2") for code in responses):
                        responses["204"] = {"description": "Deleted; no body"}
                    if path in EVENT_STREAMS and method == "get":
                        responses["200"] = {"description": EVENT_STREAMS[path],
                                            "content": {"text/event-stream": {"schema": {"type": "string"}}}}
                    responses.setdefault("default", error)
                    if path in self.open_paths:
                        operation["security"] = []
        return document

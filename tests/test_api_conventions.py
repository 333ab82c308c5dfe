"""API conventions (issue 2, item 6): the error envelope, body limits, health, OpenAPI and /docs."""
from __future__ import annotations

import os
import re

import pytest

from checks import assert_error, error_fields
from nanoclaw import __version__

JSON = {"content-type": "application/json"}
MIB = 1024 * 1024

# Every endpoint of issue 2: (method, OpenAPI path, request model, response model).
ISSUE_2_OPERATIONS = [
    ("get", "/api/v1/health", None, "Health"),
    ("get", "/api/v1/container/namespaces", None, "NamespaceList"),
    ("post", "/api/v1/container/namespaces", "NamespaceCreate", "Namespace"),
    ("get", "/api/v1/container/namespaces/{name}", None, "NamespaceDetail"),  # Namespace + imageFlavor
    ("put", "/api/v1/container/namespaces/{name}", "NamespaceUpdate", "Namespace"),
    ("delete", "/api/v1/container/namespaces/{name}", None, None),
    ("get", "/api/v1/container/namespaces/{name}/instructions", None, "InstructionsAnswer"),
    ("put", "/api/v1/container/namespaces/{name}/instructions", "Instructions", "InstructionsAnswer"),
    ("post", "/api/v1/container/namespaces/merge-instructions", "MergeRequest", "Merged"),
    ("post", "/api/v1/container/mount/validate", "MountRequest", "MountDecision"),
    ("get", "/api/v1/container/mount/allowlist", None, "MountAllowlist"),
    ("put", "/api/v1/container/mount/allowlist", "MountAllowlist", "MountAllowlist"),
    ("get", "/api/v1/channels/sender-allowlist", None, "SenderAllowlistModel"),
    ("put", "/api/v1/channels/sender-allowlist", "SenderAllowlistModel", "SenderAllowlistModel"),
    ("get", "/api/v1/container/audit-log", None, "AuditLog"),
]


# -- health -------------------------------------------------------------------

async def test_health_answers_status_version_and_auth_off(client):
    answer = await client.get("/health")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "version": __version__, "auth": False,
                             "runningAsRoot": os.geteuid() == 0}


async def test_health_is_also_served_at_the_root(server, client):
    answer = await client.get(server.url + "/health")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "version": __version__, "auth": False,
                             "runningAsRoot": os.geteuid() == 0}


# -- the error envelope -------------------------------------------------------

async def test_unknown_api_route_is_a_404_envelope(client):
    assert_error(await client.get("/no/such/thing"), 404, "NOT_FOUND")


async def test_unknown_route_outside_the_api_is_a_json_404_not_html(server, client):
    answer = await client.get(server.url + "/no-such-page", headers={"accept": "text/html"})
    assert_error(answer, 404, "NOT_FOUND")
    assert "<html" not in answer.text.lower()


async def test_wrong_method_is_a_405_envelope_with_allow_header(client):
    answer = await client.delete("/container/audit-log")
    assert_error(answer, 405, "METHOD_NOT_ALLOWED")
    assert "GET" in answer.headers["allow"]


async def test_wrong_method_on_a_write_route_is_a_405_envelope(client):
    assert_error(await client.patch("/container/namespaces", json={}), 405, "METHOD_NOT_ALLOWED")


async def test_body_over_one_mebibyte_is_a_413_envelope(client):
    body = b'{"name": "big", "description": "' + b"x" * MIB + b'"}'
    assert_error(await client.post("/container/namespaces", content=body, headers=JSON), 413,
                 "PAYLOAD_TOO_LARGE")


async def test_chunked_body_over_one_mebibyte_is_a_413_envelope(client):
    async def chunks():
        for _ in range(11):
            yield b" " * (MIB // 10)

    answer = await client.post("/container/namespaces", content=chunks(), headers=JSON)
    assert_error(answer, 413, "PAYLOAD_TOO_LARGE")


async def test_body_just_under_one_mebibyte_is_not_refused_for_size(client):
    padding = b" " * (MIB - 100)
    answer = await client.post("/container/namespaces", content=b'{"name": "fits"}' + padding, headers=JSON)
    assert answer.status_code == 201, answer.text


async def test_wrong_content_type_is_a_415_envelope(client):
    answer = await client.post("/container/namespaces", content=b"name=x",
                               headers={"content-type": "application/x-www-form-urlencoded"})
    assert_error(answer, 415, "UNSUPPORTED_MEDIA_TYPE")


async def test_text_plain_json_is_a_415_envelope(client):
    answer = await client.put("/channels/sender-allowlist", content=b'{"enabled": false}',
                              headers={"content-type": "text/plain"})
    assert_error(answer, 415, "UNSUPPORTED_MEDIA_TYPE")


@pytest.mark.parametrize("body", [
    pytest.param(b'{"name": ', id="truncated"),
    pytest.param(b"{'name': 'x'}", id="single-quotes"),
    pytest.param(b"\xff\xfe\x00{", id="not-utf8"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, id="nested-too-deep"),
    pytest.param(b'{"name": "a"} trailing', id="trailing-garbage"),
])
async def test_malformed_json_is_a_400_envelope(client, body):
    answer = await client.post("/container/namespaces", content=body, headers=JSON)
    assert_error(answer, 400, "MALFORMED_JSON")


async def test_schema_violation_is_a_400_naming_every_offending_field(client):
    answer = await client.post("/container/namespaces", json={
        "name": "bad name", "isMain": "perhaps", "containerConfig": {"timeoutSecs": 1},
    })
    error = assert_error(answer, 400, "VALIDATION_ERROR")
    assert error_fields(error) == {"name", "isMain", "containerConfig.timeoutSecs"}
    for field in ("name", "isMain", "containerConfig.timeoutSecs"):
        assert field in error["message"]


async def test_unknown_field_is_a_400_naming_it(client):
    error = assert_error(await client.post("/container/namespaces", json={"name": "a", "colour": "red"}),
                         400, "VALIDATION_ERROR")
    assert error_fields(error) == {"colour"}


async def test_missing_required_field_is_a_400_naming_it(client):
    error = assert_error(await client.post("/container/namespaces", json={"description": "x"}),
                         400, "VALIDATION_ERROR")
    assert error_fields(error) == {"name"}


async def test_missing_body_is_a_400_envelope(client):
    assert_error(await client.post("/container/namespaces"), 400, "VALIDATION_ERROR")


async def test_invalid_query_parameter_is_a_400_naming_it(client):
    error = assert_error(await client.get("/container/audit-log", params={"limit": "many"}), 400,
                         "VALIDATION_ERROR")
    assert error_fields(error) == {"limit"}


NOT_AN_OBJECT = [b"[]", b'"text"', b"42", b"null", b"true"]
WRITE_ROUTES = [
    ("POST", "/container/namespaces"),
    ("PUT", "/container/namespaces/existing"),
    ("PUT", "/container/namespaces/existing/instructions"),
    ("PUT", "/container/namespaces/global/instructions"),
    ("POST", "/container/namespaces/merge-instructions"),
    ("POST", "/container/mount/validate"),
    ("PUT", "/container/mount/allowlist"),
    ("PUT", "/channels/sender-allowlist"),
]


@pytest.mark.parametrize("method,path", WRITE_ROUTES)
async def test_a_json_body_that_is_not_an_object_is_a_400_on_every_write_route(client, method, path):
    assert (await client.post("/container/namespaces", json={"name": "existing"})).status_code == 201
    for body in NOT_AN_OBJECT:
        answer = await client.request(method, path, content=body, headers=JSON)
        assert_error(answer, 400, "VALIDATION_ERROR")


@pytest.mark.parametrize("method,path", WRITE_ROUTES)
async def test_wrongly_typed_fields_are_a_400_on_every_write_route(client, method, path):
    assert (await client.post("/container/namespaces", json={"name": "existing"})).status_code == 201
    wrong = {"name": ["x"], "description": 5, "chatJids": "tg:1", "instructions": 7, "groupName": None,
             "hostPath": 1, "containerPath": {}, "readOnly": "sometimes", "allowedRoots": "/",
             "blockedPatterns": 3, "enabled": "maybe", "entries": {}}
    answer = await client.request(method, path, json=wrong)
    assert_error(answer, 400, "VALIDATION_ERROR")


# -- OpenAPI and /docs --------------------------------------------------------

def _schema_title(schema: dict | None, document: dict) -> str | None:
    if not schema:
        return None
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    return schema.get("title")


async def test_openapi_document_lists_every_issue_2_endpoint_with_its_models(client):
    answer = await client.get("/openapi.json")
    assert answer.status_code == 200
    document = answer.json()
    for method, path, request_model, response_model in ISSUE_2_OPERATIONS:
        operation = document["paths"].get(path, {}).get(method)
        assert operation is not None, f"{method.upper()} {path} is missing"
        if request_model:
            schema = operation["requestBody"]["content"]["application/json"]["schema"]
            assert _schema_title(schema, document) == request_model, (method, path)
        if response_model:
            answers = {status: r for status, r in operation["responses"].items() if status.startswith("2")}
            titles = {_schema_title(r.get("content", {}).get("application/json", {}).get("schema"), document)
                      for r in answers.values()}
            assert response_model in titles, (method, path, titles)


async def test_openapi_document_defines_every_referenced_model(client):
    document = (await client.get("/openapi.json")).json()
    referenced = set(re.findall(r'"#/components/schemas/([^"]+)"', (await client.get("/openapi.json")).text))
    assert referenced <= set(document["components"]["schemas"])
    assert {"Namespace", "ContainerConfig", "MountRequest", "AuditEntry", "SenderEntry"} <= referenced


async def test_docs_reference_lists_every_issue_2_operation_and_model(server, client):
    answer = await client.get(server.url + "/docs/reference")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    page = answer.text
    for method, path, request_model, response_model in ISSUE_2_OPERATIONS:
        assert f"{method.upper()} {path}" in page
        for model in (request_model, response_model):
            if model:
                assert model in page, model
    for model in ("Namespace", "ContainerConfig", "MountRequest", "AuditEntry", "SenderEntry"):
        assert f"<h3 id='{model}'>" in page


async def test_docs_pages_need_no_external_assets(server, client):
    for path in ("/docs", "/docs/reference"):
        page = (await client.get(server.url + path)).text
        assert not re.search(r"""(src|href)=['"]https?://""", page)

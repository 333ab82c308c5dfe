"""/docs is Swagger UI served entirely by this server; the OpenAPI document is open and complete."""
from __future__ import annotations

import re


async def test_docs_page_and_every_asset_it_names_come_from_this_server(server, client):
    page = await client.get(server.url + "/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    assert "/docs/assets/swagger-ui-bundle.js" in assets and "/docs/assets/swagger-ui.css" in assets
    for asset in assets:
        assert asset.startswith("/"), f"{asset} is not served by this server"
        answer = await client.get(server.url + asset)
        assert answer.status_code == 200, asset
    init = (await client.get(server.url + "/docs/assets/docs.js")).text
    assert '"/api/v1/openapi.json"' in init and "validatorUrl: null" in init
    bundle = await client.get(server.url + "/docs/assets/swagger-ui-bundle.js")
    assert bundle.headers["content-type"].startswith("text/javascript") and len(bundle.content) > 100_000


async def test_asset_names_cannot_leave_the_package(server, client):
    for name in ("..%2F__init__.py", "%2E%2E", "x.js", "__init__.py"):
        answer = await client.get(server.url + "/docs/assets/" + name)
        assert answer.status_code == 404, name


async def test_every_operation_has_a_tag_a_summary_and_the_api_key_scheme(client):
    document = (await client.get("/openapi.json")).json()
    assert document["components"]["securitySchemes"]["ApiKey"] == {"type": "apiKey", "in": "header",
                                                                   "name": "X-API-Key"}
    missing = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if not operation.get("tags") or not operation.get("summary"):
                missing.append(f"{method.upper()} {path}")
    assert not missing, missing
    tags = {t for ops in document["paths"].values() for op in ops.values() for t in op["tags"]}
    assert {"Namespaces", "Events", "Credential proxy", "Schedules", "Runs"} <= tags

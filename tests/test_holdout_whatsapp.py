"""Issue 12, items 6 and 11: WhatsApp connect without appSecret (the spec's body), validate
with no body, and a signed delivery nested too deep for a parser."""
from __future__ import annotations

import httpx
import pytest

from channel_support import wa, webhook  # noqa: F401  (fixtures)
from checks import assert_error
from conftest import make_settings
from fakes.whatsapp import ACCESS_TOKEN, APP_SECRET, PHONE_NUMBER_ID, VERIFY_TOKEN, sign, text_delivery

SPEC_BODY = {"phoneNumberId": PHONE_NUMBER_ID, "accessToken": ACCESS_TOKEN, "webhookVerifyToken": VERIFY_TOKEN}


@pytest.fixture
async def settings(tmp_path, wa):
    return make_settings(tmp_path, whatsapp_api_base=wa.api_url)


async def test_connect_with_exactly_the_spec_body_works_and_says_how_to_add_the_secret(server, wa, webhook):
    answer = await server.client.post("/channels/whatsapp/connect", json=SPEC_BODY)
    assert answer.status_code == 200, answer.text
    details = answer.json()
    assert details["connected"] is True
    assert "appSecret" in details["statusMessage"] and "refused" in details["statusMessage"]
    assert "appSecret" not in details["credentials"]
    # Webhook verification works without the secret...
    async with httpx.AsyncClient() as http:
        check = await http.get(webhook, params={"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN,
                                                "hub.challenge": "42"})
    assert check.status_code == 200 and check.text == "42"
    # ...sending too...
    sent = await server.client.post("/channels/messages", json={"chatJid": "wa:15551230000", "content": "hi"})
    assert sent.status_code == 201, sent.text
    # ...but a delivery cannot be verified: refused, with a clear, audited reason.
    refused = await wa.deliver(webhook, text_delivery("15551230000", "hello", "wamid.1"))
    error = assert_error(refused, 403, "APP_SECRET_MISSING")
    assert "appSecret" in error["message"]
    entries = (await server.client.get("/container/audit-log")).json()["entries"]
    assert any("appSecret" in e["message"] and e["category"] == "channel" for e in entries)
    summary = (await server.client.get("/channels")).json()["channels"]
    assert any(c["name"] == "whatsapp" and "appSecret" in c["statusMessage"] for c in summary)


async def test_connect_with_the_app_secret_has_no_notice(server):
    answer = await server.client.post("/channels/whatsapp/connect", json=SPEC_BODY | {"appSecret": APP_SECRET})
    assert answer.json()["statusMessage"] == "Connected as Test Business (+1 555-010-0000)"


async def test_validate_with_no_body_checks_the_stored_credentials(server, wa):
    assert_error(await server.client.post("/channels/whatsapp/validate"), 400, "NOT_CONFIGURED")
    assert (await server.client.post("/channels/whatsapp/connect", json=SPEC_BODY)).status_code == 200
    answer = await server.client.post("/channels/whatsapp/validate")
    assert answer.status_code == 200, answer.text
    assert answer.json()["valid"] is True and answer.json()["accountName"].startswith("Test Business")
    wa.token = "rotated"  # the platform no longer takes the stored token
    answer = await server.client.post("/channels/whatsapp/validate")
    assert answer.json()["valid"] is False and "Invalid OAuth" in answer.json()["message"]


async def test_validate_with_a_body_still_checks_the_fields(server):
    error = assert_error(await server.client.post("/channels/whatsapp/validate", json={"phoneNumberId": "x"}),
                         400, "VALIDATION_ERROR")
    assert "accessToken" in error["message"]


async def test_a_signed_delivery_nested_100000_deep_is_a_400_not_a_500(server, webhook):
    answer = await server.client.post("/channels/whatsapp/connect", json=SPEC_BODY | {"appSecret": APP_SECRET})
    assert answer.status_code == 200, answer.text
    raw = b"[" * 100_000 + b"]" * 100_000
    async with httpx.AsyncClient() as http:
        answer = await http.post(webhook, content=raw, headers={"Content-Type": "application/json",
                                                                "X-Hub-Signature-256": sign(raw)})
    error = assert_error(answer, 400)
    assert "64" in error["message"]

"""WhatsApp Cloud API against a fake Graph API, with deliveries signed like Meta's."""
from __future__ import annotations

import pytest

from channel_support import WHATSAPP_CREDENTIALS as CREDENTIALS
from channel_support import notified, wa, webhook  # noqa: F401  (fixtures)
from conftest import make_settings
from fakes.whatsapp import APP_SECRET, PHONE_NUMBER_ID, VERIFY_TOKEN, sign, text_delivery

CUSTOMER = "15551230000"


@pytest.fixture
async def settings(tmp_path, wa):
    return make_settings(tmp_path, whatsapp_api_base=wa.api_url)


@pytest.fixture
async def connected(server):
    r = await server.client.post("/channels/whatsapp/connect", json=CREDENTIALS)
    assert r.status_code == 200, r.text
    r = await server.client.post("/container/namespaces", json={"name": "sales", "chatJids": [f"wa:{CUSTOMER}"]})
    assert r.status_code == 201, r.text
    return server


async def stored(server) -> list[dict]:
    return (await server.client.get(f"/channels/chats/wa:{CUSTOMER}/messages")).json()["messages"]


async def test_validate_an_unknown_phone_number_says_it_does_not_exist(client):
    r = await client.post("/channels/whatsapp/validate", json=CREDENTIALS | {"phoneNumberId": "1"})
    assert r.json()["valid"] is False and "does not exist" in r.json()["message"]


async def test_webhook_verification_answers_the_challenge_as_plain_text(connected, webhook):
    params = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1158201444"}
    r = await connected.client.get(webhook, params=params)
    assert r.status_code == 200
    assert r.text == "1158201444"
    assert r.headers["content-type"].startswith("text/plain")


async def test_webhook_verification_with_a_wrong_token_or_mode_is_403(connected, webhook):
    for params in ({"hub.mode": "subscribe", "hub.verify_token": "guess", "hub.challenge": "1"},
                   {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1"},
                   {"hub.verify_token": VERIFY_TOKEN}):
        r = await connected.client.get(webhook, params=params)
        assert r.status_code == 403, params
        assert r.json()["error"]["code"] == "FORBIDDEN"


async def test_a_signed_delivery_is_stored_and_routed(connected, webhook, wa, notified):
    r = await wa.deliver(webhook, text_delivery(CUSTOMER, "do you ship to Oslo?", "wamid.A1", name="Bob"))
    assert r.status_code == 200
    assert r.json() == {"received": 1}
    [message] = await stored(connected)
    assert (message["sender"], message["senderName"], message["content"]) == (
        f"wa:{CUSTOMER}", "Bob", "do you ship to Oslo?")
    assert notified == ["sales"]  # one-to-one chats are always addressed to the bot
    assert "do you ship to Oslo?" in (await connected.services.feed.pending("sales")).prompt


async def test_a_bad_signature_is_401_and_stores_nothing(connected, webhook, wa, notified):
    r = await wa.deliver(webhook, text_delivery(CUSTOMER, "forged", "wamid.F1"), secret="not-the-app-secret")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "BAD_SIGNATURE"
    r = await wa.deliver(webhook, text_delivery(CUSTOMER, "forged", "wamid.F2"), secret=None)
    assert r.status_code == 401
    signed_other_body = sign(b'{"object": "whatsapp_business_account", "entry": []}')
    r = await wa.deliver(webhook, text_delivery(CUSTOMER, "forged", "wamid.F3"), signature=signed_other_body)
    assert r.status_code == 401
    assert await stored(connected) == []
    assert notified == []
    audit = (await connected.client.get("/container/audit-log", params={"severity": "violation"})).json()
    assert len(audit["entries"]) == 3
    assert APP_SECRET not in str(audit)


async def test_a_replayed_delivery_is_ignored(connected, webhook, wa, notified):
    delivery = text_delivery(CUSTOMER, "only once please", "wamid.R1")
    for _ in range(3):
        r = await wa.deliver(webhook, delivery)
        assert r.status_code == 200
    assert [m["content"] for m in await stored(connected)] == ["only once please"]
    assert notified == ["sales"]


async def test_status_updates_and_other_numbers_store_nothing(connected, webhook, wa):
    statuses = {"object": "whatsapp_business_account", "entry": [{"id": "X", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"phone_number_id": PHONE_NUMBER_ID},
        "statuses": [{"id": "wamid.out1", "status": "delivered", "recipient_id": CUSTOMER}]}}]}]}
    r = await wa.deliver(webhook, statuses)
    assert r.status_code == 200 and r.json() == {"received": 0}
    r = await wa.deliver(webhook, text_delivery(CUSTOMER, "not for us", "wamid.O1", phone_number_id="999"))
    assert r.status_code == 200 and r.json() == {"received": 0}
    assert await stored(connected) == []


async def test_a_signed_body_that_is_not_a_delivery_is_400(connected, webhook, wa):
    r = await wa.deliver(webhook, {"hello": "world"})
    assert r.status_code == 400


async def test_sending_goes_through_the_graph_api_and_is_stored(connected, wa):
    r = await connected.client.post("/channels/messages", json={"chatJid": f"wa:{CUSTOMER}", "content": "We do!"})
    assert r.status_code == 201, r.text
    assert wa.sent == [{"messaging_product": "whatsapp", "recipient_type": "individual", "to": CUSTOMER,
                        "type": "text", "text": {"body": "We do!"}}]
    assert [(m["content"], m["isFromBot"]) for m in await stored(connected)] == [("We do!", True)]

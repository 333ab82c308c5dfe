"""A replaced or lost secret.key: the server keeps running and says what cannot be read."""
from __future__ import annotations

import trio

from conftest import make_settings, start_server
from fakes.telegram import TOKEN, serve_fake_telegram


async def test_a_server_with_another_secret_key_starts_and_names_what_it_cannot_read(nursery, tmp_path):
    tg = await nursery.start(serve_fake_telegram)
    settings = make_settings(tmp_path, telegram_api_base=tg.url)
    async with trio.open_nursery() as first:
        server = await start_server(first, settings)
        r = await server.client.post("/container/credential-proxy/mappings", json={
            "name": "anthropic", "upstreamUrl": "http://127.0.0.1:9", "credentialType": "api_key",
            "credential": "sk-sealed-with-the-old-key"})
        assert r.status_code == 201
        assert (await server.client.post("/channels/telegram/connect", json={"token": TOKEN})).status_code == 200
        await server.client.aclose()
        first.cancel_scope.cancel()
    key = settings.config_dir / "secret.key"
    key.unlink()  # e.g. a config dir restored without its key file

    server = await start_server(nursery, settings)
    assert (await server.client.get("/health")).status_code == 200
    telegram = (await server.client.get("/channels/telegram")).json()
    assert telegram["connected"] is False and "cannot be decrypted" in telegram["statusMessage"]
    mappings = (await server.client.get("/container/credential-proxy/mappings")).json()["mappings"]
    assert mappings == []
    await server.client.aclose()

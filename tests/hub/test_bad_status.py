"""Bad status messages are logged once each and ignored; the hub keeps consuming."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import aiomqtt

from hub.stores import add_store, list_stores
from protocol import Status, encode, topics
from tests.conftest import BrokerSetup, hub_settings, running_hub


async def test_bad_status_is_logged_once_and_ignored(tmp_path, database_url, mosquitto_factory, caplog):
    mosq = mosquitto_factory(secure=False)
    setup = BrokerSetup("mosquitto", {"mqtt": {"host": "127.0.0.1", "port": mosq.port}})
    caplog.set_level(logging.WARNING, logger="hub")
    async with running_hub(hub_settings(tmp_path, database_url, setup)) as hub:
        await add_store(hub.db, "good")
        bad = [
            ("storelink/v1/good/status", b"{not json"),
            ("storelink/v1/good/status", b'{"online": "perhaps"}'),
            ("storelink/v1/good/status", b"\xff\xfe"),
            ("storelink/v1/Bad_Store!/status", b'{"online": true}'),
            ("storelink/v1/good/status", b'{"online": true, "store": "other"}'),
        ]
        async with aiomqtt.Client("127.0.0.1", mosq.port) as client:
            for topic, payload in bad:
                await client.publish(topic, payload, qos=1)
            good = Status(online=True, store="good", epoch=1)
            await client.publish(topics.status("good"), encode(good), qos=1)
        async with asyncio.timeout(5):
            while not any(v.online for v in await list_stores(hub.db, stale_after=timedelta(minutes=1))):
                await asyncio.sleep(0.05)
        assert hub.link.connected.is_set()
    ignored = [r for r in caplog.records if r.getMessage().startswith("ignoring message on")]
    assert len(ignored) == len(bad)
    assert {r.levelno for r in ignored} == {logging.WARNING}
    assert not any(r.exc_info for r in caplog.records)
    assert "Bad_Store!" in ignored[3].getMessage()

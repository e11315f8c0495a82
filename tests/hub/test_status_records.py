"""How statuses become a store's online state, and a link that no error can stop."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import aiomqtt
import pytest

from hub import link as link_module
from hub.db import Database, migrate
from hub.link import BrokerLink, MqttTarget
from hub.stores import add_store, list_stores, record_status
from protocol import Status, encode, topics

STALE = timedelta(minutes=2)


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    await add_store(database, "shop-1")
    yield database
    await database.close()


async def _view(db):
    return (await list_stores(db, stale_after=STALE))[0]


async def test_retained_replay_does_not_make_a_dead_store_fresh(db):
    old = datetime.now(UTC) - timedelta(hours=3)
    await record_status(db, "shop-1", Status(online=True, ts=old), retained=True)
    view = await _view(db)
    assert view.online is False  # its last word is three hours old
    assert view.last_seen == old
    await record_status(db, "shop-1", Status(online=True, ts=old))  # live message: fresh now
    assert (await _view(db)).online is True


async def test_offline_will_keeps_last_seen(db):
    await record_status(db, "shop-1", Status(online=True, epoch=2))
    seen = (await _view(db)).last_seen
    await record_status(db, "shop-1", Status(online=False))
    view = await _view(db)
    assert (view.online, view.last_seen, view.epoch) == (False, seen, 2)


async def test_link_survives_database_and_unexpected_errors(db, mosquitto_factory, monkeypatch, caplog):
    mosq = mosquitto_factory(secure=False)
    failures = [ConnectionRefusedError("database down"), RuntimeError("bug")]
    real = link_module.record_status

    async def flaky(*args, **kwargs):
        if failures:
            raise failures.pop(0)
        await real(*args, **kwargs)

    monkeypatch.setattr(link_module, "record_status", flaky)
    caplog.set_level(logging.WARNING, logger="hub")
    async with BrokerLink(db, MqttTarget("127.0.0.1", mosq.port)) as link:
        async with asyncio.timeout(5):
            await link.connected.wait()
        async with aiomqtt.Client("127.0.0.1", mosq.port) as edge:
            for _ in range(3):
                await edge.publish(topics.status("shop-1"), encode(Status(online=True)), qos=1)
        async with asyncio.timeout(5):
            while not (await _view(db)).online:
                await asyncio.sleep(0.05)
        assert link.connected.is_set()
    messages = [r.getMessage() for r in caplog.records]
    assert any("database down" in m for m in messages)
    assert any("could not handle message" in m for m in messages)

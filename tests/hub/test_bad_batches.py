"""Malformed event batches are rejected with a logged reason and counted; ingest keeps running."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid

import aiomqtt
from sqlalchemy import func, select

from hub.models import HubOrder
from hub.stores import add_store
from protocol import encode, topics
from tests.conftest import BrokerSetup, hub_settings, running_hub
from tests.hub.test_ingest import batch, paid


def _bad_payloads() -> list[tuple[str, bytes]]:
    rng = random.Random(2026)
    good = json.loads(encode(batch([paid(1, 100)])))
    wrong_type = {**good, "epoch": "seven"}
    negative = {**good, "seq_from": -1, "seq_to": -1}
    negative["events"] = [{**good["events"][0], "seq": -1}]
    float_money = json.loads(json.dumps(good))
    float_money["seq_to"] = 2  # count mismatch
    huge = {**good, "events": [good["events"][0]] * 5000}
    other_store = json.loads(encode(batch([paid(1, 100, store="shop-2")], store="shop-2")))
    crafted = [
        ("wrong type", json.dumps(wrong_type).encode()),
        ("negative seq", json.dumps(negative).encode()),
        ("count mismatch", json.dumps(float_money).encode()),
        ("huge", json.dumps(huge).encode()),
        ("other store", json.dumps(other_store).encode()),
        ("not an object", b"[1, 2, 3]"),
        ("empty", b""),
    ]
    noise = [(f"random {i}", rng.randbytes(rng.randint(1, 2000))) for i in range(40)]
    return crafted + noise


async def test_bad_batches_are_counted_and_logged_and_a_good_one_still_lands(
    tmp_path, database_url, mosquitto_factory, caplog
):
    mosq = mosquitto_factory(secure=False)
    setup = BrokerSetup("mosquitto", {"mqtt": {"host": "127.0.0.1", "port": mosq.port}})
    caplog.set_level(logging.WARNING, logger="hub")
    bad = _bad_payloads()
    async with running_hub(hub_settings(tmp_path, database_url, setup)) as hub:
        await add_store(hub.db, "shop-1")
        await add_store(hub.db, "shop-2")
        async with aiomqtt.Client("127.0.0.1", mosq.port) as edge:
            await edge.subscribe(topics.down_ack("shop-1"), qos=1)
            for _, payload in bad:
                await edge.publish(topics.up_events("shop-1"), payload, qos=1)
            good = batch([paid(1, 4200, order_id=str(uuid.uuid4()))])
            await edge.publish(topics.up_events("shop-1"), encode(good), qos=1)
            async with asyncio.timeout(10):
                async for message in edge.messages:
                    assert json.loads(message.payload)["acked_through"] == 1
                    break
        assert hub.link.stats["rejected"] == len(bad)
        assert hub.link.connected.is_set()
        async with hub.db.session() as session:
            assert await session.scalar(select(func.count()).select_from(HubOrder)) == 1
    reasons = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ignoring message on")]
    assert len(reasons) == len(bad)
    assert any("does not match the topic" in r for r in reasons)
    assert not any(r.exc_info for r in caplog.records)

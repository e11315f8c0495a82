"""Embedded broker security: passwords, per-store ACL, Last Will confinement, client ids."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

from hub.broker import EmbeddedBroker, free_port
from hub.db import Database, migrate
from hub.stores import add_store, check_store_password


@pytest.fixture
async def broker(database_url):
    db = Database.from_url(database_url)
    await migrate(db.engine)
    one = await add_store(db, "shop-1")
    two = await add_store(db, "shop-2")

    async def check(user: str, password: str) -> bool:
        return await check_store_password(db, user, password)

    async with EmbeddedBroker("127.0.0.1", free_port(), check) as running:
        yield running, {"shop-1": one.password, "shop-2": two.password}
    await db.close()


def _client(port: int, user: str | None, password: str | None, **kw) -> aiomqtt.Client:
    return aiomqtt.Client("127.0.0.1", port, username=user, password=password, timeout=5, **kw)


async def _receive(client: aiomqtt.Client, within: float) -> list[str]:
    got: list[str] = []
    try:
        async with asyncio.timeout(within):
            async for message in client.messages:
                got.append(f"{message.topic}={message.payload!r}")
    except TimeoutError:
        pass
    return got


async def test_wrong_password_unknown_store_and_anonymous_are_refused(broker):
    running, creds = broker
    for user, password in [
        ("shop-1", "wrong"),
        ("shop-9", creds["shop-1"]),
        (None, None),
        ("Bad Id", "x"),
        ("shop-1\x00", creds["shop-1"]),
    ]:
        with pytest.raises(aiomqtt.MqttError):
            async with _client(running.port, user, password):
                pass
    async with _client(running.port, "shop-1", creds["shop-1"]):
        pass


async def test_store_cannot_read_or_write_another_store(broker):
    running, creds = broker
    hub = _client(running.port, "_storelink-hub", running.hub_password)
    async with hub, _client(running.port, "shop-2", creds["shop-2"]) as shop2:
        await hub.subscribe("storelink/v1/#", qos=1)
        await shop2.subscribe("storelink/v1/shop-1/#", qos=1)  # not allowed: gets nothing
        await shop2.subscribe("#", qos=1)
        await shop2.publish("storelink/v1/shop-1/down/cmd", b"forged", qos=1)
        await shop2.publish("storelink/v1/shop-2/status", b"own", qos=1)
        async with _client(running.port, "shop-1", creds["shop-1"]) as shop1:
            await shop1.publish("storelink/v1/shop-1/status", b"secret", qos=1)
        hub_saw = await _receive(hub, 1.0)
        shop2_saw = await _receive(shop2, 0.5)
    assert "storelink/v1/shop-2/status=b'own'" in hub_saw
    assert not [m for m in hub_saw if "forged" in m]
    assert not [m for m in shop2_saw if "shop-1" in m]


async def test_will_outside_own_status_is_refused(broker):
    running, creds = broker
    forged = aiomqtt.Will("storelink/v1/shop-1/down/cmd", b"forged", qos=1, retain=True)
    with pytest.raises(aiomqtt.MqttError):
        async with _client(running.port, "shop-2", creds["shop-2"], will=forged):
            pass
    own = aiomqtt.Will("storelink/v1/shop-2/status", b'{"online":false}', qos=1, retain=True)
    async with _client(running.port, "shop-2", creds["shop-2"], will=own):
        pass


async def test_failing_credential_store_refuses_without_hanging():
    async def broken(user: str, password: str) -> bool:
        raise OSError("database down")

    async with EmbeddedBroker("127.0.0.1", free_port(), broken) as running:
        async with asyncio.timeout(5):
            with pytest.raises(aiomqtt.MqttError):
                async with _client(running.port, "shop-1", "x"):
                    pass


async def test_embedded_broker_refuses_a_taken_port():
    from hub.errors import HubError  # noqa: PLC0415

    async def never(user: str, password: str) -> bool:
        return False

    async with EmbeddedBroker("127.0.0.1", free_port(), never) as first:
        with pytest.raises(HubError, match="already in use"):
            async with EmbeddedBroker("127.0.0.1", first.port, never):
                pass

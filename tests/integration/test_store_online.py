"""A store's edge shows online at the hub, goes offline by Last Will, and survives broker restarts.

Runs on every broker (Mosquitto with passwords and ACL, embedded amqtt) and every hub
database (SQLite, PostgreSQL).
"""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import timedelta

import pytest
from sqlalchemy import update

from edge.config import EdgeSettings
from edge.daemon import EdgeDaemon
from hub.models import Store
from hub.stores import add_store, list_stores
from protocol import load_settings
from tests.conftest import BrokerSetup, edge_toml, free_port, hub_settings, running_hub, spawn

pytestmark = pytest.mark.slow


async def _online(hub, store: str) -> bool:
    views = await list_stores(hub.db, stale_after=timedelta(minutes=5))
    return any(v.id == store and v.online for v in views)


async def _wait_for(hub, store: str, online: bool, timeout: float) -> float:
    start = time.monotonic()
    async with asyncio.timeout(timeout):
        while await _online(hub, store) != online:
            await asyncio.sleep(0.05)
    return time.monotonic() - start


async def test_edge_online_then_will_marks_it_offline(tmp_path, database_url, broker):
    settings = hub_settings(tmp_path, database_url, broker)
    async with running_hub(settings) as hub:
        creds = await add_store(hub.db, "shop-1", "人民路店")
        await broker.register("shop-1", creds.password)
        config = edge_toml(
            tmp_path / "edge.toml",
            store="shop-1",
            password=creds.password,
            mqtt_port=hub.mqtt_port,
            keepalive=2,
        )
        edge = spawn("edge", config)
        try:
            took = await _wait_for(hub, "shop-1", online=True, timeout=10)
            assert took < 2.0 + 1.0  # 2 s from edge start budget, plus interpreter start-up
            edge.send_signal(signal.SIGKILL)
            edge.wait(5)
            # Mosquitto and amqtt publish the will after 1.5 x keepalive (3 s here).
            await _wait_for(hub, "shop-1", online=False, timeout=2 * 1.5 + 3)
        finally:
            if edge.poll() is None:
                edge.kill()
            edge.communicate()


async def test_store_goes_online_within_two_seconds_of_edge_start(tmp_path, database_url, broker):

    async with running_hub(hub_settings(tmp_path, database_url, broker)) as hub:
        creds = await add_store(hub.db, "shop-2")
        await broker.register("shop-2", creds.password)
        config = edge_toml(
            tmp_path / "edge.toml", store="shop-2", password=creds.password, mqtt_port=hub.mqtt_port
        )
        settings = load_settings(EdgeSettings, config)
        start = time.monotonic()
        async with EdgeDaemon(settings):
            await _wait_for(hub, "shop-2", online=True, timeout=2.0)
            assert time.monotonic() - start < 2.0
        # A clean stop publishes "offline" itself; a clean disconnect suppresses the will.
        await _wait_for(hub, "shop-2", online=False, timeout=2.0)


async def test_edge_and_hub_reconnect_after_mosquitto_restart(
    tmp_path, database_url, mosquitto_factory, caplog
):

    mosq = mosquitto_factory(secure=True)
    setup = BrokerSetup(
        "mosquitto",
        {
            "mqtt": {
                "host": "127.0.0.1",
                "port": mosq.port,
                "username": mosq.hub_user,
                "password": mosq.hub_password,
            }
        },
        mosq,
    )
    async with running_hub(hub_settings(tmp_path, database_url, setup)) as hub:
        creds = await add_store(hub.db, "shop-3")
        await setup.register("shop-3", creds.password)
        config = edge_toml(
            tmp_path / "edge.toml",
            store="shop-3",
            password=creds.password,
            mqtt_port=mosq.port,
            backoff_cap=1.0,
        )
        async with EdgeDaemon(load_settings(EdgeSettings, config)) as edge:
            await _wait_for(hub, "shop-3", online=True, timeout=5)
            mosq.stop()
            async with asyncio.timeout(5):
                while edge.link.connected.is_set():
                    await asyncio.sleep(0.05)
            # Forget the last status so "online again" can only come from a new publish.

            async with hub.db.session() as session, session.begin():
                await session.execute(update(Store).values(online=False))
            mosq.start()
            await _wait_for(hub, "shop-3", online=True, timeout=10)
            assert edge.link.connected.is_set()
    tracebacks = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert tracebacks == []


async def test_edge_reconnects_after_hub_with_embedded_broker_restarts(tmp_path, database_url, caplog):

    setup = BrokerSetup("amqtt", {"broker": {"bind": "127.0.0.1", "port": free_port()}})
    settings = hub_settings(tmp_path, database_url, setup)
    async with running_hub(settings) as hub:
        creds = await add_store(hub.db, "shop-4")
        config = edge_toml(
            tmp_path / "edge.toml",
            store="shop-4",
            password=creds.password,
            mqtt_port=hub.mqtt_port,
            backoff_cap=1.0,
        )
        edge = EdgeDaemon(load_settings(EdgeSettings, config))
        await edge.__aenter__()
        await _wait_for(hub, "shop-4", online=True, timeout=5)
    try:
        async with asyncio.timeout(5):
            while edge.link.connected.is_set():
                await asyncio.sleep(0.05)
        async with running_hub(settings) as hub:
            # Forget the last status so "online again" can only come from a new publish.
            async with hub.db.session() as session, session.begin():
                await session.execute(update(Store).values(online=False))
            await _wait_for(hub, "shop-4", online=True, timeout=10)
            assert edge.link.connected.is_set()
    finally:
        await edge.__aexit__(None, None, None)
    assert [r for r in caplog.records if r.exc_info] == []

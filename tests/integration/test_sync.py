"""Edge → hub sync end to end: nothing lost, nothing doubled, across partitions and restarts."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from edge.access import Role, StaffMember
from edge.api_till import LineIn, _build_line
from edge.daemon import EdgeDaemon
from hub.models import HubOrder, StoreEvent, SyncState
from hub.stores import add_store, list_stores
from tests.conftest import BrokerSetup, free_port, hub_settings, running_hub
from tests.edge.conftest import edge_settings, seed

pytestmark = pytest.mark.slow
STAFF = StaffMember(id="c1", name="小李", role=Role.CASHIER, pin_hash="-")
COLA, WATER = "6954767410388", "6921168509256"


async def _sell(daemon: EdgeDaemon, orders: int) -> int:
    """Sell `orders` orders through the till; return their total in fen."""
    till, catalog = daemon.till, daemon.snapshots.catalog
    assert catalog is not None
    if await till.current_shift() is None:
        await till.open_shift(STAFF, 0, None)
    total = 0
    for i in range(orders):
        order = (await till.open_order(STAFF, idem=None)).body["order"]
        await till.add_line(order["id"], _build_line(catalog, LineIn(barcode=COLA if i % 2 else WATER)), None)
        paid = (
            await till.pay(order["id"], STAFF, method="cash", amount_fen=500, reference=None, idem=None)
        ).body
        total += paid["order"]["total_fen"]
    return total


async def _hub_counts(hub) -> tuple[int, int, int]:
    async with hub.db.session() as session:
        orders = await session.scalar(select(func.count()).select_from(HubOrder))
        gross = await session.scalar(select(func.coalesce(func.sum(HubOrder.total_fen), 0)))
        events = await session.scalar(select(func.count()).select_from(StoreEvent))
    return int(orders), int(gross), int(events)


async def _until_synced(hub, daemon: EdgeDaemon, orders: int, within: float) -> float:
    start = time.monotonic()
    async with asyncio.timeout(within):
        while True:
            state = await daemon.journal.state()
            if state.outbox_pending == 0 and (await _hub_counts(hub))[0] >= orders:
                return time.monotonic() - start
            await asyncio.sleep(0.1)


def _edge(tmp_path, port: int, password: str, store: str = "shop-1") -> EdgeDaemon:
    state = tmp_path / f"edge-{store}"
    seed(state)
    settings = edge_settings(state)
    settings = settings.model_copy(
        update={
            "store": store,
            "mqtt": settings.mqtt.model_copy(update={"port": port, "password": password, "backoff_cap": 1.0}),
        }
    )
    return EdgeDaemon(settings)


async def test_partition_2000_orders_sold_offline_arrive_exactly_once(
    tmp_path, database_url, mosquitto_factory
):
    mosq = mosquitto_factory(secure=True)
    mqtt = {"host": "127.0.0.1", "port": mosq.port, "username": mosq.hub_user, "password": mosq.hub_password}
    setup = BrokerSetup("mosquitto", {"mqtt": mqtt}, mosq)
    async with running_hub(hub_settings(tmp_path, database_url, setup)) as hub:
        creds = await add_store(hub.db, "shop-1")
        await setup.register("shop-1", creds.password)
        async with _edge(tmp_path, mosq.port, creds.password) as daemon:
            online_total = await _sell(daemon, 20)
            await _until_synced(hub, daemon, 20, within=20)
            mosq.stop()
            offline_total = await _sell(daemon, 2000)
            assert (await daemon.journal.state()).outbox_pending == 2000
            mosq.start()
            took = await _until_synced(hub, daemon, 2020, within=120)
            orders, gross, events = await _hub_counts(hub)
            state = await daemon.journal.state()
    assert (orders, gross) == (2020, online_total + offline_total)
    assert events == 2021  # 2,020 orders + the shift's opening, each once
    assert state.acked_through == 2021
    assert took < 120
    views = await list_stores(hub.db, stale_after=timedelta(minutes=5))
    assert (views[0].acked_through, views[0].last_sync is not None) == (2021, True)


async def test_hub_restart_with_embedded_broker_loses_nothing(tmp_path, database_url):
    setup = BrokerSetup("amqtt", {"broker": {"bind": "127.0.0.1", "port": free_port()}})
    settings = hub_settings(tmp_path, database_url, setup)
    async with running_hub(settings) as hub:
        creds = await add_store(hub.db, "shop-1")
        port = hub.mqtt_port
    daemon = _edge(tmp_path, port, creds.password)
    async with daemon:
        total = await _sell(daemon, 300)  # the hub is down: everything waits in the outbox
        async with running_hub(settings) as hub:
            await _until_synced(hub, daemon, 300, within=60)
            orders, gross, _ = await _hub_counts(hub)
            async with hub.db.session() as session:
                acked = await session.scalar(select(SyncState.acked_through))
    assert (orders, gross, acked) == (300, total, 301)


async def test_two_hubs_with_shared_subscriptions_ingest_together_exactly_once(
    tmp_path, pg_database_url, mosquitto_factory
):
    mosq = mosquitto_factory(secure=True)
    mqtt = {
        "host": "127.0.0.1",
        "port": mosq.port,
        "username": mosq.hub_user,
        "password": mosq.hub_password,
        "shared_subscription": True,
    }
    setup = BrokerSetup("mosquitto", {"mqtt": mqtt}, mosq)
    first = hub_settings(tmp_path / "a", pg_database_url, setup)
    second = hub_settings(tmp_path / "b", pg_database_url, setup)
    async with running_hub(first) as hub_a, running_hub(second) as hub_b:
        creds = await add_store(hub_a.db, "shop-1")
        await setup.register("shop-1", creds.password)
        async with _edge(tmp_path, mosq.port, creds.password) as daemon:
            total = await _sell(daemon, 1500)
            await _until_synced(hub_a, daemon, 1500, within=90)
            orders, gross, events = await _hub_counts(hub_a)
        split = (hub_a.link.stats["batches"], hub_b.link.stats["batches"])
    assert (orders, gross, events) == (1500, total, 1501)
    assert all(n > 0 for n in split), f"one hub did all the work: {split}"

"""Stock tasks end to end through a real Mosquitto, a real hub and two real edges: a transfer
approved at the hub becomes a shipping task at the source, its scan ships it, the destination
receives it in two parts; a stocktake is counted while the store sells, submitted while the
broker is down, arrives when it is back, and posts the right on-hand."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from edge.daemon import EdgeDaemon
from edge.stock_desk import StockDesk
from hub.stock import adjust, level
from hub.stocktake_tables import StocktakeScope
from hub.stocktakes import load_stocktake, post_stocktake, start_stocktake, stocktake_json
from hub.stores import add_store
from hub.transfers import LineIn, approve, create_transfer
from hub.transfers_views import load_transfer
from tests.conftest import BrokerSetup, hub_settings, running_hub
from tests.integration.test_sync import _edge, _sell

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
COLA = "DRK-002"


async def _until(check: Callable[[], Awaitable[Any]], within: float = 30) -> Any:
    async with asyncio.timeout(within):
        while not (found := await check()):
            await asyncio.sleep(0.2)
    return found


async def _task(daemon: EdgeDaemon, task_id: str) -> bool:
    desk = StockDesk(daemon.journal)
    return any(t["id"] == task_id for t in await desk.tasks("open"))


async def _on_hand(hub, store: str) -> int:
    async with hub.db.session() as session:
        return (await level(session, store, COLA)).on_hand_milli


async def test_transfers_and_a_count_go_through_the_stores(tmp_path, database_url, mosquitto_factory):
    mosq = mosquitto_factory(secure=True)
    mqtt = {"host": "127.0.0.1", "port": mosq.port, "username": mosq.hub_user, "password": mosq.hub_password}
    setup = BrokerSetup("mosquitto", {"mqtt": mqtt}, mosq)
    async with running_hub(hub_settings(tmp_path, database_url, setup)) as hub:
        creds = {store: await add_store(hub.db, store) for store in ("shop-1", "shop-2")}
        for store, cred in creds.items():
            await setup.register(store, cred.password)
        async with hub.db.session() as session, session.begin():
            await adjust(session, "shop-1", COLA, 20_000, "opening count", "user:boss")
            view = await create_transfer(session, "shop-1", "shop-2", [LineIn(COLA, 10_000)], actor="user:li")
            transfer_id = view.transfer.id
            await approve(session, transfer_id, actor="user:boss")
        source = _edge(tmp_path, mosq.port, creds["shop-1"].password, "shop-1")
        destination = _edge(tmp_path, mosq.port, creds["shop-2"].password, "shop-2")
        async with source as one, destination as two:
            ship_desk = StockDesk(one.journal, on_outbox=one.link.notify_outbox)
            receive_desk = StockDesk(two.journal, on_outbox=two.link.notify_outbox)

            # the approval reached the source as a task; it scans 8 of the 10 and ships them
            await _until(lambda: _task(one, f"ship:{transfer_id}"))
            await ship_desk.scan(f"ship:{transfer_id}", COLA, 8_000)
            await ship_desk.submit(f"ship:{transfer_id}", "c1")
            await _until(lambda: _transfer_state(hub, transfer_id, "shipped"))
            assert await _on_hand(hub, "shop-1") == 12_000

            # the destination gets its receiving task and takes the goods in two parts
            task = f"receive:{transfer_id}"
            await _until(lambda: _task(two, task))
            await receive_desk.scan(task, COLA, 5_000)
            assert (await receive_desk.submit(task, "c1"))["task"]["state"] == "open"
            await _until(lambda: _transfer_state(hub, transfer_id, "partially_received"))
            await receive_desk.scan(task, COLA, 3_000)
            assert (await receive_desk.submit(task, "c1"))["task"]["state"] == "done"
            await _until(lambda: _transfer_state(hub, transfer_id, "received"))
            assert await _on_hand(hub, "shop-2") == 8_000

            # a count at the source while it sells one cola (and one water) before counting
            async with hub.db.session() as session, session.begin():
                started = await start_stocktake(
                    session, "shop-1", StocktakeScope.SKUS, actor="user:li", skus=[COLA]
                )
            stocktake_id = started.stocktake.id
            await _until(lambda: _task(one, f"count:{stocktake_id}"))
            await _sell(one, 2)
            await _until(lambda: _on_hand_is(hub, "shop-1", 11_000))
            await ship_desk.scan(f"count:{stocktake_id}", COLA, 10_000)  # one is missing from the shelf
            mosq.stop()
            await ship_desk.submit(f"count:{stocktake_id}", "c1")  # offline: it waits in the outbox
            assert (await one.journal.state()).outbox_pending >= 1
            await asyncio.sleep(1)
            mosq.start()
            submitted = await _until(lambda: _stocktake_state(hub, stocktake_id, "submitted"), within=60)
            line = submitted["lines"][0]
            assert (line["snapshot"], line["counted"], line["variance"]) == ("12", "10", "-1")
            async with hub.db.session() as session, session.begin():
                await post_stocktake(session, stocktake_id, actor="user:boss")
            assert await _on_hand(hub, "shop-1") == 10_000


async def _transfer_state(hub, transfer_id: str, state: str) -> bool:
    async with hub.db.session() as session:
        return (await load_transfer(session, transfer_id)).transfer.state == state


async def _on_hand_is(hub, store: str, milli: int) -> bool:
    return await _on_hand(hub, store) == milli


async def _stocktake_state(hub, stocktake_id: str, state: str) -> dict[str, Any] | None:
    async with hub.db.session() as session:
        found = stocktake_json(await load_stocktake(session, stocktake_id))
    return found if found["state"] == state else None

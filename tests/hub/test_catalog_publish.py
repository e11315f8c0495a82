"""Head office changes a price in the catalog, publishes, and the store's till sells at it;
sales of SKUs the hub catalog does not have are still accepted by sync."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from hub import auth
from hub.catalog import ProductIn, save_products
from hub.catalog_categories import add_category
from hub.db import Database, migrate
from hub.ingest import ingest_batch
from hub.stock import level
from hub.stores import add_store
from protocol import Event, EventBatch
from tests.conftest import BrokerSetup, free_port, hub_settings, running_hub
from tests.integration.test_snapshots import _price_of_cola
from tests.integration.test_sync import _edge

COLA = "6954767410388"


async def _catalog(db: Database) -> None:
    async with db.session() as session, session.begin():
        await add_category(session, "饮料/碳酸饮料")
        await save_products(
            session,
            [
                ProductIn(
                    sku="DRK-002",
                    name="可口可乐330ml",
                    category="饮料/碳酸饮料",
                    price_fen=320,
                    barcodes=[COLA],
                ),
                ProductIn(sku="DRK-004", name="雪碧330ml", category="饮料/碳酸饮料", price_fen=300),
            ],
            actor="user:boss",
        )


@pytest.mark.slow
async def test_a_price_published_at_the_hub_is_what_the_till_sells_at(tmp_path, database_url):
    setup = BrokerSetup("amqtt", {"broker": {"bind": "127.0.0.1", "port": free_port()}})
    async with running_hub(hub_settings(tmp_path, database_url, setup)) as hub:
        creds = await add_store(hub.db, "shop-1")
        await _catalog(hub.db)
        await auth.add_user(hub.db, "boss", "long enough", "owner")
        user = await auth.authenticate(hub.db, "boss", "long enough")
        token = (await auth.issue_token(hub.db, user.id, timedelta(hours=1))).token
        base = f"http://127.0.0.1:{hub.http_port}/api/v1"
        headers = {"Authorization": f"Bearer {token}"}

        async def call(method: str, path: str, body: dict | None = None) -> dict:
            async with http.request(method, base + path, headers=headers, json=body) as resp:
                assert resp.status in (200, 201), await resp.text()
                return await resp.json()

        async def till_price(want: int) -> None:
            async with asyncio.timeout(10):
                while await _price_of_cola(daemon) != want:
                    await asyncio.sleep(0.1)

        async with _edge(tmp_path, hub.mqtt_port, creds.password) as daemon, aiohttp.ClientSession() as http:
            async with asyncio.timeout(10):
                await daemon.link.connected.wait()
            assert await _price_of_cola(daemon) == 300  # the edge's own sample catalog
            await call("POST", "/stores/shop-1/catalog/link", {"all": True})
            published = await call("POST", "/stores/shop-1/catalog/publish")
            assert published["sent"] is True
            await till_price(320)  # the hub's list price
            assert daemon.snapshots.catalog is not None
            assert len(daemon.snapshots.catalog) == 2  # the hub's catalog replaced the sample
            await call("PATCH", "/stores/shop-1/catalog/DRK-002", {"price_fen": 260})
            await call("POST", "/catalog/publish", {})
            await till_price(260)
            product = await call("GET", "/catalog/products/DRK-002")
            await call("PUT", "/catalog/products/DRK-002", {**product, "price_fen": 350})
            await call("PATCH", "/stores/shop-1/catalog/DRK-002", {"price_fen": None})
            await call("POST", "/stores/shop-1/catalog/publish")
            await till_price(350)
            # the catalog snapshot carries the overrides too, so the price may show before `prices` lands
            async with asyncio.timeout(10):
                while daemon.snapshots.applied.versions != {"catalog": 3, "prices": 3}:
                    await asyncio.sleep(0.05)
            # a hand-made prices snapshot published later still applies on top of the catalog
            async with http.put(
                f"{base}/stores/shop-1/snapshots/prices",
                headers=headers,
                json={"price_overrides": {"DRK-002": 199}},
            ) as resp:
                assert resp.status == 201
            await till_price(199)


async def test_a_sale_of_a_sku_the_catalog_lacks_is_still_accepted(database_url):
    db = Database.from_url(database_url)
    await migrate(db.engine)
    try:
        await add_store(db, "shop-1")
        await _catalog(db)
        ts = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
        doc = {
            "id": str(uuid.uuid4()),
            "store": "shop-1",
            "number": 1,
            "business_day": "2026-11-23",
            "status": "paid",
            "total_fen": 800,
            "closed_at": ts.isoformat(),
            "lines": [
                {"line_id": "l0", "sku": "LOCAL-ONLY", "qty": "2", "total_fen": 480},
                {"line_id": "l1", "sku": "DRK-002", "qty": "1", "total_fen": 320},
            ],
        }
        event = Event(id=uuid.uuid4(), seq=1, type="order.paid", ts=ts, body=doc)
        result = await ingest_batch(
            db, "shop-1", EventBatch(store="shop-1", epoch=1, seq_from=1, seq_to=1, events=[event])
        )
        assert result is not None
        async with db.session() as session:
            assert (await level(session, "shop-1", "LOCAL-ONLY")).on_hand_milli == -2000
            assert (await level(session, "shop-1", "DRK-002")).on_hand_milli == -1000
    finally:
        await db.close()

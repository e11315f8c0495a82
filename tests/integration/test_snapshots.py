"""Head office changes a price at the hub → the store sells at the new price within seconds."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import aiohttp
import pytest

from hub import auth
from hub.stores import add_store
from tests.conftest import BrokerSetup, free_port, hub_settings, running_hub
from tests.integration.test_sync import STAFF, _edge

pytestmark = pytest.mark.slow
COLA = "6954767410388"


async def _price_of_cola(daemon) -> int:
    from edge.api_till import LineIn, _build_line  # noqa: PLC0415

    till = daemon.till
    order = (await till.open_order(STAFF, idem=None)).body["order"]
    line = _build_line(daemon.snapshots.catalog, LineIn(barcode=COLA))
    return (await till.add_line(order["id"], line, None)).body["order"]["total_fen"]


async def test_price_change_at_the_hub_reaches_the_till(tmp_path, database_url):
    setup = BrokerSetup("amqtt", {"broker": {"bind": "127.0.0.1", "port": free_port()}})
    async with running_hub(hub_settings(tmp_path, database_url, setup)) as hub:
        creds = await add_store(hub.db, "shop-1")
        await auth.add_user(hub.db, "boss", "long enough", "owner")
        user = await auth.authenticate(hub.db, "boss", "long enough")
        token = (await auth.issue_token(hub.db, user.id, timedelta(hours=1))).token
        base = f"http://127.0.0.1:{hub.http_port}/api/v1"
        headers = {"Authorization": f"Bearer {token}"}
        async with _edge(tmp_path, hub.mqtt_port, creds.password) as daemon, aiohttp.ClientSession() as http:
            async with asyncio.timeout(10):
                await daemon.link.connected.wait()
            assert await _price_of_cola(daemon) == 300
            async with http.put(
                f"{base}/stores/shop-1/snapshots/prices",
                headers=headers,
                json={"price_overrides": {"DRK-002": 250}},
            ) as resp:
                assert resp.status == 201, await resp.text()
                assert (await resp.json())["version"] == 1
            async with asyncio.timeout(5):
                while await _price_of_cola(daemon) != 250:
                    await asyncio.sleep(0.1)
            assert (await daemon.link.status()).versions == {"prices": 1}
            async with http.put(
                f"{base}/stores/shop-1/snapshots/prices",
                headers=headers,
                data="[]",
            ) as resp:
                assert resp.status == 415
            async with http.put(f"{base}/stores/shop-1/snapshots/menu", headers=headers, json={}) as resp:
                assert resp.status == 404
        # a store that was offline gets the newest version when it connects again
        await _put_prices(base, headers, {"price_overrides": {"DRK-002": 199}})
        async with _edge(tmp_path, hub.mqtt_port, creds.password) as daemon:
            async with asyncio.timeout(10):
                while await _price_of_cola(daemon) != 199:
                    await asyncio.sleep(0.1)
            assert daemon.snapshots.applied.versions == {"prices": 2}


async def _put_prices(base: str, headers: dict[str, str], body: dict) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.put(f"{base}/stores/shop-1/snapshots/prices", headers=headers, json=body) as resp,
    ):
        assert resp.status == 201

"""Promotions and coupons end to end: a real hub, a real till, Mosquitto between them.

Head office authors three promotions and publishes them; the till prices a cart with the
snapshot it received, and the hub's preview of the same cart comes to the same fen, line by
line. A coupon issued to a member is redeemed at the till (the order reprices), paid,
synced, counted in the coupon's statistics, and refused on a second order. A promotion
published before it starts applies at its start at a till that has lost the hub meanwhile.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from edge.daemon import EdgeDaemon
from hub.stores import add_store
from protocol import utcnow
from tests.conftest import BrokerSetup, hub_settings, running_hub
from tests.integration.test_members_till import _edge, _hub, _hub_token, _till, _until_synced

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

PROMOTIONS: list[dict[str, Any]] = [
    {"kind": "nth_item", "name": "可乐第二件半价", "n": 2, "off_bp": 5000, "scope": {"skus": ["DRK-002"]}},
    {"kind": "percent_off", "name": "饮料9折", "off_bp": 1000, "scope": {"categories": ["饮料"]}},
    {"kind": "threshold", "name": "满10减2", "threshold_fen": 1000, "amount_fen": 200},
]


async def _promotions_applied(daemon: EdgeDaemon, version: int) -> None:
    async with asyncio.timeout(10):
        while daemon.snapshots.applied.versions.get("promotions", 0) < version:
            await asyncio.sleep(0.05)


def _cart_of(order: dict[str, Any], daemon: EdgeDaemon) -> dict[str, Any]:
    """The till's order as the engine's cart (what the till itself hands the engine)."""
    catalog = daemon.snapshots.catalog
    assert catalog is not None
    lines = []
    for line in order["lines"]:
        product = catalog.by_sku(line["sku"])
        assert product is not None
        lines.append(
            {
                "line_id": line["line_id"],
                "sku": line["sku"],
                "category": product.category,
                "qty": line["qty"],
                "unit_price_fen": line["unit_price_fen"],
                "cost_fen": product.cost_fen,
            }
        )
    return {
        "store": "shop-1",
        "local_time": utcnow().astimezone(ZoneInfo("Asia/Shanghai")).isoformat(),
        "lines": lines,
        "coupons": order.get("coupons", []),
    }


async def test_the_hub_preview_and_the_till_agree_and_a_coupon_is_used_once(
    tmp_path, database_url, mosquitto_factory
):
    mosq = mosquitto_factory(secure=True)
    mqtt = {"host": "127.0.0.1", "port": mosq.port, "username": mosq.hub_user, "password": mosq.hub_password}
    setup = BrokerSetup("mosquitto", {"mqtt": mqtt}, mosq)
    async with running_hub(hub_settings(tmp_path, database_url, setup)) as hub:
        creds = await add_store(hub.db, "shop-1")
        await setup.register("shop-1", creds.password)
        base = f"http://127.0.0.1:{hub.http_port}/api/v1"
        headers = {"Authorization": f"Bearer {await _hub_token(hub)}"}
        async with aiohttp.ClientSession(headers=headers) as office, aiohttp.ClientSession() as http:
            for rule in PROMOTIONS:
                status, body = await _hub(office, "POST", f"{base}/promotions", {"rule": rule})
                assert status == 201, body
            async with _edge(tmp_path, mosq.port, creds.password) as daemon:
                async with asyncio.timeout(10):
                    await daemon.link.connected.wait()
                status, published = await _hub(office, "POST", f"{base}/promotions/publish", {})
                assert status == 201, published
                assert published["stores"]["shop-1"]["sent"] is True
                await _promotions_applied(daemon, published["stores"]["shop-1"]["version"])
                till = await _till(http, daemon)
                status, body = await till.call("POST", "/api/v1/shifts", {"float_fen": 10_000})
                assert status == 201, body

                # the same cart: the till's price and the hub's preview, to the fen and line by line
                order = await till.open_order()
                await till.add(order["id"], sku="DRK-002", qty="3")
                await till.add(order["id"], sku="DRK-007", qty="1")
                order = await till.add(order["id"], sku="DRK-001", qty="2")
                assert order["discount_fen"] > 0
                assert {p["name"] for p in order["promotions"]} == {r["name"] for r in PROMOTIONS}
                status, preview = await _hub(
                    office, "POST", f"{base}/promotions/preview", {"cart": _cart_of(order, daemon)}
                )
                assert status == 200, preview
                assert (preview["subtotal_fen"], preview["discount_fen"], preview["total_fen"]) == (
                    order["subtotal_fen"],
                    order["discount_fen"],
                    order["total_fen"],
                )
                assert {line["line_id"]: line["total_fen"] for line in preview["lines"]} == {
                    line["line_id"]: line["total_fen"] for line in order["lines"]
                }

                # a coupon issued to a member, redeemed at the till: the order reprices, both sides agree
                status, member = await till.call("POST", "/api/v1/members", {"phone": "13800138000"})
                assert status == 201, member
                template = {"name": "满10减3", "kind": "amount_off", "amount_off_fen": 300}
                status, template = await _hub(
                    office,
                    "POST",
                    f"{base}/coupon-templates",
                    {**template, "threshold_fen": 1000, "valid_days": 7},
                )
                assert status == 201, template
                status, issued = await _hub(
                    office,
                    "POST",
                    f"{base}/coupon-templates/{template['id']}/issue",
                    {"member_ids": [member["id"]]},
                )
                assert status == 201, issued
                code = issued["codes"][0]
                before = order["total_fen"]
                status, body = await till.call(
                    "POST", f"/api/v1/orders/{order['id']}/coupons", {"code": code}, key="c-1"
                )
                assert status == 200, body
                order = body["order"]
                assert order["total_fen"] < before
                assert "满10减3" in {p["name"] for p in order["promotions"]}
                status, preview = await _hub(
                    office, "POST", f"{base}/promotions/preview", {"cart": _cart_of(order, daemon)}
                )
                assert (status, preview["total_fen"]) == (200, order["total_fen"])
                paid = await till.pay(order["id"], "cash", order["total_fen"])
                assert paid["status"] == "paid"
                await _until_synced(daemon)

                status, stats = await _hub(office, "GET", f"{base}/coupon-templates/{template['id']}/stats")
                assert status == 200, stats
                assert stats == {
                    "issued": 1,
                    "claimed": 0,
                    "used": 1,
                    "revoked": 0,
                    "revenue_fen": order["total_fen"],
                }
                second = await till.open_order()
                await till.add(second["id"], sku="DRK-007", qty="3")
                status, body = await till.call(
                    "POST", f"/api/v1/orders/{second['id']}/coupons", {"code": code}, key="c-2"
                )
                assert status == 409, body
                assert "already used at store shop-1" in body["detail"]


async def test_a_published_promotion_that_starts_later_applies_at_a_till_that_went_offline(
    tmp_path, database_url, mosquitto_factory
):
    """The rule set holds future promotions; the till switches at the start by its own clock."""
    mosq = mosquitto_factory(secure=True)
    mqtt = {"host": "127.0.0.1", "port": mosq.port, "username": mosq.hub_user, "password": mosq.hub_password}
    setup = BrokerSetup("mosquitto", {"mqtt": mqtt}, mosq)
    async with running_hub(hub_settings(tmp_path, database_url, setup)) as hub:
        creds = await add_store(hub.db, "shop-1")
        await setup.register("shop-1", creds.password)
        base = f"http://127.0.0.1:{hub.http_port}/api/v1"
        headers = {"Authorization": f"Bearer {await _hub_token(hub)}"}
        async with aiohttp.ClientSession(headers=headers) as office, aiohttp.ClientSession() as http:
            starts = utcnow() + timedelta(seconds=10)  # room for a slow machine to connect first
            rule = {
                "kind": "percent_off",
                "name": "晚市饮料8折",
                "off_bp": 2000,
                "scope": {"categories": ["饮料"]},
                "window": {"starts_at": starts.isoformat()},
            }
            status, body = await _hub(office, "POST", f"{base}/promotions", {"rule": rule})
            assert status == 201, body
            async with _edge(tmp_path, mosq.port, creds.password) as daemon:
                async with asyncio.timeout(10):
                    await daemon.link.connected.wait()
                status, published = await _hub(office, "POST", f"{base}/promotions/publish", {})
                assert (status, published["stores"]["shop-1"]["rules"]) == (201, 1)
                await _promotions_applied(daemon, published["stores"]["shop-1"]["version"])
                till = await _till(http, daemon)
                order = await till.add((await till.open_order())["id"], sku="DRK-002", qty="1")
                assert (order["total_fen"], order["promotions"]) == (300, [])  # not started yet

                mosq.stop()  # the store loses the hub before the promotion starts
                async with asyncio.timeout(10):
                    while daemon.link.connected.is_set():
                        await asyncio.sleep(0.05)
                await asyncio.sleep(max(0.0, (starts - utcnow()).total_seconds()) + 0.2)
                order = await till.add(order["id"], sku="DRK-002", qty="1")
                assert not daemon.link.connected.is_set()
                assert order["total_fen"] == 480  # 2 x ¥3.00 at 20 % off
                assert [p["name"] for p in order["promotions"]] == ["晚市饮料8折"]

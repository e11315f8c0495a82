"""A member's whole journey at a real till against a real hub through Mosquitto.

Register at the till, top up with a bonus (cash goes into the shift), get the level's
prices, pay with points and stored value (a retried payment charges once), sync, refund,
and lose the hub mid-sale with the offline allowance on: the hub's ledgers explain it all.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from edge.access import create_pairing_code
from edge.daemon import EdgeDaemon
from edge.rpc import OfflinePolicy
from hub import auth
from hub.stores import add_store
from tests.conftest import BrokerSetup, hub_settings, running_hub
from tests.edge.conftest import Api, edge_settings, seed

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

PHONE = "138 0013 8000"


async def _hub_token(hub) -> str:
    await auth.add_user(hub.db, "boss", "long enough", "owner")
    user = await auth.authenticate(hub.db, "boss", "long enough")
    return (await auth.issue_token(hub.db, user.id, timedelta(hours=1))).token


async def _hub(http: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> tuple[int, Any]:
    async with http.request(method, url, json=body) as resp:
        return resp.status, await resp.json()


async def _configure(http: aiohttp.ClientSession, base: str) -> None:
    levels = {
        "metric": "topup",
        "levels": [
            {"code": "silver", "name": "银卡", "rank": 1, "threshold": 0},
            {
                "code": "gold",
                "name": "金卡",
                "rank": 2,
                "threshold": 50_000,
                "discount_bp": 9500,
                "member_prices": True,
            },
        ],
    }
    status, body = await _hub(http, "PUT", f"{base}/loyalty/levels", levels)
    assert status == 200, body
    rules = {"tiers": [{"min_fen": 50_000, "bonus_fen": 8_000}], "spending_order": "principal_first"}
    status, body = await _hub(http, "PUT", f"{base}/stored-value/rules", rules)
    assert status == 200, body
    status, points_rules = await _hub(http, "GET", f"{base}/loyalty/points-rules")
    points_rules = {**points_rules, "registration_points": 1000}
    status, body = await _hub(http, "PUT", f"{base}/loyalty/points-rules", points_rules)
    assert status == 200, body


def _edge(tmp_path, port: int, password: str) -> EdgeDaemon:
    state = tmp_path / "edge"
    seed(state)
    policy = OfflinePolicy(stored_value="allow", stored_value_offline_max_fen=5_000, timeout_s=2)
    settings = edge_settings(state, offline=policy)
    mqtt = settings.mqtt.model_copy(update={"port": port, "password": password, "backoff_cap": 0.5})
    return EdgeDaemon(settings.model_copy(update={"mqtt": mqtt}))


async def _till(http: aiohttp.ClientSession, daemon: EdgeDaemon) -> Api:
    api = Api(http, f"http://127.0.0.1:{daemon.http_port}", daemon)
    status, body = await api.call(
        "POST", "/api/v1/devices/pair", {"code": await create_pairing_code(daemon.journal), "name": "收银台1"}
    )
    assert status == 201, body
    api.device = body["token"]
    await api.sign_in("c1")
    return api


async def _until_synced(daemon: EdgeDaemon, within: float = 20) -> None:
    async with asyncio.timeout(within):
        while (await daemon.journal.state()).outbox_pending:
            await asyncio.sleep(0.1)


async def _ledgers(
    http: aiohttp.ClientSession, base: str, member_id: str
) -> tuple[list[Any], dict[str, Any]]:
    status, stored = await _hub(http, "GET", f"{base}/members/{member_id}/stored-value/ledger")
    assert status == 200, stored
    status, points = await _hub(http, "GET", f"{base}/members/{member_id}/points")
    assert status == 200, points
    return stored["items"][::-1], points  # oldest first


async def test_member_journey_at_the_till(tmp_path, database_url, mosquitto_factory):
    mosq = mosquitto_factory(secure=True)
    mqtt = {"host": "127.0.0.1", "port": mosq.port, "username": mosq.hub_user, "password": mosq.hub_password}
    setup = BrokerSetup("mosquitto", {"mqtt": mqtt}, mosq)
    async with running_hub(hub_settings(tmp_path, database_url, setup)) as hub:
        creds = await add_store(hub.db, "shop-1")
        await setup.register("shop-1", creds.password)
        base = f"http://127.0.0.1:{hub.http_port}/api/v1"
        headers = {"Authorization": f"Bearer {await _hub_token(hub)}"}
        async with aiohttp.ClientSession(headers=headers) as office, aiohttp.ClientSession() as http:
            await _configure(office, base)
            async with _edge(tmp_path, mosq.port, creds.password) as daemon:
                async with asyncio.timeout(10):
                    await daemon.link.connected.wait()
                till = await _till(http, daemon)
                status, body = await till.call("POST", "/api/v1/shifts", {"float_fen": 10_000})
                assert status == 201, body

                # register at the till; the same phone again is the same member
                status, member = await till.call("POST", "/api/v1/members", {"phone": PHONE, "name": "张三"})
                assert status == 201, member
                member_id = member["id"]
                assert (member["phone_masked"], member["points"], member["level"]["code"]) == (
                    "138****8000",
                    1000,
                    "silver",
                )
                status, again = await till.call("POST", "/api/v1/members", {"phone": "+8613800138000"})
                assert (status, again["id"], again["existing"]) == (200, member_id, True)

                # a member code works once; the till's retry (same key) still gets the member
                status, issued = await _hub(office, "GET", f"{base}/members/{member_id}/code")
                assert status == 200, issued
                code = {"code": issued["code"]}
                for _ in range(2):
                    status, found = await till.call("POST", "/api/v1/members/lookup", code, key="l-1")
                    assert (status, found["id"]) == (200, member_id)
                status, body = await till.call("POST", "/api/v1/members/lookup", code, key="l-2")
                assert status == 409, body

                # top up ¥500 in cash: ¥80 bonus, the cash is in the drawer, a retry tops up once
                topup = {"amount_fen": 50_000, "method": "cash"}
                status, first = await till.call(
                    "POST", f"/api/v1/members/{member_id}/topups", topup, key="t-1"
                )
                assert status == 201, first
                assert (first["topup"]["bonus_fen"], first["topup"]["balance"]["total_fen"]) == (
                    8_000,
                    58_000,
                )
                status, retry = await till.call(
                    "POST", f"/api/v1/members/{member_id}/topups", topup, key="t-1"
                )
                assert (status, retry) == (201, first)
                status, body = await till.call("GET", "/api/v1/shifts/current")
                shift = body["shift"]
                assert (shift["topups"], shift["expected_cash_fen"]) == ({"cash": 50_000}, 60_000)
                status, body = await till.call("POST", "/api/v1/members/nobody/topups", topup, key="t-2")
                assert status == 409, body

                # attach by phone: the top-up made them gold, so the order takes gold prices
                order = await till.open_order()
                await till.add(order["id"], sku="DRK-002", qty="2")  # ¥3.00, member price ¥2.50
                await till.add(order["id"], sku="DRK-001", qty="1")  # store price ¥1.80 → 9.5折 ¥1.71
                status, body = await till.call(
                    "POST", f"/api/v1/orders/{order['id']}/member", {"phone": PHONE}, key="m-1"
                )
                assert status == 200, body
                assert (body["order"]["member"]["level"], body["order"]["total_fen"]) == ("gold", 671)

                # pay ¥3.00 with 300 points, the rest with stored value; the retry charges once
                status, quote = await till.call("GET", f"/api/v1/orders/{order['id']}/points-quote")
                assert status == 200, quote
                assert quote["balance"] == 1000
                assert 0 < quote["max_points"] <= 671
                pay = f"/api/v1/orders/{order['id']}/payments"
                status, body = await till.call("POST", pay, {"method": "points", "points": 300}, key="p-1")
                assert status == 201, body
                assert body["order"]["tenders"][0]["amount_fen"] == 300
                status, paid = await till.call(
                    "POST", pay, {"method": "stored_value", "amount_fen": 371}, key="s-1"
                )
                assert status == 201, paid
                assert paid["order"]["status"] == "paid"
                status, retry = await till.call(
                    "POST", pay, {"method": "stored_value", "amount_fen": 371}, key="s-1"
                )
                assert (status, retry) == (201, paid)
                await _until_synced(daemon)

                stored, points = await _ledgers(office, base, member_id)
                assert [(e["kind"], e["principal_delta_fen"], e["bonus_delta_fen"]) for e in stored] == [
                    ("topup", 50_000, 0),
                    ("bonus", 0, 8_000),
                    ("debit", -371, 0),
                ]
                # 1 point per full yuan of what was not paid with points: 371 fen -> 3
                assert [(e["kind"], e["points"]) for e in points["items"][::-1]] == [
                    ("registration", 1000),
                    ("redeem", -300),
                    ("earn", 3),
                ]
                assert points["balance"] == points["ledger_sum"] == 703

                # refund the whole order (a manager): points and stored value come back exactly
                cashier = till.token
                await till.sign_in("mgr")
                status, body = await till.call(
                    "POST", f"/api/v1/orders/{order['id']}/refunds", {"reason": "顾客退货"}, key="r-1"
                )
                assert status == 201, body
                await _until_synced(daemon)
                stored, points = await _ledgers(office, base, member_id)
                assert stored[-1]["kind"] == "refund_return"
                assert stored[-1]["principal_delta_fen"] == 371
                assert points["balance"] == 1000
                till.token = cashier

                # a 3-use wash card issued at head office, punched at the till; a mistake given back
                product = {
                    "code": "WASH3",
                    "name": "洗护3次卡",
                    "kind": "count",
                    "sale_sku": "SVC-WASH3",
                    "covers_skus": ["SVC-WASH"],
                    "uses": 3,
                    "valid_days": 365,
                }
                status, body = await _hub(office, "POST", f"{base}/pass-products", product)
                assert status == 201, body
                issue = {"product_code": "WASH3", "quantity": 1, "reason": "开业赠送"}
                status, body = await _hub(office, "POST", f"{base}/members/{member_id}/passes", issue)
                assert status == 201, body
                uses = f"/api/v1/members/{member_id}/pass-uses"
                status, used = await till.call("POST", uses, {"service_sku": "SVC-WASH"}, key="u-1")
                assert (status, used["use"]["remaining"]) == (201, 2), used
                status, again = await till.call("POST", uses, {"service_sku": "SVC-WASH"}, key="u-1")
                assert (status, again) == (201, used)  # the retry took no second use
                status, body = await till.call("POST", uses, {"service_sku": "SVC-CUT"}, key="u-2")
                assert status == 409, body
                assert "covers service SVC-CUT" in body["detail"]
                await till.sign_in("mgr")
                reverse = f"/api/v1/pass-uses/{used['use']['txn_id']}/reverse"
                status, body = await till.call("POST", reverse, {"reason": "点错了"}, key="u-3")
                assert (status, body["reversal"]["remaining"]) == (201, 3), body
                till.token = cashier

                # the hub goes away mid-sale: the store's allowance (¥50) takes stored value offline
                second = await till.open_order()
                await till.add(second["id"], sku="DRK-002", qty="4")
                status, body = await till.call(
                    "POST", f"/api/v1/orders/{second['id']}/member", {"phone": PHONE}, key="m-2"
                )
                assert status == 200, body
                mosq.stop()
                pay = f"/api/v1/orders/{second['id']}/payments"
                status, body = await till.call(
                    "POST", pay, {"method": "stored_value", "amount_fen": 1000}, key="s-2"
                )
                assert status == 201, body
                assert body["order"]["tenders"][0]["reference"].startswith("offline:")
                status, body = await till.call(
                    "POST", f"/api/v1/members/{member_id}/topups", topup, key="t-3"
                )
                assert status == 503, body  # top-ups always need the hub
                mosq.start()
                await _until_synced(daemon, within=40)
                stored, _ = await _ledgers(office, base, member_id)
                assert (stored[-1]["kind"], stored[-1]["principal_delta_fen"]) == ("offline_debit", -1000)
                assert stored[-1]["principal_after_fen"] + stored[-1]["bonus_after_fen"] == 57_000

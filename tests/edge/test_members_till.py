"""Members at the till without a hub: level prices, refusals and the offline stored-value allowance.

The whole journey with a real hub is in tests/integration/test_members_till.py; here the
member is attached through the till (as the hub's lookup would) so the offline rules can be
checked exactly.
"""

from __future__ import annotations

import aiohttp

from edge.access import create_pairing_code
from edge.daemon import EdgeDaemon
from edge.orders import OrderMember
from edge.rpc import OfflinePolicy
from protocol import utcnow
from tests.edge.conftest import Api, edge_settings


def _member(**extra: object) -> OrderMember:
    fields: dict[str, object] = {
        "id": "m-1",
        "phone_masked": "138****8000",
        "level": "gold",
        "level_name": "金卡",
        "discount_bp": 9500,
        "member_prices": True,
        "points": 1000,
        "stored_value_fen": 30_000,
        "looked_up_at": utcnow(),
    }
    return OrderMember.model_validate(fields | extra)


async def _order_with_member(api: Api, member: OrderMember | None = None) -> str:
    order = await api.open_order()
    await api.add(order["id"], sku="DRK-002", qty="2")  # ¥3.00, member price ¥2.50
    await api.add(order["id"], sku="DRK-001", qty="1")  # store price ¥1.80, no member price
    if member is not None:
        reply = await api.daemon.till.set_member(order["id"], member, None)
        assert reply.status == 200
    return str(order["id"])


async def _open_shift(api: Api) -> None:
    status, body = await api.call("POST", "/api/v1/shifts", {"float_fen": 10_000})
    assert status == 201, body


async def _journal_counts(api: Api) -> tuple[int, int]:
    def count(conn):
        outbox = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
        topups = conn.execute("SELECT count(*) FROM topups").fetchone()[0]
        return outbox, topups

    return await api.daemon.journal.read(count)


async def test_member_level_prices_the_order_and_detaching_restores_it(api):
    order_id = await _order_with_member(api, _member())
    order = await api.daemon.till.get_order(order_id)
    by_sku = {line.sku: line for line in order.lines}
    # member price list beats the 9.5折 on the cola; the water only has the discount on its store price (171)
    assert (by_sku["DRK-002"].unit_price_fen, by_sku["DRK-002"].price_source) == (250, "member")
    assert by_sku["DRK-002"].explanation == "2 × ¥2.50 (金卡 member price)"
    assert (by_sku["DRK-001"].unit_price_fen, by_sku["DRK-001"].explanation) == (
        171,
        "1 × ¥1.71 (金卡 member 9.5折)",
    )
    assert order.total_fen == 671
    assert order.member_id == "m-1"

    status, body = await api.call("PATCH", f"/api/v1/orders/{order_id}", {"member_id": "someone-else"})
    assert status == 409
    assert "remove them first" in body["detail"]

    status, body = await api.call("DELETE", f"/api/v1/orders/{order_id}/member")
    assert status == 200, body
    assert (body["order"]["total_fen"], body["order"]["member"], body["order"]["member_id"]) == (
        780,
        None,
        None,
    )


async def test_member_payments_are_refused_clearly_without_a_hub(api):
    await _open_shift(api)
    plain = await _order_with_member(api)
    status, body = await api.call(
        "POST", f"/api/v1/orders/{plain}/payments", {"method": "stored_value", "amount_fen": 100}, key="k0"
    )
    assert status == 409
    assert "has no member" in body["detail"]

    order_id = await _order_with_member(api, _member())
    before = await _journal_counts(api)
    pay = f"/api/v1/orders/{order_id}/payments"
    status, body = await api.call("POST", pay, {"method": "stored_value", "amount_fen": 100})
    assert status == 428
    assert "Idempotency-Key" in body["detail"]
    status, body = await api.call("POST", pay, {"method": "stored_value", "amount_fen": 100}, key="k1")
    assert status == 503
    assert "refused" in body["detail"]
    status, body = await api.call("POST", pay, {"method": "points", "points": 100}, key="k2")
    assert status == 503
    for bad in (
        {"method": "points", "amount_fen": 100},  # points give points, the hub says what they pay
        {"method": "stored_value", "amount_fen": 100, "reference": "mine"},
        {"method": "stored_value", "points": 100},
    ):
        status, body = await api.call("POST", pay, bad, key="k3")
        assert status == 422, (bad, body)
    status, body = await api.call("POST", pay, {"method": "stored_value", "amount_fen": 672}, key="k4")
    assert status == 422
    assert "more than the ¥6.71 due" in body["detail"]

    status, body = await api.call(
        "POST", "/api/v1/members/m-1/topups", {"amount_fen": 5000, "method": "cash"}, key="t1"
    )
    assert status == 503
    for bad in ({"amount_fen": -1, "method": "cash"}, {"amount_fen": 100, "method": "stored_value"}):
        status, body = await api.call("POST", "/api/v1/members/m-1/topups", bad, key="t2")
        assert status == 422, (bad, body)
    status, body = await api.call(
        "POST", "/api/v1/members/m-1/topups", {"amount_fen": 100, "method": "wechat"}, key="t3"
    )
    assert status == 422
    assert "reference" in body["detail"]

    status, body = await api.call("POST", "/api/v1/members", {"phone": "12345"})
    assert status == 422
    assert "mainland China mobile" in body["detail"]
    status, body = await api.call("POST", "/api/v1/members/lookup", {"phone": "13800138000"})
    assert status == 503
    status, body = await api.call("POST", f"/api/v1/orders/{order_id}/member", {"code": "x"})
    assert status == 422

    assert await _journal_counts(api) == before  # nothing written by any refusal
    order = await api.daemon.till.get_order(order_id)
    assert order.tenders == []
    assert (await api.daemon.till.current_shift()).topups == {}


async def test_offline_allowance_takes_stored_value_up_to_the_policy(tmp_path, seeded_state):
    for name in ("catalog.json", "staff.json"):
        (tmp_path / name).write_bytes((seeded_state / name).read_bytes())
    policy = OfflinePolicy(stored_value="allow", stored_value_offline_max_fen=1000, timeout_s=0.5)
    async with EdgeDaemon(edge_settings(tmp_path, offline=policy)) as daemon, aiohttp.ClientSession() as http:
        api = Api(http, f"http://127.0.0.1:{daemon.http_port}", daemon)
        code = await create_pairing_code(daemon.journal)
        status, body = await api.call("POST", "/api/v1/devices/pair", {"code": code, "name": "收银台1"})
        api.device = body["token"]
        await api.sign_in("c1")
        await _open_shift(api)

        first = await _order_with_member(api, _member())
        status, body = await api.call(
            "POST", f"/api/v1/orders/{first}/payments", {"method": "stored_value", "amount_fen": 671}, key="a"
        )
        assert status == 201, body
        tender = body["order"]["tenders"][0]
        assert tender["reference"].startswith("offline:")
        assert body["order"]["status"] == "paid"

        # the allowance is per member across sales: 1000 - 671 = 329 left
        second = await _order_with_member(api, _member())
        pay = f"/api/v1/orders/{second}/payments"
        status, body = await api.call("POST", pay, {"method": "stored_value", "amount_fen": 330}, key="b")
        assert status == 503
        assert "at most ¥3.29" in body["detail"]
        status, body = await api.call("POST", pay, {"method": "stored_value", "amount_fen": 329}, key="c")
        assert status == 201, body

        # never more than the balance the member had at lookup
        poor = await _order_with_member(api, _member(id="m-2", stored_value_fen=100))
        status, body = await api.call(
            "POST", f"/api/v1/orders/{poor}/payments", {"method": "stored_value", "amount_fen": 101}, key="d"
        )
        assert status == 503
        assert "at most ¥1.00" in body["detail"]

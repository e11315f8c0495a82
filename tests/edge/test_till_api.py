"""The till through its real HTTP API: selling, paying, refunds, shifts, and refusals that change nothing."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime

import aiohttp
import pytest

from edge import till as till_module
from protocol.barcodes import ScaleLayout, make_scale_barcode

WATER = "6921168509256"  # DRK-001, list 200, store price 180
COLA = "6954767410388"  # DRK-002, 300


async def _shift(api, float_fen: int = 10_000) -> None:
    status, body = await api.call("POST", "/api/v1/shifts", {"float_fen": float_fen})
    assert status == 201, body


def _outbox(api) -> list[tuple[int, str]]:
    conn = sqlite3.connect(api.daemon.settings.state_dir / "journal.sqlite3")
    try:
        return conn.execute("SELECT seq, type FROM outbox ORDER BY seq").fetchall()
    finally:
        conn.close()


async def test_sell_pay_cash_with_change_closes_durably_with_one_outbox_event(api):
    await _shift(api)
    order = await api.open_order()
    assert order["number"] == 1
    order = await api.add(order["id"], barcode=WATER, qty=2)
    order = await api.add(order["id"], sku="COF-LAT-L")
    assert [line["total_fen"] for line in order["lines"]] == [360, 2100]
    assert order["lines"][1]["name"] == "拿铁 大杯"
    assert order["lines"][0]["price_source"] == "store"
    assert order["total_fen"] == 2460
    paid = await api.pay(order["id"], "cash", 5000)
    assert paid["status"] == "paid"
    assert paid["tenders"][0] == paid["tenders"][0] | {
        "amount_fen": 2460,
        "tendered_fen": 5000,
        "change_fen": 2540,
    }
    assert _outbox(api) == [(1, "shift.opened"), (2, "order.paid")]
    _, shift = await api.call("GET", "/api/v1/shifts/current")
    assert shift["shift"]["sales"] == {"cash": 2460}
    assert shift["shift"]["expected_cash_fen"] == 12_460


async def test_split_tenders_and_non_cash_overpayment_refused(api):
    await _shift(api)
    order = await api.add((await api.open_order())["id"], barcode=COLA, qty=3)
    status, body = await api.call(
        "POST",
        f"/api/v1/orders/{order['id']}/payments",
        {"method": "wechat", "amount_fen": 901, "reference": "wx1"},
    )
    assert status == 422
    assert "only cash can be overpaid" in body["detail"]
    status, body = await api.call(
        "POST", f"/api/v1/orders/{order['id']}/payments", {"method": "alipay", "amount_fen": 400}
    )
    assert status == 422
    assert "reference" in body["detail"]
    part = await api.pay(order["id"], "wechat", 400, "4200001234567890")
    assert part["status"] == "open"
    assert part["version"] == order["version"] + 1  # the refusals wrote nothing
    done = await api.pay(order["id"], "cash", 500)
    assert done["status"] == "paid"
    assert [t["amount_fen"] for t in done["tenders"]] == [400, 500]
    status, receipt = await api.call("GET", f"/api/v1/orders/{order['id']}/receipt")
    assert receipt["tenders"][0]["reference"] == "************7890"
    assert receipt["total_text"] == "¥9.00"


async def test_refunds_are_exact_to_the_fen_and_go_back_to_the_original_tenders(api):
    await _shift(api)
    order = await api.open_order()
    # 3 x ¥3.33 cannot be split evenly: partial refunds must still add up to the line total.
    await api.add(order["id"], sku="FRS-ODEN", price_fen=333, qty=3)
    order = await api.add(order["id"], sku="COF-AME")
    await api.pay(order["id"], "wechat", 1000, "wx-9")
    await api.pay(order["id"], "cash", 1499)
    status, body = await api.call("POST", f"/api/v1/orders/{order['id']}/refunds", {"reason": "退货"})
    assert status == 403  # the cashier may not refund
    await api.sign_in("mgr")
    line = order["lines"][0]["line_id"]
    amounts = []
    for _ in range(3):
        status, body = await api.call(
            "POST",
            f"/api/v1/orders/{order['id']}/refunds",
            {"lines": [{"line_id": line, "qty": 1}], "reason": "退货"},
        )
        assert status == 201, body
        amounts.append(body["refund"]["total_fen"])
        assert sum(body["refund"]["tenders"].values()) == body["refund"]["total_fen"]
    assert sum(amounts) == 999
    status, body = await api.call(
        "POST",
        f"/api/v1/orders/{order['id']}/refunds",
        {"lines": [{"line_id": line, "qty": 1}], "reason": "x"},
    )
    assert status == 422  # more than was sold
    status, body = await api.call("POST", f"/api/v1/orders/{order['id']}/refunds", {"reason": "整单退"})
    assert status == 201
    final = body["order"]
    assert sum(r["total_fen"] for r in final["refunds"]) == final["total_fen"] == 2499
    assert [t["refunded_fen"] for t in final["tenders"]] == [1000, 1499]
    assert [t for _, t in _outbox(api)].count("order.refunded") == 4


async def test_weighed_goods_by_label_and_by_weight(api):
    await _shift(api)
    order = await api.open_order()
    label = make_scale_barcode("002001", 1401, ScaleLayout())  # 散装什锦糖果, label says ¥14.01
    order = await api.add(order["id"], barcode=label)
    assert order["lines"][0]["total_fen"] == 1401
    assert order["lines"][0]["price_source"] == "label"
    order = await api.add(order["id"], sku="FRS-BANANA", qty="0.352")  # 0.352 kg x ¥7.98 = ¥2.809 → 281
    assert order["lines"][1]["total_fen"] == 281
    _, receipt = await api.call("GET", f"/api/v1/orders/{order['id']}/receipt")
    assert receipt["lines"][1]["qty"] == "0.352"
    assert receipt["lines"][1]["text"] == "0.352 kg × ¥7.98/kg = ¥2.81"
    status, body = await api.call("POST", f"/api/v1/orders/{order['id']}/lines", {"sku": "FRS-APPLE"})
    assert status == 422
    assert "sold by weight" in body["detail"]
    bad = label[:-1] + str((int(label[-1]) + 1) % 10)
    status, body = await api.call("POST", f"/api/v1/orders/{order['id']}/lines", {"barcode": bad})
    assert status == 422
    assert "check digit" in body["detail"]


@pytest.mark.parametrize(
    ("line", "status", "words"),
    [
        ({"barcode": "6900000000000"}, 404, "unknown barcode"),
        ({"sku": "NOPE"}, 404, "unknown SKU"),
        ({"sku": "DRK-001", "qty": 10000}, 422, "9999"),
        ({"sku": "DRK-001", "qty": -1}, 422, "greater than 0"),
        ({"sku": "DRK-001", "qty": 1.5}, 422, "float"),
        ({"sku": "DRK-001", "barcode": WATER}, 422, "exactly one"),
        ({"sku": "FRS-ODEN"}, 422, "open price"),
        ({"sku": "DRK-001", "price_fen": 1}, 422, "only for open-price"),
    ],
)
async def test_bad_lines_are_refused_and_change_nothing(api, line, status, words):
    order = await api.open_order()
    got, body = await api.call("POST", f"/api/v1/orders/{order['id']}/lines", line)
    assert got == status, body
    assert words in body["detail"]
    _, after = await api.call("GET", f"/api/v1/orders/{order['id']}")
    assert after["version"] == order["version"]
    assert after["lines"] == []


async def test_idempotency_key_replays_instead_of_adding_twice(api):
    order = await api.open_order()
    path = f"/api/v1/orders/{order['id']}/lines"
    first = await api.call("POST", path, {"barcode": COLA}, key="scan-1")
    again = await api.call("POST", path, {"barcode": COLA}, key="scan-1")
    assert first == again
    assert len(again[1]["order"]["lines"]) == 1
    assert again[1]["order"]["lines"][0]["qty"] == "1"
    status, body = await api.call("POST", path, {"barcode": WATER}, key="scan-1")
    assert status == 422
    assert "different request" in body["detail"]


async def test_permissions_hold_void_and_closed_orders(api):
    await _shift(api)
    order = await api.add((await api.open_order())["id"], barcode=COLA)
    path = f"/api/v1/orders/{order['id']}"
    assert (await api.call("POST", path + "/hold"))[1]["order"]["status"] == "held"
    status, _ = await api.call("POST", path + "/lines", {"barcode": COLA})
    assert status == 409  # held orders do not change
    assert (await api.call("POST", path + "/resume"))[1]["order"]["status"] == "open"
    line_id = order["lines"][0]["line_id"]
    status, body = await api.call(
        "PATCH", f"{path}/lines/{line_id}", {"override_price_fen": 100, "reason": "临期"}
    )
    assert status == 403
    status, body = await api.call("POST", path + "/void", {"reason": "顾客不要了"})
    assert status == 403
    await api.sign_in("mgr")
    status, body = await api.call(
        "PATCH", f"{path}/lines/{line_id}", {"override_price_fen": 100, "reason": "临期"}
    )
    assert body["order"]["total_fen"] == 100
    assert body["order"]["lines"][0]["override_by"] == "mgr"
    await api.pay(order["id"], "cash", 100)
    status, body = await api.call("POST", path + "/void", {"reason": "x"})
    assert status == 409
    status, body = await api.call("POST", path + "/lines", {"barcode": COLA})
    assert status == 409
    assert "paid" in body["detail"]
    await api.sign_in("w1")
    status, body = await api.call("POST", path + "/payments", {"method": "cash", "amount_fen": 1})
    assert status == 403  # a waiter takes orders but not money


async def test_payment_needs_an_open_shift_and_shift_close_counts_cash(api):
    order = await api.add((await api.open_order())["id"], barcode=COLA)
    status, body = await api.call(
        "POST", f"/api/v1/orders/{order['id']}/payments", {"method": "cash", "amount_fen": 300}
    )
    assert status == 409
    assert "no shift is open" in body["detail"]
    await _shift(api, 20_000)
    await api.pay(order["id"], "cash", 500)
    status, body = await api.call("POST", "/api/v1/shifts/current/close", {"counted_cash_fen": 20_250})
    assert status == 200
    shift = body["shift"]
    assert (shift["expected_cash_fen"], shift["difference_fen"], shift["orders"]) == (20_300, -50, 1)
    assert (await api.call("GET", "/api/v1/shifts/current"))[0] == 404


async def test_order_numbers_follow_the_business_day_cut_over(api, monkeypatch):
    # 2026-11-24 19:30 UTC is 03:30 on the 25th in Shanghai: still business day the 24th.
    times = iter([datetime(2026, 11, 24, 19, 30, tzinfo=UTC), datetime(2026, 11, 24, 20, 30, tzinfo=UTC)])
    monkeypatch.setattr(till_module, "_now", lambda: next(times))
    late = await api.open_order()
    early = await api.open_order()
    assert (late["business_day"], late["number"]) == ("2026-11-24", 1)
    assert (early["business_day"], early["number"]) == ("2026-11-25", 1)


async def test_tokens_sessions_and_pin_lockout(api):
    status, body = await api.call("GET", "/api/v1/orders", token="")
    assert status == 401
    status, body = await api.call("POST", "/api/v1/orders", token=api.device)
    assert status == 401
    assert "sign in" in body["detail"]
    assert (await api.call("GET", "/api/v1/orders", token=api.device))[0] == 200
    for _ in range(5):
        status, _ = await api.call(
            "POST", "/api/v1/sessions", {"staff_id": "mgr", "pin": "0000"}, token=api.device
        )
        assert status == 401
    status, body = await api.call(
        "POST", "/api/v1/sessions", {"staff_id": "mgr", "pin": "1234"}, token=api.device
    )
    assert status == 423
    assert "locked" in body["detail"]
    assert (await api.call("DELETE", "/api/v1/sessions"))[0] == 204
    assert (await api.call("GET", "/api/v1/orders"))[0] == 401


async def test_pairing_codes_are_single_use(api):
    from edge.access import create_pairing_code  # noqa: PLC0415

    code = await create_pairing_code(api.daemon.journal)
    ok = await api.call("POST", "/api/v1/devices/pair", {"code": code, "name": "平板"}, token="")
    again = await api.call("POST", "/api/v1/devices/pair", {"code": code, "name": "平板"}, token="")
    assert (ok[0], again[0]) == (201, 401)


async def test_second_device_sees_the_line_on_the_websocket(api):
    order = await api.open_order()
    url = f"{api.base}/api/v1/events?order={order['id']}&token={api.device}"
    async with api.http.ws_connect(url) as ws:
        assert (await ws.receive_json(timeout=2))["type"] == "hello"
        await api.add(order["id"], barcode=COLA)
        msg = await ws.receive_json(timeout=2)
    assert msg["type"] == "order.updated"
    assert msg["order"]["lines"][0]["sku"] == "DRK-002"


async def test_websocket_needs_a_token(api):
    with pytest.raises(aiohttp.WSServerHandshakeError):
        async with api.http.ws_connect(f"{api.base}/api/v1/events"):
            pass


async def test_openapi_and_status_are_public(api):
    status, doc = await api.call("GET", "/api/v1/openapi.json", token="")
    assert status == 200
    assert "/api/v1/orders/{order_id}/payments" in doc["paths"]
    assert "PaymentIn" in doc["components"]["schemas"]
    status, body = await api.call("GET", "/api/v1/status", token="")
    assert body["store"] == "shop-1"
    assert body["catalog_version"] == 1


async def test_product_search_by_pinyin_and_barcode(api):
    _, body = await api.call("GET", "/api/v1/products?q=kkkl")
    assert body["items"][0]["sku"] == "DRK-002"
    _, body = await api.call("GET", f"/api/v1/products?barcode={WATER}")
    assert body["items"][0]["store_price_fen"] == 180
    assert (await api.call("GET", "/api/v1/products?limit=x"))[0] == 422
    await asyncio.sleep(0)

"""Regressions found in review: races, money edge cases, inputs that used to answer 500."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from edge.journal import Journal
from protocol.barcodes import ScaleLayout, make_scale_barcode

COLA = "6954767410388"


async def _shift(api) -> None:
    assert (await api.call("POST", "/api/v1/shifts", {"float_fen": 0}))[0] == 201


async def test_a_burst_of_wrong_pins_cannot_outrun_the_lockout(api):
    guesses = [
        api.call("POST", "/api/v1/sessions", {"staff_id": "mgr", "pin": "0000"}, token=api.device)
        for _ in range(12)
    ]
    right = api.call("POST", "/api/v1/sessions", {"staff_id": "mgr", "pin": "1234"}, token=api.device)
    statuses = [status for status, _ in await asyncio.gather(*guesses, right)]
    assert statuses[:5] == [401] * 5 or statuses.count(401) == 5
    assert statuses[-1] == 423  # the right PIN after five wrong ones is still locked out
    assert statuses.count(423) == 8


async def test_unknown_staff_ids_leave_no_rows(api):
    for i in range(3):
        await api.call("POST", "/api/v1/sessions", {"staff_id": f"ghost{i}", "pin": "0000"}, token=api.device)
    rows = await api.daemon.journal.read(
        lambda conn: conn.execute("SELECT count(*) FROM pin_failures").fetchone()
    )
    assert rows[0] == 0


async def test_cashier_cannot_multiply_a_managers_price(api):
    order = await api.add((await api.open_order())["id"], barcode=COLA)
    line = order["lines"][0]["line_id"]
    path = f"/api/v1/orders/{order['id']}/lines/{line}"
    await api.sign_in("mgr")
    assert (await api.call("PATCH", path, {"override_price_fen": 0, "reason": "瘪罐"}))[0] == 200
    await api.sign_in("c1")
    status, body = await api.call("PATCH", path, {"qty": 50})
    assert status == 403
    assert "manager" in body["detail"]
    _, after = await api.call("GET", f"/api/v1/orders/{order['id']}")
    assert after["lines"][0]["qty"] == "1"


async def test_voiding_a_partly_paid_order_gives_the_money_back(api):
    await _shift(api)
    order = await api.add((await api.open_order())["id"], barcode=COLA, qty=3)
    await api.pay(order["id"], "wechat", 400, "wx-1")
    await api.sign_in("mgr")
    status, body = await api.call("POST", f"/api/v1/orders/{order['id']}/void", {"reason": "顾客走了"})
    assert status == 200, body
    assert body["order"]["status"] == "voided"
    assert body["order"]["tenders"][0]["refunded_fen"] == 400
    _, shift = await api.call("GET", "/api/v1/shifts/current")
    assert (shift["shift"]["sales"], shift["shift"]["refunds"]) == ({"wechat": 400}, {"wechat": 400})


@pytest.mark.parametrize(
    ("path_suffix", "body", "status"),
    [
        ("/lines", {"sku": "DRK-002", "qty": "1/3"}, 422),
        ("/lines", {"sku": "FRS-ODEN", "price_fen": 10**23}, 422),
        ("/lines", {"sku": "FRS-ODEN", "price_fen": 5 * 10**18}, 422),
        ("/lines", {"barcode": make_scale_barcode("002001", 0, ScaleLayout())}, 422),
    ],
)
async def test_inputs_that_used_to_answer_500(api, path_suffix, body, status):
    order = await api.open_order()
    got, problem = await api.call("POST", f"/api/v1/orders/{order['id']}{path_suffix}", body)
    assert got == status, problem
    assert problem["detail"]


async def test_odd_limit_and_query_tokens_are_refused(api):
    assert (await api.call("GET", "/api/v1/products?limit=²"))[0] == 422
    status, _ = await api.call("GET", f"/api/v1/orders?token={api.token}", token="")
    assert status == 401  # tokens in the query string only for the WebSocket


async def test_retried_payment_and_refund_apply_once(api):
    await _shift(api)
    order = await api.add((await api.open_order())["id"], barcode=COLA, qty=2)
    pay = {"method": "cash", "amount_fen": 1000}
    first = await api.call("POST", f"/api/v1/orders/{order['id']}/payments", pay, key="pay-1")
    again = await api.call("POST", f"/api/v1/orders/{order['id']}/payments", pay, key="pay-1")
    assert first == again
    assert len(again[1]["order"]["tenders"]) == 1
    await api.sign_in("mgr")
    refund = {"reason": "退货"}
    r1 = await api.call("POST", f"/api/v1/orders/{order['id']}/refunds", refund, key="ref-1")
    r2 = await api.call("POST", f"/api/v1/orders/{order['id']}/refunds", refund, key="ref-1")
    assert r1 == r2
    assert len(r2[1]["order"]["refunds"]) == 1
    _, shift = await api.call("GET", "/api/v1/shifts/current")
    assert shift["shift"]["sales"] == {"cash": 600}
    assert shift["shift"]["refunds"] == {"cash": 600}


async def test_a_failed_commit_rolls_back_and_the_journal_keeps_working(tmp_path):
    async with Journal(tmp_path / "j.sqlite3") as journal:

        def schema(conn: sqlite3.Connection) -> None:
            conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
            conn.execute(
                "CREATE TABLE child (p INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
            )

        await journal.transaction(schema)

        def bad(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO child (p) VALUES (42)")  # fails only at COMMIT

        with pytest.raises(sqlite3.IntegrityError):
            await journal.transaction(bad)
        assert await journal.read(lambda conn: conn.in_transaction) is False
        assert await journal.read(lambda conn: conn.execute("SELECT count(*) FROM child").fetchone()[0]) == 0
        await journal.transaction(lambda conn: conn.execute("INSERT INTO parent (id) VALUES (1)"))

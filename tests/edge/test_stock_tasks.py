"""Stock at the store: tasks from hub commands, counting by scanning, shipping and receiving
transfers (partial, over, short, damaged), the results in the outbox once, blocked SKUs and
expired GS1 codes refused at the till (a real daemon over HTTP)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest

from edge.errors import TillError
from edge.stock_tasks import read_gs1, refuse_expired
from protocol import Command

COLA, COLA_CODE = "DRK-002", "6954767410388"
WATER = "DRK-001"


async def _command(api, kind: str, body: dict) -> tuple[bool, str]:
    result = await api.daemon.commands.run(Command(id=uuid.uuid4(), type=kind, body=body))
    return result.ok, result.detail


async def _outbox(api, kind: str) -> list[dict]:
    rows = await api.daemon.journal.read(
        lambda conn: conn.execute("SELECT body FROM outbox WHERE type = ? ORDER BY seq", (kind,)).fetchall()
    )
    return [json.loads(r[0]) for r in rows]


def _gs1(expiry: date, gtin: str = "0" + COLA_CODE) -> str:
    return f"(01){gtin}(17){expiry:%y%m%d}(10)B42"


async def test_a_count_is_scanned_corrected_and_sent_up_with_when_each_sku_was_counted(api):
    ok, _ = await _command(
        api, "stocktake.count", {"stocktake_id": "st-1", "scope": "store", "note": "月底盘点"}
    )
    assert ok
    # the same command again (the hub re-sends until it hears a result): still one task
    await _command(api, "stocktake.count", {"stocktake_id": "st-1", "scope": "store"})
    status, body = await api.call("GET", "/api/v1/stock/tasks?state=open")
    assert status == 200
    assert [t["id"] for t in body["items"]] == ["count:st-1"]
    url = "/api/v1/stock/tasks/count:st-1"
    status, body = await api.call("POST", url + "/scans", {"barcode": COLA_CODE}, key="s1")
    assert status == 201, body
    await api.call("POST", url + "/scans", {"barcode": COLA_CODE}, key="s1")  # a retry: not twice
    await api.call("POST", url + "/scans", {"barcode": COLA_CODE, "qty": "5"}, key="s2")
    status, body = await api.call("PUT", url + f"/lines/{WATER}", {"qty": "0"})
    assert status == 200, body
    status, body = await api.call("POST", url + "/scans", {"sku": WATER, "qty": "0.0001"})
    assert status == 422
    assert "three decimals" in body["detail"]
    status, body = await api.call("GET", url)
    assert {x["sku"]: x["scanned"] for x in body["lines"]} == {COLA: "6", WATER: "0"}
    status, body = await api.call("POST", url + "/submit", {})
    assert status == 200, body
    assert body["sent"] == {"events": 1, "lines": 2}
    assert body["task"]["state"] == "done"
    [event] = await _outbox(api, "stocktake.counted")
    assert event["stocktake_id"] == "st-1"
    assert (event["part"], event["parts"], event["total_lines"]) == (
        1,
        1,
        2,
    )
    assert {x["sku"]: x["qty"] for x in event["lines"]} == {COLA: "6", WATER: "0"}
    assert all(datetime.fromisoformat(x["counted_at"]).tzinfo is not None for x in event["lines"])
    status, body = await api.call("POST", url + "/scans", {"sku": COLA})
    assert status == 409
    assert "is done" in body["detail"]
    assert len(await _outbox(api, "stocktake.counted")) == 1


async def test_a_listed_count_takes_only_its_skus_and_a_withdrawn_count_takes_nothing(api):
    await _command(api, "stocktake.count", {"stocktake_id": "st-2", "scope": "skus", "skus": [COLA]})
    url = "/api/v1/stock/tasks/count:st-2"
    status, body = await api.call("POST", url + "/scans", {"sku": WATER})
    assert status == 422
    assert "not in this count" in body["detail"]
    status, body = await api.call("POST", url + "/submit", {})
    assert status == 409
    assert "nothing has been counted" in body["detail"]
    ok, detail = await _command(api, "stocktake.cancel", {"stocktake_id": "st-2", "reason": "wrong day"})
    assert ok
    assert "withdrawn" in detail
    status, body = await api.call("POST", url + "/scans", {"sku": COLA})
    assert status == 409
    assert "cancelled" in body["detail"]
    ok, detail = await _command(api, "stocktake.count", {"stocktake_id": "x", "scope": "everything"})
    assert not ok
    assert detail.startswith("scope")


async def test_shipping_scans_what_was_approved_and_sends_the_scanned_quantities(api):
    task = {
        "transfer_id": "tr-1",
        "to_store": "shop-2",
        "lines": [{"sku": COLA, "qty": "6"}, {"sku": WATER, "qty": "2"}],
    }
    assert (await _command(api, "transfer.ship", task))[0]
    url = "/api/v1/stock/tasks/ship:tr-1"
    status, body = await api.call("POST", url + "/scans", {"barcode": COLA_CODE, "qty": "7"})
    assert status == 409
    assert "only 6 was approved" in body["detail"]
    status, body = await api.call("POST", url + "/scans", {"sku": "DRK-003"})
    assert status == 422
    assert "not on this transfer" in body["detail"]
    await api.sign_in("w1")  # a waiter counts, but does not ship
    status, body = await api.call("POST", url + "/scans", {"sku": COLA})
    assert status == 403
    await api.sign_in("c1")
    status, body = await api.call("POST", url + "/scans", {"barcode": COLA_CODE, "qty": "5"})
    assert status == 201, body
    status, body = await api.call("POST", url + "/submit")
    assert status == 200, body
    [event] = await _outbox(api, "transfer.shipped")
    assert event["transfer_id"] == "tr-1"
    assert event["lines"] == [{"sku": COLA, "qty": "5"}]
    assert event["staff"] == "c1"
    assert event["report_id"]


async def test_receiving_partly_then_the_rest_with_damage_and_a_shortage(api):
    task = {
        "transfer_id": "tr-2",
        "from_store": "shop-2",
        "lines": [{"sku": COLA, "qty": "10"}, {"sku": WATER, "qty": "4"}],
    }
    await _command(api, "transfer.receive", task)
    url = "/api/v1/stock/tasks/receive:tr-2"
    await api.call("POST", url + "/scans", {"sku": COLA, "qty": "6"})
    status, body = await api.call("POST", url + "/submit", {"note": "first van"})
    assert status == 200
    assert body["task"]["state"] == "open"
    cola = next(x for x in body["task"]["lines"] if x["sku"] == COLA)
    assert (cola["received_before"], cola["remaining"]) == ("6", "4")
    # more than remains, without saying so: refused, nothing sent
    await api.call("PUT", url + f"/lines/{COLA}", {"qty": "5"})
    status, body = await api.call("POST", url + "/submit")
    assert status == 409
    assert "only 4 is still expected" in body["detail"]
    status, body = await api.call(
        "PUT", url + f"/lines/{COLA}", {"qty": "4", "damaged": "1", "discrepancy": "damaged"}
    )
    assert status == 200
    status, body = await api.call("POST", url + "/submit")
    assert status == 422
    assert "need a note" in body["detail"]
    await api.call(
        "PUT",
        url + f"/lines/{COLA}",
        {"qty": "4", "damaged": "1", "discrepancy": "damaged", "note": "罐子压扁"},
    )
    await api.call(
        "PUT", url + f"/lines/{WATER}", {"qty": "3", "discrepancy": "short", "note": "one missing"}
    )
    status, body = await api.call("POST", url + "/submit")
    assert status == 200, body
    assert body["task"]["state"] == "done"
    first, second = await _outbox(api, "transfer.received")
    assert first["note"] == "first van"
    assert first["lines"][0]["qty"] == "6"
    assert {x["sku"]: (x["qty"], x["damaged"], x["discrepancy"]) for x in second["lines"]} == {
        COLA: ("4", "1", "damaged"),
        WATER: ("3", "0", "short"),
    }
    assert first["report_id"] != second["report_id"]


async def test_blocked_skus_are_refused_at_the_till_until_unblocked(api):
    ok, _ = await _command(api, "stock.block", {"sku": COLA, "reason": "批次 B42 过期 / batch B42 expired"})
    assert ok
    order = await api.open_order()
    status, body = await api.call("POST", f"/api/v1/orders/{order['id']}/lines", {"barcode": COLA_CODE})
    assert status == 409
    assert "已停售" in body["detail"]
    assert "blocked from sale" in body["detail"]
    assert "batch B42 expired" in body["detail"]
    assert (await api.call("GET", f"/api/v1/orders/{order['id']}"))[1]["lines"] == []
    status, body = await api.call("GET", "/api/v1/stock/blocked")
    assert [x["sku"] for x in body["items"]] == [COLA]
    ok, _ = await _command(api, "stock.unblock", {"sku": COLA, "reason": "new batch"})
    assert ok
    await api.add(order["id"], barcode=COLA_CODE)
    ok, detail = await _command(api, "stock.block", {"sku": COLA})
    assert not ok
    assert detail.startswith("reason")


async def test_an_expired_gs1_code_is_refused_and_a_good_one_sells(api):
    order = await api.open_order()
    yesterday = datetime.now(UTC).date() - timedelta(days=2)
    status, body = await api.call("POST", f"/api/v1/orders/{order['id']}/lines", {"barcode": _gs1(yesterday)})
    assert status == 409
    assert "已过期" in body["detail"]
    assert "expired on" in body["detail"]
    later = datetime.now(UTC).date() + timedelta(days=30)
    sold = await api.add(order["id"], barcode=_gs1(later))
    assert [x["sku"] for x in sold["lines"]] == [COLA]
    status, body = await api.call(
        "POST", f"/api/v1/orders/{order['id']}/lines", {"barcode": "(01)123(17)991301"}
    )
    assert status == 422
    assert "GS1" in body["detail"]


def test_gs1_reading_and_the_store_date():
    scan = read_gs1("]d2010695476741038817261231" + "\x1d" + "10B42")
    assert scan is not None
    assert (scan.gtin, scan.expiry, scan.batch) == (
        "06954767410388",
        date(2026, 12, 31),
        "B42",
    )
    assert read_gs1(COLA_CODE) is None
    assert read_gs1("2100120003521") is None  # a scale label is not GS1 element strings
    refuse_expired(scan, date(2026, 12, 31))  # the last day is still good
    with pytest.raises(TillError, match="expired on 2026-12-31"):
        refuse_expired(scan, date(2027, 1, 1))

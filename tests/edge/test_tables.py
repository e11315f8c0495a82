"""Tables through a real edge: floor plan, rounds to the kitchen, transfer, merge, split and pay."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, date, datetime
from fractions import Fraction
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.sim import SimNetworkPrinter
from edge.access import create_pairing_code
from edge.bill_split import Piece, even_parts, merge_sent, split_lines, split_sent
from edge.daemon import EdgeDaemon
from edge.devices import DeviceEntry, DeviceRegistry, save_registry
from edge.errors import TillError
from edge.orders import Order, OrderLine
from protocol.promotion_rules import AppliedRule, LineAllocation
from tests.edge.conftest import Api, edge_settings

KDS = {"screens": [{"station": "吧台"}, {"station": "面点", "categories": ["烘焙"]}]}


@pytest.fixture
async def restaurant(tmp_path, seeded_state):
    """An edge with a bar printer (also a screen) and a bakery screen, a floor plan, a waiter signed in."""
    for name in ("catalog.json", "staff.json"):
        (tmp_path / name).write_bytes((seeded_state / name).read_bytes())
    async with SimNetworkPrinter() as bar:
        bar_printer = DeviceEntry(
            id="bar",
            name="吧台",
            transport="network",
            host="127.0.0.1",
            port=bar.port,
            role="kitchen-bar",
            paper_mm=58,
            categories=["咖啡", "茶饮"],
        )
        save_registry(tmp_path, DeviceRegistry(devices=[bar_printer]))
        async with EdgeDaemon(edge_settings(tmp_path, kds=KDS)) as daemon, aiohttp.ClientSession() as http:
            api = Api(http, f"http://127.0.0.1:{daemon.http_port}", daemon)
            code = await create_pairing_code(daemon.journal)
            status, body = await api.call("POST", "/api/v1/devices/pair", {"code": code, "name": "点菜机"})
            assert status == 201, body
            api.device = body["token"]
            await api.sign_in("mgr")
            await _ok(api, "POST", "/api/v1/floor/areas", {"id": "hall", "name": "大厅"}, 201)
            for table in ("A1", "A2", "A3"):
                body = {"id": table, "area_id": "hall", "name": f"大厅{table}", "seats": 4}
                await _ok(api, "POST", "/api/v1/floor/tables", body, 201)
            await _ok(api, "POST", "/api/v1/shifts", {"float_fen": 0}, 201)
            await api.sign_in("w1")
            yield api, bar


async def _ok(api: Api, method: str, path: str, body: Any = None, status: int = 200, **kw: Any) -> Any:
    got, reply = await api.call(method, path, body, **kw)
    assert got == status, reply
    return reply


async def _table(api: Api, table: str) -> dict[str, Any]:
    return await _ok(api, "GET", f"/api/v1/tables/{table}")


async def _round(api: Api, table: str, *items: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    return await _ok(api, "POST", f"/api/v1/tables/{table}/rounds", {"items": list(items)}, 201, key=key)


async def _kitchen_counts(api: Api) -> tuple[int, int]:
    """Kitchen print jobs and screen tickets the journal holds: each is one ticket a station got."""

    def count(conn: Any) -> tuple[int, int]:
        jobs = conn.execute("SELECT count(*) FROM print_jobs WHERE kind = 'kitchen'").fetchone()[0]
        screens = conn.execute("SELECT count(*) FROM kds_tickets").fetchone()[0]
        return jobs, screens

    return await api.daemon.journal.read(count)


async def _sent(api: Api, order_id: str) -> dict[str, dict[str, list[Any]]]:
    def read(conn: Any) -> dict[str, dict[str, list[Any]]]:
        row = conn.execute("SELECT state FROM kitchen_sent WHERE order_id = ?", (order_id,)).fetchone()
        return json.loads(row[0]) if row else {}

    return await api.daemon.journal.read(read)


async def _send_again(api: Api, order_id: str) -> list[Any]:
    reply = await _ok(api, "POST", f"/api/v1/orders/{order_id}/kitchen", {})
    return reply["tickets"]


# ---------------------------------------------------------------------- floor plan


async def test_the_floor_plan_is_a_managers_and_every_field_is_checked(restaurant):
    api, _ = restaurant
    status, body = await api.call(
        "POST", "/api/v1/floor/tables", {"id": "B1", "area_id": "hall", "name": "B1", "seats": 2}
    )
    assert status == 403, body  # the waiter
    await api.sign_in("mgr")
    status, body = await api.call(
        "POST", "/api/v1/floor/tables", {"id": "B1", "area_id": "hall", "name": "B1", "seats": 0}
    )
    assert status == 422, body
    assert [e["field"] for e in body["errors"]] == ["seats"]
    status, body = await api.call(
        "POST", "/api/v1/floor/tables", {"id": "A1", "area_id": "hall", "name": "x", "seats": 2}
    )
    assert status == 409, body
    status, body = await api.call(
        "POST", "/api/v1/floor/tables", {"id": "B1", "area_id": "roof", "name": "x", "seats": 2}
    )
    assert status == 404, body
    await _ok(api, "POST", "/api/v1/floor/areas", {"id": "room", "name": "包间"}, 201)
    await _ok(
        api,
        "POST",
        "/api/v1/floor/tables",
        {"id": "V1", "area_id": "room", "name": "牡丹厅", "seats": 12},
        201,
    )
    table = await _ok(api, "PATCH", "/api/v1/floor/tables/V1", {"seats": 10})
    assert table["seats"] == 10
    floor = await _ok(api, "GET", "/api/v1/floor")
    assert [(a["id"], [t["id"] for t in a["tables"]]) for a in floor["areas"]] == [
        ("hall", ["A1", "A2", "A3"]),
        ("room", ["V1"]),
    ]
    # A table with guests cannot be taken out of use.
    await _ok(api, "POST", "/api/v1/tables/V1/open", {"party_size": 8}, 201)
    status, body = await api.call("PATCH", "/api/v1/floor/tables/V1", {"active": False})
    assert status == 409, body
    listed = await _ok(api, "GET", "/api/v1/tables?area=room")
    assert [(t["id"], t["status"], t["party_size"]) for t in listed["items"]] == [("V1", "seated", 8)]


# ---------------------------------------------------------------------- service


async def test_open_add_rounds_and_each_round_reaches_the_kitchen_once(restaurant):
    api, bar = restaurant
    async with api.http.ws_connect(f"{api.base}/api/v1/events?token={api.token}") as ws:
        assert (await ws.receive_json())["type"] == "hello"
        opened = await _ok(api, "POST", "/api/v1/tables/A1/open", {"party_size": 3}, 201)
        pushed = await _next_table_event(ws)
        assert (pushed["id"], pushed["status"], pushed["party_size"]) == ("A1", "seated", 3)
    order_id = opened["order"]["id"]
    assert opened["table"]["minutes_seated"] == 0
    status, body = await api.call("POST", "/api/v1/tables/A1/open", {"party_size": 2})
    assert status == 409, body

    first = await _round(
        api,
        "A1",
        {"sku": "COF-LAT", "qty": "2"},
        {"sku": "BAK-001", "course": 2, "hold": True},
        key="round-1",
    )
    assert [(t["station"], t["changes"]) for t in first["tickets"]] == [("吧台", ["new"]), ("面点", ["new"])]
    assert first["table"]["status"] == "ordered"
    assert first["order"]["total_fen"] == 2 * 1800 + 900
    # The phone retries the same round (lost reply): nothing is added or sent twice.
    again = await _round(
        api,
        "A1",
        {"sku": "COF-LAT", "qty": "2"},
        {"sku": "BAK-001", "course": 2, "hold": True},
        key="round-1",
    )
    assert again["order"]["lines"] == first["order"]["lines"]
    assert await _kitchen_counts(api) == (1, 2)

    second = await _round(api, "A1", {"sku": "COF-LAT"})
    assert [(t["station"], t["changes"]) for t in second["tickets"]] == [("吧台", ["changed"])]
    assert [(x["sku"], x["qty"]) for x in second["order"]["lines"]] == [("COF-LAT", "3"), ("BAK-001", "1")]
    assert await _send_again(api, order_id) == []
    await bar.wait_for(lambda p: len(p.jobs) >= 2, within=10)
    printed = ["\n".join(job) for job in bar.jobs]
    assert "拿铁 中杯 x2" in printed[0]
    assert "加 1 拿铁 中杯" in printed[1]
    assert all("桌号 A1" in ticket for ticket in printed)  # the runner knows where it goes

    # One more croissant joins the held line and stays held: adding to a course never fires it.
    third = await _round(api, "A1", {"sku": "BAK-001"})
    assert [(t["station"], t["changes"]) for t in third["tickets"]] == [("面点", ["changed"])]
    bakery = await _ok(api, "GET", "/api/v1/kds/stations/面点", token=api.device)
    assert [(i["kind"], i["qty"], i["held"]) for i in bakery["tickets"][-1]["items"]] == [
        ("changed", "2", True)
    ]
    # Holding a dish that is already cooking is refused, and the whole round with it.
    status, body = await api.call(
        "POST", "/api/v1/tables/A1/rounds", {"items": [{"sku": "COF-LAT", "hold": True}]}
    )
    assert status == 409, body
    assert len((await _table(api, "A1"))["bills"]) == 1
    assert [x.qty for x in (await api.daemon.till.get_order(order_id)).lines] == [3, 2]
    status, body = await api.call("POST", "/api/v1/tables/A2/rounds", {"items": [{"sku": "COF-LAT"}]})
    assert status == 409, body  # A2 is free: open it first
    status, body = await api.call("POST", "/api/v1/tables/A1/rounds", {"items": [{"sku": "NOPE"}]})
    assert status == 404, body


async def test_many_phones_seating_the_same_table_at_once_seat_one_party(restaurant):
    api, _ = restaurant
    replies = await asyncio.gather(
        *(api.call("POST", "/api/v1/tables/A3/open", {"party_size": n}) for n in range(1, 11))
    )
    assert sorted(status for status, _ in replies) == [201] + [409] * 9
    table = await _table(api, "A3")
    assert len(table["bills"]) == 1
    won = next(body for status, body in replies if status == 201)
    assert table["party_size"] == won["table"]["party_size"]
    assert table["bills"][0]["order_id"] == won["order"]["id"]


async def test_a_round_cut_off_before_its_send_is_sent_once_by_the_retry(restaurant, monkeypatch):
    api, _ = restaurant
    await _ok(api, "POST", "/api/v1/tables/A1/open", {"party_size": 2}, 201)
    real = api.daemon.devices.kitchen_round

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(api.daemon.devices, "kitchen_round", broken)
    status, body = await api.call(
        "POST", "/api/v1/tables/A1/rounds", {"items": [{"sku": "COF-LAT"}]}, key="r"
    )
    assert status == 503, body  # the lines are in, the send is not
    assert await _kitchen_counts(api) == (0, 0)
    monkeypatch.setattr(api.daemon.devices, "kitchen_round", real)
    retried = await _round(api, "A1", {"sku": "COF-LAT"}, key="r")
    assert [(x["sku"], x["qty"]) for x in retried["order"]["lines"]] == [("COF-LAT", "1")]
    assert [t["changes"] for t in retried["tickets"]] == [["new"]]
    replayed = await _round(api, "A1", {"sku": "COF-LAT"}, key="r")
    assert (replayed["order"], replayed["tickets"]) == (retried["order"], retried["tickets"])
    assert await _kitchen_counts(api) == (1, 1)


async def test_tables_outlive_a_restart(tmp_path, seeded_state):
    for name in ("catalog.json", "staff.json"):
        (tmp_path / name).write_bytes((seeded_state / name).read_bytes())
    settings_ = edge_settings(tmp_path, kds={"screens": [{"station": "吧台", "categories": ["咖啡"]}]})
    async with EdgeDaemon(settings_) as daemon, aiohttp.ClientSession() as http:
        api = Api(http, f"http://127.0.0.1:{daemon.http_port}", daemon)
        code = await create_pairing_code(daemon.journal)
        api.device = (await _ok(api, "POST", "/api/v1/devices/pair", {"code": code, "name": "p"}, 201))[
            "token"
        ]
        await api.sign_in("mgr")
        await _ok(api, "POST", "/api/v1/floor/areas", {"id": "hall", "name": "大厅"}, 201)
        await _ok(
            api,
            "POST",
            "/api/v1/floor/tables",
            {"id": "A1", "area_id": "hall", "name": "A1", "seats": 2},
            201,
        )
        await _ok(api, "POST", "/api/v1/tables/A1/open", {"party_size": 2}, 201)
        order_id = (await _round(api, "A1", {"sku": "COF-LAT", "qty": "2"}))["order"]["id"]
    async with EdgeDaemon(settings_) as daemon, aiohttp.ClientSession() as http:
        api = Api(http, f"http://127.0.0.1:{daemon.http_port}", daemon, device=api.device)
        await api.sign_in("w1")
        table = await _table(api, "A1")
        assert (table["status"], table["party_size"], table["bills"][0]["order_id"]) == (
            "ordered",
            2,
            order_id,
        )
        assert await _send_again(api, order_id) == []
        again = await _round(api, "A1", {"sku": "COF-LAT"})
        assert [t["changes"] for t in again["tickets"]] == [["changed"]]


async def _next_table_event(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    async with asyncio.timeout(5):
        while True:
            message = await ws.receive_json()
            if message["type"] == "table.updated":
                return message["data"]


async def test_a_transfer_moves_the_party_and_nothing_else(restaurant):
    api, bar = restaurant
    opened = await _ok(api, "POST", "/api/v1/tables/A1/open", {"party_size": 2}, 201)
    await _round(api, "A1", {"sku": "COF-AME"}, {"sku": "BAK-002"})
    await _ok(api, "POST", "/api/v1/tables/A3/open", {"party_size": 2}, 201)
    before = await api.daemon.till.get_order(opened["order"]["id"])
    sent, counts = await _sent(api, before.id), await _kitchen_counts(api)

    status, body = await api.call("POST", "/api/v1/tables/A1/transfer", {"to": "A3"})
    assert status == 409, body  # A3 has guests
    moved = await _ok(api, "POST", "/api/v1/tables/A1/transfer", {"to": "A2"})
    assert moved["table"]["bills"][0]["order_id"] == before.id
    assert (await _table(api, "A1"))["status"] == "free"
    assert (await _table(api, "A2"))["status"] == "ordered"
    after = await api.daemon.till.get_order(before.id)
    assert after.lines == before.lines
    assert await _sent(api, before.id) == sent
    assert await _send_again(api, before.id) == []
    assert await _kitchen_counts(api) == counts
    # The next round goes to the same order at its new table.
    reply = await _round(api, "A2", {"sku": "COF-AME"})
    assert reply["order"]["id"] == before.id
    assert [t["changes"] for t in reply["tickets"]] == [["changed"]]
    await bar.wait_for(lambda p: len(p.jobs) >= 2, within=10)
    assert "桌号 A2" in "\n".join(bar.jobs[-1])


async def test_a_merge_combines_the_bills_and_the_kitchen_never_hears_twice(restaurant):
    api, bar = restaurant
    one = (await _ok(api, "POST", "/api/v1/tables/A1/open", {"party_size": 2}, 201))["order"]["id"]
    two = (await _ok(api, "POST", "/api/v1/tables/A2/open", {"party_size": 3}, 201))["order"]["id"]
    await _round(api, "A1", {"sku": "COF-LAT"}, {"sku": "BAK-001", "course": 2, "hold": True})
    await _round(api, "A2", {"sku": "TEA-LEMON", "qty": "2"}, {"sku": "COF-LAT"})
    lines_before = [
        *(await api.daemon.till.get_order(one)).lines,
        *(await api.daemon.till.get_order(two)).lines,
    ]
    counts = await _kitchen_counts(api)

    status, body = await api.call("POST", "/api/v1/tables/A1/merge", {"from": "A2"})
    assert status == 403, body  # merging bills is for those who take payments
    await api.sign_in("c1")
    status, body = await api.call("POST", "/api/v1/tables/A1/merge", {"from": "A1"})
    assert status == 422, body
    merged = await _ok(api, "POST", "/api/v1/tables/A1/merge", {"from": "A2"})
    order = await api.daemon.till.get_order(one)
    assert sorted(x.line_id for x in order.lines) == sorted(x.line_id for x in lines_before)
    assert order.total_fen == sum(x.total_fen for x in lines_before) == 1800 + 900 + 2000 + 1800
    gone = await api.daemon.till.get_order(two)
    assert (gone.status, gone.lines, gone.total_fen) == ("voided", [], 0)
    assert merged["table"]["party_size"] == 5
    assert merged["table"]["joined"] == ["A2"]
    assert (await _table(api, "A2"))["joined"] == ["A1"]
    # The kitchen: nothing new, and the merged order knows everything both were sent.
    assert await _send_again(api, one) == []
    assert await _kitchen_counts(api) == counts
    known = [line_id for station in (await _sent(api, one)).values() for line_id in station]
    assert sorted(known) == sorted(x.line_id for x in lines_before)
    assert await _sent(api, two) == {}
    # A dish of the old A2 taken off now is one cancellation at its station; the held croissant still fires.
    tea = next(x.line_id for x in order.lines if x.sku == "TEA-LEMON")
    await _ok(api, "DELETE", f"/api/v1/orders/{one}/lines/{tea}")
    assert [t["changes"] for t in await _send_again(api, one)] == [["cancelled"]]
    fired = await _ok(api, "POST", f"/api/v1/orders/{one}/kitchen/fire", {"course": 2})
    assert [t["changes"] for t in fired["tickets"]] == [["fire"]]
    # The merged-away order reached the outbox as voided, so its number is accounted for at the hub.
    events = await api.daemon.journal.read(lambda c: c.execute("SELECT type, body FROM outbox").fetchall())
    assert [json.loads(b)["id"] for t, b in events if t == "order.voided"] == [two]
    await bar.wait_for(lambda p: len(p.jobs) >= 3, within=10)
    await asyncio.sleep(0.3)
    assert len(bar.jobs) == 3  # A1's round, A2's round, the cancellation


async def test_split_by_item_into_sub_bills_each_paid_on_its_own(restaurant):
    api, _ = restaurant
    order_id = (await _ok(api, "POST", "/api/v1/tables/A1/open", {"party_size": 3}, 201))["order"]["id"]
    reply = await _round(api, "A1", {"sku": "COF-LAT", "qty": "3"}, {"sku": "TEA-LEMON"}, {"sku": "BAK-001"})
    bill = reply["order"]
    ids = {x["sku"]: x["line_id"] for x in bill["lines"]}
    counts = await _kitchen_counts(api)

    split = {
        "items": [
            [{"line_id": ids["COF-LAT"], "qty": "1"}],
            [{"line_id": ids["TEA-LEMON"]}, {"line_id": ids["COF-LAT"], "qty": "1"}],
        ]
    }
    status, body = await api.call("POST", "/api/v1/tables/A1/split", split)
    assert status == 403, body  # the waiter
    await api.sign_in("c1")
    bad = {"items": [[{"line_id": ids["COF-LAT"], "qty": "4"}]]}
    status, body = await api.call("POST", "/api/v1/tables/A1/split", bad)
    assert status == 422, body
    status, body = await api.call(
        "POST", "/api/v1/tables/A1/split", {"items": [[{"line_id": ids["COF-LAT"], "qty": "0.5"}]]}
    )
    assert status == 422, body
    done = await _ok(api, "POST", "/api/v1/tables/A1/split", split, 201)
    bills = done["bills"]
    assert bills[0]["id"] == order_id
    assert [[(x["sku"], x["qty"]) for x in b["lines"]] for b in bills] == [
        [("COF-LAT", "1"), ("BAK-001", "1")],
        [("COF-LAT", "1")],
        [("COF-LAT", "1"), ("TEA-LEMON", "1")],
    ]
    assert sum(b["total_fen"] for b in bills) == bill["total_fen"] == 3 * 1800 + 1000 + 900
    assert [b["role"] for b in done["table"]["bills"]] == ["main", "part", "part"]
    # What the bar was sent is now spread over the three bills: 3 lattes and a tea, as before.
    sent = [await _sent(api, b["id"]) for b in bills]
    lattes = sum(Fraction(e[0]) for s in sent for e in s.get("吧台", {}).values() if e[2] == "拿铁 中杯")
    assert lattes == 3
    for b in bills:
        assert await _send_again(api, b["id"]) == []

    for b in reversed(bills):  # each sub-bill paid separately with the till's payments route
        paid = await _ok(
            api,
            "POST",
            f"/api/v1/orders/{b['id']}/payments",
            {"method": "cash", "amount_fen": b["total_fen"]},
            201,
        )
        assert paid["order"]["status"] == "paid"
    assert await _kitchen_counts(api) == counts  # paying sent nothing more to the kitchen
    assert (await _table(api, "A1"))["status"] == "free"
    await _ok(api, "POST", "/api/v1/tables/A1/open", {"party_size": 2}, 201)


async def test_a_held_dish_moved_to_a_sub_bill_is_fired_from_there(restaurant):
    api, _ = restaurant
    main = (await _ok(api, "POST", "/api/v1/tables/A3/open", {"party_size": 2}, 201))["order"]["id"]
    order = (await _round(api, "A3", {"sku": "COF-AME"}, {"sku": "BAK-003", "course": 2, "hold": True}))[
        "order"
    ]
    bread = next(x["line_id"] for x in order["lines"] if x["sku"] == "BAK-003")
    await api.sign_in("c1")
    bills = (await _ok(api, "POST", "/api/v1/tables/A3/split", {"items": [[{"line_id": bread}]]}, 201))[
        "bills"
    ]
    part = bills[1]["id"]
    assert [x["line_id"] for x in bills[1]["lines"]] == [bread]
    status, body = await api.call("POST", f"/api/v1/orders/{main}/kitchen/fire", {"course": 2})
    assert status == 409, body  # nothing of course 2 is held on the table's order any more
    fired = await _ok(api, "POST", f"/api/v1/orders/{part}/kitchen/fire", {"course": 2})
    assert [(t["station"], t["changes"]) for t in fired["tickets"]] == [("面点", ["fire"])]
    assert await _kitchen_counts(api) == (1, 3)  # the round's two tickets and the one 起菜


async def test_an_even_split_is_exact_and_its_parts_are_paid_one_by_one(restaurant):
    api, _ = restaurant
    await _ok(api, "POST", "/api/v1/tables/A2/open", {"party_size": 3}, 201)
    bill = (await _round(api, "A2", {"sku": "COF-LAT"}, {"sku": "TEA-LEMON"}, {"sku": "BAK-001"}))["order"]
    assert bill["total_fen"] == 3700
    await _ok(api, "POST", "/api/v1/tables/A2/bill")
    assert (await _table(api, "A2"))["status"] == "bill"
    await api.sign_in("c1")
    done = await _ok(api, "POST", "/api/v1/tables/A2/split", {"evenly": 3}, 201)
    parts = done["table"]["bills"][0]["parts"]
    assert [p["amount_fen"] for p in parts] == [1233, 1234, 1233]
    path = f"/api/v1/orders/{bill['id']}/payments"
    await _ok(api, "POST", path, {"method": "wechat", "amount_fen": 1233, "reference": "wx-1"}, 201)
    status, body = await api.call("POST", "/api/v1/tables/A2/split", {"evenly": 2})
    assert status == 409, body  # paying started: the split stays
    parts = (await _table(api, "A2"))["bills"][0]["parts"]
    assert [(p["paid_fen"], p["due_fen"]) for p in parts] == [(1233, 0), (0, 1234), (0, 1233)]
    await _ok(api, "POST", path, {"method": "cash", "amount_fen": 2000}, 201)
    async with api.http.ws_connect(f"{api.base}/api/v1/events?token={api.token}") as ws:
        assert (await ws.receive_json())["type"] == "hello"
        await _ok(api, "POST", path, {"method": "alipay", "amount_fen": 467, "reference": "ali-3"}, 201)
        pushed = await _next_table_event(ws)  # a payment through the till's route moves the table too
        assert (pushed["id"], pushed["status"]) == ("A2", "free")
    order = await api.daemon.till.get_order(bill["id"])
    assert order.status == "paid"
    assert [t.amount_fen for t in order.tenders] == [1233, 1234 + 766, 467]
    assert (await _table(api, "A2"))["status"] == "free"


async def test_seating_a_called_queue_number_opens_the_table_and_seats_the_number(restaurant):
    api, _ = restaurant
    taken = await _ok(api, "POST", "/api/v1/queue/tickets", {"party_size": 4, "print": False}, 201)
    ticket = taken["ticket"]["id"]
    status, body = await api.call(
        "POST", "/api/v1/tables/A1/open", {"party_size": 4, "queue_ticket_id": ticket}
    )
    assert status == 409, body  # not called yet: nothing opened
    assert (await _table(api, "A1"))["status"] == "free"
    await _ok(api, "POST", f"/api/v1/queue/tickets/{ticket}/call")
    await _ok(api, "POST", "/api/v1/tables/A1/open", {"party_size": 4, "queue_ticket_id": ticket}, 201)
    state = await api.daemon.journal.read(
        lambda c: c.execute("SELECT state FROM queue_tickets WHERE id = ?", (ticket,)).fetchone()[0]
    )
    assert state == "seated"


async def test_release_frees_a_table_nobody_ordered_at(restaurant):
    api, _ = restaurant
    opened = await _ok(api, "POST", "/api/v1/tables/A3/open", {"party_size": 2}, 201)
    released = await _ok(api, "POST", "/api/v1/tables/A3/release")
    assert released["order"]["status"] == "voided"
    assert released["table"]["status"] == "free"
    assert (await api.daemon.till.get_order(opened["order"]["id"])).status == "voided"
    await _ok(api, "POST", "/api/v1/tables/A3/open", {"party_size": 2}, 201)
    await _round(api, "A3", {"sku": "COF-AME"})
    status, body = await api.call("POST", "/api/v1/tables/A3/release")
    assert status == 409, body
    status, body = await api.call("POST", "/api/v1/tables/A1/release")
    assert status == 409, body  # free already
    status, body = await api.call("GET", "/api/v1/tables/Z9")
    assert status == 404, body


# ---------------------------------------------------------------------- properties


def _order(lines: list[OrderLine]) -> Order:
    promotions = [
        AppliedRule(
            rule_id="r1",
            name="满减",
            kind="threshold",
            saving_fen=sum(a.amount_fen for x in lines for a in x.promotions),
            applications=1,
        )
    ]
    return Order(
        id="o1",
        store="shop-1",
        number=1,
        business_day=date(2026, 1, 1),
        opened_at=datetime(2026, 1, 1, tzinfo=UTC),
        opened_by="w1",
        lines=lines,
        subtotal_fen=sum(x.total_fen + x.promo_discount_fen for x in lines),
        discount_fen=sum(x.promo_discount_fen for x in lines),
        total_fen=sum(x.total_fen for x in lines),
        promotions=promotions,
    )


@st.composite
def _bills(draw: st.DrawFn) -> Order:
    lines = []
    for index in range(draw(st.integers(1, 8))):
        qty = draw(st.integers(1, 12))
        total = draw(st.integers(0, 500_000))
        discount = draw(st.integers(0, total))
        share = [LineAllocation(rule_id="r1", name="满减", amount_fen=discount)] if discount else []
        lines.append(
            OrderLine(
                line_id=f"l{index}",
                sku=f"S{index}",
                name=f"菜{index}",
                qty=Fraction(qty),
                list_price_fen=0,
                total_fen=total - discount,
                promo_discount_fen=discount,
                promotions=share,
            )
        )
    return _order(lines)


@settings(max_examples=300, deadline=None)
@given(total=st.integers(0, 10**9), parts=st.integers(1, 50))
def test_even_parts_always_sum_to_the_bill(total, parts):
    split = even_parts(total, parts)
    assert sum(split) == total
    assert len(split) == parts
    assert max(split) - min(split) <= 1


@settings(max_examples=300, deadline=None)
@given(data=st.data(), order=_bills())
def test_a_split_by_item_adds_up_to_the_bill_and_keeps_what_the_kitchen_was_sent(data, order):
    parts: list[list[tuple[str, Fraction | None]]] = [[] for _ in range(data.draw(st.integers(1, 4)))]
    for line in order.lines:
        left = line.qty
        for part in parts:
            take = data.draw(st.integers(0, int(left)))
            if take:
                part.append((line.line_id, Fraction(take)))
                left -= take
    parts = [p for p in parts if p]
    if not parts:
        return
    counter = iter(range(10_000))
    bills, pieces = split_lines(order, parts, lambda: f"n{next(counter)}")
    assert sum(x.total_fen for bill in bills for x in bill) == order.total_fen
    assert sum(x.promo_discount_fen for bill in bills for x in bill) == order.discount_fen
    origin = {p.line_id: line_id for line_id, cut in pieces.items() for p in cut}
    for line in order.lines:
        held = [x for bill in bills for x in bill if origin.get(x.line_id, x.line_id) == line.line_id]
        assert sum(x.qty for x in held) == line.qty
        assert all(x.total_fen >= 0 and x.promo_discount_fen >= 0 for x in held)
    assert all(bills), "no bill is left empty"
    ids = [x.line_id for bill in bills for x in bill]
    assert len(ids) == len(set(ids))
    # The kitchen was sent some quantity of each line (maybe more, maybe less than now).
    sent = {"厨房": {x.line_id: [str(data.draw(st.integers(0, 15))), "", x.name] for x in order.lines}}
    states = split_sent(sent, pieces, len(bills))
    assert len(states) == len(bills)
    for line in order.lines:
        total = sum(
            Fraction(entry[0])
            for state in states
            for line_id, entry in state.get("厨房", {}).items()
            if origin.get(line_id, line_id) == line.line_id
        )
        assert total == Fraction(sent["厨房"][line.line_id][0])


def test_split_sent_gives_a_pending_reduction_to_the_piece_that_kept_the_line():
    pieces = {"l1": [Piece(0, "l1", Fraction(1)), Piece(1, "n1", Fraction(1))]}
    states = split_sent({"吧台": {"l1": ["3", "", "拿铁"]}}, pieces, 2)
    assert states == [{"吧台": {"l1": ["2", "", "拿铁"]}}, {"吧台": {"n1": ["1", "", "拿铁"]}}]


def test_a_split_refuses_what_cannot_be_split():
    line = OrderLine(line_id="l1", sku="S", name="啤酒", qty=Fraction(2), list_price_fen=500, total_fen=1000)
    order = _order([line])
    with pytest.raises(TillError, match="only 2 of 2"):
        split_lines(order, [[("l1", Fraction(3))]], lambda: "n")
    with pytest.raises(TillError, match="twice"):
        split_lines(order, [[("l1", Fraction(1)), ("l1", Fraction(1))]], lambda: "n")
    with pytest.raises(TillError, match="no line"):
        split_lines(order, [[("l9", None)]], lambda: "n")
    with pytest.raises(TillError, match="at least one line"):
        split_lines(order, [[]], lambda: "n")
    # Everything asked for: the last part stays on the order instead of leaving it empty.
    bills, _ = split_lines(order, [[("l1", Fraction(1))], [("l1", None)]], lambda: "n")
    assert [[(x.line_id, x.qty, x.total_fen) for x in b] for b in bills] == [
        [("l1", 1, 500)],
        [("n", 1, 500)],
    ]


async def test_the_openapi_document_lists_the_table_routes(restaurant):
    api, _ = restaurant
    doc = await _ok(api, "GET", "/api/v1/openapi.json", token="")
    assert set(doc["paths"]["/api/v1/tables/{table_id}/rounds"]) == {"post"}
    assert set(doc["paths"]["/api/v1/tables"]) == {"get"}
    split = doc["paths"]["/api/v1/tables/{table_id}/split"]["post"]
    assert split["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SplitIn"
    }
    assert "from" in doc["components"]["schemas"]["MergeIn"]["properties"]


@settings(max_examples=200, deadline=None)
@given(
    ours=st.dictionaries(
        st.sampled_from(["吧台", "面点", "厨房"]), st.sets(st.text("abc", min_size=1, max_size=3))
    ),
    theirs=st.dictionaries(
        st.sampled_from(["吧台", "面点", "凉菜"]), st.sets(st.text("xyz", min_size=1, max_size=3))
    ),
)
def test_a_merged_sent_state_holds_every_line_of_both_once(ours, theirs):
    def state(lines: dict[str, set[str]]) -> dict[str, dict[str, list[Any]]]:
        return {station: {line: ["1", "", line] for line in ids} for station, ids in lines.items()}

    merged = merge_sent(state(ours), state(theirs))
    held = [(station, line) for station, lines in merged.items() for line in lines]
    expected = [(s, x) for s, ids in ours.items() for x in ids] + [
        (s, x) for s, ids in theirs.items() for x in ids
    ]
    assert sorted(held) == sorted(expected)
    with pytest.raises(TillError):
        merge_sent(state(ours) | {"吧台": {"dup": ["1", "", "d"]}}, {"面点": {"dup": ["1", "", "d"]}})

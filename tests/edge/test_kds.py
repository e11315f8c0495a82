"""Kitchen screens and hold-and-fire through a real edge: tickets per station exactly once, states, live resync."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from drivers.sim import SimNetworkPrinter
from edge.access import create_pairing_code
from edge.daemon import EdgeDaemon
from edge.devices import DeviceEntry, DeviceRegistry, save_registry
from tests.edge.conftest import Api, edge_settings

KDS = {
    "screens": [{"station": "吧台"}, {"station": "面点", "categories": ["烘焙"]}],
    "warn_after_s": 120,
    "late_after_s": 240,
}


async def _until(check: Any, within: float = 10) -> None:
    async with asyncio.timeout(within):
        while not check():
            await asyncio.sleep(0.05)


@pytest.fixture
async def kitchen(tmp_path, seeded_state):
    """An edge with a bar printer that is also a screen, a screen-only bakery station, a cashier signed in."""
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
        settings = edge_settings(tmp_path, kds=KDS)
        async with EdgeDaemon(settings) as daemon, aiohttp.ClientSession() as http:
            client = Api(http, f"http://127.0.0.1:{daemon.http_port}", daemon)
            code = await create_pairing_code(daemon.journal)
            status, body = await client.call("POST", "/api/v1/devices/pair", {"code": code, "name": "后厨屏"})
            assert status == 201, body
            client.device = body["token"]
            await client.sign_in("c1")
            await _until(lambda: [d["health"] for d in daemon.devices.health()] == ["ok"])
            yield client, bar


async def _screen(api: Api, station: str) -> dict[str, Any]:
    status, body = await api.call("GET", f"/api/v1/kds/stations/{station}", token=api.device)
    assert status == 200, body
    return body


def _items(ticket: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    return [
        (i["kind"], i["name"], i["qty"] if i["kind"] != "cancelled" else i["sent_qty"], i["held"])
        for i in ticket["items"]
    ]


async def _send(api: Api, order_id: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    status, reply = await api.call("POST", f"/api/v1/orders/{order_id}/kitchen", body or {})
    assert status == 200, reply
    return reply


async def _lines(api: Api, order: dict[str, Any]) -> dict[str, str]:
    return {line["sku"]: line["line_id"] for line in order["lines"]}


async def test_add_change_cancel_hold_fire_and_void_reach_each_station_exactly_once(kitchen):
    api, bar = kitchen
    order = await api.open_order()
    await api.add(order["id"], sku="COF-LAT", qty=2)
    await api.add(order["id"], sku="TEA-LEMON")
    order = await api.add(order["id"], sku="BAK-001")
    ids = await _lines(api, order)

    sent = await _send(api, order["id"], {"lines": [{"line_id": ids["BAK-001"], "course": 2, "hold": True}]})
    assert [(t["station"], "job" in t, "screen_ticket" in t) for t in sent["tickets"]] == [
        ("吧台", True, True),
        ("面点", False, True),
    ]
    # Sending again with nothing changed sends nothing anywhere.
    assert (await _send(api, order["id"]))["tickets"] == []

    bar_screen, bakery = await _screen(api, "吧台"), await _screen(api, "面点")
    assert [_items(t) for t in bar_screen["tickets"]] == [
        [("new", "拿铁 中杯", "2", False), ("new", "手打柠檬茶", "1", False)]
    ]
    assert [(t["title"], _items(t)) for t in bakery["tickets"]] == [
        ("新单", [("new", "黄油牛角面包", "1", True)])
    ]
    assert bakery["all_day"] == []  # held: not to be started yet
    assert bar_screen["all_day"] == [{"name": "手打柠檬茶", "qty": "1"}, {"name": "拿铁 中杯", "qty": "2"}]

    # One more latte, the lemon tea taken off: one ticket with both, on the printer and the screen.
    status, _ = await api.call("PATCH", f"/api/v1/orders/{order['id']}/lines/{ids['COF-LAT']}", {"qty": "3"})
    assert status == 200
    status, _ = await api.call("DELETE", f"/api/v1/orders/{order['id']}/lines/{ids['TEA-LEMON']}")
    assert status == 200
    sent = await _send(api, order["id"])
    assert [(t["station"], t["changes"]) for t in sent["tickets"]] == [("吧台", ["cancelled", "changed"])]
    latest = (await _screen(api, "吧台"))["tickets"][-1]
    assert latest["title"] == "加单/改单"
    assert _items(latest) == [("cancelled", "手打柠檬茶", "1", False), ("changed", "拿铁 中杯", "3", False)]

    # A held line cannot be held again once fired; firing the course sends one 起菜 ticket.
    status, reply = await api.call("POST", f"/api/v1/orders/{order['id']}/kitchen/fire", {"course": 2})
    assert status == 200, reply
    assert reply["fired"] == [ids["BAK-001"]]
    assert [(t["station"], t["changes"]) for t in reply["tickets"]] == [("面点", ["fire"])]
    status, again = await api.call("POST", f"/api/v1/orders/{order['id']}/kitchen/fire", {"course": 2})
    assert status == 409, again
    status, refused = await api.call(
        "POST",
        f"/api/v1/orders/{order['id']}/kitchen",
        {"lines": [{"line_id": ids["BAK-001"], "hold": True}]},
    )
    assert status == 409, refused
    bakery = await _screen(api, "面点")
    assert [(t["title"], _items(t)) for t in bakery["tickets"]][-1] == (
        "起菜",
        [("fire", "黄油牛角面包", "1", False)],
    )
    assert bakery["all_day"] == [{"name": "黄油牛角面包", "qty": "1"}]

    # Voiding takes everything back from every station that has it.
    status, body = await api.sign_in("mgr"), None
    status, body = await api.call("POST", f"/api/v1/orders/{order['id']}/void", {"reason": "客人走了"})
    assert status == 200, body
    bar_last, bakery_last = (
        (await _screen(api, "吧台"))["tickets"][-1],
        (await _screen(api, "面点"))["tickets"][-1],
    )
    assert _items(bar_last) == [("cancelled", "拿铁 中杯", "3", False)]
    assert _items(bakery_last) == [("cancelled", "黄油牛角面包", "1", False)]
    status, body = await api.call("POST", f"/api/v1/orders/{order['id']}/kitchen", {})
    assert status == 409, body

    # The printer got the same three bar tickets, each once.
    await bar.wait_for(lambda p: len(p.jobs) >= 3, within=10)
    await asyncio.sleep(0.3)
    printed = ["\n".join(job) for job in bar.jobs]
    assert len(printed) == 3
    assert "拿铁 中杯 x2" in printed[0]
    assert "手打柠檬茶 x1" in printed[0]
    assert "取消 手打柠檬茶" in printed[1]
    assert "加 1 拿铁 中杯" in printed[1]
    assert "取消 拿铁 中杯" in printed[2]


async def test_ticket_states_items_recall_and_the_pickup_call(kitchen):
    api, _ = kitchen
    order = await api.open_order()
    await api.add(order["id"], sku="COF-AME")
    await api.add(order["id"], sku="BAK-002")
    await _send(api, order["id"], {"pickup": True})
    bar_ticket = (await _screen(api, "吧台"))["tickets"][0]
    bakery_ticket = (await _screen(api, "面点"))["tickets"][0]
    path = f"/api/v1/kds/tickets/{bar_ticket['id']}"

    status, body = await api.call("POST", path + "/items/0", {"done": True}, token=api.device)
    assert status == 200
    assert body["ticket"]["items"][0]["done"] is True
    assert (await _screen(api, "吧台"))["all_day"] == []  # done items are no longer to make
    status, body = await api.call("POST", path + "/items/5", {"done": True}, token=api.device)
    assert status == 404, body

    states = []
    for _ in range(2):
        status, body = await api.call("POST", path, {"action": "bump"}, token=api.device)
        assert status == 200, body
        states.append(body["ticket"]["state"])
        assert body["call"] is None  # the bakery ticket is not ready yet: nobody is called
    assert states == ["in_progress", "ready"]

    status, body = await api.call(
        "POST", f"/api/v1/kds/tickets/{bakery_ticket['id']}", {"action": "ready"}, token=api.device
    )
    assert status == 200, body
    number = f"{order['number']:04d}"
    assert body["call"]["label"] == number
    assert body["call"]["text"] == f"请 {number} 号顾客取餐"
    status, queue = await api.call("GET", "/api/v1/queue")
    assert [p["label"] for p in queue["pickups"]] == [number]

    # Served, then recalled by mistake-correction; a served ticket cannot be bumped further.
    status, body = await api.call("POST", path, {"action": "bump"}, token=api.device)
    assert body["ticket"]["state"] == "served"
    screen = await _screen(api, "吧台")
    assert screen["tickets"] == []
    assert [t["id"] for t in screen["served"]] == [bar_ticket["id"]]
    status, body = await api.call("POST", path, {"action": "bump"}, token=api.device)
    assert status == 409, body
    status, body = await api.call("POST", path, {"action": "recall"}, token=api.device)
    assert body["ticket"]["state"] == "ready"
    assert [t["id"] for t in (await _screen(api, "吧台"))["tickets"]] == [bar_ticket["id"]]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/api/v1/kds/tickets/nope", {"action": "bump"}, 404),
        ("POST", "/api/v1/kds/tickets/nope", {"action": "cook"}, 422),
        ("GET", "/api/v1/kds/stations/前台", None, 404),
        ("POST", "/api/v1/orders/nope/kitchen", {}, 404),
        ("POST", "/api/v1/orders/nope/kitchen/fire", {"course": 1, "line_ids": ["x"]}, 422),
    ],
)
async def test_bad_kitchen_requests_are_refused(kitchen, method, path, body, status):
    api, _ = kitchen
    got, reply = await api.call(method, path, body)
    assert got == status, reply
    assert reply["status"] == status


async def test_sending_needs_a_staff_session_and_a_screen_needs_its_token(kitchen):
    api, _ = kitchen
    order = await api.open_order()
    status, body = await api.call("POST", f"/api/v1/orders/{order['id']}/kitchen", {}, token=api.device)
    assert status == 401, body
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await api.http.ws_connect(api.base + "/api/v1/kds/live?station=吧台")
    assert refused.value.status == 401
    status, page = await api.call("GET", "/api/v1/kds/stations", token=api.device)
    assert [(s["name"], s["printer"], s["screen"]) for s in page["items"]] == [
        ("吧台", "bar", True),
        ("面点", None, True),
    ]


async def _next(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), 5)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)


async def test_a_screen_that_was_away_gets_the_full_state_on_reconnect(kitchen):
    api, _ = kitchen
    live = f"{api.base}/api/v1/kds/live?station=吧台&token={api.device}"
    first = await api.open_order()
    await api.add(first["id"], sku="COF-LAT")
    await _send(api, first["id"])
    async with api.http.ws_connect(live + "&since=-1") as ws:
        state = await _next(ws)
        assert state["type"] == "state"
        assert len(state["tickets"]) == 1
        seen = state["version"]
        # While connected: each change arrives as the tickets it touched, from the version it follows.
        ticket_id = state["tickets"][0]["id"]
        await api.call("POST", f"/api/v1/kds/tickets/{ticket_id}", {"action": "bump"}, token=api.device)
        change = await _next(ws)
        assert change["type"] == "changes"
        assert change["from"] == seen
        assert [(t["id"], t["state"]) for t in change["tickets"]] == [(ticket_id, "in_progress")]
        seen = change["version"]

    # Away: the first ticket is served, a new order comes in and gets changed.
    await api.call("POST", f"/api/v1/kds/tickets/{ticket_id}", {"action": "served"}, token=api.device)
    second = await api.open_order()
    second = await api.add(second["id"], sku="TEA-PEARL", qty=2)
    await _send(api, second["id"])
    line = second["lines"][0]["line_id"]
    await api.call("PATCH", f"/api/v1/orders/{second['id']}/lines/{line}", {"qty": "1"})
    await _send(api, second["id"])

    async with api.http.ws_connect(live + f"&since={seen}") as ws:
        state = await _next(ws)
        assert state["type"] == "state"
        assert [(t["order_number"], _items(t)) for t in state["tickets"]] == [
            (f"{second['number']:04d}", [("new", "珍珠奶茶 中杯", "2", False)]),
            (f"{second['number']:04d}", [("changed", "珍珠奶茶 中杯", "1", False)]),
        ]
        assert [t["id"] for t in state["served"]] == [ticket_id]
        assert state["all_day"] == [{"name": "珍珠奶茶 中杯", "qty": "1"}]
        current = state["version"]
    # Up to date: nothing to resend.
    async with api.http.ws_connect(live + f"&since={current}") as ws:
        assert (await _next(ws))["type"] == "uptodate"

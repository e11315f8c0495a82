"""Queue calling (排队叫号): numbers by party size, the wait estimate, call/recall/skip/seat, slips, the display."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from drivers.sim import SimNetworkPrinter
from edge.devices import DeviceEntry, DeviceRegistry, save_registry
from edge.journal import _MIGRATIONS
from edge.queue_calls import QueueSettings, call_ticket, estimate_s, take_number

DAY = "2026-05-01"
T0 = datetime(2026, 5, 1, 4, 0, tzinfo=UTC)


@pytest.fixture
def conn():
    db = sqlite3.connect(":memory:", isolation_level=None)
    for script in _MIGRATIONS:
        db.executescript(script)
    yield db
    db.close()


def test_numbers_follow_party_size_per_category_and_day(conn):
    settings = QueueSettings()
    taken = [take_number(conn, settings, size, DAY, T0) for size in (2, 4, 1, 7)]
    assert [(t["label"], t["ahead"]) for t in taken] == [("A001", 0), ("B001", 0), ("A002", 1), ("C001", 0)]
    assert take_number(conn, settings, 2, "2026-05-02", T0)["label"] == "A001"
    with pytest.raises(Exception, match="no table category takes a party of 13"):
        take_number(conn, settings, 13, DAY, T0)
    with pytest.raises(ValueError, match="fits both"):
        QueueSettings(categories=[{"code": "A", "name": "小", "min_size": 1, "max_size": 3},
                                  {"code": "B", "name": "大", "min_size": 3, "max_size": 6}])  # fmt: skip


def test_the_wait_estimate_follows_the_pace_of_recent_calls(conn):
    settings = QueueSettings()  # A: 6 minutes per party until two calls are seen
    small = settings.category("A")
    for _ in range(5):
        take_number(conn, settings, 2, DAY, T0)
    assert estimate_s(conn, settings, category=small, day=DAY, ahead=4, now=T0) == 5 * 6 * 60
    # Calls every 2 minutes: the next of 3 waiting is due 2 minutes after the last call, and so on.
    for minute in (0, 2):
        call_ticket(conn, "call", T0 + timedelta(minutes=minute), category="A", day=DAY)
    now = T0 + timedelta(minutes=3)
    assert estimate_s(conn, settings, category=small, day=DAY, ahead=0, now=now) == 60
    assert estimate_s(conn, settings, category=small, day=DAY, ahead=2, now=now) == 5 * 60
    assert estimate_s(conn, settings, category=small, day=DAY, ahead=0, now=T0 + timedelta(hours=1)) == 0


async def _next(ws: aiohttp.ClientWebSocketResponse) -> dict:
    msg = await asyncio.wait_for(ws.receive(), 5)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)


async def test_take_print_call_recall_skip_seat_and_the_live_display(api):
    async with SimNetworkPrinter() as front:
        entry = DeviceEntry(id="front", name="前台", transport="network", host="127.0.0.1", port=front.port)
        await asyncio.to_thread(save_registry, api.daemon.settings.state_dir, DeviceRegistry(devices=[entry]))
        async with asyncio.timeout(10):
            while [d["health"] for d in api.daemon.devices.health()] != ["ok"]:
                await asyncio.sleep(0.05)
        live = f"{api.base}/api/v1/queue/live?token={api.device}"
        async with api.http.ws_connect(live) as ws:
            first = await _next(ws)
            assert [c["waiting"] for c in first["categories"]] == [0, 0, 0]

            status, body = await api.call("POST", "/api/v1/queue/tickets", {"party_size": 3}, key="take-1")
            assert status == 201, body
            assert body["ticket"]["label"] == "B001"
            assert body["job"] is not None
            # A retried request (same Idempotency-Key) gets the same number, not a second one.
            status, again = await api.call("POST", "/api/v1/queue/tickets", {"party_size": 3}, key="take-1")
            assert again["ticket"]["id"] == body["ticket"]["id"]
            status, second = await api.call(
                "POST", "/api/v1/queue/tickets", {"party_size": 4, "print": False}
            )
            assert second["ticket"]["label"] == "B002"
            assert second["ticket"]["ahead"] == 1
            assert second["job"] is None

            update = await _next(ws)
            while update["categories"][1]["waiting"] != 2:
                update = await _next(ws)
            assert update["categories"][1]["numbers"] == ["B001", "B002"]

            status, called = await api.call("POST", "/api/v1/queue/call-next", {"category": "B"})
            assert status == 200, called
            assert called["call"]["text"] == "请 B001 号顾客就餐"
            update = await _next(ws)
            while not update["calls"]:
                update = await _next(ws)
            assert [c["label"] for c in update["called"]] == ["B001"]
            assert update["calls"][0]["text"] == "请 B001 号顾客就餐"

            one = body["ticket"]["id"]
            status, recalled = await api.call("POST", f"/api/v1/queue/tickets/{one}/recall")
            assert status == 200
            assert recalled["ticket"]["calls"] == 2
            status, skipped = await api.call("POST", f"/api/v1/queue/tickets/{one}/skip")
            assert skipped["ticket"]["state"] == "skipped"
            status, err = await api.call("POST", f"/api/v1/queue/tickets/{one}/seat")
            assert status == 409, err
            status, back = await api.call("POST", f"/api/v1/queue/tickets/{one}/recall")
            assert back["ticket"]["state"] == "called"
            status, seated = await api.call("POST", f"/api/v1/queue/tickets/{one}/seat")
            assert seated["ticket"]["state"] == "seated"
            status, err = await api.call("POST", f"/api/v1/queue/tickets/{one}/call")
            assert status == 409, err

        await front.wait_for(lambda p: len(p.jobs) >= 1, within=10)
        slip = "\n".join(front.jobs[0])
        for words in ("人民路店", "排队号", "B001", "中桌 3-4人", "前面还有 0 位", "预计等待约 8 分钟"):
            assert words in slip


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/api/v1/queue/tickets", {"party_size": 0}, 422),
        ("/api/v1/queue/tickets", {"party_size": 40}, 422),
        ("/api/v1/queue/tickets", {"party_size": "4"}, 422),
        ("/api/v1/queue/call-next", {"category": "Z"}, 404),
        ("/api/v1/queue/call-next", {"category": "A"}, 409),
        ("/api/v1/queue/tickets/nope/call", None, 404),
    ],
)
async def test_bad_queue_requests_change_nothing(api, path, body, status):
    got, reply = await api.call("POST", path, body)
    assert got == status, reply
    _, state = await api.call("GET", "/api/v1/queue")
    assert [c["waiting"] for c in state["categories"]] == [0, 0, 0]


async def test_queue_needs_a_staff_session(api):
    status, body = await api.call("POST", "/api/v1/queue/tickets", {"party_size": 2}, token=api.device)
    assert status == 401, body

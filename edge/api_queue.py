"""Queue routes (排队叫号): take a number (printed), call, recall, skip, seat; the waiting-area display.

Staff with a session that may sell run the queue; the display page (`/queue`) only listens,
with the device token of the screen it runs on.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import Field, StrictBool, StrictInt

from edge import printing, queue_calls
from edge.api import DEVICES, JOURNAL, SETTINGS, TILL, Body, answer, reply_json, staff_command, static_page
from edge.api_kds import live_loop
from edge.kds import version
from edge.till import Reply
from protocol import business_day

__all__ = ["add_routes"]


class TakeIn(Body):
    """A party takes a number; the slip prints on the receipt printer unless `print` is false."""

    party_size: StrictInt = Field(ge=1, le=99)
    print: StrictBool = True


class CallNextIn(Body):
    """Call the next waiting number of a category."""

    category: str = Field(pattern=r"^[A-Z]$")


def _today(request: web.Request, now: datetime) -> str:
    settings = request.app[SETTINGS]
    return business_day(now, ZoneInfo(settings.timezone), settings.cutover_hour).isoformat()


async def state(request: web.Request) -> web.Response:
    """Waiting counts and estimates per category, the numbers called, ready pickups, recent calls."""
    now = datetime.now(UTC)
    day = _today(request, now)
    settings = request.app[SETTINGS].queue
    found = await request.app[JOURNAL].read(lambda conn: queue_calls.queue_state(conn, settings, day, now))
    return reply_json(found)


async def take(request: web.Request) -> web.Response:
    """Give the party a number by its size and print the slip (store name, number, wait)."""
    body, _, idem = await staff_command(request, TakeIn, "order.sell")
    now = datetime.now(UTC)
    day = _today(request, now)
    app_settings = request.app[SETTINGS]
    devices = request.app[DEVICES]

    def work(conn: sqlite3.Connection) -> Reply:
        ticket = queue_calls.take_number(conn, app_settings.queue, body.party_size, day, now)
        job = None
        if body.print:
            slip = printing.queue_ticket(
                ticket["label"],
                issued_at=now.astimezone(ZoneInfo(app_settings.timezone)),
                category=ticket["category_name"],
                ahead=ticket["ahead"],
                wait_minutes=ticket["wait_minutes"],
                store_name=app_settings.store_name,
            )
            job = devices.print_document(conn, "receipt", "queue", ticket["id"], slip)
        devices.live.fire()
        return Reply(201, {"ticket": ticket, "job": job})

    return answer(await request.app[TILL].command(work, idem))


async def call_next(request: web.Request) -> web.Response:
    """Call the next waiting number of a category (with the voice text for the display)."""
    body, _, idem = await staff_command(request, CallNextIn, "order.sell")
    request.app[SETTINGS].queue.category(body.category)
    now = datetime.now(UTC)
    day = _today(request, now)
    devices = request.app[DEVICES]

    def work(conn: sqlite3.Connection) -> Reply:
        called = queue_calls.call_ticket(conn, "call", now, category=body.category, day=day)
        devices.live.fire()
        return Reply(200, called)

    return answer(await request.app[TILL].command(work, idem))


def _command(run: Any, doc: str) -> Any:
    """A queue action on one ticket: `run(conn, ticket_id, now)` inside the till's idempotent command.

    `doc` becomes the handler's docstring, which the OpenAPI document uses as its summary.
    """

    async def handler(request: web.Request) -> web.Response:
        _, _, idem = await staff_command(request, Body, "order.sell", optional=True)
        ticket_id = request.match_info["ticket_id"]
        devices = request.app[DEVICES]

        def work(conn: sqlite3.Connection) -> Reply:
            body: dict[str, Any] = run(conn, ticket_id, datetime.now(UTC))
            devices.live.fire()
            return Reply(200, body)

        return answer(await request.app[TILL].command(work, idem))

    handler.__doc__ = doc
    return handler


def _call(action: Literal["call", "recall"]) -> Any:
    doc = {
        "call": "Call this number now.",
        "recall": "Call this number again (also brings back a skipped one).",
    }
    return _command(
        lambda conn, ticket_id, now: queue_calls.call_ticket(conn, action, now, ticket_id=ticket_id),
        doc[action],
    )


def _finish(state: Literal["seated", "skipped", "cancelled"]) -> Any:
    return _command(
        lambda conn, ticket_id, now: {"ticket": queue_calls.finish_ticket(conn, ticket_id, state, now)},
        f"Mark this number {state}; it leaves the waiting list.",
    )


async def live(request: web.Request) -> web.WebSocketResponse:
    """`/api/v1/queue/live?since=`: the queue's state, again after every change."""
    settings = request.app[SETTINGS].queue
    since = (
        int(request.query.get("since", "-1")) if request.query.get("since", "").lstrip("-").isdigit() else -1
    )

    def read(conn: sqlite3.Connection, known: int, first: bool) -> dict[str, Any] | None:
        current = version(conn, "queue")
        if known == current and not first:
            return None
        now = datetime.now(UTC)
        found = queue_calls.queue_state(conn, settings, _today(request, now), now)
        return {"type": "state", "now": now.isoformat()} | found

    return await live_loop(request, read, since=since)


async def page(request: web.Request) -> web.Response:
    """The waiting-area display (`/queue`); its WebSocket needs the screen's device token."""
    return static_page("queue.html")


def add_routes(app: web.Application) -> None:
    """Register the queue routes."""
    r = app.router
    r.add_get("/api/v1/queue", state)
    r.add_post("/api/v1/queue/tickets", take)
    r.add_post("/api/v1/queue/call-next", call_next)
    r.add_post("/api/v1/queue/tickets/{ticket_id}/call", _call("call"))
    r.add_post("/api/v1/queue/tickets/{ticket_id}/recall", _call("recall"))
    r.add_post("/api/v1/queue/tickets/{ticket_id}/seat", _finish("seated"))
    r.add_post("/api/v1/queue/tickets/{ticket_id}/skip", _finish("skipped"))
    r.add_post("/api/v1/queue/tickets/{ticket_id}/cancel", _finish("cancelled"))
    r.add_get("/api/v1/queue/live", live)
    r.add_get("/queue", page)

"""Kitchen routes: send an order to the kitchen (with 叫起), fire held courses, and the screens.

A kitchen screen is a paired device (`storelink-edge kds qr STATION` pairs one and prints its
link); any paired device may bump tickets, since the screens sit in the kitchen. Sending and
firing need a staff session that may sell.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sqlite3
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import Field, StrictBool, StrictInt, model_validator

from edge import kds
from edge.api import (
    DEVICES,
    JOURNAL,
    SETTINGS,
    TILL,
    Body,
    answer,
    idempotency,
    principal,
    read_body,
    reply_json,
    static_page,
)
from edge.errors import TillError
from edge.till import Reply, load_order

__all__ = ["add_routes", "live_loop"]

_ID = r"^[A-Za-z0-9-]{1,64}$"


class PlanLine(Body):
    """How one line goes to the kitchen: its course and whether it waits for the call (叫起)."""

    line_id: str = Field(pattern=_ID)
    course: StrictInt = Field(1, ge=1, le=9)
    hold: StrictBool = False


class SendIn(Body):
    """送厨: send what the kitchen has not been told yet; optionally plan lines and mark pickup."""

    lines: list[PlanLine] = Field(default_factory=list, max_length=200)
    pickup: StrictBool | None = None


class FireIn(Body):
    """起菜: fire the held lines of a course, or the given held lines."""

    course: StrictInt | None = Field(None, ge=1, le=9)
    line_ids: list[str] | None = Field(None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _one(self) -> FireIn:
        if (self.course is None) == (self.line_ids is None):
            raise ValueError("give exactly one of course or line_ids")
        return self


class TicketAction(Body):
    """Move a screen ticket: bump (one step on), recall (one step back) or a named state."""

    action: Literal["bump", "recall", "new", "in_progress", "ready", "served"]


class ItemDone(Body):
    """Tick an item off (or back on)."""

    done: StrictBool


def _sendable(conn: sqlite3.Connection, order_id: str) -> None:
    order = load_order(conn, order_id)
    if order.status == "voided":
        raise TillError(f"order {order.number:04d} is voided; the kitchen was told when it was voided")


async def send(request: web.Request) -> web.Response:
    """Send an order's new, changed and cancelled lines to their stations (printers and screens)."""
    body = await read_body(request, SendIn, optional=True)
    principal(request).require("order.sell")
    idem = idempotency(request, await request.read())
    order_id = request.match_info["order_id"]
    devices = request.app[DEVICES]

    def work(conn: sqlite3.Connection) -> Reply:
        _sendable(conn, order_id)
        order = load_order(conn, order_id)
        known = {line.line_id for line in order.lines}
        fired = kds.fired_lines(conn, order_id)
        plan = kds.load_plan(conn, order_id)
        for line in body.lines:
            if line.line_id not in known:
                raise TillError(f"order {order.number:04d} has no line {line.line_id}", status=404)
            if line.hold and line.line_id in fired:
                raise TillError(f"line {line.line_id} is already cooking; it cannot be held now", status=409)
            plan[line.line_id] = (line.course, line.hold)
        kds.save_plan(conn, order_id, plan)
        tickets = devices.kitchen_round(conn, order_id, pickup=body.pickup)
        return Reply(200, {"order_id": order_id, "tickets": tickets})

    return answer(await request.app[TILL].command(work, idem))


async def fire(request: web.Request) -> web.Response:
    """Fire held lines (起菜): each station gets one 'fire' ticket for them."""
    body = await read_body(request, FireIn)
    principal(request).require("order.sell")
    idem = idempotency(request, await request.read())
    order_id = request.match_info["order_id"]
    devices = request.app[DEVICES]

    def work(conn: sqlite3.Connection) -> Reply:
        _sendable(conn, order_id)
        plan = kds.load_plan(conn, order_id)
        chosen = {
            line_id
            for line_id, (course, held) in plan.items()
            if held and (body.course == course if body.line_ids is None else line_id in body.line_ids)
        }
        if not chosen:
            what = f"course {body.course}" if body.course is not None else "those lines"
            raise TillError(f"nothing of {what} is held; it was fired already or never held", status=409)
        kds.save_plan(conn, order_id, {line_id: (plan[line_id][0], False) for line_id in chosen})
        tickets = devices.kitchen_round(conn, order_id)
        return Reply(200, {"order_id": order_id, "fired": sorted(chosen), "tickets": tickets})

    return answer(await request.app[TILL].command(work, idem))


def _screen(request: web.Request, name: str) -> kds.Station:
    station = request.app[DEVICES].stations().get(name)
    if station is None or not station.screen:
        raise TillError(f"no kitchen screen for station {name!r}; add it under [kds] screens", status=404)
    return station


def _settings_view(request: web.Request) -> dict[str, Any]:
    settings = request.app[SETTINGS].kds
    return {
        "warn_after_s": settings.warn_after_s,
        "late_after_s": settings.late_after_s,
        "now": datetime.now(UTC).isoformat(),
    }


async def list_stations(request: web.Request) -> web.Response:
    """The kitchen stations: which have a printer, which a screen, and their categories."""
    stations = request.app[DEVICES].stations().values()
    items = [
        {"name": s.name, "printer": s.printer, "screen": s.screen, "categories": s.categories}
        for s in stations
    ]
    return reply_json({"items": items} | _settings_view(request))


async def station_state(request: web.Request) -> web.Response:
    """A screen's full state: open tickets, recently served, all-day counts, timer thresholds."""
    station = _screen(request, request.match_info["station"]).name
    state = await request.app[JOURNAL].read(lambda conn: kds.station_state(conn, station))
    return reply_json(state | _settings_view(request))


async def ticket_action(request: web.Request) -> web.Response:
    """Bump, recall or set a ticket's state; a pickup order whose tickets are all ready is called."""
    body = await read_body(request, TicketAction)
    principal(request)  # any paired device: the screens in the kitchen
    ticket_id = request.match_info["ticket_id"]
    devices = request.app[DEVICES]

    def work(conn: sqlite3.Connection) -> tuple[dict[str, Any], dict[str, Any] | None]:
        return kds.set_ticket_state(conn, ticket_id, body.action, datetime.now(UTC))

    ticket, call = await request.app[JOURNAL].transaction(work)
    devices.live.fire()
    return reply_json({"ticket": ticket, "call": call})


async def item_done(request: web.Request) -> web.Response:
    """Mark one item of a ticket done (or not)."""
    body = await read_body(request, ItemDone)
    principal(request)
    ticket_id = request.match_info["ticket_id"]
    try:
        index = int(request.match_info["index"])
    except ValueError as err:
        raise TillError("the item index is a number", status=404) from err
    ticket = await request.app[JOURNAL].transaction(
        lambda conn: kds.set_item_done(conn, ticket_id, index, body.done, datetime.now(UTC))
    )
    request.app[DEVICES].live.fire()
    return reply_json({"ticket": ticket})


async def live_loop(
    request: web.Request,
    read: Any,
    *,
    since: int,
) -> web.WebSocketResponse:
    """Serve a live channel: `read(conn, known, first)` returns the message to send, or None.

    The first message is the full state unless the client's `since` is current; after that
    one message per change. Waking on every change and reading the version is cheap, and a
    missed wake-up is impossible: the signal is taken before each read.
    """
    ws = web.WebSocketResponse(heartbeat=20)
    await ws.prepare(request)
    live = request.app[DEVICES].live
    journal = request.app[JOURNAL]

    async def pump() -> None:
        known, first = since, True
        while True:
            changed = live.current()
            message = await journal.read(functools.partial(read, known=known, first=first))
            first = False
            if message is not None:
                await ws.send_str(json.dumps(message, ensure_ascii=False))
                known = message["version"]
            await changed.wait()

    async def drain() -> None:
        async for _ in ws:  # screens only listen; reading keeps pings and close flowing
            pass

    tasks = [asyncio.create_task(pump(), name="live-pump"), asyncio.create_task(drain(), name="live-reader")]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, ConnectionResetError):
                await task
        await ws.close()
    return ws


def _since(request: web.Request) -> int:
    raw = request.query.get("since", "-1")
    try:
        return int(raw)
    except ValueError as err:
        raise TillError(f"since={raw!r} is not a version number", status=400) from err


async def kds_live(request: web.Request) -> web.WebSocketResponse:
    """`/api/v1/kds/live?station=&since=`: the station's state, then its changes as they happen."""
    station = _screen(request, request.query.get("station", "")).name
    since = _since(request)
    extra = _settings_view(request)

    def read(conn: sqlite3.Connection, known: int, first: bool) -> dict[str, Any] | None:
        current = kds.version(conn, f"kds:{station}")
        if known == current:
            return {"type": "uptodate", "version": current} | _now() if first else None
        if first or known > current:
            # A new screen, one that missed changes while away, or a journal that went back: everything.
            return {"type": "state"} | kds.station_state(conn, station) | extra | _now()
        return {"type": "changes"} | kds.changes_since(conn, station, known) | _now()

    return await live_loop(request, read, since=since)


def _now() -> dict[str, str]:
    return {"now": datetime.now(UTC).isoformat()}


async def kds_page(request: web.Request) -> web.Response:
    """The kitchen screen page (`/kds?station=…`); its API calls need the screen's device token."""
    return static_page("kds.html")


def add_routes(app: web.Application) -> None:
    """Register the kitchen routes."""
    r = app.router
    r.add_post("/api/v1/orders/{order_id}/kitchen", send)
    r.add_post("/api/v1/orders/{order_id}/kitchen/fire", fire)
    r.add_get("/api/v1/kds/stations", list_stations)
    r.add_get("/api/v1/kds/stations/{station}", station_state)
    r.add_post("/api/v1/kds/tickets/{ticket_id}", ticket_action)
    r.add_post("/api/v1/kds/tickets/{ticket_id}/items/{index}", item_done)
    r.add_get("/api/v1/kds/live", kds_live)
    r.add_get("/kds", kds_page)

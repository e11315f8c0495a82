"""Table routes for the waiter's phone: floor plan, open, rounds, transfer, merge, split, bill, release.

Who may do what (docs/restaurant.md, "Tables"): the floor plan is a manager's (`tables.layout`);
seating a party, adding rounds, moving a party to another table, asking for the bill and
releasing an empty table are the waiter's (`order.sell`); merging two tables' bills and
splitting a bill change how money is collected, so they need the cashier's right to take
payments (`order.pay`). Each sub-bill or part is then paid with `POST /api/v1/orders/{id}/payments`.

Every change is pushed on `/api/v1/events` as `table.updated` with the table's view; a
payment made through the till's routes pushes it too (`relay_order_events`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import Field, StrictBool, StrictInt, model_validator

from edge import kds, queue_calls, tables
from edge.access import StaffMember
from edge.api import (
    BUS,
    DEVICES,
    JOURNAL,
    SETTINGS,
    SNAPSHOTS,
    TILL,
    Body,
    answer,
    principal,
    reply_json,
    staff_command,
)
from edge.api_till import LineIn, _build_line
from edge.errors import TillError
from edge.events import Event
from edge.journal import append_event
from edge.orders import Order, OrderLine, add_line
from edge.stock_tasks import refuse_blocked
from edge.table_views import table_view, tables_view
from edge.till import Change, Idempotency, Reply, Till
from protocol.pricing import Quantity

__all__ = ["OPENAPI_ROUTES", "add_routes"]

log = logging.getLogger(__name__)

_CODE = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,15}$"
_TEXT = r"^[^\x00-\x1f\x7f]*$"
_ID = r"^[A-Za-z0-9-]{1,64}$"


class AreaIn(Body):
    """A floor area: a short code (hall, terrace) and the name staff see."""

    id: str = Field(pattern=_CODE)
    name: str = Field(min_length=1, max_length=30, pattern=_TEXT)


class AreaPatch(Body):
    """Rename an area."""

    name: str = Field(min_length=1, max_length=30, pattern=_TEXT)


class TableIn(Body):
    """A table: its code (A1, 8), area, the name staff see and its seats."""

    id: str = Field(pattern=_CODE)
    area_id: str = Field(pattern=_CODE)
    name: str = Field(min_length=1, max_length=30, pattern=_TEXT)
    seats: StrictInt = Field(ge=1, le=99)


class TablePatch(Body):
    """Change a table; `active: false` takes it out of use (only while free)."""

    area_id: str | None = Field(None, pattern=_CODE)
    name: str | None = Field(None, min_length=1, max_length=30, pattern=_TEXT)
    seats: StrictInt | None = Field(None, ge=1, le=99)
    active: StrictBool | None = None


class OpenIn(Body):
    """Seat a party; a called queue number (排队) given here is marked seated with it."""

    party_size: StrictInt = Field(ge=1, le=99)
    note: str = Field("", max_length=200, pattern=_TEXT)
    queue_ticket_id: str | None = Field(None, pattern=_ID)


class RoundItem(Body):
    """One dish of a round, by SKU from the menu, with its course and 叫起 (hold)."""

    sku: str = Field(min_length=1, max_length=64)
    qty: Quantity | None = None
    note: str = Field("", max_length=100, pattern=_TEXT)
    price_fen: StrictInt | None = Field(None, ge=0, le=10_000_000, description="only for open-price items")
    course: StrictInt = Field(1, ge=1, le=9)
    hold: StrictBool = False


class RoundIn(Body):
    """A round (加菜): its dishes are added to the table's order and sent to the kitchen at once."""

    items: list[RoundItem] = Field(min_length=1, max_length=100)


class TransferIn(Body):
    """Move the party to a free table."""

    to: str = Field(pattern=_CODE)


class MergeIn(Body):
    """Bring the bill (and party) of another table onto this one."""

    from_table: str = Field(alias="from", pattern=_CODE)


class SplitLine(Body):
    """A line, or part of its quantity, for one sub-bill."""

    line_id: str = Field(pattern=_ID)
    qty: Quantity | None = None


class SplitIn(Body):
    """Split by item (`items`: one list of lines per sub-bill) or evenly (`evenly`: N parts)."""

    items: list[list[SplitLine]] | None = Field(None, min_length=1, max_length=20)
    evenly: StrictInt | None = Field(None, ge=1, le=50)
    order_id: str | None = Field(
        None, pattern=_ID, description="with evenly: which bill (default the table's)"
    )

    @model_validator(mode="after")
    def _one(self) -> SplitIn:
        if (self.items is None) == (self.evenly is None):
            raise ValueError("give exactly one of items or evenly")
        if self.order_id is not None and self.evenly is None:
            raise ValueError("order_id goes with evenly; a split by item takes the table's order")
        return self


def _now() -> datetime:
    return datetime.now(UTC)


def _sub(idem: Idempotency | None, step: str) -> Idempotency | None:
    # A command made of two transactions keeps one stored reply per step under the same key.
    return None if idem is None else Idempotency(f"{idem.key}:{step}", idem.request_hash)


async def _push(request: web.Request, *table_ids: str) -> dict[str, dict[str, Any]]:
    now = _now()
    views = await request.app[JOURNAL].read(lambda conn: {t: table_view(conn, t, now) for t in table_ids})
    for view in views.values():
        request.app[BUS].publish(Event("table.updated", view))
    return views


# ---------------------------------------------------------------------- floor plan


async def get_floor(request: web.Request) -> web.Response:
    """The floor plan: areas and their tables."""
    return reply_json({"areas": await request.app[JOURNAL].read(tables.floor)})


async def add_area(request: web.Request) -> web.Response:
    """Add an area (manager)."""
    body, _, _ = await staff_command(request, AreaIn, "tables.layout")
    area = await request.app[JOURNAL].transaction(lambda conn: tables.add_area(conn, body.id, body.name))
    return reply_json(area, 201)


async def patch_area(request: web.Request) -> web.Response:
    """Rename an area (manager)."""
    body, _, _ = await staff_command(request, AreaPatch, "tables.layout")
    area_id = request.match_info["area_id"]
    area = await request.app[JOURNAL].transaction(lambda conn: tables.update_area(conn, area_id, body.name))
    return reply_json(area)


async def add_table(request: web.Request) -> web.Response:
    """Add a table (manager)."""
    body, _, _ = await staff_command(request, TableIn, "tables.layout")
    table = await request.app[JOURNAL].transaction(
        lambda conn: tables.add_table(conn, body.id, body.area_id, body.name, body.seats)
    )
    return reply_json(table, 201)


async def patch_table(request: web.Request) -> web.Response:
    """Change a table (manager)."""
    body, _, _ = await staff_command(request, TablePatch, "tables.layout")
    table_id = request.match_info["table_id"]
    changes = body.model_dump(exclude_none=True)
    table = await request.app[JOURNAL].transaction(
        lambda conn: tables.update_table(conn, table_id, changes, _now())
    )
    return reply_json(table)


# ---------------------------------------------------------------------- service


async def list_tables(request: web.Request) -> web.Response:
    """Every table at a glance: status, party, minutes seated, what is due."""
    area = request.query.get("area")
    now = _now()
    items = await request.app[JOURNAL].read(lambda conn: tables_view(conn, now, area))
    return reply_json({"items": items, "now": now.isoformat()})


async def get_table(request: web.Request) -> web.Response:
    """One table with its bills (and their even-split parts)."""
    table_id = request.match_info["table_id"]
    now = _now()
    return reply_json(await request.app[JOURNAL].read(lambda conn: table_view(conn, table_id, now)))


async def open_table(request: web.Request) -> web.Response:
    """Seat a party at a free table; its order is opened with it."""
    body, staff, idem = await staff_command(request, OpenIn, "order.sell")
    table_id = request.match_info["table_id"]
    settings, devices = request.app[SETTINGS], request.app[DEVICES]

    def work(conn: sqlite3.Connection) -> Reply:
        now = _now()
        order = tables.open_table(
            conn, settings, table_id, body.party_size, staff_id=staff.id, now=now, note=body.note
        )
        if body.queue_ticket_id is not None:
            queue_calls.finish_ticket(conn, body.queue_ticket_id, "seated", now)
            devices.live.fire()  # the waiting-area display drops the number
        return Reply(
            201,
            {"order": order.model_dump(mode="json"), "table": table_view(conn, table_id, now)},
        )

    reply = await request.app[TILL].command(work, idem)
    await _push(request, table_id)
    return answer(reply)


def _lines(request: web.Request, items: list[RoundItem]) -> list[OrderLine]:
    catalog = request.app[SNAPSHOTS].catalog
    if catalog is None:
        raise TillError("no catalog is loaded; run `storelink-edge catalog load FILE`", status=503)
    return [
        _build_line(catalog, LineIn(sku=item.sku, qty=item.qty, note=item.note, price_fen=item.price_fen))
        for item in items
    ]


def _plan_round(
    conn: sqlite3.Connection, change: Change, lines: list[OrderLine], items: list[RoundItem]
) -> None:
    """Courses and holds of the round's new lines; a dish merged into an earlier line keeps that
    line's plan unless the round holds it (refused once the line is cooking)."""
    now_on_order = {line.line_id for line in change.order.lines}
    plan = kds.load_plan(conn, change.order.id)
    fired = kds.fired_lines(conn, change.order.id)
    for line, item in zip(lines, items, strict=True):
        if line.line_id in now_on_order:
            plan[line.line_id] = (item.course, item.hold)
            continue
        target = next(
            (
                x.line_id
                for x in change.before.lines
                if x.sku == line.sku
                and x.expires_on == line.expires_on
                and x.unit == "piece"
                and not x.note
                and x.label_price_fen is None
                and x.override_price_fen is None
            ),
            None,
        )
        if target is None or not item.hold:
            continue
        if target in fired:
            raise TillError(f"{line.name} is already cooking; it cannot be held now", status=409)
        plan[target] = (item.course, True)
    kds.save_plan(conn, change.order.id, plan)


async def add_round(request: web.Request) -> web.Response:
    """Add a round to the table's order and send it to the kitchen (exactly once, like 送厨)."""
    body, _, idem = await staff_command(request, RoundIn, "order.sell")
    table_id = request.match_info["table_id"]
    till, devices = request.app[TILL], request.app[DEVICES]
    order_id = await request.app[JOURNAL].transaction(lambda conn: tables.main_order(conn, table_id, _now()))
    lines = _lines(request, body.items)

    def rule(conn: sqlite3.Connection, order: Order, now: datetime) -> Order:
        for line in lines:
            refuse_blocked(conn, line.sku, line.name)
            order = add_line(order, line)
        return order

    added = await till.change(
        order_id, rule, _sub(idem, "lines"), after=lambda conn, c: _plan_round(conn, c, lines, body.items)
    )

    def send(conn: sqlite3.Connection) -> Reply:
        # A crash between the two steps leaves the lines unsent; the retry (or the next round) sends them.
        return Reply(200, {"tickets": devices.kitchen_round(conn, order_id, pickup=False)})

    sent = await till.command(send, _sub(idem, "send"))
    views = await _push(request, table_id)
    return reply_json(added.body | sent.body | {"table": views[table_id]}, 201)


async def transfer(request: web.Request) -> web.Response:
    """Move the party to a free table; the order, its lines and the kitchen are untouched."""
    body, staff, idem = await staff_command(request, TransferIn, "order.sell")
    source = request.match_info["table_id"]

    def work(conn: sqlite3.Connection) -> Reply:
        tables.transfer(conn, source, body.to, staff.id, _now())
        return Reply(200, {"from": source, "to": body.to})

    reply = await request.app[TILL].command(work, idem)
    views = await _push(request, source, body.to)
    return reply_json(reply.body | {"table": views[body.to]})


async def merge(request: web.Request) -> web.Response:
    """Bring another table's party and bill onto this table (one bill; kitchen state kept)."""
    body, staff, idem = await staff_command(request, MergeIn, "order.pay")
    table_id, other_table = request.match_info["table_id"], body.from_table
    if other_table == table_id:
        raise TillError("a table cannot be merged with itself", status=422)
    order_id = await request.app[JOURNAL].transaction(lambda conn: tables.main_order(conn, table_id, _now()))
    merged_away: list[Order] = []

    def rule(conn: sqlite3.Connection, order: Order, now: datetime) -> Order:
        merged, other = tables.merge_lines(conn, order, table_id, other_table, now)
        merged_away.append(other)
        return merged

    def after(conn: sqlite3.Connection, change: Change) -> None:
        emptied = tables.merge_seatings(
            conn, change.order, merged_away[-1], table_id, staff_id=staff.id, now=change.now
        )
        append_event(conn, "order.voided", emptied.model_dump_json(), change.now.isoformat())

    reply = await request.app[TILL].change(order_id, rule, idem, after=after, durable=True)
    views = await _push(request, table_id, other_table)
    return reply_json(reply.body | {"table": views[table_id]}, reply.status)


async def split(request: web.Request) -> web.Response:
    """Split the bill by item into sub-bills, or evenly into N parts; each is paid separately."""
    body, staff, idem = await staff_command(request, SplitIn, "order.pay")
    table_id = request.match_info["table_id"]
    settings = request.app[SETTINGS]

    def work(conn: sqlite3.Connection) -> Reply:
        now = _now()
        if body.items is not None:
            parts = [[(x.line_id, x.qty) for x in part] for part in body.items]
            orders = tables.split_by_item(conn, settings, table_id, parts, staff_id=staff.id, now=now)
            bills = [o.model_dump(mode="json") for o in orders]
        else:
            assert body.evenly is not None  # noqa: S101 - checked by SplitIn
            tables.split_evenly(conn, table_id, body.order_id, body.evenly, staff_id=staff.id, now=now)
            bills = []
        return Reply(201, {"bills": bills, "table": table_view(conn, table_id, now)})

    reply = await request.app[TILL].command(work, idem)
    for bill in reply.body["bills"]:
        request.app[BUS].publish(Event("order.updated", bill, order_id=bill["id"]))
    views = await _push(request, table_id)
    return reply_json(reply.body | {"table": views[table_id]}, reply.status)


async def request_bill(request: web.Request) -> web.Response:
    """The guests asked for the bill (买单): the table shows as waiting for it."""
    principal(request).require("order.sell")
    table_id = request.match_info["table_id"]
    await request.app[JOURNAL].transaction(lambda conn: tables.request_bill(conn, table_id, _now()))
    return reply_json((await _push(request, table_id))[table_id])


async def release(request: web.Request) -> web.Response:
    """Free a table whose guests left without ordering (its empty order is voided)."""
    staff = principal(request).require("order.sell")
    table_id = request.match_info["table_id"]
    order_id = await request.app[JOURNAL].transaction(lambda conn: tables.main_order(conn, table_id, _now()))
    reply = await _release(request.app[TILL], table_id, order_id, staff)
    views = await _push(request, table_id)
    return reply_json(reply.body | {"table": views[table_id]})


async def _release(till: Till, table_id: str, order_id: str, staff: StaffMember) -> Reply:
    def after(conn: sqlite3.Connection, change: Change) -> None:
        append_event(conn, "order.voided", change.doc, change.now.isoformat())

    return await till.change(
        order_id,
        lambda conn, order, now: tables.release(conn, table_id, order, staff.id, now),
        None,
        after=after,
        durable=True,
    )


# ---------------------------------------------------------------------- live


def _order_tables(conn: sqlite3.Connection, order_id: str, now: datetime) -> list[dict[str, Any]]:
    return [table_view(conn, t, now) for t in tables.tables_of_order(conn, order_id)]


async def relay_order_events(app: web.Application) -> AsyncIterator[None]:
    """Push `table.updated` when an order of a table changes through any route (a payment)."""
    bus, journal = app[BUS], app[JOURNAL]

    async def relay() -> None:
        while True:  # a subscription dropped for falling behind is simply taken out again
            sub = bus.subscribe()
            try:
                while not sub.overflowed.is_set():
                    event = await sub.queue.get()
                    if not event.type.startswith("order.") or event.order_id is None:
                        continue
                    try:
                        views = await journal.read(
                            functools.partial(_order_tables, order_id=event.order_id, now=_now())
                        )
                    except (sqlite3.Error, TillError):
                        log.exception("could not read the tables of order %s", event.order_id)
                        continue
                    for view in views:
                        bus.publish(Event("table.updated", view))
            finally:
                bus.unsubscribe(sub)

    task = asyncio.create_task(relay(), name="tables-relay")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# For the OpenAPI document (edge.openapi): (method, path, summary, request body, "device" | "staff").
OPENAPI_ROUTES: list[tuple[str, str, str, type[Body] | None, str]] = [
    ("get", "/api/v1/floor", "The floor plan: areas and their tables", None, "device"),
    ("post", "/api/v1/floor/areas", "Add an area (manager)", AreaIn, "staff"),
    ("patch", "/api/v1/floor/areas/{area_id}", "Rename an area (manager)", AreaPatch, "staff"),
    ("post", "/api/v1/floor/tables", "Add a table (manager)", TableIn, "staff"),
    ("patch", "/api/v1/floor/tables/{table_id}", "Change a table (manager)", TablePatch, "staff"),
    ("get", "/api/v1/tables", "Every table at a glance (`area`)", None, "device"),
    ("get", "/api/v1/tables/{table_id}", "One table with its bills", None, "device"),
    ("post", "/api/v1/tables/{table_id}/open", "Seat a party (opens its order)", OpenIn, "staff"),
    ("post", "/api/v1/tables/{table_id}/rounds", "Add a round and send it to the kitchen", RoundIn, "staff"),
    ("post", "/api/v1/tables/{table_id}/transfer", "Move the party to a free table", TransferIn, "staff"),
    ("post", "/api/v1/tables/{table_id}/merge", "Merge another table's bill (cashier)", MergeIn, "staff"),
    (
        "post",
        "/api/v1/tables/{table_id}/split",
        "Split the bill by item or evenly (cashier)",
        SplitIn,
        "staff",
    ),
    ("post", "/api/v1/tables/{table_id}/bill", "The guests asked for the bill", None, "staff"),
    ("post", "/api/v1/tables/{table_id}/release", "Free a table nobody ordered at", None, "staff"),
]


def add_routes(app: web.Application) -> None:
    """Register the table routes."""
    r = app.router
    r.add_get("/api/v1/floor", get_floor)
    r.add_post("/api/v1/floor/areas", add_area)
    r.add_patch("/api/v1/floor/areas/{area_id}", patch_area)
    r.add_post("/api/v1/floor/tables", add_table)
    r.add_patch("/api/v1/floor/tables/{table_id}", patch_table)
    r.add_get("/api/v1/tables", list_tables)
    r.add_get("/api/v1/tables/{table_id}", get_table)
    r.add_post("/api/v1/tables/{table_id}/open", open_table)
    r.add_post("/api/v1/tables/{table_id}/rounds", add_round)
    r.add_post("/api/v1/tables/{table_id}/transfer", transfer)
    r.add_post("/api/v1/tables/{table_id}/merge", merge)
    r.add_post("/api/v1/tables/{table_id}/split", split)
    r.add_post("/api/v1/tables/{table_id}/bill", request_bill)
    r.add_post("/api/v1/tables/{table_id}/release", release)
    app.cleanup_ctx.append(relay_order_events)

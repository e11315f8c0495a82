"""Kitchen display screens (KDS): station tickets in the journal, their states and live versions.

A station is a kitchen printer (role `kitchen-…`), a screen (`[kds] screens` in edge.toml),
or both when they share a name. Screen tickets come out of the same exactly-once kitchen
round as printed ones (`edge.kitchen_tickets`): `record_ticket` is called inside the
transaction that stores the order's sent state, so a screen never shows a ticket twice
and never misses a cancellation.

Every change to a station bumps that station's version (`live_versions`). A screen keeps
the last version it saw; when it reconnects with an older one it gets the station's full
state, and while connected it gets each changed ticket tagged with the versions it spans,
so a gap is always noticed and repaired without a page reload.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from typing import Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.errors import TillError
from edge.kitchen_tickets import KitchenTicket, ticket_title
from edge.queue_calls import call_pickup
from protocol import format_qty, new_id

__all__ = [
    "NEXT_STATE",
    "KdsScreen",
    "KdsSettings",
    "LiveSignal",
    "Station",
    "TicketState",
    "bump_version",
    "changes_since",
    "fired_lines",
    "kitchen_order",
    "load_plan",
    "record_ticket",
    "save_plan",
    "set_item_done",
    "set_ticket_state",
    "station_state",
    "stations",
    "version",
]

TicketState: TypeAlias = Literal["new", "in_progress", "ready", "served"]
NEXT_STATE: dict[str, TicketState] = {"new": "in_progress", "in_progress": "ready", "ready": "served"}
_BACK: dict[str, TicketState] = {"served": "ready", "ready": "in_progress", "in_progress": "new"}
RECENT_SERVED = 8  # served tickets a screen keeps for recall
_STATION = r"^[^\x00-\x1f\x7f/?#&]{1,20}$"


class KdsScreen(BaseModel):
    """A kitchen screen: the station it shows and, for a screen-only station, its categories."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    station: str = Field(pattern=_STATION)
    categories: list[str] = Field(default_factory=list, max_length=50)


class KdsSettings(BaseModel):
    """`[kds]` in edge.toml: the screens, the timer colours and counter-service pickup numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    screens: list[KdsScreen] = Field(default_factory=list, max_length=20)
    warn_after_s: int = Field(300, ge=10, le=7200, description="a ticket turns amber after this long")
    late_after_s: int = Field(600, ge=20, le=14400, description="a ticket turns red after this long")
    # Counter service (café): an order paid at the till and sent to the kitchen is called by its
    # daily number when its tickets are ready. Table service sends with "pickup" per order instead.
    pickup_on_pay: bool = False

    @model_validator(mode="after")
    def _check(self) -> KdsSettings:
        names = [screen.station for screen in self.screens]
        if len(set(names)) != len(names):
            raise ValueError("each KDS station is listed once in [kds] screens")
        if self.late_after_s <= self.warn_after_s:
            raise ValueError("kds.late_after_s must be longer than kds.warn_after_s")
        return self


@dataclass
class Station:
    """One kitchen station: who gets its tickets (a printer device id, a screen, or both)."""

    name: str
    printer: str | None = None
    screen: bool = False
    categories: list[str] = field(default_factory=list)


def stations(
    printers: Iterable[tuple[str, str, Sequence[str]]], screens: Sequence[KdsScreen]
) -> dict[str, Station]:
    """Stations by name from (device id, name, categories) of kitchen printers and the screens.

    A category goes to one station; a printer's categories come first, so a screen-only
    station cannot take a category away from a printer that already prints it.
    """
    out: dict[str, Station] = {}
    claimed: set[str] = set()
    for device_id, name, categories in printers:
        station = out.setdefault(name, Station(name))
        station.printer = station.printer or device_id
        for category in categories:
            if category not in claimed:
                claimed.add(category)
                station.categories.append(category)
    for screen in screens:
        station = out.setdefault(screen.station, Station(screen.station))
        station.screen = True
        for category in screen.categories:
            if category not in claimed:
                claimed.add(category)
                station.categories.append(category)
    return out


class LiveSignal:
    """Wakes every live screen after a change; safe to fire from the journal thread.

    Fired inside a transaction, the wake-up may come before the commit is visible, but the
    woken reader's query runs on the same journal thread after the commit (or rollback), so
    it sees the truth; a rolled-back change only costs one read that finds nothing new.
    """

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def current(self) -> asyncio.Event:
        """The event the next change sets; take it BEFORE reading, then wait on it."""
        if self._event is None:
            self._loop = asyncio.get_running_loop()
            self._event = asyncio.Event()
        return self._event

    def _fire(self) -> None:
        event, self._event = self._event, None
        if event is not None:
            event.set()

    def fire(self) -> None:
        """Wake the waiters (from any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._fire()
        else:
            loop.call_soon_threadsafe(self._fire)


# ---------------------------------------------------------------------- versions


def version(conn: sqlite3.Connection, channel: str) -> int:
    """The channel's version ("kds:<station>" or "queue"); 0 before its first change."""
    row = conn.execute("SELECT version FROM live_versions WHERE channel = ?", (channel,)).fetchone()
    return int(row[0]) if row else 0


def bump_version(conn: sqlite3.Connection, channel: str) -> int:
    """Count one more change of the channel inside the caller's transaction."""
    row = conn.execute(
        "INSERT INTO live_versions (channel, version) VALUES (?, 1)"
        " ON CONFLICT (channel) DO UPDATE SET version = version + 1 RETURNING version",
        (channel,),
    ).fetchone()
    return int(row[0])


def _channel(station: str) -> str:
    return f"kds:{station}"


# ---------------------------------------------------------------------- orders and plans


def kitchen_order(conn: sqlite3.Connection, order_id: str, *, pickup: bool | None, default: bool) -> bool:
    """The order's pickup flag, stored on its first kitchen round; `pickup` set explicitly wins."""
    row = conn.execute("SELECT pickup FROM kitchen_orders WHERE order_id = ?", (order_id,)).fetchone()
    want = bool(row[0]) if row and pickup is None else default if pickup is None else pickup
    if row is None or bool(row[0]) != want:
        conn.execute(
            "INSERT INTO kitchen_orders (order_id, pickup) VALUES (?, ?)"
            " ON CONFLICT (order_id) DO UPDATE SET pickup = excluded.pickup",
            (order_id, int(want)),
        )
    return want


def fired_lines(conn: sqlite3.Connection, order_id: str) -> set[str]:
    """Lines some station was told to cook now (sent, not held): they cannot be held any more."""
    row = conn.execute("SELECT state FROM kitchen_sent WHERE order_id = ?", (order_id,)).fetchone()
    sent: dict[str, dict[str, list[Any]]] = json.loads(row[0]) if row else {}
    return {line_id for lines in sent.values() for line_id, entry in lines.items() if entry[3:] != [True]}


def load_plan(conn: sqlite3.Connection, order_id: str) -> dict[str, tuple[int, bool]]:
    """Line id -> (course, held) for the lines the waiter planned (others: course 1, not held)."""
    rows = conn.execute("SELECT line_id, course, held FROM kitchen_plan WHERE order_id = ?", (order_id,))
    return {line_id: (int(course), bool(held)) for line_id, course, held in rows}


def save_plan(conn: sqlite3.Connection, order_id: str, plan: Mapping[str, tuple[int, bool]]) -> None:
    """Store (course, held) per line."""
    conn.executemany(
        "INSERT INTO kitchen_plan (order_id, line_id, course, held) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (order_id, line_id) DO UPDATE SET course = excluded.course, held = excluded.held",
        [(order_id, line_id, course, int(held)) for line_id, (course, held) in plan.items()],
    )


# ---------------------------------------------------------------------- tickets


def _item(change: Any) -> dict[str, Any]:
    return {
        "line_id": change.line_id,
        "kind": change.kind,
        "name": change.name,
        "qty": format_qty(change.qty),
        "sent_qty": format_qty(change.sent_qty),
        "note": change.note,
        "sent_note": change.sent_note,
        "held": change.held,
        "course": change.course,
        "done": False,
    }


def record_ticket(
    conn: sqlite3.Connection,
    ticket: KitchenTicket,
    *,
    order_id: str,
    order_number: int,
    first: bool,
    pickup: bool,
    now: datetime,
) -> str:
    """Put a station's ticket on its screen, inside the kitchen round's transaction."""
    ticket_id = str(new_id())
    items = [_item(change) for change in ticket.changes]
    conn.execute(
        "INSERT INTO kds_tickets (id, station, order_id, order_number, title, pickup, state, items,"
        " version, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'new', ?, ?, ?, ?)",
        (
            ticket_id,
            ticket.station,
            order_id,
            order_number,
            ticket_title(ticket.changes, first=first),
            int(pickup),
            json.dumps(items, ensure_ascii=False),
            bump_version(conn, _channel(ticket.station)),
            now.isoformat(),
            now.isoformat(),
        ),
    )
    return ticket_id


_COLUMNS = "id, station, order_id, order_number, title, pickup, state, items, version, created_at, updated_at"


def _view(row: Sequence[Any]) -> dict[str, Any]:
    return {
        "id": row[0],
        "station": row[1],
        "order_id": row[2],
        "order_number": f"{row[3]:04d}",
        "title": row[4],
        "pickup": bool(row[5]),
        "state": row[6],
        "items": json.loads(row[7]),
        "version": row[8],
        "created_at": row[9],
        "updated_at": row[10],
    }


def _ticket(conn: sqlite3.Connection, ticket_id: str) -> dict[str, Any]:
    row = conn.execute(f"SELECT {_COLUMNS} FROM kds_tickets WHERE id = ?", (ticket_id,)).fetchone()  # noqa: S608
    if row is None:
        raise TillError(f"no kitchen ticket {ticket_id}", status=404)
    return _view(row)


def _all_day(tickets: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    # What the station still has to make: open tickets' items that are not done, held or cancelled.
    counts: dict[str, Fraction] = {}
    for ticket in tickets:
        if ticket["state"] not in ("new", "in_progress"):
            continue
        for item in ticket["items"]:
            if item["done"] or item["held"] or item["kind"] == "cancelled":
                continue
            amount = Fraction(item["qty"]) - (Fraction(item["sent_qty"]) if item["kind"] == "changed" else 0)
            counts[item["name"]] = counts.get(item["name"], Fraction(0)) + amount
    return [{"name": name, "qty": format_qty(qty)} for name, qty in sorted(counts.items()) if qty > 0]


def station_state(conn: sqlite3.Connection, station: str) -> dict[str, Any]:
    """Everything a screen shows: open tickets oldest first, the last served (recall), all-day counts."""
    open_rows = conn.execute(
        f"SELECT {_COLUMNS} FROM kds_tickets WHERE station = ? AND state != 'served'"  # noqa: S608
        " ORDER BY created_at, id",
        (station,),
    ).fetchall()
    served_rows = conn.execute(
        f"SELECT {_COLUMNS} FROM kds_tickets WHERE station = ? AND state = 'served'"  # noqa: S608
        " ORDER BY updated_at DESC, id DESC LIMIT ?",
        (station, RECENT_SERVED),
    ).fetchall()
    tickets = [_view(row) for row in open_rows]
    return {
        "station": station,
        "version": version(conn, _channel(station)),
        "tickets": tickets,
        "served": [_view(row) for row in served_rows],
        "all_day": _all_day(tickets),
    }


def changes_since(conn: sqlite3.Connection, station: str, since: int) -> dict[str, Any]:
    """The tickets changed after version `since` (whatever their state) and the new all-day counts."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM kds_tickets WHERE station = ? AND version > ? ORDER BY version",  # noqa: S608
        (station, since),
    ).fetchall()
    open_rows = conn.execute(
        f"SELECT {_COLUMNS} FROM kds_tickets WHERE station = ? AND state != 'served'",  # noqa: S608
        (station,),
    ).fetchall()
    return {
        "station": station,
        "from": since,
        "version": version(conn, _channel(station)),
        "tickets": [_view(row) for row in rows],
        "all_day": _all_day(_view(row) for row in open_rows),
    }


def _touch(conn: sqlite3.Connection, ticket: Mapping[str, Any], now: datetime, **columns: Any) -> None:
    sets = ", ".join(f"{name} = ?" for name in columns)
    conn.execute(
        f"UPDATE kds_tickets SET {sets}, version = ?, updated_at = ? WHERE id = ?",  # noqa: S608
        (*columns.values(), bump_version(conn, _channel(ticket["station"])), now.isoformat(), ticket["id"]),
    )


def set_ticket_state(
    conn: sqlite3.Connection,
    ticket_id: str,
    action: Literal["bump", "recall"] | TicketState,
    now: datetime,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Move a ticket (bump: one step on; recall: one step back; or to a named state).

    Returns the ticket and, when this made a pickup order's last open ticket ready, the
    queue call for its number (a pickup order is called once everything for it is ready).
    """
    ticket = _ticket(conn, ticket_id)
    state = ticket["state"]
    if action == "bump":
        if state not in NEXT_STATE:
            raise TillError(f"ticket of order {ticket['order_number']} was already served; recall it first")
        target = NEXT_STATE[state]
    elif action == "recall":
        if state not in _BACK:
            raise TillError(f"ticket of order {ticket['order_number']} is new; there is nothing to recall")
        target = _BACK[state]
    else:
        target = action
    if target == state:
        return ticket, None  # asking twice for the same state changes nothing
    _touch(conn, ticket, now, state=target)
    ticket = _ticket(conn, ticket_id)
    call = None
    if target == "ready" and ticket["pickup"]:
        still = conn.execute(
            "SELECT count(*) FROM kds_tickets WHERE order_id = ? AND state IN ('new', 'in_progress')",
            (ticket["order_id"],),
        ).fetchone()[0]
        if still == 0:
            order_id = ticket["order_id"]
            row = conn.execute("SELECT business_day FROM orders WHERE id = ?", (order_id,)).fetchone()
            day = row[0] if row else now.date().isoformat()
            call = call_pickup(conn, ticket["order_id"], int(ticket["order_number"]), day, now)
    return ticket, call


def set_item_done(
    conn: sqlite3.Connection, ticket_id: str, index: int, done: bool, now: datetime
) -> dict[str, Any]:
    """Tick an item of a ticket off (or back on)."""
    ticket = _ticket(conn, ticket_id)
    items = ticket["items"]
    if not 0 <= index < len(items):
        raise TillError(f"the ticket has {len(items)} items; there is no item {index}", status=404)
    if ticket["state"] == "served":
        raise TillError("the ticket was served; recall it first")
    if items[index]["done"] != done:
        items[index]["done"] = done
        _touch(conn, ticket, now, items=json.dumps(items, ensure_ascii=False))
    return _ticket(conn, ticket_id)

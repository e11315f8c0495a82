"""Queue calling (排队叫号) and pickup numbers, kept in the journal.

A party takes a number in the category its size falls in (A 小桌, B 中桌, C 大桌 by
default), numbered per business day: A001, A002, ... Staff call the next number, recall
it, mark it skipped (过号) or seated. Takeaway and counter orders are called by their
daily order number (取餐号) when the kitchen screens have everything for them ready.

The wait estimate comes from how fast this category has been called today: the mean
interval between its recent calls (or `minutes_per_party` until there are two), times
the parties ahead, counted from the last call.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.errors import TillError
from protocol import new_id

__all__ = [
    "PICKUP",
    "QueueCategory",
    "QueueSettings",
    "QueueState",
    "call_pickup",
    "call_ticket",
    "finish_ticket",
    "queue_state",
    "take_number",
]

PICKUP = "P"  # the category of pickup numbers; never a party-size category
QueueState: TypeAlias = Literal["waiting", "called", "seated", "skipped", "cancelled"]
SHOWN_CALLS = 10
_CHANNEL = "queue"


class QueueCategory(BaseModel):
    """A party-size category: a letter, a name for the ticket and the sizes it takes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(pattern=r"^[A-OQ-Z]$", description="one capital letter; P is for pickup numbers")
    name: str = Field(min_length=1, max_length=10)
    min_size: int = Field(ge=1, le=99)
    max_size: int = Field(ge=1, le=99)
    minutes_per_party: int = Field(8, ge=1, le=240, description="estimate until two calls were seen")

    @property
    def label(self) -> str:
        """e.g. 小桌 1-2人"""
        return f"{self.name} {self.min_size}-{self.max_size}人"


_DEFAULT = [
    QueueCategory(code="A", name="小桌", min_size=1, max_size=2, minutes_per_party=6),
    QueueCategory(code="B", name="中桌", min_size=3, max_size=4, minutes_per_party=8),
    QueueCategory(code="C", name="大桌", min_size=5, max_size=12, minutes_per_party=12),
]


class QueueSettings(BaseModel):
    """`[queue]` in edge.toml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    categories: list[QueueCategory] = Field(
        default_factory=lambda: list(_DEFAULT), min_length=1, max_length=8
    )
    recent_calls: int = Field(10, ge=2, le=100, description="calls the wait estimate looks back on")

    @model_validator(mode="after")
    def _check(self) -> QueueSettings:
        seen: dict[int, str] = {}
        codes = [c.code for c in self.categories]
        if len(set(codes)) != len(codes):
            raise ValueError("queue category codes must differ")
        for category in self.categories:
            if category.min_size > category.max_size:
                raise ValueError(f"queue category {category.code}: min_size is above max_size")
            for size in range(category.min_size, category.max_size + 1):
                if size in seen:
                    raise ValueError(f"a party of {size} fits both {seen[size]} and {category.code}")
                seen[size] = category.code
        return self

    def for_party(self, size: int) -> QueueCategory:
        """The category a party of `size` queues in."""
        for category in self.categories:
            if category.min_size <= size <= category.max_size:
                return category
        largest = max(c.max_size for c in self.categories)
        raise TillError(
            f"no table category takes a party of {size} (up to {largest}); ask the manager", status=422
        )

    def category(self, code: str) -> QueueCategory:
        """A category by its letter."""
        for category in self.categories:
            if category.code == code:
                return category
        raise TillError(f"no queue category {code!r}", status=404)


def _label(category: str, number: int) -> str:
    return f"{number:04d}" if category == PICKUP else f"{category}{number:03d}"


def _voice(category: str, label: str) -> str:
    return f"请 {label} 号顾客取餐" if category == PICKUP else f"请 {label} 号顾客就餐"


def _bump(conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT INTO live_versions (channel, version) VALUES (?, 1)"
        " ON CONFLICT (channel) DO UPDATE SET version = version + 1",
        (_CHANNEL,),
    )


_COLUMNS = (
    "id, business_day, category, number, party_size, order_id, state, calls, taken_at, called_at, done_at"
)


def _view(row: Sequence[Any]) -> dict[str, Any]:
    return {
        "id": row[0],
        "business_day": row[1],
        "category": row[2],
        "number": row[3],
        "label": _label(row[2], row[3]),
        "party_size": row[4],
        "order_id": row[5],
        "state": row[6],
        "calls": row[7],
        "taken_at": row[8],
        "called_at": row[9],
        "done_at": row[10],
    }


def _ticket(conn: sqlite3.Connection, ticket_id: str) -> dict[str, Any]:
    row = conn.execute(f"SELECT {_COLUMNS} FROM queue_tickets WHERE id = ?", (ticket_id,)).fetchone()  # noqa: S608
    if row is None:
        raise TillError(f"no queue number {ticket_id}", status=404)
    return _view(row)


def _waiting(conn: sqlite3.Connection, day: str, code: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM queue_tickets"  # noqa: S608
        " WHERE business_day = ? AND category = ? AND state = 'waiting' ORDER BY number",
        (day, code),
    )
    return [_view(row) for row in rows]


def estimate_s(
    conn: sqlite3.Connection,
    settings: QueueSettings,
    *,
    category: QueueCategory,
    day: str,
    ahead: int,
    now: datetime,
) -> int:
    """Seconds until a party with `ahead` parties before it is called, from today's call pace."""
    rows = conn.execute(
        "SELECT called_at FROM queue_tickets"
        " WHERE business_day = ? AND category = ? AND called_at IS NOT NULL ORDER BY called_at DESC LIMIT ?",
        (day, category.code, settings.recent_calls),
    ).fetchall()
    times = [datetime.fromisoformat(row[0]) for row in rows]
    if len(times) >= 2:
        pace = (times[0] - times[-1]) / (len(times) - 1)
    else:
        pace = timedelta(minutes=category.minutes_per_party)
    if not times:
        return int(((ahead + 1) * pace).total_seconds())
    due = times[0] + (ahead + 1) * pace
    return max(0, int((due - now).total_seconds()))


def take_number(
    conn: sqlite3.Connection, settings: QueueSettings, party_size: int, day: str, now: datetime
) -> dict[str, Any]:
    """Give a party the next number of its category, with the parties ahead and the estimated wait."""
    category = settings.for_party(party_size)
    number = conn.execute(
        "SELECT coalesce(max(number), 0) + 1 FROM queue_tickets WHERE business_day = ? AND category = ?",
        (day, category.code),
    ).fetchone()[0]
    ahead = len(_waiting(conn, day, category.code))
    ticket_id = str(new_id())
    conn.execute(
        "INSERT INTO queue_tickets (id, business_day, category, number, party_size, state, calls, taken_at)"
        " VALUES (?, ?, ?, ?, ?, 'waiting', 0, ?)",
        (ticket_id, day, category.code, number, party_size, now.isoformat()),
    )
    _bump(conn)
    wait = estimate_s(conn, settings, category=category, day=day, ahead=ahead, now=now)
    return _ticket(conn, ticket_id) | {
        "category_name": category.label,
        "ahead": ahead,
        "wait_minutes": -(-wait // 60),
    }


def _announce(conn: sqlite3.Connection, ticket: dict[str, Any], now: datetime) -> dict[str, Any]:
    text = _voice(ticket["category"], ticket["label"])
    call_id = conn.execute(
        "INSERT INTO queue_calls (ticket_id, at, text) VALUES (?, ?, ?) RETURNING id",
        (ticket["id"], now.isoformat(), text),
    ).fetchone()[0]
    _bump(conn)
    return {
        "id": call_id,
        "ticket_id": ticket["id"],
        "label": ticket["label"],
        "text": text,
        "at": now.isoformat(),
    }


def call_ticket(
    conn: sqlite3.Connection,
    action: Literal["call", "recall"],
    now: datetime,
    *,
    ticket_id: str | None = None,
    category: str | None = None,
    day: str | None = None,
) -> dict[str, Any]:
    """Call a number (a given one, or the next waiting in a category) or call it again.

    Recall also brings back a skipped number whose party turned up after all.
    """
    if ticket_id is None:
        if category is None or day is None:
            raise TillError("say which number (ticket) or which category's next number to call", status=422)
        waiting = _waiting(conn, day, category)
        if not waiting:
            raise TillError(f"nobody is waiting in category {category}", status=409)
        ticket_id = waiting[0]["id"]
    ticket = _ticket(conn, ticket_id)
    allowed = ("waiting",) if action == "call" else ("called", "skipped")
    if ticket["state"] not in allowed:
        hint = "recall it" if ticket["state"] == "called" else "it is finished"
        raise TillError(f"number {ticket['label']} is {ticket['state']}; {hint}", status=409)
    conn.execute(
        "UPDATE queue_tickets SET state = 'called', calls = calls + 1, called_at = coalesce(called_at, ?)"
        " WHERE id = ?",
        (now.isoformat(), ticket_id),
    )
    ticket = _ticket(conn, ticket_id)
    return {"ticket": ticket, "call": _announce(conn, ticket, now)}


def finish_ticket(
    conn: sqlite3.Connection, ticket_id: str, state: Literal["seated", "skipped", "cancelled"], now: datetime
) -> dict[str, Any]:
    """Seat a called party (or hand over a pickup), skip a number (过号) or cancel a waiting one."""
    ticket = _ticket(conn, ticket_id)
    allowed = {"seated": ("called",), "skipped": ("waiting", "called"), "cancelled": ("waiting",)}[state]
    if ticket["state"] not in allowed:
        raise TillError(f"number {ticket['label']} is {ticket['state']}; it cannot be {state}", status=409)
    conn.execute(
        "UPDATE queue_tickets SET state = ?, done_at = ? WHERE id = ?", (state, now.isoformat(), ticket_id)
    )
    _bump(conn)
    return _ticket(conn, ticket_id)


def call_pickup(
    conn: sqlite3.Connection, order_id: str, number: int, day: str, now: datetime
) -> dict[str, Any]:
    """Call an order's pickup number (its daily number); calling it again counts as a recall."""
    row = conn.execute("SELECT id FROM queue_tickets WHERE order_id = ?", (order_id,)).fetchone()
    if row is None:
        ticket_id = str(new_id())
        conn.execute(
            "INSERT INTO queue_tickets (id, business_day, category, number, order_id, state, calls, taken_at,"
            " called_at) VALUES (?, ?, ?, ?, ?, 'called', 1, ?, ?)",
            (ticket_id, day, PICKUP, number, order_id, now.isoformat(), now.isoformat()),
        )
    else:
        ticket_id = row[0]
        conn.execute(
            "UPDATE queue_tickets SET state = 'called', calls = calls + 1, done_at = NULL WHERE id = ?",
            (ticket_id,),
        )
    return _announce(conn, _ticket(conn, ticket_id), now)


def queue_state(conn: sqlite3.Connection, settings: QueueSettings, day: str, now: datetime) -> dict[str, Any]:
    """What the waiting-area display and the host's phone show."""
    categories = []
    for category in settings.categories:
        waiting = _waiting(conn, day, category.code)
        categories.append(
            {
                "code": category.code,
                "name": category.label,
                "waiting": len(waiting),
                "next": waiting[0]["label"] if waiting else None,
                "numbers": [t["label"] for t in waiting[:20]],
                # A party taking a number now waits behind everyone already waiting.
                "wait_minutes": -(
                    -estimate_s(conn, settings, category=category, day=day, ahead=len(waiting), now=now) // 60
                ),
            }
        )
    called = conn.execute(
        f"SELECT {_COLUMNS} FROM queue_tickets WHERE business_day = ? AND state = 'called'"  # noqa: S608
        " ORDER BY called_at DESC",
        (day,),
    ).fetchall()
    views = [_view(row) for row in called]
    calls = conn.execute(
        "SELECT c.id, c.ticket_id, c.at, c.text, t.category, t.number FROM queue_calls c"
        " JOIN queue_tickets t ON t.id = c.ticket_id WHERE t.business_day = ? ORDER BY c.id DESC LIMIT ?",
        (day, SHOWN_CALLS),
    ).fetchall()
    version = conn.execute("SELECT version FROM live_versions WHERE channel = ?", (_CHANNEL,)).fetchone()
    return {
        "business_day": day,
        "version": int(version[0]) if version else 0,
        "categories": categories,
        "called": [v for v in views if v["category"] != PICKUP],
        "pickups": [v for v in views if v["category"] == PICKUP],
        "calls": [
            {"id": c[0], "ticket_id": c[1], "at": c[2], "text": c[3], "label": _label(c[4], c[5])}
            for c in calls
        ],
    }

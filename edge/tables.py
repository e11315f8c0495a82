"""Tables: the floor plan, parties seated at tables, their bills, transfers, merges and splits.

Everything lives in the journal and runs inside the caller's transaction. A *seating* is a
party at one or more tables (more after a merge); `seated_tables` has one row per occupied
table, so a table can never hold two parties. A seating's bills are till orders: the *main*
order that rounds are added to, and the sub-bills a split by item made (role `part`).

A table is free again as soon as every bill of its seating is paid or voided, whichever
route paid it; the seating row is closed the next time the table is touched.

Transfers move the party, never the order: the order id, its lines and what the kitchen
was sent stay as they are. Merges move lines from one order into another together with the
kitchen's sent state (`edge.bill_split.merge_sent`), so nothing is re-sent or cancelled.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Any

from edge.bill_split import SentState, even_parts, merge_sent, regroup, split_lines, split_sent
from edge.config import EdgeSettings
from edge.errors import TillError
from edge.orders import Order, reprice
from edge.till import load_order, new_order, save_order, write_audit
from protocol import new_id

__all__ = [
    "CLOSED",
    "Bill",
    "add_area",
    "add_table",
    "bills_of",
    "floor",
    "get_area",
    "get_table",
    "main_order",
    "merge_lines",
    "merge_seatings",
    "open_table",
    "release",
    "request_bill",
    "split_by_item",
    "split_evenly",
    "tables_of_order",
    "transfer",
    "update_area",
    "update_table",
]

CLOSED = frozenset({"paid", "voided"})


# ---------------------------------------------------------------------- floor plan


def add_area(conn: sqlite3.Connection, area_id: str, name: str) -> dict[str, Any]:
    """A new area (大厅, 包间, 露台) at the end of the plan."""
    if conn.execute("SELECT 1 FROM floor_areas WHERE id = ?", (area_id,)).fetchone():
        raise TillError(f"area {area_id} already exists; change it with PATCH", status=409)
    position = conn.execute("SELECT coalesce(max(position), 0) + 1 FROM floor_areas").fetchone()[0]
    conn.execute("INSERT INTO floor_areas (id, name, position) VALUES (?, ?, ?)", (area_id, name, position))
    return {"id": area_id, "name": name, "position": position}


def update_area(conn: sqlite3.Connection, area_id: str, name: str) -> dict[str, Any]:
    """Rename an area."""
    get_area(conn, area_id)
    conn.execute("UPDATE floor_areas SET name = ? WHERE id = ?", (name, area_id))
    return get_area(conn, area_id)


def get_area(conn: sqlite3.Connection, area_id: str) -> dict[str, Any]:
    """One area (404 if unknown)."""
    row = conn.execute("SELECT id, name, position FROM floor_areas WHERE id = ?", (area_id,)).fetchone()
    if row is None:
        raise TillError(f"no area {area_id}; add it first (POST /api/v1/floor/areas)", status=404)
    return {"id": row[0], "name": row[1], "position": row[2]}


def add_table(conn: sqlite3.Connection, table_id: str, area_id: str, name: str, seats: int) -> dict[str, Any]:
    """A new table in an area."""
    get_area(conn, area_id)
    if conn.execute("SELECT 1 FROM floor_tables WHERE id = ?", (table_id,)).fetchone():
        raise TillError(f"table {table_id} already exists; change it with PATCH", status=409)
    position = conn.execute(
        "SELECT coalesce(max(position), 0) + 1 FROM floor_tables WHERE area_id = ?", (area_id,)
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO floor_tables (id, area_id, name, seats, position, active) VALUES (?, ?, ?, ?, ?, 1)",
        (table_id, area_id, name, seats, position),
    )
    return get_table(conn, table_id)


def update_table(
    conn: sqlite3.Connection, table_id: str, changes: dict[str, Any], now: datetime
) -> dict[str, Any]:
    """Change a table's name, seats, area or whether it is in use (not while a party sits there)."""
    get_table(conn, table_id)
    if "area_id" in changes:
        get_area(conn, changes["area_id"])
    if changes.get("active") is False and _seating(conn, table_id, now) is not None:
        raise TillError(f"table {table_id} has guests; take it out of use once it is free")
    for column in ("name", "seats", "area_id", "active"):  # a fixed list: never a column from the request
        if column in changes:
            conn.execute(f"UPDATE floor_tables SET {column} = ? WHERE id = ?", (changes[column], table_id))  # noqa: S608
    return get_table(conn, table_id)


def get_table(conn: sqlite3.Connection, table_id: str) -> dict[str, Any]:
    """One table of the floor plan (404 if unknown)."""
    row = conn.execute(
        "SELECT id, area_id, name, seats, active FROM floor_tables WHERE id = ?", (table_id,)
    ).fetchone()
    if row is None:
        raise TillError(f"no table {table_id}", status=404)
    return {"id": row[0], "area_id": row[1], "name": row[2], "seats": row[3], "active": bool(row[4])}


def floor(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Areas in order, each with its tables in order."""
    areas = [
        {"id": a, "name": n, "position": p, "tables": []}
        for a, n, p in conn.execute("SELECT id, name, position FROM floor_areas ORDER BY position, id")
    ]
    by_id = {area["id"]: area for area in areas}
    rows = conn.execute(
        "SELECT id, area_id, name, seats, active FROM floor_tables ORDER BY position, id"
    ).fetchall()
    for table_id, area_id, name, seats, active in rows:
        by_id[area_id]["tables"].append(
            {"id": table_id, "area_id": area_id, "name": name, "seats": seats, "active": bool(active)}
        )
    return areas


# ---------------------------------------------------------------------- seatings


@dataclass(frozen=True)
class Bill:
    """One order of a seating: the main order or a sub-bill, and its even split if any."""

    order: Order
    role: str
    even_parts: int | None


def bills_of(conn: sqlite3.Connection, seating_id: str) -> list[Bill]:
    """The seating's bills (merged-away orders left out), oldest first."""
    rows = conn.execute(
        "SELECT o.doc, s.role, s.even_parts FROM seating_orders s JOIN orders o ON o.id = s.order_id"
        " WHERE s.seating_id = ? AND s.role != 'merged' ORDER BY o.number",
        (seating_id,),
    ).fetchall()
    return [Bill(Order.model_validate_json(doc), role, parts) for doc, role, parts in rows]


def _close_seating(conn: sqlite3.Connection, seating_id: str, reason: str, now: datetime) -> None:
    conn.execute("DELETE FROM seated_tables WHERE seating_id = ?", (seating_id,))
    conn.execute(
        "UPDATE seatings SET closed_at = ?, closed_reason = ? WHERE id = ? AND closed_at IS NULL",
        (now.isoformat(), reason, seating_id),
    )


def _seating(conn: sqlite3.Connection, table_id: str, now: datetime) -> str | None:
    """The open seating at the table; one whose bills are all settled is closed on the way."""
    row = conn.execute("SELECT seating_id FROM seated_tables WHERE table_id = ?", (table_id,)).fetchone()
    if row is None:
        return None
    seating_id: str = row[0]
    if all(bill.order.status in CLOSED for bill in bills_of(conn, seating_id)):
        _close_seating(conn, seating_id, "settled", now)
        return None
    return seating_id


def _require_seating(conn: sqlite3.Connection, table_id: str, now: datetime) -> str:
    get_table(conn, table_id)
    seating_id = _seating(conn, table_id, now)
    if seating_id is None:
        raise TillError(f"table {table_id} is free; open it first (POST /api/v1/tables/{table_id}/open)")
    return seating_id


def open_table(
    conn: sqlite3.Connection,
    settings: EdgeSettings,
    table_id: str,
    party_size: int,
    *,
    staff_id: str,
    now: datetime,
    note: str = "",
) -> Order:
    """Seat a party: the table's seating and its (empty, open) order, in one transaction."""
    table = get_table(conn, table_id)
    if not table["active"]:
        raise TillError(f"table {table_id} is not in use; a manager can put it back (PATCH)")
    if _seating(conn, table_id, now) is not None:
        raise TillError(f"table {table_id} already has guests; transfer or merge instead")
    seating_id = str(new_id())
    conn.execute(
        "INSERT INTO seatings (id, party_size, seated_at, opened_by) VALUES (?, ?, ?, ?)",
        (seating_id, party_size, now.isoformat(), staff_id),
    )
    conn.execute("INSERT INTO seated_tables (table_id, seating_id) VALUES (?, ?)", (table_id, seating_id))
    order = new_order(conn, settings, staff_id, now, note=note or f"桌 {table['name']}")
    conn.execute(
        "INSERT INTO seating_orders (order_id, seating_id, role) VALUES (?, ?, 'main')",
        (order.id, seating_id),
    )
    return order


def main_order(conn: sqlite3.Connection, table_id: str, now: datetime) -> str:
    """The id of the order rounds at this table go to."""
    seating_id = _require_seating(conn, table_id, now)
    row = conn.execute(
        "SELECT order_id FROM seating_orders WHERE seating_id = ? AND role = 'main'", (seating_id,)
    ).fetchone()
    return str(row[0])


def tables_of_order(conn: sqlite3.Connection, order_id: str) -> list[str]:
    """The tables whose bill this order is (none for a counter order)."""
    rows = conn.execute(
        "SELECT t.table_id FROM seating_orders s JOIN seated_tables t ON t.seating_id = s.seating_id"
        " WHERE s.order_id = ? ORDER BY t.table_id",
        (order_id,),
    )
    return [row[0] for row in rows]


def transfer(conn: sqlite3.Connection, source: str, target: str, staff_id: str, now: datetime) -> str:
    """Move the party (and its bills, untouched) from one table to a free one."""
    seating_id = _require_seating(conn, source, now)
    table = get_table(conn, target)
    if source == target:
        raise TillError("a table cannot be transferred to itself", status=422)
    if not table["active"]:
        raise TillError(f"table {target} is not in use")
    if _seating(conn, target, now) is not None:
        raise TillError(f"table {target} has guests; merge the tables instead")
    conn.execute("UPDATE seated_tables SET table_id = ? WHERE table_id = ?", (target, source))
    write_audit(conn, staff_id, "table.transfer", main_order(conn, target, now), f"{source} -> {target}")
    return seating_id


def _open_bills(conn: sqlite3.Connection, seating_id: str, table_id: str) -> list[Bill]:
    bills = bills_of(conn, seating_id)
    if len(bills) > 1 or any(bill.order.tenders for bill in bills):
        raise TillError(f"the bill of table {table_id} is split or partly paid; settle it as it is")
    return bills


def merge_lines(
    conn: sqlite3.Connection, into: Order, table_id: str, other_table: str, now: datetime
) -> tuple[Order, Order]:
    """The rule of a merge: `into` with the other table's lines appended (kitchen state moves after)."""
    if main_order(conn, table_id, now) != into.id:
        raise TillError(f"table {table_id} changed while merging; look again and retry")
    _open_bills(conn, _require_seating(conn, table_id, now), table_id)
    other = _open_bills(conn, _require_seating(conn, other_table, now), other_table)[0].order
    if other.id == into.id:
        raise TillError("the two tables already share one bill", status=422)
    into.require_editable()
    other.require_editable()
    if other.coupons:
        raise TillError(f"order {other.number:04d} has a coupon; take it off before merging its table")
    return reprice(into.model_copy(update={"lines": [*into.lines, *other.lines]})), other


def merge_seatings(
    conn: sqlite3.Connection, into: Order, other: Order, target_table: str, *, staff_id: str, now: datetime
) -> Order:
    """After the merged order is saved: the other order closes empty, its kitchen state and tables move."""
    seating_id = _require_seating(conn, target_table, now)
    other_seating = conn.execute(
        "SELECT seating_id FROM seating_orders WHERE order_id = ?", (other.id,)
    ).fetchone()[0]
    sent = merge_sent(_sent(conn, into.id), _sent(conn, other.id))
    _set_sent(conn, into.id, sent)
    _set_sent(conn, other.id, {})
    conn.execute("UPDATE kitchen_plan SET order_id = ? WHERE order_id = ?", (into.id, other.id))
    reason = f"merged into order {into.number:04d}"
    # The other order's lines now live on `into`; it closes empty so its number is accounted for.
    emptied = other.model_copy(
        update={
            "lines": [],
            "subtotal_fen": 0,
            "discount_fen": 0,
            "total_fen": 0,
            "promotions": [],
            "gifts": [],
            "status": "voided",
            "void_reason": reason,
            "voided_by": staff_id,
            "closed_at": now,
            "version": other.version + 1,
        }
    )
    save_order(conn, emptied, now)
    conn.execute(
        "UPDATE seating_orders SET role = 'merged', seating_id = ? WHERE order_id = ?", (seating_id, other.id)
    )
    conn.execute("UPDATE seated_tables SET seating_id = ? WHERE seating_id = ?", (seating_id, other_seating))
    party = conn.execute("SELECT party_size FROM seatings WHERE id = ?", (other_seating,)).fetchone()[0]
    conn.execute("UPDATE seatings SET party_size = party_size + ? WHERE id = ?", (party, seating_id))
    conn.execute("UPDATE seating_orders SET even_parts = NULL WHERE seating_id = ?", (seating_id,))
    _close_seating(conn, other_seating, f"merged into {target_table}", now)
    write_audit(conn, staff_id, "table.merge", into.id, f"order {other.number:04d} {reason}")
    return emptied


def _sent(conn: sqlite3.Connection, order_id: str) -> SentState:
    row = conn.execute("SELECT state FROM kitchen_sent WHERE order_id = ?", (order_id,)).fetchone()
    state: SentState = json.loads(row[0]) if row else {}
    return state


def _set_sent(conn: sqlite3.Connection, order_id: str, state: SentState) -> None:
    if not state:
        conn.execute("DELETE FROM kitchen_sent WHERE order_id = ?", (order_id,))
        return
    conn.execute(
        "INSERT INTO kitchen_sent (order_id, state) VALUES (?, ?)"
        " ON CONFLICT (order_id) DO UPDATE SET state = excluded.state",
        (order_id, json.dumps(state, ensure_ascii=False)),
    )


def split_by_item(
    conn: sqlite3.Connection,
    settings: EdgeSettings,
    table_id: str,
    parts: Sequence[Sequence[tuple[str, Fraction | None]]],
    *,
    staff_id: str,
    now: datetime,
) -> list[Order]:
    """Move lines (or quantities of them) from the table's order to new sub-bills, exact in fen.

    Returns the table's order first, then the sub-bills. Their totals add up to the bill's;
    the kitchen's sent state and course plan move with the lines.
    """
    seating_id = _require_seating(conn, table_id, now)
    order = load_order(conn, main_order(conn, table_id, now))
    bills, pieces = split_lines(order, parts, lambda: str(new_id()))
    orders = [regroup(order, bills[0], version=order.version + 1)]
    for lines in bills[1:]:
        child = new_order(conn, settings, staff_id, now, note=order.note)
        orders.append(
            regroup(
                order,
                lines,
                id=child.id,
                number=child.number,
                business_day=child.business_day,
                opened_at=now,
                opened_by=staff_id,
                gifts=[],
                version=child.version + 1,
            )
        )
        conn.execute(
            "INSERT INTO seating_orders (order_id, seating_id, role) VALUES (?, ?, 'part')",
            (child.id, seating_id),
        )
    if sum(o.total_fen for o in orders) != order.total_fen:  # allocation guarantees it; never trust blindly
        raise TillError(
            f"order {order.number:04d}: the sub-bills would not add up to the bill; nothing was split"
        )
    sent = split_sent(_sent(conn, order.id), pieces, len(bills))
    plan = dict(
        conn.execute(
            "SELECT line_id, json_array(course, held) FROM kitchen_plan WHERE order_id = ?", (order.id,)
        )
    )
    conn.execute("DELETE FROM kitchen_plan WHERE order_id = ?", (order.id,))
    sources = {p.line_id: line_id for line_id, cut in pieces.items() for p in cut} | {
        line.line_id: line.line_id for line in order.lines
    }
    for bill, state in zip(orders, sent, strict=True):
        save_order(conn, bill, now)
        _set_sent(conn, bill.id, state)
        for line in bill.lines:
            if sources[line.line_id] in plan:
                course, held = json.loads(plan[sources[line.line_id]])
                conn.execute(
                    "INSERT INTO kitchen_plan (order_id, line_id, course, held) VALUES (?, ?, ?, ?)",
                    (bill.id, line.line_id, course, held),
                )
    conn.execute("UPDATE seating_orders SET even_parts = NULL WHERE order_id = ?", (order.id,))
    write_audit(conn, staff_id, "bill.split", order.id, f"by item into {len(orders)} bills")
    return orders


def split_evenly(
    conn: sqlite3.Connection, table_id: str, order_id: str | None, parts: int, *, staff_id: str, now: datetime
) -> Bill:
    """Split one bill of the table into N even parts, each paid with the payments route."""
    seating_id = _require_seating(conn, table_id, now)
    order_id = order_id or main_order(conn, table_id, now)
    bill = next((b for b in bills_of(conn, seating_id) if b.order.id == order_id), None)
    if bill is None:
        raise TillError(f"order {order_id} is not a bill of table {table_id}", status=404)
    if bill.order.status != "open":
        raise TillError(f"order {bill.order.number:04d} is {bill.order.status}; it cannot be split")
    if bill.order.tenders:
        raise TillError(f"order {bill.order.number:04d} is being paid; its split cannot change now")
    if not bill.order.lines:
        raise TillError(f"order {bill.order.number:04d} has nothing to pay yet", status=422)
    even_parts(bill.order.total_fen, parts)  # validates N
    conn.execute(
        "UPDATE seating_orders SET even_parts = ? WHERE order_id = ?",
        (parts if parts > 1 else None, order_id),
    )
    write_audit(conn, staff_id, "bill.split", order_id, f"evenly in {parts}")
    return Bill(bill.order, bill.role, parts if parts > 1 else None)


def request_bill(conn: sqlite3.Connection, table_id: str, now: datetime) -> None:
    """The guests asked for the bill (买单): the table shows as waiting for it."""
    seating_id = _require_seating(conn, table_id, now)
    conn.execute(
        "UPDATE seatings SET bill_requested_at = coalesce(bill_requested_at, ?) WHERE id = ?",
        (now.isoformat(), seating_id),
    )


def release(conn: sqlite3.Connection, table_id: str, order: Order, staff_id: str, now: datetime) -> Order:
    """Free a table whose guests left without ordering: its empty order closes as voided."""
    seating_id = _require_seating(conn, table_id, now)
    others = [b.order for b in bills_of(conn, seating_id) if b.order.id != order.id]
    if order.lines or order.tenders or any(o.status not in CLOSED for o in others):
        raise TillError(f"table {table_id} has an unpaid bill; pay it, or a manager voids it")
    if order.status not in ("open", "held"):
        raise TillError(f"order {order.number:04d} is {order.status}")
    _close_seating(conn, seating_id, "released", now)
    write_audit(conn, staff_id, "table.release", order.id, f"table {table_id}: nothing ordered")
    reason = f"table {table_id} released, nothing ordered"
    return order.model_copy(update={"status": "voided", "void_reason": reason, "voided_by": staff_id})

"""What the waiter's phone shows: each table at a glance and its bills with their even-split parts.

Status is derived from the bills every time, never stored: `free` (no party, or every bill
paid or voided), `seated` (nothing ordered yet), `ordered`, `bill` (the guests asked for
it, or paying has started). Minutes are counted from when the party sat down.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from edge.bill_split import even_parts
from edge.orders import Order
from edge.tables import CLOSED, Bill, bills_of, get_area, get_table

__all__ = ["bill_parts", "table_view", "tables_view"]


def bill_parts(order: Order, parts: int | None) -> list[dict[str, Any]]:
    """An even split's parts; payments settle them in order, so each shows what is still due."""
    if not parts:
        return []
    paid = order.paid_fen
    out = []
    for index, amount in enumerate(even_parts(order.total_fen, parts), start=1):
        covered = min(amount, paid)
        paid -= covered
        out.append({"part": index, "amount_fen": amount, "paid_fen": covered, "due_fen": amount - covered})
    return out


def _bill_view(bill: Bill) -> dict[str, Any]:
    order = bill.order
    return {
        "order_id": order.id,
        "number": f"{order.number:04d}",
        "role": bill.role,
        "status": order.status,
        "lines": len(order.lines),
        "total_fen": order.total_fen,
        "paid_fen": order.paid_fen,
        "due_fen": order.due_fen if order.status == "open" else 0,
        "parts": bill_parts(order, bill.even_parts),
    }


def table_view(conn: sqlite3.Connection, table_id: str, now: datetime) -> dict[str, Any]:
    """A table at a glance: free / seated / ordered / bill, party, minutes seated and its bills."""
    table = get_table(conn, table_id)
    row = conn.execute(
        "SELECT s.id, s.party_size, s.seated_at, s.bill_requested_at FROM seated_tables t"
        " JOIN seatings s ON s.id = t.seating_id WHERE t.table_id = ?",
        (table_id,),
    ).fetchone()
    bills = bills_of(conn, row[0]) if row else []
    if not bills or all(bill.order.status in CLOSED for bill in bills):
        return table | {
            "status": "free",
            "party_size": None,
            "seated_at": None,
            "minutes_seated": None,
            "joined": [],
            "bills": [],
            "total_fen": 0,
            "due_fen": 0,
        }
    seating_id, party, seated_at, bill_at = row
    open_orders = [bill.order for bill in bills if bill.order.status not in CLOSED]
    if bill_at or any(order.tenders for order in open_orders):
        status = "bill"
    elif any(bill.order.lines for bill in bills):
        status = "ordered"
    else:
        status = "seated"
    joined = [
        r[0]
        for r in conn.execute(
            "SELECT table_id FROM seated_tables WHERE seating_id = ? AND table_id != ? ORDER BY table_id",
            (seating_id, table_id),
        )
    ]
    views = [_bill_view(bill) for bill in bills]
    return table | {
        "status": status,
        "party_size": party,
        "seated_at": seated_at,
        "minutes_seated": int((now - datetime.fromisoformat(seated_at)).total_seconds() // 60),
        "bill_requested_at": bill_at,
        "joined": joined,
        "bills": views,
        "total_fen": sum(v["total_fen"] for v in views if v["status"] != "voided"),
        "due_fen": sum(v["due_fen"] for v in views),
    }


def tables_view(conn: sqlite3.Connection, now: datetime, area: str | None = None) -> list[dict[str, Any]]:
    """Every table in use (of one area, or all), in floor-plan order."""
    if area is not None:
        get_area(conn, area)
    rows = conn.execute(
        "SELECT t.id FROM floor_tables t JOIN floor_areas a ON a.id = t.area_id"
        " WHERE t.active = 1 AND (? IS NULL OR t.area_id = ?) ORDER BY a.position, t.position, t.id",
        (area, area),
    ).fetchall()
    return [table_view(conn, row[0], now) for row in rows]

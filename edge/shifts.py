"""Cash drawer shifts (交班): the float, running takings per tender, counted cash at close."""

from __future__ import annotations

import sqlite3
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from protocol import UtcDatetime

__all__ = ["Shift", "add_to", "load_open_shift", "save_shift"]


class Shift(BaseModel):
    """A cash drawer shift (交班): float, per-tender takings, counted cash at close."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    status: Literal["open", "closed"] = "open"
    opened_at: UtcDatetime
    opened_by: str
    float_fen: int
    sales: dict[str, int] = {}
    refunds: dict[str, int] = {}
    topups: dict[str, int] = {}  # stored-value top-ups taken at this till (充值), per tender
    orders: int = 0
    closed_at: UtcDatetime | None = None
    closed_by: str | None = None
    counted_cash_fen: int | None = None

    @property
    def expected_cash_fen(self) -> int:
        """Float plus cash taken (sales and top-ups) minus cash given back."""
        cash_in = self.sales.get("cash", 0) + self.topups.get("cash", 0)
        return self.float_fen + cash_in - self.refunds.get("cash", 0)

    def view(self) -> dict[str, Any]:
        """JSON for the API, with the derived expected cash and difference."""
        body = self.model_dump(mode="json")
        body["expected_cash_fen"] = self.expected_cash_fen
        if self.counted_cash_fen is not None:
            body["difference_fen"] = self.counted_cash_fen - self.expected_cash_fen
        return body


def load_open_shift(conn: sqlite3.Connection) -> Shift | None:
    """The open shift, if any (inside the caller's transaction)."""
    row = conn.execute("SELECT doc FROM shifts WHERE status = 'open'").fetchone()
    return Shift.model_validate_json(row[0]) if row else None


def load_shift(conn: sqlite3.Connection, shift_id: str) -> Shift:
    """A shift by id; KeyError when there is none."""
    row = conn.execute("SELECT doc FROM shifts WHERE id = ?", (shift_id,)).fetchone()
    if row is None:
        raise KeyError(f"no shift {shift_id!r}")
    return Shift.model_validate_json(row[0])


def save_shift(conn: sqlite3.Connection, shift: Shift) -> None:
    """Upsert a shift row."""
    conn.execute(
        "INSERT INTO shifts (id, status, doc) VALUES (?, ?, ?)"
        " ON CONFLICT (id) DO UPDATE SET status = excluded.status, doc = excluded.doc",
        (shift.id, shift.status, shift.model_dump_json()),
    )


def add_to(totals: dict[str, int], key: str, amount: int) -> dict[str, int]:
    """A copy of per-tender totals with `amount` added under `key`."""
    return {**totals, key: totals.get(key, 0) + amount}

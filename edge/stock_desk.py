"""The store's stock tasks as staff work them: list, scan into, correct, submit.

Every change is one journal transaction. A submit validates the whole task first (a
refusal writes nothing), then writes the outbox events and closes or advances the task in
the same transaction, so what the staff were told was sent is sent, once.

- count: any SKU (a count of listed SKUs: only those); submit sends every counted line
  with the moment it was last changed, in parts of `MAX_LINES_PER_EVENT`
  (`stocktake.counted`); the hub places sales against those moments.
- ship: only SKUs on the transfer, at most the approved quantity; submit sends what was
  scanned (`transfer.shipped`), a SKU not scanned ships nothing.
- receive: SKUs on the transfer; less than remains is a partial receipt (the task stays
  open for the rest), more needs `over` and a note, `short` says the rest will not come,
  damaged goods need a note (`transfer.received`).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from edge.errors import TillError
from edge.journal import Journal, append_event
from edge.stock_tasks import MAX_LINES_PER_EVENT, new_report_id, show_milli

__all__ = ["LineChange", "StockDesk"]

_DISCREPANCIES = ("short", "over", "damaged")


def _now() -> str:
    return datetime.now(UTC).isoformat()


class LineChange:
    """A correction of one line: the quantity, and for a receipt damage and a discrepancy."""

    def __init__(
        self, qty_milli: int, damaged_milli: int = 0, discrepancy: str | None = None, note: str = ""
    ) -> None:
        self.qty_milli, self.damaged_milli = qty_milli, damaged_milli
        self.discrepancy, self.note = discrepancy, note


def _task(conn: sqlite3.Connection, task_id: str) -> tuple[str, str, dict[str, Any], str]:
    row = conn.execute("SELECT kind, ref, doc, state FROM stock_tasks WHERE id = ?", (task_id,)).fetchone()
    if row is None:
        raise TillError(f"no stock task {task_id}", status=404)
    return row[0], row[1], json.loads(row[2]), row[3]


def _open_task(conn: sqlite3.Connection, task_id: str) -> tuple[str, str, dict[str, Any]]:
    kind, ref, doc, state = _task(conn, task_id)
    if state != "open":
        raise TillError(f"task {task_id} is {state}; nothing more can be scanned into it")
    return kind, ref, doc


def _line(conn: sqlite3.Connection, task_id: str, sku: str) -> tuple[int | None, int, int] | None:
    row = conn.execute(
        "SELECT expected_milli, qty_milli, reported_milli FROM stock_task_lines"
        " WHERE task_id = ? AND sku = ?",
        (task_id, sku),
    ).fetchone()
    return None if row is None else (row[0], row[1], row[2])


def _check_sku(kind: str, doc: dict[str, Any], found: tuple[int | None, int, int] | None, sku: str) -> None:
    if kind == "count":
        if doc.get("scope") == "skus" and sku not in (doc.get("skus") or []):
            raise TillError(f"{sku} is not in this count (it lists only some SKUs); put it aside", status=422)
    elif found is None:
        raise TillError(f"{sku} is not on this transfer; keep it apart and tell head office", status=422)


def _check_ship(kind: str, found: tuple[int | None, int, int] | None, sku: str, qty: int) -> None:
    if kind == "ship" and found is not None and found[0] is not None and qty > found[0]:
        raise TillError(
            f"{sku}: {show_milli(qty)} scanned but only {show_milli(found[0])} was approved to ship",
            status=409,
        )


def _view(conn: sqlite3.Connection, task_id: str) -> dict[str, Any]:
    kind, ref, doc, state = _task(conn, task_id)
    lines = []
    for sku, expected, qty, damaged, discrepancy, note, reported, settled, updated in conn.execute(
        "SELECT sku, expected_milli, qty_milli, damaged_milli, discrepancy, note, reported_milli, settled,"
        " updated_at FROM stock_task_lines WHERE task_id = ? ORDER BY sku",
        (task_id,),
    ):
        line: dict[str, Any] = {"sku": sku, "scanned": show_milli(qty), "updated_at": updated}
        if expected is not None:
            line["expected"] = show_milli(expected)
        if kind == "receive":
            remaining = 0 if settled else max(0, (expected or 0) - reported)
            line |= {
                "received_before": show_milli(reported),
                "remaining": show_milli(remaining),
                "damaged": show_milli(damaged),
                "discrepancy": discrepancy,
                "note": note,
            }
        lines.append(line)
    return {"id": task_id, "kind": kind, "ref": ref, "state": state, **doc, "lines": lines}


def _idempotent(
    conn: sqlite3.Connection, key: str | None, request: str, work: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """Run `work` once per Idempotency-Key (the phone's retry of a scan must not count twice)."""
    if key is None:
        return work()
    digest = hashlib.sha256(request.encode()).hexdigest()
    row = conn.execute("SELECT request_hash, response FROM idempotency WHERE key = ?", (key,)).fetchone()
    if row is not None:
        if row[0] != digest:
            raise TillError("this Idempotency-Key was already used for a different request", status=422)
        return dict(json.loads(row[1]))
    answer = work()
    conn.execute(
        "INSERT INTO idempotency (key, request_hash, status, response, created_at) VALUES (?, ?, 200, ?, ?)",
        (key, digest, json.dumps(answer, ensure_ascii=False), _now()),
    )
    return answer


class StockDesk:
    """Tasks over the journal; `on_outbox` wakes the hub link after a submit."""

    def __init__(self, journal: Journal, *, on_outbox: Callable[[], None] | None = None) -> None:
        self._journal = journal
        self._on_outbox = on_outbox

    async def tasks(self, state: str | None) -> list[dict[str, Any]]:
        """Tasks, newest first; `state` one of open, done, cancelled."""

        def work(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            query = "SELECT id FROM stock_tasks"
            args: tuple[str, ...] = ()
            if state is not None:
                query, args = query + " WHERE state = ?", (state,)
            ids = [r[0] for r in conn.execute(query + " ORDER BY created_at DESC LIMIT 200", args)]
            return [_view(conn, task_id) for task_id in ids]

        return await self._journal.read(work)

    async def task(self, task_id: str) -> dict[str, Any]:
        """One task with its lines."""
        return await self._journal.read(lambda conn: _view(conn, task_id))

    async def blocked(self) -> list[dict[str, str]]:
        """The SKUs head office blocked from sale here."""

        def work(conn: sqlite3.Connection) -> list[dict[str, str]]:
            rows = conn.execute("SELECT sku, reason, since FROM blocked_skus ORDER BY sku")
            return [{"sku": r[0], "reason": r[1], "since": r[2]} for r in rows]

        return await self._journal.read(work)

    async def scan(self, task_id: str, sku: str, qty_milli: int, *, key: str | None = None) -> dict[str, Any]:
        """Add a scanned quantity to a line of an open task."""

        def work(conn: sqlite3.Connection) -> dict[str, Any]:
            def change() -> dict[str, Any]:
                kind, _, doc = _open_task(conn, task_id)
                found = _line(conn, task_id, sku)
                _check_sku(kind, doc, found, sku)
                total = (found[1] if found else 0) + qty_milli
                _check_ship(kind, found, sku, total)
                conn.execute(
                    "INSERT INTO stock_task_lines (task_id, sku, qty_milli, updated_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (task_id, sku) DO UPDATE SET qty_milli = excluded.qty_milli,"
                    " updated_at = excluded.updated_at",
                    (task_id, sku, total, _now()),
                )
                return _view(conn, task_id)

            return _idempotent(conn, key, f"scan {task_id} {sku} {qty_milli}", change)

        return await self._journal.transaction(work)

    async def set_line(self, task_id: str, sku: str, change: LineChange) -> dict[str, Any]:
        """Set a line's quantity (a recount, a typo), and for a receipt its damage and discrepancy."""
        if change.discrepancy is not None and change.discrepancy not in _DISCREPANCIES:
            raise TillError(f"discrepancy is one of {', '.join(_DISCREPANCIES)}", status=422)

        def work(conn: sqlite3.Connection) -> dict[str, Any]:
            kind, _, doc = _open_task(conn, task_id)
            if kind != "receive" and (change.damaged_milli or change.discrepancy or change.note):
                raise TillError("damage and discrepancies are recorded when receiving a transfer", status=422)
            found = _line(conn, task_id, sku)
            _check_sku(kind, doc, found, sku)
            _check_ship(kind, found, sku, change.qty_milli)
            if change.damaged_milli > change.qty_milli:
                raise TillError(f"{sku}: damaged is part of the quantity received, so at most it", status=422)
            conn.execute(
                "INSERT INTO stock_task_lines (task_id, sku, qty_milli, damaged_milli, discrepancy, note,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (task_id, sku) DO UPDATE SET"
                " qty_milli = excluded.qty_milli, damaged_milli = excluded.damaged_milli,"
                " discrepancy = excluded.discrepancy, note = excluded.note, updated_at = excluded.updated_at",
                (
                    task_id,
                    sku,
                    change.qty_milli,
                    change.damaged_milli,
                    change.discrepancy,
                    change.note,
                    _now(),
                ),
            )
            return _view(conn, task_id)

        return await self._journal.transaction(work)

    async def submit(self, task_id: str, staff_id: str, note: str = "") -> dict[str, Any]:
        """Send the task's result to the hub through the outbox; the reply says what was sent."""

        def work(conn: sqlite3.Connection) -> dict[str, Any]:
            kind, ref, _ = _open_task(conn, task_id)
            rows = conn.execute(
                "SELECT sku, expected_milli, qty_milli, damaged_milli, discrepancy, note, reported_milli,"
                " updated_at FROM stock_task_lines WHERE task_id = ? ORDER BY sku",
                (task_id,),
            ).fetchall()
            now = _now()
            if kind == "count":
                sent = _submit_count(conn, ref, staff_id, rows, now)
                state = "done"
            elif kind == "ship":
                sent = _submit_ship(conn, ref, staff_id, rows, now)
                state = "done"
            else:
                sent, state = _submit_receipt(conn, task_id, ref, staff_id, rows, note, now)
            conn.execute(
                "UPDATE stock_tasks SET state = ?, updated_at = ? WHERE id = ?", (state, now, task_id)
            )
            return {"task": _view(conn, task_id), "sent": sent}

        answer = await self._journal.transaction(work, durable=True)
        if self._on_outbox is not None:
            self._on_outbox()
        return answer


def _event(conn: sqlite3.Connection, kind: str, body: dict[str, Any], now: str) -> None:
    append_event(conn, kind, json.dumps(body, ensure_ascii=False), now)


def _submit_count(
    conn: sqlite3.Connection, ref: str, staff: str, rows: list[Any], now: str
) -> dict[str, Any]:
    if not rows:
        raise TillError("nothing has been counted yet; scan the shelf first", status=409)
    submission = new_report_id()
    parts = [rows[i : i + MAX_LINES_PER_EVENT] for i in range(0, len(rows), MAX_LINES_PER_EVENT)]
    for number, part in enumerate(parts, start=1):
        body = {
            "report_id": f"{submission}:{number}",
            "stocktake_id": ref,
            "part": number,
            "parts": len(parts),
            "total_lines": len(rows),
            "staff": staff,
            "lines": [{"sku": r[0], "qty": show_milli(r[2]), "counted_at": r[7]} for r in part],
        }
        _event(conn, "stocktake.counted", body, now)
    return {"events": len(parts), "lines": len(rows)}


def _submit_ship(conn: sqlite3.Connection, ref: str, staff: str, rows: list[Any], now: str) -> dict[str, Any]:
    lines = [{"sku": r[0], "qty": show_milli(r[2])} for r in rows if r[2] > 0]
    if not lines:
        raise TillError("nothing has been scanned to ship; scan the goods as they are packed", status=409)
    _event(
        conn,
        "transfer.shipped",
        {"report_id": new_report_id(), "transfer_id": ref, "staff": staff, "lines": lines},
        now,
    )
    return {"events": 1, "lines": len(lines)}


def _check_receipt_line(row: Any) -> None:
    sku, expected, qty, damaged, discrepancy, note, reported, _ = row
    remaining = max(0, (expected or 0) - reported)
    if (damaged or discrepancy) and not note.strip():
        raise TillError(f"{sku}: damaged goods or a discrepancy need a note saying what happened", status=422)
    if qty > remaining and discrepancy != "over":
        raise TillError(
            f"{sku}: {show_milli(qty)} scanned but only {show_milli(remaining)} is still expected; "
            "if more really arrived, mark the line 'over' with a note",
            status=409,
        )
    if discrepancy == "over" and qty <= remaining:
        raise TillError(
            f"{sku}: marked 'over' but not more than the {show_milli(remaining)} expected", status=409
        )
    if discrepancy == "short" and qty >= remaining:
        raise TillError(f"{sku}: marked 'short' but everything expected was scanned", status=409)
    if discrepancy == "damaged" and not damaged:
        raise TillError(f"{sku}: marked 'damaged': give the damaged quantity", status=422)


def _submit_receipt(  # noqa: PLR0917 - the parts of one submit, passed on from it
    conn: sqlite3.Connection, task_id: str, ref: str, staff: str, rows: list[Any], note: str, now: str
) -> tuple[dict[str, Any], str]:
    chosen = [r for r in rows if r[2] > 0 or r[4] is not None]
    if not chosen:
        raise TillError("nothing has been scanned in; scan the goods as they are unpacked", status=409)
    for row in chosen:
        _check_receipt_line(row)
    lines = [
        {"sku": r[0], "qty": show_milli(r[2]), "damaged": show_milli(r[3]), "discrepancy": r[4], "note": r[5]}
        for r in chosen
    ]
    body = {"report_id": new_report_id(), "transfer_id": ref, "staff": staff, "note": note, "lines": lines}
    _event(conn, "transfer.received", body, now)
    for sku, expected, qty, _, discrepancy, _, reported, _ in chosen:
        settled = int(discrepancy == "short" or reported + qty >= (expected or 0))
        conn.execute(
            "UPDATE stock_task_lines SET reported_milli = ?, settled = ?, qty_milli = 0, damaged_milli = 0,"
            " discrepancy = NULL, note = '', updated_at = ? WHERE task_id = ? AND sku = ?",
            (reported + qty, settled, now, task_id, sku),
        )
    left = conn.execute(
        "SELECT count(*) FROM stock_task_lines"
        " WHERE task_id = ? AND expected_milli IS NOT NULL AND settled = 0",
        (task_id,),
    ).fetchone()[0]
    return {"events": 1, "lines": len(lines)}, "open" if left else "done"

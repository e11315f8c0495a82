"""Stock work at the store: the hub's tasks (ship, receive, count), scanning them, sending the
results up, and the SKUs head office blocked from sale.

Tasks arrive as hub commands (`transfer.ship`, `transfer.receive`, `stocktake.count`, and
`transfer.cancel` / `stocktake.cancel` to withdraw one); each command runs once in a
journal transaction (`edge.commands`). Staff scan into a task; a submit writes the result
as outbox events in the same transaction that closes the task, so it reaches the hub
exactly once in effect even if the store is offline for days. Each report carries its own
id, which the hub keeps: a journal re-sent under a new epoch changes nothing there.

`stock.block` / `stock.unblock` keep a list of blocked SKUs (expired batch, recall); the
till refuses to add a blocked SKU to an order. A GS1 code whose expiry date (AI 17) is
before today in the store's time zone is refused at the till too.

Quantities are integer thousandths (`*_milli`) here and decimal strings on the wire.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from drivers import BarcodeError, parse_gs1
from edge.commands import CommandRunner, Handler
from edge.errors import TillError
from protocol import Command, format_qty, new_id

__all__ = [
    "MAX_LINES_PER_EVENT",
    "Gs1Scan",
    "milli_of",
    "new_report_id",
    "read_gs1",
    "refuse_blocked",
    "refuse_expired",
    "register_stock_commands",
    "show_milli",
    "store_today",
]

MAX_LINES_PER_EVENT = 500  # keeps one count event well inside the batch size limit
MAX_MILLI = 10**12
_AIM_GS1 = ("]C1", "]d2", "]Q3", "]e0", "]J1")
_GS = "\x1d"
M = TypeVar("M", bound=BaseModel)


def milli_of(value: Any, *, field: str = "qty") -> int:
    """A decimal quantity ("2", "0.352", 3) as thousandths; ValueError says what is wrong."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{field} must be a number as a string such as '2' or '0.352'")
    try:
        number = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise ValueError(f"{field} {value!r} is not a number") from None
    if not number.is_finite() or number < 0:
        raise ValueError(f"{field} must be a number of 0 or more, got {value!r}")
    if number != number.quantize(Decimal("0.001")):
        raise ValueError(f"{field} {value!r} has more than three decimals (0.001 is the smallest unit)")
    milli = int(number * 1000)
    if milli > MAX_MILLI:
        raise ValueError(f"{field} {value!r} is too large")
    return milli


def show_milli(milli: int) -> str:
    """Thousandths as the wire's decimal string (2000 -> "2", 352 -> "0.352")."""
    return format_qty(Fraction(milli, 1000))


# ----------------------------------------------------------------------------- GS1 and blocks


@dataclass(frozen=True)
class Gs1Scan:
    """What the till needs from a GS1 code: the GTIN to look up, expiry and batch if printed."""

    gtin: str
    expiry: date | None
    batch: str | None


def read_gs1(code: str) -> Gs1Scan | None:
    """The GS1 data of a scanned code, or None for a plain barcode (EAN-13, a scale label).

    GS1 is recognised by a scanner's AIM prefix (]C1 GS1-128, ]d2 DataMatrix, ]Q3 QR, ]e0
    DataBar), the bracketed "(01)…" form, a GS separator, or an "01" + GTIN-14 run of
    digits longer than a GTIN alone.
    """
    text = code.strip()
    aim = text.startswith(_AIM_GS1)
    if aim:
        text = text[3:]
    digits = text.isascii() and text.isdigit() and len(text) > 16 and text.startswith("01")
    if not (aim or text.startswith("(") or _GS in text or digits):
        return None
    try:
        message = parse_gs1(text)
    except BarcodeError as err:
        raise TillError(f"GS1 码无法识别 / unreadable GS1 code: {err}; scan it again", status=422) from err
    if message.gtin is None:
        raise TillError("GS1 码没有商品编码 (01) / the GS1 code carries no GTIN (01)", status=422)
    expiry = message.get("17")
    batch = message.get("10")
    return Gs1Scan(
        gtin=message.gtin,
        expiry=expiry.value if expiry is not None and isinstance(expiry.value, date) else None,
        batch=str(batch.value) if batch is not None else None,
    )


def store_today(timezone: str) -> date:
    """Today's date in the store's time zone (an expiry date is a calendar date there)."""
    return datetime.now(ZoneInfo(timezone)).date()


def refuse_expired(scan: Gs1Scan, today: date) -> None:
    """Refuse a GS1-coded item whose expiry date is before `today` (the store's date)."""
    if scan.expiry is not None and scan.expiry < today:
        batch = f"，批次 {scan.batch}" if scan.batch else ""
        raise TillError(
            f"已过期，不能销售（有效期至 {scan.expiry.isoformat()}{batch}）/ "
            f"expired on {scan.expiry.isoformat()}: this item cannot be sold; take it off the shelf",
            status=409,
        )


def refuse_blocked(conn: sqlite3.Connection, sku: str, name: str) -> None:
    """Refuse a SKU head office blocked from sale (inside the till's transaction)."""
    row = conn.execute("SELECT reason FROM blocked_skus WHERE sku = ?", (sku,)).fetchone()
    if row is not None:
        raise TillError(
            f"{name}（{sku}）已停售：{row[0]} / {sku} is blocked from sale by head office: {row[0]}; "
            "take it off the shelf",
            status=409,
        )


# ----------------------------------------------------------------------------- commands


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _TaskLine(_Body):
    sku: str = Field(min_length=1, max_length=64)
    qty: str = Field(min_length=1, max_length=20)


class _TransferTask(_Body):
    transfer_id: str = Field(min_length=1, max_length=36)
    from_store: str | None = Field(None, max_length=32)
    to_store: str | None = Field(None, max_length=32)
    note: str = Field("", max_length=500)
    lines: list[_TaskLine] = Field(min_length=1, max_length=500)


class _CountTask(_Body):
    stocktake_id: str = Field(min_length=1, max_length=36)
    scope: Literal["store", "category", "skus"]
    category: str | None = Field(None, max_length=400)
    skus: list[str] | None = Field(None, max_length=500)
    note: str = Field("", max_length=500)


class _Withdrawn(_Body):
    transfer_id: str | None = Field(None, max_length=36)
    stocktake_id: str | None = Field(None, max_length=36)
    reason: str = Field("", max_length=500)


class _Block(_Body):
    sku: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=1, max_length=200)


def _parse(model: type[M], command: Command) -> M:
    try:
        return model.model_validate(command.body)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ValueError(f"{where}: {first['msg']}") from err


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _add_task(
    conn: sqlite3.Connection, kind: str, ref: str, doc: dict[str, Any], lines: list[_TaskLine]
) -> str:
    task_id = f"{kind}:{ref}"
    now = _now()
    inserted = conn.execute(
        "INSERT INTO stock_tasks (id, kind, ref, doc, state, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, 'open', ?, ?) ON CONFLICT (id) DO NOTHING",
        (task_id, kind, ref, json.dumps(doc, ensure_ascii=False), now, now),
    ).rowcount
    if not inserted:
        return f"the store already has task {task_id}"
    for line in lines:
        conn.execute(
            "INSERT INTO stock_task_lines (task_id, sku, expected_milli, qty_milli, updated_at)"
            " VALUES (?, ?, ?, 0, ?)",
            (task_id, line.sku, milli_of(line.qty, field=f"lines.{line.sku}.qty"), now),
        )
    return f"task {task_id} is on the store's list"


def _ship(conn: sqlite3.Connection, command: Command) -> str:
    task = _parse(_TransferTask, command)
    return _add_task(conn, "ship", task.transfer_id, task.model_dump(exclude={"lines"}), task.lines)


def _receive(conn: sqlite3.Connection, command: Command) -> str:
    task = _parse(_TransferTask, command)
    return _add_task(conn, "receive", task.transfer_id, task.model_dump(exclude={"lines"}), task.lines)


def _count(conn: sqlite3.Connection, command: Command) -> str:
    task = _parse(_CountTask, command)
    return _add_task(conn, "count", task.stocktake_id, task.model_dump(), [])


def _withdraw(kind: str) -> Handler:
    def handle(conn: sqlite3.Connection, command: Command) -> str:
        body = _parse(_Withdrawn, command)
        ref = body.transfer_id if kind == "ship" else body.stocktake_id
        if not ref:
            raise ValueError(f"{'transfer_id' if kind == 'ship' else 'stocktake_id'} is missing")
        changed = conn.execute(
            "UPDATE stock_tasks SET state = 'cancelled', updated_at = ? WHERE id = ? AND state = 'open'",
            (_now(), f"{kind}:{ref}"),
        ).rowcount
        return f"task {kind}:{ref} withdrawn" if changed else f"no open task {kind}:{ref} here"

    return handle


def _block(conn: sqlite3.Connection, command: Command) -> str:
    body = _parse(_Block, command)
    conn.execute(
        "INSERT INTO blocked_skus (sku, reason, since) VALUES (?, ?, ?)"
        " ON CONFLICT (sku) DO UPDATE SET reason = excluded.reason, since = excluded.since",
        (body.sku, body.reason, _now()),
    )
    return f"{body.sku} is blocked from sale"


def _unblock(conn: sqlite3.Connection, command: Command) -> str:
    body = _parse(_Block, command)
    gone = conn.execute("DELETE FROM blocked_skus WHERE sku = ?", (body.sku,)).rowcount
    return f"{body.sku} is for sale again" if gone else f"{body.sku} was not blocked"


def register_stock_commands(runner: CommandRunner) -> None:
    """Teach the command runner the stock commands."""
    runner.register("transfer.ship", _ship)
    runner.register("transfer.receive", _receive)
    runner.register("transfer.cancel", _withdraw("ship"))
    runner.register("stocktake.count", _count)
    runner.register("stocktake.cancel", _withdraw("count"))
    runner.register("stock.block", _block)
    runner.register("stock.unblock", _unblock)


def new_report_id() -> str:
    """A report's id, made at the store; the hub applies each id once."""
    return str(new_id())

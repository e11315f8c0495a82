"""Receiving a purchase order at its store: partial deliveries, lot and expiry per line, cost.

A receipt carries the caller's id. The same id again with the same lines is a retry and
returns the order as it is, writing nothing; with other lines it is refused. Stock goes in
through `hub.stock.record_movements` as one `receipt` movement per SKU keyed (store, sku,
"receipt", "purchase", order id, receipt id), so it is counted exactly once; each line
(one lot) becomes a `stock_batches` row.

Moving-average cost per store and SKU, per whole unit in fen, after each receipt:
`new = (old × max(on_hand_before, 0) + Σ cost_i × qty_i) / (max(on_hand_before, 0) + Σ qty_i)`,
rounded half up to the fen once (`protocol.money.round_half_up`). Stock below zero has no
cost to average with, so it counts as none; a SKU never costed takes the receipt's cost.
`on_hand_before` is read after the receipt's level upsert, which on PostgreSQL holds the
level row's lock to commit: concurrent receipts and sales of the SKU wait, so the average
always uses the on-hand it really replaced.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from hub.db import AsyncSession
from hub.errors import NotFound
from hub.purchasing import PoView, load_po, step_po
from hub.purchasing_tables import PoState, PurchaseReceipt, StockBatch, StockCost
from hub.stock import Movement, StockError, format_milli, level, record_movements
from hub.stock_tables import MovementKind
from protocol.money import round_half_up

__all__ = ["ReceiptLine", "average_cost", "cost_of", "receive_po"]

_MAX_RECEIPT_ID = 64
_RECEIVABLE = (PoState.SENT, PoState.PARTIALLY_RECEIVED)


@dataclass(frozen=True)
class ReceiptLine:
    """One lot of one SKU that came in; `unit_cost_fen` None takes the order line's cost."""

    sku: str
    qty_milli: int
    lot: str = ""
    expires_on: date | None = None
    unit_cost_fen: int | None = None

    def as_json(self, cost: int) -> dict[str, Any]:
        return {
            "sku": self.sku,
            "qty": format_milli(self.qty_milli),
            "lot": self.lot,
            "expires_on": self.expires_on.isoformat() if self.expires_on else None,
            "unit_cost_fen": cost,
        }


def average_cost(old_fen: int | None, on_hand_before: int, lots: list[tuple[int, int]]) -> int:
    """The moving average after receiving `lots` [(qty_milli, unit_cost_fen)] onto `on_hand_before`."""
    received = sum(q for q, _ in lots)
    value = sum(q * c for q, c in lots)
    base = max(on_hand_before, 0) if old_fen is not None else 0
    return round_half_up((old_fen or 0) * base + value, base + received)


async def _replay(session: AsyncSession, receipt_id: str, po_id: str, lines: list[dict[str, Any]]) -> bool:
    """True if this receipt was recorded before with these lines; `StockError` if with others."""
    seen = await session.get(PurchaseReceipt, receipt_id, populate_existing=True)
    if seen is None:
        return False
    if seen.po_id != po_id or seen.lines != lines:
        raise StockError(
            f"receipt id {receipt_id!r} was already used for another delivery; give each delivery a new id"
        )
    return True


def _check(view: PoView, items: list[ReceiptLine], today: date) -> dict[str, list[tuple[ReceiptLine, int]]]:
    """Lines by SKU with their cost; `StockError` saying what is wrong (nothing is written yet)."""
    lines = {line.sku: line for line in view.lines}
    by_sku: dict[str, list[tuple[ReceiptLine, int]]] = {}
    lots: set[tuple[str, str]] = set()
    for item in items:
        line = lines.get(item.sku)
        if line is None:
            raise StockError(f"sku {item.sku} is not on purchase order {view.po.id}")
        if item.qty_milli <= 0:
            raise StockError(f"sku {item.sku}: the quantity received must be greater than 0")
        if (item.sku, item.lot) in lots:
            raise StockError(f"sku {item.sku}: lot {item.lot!r} appears twice; give each lot once")
        lots.add((item.sku, item.lot))
        if item.expires_on is not None and item.expires_on < today:
            raise StockError(
                f"sku {item.sku}: lot {item.lot!r} expired on {item.expires_on}; refuse it at the door"
            )
        cost = line.unit_cost_fen if item.unit_cost_fen is None else item.unit_cost_fen
        if not 0 <= cost <= 10**12:
            raise StockError(f"sku {item.sku}: unit_cost_fen must be 0 or more")
        by_sku.setdefault(item.sku, []).append((item, cost))
    for sku, got in by_sku.items():
        total, line = sum(i.qty_milli for i, _ in got), lines[sku]
        open_milli = line.qty_milli - line.received_milli
        if total > open_milli:
            raise StockError(
                f"sku {sku}: {format_milli(total)} received but only {format_milli(open_milli)} is still "
                f"open on the order (ordered {format_milli(line.qty_milli)})"
            )
    return by_sku


def _as_json(view: PoView, items: list[ReceiptLine]) -> list[dict[str, Any]]:
    """The receipt's lines as stored (and compared on a retry), costs filled in from the order."""
    costs = {line.sku: line.unit_cost_fen for line in view.lines}
    return [i.as_json(costs.get(i.sku, 0) if i.unit_cost_fen is None else i.unit_cost_fen) for i in items]


def _insert(session: AsyncSession) -> Any:
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    return pg_insert if dialect == "postgresql" else sqlite_insert


async def receive_po(
    session: AsyncSession,
    po_id: str,
    receipt_id: str,
    items: list[ReceiptLine],
    *,
    actor: str,
    today: date,
    note: str = "",
) -> tuple[PoView, bool]:
    """Take a delivery in; returns the order and False if it was a retry that changed nothing."""
    if not receipt_id.strip() or len(receipt_id) > _MAX_RECEIPT_ID or not receipt_id.isprintable():
        raise StockError(f"receipt_id must be 1-{_MAX_RECEIPT_ID} printable characters")
    if not items:
        raise StockError("a receipt needs at least one line")
    view = await load_po(session, po_id)
    if await _replay(session, receipt_id, po_id, _as_json(view, items)):
        return view, False
    po = await step_po(session, po_id, _RECEIVABLE, "received")  # holds the order's row lock (PostgreSQL)
    view = await load_po(session, po_id)  # what a concurrent receipt left, after its commit
    if await _replay(session, receipt_id, po_id, _as_json(view, items)):
        return view, False
    by_sku = _check(view, items, today)
    as_json = _as_json(view, items)
    now = datetime.now(UTC)
    moves = [
        Movement(
            po.store,
            sku,
            MovementKind.RECEIPT,
            sum(i.qty_milli for i, _ in got),
            "purchase",
            po_id,
            actor,
            line_ref=receipt_id,
            note=f"from {view.supplier_name}"[:500],
        )
        for sku, got in sorted(by_sku.items())
    ]
    inserted = await record_movements(session, moves, now=now)
    if len(inserted) != len(moves):
        raise StockError(f"receipt {receipt_id!r} had already moved stock; nothing was added")
    lines = {line.sku: line for line in view.lines}
    costs = []
    for sku, got in sorted(by_sku.items()):
        received = sum(i.qty_milli for i, _ in got)
        before = (await level(session, po.store, sku)).on_hand_milli - received
        old = await session.scalar(
            select(StockCost.avg_cost_fen).where(StockCost.store == po.store, StockCost.sku == sku)
        )
        costs.append(
            {
                "store": po.store,
                "sku": sku,
                "avg_cost_fen": average_cost(old, before, [(i.qty_milli, c) for i, c in got]),
                "updated_at": now,
            }
        )
        lines[sku].received_milli += received
        for item, cost in got:
            session.add(
                StockBatch(
                    store=po.store,
                    sku=sku,
                    lot=item.lot[:64],
                    expires_on=item.expires_on,
                    qty_milli=item.qty_milli,
                    unit_cost_fen=cost,
                    po_id=po_id,
                    receipt_id=receipt_id,
                    received_at=now,
                )
            )
    stmt = _insert(session)(StockCost).values(costs)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["store", "sku"],
            set_={"avg_cost_fen": stmt.excluded.avg_cost_fen, "updated_at": stmt.excluded.updated_at},
        )
    )
    session.add(
        PurchaseReceipt(
            id=receipt_id,
            po_id=po_id,
            store=po.store,
            lines=as_json,
            actor=actor,
            note=note[:500],
            created_at=now,
        )
    )
    if all(line.received_milli >= line.qty_milli for line in view.lines):
        po.state, po.received_at = PoState.RECEIVED.value, now
    else:
        po.state = PoState.PARTIALLY_RECEIVED.value
    await session.flush()
    return await load_po(session, po_id), True


async def cost_of(session: AsyncSession, store: str, sku: str) -> int:
    """The moving-average cost of a SKU at a store; `NotFound` if it was never received there."""
    found = await session.scalar(
        select(StockCost.avg_cost_fen).where(StockCost.store == store, StockCost.sku == sku)
    )
    if found is None:
        raise NotFound(f"'{sku}' was never received at '{store}': it has no cost yet")
    return int(found)

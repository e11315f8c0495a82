"""Stock from a store's sales: a paid order's lines leave the shelf, a refund's lines come back.

A sale listener (`hub.sales_hooks`): ingest calls it once per order or refund it inserts
for the first time, in the batch's transaction, so a sale made offline and synced days
later, or delivered three times, moves stock exactly once. The ledger's source key
(order id + line id, refund id + line id) makes even a second call a no-op.

- A paid order: one `sale` movement (negative) per line. `refunded_qty` on the order
  document is ignored: every refund arrives as its own `order.refunded` event.
- A voided order never took stock: nothing happens.
- A refund: one `refund` movement (positive) per refund line, its SKU found through the
  order the hub stored. A refund that arrives before its order waits in
  `stock_pending_refunds` and is applied when the order comes.

Nothing here raises on a malformed document (a listener that raises rolls the batch back
and the store re-sends it forever): a line without a usable SKU or quantity is skipped
and kept as a `stock_flags` row for a person.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select, text

from hub.db import AsyncSession
from hub.models import HubOrder
from hub.stock import MAX_QTY_MILLI, Movement, record_movements, to_milli
from hub.stock_tables import MovementKind, StockFlag, StockFlagKind, StockPendingRefund
from protocol import Quantity

__all__ = ["stock_from_sales"]

log = logging.getLogger(__name__)

_QUANTITY: TypeAdapter[Fraction] = TypeAdapter(Quantity)


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _flag(
    session: AsyncSession, store: str, kind: StockFlagKind, source: tuple[str, str], note: str, *, sku: Any
) -> None:
    log.warning("store %s: stock %s in %s %s: %s", store, kind.value, source[0], source[1], note)
    session.add(
        StockFlag(
            kind=kind.value,
            store=store,
            sku=sku[:64] if isinstance(sku, str) else None,
            source_type=source[0],
            source_id=source[1][:64],
            note=note[:500],
            resolved=False,
            created_at=datetime.now(UTC),
        )
    )


def _sku_and_milli(line: dict[str, Any]) -> tuple[str, int] | str:
    """The line's SKU and quantity in thousandths, or why they cannot be used."""
    sku = line.get("sku")
    if not isinstance(sku, str) or not sku.strip() or len(sku) > 64:
        return f"line {str(line.get('line_id'))[:40]!r} has no usable sku ({str(sku)[:80]!r})"
    try:
        qty = _QUANTITY.validate_python(line.get("qty"))
    except ValidationError:
        qty_text = str(line.get("qty"))[:40]
        return f"line {str(line.get('line_id'))[:40]!r} ({sku}) has no usable qty ({qty_text!r})"
    milli = to_milli(qty)
    if not 0 < milli <= MAX_QTY_MILLI:
        return f"line {str(line.get('line_id'))[:40]!r} ({sku}) has a qty below 0.001 or too large: {qty}"
    return sku, milli


async def _lock_orders(session: AsyncSession, order_ids: list[str]) -> None:
    """Serialise orders' and their refunds' stock work across hub instances.

    A refund can reach one hub instance while its order is being ingested by another; each
    side takes its order's lock before looking for the other, so one of them always sees
    the other's rows. One statement for the whole batch, keys in sorted order so two
    batches never wait on each other crosswise. SQLite has a single writer already.
    """
    if order_ids and session.bind is not None and session.bind.dialect.name == "postgresql":
        await session.execute(
            text(
                "SELECT pg_advisory_xact_lock(hashtextextended('stock:' || k, 0))"
                " FROM unnest(CAST(:keys AS text[])) AS k"
            ),
            {"keys": sorted(order_ids)},
        )


def _sale(session: AsyncSession, store: str, doc: dict[str, Any]) -> list[Movement]:
    order_id = str(doc.get("id"))
    source = ("order", order_id)
    moves = []
    for index, raw in enumerate(_list(doc.get("lines"))):
        line = _obj(raw)
        found = _sku_and_milli(line)
        if isinstance(found, str):
            _flag(session, store, StockFlagKind.UNREADABLE_LINE, source, found, sku=line.get("sku"))
            continue
        sku, milli = found
        line_id = line.get("line_id")
        line_ref = str(line_id) if isinstance(line_id, str | int) else f"#{index}"
        moves.append(
            Movement(store, sku, MovementKind.SALE, -milli, "order", order_id, f"sync:{store}", line_ref)
        )
    return moves


def _apply_refund(
    session: AsyncSession, store: str, order: dict[str, Any], body: dict[str, Any]
) -> list[Movement]:
    refund = _obj(body.get("refund"))
    refund_id = str(refund.get("id"))
    source = ("refund", refund_id)
    if order.get("status") != "paid":
        note = f"refund of order {body.get('order_id')}, which is {order.get('status')!r}, not paid"
        _flag(session, store, StockFlagKind.UNKNOWN_REFUND_LINE, source, note, sku=None)
        return []
    skus = {str(x.get("line_id")): x.get("sku") for x in map(_obj, _list(order.get("lines")))}
    moves = []
    for raw in _list(refund.get("lines")):
        line = _obj(raw)
        line_id = str(line.get("line_id"))
        if line_id not in skus:
            note = f"refund line {line_id[:40]!r} is no line of order {body.get('order_id')}"
            _flag(session, store, StockFlagKind.UNKNOWN_REFUND_LINE, source, note, sku=None)
            continue
        found = _sku_and_milli({"line_id": line_id, "sku": skus[line_id], "qty": line.get("qty")})
        if isinstance(found, str):
            _flag(session, store, StockFlagKind.UNREADABLE_LINE, source, found, sku=skus[line_id])
            continue
        sku, milli = found
        reason = str(refund.get("reason") or "")[:200]
        moves.append(
            Movement(
                store, sku, MovementKind.REFUND, milli, "refund", refund_id, f"sync:{store}", line_id, reason
            )
        )
    return moves


async def _refund(session: AsyncSession, store: str, body: dict[str, Any]) -> list[Movement]:
    """The refund's movements, or none yet if its order has not arrived (it waits for it)."""
    order_id = str(body.get("order_id"))
    order = await session.get(HubOrder, order_id)
    if order is None:
        await _lock_orders(session, [order_id])
        order = await session.scalar(
            select(HubOrder).where(HubOrder.id == order_id).execution_options(populate_existing=True)
        )
    if order is not None:
        return _apply_refund(session, store, order.doc, body)
    refund_id = str(_obj(body.get("refund")).get("id"))
    if await session.get(StockPendingRefund, refund_id[:64]) is None:
        session.add(
            StockPendingRefund(
                refund_id=refund_id[:64],
                order_id=order_id[:64],
                store=store,
                body=body,
                received_at=datetime.now(UTC),
            )
        )
    return []


async def stock_from_sales(
    session: AsyncSession, store: str, orders: list[dict[str, Any]], refunds: list[dict[str, Any]]
) -> None:
    """Sale listener: the batch's movements are collected, then written in a few statements.

    Orders first, so a refund in the same batch finds its order's lines; refunds that
    arrived before their order (pending) are applied with it.
    """
    docs = {str(doc.get("id")): doc for doc in map(_obj, orders)}
    moves: list[Movement] = []
    for doc in docs.values():
        if doc.get("status") == "paid":  # a voided order never left the shelf
            moves += _sale(session, store, doc)
    await _lock_orders(session, list(docs))
    if docs:
        pending = (
            await session.scalars(
                select(StockPendingRefund).where(StockPendingRefund.order_id.in_(list(docs)))
            )
        ).all()
        for row in pending:
            moves += _apply_refund(session, row.store, docs[row.order_id], row.body)
            await session.delete(row)
    for body in refunds:
        moves += await _refund(session, store, _obj(body))
    await record_movements(session, moves)

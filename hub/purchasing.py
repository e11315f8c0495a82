"""Suppliers, their quotes and rating, and purchase orders: draft → sent → partially_received →
received, or cancelled.

State changes are conditional UPDATEs (`… WHERE id = :id AND state IN (…)`), as transfers do:
of two concurrent steps one wins, the other is refused with where the order is now. Orders
are generated from a store's replenishment list, one per supplier, each SKU going to the
supplier with the lowest valid quote. Receipts are in `hub.purchasing_receipts`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select

from hub.db import AsyncSession
from hub.errors import NotFound
from hub.models import Store
from hub.purchasing_tables import (
    PoState,
    PurchaseOrder,
    PurchaseOrderLine,
    PurchaseReceipt,
    Supplier,
    SupplierQuote,
)
from hub.replenishment import replenishment_list
from hub.stock import MAX_QTY_MILLI, StockError, check_sku, step_document
from protocol.ids import new_id

__all__ = [
    "MAX_LINES",
    "Generated",
    "PoLineIn",
    "PoView",
    "QuoteIn",
    "Rating",
    "SupplierIn",
    "add_quote",
    "best_quotes",
    "cancel_po",
    "create_po",
    "create_supplier",
    "generate_orders",
    "list_pos",
    "list_quotes",
    "list_suppliers",
    "load_po",
    "load_supplier",
    "rating",
    "send_po",
    "step_po",
    "update_supplier",
]

MAX_LINES = 500
_MAX_FEN = 10**12


@dataclass(frozen=True)
class SupplierIn:
    """A supplier as head office enters it."""

    name: str
    licence_no: str = ""
    licence_expires_on: date | None = None
    contact_name: str = ""
    phone: str = ""
    email: str = ""
    lead_time_days: int = 1
    active: bool = True


def _check_supplier(data: SupplierIn) -> None:
    if not data.name.strip():
        raise StockError("a supplier needs a name")
    if not 0 <= data.lead_time_days <= 366:
        raise StockError("lead_time_days must be from 0 to 366")


async def create_supplier(session: AsyncSession, data: SupplierIn) -> Supplier:
    """A new supplier; the name must be new."""
    _check_supplier(data)
    name = data.name.strip()
    if await session.scalar(select(Supplier.id).where(Supplier.name == name)) is not None:
        raise StockError(f"a supplier named {name!r} exists already")
    now = datetime.now(UTC)
    row = Supplier(id=str(new_id()), created_at=now, updated_at=now, **{**data.__dict__, "name": name})
    session.add(row)
    await session.flush()
    return row


async def _supplier(session: AsyncSession, supplier_id: str) -> Supplier:
    row = await session.get(Supplier, supplier_id, populate_existing=True)
    if row is None:
        raise NotFound(f"no supplier {supplier_id}")
    return row


async def load_supplier(session: AsyncSession, supplier_id: str) -> Supplier:
    """One supplier; `NotFound` if there is none."""
    return await _supplier(session, supplier_id)


async def update_supplier(session: AsyncSession, supplier_id: str, data: SupplierIn) -> Supplier:
    """Replace a supplier's details."""
    _check_supplier(data)
    row = await _supplier(session, supplier_id)
    name = data.name.strip()
    clash = await session.scalar(select(Supplier.id).where(Supplier.name == name, Supplier.id != supplier_id))
    if clash is not None:
        raise StockError(f"a supplier named {name!r} exists already")
    for key, value in {**data.__dict__, "name": name}.items():
        setattr(row, key, value)
    row.updated_at = datetime.now(UTC)
    await session.flush()
    return row


async def list_suppliers(
    session: AsyncSession, *, active: bool | None = None, limit: int = 100, offset: int = 0
) -> tuple[list[Supplier], bool]:
    """Suppliers by name, and whether more follow."""
    query = select(Supplier)
    if active is not None:
        query = query.where(Supplier.active.is_(active))
    rows = (await session.scalars(query.order_by(Supplier.name).limit(limit + 1).offset(offset))).all()
    return list(rows[:limit]), len(rows) > limit


@dataclass(frozen=True)
class QuoteIn:
    """A price per whole unit for one SKU, valid from one day to another (both included)."""

    sku: str
    unit_cost_fen: int
    valid_from: date
    valid_to: date
    min_qty_milli: int = 0


async def add_quote(session: AsyncSession, supplier_id: str, quote: QuoteIn, *, actor: str) -> SupplierQuote:
    """Record a supplier's quote (older quotes stay: the best valid one is chosen each time)."""
    check_sku(quote.sku)
    if not 0 <= quote.unit_cost_fen <= _MAX_FEN:
        raise StockError("unit_cost_fen must be 0 or more")
    if quote.valid_to < quote.valid_from:
        raise StockError("a quote's valid_to is before its valid_from")
    if not 0 <= quote.min_qty_milli <= MAX_QTY_MILLI:
        raise StockError("min_qty must be 0 or more")
    await _supplier(session, supplier_id)
    row = SupplierQuote(
        supplier_id=supplier_id,
        created_by=actor,
        created_at=datetime.now(UTC),
        **quote.__dict__,
    )
    session.add(row)
    await session.flush()
    return row


async def list_quotes(
    session: AsyncSession,
    *,
    supplier_id: str | None = None,
    sku: str | None = None,
    valid_on: date | None = None,
) -> list[SupplierQuote]:
    """Quotes by SKU and price (at most 1000)."""
    query = select(SupplierQuote)
    if supplier_id is not None:
        query = query.where(SupplierQuote.supplier_id == supplier_id)
    if sku is not None:
        query = query.where(SupplierQuote.sku == sku)
    if valid_on is not None:
        query = query.where(SupplierQuote.valid_from <= valid_on, SupplierQuote.valid_to >= valid_on)
    order = (SupplierQuote.sku, SupplierQuote.unit_cost_fen, SupplierQuote.id)
    return list((await session.scalars(query.order_by(*order).limit(1000))).all())


async def best_quotes(
    session: AsyncSession, wanted: dict[str, int], today: date
) -> dict[str, tuple[SupplierQuote, Supplier]]:
    """Per SKU, the cheapest quote valid `today` from an active supplier whose licence has not
    expired and whose minimum the quantity meets; ties go to the shorter lead time, then the name."""
    if not wanted:
        return {}
    rows = (
        await session.execute(
            select(SupplierQuote, Supplier)
            .join(Supplier, Supplier.id == SupplierQuote.supplier_id)
            .where(
                SupplierQuote.sku.in_(sorted(wanted)),
                SupplierQuote.valid_from <= today,
                SupplierQuote.valid_to >= today,
                Supplier.active.is_(True),
                (Supplier.licence_expires_on.is_(None)) | (Supplier.licence_expires_on >= today),
            )
        )
    ).all()
    best: dict[str, tuple[SupplierQuote, Supplier]] = {}
    for quote, supplier in rows:
        if quote.min_qty_milli > wanted[quote.sku]:
            continue
        key = (quote.unit_cost_fen, supplier.lead_time_days, supplier.name, quote.id)
        held = best.get(quote.sku)
        if held is None or key < (held[0].unit_cost_fen, held[1].lead_time_days, held[1].name, held[0].id):
            best[quote.sku] = (quote, supplier)
    return best


@dataclass(frozen=True)
class Rating:
    """A supplier's record over its finished orders: on time and fill rate, in basis points."""

    orders: int
    on_time_bp: int | None  # of orders with an expected date: last delivery on or before it
    fill_rate_bp: int | None  # received / ordered


async def rating(session: AsyncSession, supplier_id: str) -> Rating:
    """On-time rate and fill rate over the supplier's received orders and those cancelled after a delivery."""
    await _supplier(session, supplier_id)
    last = (
        select(PurchaseReceipt.po_id, func.max(PurchaseReceipt.created_at).label("last_at"))
        .group_by(PurchaseReceipt.po_id)
        .subquery()
    )
    orders = (
        await session.execute(
            select(PurchaseOrder.id, PurchaseOrder.expected_on, last.c.last_at)
            .join(last, last.c.po_id == PurchaseOrder.id)
            .where(
                PurchaseOrder.supplier_id == supplier_id,
                PurchaseOrder.state.in_([PoState.RECEIVED.value, PoState.CANCELLED.value]),
            )
        )
    ).all()
    if not orders:
        return Rating(0, None, None)
    dated = [(expected, last_at) for _, expected, last_at in orders if expected is not None]
    on_time = sum(1 for expected, last_at in dated if last_at.date() <= expected)
    ordered, received = (
        await session.execute(
            select(func.sum(PurchaseOrderLine.qty_milli), func.sum(PurchaseOrderLine.received_milli)).where(
                PurchaseOrderLine.po_id.in_([po_id for po_id, _, _ in orders])
            )
        )
    ).one()
    return Rating(
        len(orders),
        on_time * 10_000 // len(dated) if dated else None,
        int(received) * 10_000 // int(ordered) if ordered else None,
    )


@dataclass(frozen=True)
class PoLineIn:
    """A SKU to order, how much, and at what cost per whole unit."""

    sku: str
    qty_milli: int
    unit_cost_fen: int


@dataclass
class PoView:
    """A purchase order with its lines and receipts."""

    po: PurchaseOrder
    lines: list[PurchaseOrderLine]
    receipts: list[PurchaseReceipt] = field(default_factory=list)
    supplier_name: str = ""


def _now() -> datetime:
    return datetime.now(UTC)


async def create_po(
    session: AsyncSession,
    store: str,
    supplier_id: str,
    lines: list[PoLineIn],
    *,
    actor: str,
    expected_on: date | None = None,
    note: str = "",
) -> PoView:
    """A new purchase order in `draft`."""
    if not lines:
        raise StockError("a purchase order needs at least one line")
    if len(lines) > MAX_LINES:
        raise StockError(f"a purchase order has at most {MAX_LINES} lines; split it")
    seen: set[str] = set()
    for line in lines:
        check_sku(line.sku)
        if line.sku in seen:
            raise StockError(f"sku {line.sku} appears twice; give each SKU once with its total quantity")
        seen.add(line.sku)
        if not 0 < line.qty_milli <= MAX_QTY_MILLI:
            raise StockError(f"sku {line.sku}: the quantity must be greater than 0")
        if not 0 <= line.unit_cost_fen <= _MAX_FEN:
            raise StockError(f"sku {line.sku}: unit_cost_fen must be 0 or more")
    if await session.get(Store, store) is None:
        raise NotFound(f"unknown store '{store}'")
    supplier = await _supplier(session, supplier_id)
    if not supplier.active:
        raise StockError(f"supplier {supplier.name!r} is not active")
    now = _now()
    po = PurchaseOrder(
        id=str(new_id()),
        supplier_id=supplier_id,
        store=store,
        state=PoState.DRAFT.value,
        version=1,
        note=note[:500],
        expected_on=expected_on,
        created_by=actor,
        created_at=now,
        updated_at=now,
    )
    session.add(po)
    rows = [
        PurchaseOrderLine(
            po_id=po.id, sku=x.sku, qty_milli=x.qty_milli, unit_cost_fen=x.unit_cost_fen, received_milli=0
        )
        for x in lines
    ]
    session.add_all(rows)
    await session.flush()
    return PoView(po, sorted(rows, key=lambda r: r.sku), [], supplier.name)


@dataclass(frozen=True)
class Generated:
    """Orders made from a replenishment list, and the SKUs no valid quote covers."""

    orders: list[PoView]
    unquoted: list[tuple[str, int]]  # (sku, qty to buy)


async def generate_orders(
    session: AsyncSession, store: str, *, actor: str, today: date, now: datetime | None = None
) -> Generated:
    """Draft orders for what the store's list says to buy, one per supplier, by best valid quote."""
    lines = await replenishment_list(session, store, now=now)
    wanted = {line.sku: line.buy_milli for line in lines if line.buy_milli > 0}
    best = await best_quotes(session, wanted, today)
    by_supplier: dict[str, list[PoLineIn]] = {}
    suppliers: dict[str, Supplier] = {}
    for sku, qty in sorted(wanted.items()):
        if sku in best:
            quote, supplier = best[sku]
            suppliers[supplier.id] = supplier
            by_supplier.setdefault(supplier.id, []).append(PoLineIn(sku, qty, quote.unit_cost_fen))
    orders = []
    for supplier_id, po_lines in sorted(by_supplier.items(), key=lambda kv: suppliers[kv[0]].name):
        for start in range(0, len(po_lines), MAX_LINES):
            expected = today + timedelta(days=suppliers[supplier_id].lead_time_days)
            orders.append(
                await create_po(
                    session,
                    store,
                    supplier_id,
                    po_lines[start : start + MAX_LINES],
                    actor=actor,
                    expected_on=expected,
                    note="generated from the replenishment list",
                )
            )
    return Generated(orders, [(sku, qty) for sku, qty in sorted(wanted.items()) if sku not in best])


async def step_po(
    session: AsyncSession, po_id: str, allowed: tuple[PoState, ...], verb: str, **values: Any
) -> PurchaseOrder:
    """Move the order on if it is in one of `allowed` states, else refuse saying where it is."""
    return await step_document(
        session, PurchaseOrder, po_id, allowed, verb=verb, label="purchase order", **values
    )


async def send_po(session: AsyncSession, po_id: str, *, actor: str) -> PoView:
    """The order goes to the supplier (exported or printed); from now on it can be received."""
    po = await load_po(session, po_id)
    supplier = await _supplier(session, po.po.supplier_id)
    today = datetime.now(UTC).date()
    if supplier.licence_expires_on is not None and supplier.licence_expires_on < today:
        raise StockError(
            f"supplier {supplier.name!r}'s licence expired on {supplier.licence_expires_on}; "
            "renew it before sending orders"
        )
    await step_po(
        session, po_id, (PoState.DRAFT,), "sent", state=PoState.SENT.value, sent_by=actor, sent_at=_now()
    )
    return await load_po(session, po_id)


async def cancel_po(session: AsyncSession, po_id: str, *, actor: str, reason: str) -> PoView:
    """Cancel an order not yet fully received; what was received stays, the rest is no longer expected."""
    if not reason.strip():
        raise StockError("cancelling a purchase order needs a reason")
    await step_po(
        session,
        po_id,
        (PoState.DRAFT, PoState.SENT, PoState.PARTIALLY_RECEIVED),
        "cancelled",
        state=PoState.CANCELLED.value,
        cancelled_by=actor,
        cancelled_at=_now(),
        reason=reason.strip()[:500],
    )
    return await load_po(session, po_id)


async def load_po(session: AsyncSession, po_id: str) -> PoView:
    """A purchase order with its lines and receipts; `NotFound` if there is none."""
    po = await session.get(PurchaseOrder, po_id, populate_existing=True)
    if po is None:
        raise NotFound(f"no purchase order {po_id}")
    lines = (
        await session.scalars(
            select(PurchaseOrderLine)
            .where(PurchaseOrderLine.po_id == po_id)
            .order_by(PurchaseOrderLine.sku)
            .execution_options(populate_existing=True)
        )
    ).all()
    receipts = (
        await session.scalars(
            select(PurchaseReceipt).where(PurchaseReceipt.po_id == po_id).order_by(PurchaseReceipt.created_at)
        )
    ).all()
    name = await session.scalar(select(Supplier.name).where(Supplier.id == po.supplier_id)) or ""
    return PoView(po, list(lines), list(receipts), name)


async def list_pos(
    session: AsyncSession,
    *,
    scope: frozenset[str] | None,
    store: str | None = None,
    state: PoState | None = None,
    supplier_id: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[PurchaseOrder], bool]:
    """Purchase orders of the stores in scope, newest first, and whether more follow."""
    query = select(PurchaseOrder)
    if scope is not None:
        query = query.where(PurchaseOrder.store.in_(sorted(scope)))
    if store is not None:
        query = query.where(PurchaseOrder.store == store)
    if state is not None:
        query = query.where(PurchaseOrder.state == state.value)
    if supplier_id is not None:
        query = query.where(PurchaseOrder.supplier_id == supplier_id)
    order = (case((PurchaseOrder.state == PoState.DRAFT.value, 0), else_=1), PurchaseOrder.id.desc())
    rows = (await session.scalars(query.order_by(*order).limit(limit + 1).offset(offset))).all()
    return list(rows[:limit]), len(rows) > limit

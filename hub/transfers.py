"""Transfers between stores (调拨): draft → approved → shipped → (partially_received →) received,
or cancelled before shipping.

Every step starts with a conditional UPDATE of the transfer's state (`... WHERE id = :id
AND state IN (...)`): of two concurrent "ship" calls one matches and ships, the other finds
the new state and is refused. On PostgreSQL that UPDATE also holds the transfer's row lock
to the end of the transaction, so two receipts of one transfer are counted one after the
other. Refusals raise `StockError` before or instead of any write, and the caller's
transaction rolls back whatever the step did, so nothing is ever half-written.

Stock moves through the ledger (`hub.stock.record_movement`), keyed by transfer id and
step, so a step can never move stock twice:
- ship: `transfer_out` (on-hand -q) at the source, `transit_in` (in-transit +q) at the
  destination;
- receive: `transfer_in` (on-hand +arrived, in-transit -arrived) at the destination, then
  `waste` for what arrived damaged;
- close: `transit_lost` (in-transit -q) for what never arrived.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from hub.commands import add_command
from hub.db import AsyncSession
from hub.errors import NotFound
from hub.models import Store
from hub.stock import StockError, check_sku, format_milli, record_movement, step_document
from hub.stock_tables import MovementKind
from hub.transfers_tables import (
    DiscrepancyKind,
    Transfer,
    TransferDiscrepancy,
    TransferLine,
    TransferReceipt,
    TransferState,
)
from hub.transfers_views import TransferView, load_transfer
from protocol.ids import new_id

__all__ = [
    "LineIn",
    "ReceiptLineIn",
    "approve",
    "cancel",
    "close",
    "create_transfer",
    "receive",
    "ship",
]

MAX_LINES = 500
_IN_TRANSIT = (TransferState.SHIPPED, TransferState.PARTIALLY_RECEIVED)


@dataclass(frozen=True)
class LineIn:
    """A SKU and how much of it to send."""

    sku: str
    qty_milli: int


@dataclass(frozen=True)
class ReceiptLineIn:
    """What came through the door for one SKU: `qty_milli` counts everything, damaged included.

    Less than is in transit, without a discrepancy, is a partial receipt (the rest stays in
    transit). `short` says the rest will not come; `over` accepts more than was in transit.
    A damaged quantity needs a note and goes straight to waste.
    """

    sku: str
    qty_milli: int
    damaged_milli: int = 0
    discrepancy: DiscrepancyKind | None = None
    note: str = ""


def _now() -> datetime:
    return datetime.now(UTC)


async def create_transfer(
    session: AsyncSession, from_store: str, to_store: str, lines: list[LineIn], *, actor: str, note: str = ""
) -> TransferView:
    """A new transfer in `draft`; nothing moves until it is shipped."""
    if from_store == to_store:
        raise StockError(f"a transfer goes from one store to another, not from '{from_store}' to itself")
    if not lines:
        raise StockError("a transfer needs at least one line")
    if len(lines) > MAX_LINES:
        raise StockError(f"a transfer has at most {MAX_LINES} lines; split it")
    seen: set[str] = set()
    for line in lines:
        check_sku(line.sku)
        if line.sku in seen:
            raise StockError(f"sku {line.sku} appears twice; give each SKU once with its total quantity")
        seen.add(line.sku)
        if line.qty_milli <= 0:
            raise StockError(f"sku {line.sku}: the quantity must be greater than 0")
    known = set((await session.scalars(select(Store.id).where(Store.id.in_([from_store, to_store])))).all())
    for store in (from_store, to_store):
        if store not in known:
            raise NotFound(f"unknown store '{store}'")
    now = _now()
    transfer = Transfer(
        id=str(new_id()),
        from_store=from_store,
        to_store=to_store,
        state=TransferState.DRAFT.value,
        note=note[:500],
        version=1,
        created_by=actor,
        created_at=now,
        updated_at=now,
    )
    session.add(transfer)
    rows = [
        TransferLine(
            transfer_id=transfer.id,
            sku=line.sku,
            qty_milli=line.qty_milli,
            shipped_milli=0,
            arrived_milli=0,
            damaged_milli=0,
            over_milli=0,
            lost_milli=0,
        )
        for line in lines
    ]
    session.add_all(rows)
    await session.flush()
    return TransferView(transfer, rows)


async def _step(
    session: AsyncSession, transfer_id: str, allowed: tuple[TransferState, ...], verb: str, **values: Any
) -> Transfer:
    """Move the transfer on if it is in one of `allowed` states, else refuse saying where it is."""
    return await step_document(session, Transfer, transfer_id, allowed, verb=verb, label="transfer", **values)


async def _lines(session: AsyncSession, transfer_id: str) -> list[TransferLine]:
    return list(
        (
            await session.scalars(
                select(TransferLine)
                .where(TransferLine.transfer_id == transfer_id)
                .order_by(TransferLine.sku)
                .execution_options(populate_existing=True)
            )
        ).all()
    )


async def approve(session: AsyncSession, transfer_id: str, *, actor: str) -> TransferView:
    """Head office agrees to the transfer."""
    transfer = await _step(
        session,
        transfer_id,
        (TransferState.DRAFT,),
        "approved",
        state=TransferState.APPROVED.value,
        approved_by=actor,
        approved_at=_now(),
    )
    lines = await _lines(session, transfer_id)
    # The source store's shipping task, sent only if the approval commits.
    task = {"transfer_id": transfer_id, "to_store": transfer.to_store, "note": transfer.note}
    add_command(
        session,
        transfer.from_store,
        "transfer.ship",
        {**task, "lines": _task_lines(lines, shipped=False)},
        created_by=actor,
    )
    return TransferView(transfer, lines)


def _task_lines(lines: list[TransferLine], *, shipped: bool) -> list[dict[str, str]]:
    return [
        {"sku": x.sku, "qty": format_milli(x.shipped_milli if shipped else x.qty_milli)}
        for x in lines
        if not shipped or x.shipped_milli
    ]


def _check_shipped(lines: list[TransferLine], quantities: dict[str, int]) -> None:
    """The source scanned what it shipped: each SKU on the transfer, at most what was approved."""
    by_sku = {line.sku: line for line in lines}
    for sku, qty in quantities.items():
        if sku not in by_sku:
            raise StockError(f"sku {sku} is not on this transfer; ship only what was approved")
        if qty < 0:
            raise StockError(f"sku {sku}: the shipped quantity must not be negative")
        if qty > by_sku[sku].qty_milli:
            raise StockError(
                f"sku {sku}: {format_milli(qty)} scanned but only {format_milli(by_sku[sku].qty_milli)} "
                "was approved; ship the rest with a new transfer"
            )
    if not any(quantities.values()):
        raise StockError("nothing was scanned to ship; cancel the transfer instead")


async def ship(
    session: AsyncSession, transfer_id: str, *, actor: str, quantities: dict[str, int] | None = None
) -> TransferView:
    """The goods leave the source: its on-hand drops, the destination's in-transit rises.

    `quantities` (SKU → thousandths, from the store's scan) ships what was really packed:
    a SKU left out ships 0; without it every line ships its approved quantity. The
    destination gets its receiving task (`transfer.receive`) in the same transaction.
    """
    now = _now()
    transfer = await _step(
        session,
        transfer_id,
        (TransferState.APPROVED,),
        "shipped",
        state=TransferState.SHIPPED.value,
        shipped_by=actor,
        shipped_at=now,
    )
    lines = await _lines(session, transfer_id)
    if quantities is not None:
        _check_shipped(lines, quantities)
    for line in lines:
        line.shipped_milli = line.qty_milli if quantities is None else quantities.get(line.sku, 0)
        if not line.shipped_milli:
            continue
        common: dict[str, Any] = {
            "sku": line.sku,
            "source_type": "transfer",
            "source_id": transfer_id,
            "line_ref": "ship",
            "actor": actor,
            "now": now,
        }
        await record_movement(
            session,
            store=transfer.from_store,
            kind=MovementKind.TRANSFER_OUT,
            qty_milli=-line.shipped_milli,
            note=f"to {transfer.to_store}",
            **common,
        )
        await record_movement(
            session,
            store=transfer.to_store,
            kind=MovementKind.TRANSIT_IN,
            qty_milli=0,
            in_transit_milli=line.shipped_milli,
            note=f"from {transfer.from_store}",
            **common,
        )
    task = {"transfer_id": transfer_id, "from_store": transfer.from_store, "note": transfer.note}
    add_command(
        session,
        transfer.to_store,
        "transfer.receive",
        {**task, "lines": _task_lines(lines, shipped=True)},
        created_by=actor,
    )
    return TransferView(transfer, lines)


async def cancel(session: AsyncSession, transfer_id: str, *, actor: str, reason: str) -> TransferView:
    """Drop a transfer that has not shipped; nothing had moved, so nothing moves back."""
    if not reason.strip():
        raise StockError("cancelling a transfer needs a reason")
    transfer = await _step(
        session,
        transfer_id,
        (TransferState.DRAFT, TransferState.APPROVED),
        "cancelled",
        state=TransferState.CANCELLED.value,
        cancelled_by=actor,
        cancelled_at=_now(),
        reason=reason.strip()[:500],
    )
    if transfer.approved_at is not None:  # the source store had a shipping task: withdraw it
        body = {"transfer_id": transfer_id, "reason": transfer.reason or ""}
        add_command(session, transfer.from_store, "transfer.cancel", body, created_by=actor)
    return TransferView(transfer, await _lines(session, transfer_id))


@dataclass(frozen=True)
class _Planned:
    line: TransferLine
    arrived: int
    damaged: int
    over: int
    short: int
    note: str


def _plan(line: TransferLine, item: ReceiptLineIn) -> _Planned:
    """Check one receipt line against what is in transit; `StockError` says what is wrong."""
    remaining = line.in_transit_milli
    arrived, damaged, sku = item.qty_milli, item.damaged_milli, item.sku
    note = item.note.strip()
    if arrived < 0 or damaged < 0:
        raise StockError(f"sku {sku}: quantities must not be negative")
    if damaged > arrived:
        raise StockError(f"sku {sku}: damaged ({format_milli(damaged)}) is part of qty, so at most qty")
    if (damaged or item.discrepancy) and not note:
        raise StockError(f"sku {sku}: a discrepancy or damaged goods need a note saying what happened")
    over = max(0, arrived - remaining)
    if over and item.discrepancy is not DiscrepancyKind.OVER:
        raise StockError(
            f"sku {sku}: {format_milli(arrived)} arrived but only {format_milli(remaining)} is in transit; "
            "if more really arrived, say discrepancy 'over' with a note"
        )
    if item.discrepancy is DiscrepancyKind.OVER and not over:
        raise StockError(
            f"sku {sku}: discrepancy 'over' but {format_milli(arrived)} is not more than the "
            f"{format_milli(remaining)} in transit"
        )
    short = 0
    if item.discrepancy is DiscrepancyKind.SHORT:
        short = remaining - arrived
        if short <= 0:
            raise StockError(f"sku {sku}: discrepancy 'short' but everything in transit arrived")
    if item.discrepancy is DiscrepancyKind.DAMAGED and not damaged:
        raise StockError(f"sku {sku}: discrepancy 'damaged' needs the damaged quantity")
    if arrived == 0 and not short:
        raise StockError(f"sku {sku}: nothing arrived; leave the line out, or declare it 'short'")
    return _Planned(line, arrived, damaged, over, short, note)


def _discrepancy(
    transfer_id: str,
    receipt_id: str | None,
    sku: str,
    kind: DiscrepancyKind,
    qty: int,
    *,
    note: str,
    actor: str,
) -> TransferDiscrepancy:
    now = _now()
    done = kind is DiscrepancyKind.DAMAGED
    return TransferDiscrepancy(
        transfer_id=transfer_id,
        receipt_id=receipt_id,
        sku=sku,
        kind=kind.value,
        qty_milli=qty,
        note=note[:500],
        actor=actor,
        created_at=now,
        resolved=done,
        resolved_by=actor if done else None,
        resolved_at=now if done else None,
        resolution="written off as waste at receipt" if done else None,
    )


async def _resolve_shorts(session: AsyncSession, transfer_id: str, actor: str, resolution: str) -> None:
    await session.execute(
        update(TransferDiscrepancy)
        .where(
            TransferDiscrepancy.transfer_id == transfer_id,
            TransferDiscrepancy.kind == DiscrepancyKind.SHORT.value,
            TransferDiscrepancy.resolved.is_(False),
        )
        .values(resolved=True, resolved_by=actor, resolved_at=_now(), resolution=resolution[:500])
        .execution_options(synchronize_session=False)
    )


async def receive(
    session: AsyncSession, transfer_id: str, items: list[ReceiptLineIn], *, actor: str, note: str = ""
) -> tuple[TransferView, str]:
    """Scan goods in at the destination; returns the transfer and the receipt's id.

    When nothing is left in transit the transfer is `received`; otherwise it waits, as
    `partially_received`, for more receipts or a close.
    """
    if not items:
        raise StockError("a receipt needs at least one line")
    if len({i.sku for i in items}) != len(items):
        raise StockError("a receipt gives each SKU once")
    transfer = await _step(session, transfer_id, _IN_TRANSIT, "received")
    lines = {line.sku: line for line in await _lines(session, transfer_id)}
    planned = []
    for item in items:
        if item.sku not in lines:
            raise StockError(f"sku {item.sku} is not on transfer {transfer_id}")
        planned.append(_plan(lines[item.sku], item))
    receipt_id = str(new_id())
    now = _now()
    for plan in planned:
        line, sku = plan.line, plan.line.sku
        line.arrived_milli += plan.arrived
        line.damaged_milli += plan.damaged
        line.over_milli += plan.over
        common: dict[str, Any] = {
            "store": transfer.to_store,
            "sku": sku,
            "source_type": "transfer",
            "source_id": transfer_id,
            "line_ref": receipt_id,
            "actor": actor,
            "now": now,
        }
        if plan.arrived:
            await record_movement(
                session,
                kind=MovementKind.TRANSFER_IN,
                qty_milli=plan.arrived,
                in_transit_milli=-(plan.arrived - plan.over),
                note=f"from {transfer.from_store}",
                **common,
            )
        if plan.damaged:
            await record_movement(
                session, kind=MovementKind.WASTE, qty_milli=-plan.damaged, note=plan.note, **common
            )
        for kind, qty in (
            (DiscrepancyKind.DAMAGED, plan.damaged),
            (DiscrepancyKind.OVER, plan.over),
            (DiscrepancyKind.SHORT, plan.short),
        ):
            if qty:
                session.add(
                    _discrepancy(transfer_id, receipt_id, sku, kind, qty, note=plan.note, actor=actor)
                )
    session.add(
        TransferReceipt(
            id=receipt_id,
            transfer_id=transfer_id,
            lines=[
                {
                    "sku": p.line.sku,
                    "qty": format_milli(p.arrived),
                    "damaged": format_milli(p.damaged),
                    "over": format_milli(p.over),
                    "short": format_milli(p.short),
                    "note": p.note,
                }
                for p in planned
            ],
            actor=actor,
            note=note[:500],
            created_at=now,
        )
    )
    if all(line.in_transit_milli == 0 for line in lines.values()):
        transfer.state = TransferState.RECEIVED.value
        transfer.received_at = now
        await _resolve_shorts(session, transfer_id, actor, "the goods arrived in a later receipt")
    else:
        transfer.state = TransferState.PARTIALLY_RECEIVED.value
    await session.flush()
    return await load_transfer(session, transfer_id), receipt_id


async def close(session: AsyncSession, transfer_id: str, *, actor: str, reason: str) -> TransferView:
    """Close with a shortage: what is still in transit is written off as lost in transit."""
    if not reason.strip():
        raise StockError("closing a transfer with a shortage needs a reason")
    now = _now()
    transfer = await _step(
        session,
        transfer_id,
        _IN_TRANSIT,
        "closed",
        state=TransferState.RECEIVED.value,
        closed_by=actor,
        closed_at=now,
        received_at=now,
        reason=reason.strip()[:500],
    )
    declared: dict[str, int] = {}
    for row in (
        await session.scalars(
            select(TransferDiscrepancy).where(
                TransferDiscrepancy.transfer_id == transfer_id,
                TransferDiscrepancy.kind == DiscrepancyKind.SHORT.value,
                TransferDiscrepancy.resolved.is_(False),
            )
        )
    ).all():
        declared[row.sku] = declared.get(row.sku, 0) + row.qty_milli
    await _resolve_shorts(session, transfer_id, actor, f"written off as lost in transit at close: {reason}")
    lines = await _lines(session, transfer_id)
    for line in lines:
        lost = line.in_transit_milli
        if lost <= 0:
            continue
        line.lost_milli += lost
        await record_movement(
            session,
            store=transfer.to_store,
            sku=line.sku,
            kind=MovementKind.TRANSIT_LOST,
            qty_milli=0,
            in_transit_milli=-lost,
            source_type="transfer",
            source_id=transfer_id,
            line_ref="close",
            actor=actor,
            note=reason.strip(),
            now=now,
        )
        undeclared = lost - declared.get(line.sku, 0)
        if undeclared > 0:
            row = _discrepancy(
                transfer_id,
                None,
                line.sku,
                DiscrepancyKind.SHORT,
                undeclared,
                note=f"not received: {reason}",
                actor=actor,
            )
            row.resolved, row.resolved_by, row.resolved_at = True, actor, now
            row.resolution = "written off as lost in transit at close"
            session.add(row)
    await session.flush()
    return await load_transfer(session, transfer_id)

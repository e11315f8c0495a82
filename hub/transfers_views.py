"""Reading transfers: one with its lines, receipts and discrepancies; lists; their JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select

from hub.db import AsyncSession
from hub.errors import NotFound
from hub.stock import format_milli
from hub.transfers_tables import Transfer, TransferDiscrepancy, TransferLine, TransferReceipt, TransferState

__all__ = ["TransferView", "list_transfers", "load_transfer", "transfer_head_json", "transfer_json"]


@dataclass
class TransferView:
    """A transfer with its lines, receipts and discrepancies."""

    transfer: Transfer
    lines: list[TransferLine]
    receipts: list[TransferReceipt] = field(default_factory=list)
    discrepancies: list[TransferDiscrepancy] = field(default_factory=list)


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


async def load_transfer(session: AsyncSession, transfer_id: str) -> TransferView:
    """A transfer with everything about it; `NotFound` if there is none."""
    transfer = await session.get(Transfer, transfer_id, populate_existing=True)
    if transfer is None:
        raise NotFound(f"no transfer {transfer_id}")
    receipts = (
        await session.scalars(
            select(TransferReceipt)
            .where(TransferReceipt.transfer_id == transfer_id)
            .order_by(TransferReceipt.id)
            .execution_options(populate_existing=True)
        )
    ).all()
    discrepancies = (
        await session.scalars(
            select(TransferDiscrepancy)
            .where(TransferDiscrepancy.transfer_id == transfer_id)
            .order_by(TransferDiscrepancy.id)
            .execution_options(populate_existing=True)
        )
    ).all()
    return TransferView(transfer, await _lines(session, transfer_id), list(receipts), list(discrepancies))


async def list_transfers(
    session: AsyncSession,
    *,
    scope: frozenset[str] | None,
    store: str | None = None,
    state: TransferState | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[Transfer], bool]:
    """Transfers touching `store` (or any store in `scope`), newest first, and whether more follow."""
    query = select(Transfer)
    if scope is not None:
        stores = sorted(scope)
        query = query.where(or_(Transfer.from_store.in_(stores), Transfer.to_store.in_(stores)))
    if store is not None:
        query = query.where(or_(Transfer.from_store == store, Transfer.to_store == store))
    if state is not None:
        query = query.where(Transfer.state == state.value)
    rows = (await session.scalars(query.order_by(Transfer.id.desc()).limit(limit + 1).offset(offset))).all()
    return list(rows[:limit]), len(rows) > limit


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def transfer_head_json(transfer: Transfer) -> dict[str, Any]:
    """A transfer without its lines, for lists."""
    return {
        "id": transfer.id,
        "from_store": transfer.from_store,
        "to_store": transfer.to_store,
        "state": transfer.state,
        "note": transfer.note,
        "version": transfer.version,
        "created_by": transfer.created_by,
        "created_at": transfer.created_at.isoformat(),
        "approved_by": transfer.approved_by,
        "approved_at": _when(transfer.approved_at),
        "shipped_by": transfer.shipped_by,
        "shipped_at": _when(transfer.shipped_at),
        "received_at": _when(transfer.received_at),
        "closed_by": transfer.closed_by,
        "closed_at": _when(transfer.closed_at),
        "cancelled_by": transfer.cancelled_by,
        "cancelled_at": _when(transfer.cancelled_at),
        "reason": transfer.reason,
    }


def transfer_json(view: TransferView) -> dict[str, Any]:
    """A transfer as the API returns it; `received` is what arrived in good condition."""
    return {
        **transfer_head_json(view.transfer),
        "lines": [
            {
                "sku": line.sku,
                "qty": format_milli(line.qty_milli),
                "shipped": format_milli(line.shipped_milli),
                "received": format_milli(line.arrived_milli - line.damaged_milli),
                "damaged": format_milli(line.damaged_milli),
                "over": format_milli(line.over_milli),
                "lost": format_milli(line.lost_milli),
                "in_transit": format_milli(line.in_transit_milli),
            }
            for line in view.lines
        ],
        "receipts": [
            {
                "id": r.id,
                "actor": r.actor,
                "note": r.note,
                "created_at": r.created_at.isoformat(),
                "lines": r.lines,
            }
            for r in view.receipts
        ],
        "discrepancies": [
            {
                "id": d.id,
                "receipt_id": d.receipt_id,
                "sku": d.sku,
                "kind": d.kind,
                "qty": format_milli(d.qty_milli),
                "note": d.note,
                "actor": d.actor,
                "created_at": d.created_at.isoformat(),
                "resolved": d.resolved,
                "resolution": d.resolution,
            }
            for d in view.discrepancies
        ],
    }

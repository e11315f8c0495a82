"""Transfer (调拨) tables: the document, its lines with their running counts, receipts, discrepancies.

Per line, quantities in thousandths (see `hub.stock_tables`):
`in_transit = shipped + over - arrived - lost`, where `arrived` counts everything that
came through the door (good and damaged, and any excess). Conservation, at every state:
`shipped = (arrived - over) + lost + in_transit`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from hub.models import Base

__all__ = [
    "DiscrepancyKind",
    "Transfer",
    "TransferDiscrepancy",
    "TransferLine",
    "TransferReceipt",
    "TransferState",
]


class TransferState(StrEnum):
    """Where a transfer is; `received` and `cancelled` are final."""

    DRAFT = "draft"
    APPROVED = "approved"
    SHIPPED = "shipped"
    PARTIALLY_RECEIVED = "partially_received"
    RECEIVED = "received"
    CANCELLED = "cancelled"


class DiscrepancyKind(StrEnum):
    """How a receipt differs from what was shipped."""

    SHORT = "short"  # did not arrive; written off as lost in transit when the transfer is closed
    OVER = "over"  # more arrived than was in transit; the destination keeps it
    DAMAGED = "damaged"  # arrived, then written off as waste at the destination


class Transfer(Base):
    """A transfer of stock from one store to another; the state moves by conditional UPDATEs."""

    __tablename__ = "transfers"
    __table_args__ = (
        Index("ix_transfers_from", "from_store", "state"),
        Index("ix_transfers_to", "to_store", "state"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # UUIDv7: sorts by creation
    from_store: Mapped[str] = mapped_column(ForeignKey("stores.id"))
    to_store: Mapped[str] = mapped_column(ForeignKey("stores.id"))
    state: Mapped[str] = mapped_column(String(24))
    note: Mapped[str] = mapped_column(String(500), default="")
    version: Mapped[int] = mapped_column(Integer, default=1)  # bumped by every step
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime]
    approved_by: Mapped[str | None] = mapped_column(String(80))
    approved_at: Mapped[datetime | None]
    shipped_by: Mapped[str | None] = mapped_column(String(80))
    shipped_at: Mapped[datetime | None]
    received_at: Mapped[datetime | None]  # when nothing was left in transit
    closed_by: Mapped[str | None] = mapped_column(String(80))  # closed with a shortage
    closed_at: Mapped[datetime | None]
    cancelled_by: Mapped[str | None] = mapped_column(String(80))
    cancelled_at: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(String(500))  # of a cancel or a close
    updated_at: Mapped[datetime]


class TransferLine(Base):
    """One SKU of a transfer: asked for, shipped, and how it was accounted for since."""

    __tablename__ = "transfer_lines"

    transfer_id: Mapped[str] = mapped_column(ForeignKey("transfers.id", ondelete="CASCADE"), primary_key=True)
    sku: Mapped[str] = mapped_column(String(64), primary_key=True)
    qty_milli: Mapped[int] = mapped_column(BigInteger)
    shipped_milli: Mapped[int] = mapped_column(BigInteger, default=0)
    arrived_milli: Mapped[int] = mapped_column(BigInteger, default=0)  # good + damaged + over
    damaged_milli: Mapped[int] = mapped_column(BigInteger, default=0)
    over_milli: Mapped[int] = mapped_column(BigInteger, default=0)
    lost_milli: Mapped[int] = mapped_column(BigInteger, default=0)  # written off at close

    @property
    def in_transit_milli(self) -> int:
        """Shipped and not yet accounted for at the destination."""
        return self.shipped_milli + self.over_milli - self.arrived_milli - self.lost_milli


class TransferReceipt(Base):
    """One scan-in at the destination, with the lines as declared (kept for the audit)."""

    __tablename__ = "transfer_receipts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    transfer_id: Mapped[str] = mapped_column(ForeignKey("transfers.id", ondelete="CASCADE"), index=True)
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    actor: Mapped[str] = mapped_column(String(80))
    note: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime]


class TransferDiscrepancy(Base):
    """A difference between what was shipped and what arrived: recorded, never lost."""

    __tablename__ = "transfer_discrepancies"
    __table_args__ = (Index("ix_transfer_discrepancies_transfer", "transfer_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    transfer_id: Mapped[str] = mapped_column(ForeignKey("transfers.id", ondelete="CASCADE"))
    receipt_id: Mapped[str | None] = mapped_column(String(36))  # None: found at close
    sku: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    qty_milli: Mapped[int] = mapped_column(BigInteger)
    note: Mapped[str] = mapped_column(String(500))
    actor: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime]
    resolved: Mapped[bool] = mapped_column(Boolean, default=False)
    resolved_by: Mapped[str | None] = mapped_column(String(80))
    resolved_at: Mapped[datetime | None]
    resolution: Mapped[str | None] = mapped_column(String(500))

"""Stock tables: the append-only ledger of movements, the running levels it explains, flags.

Quantities are integer thousandths of a unit (`*_milli`: 1 piece = 1000, 0.352 kg = 352),
never floats and never SQL NUMERIC: SQLite keeps NUMERIC as a float, and the running total
is added in SQL (`on_hand_milli = on_hand_milli + :d`), where a float would drift.

For every (store, sku): `stock_levels.on_hand_milli` is the sum of the ledger's
`qty_milli`, and `in_transit_in_milli` the sum of its `in_transit_milli`; both are written
in the same transaction as the movement.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, Boolean, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hub.models import Base

__all__ = [
    "MovementKind",
    "StockFlag",
    "StockFlagKind",
    "StockLevel",
    "StockMovement",
    "StockPendingRefund",
]


class MovementKind(StrEnum):
    """Why stock moved; the sign of `qty_milli` says which way."""

    SALE = "sale"  # out (-): a paid order's line
    REFUND = "refund"  # in (+): a refunded line back on the shelf
    RECEIPT = "receipt"  # in (+): goods from a supplier (purchasing is not built yet)
    TRANSFER_OUT = "transfer_out"  # out (-): shipped to another store
    TRANSIT_IN = "transit_in"  # on-hand 0, in-transit (+) at the destination when shipped
    TRANSFER_IN = "transfer_in"  # in (+) and in-transit (-): arrived from another store
    TRANSIT_LOST = "transit_lost"  # on-hand 0, in-transit (-): written off as short at close
    ADJUSTMENT = "adjustment"  # either way, with a reason
    STOCKTAKE = "stocktake"  # either way: a count's variance (stocktakes are not built yet)
    WASTE = "waste"  # out (-): spoiled, broken, arrived damaged


class StockFlagKind(StrEnum):
    """What a stock flag asks a person to look at."""

    UNREADABLE_LINE = "unreadable_line"  # a sale or refund line without a usable sku or qty
    UNKNOWN_REFUND_LINE = "unknown_refund_line"  # a refund names a line its order does not have


class StockMovement(Base):
    """One movement; never changed or deleted. The unique key makes a replay a no-op."""

    __tablename__ = "stock_movements"
    __table_args__ = (
        UniqueConstraint(
            "store", "sku", "kind", "source_type", "source_id", "line_ref", name="uq_stock_movements_source"
        ),
        Index("ix_stock_movements_store_sku", "store", "sku", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    store: Mapped[str] = mapped_column(String(32))
    sku: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    qty_milli: Mapped[int] = mapped_column(BigInteger)  # on-hand delta
    in_transit_milli: Mapped[int] = mapped_column(BigInteger, default=0)  # in-transit delta
    source_type: Mapped[str] = mapped_column(String(16))  # order, refund, transfer, adjustment
    source_id: Mapped[str] = mapped_column(String(64))
    line_ref: Mapped[str] = mapped_column(String(64), default="")
    actor: Mapped[str] = mapped_column(String(80))  # "sync:<store>" or "user:<name>"
    note: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime]


class StockLevel(Base):
    """The running totals of one SKU at one store; changed only by atomic `x = x + :d` updates.

    `negative_since` is set when on-hand first drops below zero (selling what the books do
    not have is allowed: the shelf is the truth, the books catch up) and cleared when it
    is back at zero or above.
    """

    __tablename__ = "stock_levels"
    __table_args__ = (Index("ix_stock_levels_sku", "sku"),)

    store: Mapped[str] = mapped_column(String(32), primary_key=True)
    sku: Mapped[str] = mapped_column(String(64), primary_key=True)
    on_hand_milli: Mapped[int] = mapped_column(BigInteger, default=0)
    in_transit_in_milli: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved_milli: Mapped[int] = mapped_column(BigInteger, default=0)
    negative_since: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class StockFlag(Base):
    """A sale document the stock listener could not fully apply, kept for a person."""

    __tablename__ = "stock_flags"
    __table_args__ = (Index("ix_stock_flags_open", "resolved", "store"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(24))
    store: Mapped[str] = mapped_column(String(32))
    sku: Mapped[str | None] = mapped_column(String(64))
    source_type: Mapped[str] = mapped_column(String(16))
    source_id: Mapped[str] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(String(500))
    resolved: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]


class StockPendingRefund(Base):
    """A refund that reached the hub before its order: its lines name no SKU until the order comes."""

    __tablename__ = "stock_pending_refunds"

    refund_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64), index=True)
    store: Mapped[str] = mapped_column(String(32))
    body: Mapped[dict[str, Any]]
    received_at: Mapped[datetime]

"""Stocktake (盘点) tables: the count document, its lines, and the store reports already applied.

Quantities are integer thousandths (see `hub.stock_tables`). A line's `snapshot_milli` is
the on-hand when the count started; `counted_milli` / `counted_at` are the store's count
and when it was taken (the store's clock, UTC). The variance is computed against the
books at `counted_at`, not against the snapshot (see `hub.stocktakes`).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from hub.models import Base

__all__ = ["StockReport", "Stocktake", "StocktakeLine", "StocktakeScope", "StocktakeState"]


class StocktakeState(StrEnum):
    """Where a count is: `posted` and `cancelled` are final."""

    COUNTING = "counting"  # the store is counting; counts are accepted
    SUBMITTED = "submitted"  # the store said it is done; waiting for approval
    POSTED = "posted"  # approved: the variances are in the ledger as `stocktake` movements
    CANCELLED = "cancelled"


class StocktakeScope(StrEnum):
    """What a count covers."""

    STORE = "store"  # every SKU the store has stock of, and anything found on the shelf
    CATEGORY = "category"  # the SKUs of a head-office catalog category (and its subcategories)
    SKUS = "skus"  # the SKUs listed at the start


class Stocktake(Base):
    """One count of one store; its state moves by conditional UPDATEs, like a transfer's."""

    __tablename__ = "stocktakes"
    __table_args__ = (Index("ix_stocktakes_store", "store", "state"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # UUIDv7
    store: Mapped[str] = mapped_column(ForeignKey("stores.id"))
    scope: Mapped[str] = mapped_column(String(16))
    category: Mapped[str | None] = mapped_column(String(400))
    state: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(String(500), default="")
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime]  # the snapshot moment
    submitted_at: Mapped[datetime | None]
    submitted_lines: Mapped[int | None] = mapped_column(Integer)  # lines the store says it counted
    posted_by: Mapped[str | None] = mapped_column(String(80))  # the approver: never the starter
    posted_at: Mapped[datetime | None]
    cancelled_by: Mapped[str | None] = mapped_column(String(80))
    cancelled_at: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(String(500))
    updated_at: Mapped[datetime]


class StocktakeLine(Base):
    """One SKU of a count: on-hand at the start, what the store counted and when."""

    __tablename__ = "stocktake_lines"

    stocktake_id: Mapped[str] = mapped_column(
        ForeignKey("stocktakes.id", ondelete="CASCADE"), primary_key=True
    )
    sku: Mapped[str] = mapped_column(String(64), primary_key=True)
    in_scope: Mapped[bool] = mapped_column(Boolean)  # listed at the start (False: found on the shelf)
    snapshot_milli: Mapped[int] = mapped_column(BigInteger)
    counted_milli: Mapped[int | None] = mapped_column(BigInteger)
    counted_at: Mapped[datetime | None]
    counted_by: Mapped[str | None] = mapped_column(String(80))
    variance_milli: Mapped[int | None] = mapped_column(BigInteger)  # fixed when posted
    unit_cost_fen: Mapped[int | None] = mapped_column(BigInteger)  # fixed when posted


class StockReport(Base):
    """A store's stock report (count part, transfer ship or receipt) applied once, by its id.

    A report replayed under a new epoch finds its row and changes nothing; one the hub
    refused keeps the reason here for head office.
    """

    __tablename__ = "stock_reports"
    __table_args__ = (Index("ix_stock_reports_store", "store", "outcome", "received_at"),)

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    store: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(24))  # the event type
    ref: Mapped[str] = mapped_column(String(36))  # stocktake or transfer id
    outcome: Mapped[str] = mapped_column(String(16))  # applied, refused
    detail: Mapped[str] = mapped_column(String(500), default="")
    received_at: Mapped[datetime]

"""Replenishment rules, suppliers and their quotes, purchase orders and receipts, batches, costs.

Quantities are integer thousandths (`*_milli`) as in the stock ledger; money is integer fen
(`*_fen`); a quote's and a line's `unit_cost_fen` is per whole unit (1000 milli).
Expiry and validity are calendar dates (`date`): a lot expires at the end of its day in the
store's time zone.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Date, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from hub.models import Base

__all__ = [
    "DEFAULT_RULE",
    "ExpiryBlock",
    "PoState",
    "PurchaseOrder",
    "PurchaseOrderLine",
    "PurchaseReceipt",
    "ReplenishmentRule",
    "StockBatch",
    "StockCost",
    "Supplier",
    "SupplierQuote",
]

DEFAULT_RULE = "*"  # the sku of a store's default rule: every SKU without its own rule


class PoState(StrEnum):
    """Where a purchase order is."""

    DRAFT = "draft"
    SENT = "sent"
    PARTIALLY_RECEIVED = "partially_received"
    RECEIVED = "received"
    CANCELLED = "cancelled"


class ReplenishmentRule(Base):
    """How one SKU (or, with sku "*", every SKU) is kept in stock at one store.

    Either fixed `min_milli`/`max_milli`, or `cover_days` of sales velocity on top of the
    lead time and `safety_days` (see `hub.replenishment`).
    """

    __tablename__ = "replenishment_rules"

    store: Mapped[str] = mapped_column(ForeignKey("stores.id"), primary_key=True)
    sku: Mapped[str] = mapped_column(String(64), primary_key=True)
    min_milli: Mapped[int | None] = mapped_column(BigInteger)
    max_milli: Mapped[int | None] = mapped_column(BigInteger)
    cover_days: Mapped[int | None] = mapped_column(Integer)
    safety_days: Mapped[int] = mapped_column(Integer, default=0)
    lead_time_days: Mapped[int] = mapped_column(Integer, default=0)
    order_multiple_milli: Mapped[int] = mapped_column(BigInteger, default=1000)
    updated_by: Mapped[str] = mapped_column(String(80))
    updated_at: Mapped[datetime]


class Supplier(Base):
    """A supplier with its qualification (licence and its expiry), contact and usual lead time."""

    __tablename__ = "suppliers"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    licence_no: Mapped[str] = mapped_column(String(64), default="")
    licence_expires_on: Mapped[date | None] = mapped_column(Date)
    contact_name: Mapped[str] = mapped_column(String(100), default="")
    phone: Mapped[str] = mapped_column(String(32), default="")
    email: Mapped[str] = mapped_column(String(200), default="")
    lead_time_days: Mapped[int] = mapped_column(Integer, default=1)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class SupplierQuote(Base):
    """A supplier's price for one SKU, valid from one day to another (both included)."""

    __tablename__ = "supplier_quotes"
    __table_args__ = (Index("ix_supplier_quotes_sku", "sku", "valid_to"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    supplier_id: Mapped[str] = mapped_column(ForeignKey("suppliers.id"), index=True)
    sku: Mapped[str] = mapped_column(String(64))
    unit_cost_fen: Mapped[int] = mapped_column(BigInteger)
    min_qty_milli: Mapped[int] = mapped_column(BigInteger, default=0)
    valid_from: Mapped[date] = mapped_column(Date)
    valid_to: Mapped[date] = mapped_column(Date)
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime]


class PurchaseOrder(Base):
    """An order to one supplier for one store; state changes by conditional UPDATE."""

    __tablename__ = "purchase_orders"
    __table_args__ = (
        Index("ix_purchase_orders_store", "store", "state"),
        Index("ix_purchase_orders_supplier", "supplier_id", "state"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    supplier_id: Mapped[str] = mapped_column(ForeignKey("suppliers.id"))
    store: Mapped[str] = mapped_column(ForeignKey("stores.id"))
    state: Mapped[str] = mapped_column(String(24))
    version: Mapped[int] = mapped_column(Integer, default=1)
    note: Mapped[str] = mapped_column(String(500), default="")
    expected_on: Mapped[date | None] = mapped_column(Date)
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime]
    sent_by: Mapped[str | None] = mapped_column(String(80))
    sent_at: Mapped[datetime | None]
    received_at: Mapped[datetime | None]
    cancelled_by: Mapped[str | None] = mapped_column(String(80))
    cancelled_at: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(String(500))
    updated_at: Mapped[datetime]


class PurchaseOrderLine(Base):
    """One SKU on a purchase order: ordered, at what cost, received so far."""

    __tablename__ = "purchase_order_lines"

    po_id: Mapped[str] = mapped_column(ForeignKey("purchase_orders.id", ondelete="CASCADE"), primary_key=True)
    sku: Mapped[str] = mapped_column(String(64), primary_key=True)
    qty_milli: Mapped[int] = mapped_column(BigInteger)
    unit_cost_fen: Mapped[int] = mapped_column(BigInteger)
    received_milli: Mapped[int] = mapped_column(BigInteger, default=0)


class PurchaseReceipt(Base):
    """One delivery received against a purchase order; its id (the caller's) makes it once."""

    __tablename__ = "purchase_receipts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    po_id: Mapped[str] = mapped_column(ForeignKey("purchase_orders.id", ondelete="CASCADE"), index=True)
    store: Mapped[str] = mapped_column(String(32))
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    actor: Mapped[str] = mapped_column(String(80))
    note: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime]


class StockBatch(Base):
    """A lot received at a store: what came in, never changed; what is left is derived (FEFO)."""

    __tablename__ = "stock_batches"
    __table_args__ = (
        Index("ix_stock_batches_store_sku", "store", "sku", "expires_on"),
        Index("ix_stock_batches_store_expiry", "store", "expires_on"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    store: Mapped[str] = mapped_column(String(32))
    sku: Mapped[str] = mapped_column(String(64))
    lot: Mapped[str] = mapped_column(String(64))
    expires_on: Mapped[date | None] = mapped_column(Date)
    qty_milli: Mapped[int] = mapped_column(BigInteger)
    unit_cost_fen: Mapped[int] = mapped_column(BigInteger)
    po_id: Mapped[str] = mapped_column(String(36))
    receipt_id: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime]


class StockCost(Base):
    """The moving-average cost of one SKU at one store, per whole unit, in fen."""

    __tablename__ = "stock_costs"

    store: Mapped[str] = mapped_column(String(32), primary_key=True)
    sku: Mapped[str] = mapped_column(String(64), primary_key=True)
    avg_cost_fen: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]


class ExpiryBlock(Base):
    """A SKU the hub told a store to stop selling because all of its stock there is expired."""

    __tablename__ = "expiry_blocks"

    store: Mapped[str] = mapped_column(String(32), primary_key=True)
    sku: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(500))
    command_id: Mapped[str] = mapped_column(String(36))
    blocked_at: Mapped[datetime]

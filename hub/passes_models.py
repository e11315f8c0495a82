"""Tables of punch cards and passes (次卡/月卡/年卡/疗程): products, passes, their ledger, flags.

A pass copies its product's terms when it is issued (uses, coverage, daily limit,
transferability), so head office can change a product without changing what members
already bought. Kept free of `hub.members` imports so `hub.members` can register the
merge hook without an import cycle.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from hub.models import Base

__all__ = ["Pass", "PassFlag", "PassLedger", "PassProduct"]


class PassProduct(Base):
    """A kind of pass head office sells; `sale_sku` is the till item that sells one unit."""

    __tablename__ = "pass_products"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # count, period, count_in_period
    sale_sku: Mapped[str] = mapped_column(String(64), unique=True)
    covers_skus: Mapped[list[str]] = mapped_column(JSON)
    covers_categories: Mapped[list[str]] = mapped_column(JSON)
    uses: Mapped[int | None] = mapped_column(Integer)
    valid_days: Mapped[int | None] = mapped_column(Integer)
    valid_until: Mapped[date | None] = mapped_column(Date)
    transferable: Mapped[bool] = mapped_column(Boolean, default=False)
    daily_limit: Mapped[int | None] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Pass(Base):
    """One pass held by one member; `remaining` is None for unlimited (period) passes.

    `day`/`day_uses` count the uses of the current business day so the daily limit is
    checked in the same conditional UPDATE that takes the use.
    """

    __tablename__ = "passes"
    __table_args__ = (
        UniqueConstraint("order_id", "line_id", "unit", name="uq_passes_order_line_unit"),
        Index("ix_passes_member_status", "member_id", "status"),
        CheckConstraint("remaining IS NULL OR remaining >= 0", name="ck_passes_remaining"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    product_code: Mapped[str] = mapped_column(ForeignKey("pass_products.code"))
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    total_uses: Mapped[int | None] = mapped_column(Integer)
    remaining: Mapped[int | None] = mapped_column(Integer)
    used: Mapped[int] = mapped_column(Integer, default=0)
    covers_skus: Mapped[list[str]] = mapped_column(JSON)
    covers_categories: Mapped[list[str]] = mapped_column(JSON)
    daily_limit: Mapped[int | None] = mapped_column(Integer)
    transferable: Mapped[bool] = mapped_column(Boolean, default=False)
    day: Mapped[date | None] = mapped_column(Date)
    day_uses: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16))  # active, revoked, expired
    issued_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    source: Mapped[str] = mapped_column(String(16))  # sale, manual
    store: Mapped[str | None] = mapped_column(String(32))
    order_id: Mapped[str | None] = mapped_column(String(36))
    line_id: Mapped[str | None] = mapped_column(String(64))
    unit: Mapped[int | None] = mapped_column(Integer)
    price_fen: Mapped[int | None] = mapped_column(Integer)


class PassLedger(Base):
    """Every change to a pass, with its source; `uses` is the signed change to `remaining`.

    For a count pass the sum of `uses` is `remaining`; for a period pass (unlimited) minus
    the sum is the uses taken.
    """

    __tablename__ = "pass_ledger"
    __table_args__ = (Index("ix_pass_ledger_pass", "pass_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    txn_id: Mapped[str] = mapped_column(String(36), unique=True)
    pass_id: Mapped[str] = mapped_column(ForeignKey("passes.id"))
    member_id: Mapped[str] = mapped_column(String(36), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # issue, consume, reverse, transfer, merge, revoke, expire
    uses: Mapped[int] = mapped_column(Integer)
    remaining_after: Mapped[int | None] = mapped_column(Integer)
    store: Mapped[str | None] = mapped_column(String(32))
    business_day: Mapped[date | None] = mapped_column(Date)
    order_id: Mapped[str | None] = mapped_column(String(36))
    refund_id: Mapped[str | None] = mapped_column(String(36))
    service_sku: Mapped[str | None] = mapped_column(String(64))
    ref_txn_id: Mapped[str | None] = mapped_column(String(36))
    reversed: Mapped[bool] = mapped_column(Boolean, default=False)
    actor: Mapped[str] = mapped_column(String(80))
    reason: Mapped[str] = mapped_column(String(200), default="")
    detail: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class PassFlag(Base):
    """Something a person at head office should look at (e.g. a refund after uses were taken)."""

    __tablename__ = "pass_flags"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    pass_id: Mapped[str | None] = mapped_column(String(36))
    member_id: Mapped[str | None] = mapped_column(String(36))
    store: Mapped[str | None] = mapped_column(String(32))
    order_id: Mapped[str | None] = mapped_column(String(36))
    refund_id: Mapped[str | None] = mapped_column(String(36))
    detail: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    resolved: Mapped[bool] = mapped_column(Boolean, default=False)
    resolved_by: Mapped[str | None] = mapped_column(String(64))

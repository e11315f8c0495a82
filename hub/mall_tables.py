"""Points mall (积分商城) and lucky wheel (大转盘) tables.

Stock is never oversold: `mall_items.redeemed` and `wheel_prizes.given` rise only through a
conditional UPDATE that keeps them within `stock`, and the CHECK constraints hold the line
should any other write forget it. Every spin is a `wheel_spins` row with the random draw and
the weights it was drawn against, so the odds can be recomputed from the audit alone.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
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

__all__ = ["MallItem", "MallRedemption", "PrizeKind", "RedemptionState", "Spin", "Wheel", "WheelPrize"]


class PrizeKind(StrEnum):
    """What a wheel prize gives."""

    POINTS = "points"
    COUPON = "coupon"
    ITEM = "item"  # a thing collected at a store (the spin id is the voucher)
    NOTHING = "nothing"  # 谢谢参与


class RedemptionState(StrEnum):
    """`collected` and `cancelled` are final."""

    REDEEMED = "redeemed"  # paid, the item not yet handed over
    COLLECTED = "collected"
    CANCELLED = "cancelled"  # points, cash and stock given back


class MallItem(Base):
    """Something members buy with points, or points plus cash (fen), from its own stock."""

    __tablename__ = "mall_items"
    __table_args__ = (
        CheckConstraint("redeemed >= 0 AND redeemed <= stock", name="ck_mall_items_stock"),
        CheckConstraint("points > 0 AND cash_fen >= 0", name="ck_mall_items_price"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    sku: Mapped[str | None] = mapped_column(String(64))
    points: Mapped[int] = mapped_column(BigInteger)
    cash_fen: Mapped[int] = mapped_column(BigInteger)
    stock: Mapped[int] = mapped_column(Integer)
    redeemed: Mapped[int] = mapped_column(Integer, default=0)
    per_member_limit: Mapped[int | None] = mapped_column(Integer)  # units a member may redeem in all
    active: Mapped[bool] = mapped_column(Boolean)
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class MallRedemption(Base):
    """A member's redemption of `quantity` units: points debited, cash paid, keyed for retries.

    `points_lots` records the lots the points came from ([[lot id, points, expiry]]), so a
    cancellation gives them back with their original expiry.
    """

    __tablename__ = "mall_redemptions"
    __table_args__ = (
        UniqueConstraint("idempotency_key", name="uq_mall_redemptions_key"),
        Index("ix_mall_redemptions_member_item", "member_id", "item_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("mall_items.id"))
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    quantity: Mapped[int] = mapped_column(Integer)
    points: Mapped[int] = mapped_column(BigInteger)
    cash_fen: Mapped[int] = mapped_column(BigInteger)
    payment_method: Mapped[str | None] = mapped_column(String(16))  # stored_value | external | None
    payment_reference: Mapped[str | None] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(80))
    points_lots: Mapped[list[list[Any]]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(10))
    actor: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime]
    collected_at: Mapped[datetime | None]
    collected_store: Mapped[str | None] = mapped_column(String(32))
    cancelled_at: Mapped[datetime | None]
    refund_reference: Mapped[str | None] = mapped_column(String(64))  # the stored-value return
    external_refund_due: Mapped[bool] = mapped_column(Boolean, default=False)  # finance pays it back


class Wheel(Base):
    """A lucky wheel: prizes with weights, a daily spin limit per member, an optional points cost."""

    __tablename__ = "wheels"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    spin_cost_points: Mapped[int] = mapped_column(Integer)
    daily_spins: Mapped[int] = mapped_column(Integer)  # per member per chain-local day
    active: Mapped[bool] = mapped_column(Boolean)
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class WheelPrize(Base):
    """One slice of a wheel; `consolation` is what an out-of-stock prize falls back to."""

    __tablename__ = "wheel_prizes"
    __table_args__ = (
        UniqueConstraint("wheel_id", "position", name="uq_wheel_prizes_position"),
        CheckConstraint("stock IS NULL OR (given >= 0 AND given <= stock)", name="ck_wheel_prizes_stock"),
        CheckConstraint("weight >= 0", name="ck_wheel_prizes_weight"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    wheel_id: Mapped[str] = mapped_column(ForeignKey("wheels.id"))
    position: Mapped[int] = mapped_column(Integer)  # the draw's ranges follow this order
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(8))
    points: Mapped[int] = mapped_column(Integer, default=0)
    coupon_template: Mapped[str | None] = mapped_column(String(36))
    sku: Mapped[str | None] = mapped_column(String(64))
    weight: Mapped[int] = mapped_column(Integer)
    stock: Mapped[int | None] = mapped_column(Integer)  # None: unlimited
    given: Mapped[int] = mapped_column(Integer, default=0)
    consolation: Mapped[bool] = mapped_column(Boolean)


class Spin(Base):
    """The audit of one spin: the draw in [0, total weight), the weights it used, what it gave."""

    __tablename__ = "wheel_spins"
    __table_args__ = (
        UniqueConstraint("idempotency_key", name="uq_wheel_spins_key"),
        Index("ix_wheel_spins_member_day", "wheel_id", "member_id", "day"),
        Index("ix_wheel_spins_wheel", "wheel_id", "spun_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    wheel_id: Mapped[str] = mapped_column(ForeignKey("wheels.id"))
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    idempotency_key: Mapped[str] = mapped_column(String(80))
    spun_at: Mapped[datetime]
    day: Mapped[date] = mapped_column(Date)  # chain-local day, for the daily limit
    draw: Mapped[int] = mapped_column(BigInteger)
    total_weight: Mapped[int] = mapped_column(BigInteger)
    weights: Mapped[list[list[Any]]] = mapped_column(JSON)  # [[prize id, weight], …] in position order
    drawn_prize_id: Mapped[str] = mapped_column(ForeignKey("wheel_prizes.id"))
    prize_id: Mapped[str] = mapped_column(ForeignKey("wheel_prizes.id"))  # given: drawn or consolation
    fallback_reason: Mapped[str] = mapped_column(String(200), default="")
    points_cost: Mapped[int] = mapped_column(Integer)
    reference: Mapped[str | None] = mapped_column(String(64))  # coupon code or points lot id
    collected_at: Mapped[datetime | None]  # an item prize handed over at a store
    collected_store: Mapped[str | None] = mapped_column(String(32))

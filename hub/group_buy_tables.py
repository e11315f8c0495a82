"""Group buy (拼团) tables: offers, the groups members open, and each member's paid place in a group.

Stock is counted in places (one item each). Opening a group reserves `group_size` places
of the offer's stock at once, so a group that exists can always be completed and stock is
never promised twice: `reserved` counts places held by open and filled groups, `sold` the
places of filled groups; an expired group gives its places back. `reserved <= stock` holds
by a conditional UPDATE under the offer's row lock.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hub.models import Base

__all__ = ["Group", "GroupBuyOffer", "GroupState", "OfferState", "Participation", "ParticipationState"]


class OfferState(StrEnum):
    """`closed`: no new groups; groups already open still fill or expire."""

    ACTIVE = "active"
    CLOSED = "closed"


class GroupState(StrEnum):
    """`filled` and `expired` are final."""

    OPEN = "open"
    FILLED = "filled"
    EXPIRED = "expired"


class ParticipationState(StrEnum):
    """`confirmed` (the group filled: the order stands) and `refunded` are final."""

    PAID = "paid"
    CONFIRMED = "confirmed"
    REFUNDED = "refunded"


class GroupBuyOffer(Base):
    """What is sold in groups, at what price, how many to a group, for how long, and how many in all."""

    __tablename__ = "group_buy_offers"
    __table_args__ = (
        CheckConstraint("reserved >= 0 AND reserved <= stock", name="ck_group_buy_reserved"),
        CheckConstraint("sold >= 0 AND sold <= reserved", name="ck_group_buy_sold"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    sku: Mapped[str] = mapped_column(String(64))
    price_fen: Mapped[int] = mapped_column(BigInteger)
    list_price_fen: Mapped[int | None] = mapped_column(BigInteger)  # shown struck through
    group_size: Mapped[int] = mapped_column(Integer)
    time_limit_minutes: Mapped[int] = mapped_column(Integer)
    stock: Mapped[int] = mapped_column(Integer)  # places (items) in all
    reserved: Mapped[int] = mapped_column(Integer, default=0)
    sold: Mapped[int] = mapped_column(Integer, default=0)
    per_member_limit: Mapped[int] = mapped_column(Integer, default=1)  # places a member may hold
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]  # no group opens after this
    state: Mapped[str] = mapped_column(String(8))
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Group(Base):
    """One group (团) of an offer, opened by its leader; it fills or it expires."""

    __tablename__ = "group_buy_groups"
    __table_args__ = (
        Index("ix_group_buy_groups_offer", "offer_id", "state", "created_at"),
        Index("ix_group_buy_groups_due", "state", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    offer_id: Mapped[str] = mapped_column(ForeignKey("group_buy_offers.id"))
    leader_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    size: Mapped[int] = mapped_column(Integer)
    joined: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]  # filled or expired


class Participation(Base):
    """A member's paid place in a group: the order, and how it was paid and, if so, refunded."""

    __tablename__ = "group_buy_participations"
    __table_args__ = (
        UniqueConstraint("group_id", "member_id", name="uq_group_buy_member_in_group"),
        UniqueConstraint("idempotency_key", name="uq_group_buy_idempotency"),
        Index("uq_group_buy_external_payment", "payment_method", "payment_reference", unique=True),
        Index("ix_group_buy_participations_member", "offer_id", "member_id", "state"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the order id
    offer_id: Mapped[str] = mapped_column(ForeignKey("group_buy_offers.id"))
    group_id: Mapped[str] = mapped_column(ForeignKey("group_buy_groups.id"))
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    idempotency_key: Mapped[str] = mapped_column(String(80))
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    payment_method: Mapped[str] = mapped_column(String(16))  # stored_value | external
    payment_reference: Mapped[str] = mapped_column(String(64))  # the debit's ledger id, or the outside one
    state: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[datetime]
    confirmed_at: Mapped[datetime | None]
    refunded_at: Mapped[datetime | None]
    refund_reference: Mapped[str | None] = mapped_column(String(64))  # the return's ledger id
    external_refund_due: Mapped[bool] = mapped_column(default=False)  # finance pays it back outside
    actor: Mapped[str] = mapped_column(String(80))

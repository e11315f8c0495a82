"""Referral (推广员 / 裂变返佣) tables: rules, promoters and their share links, attributed friends,
rewards granted on registration, and the commission ledger.

A friend is attributed once (`referral_attributions.friend_id` is the primary key) and the
chain the two commission levels follow is `members.referrer_id`, which attribution sets.
A commission is one row per (order, level); its state goes pending → settled after the
rule's refund window, or pending → reversed when the order is refunded within it.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import (
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

__all__ = [
    "Attribution",
    "Commission",
    "CommissionState",
    "Promoter",
    "ReferralLink",
    "ReferralReward",
    "ReferralRule",
]


class CommissionState(StrEnum):
    """`settled` and `reversed` are final."""

    PENDING = "pending"
    SETTLED = "settled"
    REVERSED = "reversed"


class ReferralRule(Base):
    """What promoters earn: rewards when a friend registers, commission on the friend's paid orders.

    The rule of a link's campaign applies, else the default rule (`campaign` ""); the rule
    in force when the friend was attributed keeps applying to that friend.
    """

    __tablename__ = "referral_rules"
    __table_args__ = (
        CheckConstraint("level1_bp BETWEEN 0 AND 10000 AND level2_bp BETWEEN 0 AND 10000", name="ck_ref_bp"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    campaign: Mapped[str] = mapped_column(String(64), unique=True)  # "": the default rule
    active: Mapped[bool] = mapped_column(Boolean)
    register_points: Mapped[int] = mapped_column(Integer)  # to the promoter per registered friend
    register_coupon_template: Mapped[str | None] = mapped_column(String(36))  # to the promoter
    friend_coupon_template: Mapped[str | None] = mapped_column(String(36))  # to the friend
    monthly_register_limit: Mapped[int | None] = mapped_column(Integer)  # rewarded friends per month
    level1_bp: Mapped[int] = mapped_column(Integer)  # commission on the friend's paid orders
    level2_bp: Mapped[int] = mapped_column(Integer)  # to the promoter's own referrer
    per_friend_cap_fen: Mapped[int | None] = mapped_column(BigInteger)  # commission from one friend
    monthly_cap_fen: Mapped[int | None] = mapped_column(BigInteger)  # commission per promoter per month
    refund_window_days: Mapped[int] = mapped_column(Integer)
    commission_days: Mapped[int | None] = mapped_column(Integer)  # orders within N days of attribution
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Promoter(Base):
    """A member who shares links; `code` is their plain share code (no link parameters)."""

    __tablename__ = "referral_promoters"

    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"), primary_key=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)
    active: Mapped[bool] = mapped_column(Boolean)
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ReferralLink(Base):
    """A share code with its parameters; one per (promoter, campaign, store, channel).

    Registration and attribution carry only the code; the parameters are read from here,
    so a friend cannot change the campaign (and the rule) by editing the link.
    """

    __tablename__ = "referral_links"
    __table_args__ = (
        UniqueConstraint("promoter_id", "campaign", "store", "channel", name="uq_referral_link_params"),
    )

    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    promoter_id: Mapped[str] = mapped_column(ForeignKey("referral_promoters.member_id"))
    campaign: Mapped[str] = mapped_column(String(64), default="")  # "" for none (unique needs a value)
    store: Mapped[str] = mapped_column(String(32), default="")
    channel: Mapped[str] = mapped_column(String(32), default="")
    created_at: Mapped[datetime]


class Attribution(Base):
    """A friend brought by a promoter: through which link, by registering or buying, under which rule."""

    __tablename__ = "referral_attributions"
    __table_args__ = (Index("ix_referral_attributions_promoter", "promoter_id", "created_at"),)

    friend_id: Mapped[str] = mapped_column(ForeignKey("members.id"), primary_key=True)
    promoter_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    link_code: Mapped[str | None] = mapped_column(String(16))
    rule_id: Mapped[str | None] = mapped_column(ForeignKey("referral_rules.id"))
    via: Mapped[str] = mapped_column(String(16))  # registration | order | link
    campaign: Mapped[str] = mapped_column(String(64), default="")
    store: Mapped[str] = mapped_column(String(32), default="")
    channel: Mapped[str] = mapped_column(String(32), default="")
    created_at: Mapped[datetime]


class ReferralReward(Base):
    """A registration reward: granted (with what: points lot, coupon code) or refused with the reason."""

    __tablename__ = "referral_rewards"
    __table_args__ = (
        UniqueConstraint("friend_id", "kind", name="uq_referral_reward_once"),
        Index("ix_referral_rewards_member_month", "member_id", "month"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    friend_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"))  # who got it
    kind: Mapped[str] = mapped_column(String(24))  # promoter_points | promoter_coupon | friend_coupon
    granted: Mapped[bool] = mapped_column(Boolean)
    points: Mapped[int] = mapped_column(Integer, default=0)
    reference: Mapped[str | None] = mapped_column(String(64))  # coupon code or points lot id
    reason: Mapped[str] = mapped_column(String(200), default="")
    month: Mapped[str] = mapped_column(String(7))  # YYYY-MM in the chain's calendar
    created_at: Mapped[datetime]


class Commission(Base):
    """Commission (fen) to a promoter at one level for one paid order of an attributed friend.

    `amount_fen` is what the order earned within the caps; `reversed_fen` what refunds took
    back before settlement; the promoter is owed `amount_fen - reversed_fen`.
    """

    __tablename__ = "referral_commissions"
    __table_args__ = (
        UniqueConstraint("order_id", "level", name="uq_referral_commission_order_level"),
        CheckConstraint("reversed_fen >= 0 AND reversed_fen <= amount_fen", name="ck_ref_comm_reversed"),
        Index("ix_referral_commissions_promoter_month", "promoter_id", "month"),
        Index("ix_referral_commissions_due", "state", "settle_after"),
        Index("ix_referral_commissions_friend", "promoter_id", "friend_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    promoter_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    friend_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    order_id: Mapped[str] = mapped_column(String(36))
    store: Mapped[str] = mapped_column(String(32))
    level: Mapped[int] = mapped_column(Integer)
    rule_id: Mapped[str] = mapped_column(ForeignKey("referral_rules.id"))
    rate_bp: Mapped[int] = mapped_column(Integer)
    base_fen: Mapped[int] = mapped_column(BigInteger)  # the order's paid total
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    reversed_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    capped: Mapped[bool] = mapped_column(Boolean, default=False)  # a cap cut it
    month: Mapped[str] = mapped_column(String(7))  # the order's business month, for the monthly cap
    business_day: Mapped[date] = mapped_column(Date)
    state: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime]
    settle_after: Mapped[datetime]
    settled_at: Mapped[datetime | None]
    reversed_at: Mapped[datetime | None]

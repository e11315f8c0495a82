"""Coupon (优惠券) tables: templates head office designs, the coupons members hold, and gift packs.

A coupon is one row with a state: `issued` (the member holds it), `used` (a till redeemed
it for an order) or `revoked` (head office took it back). Redemption is a conditional
UPDATE (`... WHERE code = :code AND state = 'issued'`), so of two tills redeeming the same
coupon at the same instant exactly one matches. A void or a full refund of the order puts
a still-valid coupon back to `issued`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from hub.models import Base

__all__ = ["Coupon", "CouponKind", "CouponPack", "CouponState", "CouponTemplate", "IssueSource"]


class CouponKind(StrEnum):
    """What a coupon takes off."""

    AMOUNT_OFF = "amount_off"  # a fixed amount off (减 ¥10), from a threshold
    PERCENT_OFF = "percent_off"  # a percentage off, with an optional cap
    FREE_ITEM = "free_item"  # one unit of a product free (when it is in the cart)


class CouponState(StrEnum):
    """Where a coupon is; only `issued` coupons can be redeemed."""

    ISSUED = "issued"
    USED = "used"
    REVOKED = "revoked"


class IssueSource(StrEnum):
    """How a member got a coupon."""

    ISSUE = "issue"  # head office gave it to named members
    AUDIENCE = "audience"  # to a tag, segment or level
    CAMPAIGN = "campaign"  # a campaign's issue (the template's campaign)
    CLAIM_CODE = "claim_code"  # the member typed the template's claim code
    CENTRE = "centre"  # claimed in the coupon centre
    WELCOME = "welcome"  # the welcome pack on registration
    BIRTHDAY = "birthday"  # the birthday pack


class CouponTemplate(Base):
    """A coupon design; the coupons issued from it copy its validity, never its later edits of value."""

    __tablename__ = "coupon_templates"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # UUIDv7
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    amount_off_fen: Mapped[int | None] = mapped_column(BigInteger)
    percent_off_bp: Mapped[int | None] = mapped_column(Integer)  # 1500 = 15% off
    cap_fen: Mapped[int | None] = mapped_column(BigInteger)  # the most a percent coupon takes off
    threshold_fen: Mapped[int] = mapped_column(BigInteger, default=0)  # spend at least this (scoped lines)
    skus: Mapped[list[str]] = mapped_column(JSON)  # product-specific; empty: the whole order
    free_sku: Mapped[str | None] = mapped_column(String(64))
    valid_from: Mapped[datetime | None]  # fixed dates (both) ...
    valid_until: Mapped[datetime | None]
    valid_days: Mapped[int | None] = mapped_column(Integer)  # ... or N days from receipt
    per_member_limit: Mapped[int] = mapped_column(Integer, default=1)  # coupons one member may get
    total_limit: Mapped[int | None] = mapped_column(Integer)  # coupons in all; None: no limit
    issued_count: Mapped[int] = mapped_column(Integer, default=0)  # raised by a conditional UPDATE
    claimable: Mapped[bool] = mapped_column(Boolean, default=False)  # listed in the coupon centre
    claim_code: Mapped[str | None] = mapped_column(String(32), unique=True)
    campaign: Mapped[str | None] = mapped_column(String(64), index=True)
    stores: Mapped[list[str] | None] = mapped_column(JSON(none_as_null=True))  # None: every store
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Coupon(Base):
    """One coupon a member holds; `code` is what the till scans or the cashier types."""

    __tablename__ = "coupons"
    __table_args__ = (
        # The automatic grants (welcome, birthday) name themselves, so a rerun finds its own row.
        Index("uq_coupons_grant", "template_id", "member_id", "grant_key", unique=True),
        Index("ix_coupons_member", "member_id", "state"),
        Index("ix_coupons_order", "used_order_id"),
    )

    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    template_id: Mapped[str] = mapped_column(ForeignKey("coupon_templates.id"))
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(16))
    grant_key: Mapped[str | None] = mapped_column(String(64))  # e.g. "birthday:2026#0"; None: no dedupe
    state: Mapped[str] = mapped_column(String(12))
    valid_from: Mapped[datetime]
    valid_until: Mapped[datetime]
    issued_by: Mapped[str] = mapped_column(String(80))
    issued_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    used_store: Mapped[str | None] = mapped_column(String(32))
    used_order_id: Mapped[str | None] = mapped_column(String(36))
    order_total_fen: Mapped[int | None] = mapped_column(BigInteger)  # the paid order's total, from ingest
    returned: Mapped[int] = mapped_column(Integer, default=0)  # times a void/refund gave it back


class CouponPack(Base):
    """The welcome or birthday gift: which templates (and how many of each) a member gets."""

    __tablename__ = "coupon_packs"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # welcome, birthday
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSON)  # [{"template_id", "count"}]
    days_before: Mapped[int] = mapped_column(Integer, default=0)  # birthday: granted N days before
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_by: Mapped[str] = mapped_column(String(80))
    updated_at: Mapped[datetime]

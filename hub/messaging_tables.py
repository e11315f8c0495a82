"""Message outbox tables: one row per message to a member, and per-channel unsubscribes.

A message row is written in the transaction of whatever decided to send it (a campaign
release, a booking), so a message exists exactly when its cause does; the outbox worker
sends it later. `dedupe_key` is unique: enqueueing the same key again is a no-op.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from hub.models import Base

__all__ = ["Campaign", "CampaignState", "Category", "Message", "MessageState", "Unsubscribe"]


class Category(StrEnum):
    """Marketing obeys consent, unsubscribes and frequency caps; transactional needs only a recipient."""

    MARKETING = "marketing"
    TRANSACTIONAL = "transactional"  # reminders and notices the member's own action asked for


class MessageState(StrEnum):
    """Where a message is; `sent`, `failed` and `suppressed` are final."""

    PENDING = "pending"  # waiting for send_after / next_attempt_at
    SENDING = "sending"  # claimed by a worker until claimed_until
    SENT = "sent"
    FAILED = "failed"  # the provider refused it for good, or retries ran out
    SUPPRESSED = "suppressed"  # not sent on purpose: unsubscribed, no consent, capped, no phone


class CampaignState(StrEnum):
    """`released` (its messages are queued), `cancelled` and `failed` are final."""

    SCHEDULED = "scheduled"
    RELEASED = "released"
    CANCELLED = "cancelled"
    FAILED = "failed"  # the release was refused (e.g. the coupon ran out); `error` says why


class Campaign(Base):
    """A message to an audience at a time, optionally with a coupon; its results are read from facts."""

    __tablename__ = "campaigns"
    __table_args__ = (Index("ix_campaigns_due", "state", "send_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    channel: Mapped[str] = mapped_column(String(16))
    template: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    audience: Mapped[dict[str, Any]] = mapped_column(JSON)  # hub.campaigns.Audience
    coupon_template_id: Mapped[str | None] = mapped_column(String(36))
    send_at: Mapped[datetime]  # UTC
    timezone: Mapped[str] = mapped_column(String(64))  # for the local send time, birthdays and days
    attribution_days: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(12))
    audience_size: Mapped[int | None] = mapped_column(Integer)  # at release
    coupons_issued: Mapped[int | None] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime]
    released_at: Mapped[datetime | None]
    cancelled_by: Mapped[str | None] = mapped_column(String(80))
    error: Mapped[str | None] = mapped_column(String(500))
    updated_at: Mapped[datetime]


class Message(Base):
    """One message to one member on one channel, rendered by the sender from template and params."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_due", "state", "next_attempt_at"),
        Index("ix_messages_member_sent", "member_id", "category", "sent_at"),
        Index("ix_messages_campaign", "campaign_id", "state"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # UUIDv7; the provider's OutId
    dedupe_key: Mapped[str] = mapped_column(String(160), unique=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    category: Mapped[str] = mapped_column(String(16))
    template: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    campaign_id: Mapped[str | None] = mapped_column(String(36))
    state: Mapped[str] = mapped_column(String(12))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]  # = send_after until the first failure
    claimed_until: Mapped[datetime | None]  # a worker that died mid-send is taken over after this
    recipient: Mapped[str | None] = mapped_column(String(64))  # as sent (the phone then)
    provider_ref: Mapped[str | None] = mapped_column(String(80))
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class Unsubscribe(Base):
    """A member said no more marketing on this channel (e.g. replied T to an SMS, or asked at the till)."""

    __tablename__ = "message_unsubscribes"

    member_id: Mapped[str] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    source: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime]

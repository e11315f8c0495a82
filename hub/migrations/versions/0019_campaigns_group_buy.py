"""Marketing: the message outbox and unsubscribes, campaigns, group buys (拼团).

Revision ID: 0019
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hub.models import UtcDateTime

revision = "0019"
down_revision = "0014"
branch_labels = None
depends_on = None


def _messages() -> None:
    op.create_table(
        "messages",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("dedupe_key", sa.String(160), nullable=False, unique=True),
        sa.Column(
            "member_id", sa.String(36), sa.ForeignKey("members.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("template", sa.String(64), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("campaign_id", sa.String(36), nullable=True),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UtcDateTime(), nullable=False),
        sa.Column("claimed_until", UtcDateTime(), nullable=True),
        sa.Column("recipient", sa.String(64), nullable=True),
        sa.Column("provider_ref", sa.String(80), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("sent_at", UtcDateTime(), nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_messages_due", "messages", ["state", "next_attempt_at"])
    op.create_index("ix_messages_member_sent", "messages", ["member_id", "category", "sent_at"])
    op.create_index("ix_messages_campaign", "messages", ["campaign_id", "state"])
    op.create_table(
        "message_unsubscribes",
        sa.Column(
            "member_id", sa.String(36), sa.ForeignKey("members.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("channel", sa.String(16), primary_key=True),
        sa.Column("source", sa.String(80), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )


def _campaigns() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("template", sa.String(64), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("audience", sa.JSON(), nullable=False),
        sa.Column("coupon_template_id", sa.String(36), nullable=True),
        sa.Column("send_at", UtcDateTime(), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("attribution_days", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("audience_size", sa.Integer(), nullable=True),
        sa.Column("coupons_issued", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.String(80), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("released_at", UtcDateTime(), nullable=True),
        sa.Column("cancelled_by", sa.String(80), nullable=True),
        sa.Column("error", sa.String(500), nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_campaigns_due", "campaigns", ["state", "send_at"])


def _group_buy() -> None:
    op.create_table(
        "group_buy_offers",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("price_fen", sa.BigInteger(), nullable=False),
        sa.Column("list_price_fen", sa.BigInteger(), nullable=True),
        sa.Column("group_size", sa.Integer(), nullable=False),
        sa.Column("time_limit_minutes", sa.Integer(), nullable=False),
        sa.Column("stock", sa.Integer(), nullable=False),
        sa.Column("reserved", sa.Integer(), nullable=False),
        sa.Column("sold", sa.Integer(), nullable=False),
        sa.Column("per_member_limit", sa.Integer(), nullable=False),
        sa.Column("starts_at", UtcDateTime(), nullable=False),
        sa.Column("ends_at", UtcDateTime(), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("created_by", sa.String(80), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint("reserved >= 0 AND reserved <= stock", name="ck_group_buy_reserved"),
        sa.CheckConstraint("sold >= 0 AND sold <= reserved", name="ck_group_buy_sold"),
    )
    op.create_table(
        "group_buy_groups",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("offer_id", sa.String(36), sa.ForeignKey("group_buy_offers.id"), nullable=False),
        sa.Column("leader_id", sa.String(36), sa.ForeignKey("members.id"), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("joined", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("closed_at", UtcDateTime(), nullable=True),
    )
    op.create_index("ix_group_buy_groups_offer", "group_buy_groups", ["offer_id", "state", "created_at"])
    op.create_index("ix_group_buy_groups_due", "group_buy_groups", ["state", "expires_at"])
    op.create_table(
        "group_buy_participations",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("offer_id", sa.String(36), sa.ForeignKey("group_buy_offers.id"), nullable=False),
        sa.Column("group_id", sa.String(36), sa.ForeignKey("group_buy_groups.id"), nullable=False),
        sa.Column("member_id", sa.String(36), sa.ForeignKey("members.id"), nullable=False),
        sa.Column("idempotency_key", sa.String(80), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("payment_method", sa.String(16), nullable=False),
        sa.Column("payment_reference", sa.String(64), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("confirmed_at", UtcDateTime(), nullable=True),
        sa.Column("refunded_at", UtcDateTime(), nullable=True),
        sa.Column("refund_reference", sa.String(64), nullable=True),
        sa.Column("external_refund_due", sa.Boolean(), nullable=False),
        sa.Column("actor", sa.String(80), nullable=False),
        sa.UniqueConstraint("group_id", "member_id", name="uq_group_buy_member_in_group"),
        sa.UniqueConstraint("idempotency_key", name="uq_group_buy_idempotency"),
    )
    op.create_index(
        "uq_group_buy_external_payment",
        "group_buy_participations",
        ["payment_method", "payment_reference"],
        unique=True,
    )
    op.create_index(
        "ix_group_buy_participations_member", "group_buy_participations", ["offer_id", "member_id", "state"]
    )


def upgrade() -> None:
    _messages()
    _campaigns()
    _group_buy()


def downgrade() -> None:
    op.drop_table("group_buy_participations")
    op.drop_table("group_buy_groups")
    op.drop_table("group_buy_offers")
    op.drop_table("campaigns")
    op.drop_table("message_unsubscribes")
    op.drop_table("messages")

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


def upgrade() -> None:
    _messages()


def downgrade() -> None:
    op.drop_table("message_unsubscribes")
    op.drop_table("messages")

"""Members: one per mainland mobile number.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hub.models import UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "members",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("phone", sa.String(11), nullable=False, unique=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("gender", sa.String(8), nullable=False),
        sa.Column("birthday", sa.Date(), nullable=True),
        sa.Column("source_store", sa.String(32), sa.ForeignKey("stores.id", ondelete="SET NULL")),
        sa.Column("referrer_id", sa.String(36), sa.ForeignKey("members.id", ondelete="SET NULL")),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("consent_marketing", sa.Boolean(), nullable=False),
        sa.Column("consent_sms", sa.Boolean(), nullable=False),
        sa.Column("merged_into", sa.String(36), sa.ForeignKey("members.id", ondelete="SET NULL")),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_members_birthday", "members", ["birthday"])


def downgrade() -> None:
    op.drop_table("members")

"""Member tags (manual and rule-based), their audit, and RFM segments.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hub.models import UtcDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def _member_fk() -> sa.ForeignKey:
    return sa.ForeignKey("members.id", ondelete="CASCADE")


def upgrade() -> None:
    op.create_table(
        "member_tags",
        sa.Column("code", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("color", sa.String(7), nullable=True),
        sa.Column("rule", sa.JSON(), nullable=True),
        sa.Column("created_by", sa.String(80), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("evaluated_at", UtcDateTime(), nullable=True),
        sa.Column("evaluated_for", sa.Date(), nullable=True),
    )
    op.create_table(
        "member_tag_links",
        sa.Column("member_id", sa.String(36), _member_fk(), primary_key=True),
        sa.Column(
            "tag_code",
            sa.String(32),
            sa.ForeignKey("member_tags.code", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("assigned_by", sa.String(80), nullable=False),
        sa.Column("assigned_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_member_tag_links_tag", "member_tag_links", ["tag_code", "member_id"])
    op.create_table(
        "member_tag_audit",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("member_id", sa.String(36), nullable=False),
        sa.Column("tag_code", sa.String(32), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(80), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_member_tag_audit_member", "member_tag_audit", ["member_id", "id"])
    op.create_table(
        "member_segments",
        sa.Column("member_id", sa.String(36), _member_fk(), primary_key=True),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("window_days", sa.Integer(), nullable=False),
        sa.Column("recency_days", sa.Integer(), nullable=False),
        sa.Column("frequency", sa.Integer(), nullable=False),
        sa.Column("monetary_fen", sa.BigInteger(), nullable=False),
        sa.Column("r_score", sa.SmallInteger(), nullable=False),
        sa.Column("f_score", sa.SmallInteger(), nullable=False),
        sa.Column("m_score", sa.SmallInteger(), nullable=False),
        sa.Column("segment", sa.String(24), nullable=False),
        sa.Column("computed_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_member_segments_segment", "member_segments", ["segment"])


def downgrade() -> None:
    op.drop_table("member_segments")
    op.drop_table("member_tag_audit")
    op.drop_table("member_tag_links")
    op.drop_table("member_tags")

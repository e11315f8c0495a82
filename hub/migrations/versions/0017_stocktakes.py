"""Stocktakes (counts, their lines) and the store stock reports applied once by id.

Revision ID: 0017
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hub.models import UtcDateTime

revision = "0017"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stocktakes",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("store", sa.String(32), sa.ForeignKey("stores.id"), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("category", sa.String(400), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("note", sa.String(500), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(80), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("submitted_at", UtcDateTime(), nullable=True),
        sa.Column("submitted_lines", sa.Integer(), nullable=True),
        sa.Column("posted_by", sa.String(80), nullable=True),
        sa.Column("posted_at", UtcDateTime(), nullable=True),
        sa.Column("cancelled_by", sa.String(80), nullable=True),
        sa.Column("cancelled_at", UtcDateTime(), nullable=True),
        sa.Column("reason", sa.String(500), nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_stocktakes_store", "stocktakes", ["store", "state"])
    op.create_table(
        "stocktake_lines",
        sa.Column(
            "stocktake_id",
            sa.String(36),
            sa.ForeignKey("stocktakes.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("sku", sa.String(64), primary_key=True),
        sa.Column("in_scope", sa.Boolean(), nullable=False),
        sa.Column("snapshot_milli", sa.BigInteger(), nullable=False),
        sa.Column("counted_milli", sa.BigInteger(), nullable=True),
        sa.Column("counted_at", UtcDateTime(), nullable=True),
        sa.Column("counted_by", sa.String(80), nullable=True),
        sa.Column("variance_milli", sa.BigInteger(), nullable=True),
        sa.Column("unit_cost_fen", sa.BigInteger(), nullable=True),
    )
    op.create_table(
        "stock_reports",
        sa.Column("id", sa.String(80), primary_key=True),
        sa.Column("store", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("ref", sa.String(36), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail", sa.String(500), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_stock_reports_store", "stock_reports", ["store", "outcome", "received_at"])


def downgrade() -> None:
    op.drop_table("stock_reports")
    op.drop_table("stocktake_lines")
    op.drop_table("stocktakes")

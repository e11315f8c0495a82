"""Punch cards and passes: products, passes, their ledger and reconciliation flags.

Revision ID: 0009
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hub.models import UtcDateTime

revision = "0009"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pass_products",
        sa.Column("code", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("sale_sku", sa.String(64), nullable=False, unique=True),
        sa.Column("covers_skus", sa.JSON(), nullable=False),
        sa.Column("covers_categories", sa.JSON(), nullable=False),
        sa.Column("uses", sa.Integer(), nullable=True),
        sa.Column("valid_days", sa.Integer(), nullable=True),
        sa.Column("valid_until", sa.Date(), nullable=True),
        sa.Column("transferable", sa.Boolean(), nullable=False),
        sa.Column("daily_limit", sa.Integer(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "passes",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("product_code", sa.String(32), sa.ForeignKey("pass_products.code"), nullable=False),
        sa.Column("member_id", sa.String(36), sa.ForeignKey("members.id"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("total_uses", sa.Integer(), nullable=True),
        sa.Column("remaining", sa.Integer(), nullable=True),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.Column("covers_skus", sa.JSON(), nullable=False),
        sa.Column("covers_categories", sa.JSON(), nullable=False),
        sa.Column("daily_limit", sa.Integer(), nullable=True),
        sa.Column("transferable", sa.Boolean(), nullable=False),
        sa.Column("day", sa.Date(), nullable=True),
        sa.Column("day_uses", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("issued_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("store", sa.String(32), nullable=True),
        sa.Column("order_id", sa.String(36), nullable=True),
        sa.Column("line_id", sa.String(64), nullable=True),
        sa.Column("unit", sa.Integer(), nullable=True),
        sa.Column("price_fen", sa.Integer(), nullable=True),
        sa.UniqueConstraint("order_id", "line_id", "unit", name="uq_passes_order_line_unit"),
        # A count pass never goes below zero, whatever a bug or a hand-edit tries.
        sa.CheckConstraint("remaining IS NULL OR remaining >= 0", name="ck_passes_remaining"),
    )
    op.create_index("ix_passes_member_status", "passes", ["member_id", "status"])
    op.create_table(
        "pass_ledger",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("txn_id", sa.String(36), nullable=False, unique=True),
        sa.Column("pass_id", sa.String(36), sa.ForeignKey("passes.id"), nullable=False),
        sa.Column("member_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("remaining_after", sa.Integer(), nullable=True),
        sa.Column("store", sa.String(32), nullable=True),
        sa.Column("business_day", sa.Date(), nullable=True),
        sa.Column("order_id", sa.String(36), nullable=True),
        sa.Column("refund_id", sa.String(36), nullable=True),
        sa.Column("service_sku", sa.String(64), nullable=True),
        sa.Column("ref_txn_id", sa.String(36), nullable=True),
        sa.Column("reversed", sa.Boolean(), nullable=False),
        sa.Column("actor", sa.String(80), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_pass_ledger_pass", "pass_ledger", ["pass_id", "id"])
    op.create_index("ix_pass_ledger_member_id", "pass_ledger", ["member_id"])
    op.create_table(
        "pass_flags",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("pass_id", sa.String(36), nullable=True),
        sa.Column("member_id", sa.String(36), nullable=True),
        sa.Column("store", sa.String(32), nullable=True),
        sa.Column("order_id", sa.String(36), nullable=True),
        sa.Column("refund_id", sa.String(36), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("resolved", sa.Boolean(), nullable=False),
        sa.Column("resolved_by", sa.String(64), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("pass_flags")
    op.drop_table("pass_ledger")
    op.drop_table("passes")
    op.drop_table("pass_products")

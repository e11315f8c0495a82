"""Replenishment rules, suppliers and quotes, purchase orders and receipts, batches, costs, expiry blocks.

Revision ID: 0016
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hub.models import UtcDateTime

revision = "0016"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "replenishment_rules",
        sa.Column("store", sa.String(32), sa.ForeignKey("stores.id"), primary_key=True),
        sa.Column("sku", sa.String(64), primary_key=True),
        sa.Column("min_milli", sa.BigInteger(), nullable=True),
        sa.Column("max_milli", sa.BigInteger(), nullable=True),
        sa.Column("cover_days", sa.Integer(), nullable=True),
        sa.Column("safety_days", sa.Integer(), nullable=False),
        sa.Column("lead_time_days", sa.Integer(), nullable=False),
        sa.Column("order_multiple_milli", sa.BigInteger(), nullable=False),
        sa.Column("updated_by", sa.String(80), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "suppliers",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("licence_no", sa.String(64), nullable=False),
        sa.Column("licence_expires_on", sa.Date(), nullable=True),
        sa.Column("contact_name", sa.String(100), nullable=False),
        sa.Column("phone", sa.String(32), nullable=False),
        sa.Column("email", sa.String(200), nullable=False),
        sa.Column("lead_time_days", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "supplier_quotes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("supplier_id", sa.String(36), sa.ForeignKey("suppliers.id"), nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("unit_cost_fen", sa.BigInteger(), nullable=False),
        sa.Column("min_qty_milli", sa.BigInteger(), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column("valid_to", sa.Date(), nullable=False),
        sa.Column("created_by", sa.String(80), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_supplier_quotes_sku", "supplier_quotes", ["sku", "valid_to"])
    op.create_index("ix_supplier_quotes_supplier_id", "supplier_quotes", ["supplier_id"])
    op.create_table(
        "purchase_orders",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("supplier_id", sa.String(36), sa.ForeignKey("suppliers.id"), nullable=False),
        sa.Column("store", sa.String(32), sa.ForeignKey("stores.id"), nullable=False),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("note", sa.String(500), nullable=False),
        sa.Column("expected_on", sa.Date(), nullable=True),
        sa.Column("created_by", sa.String(80), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("sent_by", sa.String(80), nullable=True),
        sa.Column("sent_at", UtcDateTime(), nullable=True),
        sa.Column("received_at", UtcDateTime(), nullable=True),
        sa.Column("cancelled_by", sa.String(80), nullable=True),
        sa.Column("cancelled_at", UtcDateTime(), nullable=True),
        sa.Column("reason", sa.String(500), nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_purchase_orders_store", "purchase_orders", ["store", "state"])
    op.create_index("ix_purchase_orders_supplier", "purchase_orders", ["supplier_id", "state"])
    op.create_table(
        "purchase_order_lines",
        sa.Column(
            "po_id", sa.String(36), sa.ForeignKey("purchase_orders.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("sku", sa.String(64), primary_key=True),
        sa.Column("qty_milli", sa.BigInteger(), nullable=False),
        sa.Column("unit_cost_fen", sa.BigInteger(), nullable=False),
        sa.Column("received_milli", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "purchase_receipts",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "po_id", sa.String(36), sa.ForeignKey("purchase_orders.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("store", sa.String(32), nullable=False),
        sa.Column("lines", sa.JSON(), nullable=False),
        sa.Column("actor", sa.String(80), nullable=False),
        sa.Column("note", sa.String(500), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_purchase_receipts_po_id", "purchase_receipts", ["po_id"])
    op.create_table(
        "stock_batches",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("store", sa.String(32), nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("lot", sa.String(64), nullable=False),
        sa.Column("expires_on", sa.Date(), nullable=True),
        sa.Column("qty_milli", sa.BigInteger(), nullable=False),
        sa.Column("unit_cost_fen", sa.BigInteger(), nullable=False),
        sa.Column("po_id", sa.String(36), nullable=False),
        sa.Column("receipt_id", sa.String(64), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_stock_batches_store_sku", "stock_batches", ["store", "sku", "expires_on"])
    op.create_index("ix_stock_batches_store_expiry", "stock_batches", ["store", "expires_on"])
    op.create_table(
        "stock_costs",
        sa.Column("store", sa.String(32), primary_key=True),
        sa.Column("sku", sa.String(64), primary_key=True),
        sa.Column("avg_cost_fen", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "expiry_blocks",
        sa.Column("store", sa.String(32), primary_key=True),
        sa.Column("sku", sa.String(64), primary_key=True),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("command_id", sa.String(36), nullable=False),
        sa.Column("blocked_at", UtcDateTime(), nullable=False),
    )


def downgrade() -> None:
    for table in (
        "expiry_blocks",
        "stock_costs",
        "stock_batches",
        "purchase_receipts",
        "purchase_order_lines",
        "purchase_orders",
        "supplier_quotes",
        "suppliers",
        "replenishment_rules",
    ):
        op.drop_table(table)

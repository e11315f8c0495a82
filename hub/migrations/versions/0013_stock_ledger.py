"""Stock ledger (movements, levels, flags, pending refunds) and transfers between stores.

Quantities are BIGINT thousandths of a unit (`*_milli`), not NUMERIC: SQLite stores
NUMERIC as a float and the levels are summed in SQL.

Revision ID: 0013
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hub.models import UtcDateTime

revision = "0013"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stock_movements",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("store", sa.String(32), nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("qty_milli", sa.BigInteger(), nullable=False),
        sa.Column("in_transit_milli", sa.BigInteger(), nullable=False),
        sa.Column("source_type", sa.String(16), nullable=False),
        sa.Column("source_id", sa.String(64), nullable=False),
        sa.Column("line_ref", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(80), nullable=False),
        sa.Column("note", sa.String(500), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.UniqueConstraint(
            "store", "sku", "kind", "source_type", "source_id", "line_ref", name="uq_stock_movements_source"
        ),
    )
    op.create_index("ix_stock_movements_store_sku", "stock_movements", ["store", "sku", "id"])
    op.create_table(
        "stock_levels",
        sa.Column("store", sa.String(32), primary_key=True),
        sa.Column("sku", sa.String(64), primary_key=True),
        sa.Column("on_hand_milli", sa.BigInteger(), nullable=False),
        sa.Column("in_transit_in_milli", sa.BigInteger(), nullable=False),
        sa.Column("reserved_milli", sa.BigInteger(), nullable=False),
        sa.Column("negative_since", UtcDateTime(), nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_stock_levels_sku", "stock_levels", ["sku"])
    op.create_table(
        "stock_flags",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("store", sa.String(32), nullable=False),
        sa.Column("sku", sa.String(64), nullable=True),
        sa.Column("source_type", sa.String(16), nullable=False),
        sa.Column("source_id", sa.String(64), nullable=False),
        sa.Column("note", sa.String(500), nullable=False),
        sa.Column("resolved", sa.Boolean(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_stock_flags_open", "stock_flags", ["resolved", "store"])
    op.create_table(
        "stock_pending_refunds",
        sa.Column("refund_id", sa.String(64), primary_key=True),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("store", sa.String(32), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_stock_pending_refunds_order_id", "stock_pending_refunds", ["order_id"])
    op.create_table(
        "transfers",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("from_store", sa.String(32), sa.ForeignKey("stores.id"), nullable=False),
        sa.Column("to_store", sa.String(32), sa.ForeignKey("stores.id"), nullable=False),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("note", sa.String(500), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(80), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("approved_by", sa.String(80), nullable=True),
        sa.Column("approved_at", UtcDateTime(), nullable=True),
        sa.Column("shipped_by", sa.String(80), nullable=True),
        sa.Column("shipped_at", UtcDateTime(), nullable=True),
        sa.Column("received_at", UtcDateTime(), nullable=True),
        sa.Column("closed_by", sa.String(80), nullable=True),
        sa.Column("closed_at", UtcDateTime(), nullable=True),
        sa.Column("cancelled_by", sa.String(80), nullable=True),
        sa.Column("cancelled_at", UtcDateTime(), nullable=True),
        sa.Column("reason", sa.String(500), nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_transfers_from", "transfers", ["from_store", "state"])
    op.create_index("ix_transfers_to", "transfers", ["to_store", "state"])
    op.create_table(
        "transfer_lines",
        sa.Column(
            "transfer_id",
            sa.String(36),
            sa.ForeignKey("transfers.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("sku", sa.String(64), primary_key=True),
        sa.Column("qty_milli", sa.BigInteger(), nullable=False),
        sa.Column("shipped_milli", sa.BigInteger(), nullable=False),
        sa.Column("arrived_milli", sa.BigInteger(), nullable=False),
        sa.Column("damaged_milli", sa.BigInteger(), nullable=False),
        sa.Column("over_milli", sa.BigInteger(), nullable=False),
        sa.Column("lost_milli", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "transfer_receipts",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "transfer_id", sa.String(36), sa.ForeignKey("transfers.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("lines", sa.JSON(), nullable=False),
        sa.Column("actor", sa.String(80), nullable=False),
        sa.Column("note", sa.String(500), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_transfer_receipts_transfer_id", "transfer_receipts", ["transfer_id"])
    op.create_table(
        "transfer_discrepancies",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "transfer_id", sa.String(36), sa.ForeignKey("transfers.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("receipt_id", sa.String(36), nullable=True),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("qty_milli", sa.BigInteger(), nullable=False),
        sa.Column("note", sa.String(500), nullable=False),
        sa.Column("actor", sa.String(80), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("resolved", sa.Boolean(), nullable=False),
        sa.Column("resolved_by", sa.String(80), nullable=True),
        sa.Column("resolved_at", UtcDateTime(), nullable=True),
        sa.Column("resolution", sa.String(500), nullable=True),
    )
    op.create_index("ix_transfer_discrepancies_transfer", "transfer_discrepancies", ["transfer_id", "id"])


def downgrade() -> None:
    op.drop_table("transfer_discrepancies")
    op.drop_table("transfer_receipts")
    op.drop_table("transfer_lines")
    op.drop_table("transfers")
    op.drop_table("stock_pending_refunds")
    op.drop_table("stock_flags")
    op.drop_table("stock_levels")
    op.drop_table("stock_movements")

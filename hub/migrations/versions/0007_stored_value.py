"""Stored value: accounts (principal and bonus), ledger, top-ups, rules, flags, pending refunds.

Revision ID: 0007
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hub.models import UtcDateTime

revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stored_value_accounts",
        sa.Column(
            "member_id", sa.String(36), sa.ForeignKey("members.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("principal_fen", sa.BigInteger(), nullable=False),
        sa.Column("bonus_fen", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint("principal_fen >= 0", name="ck_sv_principal_not_negative"),
        sa.CheckConstraint("bonus_fen >= 0", name="ck_sv_bonus_not_negative"),
    )
    op.create_table(
        "stored_value_ledger",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "member_id", sa.String(36), sa.ForeignKey("members.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("principal_delta_fen", sa.BigInteger(), nullable=False),
        sa.Column("bonus_delta_fen", sa.BigInteger(), nullable=False),
        sa.Column("principal_after_fen", sa.BigInteger(), nullable=False),
        sa.Column("bonus_after_fen", sa.BigInteger(), nullable=False),
        sa.Column("shortfall_fen", sa.BigInteger(), nullable=False),
        sa.Column("store", sa.String(32), nullable=True),
        sa.Column("order_id", sa.String(36), nullable=True),
        sa.Column("refund_id", sa.String(36), nullable=True),
        sa.Column("tender_index", sa.Integer(), nullable=True),
        sa.Column("topup_id", sa.String(36), nullable=True),
        sa.Column("debit_id", sa.String(36), nullable=True),
        sa.Column("actor", sa.String(80), nullable=False),
        sa.Column("note", sa.String(500), nullable=False),
        sa.Column("business_day", sa.Date(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_sv_ledger_member", "stored_value_ledger", ["member_id", "created_at"])
    op.create_index("ix_sv_ledger_day", "stored_value_ledger", ["business_day", "store"])
    op.create_index("ix_sv_ledger_order", "stored_value_ledger", ["order_id"])
    op.create_index("ix_sv_ledger_debit", "stored_value_ledger", ["debit_id"])
    op.create_table(
        "stored_value_topups",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "member_id", sa.String(36), sa.ForeignKey("members.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("store", sa.String(32), nullable=True),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("bonus_fen", sa.BigInteger(), nullable=False),
        sa.Column("rule", sa.JSON(), nullable=True),
        sa.Column("payment_method", sa.String(16), nullable=False),
        sa.Column("payment_reference", sa.String(64), nullable=True),
        sa.Column("actor", sa.String(80), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("refunded_at", UtcDateTime(), nullable=True),
        sa.Column("refunded_by", sa.String(80), nullable=True),
        sa.Column("refund_reason", sa.String(500), nullable=True),
        sa.Column("refund_paid_fen", sa.BigInteger(), nullable=True),
        sa.Column("refund_clawback_fen", sa.BigInteger(), nullable=True),
        sa.Column("refund_shortfall_fen", sa.BigInteger(), nullable=True),
    )
    op.create_index(
        "uq_sv_topup_payment", "stored_value_topups", ["payment_method", "payment_reference"], unique=True
    )
    op.create_index("ix_sv_topup_member", "stored_value_topups", ["member_id"])
    op.create_table(
        "stored_value_rules",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("tiers", sa.JSON(), nullable=False),
        sa.Column("spending_order", sa.String(16), nullable=False),
        sa.Column("updated_by", sa.String(80), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "stored_value_flags",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column(
            "member_id", sa.String(36), sa.ForeignKey("members.id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column("store", sa.String(32), nullable=False),
        sa.Column("order_id", sa.String(36), nullable=True),
        sa.Column("tender_index", sa.Integer(), nullable=True),
        sa.Column("debit_id", sa.String(36), nullable=True),
        sa.Column("shortfall_fen", sa.BigInteger(), nullable=False),
        sa.Column("covered_fen", sa.BigInteger(), nullable=False),
        sa.Column("note", sa.String(500), nullable=False),
        sa.Column("resolved", sa.Boolean(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("resolved_at", UtcDateTime(), nullable=True),
        sa.Column("resolved_by", sa.String(80), nullable=True),
        sa.Column("resolution", sa.String(500), nullable=True),
    )
    op.create_index("ix_sv_flags_open", "stored_value_flags", ["resolved", "store"])
    op.create_table(
        "stored_value_pending_refunds",
        sa.Column("refund_id", sa.String(36), primary_key=True),
        sa.Column("order_id", sa.String(36), nullable=False),
        sa.Column("store", sa.String(32), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_stored_value_pending_refunds_order_id", "stored_value_pending_refunds", ["order_id"])


def downgrade() -> None:
    for table in (
        "stored_value_pending_refunds",
        "stored_value_flags",
        "stored_value_rules",
        "stored_value_topups",
        "stored_value_ledger",
        "stored_value_accounts",
    ):
        op.drop_table(table)

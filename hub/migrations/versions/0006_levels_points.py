"""Levels and points: configuration, level counters and history, points lots, ledger, redemptions.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hub.models import UtcDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _member(nullable: bool = False, primary_key: bool = False) -> sa.Column:
    return sa.Column(
        "member_id", sa.String(36), sa.ForeignKey("members.id"), nullable=nullable, primary_key=primary_key
    )


def upgrade() -> None:
    op.create_table(
        "loyalty_settings",
        sa.Column("key", sa.String(16), primary_key=True),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "member_levels",
        _member(primary_key=True),
        sa.Column("level_code", sa.String(32), nullable=True),
        sa.Column("upgraded_at", UtcDateTime(), nullable=True),
        sa.Column("spend_fen", sa.BigInteger(), nullable=False),
        sa.Column("topup_fen", sa.BigInteger(), nullable=False),
        sa.Column("points_earned", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_member_levels_level_code", "member_levels", ["level_code"])
    op.create_table(
        "level_progress",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _member(),
        sa.Column("metric", sa.String(8), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.String(120), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_level_progress_member_at", "level_progress", ["member_id", "at"])
    op.create_index("ix_level_progress_at", "level_progress", ["at"])
    op.create_table(
        "level_changes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _member(),
        sa.Column("from_code", sa.String(32), nullable=True),
        sa.Column("to_code", sa.String(32), nullable=True),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("metric", sa.String(8), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.String(120), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_level_changes_member", "level_changes", ["member_id", "id"])
    op.create_table(
        "points_accounts",
        _member(primary_key=True),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint("balance >= 0", name="ck_points_accounts_balance"),
    )
    op.create_table(
        "points_lots",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _member(),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("source", sa.String(120), nullable=False),
        sa.Column("order_id", sa.String(36), nullable=True),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.Column("earned_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint("remaining >= 0 AND remaining <= points", name="ck_points_lots_remaining"),
    )
    op.create_index("ix_points_lots_member_expiry", "points_lots", ["member_id", "expires_at"])
    op.create_index("ix_points_lots_expiry", "points_lots", ["expires_at"])
    op.create_table(
        "points_ledger",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _member(),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("balance_after", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.String(120), nullable=False),
        sa.Column("order_id", sa.String(36), nullable=True),
        sa.Column("lot_id", sa.Integer(), nullable=True),
        sa.Column("note", sa.String(200), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_points_ledger_member", "points_ledger", ["member_id", "id"])
    op.create_index("ix_points_ledger_order_id", "points_ledger", ["order_id"])
    op.create_table(
        "points_txns",
        sa.Column("id", sa.String(36), primary_key=True),
        _member(),
        sa.Column("store", sa.String(32), nullable=False),
        sa.Column("order_id", sa.String(36), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("refunded_fen", sa.BigInteger(), nullable=False),
        sa.Column("returned_points", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_points_txns_order_id", "points_txns", ["order_id"])
    op.create_table(
        "points_txn_lots",
        sa.Column("txn_id", sa.String(36), sa.ForeignKey("points_txns.id"), primary_key=True),
        sa.Column("lot_id", sa.Integer(), sa.ForeignKey("points_lots.id"), primary_key=True),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("returned", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "points_earnings",
        sa.Column("order_id", sa.String(36), primary_key=True),
        _member(),
        sa.Column("store", sa.String(32), nullable=False),
        sa.Column("base_fen", sa.BigInteger(), nullable=False),
        sa.Column("spend_fen", sa.BigInteger(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("lot_id", sa.Integer(), nullable=True),
        sa.Column("refunded_fen", sa.BigInteger(), nullable=False),
        sa.Column("reversed_points", sa.BigInteger(), nullable=False),
        sa.Column("reversed_spend_fen", sa.BigInteger(), nullable=False),
        sa.Column("unrecovered", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_points_earnings_member_id", "points_earnings", ["member_id"])
    op.create_table(
        "points_refunds_applied",
        sa.Column("refund_id", sa.String(36), primary_key=True),
        sa.Column("order_id", sa.String(36), nullable=False),
        sa.Column("applied_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_points_refunds_applied_order_id", "points_refunds_applied", ["order_id"])


def downgrade() -> None:
    for table in (
        "points_refunds_applied",
        "points_earnings",
        "points_txn_lots",
        "points_txns",
        "points_ledger",
        "points_lots",
        "points_accounts",
        "level_changes",
        "level_progress",
        "member_levels",
        "loyalty_settings",
    ):
        op.drop_table(table)

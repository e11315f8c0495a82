"""Promotion authoring (promotions, their versions, publications) and coupons (templates,
coupons, gift packs).

Revision ID: 0018
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hub.models import UtcDateTime

revision = "0018"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "promotions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("rule", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(80), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(80), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "promotion_versions",
        sa.Column(
            "promotion_id",
            sa.String(36),
            sa.ForeignKey("promotions.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("rule", sa.JSON(), nullable=False),
        sa.Column("note", sa.String(500), nullable=False),
        sa.Column("created_by", sa.String(80), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "promotion_publications",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("published_by", sa.String(80), nullable=False),
        sa.Column("published_at", UtcDateTime(), nullable=False),
        sa.Column("promotions", sa.JSON(), nullable=False),
        sa.Column("stores", sa.JSON(), nullable=False),
    )
    op.create_table(
        "coupon_templates",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount_off_fen", sa.BigInteger(), nullable=True),
        sa.Column("percent_off_bp", sa.Integer(), nullable=True),
        sa.Column("cap_fen", sa.BigInteger(), nullable=True),
        sa.Column("threshold_fen", sa.BigInteger(), nullable=False),
        sa.Column("skus", sa.JSON(), nullable=False),
        sa.Column("free_sku", sa.String(64), nullable=True),
        sa.Column("valid_from", UtcDateTime(), nullable=True),
        sa.Column("valid_until", UtcDateTime(), nullable=True),
        sa.Column("valid_days", sa.Integer(), nullable=True),
        sa.Column("per_member_limit", sa.Integer(), nullable=False),
        sa.Column("total_limit", sa.Integer(), nullable=True),
        sa.Column("issued_count", sa.Integer(), nullable=False),
        sa.Column("claimable", sa.Boolean(), nullable=False),
        sa.Column("claim_code", sa.String(32), nullable=True, unique=True),
        sa.Column("campaign", sa.String(64), nullable=True),
        sa.Column("stores", sa.JSON(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(80), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_coupon_templates_campaign", "coupon_templates", ["campaign"])
    op.create_table(
        "coupons",
        sa.Column("code", sa.String(16), primary_key=True),
        sa.Column("template_id", sa.String(36), sa.ForeignKey("coupon_templates.id"), nullable=False),
        sa.Column(
            "member_id", sa.String(36), sa.ForeignKey("members.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("grant_key", sa.String(64), nullable=True),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("valid_from", UtcDateTime(), nullable=False),
        sa.Column("valid_until", UtcDateTime(), nullable=False),
        sa.Column("issued_by", sa.String(80), nullable=False),
        sa.Column("issued_at", UtcDateTime(), nullable=False),
        sa.Column("used_at", UtcDateTime(), nullable=True),
        sa.Column("used_store", sa.String(32), nullable=True),
        sa.Column("used_order_id", sa.String(36), nullable=True),
        sa.Column("order_total_fen", sa.BigInteger(), nullable=True),
        sa.Column("returned", sa.Integer(), nullable=False),
    )
    op.create_index("uq_coupons_grant", "coupons", ["template_id", "member_id", "grant_key"], unique=True)
    op.create_index("ix_coupons_member", "coupons", ["member_id", "state"])
    op.create_index("ix_coupons_order", "coupons", ["used_order_id"])
    op.create_table(
        "coupon_packs",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.Column("days_before", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("updated_by", sa.String(80), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("coupon_packs")
    op.drop_index("ix_coupons_order", table_name="coupons")
    op.drop_index("ix_coupons_member", table_name="coupons")
    op.drop_index("uq_coupons_grant", table_name="coupons")
    op.drop_table("coupons")
    op.drop_index("ix_coupon_templates_campaign", table_name="coupon_templates")
    op.drop_table("coupon_templates")
    op.drop_table("promotion_publications")
    op.drop_table("promotion_versions")
    op.drop_table("promotions")

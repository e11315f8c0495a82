"""Marketing: referrals (推广员 / 裂变返佣), the points mall (积分商城) and the lucky wheel (大转盘).

Revision ID: 0021
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hub.models import UtcDateTime

revision = "0021"
down_revision = "0014"
branch_labels = None
depends_on = None


def _member(name: str, **kw: object) -> sa.Column[str]:
    return sa.Column(name, sa.String(36), sa.ForeignKey("members.id"), nullable=False, **kw)  # type: ignore[arg-type]


def _referrals() -> None:
    op.create_table(
        "referral_rules",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("campaign", sa.String(64), nullable=False, unique=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("register_points", sa.Integer(), nullable=False),
        sa.Column("register_coupon_template", sa.String(36), nullable=True),
        sa.Column("friend_coupon_template", sa.String(36), nullable=True),
        sa.Column("monthly_register_limit", sa.Integer(), nullable=True),
        sa.Column("level1_bp", sa.Integer(), nullable=False),
        sa.Column("level2_bp", sa.Integer(), nullable=False),
        sa.Column("per_friend_cap_fen", sa.BigInteger(), nullable=True),
        sa.Column("monthly_cap_fen", sa.BigInteger(), nullable=True),
        sa.Column("refund_window_days", sa.Integer(), nullable=False),
        sa.Column("commission_days", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.String(80), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint(
            "level1_bp BETWEEN 0 AND 10000 AND level2_bp BETWEEN 0 AND 10000", name="ck_ref_bp"
        ),
    )
    op.create_table(
        "referral_promoters",
        _member("member_id", primary_key=True),
        sa.Column("code", sa.String(16), nullable=False, unique=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(80), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "referral_links",
        sa.Column("code", sa.String(16), primary_key=True),
        sa.Column(
            "promoter_id", sa.String(36), sa.ForeignKey("referral_promoters.member_id"), nullable=False
        ),
        sa.Column("campaign", sa.String(64), nullable=False),
        sa.Column("store", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.UniqueConstraint("promoter_id", "campaign", "store", "channel", name="uq_referral_link_params"),
    )
    op.create_table(
        "referral_attributions",
        _member("friend_id", primary_key=True),
        _member("promoter_id"),
        sa.Column("link_code", sa.String(16), nullable=True),
        sa.Column("rule_id", sa.String(36), sa.ForeignKey("referral_rules.id"), nullable=True),
        sa.Column("via", sa.String(16), nullable=False),
        sa.Column("campaign", sa.String(64), nullable=False),
        sa.Column("store", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index(
        "ix_referral_attributions_promoter", "referral_attributions", ["promoter_id", "created_at"]
    )
    op.create_table(
        "referral_rewards",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _member("friend_id"),
        _member("member_id"),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(64), nullable=True),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.UniqueConstraint("friend_id", "kind", name="uq_referral_reward_once"),
    )
    op.create_index("ix_referral_rewards_member_month", "referral_rewards", ["member_id", "month"])
    op.create_table(
        "referral_commissions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _member("promoter_id"),
        _member("friend_id"),
        sa.Column("order_id", sa.String(36), nullable=False),
        sa.Column("store", sa.String(32), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("rule_id", sa.String(36), sa.ForeignKey("referral_rules.id"), nullable=False),
        sa.Column("rate_bp", sa.Integer(), nullable=False),
        sa.Column("base_fen", sa.BigInteger(), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("reversed_fen", sa.BigInteger(), nullable=False),
        sa.Column("capped", sa.Boolean(), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("business_day", sa.Date(), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("settle_after", UtcDateTime(), nullable=False),
        sa.Column("settled_at", UtcDateTime(), nullable=True),
        sa.Column("reversed_at", UtcDateTime(), nullable=True),
        sa.UniqueConstraint("order_id", "level", name="uq_referral_commission_order_level"),
        sa.CheckConstraint("reversed_fen >= 0 AND reversed_fen <= amount_fen", name="ck_ref_comm_reversed"),
    )
    op.create_index(
        "ix_referral_commissions_promoter_month", "referral_commissions", ["promoter_id", "month"]
    )
    op.create_index("ix_referral_commissions_due", "referral_commissions", ["state", "settle_after"])
    op.create_index("ix_referral_commissions_friend", "referral_commissions", ["promoter_id", "friend_id"])


def _mall() -> None:
    op.create_table(
        "mall_items",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("sku", sa.String(64), nullable=True),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("cash_fen", sa.BigInteger(), nullable=False),
        sa.Column("stock", sa.Integer(), nullable=False),
        sa.Column("redeemed", sa.Integer(), nullable=False),
        sa.Column("per_member_limit", sa.Integer(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(80), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint("redeemed >= 0 AND redeemed <= stock", name="ck_mall_items_stock"),
        sa.CheckConstraint("points > 0 AND cash_fen >= 0", name="ck_mall_items_price"),
    )
    op.create_table(
        "mall_redemptions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("item_id", sa.String(36), sa.ForeignKey("mall_items.id"), nullable=False),
        _member("member_id"),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("cash_fen", sa.BigInteger(), nullable=False),
        sa.Column("payment_method", sa.String(16), nullable=True),
        sa.Column("payment_reference", sa.String(64), nullable=True),
        sa.Column("idempotency_key", sa.String(80), nullable=False),
        sa.Column("points_lots", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("actor", sa.String(80), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("collected_at", UtcDateTime(), nullable=True),
        sa.Column("collected_store", sa.String(32), nullable=True),
        sa.Column("cancelled_at", UtcDateTime(), nullable=True),
        sa.Column("refund_reference", sa.String(64), nullable=True),
        sa.Column("external_refund_due", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("idempotency_key", name="uq_mall_redemptions_key"),
    )
    op.create_index("ix_mall_redemptions_member_item", "mall_redemptions", ["member_id", "item_id"])


def _wheel() -> None:
    op.create_table(
        "wheels",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("spin_cost_points", sa.Integer(), nullable=False),
        sa.Column("daily_spins", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(80), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "wheel_prizes",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("wheel_id", sa.String(36), sa.ForeignKey("wheels.id"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("coupon_template", sa.String(36), nullable=True),
        sa.Column("sku", sa.String(64), nullable=True),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("stock", sa.Integer(), nullable=True),
        sa.Column("given", sa.Integer(), nullable=False),
        sa.Column("consolation", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("wheel_id", "position", name="uq_wheel_prizes_position"),
        sa.CheckConstraint("stock IS NULL OR (given >= 0 AND given <= stock)", name="ck_wheel_prizes_stock"),
        sa.CheckConstraint("weight >= 0", name="ck_wheel_prizes_weight"),
    )
    op.create_table(
        "wheel_spins",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("wheel_id", sa.String(36), sa.ForeignKey("wheels.id"), nullable=False),
        _member("member_id"),
        sa.Column("idempotency_key", sa.String(80), nullable=False),
        sa.Column("spun_at", UtcDateTime(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("draw", sa.BigInteger(), nullable=False),
        sa.Column("total_weight", sa.BigInteger(), nullable=False),
        sa.Column("weights", sa.JSON(), nullable=False),
        sa.Column("drawn_prize_id", sa.String(36), sa.ForeignKey("wheel_prizes.id"), nullable=False),
        sa.Column("prize_id", sa.String(36), sa.ForeignKey("wheel_prizes.id"), nullable=False),
        sa.Column("fallback_reason", sa.String(200), nullable=False),
        sa.Column("points_cost", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(64), nullable=True),
        sa.Column("collected_at", UtcDateTime(), nullable=True),
        sa.Column("collected_store", sa.String(32), nullable=True),
        sa.UniqueConstraint("idempotency_key", name="uq_wheel_spins_key"),
    )
    op.create_index("ix_wheel_spins_member_day", "wheel_spins", ["wheel_id", "member_id", "day"])
    op.create_index("ix_wheel_spins_wheel", "wheel_spins", ["wheel_id", "spun_at"])


def upgrade() -> None:
    _referrals()
    _mall()
    _wheel()


def downgrade() -> None:
    for table in (
        "wheel_spins",
        "wheel_prizes",
        "wheels",
        "mall_redemptions",
        "mall_items",
        "referral_commissions",
        "referral_rewards",
        "referral_attributions",
        "referral_links",
        "referral_promoters",
        "referral_rules",
    ):
        op.drop_table(table)

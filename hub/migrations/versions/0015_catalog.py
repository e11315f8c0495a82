"""Head-office catalog: categories (tree), products and variants, barcodes, units, store links.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hub.models import UtcDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "catalog_categories",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("parent_id", sa.Integer(), sa.ForeignKey("catalog_categories.id"), nullable=True),
        sa.Column("name", sa.String(40), nullable=False),
        sa.Column("path", sa.String(400), nullable=False, unique=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_catalog_categories_parent_id", "catalog_categories", ["parent_id"])
    op.create_table(
        "catalog_products",
        sa.Column("sku", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("category_id", sa.Integer(), sa.ForeignKey("catalog_categories.id"), nullable=True),
        sa.Column("variant_of", sa.String(64), nullable=True),
        sa.Column("variant", sa.String(40), nullable=True),
        sa.Column("base_unit", sa.String(8), nullable=False),
        sa.Column("price_fen", sa.BigInteger(), nullable=False),
        sa.Column("cost_fen", sa.BigInteger(), nullable=True),
        sa.Column("member_price_fen", sa.BigInteger(), nullable=True),
        sa.Column("tax_rate_bp", sa.Integer(), nullable=False),
        sa.Column("plu", sa.String(13), nullable=True),
        sa.Column("open_price", sa.Boolean(), nullable=False),
        sa.Column("pinyin", sa.String(100), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(80), nullable=False),
    )
    op.create_index("ix_catalog_products_category", "catalog_products", ["category_id", "sku"])
    op.create_index("ix_catalog_products_variant_of", "catalog_products", ["variant_of"])
    op.create_table(
        "catalog_units",
        sa.Column(
            "sku", sa.String(64), sa.ForeignKey("catalog_products.sku", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("unit", sa.String(16), primary_key=True),
        sa.Column("base_milli", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "catalog_barcodes",
        sa.Column("code_key", sa.String(64), primary_key=True),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column(
            "sku", sa.String(64), sa.ForeignKey("catalog_products.sku", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("unit", sa.String(16), nullable=True),
    )
    op.create_index("ix_catalog_barcodes_sku", "catalog_barcodes", ["sku"])
    op.create_table(
        "catalog_store_items",
        sa.Column("store", sa.String(32), sa.ForeignKey("stores.id"), primary_key=True),
        sa.Column(
            "sku", sa.String(64), sa.ForeignKey("catalog_products.sku", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("linked", sa.Boolean(), nullable=False),
        sa.Column("available", sa.Boolean(), nullable=False),
        sa.Column("price_fen", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(80), nullable=False),
    )


def downgrade() -> None:
    for table in (
        "catalog_store_items",
        "catalog_barcodes",
        "catalog_units",
        "catalog_products",
        "catalog_categories",
    ):
        op.drop_table(table)

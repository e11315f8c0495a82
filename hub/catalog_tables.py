"""Head-office catalog tables: a category tree, products (one row per SKU; a variant names its
parent SKU), barcodes (several per SKU, each for one unit), units with their size in the
SKU's base unit, and each store's link, availability and price override.

Money is integer fen; a unit's size is integer thousandths of the base unit (a case of 24
pieces is 24000), like the stock ledger's quantities.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from hub.models import Base

__all__ = ["CatalogBarcode", "CatalogCategory", "CatalogProduct", "CatalogStoreItem", "CatalogUnit"]


class CatalogCategory(Base):
    """One node of the category tree; `path` is the names from the root joined by '/'."""

    __tablename__ = "catalog_categories"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("catalog_categories.id"), index=True)
    name: Mapped[str] = mapped_column(String(40))
    path: Mapped[str] = mapped_column(String(400), unique=True)
    created_at: Mapped[datetime]


class CatalogProduct(Base):
    """One SKU as head office defines it; `price_fen` is the list price every store sells at
    unless it has an override."""

    __tablename__ = "catalog_products"
    __table_args__ = (Index("ix_catalog_products_category", "category_id", "sku"),)

    sku: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    category_id: Mapped[int | None] = mapped_column(ForeignKey("catalog_categories.id"))
    variant_of: Mapped[str | None] = mapped_column(String(64), index=True)
    variant: Mapped[str | None] = mapped_column(String(40))
    base_unit: Mapped[str] = mapped_column(String(8))  # "piece" or "kg": what the till sells by
    price_fen: Mapped[int] = mapped_column(BigInteger)
    cost_fen: Mapped[int | None] = mapped_column(BigInteger)
    member_price_fen: Mapped[int | None] = mapped_column(BigInteger)
    tax_rate_bp: Mapped[int] = mapped_column(Integer)  # basis points: 1300 = 13 %
    plu: Mapped[str | None] = mapped_column(String(13))
    open_price: Mapped[bool] = mapped_column(Boolean)
    pinyin: Mapped[str] = mapped_column(String(100))
    active: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    updated_by: Mapped[str] = mapped_column(String(80))


class CatalogUnit(Base):
    """A unit a SKU is also counted in (箱/case), as thousandths of its base unit."""

    __tablename__ = "catalog_units"

    sku: Mapped[str] = mapped_column(ForeignKey("catalog_products.sku", ondelete="CASCADE"), primary_key=True)
    unit: Mapped[str] = mapped_column(String(16), primary_key=True)
    base_milli: Mapped[int] = mapped_column(BigInteger)


class CatalogBarcode(Base):
    """A barcode of a SKU; `unit` is None for the base unit, else a `CatalogUnit` of the SKU.

    `code_key` is the code as the till matches it (GTINs zero-padded to 14 digits), so
    "6954767410388" and "06954767410388" cannot belong to two SKUs.
    """

    __tablename__ = "catalog_barcodes"

    code_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    code: Mapped[str] = mapped_column(String(64))
    sku: Mapped[str] = mapped_column(ForeignKey("catalog_products.sku", ondelete="CASCADE"), index=True)
    unit: Mapped[str | None] = mapped_column(String(16))


class CatalogStoreItem(Base):
    """A store's relation to a SKU: linked (sold there), available, and its own price."""

    __tablename__ = "catalog_store_items"
    store: Mapped[str] = mapped_column(ForeignKey("stores.id"), primary_key=True)
    sku: Mapped[str] = mapped_column(ForeignKey("catalog_products.sku", ondelete="CASCADE"), primary_key=True)
    linked: Mapped[bool] = mapped_column(Boolean)
    available: Mapped[bool] = mapped_column(Boolean)
    price_fen: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]
    updated_by: Mapped[str] = mapped_column(String(80))

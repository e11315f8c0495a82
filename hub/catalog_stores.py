"""Stores and the catalog: linking items (门店一键关联), availability, store prices, publishing.

A store sells what it has linked. Publishing builds the store's catalog snapshot (the
shape the edge's `CatalogDocument` validates) from its linked products, and saves and
sends it through the hub's snapshot path together with a `prices` snapshot carrying the
same price overrides: the edge applies the two kinds in whatever order they arrive, and
an older hand-made `prices` snapshot must not undo the published prices.

What the till cannot express is left out of the snapshot and kept at the hub: extra
units and their barcodes (the edge's catalog has no pack quantity, so a case barcode
would sell one piece), cost is sent (the till shows margins), tax rate is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, select, true
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from hub.catalog import CatalogError, ProductView, load_products
from hub.catalog_tables import CatalogProduct, CatalogStoreItem
from hub.db import AsyncSession, Database
from hub.errors import NotFound
from hub.models import Store
from hub.snapshots import save_snapshot
from protocol import SnapshotKind

if TYPE_CHECKING:
    from hub.link import BrokerLink

__all__ = [
    "Published",
    "StoreItemView",
    "link_products",
    "linked_stores",
    "publish_store",
    "set_store_item",
    "store_catalog_body",
    "store_item_json",
    "store_items_page",
    "unlink_products",
]


async def _require_store(session: AsyncSession, store: str) -> None:
    if await session.get(Store, store) is None:
        raise NotFound(f"no store '{store}'")


async def _known_skus(session: AsyncSession, skus: list[str]) -> None:
    found = set((await session.scalars(select(CatalogProduct.sku).where(CatalogProduct.sku.in_(skus)))).all())
    missing = [sku for sku in skus if sku not in found]
    if missing:
        raise NotFound(f"not in the catalog: {', '.join(missing[:10])}{' …' if len(missing) > 10 else ''}")


async def _items(session: AsyncSession, store: str, skus: list[str]) -> dict[str, CatalogStoreItem]:
    rows = await session.scalars(
        select(CatalogStoreItem).where(CatalogStoreItem.store == store, CatalogStoreItem.sku.in_(skus))
    )
    return {row.sku: row for row in rows}


async def link_products(session: AsyncSession, store: str, skus: list[str] | None, *, actor: str) -> int:
    """Link products to a store (all active ones if `skus` is None); how many were newly linked."""
    await _require_store(session, store)
    if skus is None:
        skus = list(
            (await session.scalars(select(CatalogProduct.sku).where(CatalogProduct.active.is_(True)))).all()
        )
    else:
        skus = sorted(set(skus))
        await _known_skus(session, skus)
    # An upsert, so two people linking the same products at once both succeed.
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    now = datetime.now(UTC)
    changed = 0
    for start in range(0, len(skus), 500):
        part = skus[start : start + 500]
        linked = dict(
            (
                await session.execute(
                    select(CatalogStoreItem.sku, CatalogStoreItem.linked).where(
                        CatalogStoreItem.store == store, CatalogStoreItem.sku.in_(part)
                    )
                )
            ).all()
        )
        fresh = [sku for sku in part if not linked.get(sku, False)]
        if not fresh:
            continue
        rows = [
            {"store": store, "sku": sku, "linked": True, "available": True, "price_fen": None,
             "updated_at": now, "updated_by": actor}
            for sku in fresh
        ]  # fmt: skip
        stmt = insert(CatalogStoreItem).values(rows)
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=["store", "sku"],
                set_={"linked": True, "updated_at": stmt.excluded.updated_at, "updated_by": actor},
            )
        )
        changed += len(fresh)
    return changed


async def unlink_products(session: AsyncSession, store: str, skus: list[str], *, actor: str) -> int:
    """Stop selling products at a store (its price override is kept for a later link)."""
    await _require_store(session, store)
    now = datetime.now(UTC)
    changed = 0
    for row in (await _items(session, store, sorted(set(skus)))).values():
        if row.linked:
            row.linked, row.updated_at, row.updated_by = False, now, actor
            changed += 1
    await session.flush()
    return changed


async def set_store_item(
    session: AsyncSession,
    store: str,
    sku: str,
    *,
    actor: str,
    available: bool | None = None,
    price_fen: int | None = None,
    clear_price: bool = False,
) -> CatalogStoreItem:
    """Set a linked product's availability and/or the store's price (`clear_price`: back to list)."""
    await _require_store(session, store)
    await _known_skus(session, [sku])
    row = await session.get(CatalogStoreItem, (store, sku), with_for_update=True)
    if row is None or not row.linked:
        raise CatalogError(f"{sku} is not linked to store '{store}'; link it first")
    if available is not None:
        row.available = available
    if clear_price:
        row.price_fen = None
    elif price_fen is not None:
        row.price_fen = price_fen
    row.updated_at, row.updated_by = datetime.now(UTC), actor
    await session.flush()
    return row


@dataclass(frozen=True)
class StoreItemView:
    """A product as one store sees it."""

    view: ProductView
    item: CatalogStoreItem | None

    @property
    def linked(self) -> bool:
        return self.item is not None and self.item.linked

    @property
    def price_fen(self) -> int:
        """What the store sells at: its override, else the list price."""
        override = self.item.price_fen if self.item is not None else None
        return override if override is not None else self.view.product.price_fen


async def store_items_page(
    session: AsyncSession,
    store: str,
    *,
    linked: bool | None = None,
    sku: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[StoreItemView], bool]:
    """Catalog products with this store's link, availability and price, by SKU."""
    await _require_store(session, store)
    join = and_(CatalogStoreItem.store == store, CatalogStoreItem.sku == CatalogProduct.sku)
    query = select(CatalogProduct, CatalogStoreItem).outerjoin(CatalogStoreItem, join)
    if sku is not None:
        query = query.where(CatalogProduct.sku == sku)
    if linked is True:
        query = query.where(CatalogStoreItem.linked.is_(True))
    elif linked is False:
        query = query.where((CatalogStoreItem.linked.is_(None)) | (CatalogStoreItem.linked.is_(False)))
    found = (await session.execute(query.order_by(CatalogProduct.sku).limit(limit + 1).offset(offset))).all()
    rows = found[:limit]
    views = await load_products(session, [r[0] for r in rows])
    return [StoreItemView(v, r[1]) for v, r in zip(views, rows, strict=True)], len(found) > limit


def store_item_json(store: str, row: StoreItemView) -> dict[str, Any]:
    """A product as one store sees it, for the API."""
    p = row.view.product
    item = row.item
    return {
        "store": store,
        "sku": p.sku,
        "name": p.name,
        "category": row.view.category,
        "active": p.active,
        "linked": row.linked,
        "available": item.available if item is not None else True,
        "list_price_fen": p.price_fen,
        "store_price_fen": item.price_fen if item is not None else None,
        "price_fen": row.price_fen,
    }


async def store_catalog_body(session: AsyncSession, store: str) -> dict[str, Any]:
    """The store's catalog snapshot body: its linked products and its price overrides.

    A variant whose parent the store does not sell goes out as a product of its own (the
    edge's catalog needs the parent present). A product head office retired or the store
    marked unavailable goes out inactive, so a scan says so instead of "unknown barcode".
    """
    await _require_store(session, store)
    rows = (
        await session.execute(
            select(CatalogProduct, CatalogStoreItem)
            .join(CatalogStoreItem, CatalogStoreItem.sku == CatalogProduct.sku)
            .where(CatalogStoreItem.store == store, CatalogStoreItem.linked.is_(true()))
            .order_by(CatalogProduct.sku)
        )
    ).all()
    views = await load_products(session, [r[0] for r in rows])
    skus = {v.product.sku for v in views}
    products: list[dict[str, Any]] = []
    overrides: dict[str, int] = {}
    for view, (_, item) in zip(views, rows, strict=True):
        products.append(_edge_product(view, item, parent_sold=view.product.variant_of in skus))
        if item.price_fen is not None:
            overrides[view.product.sku] = item.price_fen
    return {"products": products, "price_overrides": overrides}


def _edge_product(view: ProductView, item: CatalogStoreItem, *, parent_sold: bool) -> dict[str, Any]:
    p = view.product
    out: dict[str, Any] = {
        "sku": p.sku,
        "name": p.name,
        "category": view.category or "",
        "unit": p.base_unit,
        "price_fen": p.price_fen,
        "barcodes": sorted(view.barcodes.get(None, [])),
        "open_price": p.open_price,
        "pinyin": p.pinyin,
        "active": p.active and item.available,
    }
    optional = {
        "plu": p.plu,
        "variant_of": p.variant_of if parent_sold else None,
        "variant": p.variant,
        "cost_fen": p.cost_fen,
        "member_price_fen": p.member_price_fen,
    }
    out.update({k: v for k, v in optional.items() if v is not None})
    return out


@dataclass(frozen=True)
class Published:
    """What publishing a store's catalog did."""

    store: str
    products: int
    catalog_version: int
    prices_version: int
    sent: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "products": self.products,
            "catalog_version": self.catalog_version,
            "prices_version": self.prices_version,
            "sent": self.sent,
        }


async def publish_store(db: Database, store: str, link: BrokerLink | None = None) -> Published:
    """Save the store's catalog and prices snapshots and send them if the broker link is up.

    A store that links nothing is refused: publishing would empty its till.
    """
    async with db.session() as session:
        body = await store_catalog_body(session, store)
    if not body["products"]:
        raise CatalogError(f"store '{store}' links no products; link some before publishing its catalog")
    catalog = await save_snapshot(db, store, SnapshotKind.CATALOG, body)
    prices = await save_snapshot(db, store, SnapshotKind.PRICES, {"price_overrides": body["price_overrides"]})
    sent = False
    if link is not None:
        sent = await link.publish_snapshot(store, catalog)
        sent = await link.publish_snapshot(store, prices) and sent
    return Published(store, len(body["products"]), catalog.version, prices.version, sent)


async def linked_stores(session: AsyncSession, *, only: frozenset[str] | None = None) -> list[str]:
    """Stores that link at least one product (within `only`, if given)."""
    query = select(CatalogStoreItem.store).where(CatalogStoreItem.linked.is_(True)).distinct()
    stores = sorted((await session.scalars(query)).all())
    return [s for s in stores if only is None or s in only]

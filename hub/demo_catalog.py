"""The demo's head-office catalog and its second store: what `storelink-hub demo` sets up for issue 7.

The catalog (`demo_catalog.csv`, shipped in the package) is loaded through the importer
as head office would, linked to both stores and published to the demo store. The second
store has no edge running; it has opening stock, so stock can be moved from it to the
demo store through the transfer API.
"""

from __future__ import annotations

import asyncio
from importlib import resources

from sqlalchemy import func, select

from hub.catalog_io import import_catalog
from hub.catalog_stores import link_products, publish_store, set_store_item
from hub.catalog_tables import CatalogProduct
from hub.db import Database
from hub.errors import HubError
from hub.link import BrokerLink
from hub.models import Store
from hub.stock import StockError, adjust
from hub.stores import add_store

__all__ = ["STORE_B", "setup_demo_catalog"]

STORE_B = "demo-store-b"
STORE_B_NAME = "演示便利店B店"
_ACTOR = "user:demo-owner"
# What store B has on its shelves when the demo starts (pieces).
_OPENING = {"DRK-001": 120, "DRK-002": 96, "DRK-004": 48, "SNK-001": 30, "INS-001": 40, "DLY-001": 24}


async def setup_demo_catalog(db: Database, store: str, link: BrokerLink | None) -> None:
    """Import the demo catalog once, link it to both stores, stock store B, publish to `store`."""
    async with db.session() as session:
        empty = not await session.scalar(select(func.count()).select_from(CatalogProduct))
        has_b = await session.get(Store, STORE_B) is not None
    if empty:
        data = await asyncio.to_thread((resources.files("hub") / "demo_catalog.csv").read_bytes)
        report = await import_catalog(
            db, data, filename="demo_catalog.csv", create_categories=True, actor=_ACTOR
        )
        if not report.written:
            raise HubError(f"the demo catalog did not import: {report.errors[:3]}")
    if not has_b:
        await add_store(db, STORE_B, STORE_B_NAME)
    async with db.session() as session, session.begin():
        for shop in (store, STORE_B):
            await link_products(session, shop, None, actor=_ACTOR)
        # a store price: the demo store sells water for less than the list price
        await set_store_item(session, store, "DRK-001", actor=_ACTOR, price_fen=180)
    for sku, pieces in _OPENING.items():
        try:
            async with db.session() as session, session.begin():
                await adjust(
                    session,
                    STORE_B,
                    sku,
                    pieces * 1000,
                    "opening stock",
                    _ACTOR,
                    reference=f"demo-opening-{sku}",
                )
        except StockError:
            pass  # a demo restarted on the same state directory: stocked before
    await publish_store(db, store, link)

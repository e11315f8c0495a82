"""Batches and expiry: on-hand attributed to the latest-expiring lots (FEFO), picking, near-expiry
facts for promotions, and the job that blocks a SKU whose stock is all expired and unblocks it
when sellable stock arrives, through store commands (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import select

from hub.batches import (
    BlockRun,
    Pick,
    batches_left,
    expiry_blocks_job,
    fefo_pick,
    near_expiry,
    near_expiry_fact,
    refresh_blocks,
)
from hub.db import Database, migrate
from hub.models import StoreCommand
from hub.purchasing import PoLineIn, SupplierIn, create_po, create_supplier, send_po
from hub.purchasing_receipts import ReceiptLine, receive_po
from hub.scheduler_jobs import JOBS
from hub.stock import StockError, adjust
from hub.stores import add_store

D = date(2026, 11, 23)


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    for store in ("shop-1", "shop-2"):
        await add_store(database, store)
    yield database
    await database.close()


async def _receive(
    db: Database, store: str, lots: list[ReceiptLine], *, today: date = D, ref: str = "r"
) -> None:
    """Order exactly the lots from a supplier and receive them in one delivery."""
    totals: dict[str, int] = {}
    for lot in lots:
        totals[lot.sku] = totals.get(lot.sku, 0) + lot.qty_milli
    async with db.session() as session, session.begin():
        supplier = await create_supplier(session, SupplierIn(f"Supplier {ref}"))
        view = await create_po(
            session, store, supplier.id, [PoLineIn(s, q, 100) for s, q in totals.items()], actor="user:li"
        )
        await send_po(session, view.po.id, actor="user:li")
        await receive_po(session, view.po.id, ref, lots, actor="user:li", today=today)


async def _take(db: Database, store: str, sku: str, qty_milli: int) -> None:
    async with db.session() as session, session.begin():
        await adjust(session, store, sku, -qty_milli, "sold", "user:li")


async def test_on_hand_goes_to_the_latest_expiring_lots_and_picks_go_earliest_first(db):
    async with db.session() as session, session.begin():
        await adjust(session, "shop-1", "MILK", 4_000, "opening count", "user:li")  # from no receipt
    await _receive(
        db,
        "shop-1",
        [
            ReceiptLine("MILK", 10_000, lot="A", expires_on=D + timedelta(days=2)),
            ReceiptLine("MILK", 10_000, lot="B", expires_on=D + timedelta(days=10)),
            ReceiptLine("MILK", 5_000, lot="C"),  # no expiry: counts as never expiring
        ],
    )
    await _take(db, "shop-1", "MILK", 12_000)  # 29 - 12 = 17 left: C 5, B 10, A 2, none unbatched
    async with db.session() as session:
        left = await batches_left(session, "shop-1", sku="MILK")
        picks, short = await fefo_pick(session, "shop-1", "MILK", 15_000, today=D)
        too_many = await fefo_pick(session, "shop-1", "MILK", 20_000, today=D)
        soon = await near_expiry(session, "shop-1", today=D, within_days=3)
    assert [(b.lot, b.received_milli, b.left_milli) for b in left] == [
        ("A", 10_000, 2_000),
        ("B", 10_000, 10_000),
        ("C", 5_000, 5_000),
    ]
    assert (picks, short) == (
        [
            Pick("A", D + timedelta(days=2), 2_000),
            Pick("B", D + timedelta(days=10), 10_000),
            Pick("C", None, 3_000),
        ],
        0,
    )
    assert too_many[1] == 3_000
    assert [near_expiry_fact(b) for b in soon] == [
        {"sku": "MILK", "lot": "A", "expires_on": "2026-11-25", "qty_milli": 2_000}
    ]
    await _take(db, "shop-1", "MILK", 3_000)  # lot A is gone (sold first), nothing near expiry
    async with db.session() as session:
        assert await near_expiry(session, "shop-1", today=D, within_days=3) == []
        with pytest.raises(StockError, match="greater than 0"):
            await fefo_pick(session, "shop-1", "MILK", 0, today=D)


async def test_stock_beyond_the_lots_is_unbatched_and_picked_last(db):
    await _receive(db, "shop-1", [ReceiptLine("EGGS", 6_000, lot="E1", expires_on=D + timedelta(days=20))])
    async with db.session() as session, session.begin():
        await adjust(session, "shop-1", "EGGS", 4_000, "found in the back", "user:li")
    async with db.session() as session:
        picks, short = await fefo_pick(session, "shop-1", "EGGS", 8_000, today=D)
        none_at_all = await fefo_pick(session, "shop-2", "EGGS", 1_000, today=D)
    assert (picks, short) == ([Pick("E1", D + timedelta(days=20), 6_000), Pick("", None, 2_000)], 0)
    assert none_at_all == ([], 1_000)


async def _commands(db: Database) -> list[tuple[str, str, str]]:
    async with db.session() as session:
        rows = (await session.scalars(select(StoreCommand).order_by(StoreCommand.created_at))).all()
    return [(r.store, r.type, r.body["sku"]) for r in rows]


async def test_the_job_blocks_a_sku_whose_stock_is_all_expired_and_unblocks_it_when_fresh_stock_arrives(db):
    early = D - timedelta(days=10)
    await _receive(
        db,
        "shop-1",
        [
            ReceiptLine("YOGURT", 6_000, lot="Y1", expires_on=D - timedelta(days=1)),
            ReceiptLine("MILK", 5_000, lot="M1", expires_on=D - timedelta(days=1)),
            ReceiptLine("MILK", 5_000, lot="M2", expires_on=D + timedelta(days=5)),
            ReceiptLine("CREAM", 2_000, lot="C1", expires_on=D - timedelta(days=2)),
        ],
        today=early,
        ref="early",
    )
    await _take(db, "shop-1", "CREAM", 2_000)  # all sold before it expired: nothing to block
    await _take(db, "shop-1", "MILK", 4_000)  # 6 left: M2's 5 and 1 of M1 (expired), sellable stock remains
    assert await expiry_blocks_job(db, D - timedelta(days=1)) == BlockRun(0, 0)
    assert await _commands(db) == []  # the day before, Y1 is still good
    run = await expiry_blocks_job(db, D)
    assert (run.blocked, run.unblocked) == (1, 0)
    assert await _commands(db) == [("shop-1", "stock.block", "YOGURT")]
    async with db.session() as session:
        body = (await session.scalars(select(StoreCommand))).one().body
    assert "past its expiry date" in body["reason"]
    # running again (a rerun of the day, or the next day) sends nothing new
    assert (await expiry_blocks_job(db, D)).blocked == 0
    assert (await expiry_blocks_job(db, D + timedelta(days=1))).blocked == 0
    assert len(await _commands(db)) == 1
    # the expired yogurt is written off: still blocked, until fresh yogurt arrives
    await _take(db, "shop-1", "YOGURT", 6_000)
    assert (await expiry_blocks_job(db, D + timedelta(days=1))).unblocked == 0
    await _receive(
        db, "shop-1", [ReceiptLine("YOGURT", 6_000, lot="Y2", expires_on=D + timedelta(days=14))], ref="fresh"
    )
    run = await refresh_blocks(db, "shop-1", D + timedelta(days=1), skus=["YOGURT"])
    assert (run.blocked, run.unblocked) == (0, 1)
    assert await _commands(db) == [("shop-1", "stock.block", "YOGURT"), ("shop-1", "stock.unblock", "YOGURT")]
    assert (await expiry_blocks_job(db, D + timedelta(days=1))).unblocked == 0


def test_the_expiry_job_is_scheduled():
    assert "stock.expiry" in [job.name for job in JOBS]

"""Replenishment: the days-of-cover formula on the worked example in docs/inventory.md, min/max
rules, default rules, what is in transit or on order counted, transfers suggested before buying
and turned into a draft transfer, below-safety and slow-mover alerts (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest

from hub.db import Database, migrate
from hub.errors import NotFound
from hub.purchasing import PoLineIn, SupplierIn, create_po, create_supplier
from hub.replenishment import (
    RuleIn,
    delete_rule,
    line_json,
    list_rules,
    replenishment_list,
    set_rule,
    store_alerts,
    suggestion_to_transfer,
)
from hub.stock import StockError, adjust, record_movement
from hub.stock_tables import MovementKind
from hub.stores import add_store
from hub.transfers import LineIn, approve, create_transfer, ship

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    for store in ("shop-1", "shop-2", "shop-3"):
        await add_store(database, store)
    yield database
    await database.close()


async def _sell(db: Database, store: str, sku: str, qty_milli: int, *, when: datetime, ref: str) -> None:
    async with db.session() as session, session.begin():
        await record_movement(
            session,
            store=store,
            sku=sku,
            kind=MovementKind.SALE,
            qty_milli=-qty_milli,
            source_type="order",
            source_id=ref,
            actor=f"sync:{store}",
            now=when,
        )


async def _example(db: Database) -> None:
    """docs/inventory.md: COLA at shop-1, 2 a day for four weeks; shop-2 holds 15 against a max of 10."""
    async with db.session() as session, session.begin():
        await adjust(session, "shop-1", "COLA", 60_000, "opening count", "user:li")
        await adjust(session, "shop-2", "COLA", 15_000, "opening count", "user:wang")
        await set_rule(
            session,
            "shop-1",
            "COLA",
            RuleIn(cover_days=7, lead_time_days=2, safety_days=1, order_multiple_milli=6_000),
            actor="user:li",
        )
        await set_rule(session, "shop-2", "COLA", RuleIn(min_milli=0, max_milli=10_000), actor="user:wang")
    await _sell(
        db, "shop-1", "COLA", 3_000, when=NOW - timedelta(days=40), ref="old"
    )  # outside the 28-day window
    for day in range(28):
        await _sell(db, "shop-1", "COLA", 2_000, when=NOW - timedelta(days=day, hours=1), ref=f"o{day}")


async def test_the_worked_example_in_docs_inventory(db):
    await _example(db)
    async with db.session() as session:
        lines = await replenishment_list(session, "shop-1", now=NOW)
    assert len(lines) == 1
    line = lines[0]
    assert (line.on_hand_milli, line.sold_milli, line.velocity) == (1_000, 56_000, Fraction(2_000))
    # safety 2 x 1 = 2, min 2 x (2 + 1) = 6, max 2 x (2 + 1 + 7) = 20
    assert (line.safety_milli, line.min_milli, line.max_milli) == (2_000, 6_000, 20_000)
    assert line.below_safety
    assert line.need_milli == 19_000
    assert line.transfers == [("shop-2", 5_000)]  # shop-2's 15 less its max of 10
    assert line.buy_milli == 18_000  # the 14 left, rounded up to cases of 6
    body = line_json(line)
    assert (body["velocity_per_day"], body["need"], body["buy"], body["transfers"]) == (
        "2",
        "19",
        "18",
        [{"from_store": "shop-2", "qty": "5"}],
    )
    async with db.session() as session:
        plain = await replenishment_list(session, "shop-1", now=NOW, transfers=False)
    assert (plain[0].transfers, plain[0].buy_milli) == ([], 24_000)  # 19 rounded up to 24


async def test_a_suggested_transfer_becomes_a_draft_transfer(db):
    await _example(db)
    async with db.session() as session, session.begin():
        view = await suggestion_to_transfer(session, "shop-1", "shop-2", actor="user:li", now=NOW)
    assert (view.transfer.from_store, view.transfer.to_store, view.transfer.state) == (
        "shop-2",
        "shop-1",
        "draft",
    )
    assert [(x.sku, x.qty_milli) for x in view.lines] == [("COLA", 5_000)]
    async with db.session() as session, session.begin():
        with pytest.raises(StockError, match="suggests no transfer from 'shop-3'"):
            await suggestion_to_transfer(session, "shop-1", "shop-3", actor="user:li", now=NOW)
    # once shipped it is in transit to shop-1 and counts in its position: the need shrinks by 5
    async with db.session() as session, session.begin():
        await approve(session, view.transfer.id, actor="user:boss")
        await ship(session, view.transfer.id, actor="user:wang")
    async with db.session() as session:
        line = (await replenishment_list(session, "shop-1", now=NOW))[0]
    assert (line.in_transit_milli, line.need_milli, line.transfers, line.buy_milli) == (
        5_000,
        14_000,
        [],
        18_000,
    )


async def test_min_max_rules_count_open_orders_and_round_to_the_multiple(db):
    async with db.session() as session, session.begin():
        await adjust(session, "shop-1", "RICE", 3_000, "opening count", "user:li")
        await adjust(session, "shop-1", "SALT", 9_000, "opening count", "user:li")
        await set_rule(
            session,
            "shop-1",
            "RICE",
            RuleIn(min_milli=4_000, max_milli=12_000, order_multiple_milli=5_000),
            actor="x",
        )
        await set_rule(session, "shop-1", "SALT", RuleIn(min_milli=4_000, max_milli=12_000), actor="x")
        await set_rule(session, "shop-1", "OIL", RuleIn(min_milli=1_000, max_milli=2_500), actor="x")
    async with db.session() as session:
        lines = {x.sku: x for x in await replenishment_list(session, "shop-1", now=NOW)}
        everything = await replenishment_list(session, "shop-1", now=NOW, everything=True)
    assert sorted(lines) == ["OIL", "RICE"]  # SALT is above its min
    assert (lines["RICE"].need_milli, lines["RICE"].buy_milli) == (9_000, 10_000)
    assert (lines["OIL"].need_milli, lines["OIL"].buy_milli) == (2_500, 3_000)  # never stocked: from zero
    assert [x.sku for x in everything] == ["OIL", "RICE", "SALT"]
    async with db.session() as session, session.begin():
        supplier = await create_supplier(session, SupplierIn("Grain Co"))
        await create_po(session, "shop-1", supplier.id, [PoLineIn("RICE", 6_000, 300)], actor="x")
    async with db.session() as session:
        lines = {x.sku: x for x in await replenishment_list(session, "shop-1", now=NOW)}
    assert "RICE" not in lines  # 3 on hand + 6 on order is above the min of 4


async def test_a_default_rule_covers_every_stocked_sku_and_a_sku_rule_wins(db):
    async with db.session() as session, session.begin():
        for sku in ("TEA", "MILK"):
            await adjust(session, "shop-1", sku, 1_000, "opening count", "user:li")
        await set_rule(session, "shop-1", "*", RuleIn(min_milli=2_000, max_milli=4_000), actor="x")
        await set_rule(session, "shop-1", "MILK", RuleIn(min_milli=0, max_milli=0), actor="x")
    async with db.session() as session:
        lines = await replenishment_list(session, "shop-1", now=NOW)
        rules, more = await list_rules(session, "shop-1")
    assert [(x.sku, x.buy_milli) for x in lines] == [("TEA", 3_000)]
    assert ([r.sku for r in rules], more) == (["*", "MILK"], False)
    async with db.session() as session, session.begin():
        await delete_rule(session, "shop-1", "*")
        with pytest.raises(NotFound):
            await delete_rule(session, "shop-1", "*")
    async with db.session() as session:
        assert await replenishment_list(session, "shop-1", now=NOW) == []


async def test_surplus_is_shared_out_largest_first(db):
    async with db.session() as session, session.begin():
        await set_rule(session, "shop-1", "COLA", RuleIn(min_milli=5_000, max_milli=20_000), actor="x")
        await adjust(session, "shop-2", "COLA", 12_000, "count", "x")
        await adjust(session, "shop-3", "COLA", 30_000, "count", "x")
        await set_rule(session, "shop-2", "COLA", RuleIn(min_milli=0, max_milli=10_000), actor="x")
        await set_rule(session, "shop-3", "*", RuleIn(min_milli=0, max_milli=10_000), actor="x")
    async with db.session() as session:
        line = (await replenishment_list(session, "shop-1", now=NOW))[0]
    assert (line.transfers, line.buy_milli) == ([("shop-3", 20_000)], 0)
    async with db.session() as session, session.begin():
        view = await create_transfer(session, "shop-3", "shop-2", [LineIn("COLA", 15_000)], actor="x")
        await approve(session, view.transfer.id, actor="x")
        await ship(session, view.transfer.id, actor="x")  # shop-3 now has 15: 5 spare
    async with db.session() as session:
        line = (await replenishment_list(session, "shop-1", now=NOW))[0]
    assert (line.transfers, line.buy_milli) == ([("shop-3", 5_000), ("shop-2", 2_000)], 13_000)


async def test_alerts_below_safety_and_slow_movers(db):
    await _example(db)
    async with db.session() as session, session.begin():
        await adjust(session, "shop-1", "OLD-TEA", 5_000, "opening count", "user:li")
        await adjust(
            session, "shop-1", "GONE", 0 - 1_000, "shrinkage", "user:li"
        )  # nothing on hand: not slow
    await _sell(db, "shop-1", "OLD-TEA", 1_000, when=NOW - timedelta(days=40), ref="tea-1")
    async with db.session() as session:
        alerts = await store_alerts(session, "shop-1", slow_days=30, now=NOW)
        later = await store_alerts(session, "shop-1", slow_days=30, now=NOW + timedelta(days=31))
    assert [x.sku for x in alerts.below_safety] == ["COLA"]
    assert alerts.slow_movers == [("OLD-TEA", 4_000)]
    # a month on, COLA has not sold either; its velocity fell to 0, so its safety stock is 0
    assert later.below_safety == []
    assert later.slow_movers == [("COLA", 1_000), ("OLD-TEA", 4_000)]


async def test_bad_rules_are_refused(db):
    bad = [
        (RuleIn(), "either min and max, or cover_days"),
        (RuleIn(min_milli=1_000, max_milli=2_000, cover_days=3), "either min and max"),
        (RuleIn(min_milli=1_000), "needs both"),
        (RuleIn(min_milli=3_000, max_milli=2_000), "min at most max"),
        (RuleIn(min_milli=-1, max_milli=2_000), "0 or more"),
        (RuleIn(cover_days=0), "cover_days must be"),
        (RuleIn(cover_days=7, lead_time_days=-1), "lead_time_days"),
        (RuleIn(cover_days=7, order_multiple_milli=0), "order_multiple"),
    ]
    async with db.session() as session, session.begin():
        for rule, message in bad:
            with pytest.raises(StockError, match=message):
                await set_rule(session, "shop-1", "COLA", rule, actor="x")
        with pytest.raises(NotFound):
            await set_rule(session, "shop-9", "COLA", RuleIn(cover_days=7), actor="x")
        with pytest.raises(StockError, match="sales window"):
            await replenishment_list(session, "shop-1", window_days=0)
    async with db.session() as session:
        assert (await list_rules(session, "shop-1"))[0] == []

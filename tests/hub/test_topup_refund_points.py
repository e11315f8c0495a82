"""A refunded stored-value top-up takes back the points and level progress it earned, once,
in the refund's transaction (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from hub.db import Database, migrate
from hub.levels import LevelProgress, MemberLevel, level_of, on_topup_refund
from hub.members import merge_members
from hub.points import PointsLot, debit
from hub.stored_value import Source, StoredValueError, topup
from hub.stored_value_office import refund_topup
from hub.stores import add_store
from tests.hub.loyalty_helpers import books, ledger, new_member, set_levels, set_points_rules

GOLD_BY_TOPUP = [{"code": "gold", "name": "金卡", "rank": 1, "threshold": 50000}]


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    await add_store(database, "shop-1")
    yield database
    await database.close()


async def _topup(db: Database, member: str, amount: int, reference: str) -> str:
    async with db.session() as session, session.begin():
        done = await topup(
            session,
            member,
            amount,
            payment_method="alipay",
            payment_reference=reference,
            source=Source(actor="store:shop-1", store="shop-1"),
        )
    return done.topup.id


async def _counters(db: Database, member: str) -> tuple[int, int]:
    async with db.session() as session:
        row = await session.get(MemberLevel, member, populate_existing=True)
        assert row is not None
        return row.topup_fen, row.points_earned


async def test_refund_takes_back_the_topups_points_and_progress_once(db):
    await set_points_rules(db, topup_points=1, topup_per_fen=100)
    member = await new_member(db)
    first = await _topup(db, member, 30000, "ali-1")
    second = await _topup(db, member, 20000, "ali-2")
    assert await books(db, member) == (500, 500, 500)
    assert await _counters(db, member) == (50000, 500)

    async with db.session() as session, session.begin():
        done = await refund_topup(session, second, actor="user:finance", reason="moved away")
    assert (done.points_reversed, done.points_unrecovered) == (200, 0)
    assert done.paid_fen == 20000
    assert await books(db, member) == (300, 300, 300)
    assert await _counters(db, member) == (30000, 300)
    assert (await ledger(db, member))[-1] == ("reverse", -200, f"stored_value.topup_refund:{second}")
    async with db.session() as session:
        lot = (
            await session.scalars(select(PointsLot).where(PointsLot.source == f"stored_value.topup:{second}"))
        ).one()
        assert lot.remaining == 0  # taken from the top-up's own lot, not FIFO from the older one
        first_lot = (
            await session.scalars(select(PointsLot).where(PointsLot.source == f"stored_value.topup:{first}"))
        ).one()
        assert first_lot.remaining == 300

    # the refund itself is refused a second time, and the hook alone does nothing again
    with pytest.raises(StoredValueError, match="already refunded"):
        async with db.session() as session, session.begin():
            await refund_topup(session, second, actor="user:finance", reason="again")
    async with db.session() as session, session.begin():
        again = await on_topup_refund(
            session, member, f"stored_value.topup:{second}", f"stored_value.topup_refund:{second}"
        )
    assert (again.points, again.topup_fen) == (0, 0)
    assert await books(db, member) == (300, 300, 300)
    assert await _counters(db, member) == (30000, 300)
    async with db.session() as session:
        rows = (
            await session.execute(
                select(LevelProgress.metric, LevelProgress.amount)
                .where(LevelProgress.source == f"stored_value.topup_refund:{second}")
                .order_by(LevelProgress.id)
            )
        ).all()
    assert sorted(map(tuple, rows)) == [("points", -200), ("topup", -20000)]


async def test_points_already_spent_are_counted_unrecovered_and_the_refund_still_pays(db):
    await set_points_rules(db, topup_points=1, topup_per_fen=100)
    member = await new_member(db)
    paid = await _topup(db, member, 50000, "ali-1")
    async with db.session() as session, session.begin():
        await debit(session, member, 420, kind="redeem", source="rpc:shop-1:t1", now=datetime.now(UTC))
    async with db.session() as session, session.begin():
        done = await refund_topup(session, paid, actor="user:finance", reason="x")
    assert (done.points_reversed, done.points_unrecovered) == (500, 420)
    assert await books(db, member) == (0, 0, 0)
    assert await _counters(db, member) == (0, 0)


async def test_a_failed_refund_leaves_points_and_progress_alone(db):
    await set_points_rules(db, topup_points=1, topup_per_fen=100)
    member = await new_member(db)
    paid = await _topup(db, member, 10000, "ali-1")
    async with db.session() as session, session.begin():
        from hub.stored_value import debit as pay  # noqa: PLC0415

        await pay(session, member, 10000, Source(actor="store:shop-1", store="shop-1", order_id="o-1"))
    with pytest.raises(StoredValueError, match="nothing can be paid back"):
        async with db.session() as session, session.begin():
            await refund_topup(session, paid, actor="user:finance", reason="x")
    assert await books(db, member) == (100, 100, 100)
    assert await _counters(db, member) == (10000, 100)


async def test_progress_goes_down_but_the_level_stays_until_the_review(db):
    await set_levels(db, metric="topup", levels=GOLD_BY_TOPUP)
    member = await new_member(db)
    paid = await _topup(db, member, 50000, "ali-1")
    async with db.session() as session:
        assert (await level_of(session, member))["code"] == "gold"
    async with db.session() as session, session.begin():
        done = await refund_topup(session, paid, actor="user:finance", reason="x")
    assert done.points_reversed == 0  # no top-up points configured: only progress is taken back
    assert await _counters(db, member) == (0, 0)
    async with db.session() as session:
        assert (await level_of(session, member))["code"] == "gold"


async def test_a_topup_of_a_merged_duplicate_is_reversed_on_the_survivor(db):
    await set_points_rules(db, topup_points=1, topup_per_fen=100)
    dup = await new_member(db, "13800000001")
    keep = await new_member(db, "13800000002")
    paid = await _topup(db, dup, 30000, "ali-1")
    await _topup(db, keep, 10000, "ali-2")
    async with db.session() as session, session.begin():
        await merge_members(session, dup, keep)
    assert (await books(db, keep))[0] == 400
    async with db.session() as session, session.begin():
        done = await refund_topup(session, paid, actor="user:finance", reason="x")
    assert done.points_reversed == 300
    assert (await books(db, keep))[0] == 100
    assert await _counters(db, keep) == (10000, 100)

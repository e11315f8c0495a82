"""Levels: upgrades from spend, top-up and points with every step on record, what the till reads,
the yearly review, birthday points and merges (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import select

from hub.db import Database, migrate
from hub.errors import NotFound
from hub.levels import LevelChange, MemberLevel, add_progress, level_of, level_report, on_topup, review_levels
from hub.levels_jobs import grant_birthday_points
from hub.members import merge_members
from hub.stores import add_store
from tests.hub.loyalty_helpers import (
    Till,
    books,
    ledger,
    new_member,
    order_body,
    set_levels,
    set_points_rules,
)

THREE = [
    {"code": "silver", "name": "银卡", "rank": 1, "threshold": 0},
    {
        "code": "gold",
        "name": "金卡",
        "rank": 2,
        "threshold": 10000,
        "discount_bp": 9500,
        "points_multiplier_bp": 15000,
    },
    {
        "code": "platinum",
        "name": "白金卡",
        "rank": 3,
        "threshold": 50000,
        "discount_bp": 9000,
        "member_prices": True,
        "points_multiplier_bp": 20000,
        "birthday_perk": "生日蛋糕一份",
        "birthday_points": 88,
    },
]


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    await add_store(database, "shop-1")
    yield database
    await database.close()


async def _history(db, member_id):
    async with db.session() as session:
        rows = await session.execute(
            select(LevelChange.from_code, LevelChange.to_code, LevelChange.reason, LevelChange.source)
            .where(LevelChange.member_id == member_id)
            .order_by(LevelChange.id)
        )
        return [tuple(row) for row in rows.all()]


async def _level(db, member_id):
    async with db.session() as session:
        found = await level_of(session, member_id)
    return None if found is None else found["code"]


async def test_spend_upgrades_through_every_level_with_the_order_as_source(db):
    await set_levels(db, levels=THREE)
    member = await new_member(db)
    assert await _level(db, member) == "silver"  # the entry level, at registration
    big = order_body(60000, member)
    till = Till(db)
    await till.send(till.event("order.paid", big), times=3)
    assert await _history(db, member) == [
        (None, "silver", "upgrade", f"member:{member}"),
        ("silver", "gold", "upgrade", f"order:{big['id']}"),  # no level skipped on the record
        ("gold", "platinum", "upgrade", f"order:{big['id']}"),
    ]
    async with db.session() as session:
        assert await level_of(session, member) == {
            "code": "platinum",
            "name": "白金卡",
            "rank": 3,
            "discount_bp": 9000,
            "points_multiplier_bp": 20000,
            "member_prices": True,
            "birthday_perk": "生日蛋糕一份",
        }
        report = await level_report(session, member)
    assert report["counters"] == {"spend_fen": 60000, "topup_fen": 0, "points_earned": 600}
    assert report["next_level"] is None
    # the big order earned at silver (the level when it was bought); the next one at platinum ×2
    await till.send(till.event("order.paid", order_body(1000, member)))
    rows = await ledger(db, member)
    assert [(kind, n) for kind, n, _ in rows] == [("earn", 600), ("earn", 20)]
    assert rows[0][2] == f"order:{big['id']}"


async def test_refunds_lower_spend_but_never_demote_between_reviews(db):
    await set_levels(db, levels=THREE)
    member = await new_member(db)
    order = order_body(12000, member)
    till = Till(db)
    await till.send(till.event("order.paid", order))
    assert await _level(db, member) == "gold"
    refund = {
        "order_id": order["id"],
        "store": "shop-1",
        "business_day": order["business_day"],
        "refund": {"id": "r-1", "tenders": {"0": 12000}, "total_fen": 12000},
    }
    await till.send(till.event("order.refunded", refund))
    async with db.session() as session:
        report = await level_report(session, member)
    assert report["counters"]["spend_fen"] == 0
    assert report["level"]["code"] == "gold"
    assert report["next_level"] == {"code": "platinum", "threshold": 50000, "missing": 50000}


async def test_topup_counts_for_a_topup_metric_and_earns_topup_points_once(db):
    await set_levels(
        db, metric="topup", levels=[{"code": "gold", "name": "金卡", "rank": 1, "threshold": 50000}]
    )
    await set_points_rules(db, topup_points=1, topup_per_fen=100)
    member = await new_member(db)
    assert await _level(db, member) is None
    async with db.session() as session, session.begin():
        await on_topup(session, member, 30000, "stored_value.topup:t1")
        await on_topup(session, member, 20000, "stored_value.topup:t2")
        await on_topup(session, member, 20000, "stored_value.topup:t2")  # the same top-up again
    assert await _level(db, member) == "gold"
    assert await books(db, member) == (500, 500, 500)
    assert [s for _, _, s in await ledger(db, member)] == ["stored_value.topup:t1", "stored_value.topup:t2"]
    assert (await _history(db, member))[-1] == (None, "gold", "upgrade", "stored_value.topup:t2")
    async with db.session() as session, session.begin():
        with pytest.raises(ValueError, match="above 0 fen"):
            await on_topup(session, member, -100, "stored_value.topup:t3")
        with pytest.raises(NotFound):
            await on_topup(session, "nobody", 100, "stored_value.topup:t4")
        assert await level_of(session, "nobody") is None


async def test_points_earned_can_be_the_metric(db):
    await set_levels(
        db, metric="points", levels=[{"code": "fan", "name": "粉丝", "rank": 1, "threshold": 100}]
    )
    member = await new_member(db)
    till = Till(db)
    await till.send(till.event("order.paid", order_body(9999, member)))
    assert await _level(db, member) is None  # 99 points
    await till.send(till.event("order.paid", order_body(100, member)))
    assert await _level(db, member) == "fan"


async def test_yearly_review_demotes_who_did_not_keep_the_threshold(db):
    await set_levels(db, downgrade_review=True, levels=THREE)
    lapsed, kept_some, recent = [
        await new_member(db, p) for p in ("13800000001", "13800000002", "13800000003")
    ]
    async with db.session() as session, session.begin():
        old = datetime(2025, 1, 10, tzinfo=UTC)
        await add_progress(session, lapsed, source="order:a", now=old, spend_fen=60000)
        await add_progress(session, kept_some, source="order:b", now=old, spend_fen=60000)
        await add_progress(
            session, kept_some, source="order:c", now=datetime(2027, 1, 1, tzinfo=UTC), spend_fen=20000
        )
        await add_progress(
            session, recent, source="order:d", now=datetime(2027, 3, 1, tzinfo=UTC), spend_fen=60000
        )
    async with db.session() as session, session.begin():
        done = await review_levels(session, date(2027, 6, 1))
    assert done.reviewed == 3
    assert sorted(done.demoted) == sorted([(lapsed, "platinum", "silver"), (kept_some, "platinum", "gold")])
    assert [(await _level(db, m)) for m in (lapsed, kept_some, recent)] == ["silver", "gold", "platinum"]
    assert (await _history(db, lapsed))[-2:] == [
        ("platinum", "gold", "review", "review:2027-06-01"),
        ("gold", "silver", "review", "review:2027-06-01"),
    ]
    async with db.session() as session:
        counters = {
            row.member_id: row.spend_fen for row in (await session.scalars(select(MemberLevel))).all()
        }
    # counters restart from the 12-month window: lifetime totals cannot upgrade straight back
    assert counters == {lapsed: 0, kept_some: 20000, recent: 60000}
    async with db.session() as session, session.begin():
        await add_progress(session, kept_some, source="order:e", now=datetime.now(UTC), spend_fen=30000)
    assert await _level(db, kept_some) == "platinum"
    await set_levels(db, downgrade_review=False, levels=THREE)
    async with db.session() as session, session.begin():
        assert (await review_levels(session, date(2028, 6, 1))).skipped


async def test_birthday_points_once_a_year_and_on_28_february_for_29_february(db):
    await set_levels(db, levels=THREE)
    leap = await new_member(db, "13800000001", birthday=date(1992, 2, 29))
    other = await new_member(db, "13800000002", birthday=date(1990, 3, 1))
    async with db.session() as session, session.begin():
        for member in (leap, other):
            await add_progress(session, member, source="order:x", now=datetime.now(UTC), spend_fen=50000)
    for _ in range(2):
        async with db.session() as session, session.begin():
            await grant_birthday_points(session, date(2027, 2, 28))
    assert (await books(db, leap))[0] - (await books(db, other))[0] == 88
    assert [k for k, _, _ in await ledger(db, leap)].count("birthday") == 1


async def test_a_merge_keeps_the_higher_level_and_adds_the_counters(db):
    await set_levels(db, levels=THREE)
    keep, dup = await new_member(db, "13800000001"), await new_member(db, "13800000002")
    async with db.session() as session, session.begin():
        await add_progress(session, keep, source="order:a", now=datetime.now(UTC), spend_fen=5000)
        await add_progress(session, dup, source="order:b", now=datetime.now(UTC), spend_fen=50000)
    async with db.session() as session, session.begin():
        await merge_members(session, dup, keep)
    assert await _level(db, keep) == "platinum"
    assert (await _history(db, keep))[-1] == ("silver", "platinum", "merge", f"merge:{dup}")
    async with db.session() as session:
        assert (await level_report(session, keep))["counters"]["spend_fen"] == 55000
        assert (await level_of(session, dup))["code"] == "platinum"  # the old id answers for the survivor

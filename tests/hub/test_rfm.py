"""RFM: recency, frequency and monetary over a window, quintile scores, segments, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import pytest
from sqlalchemy import insert, select

from hub.db import Database, migrate
from hub.member_facts import MemberOrder
from hub.member_segments import (
    SEGMENT_GRID,
    SEGMENTS,
    recompute_segments,
    segment_counts,
    segment_of,
)
from hub.member_tag_tables import MemberSegment
from hub.members import MemberFields, create_member, merge_members
from hub.stores import add_store

AS_OF = date(2026, 6, 30)


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    await add_store(database, "north")
    yield database
    await database.close()


async def make_member(db: Database, phone: str, store: str | None = "north") -> str:
    async with db.session() as session, session.begin():
        member = await create_member(session, MemberFields(phone, channel="hub", source_store=store))
        return member.id


async def add_orders(
    db: Database,
    member_id: str,
    days_ago: list[int],
    total_fen: int,
    *,
    store: str = "north",
    refunded: int = 0,
) -> None:
    """Paid orders of the member on the business days `days_ago` before AS_OF."""
    rows: list[dict[str, object]] = [
        {
            "order_id": str(uuid.uuid4()),
            "member_id": member_id,
            "store": store,
            "business_day": AS_OF - timedelta(days=ago),
            "closed_at": None,
            "total_fen": total_fen,
            "refunded_fen": refunded,
            "items": [],
        }
        for ago in days_ago
    ]
    async with db.session() as session, session.begin():
        await session.execute(insert(MemberOrder), rows)


async def _segments(db: Database) -> dict[str, MemberSegment]:
    async with db.session() as session:
        return {row.member_id: row for row in await session.scalars(select(MemberSegment))}


def test_segment_grid_is_complete_and_standard():
    assert set(SEGMENT_GRID) == {(r, fm) for r in range(1, 6) for fm in range(1, 6)}
    assert set(SEGMENT_GRID.values()) == set(SEGMENTS)
    assert segment_of(5, 5, 5) == "champions"
    assert segment_of(5, 1, 1) == "new"
    assert segment_of(4, 1, 1) == "promising"
    assert segment_of(4, 5, 4) == "loyal"
    assert segment_of(3, 3, 3) == "need_attention"
    assert segment_of(3, 1, 2) == "about_to_sleep"  # FM = ceil(1.5) = 2
    assert segment_of(1, 5, 5) == "cannot_lose"
    assert segment_of(2, 3, 4) == "at_risk"
    assert segment_of(2, 1, 1) == "hibernating"
    assert segment_of(1, 1, 1) == "lost"
    assert segment_of(1, 2, 1) == "hibernating"
    assert segment_of(5, 2, 3) == "potential_loyalist"


# name: (days since last visit, visits); each visit 1,000 fen, so F and M rank the same way.
# With 10 members, ranks 1-2 score 1, 3-4 score 2, …, 9-10 score 5.
_HAND = {
    "A": (1, 10),  # R5 F5 M5 -> champions
    "B": (5, 2),  # R5 F1 M1 -> new
    "C": (10, 8),  # R4 F4 M4 -> loyal
    "D": (30, 5),  # R4 F3 M3 -> potential_loyalist
    "E": (60, 6),  # R3 F3 M3 -> need_attention
    "F": (100, 4),  # R3 F2 M2 -> about_to_sleep
    "G": (150, 9),  # R2 F5 M5 -> cannot_lose
    "H": (200, 7),  # R2 F4 M4 -> at_risk
    "I": (250, 3),  # R1 F2 M2 -> hibernating
    "J": (300, 1),  # R1 F1 M1 -> lost
}
_EXPECTED = {
    "A": (5, 5, 5, "champions"),
    "B": (5, 1, 1, "new"),
    "C": (4, 4, 4, "loyal"),
    "D": (4, 3, 3, "potential_loyalist"),
    "E": (3, 3, 3, "need_attention"),
    "F": (3, 2, 2, "about_to_sleep"),
    "G": (2, 5, 5, "cannot_lose"),
    "H": (2, 4, 4, "at_risk"),
    "I": (1, 2, 2, "hibernating"),
    "J": (1, 1, 1, "lost"),
}


async def test_hand_checked_quintiles_and_segments(db):
    ids = {}
    for n, (name, (last, visits)) in enumerate(_HAND.items()):
        ids[name] = await make_member(db, f"1380000{n:04d}")
        await add_orders(db, ids[name], [last + i for i in range(visits)], 1000)
    await add_orders(db, ids["J"], [400], 1_000_000)  # before the window: counts for nothing
    await make_member(db, "13900000000")  # never bought: no RFM row
    done = await recompute_segments(db, AS_OF)
    assert done.scored == 10
    rows = await _segments(db)
    assert len(rows) == 10
    for name, (r, f, m, segment) in _EXPECTED.items():
        row = rows[ids[name]]
        assert (row.r_score, row.f_score, row.m_score, row.segment) == (r, f, m, segment), name
        assert row.recency_days == _HAND[name][0]
        assert row.frequency == _HAND[name][1]
        assert row.monetary_fen == 1000 * _HAND[name][1]
        assert (row.as_of, row.window_days) == (AS_OF, 365)
    assert done.segments == {s: (0 if s == "promising" else 1) for s in SEGMENTS}
    # a shorter window leaves out the members whose last visit is older
    short = await recompute_segments(db, AS_OF, window_days=90)
    assert short.scored == 5
    assert set(await _segments(db)) == {ids[n] for n in "ABCDE"}


async def test_ties_share_a_score_and_refunds_reduce_monetary(db):
    ids = [await make_member(db, f"1370000{n:04d}") for n in range(10)]
    # six members visit once on the same day for the same amount: one tie in every measure
    for member_id in ids[:6]:
        await add_orders(db, member_id, [20], 500)
    for k, member_id in enumerate(ids[6:], start=1):
        await add_orders(db, member_id, list(range(k, k + k + 1)), 2000, refunded=500)
    await recompute_segments(db, AS_OF)
    rows = await _segments(db)
    for member_id in ids[:6]:  # all six share rank 1 in R, F and M
        assert (rows[member_id].r_score, rows[member_id].f_score, rows[member_id].m_score) == (1, 1, 1)
        assert rows[member_id].segment == "lost"
    # ranks 7..10 -> 1 + 5*6//10 = 4, 1 + 5*7//10 = 4, 5, 5
    assert [rows[m].f_score for m in ids[6:]] == [4, 4, 5, 5]
    assert rows[ids[6]].frequency == 2
    assert rows[ids[6]].monetary_fen == 2 * 1500
    assert rows[ids[9]].recency_days == 4
    again = await recompute_segments(db, AS_OF)  # deterministic: same data, same scores
    assert {m: (r.r_score, r.f_score, r.m_score) for m, r in (await _segments(db)).items()} == {
        m: (r.r_score, r.f_score, r.m_score) for m, r in rows.items()
    }
    assert again.scored == 10


async def test_merged_members_are_not_scored_and_lose_their_row(db):
    keep = await make_member(db, "13800000001")
    dup = await make_member(db, "13800000002")
    await add_orders(db, keep, [1], 1000)
    await add_orders(db, dup, [2], 1000)
    await recompute_segments(db, AS_OF)
    assert set(await _segments(db)) == {keep, dup}
    async with db.session() as session, session.begin():
        await merge_members(session, dup, keep)
    assert set(await _segments(db)) == {keep}  # the merge hook dropped the duplicate's row
    await recompute_segments(db, AS_OF)
    rows = await _segments(db)
    assert set(rows) == {keep}
    assert rows[keep].frequency == 2  # the duplicate's order moved to the survivor


async def test_counts_are_scoped_to_stores(db):
    await add_store(db, "south")
    north = await make_member(db, "13800000001", "north")
    south = await make_member(db, "13800000002", "south")
    await add_orders(db, north, [1], 1000)
    await add_orders(db, south, [1], 1000)
    await recompute_segments(db, AS_OF)
    async with db.session() as session:
        everyone = await segment_counts(session, stores=None)
        mine = await segment_counts(session, stores=frozenset({"south"}))
    assert sum(everyone.values()) == 2
    assert sum(mine.values()) == 1


async def test_bad_window_is_refused(db):
    with pytest.raises(ValueError, match="window_days"):
        await recompute_segments(db, AS_OF, window_days=0)


def test_cli_recomputes_and_prints_the_counts(tmp_path, monkeypatch, capsys):
    """`storelink-hub members segments` on the SQLite database of the settings."""
    import asyncio  # noqa: PLC0415

    from hub.cli import main  # noqa: PLC0415

    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STORELINK_DATABASE_URL", url)

    async def seed() -> None:
        database = Database.from_url(url)
        await migrate(database.engine)
        await add_store(database, "north")
        member = await make_member(database, "13800000001")
        await add_orders(database, member, [3], 1000)
        await database.close()

    asyncio.run(seed())
    main(["members", "segments", "--as-of", "2026-06-30", "--window-days", "30"])
    out = capsys.readouterr().out
    assert "RFM as of 2026-06-30 over 30 days: 1 members scored" in out
    assert "lost                         1" in out  # one member: every rank is 1
    with pytest.raises(SystemExit) as exit_info:
        main(["members", "segments", "--as-of", "30/06/2026"])
    assert exit_info.value.code == 2
    assert "--as-of must be a date" in capsys.readouterr().err

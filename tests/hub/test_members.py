"""Member identity: phone normalisation, one member per phone, merged members followed."""

from __future__ import annotations

import asyncio
from datetime import date

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from hub.db import Database, migrate
from hub.errors import NotFound
from hub.levels import MemberLevel, level_of
from hub.loyalty_rules import LevelDef, LevelsConfig, save_setting
from hub.member_facts import MemberOrder
from hub.member_search import MemberQuery, UnknownLevel, birthday_in_year, birthdays, search_members
from hub.members import (
    Gender,
    InvalidMember,
    InvalidPhone,
    Member,
    MemberExists,
    MemberFields,
    MergeRefused,
    create_member,
    find_by_phone,
    get_member,
    mask_phone,
    merge_members,
    normalize_phone,
    parse_gender,
    update_member,
)
from hub.stores import add_store


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("13812345678", "13812345678"),
        ("+86 138 1234 5678", "13812345678"),
        ("0086-138-1234-5678", "13812345678"),
        ("86 19912345678", "19912345678"),
        ("（138）12345678", "13812345678"),
    ],
)
def test_phone_is_normalised(raw, expected):
    assert normalize_phone(raw) == expected


@pytest.mark.parametrize(
    "raw", ["", "1381234567", "138123456789", "12812345678", "02112345678", "1381234567a"]
)
def test_invalid_phone_is_refused_with_the_number(raw):
    with pytest.raises(InvalidPhone, match="mainland China mobile"):
        normalize_phone(raw)


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    await add_store(database, "shop-1")
    yield database
    await database.close()


async def test_one_member_per_phone_in_any_spelling(db):
    async with db.session() as session, session.begin():
        first = await create_member(
            session, MemberFields("13812345678", channel="till", source_store="shop-1")
        )
    with pytest.raises(MemberExists, match="13812345678"):
        async with db.session() as session, session.begin():
            await create_member(session, MemberFields("+86 138-1234-5678", channel="hub"))
    async with db.session() as session:
        assert (await get_member(session, first.id)).source_store == "shop-1"


async def test_merged_member_resolves_to_the_survivor_and_unknown_is_not_found(db):
    async with db.session() as session, session.begin():
        keep = await create_member(session, MemberFields("13800000001", channel="hub"))
        dup = await create_member(session, MemberFields("13800000002", channel="till"))
        dup.merged_into = keep.id
    async with db.session() as session:
        assert (await get_member(session, dup.id)).id == keep.id
        assert (await get_member(session, dup.id, follow_merge=False)).id == dup.id
        with pytest.raises(NotFound):
            await get_member(session, "no-such-member")


# --------------------------------------------------------------------------- changes and merges


async def _member(db, phone: str, **kw):
    async with db.session() as session, session.begin():
        return await create_member(session, MemberFields(phone, channel=kw.pop("channel", "hub"), **kw))


@pytest.mark.parametrize(
    ("word", "gender"),
    [
        ("男", Gender.MALE),
        ("女", Gender.FEMALE),
        ("Female", Gender.FEMALE),
        (" m ", Gender.MALE),
        ("", Gender.UNKNOWN),
    ],
)
def test_gender_words(word, gender):
    assert parse_gender(word) is gender


def test_unknown_gender_word_and_bad_fields_are_refused():
    with pytest.raises(InvalidMember, match="gender"):
        parse_gender("x")
    with pytest.raises(InvalidMember, match="at most 64"):
        MemberFields("13812345678", channel="hub", name="名" * 65)
    with pytest.raises(InvalidMember, match="future"):
        MemberFields("13812345678", channel="hub", birthday=date(2999, 1, 1))
    assert mask_phone("13812345678") == "138****5678"


async def test_update_revalidates_and_keeps_the_phone_unique(db):
    one = await _member(db, "13800000001")
    await _member(db, "13800000002")
    async with db.session() as session, session.begin():
        changed = await update_member(
            session,
            one.id,
            {"name": " 王芳 ", "gender": "女", "birthday": date(1990, 2, 3), "consent_sms": True},
        )
    assert (changed.name, changed.gender, changed.birthday, changed.consent_sms) == (
        "王芳",
        "female",
        date(1990, 2, 3),
        True,
    )
    with pytest.raises(MemberExists):
        async with db.session() as session, session.begin():
            await update_member(session, one.id, {"phone": "+86 138 0000 0002"})
    with pytest.raises(InvalidPhone):
        async with db.session() as session, session.begin():
            await update_member(session, one.id, {"phone": "12345"})
    async with db.session() as session, session.begin():
        await update_member(session, one.id, {"phone": "13900000009"})
    async with db.session() as session:
        assert (await get_member(session, one.id)).phone == "13900000009"


async def test_merge_frees_the_phone_moves_facts_and_refuses_loops(db):
    keep = await _member(db, "13800000001")
    dup = await _member(db, "13800000002", name="李雷", birthday=date(1991, 7, 8), gender=Gender.MALE)
    older = await _member(db, "13800000003")
    async with db.session() as session, session.begin():
        await merge_members(session, older.id, dup.id)  # an earlier merge into the duplicate
        session.add(
            MemberOrder(
                order_id="o-1",
                member_id=dup.id,
                store="shop-1",
                business_day=date(2026, 1, 2),
                closed_at=None,
                total_fen=1200,
                refunded_fen=0,
                items=[],
            )
        )
    async with db.session() as session, session.begin():
        survivor = await merge_members(session, dup.id, keep.id)
    assert (survivor.id, survivor.phone, survivor.name, survivor.gender) == (
        keep.id,
        "13800000001",
        "李雷",
        "male",
    )
    async with db.session() as session:
        gone = await get_member(session, dup.id, follow_merge=False)
        assert (gone.merged_into, gone.phone, gone.released_phone) == (keep.id, None, "13800000002")
        assert (await get_member(session, older.id, follow_merge=False)).merged_into == keep.id
        assert await session.scalar(select(MemberOrder.member_id)) == keep.id
        assert await find_by_phone(session, "13800000002") is None
    # the freed number can be registered again, by someone else
    again = await _member(db, "13800000002")
    assert again.id != dup.id
    for from_id, into_id, message in [
        (keep.id, keep.id, "itself"),
        (dup.id, again.id, "already merged"),
        (again.id, dup.id, "merge into that member"),
    ]:
        with pytest.raises(MergeRefused, match=message):
            async with db.session() as session, session.begin():
                await merge_members(session, from_id, into_id)
    with pytest.raises(NotFound):
        async with db.session() as session, session.begin():
            await merge_members(session, "nobody", keep.id)
    async with db.session() as session:
        assert (await get_member(session, again.id)).merged_into is None


async def test_merge_with_take_phone_gives_the_survivor_the_new_number(db):
    old_account = await _member(db, "13800000001")  # has the history and balances
    new_number = await _member(db, "13900000002")  # registered again after changing phone
    async with db.session() as session, session.begin():
        survivor = await merge_members(session, new_number.id, old_account.id, take_phone=True)
    assert survivor.phone == "13900000002"
    async with db.session() as session:
        assert (await find_by_phone(session, "13900000002")).id == old_account.id
        assert (await get_member(session, new_number.id, follow_merge=False)).released_phone == "13800000001"
        assert await find_by_phone(session, "13800000001") is None


async def test_crossing_merges_cannot_both_win(db):
    a = await _member(db, "13800000001")
    b = await _member(db, "13800000002")

    async def merge(from_id, into_id):
        async with db.session() as session, session.begin():
            await merge_members(session, from_id, into_id)

    results = await asyncio.gather(merge(a.id, b.id), merge(b.id, a.id), return_exceptions=True)
    assert sum(r is None for r in results) == 1, results
    assert all(r is None or isinstance(r, (MergeRefused, OperationalError)) for r in results), results
    async with db.session() as session:
        rows = (await session.scalars(select(Member).order_by(Member.id))).all()
    assert sorted(m.merged_into is None for m in rows) == [False, True]


# --------------------------------------------------------------------------- birthdays


async def test_birthday_list_crosses_the_year_end_and_keeps_29_february(db):
    born = {
        "13800000001": date(1990, 12, 30),
        "13800000002": date(1985, 1, 2),
        "13800000003": date(2000, 1, 10),  # outside the window
        "13800000004": date(1996, 2, 29),
        "13800000005": date(1970, 12, 27),  # the day before the window
    }
    for phone, day in born.items():
        await _member(db, phone, birthday=day, source_store="shop-1")
    async with db.session() as session:
        rows, more = await birthdays(session, date(2026, 12, 28), 7, stores=None, limit=10)
    assert not more
    assert [(r.member.phone, r.next_birthday, r.turns, r.days_until) for r in rows] == [
        ("13800000001", date(2026, 12, 30), 36, 2),
        ("13800000002", date(2027, 1, 2), 42, 5),
    ]
    async with db.session() as session:
        common, _ = await birthdays(session, date(2027, 2, 27), 2, stores=None, limit=10)
        leap, _ = await birthdays(session, date(2028, 2, 28), 1, stores=None, limit=10)
        leap_day, _ = await birthdays(session, date(2028, 2, 29), 1, stores=None, limit=10)
        elsewhere, _ = await birthdays(session, date(2026, 12, 28), 7, stores=frozenset({"shop-2"}), limit=10)
    assert [(r.member.phone, r.next_birthday) for r in common] == [("13800000004", date(2027, 2, 28))]
    assert leap == []
    assert [(r.member.phone, r.next_birthday, r.turns) for r in leap_day] == [
        ("13800000004", date(2028, 2, 29), 32)
    ]
    assert elsewhere == []
    assert birthday_in_year(date(1996, 2, 29), 2027) == date(2027, 2, 28)
    with pytest.raises(ValueError, match="days"):
        async with db.session() as session:
            await birthdays(session, date(2026, 1, 1), 0, stores=None, limit=10)


async def test_search_by_level_agrees_with_the_level_the_till_sees(db):
    ids = [(await _member(db, f"1380000000{i}")).id for i in range(5)]
    async with db.session() as session, session.begin():
        config = LevelsConfig(
            levels=[
                LevelDef(code="basic", name="普通", rank=0, threshold=0),
                LevelDef(code="silver", name="银卡", rank=1, threshold=10000),
                LevelDef(code="gold", name="金卡", rank=2, threshold=50000),
            ]
        )
        await save_setting(session, "levels", config, "test")
        rows = {r.member_id: r for r in await session.scalars(select(MemberLevel))}
        rows[ids[0]].level_code = "gold"
        rows[ids[1]].level_code = "silver"
        rows[ids[2]].spend_fen = 20000  # no level recorded: its counter reaches silver
        rows[ids[3]].level_code = "retired"  # a level head office removed: counter 0 is basic
        await session.delete(rows[ids[4]])  # no row at all: basic
    found = {}
    async with db.session() as session:
        for code in ("basic", "silver", "gold"):
            members, _ = await search_members(session, MemberQuery(level=code), limit=10)
            found[code] = {m.id for m in members}
        seen = {member_id: (await level_of(session, member_id))["code"] for member_id in ids}
        with pytest.raises(UnknownLevel, match="basic, silver, gold"):
            await search_members(session, MemberQuery(level="platinum"), limit=10)
    assert found == {"basic": {ids[3], ids[4]}, "silver": {ids[1], ids[2]}, "gold": {ids[0]}}
    assert all(member_id in found[code] for member_id, code in seen.items())

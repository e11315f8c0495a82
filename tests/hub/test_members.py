"""Member identity: phone normalisation, one member per phone, merged members followed."""

from __future__ import annotations

import pytest

from hub.db import Database, migrate
from hub.errors import NotFound
from hub.members import InvalidPhone, MemberExists, MemberFields, create_member, get_member, normalize_phone
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

"""Member codes: 18 digits with the 96 prefix, rotating every 30 s, accepted once, expired ones refused."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from hub.db import Database, migrate
from hub.member_codes import (
    CodeExpired,
    CodeInvalid,
    CodeUsed,
    MemberCodeUse,
    issue_code,
    looks_like_member_code,
    redeem_code,
)
from hub.members import MemberFields, create_member, merge_members
from hub.rpc import RpcServer
from hub.stores import add_store
from protocol import RpcRequest

T0 = datetime(2026, 11, 23, 8, 0, 3, tzinfo=UTC)  # 3 s into a 30-second window


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    await add_store(database, "shop-1")
    yield database
    await database.close()


async def _member(db, phone="13812345678"):
    async with db.session() as session, session.begin():
        return await create_member(session, MemberFields(phone, channel="hub", name="张三"))


async def _issue(db, member_id, now=T0):
    async with db.session() as session, session.begin():
        return await issue_code(session, member_id, now=now)


async def _redeem(db, code, now=T0, store="shop-1"):
    async with db.session() as session, session.begin():
        return await redeem_code(session, code, store=store, now=now)


async def _uses(db) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(MemberCodeUse)))


async def test_code_shape_rotation_and_expiry_time(db):
    member = await _member(db)
    first = await _issue(db, member.id)
    assert len(first.code) == 18
    assert first.code.isdigit()
    assert first.code.startswith("96")
    assert first.qr == first.code
    assert looks_like_member_code(first.code)
    assert not looks_like_member_code("6901234567892")  # an EAN-13
    assert not looks_like_member_code("134567890123456789")  # a WeChat Pay code
    assert first.refresh_at == datetime(2026, 11, 23, 8, 0, 30, tzinfo=UTC)
    assert first.expires_at == datetime(2026, 11, 23, 8, 1, 0, tzinfo=UTC)
    same_window = await _issue(db, member.id, T0 + timedelta(seconds=20))
    next_window = await _issue(db, member.id, T0 + timedelta(seconds=30))
    assert same_window.code == first.code
    assert next_window.code[:10] == first.code[:10]  # the member's handle stays
    assert next_window.code != first.code


async def test_a_code_works_once_in_its_window_and_the_next(db):
    member = await _member(db)
    code = (await _issue(db, member.id)).code
    # the phone's clock was behind: the code arrives in the following window and still works
    assert await _redeem(db, code, T0 + timedelta(seconds=40)) == member.id
    assert await _uses(db) == 1
    with pytest.raises(CodeUsed, match="already used"):
        await _redeem(db, code, T0 + timedelta(seconds=41))
    assert await _uses(db) == 1
    fresh = (await _issue(db, member.id, T0 + timedelta(seconds=60))).code
    assert await _redeem(db, fresh, T0 + timedelta(seconds=61)) == member.id


async def test_a_screenshot_shown_later_is_expired_and_changes_nothing(db):
    member = await _member(db)
    code = (await _issue(db, member.id)).code
    with pytest.raises(CodeExpired, match="expired"):
        await _redeem(db, code, T0 + timedelta(seconds=60))
    with pytest.raises(CodeInvalid, match="not valid"):  # far too old to tell from a wrong one
        await _redeem(db, code, T0 + timedelta(hours=1))
    assert await _uses(db) == 0


@pytest.mark.parametrize("bad", ["", "96123", "961234567812345678x", "971234567812345678", "abc"])
async def test_malformed_codes_are_refused(db, bad):
    with pytest.raises(CodeInvalid, match="not a member code"):
        await _redeem(db, bad)


async def test_a_wrong_or_unknown_code_is_refused(db):
    member = await _member(db)
    code = (await _issue(db, member.id)).code
    wrong = code[:10] + f"{(int(code[10:]) + 1) % 10**8:08d}"
    with pytest.raises(CodeInvalid, match="not valid"):
        await _redeem(db, wrong)
    unknown_handle = "96" + f"{(int(code[2:10]) + 1) % 10**8:08d}" + code[10:]
    with pytest.raises(CodeInvalid, match="not known"):
        await _redeem(db, unknown_handle)
    assert await _uses(db) == 0


async def test_a_merged_members_code_stands_for_the_survivor(db):
    keep = await _member(db, "13800000001")
    dup = await _member(db, "13800000002")
    code = (await _issue(db, dup.id)).code
    async with db.session() as session, session.begin():
        await merge_members(session, dup.id, keep.id)
    assert await _redeem(db, code) == keep.id
    assert (await _issue(db, dup.id)).member_id == keep.id


async def test_lookup_by_code_over_rpc_is_refused_the_second_time(db):
    member = await _member(db)
    code = (await _issue(db, member.id, datetime.now(UTC))).code
    server = RpcServer(db)

    def request(code, key=None):
        return RpcRequest(
            id=uuid.uuid4(),
            method="member.lookup",
            params={"code": code},
            deadline=datetime.now(UTC) + timedelta(seconds=3),
            idempotency_key=key,
        )

    first = await server.handle("shop-1", request(code))
    assert first.ok, first.error
    assert first.result["id"] == member.id
    assert first.result["phone_masked"] == "138****5678"
    again = await server.handle("shop-1", request(code))
    assert not again.ok
    assert "already used" in again.error
    assert await _uses(db) == 1
    # a till that retries with the same idempotency key gets its first answer back
    other = await _member(db, "13900000000")
    keyed = request((await _issue(db, other.id, datetime.now(UTC))).code, "lookup-1")
    ok = await server.handle("shop-1", keyed)
    retry = await server.handle("shop-1", keyed.model_copy(update={"id": uuid.uuid4()}))
    assert ok.ok, ok.error
    assert retry.ok
    assert retry.result == ok.result
    assert await _uses(db) == 2

"""Till RPC `member.lookup` and `member.register`: one member per phone, clear refusals, no partial writes."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from hub import members as members_module
from hub import points
from hub.db import Database, migrate
from hub.loyalty_rules import LevelDef, LevelsConfig, save_setting
from hub.members import Member
from hub.passes import ProductSpec, create_product, issue_manual
from hub.rpc import RpcError, RpcServer
from hub.stored_value import Source, topup
from hub.stores import add_store
from protocol import RpcRequest


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    await add_store(database, "shop-1")
    await add_store(database, "shop-2")
    yield database
    await database.close()


def _call(server: RpcServer, method: str, params: dict, store: str = "shop-1"):
    request = RpcRequest(
        id=uuid.uuid4(), method=method, params=params, deadline=datetime.now(UTC) + timedelta(seconds=3)
    )
    return server.handle(store, request)


async def _count(db) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(Member)))


async def test_register_twice_gives_one_member_flagged_existing(db):
    server = RpcServer(db)
    first = await _call(server, "member.register", {"phone": "138 1234 5678", "name": "王芳", "gender": "女"})
    assert first.ok, first.error
    view = first.result
    assert view["existing"] is False
    assert view["phone_masked"] == "138****5678"
    assert (view["name"], view["gender"], view["birthday_today"]) == ("王芳", "female", False)
    second = await _call(
        server, "member.register", {"phone": "+8613812345678", "name": "别人"}, store="shop-2"
    )
    assert second.ok, second.error
    assert second.result["existing"] is True
    assert second.result["id"] == view["id"]
    assert second.result["name"] == "王芳"  # the existing member is not changed by a second registration
    async with db.session() as session:
        member = await session.get(Member, view["id"])
    assert (member.source_store, member.channel) == ("shop-1", "till")
    assert await _count(db) == 1


async def test_concurrent_registrations_of_one_phone_make_one_member(db):
    server = RpcServer(db)
    replies = await asyncio.gather(
        *(
            _call(server, "member.register", {"phone": "13912345678"}, store=f"shop-{1 + i % 2}")
            for i in range(6)
        )
    )
    assert all(r.ok for r in replies), [r.error for r in replies]
    assert len({r.result["id"] for r in replies}) == 1
    assert sum(not r.result["existing"] for r in replies) == 1
    assert await _count(db) == 1


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"phone": "12345"}, "not a mainland China mobile number"),
        ({"phone": "13812345678", "birthday": "2999-01-01"}, "in the future"),
        ({"phone": "13812345678", "gender": "robot"}, "gender"),
        ({"phone": "13812345678", "name": "名" * 65}, "at most 64"),
        ({"phone": "13812345678", "referrer_phone": "13900000000"}, "referrer 13900000000 is not a member"),
        ({"phone": "13812345678", "referrer_phone": "13812345678"}, "cannot refer themselves"),
        ({"phone": "13812345678", "colour": "blue"}, "colour"),
        ({}, "phone"),
    ],
)
async def test_register_refusals_write_nothing(db, params, message):
    reply = await _call(RpcServer(db), "member.register", params)
    assert not reply.ok
    assert message in reply.error
    assert await _count(db) == 0


async def test_register_with_a_referrer_and_lookup_by_phone(db):
    server = RpcServer(db)
    referrer = (await _call(server, "member.register", {"phone": "13900000000"})).result
    today = datetime.now(UTC).astimezone(ZoneInfo("Asia/Shanghai")).date()
    born = today.replace(year=1990) if (today.month, today.day) != (2, 29) else date(1992, 2, 29)
    new = await _call(
        server,
        "member.register",
        {
            "phone": "13812345678",
            "referrer_phone": "139-0000-0000",
            "birthday": born.isoformat(),
            "consent_sms": True,
        },
    )
    assert new.ok, new.error
    assert new.result["birthday_today"] is True
    async with db.session() as session:
        member = await session.get(Member, new.result["id"])
    assert (member.referrer_id, member.consent_sms, member.consent_marketing) == (referrer["id"], True, False)
    found = await _call(server, "member.lookup", {"phone": "138 1234 5678"}, store="shop-2")
    assert found.ok, found.error
    assert found.result["id"] == new.result["id"]
    assert "existing" not in found.result


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"phone": "13800000000"}, "13800000000 is not a member yet"),
        ({"phone": "0211234567"}, "not a mainland China mobile number"),
        ({}, "give either phone or code"),
        ({"phone": "13800000000", "code": "961234567812345678"}, "give either phone or code"),
        ({"code": "12345"}, "not a member code"),
    ],
)
async def test_lookup_refusals(db, params, message):
    reply = await _call(RpcServer(db), "member.lookup", params)
    assert not reply.ok
    assert message in reply.error


async def test_the_view_carries_level_points_stored_value_and_passes(db):
    async with db.session() as session, session.begin():
        levels = LevelsConfig(
            levels=[LevelDef(code="silver", name="银卡", rank=1, threshold=0, discount_bp=9500)]
        )
        await save_setting(session, "levels", levels, "test")
        spec = {
            "name": "洗护10次",
            "kind": "count",
            "sale_sku": "SELL-WASH",
            "covers_skus": ["WASH"],
            "uses": 10,
        }
        await create_product(session, "wash10", ProductSpec.model_validate(spec))
    server = RpcServer(db)
    member_id = (await _call(server, "member.register", {"phone": "13812345678"})).result["id"]
    now = datetime.now(UTC)
    async with db.session() as session, session.begin():
        await points.credit(
            session,
            member_id,
            120,
            kind="adjust",
            source="test",
            expires_at=now + timedelta(days=30),
            now=now,
        )
        await topup(
            session,
            member_id,
            50000,
            payment_method="cash",
            payment_reference=None,
            source=Source(actor="store:shop-1", store="shop-1"),
        )
        await issue_manual(session, "wash10", member_id, actor="user:test", reason="gift")
    view = (await _call(server, "member.lookup", {"phone": "13812345678"})).result
    assert view["level"]["code"] == "silver"
    assert view["level"]["discount_bp"] == 9500
    assert view["points"] == 120  # the default rules give nothing for registering
    assert view["stored_value"]["principal_fen"] == 50000
    assert view["stored_value"]["total_fen"] == 50000 + view["stored_value"]["bonus_fen"]
    assert [(p["name"], p["remaining"]) for p in view["passes"]] == [("洗护10次", 10)]


async def test_a_failing_creation_listener_leaves_no_member_behind(db, monkeypatch):
    async def refuses(session, member):
        raise RpcError("welcome gift stock is empty")

    monkeypatch.setattr(members_module, "_CREATED_LISTENERS", (refuses,))
    reply = await _call(RpcServer(db), "member.register", {"phone": "13812345678"})
    assert not reply.ok
    assert reply.error == "welcome gift stock is empty"
    assert await _count(db) == 0  # on SQLite too: the savepoint is not the outermost transaction

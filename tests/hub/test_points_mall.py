"""Points mall (积分商城): redeem for points or points + cash, per-member limits, idempotent retries,
refusals that write nothing, and concurrent redemptions that never oversell (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import ValidationError
from sqlalchemy import func, select

from hub import auth, points
from hub.api import make_app
from hub.config import HubSettings
from hub.db import Database, migrate
from hub.mall_tables import MallItem, MallRedemption
from hub.members import MemberFields, add_members, merge_members
from hub.points_mall import (
    ItemChange,
    ItemIn,
    MallError,
    RedeemIn,
    cancel_redemption,
    collect_redemption,
    create_item,
    redeem,
    update_item,
)
from hub.stored_value import Source, stored_value_balances, topup
from hub.stores import add_store

_PHONES = itertools.count()


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    yield database
    await database.close()


async def _members(db: Database, n: int, *, pts: int = 1000, sv_fen: int = 0) -> list[str]:
    now = datetime.now(UTC)
    async with db.session() as session, session.begin():
        batch = [MemberFields(f"137{next(_PHONES):08d}", channel="app") for _ in range(n)]
        ids = [m.id for m in await add_members(session, batch, welcome=False)]
        for member_id in ids:
            if pts:
                await points.credit(
                    session,
                    member_id,
                    pts,
                    kind="adjust",
                    source="user:test",
                    expires_at=now + timedelta(days=365),
                    now=now,
                )
            if sv_fen:
                await topup(
                    session,
                    member_id,
                    sv_fen,
                    payment_method="cash",
                    payment_reference=None,
                    source=Source(actor="test"),
                )
    return ids


async def _item(db: Database, **kw: object) -> str:
    fields: dict[str, object] = {"name": "保温杯", "sku": "CUP-1", "points": 300, "stock": 10, **kw}
    async with db.session() as session, session.begin():
        return (await create_item(session, ItemIn.model_validate(fields), actor="user:mkt")).id


async def _redeem(db: Database, item: str, member: str, key: str | None = None, **kw: object):
    body = RedeemIn.model_validate({"member_id": member, "idempotency_key": key or uuid.uuid4().hex, **kw})
    async with db.session() as session, session.begin():
        return await redeem(session, item, body, actor="user:till")


async def _balance(db: Database, member: str) -> int:
    async with db.session() as session:
        return await points.balance_of(session, member)


async def _row(db: Database, item: str) -> MallItem:
    async with db.session() as session:
        found = await session.get(MallItem, item)
        assert found is not None
        return found


async def test_redeem_for_points_debits_once_and_replays(db):
    (member,) = await _members(db, 1)
    item = await _item(db)
    done = await _redeem(db, item, member, key="key-00000001", quantity=2)
    assert done.created
    assert done.redemption.points == 600
    assert done.balance == 400
    again = await _redeem(db, item, member, key="key-00000001", quantity=2)
    assert not again.created
    assert again.redemption.id == done.redemption.id
    assert await _balance(db, member) == 400
    assert (await _row(db, item)).redeemed == 2
    async with db.session() as session:
        ledger = (
            await session.scalars(
                select(points.PointsLedger).where(
                    points.PointsLedger.member_id == member, points.PointsLedger.kind == "redeem"
                )
            )
        ).all()
    assert [(row.points, row.source) for row in ledger] == [(-600, f"mall:{done.redemption.id}")]


async def test_refusals_write_nothing(db):
    rich, poor = await _members(db, 2)
    async with db.session() as session, session.begin():
        await points.debit(session, poor, 900, kind="adjust", source="user:test", now=datetime.now(UTC))
    item = await _item(db, per_member_limit=2, stock=3)
    with pytest.raises(MallError, match="not enough points: 300 needed, the member has 100"):
        await _redeem(db, item, poor)
    await _redeem(db, item, rich, quantity=2)
    with pytest.raises(MallError, match="at most 2 of '保温杯'; this member has 2"):
        await _redeem(db, item, rich)
    other = await _item(db, stock=1, points=100)
    with pytest.raises(MallError, match="only 1 of '保温杯' left"):
        await _redeem(db, other, rich, quantity=2)
    first = await _redeem(db, other, rich, key="same-key-1")
    assert first.created
    with pytest.raises(MallError, match="idempotency key same-key-1 was used for another redemption"):
        await _redeem(db, item, rich, key="same-key-1")
    with pytest.raises(MallError, match="sold out"):
        await _redeem(db, other, rich)
    assert await _balance(db, poor) == 100
    assert await _balance(db, rich) == 1000 - 600 - 100
    assert (await _row(db, item)).redeemed == 2
    async with db.session() as session, session.begin():
        with pytest.raises(MallError, match="below the 2 units already redeemed"):
            await update_item(session, item, ItemChange(stock=1))
    async with db.session() as session, session.begin():
        await update_item(session, item, ItemChange(active=False))
    with pytest.raises(MallError, match="no longer in the points mall"):
        await _redeem(db, item, poor)


async def test_points_plus_cash(db):
    member, other = await _members(db, 2, sv_fen=5_000)
    item = await _item(db, points=200, cash_fen=1_990)
    with pytest.raises(MallError, match=r"also costs ¥19\.90: give payment_method"):
        await _redeem(db, item, member)
    done = await _redeem(db, item, member, payment_method="stored_value")
    assert (done.redemption.cash_fen, done.redemption.points) == (1_990, 200)
    async with db.session() as session:
        assert sum(await stored_value_balances(session, member)) == 5_000 - 1_990
    external = await _redeem(db, item, other, payment_method="external", payment_reference="wx-123")
    assert external.redemption.payment_reference == "wx-123"
    with pytest.raises(MallError, match="not enough to pay"):
        await _redeem(db, item, member, quantity=2, payment_method="stored_value")
    assert await _balance(db, member) == 800  # the refused second redemption took no points
    only_points = await _item(db)
    with pytest.raises(MallError, match="costs points only"):
        await _redeem(db, only_points, member, payment_method="external", payment_reference="x")
    with pytest.raises(ValidationError, match="needs its payment_reference"):
        RedeemIn.model_validate({"member_id": "m", "idempotency_key": "k" * 8, "payment_method": "external"})


async def test_concurrent_redemptions_never_oversell(db, database_url):
    """Many members at once for 25 units, and one member retrying at once against a limit of 2."""
    n = 200 if database_url.startswith("postgresql") else 40
    members = await _members(db, n)
    item = await _item(db, stock=25)

    async def attempt(member: str) -> str:
        try:
            await _redeem(db, item, member)
        except MallError as err:
            return "sold out" if "sold out" in str(err) else str(err)
        return "ok"

    outcomes = await asyncio.gather(*(attempt(m) for m in members))
    assert set(outcomes) == {"ok", "sold out"}
    assert outcomes.count("ok") == 25
    assert (await _row(db, item)).redeemed == 25
    balances = sorted([await _balance(db, m) for m in members])
    assert balances == sorted([700] * 25 + [1000] * (n - 25))

    limited = await _item(db, stock=100, per_member_limit=2)
    lone = members[0]
    tries = await asyncio.gather(*(attempt_one(db, limited, lone) for _ in range(12)))
    assert tries.count("ok") == 2
    async with db.session() as session:
        held = await session.scalar(
            select(func.sum(MallRedemption.quantity)).where(
                MallRedemption.member_id == lone, MallRedemption.item_id == limited
            )
        )
    assert held == 2


async def attempt_one(db: Database, item: str, member: str) -> str:
    try:
        await _redeem(db, item, member)
    except MallError as err:
        return str(err)
    return "ok"


# --------------------------------------------------------------------------- API


@pytest.fixture
async def client(db, tmp_path):
    async with TestClient(TestServer(make_app(db, HubSettings(state_dir=tmp_path)))) as test_client:
        yield test_client


@pytest.fixture
async def users(db, client) -> dict[str, dict[str, str]]:
    await add_store(db, "shop-1")
    found = {}
    for name, role, stores in (("mkt", "marketing", None), ("li", "store-manager", ["shop-1"])):
        await auth.add_user(db, name, "password-123", role, stores)
        resp = await client.post("/api/v1/auth/token", json={"name": name, "password": "password-123"})
        found[name] = {"Authorization": f"Bearer {(await resp.json())['token']}"}
    return found


async def test_mall_api(db, client, users):
    (member,) = await _members(db, 1)
    body = {"name": "帆布袋", "points": 400, "stock": 1}
    assert (await client.post("/api/v1/mall/items", json=body, headers=users["li"])).status == 403
    bad = await client.post("/api/v1/mall/items", json={**body, "points": 0}, headers=users["mkt"])
    assert bad.status == 422
    assert "points" in str(await bad.json())
    created = await client.post("/api/v1/mall/items", json=body, headers=users["mkt"])
    assert created.status == 201
    item = (await created.json())["id"]
    listed = await (await client.get("/api/v1/mall/items", headers=users["li"])).json()
    assert [i["id"] for i in listed["items"]] == [item]
    redeem_body = {"member_id": member, "idempotency_key": "order-1:0"}
    first = await client.post(f"/api/v1/mall/items/{item}/redeem", json=redeem_body, headers=users["li"])
    assert first.status == 201
    assert (await first.json())["balance"] == 600
    again = await client.post(f"/api/v1/mall/items/{item}/redeem", json=redeem_body, headers=users["li"])
    assert again.status == 200
    sold_out = await client.post(
        f"/api/v1/mall/items/{item}/redeem",
        json={**redeem_body, "idempotency_key": "order-2:0"},
        headers=users["li"],
    )
    assert sold_out.status == 409
    assert "sold out" in (await sold_out.json())["detail"]
    history = await (
        await client.get(f"/api/v1/mall/redemptions?member={member}", headers=users["li"])
    ).json()
    assert [r["points"] for r in history["items"]] == [400]
    patched = await client.patch(f"/api/v1/mall/items/{item}", json={"stock": 5}, headers=users["mkt"])
    assert (await patched.json())["left"] == 4
    redemption = (await first.json())["id"]
    elsewhere = await client.post(
        f"/api/v1/mall/redemptions/{redemption}/collect", json={"store": "shop-9"}, headers=users["li"]
    )
    assert elsewhere.status == 403  # a store manager hands over only in their own stores
    cancelled = await client.post(f"/api/v1/mall/redemptions/{redemption}/cancel", headers=users["li"])
    assert (await cancelled.json())["state"] == "cancelled"
    shown = await (await client.get(f"/api/v1/mall/items/{item}", headers=users["li"])).json()
    assert shown["left"] == 5
    assert await _balance(db, member) == 1000


async def test_a_merged_duplicates_redemptions_count_for_the_survivor(db):
    dup, keep = await _members(db, 2)
    item = await _item(db, per_member_limit=1)
    await _redeem(db, item, dup)
    async with db.session() as session, session.begin():
        await merge_members(session, dup, keep)
    with pytest.raises(MallError, match="at most 1 of '保温杯'; this member has 1"):
        await _redeem(db, item, keep)


async def test_cancel_gives_back_points_with_their_expiry_cash_and_stock(db):
    member, other = await _members(db, 2, sv_fen=5_000)
    item = await _item(db, points=250, cash_fen=1_000, stock=2)
    async with db.session() as session:
        lots_before = (
            (
                await session.execute(
                    select(points.PointsLot.expires_at).where(points.PointsLot.member_id == member)
                )
            )
            .scalars()
            .all()
        )
    paid = await _redeem(db, item, member, payment_method="stored_value")
    outside = await _redeem(db, item, other, payment_method="external", payment_reference="wx-9")
    async with db.session() as session, session.begin():
        cancelled = await cancel_redemption(session, paid.redemption.id, actor="user:li")
    assert cancelled.state == "cancelled"
    assert cancelled.refund_reference is not None
    assert await _balance(db, member) == 1000
    async with db.session() as session:
        assert sum(await stored_value_balances(session, member)) == 5_000
        returned = (
            await session.scalars(
                select(points.PointsLot).where(
                    points.PointsLot.member_id == member, points.PointsLot.kind == "refund_return"
                )
            )
        ).all()
    assert [(lot.points, lot.expires_at) for lot in returned] == [(250, lots_before[0])]
    assert (await _row(db, item)).redeemed == 1
    async with db.session() as session, session.begin():
        with pytest.raises(MallError, match="is cancelled already"):
            await cancel_redemption(session, paid.redemption.id, actor="user:li")
    async with db.session() as session, session.begin():
        await collect_redemption(session, outside.redemption.id, store="shop-1")
    async with db.session() as session, session.begin():
        with pytest.raises(MallError, match="is collected already"):
            await cancel_redemption(session, outside.redemption.id, actor="user:li")
    again = await _redeem(db, item, member, payment_method="external", payment_reference="wx-10")
    async with db.session() as session, session.begin():
        refunded = await cancel_redemption(session, again.redemption.id, actor="user:li")
    assert refunded.external_refund_due

"""Group buy (拼团): open, join by id or any group, fill and confirm; expiry refunds stored value to the
buckets it came from and records outside refunds; idempotent replays; refusals write nothing; and
500 concurrent joins to a 3-person offer with stock 30 sell exactly 30 with exact balances
(SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import ValidationError
from sqlalchemy import func, select

from hub import auth
from hub.api import make_app
from hub.config import HubSettings
from hub.db import Database, migrate
from hub.errors import NotFound
from hub.group_buy import GroupBuyError, JoinIn, OfferIn, close_offer, create_offer, expire_due, join
from hub.group_buy_tables import Group, GroupBuyOffer, Participation
from hub.members import MemberFields, add_members
from hub.messaging_tables import Message
from hub.stored_value import Source, save_rules, stored_value_balances, topup
from hub.stored_value_rules import BonusRules, BonusTier
from hub.stored_value_tables import LedgerEntry
from hub.stores import add_store

PRICE = 1990
_PHONES = itertools.count()


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    yield database
    await database.close()


async def _members(db: Database, n: int, *, topup_fen: int = 10_000) -> list[str]:
    async with db.session() as session, session.begin():
        batch = [MemberFields(f"139{next(_PHONES):08d}", channel="app") for _ in range(n)]
        ids = [m.id for m in await add_members(session, batch, welcome=False)]
        if topup_fen:
            for member_id in ids:
                await topup(
                    session,
                    member_id,
                    topup_fen,
                    payment_method="cash",
                    payment_reference=None,
                    source=Source(actor="test"),
                )
    return ids


async def _offer(db: Database, **kw: object) -> str:
    now = datetime.now(UTC)
    fields: dict[str, object] = {
        "name": "Durian cake",
        "sku": "CAKE-DURIAN",
        "price_fen": PRICE,
        "list_price_fen": 2990,
        "group_size": 3,
        "time_limit_minutes": 60,
        "stock": 30,
        "starts_at": now - timedelta(minutes=1),
        "ends_at": now + timedelta(days=3),
        **kw,
    }
    async with db.session() as session, session.begin():
        return (await create_offer(session, OfferIn.model_validate(fields), actor="user:mkt")).id


async def _join(db: Database, offer: str, member: str, **kw: object):
    body = JoinIn.model_validate(
        {"member_id": member, "payment_method": "stored_value", "idempotency_key": f"k-{uuid.uuid4()}", **kw}
    )
    async with db.session() as session, session.begin():
        return await join(session, offer, body, actor="app")


async def _offer_row(db: Database, offer: str) -> GroupBuyOffer:
    async with db.session() as session:
        row = await session.get(GroupBuyOffer, offer)
        assert row is not None
        return row


async def _total(db: Database, member: str) -> int:
    async with db.session() as session:
        return sum(await stored_value_balances(session, member))


async def test_open_join_by_id_and_any_fills_and_confirms(db):
    a, b, c, d = await _members(db, 4)
    offer = await _offer(db)
    first = await _join(db, offer, a, open_new=True)
    assert (first.group.joined, first.group.state, first.group.leader_id) == (1, "open", a)
    assert (await _offer_row(db, offer)).reserved == 3
    await _join(db, offer, b, group_id=first.group.id)
    last = await _join(db, offer, c)  # any group: the open one
    assert last.group.id == first.group.id
    assert (last.group.state, last.group.joined) == ("filled", 3)
    async with db.session() as session:
        places = (await session.scalars(select(Participation))).all()
        assert {p.state for p in places} == {"confirmed"}
        assert {p.member_id for p in places} == {a, b, c}
        filled = await session.scalar(
            select(func.count()).select_from(Message).where(Message.template == "group_buy_filled")
        )
        assert filled == 3
    row = await _offer_row(db, offer)
    assert (row.reserved, row.sold) == (3, 3)
    for member in (a, b, c):
        assert await _total(db, member) == 10_000 - PRICE
    # The full group takes nobody else; "any group" opens a new one.
    with pytest.raises(GroupBuyError, match="is full"):
        await _join(db, offer, d, group_id=first.group.id)
    second = await _join(db, offer, d)
    assert second.group.id != first.group.id
    assert (await _offer_row(db, offer)).reserved == 6


async def test_expiry_refunds_stored_value_to_its_buckets_and_records_outside_refunds(db):
    async with db.session() as session, session.begin():
        await save_rules(
            session,
            BonusRules(tiers=[BonusTier(min_fen=10_000, bonus_fen=2_000)], spending_order="bonus_first"),
            actor="test",
        )
    a, b = await _members(db, 2)
    offer = await _offer(db, time_limit_minutes=30)
    opened = await _join(db, offer, a, open_new=True)
    await _join(
        db, offer, b, group_id=opened.group.id, payment_method="external", payment_reference="wx-4200001"
    )
    async with db.session() as session:
        assert await stored_value_balances(session, a) == (10_000, 2_000 - PRICE)
    assert await expire_due(db, datetime.now(UTC) + timedelta(minutes=29)) == ""
    later = datetime.now(UTC) + timedelta(minutes=31)
    assert await expire_due(db, later) == "group buy: 1 group(s) expired, 2 place(s) refunded"
    assert await expire_due(db, later) == ""  # once
    async with db.session() as session:
        assert await stored_value_balances(session, a) == (10_000, 2_000)
        places = {p.member_id: p for p in (await session.scalars(select(Participation))).all()}
        group = await session.get(Group, opened.group.id)
        assert group is not None
        assert group.state == "expired"
        refund = await session.get(LedgerEntry, places[a].refund_reference)
        assert refund is not None
        assert (refund.kind, refund.bonus_delta_fen, refund.debit_id) == (
            "refund_return",
            PRICE,
            places[a].payment_reference,
        )
    assert (places[a].state, places[a].external_refund_due) == ("refunded", False)
    assert (places[b].state, places[b].external_refund_due) == ("refunded", True)
    row = await _offer_row(db, offer)
    assert (row.reserved, row.sold) == (0, 0)
    # An expired group takes nobody; the members may try again in a new group (the refund freed the limit).
    with pytest.raises(GroupBuyError, match="is over"):
        await _join(db, offer, b, group_id=opened.group.id)
    assert (await _join(db, offer, a)).group.id != opened.group.id


async def test_a_retried_join_replays_and_charges_once(db):
    a, b = await _members(db, 2)
    offer = await _offer(db)
    first = await _join(db, offer, a, idempotency_key="app-order-000001")
    again = await _join(db, offer, a, idempotency_key="app-order-000001")
    assert (again.created, again.participation.id) == (False, first.participation.id)
    assert await _total(db, a) == 10_000 - PRICE
    with pytest.raises(GroupBuyError, match="was used for another join"):
        await _join(db, offer, b, idempotency_key="app-order-000001")


async def _count_groups(db: Database, offer: str) -> int:
    async with db.session() as session:
        return int(
            await session.scalar(
                select(func.count())
                .select_from(Group)
                .where(Group.offer_id == offer, Group.state != "expired")
            )
            or 0
        )


async def test_refusals_write_nothing(db):
    poor = (await _members(db, 1, topup_fen=0))[0]
    a, b = await _members(db, 2)
    offer = await _offer(db, stock=3)
    with pytest.raises(GroupBuyError, match="not enough to pay"):
        await _join(db, offer, poor)
    assert (await _offer_row(db, offer)).reserved == 0
    assert await _count_groups(db, offer) == 0
    opened = await _join(db, offer, a, open_new=True)
    with pytest.raises(GroupBuyError, match="may hold 1 place"):
        await _join(db, offer, a, group_id=opened.group.id)
    with pytest.raises(GroupBuyError, match="sold out"):
        await _join(db, offer, b, open_new=True)
    await _join(db, offer, b, payment_method="external", payment_reference="wx-1")
    with pytest.raises(GroupBuyError, match="already paid"):
        await _join(db, offer, poor, payment_method="external", payment_reference="wx-1")
    with pytest.raises(NotFound):
        await _join(db, offer, poor, group_id=str(uuid.uuid4()))
    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Participation)) == 2
    assert await _total(db, poor) == 0
    later = await _offer(db, starts_at=datetime.now(UTC) + timedelta(hours=1))
    with pytest.raises(GroupBuyError, match="starts at"):
        await _join(db, later, a)
    other = await _offer(db)
    async with db.session() as session, session.begin():
        await close_offer(session, other, actor="user:mkt")
    with pytest.raises(GroupBuyError, match="no new groups"):
        await _join(db, other, a)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"group_size": 1}, "greater than or equal to 2"),
        ({"stock": 2}, "cannot fill even one group"),
        ({"price_fen": 0}, "greater than or equal to 1"),
        ({"price_fen": "19.9"}, "valid integer"),
        ({"list_price_fen": 99}, "must not be below price_fen"),
        ({"ends_at": datetime(2020, 1, 1, tzinfo=UTC)}, "ends_at must be after starts_at"),
    ],
)
def test_offer_validation(change, error):
    now = datetime.now(UTC)
    fields = {
        "name": "x",
        "sku": "S",
        "price_fen": 100,
        "group_size": 3,
        "time_limit_minutes": 60,
        "stock": 30,
        "starts_at": now,
        "ends_at": now + timedelta(days=1),
        **change,
    }
    with pytest.raises(ValidationError, match=error):
        OfferIn.model_validate(fields)


def test_join_validation():
    base = {"member_id": "m", "idempotency_key": "k" * 8}
    with pytest.raises(ValidationError, match="needs its payment_reference"):
        JoinIn.model_validate({**base, "payment_method": "external"})
    with pytest.raises(ValidationError, match="not both"):
        JoinIn.model_validate({**base, "payment_method": "stored_value", "group_id": "g", "open_new": True})
    with pytest.raises(ValidationError, match="takes no payment_reference"):
        JoinIn.model_validate({**base, "payment_method": "stored_value", "payment_reference": "x"})


async def test_concurrent_joins_never_oversell(db, database_url):
    """500 members join at once (a fifth ask for a new group): 10 full groups, 30 sold, balances exact."""
    n = 500 if database_url.startswith("postgresql") else 60
    members = await _members(db, n)
    offer = await _offer(db, stock=30, group_size=3)

    async def attempt(i: int, member: str) -> str:
        try:
            await _join(db, offer, member, open_new=i % 5 == 0)
        except GroupBuyError as err:
            return "sold out" if "sold out" in str(err) else str(err)
        return "joined"

    outcomes = await asyncio.gather(*(attempt(i, m) for i, m in enumerate(members)))
    assert set(outcomes) <= {"joined", "sold out"}, set(outcomes)
    expire_at = datetime.now(UTC) + timedelta(minutes=61)
    await expire_due(db, expire_at)
    row = await _offer_row(db, offer)
    async with db.session() as session:
        groups = (await session.scalars(select(Group).where(Group.offer_id == offer))).all()
        places = (await session.scalars(select(Participation))).all()
    filled = [g for g in groups if g.state == "filled"]
    confirmed = [p for p in places if p.state == "confirmed"]
    assert row.sold == len(confirmed) == 30
    assert len(filled) == 10
    assert all(g.joined == 3 for g in filled)
    assert row.reserved == 30
    assert {p.state for p in places} <= {"confirmed", "refunded"}
    assert outcomes.count("joined") == len(places)
    paid = {p.member_id for p in confirmed}
    assert len(paid) == 30
    totals = [await _total(db, m) for m in members]
    assert sorted(totals) == sorted([10_000 - PRICE] * 30 + [10_000] * (n - 30))
    for member, total in zip(members, totals, strict=True):
        assert total == (10_000 - PRICE if member in paid else 10_000)


# --------------------------------------------------------------------------- API


@pytest.fixture
async def client(db, tmp_path):
    async with TestClient(TestServer(make_app(db, HubSettings(state_dir=tmp_path)))) as test_client:
        yield test_client


@pytest.fixture
async def users(db, client) -> dict[str, dict[str, str]]:
    await add_store(db, "shop-1")
    found = {}
    for name, role, stores in (
        ("mkt", "marketing", None),
        ("li", "store-manager", ["shop-1"]),
        ("fin", "finance", None),
    ):
        await auth.add_user(db, name, "password-123", role, stores)
        resp = await client.post("/api/v1/auth/token", json={"name": name, "password": "password-123"})
        found[name] = {"Authorization": f"Bearer {(await resp.json())['token']}"}
    return found


async def test_group_buy_api(db, client, users):
    a, b = await _members(db, 2)
    now = datetime.now(UTC)
    offer = {
        "name": "两人拼 草莓蛋糕",
        "sku": "CAKE-STRAW",
        "price_fen": 3900,
        "list_price_fen": 5900,
        "group_size": 2,
        "time_limit_minutes": 120,
        "stock": 10,
        "starts_at": (now - timedelta(minutes=1)).isoformat(),
        "ends_at": (now + timedelta(days=2)).isoformat(),
    }
    assert (await client.post("/api/v1/group-buys", json=offer, headers=users["li"])).status == 403
    resp = await client.post("/api/v1/group-buys", json={**offer, "group_size": 1}, headers=users["mkt"])
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["field"] == "group_size"
    resp = await client.post("/api/v1/group-buys", json=offer, headers=users["mkt"])
    assert resp.status == 201, await resp.text()
    offer_id = (await resp.json())["id"]
    join = {
        "member_id": a,
        "payment_method": "stored_value",
        "idempotency_key": "mini-app-0001",
        "open_new": True,
    }
    url = f"/api/v1/group-buys/{offer_id}/join"
    assert (await client.post(url, json=join, headers=users["fin"])).status == 403
    resp = await client.post(url, json=join, headers=users["li"])
    assert resp.status == 201, await resp.text()
    first = await resp.json()
    again = await client.post(url, json=join, headers=users["li"])
    assert again.status == 200
    assert (await again.json())["participation"]["id"] == first["participation"]["id"]
    group_id = first["group"]["id"]
    resp = await client.post(
        url,
        json={
            "member_id": b,
            "payment_method": "external",
            "idempotency_key": "mini-app-0002",
            "group_id": group_id,
        },
        headers=users["li"],
    )
    assert resp.status == 422  # an external payment without its reference
    poor = (await _members(db, 1, topup_fen=100))[0]
    resp = await client.post(
        url,
        json={"member_id": poor, "payment_method": "stored_value", "idempotency_key": "mini-app-0003"},
        headers=users["li"],
    )
    assert resp.status == 409
    assert "not enough to pay" in (await resp.json())["detail"]
    resp = await client.post(
        url,
        json={
            "member_id": b,
            "payment_method": "external",
            "payment_reference": "wx-420000",
            "idempotency_key": "mini-app-0004",
            "group_id": group_id,
        },
        headers=users["li"],
    )
    assert (await resp.json())["group"]["state"] == "filled"
    resp = await client.get(f"/api/v1/group-buys/{offer_id}?state=filled", headers=users["fin"])
    detail = await resp.json()
    assert (detail["sold"], detail["available"], [g["id"] for g in detail["groups"]]) == (2, 8, [group_id])
    resp = await client.get(f"/api/v1/group-buys/{offer_id}/groups/{group_id}", headers=users["fin"])
    places = (await resp.json())["places"]
    assert [(p["member_id"], p["state"], p["payment_method"]) for p in places] == [
        (a, "confirmed", "stored_value"),
        (b, "confirmed", "external"),
    ]
    assert (
        await client.get(f"/api/v1/group-buys/{offer_id}/groups/nope", headers=users["fin"])
    ).status == 404
    resp = await client.post(f"/api/v1/group-buys/{offer_id}/close", headers=users["mkt"])
    assert (await resp.json())["state"] == "closed"
    resp = await client.get("/api/v1/group-buys", headers=users["li"])
    assert [o["id"] for o in (await resp.json())["items"]] == [offer_id]
    assert (await client.post("/api/v1/group-buys/nope/join", json=join, headers=users["li"])).status == 404

"""Lucky wheel (大转盘): draws map to prizes by weight, out-of-stock prizes fall back to the consolation,
daily limits and points cost, idempotent spins, the audit recomputes the odds and catches a tampered
draw, and concurrent spins never overgive stock or exceed the daily limit (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import ValidationError
from sqlalchemy import select, update

from hub import auth, points
from hub.api import make_app
from hub.config import HubSettings
from hub.coupon_schemas import TemplateIn
from hub.coupon_tables import Coupon
from hub.coupons import create_template
from hub.db import Database, migrate
from hub.lucky_wheel import (
    PrizeChange,
    WheelError,
    WheelIn,
    collect_prize,
    create_wheel,
    odds_report,
    pick,
    spin,
    update_prize,
)
from hub.mall_tables import Spin, WheelPrize
from hub.members import MemberFields, add_members
from hub.stores import add_store

_PHONES = itertools.count()
NOON = datetime(2026, 5, 1, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    yield database
    await database.close()


async def _members(db: Database, n: int, *, pts: int = 0) -> list[str]:
    async with db.session() as session, session.begin():
        batch = [MemberFields(f"136{next(_PHONES):08d}", channel="app") for _ in range(n)]
        ids = [m.id for m in await add_members(session, batch, welcome=False)]
        for member_id in ids if pts else ():
            await points.credit(
                session,
                member_id,
                pts,
                kind="adjust",
                source="user:test",
                expires_at=NOON + timedelta(days=3650),
                now=NOON - timedelta(days=1),
            )
    return ids


async def _coupon_template(db: Database) -> str:
    body = TemplateIn.model_validate(
        {"name": "5元券", "kind": "amount_off", "amount_off_fen": 500, "valid_days": 30}
    )
    async with db.session() as session, session.begin():
        return (await create_template(session, body, actor="user:mkt")).id


def _prizes(coupon: str) -> list[dict[str, object]]:
    return [
        {"name": "100积分", "kind": "points", "points": 100, "weight": 1, "stock": 1},
        {"name": "5元券", "kind": "coupon", "coupon_template": coupon, "weight": 2},
        {"name": "帆布袋", "kind": "item", "sku": "BAG-1", "weight": 3, "stock": 5},
        {"name": "谢谢参与", "kind": "nothing", "weight": 4, "consolation": True},
    ]


async def _wheel(db: Database, coupon: str, **kw: object) -> tuple[str, dict[str, str]]:
    body = WheelIn.model_validate({"name": "五一大转盘", "prizes": _prizes(coupon), **kw})
    async with db.session() as session, session.begin():
        wheel, prizes = await create_wheel(session, body, actor="user:mkt")
        return wheel.id, {p.name: p.id for p in prizes}


def _draws(*values: int) -> Iterator[int]:
    return iter(values)


async def _spin(db: Database, wheel: str, member: str, draw: int | None = None, **kw):
    rng = (lambda n: draw) if draw is not None else random.Random(1).randrange
    key = kw.pop("key", None) or uuid.uuid4().hex
    async with db.session() as session, session.begin():
        return await spin(session, wheel, member, idempotency_key=key, rng=rng, now=kw.pop("now", NOON), **kw)


def test_pick_maps_draws_by_cumulative_weight():
    weights = [["a", 1], ["b", 0], ["c", 3]]
    assert [pick(weights, d) for d in range(4)] == ["a", "c", "c", "c"]
    with pytest.raises(ValueError, match=r"draw 4 is outside \[0, 4\)"):
        pick(weights, 4)


async def test_prizes_stock_fallback_and_audit(db):
    coupon = await _coupon_template(db)
    wheel, ids = await _wheel(db, coupon, daily_spins=5)
    a, b = await _members(db, 2)
    first = await _spin(db, wheel, a, draw=0)
    assert first.prize.name == "100积分"
    assert first.spin.reference is not None
    async with db.session() as session:
        assert await points.balance_of(session, a) == 100
    out = await _spin(db, wheel, b, draw=0)  # its only unit is gone
    assert out.prize.name == "谢谢参与"
    assert out.spin.drawn_prize_id == ids["100积分"]
    assert out.spin.fallback_reason == "'100积分' was out of stock"
    won = await _spin(db, wheel, a, draw=2)
    assert won.prize.name == "5元券"
    async with db.session() as session:
        coupon_row = await session.get(Coupon, won.spin.reference)
    assert coupon_row is not None
    assert coupon_row.member_id == a
    again = await _spin(db, wheel, a, draw=1)  # the coupon's per-member limit is 1
    assert again.prize.name == "谢谢参与"
    assert "could not be given" in again.spin.fallback_reason
    item = await _spin(db, wheel, a, draw=5)
    assert (item.prize.name, item.spin.reference) == ("帆布袋", f"collect:{item.spin.id}")
    async with db.session() as session, session.begin():
        collected = await collect_prize(session, wheel, item.spin.id, store="shop-1")
    assert collected.collected_store == "shop-1"
    async with db.session() as session, session.begin():
        with pytest.raises(WheelError, match="was collected at shop-1"):
            await collect_prize(session, wheel, item.spin.id, store="shop-1")
        with pytest.raises(WheelError, match="won no item"):
            await collect_prize(session, wheel, won.spin.id, store="shop-1")
    async with db.session() as session:
        given = dict((await session.execute(select(WheelPrize.name, WheelPrize.given))).all())
    assert given == {"100积分": 1, "5元券": 1, "帆布袋": 1, "谢谢参与": 2}
    report = await _report(db, wheel)
    assert (report["spins"], report["verified"], report["mismatches"]) == (5, 5, [])
    drawn = {p["name"]: p["drawn"] for p in report["prizes"]}
    assert drawn == {"100积分": 2, "5元券": 2, "帆布袋": 1, "谢谢参与": 0}
    assert {p["name"]: p["given"] for p in report["prizes"]}["谢谢参与"] == 2


async def _report(db: Database, wheel: str) -> dict:
    async with db.session() as session:
        return await odds_report(session, wheel)


async def test_daily_limit_cost_and_replay(db):
    coupon = await _coupon_template(db)
    wheel, _ = await _wheel(db, coupon, daily_spins=2, spin_cost_points=50)
    rich, poor = await _members(db, 2, pts=120)
    async with db.session() as session, session.begin():
        await points.debit(session, poor, 100, kind="adjust", source="user:test", now=NOON)
    with pytest.raises(WheelError, match="a spin costs 50 points; the member has 20"):
        await _spin(db, wheel, poor, draw=9)
    first = await _spin(db, wheel, rich, draw=9, key="spin-key-1")
    replay = await _spin(db, wheel, rich, draw=0, key="spin-key-1")
    assert not replay.created
    assert replay.spin.id == first.spin.id
    await _spin(db, wheel, rich, draw=9)
    with pytest.raises(WheelError, match="allows 2 spin"):
        await _spin(db, wheel, rich, draw=9)
    async with db.session() as session:
        assert await points.balance_of(session, rich) == 20
        assert await points.balance_of(session, poor) == 20
    async with db.session() as session, session.begin():
        await points.credit(
            session, rich, 100, kind="adjust", source="t", expires_at=NOON + timedelta(days=9), now=NOON
        )
    # 16:00 UTC is midnight in Shanghai: a new day
    await _spin(db, wheel, rich, draw=9, now=NOON + timedelta(hours=12))
    with pytest.raises(WheelError, match="idempotency key spin-key-1 was used for another spin"):
        await _spin(db, wheel, poor, draw=9, key="spin-key-1")


def test_wheel_validation():
    base = {"name": "w", "prizes": _prizes("tpl")}
    with pytest.raises(ValidationError, match="exactly one prize as the consolation"):
        WheelIn.model_validate({**base, "prizes": [{**p, "consolation": False} for p in _prizes("t")]})
    stocked = [
        *_prizes("t")[:3],
        {"name": "x", "kind": "nothing", "weight": 1, "stock": 3, "consolation": True},
    ]
    with pytest.raises(ValidationError, match="unlimited stock"):
        WheelIn.model_validate({**base, "prizes": stocked})
    with pytest.raises(ValidationError, match="coupon_template goes with kind coupon"):
        WheelIn.model_validate(
            {**base, "prizes": [*_prizes("t"), {"name": "c", "kind": "coupon", "weight": 1}]}
        )
    zero = [{**p, "weight": 0} for p in _prizes("t")]
    with pytest.raises(ValidationError, match="weight above 0"):
        WheelIn.model_validate({**base, "prizes": zero})


async def test_odds_recomputed_from_the_audit(db):
    """300 seeded draws across a weight change: observed counts fit the recorded odds; a forged draw is caught."""
    coupon = await _coupon_template(db)
    prizes = [
        {"name": "10积分", "kind": "points", "points": 10, "weight": 5},
        {"name": "50积分", "kind": "points", "points": 50, "weight": 3},
        {"name": "谢谢参与", "kind": "nothing", "weight": 2, "consolation": True},
    ]
    body = WheelIn.model_validate({"name": "odds", "daily_spins": 100, "prizes": prizes})
    async with db.session() as session, session.begin():
        wheel_row, rows = await create_wheel(session, body, actor="user:mkt")
    wheel = wheel_row.id
    members = await _members(db, 6)
    rng = random.Random(20260501)
    for n in range(300):
        if n == 150:  # new odds halfway: the audit keeps each spin's own weights
            async with db.session() as session, session.begin():
                await update_prize(session, wheel, rows[2].id, PrizeChange(weight=10))
        async with db.session() as session, session.begin():
            await spin(
                session, wheel, members[n % 6], idempotency_key=f"odds-{n}", rng=rng.randrange, now=NOON
            )
    report = await _report(db, wheel)
    assert (report["spins"], report["verified"], report["mismatches"]) == (300, 300, [])
    assert sum(p["drawn"] for p in report["prizes"]) == 300
    expected = {p["name"]: p["expected"] for p in report["prizes"]}
    assert expected == pytest.approx(
        {
            "10积分": 150 * 0.5 + 150 * 5 / 18,
            "50积分": 150 * 0.3 + 150 * 3 / 18,
            "谢谢参与": 150 * 0.2 + 150 * 10 / 18,
        }
    )
    assert report["p_value"] > 0.001
    assert report["degrees_of_freedom"] == 2
    assert {p["name"]: p["configured_probability"] for p in report["prizes"]}["谢谢参与"] == pytest.approx(
        10 / 18
    )
    # a skewed source is detected: every draw the first prize
    skewed = await _wheel(db, coupon, daily_spins=100)
    for n in range(30):
        async with db.session() as session, session.begin():
            await spin(
                session, skewed[0], members[n % 6], idempotency_key=f"skew-{n}", rng=lambda _n: 3, now=NOON
            )
    assert (await _report(db, skewed[0]))["p_value"] < 0.001
    async with db.session() as session, session.begin():
        forged = await session.scalar(select(Spin.id).where(Spin.wheel_id == wheel).limit(1))
        await session.execute(update(Spin).where(Spin.id == forged).values(draw=Spin.total_weight))
    report = await _report(db, wheel)
    assert report["verified"] == 299
    assert report["mismatches"][0]["spin_id"] == forged
    assert "outside" in report["mismatches"][0]["problem"]


async def test_concurrent_spins_respect_stock_and_daily_limit(db, database_url):
    n = 80 if database_url.startswith("postgresql") else 20
    coupon = await _coupon_template(db)
    wheel, ids = await _wheel(db, coupon, daily_spins=3)
    members = await _members(db, n)

    async def attempt(member: str, draw: int) -> str:
        try:
            done = await _spin(db, wheel, member, draw=draw)
        except WheelError as err:
            return str(err)
        return done.prize.name

    bags = await asyncio.gather(*(attempt(m, 5) for m in members))  # everyone draws the bag (stock 5)
    assert bags.count("帆布袋") == 5
    assert bags.count("谢谢参与") == n - 5
    lone = members[0]
    tries = await asyncio.gather(*(attempt(lone, 9) for _ in range(10)))
    assert tries.count("谢谢参与") == 2  # one of its 3 daily spins was used above
    assert all("allows 3 spin" in t for t in tries if t != "谢谢参与")
    async with db.session() as session:
        bag = await session.get(WheelPrize, ids["帆布袋"])
        assert bag is not None
        assert bag.given == 5


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


async def test_wheel_api(db, client, users):
    coupon = await _coupon_template(db)
    (member,) = await _members(db, 1)
    body = {"name": "店庆转盘", "daily_spins": 1, "prizes": _prizes(coupon)}
    assert (await client.post("/api/v1/wheels", json=body, headers=users["li"])).status == 403
    bad = await client.post("/api/v1/wheels", json={**body, "daily_spins": 0}, headers=users["mkt"])
    assert bad.status == 422
    missing = [{**p, "coupon_template": "nope"} if p["kind"] == "coupon" else p for p in _prizes(coupon)]
    unknown = await client.post("/api/v1/wheels", json={**body, "prizes": missing}, headers=users["mkt"])
    assert unknown.status == 409
    created = await client.post("/api/v1/wheels", json=body, headers=users["mkt"])
    assert created.status == 201
    wheel = await created.json()
    assert [p["probability"] for p in wheel["prizes"]] == [0.1, 0.2, 0.3, 0.4]
    spin_body = {"member_id": member, "idempotency_key": "app-spin-0001"}
    first = await client.post(f"/api/v1/wheels/{wheel['id']}/spin", json=spin_body, headers=users["li"])
    assert first.status == 201
    result = await first.json()
    assert 0 <= result["draw"] < 10
    assert result["prize"]["name"] in {"100积分", "5元券", "帆布袋", "谢谢参与"}
    again = await client.post(f"/api/v1/wheels/{wheel['id']}/spin", json=spin_body, headers=users["li"])
    assert (again.status, (await again.json())["id"]) == (200, result["id"])
    other = await client.post(
        f"/api/v1/wheels/{wheel['id']}/spin",
        json={**spin_body, "idempotency_key": "app-spin-0002"},
        headers=users["li"],
    )
    assert other.status == 409
    odds = await (await client.get(f"/api/v1/wheels/{wheel['id']}/odds", headers=users["li"])).json()
    assert (odds["spins"], odds["mismatches"]) == (1, [])
    spins = await (await client.get(f"/api/v1/wheels/{wheel['id']}/spins", headers=users["li"])).json()
    assert [s["id"] for s in spins["items"]] == [result["id"]]
    stopped = await client.patch(
        f"/api/v1/wheels/{wheel['id']}", json={"active": False}, headers=users["mkt"]
    )
    assert (await stopped.json())["active"] is False

"""Referrals (推广员 / 裂变返佣): share links with parameters, registration through a code with its rewards,
the fraud guards, two-level commissions through the real ingest with per-friend and monthly caps,
refunds in and after the window, settlement by the nightly job, concurrent stores against one cap
(SQLite and PostgreSQL), and the API."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select, update

from hub import auth, points
from hub.api import make_app
from hub.config import HubSettings
from hub.coupon_schemas import TemplateIn
from hub.coupon_tables import Coupon
from hub.coupons import create_template
from hub.db import Database, migrate
from hub.members import Member, MemberFields, create_member, merge_members
from hub.referral_sales import promoter_totals, settle_due
from hub.referral_tables import Attribution, Commission, Promoter, ReferralReward
from hub.referrals import (
    ReferralRefused,
    RuleIn,
    attribute,
    create_rule,
    link_for,
    link_json,
    make_promoter,
    register_with_code,
    resolve_code,
)
from hub.rpc import RpcServer
from hub.scheduler_jobs import JOBS
from hub.stores import add_store
from tests.hub.loyalty_helpers import Till, order_body, refund_body, rpc

_PHONES = itertools.count(1)
# Orders close "now": whether a refund is inside the window is decided by the hub's clock.
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def _order(total: int, member: str, **kw: Any) -> dict[str, Any]:
    return order_body(total, member, **{"closed_at": T0, **kw})


def _phone() -> str:
    return f"135{next(_PHONES):08d}"


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    await add_store(database, "shop-1")
    yield database
    await database.close()


async def _template(db: Database, name: str, **kw: object) -> str:
    body = TemplateIn.model_validate(
        {"name": name, "kind": "amount_off", "amount_off_fen": 500, "valid_days": 30, **kw}
    )
    async with db.session() as session, session.begin():
        return (await create_template(session, body, actor="user:mkt")).id


async def _rule(db: Database, **kw: object) -> str:
    fields: dict[str, object] = {"name": "老带新", "level1_bp": 1000, "level2_bp": 300, **kw}
    async with db.session() as session, session.begin():
        return (await create_rule(session, RuleIn.model_validate(fields), actor="user:mkt")).id


async def _member(db: Database, phone: str | None = None) -> str:
    async with db.session() as session, session.begin():
        return (await create_member(session, MemberFields(phone or _phone(), channel="app"))).id


async def _promoter(db: Database, member_id: str | None = None) -> tuple[str, str]:
    member_id = member_id or await _member(db)
    async with db.session() as session, session.begin():
        promoter, _ = await make_promoter(session, member_id, actor="user:mkt")
        return member_id, promoter.code


async def _register(db: Database, code: str, phone: str | None = None):
    async with db.session() as session, session.begin():
        member, done, refused = await register_with_code(
            session, code, MemberFields(phone or _phone(), channel="app")
        )
        return member.id, done, refused


async def _commissions(db: Database) -> list[tuple[str, int, int, int, str]]:
    """(promoter, level, amount, reversed, state) in id order."""
    async with db.session() as session:
        rows = await session.scalars(select(Commission).order_by(Commission.id))
        return [(c.promoter_id, c.level, c.amount_fen, c.reversed_fen, c.state) for c in rows]


async def test_links_carry_parameters_and_one_code_each(db):
    promoter, code = await _promoter(db)
    async with db.session() as session, session.begin():
        spring = await link_for(session, promoter, campaign="spring", store="shop-1", channel="wechat")
        again = await link_for(session, promoter, campaign="spring", store="shop-1", channel="wechat")
        plain = await link_for(session, promoter)
        found = await resolve_code(session, spring.code.lower())
    assert spring.code == again.code == found.code
    assert spring.code != code
    assert plain.code == code
    assert link_json(spring)["path"] == f"/r/{spring.code}?c=spring&s=shop-1&ch=wechat"
    async with db.session() as session, session.begin():
        with pytest.raises(Exception, match="no store 'nowhere'"):
            await link_for(session, promoter, store="nowhere")


async def test_registration_through_a_code_rewards_and_attributes(db):
    gift = await _template(db, "推广员券")
    welcome = await _template(db, "新人券")
    await _rule(db, register_points=100, register_coupon_template=gift, friend_coupon_template=welcome)
    spring_gift = await _template(db, "春季推广券")
    await _rule(
        db,
        campaign="spring",
        register_points=300,
        register_coupon_template=spring_gift,
        level1_bp=500,
        level2_bp=0,
    )
    promoter, code = await _promoter(db)
    friend, done, refused = await _register(db, code)
    assert refused is None
    assert done is not None
    assert (done.promoter_id, done.via, done.campaign) == (promoter, "registration", "")
    async with db.session() as session, session.begin():
        spring = await link_for(session, promoter, campaign="spring", channel="poster")
    second, done2, _ = await _register(db, spring.code)
    assert done2 is not None
    assert (done2.campaign, done2.channel) == ("spring", "poster")
    async with db.session() as session:
        assert await points.balance_of(session, promoter) == 100 + 300
        mine = {
            c.template_id for c in await session.scalars(select(Coupon).where(Coupon.member_id == promoter))
        }
        assert mine == {gift, spring_gift}
        theirs = (await session.scalars(select(Coupon.template_id).where(Coupon.member_id == friend))).all()
        assert theirs == [welcome]
        friend_row = await session.get(Member, friend)
        assert friend_row is not None
        assert friend_row.referrer_id == promoter
        rewards = (
            await session.scalars(select(ReferralReward).where(ReferralReward.friend_id == second))
        ).all()
    assert sorted((r.kind, r.granted) for r in rewards) == [
        ("promoter_coupon", True),
        ("promoter_points", True),
    ]


async def test_monthly_register_limit_and_unissuable_coupon_are_recorded(db):
    scarce = await _template(db, "限量券", total_limit=1)
    await _rule(db, register_points=50, friend_coupon_template=scarce, monthly_register_limit=1)
    promoter, code = await _promoter(db)
    await _register(db, code)
    late, done, _ = await _register(db, code)
    assert done is not None  # attributed all the same: commissions still count
    async with db.session() as session:
        rows = (await session.scalars(select(ReferralReward).where(ReferralReward.friend_id == late))).all()
        balance = await points.balance_of(session, promoter)
    reasons = {r.kind: (r.granted, r.reason) for r in rows}
    assert reasons["promoter_points"] == (False, "the promoter reached this month's 1 rewarded friends")
    assert reasons["friend_coupon"][0] is False
    assert "left of 1" in reasons["friend_coupon"][1]
    assert balance == 50


async def test_fraud_guards(db):
    await _rule(db, register_points=100)
    promoter, code = await _promoter(db)
    async with db.session() as session, session.begin():
        link = await resolve_code(session, code)
        with pytest.raises(ReferralRefused, match="cannot refer themselves"):
            await attribute(session, promoter, link, via="link")
    # the promoter's old number (given up in a merge) registering through their own code
    old_phone = _phone()
    async with db.session() as session, session.begin():
        await session.execute(update(Member).where(Member.id == promoter).values(released_phone=old_phone))
    _, done, refused = await _register(db, code, old_phone)
    assert done is None
    assert refused == "the friend's phone is the promoter's (now or before)"
    # a number that was another member's: merged away, then "new" again through a code
    dup_phone = _phone()
    dup, keep = await _member(db, dup_phone), await _member(db)
    async with db.session() as session, session.begin():
        await merge_members(session, dup, keep)
    _, done, refused = await _register(db, code, dup_phone)
    assert done is None
    assert refused is not None
    assert "was a member's before" in refused
    # an old member opening a link
    old = await _member(db)
    async with db.session() as session, session.begin():
        await session.execute(
            update(Member).where(Member.id == old).values(created_at=datetime.now(UTC) - timedelta(days=3))
        )
    with pytest.raises(ReferralRefused, match="already a member"):
        await _attribute(db, old, code)
    # a new member who already bought
    buyer = await _member(db)
    await Till(db).send(Till(db).event("order.paid", _order(1000, buyer)))
    with pytest.raises(ReferralRefused, match="already bought"):
        await _attribute(db, buyer, code)
    # a cycle: the promoter's own promoter cannot become the promoter's friend
    friend, _, _ = await _register(db, code)
    _, friend_code = await _promoter(db, friend)
    with pytest.raises(ReferralRefused, match="cycle"):
        await _attribute(db, promoter, friend_code)
    _, other_code = await _promoter(db)
    with pytest.raises(ReferralRefused, match="already referred"):
        await _attribute(db, friend, other_code)
    async with db.session() as session:
        assert await points.balance_of(session, promoter) == 100  # only the one real friend


async def _attribute(db: Database, member: str, code: str) -> Attribution:
    async with db.session() as session, session.begin():
        return await attribute(session, member, await resolve_code(session, code), via="link")


async def test_two_level_commissions_caps_refunds_and_settlement(db):
    await _rule(db, per_friend_cap_fen=1500, refund_window_days=7)
    top, top_code = await _promoter(db)
    mid, _, _ = await _register(db, top_code)
    _, mid_code = await _promoter(db, mid)
    friend, _, _ = await _register(db, mid_code)
    till = Till(db)
    first = _order(10_000, friend)
    second = _order(10_000, friend, number=2)
    await till.send(till.event("order.paid", first), till.event("order.paid", second))
    assert await _commissions(db) == [
        (mid, 1, 1000, 0, "pending"),
        (top, 2, 300, 0, "pending"),
        (mid, 1, 500, 0, "pending"),  # the per-friend cap of 1500 fen cut it
        (top, 2, 300, 0, "pending"),
    ]
    await till.send(till.event("order.refunded", refund_body(second, {0: 5_000})), times=2)
    assert (await _commissions(db))[2:] == [(mid, 1, 500, 250, "pending"), (top, 2, 300, 150, "pending")]
    async with db.session() as session, session.begin():
        assert await settle_due(session, T0 + timedelta(days=6)) == 0
        assert await settle_due(session, T0 + timedelta(days=7)) == 4
    # a refund after the window changes nothing settled
    await till.send(till.event("order.refunded", refund_body(first, {0: 10_000})))
    assert [row[4] for row in await _commissions(db)] == ["settled"] * 4
    async with db.session() as session:
        totals = await promoter_totals(session, mid)
    assert totals == {"pending_fen": 0, "settled_fen": 1250, "reversed_fen": 250, "friends": 1}
    assert any(job.name == "referrals.settle" for job in JOBS)


async def test_a_refund_before_its_order_and_a_full_refund_in_the_window(db):
    await _rule(db, level2_bp=0, refund_window_days=180)
    promoter, code = await _promoter(db)
    friend, _, _ = await _register(db, code)
    till = Till(db)
    early = _order(8_000, friend)
    await till.send(till.event("order.refunded", refund_body(early, {0: 2_000})))
    await till.send(till.event("order.paid", early))
    full = _order(4_000, friend, number=2)
    await till.send(till.event("order.paid", full))
    await till.send(till.event("order.refunded", refund_body(full, {0: 4_000})))
    assert await _commissions(db) == [(promoter, 1, 800, 200, "pending"), (promoter, 1, 400, 400, "reversed")]


async def test_an_order_through_a_code_attributes_a_new_member(db):
    await _rule(db, level2_bp=0)
    promoter, code = await _promoter(db)
    walk_in = await _member(db)  # registered at the till just before paying
    till = Till(db)
    body = {**_order(6_000, walk_in), "referral_code": code.lower()}
    await till.send(till.event("order.paid", body))
    async with db.session() as session:
        found = await session.get(Attribution, walk_in)
    assert found is not None
    assert found.via == "order"
    assert await _commissions(db) == [(promoter, 1, 600, 0, "pending")]
    stranger = await _member(db)
    await till.send(till.event("order.paid", {**_order(6_000, stranger), "referral_code": "NOSUCHCODE"}))
    assert len(await _commissions(db)) == 1  # an unknown code does not stop the sale


async def test_monthly_cap_holds_across_concurrent_stores(db, database_url):
    n = 8 if database_url.startswith("postgresql") else 4
    await _rule(db, level2_bp=0, monthly_cap_fen=2500)
    _, code = await _promoter(db)
    friends = [(await _register(db, code))[0] for _ in range(n)]
    for i in range(n):
        await add_store(db, f"shop-{i + 2}")
    tills = [Till(db, store=f"shop-{i + 2}") for i in range(n)]
    events = [
        till.event("order.paid", {**_order(10_000, f), "store": till.store})
        for till, f in zip(tills, friends, strict=True)
    ]
    await asyncio.gather(*(till.send(e) for till, e in zip(tills, events, strict=True)))
    rows = await _commissions(db)
    assert len(rows) == n
    assert sum(amount for _, _, amount, _, _ in rows) == 2500
    next_month = {
        **_order(10_000, friends[0], number=9, closed_at=T0 + timedelta(days=32)),
        "store": "shop-2",
    }
    await tills[0].send(tills[0].event("order.paid", next_month))
    assert (await _commissions(db))[-1][2] == 1000


# --------------------------------------------------------------------------- API


@pytest.fixture
async def client(db, tmp_path):
    async with TestClient(TestServer(make_app(db, HubSettings(state_dir=tmp_path)))) as test_client:
        yield test_client


@pytest.fixture
async def users(db, client) -> dict[str, dict[str, str]]:
    found = {}
    for name, role, stores in (("mkt", "marketing", None), ("li", "store-manager", ["shop-1"])):
        await auth.add_user(db, name, "password-123", role, stores)
        resp = await client.post("/api/v1/auth/token", json={"name": name, "password": "password-123"})
        found[name] = {"Authorization": f"Bearer {(await resp.json())['token']}"}
    return found


async def test_referral_api(db, client, users):
    rule = {"name": "老带新", "register_points": 100, "level1_bp": 1000, "level2_bp": 300}
    assert (await client.post("/api/v1/referrals/rules", json=rule, headers=users["li"])).status == 403
    bad = await client.post(
        "/api/v1/referrals/rules", json={**rule, "level1_bp": 20_000}, headers=users["mkt"]
    )
    assert bad.status == 422
    upside_down = await client.post(
        "/api/v1/referrals/rules", json={**rule, "level2_bp": 2000}, headers=users["mkt"]
    )
    assert "level2_bp must not exceed level1_bp" in await upside_down.text()
    assert (await client.post("/api/v1/referrals/rules", json=rule, headers=users["mkt"])).status == 201
    assert (await client.post("/api/v1/referrals/rules", json=rule, headers=users["mkt"])).status == 409
    member = await _member(db)
    made = await client.post("/api/v1/referrals/promoters", json={"member_id": member}, headers=users["mkt"])
    assert made.status == 201
    link = await client.post(
        f"/api/v1/referrals/promoters/{member}/links",
        json={"campaign": "spring", "store": "shop-1", "channel": "wechat"},
        headers=users["mkt"],
    )
    code = (await link.json())["code"]
    shown = await (await client.get(f"/api/v1/referrals/links/{code}", headers=users["li"])).json()
    assert (shown["campaign"], shown["store"], shown["channel"]) == ("spring", "shop-1", "wechat")
    bad_phone = await client.post(
        "/api/v1/referrals/register", json={"code": code, "phone": "12345"}, headers=users["li"]
    )
    assert bad_phone.status == 422
    joined = await client.post(
        "/api/v1/referrals/register",
        json={"code": code, "phone": _phone(), "name": "小王"},
        headers=users["li"],
    )
    assert joined.status == 201
    answer = await joined.json()
    assert answer["refused"] is None
    assert answer["attribution"]["campaign"] == "spring"
    self_ref = await client.post(
        "/api/v1/referrals/attribute", json={"code": code, "member_id": member}, headers=users["li"]
    )
    assert self_ref.status == 409
    assert "cannot refer themselves" in (await self_ref.json())["detail"]
    till = Till(db)
    await till.send(till.event("order.paid", _order(5_000, answer["member_id"])))
    listed = await (
        await client.get(f"/api/v1/referrals/commissions?promoter={member}", headers=users["li"])
    ).json()
    assert [(c["level"], c["amount_fen"], c["state"]) for c in listed["items"]] == [(1, 500, "pending")]
    summary = await (await client.get(f"/api/v1/referrals/promoters/{member}", headers=users["li"])).json()
    assert (summary["pending_fen"], summary["friends"]) == (500, 1)
    assert (await client.get("/api/v1/referrals/commissions?state=nope", headers=users["li"])).status == 400
    stopped = await client.patch(
        f"/api/v1/referrals/promoters/{member}", json={"active": False}, headers=users["mkt"]
    )
    assert (await stopped.json())["active"] is False
    assert (await client.get(f"/api/v1/referrals/links/{code}", headers=users["li"])).status == 409


async def test_a_merge_moves_promoters_links_friends_and_commissions(db):
    await _rule(db, level2_bp=0)
    dup, dup_code = await _promoter(db)
    keep, keep_code = await _promoter(db)
    async with db.session() as session, session.begin():
        spring = (await link_for(session, dup, campaign="spring")).code
    friend, _, _ = await _register(db, dup_code)
    till = Till(db)
    await till.send(till.event("order.paid", _order(3_000, friend)))
    async with db.session() as session, session.begin():
        await merge_members(session, dup, keep)
    async with db.session() as session:
        base = await resolve_code(session, dup_code)  # both base links survive, told apart by channel
        assert (base.promoter_id, base.channel) == (keep, f"merged:{dup_code}")
        assert (await resolve_code(session, spring)).promoter_id == keep
        assert (await resolve_code(session, keep_code)).channel == ""
        found = await session.get(Attribution, friend)
        assert found is not None
        assert found.promoter_id == keep
        assert (await promoter_totals(session, keep))["pending_fen"] == 300
    # a lone promoter merged into a plain member: the survivor becomes the promoter, with the same code
    solo, solo_code = await _promoter(db)
    plain = await _member(db)
    async with db.session() as session, session.begin():
        await merge_members(session, solo, plain)
    async with db.session() as session:
        assert (await resolve_code(session, solo_code)).promoter_id == plain
        promoted = await session.get(Promoter, plain)
        assert promoted is not None
        assert promoted.code == solo_code


async def test_a_till_registration_carries_the_share_code(db):
    await _rule(db, register_points=100, level2_bp=0)
    promoter, code = await _promoter(db)
    server = RpcServer(db)
    reply = await rpc(server, "member.register", {"phone": _phone(), "referral_code": code.lower()})
    assert reply.ok, reply.error
    assert reply.result["referral"] == {"attributed": True, "refused": None}
    async with db.session() as session:
        found = await session.get(Attribution, reply.result["id"])
        assert found is not None
        assert (found.promoter_id, found.via) == (promoter, "registration")
        assert await points.balance_of(session, promoter) == 100
    unknown = await rpc(server, "member.register", {"phone": _phone(), "referral_code": "ZZZZZZZZ"})
    assert not unknown.ok
    assert "no share code ZZZZZZZZ" in str(unknown.error)
    both = await rpc(
        server, "member.register", {"phone": _phone(), "referral_code": code, "referrer_phone": _phone()}
    )
    assert "not both" in str(both.error)

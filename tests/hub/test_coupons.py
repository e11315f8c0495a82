"""Coupons at the hub: templates checked at design time, issuance within per-member and total
limits (also under concurrent claims), the coupon centre and claim codes, single-use
redemption (exactly one of many tills at the same instant wins), release, the return on
void/full refund, statistics, welcome and birthday packs once per member per year, merges,
and the API's roles (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import ValidationError
from sqlalchemy import func, select

from hub import auth
from hub.api import make_app
from hub.config import HubSettings, JobsSettings
from hub.coupon_gifts import PackIn, birthday_coupons_job, grant_birthday_coupons, set_pack
from hub.coupon_redeem import coupon_rule, redeem
from hub.coupon_tables import Coupon, CouponTemplate, IssueSource
from hub.coupons import (
    CouponError,
    TemplateIn,
    claim,
    claimable_templates,
    create_template,
    issue,
    issue_to_audience,
    member_coupons,
    template_stats,
)
from hub.db import Database, migrate
from hub.member_tags import assign_tag, create_tag
from hub.members import merge_members
from hub.rpc import RpcServer
from hub.scheduler_jobs import JobContext
from hub.stores import add_store
from protocol.promotion_rules import PercentOffRule, ThresholdRule
from tests.hub.loyalty_helpers import TS, Till, new_member, order_body, refund_body, rpc

NOW = datetime.now(UTC)


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    for store in ("shop-1", "shop-2"):
        await add_store(database, store)
    yield database
    await database.close()


def _tpl(**fields: Any) -> TemplateIn:
    base: dict[str, Any] = {"name": "满100减10", "kind": "amount_off", "amount_off_fen": 1000}
    base.update(fields)
    if "valid_from" not in fields and "valid_days" not in fields:
        base["valid_days"] = 30
    return TemplateIn.model_validate(base)


async def _template(db: Database, **fields: Any) -> str:
    async with db.session() as session, session.begin():
        return (await create_template(session, _tpl(**fields), actor="user:mia")).id


async def _issue(db: Database, template_id: str, *members: str) -> list[str]:
    async with db.session() as session, session.begin():
        coupons = await issue(session, template_id, list(members), source=IssueSource.ISSUE, actor="user:mia")
        return [c.code for c in coupons]


async def _coupon(db: Database, code: str) -> Coupon:
    async with db.session() as session:
        coupon = await session.get(Coupon, code)
        assert coupon is not None
        return coupon


async def _count(db: Database) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(Coupon)) or 0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"amount_off_fen": None}, "needs amount_off_fen"),
        ({"kind": "percent_off", "amount_off_fen": None}, "needs percent_off_bp"),
        ({"kind": "percent_off", "amount_off_fen": None, "percent_off_bp": 10_001}, "less than or equal"),
        ({"threshold_fen": 500}, "would make the order free"),
        (
            {"kind": "free_item", "amount_off_fen": None, "free_sku": "COLA", "threshold_fen": 100},
            "threshold_fen",
        ),
        ({"valid_days": 3, "valid_from": NOW, "valid_until": NOW + timedelta(days=1)}, "not both"),
        ({"valid_from": NOW, "valid_until": NOW}, "after valid_from"),
        ({"valid_from": datetime(2026, 12, 1), "valid_until": datetime(2026, 12, 2)}, "time zone"),
        ({"per_member_limit": 3, "total_limit": 2}, "below per_member_limit"),
        ({"skus": ["A", "A"]}, "distinct"),
    ],
)
def test_a_template_that_makes_no_sense_is_refused_at_design_time(fields, message):
    with pytest.raises(ValidationError, match=message):
        _tpl(**fields)


def test_each_template_kind_becomes_an_engine_rule_carrying_the_code():
    amount = CouponTemplate(
        id="t1", name="满100减10", kind="amount_off", amount_off_fen=1000, threshold_fen=10_000, skus=[]
    )
    rule = coupon_rule(amount, "ABC")
    assert isinstance(rule, ThresholdRule)
    assert (rule.threshold_fen, rule.amount_fen, rule.code, rule.id) == (10_000, 1000, "ABC", "coupon:t1")
    no_threshold = CouponTemplate(
        id="t2", name="无门槛5元", kind="amount_off", amount_off_fen=500, threshold_fen=0, skus=[]
    )
    assert coupon_rule(no_threshold, "X").threshold_fen == 501  # type: ignore[union-attr]
    percent = CouponTemplate(
        id="t3",
        name="85折",
        kind="percent_off",
        percent_off_bp=1500,
        cap_fen=2000,
        threshold_fen=0,
        skus=["TEA"],
    )
    rule = coupon_rule(percent, "Y")
    assert isinstance(rule, PercentOffRule)
    assert (rule.off_bp, rule.max_discount_fen, rule.scope.skus) == (1500, 2000, ["TEA"])
    free = CouponTemplate(
        id="t4", name="免费可乐", kind="free_item", free_sku="COLA", threshold_fen=0, skus=[]
    )
    rule = coupon_rule(free, "Z")
    assert isinstance(rule, PercentOffRule)
    assert (rule.off_bp, rule.max_applications, rule.scope.skus) == (10_000, 1, ["COLA"])


async def test_issue_respects_per_member_and_total_limits_and_a_refusal_writes_nothing(db):
    a = await new_member(db, "13800000001")
    b = await new_member(db, "13800000002")
    c = await new_member(db, "13800000003")
    template_id = await _template(db, per_member_limit=2, total_limit=4)
    assert len(await _issue(db, template_id, a, b)) == 2
    assert len(await _issue(db, template_id, a)) == 1
    with pytest.raises(CouponError, match="per-member limit"):
        await _issue(db, template_id, a, c)  # a has 2 now: the whole issue is refused
    assert await _count(db) == 3
    with pytest.raises(CouponError, match="1 left of 4"):
        await _issue(db, template_id, b, c)
    assert await _count(db) == 3
    assert len(await _issue(db, template_id, c)) == 1
    async with db.session() as session:
        template = await session.get(CouponTemplate, template_id)
        assert template is not None
        assert template.issued_count == 4
        stats = await template_stats(session, template_id)
    assert (stats.issued, stats.claimed, stats.used) == (4, 0, 0)


async def test_validity_is_fixed_dates_or_days_from_receipt(db):
    member = await new_member(db)
    start, end = datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 31, 16, tzinfo=UTC)
    fixed = await _template(db, valid_from=start, valid_until=end)
    rolling = await _template(db, valid_days=7)
    (f,) = await _issue(db, fixed, member)
    (r,) = await _issue(db, rolling, member)
    assert ((await _coupon(db, f)).valid_from, (await _coupon(db, f)).valid_until) == (start, end)
    got = await _coupon(db, r)
    assert got.valid_until - got.valid_from == timedelta(days=7)
    assert abs(got.valid_from - datetime.now(UTC)) < timedelta(minutes=1)


async def test_the_coupon_centre_and_claim_codes(db):
    member = await new_member(db)
    centre = await _template(db, claimable=True, per_member_limit=1, total_limit=2)
    hidden = await _template(db, claim_code="vip2026")
    office_only = await _template(db)
    async with db.session() as session:
        listed = await claimable_templates(session, member)
    assert [(t["id"], t["left"], t["may_claim"]) for t in listed] == [(centre, 2, 1)]
    async with db.session() as session, session.begin():
        got = await claim(session, member, template_id=centre)
        assert got.source == "centre"
        by_code = await claim(session, member, claim_code=" VIP2026 ")
        assert (by_code.template_id, by_code.source) == (hidden, "claim_code")
    async with db.session() as session, session.begin():
        with pytest.raises(CouponError, match="per-member limit"):
            await claim(session, member, template_id=centre)
    async with db.session() as session, session.begin():
        with pytest.raises(CouponError, match="not in the coupon centre"):
            await claim(session, member, template_id=office_only)
    async with db.session() as session:
        assert (await claimable_templates(session, member))[0]["may_claim"] == 0
        stats = await template_stats(session, centre)
    assert (stats.issued, stats.claimed) == (1, 1)


async def test_concurrent_claims_by_one_member_stay_within_the_limit(db):
    member = await new_member(db)
    template_id = await _template(db, claimable=True, per_member_limit=1)

    async def one() -> str:
        try:
            async with db.session() as session, session.begin():
                return (await claim(session, member, template_id=template_id)).code
        except CouponError as err:
            return f"refused: {err}"

    results = await asyncio.gather(*(one() for _ in range(8)))
    assert sum(not r.startswith("refused") for r in results) == 1, results
    assert await _count(db) == 1


async def test_issue_to_a_tag_skips_members_at_their_limit(db):
    members = [await new_member(db, f"1380000000{i}") for i in range(4)]
    async with db.session() as session, session.begin():
        await create_tag(session, "vip", "VIP", actor="user:mia", today=date(2026, 11, 23))
        for member_id in members[:3]:
            await assign_tag(session, member_id, "vip", actor="user:mia")
    template_id = await _template(db, campaign="双11")
    await _issue(db, template_id, members[0])
    async with db.session() as session, session.begin():
        coupons = await issue_to_audience(session, template_id, tag="vip", actor="user:mia")
    assert sorted(c.member_id for c in coupons) == sorted(members[1:3])
    assert {c.source for c in coupons} == {"campaign"}
    async with db.session() as session, session.begin():
        with pytest.raises(ValueError, match="no tag"):
            await issue_to_audience(session, template_id, tag="nope", actor="user:mia")


async def test_redeem_checks_store_member_validity_and_is_single_use(db):
    member = await new_member(db, "13800000001")
    other = await new_member(db, "13800000002")
    template_id = await _template(db, stores=["shop-1"])
    (code,) = await _issue(db, template_id, member)
    order = str(uuid.uuid4())
    async with db.session() as session, session.begin():
        with pytest.raises(CouponError, match="not valid at store shop-2"):
            await redeem(session, "shop-2", code, order)
        with pytest.raises(CouponError, match="another member"):
            await redeem(session, "shop-1", code, order, member_id=other)
        with pytest.raises(CouponError, match="expired"):
            await redeem(session, "shop-1", code, order, now=datetime.now(UTC) + timedelta(days=31))
    async with db.session() as session, session.begin():
        done = await redeem(session, "shop-1", code.lower(), order, member_id=member)
    assert done["coupon"]["state"] == "used"
    assert done["rule"]["code"] == code
    assert done["rule"]["kind"] == "threshold"
    async with db.session() as session, session.begin():
        again = await redeem(session, "shop-1", code, order)  # the same order: the same answer
        assert again["coupon"]["used_order_id"] == order
        with pytest.raises(CouponError, match="already used at store shop-1"):
            await redeem(session, "shop-1", code, str(uuid.uuid4()))


async def test_two_tills_redeeming_one_coupon_at_the_same_instant_exactly_one_wins(db):
    member = await new_member(db)
    template_id = await _template(db)
    (code,) = await _issue(db, template_id, member)
    server = RpcServer(db)
    orders = [str(uuid.uuid4()) for _ in range(12)]
    replies = await asyncio.gather(
        *(
            rpc(server, "coupon.redeem", {"code": code, "order_id": o}, key=f"{o}:{code}", store=store)
            for o, store in zip(orders, ["shop-1", "shop-2"] * 6, strict=True)
        )
    )
    winners = [r for r in replies if r.ok]
    assert len(winners) == 1, [r.error for r in replies]
    assert all("already used" in (r.error or "") for r in replies if not r.ok)
    coupon = await _coupon(db, code)
    assert coupon.state == "used"
    assert coupon.used_order_id == winners[0].result["coupon"]["used_order_id"]  # type: ignore[index]
    # the winner's retry with its key replays; a keyless redeem is refused (it changes state)
    winner_order = coupon.used_order_id
    replay = await rpc(
        server,
        "coupon.redeem",
        {"code": code, "order_id": winner_order},
        key=f"{winner_order}:{code}",
        store=coupon.used_store or "",
    )
    assert replay.ok
    keyless = await rpc(server, "coupon.redeem", {"code": code, "order_id": winner_order})
    assert not keyless.ok
    assert "idempotency key" in (keyless.error or "")


async def test_release_gives_back_a_coupon_of_an_unpaid_order_only(db):
    member = await new_member(db)
    template_id = await _template(db)
    (code,) = await _issue(db, template_id, member)
    order = order_body(5000, member)
    server = RpcServer(db)
    assert (await rpc(server, "coupon.redeem", {"code": code, "order_id": order["id"]}, key="k1")).ok
    wrong = await rpc(server, "coupon.release", {"code": code, "order_id": "other"}, key="k2")
    assert not wrong.ok
    assert "was not used by order other" in (wrong.error or "")
    released = await rpc(server, "coupon.release", {"code": code, "order_id": order["id"]}, key="k3")
    assert released.ok
    assert released.result["released"] is True
    assert (await _coupon(db, code)).state == "issued"
    assert (await rpc(server, "coupon.redeem", {"code": code, "order_id": order["id"]}, key="k4")).ok
    till = Till(db)
    await till.send(till.event("order.paid", order))
    late = await rpc(server, "coupon.release", {"code": code, "order_id": order["id"]}, key="k5")
    assert not late.ok
    assert "is paid" in (late.error or "")


async def test_paid_orders_count_as_revenue_and_voids_or_full_refunds_return_coupons(db):
    member = await new_member(db)
    template_id = await _template(db, per_member_limit=5)
    codes: list[str] = []
    for _ in range(4):
        codes += await _issue(db, template_id, member)
    paid, refunded, partial, voided = (order_body(9000, member, number=n) for n in range(1, 5))
    voided["status"] = "voided"
    for code, order in zip(codes, (paid, refunded, partial, voided), strict=True):
        async with db.session() as session, session.begin():
            await redeem(session, "shop-1", code, order["id"])
    till = Till(db)
    await till.send(*(till.event(f"order.{o['status']}", o) for o in (paid, refunded, partial, voided)))
    await till.send(
        till.event("order.refunded", refund_body(refunded, {0: 9000})),
        till.event("order.refunded", refund_body(partial, {0: 4000})),
    )
    states = [(await _coupon(db, c)).state for c in codes]
    assert states == ["used", "issued", "used", "issued"]
    async with db.session() as session:
        stats = await template_stats(session, template_id)
    assert (stats.issued, stats.used, stats.orders_fen) == (4, 2, 18_000)
    assert (await _coupon(db, codes[1])).returned == 1


async def test_a_refund_before_its_order_still_returns_the_coupon(db):
    member = await new_member(db)
    (code,) = await _issue(db, await _template(db), member)
    order = order_body(3000, member)
    async with db.session() as session, session.begin():
        await redeem(session, "shop-1", code, order["id"])
    till = Till(db)
    refund = till.event("order.refunded", refund_body(order, {0: 3000}))
    paid = till.event("order.paid", order)
    await till.send(refund)
    assert (await _coupon(db, code)).state == "used"
    await till.send(paid)
    assert (await _coupon(db, code)).state == "issued"


async def test_welcome_pack_on_registration_and_birthday_pack_once_a_year(db):
    welcome = await _template(db, name="新人券", valid_days=30)
    cake = await _template(db, name="生日蛋糕券", kind="free_item", amount_off_fen=None, free_sku="CAKE")
    async with db.session() as session, session.begin():
        await set_pack(
            session,
            "welcome",
            PackIn.model_validate({"items": [{"template_id": welcome, "count": 2}]}),
            actor="user:mia",
        )
        await set_pack(
            session,
            "birthday",
            PackIn.model_validate({"items": [{"template_id": cake}], "days_before": 3}),
            actor="user:mia",
        )
    member = await new_member(db, "13800000001", birthday=date(1990, 12, 4))
    leap = await new_member(db, "13800000002", birthday=date(2000, 2, 29))
    async with db.session() as session:
        held = await member_coupons(session, member)
    assert sorted(c.source for c, _ in held) == ["welcome", "welcome"]
    # the job for 1 December grants the 4 December birthdays, once, across reruns and two "hubs"
    context = JobContext(day=date(2026, 12, 1), now=TS, previous=None, settings=JobsSettings())
    results = await asyncio.gather(birthday_coupons_job(db, context), birthday_coupons_job(db, context))
    assert sorted(results) == [
        "birthday coupons for 0 members (2026-12-01)",
        "birthday coupons for 1 members (2026-12-01)",
    ]
    async with db.session() as session, session.begin():
        assert await grant_birthday_coupons(session, date(2026, 12, 1)) == 0
    async with db.session() as session:
        births = [c for c, _ in await member_coupons(session, member) if c.source == "birthday"]
    assert len(births) == 1
    assert births[0].grant_key == "birthday:2026#0.0"
    # next year again; in a non-leap year a 29 February birthday is on 28 February (3 days ahead: the 25th)
    async with db.session() as session, session.begin():
        assert await grant_birthday_coupons(session, date(2027, 12, 1)) == 1
        assert await grant_birthday_coupons(session, date(2027, 2, 25)) == 1
    async with db.session() as session:
        assert [c.grant_key for c, _ in await member_coupons(session, leap) if c.source == "birthday"] == [
            "birthday:2027#0.0"
        ]


async def test_a_merge_moves_coupons_to_the_survivor(db):
    keep = await new_member(db, "13800000001")
    dup = await new_member(db, "13800000002")
    template_id = await _template(db)
    (kept,) = await _issue(db, template_id, keep)
    (moved,) = await _issue(db, template_id, dup)
    async with db.session() as session, session.begin():
        await merge_members(session, dup, keep)
    assert {(await _coupon(db, c)).member_id for c in (kept, moved)} == {keep}
    # the coupon follows the member at the till too
    server = RpcServer(db)
    listed = await rpc(server, "coupon.list", {"member_id": dup})
    assert listed.ok
    assert sorted(c["code"] for c in listed.result["coupons"]) == sorted([kept, moved])


# --------------------------------------------------------------------------- API


@pytest.fixture
async def client(db):
    for name, role, stores in (
        ("boss", "owner", None),
        ("mia", "marketing", None),
        ("li", "store-manager", ["shop-1"]),
    ):
        await auth.add_user(db, name, f"{name}-password", role, stores)
    app = make_app(db, HubSettings())
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def _headers(client: TestClient, name: str) -> dict[str, str]:
    resp = await client.post("/api/v1/auth/token", json={"name": name, "password": f"{name}-password"})
    return {"Authorization": f"Bearer {(await resp.json())['token']}"}


async def test_marketing_designs_and_issues_others_read_and_bad_bodies_say_where(client, db):
    mia, li = await _headers(client, "mia"), await _headers(client, "li")
    body = {
        "name": "满100减10",
        "kind": "amount_off",
        "amount_off_fen": 1000,
        "threshold_fen": 10_000,
        "valid_days": 30,
    }
    resp = await client.post("/api/v1/coupon-templates", json=body, headers=li)
    assert resp.status == 403
    resp = await client.post("/api/v1/coupon-templates", json={**body, "percent_off_bp": 20_000}, headers=mia)
    assert resp.status == 422
    problem = await resp.json()
    assert [e["field"] for e in problem["errors"]] == ["percent_off_bp"]
    resp = await client.post("/api/v1/coupon-templates", json={**body, "valid_days": None}, headers=mia)
    assert resp.status == 422
    assert "valid_days" in (await resp.json())["detail"]
    resp = await client.post("/api/v1/coupon-templates", json=body, headers=mia)
    assert resp.status == 201, await resp.text()
    template_id = (await resp.json())["id"]

    member = await new_member(db)
    resp = await client.post(
        f"/api/v1/coupon-templates/{template_id}/issue", json={"member_ids": [member, "nobody"]}, headers=mia
    )
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["field"] == "member_ids.1"
    assert await _count(db) == 0
    resp = await client.post(
        f"/api/v1/coupon-templates/{template_id}/issue", json={"member_ids": [member]}, headers=mia
    )
    assert resp.status == 201, await resp.text()
    code = (await resp.json())["codes"][0]
    resp = await client.post(
        f"/api/v1/coupon-templates/{template_id}/issue", json={"member_ids": [member]}, headers=mia
    )
    assert resp.status == 409
    assert "per-member limit" in (await resp.json())["detail"]

    resp = await client.get(f"/api/v1/members/{member}/coupons", headers=li)
    assert resp.status == 200
    assert [c["code"] for c in (await resp.json())["items"]] == [code]
    resp = await client.get(f"/api/v1/coupon-templates/{template_id}", headers=li)
    assert (await resp.json())["stats"] == {
        "issued": 1,
        "claimed": 0,
        "used": 0,
        "revoked": 0,
        "revenue_fen": 0,
    }
    resp = await client.post(f"/api/v1/coupons/{code}/revoke", headers=mia)
    assert resp.status == 200
    assert (await resp.json())["state"] == "revoked"
    resp = await client.post(f"/api/v1/coupons/{code}/revoke", headers=mia)
    assert resp.status == 409

    resp = await client.patch(
        f"/api/v1/coupon-templates/{template_id}", json={"claimable": True}, headers=mia
    )
    assert resp.status == 200
    assert (await resp.json())["claimable"] is True
    resp = await client.get(f"/api/v1/coupon-centre?member_id={member}", headers=li)
    assert [(t["id"], t["may_claim"]) for t in (await resp.json())["items"]] == [(template_id, 0)]
    resp = await client.put(
        "/api/v1/coupon-packs/welcome",
        json={"items": [{"template_id": template_id, "count": 1}]},
        headers=mia,
    )
    assert resp.status == 200, await resp.text()
    resp = await client.put(
        "/api/v1/coupon-packs/welcome", json={"items": [{"template_id": "x"}]}, headers=mia
    )
    assert resp.status == 404
    resp = await client.get("/api/v1/coupon-packs/welcome", headers=li)
    assert (await resp.json())["items"] == [{"template_id": template_id, "count": 1}]

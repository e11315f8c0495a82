"""Campaigns: audiences (tags, segments, levels, birthdays, lapsed, stores, all members) computed at
release in the campaign's time zone, scheduled local sends, release once with an attached coupon,
a refused release marked failed with nothing queued, and results (reach, suppressed reasons, coupon
use, registrations, orders and revenue in the attribution window) — SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import ValidationError
from sqlalchemy import func, select, update

from hub import auth
from hub.api import make_app
from hub.campaigns import (
    Audience,
    CampaignError,
    CampaignIn,
    audience_members,
    campaign_results,
    cancel_campaign,
    create_campaign,
    release_due,
)
from hub.config import HubSettings
from hub.coupon_tables import Coupon
from hub.coupons import TemplateIn, create_template
from hub.db import Database, migrate
from hub.member_facts import MemberOrder
from hub.member_tag_tables import MemberSegment, MemberTag, MemberTagLink
from hub.members import Member, MemberFields, create_member
from hub.messaging import LogSender
from hub.messaging_settings import MessagingSettings
from hub.messaging_tables import Campaign, Message
from hub.messaging_worker import build_outbox, send_due
from hub.stored_value import Source, topup
from hub.stores import add_store
from tests.hub.loyalty_helpers import set_levels

SH = ZoneInfo("Asia/Shanghai")
_PHONES = itertools.count(1)


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    for store in ("shop-1", "shop-2"):
        await add_store(database, store)
    yield database
    await database.close()


async def _member(db: Database, *, consent: bool = True, **fields: object) -> str:
    async with db.session() as session, session.begin():
        member = await create_member(
            session,
            MemberFields(
                f"137{next(_PHONES):08d}",
                channel="app",
                consent_marketing=consent,
                consent_sms=consent,
                **fields,  # type: ignore[arg-type]
            ),
        )
        return member.id


async def _order(db: Database, member: str, closed: datetime, total: int, refunded: int = 0) -> None:
    async with db.session() as session, session.begin():
        session.add(
            MemberOrder(
                order_id=f"o-{next(_PHONES)}",
                member_id=member,
                store="shop-1",
                business_day=closed.astimezone(SH).date(),
                closed_at=closed,
                total_fen=total,
                refunded_fen=refunded,
                items=[],
            )
        )


async def _tag(db: Database, code: str, *members: str) -> None:
    now = datetime.now(UTC)
    async with db.session() as session, session.begin():
        session.add(MemberTag(code=code, name=code, created_by="t", created_at=now, updated_at=now))
        await session.flush()
        for m in members:
            session.add(MemberTagLink(member_id=m, tag_code=code, assigned_by="t", assigned_at=now))


async def _segment(db: Database, member: str, segment: str) -> None:
    async with db.session() as session, session.begin():
        session.add(
            MemberSegment(
                member_id=member,
                as_of=date(2026, 11, 1),
                window_days=365,
                recency_days=1,
                frequency=1,
                monetary_fen=1,
                r_score=5,
                f_score=1,
                m_score=1,
                segment=segment,
                computed_at=datetime.now(UTC),
            )
        )


async def _audience(db: Database, day: date, **criteria: object) -> set[str]:
    async with db.session() as session:
        return set(await audience_members(session, Audience.model_validate(criteria), day))


async def test_audiences_match_every_criterion(db):
    day = date(2026, 12, 10)
    vip_a = await _member(db, birthday=date(1990, 12, 25), source_store="shop-1")
    vip_b = await _member(db, birthday=date(1985, 1, 3), source_store="shop-2")
    plain = await _member(db, birthday=date(1992, 12, 11))
    leap = await _member(db, birthday=date(1996, 2, 29))
    never = await _member(db)
    await _tag(db, "vip", vip_a, vip_b)
    await _tag(db, "coffee", plain)
    await _segment(db, vip_a, "champions")
    await _segment(db, plain, "at_risk")
    # lapsed: vip_b last came 100 days ago, plain 10 days ago, never never came.
    await _order(db, vip_b, datetime(2026, 9, 1, 4, tzinfo=UTC), 1000)
    await _order(db, plain, datetime(2026, 11, 30, 4, tzinfo=UTC), 1000)
    assert await _audience(db, day, all_members=True) == {vip_a, vip_b, plain, leap, never}
    assert await _audience(db, day, tags=["vip"]) == {vip_a, vip_b}
    assert await _audience(db, day, tags=["vip", "coffee"]) == {vip_a, vip_b, plain}
    assert await _audience(db, day, tags=["vip"], stores=["shop-2"]) == {vip_b}
    assert await _audience(db, day, segments=["champions", "at_risk"]) == {vip_a, plain}
    assert await _audience(db, day, birthday={"this_month": True}) == {vip_a, plain}
    assert await _audience(db, day, birthday={"within_days": 2}) == {plain}
    assert await _audience(db, day, birthday={"within_days": 25}) == {vip_a, plain, vip_b}
    assert await _audience(db, date(2027, 2, 27), birthday={"within_days": 2}) == {leap}  # 28 Feb in 2027
    assert await _audience(db, day, lapsed_days=30) == {vip_b}
    assert await _audience(db, day, lapsed_days=30, tags=["coffee"]) == set()
    async with db.session() as session:
        with pytest.raises(CampaignError, match="no tag 'nope'"):
            await audience_members(session, Audience(tags=["nope"]), day)
        with pytest.raises(CampaignError, match="no segment 'vip'"):
            await audience_members(session, Audience(segments=["vip"]), day)
        with pytest.raises(CampaignError, match=r"audience\.levels: no level 'gold'"):
            await audience_members(session, Audience(levels=["gold"]), day)


@pytest.mark.parametrize(
    ("audience", "error"),
    [
        ({}, "name an audience"),
        ({"all_members": True, "tags": ["vip"]}, "takes no other criterion"),
        ({"birthday": {"this_month": True, "within_days": 3}}, "one of them"),
        ({"birthday": {}}, "one of them"),
        ({"stores": ["Shop 1"]}, "is not a store id"),
        ({"lapsed_days": 0}, "greater than or equal to 1"),
    ],
)
def test_bad_audiences_are_refused(audience, error):
    with pytest.raises(ValidationError, match=error):
        CampaignIn.model_validate({"name": "x", "template": "promo", "audience": audience})


def test_bad_campaigns_are_refused():
    with pytest.raises(ValidationError, match="unknown time zone"):
        CampaignIn.model_validate(
            {"name": "x", "template": "promo", "audience": {"all_members": True}, "timezone": "Mars/Olympus"}
        )
    with pytest.raises(ValidationError, match="channel"):
        CampaignIn.model_validate(
            {"name": "x", "template": "promo", "audience": {"all_members": True}, "channel": "fax"}
        )


async def _campaign(db: Database, **fields: object) -> Campaign:
    body = CampaignIn.model_validate(
        {"name": "Double 12", "template": "promo", "params": {"offer": "满100减20"}, **fields}
    )
    async with db.session() as session, session.begin():
        return await create_campaign(session, body, actor="user:mkt")


async def test_local_send_time_release_once_send_and_results(db):
    now = datetime.now(UTC)
    local = (now + timedelta(hours=1)).astimezone(SH).replace(tzinfo=None, second=0, microsecond=0)
    yes = await _member(db)
    no = await _member(db, consent=False)
    other = await _member(db)
    await _tag(db, "vip", yes, no)
    async with db.session() as session, session.begin():
        template = await create_template(
            session,
            TemplateIn.model_validate(
                {
                    "name": "¥20 off",
                    "kind": "amount_off",
                    "amount_off_fen": 2000,
                    "threshold_fen": 10000,
                    "valid_days": 14,
                    "campaign": "double12",
                }
            ),
            actor="user:mkt",
        )
    campaign = await _campaign(
        db, audience={"tags": ["vip"]}, send_at=local.isoformat(), coupon_template_id=template.id
    )
    assert campaign.send_at == local.replace(tzinfo=SH).astimezone(UTC)
    assert await release_due(db, now) == ""
    at = campaign.send_at + timedelta(seconds=1)
    assert await release_due(db, at) == "campaigns released: Double 12 (2)"
    assert await release_due(db, at) == ""
    async with db.session() as session, session.begin():
        with pytest.raises(CampaignError, match="only a scheduled one"):
            await cancel_campaign(session, campaign.id, actor="user:mkt")
    sender = LogSender()
    result = await send_due(db, {"sms": sender}, now=at)
    assert (result.sent, result.suppressed) == (1, 1)
    assert [m.params for m in sender.sent] == [{"offer": "满100减20"}]
    # yes buys twice in the window (one partly refunded) and once after it; other buys but got nothing.
    await _order(db, yes, at + timedelta(hours=2), 12000, refunded=2000)
    await _order(db, yes, at + timedelta(days=3), 5000)
    await _order(db, yes, at + timedelta(days=8), 9000)
    await _order(db, other, at + timedelta(hours=1), 7000)
    newcomer = await _member(db)
    async with db.session() as session, session.begin():
        await session.execute(  # registered an hour after the release, as the window sees it
            update(Member).where(Member.id == newcomer).values(created_at=at + timedelta(hours=1))
        )
        await session.execute(
            update(Coupon)
            .where(Coupon.member_id == yes)
            .values(state="used", used_at=at + timedelta(hours=2), order_total_fen=12000)
        )
    async with db.session() as session:
        results = await campaign_results(session, campaign.id, now=at + timedelta(days=1))
        coupons = await session.scalar(select(func.count()).select_from(Coupon))
    assert coupons == 2
    assert results["audience"] == 2
    assert results["reach"]["queued"] == 2
    assert (results["reach"]["sent"], results["reach"]["suppressed"]) == (1, 1)
    assert results["reach"]["suppressed_reasons"] == {"the member has not agreed to marketing by sms": 1}
    assert results["coupons"] == {"issued": 2, "used": 1, "order_total_fen": 12000}
    assert results["new_members"] == 1
    assert results["attributed"] == {"orders": 2, "buyers": 1, "revenue_fen": 15000}
    assert results["window"]["complete"] is False


async def test_cancel_and_a_refused_release_is_marked_failed_with_nothing_queued(db):
    a = await _member(db)
    b = await _member(db)
    async with db.session() as session, session.begin():
        template = await create_template(
            session,
            TemplateIn.model_validate(
                {
                    "name": "one only",
                    "kind": "amount_off",
                    "amount_off_fen": 500,
                    "valid_days": 3,
                    "total_limit": 1,
                }
            ),
            actor="user:mkt",
        )
    cancelled = await _campaign(db, audience={"all_members": True})
    async with db.session() as session, session.begin():
        await cancel_campaign(session, cancelled.id, actor="user:mkt")
    refused = await _campaign(db, audience={"all_members": True}, coupon_template_id=template.id)
    assert await release_due(db, datetime.now(UTC)) == ""
    async with db.session() as session:
        rows = {c.id: c for c in (await session.scalars(select(Campaign))).all()}
        assert await session.scalar(select(func.count()).select_from(Message)) == 0
        assert await session.scalar(select(func.count()).select_from(Coupon)) == 0
    assert rows[cancelled.id].state == "cancelled"
    assert rows[refused.id].state == "failed"
    assert "has 1 left of 1" in (rows[refused.id].error or "")
    assert {a, b}  # both in the audience: the refusal is the coupon's total limit, not the audience
    async with db.session() as session, session.begin():
        with pytest.raises(CampaignError, match="in the past"):
            await create_campaign(
                session,
                CampaignIn.model_validate(
                    {
                        "name": "x",
                        "template": "promo",
                        "audience": {"all_members": True},
                        "send_at": "2020-01-01T10:00:00+08:00",
                    }
                ),
                actor="u",
            )


# --------------------------------------------------------------------------- worker and API


async def test_the_service_worker_releases_and_sends_in_the_background(db):
    member = await _member(db)
    campaign = await _campaign(db, audience={"all_members": True})
    worker = build_outbox(db, MessagingSettings(interval_s=0.5))
    sender = worker.senders["sms"]
    assert isinstance(sender, LogSender)
    async with worker:
        for _ in range(200):
            if sender.sent:
                break
            await asyncio.sleep(0.05)
    assert [m.recipient for m in sender.sent] == [await _phone(db, member)]
    async with db.session() as session:
        row = await session.get(Campaign, campaign.id)
        assert row is not None
        assert (row.state, row.audience_size) == ("released", 1)


async def _phone(db: Database, member_id: str) -> str | None:
    async with db.session() as session:
        member = await session.get(Member, member_id)
        return member.phone if member else None


@pytest.fixture
async def client(db, tmp_path):
    async with TestClient(TestServer(make_app(db, HubSettings(state_dir=tmp_path)))) as test_client:
        yield test_client


@pytest.fixture
async def users(db, client) -> dict[str, dict[str, str]]:
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


async def test_campaign_api(db, client, users):
    a = await _member(db, source_store="shop-1")
    await _member(db, source_store="shop-2")
    await _tag(db, "vip", a)
    body = {
        "name": "周末咖啡",
        "template": "promo",
        "params": {"offer": "第二杯半价"},
        "audience": {"tags": ["vip"], "stores": ["shop-1"]},
        "send_at": "2099-12-05T10:00:00",
        "timezone": "Asia/Shanghai",
    }
    resp = await client.post("/api/v1/campaigns", json=body, headers=users["fin"])
    assert resp.status == 403
    resp = await client.post("/api/v1/campaigns", json=body, headers=users["mkt"])
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    assert (created["send_at"], created["send_local"]) == (
        "2099-12-05T02:00:00+00:00",
        "2099-12-05T10:00:00+08:00",
    )
    resp = await client.post(
        "/api/v1/campaigns", json={**body, "audience": {"tags": ["nope"]}}, headers=users["mkt"]
    )
    assert resp.status == 422
    assert (await resp.json())["errors"] == [{"field": "audience.tags", "message": "no tag 'nope'"}]
    resp = await client.post("/api/v1/campaigns", json={**body, "audience": {}}, headers=users["mkt"])
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["field"] == "audience"
    resp = await client.post(
        "/api/v1/campaigns/preview", json={"audience": {"all_members": True}}, headers=users["mkt"]
    )
    assert (await resp.json())["members"] == 2
    resp = await client.post(
        "/api/v1/campaigns/preview", json={"audience": body["audience"]}, headers=users["mkt"]
    )
    assert (await resp.json())["sample"] == [a]
    resp = await client.get("/api/v1/campaigns?state=scheduled", headers=users["li"])
    assert [c["id"] for c in (await resp.json())["items"]] == [created["id"]]
    resp = await client.get(f"/api/v1/campaigns/{created['id']}/results", headers=users["li"])
    assert await resp.json() == {"campaign_id": created["id"], "state": "scheduled", "audience": None}
    resp = await client.post(f"/api/v1/campaigns/{created['id']}/cancel", headers=users["li"])
    assert resp.status == 403
    resp = await client.post(f"/api/v1/campaigns/{created['id']}/cancel", headers=users["mkt"])
    assert (await resp.json())["state"] == "cancelled"
    resp = await client.post(f"/api/v1/campaigns/{created['id']}/cancel", headers=users["mkt"])
    assert resp.status == 409
    resp = await client.get("/api/v1/campaigns/nope", headers=users["mkt"])
    assert resp.status == 404


async def test_unsubscribe_api(db, client, users):
    a = await _member(db, source_store="shop-1")
    resp = await client.post(
        f"/api/v1/members/{a}/unsubscribe", json={"channel": "sms"}, headers=users["fin"]
    )
    assert resp.status == 403
    resp = await client.post(f"/api/v1/members/{a}/unsubscribe", json={"channel": "fax"}, headers=users["li"])
    assert resp.status == 422
    resp = await client.post(f"/api/v1/members/{a}/unsubscribe", json={"channel": "sms"}, headers=users["li"])
    assert resp.status == 200
    await _campaign(db, audience={"all_members": True})
    await release_due(db, datetime.now(UTC))
    await send_due(db, {"sms": LogSender()})
    resp = await client.get(f"/api/v1/members/{a}/messages", headers=users["li"])
    answer = await resp.json()
    assert answer["unsubscribed"] == ["sms"]
    assert [(m["state"], m["last_error"]) for m in answer["items"]] == [
        ("suppressed", "the member unsubscribed from sms")
    ]
    resp = await client.post(f"/api/v1/members/{a}/resubscribe", json={}, headers=users["li"])
    assert (await resp.json())["unsubscribed"] is False
    resp = await client.get(f"/api/v1/members/{a}/messages", headers=users["li"])
    assert (await resp.json())["unsubscribed"] == []
    resp = await client.post("/api/v1/members/nobody/unsubscribe", json={}, headers=users["li"])
    assert resp.status == 404


async def test_level_audiences_follow_the_levels_the_till_sees(db):
    await set_levels(
        db,
        metric="topup",
        levels=[
            {"code": "silver", "name": "银卡", "rank": 1, "threshold": 0},
            {"code": "gold", "name": "金卡", "rank": 2, "threshold": 5000},
        ],
    )
    rich = await _member(db)
    poor = await _member(db)
    async with db.session() as session, session.begin():
        await topup(
            session, rich, 10_000, payment_method="cash", payment_reference=None, source=Source(actor="t")
        )
    day = date(2026, 12, 1)
    assert await _audience(db, day, levels=["gold"]) == {rich}
    assert await _audience(db, day, levels=["silver"]) == {poor}
    assert await _audience(db, day, levels=["silver", "gold"]) == {rich, poor}

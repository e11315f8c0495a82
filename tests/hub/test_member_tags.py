"""Member tags: manual tags with their audit and merges, rule tags, search by tag and segment, the API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select, update

from hub import auth
from hub.api import make_app
from hub.config import HubSettings
from hub.db import Database, migrate
from hub.errors import NotFound
from hub.member_facts import MemberOrder
from hub.member_search import MemberQuery, UnknownTag, search_members
from hub.member_segments import UnknownSegment, recompute_segments
from hub.member_tag_tables import MemberTag, MemberTagAudit, MemberTagLink
from hub.member_tags import (
    InvalidTag,
    TagExists,
    WrongTagKind,
    assign_tag,
    create_tag,
    delete_tag,
    evaluate_rule_tags,
    member_tags,
    unassign_tag,
    update_tag,
)
from hub.members import Member, merge_members
from hub.models import StoreSnapshot
from hub.stored_value import Source, topup
from hub.stores import add_store
from tests.hub.test_rfm import AS_OF, add_orders, make_member

BOSS = "user:boss"


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    for store in ("north", "south"):
        await add_store(database, store)
    await auth.add_user(database, "boss", "correct horse", "owner")
    await auth.add_user(database, "li", "battery staple", "store-manager", ["north"])
    yield database
    await database.close()


async def _tag(db: Database, code: str, rule: dict | None = None) -> None:
    async with db.session() as session, session.begin():
        await create_tag(session, code, code.upper(), actor=BOSS, rule=rule, today=AS_OF)


async def _tagged(db: Database, code: str) -> set[str]:
    async with db.session() as session:
        rows = await session.scalars(select(MemberTagLink.member_id).where(MemberTagLink.tag_code == code))
        return set(rows.all())


async def _count(db: Database, model: type) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_manual_tags_are_audited_and_refused_cleanly(db):
    member = await make_member(db, "13800000001")
    await _tag(db, "vip")
    async with db.session() as session, session.begin():
        assert await assign_tag(session, member, "vip", actor=BOSS)
        assert not await assign_tag(session, member, "vip", actor="user:other")  # already has it
    async with db.session() as session:
        views = await member_tags(session, member)
    assert [(v.code, v.name, v.kind, v.assigned_by) for v in views] == [("vip", "VIP", "manual", BOSS)]
    for bad, error in (
        (lambda s: create_tag(s, "vip", "again", actor=BOSS, today=AS_OF), TagExists),
        (lambda s: create_tag(s, "Bad Code", "x", actor=BOSS, today=AS_OF), InvalidTag),
        (lambda s: create_tag(s, "ok", " ", actor=BOSS, today=AS_OF), InvalidTag),
        (lambda s: create_tag(s, "ok", "x", actor=BOSS, color="red", today=AS_OF), InvalidTag),
        (lambda s: assign_tag(s, member, "nope", actor=BOSS), NotFound),
        (lambda s: assign_tag(s, "nobody", "vip", actor=BOSS), NotFound),
        (
            lambda s: update_tag(s, "vip", {"rule": {"kind": "churn_risk", "days": 30}}, today=AS_OF),
            InvalidTag,
        ),
    ):
        with pytest.raises(error):
            async with db.session() as session, session.begin():
                await bad(session)
    async with db.session() as session, session.begin():
        assert await unassign_tag(session, member, "vip", actor="user:li")
        assert not await unassign_tag(session, member, "vip", actor="user:li")
    async with db.session() as session:
        audit = (await session.scalars(select(MemberTagAudit).order_by(MemberTagAudit.id))).all()
    assert [(a.action, a.actor) for a in audit] == [("assign", BOSS), ("unassign", "user:li")]
    assert await _count(db, MemberTag) == 1


async def test_merge_carries_tags_to_the_survivor(db):
    keep = await make_member(db, "13800000001")
    dup = await make_member(db, "13800000002")
    for code in ("vip", "allergy", "blacklist"):
        await _tag(db, code)
    async with db.session() as session, session.begin():
        await assign_tag(session, keep, "vip", actor=BOSS)
        await assign_tag(session, dup, "vip", actor="user:li")
        await assign_tag(session, dup, "allergy", actor="user:li")
        await merge_members(session, dup, keep)
    async with db.session() as session:
        views = {v.code: v for v in await member_tags(session, keep)}
        assert await member_tags(session, dup) == []
        merge_in = (
            await session.scalars(select(MemberTagAudit).where(MemberTagAudit.action == "merge_in"))
        ).all()
    assert set(views) == {"vip", "allergy"}
    assert views["vip"].assigned_by == BOSS  # the survivor's own link is kept
    assert views["allergy"].assigned_by == "user:li"
    assert [(a.member_id, a.tag_code, a.actor) for a in merge_in] == [(keep, "allergy", f"merge:{dup}")]
    # deleting a tag takes it from everyone and leaves the trace in the audit
    async with db.session() as session, session.begin():
        await delete_tag(session, "allergy", actor=BOSS)
    assert await _tagged(db, "allergy") == set()
    async with db.session() as session:
        deleted = await session.scalar(select(func.count()).where(MemberTagAudit.action == "tag_deleted"))
    assert deleted == 1


async def test_high_value_rule_compares_with_the_source_store_or_the_chain(db):
    hv = await make_member(db, "13800000001", "north")
    regular = await make_member(db, "13800000002", "north")
    few = await make_member(db, "13800000003", "north")
    old = await make_member(db, "13800000004", "north")
    hq = await make_member(db, "13800000005", None)
    await add_orders(db, hv, [1, 2, 3], 6000)
    await add_orders(db, regular, [1, 2, 3], 1000)
    await add_orders(db, few, [1, 2], 1000)  # cheap, but only 2 visits anyway
    await add_orders(db, old, [40, 41, 42, 43, 44], 9000)  # outside the 30 days: neither counted nor averaged
    # north average: (18000 + 3000 + 2000) / 8 = 2875 fen; 150 % is 4312.5: hv qualifies.
    # hq registered at head office: the chain's average (41000 / 11 = 3727, 150 % = 5591) applies,
    # not the average of south where it bought (6000, 150 % = 9000).
    await add_orders(db, hq, [5, 6, 7], 6000, store="south")
    await _tag(db, "high-value", {"kind": "high_value", "days": 30, "min_visits": 3, "min_ticket_bp": 15000})
    assert await _tagged(db, "high-value") == {hv, hq}
    async with db.session() as session, session.begin():
        await update_tag(
            session,
            "high-value",
            {"rule": {"kind": "high_value", "days": 30, "min_visits": 3, "min_ticket_bp": 20000}},
            today=AS_OF,
        )
    # 200 %: north 5750 -> hv (6000) still; chain 7454 -> hq (6000) no longer
    assert await _tagged(db, "high-value") == {hv}


async def test_churn_risk_rule_needs_a_balance_and_no_recent_visit(db):
    quiet = await make_member(db, "13800000001")  # balance, never came
    gone = await make_member(db, "13800000002")  # balance, last visit 40 days ago
    active = await make_member(db, "13800000003")  # balance, came 10 days ago
    broke = await make_member(db, "13800000004")  # no balance
    async with db.session() as session, session.begin():
        for member_id in (quiet, gone, active):
            await topup(
                session, member_id, 5000, payment_method="cash", payment_reference=None, source=Source(BOSS)
            )
    await add_orders(db, gone, [40], 1000)
    await add_orders(db, active, [10], 1000)
    await add_orders(db, broke, [40], 1000)
    await _tag(db, "churn", {"kind": "churn_risk", "days": 30})
    assert await _tagged(db, "churn") == {quiet, gone}
    # members registered in the last 30 days are left out when the rule asks for it
    async with db.session() as session, session.begin():
        joined = datetime(AS_OF.year, AS_OF.month, AS_OF.day, tzinfo=UTC) - timedelta(days=3)
        await session.execute(update(Member).where(Member.id == quiet).values(created_at=joined))
        await session.execute(
            update(Member).where(Member.id != quiet).values(created_at=joined - timedelta(days=300))
        )
    await _tag(db, "churn-settled", {"kind": "churn_risk", "days": 30, "min_member_days": 30})
    assert await _tagged(db, "churn-settled") == {gone}


async def test_spent_rule_counts_net_spend_in_the_window_and_skips_merged(db):
    big = await make_member(db, "13800000001")
    small = await make_member(db, "13800000002")
    refunded = await make_member(db, "13800000003")
    dup = await make_member(db, "13800000004")
    await add_orders(db, big, [1, 2], 6000)
    await add_orders(db, small, [1], 6000)
    await add_orders(db, refunded, [1, 2], 6000, refunded=2500)  # 7000 net
    await add_orders(db, dup, [1, 2], 6000)
    async with db.session() as session, session.begin():
        await merge_members(session, dup, small)  # small now has 18000 fen
    await _tag(db, "spender", {"kind": "spent_at_least", "days": 30, "min_spend_fen": 10000})
    assert await _tagged(db, "spender") == {big, small}
    # a manual change of a rule tag is refused; a recompute replaces its members as of another day
    async with db.session() as session, session.begin():
        with pytest.raises(WrongTagKind):
            await assign_tag(session, refunded, "spender", actor=BOSS)
        counts = await evaluate_rule_tags(session, AS_OF + timedelta(days=60))
    assert counts == {"spender": 0}
    assert await _tagged(db, "spender") == set()


async def test_bad_rules_are_refused_with_the_field(db):
    for rule, field in (
        ({"kind": "high_value", "days": 30, "min_visits": 0, "min_ticket_bp": 15000}, "min_visits"),
        ({"kind": "churn_risk", "days": -1}, "days"),
        ({"kind": "spent_at_least", "days": 30}, "min_spend_fen"),
        ({"kind": "birthday"}, "kind"),
        ({"kind": "churn_risk", "days": 30, "extra": 1}, "extra"),
        ({"kind": "churn_risk", "days": "30"}, "days"),
    ):
        with pytest.raises(InvalidTag, match=field):
            async with db.session() as session, session.begin():
                await create_tag(session, "r", "R", actor=BOSS, rule=rule, today=AS_OF)
    assert await _count(db, MemberTag) == 0


async def test_search_by_tag_and_segment(db):
    tagged = await make_member(db, "13800000001")
    other = await make_member(db, "13800000002")
    await _tag(db, "vip")
    async with db.session() as session, session.begin():
        await assign_tag(session, tagged, "vip", actor=BOSS)
    await add_orders(db, tagged, [1], 1000)
    await add_orders(db, other, [200], 1000)
    await recompute_segments(db, AS_OF)
    async with db.session() as session:
        found, _ = await search_members(session, MemberQuery(tag="vip"), limit=10)
        assert [m.id for m in found] == [tagged]
        found, _ = await search_members(session, MemberQuery(segment="lost"), limit=10)
        assert [m.id for m in found] == [other]
        found, _ = await search_members(session, MemberQuery(segment="lost", tag="vip"), limit=10)
        assert found == []
        with pytest.raises(UnknownTag, match="nope"):
            await search_members(session, MemberQuery(tag="nope"), limit=10)
    with pytest.raises(UnknownSegment, match="segments are champions"):
        MemberQuery(segment="whales")


# --------------------------------------------------------------------------- API


@pytest.fixture
async def client(db, tmp_path):
    async with TestClient(TestServer(make_app(db, HubSettings(state_dir=tmp_path)))) as test_client:
        yield test_client


async def _headers(client, name: str, password: str) -> dict[str, str]:
    resp = await client.post("/api/v1/auth/token", json={"name": name, "password": password})
    assert resp.status == 201, await resp.text()
    return {"Authorization": f"Bearer {(await resp.json())['token']}"}


async def test_api_tags_crud_assign_and_refusals(client, db):
    boss = await _headers(client, "boss", "correct horse")
    li = await _headers(client, "li", "battery staple")
    mine = await make_member(db, "13800000001", "north")
    theirs = await make_member(db, "13800000002", "south")
    resp = await client.post(
        "/api/v1/member-tags", json={"code": "vip", "name": "贵宾", "color": "#FFAA00"}, headers=boss
    )
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["color"] == "#ffaa00"
    for body, status in (
        ({"code": "vip", "name": "again"}, 409),
        ({"code": "Bad!", "name": "x"}, 422),
        ({"code": "hv", "name": "x", "rule": {"kind": "high_value", "days": 30}}, 422),
        ({"code": "hv", "name": "x", "rule": {"kind": "churn_risk", "days": 0}}, 422),
        ({"code": "hv", "name": "x", "surprise": 1}, 422),
    ):
        resp = await client.post("/api/v1/member-tags", json=body, headers=boss)
        assert resp.status == status, (body, await resp.text())
    resp = await client.post("/api/v1/member-tags", json={"code": "x", "name": "x"}, headers=li)
    assert resp.status == 403  # the tag list is the chain's
    assert await _count(db, MemberTag) == 1

    resp = await client.put(f"/api/v1/members/{mine}/tags/vip", headers=li)
    assert resp.status == 201, await resp.text()
    assert [t["code"] for t in (await resp.json())["items"]] == ["vip"]
    assert (await client.put(f"/api/v1/members/{mine}/tags/vip", headers=li)).status == 200
    resp = await client.put(f"/api/v1/members/{mine}/tags/nope", headers=li)
    assert resp.status == 404
    assert "no tag 'nope'" in (await resp.json())["detail"]
    assert (await client.put(f"/api/v1/members/{theirs}/tags/vip", headers=li)).status == 404  # not in scope
    assert (await client.get(f"/api/v1/members/{theirs}/tags", headers=li)).status == 404
    assert await _tagged(db, "vip") == {mine}
    assert await _count(db, MemberTagAudit) == 1

    resp = await client.get("/api/v1/members?tag=vip", headers=boss)
    assert [m["id"] for m in (await resp.json())["items"]] == [mine]
    for query in ("tag=nope", "segment=whales"):
        resp = await client.get(f"/api/v1/members?{query}", headers=boss)
        assert resp.status == 400, query
    resp = await client.get("/api/v1/member-tags", headers=li)
    assert [(t["code"], t["members"]) for t in (await resp.json())["items"]] == [("vip", 1)]

    resp = await client.post(
        "/api/v1/member-tags",
        json={
            "code": "spender",
            "name": "大客户",
            "rule": {"kind": "spent_at_least", "days": 30, "min_spend_fen": 1},
        },
        headers=boss,
    )
    assert resp.status == 201
    assert (await client.put(f"/api/v1/members/{mine}/tags/spender", headers=boss)).status == 409
    resp = await client.patch("/api/v1/member-tags/spender", json={"rule": {"kind": "nope"}}, headers=boss)
    assert resp.status == 422
    async with db.session() as session:
        assert (await session.get(MemberTag, "spender")).rule["min_spend_fen"] == 1  # unchanged
    resp = await client.patch("/api/v1/member-tags/vip", json={"name": "VIP 客户"}, headers=boss)
    assert (await resp.json())["name"] == "VIP 客户"

    resp = await client.delete(f"/api/v1/members/{mine}/tags/vip", headers=li)
    assert (await resp.json())["removed"] is True
    resp = await client.get(f"/api/v1/members/{mine}/tag-history", headers=li)
    assert [(e["action"], e["actor"]) for e in (await resp.json())["items"]] == [
        ("unassign", "user:li"),
        ("assign", "user:li"),
    ]
    assert (await client.delete("/api/v1/member-tags/vip", headers=li)).status == 403
    assert (await client.delete("/api/v1/member-tags/vip", headers=boss)).status == 204
    assert (await client.get("/api/v1/member-tags/vip", headers=boss)).status == 404


async def test_api_segments_recompute_and_profile(client, db):
    boss = await _headers(client, "boss", "correct horse")
    li = await _headers(client, "li", "battery staple")
    north = await make_member(db, "13800000001", "north")
    south = await make_member(db, "13800000002", "south")
    await add_orders(db, north, [1, 2], 1000)
    await add_orders(db, south, [300], 1000)
    async with db.session() as session, session.begin():  # closed 12:30 China time, a catalog with a category
        await session.execute(
            update(MemberOrder)
            .where(MemberOrder.member_id == north)
            .values(
                closed_at=datetime(2026, 6, 29, 4, 30, tzinfo=UTC),
                items=[
                    {"sku": "LATTE", "qty": "1", "total_fen": 700},
                    {"sku": "BAGEL", "qty": "1", "total_fen": 300},
                ],
            )
        )
        session.add(
            StoreSnapshot(
                store="north",
                kind="catalog",
                version=1,
                body={"products": [{"sku": "LATTE", "category": "coffee"}]},
                published_at=datetime.now(UTC),
            )
        )
    resp = await client.post("/api/v1/member-segments/recompute", json={"as_of": "2026-06-30"}, headers=li)
    assert resp.status == 403
    resp = await client.post(
        "/api/v1/member-segments/recompute", json={"as_of": "2026-06-30", "window_days": 0}, headers=boss
    )
    assert resp.status == 422
    resp = await client.post("/api/v1/member-segments/recompute", json={"as_of": "2026-06-30"}, headers=boss)
    assert resp.status == 200, await resp.text()
    done = await resp.json()
    # two members: ranks 1 and 2 score 1 and 1 + 5 * 1 // 2 = 3. north R3 F3 M3, south R1 F1 M1
    assert (done["scored"], done["segments"]["need_attention"], done["segments"]["lost"]) == (2, 1, 1)
    resp = await client.get("/api/v1/member-segments", headers=li)
    summary = await resp.json()
    assert (summary["scored"], summary["segments"]["need_attention"], summary["as_of"]) == (
        1,
        1,
        "2026-06-30",
    )
    resp = await client.get("/api/v1/members?segment=need_attention", headers=boss)
    assert [m["id"] for m in (await resp.json())["items"]] == [north]

    resp = await client.get(f"/api/v1/members/{north}/profile?as_of=2026-06-30", headers=li)
    assert resp.status == 200, await resp.text()
    profile = await resp.json()
    assert profile["segment"]["segment"] == "need_attention"
    assert (profile["segment"]["recency_days"], profile["segment"]["monetary_fen"]) == (1, 2000)
    prefs = profile["preferences"]
    assert prefs["orders"] == 2
    assert prefs["top_categories"] == [{"category": "coffee", "spend_fen": 1400, "orders": 2}]
    assert [(s["sku"], s["spend_fen"]) for s in prefs["top_skus"]] == [("LATTE", 1400), ("BAGEL", 600)]
    assert (prefs["usual_time"], prefs["hours"]["lunch"]) == ("lunch", 2)
    assert (prefs["weekdays"]["sunday"], prefs["weekdays"]["monday"]) == (1, 1)
    assert prefs["usual_weekday"] == "monday"  # a tie goes to the earlier weekday
    assert (await client.get(f"/api/v1/members/{south}/profile", headers=li)).status == 404
    assert (await client.get(f"/api/v1/members/{north}/profile?as_of=junk", headers=li)).status == 400

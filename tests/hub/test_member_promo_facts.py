"""The member view the till gets on lookup carries the facts promotions need: segments and today's uses."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from edge.members import order_member
from hub.db import Database, migrate
from hub.ingest import ingest_batch
from hub.member_segments import member_segment, recompute_rfm
from hub.member_tags import assign_tag, create_tag
from hub.members import MemberFields, create_member
from hub.rpc import RpcServer
from hub.stores import add_store
from protocol import Event, EventBatch, RpcRequest, business_day
from protocol.promotion_rules import Cart, CartLine, RuleSet
from protocol.promotions import evaluate

ZONE = "Asia/Shanghai"


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    for store in ("shop-1", "shop-2"):
        await add_store(database, store)
    yield database
    await database.close()


def _paid(seq: int, store: str, member_id: str, day: str, rule_ids: list[str]) -> Event:
    now = datetime.now(UTC)
    body = {
        "id": str(uuid.UUID(int=seq)),
        "store": store,
        "number": seq,
        "business_day": day,
        "status": "paid",
        "member_id": member_id,
        "total_fen": 900,
        "closed_at": now.isoformat(),
        "lines": [{"line_id": "l1", "sku": "DRK-002", "qty": "3", "total_fen": 900}],
        "promotions": [
            {"rule_id": r, "name": r, "kind": "percent_off", "saving_fen": 10, "applications": 1}
            for r in rule_ids
        ],
    }
    return Event(id=uuid.uuid4(), seq=seq, type="order.paid", ts=now, body=body)


async def _ingest(db: Database, store: str, events: list[Event]) -> None:
    batch = EventBatch(store=store, epoch=1, seq_from=events[0].seq, seq_to=events[-1].seq, events=events)
    await ingest_batch(db, store, batch)


async def _lookup(db: Database, phone: str, store: str = "shop-1") -> dict:
    request = RpcRequest(
        id=uuid.uuid4(),
        method="member.lookup",
        params={"phone": phone},
        deadline=datetime.now(UTC) + timedelta(seconds=3),
    )
    reply = await RpcServer(db).handle(store, request)
    assert reply.ok, reply.error
    return reply.result


async def test_lookup_sends_segment_tags_and_todays_uses_across_stores(db):
    async with db.session() as session, session.begin():
        member = (await create_member(session, MemberFields("13812345678", channel="till"))).id
        other = (await create_member(session, MemberFields("13912345678", channel="till"))).id
    fresh = await _lookup(db, "13812345678")
    assert (fresh["segments"], fresh["promotion_uses_today"]) == ([], {})

    today = business_day(datetime.now(UTC), ZONE)
    yesterday = (today - timedelta(days=1)).isoformat()
    await _ingest(
        db,
        "shop-1",
        [
            _paid(1, "shop-1", member, today.isoformat(), ["daily", "mj50"]),
            _paid(2, "shop-1", member, yesterday, ["daily"]),  # another day: not today's use
            _paid(3, "shop-1", other, today.isoformat(), ["daily"]),  # another member
        ],
    )
    await _ingest(db, "shop-2", [_paid(4, "shop-2", member, today.isoformat(), ["daily"])])
    async with db.session() as session, session.begin():
        await create_tag(session, "coffee-lover", "咖啡控", actor="user:t", today=today)
        await assign_tag(session, member, "coffee-lover", actor="user:t")
        assert await recompute_rfm(session, today) == 2
        stored = await member_segment(session, member)
    assert stored is not None

    view = await _lookup(db, "13812345678", store="shop-2")
    assert view["segments"] == [stored.segment, "coffee-lover"]
    assert view["promotion_uses_today"] == {"daily": 2, "mj50": 1}  # both stores, today only
    assert (await _lookup(db, "13912345678"))["promotion_uses_today"] == {"daily": 1}


async def test_the_till_prices_with_the_facts_the_hub_sent(db):
    """Through the edge's reading of the view: a segment rule applies, a used-up daily cap does not."""
    async with db.session() as session, session.begin():
        member = (await create_member(session, MemberFields("13812345678", channel="till"))).id
    today = business_day(datetime.now(UTC), ZONE)
    await _ingest(db, "shop-2", [_paid(1, "shop-2", member, today.isoformat(), ["daily"])])
    async with db.session() as session, session.begin():
        await create_tag(session, "vip", "VIP", actor="user:t", today=today)
        await assign_tag(session, member, "vip", actor="user:t")

    kept = order_member(await _lookup(db, "13812345678"))
    assert kept.segments == ["vip"]
    assert kept.promotion_uses_today == {"daily": 1}
    rules = RuleSet.model_validate(
        {
            "version": 1,
            "rules": [
                {
                    "kind": "percent_off",
                    "id": "vip",
                    "name": "VIP 8折",
                    "off_bp": 2000,
                    "member_segments": ["vip"],
                },
                {
                    "kind": "amount_off",
                    "id": "daily",
                    "name": "每日一次立减",
                    "amount_fen": 50,
                    "per_member_daily_limit": 1,
                },
            ],
        }
    )
    cart = Cart(
        store="shop-1",
        local_time=datetime.now(UTC),
        member_id=kept.id,
        member_segments=kept.segments,
        member_uses_today=kept.promotion_uses_today,
        lines=[CartLine(line_id="l1", sku="DRK-002", qty="1", unit_price_fen=300, total_fen=300)],
    )
    result = evaluate(rules, cart)
    assert [r.rule_id for r in result.applied] == ["vip"]  # the daily cap was used at shop-2 today
    assert result.total_fen == 240

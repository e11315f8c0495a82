"""Member-sales facts from ingest: one row per paid member order, refunds added once, merges followed."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import select

from hub.db import Database, migrate
from hub.ingest import ingest_batch
from hub.member_facts import MemberOrder
from hub.members import MemberFields, create_member, merge_members
from hub.stores import add_store
from protocol import Event, EventBatch

TS = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    await add_store(database, "shop-1")
    yield database
    await database.close()


def _order_id(seq: int) -> str:
    return str(uuid.UUID(int=seq))


def paid(seq: int, total: int, member_id: str | None) -> Event:
    body = {
        "id": _order_id(seq),
        "store": "shop-1",
        "number": seq,
        "business_day": "2026-11-23",
        "status": "paid",
        "member_id": member_id,
        "total_fen": total,
        "closed_at": TS.isoformat(),
        "lines": [
            {"line_id": "l1", "sku": "DRK-002", "qty": "2", "total_fen": total - 100},
            {"line_id": "l2", "sku": "BRD-001", "qty": "0.352", "total_fen": 100},
        ],
    }
    return Event(id=uuid.uuid4(), seq=seq, type="order.paid", ts=TS, body=body)


def refunded(seq: int, order_seq: int, amount: int) -> Event:
    body = {
        "order_id": _order_id(order_seq),
        "store": "shop-1",
        "business_day": "2026-11-24",
        "refund": {"id": str(uuid.UUID(int=10_000 + seq)), "total_fen": amount},
    }
    return Event(id=uuid.uuid4(), seq=seq, type="order.refunded", ts=TS, body=body)


def batch(events: list[Event], epoch: int = 1) -> EventBatch:
    return EventBatch(
        store="shop-1", epoch=epoch, seq_from=events[0].seq, seq_to=events[-1].seq, events=events
    )


async def _member(db, phone: str) -> str:
    async with db.session() as session, session.begin():
        return (await create_member(session, MemberFields(phone, channel="till"))).id


async def _facts(db) -> list[tuple]:
    async with db.session() as session:
        rows = await session.scalars(select(MemberOrder).order_by(MemberOrder.order_id))
        return [(r.order_id, r.member_id, r.total_fen, r.refunded_fen, r.business_day) for r in rows]


async def test_member_orders_count_once_however_often_they_arrive(db):
    member = await _member(db, "13812345678")
    events = [paid(1, 1500, member), paid(2, 800, None), paid(3, 2600, member), refunded(4, 3, 600)]
    for _ in range(3):
        await ingest_batch(db, "shop-1", batch(events[:2]))
        await ingest_batch(db, "shop-1", batch(events[2:]))
    await ingest_batch(db, "shop-1", batch([refunded(5, 3, 400)]))
    await ingest_batch(db, "shop-1", batch([refunded(5, 3, 400)]))
    assert await _facts(db) == [
        (_order_id(1), member, 1500, 0, date(2026, 11, 23)),
        (_order_id(3), member, 2600, 1000, date(2026, 11, 23)),
    ]
    async with db.session() as session:
        row = await session.get(MemberOrder, _order_id(1))
    assert row.items == [
        {"sku": "DRK-002", "qty": "2", "total_fen": 1400},
        {"sku": "BRD-001", "qty": "0.352", "total_fen": 100},
    ]
    assert row.closed_at == TS


async def test_a_refund_that_arrives_before_its_order_still_counts_once(db):
    member = await _member(db, "13812345678")
    # the refund was re-sent under a new epoch and processed before the order's batch
    await ingest_batch(db, "shop-1", batch([refunded(1, 7, 300)], epoch=2))
    await ingest_batch(db, "shop-1", batch([paid(7, 1000, member), refunded(8, 7, 200)], epoch=1))
    assert await _facts(db) == [(_order_id(7), member, 1000, 500, date(2026, 11, 23))]


async def test_orders_of_a_merged_member_count_for_the_survivor(db):
    keep = await _member(db, "13800000001")
    dup = await _member(db, "13800000002")
    await ingest_batch(db, "shop-1", batch([paid(1, 500, dup)]))
    async with db.session() as session, session.begin():
        await merge_members(session, dup, keep)
    # a till that cached the old id sells offline and syncs later
    await ingest_batch(db, "shop-1", batch([paid(2, 700, dup), paid(3, 900, "not-a-member-here")]))
    assert [(r[0], r[1]) for r in await _facts(db)] == [
        (_order_id(1), keep),
        (_order_id(2), keep),
        (_order_id(3), "not-a-member-here"),
    ]

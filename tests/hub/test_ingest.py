"""Hub ingest: exactly-once effect whatever the delivery order and count (SQLite and PostgreSQL)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from hub.db import Database, migrate
from hub.ingest import ingest_batch
from hub.models import HubOrder, HubRefund, Reconciliation, StoreEvent
from hub.stores import add_store
from protocol import DecodeError, Event, EventBatch

TS = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    await add_store(database, "shop-1")
    await add_store(database, "shop-2")
    yield database
    await database.close()


def paid(seq: int, total: int, store: str = "shop-1", order_id: str | None = None) -> Event:
    order_id = order_id or str(uuid.UUID(int=seq))
    body = {
        "id": order_id,
        "store": store,
        "number": seq,
        "business_day": "2026-11-23",
        "status": "paid",
        "total_fen": total,
        "closed_at": TS.isoformat(),
        "lines": [{"sku": "DRK-002", "total_fen": total}],
    }
    return Event(id=uuid.uuid4(), seq=seq, type="order.paid", ts=TS, body=body)


def refunded(seq: int, order_seq: int, amount: int) -> Event:
    body = {
        "order_id": str(uuid.UUID(int=order_seq)),
        "store": "shop-1",
        "business_day": "2026-11-23",
        "refund": {"id": str(uuid.uuid4()), "total_fen": amount},
    }
    return Event(id=uuid.uuid4(), seq=seq, type="order.refunded", ts=TS, body=body)


def batch(events: list[Event], epoch: int = 7, store: str = "shop-1") -> EventBatch:
    return EventBatch(store=store, epoch=epoch, seq_from=events[0].seq, seq_to=events[-1].seq, events=events)


async def _totals(db) -> tuple[int, int, int, int]:
    async with db.session() as session:
        orders = await session.scalar(select(func.count()).select_from(HubOrder))
        gross = await session.scalar(select(func.coalesce(func.sum(HubOrder.total_fen), 0)))
        refunds = await session.scalar(select(func.coalesce(func.sum(HubRefund.total_fen), 0)))
        events = await session.scalar(select(func.count()).select_from(StoreEvent))
    return int(orders), int(gross), int(refunds), int(events)


async def test_every_batch_three_times_in_random_order_equals_one_delivery(db):
    events = [paid(seq, 100 * seq) for seq in range(1, 61)]
    events[30] = refunded(31, 5, 250)
    batches = [batch(events[i : i + 7]) for i in range(0, 60, 7)]
    deliveries = batches * 3
    random.Random(4).shuffle(deliveries)
    last = None
    for b in deliveries:
        last = await ingest_batch(db, "shop-1", b)
    assert last is not None
    assert last.acked_through == 60
    gross = sum(100 * s for s in range(1, 61) if s != 31)
    assert await _totals(db) == (59, gross, 250, 60)


async def test_ack_stops_at_a_gap_and_moves_when_it_closes(db):
    first = await ingest_batch(db, "shop-1", batch([paid(1, 100), paid(2, 100)]))
    assert (first.acked_through, first.gap) == (2, False)
    ahead = await ingest_batch(db, "shop-1", batch([paid(5, 100)]))
    assert (ahead.acked_through, ahead.gap) == (2, True)
    filled = await ingest_batch(db, "shop-1", batch([paid(3, 100), paid(4, 100)]))
    assert (filled.acked_through, filled.gap) == (5, False)


async def test_epochs_keep_their_own_seqs_and_an_order_resent_under_a_new_epoch_counts_once(db):
    order = paid(1, 500, order_id="0192f7a0-0000-7000-8000-000000000001")
    await ingest_batch(db, "shop-1", batch([order], epoch=7))
    again = Event(id=uuid.uuid4(), seq=1, type="order.paid", ts=TS, body=order.body)
    result = await ingest_batch(db, "shop-1", batch([again], epoch=8))
    assert result.acked_through == 1
    orders, gross, _, events = await _totals(db)
    assert (orders, gross, events) == (1, 500, 2)


async def test_same_key_different_body_goes_to_reconciliation_and_is_not_overwritten(db):
    await ingest_batch(db, "shop-1", batch([paid(1, 100)]))
    result = await ingest_batch(db, "shop-1", batch([paid(1, 999)]))
    assert (result.conflicts, result.acked_through) == (1, 1)
    assert (await _totals(db))[1] == 100
    async with db.session() as session:
        rows = (await session.scalars(select(Reconciliation))).all()
    assert [(r.kind, r.key) for r in rows] == [("seq", "7:1")]
    assert rows[0].incoming["body"]["total_fen"] == 999


async def test_unusable_event_body_is_kept_for_reconciliation_and_still_acked(db):
    broken = Event(id=uuid.uuid4(), seq=1, type="order.paid", ts=TS, body={"id": "x", "total_fen": "lots"})
    result = await ingest_batch(db, "shop-1", batch([broken, paid(2, 300)]))
    assert result.acked_through == 2
    async with db.session() as session:
        kinds = [r.kind for r in (await session.scalars(select(Reconciliation))).all()]
    assert kinds == ["invalid"]


async def test_batch_for_another_store_is_rejected(db):
    with pytest.raises(DecodeError, match="does not match"):
        await ingest_batch(db, "shop-2", batch([paid(1, 100)]))
    order_for_other = paid(1, 100, store="shop-2")
    result = await ingest_batch(db, "shop-1", batch([order_for_other]))
    assert result.conflicts == 1  # the body names another store: kept aside, not booked
    assert (await _totals(db))[0] == 0

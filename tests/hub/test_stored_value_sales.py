"""Stored value given back by the sale listener: refunds to the same buckets, voids, offline
payments with their shortfall flag, refunds that arrive before their order; each exactly
once under triple delivery through ingest (SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from hub.db import Database, migrate
from hub.ingest import ingest_batch
from hub.members import MemberFields, create_member
from hub.rpc import RpcServer
from hub.stored_value import save_rules, stored_value_balances
from hub.stored_value_office import adjust
from hub.stored_value_rules import BonusRules, SpendingOrder
from hub.stored_value_tables import LedgerEntry, PendingRefund, ReconciliationFlag
from hub.stores import add_store
from protocol import Event, EventBatch, RpcRequest

TS = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    await add_store(database, "shop-1")
    yield database
    await database.close()


@pytest.fixture
async def member(db) -> str:
    async with db.session() as session, session.begin():
        member_id = (await create_member(session, MemberFields("13900000009", channel="till"))).id
        await save_rules(session, BonusRules(spending_order=SpendingOrder.PROPORTIONAL), actor="user:test")
        await adjust(session, member_id, 10000, 3000, actor="user:test", reason="opening balance")
    return member_id


class Till:
    """Numbers the store's events like an edge's outbox and delivers each batch three times."""

    def __init__(self, db: Database):
        self.db, self.seq = db, 0

    def event(self, kind: str, body: dict) -> Event:
        self.seq += 1
        return Event(id=uuid.uuid4(), seq=self.seq, type=kind, ts=TS, body=body)

    async def send(self, *events: Event, times: int = 3) -> None:
        batch = EventBatch(
            store="shop-1", epoch=1, seq_from=events[0].seq, seq_to=events[-1].seq, events=list(events)
        )
        for _ in range(times):
            await ingest_batch(self.db, "shop-1", batch)


def _tender(index: int, method: str, amount: int, reference: str | None) -> dict:
    return {
        "index": index,
        "method": method,
        "amount_fen": amount,
        "tendered_fen": amount,
        "reference": reference,
        "ts": TS.isoformat(),
        "staff_id": "s1",
    }


def _order(order_id: str, member_id: str | None, tenders: list[dict], status: str = "paid") -> dict:
    total = sum(t["amount_fen"] for t in tenders)
    return {
        "id": order_id,
        "store": "shop-1",
        "number": 1,
        "business_day": "2026-11-23",
        "status": status,
        "member_id": member_id,
        "total_fen": total,
        "closed_at": TS.isoformat(),
        "lines": [{"sku": "CUT-1", "total_fen": total}],
        "tenders": tenders,
    }


def _refund(order_id: str, parts: dict[int, int]) -> dict:
    return {
        "order_id": order_id,
        "store": "shop-1",
        "business_day": "2026-11-23",
        "refund": {
            "id": str(uuid.uuid4()),
            "total_fen": sum(parts.values()),
            "reason": "customer changed mind",
            "tenders": {str(k): v for k, v in parts.items()},
        },
    }


async def _debit(db: Database, member_id: str, order_id: str, amount: int) -> dict:
    reply = await RpcServer(db).handle(
        "shop-1",
        RpcRequest(
            id=uuid.uuid4(),
            method="stored_value.debit",
            params={"member_id": member_id, "order_id": order_id, "amount_fen": amount},
            deadline=datetime.now(UTC) + timedelta(seconds=30),
            idempotency_key=f"{order_id}:0",
        ),
    )
    assert reply.ok, reply.error
    return reply.result


async def _balance(db, member_id) -> tuple[int, int]:
    async with db.session() as session:
        return await stored_value_balances(session, member_id)


async def _entries(db, kind: str) -> list[LedgerEntry]:
    async with db.session() as session:
        return list((await session.scalars(select(LedgerEntry).where(LedgerEntry.kind == kind))).all())


async def _flags(db) -> list[ReconciliationFlag]:
    async with db.session() as session:
        return list((await session.scalars(select(ReconciliationFlag).order_by(ReconciliationFlag.id))).all())


async def test_partial_refunds_return_exact_buckets_once(db, member):
    order_id = str(uuid.uuid4())
    debit = await _debit(db, member, order_id, 3000)
    assert (debit["principal_fen"], debit["bonus_fen"]) == (2308, 692)
    till = Till(db)
    doc = _order(
        order_id, member, [_tender(0, "stored_value", 3000, debit["txn_id"]), _tender(1, "cash", 2000, None)]
    )
    await till.send(till.event("order.paid", doc))
    assert await _balance(db, member) == (7692, 2308)
    # three partial refunds, each delivered three times: 1000 + 1000 + 1000 of the stored-value tender
    for parts in ({0: 1000, 1: 500}, {0: 1000}, {0: 1000, 1: 1500}):
        await till.send(till.event("order.refunded", _refund(order_id, parts)))
    returns = await _entries(db, "refund_return")
    assert len(returns) == 3
    assert sum(r.principal_delta_fen for r in returns) == 2308
    assert sum(r.bonus_delta_fen for r in returns) == 692
    assert all(r.debit_id == debit["txn_id"] and r.refund_id for r in returns)
    assert await _balance(db, member) == (10000, 3000)
    # one fen more than the debit took is not returned, and is flagged
    await till.send(till.event("order.refunded", _refund(order_id, {0: 1})))
    assert await _balance(db, member) == (10000, 3000)
    assert [f.kind for f in await _flags(db)] == ["over_refund"]


async def test_a_voided_order_returns_its_whole_debit_once(db, member):
    order_id = str(uuid.uuid4())
    debit = await _debit(db, member, order_id, 1300)
    till = Till(db)
    doc = _order(order_id, member, [_tender(0, "stored_value", 1300, debit["txn_id"])], status="voided")
    await till.send(till.event("order.voided", doc))
    assert await _balance(db, member) == (10000, 3000)
    returns = await _entries(db, "void_return")
    assert [(r.principal_delta_fen, r.bonus_delta_fen, r.tender_index) for r in returns] == [(1000, 300, 0)]


async def test_an_offline_payment_is_charged_once_and_its_shortfall_flagged(db, member):
    order_id = str(uuid.uuid4())
    till = Till(db)
    doc = _order(order_id, member, [_tender(0, "stored_value", 15000, "offline:till-1:0007")])
    await till.send(till.event("order.paid", doc))
    assert await _balance(db, member) == (0, 0)
    [entry] = await _entries(db, "offline_debit")
    assert (entry.principal_delta_fen, entry.bonus_delta_fen, entry.shortfall_fen) == (-10000, -3000, 2000)
    [flag] = await _flags(db)
    assert (flag.kind, flag.shortfall_fen, flag.member_id, flag.resolved) == (
        "offline_shortfall",
        2000,
        member,
        False,
    )
    # a refund first cancels what the member owed, then gives back to the buckets
    await till.send(till.event("order.refunded", _refund(order_id, {0: 1500})))
    assert await _balance(db, member) == (0, 0)
    await till.send(till.event("order.refunded", _refund(order_id, {0: 1500})))
    [flag] = await _flags(db)
    assert (flag.covered_fen, flag.resolved) == (2000, True)
    assert sum(await _balance(db, member)) == 1000


async def test_offline_payment_of_an_unknown_member_is_flagged_not_charged(db, member):
    till = Till(db)
    doc = _order(str(uuid.uuid4()), "no-such-member", [_tender(0, "stored_value", 500, "offline:x")])
    await till.send(till.event("order.paid", doc))
    assert [(f.kind, f.shortfall_fen) for f in await _flags(db)] == [("offline_no_member", 500)]
    assert await _balance(db, member) == (10000, 3000)


async def test_a_refund_that_arrives_before_its_order_waits_for_it(db, member):
    order_id = str(uuid.uuid4())
    debit = await _debit(db, member, order_id, 2000)
    till = Till(db)
    paid = till.event(
        "order.paid", _order(order_id, member, [_tender(0, "stored_value", 2000, debit["txn_id"])])
    )
    refund = till.event("order.refunded", _refund(order_id, {0: 2000}))
    await till.send(refund)  # seq 2 before seq 1: held above the gap, but applied in full
    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(PendingRefund)) == 1
    assert sum(await _balance(db, member)) == 11000
    await till.send(paid)
    assert await _balance(db, member) == (10000, 3000)
    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(PendingRefund)) == 0


async def test_tenders_and_debits_that_do_not_match_are_flagged(db, member):
    order_id = str(uuid.uuid4())
    stray = await _debit(db, member, order_id, 100)  # debited, but the till paid another way
    till = Till(db)
    doc = _order(
        order_id, member, [_tender(0, "stored_value", 700, "not-a-txn"), _tender(1, "cash", 100, None)]
    )
    await till.send(till.event("order.paid", doc))
    flags = {f.kind: f for f in await _flags(db)}
    assert set(flags) == {"unmatched_reference", "debit_not_in_order"}
    assert flags["debit_not_in_order"].debit_id == stray["txn_id"]
    assert flags["unmatched_reference"].shortfall_fen == 700

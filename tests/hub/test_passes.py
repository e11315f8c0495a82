"""Punch cards and passes: issued once per sale, used under concurrency without going below
zero, refused clearly with no change, reversed, transferred, revoked on refund (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from hub.db import Database, migrate
from hub.ingest import ingest_batch
from hub.members import MERGE_HOOKS, MemberFields, create_member
from hub.passes import (
    PassError,
    ProductSpec,
    create_product,
    get_pass,
    issue_manual,
    passes_of,
)
from hub.passes_consume import consume, reverse_use
from hub.passes_lifecycle import expire_passes, transfer_pass
from hub.passes_merge import move_passes
from hub.passes_models import Pass, PassFlag, PassLedger
from hub.rpc import RpcServer
from hub.snapshots import save_snapshot
from hub.stores import add_store
from protocol import Event, EventBatch, RpcRequest, SnapshotKind

TS = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai, business day 2026-03-01


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    await add_store(database, "shop-1")
    await add_store(database, "shop-2")
    yield database
    await database.close()


async def _member(db: Database, phone: str) -> str:
    async with db.session() as session, session.begin():
        return (await create_member(session, MemberFields(phone, channel="hub"))).id


async def _product(db: Database, code: str, **terms) -> None:
    spec = {"name": code, "kind": "count", "sale_sku": f"SELL-{code}", "covers_skus": ["FACIAL"], "uses": 10}
    spec.update(terms)
    async with db.session() as session, session.begin():
        await create_product(session, code, ProductSpec.model_validate(spec))


async def _issue(db: Database, code: str, member: str, now: datetime = TS) -> str:
    async with db.session() as session, session.begin():
        issued = await issue_manual(session, code, member, actor="user:test", reason="test", now=now)
        return issued[0].id


async def _pass(db: Database, pass_id: str) -> Pass:
    async with db.session() as session:
        return await get_pass(session, pass_id)


async def _ledger_sum(db: Database, pass_id: str) -> tuple[int, int]:
    async with db.session() as session:
        total = await session.scalar(select(func.sum(PassLedger.uses)).where(PassLedger.pass_id == pass_id))
        rows = await session.scalar(select(func.count()).where(PassLedger.pass_id == pass_id))
    return int(total or 0), int(rows or 0)


async def _flags(db: Database) -> list[PassFlag]:
    async with db.session() as session:
        return list((await session.scalars(select(PassFlag).order_by(PassFlag.id))).all())


def _rpc(method: str, params: dict, key: str | None = None) -> RpcRequest:
    deadline = datetime.now(UTC) + timedelta(seconds=30)
    return RpcRequest(id=uuid.uuid4(), method=method, params=params, deadline=deadline, idempotency_key=key)


# --------------------------------------------------------------------------- product terms


@pytest.mark.parametrize(
    ("terms", "message"),
    [
        ({"covers_skus": []}, "at least one service"),
        ({"uses": None}, "needs uses"),
        ({"kind": "period"}, "leave uses out"),
        ({"kind": "period", "uses": None}, "needs valid_days or valid_until"),
        ({"kind": "count_in_period"}, "needs valid_days or valid_until"),
        ({"valid_days": 30, "valid_until": "2026-12-31"}, "not both"),
        ({"covers_skus": ["SELL"]}, "cannot also be a service"),
        ({"uses": 0}, "greater than or equal to 1"),
        ({"daily_limit": 0}, "greater than or equal to 1"),
        ({"covers_skus": ["A", "A"]}, "twice"),
        ({"sale_sku": "has space"}, "pattern"),
        ({"kind": "lifetime"}, "count"),
        ({"price_fen": 100}, "Extra inputs"),
    ],
)
def test_nonsense_product_terms_are_refused(terms, message):
    spec = {"name": "疗程10次", "kind": "count", "sale_sku": "SELL", "covers_skus": ["FACIAL"], "uses": 10}
    spec.update(terms)
    with pytest.raises(ValidationError, match=message):
        ProductSpec.model_validate(spec)


# --------------------------------------------------------------------------- issuing from sales


def _order(seq: int, member: str | None, qty: str = "2", sku: str = "SELL-FACIAL10") -> dict:
    return {
        "id": str(uuid.UUID(int=seq)),
        "store": "shop-1",
        "number": seq,
        "business_day": "2026-03-01",
        "status": "paid",
        "total_fen": 198000,
        "closed_at": TS.isoformat(),
        "member_id": member,
        "lines": [
            {"line_id": "l1", "sku": sku, "qty": qty, "total_fen": 198000},
            {"line_id": "l2", "sku": "WATER", "qty": "1", "total_fen": 300},
        ],
    }


def _paid(seq: int, order: dict) -> Event:
    return Event(id=uuid.uuid4(), seq=seq, type="order.paid", ts=TS, body=order)


def _refunded(seq: int, order_seq: int, qty: str, amount: int) -> Event:
    body = {
        "order_id": str(uuid.UUID(int=order_seq)),
        "store": "shop-1",
        "business_day": "2026-03-02",
        "refund": {
            "id": str(uuid.uuid4()),
            "total_fen": amount,
            "lines": [{"line_id": "l1", "qty": qty, "amount_fen": amount}],
            "tenders": {"0": amount},
        },
    }
    return Event(id=uuid.uuid4(), seq=seq, type="order.refunded", ts=TS, body=body)


def _batch(events: list[Event]) -> EventBatch:
    return EventBatch(store="shop-1", epoch=1, seq_from=events[0].seq, seq_to=events[-1].seq, events=events)


async def test_a_sale_delivered_three_times_issues_one_pass_per_unit_once(db):
    member = await _member(db, "13800000001")
    await _product(db, "FACIAL10", valid_days=365)
    order = _order(1, member)
    event = _paid(1, order)
    for _ in range(3):
        await ingest_batch(db, "shop-1", _batch([event]))
    async with db.session() as session:
        held = await passes_of(session, member)
    assert len(held) == 2
    assert {p["remaining"] for p in held} == {10}
    assert all(p["order_id"] == order["id"] and p["store"] == "shop-1" for p in held)
    # Bought 2026-03-01 in Shanghai, 365 days counting the day of purchase: through 2027-02-28.
    assert held[0]["expires_at"] == "2027-02-28T16:00:00.000000Z"
    assert await _ledger_sum(db, held[0]["pass_id"]) == (10, 1)
    assert await _flags(db) == []


async def test_a_pass_sold_without_a_member_is_flagged_not_lost(db):
    await _product(db, "FACIAL10")
    await ingest_batch(db, "shop-1", _batch([_paid(1, _order(1, None, qty="1"))]))
    await ingest_batch(db, "shop-1", _batch([_paid(2, _order(2, "no-such-member", qty="1"))]))
    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Pass)) == 0
    assert [f.kind for f in await _flags(db)] == ["sold_without_member", "unknown_member"]


async def test_refund_revokes_the_unused_pass_first_and_flags_a_used_one(db):
    member = await _member(db, "13800000001")
    await _product(db, "FACIAL10")
    await ingest_batch(db, "shop-1", _batch([_paid(1, _order(1, member))]))
    async with db.session() as session, session.begin():
        taken = await consume(session, "shop-1", member, "FACIAL", now=TS)
    used_id = taken["pass_id"]
    # Refund one of the two cards: the untouched one goes, nothing to look at.
    await ingest_batch(db, "shop-1", _batch([_refunded(2, 1, "1", 99000)]))
    assert await _flags(db) == []
    async with db.session() as session:
        left = await passes_of(session, member)
    assert [p["pass_id"] for p in left] == [used_id]
    # Refund the other (3 of 10 used): revoked at once, flagged with what the unused uses were worth.
    for _ in range(2):
        async with db.session() as session, session.begin():
            await consume(session, "shop-1", member, "FACIAL", now=TS)
    event = _refunded(3, 1, "1", 80000)
    for _ in range(3):
        await ingest_batch(db, "shop-1", _batch([event]))
    revoked = await _pass(db, used_id)
    assert (revoked.status, revoked.remaining, revoked.used) == ("revoked", 0, 3)
    assert await _ledger_sum(db, used_id) == (0, 5)  # issue, 3 uses, revoke
    [flagged] = await _flags(db)
    assert flagged.kind == "refund_after_use"
    assert flagged.pass_id == used_id
    assert flagged.detail == {
        "name": "FACIAL10",
        "uses_taken": 3,
        "total_uses": 10,
        "price_fen": 99000,
        "refunded_fen": 80000,
        "unused_value_fen": 69300,
    }
    async with db.session() as session:
        assert await passes_of(session, member) == []
        with pytest.raises(PassError, match="no active pass"):
            await consume(session, "shop-1", member, "FACIAL", now=TS)


async def test_a_refund_synced_before_its_order_issues_only_what_was_kept(db):
    member = await _member(db, "13800000001")
    await _product(db, "FACIAL10")
    # Epoch 2 (a re-imaged till) sent the refund; the sale of epoch 1 arrives later.
    refund = _refunded(1, 1, "1", 99000)
    await ingest_batch(
        db, "shop-1", EventBatch(store="shop-1", epoch=2, seq_from=1, seq_to=1, events=[refund])
    )
    await ingest_batch(db, "shop-1", _batch([_paid(1, _order(1, member))]))
    async with db.session() as session:
        assert len(await passes_of(session, member)) == 1


# --------------------------------------------------------------------------- consumption


async def test_concurrent_uses_never_take_more_than_the_card_holds(db):
    member = await _member(db, "13800000001")
    await _product(db, "FACIAL10")
    pass_id = await _issue(db, "FACIAL10", member, now=datetime.now(UTC))
    server = RpcServer(db)
    params = {"member_id": member, "service_sku": "FACIAL"}
    replies = await asyncio.gather(
        *(server.handle("shop-1", _rpc("pass.consume", params, f"o{i}:0")) for i in range(25))
    )
    ok = [r for r in replies if r.ok]
    assert len(ok) == 10
    assert sorted(r.result["remaining"] for r in ok) == list(range(10))
    assert all("no uses left" in (r.error or "") for r in replies if not r.ok)
    held = await _pass(db, pass_id)
    assert (held.remaining, held.used) == (0, 10)
    assert await _ledger_sum(db, pass_id) == (0, 11)
    # A till retrying a use that went through gets the same answer and takes nothing more.
    again = await server.handle("shop-1", _rpc("pass.consume", params, "o0:0"))
    assert again.result == replies[0].result
    assert await _ledger_sum(db, pass_id) == (0, 11)


async def test_the_daily_limit_holds_under_concurrency(db):
    member = await _member(db, "13800000001")
    await _product(db, "GYM-M", kind="period", uses=None, valid_days=30, daily_limit=2, covers_skus=["GYM"])
    pass_id = await _issue(db, "GYM-M", member, now=datetime.now(UTC))
    server = RpcServer(db)
    params = {"member_id": member, "service_sku": "GYM"}
    replies = await asyncio.gather(
        *(server.handle("shop-1", _rpc("pass.consume", params, f"g{i}")) for i in range(8))
    )
    assert sum(r.ok for r in replies) == 2
    assert all("2 use(s) a day" in (r.error or "") for r in replies if not r.ok)
    assert all(r.result["remaining"] is None for r in replies if r.ok)
    assert (await _pass(db, pass_id)).used == 2


async def test_refusals_are_clear_and_change_nothing(db):
    member = await _member(db, "13800000001")
    other = await _member(db, "13800000002")
    await _product(db, "FACIAL10", uses=1, valid_until="2026-03-31", daily_limit=1)
    pass_id = await _issue(db, "FACIAL10", member)
    day = TS + timedelta(days=1)

    async def refused(
        message: str, who: str = member, sku: str = "FACIAL", now: datetime = day, **kw
    ) -> None:
        before = (await _pass(db, pass_id), await _ledger_sum(db, pass_id))
        with pytest.raises(PassError, match=message):
            async with db.session() as session, session.begin():
                await consume(session, "shop-1", who, sku, now=now, **kw)
        after = (await _pass(db, pass_id), await _ledger_sum(db, pass_id))
        assert (before[0].remaining, before[0].used, before[1]) == (
            after[0].remaining,
            after[0].used,
            after[1],
        )

    await refused("covers service MASSAGE", sku="MASSAGE")
    await refused("does not cover service MASSAGE", sku="MASSAGE", pass_id=pass_id)
    await refused("has 1 uses left, 2 asked", uses=2)
    await refused("belongs to another member", who=other, pass_id=pass_id)
    await refused("holds no active pass", who=other)
    await refused("expired after 2026-03-31", now=datetime(2026, 3, 31, 16, 0, tzinfo=UTC))
    async with db.session() as session, session.begin():
        await consume(session, "shop-1", member, "FACIAL", now=day)
    await refused("no uses left", now=day + timedelta(days=1))


async def test_without_a_pass_id_the_covering_pass_that_expires_first_is_used(db):
    member = await _member(db, "13800000001")
    await _product(db, "LONG", valid_days=365, covers_skus=[], covers_categories=["美容"])
    await _product(db, "SHORT", valid_days=30, covers_skus=[], covers_categories=["美容"])
    await _product(db, "NAILS", valid_days=7, covers_skus=["NAIL"])
    await save_snapshot(
        db,
        "shop-1",
        SnapshotKind.CATALOG,
        {"products": [{"sku": "FACIAL", "category": "美容", "price_fen": 1}]},
    )
    long_id = await _issue(db, "LONG", member)
    short_id = await _issue(db, "SHORT", member)
    await _issue(db, "NAILS", member)
    async with db.session() as session, session.begin():
        first = await consume(session, "shop-1", member, "FACIAL", now=TS, order_id="o-1")
        picked = await consume(session, "shop-1", member, "FACIAL", now=TS, pass_id=long_id)
    assert first["pass_id"] == short_id
    assert picked["pass_id"] == long_id
    # shop-2 has no catalog saying FACIAL is 美容: no pass covers it there.
    with pytest.raises(PassError, match="no pass of this member covers service FACIAL"):
        async with db.session() as session, session.begin():
            await consume(session, "shop-2", member, "FACIAL", now=TS)


async def test_a_cashier_reverses_a_use_the_same_business_day_only(db):
    member = await _member(db, "13800000001")
    await _product(db, "FACIAL10", daily_limit=1)
    pass_id = await _issue(db, "FACIAL10", member, now=datetime.now(UTC))
    server = RpcServer(db)
    use = await server.handle(
        "shop-1", _rpc("pass.consume", {"member_id": member, "service_sku": "FACIAL"}, "k1")
    )
    assert use.ok
    assert use.result["remaining"] == 9
    txn = use.result["txn_id"]
    unkeyed = await server.handle("shop-1", _rpc("pass.reverse", {"txn_id": txn}))
    assert "idempotency key" in (unkeyed.error or "")
    elsewhere = await server.handle("shop-2", _rpc("pass.reverse", {"txn_id": txn}, "r0"))
    assert "another store" in (elsewhere.error or "")
    back = await server.handle("shop-1", _rpc("pass.reverse", {"txn_id": txn}, "r1"))
    assert back.ok
    assert back.result["remaining"] == 10
    twice = await server.handle("shop-1", _rpc("pass.reverse", {"txn_id": txn}, "r2"))
    assert "already reversed" in (twice.error or "")
    # The reversed use no longer counts against today's limit of one.
    again = await server.handle(
        "shop-1", _rpc("pass.consume", {"member_id": member, "service_sku": "FACIAL"}, "k2")
    )
    assert again.ok
    assert await _ledger_sum(db, pass_id) == (9, 4)
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    with pytest.raises(PassError, match="only on the day it was taken"):
        async with db.session() as session, session.begin():
            await reverse_use(
                session, again.result["txn_id"], actor="store:shop-1", store="shop-1", now=tomorrow
            )
    # Head office may reverse it any day, with its name on the ledger.
    async with db.session() as session, session.begin():
        done = await reverse_use(session, again.result["txn_id"], actor="user:boss", reason="double punch")
    assert done["remaining"] == 10


async def test_rpc_list_and_bad_params(db):
    member = await _member(db, "13800000001")
    await _product(db, "FACIAL10")
    await _issue(db, "FACIAL10", member, now=datetime.now(UTC))
    server = RpcServer(db)
    listed = await server.handle("shop-1", _rpc("pass.list", {"member_id": member}))
    assert listed.ok
    assert [(p["name"], p["remaining"]) for p in listed.result["passes"]] == [("FACIAL10", 10)]
    unknown = await server.handle("shop-1", _rpc("pass.list", {"member_id": "nobody"}))
    assert "会员不存在" in (unknown.error or "")
    bad = await server.handle(
        "shop-1", _rpc("pass.consume", {"member_id": member, "service_sku": "F", "uses": 0}, "b1")
    )
    assert "uses" in (bad.error or "")
    typo = await server.handle(
        "shop-1", _rpc("pass.consume", {"member_id": member, "service_sku": "F", "passid": "x"}, "b2")
    )
    assert "passid" in (typo.error or "")


# --------------------------------------------------------------------------- transfer, merge, expiry


async def test_transfer_only_when_the_product_allows_it(db):
    giver = await _member(db, "13800000001")
    taker = await _member(db, "13800000002")
    await _product(db, "FIXED")
    await _product(db, "GIFTABLE", transferable=True, sale_sku="SELL-G")
    fixed = await _issue(db, "FIXED", giver)
    giftable = await _issue(db, "GIFTABLE", giver)
    with pytest.raises(PassError, match="not transferable"):
        async with db.session() as session, session.begin():
            await transfer_pass(session, fixed, taker, actor="user:boss", reason="asked", now=TS)
    with pytest.raises(PassError, match="already belongs"):
        async with db.session() as session, session.begin():
            await transfer_pass(session, giftable, giver, actor="user:boss", reason="asked", now=TS)
    async with db.session() as session, session.begin():
        moved = await transfer_pass(
            session, giftable, taker, actor="user:boss", reason="gift to mother", now=TS
        )
    assert moved.member_id == taker
    assert (await _pass(db, fixed)).member_id == giver
    async with db.session() as session:
        row = await session.scalar(select(PassLedger).where(PassLedger.kind == "transfer"))
    assert row is not None
    assert (row.actor, row.reason, row.detail) == (
        "user:boss",
        "gift to mother",
        {"from_member_id": giver, "to_member_id": taker},
    )


async def test_merge_moves_passes_to_the_survivor(db):
    assert move_passes in MERGE_HOOKS
    keep = await _member(db, "13800000001")
    dup = await _member(db, "13800000002")
    await _product(db, "FACIAL10")
    pass_id = await _issue(db, "FACIAL10", dup)
    async with db.session() as session, session.begin():
        await move_passes(session, dup, keep)
    assert (await _pass(db, pass_id)).member_id == keep
    assert await _ledger_sum(db, pass_id) == (10, 2)


async def test_expiry_forfeits_the_uses_left_in_the_ledger(db):
    member = await _member(db, "13800000001")
    await _product(db, "MONTH", kind="count_in_period", uses=8, valid_days=30)
    pass_id = await _issue(db, "MONTH", member)
    async with db.session() as session, session.begin():
        await consume(session, "shop-1", member, "FACIAL", now=TS)
    async with db.session() as session, session.begin():
        assert await expire_passes(session, TS + timedelta(days=29)) == 0
    async with db.session() as session, session.begin():
        assert await expire_passes(session, TS + timedelta(days=30)) == 1
    gone = await _pass(db, pass_id)
    assert (gone.status, gone.remaining, gone.used) == ("expired", 0, 1)
    assert await _ledger_sum(db, pass_id) == (0, 3)


async def test_a_fixed_end_date_applies_whenever_the_pass_was_bought(db):
    member = await _member(db, "13800000001")
    await _product(db, "YEAR", kind="period", uses=None, valid_until=date(2026, 12, 31).isoformat())
    pass_id = await _issue(db, "YEAR", member)
    assert (await _pass(db, pass_id)).expires_at == datetime(2026, 12, 31, 16, 0, tzinfo=UTC)

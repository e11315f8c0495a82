"""Stored value through the till's RPC: concurrency, idempotency, top-ups with bonus, refusals,
top-up refunds with bonus clawback, merges and the liability report (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from hub.db import Database, migrate
from hub.errors import NotFound
from hub.members import MemberFields, create_member, merge_members
from hub.models import RpcResult
from hub.rpc import RpcServer
from hub.stored_value import (
    InsufficientBalance,
    Source,
    StoredValueError,
    debit,
    ledger_day,
    save_rules,
    stored_value_balances,
    topup,
)
from hub.stored_value_office import adjust, refund_topup
from hub.stored_value_report import liability_report
from hub.stored_value_rules import BonusRules, BonusTier, SpendingOrder
from hub.stored_value_tables import Account, LedgerEntry, Topup
from hub.stores import add_store
from protocol import RpcRequest

TIERS = [BonusTier(min_fen=50000, bonus_fen=8000), BonusTier(min_fen=100000, bonus_fen=20000)]


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    await add_store(database, "shop-1")
    await add_store(database, "shop-2")
    yield database
    await database.close()


async def _member(db: Database, phone: str = "13800000001") -> str:
    async with db.session() as session, session.begin():
        return (await create_member(session, MemberFields(phone, channel="hub"))).id


async def _fund(db: Database, member_id: str, principal: int, bonus: int = 0) -> None:
    async with db.session() as session, session.begin():
        await adjust(session, member_id, principal, bonus, actor="user:test", reason="test funds")


async def _rules(db: Database, order: SpendingOrder = SpendingOrder.PRINCIPAL_FIRST) -> None:
    async with db.session() as session, session.begin():
        await save_rules(session, BonusRules(tiers=TIERS, spending_order=order), actor="user:test")


async def _balance(db: Database, member_id: str) -> tuple[int, int]:
    async with db.session() as session:
        return await stored_value_balances(session, member_id)


async def _ledger_sum(db: Database, member_id: str) -> tuple[int, int]:
    async with db.session() as session:
        row = (
            await session.execute(
                select(
                    func.coalesce(func.sum(LedgerEntry.principal_delta_fen), 0),
                    func.coalesce(func.sum(LedgerEntry.bonus_delta_fen), 0),
                ).where(LedgerEntry.member_id == member_id)
            )
        ).one()
    return int(row[0]), int(row[1])


async def _count(db: Database, table) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(table)))


def _request(method: str, params: dict, key: str | None = None) -> RpcRequest:
    return RpcRequest(
        id=uuid.uuid4(),
        method=method,
        params=params,
        deadline=datetime.now(UTC) + timedelta(seconds=60),
        idempotency_key=key,
    )


async def test_200_concurrent_debits_never_overdraw_and_add_up(db):
    member = await _member(db)
    await _fund(db, member, 60000, 20000)
    server = RpcServer(db)
    amounts = [random.Random(seq).randint(100, 900) for seq in range(200)]  # ~100000 asked of 80000
    replies = await asyncio.gather(
        *(
            server.handle(
                "shop-1",
                _request(
                    "stored_value.debit",
                    {"member_id": member, "order_id": f"order-{seq}", "amount_fen": amount},
                    f"order-{seq}:0",
                ),
            )
            for seq, amount in enumerate(amounts)
        )
    )
    paid = [amount for amount, reply in zip(amounts, replies, strict=True) if reply.ok]
    refused = [reply.error for reply in replies if not reply.ok]
    principal, bonus = await _balance(db, member)
    assert principal >= 0
    assert bonus >= 0
    assert sum(paid) == 80000 - (principal + bonus)
    assert refused, "the amounts asked add up to more than the balance"
    assert all("not enough to pay" in (error or "") for error in refused)
    for reply in replies:
        if reply.ok:
            result = reply.result
            assert result["principal_fen"] + result["bonus_fen"] in amounts
            assert (
                result["balance"]["total_fen"]
                == result["balance"]["principal_fen"] + result["balance"]["bonus_fen"]
            )
    assert await _ledger_sum(db, member) == (principal, bonus)
    assert await _count(db, RpcResult) == 200


async def test_a_retried_debit_with_the_same_key_debits_once(db):
    member = await _member(db)
    await _fund(db, member, 10000)
    server = RpcServer(db)
    params = {"member_id": member, "order_id": "order-1", "amount_fen": 2500}
    replies = await asyncio.gather(
        *(server.handle("shop-1", _request("stored_value.debit", params, "order-1:0")) for _ in range(3))
    )
    later = await server.handle("shop-1", _request("stored_value.debit", params, "order-1:0"))
    assert all(r.ok for r in [*replies, later])
    assert len({r.result["txn_id"] for r in [*replies, later]}) == 1
    assert await _balance(db, member) == (7500, 0)
    unkeyed = await server.handle("shop-1", _request("stored_value.debit", params))
    assert not unkeyed.ok
    assert "idempotency key" in unkeyed.error
    assert await _balance(db, member) == (7500, 0)


async def test_debit_follows_the_spending_order_and_balance_answers(db):
    member = await _member(db)
    await _rules(db, SpendingOrder.PROPORTIONAL)
    await _fund(db, member, 10000, 3000)
    server = RpcServer(db)
    debit = await server.handle(
        "shop-1",
        _request("stored_value.debit", {"member_id": member, "order_id": "o-1", "amount_fen": 3000}, "o-1:0"),
    )
    assert debit.ok, debit.error
    assert (debit.result["principal_fen"], debit.result["bonus_fen"]) == (2308, 692)
    assert debit.result["balance"] == {"principal_fen": 7692, "bonus_fen": 2308, "total_fen": 10000}
    balance = await server.handle("shop-1", _request("stored_value.balance", {"member_id": member}))
    assert balance.result == {
        "member_id": member,
        "principal_fen": 7692,
        "bonus_fen": 2308,
        "total_fen": 10000,
    }


async def test_topup_gives_the_tier_bonus_and_is_tracked_per_topup(db):
    member = await _member(db)
    await _rules(db)
    server = RpcServer(db)
    params = {
        "member_id": member,
        "amount_fen": 60000,
        "payment_method": "wechat",
        "payment_reference": "wx-1",
    }
    reply = await server.handle("shop-1", _request("stored_value.topup", params, "topup-1"))
    assert reply.ok, reply.error
    assert reply.result["bonus_fen"] == 8000
    assert reply.result["balance"] == {"principal_fen": 60000, "bonus_fen": 8000, "total_fen": 68000}
    async with db.session() as session:
        topup = await session.get(Topup, reply.result["txn_id"])
        kinds = (
            await session.scalars(
                select(LedgerEntry.kind).where(LedgerEntry.topup_id == topup.id).order_by(LedgerEntry.kind)
            )
        ).all()
    assert (topup.amount_fen, topup.bonus_fen, topup.store) == (60000, 8000, "shop-1")
    assert topup.rule == {"min_fen": 50000, "bonus_fen": 8000, "per_each": False}
    assert kinds == ["bonus", "topup"]
    again = await server.handle("shop-1", _request("stored_value.topup", params, "topup-2"))
    assert not again.ok
    assert "already used for top-up" in again.error
    assert await _balance(db, member) == (60000, 8000)


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("stored_value.topup", {"amount_fen": 0, "payment_method": "cash"}, "greater than or equal to 1"),
        ("stored_value.topup", {"amount_fen": -500, "payment_method": "cash"}, "greater than or equal to 1"),
        ("stored_value.topup", {"amount_fen": 10.5, "payment_method": "cash"}, "valid integer"),
        (
            "stored_value.topup",
            {"amount_fen": 500, "payment_method": "wechat"},
            "needs its payment reference",
        ),
        ("stored_value.topup", {"amount_fen": 500, "payment_method": "stored_value"}, "cannot be paid with"),
        ("stored_value.debit", {"order_id": "o-9", "amount_fen": 0}, "greater than or equal to 1"),
        ("stored_value.debit", {"order_id": "o-9", "amount_fen": 10001}, "not enough to pay ¥100.01"),
        ("stored_value.debit", {"amount_fen": 100}, "order_id: Field required"),
    ],
)
async def test_bad_requests_are_refused_clearly_and_change_nothing(db, method, params, message):
    member = await _member(db)
    await _fund(db, member, 7000, 3000)
    before = await _count(db, LedgerEntry)
    reply = await RpcServer(db).handle("shop-1", _request(method, {"member_id": member, **params}, "k-1"))
    assert not reply.ok
    assert message in reply.error
    assert await _balance(db, member) == (7000, 3000)
    assert await _count(db, LedgerEntry) == before
    if "not enough" in message:
        assert "¥100.00 (principal ¥70.00, bonus ¥30.00)" in reply.error


async def test_unknown_member_is_refused(db):
    server = RpcServer(db)
    for method, params in [
        ("stored_value.balance", {}),
        ("stored_value.debit", {"order_id": "o-1", "amount_fen": 100}),
        ("stored_value.topup", {"amount_fen": 100, "payment_method": "cash"}),
    ]:
        reply = await server.handle(
            "shop-1", _request(method, {"member_id": "nobody", **params}, f"k-{method}")
        )
        assert not reply.ok
        assert "no member nobody" in reply.error
    assert await _count(db, Account) == 0


@pytest.mark.parametrize(
    ("order", "spend", "expected"),
    [
        # bonus unspent: clawed back in full, the unspent principal paid out
        (SpendingOrder.PRINCIPAL_FIRST, 20000, {"clawback": 8000, "shortfall": 0, "paid": 30000}),
        # bonus spent first: the 8000 spent bonus is kept from the principal
        (SpendingOrder.BONUS_FIRST, 20000, {"clawback": 0, "shortfall": 8000, "paid": 30000}),
    ],
)
async def test_topup_refund_claws_back_the_bonus_first(db, order, spend, expected):
    member = await _member(db)
    await _rules(db, order)
    server = RpcServer(db)
    topup = await server.handle(
        "shop-1",
        _request(
            "stored_value.topup",
            {
                "member_id": member,
                "amount_fen": 50000,
                "payment_method": "alipay",
                "payment_reference": "ali-7",
            },
            "t-1",
        ),
    )
    debit = await server.handle(
        "shop-1",
        _request(
            "stored_value.debit", {"member_id": member, "order_id": "o-1", "amount_fen": spend}, "o-1:0"
        ),
    )
    assert debit.ok, debit.error
    async with db.session() as session, session.begin():
        done = await refund_topup(
            session, topup.result["txn_id"], actor="user:finance", reason="customer moved"
        )
    got = {"clawback": done.clawback_fen, "shortfall": done.shortfall_fen, "paid": done.paid_fen}
    assert got == expected
    assert await _balance(db, member) == (0, 0)
    assert await _ledger_sum(db, member) == (0, 0)
    with pytest.raises(StoredValueError, match="already refunded"):
        async with db.session() as session, session.begin():
            await refund_topup(session, topup.result["txn_id"], actor="user:finance", reason="again")
    with pytest.raises(NotFound):
        async with db.session() as session, session.begin():
            await refund_topup(session, "no-such-topup", actor="user:finance", reason="x")


async def test_topup_refund_is_refused_when_nothing_is_left_to_pay(db):
    member = await _member(db)
    await _rules(db, SpendingOrder.BONUS_FIRST)
    async with db.session() as session, session.begin():
        done = await topup(
            session,
            member,
            50000,
            payment_method="cash",
            payment_reference=None,
            source=Source(actor="store:shop-1", store="shop-1"),
        )
        await debit(session, member, 53000, Source(actor="store:shop-1", store="shop-1", order_id="o-1"))
    with pytest.raises(StoredValueError, match="nothing can be paid back"):
        async with db.session() as session, session.begin():
            await refund_topup(session, done.topup.id, actor="user:finance", reason="x")
    assert await _balance(db, member) == (5000, 0)


async def test_adjustment_cannot_go_below_zero_and_needs_a_reason(db):
    member = await _member(db)
    await _fund(db, member, 1000, 500)
    with pytest.raises(InsufficientBalance, match="below zero"):
        async with db.session() as session, session.begin():
            await adjust(session, member, 0, -501, actor="user:x", reason="typo")
    with pytest.raises(StoredValueError, match="needs a reason"):
        async with db.session() as session, session.begin():
            await adjust(session, member, 5, 0, actor="user:x", reason="  ")
    assert await _balance(db, member) == (1000, 500)


async def test_merge_moves_balances_and_ledger_to_the_survivor(db):
    keep = await _member(db, "13800000001")
    dup = await _member(db, "13800000002")
    await _fund(db, keep, 1000, 100)
    await _fund(db, dup, 2000, 300)
    async with db.session() as session, session.begin():
        await merge_members(session, dup, keep)
    assert await _balance(db, keep) == (3000, 400)
    assert await _balance(db, dup) == (0, 0)
    assert await _ledger_sum(db, keep) == (3000, 400)
    assert await _ledger_sum(db, dup) == (0, 0)
    async with db.session() as session:
        marker = (await session.scalars(select(LedgerEntry).where(LedgerEntry.kind == "merge"))).one()
    assert (marker.member_id, marker.principal_after_fen, marker.bonus_after_fen) == (keep, 3000, 400)
    assert dup in marker.note
    reply = await RpcServer(db).handle(
        "shop-1",
        _request("stored_value.debit", {"member_id": dup, "order_id": "o-1", "amount_fen": 3400}, "k"),
    )
    assert reply.ok, reply.error
    assert await _balance(db, keep) == (0, 0)


async def test_liability_report_owes_what_the_accounts_hold(db):
    members = [await _member(db, f"1380000000{i}") for i in range(3)]
    server = RpcServer(db)
    await _rules(db)
    for i, member in enumerate(members):
        params = {"member_id": member, "amount_fen": 50000 * (i + 1), "payment_method": "cash"}
        assert (await server.handle(f"shop-{1 + i % 2}", _request("stored_value.topup", params, f"t{i}"))).ok
    params = {"member_id": members[0], "order_id": "o-1", "amount_fen": 1234}
    assert (await server.handle("shop-1", _request("stored_value.debit", params, "o-1:0"))).ok
    await _fund(db, members[1], -100, 0)
    today = ledger_day(datetime.now(UTC))
    async with db.session() as session:
        report = await liability_report(session, today, stores=None)
        accounts = (
            await session.execute(select(func.sum(Account.principal_fen), func.sum(Account.bonus_fen)))
        ).one()
        before = await liability_report(session, today - timedelta(days=1), stores=None)
        scoped = await liability_report(session, today, stores=["shop-2"])
    assert report["owed_at_end"] == {
        "principal_fen": int(accounts[0]),
        "bonus_fen": int(accounts[1]),
        "total_fen": int(accounts[0]) + int(accounts[1]),
    }
    assert report["owed_at_end"]["principal_fen"] == 300000 - 1234 - 100
    assert before["owed_at_end"]["total_fen"] == 0
    assert report["total"]["total_fen"] == report["owed_at_end"]["total_fen"]
    stores = {row["store"]: row for row in report["stores"]}
    assert stores["shop-1"]["movements"]["topup"] == {"count": 2, "principal_fen": 200000, "bonus_fen": 0}
    assert stores["shop-1"]["movements"]["debit"]["count"] == 1
    assert stores[None]["movements"]["adjust"]["principal_fen"] == -100
    assert scoped["owed_at_end"] is None
    assert [row["store"] for row in scoped["stores"]] == ["shop-2"]

"""Points: earned once from order events, redeemed at the till by RPC, returned and reversed on
refunds, expired FIFO; the ledger explains every balance (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest
from sqlalchemy import func, select

from edge.orders import Order, OrderLine, add_line, apply_payment
from hub import points
from hub.db import Database, migrate
from hub.levels import level_report
from hub.loyalty_rules import ExpiryRule
from hub.members import merge_members
from hub.models import RpcResult
from hub.points_sales import PointsEarning
from hub.rpc import RpcServer
from hub.snapshots import save_snapshot
from hub.stores import add_store
from protocol import SnapshotKind
from tests.hub.loyalty_helpers import (
    TS,
    Till,
    books,
    ledger,
    new_member,
    order_body,
    refund_body,
    rpc,
    set_levels,
    set_points_rules,
)

SHANGHAI_2028 = datetime(2027, 12, 31, 16, 0, tzinfo=UTC)  # 2028-01-01 00:00 in Asia/Shanghai


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    await add_store(database, "shop-1")
    yield database
    await database.close()


async def _lots(db, member_id):
    async with db.session() as session:
        rows = await session.execute(
            select(points.PointsLot.kind, points.PointsLot.remaining, points.PointsLot.expires_at)
            .where(points.PointsLot.member_id == member_id)
            .order_by(points.PointsLot.id)
        )
        return [(k, int(r), e) for k, r, e in rows.all()]


async def test_an_offline_sale_earns_once_when_it_syncs_even_delivered_three_times(db):
    member = await new_member(db)
    # Made at the till while the hub was unreachable: the real order rules, a real document.
    order = Order(
        id=str(uuid.uuid4()),
        store="shop-1",
        number=7,
        business_day=TS.date(),
        opened_at=TS,
        opened_by="s1",
        member_id=member,
    )
    line = OrderLine(line_id="l1", sku="DRK-002", name="拿铁", qty=Fraction(3), list_price_fen=4115)
    order = apply_payment(
        add_line(order, line), method="cash", amount_fen=20000, reference=None, staff_id="s1", now=TS
    )
    assert (order.status, order.total_fen) == ("paid", 12345)
    till = Till(db)
    event = till.event("order.paid", order.model_dump(mode="json"))
    await till.send(event, times=3)
    await Till(db, epoch=2).send(Till(db, epoch=2).event("order.paid", order.model_dump(mode="json")))

    assert await books(db, member) == (123, 123, 123)  # ⌊12345 fen / 100⌋, once
    assert await ledger(db, member) == [("earn", 123, f"order:{order.id}")]
    # valid to the end of the next calendar year after the sale (Shanghai), not after the sync
    assert await _lots(db, member) == [("earn", 123, SHANGHAI_2028)]
    async with db.session() as session:
        assert (await level_report(session, member))["counters"]["spend_fen"] == 12345


async def test_category_and_level_multipliers_use_one_floor_per_order(db):
    await set_points_rules(db, category_multipliers_bp={"drinks": 20000})
    await set_levels(
        db, levels=[{"code": "vip", "name": "VIP", "rank": 1, "threshold": 0, "points_multiplier_bp": 15000}]
    )
    # order lines carry no category: the hub reads it from the store's catalog snapshot by sku
    products = [
        {"sku": "DRK-002", "name": "拿铁", "category": "drinks", "price_fen": 1000},
        {"sku": "BRD-001", "name": "面包", "category": "bakery", "price_fen": 999},
    ]
    await save_snapshot(db, "shop-1", SnapshotKind.CATALOG, {"version": 1, "products": products})
    member = await new_member(db)
    body = order_body(1999, member, lines=[("DRK-002", 1000), ("BRD-001", 999)])
    till = Till(db)
    await till.send(till.event("order.paid", body))
    # (1000 × 2 + 999 × 1) / 1999 × 19.99 yuan × 1.5 = 44.985 → 44
    assert await books(db, member) == (44, 44, 44)
    # an order without a member earns nothing and breaks nothing; an unknown member neither
    await till.send(
        till.event("order.paid", order_body(500, None)), till.event("order.paid", order_body(500, "nobody"))
    )
    assert await books(db, member) == (44, 44, 44)


async def test_refund_after_partial_redemption_returns_points_exactly(db):
    await set_points_rules(
        db, registration_points=1000, redeem={"points": 100, "fen": 100, "min_points": 100}
    )
    member = await new_member(db)
    early = datetime.now(UTC) + timedelta(days=100)
    async with db.session() as session, session.begin():
        await points.credit(
            session, member, 300, kind="adjust", source="user:test", expires_at=early, now=datetime.now(UTC)
        )
    server = RpcServer(db)
    quote = await rpc(server, "points.quote", {"member_id": member, "order_total_fen": 5000})
    assert quote.ok, quote.error
    assert quote.result["balance"] == 1300
    assert (quote.result["max_points"], quote.result["max_amount_fen"]) == (1300, 1300)
    assert quote.result["rate"] == {"points": 100, "fen": 100}

    order_id = str(uuid.uuid4())
    params = {"member_id": member, "order_id": order_id, "points": 500, "order_total_fen": 5000}
    paid = await rpc(server, "points.redeem", params, key=f"{order_id}:0")
    assert paid.ok, paid.error
    txn = paid.result["txn_id"]
    assert (paid.result["points"], paid.result["amount_fen"], paid.result["balance"]) == (500, 500, 800)
    # FIFO: the 300 expiring soonest went first, then 200 of the registration lot
    assert [r for _, r, _ in await _lots(db, member)] == [800, 0]

    order = order_body(5000, member, order_id=order_id, tenders=[("points", 500, txn), ("cash", 4500, None)])
    till = Till(db)
    await till.send(till.event("order.paid", order))
    assert await books(db, member) == (845, 845, 845)  # 4500 fen paid in cash earn 45; points earn none

    half = till.event("order.refunded", refund_body(order, {0: 250, 1: 2250}))
    await till.send(half, times=3)
    # 250 points back; ⌈45 × 2500 / 5000⌉ = 23 reversed, the member keeps ⌊22.5⌋ = 22
    assert await books(db, member) == (845 + 250 - 23,) * 3
    rest = till.event("order.refunded", refund_body(order, {0: 250, 1: 2250}))
    await till.send(rest, times=2)
    assert await books(db, member) == (1300, 1300, 1300)  # everything back, everything reversed
    kinds = [(k, p) for k, p, _ in await ledger(db, member)]
    assert kinds == [
        ("registration", 1000),
        ("adjust", 300),
        ("redeem", -500),
        ("earn", 45),
        ("refund_return", 200),  # returned to the lots it came from, latest expiry first
        ("refund_return", 50),
        ("reverse", -23),
        ("refund_return", 250),
        ("reverse", -22),
    ]
    # returned points keep the expiry of the lots they were paid from
    returned = [(r, e) for k, r, e in await _lots(db, member) if k == "refund_return"]
    expiries = sorted(e for _, e in returned)
    assert [e == early for e in expiries] == [True, True, False]
    async with db.session() as session:
        earning = await session.get(PointsEarning, order_id)
        assert (earning.reversed_points, earning.unrecovered) == (45, 0)


async def test_a_voided_order_gives_its_points_back_in_full(db):
    await set_points_rules(db, registration_points=1000)
    member = await new_member(db)
    server = RpcServer(db)
    order_id = str(uuid.uuid4())
    params = {"member_id": member, "order_id": order_id, "points": 300, "order_total_fen": 1000}
    paid = await rpc(server, "points.redeem", params, key=f"{order_id}:0")
    assert paid.ok, paid.error
    voided = order_body(
        1000, member, order_id=order_id, status="voided", tenders=[("points", 300, paid.result["txn_id"])]
    )
    till = Till(db)
    await till.send(till.event("order.voided", voided), times=2)
    assert await books(db, member) == (1000, 1000, 1000)
    assert [k for k, _, _ in await ledger(db, member)] == ["registration", "redeem", "refund_return"]


async def test_a_refund_that_arrives_before_its_order_is_applied_when_the_order_arrives(db):
    member = await new_member(db)
    order = order_body(10000, member)
    till = Till(db)
    sale = till.event("order.paid", order)
    refund = till.event("order.refunded", refund_body(order, {0: 4000}))
    await till.send(refund)  # the sale's batch was lost; the refund's came first
    assert await books(db, member) == (0, 0, 0)
    await till.send(sale)
    assert await books(db, member) == (60, 60, 60)  # 100 earned, ⌈100 × 4000 / 10000⌉ = 40 reversed
    await till.send(sale, refund)
    assert await books(db, member) == (60, 60, 60)


async def test_a_reversal_never_takes_the_balance_below_zero(db):
    await set_points_rules(db, redeem={"points": 1, "fen": 1, "min_points": 1, "max_share_bp": 10000})
    member = await new_member(db)
    order = order_body(10000, member)
    till = Till(db)
    await till.send(till.event("order.paid", order))
    spent = await rpc(
        RpcServer(db),
        "points.redeem",
        {"member_id": member, "order_id": str(uuid.uuid4()), "points": 80, "order_total_fen": 80},
        key="k1",
    )
    assert spent.ok, spent.error
    await till.send(till.event("order.refunded", refund_body(order, {0: 10000})))
    assert await books(db, member) == (0, 0, 0)
    async with db.session() as session:
        earning = await session.get(PointsEarning, order["id"])
        assert (earning.reversed_points, earning.unrecovered) == (100, 80)


async def test_points_expire_fifo_on_schedule_and_the_ledger_explains_each_balance(db):
    member = await new_member(db)
    rule = ExpiryRule(mode="days", days=30)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    async with db.session() as session, session.begin():
        for day, amount in ((0, 100), (10, 200), (20, 300)):
            at = t0 + timedelta(days=day)
            await points.credit(
                session,
                member,
                amount,
                kind="earn",
                source=f"order:{day}",
                expires_at=rule.expires_at(at),
                now=at,
            )
        taken = await points.debit(
            session, member, 150, kind="redeem", source="rpc:x", now=t0 + timedelta(days=25)
        )
    assert [(n) for _, n, _ in taken.lots] == [100, 50]  # earliest expiry first
    expected = {29: 450, 30: 450, 39: 450, 40: 300, 49: 300, 50: 0}
    for day, balance in expected.items():
        async with db.session() as session, session.begin():
            await points.expire_points(session, t0 + timedelta(days=day))
        assert await books(db, member) == (balance, balance, balance), day
    assert await ledger(db, member) == [
        ("earn", 100, "order:0"),
        ("earn", 200, "order:10"),
        ("earn", 300, "order:20"),
        ("redeem", -150, "rpc:x"),
        ("expire", -150, "expiry"),
        ("expire", -300, "expiry"),
    ]
    # a redemption never spends points that are due to expire: they are expired first
    async with db.session() as session, session.begin():
        await points.credit(session, member, 170, kind="earn", source="late", expires_at=t0, now=t0)
    assert await books(db, member) == (170, 170, 170)
    async with db.session() as session:
        assert await points.spendable(session, member, datetime.now(UTC)) == 0
    refused = await rpc(
        RpcServer(db),
        "points.redeem",
        {"member_id": member, "order_id": "o", "points": 100, "order_total_fen": 9999},
        "k",
    )
    assert not refused.ok
    assert "积分不足：当前 0 积分" in refused.error
    assert await books(db, member) == (170, 170, 170)  # a refusal writes nothing, not even the expiry


def test_next_year_end_counts_in_shanghai_time():
    rule = ExpiryRule()
    # 2026-12-31 17:00 UTC is already 2027-01-01 in Shanghai: valid to the end of 2028
    assert rule.expires_at(datetime(2026, 12, 31, 17, 0, tzinfo=UTC)) == datetime(
        2028, 12, 31, 16, 0, tzinfo=UTC
    )
    assert rule.expires_at(datetime(2026, 12, 31, 15, 59, tzinfo=UTC)) == SHANGHAI_2028


async def test_concurrent_redemptions_never_take_the_balance_below_zero(db):
    await set_points_rules(
        db, registration_points=1000, redeem={"points": 1, "fen": 1, "min_points": 1, "max_share_bp": 10000}
    )
    member = await new_member(db)
    server = RpcServer(db)

    async def redeem(i: int):
        params = {"member_id": member, "order_id": f"order-{i}", "points": 100, "order_total_fen": 100}
        return await rpc(server, "points.redeem", params, key=f"order-{i}:0")

    replies = await asyncio.gather(*(redeem(i) for i in range(25)))
    ok = [r for r in replies if r.ok]
    assert len(ok) == 10
    assert all("积分不足" in (r.error or "") for r in replies if not r.ok)
    assert sorted(r.result["balance"] for r in ok) == list(range(0, 1000, 100))
    assert await books(db, member) == (0, 0, 0)
    again = await redeem(3)  # a retry gets its first outcome and debits nothing
    assert again.ok == replies[3].ok
    assert await books(db, member) == (0, 0, 0)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"points": 50}, "至少使用 100 积分"),
        ({"points": 155}, "须为 10 的整数倍"),
        ({"points": 700}, "积分不足：当前 600 积分"),
        ({"points": 300, "order_total_fen": 50}, "本单最多可用 250 积分，抵 0.25 元"),
        ({"member_id": "no-such-member"}, "找不到会员"),
        ({"points": "100"}, "请求有误"),
        ({"points": -100}, "请求有误"),
    ],
)
async def test_bad_redemptions_are_refused_clearly_and_change_nothing(db, params, message):
    # 10 points pay 1 fen; at least 100 points; at most half of the order
    await set_points_rules(
        db,
        registration_points=600,
        redeem={"points": 10, "fen": 1, "min_points": 100, "max_share_bp": 5000},
    )
    member = await new_member(db)
    request = {"member_id": member, "order_id": "o-1", "points": 100, "order_total_fen": 10000, **params}
    reply = await rpc(RpcServer(db), "points.redeem", request, key="o-1:0")
    assert not reply.ok
    assert message in reply.error
    assert await books(db, member) == (600, 600, 600)
    unkeyed = await rpc(RpcServer(db), "points.redeem", {**request, "points": 100})
    assert "idempotency key" in unkeyed.error
    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(points.PointsLedger)) == 1


async def test_redemptions_of_one_order_share_its_maximum(db):
    await set_points_rules(
        db,
        registration_points=5000,
        redeem={"points": 100, "fen": 100, "min_points": 100, "max_share_bp": 5000},
    )
    member = await new_member(db)
    server = RpcServer(db)
    first = await rpc(
        server,
        "points.redeem",
        {"member_id": member, "order_id": "o", "points": 300, "order_total_fen": 1000},
        "o:0",
    )
    second = await rpc(
        server,
        "points.redeem",
        {"member_id": member, "order_id": "o", "points": 300, "order_total_fen": 1000},
        "o:1",
    )
    assert first.ok
    assert not second.ok
    assert "本单最多可用 200 积分" in second.error
    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(RpcResult)) == 2


async def test_merging_members_moves_points_and_keeps_both_ledgers_explained(db):
    await set_points_rules(db, registration_points=100)
    keep = await new_member(db, "13800000001")
    dup = await new_member(db, "13800000002")
    async with db.session() as session, session.begin():
        await merge_members(session, dup, keep)
    assert await books(db, keep) == (200, 200, 200)
    assert await books(db, dup) == (0, 0, 0)
    # a sale to the old id earns for the survivor
    till = Till(db)
    await till.send(till.event("order.paid", order_body(1000, dup)))
    assert await books(db, keep) == (210, 210, 210)


async def test_redemptions_sales_and_refunds_of_one_member_at_once_keep_the_books(db):
    await add_store(db, "shop-2")
    await set_points_rules(
        db, registration_points=1000, redeem={"points": 1, "fen": 1, "min_points": 1, "max_share_bp": 10000}
    )
    member = await new_member(db)
    server = RpcServer(db)
    refunded = order_body(5000, member)
    shop1 = Till(db)
    await shop1.send(shop1.event("order.paid", refunded))  # +50

    async def redeem(i: int):
        params = {"member_id": member, "order_id": f"o-{i}", "points": 100, "order_total_fen": 100}
        return await rpc(server, "points.redeem", params, key=f"o-{i}:0")

    shop2 = Till(db, store="shop-2")
    sale2 = order_body(7000, member)
    sale2["store"] = "shop-2"
    results = await asyncio.gather(
        *(redeem(i) for i in range(12)),
        shop1.send(shop1.event("order.refunded", refund_body(refunded, {0: 5000}))),  # −50
        shop2.send(shop2.event("order.paid", sale2)),  # +70
    )
    ok = sum(1 for r in results[:12] if r.ok)
    assert all("积分不足" in (r.error or "") for r in results[:12] if not r.ok)
    async with db.session() as session:
        # a reversal that finds the points already spent takes what is there, never more
        unrecovered = (await session.get(PointsEarning, refunded["id"])).unrecovered
    balance, ledger_sum, lots = await books(db, member)
    assert balance == ledger_sum == lots == 1000 + 50 - (50 - unrecovered) + 70 - 100 * ok
    assert balance >= 0
    assert 10 <= ok <= 11

"""Referral commissions (返佣) from the friends' sales: earned, capped, reversed on refunds, settled.

A sale listener (`referrals_from_sales`, run by ingest once per new order or refund) gives
each paid order of an attributed friend a commission row per level: level 1 to the friend's
promoter, level 2 to that promoter's own promoter, at the rates of the friend's rule, cut
to the rule's caps (per friend, per promoter per business month). Caps are counted under
the promoters' row locks, taken for the whole batch in id order, so two stores' batches
cannot both spend the last of a cap nor deadlock. An order may also carry the share code
it was bought through (`referral_code`): a new member without a promoter is attributed
first (the fraud guards apply), and that order already earns.

A commission is pending until its order's refund window ends; a refund inside the window
reverses the refunded share of it, a refund after it changes nothing.
`settle_due` (the nightly `referrals.settle` job) settles what is due.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update

from hub.db import AsyncSession, Database
from hub.errors import HubError
from hub.models import HubRefund
from hub.referral_tables import Attribution, Commission, CommissionState, Promoter, ReferralRule
from hub.referrals import attribute, lock_promoters, resolve_code
from protocol.money import apply_basis_points, round_half_up

__all__ = [
    "commission_json",
    "promoter_totals",
    "referrals_from_sales",
    "settle_due",
    "settle_job",
]

log = logging.getLogger(__name__)


def commission_json(c: Commission) -> dict[str, Any]:
    """A commission as the API shows it; `owed_fen` is what stands after reversals."""
    return {
        "id": c.id,
        "promoter_id": c.promoter_id,
        "friend_id": c.friend_id,
        "order_id": c.order_id,
        "store": c.store,
        "level": c.level,
        "rate_bp": c.rate_bp,
        "base_fen": c.base_fen,
        "amount_fen": c.amount_fen,
        "reversed_fen": c.reversed_fen,
        "owed_fen": c.amount_fen - c.reversed_fen,
        "capped": c.capped,
        "business_day": c.business_day.isoformat(),
        "state": c.state,
        "settle_after": c.settle_after.isoformat(),
        "settled_at": c.settled_at.isoformat() if c.settled_at else None,
    }


async def _refunded(session: AsyncSession, order_ids: Iterable[str]) -> dict[str, int]:
    rows = await session.execute(
        select(HubRefund.order_id, func.sum(HubRefund.total_fen))
        .where(HubRefund.order_id.in_(sorted(set(order_ids))))
        .group_by(HubRefund.order_id)
    )
    return {order_id: int(total or 0) for order_id, total in rows.all()}


async def _attribute_by_code(session: AsyncSession, orders: list[dict[str, Any]]) -> None:
    """Orders bought through a share code attribute their (new) member first; refusals are logged."""
    for order in orders:
        code = order.get("referral_code")
        if not isinstance(code, str) or not code.strip():
            continue
        member_id = str(order["member_id"])
        if await session.get(Attribution, member_id) is not None:
            continue
        try:
            async with session.begin_nested():
                link = await resolve_code(session, code)
                await attribute(session, member_id, link, via="order", order_id=str(order["id"]))
        except HubError as err:  # refused, unknown code, stopped promoter: the sale stands without it
            log.info("order %s: share code %s not attributed: %s", order.get("id"), code, err)


async def _used(
    session: AsyncSession, promoter_id: str, *, friend_id: str | None = None, month: str | None = None
) -> int:
    query = select(func.coalesce(func.sum(Commission.amount_fen - Commission.reversed_fen), 0)).where(
        Commission.promoter_id == promoter_id
    )
    if friend_id is not None:
        query = query.where(Commission.friend_id == friend_id)
    if month is not None:
        query = query.where(Commission.month == month)
    return int(await session.scalar(query) or 0)


async def _capped(
    session: AsyncSession, rule: ReferralRule, promoter_id: str, *, friend_id: str, month: str, amount: int
) -> int:
    if rule.per_friend_cap_fen is not None:
        left = rule.per_friend_cap_fen - await _used(session, promoter_id, friend_id=friend_id)
        amount = min(amount, max(left, 0))
    if rule.monthly_cap_fen is not None:
        left = rule.monthly_cap_fen - await _used(session, promoter_id, month=month)
        amount = min(amount, max(left, 0))
    return amount


async def _commissions(
    session: AsyncSession, store: str, orders: list[dict[str, Any]], now: datetime
) -> None:
    members = {str(o["member_id"]) for o in orders}
    found = (await session.scalars(select(Attribution).where(Attribution.friend_id.in_(members)))).all()
    level1 = {a.friend_id: a for a in found}
    if not level1:
        return
    promoters = {a.promoter_id for a in level1.values()}
    up = (await session.scalars(select(Attribution).where(Attribution.friend_id.in_(promoters)))).all()
    level2 = {a.friend_id: a.promoter_id for a in up}
    await lock_promoters(session, [*promoters, *level2.values()])
    active = set(
        (
            await session.scalars(
                select(Promoter.member_id).where(
                    Promoter.member_id.in_(promoters | set(level2.values())), Promoter.active.is_(True)
                )
            )
        ).all()
    )
    rules = {r.id: r for r in (await session.scalars(select(ReferralRule))).all()}
    refunded = await _refunded(session, (str(o["id"]) for o in orders))
    for order in orders:
        att = level1.get(str(order["member_id"]))
        rule = rules.get(att.rule_id or "") if att is not None else None
        if att is None or rule is None or not rule.active:
            continue
        closed = datetime.fromisoformat(order["closed_at"]) if order.get("closed_at") else now
        if rule.commission_days is not None and closed > att.created_at + timedelta(
            days=rule.commission_days
        ):
            continue
        base = int(order["total_fen"])
        left = base - refunded.get(str(order["id"]), 0)  # a refund can reach the hub before its order
        if left <= 0:
            continue
        day = date.fromisoformat(str(order["business_day"]))
        month = day.strftime("%Y-%m")
        levels = [(1, att.promoter_id, rule.level1_bp), (2, level2.get(att.promoter_id), rule.level2_bp)]
        for level, promoter_id, rate in levels:
            if promoter_id is None or rate == 0 or promoter_id not in active or promoter_id == att.friend_id:
                continue
            earned = apply_basis_points(base, rate)
            amount = await _capped(
                session, rule, promoter_id, friend_id=att.friend_id, month=month, amount=earned
            )
            kept = round_half_up(amount * left, base)  # what refunds already made leave of it
            session.add(
                Commission(
                    promoter_id=promoter_id,
                    friend_id=att.friend_id,
                    order_id=str(order["id"]),
                    store=store,
                    level=level,
                    rule_id=rule.id,
                    rate_bp=rate,
                    base_fen=base,
                    amount_fen=amount,
                    reversed_fen=amount - kept,
                    capped=amount < earned,
                    month=month,
                    business_day=day,
                    state=CommissionState.PENDING.value
                    if kept or not amount
                    else CommissionState.REVERSED.value,
                    created_at=now,
                    settle_after=closed + timedelta(days=rule.refund_window_days),
                    settled_at=None,
                    reversed_at=None if kept or not amount else now,
                )
            )
            await session.flush()  # the next level's or order's cap counts this one


async def _reverse(session: AsyncSession, order_ids: set[str], now: datetime) -> None:
    """Take back the refunded share of pending commissions still in their window."""
    pending = (
        await session.scalars(
            select(Commission)
            .where(
                Commission.order_id.in_(sorted(order_ids)),
                Commission.state == CommissionState.PENDING.value,
                Commission.settle_after > now,
            )
            .with_for_update()
        )
    ).all()
    if not pending:
        return
    refunded = await _refunded(session, order_ids)
    for c in pending:
        left = max(c.base_fen - refunded.get(c.order_id, 0), 0)
        kept = round_half_up(c.amount_fen * left, c.base_fen) if c.base_fen else 0
        c.reversed_fen = max(c.reversed_fen, c.amount_fen - kept)
        if kept == 0 and (left == 0 or c.amount_fen > 0):  # a zero (capped) row ends only with its order
            c.state, c.reversed_at = CommissionState.REVERSED.value, now
    await session.flush()


async def referrals_from_sales(
    session: AsyncSession, store: str, orders: list[dict[str, Any]], refunds: list[dict[str, Any]]
) -> None:
    """Sale listener: commissions on new paid orders of attributed friends; refunds reverse them.

    A voided order was never paid, so it never earned: there is nothing to reverse.
    """
    now = datetime.now(UTC)
    paid = [
        o
        for o in orders
        if o.get("status") == "paid" and o.get("member_id") and isinstance(o.get("total_fen"), int)
    ]
    if paid:
        await _attribute_by_code(session, paid)
        await _commissions(session, store, paid, now)
    refunded = {str(r["order_id"]) for r in refunds if r.get("order_id")}
    if refunded:
        await _reverse(session, refunded, now)


async def settle_due(session: AsyncSession, now: datetime) -> int:
    """Settle every pending commission whose refund window has ended; how many were settled."""
    done = await session.execute(
        update(Commission)
        .where(Commission.state == CommissionState.PENDING.value, Commission.settle_after <= now)
        .values(state=CommissionState.SETTLED.value, settled_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(done.rowcount or 0)  # type: ignore[attr-defined]


async def settle_job(db: Database, day: date) -> str:
    """The nightly job: settle what is due now (idempotent: a settled commission is not touched again)."""
    async with db.session() as session, session.begin():
        settled = await settle_due(session, datetime.now(UTC))
    return f"settled {settled} commissions (run for {day.isoformat()})"


async def promoter_totals(session: AsyncSession, promoter_id: str) -> dict[str, int]:
    """What a promoter earned: owed pending, settled, reversed (fen), and their friend count."""
    rows = await session.execute(
        select(Commission.state, func.sum(Commission.amount_fen), func.sum(Commission.reversed_fen))
        .where(Commission.promoter_id == promoter_id)
        .group_by(Commission.state)
    )
    totals = {"pending_fen": 0, "settled_fen": 0, "reversed_fen": 0}
    for state, amount_sum, reversed_sum in rows.all():
        amount, reversed_ = int(amount_sum or 0), int(reversed_sum or 0)
        totals["reversed_fen"] += reversed_
        if state == CommissionState.PENDING.value:
            totals["pending_fen"] += amount - reversed_
        elif state == CommissionState.SETTLED.value:
            totals["settled_fen"] += amount - reversed_
    friends = await session.scalar(select(func.count()).where(Attribution.promoter_id == promoter_id))
    return {**totals, "friends": int(friends or 0)}

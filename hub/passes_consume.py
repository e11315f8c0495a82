"""Taking a use of a pass at the till, and giving it back when the cashier made a mistake.

A use is taken by one conditional UPDATE that checks, in the database, that the pass is
still active, unexpired, has the uses and is under its daily limit: two tills punching
the same card at once can never take more than it holds, on SQLite or PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import case, or_, select, update

from hub.db import AsyncSession
from hub.errors import NotFound
from hub.members import get_member
from hub.models import StoreSnapshot
from hub.passes import PassError, get_pass, ledger_row, member_passes, store_zone
from hub.passes_models import Pass, PassLedger
from protocol.timeutil import business_day, format_utc

__all__ = ["consume", "reverse_use"]


async def _category_of(session: AsyncSession, store: str, sku: str) -> str | None:
    """The catalog category of `sku` in the store's newest catalog snapshot, if any."""
    body = await session.scalar(
        select(StoreSnapshot.body).where(StoreSnapshot.store == store, StoreSnapshot.kind == "catalog")
    )
    products = body.get("products") if isinstance(body, dict) else None
    for product in products if isinstance(products, list) else []:
        if isinstance(product, dict) and product.get("sku") == sku:
            category = product.get("category")
            return category if isinstance(category, str) and category else None
    return None


def _last_day(p: Pass, zone: str) -> str:
    assert p.expires_at is not None  # noqa: S101 - only called for passes that expire
    return (p.expires_at.astimezone(ZoneInfo(zone)) - timedelta(days=1)).date().isoformat()


@dataclass(frozen=True)
class _Check:
    """Why a pass cannot give `uses` of `sku` now, in words a cashier understands (None: it can)."""

    sku: str
    category: str | None
    uses: int
    now: datetime
    today: date  # the store's business day
    zone: str

    def covers(self, p: Pass) -> bool:
        return self.sku in p.covers_skus or (
            self.category is not None and self.category in p.covers_categories
        )

    def refusal(self, p: Pass) -> str | None:
        if p.status == "revoked":
            return f"{p.name} 已作废 (pass '{p.name}' was revoked, e.g. refunded)"
        if p.status == "expired" or (p.expires_at is not None and p.expires_at <= self.now):
            return f"{p.name} 已过期 (pass '{p.name}' expired after {_last_day(p, self.zone)})"
        if not self.covers(p):
            return f"{p.name} 不适用于 {self.sku} (pass '{p.name}' does not cover service {self.sku})"
        if p.remaining is not None and p.remaining < self.uses:
            if p.remaining == 0:
                return f"{p.name} 次数已用完 (pass '{p.name}' has no uses left)"
            left = p.remaining
            return f"{p.name} 仅剩 {left} 次 (pass '{p.name}' has {left} uses left, {self.uses} asked)"
        used_today = p.day_uses if p.day == self.today else 0
        if p.daily_limit is not None and used_today + self.uses > p.daily_limit:
            limit = p.daily_limit
            return f"{p.name} 今日已达上限 (pass '{p.name}' allows {limit} use(s) a day; {used_today} today)"
        return None


async def _take(session: AsyncSession, p: Pass, member_id: str, check: _Check) -> tuple[bool, int | None]:
    """Take the uses in one conditional UPDATE: (taken, new `remaining`)."""
    uses = check.uses
    day_uses_now = case((Pass.day == check.today, Pass.day_uses), else_=0)
    taken = await session.execute(
        update(Pass)
        .where(
            Pass.id == p.id,
            Pass.member_id == member_id,
            Pass.status == "active",
            or_(Pass.expires_at.is_(None), Pass.expires_at > check.now),
            or_(Pass.remaining.is_(None), Pass.remaining >= uses),
            or_(Pass.daily_limit.is_(None), day_uses_now + uses <= Pass.daily_limit),
        )
        .values(
            remaining=Pass.remaining - uses,
            used=Pass.used + uses,
            day=check.today,
            day_uses=day_uses_now + uses,
        )
        .returning(Pass.remaining)
        .execution_options(synchronize_session=False)
    )
    row = taken.first()
    return (False, None) if row is None else (True, row.remaining)


async def consume(
    session: AsyncSession,
    store: str,
    member_id: str,
    service_sku: str,
    *,
    pass_id: str | None = None,
    uses: int = 1,
    order_id: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Take `uses` of a pass covering `service_sku`; without `pass_id`, the one expiring first.

    Raises `PassError` with the reason (expired, used up, does not cover, daily limit) and
    `NotFound` for an unknown member or pass; nothing is written then.
    """
    now = now if now is not None else datetime.now(UTC)
    member = await get_member(session, member_id)
    zone = await store_zone(session, store)
    if pass_id is not None:
        chosen = await get_pass(session, pass_id)
        if chosen.member_id != member.id:
            raise PassError(f"pass {chosen.name!r} belongs to another member")
        candidates = [chosen]
    else:
        candidates = await member_passes(session, member.id, usable_only=False)
        candidates = [p for p in candidates if p.status == "active"]
        if not candidates:
            raise PassError("该会员没有可用的次卡 (this member holds no active pass)")
    category = None
    if any(service_sku not in p.covers_skus and p.covers_categories for p in candidates):
        category = await _category_of(session, store, service_sku)
    check = _Check(service_sku, category, uses, now, business_day(now, zone), zone)
    refusals = [check.refusal(p) for p in candidates]
    for p, why in zip(candidates, refusals, strict=True):
        if why is not None:
            continue
        taken, remaining = await _take(session, p, member.id, check)
        if not taken:
            continue  # another till took the last use (or the day's limit) meanwhile
        entry = ledger_row(
            p,
            "consume",
            -uses,
            actor=f"store:{store}",
            now=now,
            remaining_after=remaining,
            member_id=member.id,
            store=store,
            business_day=check.today,
            order_id=order_id,
            service_sku=service_sku,
        )
        session.add(entry)
        await session.flush()
        return {
            "txn_id": entry.txn_id,
            "pass_id": p.id,
            "name": p.name,
            "remaining": entry.remaining_after,
            "expires_at": format_utc(p.expires_at) if p.expires_at else None,
        }
    # Refuse with the reason of the first pass that covers the service (they expire first first).
    fresh = [await get_pass(session, p.id) for p in candidates]
    covering = [p for p in fresh if check.covers(p)] if pass_id is None else fresh
    if not covering:
        raise PassError(
            f"没有适用于 {service_sku} 的次卡 (no pass of this member covers service {service_sku})"
        )
    raise PassError(check.refusal(covering[0]) or f"pass {covering[0].name!r} is busy; try again")


async def reverse_use(
    session: AsyncSession,
    txn_id: str,
    *,
    actor: str,
    reason: str = "",
    store: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Give back a use; with `store` (a till), only that store's use of the same business day."""
    now = now if now is not None else datetime.now(UTC)
    use = await session.scalar(select(PassLedger).where(PassLedger.txn_id == txn_id))
    if use is None:
        raise NotFound(f"no pass transaction {txn_id!r}")
    if use.kind != "consume":
        raise PassError(f"transaction {txn_id} is a {use.kind}, not a use; only uses can be reversed")
    if store is not None:
        if use.store != store:
            raise PassError("this use was taken at another store; ask head office to reverse it")
        if business_day(now, await store_zone(session, store)) != use.business_day:
            raise PassError("a till reverses a use only on the day it was taken; ask head office")
    marked = await session.execute(
        update(PassLedger)
        .where(PassLedger.txn_id == txn_id, PassLedger.reversed.is_(False))
        .values(reversed=True)
        .execution_options(synchronize_session=False)
    )
    if marked.rowcount != 1:  # type: ignore[attr-defined]
        raise PassError(f"use {txn_id} was already reversed")
    uses = -use.uses
    restored = await session.execute(
        update(Pass)
        .where(Pass.id == use.pass_id, Pass.status == "active")
        .values(
            remaining=Pass.remaining + uses,
            used=Pass.used - uses,
            day_uses=case((Pass.day == use.business_day, Pass.day_uses - uses), else_=Pass.day_uses),
        )
        .returning(Pass.remaining)
        .execution_options(synchronize_session=False)
    )
    row = restored.first()
    p = await get_pass(session, use.pass_id)
    if row is None:
        raise PassError(f"pass {p.name!r} is {p.status}; its uses can no longer be given back")
    entry = ledger_row(
        p,
        "reverse",
        uses,
        actor=actor,
        now=now,
        remaining_after=row.remaining,
        reason=reason,
        store=use.store,
        business_day=use.business_day,
        order_id=use.order_id,
        service_sku=use.service_sku,
        ref_txn_id=txn_id,
    )
    session.add(entry)
    await session.flush()
    return {
        "txn_id": entry.txn_id,
        "reversed_txn_id": txn_id,
        "pass_id": p.id,
        "remaining": row.remaining,
        "expires_at": format_utc(p.expires_at) if p.expires_at else None,
    }

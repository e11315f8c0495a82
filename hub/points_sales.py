"""The points sale listener: earning on paid orders, reversal on refunds, points tenders given back.

Runs inside ingest's batch transaction, once per first-seen order or refund, so a sale
delivered three times, or made offline and synced days later, earns once.

- `order.paid` with a `member_id`: the member earns points (`earn`) and spend progress.
- `order.refunded`: points earned on the order are reversed in proportion to the refund
  (`reverse`), and points paid with a "points" tender come back (`refund_return`).
- `order.voided`: points paid with a "points" tender come back in full.

A refund that arrives before its order (a gap in delivery) is applied when the order
arrives. Nothing here raises on a malformed document: a listener that raises rolls the
batch back and the store would re-send it forever; odd documents are logged and skipped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Integer, String, func, select
from sqlalchemy.orm import Mapped, mapped_column

from hub import levels, points
from hub.db import AsyncSession
from hub.errors import NotFound
from hub.loyalty_rules import BP, LevelsConfig, PointsRules, load_levels, load_points_rules
from hub.members import get_member
from hub.models import Base, HubOrder, HubRefund, StoreSnapshot
from hub.points_redeem import return_points

__all__ = ["PointsEarning", "PointsRefundApplied", "earn_points_for", "points_from_sales"]

log = logging.getLogger(__name__)
_METHOD = "points"


class PointsEarning(Base):
    """What a paid order earned and how much of it refunds have reversed so far."""

    __tablename__ = "points_earnings"

    order_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"), index=True)
    store: Mapped[str] = mapped_column(String(32))
    base_fen: Mapped[int] = mapped_column(BigInteger)  # the order's total: refunds are a share of it
    spend_fen: Mapped[int] = mapped_column(BigInteger)  # counted as spend (total minus points tenders)
    points: Mapped[int] = mapped_column(BigInteger)
    lot_id: Mapped[int | None] = mapped_column(Integer)
    refunded_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    reversed_points: Mapped[int] = mapped_column(BigInteger, default=0)
    reversed_spend_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    unrecovered: Mapped[int] = mapped_column(BigInteger, default=0)  # already spent when reversed
    created_at: Mapped[datetime]


class PointsRefundApplied(Base):
    """A refund whose points effects are done (the order was known when it was applied)."""

    __tablename__ = "points_refunds_applied"

    refund_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(36), index=True)
    applied_at: Mapped[datetime]


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _list(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _ceil_share(whole: int, part: int, of: int) -> int:
    """ceil(whole × part / of): what a refund of `part` of `of` takes back (all of it at part == of)."""
    return whole if of <= 0 else -(-whole * part // of)


@dataclass
class _Context:
    """Rules and the store's catalog categories, loaded once per batch and only if needed."""

    session: AsyncSession
    store: str
    now: datetime
    _rules: PointsRules | None = None
    _levels: LevelsConfig | None = None
    _categories: dict[str, str] | None = None
    seen: set[str] = field(default_factory=set)
    earned_before: set[str] = field(default_factory=set)

    async def rules(self) -> PointsRules:
        if self._rules is None:
            self._rules = await load_points_rules(self.session)
        return self._rules

    async def levels(self) -> LevelsConfig:
        if self._levels is None:
            self._levels = await load_levels(self.session)
        return self._levels

    async def category(self, line: dict[str, Any]) -> str:
        """The line's category: its own `category` field if the till sent one, else the catalog's."""
        own = line.get("category")
        if isinstance(own, str) and own:
            return own
        if self._categories is None:
            snapshot = await self.session.get(StoreSnapshot, (self.store, "catalog"))
            products = _list((snapshot.body if snapshot is not None else {}).get("products"))
            self._categories = {
                str(p.get("sku")): str(p.get("category") or "") for p in products if p.get("sku") is not None
            }
        return self._categories.get(str(line.get("sku")), "")


async def _lock_order(session: AsyncSession, order_id: str) -> None:
    """Serialise an order's and its refunds' points work across hub instances (PostgreSQL).

    A refund can reach one hub instance while its order is still being ingested by another;
    each side takes this lock before looking for the other, so one of them sees the other.
    """
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        key = f"points:{order_id}"
        await session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(key, 0))))


async def earn_points_for(ctx: _Context, order: dict[str, Any], multiplier_bp: int) -> tuple[int, int]:
    """(spend_fen, points) a paid order earns: one floor over the whole order.

    spend = total − tenders of `no_earn_methods` (points do not earn points);
    points = ⌊Σ(line × category bp) / Σ line × spend × level bp × earn_points / (10⁸ × earn_per_fen)⌋.
    Lines carry no category on the wire, so it comes from the store's catalog snapshot by sku.
    """
    rules = await ctx.rules()
    total = _int(order.get("total_fen")) or 0
    excluded = sum(
        _int(t.get("amount_fen")) or 0
        for t in _list(order.get("tenders"))
        if t.get("method") in rules.no_earn_methods
    )
    spend = max(0, total - excluded)
    subtotal = weighted = 0
    for line in _list(order.get("lines")):
        amount = _int(line.get("total_fen"))
        if amount is None or amount <= 0:
            continue
        bp = BP
        if rules.category_multipliers_bp:
            bp = rules.category_multipliers_bp.get(await ctx.category(line), BP)
        subtotal += amount
        weighted += amount * bp
    if subtotal <= 0 or spend <= 0:
        return spend, 0
    earned = weighted * spend * multiplier_bp * rules.earn_points // (subtotal * BP * BP * rules.earn_per_fen)
    return spend, earned


async def _earn(ctx: _Context, order: dict[str, Any]) -> None:
    order_id, raw_member = str(order.get("id")), order.get("member_id")
    if not isinstance(raw_member, str) or not raw_member:
        return
    try:
        member_id = (await get_member(ctx.session, raw_member)).id
    except NotFound:
        log.warning(
            "order %s names member %s, whom the hub does not know; no points earned", order_id, raw_member
        )
        return
    if order_id in ctx.earned_before:
        return
    config = await ctx.levels()
    level, _ = await levels.effective_level(ctx.session, member_id, config)  # the level when it was bought
    spend, earned = await earn_points_for(ctx, order, BP if level is None else level.points_multiplier_bp)
    source = f"order:{order_id}"
    # Level row first (spend and points earned in one update), then the points row.
    await levels.add_progress(
        ctx.session,
        member_id,
        source=source,
        now=ctx.now,
        spend_fen=spend,
        points_earned=earned,
        config=config,
    )
    lot_id = None
    if earned > 0:
        rules = await ctx.rules()
        closed = order.get("closed_at")
        try:  # validity counts from the sale, not from when an offline store synced it
            sold = datetime.fromisoformat(closed) if isinstance(closed, str) else ctx.now
        except ValueError:
            sold = ctx.now
        sold = sold if sold.tzinfo is not None else sold.replace(tzinfo=UTC)
        lot_id = await points.credit(
            ctx.session,
            member_id,
            earned,
            kind="earn",
            source=source,
            expires_at=rules.expiry.expires_at(min(sold, ctx.now)),
            now=ctx.now,
            order_id=order_id,
            note=f"{spend} fen at {ctx.store}",
        )
    ctx.session.add(
        PointsEarning(
            order_id=order_id,
            member_id=member_id,
            store=ctx.store,
            base_fen=_int(order.get("total_fen")) or 0,
            spend_fen=spend,
            points=earned,
            lot_id=lot_id,
            refunded_fen=0,
            reversed_points=0,
            reversed_spend_fen=0,
            unrecovered=0,
            created_at=ctx.now,
        )
    )  # flushed with the next query or at the end of the batch


async def _reverse(ctx: _Context, order_id: str, refunded_fen: int, source: str) -> None:
    """Take back what a refund of `refunded_fen` more of the order reverses (cumulative, ceil)."""
    earning = (
        await ctx.session.execute(
            select(PointsEarning)
            .where(PointsEarning.order_id == order_id)
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if earning is None:
        return
    refunded = min(earning.base_fen, earning.refunded_fen + max(0, refunded_fen))
    take = _ceil_share(earning.points, refunded, earning.base_fen) - earning.reversed_points
    spend = _ceil_share(earning.spend_fen, refunded, earning.base_fen) - earning.reversed_spend_fen
    earning.refunded_fen = refunded
    earning.reversed_points += take
    earning.reversed_spend_fen += spend
    if take <= 0 and spend <= 0:
        return
    try:
        member_id = (await get_member(ctx.session, earning.member_id)).id
    except NotFound:  # cannot happen (the foreign key), but never fail a batch for it
        return
    await levels.add_progress(
        ctx.session,
        member_id,
        source=source,
        now=ctx.now,
        spend_fen=-spend,
        points_earned=-take,
        config=await ctx.levels(),
    )
    if take > 0:
        debit = await points.debit(
            ctx.session,
            member_id,
            take,
            kind="reverse",
            source=source,
            now=ctx.now,
            order_id=order_id,
            first_lot=earning.lot_id,
            partial=True,
            note=f"refund of {refunded} of {earning.base_fen} fen reverses {take} of {earning.points} points",
        )
        if debit.points < take:
            earning.unrecovered += take - debit.points
            log.warning(
                "%s: %d points to reverse were already spent by member %s",
                source,
                take - debit.points,
                member_id,
            )
    await ctx.session.flush()


def _points_tenders(order: dict[str, Any]) -> dict[int, tuple[str, int]]:
    """The order's points tenders: index → (txn id, amount_fen)."""
    found: dict[int, tuple[str, int]] = {}
    for position, tender in enumerate(_list(order.get("tenders"))):
        reference, amount = tender.get("reference"), _int(tender.get("amount_fen"))
        if tender.get("method") == _METHOD and isinstance(reference, str) and reference and amount:
            index = _int(tender.get("index"))
            found[position if index is None else index] = (reference, amount)
    return found


async def _lock_member(ctx: _Context, order: dict[str, Any]) -> None:
    """Lock the order's member's level row before returns take their points row (lock order)."""
    raw = order.get("member_id")
    if isinstance(raw, str) and raw:
        try:
            member_id = (await get_member(ctx.session, raw)).id
        except NotFound:
            return
        await levels.lock_level(ctx.session, member_id, ctx.now)


async def _voided(ctx: _Context, order: dict[str, Any]) -> None:
    order_id = str(order.get("id"))
    source = f"void:{order_id}"
    await _lock_member(ctx, order)
    for txn_id, amount in _points_tenders(order).values():
        await return_points(ctx.session, txn_id, amount, source=source, now=ctx.now)
    await _reverse(ctx, order_id, _int(order.get("total_fen")) or 0, source)


def _matters(order: dict[str, Any]) -> bool:
    """Whether points care about this order: it has a member, or was paid partly with points."""
    member_id = order.get("member_id")
    return (isinstance(member_id, str) and bool(member_id)) or bool(_points_tenders(order))


async def _refund(ctx: _Context, body: dict[str, Any], *, locked: bool = False) -> None:
    refund = body.get("refund") if isinstance(body.get("refund"), dict) else {}
    assert isinstance(refund, dict)  # noqa: S101 - for the type checker
    refund_id, order_id = str(refund.get("id")), str(body.get("order_id"))
    if refund_id in ctx.seen:
        return
    # Most refunds are of orders without a member or points: one lookup and done.
    order = await ctx.session.get(HubOrder, order_id)
    doc = order.doc if order is not None and isinstance(order.doc, dict) else {}
    if order is not None and not _matters(doc):
        return
    if not locked:
        await _lock_order(ctx.session, order_id)
        if order is None:  # it may have been committed by another hub instance meanwhile
            order = await ctx.session.get(HubOrder, order_id, populate_existing=True)
            doc = order.doc if order is not None and isinstance(order.doc, dict) else {}
    if order is None:
        log.info(
            "refund %s arrived before order %s; its points are settled when the order arrives",
            refund_id,
            order_id,
        )
        return
    if not _matters(doc) or await ctx.session.get(PointsRefundApplied, refund_id) is not None:
        return
    ctx.seen.add(refund_id)
    ctx.session.add(PointsRefundApplied(refund_id=refund_id, order_id=order_id, applied_at=ctx.now))
    source = f"refund:{refund_id}"
    await _lock_member(ctx, doc)
    tenders = _points_tenders(doc)
    raw = refund.get("tenders")
    for key, fen in sorted((raw if isinstance(raw, dict) else {}).items(), key=lambda kv: str(kv[0])):
        try:
            index = int(key)
        except (TypeError, ValueError):
            continue
        if index in tenders and _int(fen):
            await return_points(ctx.session, tenders[index][0], int(fen), source=source, now=ctx.now)
    await _reverse(ctx, order_id, _int(refund.get("total_fen")) or 0, source)


async def points_from_sales(
    session: AsyncSession, store: str, orders: list[dict[str, Any]], refunds: list[dict[str, Any]]
) -> None:
    """Sale listener: points for new orders and refunds of one batch (see the module docstring)."""
    relevant = [order for order in orders if _matters(order)]
    if not relevant and not refunds:
        return
    ctx = _Context(session, store, datetime.now(UTC))
    if relevant:  # ingest calls once per order; this guards against a hand-replayed batch
        ids = [str(order.get("id")) for order in relevant]
        known = await session.scalars(select(PointsEarning.order_id).where(PointsEarning.order_id.in_(ids)))
        ctx.earned_before = set(known.all())
    # Members in id order: two batches touching the same members lock them in the same order.
    for order in sorted(relevant, key=lambda o: str(o.get("member_id") or "")):
        await _lock_order(session, str(order.get("id")))
        if order.get("status") == "paid":
            await _earn(ctx, order)
        elif order.get("status") == "voided":
            await _voided(ctx, order)
    if relevant:  # refunds of these orders that arrived before them (this batch's come below)
        early = await session.scalars(
            select(HubRefund)
            .where(HubRefund.order_id.in_(ids))
            .order_by(HubRefund.business_day, HubRefund.id)
        )
        for row in early.all():
            if isinstance(row.doc, dict):
                await _refund(ctx, row.doc, locked=True)
    for body in refunds:
        await _refund(ctx, body)

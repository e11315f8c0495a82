"""Safety stock and replenishment: per store and SKU min/max or days of cover, the list, alerts.

For one store and SKU, over the last `window_days` (default 28):

- `sold` = net sales in the window (−Σ qty of `sale` and `refund` movements, at least 0);
  velocity `v = sold / window_days` per day, kept as an exact fraction.
- a rule with fixed levels: `min` and `max` as given; safety stock = `min`.
- a rule with `cover_days`: `min = ⌈v × (lead_time_days + safety_days)⌉` (the reorder point),
  `max = ⌈v × (lead_time_days + safety_days + cover_days)⌉`, safety stock `⌈v × safety_days⌉`.
- position = on-hand + in transit to the store + still on open purchase orders.
- when position ≤ min, the need is `max − position`; other stores' surplus (on-hand above
  their own max) is suggested as transfers first, and what is left is bought, rounded up
  to the order multiple.

A store's default rule (sku "*") applies to every SKU with a stock level there that has no
rule of its own. `docs/inventory.md` walks through an example the tests replay.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

from sqlalchemy import delete, func, select

from hub.db import AsyncSession
from hub.errors import NotFound
from hub.models import Store
from hub.purchasing_tables import DEFAULT_RULE, PoState, PurchaseOrder, PurchaseOrderLine, ReplenishmentRule
from hub.stock import MAX_QTY_MILLI, StockError, check_sku, format_milli
from hub.stock_tables import MovementKind, StockLevel, StockMovement
from hub.transfers import LineIn, create_transfer
from hub.transfers_views import TransferView
from protocol.money import round_half_up

__all__ = [
    "DEFAULT_WINDOW_DAYS",
    "Alerts",
    "RuleIn",
    "Suggestion",
    "delete_rule",
    "line_json",
    "list_rules",
    "replenishment_list",
    "rule_json",
    "set_rule",
    "store_alerts",
    "suggestion_to_transfer",
]

DEFAULT_WINDOW_DAYS = 28
_MAX_DAYS = 366
_OPEN_PO = (PoState.DRAFT.value, PoState.SENT.value, PoState.PARTIALLY_RECEIVED.value)


@dataclass(frozen=True)
class RuleIn:
    """A rule as a person sets it: `min_milli` and `max_milli`, or `cover_days`."""

    min_milli: int | None = None
    max_milli: int | None = None
    cover_days: int | None = None
    safety_days: int = 0
    lead_time_days: int = 0
    order_multiple_milli: int = 1000

    def check(self) -> None:
        """`StockError` saying what is wrong with the rule."""
        fixed = self.min_milli is not None or self.max_milli is not None
        if fixed == (self.cover_days is not None):
            raise StockError("a rule has either min and max, or cover_days (days of sales to keep)")
        if fixed:
            if self.min_milli is None or self.max_milli is None:
                raise StockError("a min/max rule needs both min and max")
            if not 0 <= self.min_milli <= self.max_milli <= MAX_QTY_MILLI:
                raise StockError("min and max must be 0 or more, with min at most max")
        elif self.cover_days is not None and not 1 <= self.cover_days <= _MAX_DAYS:
            raise StockError(f"cover_days must be from 1 to {_MAX_DAYS}")
        for name in ("safety_days", "lead_time_days"):
            if not 0 <= getattr(self, name) <= _MAX_DAYS:
                raise StockError(f"{name} must be from 0 to {_MAX_DAYS}")
        if not 1 <= self.order_multiple_milli <= MAX_QTY_MILLI:
            raise StockError("order_multiple must be greater than 0")


async def set_rule(
    session: AsyncSession, store: str, sku: str, rule: RuleIn, *, actor: str
) -> ReplenishmentRule:
    """Create or replace the rule of `sku` ("*": the store's default) at `store`."""
    if sku != DEFAULT_RULE:
        check_sku(sku)
    rule.check()
    if await session.get(Store, store) is None:
        raise NotFound(f"unknown store '{store}'")
    row = await session.get(ReplenishmentRule, (store, sku))
    if row is None:
        row = ReplenishmentRule(store=store, sku=sku)
        session.add(row)
    row.min_milli, row.max_milli, row.cover_days = rule.min_milli, rule.max_milli, rule.cover_days
    row.safety_days, row.lead_time_days = rule.safety_days, rule.lead_time_days
    row.order_multiple_milli = rule.order_multiple_milli
    row.updated_by, row.updated_at = actor, datetime.now(UTC)
    await session.flush()
    return row


async def delete_rule(session: AsyncSession, store: str, sku: str) -> None:
    """Drop a rule; `NotFound` if there is none."""
    gone = await session.execute(
        delete(ReplenishmentRule).where(ReplenishmentRule.store == store, ReplenishmentRule.sku == sku)
    )
    if gone.rowcount != 1:  # type: ignore[attr-defined]
        raise NotFound(f"store '{store}' has no replenishment rule for '{sku}'")


async def list_rules(
    session: AsyncSession, store: str, *, limit: int = 100, offset: int = 0
) -> tuple[list[ReplenishmentRule], bool]:
    """A store's rules by SKU, and whether more follow."""
    rows = (
        await session.scalars(
            select(ReplenishmentRule)
            .where(ReplenishmentRule.store == store)
            .order_by(ReplenishmentRule.sku)
            .limit(limit + 1)
            .offset(offset)
        )
    ).all()
    return list(rows[:limit]), len(rows) > limit


@dataclass
class Suggestion:
    """One SKU of a store's replenishment list."""

    store: str
    sku: str
    on_hand_milli: int
    in_transit_milli: int
    on_order_milli: int
    sold_milli: int
    window_days: int
    safety_milli: int
    min_milli: int
    max_milli: int
    need_milli: int = 0
    transfers: list[tuple[str, int]] = field(default_factory=list)  # (from store, qty)
    buy_milli: int = 0

    @property
    def velocity(self) -> Fraction:
        """Thousandths sold per day over the window."""
        return Fraction(self.sold_milli, self.window_days)

    @property
    def position_milli(self) -> int:
        """What the store has or has coming."""
        return self.on_hand_milli + self.in_transit_milli + self.on_order_milli

    @property
    def below_safety(self) -> bool:
        """On-hand under the safety stock: an alert."""
        return self.on_hand_milli < self.safety_milli


def _levels(rule: ReplenishmentRule, sold: int, window_days: int) -> tuple[int, int, int]:
    """(safety, min, max) of a rule when `sold` went in `window_days`: ⌈sold × days / window⌉ in integers."""
    if rule.cover_days is None:
        low, high = rule.min_milli or 0, rule.max_milli or 0
        return low, low, high
    base = rule.lead_time_days + rule.safety_days
    return (
        -(-sold * rule.safety_days // window_days),
        -(-sold * base // window_days),
        -(-sold * (base + rule.cover_days) // window_days),
    )


def _round_up(qty: int, multiple: int) -> int:
    return -(-qty // multiple) * multiple


async def _rules(
    session: AsyncSession, stores: list[str], skus: list[str] | None
) -> dict[tuple[str, str], Any]:
    query = select(ReplenishmentRule).where(ReplenishmentRule.store.in_(stores))
    if skus is not None:
        query = query.where(ReplenishmentRule.sku.in_([*skus, DEFAULT_RULE]))
    return {(r.store, r.sku): r for r in (await session.scalars(query)).all()}


async def _sold(
    session: AsyncSession, stores: list[str], since: datetime, skus: list[str] | None = None
) -> dict[tuple[str, str], int]:
    """Net sales per (store, sku) since `since`, in thousandths."""
    query = (
        select(StockMovement.store, StockMovement.sku, func.sum(StockMovement.qty_milli))
        .where(
            StockMovement.store.in_(stores),
            StockMovement.kind.in_([MovementKind.SALE.value, MovementKind.REFUND.value]),
            StockMovement.created_at >= since,
        )
        .group_by(StockMovement.store, StockMovement.sku)
    )
    if skus is not None:
        query = query.where(StockMovement.sku.in_(skus))
    return {(store, sku): max(0, -int(total)) for store, sku, total in (await session.execute(query)).all()}


async def _on_order(session: AsyncSession, store: str) -> dict[str, int]:
    query = (
        select(
            PurchaseOrderLine.sku, func.sum(PurchaseOrderLine.qty_milli - PurchaseOrderLine.received_milli)
        )
        .join(PurchaseOrder, PurchaseOrder.id == PurchaseOrderLine.po_id)
        .where(PurchaseOrder.store == store, PurchaseOrder.state.in_(_OPEN_PO))
        .group_by(PurchaseOrderLine.sku)
    )
    return {sku: int(qty) for sku, qty in (await session.execute(query)).all()}


async def _surplus(
    session: AsyncSession, store: str, skus: list[str], since: datetime, window_days: int
) -> dict[str, list[tuple[str, int]]]:
    """Per SKU, other stores' on-hand above their own max (largest first); only stores with a rule."""
    if not skus:
        return {}
    donors = sorted(
        set(
            (
                await session.scalars(
                    select(ReplenishmentRule.store).where(
                        ReplenishmentRule.store != store,
                        ReplenishmentRule.sku.in_([*skus, DEFAULT_RULE]),
                    )
                )
            ).all()
        )
    )
    if not donors:
        return {}
    rules = await _rules(session, donors, skus)
    levels = (
        await session.execute(
            select(StockLevel.store, StockLevel.sku, StockLevel.on_hand_milli).where(
                StockLevel.store.in_(donors), StockLevel.sku.in_(skus), StockLevel.on_hand_milli > 0
            )
        )
    ).all()
    # donors' velocity only where a days-of-cover rule needs it: a min/max rule's max is fixed
    paced = sorted({store for (store, _), rule in rules.items() if rule.cover_days is not None})
    sold = await _sold(session, paced, since, skus) if paced else {}
    found: dict[str, list[tuple[str, int]]] = {}
    for donor, sku, on_hand in levels:
        rule = rules.get((donor, sku)) or rules.get((donor, DEFAULT_RULE))
        if rule is None:
            continue
        _, _, high = _levels(rule, sold.get((donor, sku), 0), window_days)
        if on_hand > high:
            found.setdefault(sku, []).append((donor, on_hand - high))
    for offers in found.values():
        offers.sort(key=lambda o: (-o[1], o[0]))
    return found


async def replenishment_list(
    session: AsyncSession,
    store: str,
    *,
    now: datetime | None = None,
    window_days: int = DEFAULT_WINDOW_DAYS,
    transfers: bool = True,
    everything: bool = False,
) -> list[Suggestion]:
    """The store's SKUs under rules, by SKU: only those to replenish, or all of them (`everything`)."""
    if not 1 <= window_days <= _MAX_DAYS:
        raise StockError(f"the sales window must be from 1 to {_MAX_DAYS} days")
    if await session.get(Store, store) is None:
        raise NotFound(f"unknown store '{store}'")
    now = now or datetime.now(UTC)
    since = now - timedelta(days=window_days)
    rules = await _rules(session, [store], None)
    if not rules:
        return []
    default = rules.get((store, DEFAULT_RULE))
    query = select(StockLevel.sku, StockLevel.on_hand_milli, StockLevel.in_transit_in_milli).where(
        StockLevel.store == store
    )
    if default is None:
        query = query.where(StockLevel.sku.in_([sku for _, sku in rules]))
    levels = {sku: (on_hand, transit) for sku, on_hand, transit in (await session.execute(query)).all()}
    chosen: dict[str, ReplenishmentRule] = dict.fromkeys(levels, default) if default else {}
    chosen.update({sku: rule for (_, sku), rule in rules.items() if sku != DEFAULT_RULE})
    sold = await _sold(session, [store], since)
    on_order = await _on_order(session, store)
    lines = []
    for sku, rule in sorted(chosen.items()):
        sold_milli = sold.get((store, sku), 0)
        safety, low, high = _levels(rule, sold_milli, window_days)
        on_hand, transit = levels.get(sku, (0, 0))
        position = on_hand + transit + on_order.get(sku, 0)
        need = high - position if position <= low and high > position else 0
        if need or everything:
            lines.append(
                Suggestion(
                    store,
                    sku,
                    on_hand,
                    transit,
                    on_order.get(sku, 0),
                    sold_milli,
                    window_days,
                    safety,
                    low,
                    high,
                    need,
                )
            )
    wanting = [line for line in lines if line.need_milli]
    offers = await _surplus(session, store, [x.sku for x in wanting], since, window_days) if transfers else {}
    for line in wanting:
        rest = line.need_milli
        for donor, spare in offers.get(line.sku, []):
            if rest <= 0:
                break
            take = min(rest, spare)
            line.transfers.append((donor, take))
            rest -= take
        line.buy_milli = _round_up(rest, chosen[line.sku].order_multiple_milli) if rest > 0 else 0
    return lines


@dataclass(frozen=True)
class Alerts:
    """What a store manager should look at: stock under safety, and stock that does not sell."""

    below_safety: list[Suggestion]
    slow_movers: list[tuple[str, int]]  # (sku, on-hand) with no sale in `slow_days`


async def store_alerts(
    session: AsyncSession,
    store: str,
    *,
    slow_days: int = 30,
    now: datetime | None = None,
    window_days: int = DEFAULT_WINDOW_DAYS,
) -> Alerts:
    """Below-safety SKUs (under a rule) and slow movers (on-hand > 0, no sale in `slow_days`)."""
    if not 1 <= slow_days <= _MAX_DAYS:
        raise StockError(f"slow_days must be from 1 to {_MAX_DAYS}")
    now = now or datetime.now(UTC)
    lines = await replenishment_list(
        session, store, now=now, window_days=window_days, transfers=False, everything=True
    )
    sold_recently = set(
        (
            await session.scalars(
                select(StockMovement.sku)
                .where(
                    StockMovement.store == store,
                    StockMovement.kind == MovementKind.SALE.value,
                    StockMovement.created_at >= now - timedelta(days=slow_days),
                )
                .distinct()
            )
        ).all()
    )
    stocked = (
        await session.execute(
            select(StockLevel.sku, StockLevel.on_hand_milli)
            .where(StockLevel.store == store, StockLevel.on_hand_milli > 0)
            .order_by(StockLevel.sku)
        )
    ).all()
    slow = [(sku, on_hand) for sku, on_hand in stocked if sku not in sold_recently]
    return Alerts([line for line in lines if line.below_safety], slow)


async def suggestion_to_transfer(
    session: AsyncSession, store: str, from_store: str, *, actor: str, now: datetime | None = None
) -> TransferView:
    """A draft transfer from `from_store` to `store` of everything the list suggests moving between them."""
    lines = await replenishment_list(session, store, now=now)
    moves = [
        LineIn(line.sku, qty)
        for line in lines
        for donor, qty in line.transfers
        if donor == from_store and qty > 0
    ]
    if not moves:
        raise StockError(f"the replenishment list of '{store}' suggests no transfer from '{from_store}'")
    return await create_transfer(
        session, from_store, store, moves, actor=actor, note="suggested by the replenishment list"
    )


def rule_json(row: ReplenishmentRule) -> dict[str, Any]:
    """A rule as the API returns it."""
    fixed = row.cover_days is None
    return {
        "store": row.store,
        "sku": row.sku,
        "min": format_milli(row.min_milli) if fixed and row.min_milli is not None else None,
        "max": format_milli(row.max_milli) if fixed and row.max_milli is not None else None,
        "cover_days": row.cover_days,
        "safety_days": row.safety_days,
        "lead_time_days": row.lead_time_days,
        "order_multiple": format_milli(row.order_multiple_milli),
        "updated_by": row.updated_by,
        "updated_at": row.updated_at.isoformat(),
    }


def line_json(line: Suggestion) -> dict[str, Any]:
    """A replenishment line as the API returns it; velocity rounded to 0.001 a day for reading."""
    return {
        "store": line.store,
        "sku": line.sku,
        "on_hand": format_milli(line.on_hand_milli),
        "in_transit": format_milli(line.in_transit_milli),
        "on_order": format_milli(line.on_order_milli),
        "position": format_milli(line.position_milli),
        "sold": format_milli(line.sold_milli),
        "velocity_per_day": format_milli(round_half_up(line.velocity.numerator, line.velocity.denominator)),
        "safety": format_milli(line.safety_milli),
        "min": format_milli(line.min_milli),
        "max": format_milli(line.max_milli),
        "below_safety": line.below_safety,
        "need": format_milli(line.need_milli),
        "transfers": [{"from_store": s, "qty": format_milli(q)} for s, q in line.transfers],
        "buy": format_milli(line.buy_milli),
    }

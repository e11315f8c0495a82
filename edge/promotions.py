"""Promotions at the till: the engine run on every order change, with the till's own clock.

The rule set is the store's `promotions` snapshot (kept by `edge.snapshots`); the facts
the engine needs about a line (category, cost) come from the catalog; the time is the
till's clock in the store's time zone, so a rule that starts at 20:00 applies at 20:00
even when the hub has been out of reach since noon. Pure functions over `Order`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from edge.catalog import Catalog
from edge.errors import TillError
from edge.orders import Order, reprice
from protocol.promotion_rules import Cart, CartLine, Rule, RuleSet
from protocol.promotions import evaluate

__all__ = [
    "TillPromotions",
    "apply_promotions",
    "attach_coupon",
    "detach_coupon",
    "member_uses_today",
    "needs_member_uses",
]

MAX_COUPONS = 5  # per order; the engine accepts more, no customer presents more


class TillPromotions:
    """Where the till gets the current rule set and the catalog from (both may change any time)."""

    def __init__(self, rules: Callable[[], RuleSet], catalog: Callable[[], Catalog | None]) -> None:
        self._rules = rules
        self._catalog = catalog

    def rules(self) -> RuleSet:
        """The rule set of the latest applied promotions snapshot (empty before the first)."""
        return self._rules()

    def catalog(self) -> Catalog | None:
        """The catalog the lines' categories and costs come from."""
        return self._catalog()


def _cart(order: Order, catalog: Catalog | None, local_time: datetime, uses: Mapping[str, int]) -> Cart:
    lines = []
    for line in order.lines:
        product = catalog.by_sku(line.sku) if catalog is not None else None
        fields: dict[str, Any] = {
            "line_id": line.line_id,
            "sku": line.sku,
            "category": product.category if product is not None else "",
            "qty": line.qty,
            "unit_price_fen": line.unit_price_fen,
            "total_fen": line.total_fen,
            "cost_fen": product.cost_fen if product is not None else None,
            "expires_on": line.expires_on,
        }
        lines.append(CartLine.model_validate(fields))
    member = order.member
    return Cart(
        store=order.store,
        channel="pos",
        local_time=local_time,
        member_id=member.id if member is not None else None,
        member_level=member.level if member is not None and member.level else None,
        member_segments=member.segments if member is not None else [],
        member_uses_today=dict(uses),
        coupons=order.coupons,
        lines=lines,
    )


def apply_promotions(
    order: Order,
    promotions: TillPromotions,
    now: datetime,
    zone: ZoneInfo,
    uses_today: Mapping[str, int] | None = None,
) -> Order:
    """Price the order from scratch, then run the engine; the lines carry each rule's share.

    Starting from `reprice` every time is what makes this idempotent: nothing the last
    evaluation did (a discount, a gift) is fed into the next one. `uses_today` counts,
    per rule, the member's other orders today (for per-member daily caps).
    """
    base = reprice(order)
    rules = promotions.rules()
    if not rules.rules and not base.coupons:
        return base
    cart = _cart(base, promotions.catalog(), now.astimezone(zone), uses_today or {})
    result = evaluate(rules, cart)
    by_id = {line.line_id: line for line in result.lines}
    lines = []
    for line in base.lines:
        priced = by_id[line.line_id]
        lines.append(
            line.model_copy(
                update={
                    "total_fen": priced.total_fen,
                    "promo_discount_fen": priced.discount_fen,
                    "promotions": priced.allocations,
                }
            )
        )
    return base.model_copy(
        update={
            "lines": lines,
            "subtotal_fen": result.subtotal_fen,
            "discount_fen": result.discount_fen,
            "total_fen": result.total_fen,
            "promotions": result.applied,
            "gifts": result.gifts,
            "promotions_version": rules.version,
        }
    )


def needs_member_uses(order: Order, promotions: TillPromotions) -> bool:
    """Whether a per-member daily cap could apply: only then are today's orders counted."""
    if order.member is None:
        return False
    rules = (*promotions.rules().rules, *order.coupons)
    return any(rule.per_member_daily_limit is not None for rule in rules)


def member_uses_today(order: Order, paid_today: list[Order]) -> dict[str, int]:
    """Per rule, how many orders of the member used it today: the hub's count at lookup or
    this till's paid orders since, whichever is more (the same order is never counted twice)."""
    member = order.member
    if member is None:
        return {}
    local: dict[str, int] = {}
    for other in paid_today:
        if other.member_id == member.id and other.id != order.id:
            for rule_id in {p.rule_id for p in other.promotions}:
                local[rule_id] = local.get(rule_id, 0) + 1
    hub = member.promotion_uses_today
    return {rule_id: max(hub.get(rule_id, 0), local.get(rule_id, 0)) for rule_id in hub.keys() | local.keys()}


def attach_coupon(order: Order, coupon: Rule) -> Order:
    """Add a presented coupon (a rule instance with its code) to an open, unpaid order."""
    order.require_editable()
    if coupon.code is None:
        raise TillError(
            f"coupon rule {coupon.id!r} has no code; only a redeemed coupon can be attached", status=422
        )
    if any(c.code == coupon.code for c in order.coupons):
        return order  # attaching the same coupon again changes nothing
    if len(order.coupons) >= MAX_COUPONS:
        raise TillError(f"order {order.number:04d} already has {MAX_COUPONS} coupons", status=409)
    return order.model_copy(update={"coupons": [*order.coupons, coupon]})


def detach_coupon(order: Order, code: str) -> Order:
    """Take a coupon off an open, unpaid order (404 if it is not on it)."""
    order.require_editable()
    kept = [c for c in order.coupons if c.code != code]
    if len(kept) == len(order.coupons):
        raise TillError(f"order {order.number:04d} has no coupon {code}", status=404)
    return order.model_copy(update={"coupons": kept})

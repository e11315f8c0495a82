"""What each rule type takes off, on the engine's working copy of the cart.

The engine (`protocol.promotions`) decides which rules apply in which order; the
functions here compute one rule's outcome on the lines as they stand. Pure, int fen,
rounding only through protocol.money.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction

from protocol.categories import category_keys
from protocol.money import allocate, apply_basis_points, mul_fraction, round_half_up
from protocol.promotion_rules import (
    BASIS_POINTS,
    BundleRule,
    BuyXGetYRule,
    Cart,
    CartLine,
    EveryThresholdRule,
    Gift,
    GiftRule,
    LineAllocation,
    NthItemRule,
    Rule,
    Scope,
    ThresholdRule,
)

__all__ = [
    "Index",
    "Line",
    "Outcome",
    "bundle",
    "buy_x_get_y",
    "gift",
    "headroom",
    "line_rule",
    "nth_item",
    "open_lines",
    "open_to",
    "order_rule",
]


@dataclass(slots=True)
class Line:
    src: CartLine
    base: int
    cost_total: int | None
    units: int | None  # whole pieces; None for a weighed line, which unit rules skip
    net: int
    allocations: list[LineAllocation] = field(default_factory=list)
    groups: set[str] = field(default_factory=set)
    touched: bool = False
    locked: bool = False

    def unit_key(self) -> int:
        """Orders lines by the net price of one unit (units of a line share its net equally).

        net / units scaled by 10**8 and floored: two different unit prices of lines of at
        most 9999 units differ by at least 1/10**8, so the order is exact, in ints.
        """
        return self.net * 10**8 // (self.units or 1)


@dataclass(slots=True)
class Outcome:
    """What one rule would take off which lines (index → fen), and the gifts it would give."""

    amounts: dict[int, int]
    applications: int
    covered: list[int]
    gifts: list[Gift] = field(default_factory=list)
    saving: int = field(init=False)
    value: int = field(init=False)
    """What the customer gets: the saving plus what the gifts are worth."""

    def __post_init__(self) -> None:
        self.saving = sum(self.amounts.values()) if self.amounts else 0
        self.value = self.saving + sum(g.value_fen * g.qty for g in self.gifts) if self.gifts else self.saving


class Index:
    """Lines by sku and category, so a rule on three SKUs does not scan fifty lines."""

    def __init__(self, lines: list[Line]) -> None:
        self.all = list(range(len(lines)))
        self.by_sku: dict[str, list[int]] = {}
        self.by_category: dict[str, list[int]] = {}
        for index, line in enumerate(lines):
            self.by_sku.setdefault(line.src.sku, []).append(index)
            for key in category_keys(line.src.category):
                self.by_category.setdefault(key, []).append(index)

    def in_scope(self, scope: Scope, lines: list[Line]) -> list[int]:
        if not scope.skus and not scope.categories:
            found: Iterable[int] = self.all
        else:
            hits: set[int] = set()
            for sku in scope.skus:
                hits.update(self.by_sku.get(sku, ()))
            for category in scope.categories:
                hits.update(self.by_category.get(category, ()))
            found = sorted(hits)
        if scope.exclude_skus:
            excluded = set(scope.exclude_skus)
            return [i for i in found if lines[i].src.sku not in excluded]
        return list(found)


def open_to(rule: Rule, line: Line) -> bool:
    """Whether stacking and stock let the rule touch this line now."""
    if line.locked or (rule.group is not None and rule.group in line.groups):
        return False
    if not rule.stackable and line.touched:
        return False
    low, high = rule.stock_at_least_milli, rule.stock_below_milli
    if low is not None or high is not None:
        stock = line.src.stock_milli
        if stock is None or (low is not None and stock < low) or (high is not None and stock >= high):
            return False
    return True


def open_lines(rule: Rule, lines: list[Line], indices: Iterable[int]) -> list[int]:
    """The lines of `indices` open to the rule (`open_to`), in one pass: this runs for every rule."""
    if rule.stock_at_least_milli is not None or rule.stock_below_milli is not None:
        return [i for i in indices if open_to(rule, lines[i])]
    group, stackable = rule.group, rule.stackable
    return [
        i
        for i in indices
        if not lines[i].locked
        and (group is None or group not in lines[i].groups)
        and (stackable or not lines[i].touched)
    ]


def headroom(rule: Rule, line: Line) -> int:
    """How much more the rule may take off the line: down to its cost, or to zero if allowed."""
    floor = 0 if rule.allow_below_cost or line.cost_total is None else line.cost_total
    return max(0, line.net - floor)


def _times_qty(amount_fen: int, line: Line) -> int:
    # Whole pieces multiply exactly; only a weighed quantity needs rounding.
    return amount_fen * line.units if line.units is not None else mul_fraction(amount_fen, line.src.qty)


def _per_line(rule: Rule, line: Line, cart: Cart) -> int:
    """What a per-line rule would take off the line's current net total."""
    match rule.kind:
        case "percent_off":
            return apply_basis_points(line.net, rule.off_bp)
        case "amount_off":
            return _times_qty(rule.amount_fen, line)
        case "fixed_price":
            return line.net - _times_qty(rule.price_fen, line)
        case "member_price":
            price = rule.prices.get(cart.member_level or "")
            return 0 if price is None else line.net - _times_qty(price, line)
        case "near_expiry":
            if line.src.expires_on is None:
                return 0
            days = (line.src.expires_on - cart.local_time.date()).days
            tiers = [t for t in rule.tiers if 0 <= days <= t.within_days]
            if not tiers:  # not near enough, or already expired (never sold at a markdown)
                return 0
            nearest = min(tiers, key=lambda t: t.within_days)
            return apply_basis_points(line.net, nearest.off_bp)
    raise AssertionError(f"{rule.kind} is not a per-line rule")


def line_rule(rule: Rule, lines: list[Line], eligible: list[int], cart: Cart) -> Outcome:
    amounts: dict[int, int] = {}
    applications = 0
    remaining = rule.max_applications
    below_cost = rule.allow_below_cost
    for index in eligible:
        line = lines[index]
        if line.net <= (0 if below_cost or line.cost_total is None else line.cost_total):
            continue  # no room above the floor
        amount = _per_line(rule, line, cart)
        if amount <= 0:
            continue
        units = line.units or 1
        if remaining is not None:
            if remaining <= 0:
                break
            taken = min(units, remaining)
            # Only part of the line's units may take the price: that share of the saving.
            amount = round_half_up(amount * taken, units)
            remaining -= taken
            units = taken
        amounts[index] = amount
        applications += units
    return Outcome(amounts, applications, list(amounts))


def _pick_units(lines: list[Line], pool: list[int], count: int, *, cheapest: bool) -> dict[int, int]:
    """Choose `count` units from the lines in pool, cheapest (or dearest) unit price first."""
    order = sorted(
        pool,
        key=lambda i: (lines[i].unit_key() if cheapest else -lines[i].unit_key(), i),
    )
    chosen: dict[int, int] = {}
    for index in order:
        if count <= 0:
            break
        take = min(count, lines[index].units or 0)
        if take:
            chosen[index] = take
            count -= take
    return chosen


def _discount_units(lines: list[Line], chosen: dict[int, int], off_bp: int) -> dict[int, int]:
    # Units of one line share its net total equally; rounding once per line.
    return {
        i: round_half_up(lines[i].net * k * off_bp, (lines[i].units or 1) * BASIS_POINTS)
        for i, k in chosen.items()
    }


def _units(lines: list[Line], pool: list[int]) -> int:
    return sum(lines[i].units or 0 for i in pool)


def nth_item(rule: NthItemRule, lines: list[Line], eligible: list[int]) -> Outcome:
    pool = [i for i in eligible if lines[i].units]
    count = _units(lines, pool) // rule.n
    if rule.max_applications is not None:
        count = min(count, rule.max_applications)
    chosen = _pick_units(lines, pool, count, cheapest=rule.pick == "cheapest")
    return Outcome(_discount_units(lines, chosen, rule.off_bp), count, list(chosen))


def buy_x_get_y(rule: BuyXGetYRule, lines: list[Line], eligible: list[int], index: Index) -> Outcome:
    pool = [i for i in eligible if lines[i].units]
    if rule.reward_scope is None:
        sets = _units(lines, pool) // (rule.buy_qty + rule.get_qty)
        rewards = pool
    else:
        sets = _units(lines, pool) // rule.buy_qty
        triggers = set(pool)
        rewards = [
            i
            for i in index.in_scope(rule.reward_scope, lines)
            if i not in triggers and lines[i].units and open_to(rule, lines[i])
        ]
        sets = min(sets, -(-_units(lines, rewards) // rule.get_qty))
    if rule.max_applications is not None:
        sets = min(sets, rule.max_applications)
    chosen = _pick_units(lines, rewards, sets * rule.get_qty, cheapest=True)
    return Outcome(_discount_units(lines, chosen, rule.off_bp), sets, list(chosen))


def bundle(rule: BundleRule, lines: list[Line], index: Index) -> Outcome:
    by_sku: dict[str, list[int]] = {}
    for item in rule.items:
        by_sku[item.sku] = [
            i for i in index.by_sku.get(item.sku, ()) if lines[i].units and open_to(rule, lines[i])
        ]
    sets = min(_units(lines, by_sku[item.sku]) // item.qty for item in rule.items)
    if rule.max_applications is not None:
        sets = min(sets, rule.max_applications)
    if sets == 0:
        return Outcome({}, 0, [])
    chosen: dict[int, int] = {}
    for item in rule.items:
        need = item.qty * sets
        for i in by_sku[item.sku]:  # same SKU, so cart order is as good as any
            take = min(need, lines[i].units or 0)
            if take:
                chosen[i] = take
                need -= take
    weights = {i: round_half_up(lines[i].net * k, lines[i].units or 1) for i, k in sorted(chosen.items())}
    value = sum((Fraction(lines[i].net * k, lines[i].units or 1) for i, k in chosen.items()), Fraction(0))
    saving = round_half_up(value.numerator, value.denominator) - sets * rule.price_fen
    if saving <= 0:
        return Outcome({}, 0, [])
    parts = allocate(saving, list(weights.values()))
    return Outcome(dict(zip(weights, parts, strict=True)), sets, list(weights))


def _spread(rule: Rule, lines: list[Line], eligible: list[int], amount: int) -> dict[int, int]:
    """Spread an order-level amount over the lines in proportion to their totals, within floors.

    A line whose share would take it below its floor gives only its room above the floor,
    and what it could not take is spread over the other lines the same way.
    """
    free = [i for i in eligible if lines[i].net > 0]
    room = {i: headroom(rule, lines[i]) for i in free}
    amount = min(amount, sum(room.values()))
    shares: dict[int, int] = {}
    while free and amount > 0:
        parts = dict(zip(free, allocate(amount, [lines[i].net for i in free]), strict=True))
        full = [i for i in free if parts[i] > room[i]]
        if not full:
            shares.update(parts)
            break
        for i in full:
            shares[i] = room[i]
            amount -= room[i]
        free = [i for i in free if i not in full]
    return {i: shares[i] for i in sorted(shares) if shares[i] > 0}


def order_rule(rule: ThresholdRule | EveryThresholdRule, lines: list[Line], eligible: list[int]) -> Outcome:
    base = sum(lines[i].net for i in eligible)
    steps = base // rule.threshold_fen
    if isinstance(rule, ThresholdRule):
        steps = min(steps, 1)
    if rule.max_applications is not None:
        steps = min(steps, rule.max_applications)
    amounts = _spread(rule, lines, eligible, steps * rule.amount_fen)
    return Outcome(amounts, steps if amounts else 0, list(amounts))


def gift(rule: GiftRule, lines: list[Line], eligible: list[int]) -> Outcome:
    base = sum(lines[i].net for i in eligible)
    qty = sum((lines[i].src.qty for i in eligible), Fraction(0))
    if not eligible or base < rule.threshold_fen or qty < rule.min_qty:
        return Outcome({}, 0, [])
    times = base // rule.threshold_fen if rule.repeat else 1
    if rule.max_applications is not None:
        times = min(times, rule.max_applications)
    gift = Gift.model_construct(
        rule_id=rule.id,
        rule_name=rule.name,
        sku=rule.gift_sku,
        name=rule.gift_name,
        qty=rule.gift_qty * times,
        value_fen=rule.gift_value_fen,
    )
    return Outcome({}, times, list(eligible), [gift])

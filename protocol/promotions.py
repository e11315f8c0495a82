"""The promotion engine: one pure, deterministic evaluation shared by the till and the hub.

`evaluate(rules, cart)` returns per-line totals with the discount each rule took, gifts,
the applied rules and order totals; `validate_rules(rules)` reports authoring errors
with field paths. No I/O and no clock: the time comes in the cart. docs/promotions.md
explains the order of application, stacking, floors and rounding.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, time
from fractions import Fraction

from protocol.money import allocate, apply_basis_points, format_yuan, mul_fraction, round_half_up
from protocol.promotion_rules import (
    BASIS_POINTS,
    AppliedRule,
    BundleRule,
    BuyXGetYRule,
    Cart,
    CartLine,
    EveryThresholdRule,
    Gift,
    GiftRule,
    LineAllocation,
    LineResult,
    MemberPriceRule,
    NthItemRule,
    PromotionResult,
    Rule,
    RuleSet,
    Scope,
    ThresholdRule,
    TimeWindow,
)
from protocol.promotion_validate import validate_rules

__all__ = ["evaluate", "validate_rules"]

# With equal priorities: per-line prices first, then sets of units, then order totals, then gifts.
_STAGE = {
    "percent_off": 0,
    "amount_off": 0,
    "fixed_price": 0,
    "member_price": 0,
    "near_expiry": 0,
    "nth_item": 1,
    "buy_x_get_y": 1,
    "bundle": 1,
    "threshold": 2,
    "every_threshold": 2,
    "gift": 3,
}


@dataclass(slots=True)
class _Line:
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
class _Outcome:
    amounts: dict[int, int]
    applications: int
    covered: list[int]
    gifts: list[Gift] = field(default_factory=list)

    @property
    def saving(self) -> int:
        return sum(self.amounts.values())

    @property
    def value(self) -> int:
        """What the customer gets: the saving plus what the gifts are worth."""
        return self.saving + sum(g.value_fen * g.qty for g in self.gifts)


class _Index:
    """Lines by sku and category, so a rule on three SKUs does not scan fifty lines."""

    def __init__(self, lines: list[_Line]) -> None:
        self.all = list(range(len(lines)))
        self.by_sku: dict[str, list[int]] = {}
        self.by_category: dict[str, list[int]] = {}
        for index, line in enumerate(lines):
            self.by_sku.setdefault(line.src.sku, []).append(index)
            if line.src.category:
                self.by_category.setdefault(line.src.category, []).append(index)

    def in_scope(self, scope: Scope, lines: list[_Line]) -> list[int]:
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


@dataclass(frozen=True, slots=True)
class _Clock:
    """The cart's time, taken apart once for all rules."""

    now: datetime
    weekday: int
    wall: time

    @classmethod
    def of(cls, cart: Cart) -> _Clock:
        now = cart.local_time
        return cls(now, now.isoweekday(), now.time().replace(tzinfo=None))


def _in_window(window: TimeWindow, clock: _Clock) -> bool:
    now = clock.now
    if window.starts_at is not None and now < window.starts_at:
        return False
    if window.ends_at is not None and now >= window.ends_at:
        return False
    if window.weekdays and clock.weekday not in window.weekdays:
        return False
    if not window.hours:
        return True
    wall = clock.wall
    for span in window.hours:
        if span.start < span.end:
            if span.start <= wall < span.end:
                return True
        elif wall >= span.start or wall < span.end:  # runs past midnight
            return True
    return False


def _live(rule: Rule, cart: Cart, clock: _Clock) -> bool:
    """Whether the rule applies to this cart at all (store, channel, member, time, daily cap)."""
    if rule.stores and cart.store not in rule.stores:
        return False
    if rule.channels and cart.channel not in rule.channels:
        return False
    if rule.members_only and cart.member_id is None:
        return False
    if rule.member_levels and cart.member_level not in rule.member_levels:
        return False
    if rule.member_segments and not set(rule.member_segments) & set(cart.member_segments):
        return False
    if isinstance(rule, MemberPriceRule) and (
        cart.member_level is None or cart.member_level not in rule.prices
    ):
        return False
    limit = rule.per_member_daily_limit
    if limit is not None and cart.member_id is not None and cart.member_uses_today.get(rule.id, 0) >= limit:
        return False
    return _in_window(rule.window, clock)


def _open_to(rule: Rule, line: _Line) -> bool:
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


def _headroom(rule: Rule, line: _Line) -> int:
    """How much more the rule may take off the line: down to its cost, or to zero if allowed."""
    floor = 0 if rule.allow_below_cost or line.cost_total is None else line.cost_total
    return max(0, line.net - floor)


def _per_line(rule: Rule, line: _Line, cart: Cart) -> int:
    """What a per-line rule would take off the line's current net total."""
    qty = line.src.qty
    match rule.kind:
        case "percent_off":
            return apply_basis_points(line.net, rule.off_bp)
        case "amount_off":
            return mul_fraction(rule.amount_fen, qty)
        case "fixed_price":
            return line.net - mul_fraction(rule.price_fen, qty)
        case "member_price":
            price = rule.prices.get(cart.member_level or "")
            return 0 if price is None else line.net - mul_fraction(price, qty)
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


def _line_rule(rule: Rule, lines: list[_Line], eligible: list[int], cart: Cart) -> _Outcome:
    amounts: dict[int, int] = {}
    applications = 0
    remaining = rule.max_applications
    for index in eligible:
        line = lines[index]
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
    return _Outcome(amounts, applications, list(amounts))


def _pick_units(lines: list[_Line], pool: list[int], count: int, *, cheapest: bool) -> dict[int, int]:
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


def _discount_units(lines: list[_Line], chosen: dict[int, int], off_bp: int) -> dict[int, int]:
    # Units of one line share its net total equally; rounding once per line.
    return {
        i: round_half_up(lines[i].net * k * off_bp, (lines[i].units or 1) * BASIS_POINTS)
        for i, k in chosen.items()
    }


def _units(lines: list[_Line], pool: list[int]) -> int:
    return sum(lines[i].units or 0 for i in pool)


def _nth_item(rule: NthItemRule, lines: list[_Line], eligible: list[int]) -> _Outcome:
    pool = [i for i in eligible if lines[i].units]
    count = _units(lines, pool) // rule.n
    if rule.max_applications is not None:
        count = min(count, rule.max_applications)
    chosen = _pick_units(lines, pool, count, cheapest=rule.pick == "cheapest")
    return _Outcome(_discount_units(lines, chosen, rule.off_bp), count, list(chosen))


def _buy_x_get_y(rule: BuyXGetYRule, lines: list[_Line], eligible: list[int], index: _Index) -> _Outcome:
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
            if i not in triggers and lines[i].units and _open_to(rule, lines[i])
        ]
        sets = min(sets, -(-_units(lines, rewards) // rule.get_qty))
    if rule.max_applications is not None:
        sets = min(sets, rule.max_applications)
    chosen = _pick_units(lines, rewards, sets * rule.get_qty, cheapest=True)
    return _Outcome(_discount_units(lines, chosen, rule.off_bp), sets, list(chosen))


def _bundle(rule: BundleRule, lines: list[_Line], index: _Index) -> _Outcome:
    by_sku: dict[str, list[int]] = {}
    for item in rule.items:
        by_sku[item.sku] = [
            i for i in index.by_sku.get(item.sku, ()) if lines[i].units and _open_to(rule, lines[i])
        ]
    sets = min(_units(lines, by_sku[item.sku]) // item.qty for item in rule.items)
    if rule.max_applications is not None:
        sets = min(sets, rule.max_applications)
    if sets == 0:
        return _Outcome({}, 0, [])
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
        return _Outcome({}, 0, [])
    parts = allocate(saving, list(weights.values()))
    return _Outcome(dict(zip(weights, parts, strict=True)), sets, list(weights))


def _spread(rule: Rule, lines: list[_Line], eligible: list[int], amount: int) -> dict[int, int]:
    """Spread an order-level amount over the lines in proportion to their totals, within floors.

    A line whose share would take it below its floor gives only its room above the floor,
    and what it could not take is spread over the other lines the same way.
    """
    free = [i for i in eligible if lines[i].net > 0]
    room = {i: _headroom(rule, lines[i]) for i in free}
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


def _order_rule(
    rule: ThresholdRule | EveryThresholdRule, lines: list[_Line], eligible: list[int]
) -> _Outcome:
    base = sum(lines[i].net for i in eligible)
    steps = base // rule.threshold_fen
    if isinstance(rule, ThresholdRule):
        steps = min(steps, 1)
    if rule.max_applications is not None:
        steps = min(steps, rule.max_applications)
    amounts = _spread(rule, lines, eligible, steps * rule.amount_fen)
    return _Outcome(amounts, steps if amounts else 0, list(amounts))


def _gift(rule: GiftRule, lines: list[_Line], eligible: list[int]) -> _Outcome:
    base = sum(lines[i].net for i in eligible)
    qty = sum((lines[i].src.qty for i in eligible), Fraction(0))
    if not eligible or base < rule.threshold_fen or qty < rule.min_qty:
        return _Outcome({}, 0, [])
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
    return _Outcome({}, times, list(eligible), [gift])


def _outcome(
    rule: Rule, lines: list[_Line], cart: Cart, index: _Index, skip: frozenset[int] = frozenset()
) -> _Outcome:
    """What the rule would do to the cart as it stands, after floors and its own cap."""
    if isinstance(rule, BundleRule):
        outcome = _bundle(rule, lines, index)
    else:
        eligible = [
            i for i in index.in_scope(rule.scope, lines) if i not in skip and _open_to(rule, lines[i])
        ]
        if not eligible:
            return _Outcome({}, 0, [])
        if isinstance(rule, NthItemRule):
            outcome = _nth_item(rule, lines, eligible)
        elif isinstance(rule, BuyXGetYRule):
            outcome = _buy_x_get_y(rule, lines, eligible, index)
        elif isinstance(rule, ThresholdRule | EveryThresholdRule):
            outcome = _order_rule(rule, lines, eligible)
        elif isinstance(rule, GiftRule):
            return _gift(rule, lines, eligible)
        else:
            outcome = _line_rule(rule, lines, eligible, cart)
    amounts = {i: min(a, _headroom(rule, lines[i])) for i, a in outcome.amounts.items()}
    amounts = {i: a for i, a in amounts.items() if a > 0}
    cap = rule.max_discount_fen
    if cap is not None and sum(amounts.values()) > cap:
        keys = sorted(amounts)
        parts = allocate(cap, [amounts[i] for i in keys])  # each part stays within its amount
        amounts = {i: p for i, p in zip(keys, parts, strict=True) if p > 0}
    applications = outcome.applications if amounts else 0
    return _Outcome(amounts, applications, outcome.covered)


def _apply(rule: Rule, outcome: _Outcome, lines: list[_Line]) -> AppliedRule:
    for i, amount in outcome.amounts.items():
        line = lines[i]
        line.net -= amount
        line.allocations.append(
            # Results are built with model_construct: every field comes from validated input.
            LineAllocation.model_construct(rule_id=rule.id, name=rule.name, amount_fen=amount, code=rule.code)
        )
        line.touched = True
        line.locked = line.locked or not rule.stackable
    if rule.group is not None:
        for i in outcome.covered if outcome.gifts else outcome.amounts:
            lines[i].groups.add(rule.group)
    return AppliedRule.model_construct(
        rule_id=rule.id,
        name=rule.name,
        kind=rule.kind,
        saving_fen=outcome.saving,
        applications=outcome.applications,
        code=rule.code,
    )


def _reach(rule: Rule, lines: list[_Line], index: _Index) -> set[int]:
    """The lines whose state the rule's outcome depends on."""
    if isinstance(rule, BundleRule):
        return {i for item in rule.items for i in index.by_sku.get(item.sku, ())}
    found = set(index.in_scope(rule.scope, lines))
    if isinstance(rule, BuyXGetYRule) and rule.reward_scope is not None:
        found.update(index.in_scope(rule.reward_scope, lines))
    return found


def _decide_group(
    candidates: list[Rule], lines: list[_Line], cart: Cart, index: _Index
) -> Iterable[tuple[Rule, _Outcome]]:
    """Apply a group's rules best-for-customer first, each on the lines still free of the group.

    Yields each rule to apply with its outcome; the caller applies it before the next.
    Only rules reading a line the last one changed are evaluated again.
    """
    reach = [_reach(rule, lines, index) for rule in candidates]
    outcomes = {n: _outcome(rule, lines, cart, index) for n, rule in enumerate(candidates)}
    # An outcome can only shrink as the group takes lines and nets fall, so one computed
    # before the last change is an upper bound: it is refreshed only when it comes out best.
    stale: set[int] = set()
    while True:
        worth = [(n, o) for n, o in outcomes.items() if o.value > 0 or o.gifts]
        if not worth:
            return
        # max() keeps the first of equals: the higher priority, then the lower id.
        n, outcome = max(worth, key=lambda pair: pair[1].value)
        if n in stale:
            stale.discard(n)
            outcomes[n] = _outcome(candidates[n], lines, cart, index)
            continue
        best = candidates[n]
        if _STAGE[best.kind] == 0:
            for m in [m for m, _ in worth if m in stale and _STAGE[candidates[m].kind] == 0]:
                stale.discard(m)
                outcomes[m] = _outcome(candidates[m], lines, cart, index)
            # A per-line rule leaves the lines where another per-line rule of the group saves
            # more to that rule (it comes in a later round): per line, the best wins.
            better = frozenset(
                i
                for m, theirs in outcomes.items()
                if m != n and _STAGE[candidates[m].kind] == 0
                for i, amount in theirs.amounts.items()
                if amount > outcome.amounts.get(i, 0)
            )
            if better:
                outcome = _outcome(best, lines, cart, index, better)
        outcomes = {m: o for m, o in outcomes.items() if m != n and (o.value > 0 or o.gifts)}
        if not (outcome.value > 0 or outcome.gifts):
            continue
        yield best, outcome
        changed = set(outcome.covered if outcome.gifts else outcome.amounts)
        stale.update(m for m in outcomes if reach[m] & changed)


def _new_line(src: CartLine) -> _Line:
    base = src.total_fen if src.total_fen is not None else mul_fraction(src.unit_price_fen, src.qty)
    cost = mul_fraction(src.cost_fen, src.qty) if src.cost_fen is not None else None
    units = src.qty.numerator if src.qty.denominator == 1 else None
    return _Line(src=src, base=base, cost_total=cost, units=units, net=base)


def _explain(line: _Line) -> str:
    return "; ".join(f"{a.name} {format_yuan(-a.amount_fen)}" for a in line.allocations)


def evaluate(rules: RuleSet, cart: Cart) -> PromotionResult:
    """Apply the rule set and the cart's coupons to the cart.

    Rules apply one after another, highest priority first (with equal priority: per-line
    rules, unit-set rules, order rules, gifts; then by id), each on the totals the
    earlier ones left. A group is decided where its highest-priority rule stands: its
    rules are tried on the cart as it is and the best for the customer applies, then the
    next best on the lines still free of the group, and so on.
    """
    if not isinstance(rules, RuleSet):
        raise TypeError(f"rules must be a RuleSet, not {type(rules).__name__}")
    if not isinstance(cart, Cart):
        raise TypeError(f"cart must be a Cart, not {type(cart).__name__}")
    lines = [_new_line(src) for src in cart.lines]
    index = _Index(lines)
    clock = _Clock.of(cart)
    live = [r for r in (*rules.rules, *cart.coupons) if _live(r, cart, clock)]
    live.sort(key=lambda r: (-r.priority, _STAGE[r.kind], r.id, r.code or ""))
    applied: list[AppliedRule] = []
    gifts: list[Gift] = []
    decided: set[str] = set()
    for rule in live:
        if rule.group is None:
            outcome = _outcome(rule, lines, cart, index)
            if outcome.value > 0 or outcome.gifts:
                applied.append(_apply(rule, outcome, lines))
                gifts.extend(outcome.gifts)
            continue
        if rule.group in decided:
            continue
        decided.add(rule.group)
        for best, outcome in _decide_group([r for r in live if r.group == rule.group], lines, cart, index):
            applied.append(_apply(best, outcome, lines))
            gifts.extend(outcome.gifts)
    results = [
        LineResult.model_construct(
            line_id=line.src.line_id,
            sku=line.src.sku,
            qty=line.src.qty,
            base_total_fen=line.base,
            discount_fen=line.base - line.net,
            total_fen=line.net,
            allocations=line.allocations,
            explanation=_explain(line),
        )
        for line in lines
    ]
    subtotal = sum(line.base for line in lines)
    total = sum(line.net for line in lines)
    return PromotionResult.model_construct(
        version=rules.version,
        lines=results,
        gifts=gifts,
        applied=applied,
        subtotal_fen=subtotal,
        discount_fen=subtotal - total,
        total_fen=total,
    )

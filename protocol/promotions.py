"""The promotion engine: one pure, deterministic evaluation shared by the till and the hub.

`evaluate(rules, cart)` returns per-line totals with the discount each rule took, gifts,
the applied rules and order totals; `validate_rules(rules)` reports authoring errors
with field paths. No I/O and no clock: the time comes in the cart. docs/promotions.md
explains the order of application, stacking, floors and rounding.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time

from protocol.money import allocate, format_yuan, mul_fraction
from protocol.promotion_kinds import (
    Index,
    Line,
    Outcome,
    bundle,
    buy_x_get_y,
    gift,
    line_rule,
    nth_item,
    open_lines,
    order_rule,
)
from protocol.promotion_rules import (
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


_NOTHING = Outcome({}, 0, [])  # shared: outcomes are never changed once made


def _outcome(
    rule: Rule, lines: list[Line], cart: Cart, index: Index, skip: frozenset[int] = frozenset()
) -> Outcome:
    """What the rule would do to the cart as it stands, after floors and its own cap."""
    if isinstance(rule, BundleRule):
        outcome = bundle(rule, lines, index)
    else:
        scoped = index.in_scope(rule.scope, lines)
        if skip:
            scoped = [i for i in scoped if i not in skip]
        eligible = open_lines(rule, lines, scoped) if scoped else scoped
        if not eligible:
            return _NOTHING
        if isinstance(rule, NthItemRule):
            outcome = nth_item(rule, lines, eligible)
        elif isinstance(rule, BuyXGetYRule):
            outcome = buy_x_get_y(rule, lines, eligible, index)
        elif isinstance(rule, ThresholdRule | EveryThresholdRule):
            outcome = order_rule(rule, lines, eligible)
        elif isinstance(rule, GiftRule):
            return gift(rule, lines, eligible)
        else:
            outcome = line_rule(rule, lines, eligible, cart)
    return _within_limits(rule, outcome, lines)


def _within_limits(rule: Rule, outcome: Outcome, lines: list[Line]) -> Outcome:
    """The outcome with each line kept above its floor and the total within the rule's cap."""
    if not outcome.amounts:
        return _NOTHING
    below_cost = rule.allow_below_cost
    amounts: dict[int, int] = {}
    for i, amount in outcome.amounts.items():
        line = lines[i]
        room = line.net - (0 if below_cost or line.cost_total is None else line.cost_total)
        if room > 0 and amount > 0:
            amounts[i] = min(amount, room)  # the floor: zero, or the line's cost
    cap = rule.max_discount_fen
    if cap is not None and sum(amounts.values()) > cap:
        keys = sorted(amounts)
        parts = allocate(cap, [amounts[i] for i in keys])  # each part stays within its amount
        amounts = {i: p for i, p in zip(keys, parts, strict=True) if p > 0}
    if not amounts:
        return _NOTHING
    return Outcome(amounts, outcome.applications, outcome.covered)


def _apply(rule: Rule, outcome: Outcome, lines: list[Line]) -> AppliedRule:
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


def _reach(rule: Rule, lines: list[Line], index: Index) -> set[int]:
    """The lines whose state the rule's outcome depends on."""
    if isinstance(rule, BundleRule):
        return {i for item in rule.items for i in index.by_sku.get(item.sku, ())}
    found = set(index.in_scope(rule.scope, lines))
    if isinstance(rule, BuyXGetYRule) and rule.reward_scope is not None:
        found.update(index.in_scope(rule.reward_scope, lines))
    return found


def _decide_group(
    candidates: list[Rule], lines: list[Line], cart: Cart, index: Index
) -> Iterable[tuple[Rule, Outcome]]:
    """Apply a group's rules best-for-customer first, each on the lines still free of the group.

    Yields each rule to apply with its outcome; the caller applies it before the next.
    Only rules reading a line the last one changed are evaluated again.
    """
    reach: dict[int, set[int]] = {}  # filled on demand: most candidates never need it
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
        for m in outcomes:
            if m not in reach:
                reach[m] = _reach(candidates[m], lines, index)
            if reach[m] & changed:
                stale.add(m)


def _new_line(src: CartLine) -> Line:
    units = src.qty.numerator if src.qty.denominator == 1 else None

    def times_qty(fen: int) -> int:  # whole pieces multiply exactly; a weight rounds half-up
        return fen * units if units is not None else mul_fraction(fen, src.qty)

    base = src.total_fen if src.total_fen is not None else times_qty(src.unit_price_fen)
    cost = times_qty(src.cost_fen) if src.cost_fen is not None else None
    return Line(src=src, base=base, cost_total=cost, units=units, net=base)


def _explain(line: Line) -> str:
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
    index = Index(lines)
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

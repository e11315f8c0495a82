"""Property tests of the promotion engine over random rule sets and carts.

Whatever the rules: the total is never negative nor below a line's floor, the line
allocations add up to the order discount, and evaluation is deterministic (rule order,
a JSON round trip as on the wire, a second evaluation) and never adds lines.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from fractions import Fraction
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.money import mul_fraction
from protocol.promotion_rules import Cart, RuleSet
from protocol.promotions import evaluate

SKUS = ["a", "b", "c", "d", "e"]
CATEGORIES = ["fresh", "drink", "snack"]
NOW = datetime(2026, 11, 24, 20, 30, tzinfo=timezone(timedelta(hours=8)))

fen = st.integers(min_value=1, max_value=50_000)
bp = st.integers(min_value=1, max_value=10_000)


@st.composite
def scopes(draw: st.DrawFn) -> dict[str, Any]:
    return draw(
        st.sampled_from(
            [
                {},
                {"skus": draw(st.lists(st.sampled_from(SKUS), min_size=1, max_size=3, unique=True))},
                {"categories": [draw(st.sampled_from(CATEGORIES))]},
            ]
        )
    )


@st.composite
def rules(draw: st.DrawFn, index: int, below_cost: bool) -> dict[str, Any]:
    kind = draw(
        st.sampled_from(
            [
                "percent_off",
                "amount_off",
                "fixed_price",
                "member_price",
                "near_expiry",
                "nth_item",
                "buy_x_get_y",
                "bundle",
                "threshold",
                "every_threshold",
                "gift",
            ]
        )
    )
    rule: dict[str, Any] = {
        "kind": kind,
        "id": f"r{index}",
        "name": f"rule {index}",
        "scope": draw(scopes()),
        "priority": draw(st.integers(min_value=-2, max_value=2)),
        "stackable": draw(st.booleans()),
        "allow_below_cost": below_cost and draw(st.booleans()),
    }
    if draw(st.booleans()):
        rule["group"] = draw(st.sampled_from(["g1", "g2"]))
    if draw(st.integers(min_value=0, max_value=4)) == 0:
        rule["max_discount_fen"] = draw(fen)
    if draw(st.integers(min_value=0, max_value=4)) == 0:
        rule["max_applications"] = draw(st.integers(min_value=1, max_value=5))
    return rule | draw(params(kind))


@st.composite
def params(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    rule: dict[str, Any] = {}
    if kind == "percent_off":
        rule["off_bp"] = draw(bp)
    elif kind == "amount_off":
        rule["amount_fen"] = draw(fen)
    elif kind == "fixed_price":
        rule["price_fen"] = draw(st.integers(min_value=0, max_value=5000))
    elif kind == "member_price":
        rule["prices"] = {"gold": draw(st.integers(min_value=0, max_value=5000))}
    elif kind == "near_expiry":
        rule["tiers"] = [{"within_days": 1, "off_bp": draw(bp)}, {"within_days": 5, "off_bp": draw(bp)}]
    elif kind == "nth_item":
        rule |= {"n": draw(st.integers(min_value=2, max_value=4)), "off_bp": draw(bp)}
        rule["pick"] = draw(st.sampled_from(["cheapest", "most_expensive"]))
    elif kind == "buy_x_get_y":
        rule |= {"buy_qty": draw(st.integers(1, 3)), "get_qty": draw(st.integers(1, 2)), "off_bp": draw(bp)}
    elif kind == "bundle":
        skus = draw(st.lists(st.sampled_from(SKUS), min_size=1, max_size=3, unique=True))
        rule["items"] = [{"sku": s, "qty": draw(st.integers(1, 2))} for s in skus]
        rule["price_fen"] = draw(st.integers(min_value=0, max_value=10_000))
    elif kind in ("threshold", "every_threshold"):
        threshold = draw(st.integers(min_value=2, max_value=30_000))
        rule |= {"threshold_fen": threshold, "amount_fen": draw(st.integers(1, threshold - 1))}
    else:
        rule |= {"threshold_fen": draw(st.integers(1, 30_000)), "gift_sku": "tote", "gift_name": "环保袋"}
        rule["repeat"] = draw(st.booleans())
    return rule


@st.composite
def lines(draw: st.DrawFn, index: int) -> dict[str, Any]:
    weighed = draw(st.integers(min_value=0, max_value=5)) == 0
    qty = (
        str(Fraction(draw(st.integers(1, 5000)), 1000))
        if weighed
        else str(draw(st.integers(min_value=1, max_value=6)))
    )
    line: dict[str, Any] = {
        "line_id": f"l{index}",
        "sku": draw(st.sampled_from(SKUS)),
        "category": draw(st.sampled_from(CATEGORIES)),
        "qty": qty,
        "unit_price_fen": draw(st.integers(min_value=0, max_value=10_000)),
    }
    if draw(st.booleans()):
        line["cost_fen"] = draw(st.integers(min_value=0, max_value=10_000))
    if draw(st.booleans()):
        line["expires_on"] = (NOW.date() + timedelta(days=draw(st.integers(-1, 7)))).isoformat()
    return line


@st.composite
def scenarios(draw: st.DrawFn, below_cost: bool = True) -> tuple[RuleSet, Cart]:
    count = draw(st.integers(min_value=0, max_value=8))
    rule_list = [draw(rules(i, below_cost)) for i in range(count)]
    line_list = [draw(lines(i)) for i in range(draw(st.integers(min_value=0, max_value=8)))]
    coupons = []
    if draw(st.booleans()):
        coupons.append({**draw(rules(99, below_cost)), "code": "C1", "priority": -5})
    member = draw(st.booleans())
    cart = Cart.model_validate(
        {
            "store": "s1",
            "local_time": NOW,
            "member_id": "m1" if member else None,
            "member_level": "gold" if member else None,
            "coupons": coupons,
            "lines": line_list,
        }
    )
    return RuleSet.model_validate({"version": 1, "rules": rule_list}), cart


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_totals_add_up_and_never_go_negative(scenario: tuple[RuleSet, Cart]) -> None:
    rule_set, cart = scenario
    result = evaluate(rule_set, cart)
    assert result.total_fen >= 0
    assert result.total_fen == result.subtotal_fen - result.discount_fen
    assert sum(a.amount_fen for line in result.lines for a in line.allocations) == result.discount_fen
    assert sum(a.saving_fen for a in result.applied) == result.discount_fen
    for line in result.lines:
        assert 0 <= line.total_fen <= line.base_total_fen
        assert all(a.amount_fen > 0 for a in line.allocations)
        assert line.base_total_fen - sum(a.amount_fen for a in line.allocations) == line.total_fen


@settings(max_examples=300, deadline=None)
@given(scenarios(below_cost=False))
def test_no_line_below_its_cost_floor(scenario: tuple[RuleSet, Cart]) -> None:
    rule_set, cart = scenario
    result = evaluate(rule_set, cart)
    for src, line in zip(cart.lines, result.lines, strict=True):
        base = line.base_total_fen
        floor = min(base, mul_fraction(src.cost_fen, src.qty)) if src.cost_fen is not None else 0
        assert line.total_fen >= floor


@settings(max_examples=200, deadline=None)
@given(scenarios(), st.randoms(use_true_random=False))
def test_deterministic_and_idempotent(scenario: tuple[RuleSet, Cart], rnd: Any) -> None:
    rule_set, cart = scenario
    first = evaluate(rule_set, cart)
    assert evaluate(rule_set, cart) == first
    shuffled = list(rule_set.rules)
    rnd.shuffle(shuffled)
    assert evaluate(RuleSet(version=rule_set.version, rules=shuffled), cart) == first
    # What the hub publishes is what the till evaluates: the same fen after a JSON round trip.
    wire_rules = RuleSet.model_validate_json(rule_set.model_dump_json())
    wire_cart = Cart.model_validate_json(cart.model_dump_json())
    assert evaluate(wire_rules, wire_cart) == first
    assert len(first.lines) == len(cart.lines)
    assert [line.line_id for line in first.lines] == [line.line_id for line in cart.lines]

"""Benchmark: the promotion engine on a 50-line cart against 200 active rules (goal p99 < 5 ms).

The till evaluates the engine on every order change (every scan), on a Raspberry Pi, so
the issue asks for p99 under 5 ms on this machine. The 200 rules are all live at the
cart's time and mix every rule type: most are scoped to a few SKUs or a category (as real
promotions are), some to everything, some in exclusive groups, some not stackable, a
member price, near-expiry tiers, bundles, 满减 tiers, 每满减, gifts and a coupon.

Baseline, same run, same lines: `protocol.pricing.price_cart` with a member level, the
pricing the till already runs on every change; ours / baseline says what the promotions
cost on top of pricing the cart.

Run alone: `.venv/bin/python -m tests.bench.promotions [evaluations]`.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from protocol.pricing import MemberPricing, PriceLine, price_cart
from protocol.promotion_rules import Cart, RuleSet
from protocol.promotions import evaluate

__all__ = ["Row", "main", "rows"]

Row = tuple[str, str, list[float], list[float]]
_GOAL_S = 0.005
_LINES = 50
_RULES = 200
_SKUS = [f"SKU-{n:03d}" for n in range(400)]
_CATEGORIES = [f"cat-{n:02d}" for n in range(20)]
_NOW = datetime(2026, 11, 24, 20, 30, tzinfo=timezone(timedelta(hours=8)))


def _category(sku: str) -> str:
    return _CATEGORIES[int(sku[4:]) % len(_CATEGORIES)]


def _scope(rnd: random.Random, cart_skus: list[str]) -> dict[str, Any]:
    pick = rnd.random()
    if pick < 0.1:
        return {}
    if pick < 0.4:
        return {"categories": [rnd.choice(_CATEGORIES)]}
    pool = cart_skus if rnd.random() < 0.5 else _SKUS  # about half aim at what is in the cart
    return {"skus": rnd.sample(pool, rnd.randint(1, 5))}


def _rule(n: int, rnd: random.Random, cart_skus: list[str]) -> dict[str, Any]:
    kinds = [
        ("percent_off", 50),
        ("amount_off", 20),
        ("fixed_price", 20),
        ("member_price", 10),
        ("near_expiry", 10),
        ("nth_item", 20),
        ("buy_x_get_y", 15),
        ("bundle", 15),
        ("threshold", 20),
        ("every_threshold", 10),
        ("gift", 10),
    ]
    kind = rnd.choices([k for k, _ in kinds], weights=[w for _, w in kinds])[0]
    rule: dict[str, Any] = {
        "kind": kind,
        "id": f"r{n:03d}",
        "name": f"促销{n:03d}",
        "scope": _scope(rnd, cart_skus),
        "priority": rnd.randint(0, 3),
        "window": {"weekdays": [1, 2, 3, 4, 5, 6, 7], "hours": [{"start": "08:00", "end": "23:00"}]},
    }
    if rnd.random() < 0.3:
        rule["group"] = f"g{rnd.randint(1, 8)}"
    elif rnd.random() < 0.1:
        rule["stackable"] = False
        rule["priority"] = 10 + n  # exclusive rules need distinct priorities where they can meet
    params: dict[str, Any] = {
        "percent_off": {"off_bp": rnd.choice([500, 1000, 2000, 3000])},
        "amount_off": {"amount_fen": rnd.choice([10, 50, 100])},
        "fixed_price": {"price_fen": rnd.randint(100, 2000)},
        "member_price": {"prices": {"gold": rnd.randint(100, 2000), "silver": rnd.randint(100, 2000)}},
        "near_expiry": {"tiers": [{"within_days": 1, "off_bp": 5000}, {"within_days": 3, "off_bp": 2000}]},
        "nth_item": {"n": 2, "off_bp": 5000, "pick": rnd.choice(["cheapest", "most_expensive"])},
        "buy_x_get_y": {"buy_qty": 2, "get_qty": 1},
        "bundle": {"items": [{"sku": s, "qty": 1} for s in rnd.sample(cart_skus, 3)], "price_fen": 1500},
        "threshold": {"threshold_fen": (t := rnd.choice([5000, 10000, 20000])), "amount_fen": t // 10},
        "every_threshold": {"threshold_fen": 10000, "amount_fen": 1000, "max_discount_fen": 5000},
        "gift": {"threshold_fen": 8000, "gift_sku": "BAG", "gift_name": "环保袋"},
    }
    return rule | params[kind]


def scenario(seed: int = 20261124) -> tuple[RuleSet, Cart, list[PriceLine], MemberPricing]:
    """The rule set, the cart and the same lines for price_cart (the same every run)."""
    rnd = random.Random(seed)
    cart_skus = rnd.sample(_SKUS, _LINES)
    lines = []
    for n, sku in enumerate(cart_skus):
        line: dict[str, Any] = {
            "line_id": f"l{n:02d}",
            "sku": sku,
            "category": _category(sku),
            "qty": str(rnd.randint(1, 4)),
            "unit_price_fen": (price := rnd.randint(150, 5000)),
            "cost_fen": price * 6 // 10,
        }
        if n % 10 == 0:
            line["expires_on"] = (date(2026, 11, 24) + timedelta(days=rnd.randint(0, 5))).isoformat()
        lines.append(line)
    coupon = {
        "kind": "percent_off",
        "id": "coupon:t1",
        "name": "九折券",
        "code": "CPN-1",
        "off_bp": 1000,
        "priority": -1000,
        "group": "coupons",
    }
    cart = Cart.model_validate(
        {
            "store": "shop-1",
            "local_time": _NOW,
            "member_id": "m-1",
            "member_level": "gold",
            "coupons": [coupon],
            "lines": lines,
        }
    )
    rules = RuleSet.model_validate({"version": 1, "rules": [_rule(n, rnd, cart_skus) for n in range(_RULES)]})
    priced = [
        PriceLine(
            line_id=x.line_id, sku=x.sku, qty=x.qty, list_price_fen=x.unit_price_fen, member_price_fen=None
        )
        for x in cart.lines
    ]
    return rules, cart, priced, MemberPricing(level="gold", discount_bp=9500)


def _timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, int(len(ordered) * 0.99) - 1)]


def measure(evaluations: int = 1000) -> tuple[list[float], list[float], int]:
    """(ours, baseline, rules that applied), timing each call."""
    rules, cart, priced, member = scenario()
    result = evaluate(rules, cart)
    for _ in range(20):  # warm caches and the allocator, as a running till has
        evaluate(rules, cart)
        price_cart(priced, member)
    ours = _timed(lambda: evaluate(rules, cart), evaluations)
    base = _timed(lambda: price_cart(priced, member), evaluations)
    return ours, base, len(result.applied)


async def rows(tmp: Path | None = None, evaluations: int = 1000) -> list[Row]:
    """One row: evaluate() on 50 lines × 200 rules next to price_cart on the same lines."""
    ours, base, _ = await asyncio.to_thread(measure, evaluations)
    what = f"promotion engine `evaluate`: {_LINES}-line cart × {_RULES} active rules + a coupon (goal p99 < 5 ms)"
    baseline = f"`price_cart` of the same {_LINES} lines with a member level"
    return [(what, baseline, ours, base)]


def main(evaluations: int) -> None:
    """Print median and p99 of both, the ratio, and whether the goal is met."""
    ours, base, applied = measure(evaluations)
    print(f"{_LINES} lines, {_RULES} rules live, {applied} applied, {evaluations} evaluations")
    for name, samples in (("ours     evaluate", ours), ("baseline price_cart", base)):
        print(f"{name}: median {statistics.median(samples) * 1e3:.2f} ms, p99 {_p99(samples) * 1e3:.2f} ms")
    rules, cart, _, _ = scenario()
    started = time.process_time()
    for _ in range(200):
        evaluate(rules, cart)
    cpu_ms = (time.process_time() - started) / 200 * 1e3
    print(f"CPU time per evaluation {cpu_ms:.2f} ms (wall-clock samples include time the OS gave to others)")
    p99 = _p99(ours)
    ratio = statistics.median(ours) / statistics.median(base)
    print(
        f"median ratio {ratio:.1f}x; goal p99 < 5 ms: {p99 * 1e3:.2f} ms, {'met' if p99 < _GOAL_S else 'NOT met'}"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)

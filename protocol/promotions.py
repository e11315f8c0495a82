"""The promotion engine: one pure, deterministic evaluation shared by the till and the hub.

`evaluate(rules, cart)` returns per-line totals with the discount each rule took, gifts,
the applied rules and order totals; `validate_rules(rules)` reports authoring errors
with field paths. No I/O and no clock: the time comes in the cart.
"""

from __future__ import annotations

from collections.abc import Sequence

from protocol.problem import FieldError
from protocol.promotion_rules import Cart, PromotionResult, Rule, RuleSet

__all__ = ["evaluate", "validate_rules"]


def evaluate(rules: RuleSet, cart: Cart) -> PromotionResult:
    """Apply the rule set and the cart's coupons to the cart (being written: see H4)."""
    raise NotImplementedError("promotion engine lands in the next commit")


def validate_rules(rules: Sequence[Rule], *, path: str = "rules") -> list[FieldError]:
    """Authoring errors in rules, each with a field path such as 'rules.3.off_bp'."""
    raise NotImplementedError("rule validation lands in the next commit")

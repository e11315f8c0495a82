"""Authoring checks for promotion rules: every error with a field path, all at once."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, time
from typing import Any

from pydantic import TypeAdapter, ValidationError

from protocol.problem import FieldError
from protocol.promotion_rules import Rule, Scope, TimeWindow

__all__ = ["validate_rules"]

_RULE: TypeAdapter[Rule] = TypeAdapter(Rule)
_KINDS = frozenset(
    {
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
    }
)


def _field_errors(err: ValidationError, prefix: str) -> list[FieldError]:
    errors = []
    for item in err.errors():
        # Drop the union's tag ("percent_off") from the path: the client never wrote it.
        loc = [str(part) for part in item["loc"]]
        if loc and loc[0] in _KINDS:
            loc = loc[1:]
        message = item["msg"].removeprefix("Value error, ")
        errors.append(FieldError(field=".".join([prefix, *loc]), message=message))
    return errors


def _meet(a: Sequence[str], b: Sequence[str]) -> bool:
    """Whether two 'empty means all' lists can both hold for one cart."""
    return not a or not b or bool(set(a) & set(b))


def _scopes_meet(a: Scope, b: Scope) -> bool:
    # A sku in one and a category in the other may or may not meet: the rule set does not
    # know the catalog, so only what is certain is reported.
    if not (a.skus or a.categories) or not (b.skus or b.categories):
        return True
    return bool(set(a.skus) & set(b.skus) or set(a.categories) & set(b.categories))


def _minutes(spans: Sequence[tuple[time, time]]) -> set[int]:
    covered: set[int] = set()
    for start, end in spans:
        first, last = start.hour * 60 + start.minute, end.hour * 60 + end.minute
        if first < last:
            covered.update(range(first, last))
        else:
            covered.update(range(first, 24 * 60))
            covered.update(range(last))
    return covered


def _windows_meet(a: TimeWindow, b: TimeWindow) -> bool:
    lo = max((w.starts_at for w in (a, b) if w.starts_at is not None), default=None)
    hi = min((w.ends_at for w in (a, b) if w.ends_at is not None), default=None)
    if isinstance(lo, datetime) and isinstance(hi, datetime) and hi <= lo:
        return False
    if not _meet([str(d) for d in a.weekdays], [str(d) for d in b.weekdays]):
        return False
    if a.hours and b.hours:
        mine = _minutes([(h.start, h.end) for h in a.hours])
        return bool(mine & _minutes([(h.start, h.end) for h in b.hours]))
    return True


def _overlap(a: Rule, b: Rule) -> bool:
    return (
        _meet(a.stores, b.stores)
        and _meet(a.channels, b.channels)
        and _meet(a.member_levels, b.member_levels)
        and _scopes_meet(a.scope, b.scope)
        and _windows_meet(a.window, b.window)
    )


def validate_rules(rules: Sequence[Rule | dict[str, Any]], *, path: str = "rules") -> list[FieldError]:
    """Authoring errors in rules (models or JSON objects), each with a path like 'rules.3.off_bp'.

    Besides each rule's own checks (percent above 100, threshold not above 0, …) it reports
    duplicate ids, coupon codes in a rule set, and exclusive (stackable=false) rules of
    equal priority that can meet on one line: which one wins would be arbitrary.
    """
    errors: list[FieldError] = []
    valid: list[tuple[int, Rule]] = []
    for position, raw in enumerate(rules):
        try:
            rule = raw if not isinstance(raw, dict) else _RULE.validate_python(raw)
        except ValidationError as err:
            errors.extend(_field_errors(err, f"{path}.{position}"))
            continue
        valid.append((position, rule))
    first_of: dict[str, int] = {}
    for position, rule in valid:
        if rule.id in first_of:
            errors.append(
                FieldError(
                    field=f"{path}.{position}.id",
                    message=f"rule id {rule.id!r} is already used by {path}.{first_of[rule.id]}",
                )
            )
        else:
            first_of[rule.id] = position
        if rule.code is not None:
            errors.append(
                FieldError(
                    field=f"{path}.{position}.code",
                    message="a rule in a rule set has no coupon code; coupons come with the cart",
                )
            )
    exclusive = [(p, r) for p, r in valid if not r.stackable and r.group is None]
    for n, (p1, r1) in enumerate(exclusive):
        for p2, r2 in exclusive[n + 1 :]:
            if r1.priority == r2.priority and _overlap(r1, r2):
                errors.append(
                    FieldError(
                        field=f"{path}.{p2}.priority",
                        message=(
                            f"rules {r1.id!r} ({path}.{p1}) and {r2.id!r} are both exclusive"
                            " (stackable=false), can apply to the same line at the same time and share"
                            f" priority {r1.priority}:"
                            " give the one that should win a higher priority"
                        ),
                    )
                )
    return errors

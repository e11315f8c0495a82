"""Promotion rules, the promotions snapshot, the cart the engine reads and what it returns.

Pure data (pydantic v2, frozen, extra fields refused). The engine is `protocol.promotions`;
docs/promotions.md explains every rule type, stacking and rounding with worked examples.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from protocol.pricing import Quantity

__all__ = [
    "AmountOffRule",
    "AppliedRule",
    "BundleItem",
    "BundleRule",
    "BuyXGetYRule",
    "Cart",
    "CartLine",
    "EveryThresholdRule",
    "ExpiryTier",
    "FixedPriceRule",
    "Gift",
    "GiftRule",
    "HourRange",
    "LineAllocation",
    "LineResult",
    "MemberPriceRule",
    "NearExpiryRule",
    "NthItemRule",
    "PercentOffRule",
    "PromotionResult",
    "Rule",
    "RuleKind",
    "RuleSet",
    "Scope",
    "ThresholdRule",
    "TimeWindow",
]

BASIS_POINTS = 10_000
_MAX_FEN = 2**53  # far above any till amount; keeps products of two amounts in machine range
Fen = Annotated[StrictInt, Field(ge=0, le=_MAX_FEN)]
Bp = Annotated[StrictInt, Field(ge=0, le=BASIS_POINTS)]
_Ident = Annotated[StrictStr, Field(min_length=1, max_length=64)]
_Text = Annotated[StrictStr, Field(max_length=200)]
_Names = Annotated[list[_Ident], Field(max_length=1000)]
_Uses = Annotated[StrictInt, Field(ge=0)]
RuleKind = Literal[
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


def _off_bp(value: int) -> int:
    if value <= 0:
        raise ValueError(f"off_bp must be above 0, got {value} (1000 = 10 % off)")
    if value > BASIS_POINTS:
        raise ValueError(f"off_bp {value} is more than 100 % off; at most {BASIS_POINTS} (free)")
    return value


def _positive(what: str) -> Callable[[int], int]:
    def check(value: int) -> int:
        if value <= 0:
            raise ValueError(f"{what} must be above 0, got {value}")
        return value

    return check


def _not_negative(value: int) -> int:
    if value < 0:
        raise ValueError(f"must not be negative, got {value}")
    return value


OffBp = Annotated[StrictInt, AfterValidator(_off_bp)]
"""Basis points taken off (3000 = 30 % off): above 0, at most 10000."""
PositiveFen = Annotated[StrictInt, Field(le=_MAX_FEN), AfterValidator(_positive("amount"))]
ThresholdFen = Annotated[StrictInt, Field(le=_MAX_FEN), AfterValidator(_positive("threshold_fen"))]
PriceFen = Annotated[StrictInt, Field(le=_MAX_FEN), AfterValidator(_not_negative)]
Count = Annotated[StrictInt, Field(le=100_000), AfterValidator(_positive("count"))]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Scope(_Model):
    """Which products a rule looks at: listed SKUs or categories (none listed: every product)."""

    skus: _Names = []
    categories: _Names = []
    exclude_skus: _Names = []

    @model_validator(mode="after")
    def _no_contradiction(self) -> Self:
        both = sorted(set(self.skus) & set(self.exclude_skus))
        if both:
            raise ValueError(f"skus and exclude_skus both list {', '.join(both)}")
        return self


class HourRange(_Model):
    """Store-local wall-clock hours [start, end); an end at or before the start runs past midnight."""

    start: time
    end: time


class TimeWindow(_Model):
    """When a rule is live: an absolute span, and store-local weekdays and hours."""

    starts_at: datetime | None = None
    ends_at: datetime | None = None
    weekdays: Annotated[list[Annotated[StrictInt, Field(ge=1, le=7)]], Field(max_length=7)] = []
    """ISO weekdays, 1 = Monday … 7 = Sunday, in the store's time zone; empty: every day."""
    hours: Annotated[list[HourRange], Field(max_length=24)] = []
    """Store-local hour ranges; empty: all day."""

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and (value.tzinfo is None or value.utcoffset() is None):
            raise ValueError("needs a time zone: send UTC with a 'Z' suffix or an explicit offset")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.starts_at is not None and self.ends_at is not None and self.ends_at <= self.starts_at:
            raise ValueError(
                f"ends_at {self.ends_at.isoformat()} is not after starts_at {self.starts_at.isoformat()}"
            )
        for index, span in enumerate(self.hours):
            if span.start == span.end:
                raise ValueError(f"hours[{index}] starts and ends at {span.start.isoformat()}: it is empty")
        return self


class _RuleBase(_Model):
    """What every rule has: identity, where and when it applies, stacking and caps."""

    id: _Ident
    name: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    """Printed on the receipt next to the saving."""
    code: _Ident | None = None
    """Set on a presented coupon (a rule instance from a coupon template); never in a rule set."""
    scope: Scope = Scope()
    stores: _Names = []
    channels: _Names = []
    member_levels: _Names = []
    """Levels the rule is for; empty: everyone, members or not."""
    member_segments: _Names = []
    """Any one of these segments/tags qualifies; empty: no segment needed."""
    members_only: StrictBool = False
    window: TimeWindow = TimeWindow()
    stock_at_least_milli: StrictInt | None = None
    """Dynamic rule: a line qualifies only while its store stock is at least this (thousandths)."""
    stock_below_milli: StrictInt | None = None
    """Dynamic rule: a line qualifies only while its store stock is below this (thousandths)."""
    priority: Annotated[StrictInt, Field(ge=-1_000_000, le=1_000_000)] = 0
    """Higher applies first; later rules compute on the price earlier ones left."""
    group: _Ident | None = None
    """Rules sharing a group never combine on a line: the best for the customer wins."""
    stackable: StrictBool = True
    """False: the rule takes only lines no other rule discounted and none may follow it there."""
    allow_below_cost: StrictBool = False
    """Without it, no line this rule discounts goes below its cost (the floor)."""
    max_discount_fen: Fen | None = None
    """Cap on what this rule saves one order."""
    max_applications: Annotated[StrictInt, Field(ge=1, le=100_000)] | None = None
    """Cap on how many times the rule applies in one order (units, sets, steps, gifts)."""
    per_member_daily_limit: Annotated[StrictInt, Field(ge=1, le=100_000)] | None = None
    """Orders per member per store-local day that may use the rule (the count is a cart fact)."""

    @model_validator(mode="after")
    def _stock_range(self) -> Self:
        low, high = self.stock_at_least_milli, self.stock_below_milli
        if low is not None and high is not None and high <= low:
            raise ValueError(f"stock_below_milli {high} must be above stock_at_least_milli {low}")
        return self


class PercentOffRule(_RuleBase):
    """折扣: `off_bp` off every line in scope (3000 = 30 % off, "7折")."""

    kind: Literal["percent_off"] = "percent_off"
    off_bp: OffBp


class AmountOffRule(_RuleBase):
    """立减: `amount_fen` off each unit (piece or kg) in scope."""

    kind: Literal["amount_off"] = "amount_off"
    amount_fen: PositiveFen


class FixedPriceRule(_RuleBase):
    """特价: units in scope sell at `price_fen` each when that is lower than their price."""

    kind: Literal["fixed_price"] = "fixed_price"
    price_fen: PriceFen


class MemberPriceRule(_RuleBase):
    """会员价 by level: a member of a listed level pays that level's unit price when lower."""

    kind: Literal["member_price"] = "member_price"
    prices: Annotated[dict[_Ident, PriceFen], Field(min_length=1, max_length=100)]


class ExpiryTier(_Model):
    """Within `within_days` days of the earliest expiry, take `off_bp` off."""

    within_days: Annotated[StrictInt, Field(le=3650), AfterValidator(_not_negative)]
    off_bp: OffBp


class NearExpiryRule(_RuleBase):
    """临期: markdown by days left to the line's batch expiry; the nearest tier wins."""

    kind: Literal["near_expiry"] = "near_expiry"
    tiers: Annotated[list[ExpiryTier], Field(min_length=1, max_length=20)]

    @field_validator("tiers")
    @classmethod
    def _distinct(cls, tiers: list[ExpiryTier]) -> list[ExpiryTier]:
        days = [t.within_days for t in tiers]
        if len(set(days)) != len(days):
            raise ValueError(f"two tiers have the same within_days ({sorted(days)})")
        return tiers


class NthItemRule(_RuleBase):
    """第二杯半价: of every `n` units in scope, one takes `off_bp` off; `pick` chooses which."""

    kind: Literal["nth_item"] = "nth_item"
    n: Annotated[StrictInt, Field(ge=2, le=100)]
    off_bp: OffBp
    pick: Literal["cheapest", "most_expensive"] = "cheapest"


class BuyXGetYRule(_RuleBase):
    """买X送Y: per `buy_qty` units bought, `get_qty` reward units take `off_bp` off (cheapest first).

    With no `reward_scope` the rewards come from the same scope (买2送1: of every 3, the
    cheapest is free); otherwise from the reward scope, which must not overlap `scope`.
    """

    kind: Literal["buy_x_get_y"] = "buy_x_get_y"
    buy_qty: Count
    get_qty: Count
    off_bp: OffBp = BASIS_POINTS
    reward_scope: Scope | None = None

    @model_validator(mode="after")
    def _disjoint(self) -> Self:
        reward = self.reward_scope
        if reward is None:
            return self
        if not (reward.skus or reward.categories):
            raise ValueError("reward_scope lists no skus or categories; leave it out to reward from scope")
        if not (self.scope.skus or self.scope.categories):
            raise ValueError("with a reward_scope, scope must list the skus or categories to buy")
        shared = sorted(set(reward.skus) & set(self.scope.skus)) + sorted(
            set(reward.categories) & set(self.scope.categories)
        )
        if shared:
            raise ValueError(f"reward_scope overlaps scope ({', '.join(shared)}); leave reward_scope out")
        return self


class BundleItem(_Model):
    """One component of a bundle."""

    sku: _Ident
    qty: Count


class BundleRule(_RuleBase):
    """套餐: each complete set of `items` sells for `price_fen` (`scope` is not used)."""

    kind: Literal["bundle"] = "bundle"
    items: Annotated[list[BundleItem], Field(min_length=1, max_length=20)]
    price_fen: PriceFen

    @field_validator("items")
    @classmethod
    def _distinct(cls, items: list[BundleItem]) -> list[BundleItem]:
        skus = [item.sku for item in items]
        if len(set(skus)) != len(skus):
            raise ValueError("a sku appears twice in items; give it one entry with the total qty")
        return items


class ThresholdRule(_RuleBase):
    """满减: when the lines in scope reach `threshold_fen`, `amount_fen` off them."""

    kind: Literal["threshold"] = "threshold"
    threshold_fen: ThresholdFen
    amount_fen: PositiveFen

    @model_validator(mode="after")
    def _below_threshold(self) -> Self:
        if self.amount_fen >= self.threshold_fen:
            raise ValueError(
                f"amount_fen {self.amount_fen} must be below threshold_fen {self.threshold_fen}:"
                " the order would be free"
            )
        return self


class EveryThresholdRule(_RuleBase):
    """每满减: `amount_fen` off for every full `threshold_fen` (cap with max_discount_fen)."""

    kind: Literal["every_threshold"] = "every_threshold"
    threshold_fen: ThresholdFen
    amount_fen: PositiveFen

    @model_validator(mode="after")
    def _below_threshold(self) -> Self:
        if self.amount_fen >= self.threshold_fen:
            raise ValueError(
                f"amount_fen {self.amount_fen} must be below threshold_fen {self.threshold_fen}:"
                " the order would be free"
            )
        return self


class GiftRule(_RuleBase):
    """赠品: lines in scope reaching `threshold_fen` (and `min_qty` units) earn a gift."""

    kind: Literal["gift"] = "gift"
    threshold_fen: PriceFen = 0
    min_qty: Annotated[StrictInt, Field(le=100_000), AfterValidator(_not_negative)] = 0
    gift_sku: _Ident
    gift_name: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    gift_qty: Count = 1
    gift_value_fen: PriceFen = 0
    """What the gift is worth, for the receipt and statistics; never taken off the total."""
    repeat: StrictBool = False
    """One gift per full threshold (up to max_applications) instead of one per order."""

    @model_validator(mode="after")
    def _has_condition(self) -> Self:
        if self.threshold_fen == 0 and self.min_qty == 0:
            raise ValueError("a gift needs threshold_fen or min_qty above 0, or every order earns one")
        if self.repeat and self.threshold_fen == 0:
            raise ValueError("repeat needs threshold_fen above 0 (one gift per full threshold)")
        return self


Rule = Annotated[
    PercentOffRule
    | AmountOffRule
    | FixedPriceRule
    | MemberPriceRule
    | NearExpiryRule
    | NthItemRule
    | BuyXGetYRule
    | BundleRule
    | ThresholdRule
    | EveryThresholdRule
    | GiftRule,
    Field(discriminator="kind"),
]


class RuleSet(_Model):
    """The body of the `promotions` snapshot: every rule a store may apply, versioned."""

    version: Annotated[StrictInt, Field(ge=0)] = 0
    rules: Annotated[list[Rule], Field(max_length=10_000)] = []

    @model_validator(mode="after")
    def _ids_and_codes(self) -> Self:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id!r} appears more than once")
            seen.add(rule.id)
            if rule.code is not None:
                raise ValueError(
                    f"rule {rule.id!r} has a coupon code; coupons come with the cart, not the rule set"
                )
        return self


class CartLine(_Model):
    """A line as the till priced it (list/store/member price already applied) plus its facts."""

    line_id: _Ident
    sku: _Ident
    category: Annotated[StrictStr, Field(max_length=64)] = ""
    qty: Quantity
    unit_price_fen: Fen
    total_fen: Fen | None = None
    """The line's total before promotions; defaults to unit price × qty (a scale label sets it)."""
    cost_fen: Fen | None = None
    """Unit cost; the floor a rule may not go below unless it allows it."""
    stock_milli: StrictInt | None = None
    """The store's stock of this SKU in thousandths, for dynamic rules."""
    expires_on: date | None = None
    """Store-local date the line's (earliest) batch expires, for near-expiry markdowns."""


class Cart(_Model):
    """Everything the engine needs; time comes in here, the engine has no clock."""

    store: _Ident
    channel: _Ident = "pos"
    local_time: datetime
    """Now in the store's time zone (aware): weekdays and hours read its wall clock."""
    member_id: _Ident | None = None
    member_level: _Ident | None = None
    member_segments: _Names = []
    member_uses_today: Annotated[
        dict[_Ident, Annotated[StrictInt, Field(ge=0)]], Field(max_length=10_000)
    ] = {}
    """Rule id → orders of this member that used it today (for per-member daily caps)."""
    coupons: Annotated[list[Rule], Field(max_length=20)] = []
    """Presented coupons: rule instances, each with its `code`."""
    lines: Annotated[list[CartLine], Field(max_length=1000)] = []

    @model_validator(mode="after")
    def _unique(self) -> Self:
        line_ids = [line.line_id for line in self.lines]
        if len(set(line_ids)) != len(line_ids):
            raise ValueError("a line_id appears more than once in lines")
        codes: set[str] = set()
        for coupon in self.coupons:
            if coupon.code is None:
                raise ValueError(f"coupon {coupon.id!r} has no code; a presented coupon needs one")
            if coupon.code in codes:
                raise ValueError(f"coupon code {coupon.code!r} is presented twice")
            codes.add(coupon.code)
        return self

    @field_validator("local_time")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("local_time needs the store's UTC offset")
        return value


class LineAllocation(_Model):
    """What one rule took off one line."""

    rule_id: str
    name: str
    amount_fen: int
    code: str | None = None


class LineResult(_Model):
    """A line after promotions: its total before, the allocations, and its total after."""

    line_id: str
    sku: str
    qty: Quantity
    base_total_fen: int
    discount_fen: int
    total_fen: int
    allocations: list[LineAllocation]
    explanation: str


class Gift(_Model):
    """A gift earned by a rule (not a cart line: re-evaluating never adds lines)."""

    rule_id: str
    rule_name: str
    sku: str
    name: str
    qty: int
    value_fen: int


class AppliedRule(_Model):
    """A rule that took effect: its saving over the order and how many times it applied."""

    rule_id: str
    name: str
    kind: RuleKind
    saving_fen: int
    applications: int
    code: str | None = None


class PromotionResult(_Model):
    """The evaluated cart: per-line totals and allocations, gifts, applied rules, order totals."""

    version: int
    lines: list[LineResult]
    gifts: list[Gift]
    applied: list[AppliedRule]
    subtotal_fen: int
    discount_fen: int
    total_fen: int

"""The one pricing function of the system, shared by the till (edge) and reports (hub).

Prices are int fen, quantities exact Fractions; rounding happens only through
protocol.money, half-up to the fen, once per line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StrictStr,
    WithJsonSchema,
    model_validator,
)

from protocol.models import Fen
from protocol.money import allocate, apply_basis_points, format_yuan, mul_fraction

__all__ = [
    "MAX_QUANTITY",
    "PriceLine",
    "PricedCart",
    "PricedLine",
    "Quantity",
    "line_refund_fen",
    "price_cart",
    "refund_split",
]

MAX_QUANTITY = 9999
"""The largest quantity one line may carry (pieces or kg)."""

# Milligrams of a kilogram is finer than any scale; a bound also keeps hostile input
# such as "1/<a thousand digits>" from costing anything.
_MAX_DENOMINATOR = 1_000_000
_MAX_QUANTITY_TEXT = 32
_QUANTITY_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+|[0-9]+/[0-9]+)", re.ASCII)
# Exponents beyond this would make Fraction(Decimal) build huge ints before the range check.
_MAX_DECIMAL_EXPONENT = 12


def _to_fraction(value: object) -> Fraction:
    # Floats are refused outright: 0.1 kg as a float is not 0.1 kg.
    if isinstance(value, bool):
        raise ValueError("quantity must be a number, not a bool")
    if isinstance(value, float):
        raise ValueError(f"quantity {value!r} is a float; send an int or a string such as '1.25' or '1/3'")
    if isinstance(value, Fraction):
        return value
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, Decimal):
        exponent = value.as_tuple().exponent
        if not isinstance(exponent, int) or abs(exponent) > _MAX_DECIMAL_EXPONENT:
            raise ValueError(f"quantity {value} is not a usable decimal number")
        return Fraction(value)
    if isinstance(value, str):
        text = value.strip()
        if len(text) > _MAX_QUANTITY_TEXT or not _QUANTITY_RE.fullmatch(text):
            raise ValueError(
                f"quantity {value[:_MAX_QUANTITY_TEXT]!r} is not a number;"
                " use digits such as '2', '1.25' or '1/3'"
            )
        _, _, denominator = text.partition("/")
        if denominator and int(denominator) == 0:
            raise ValueError(f"quantity {value!r} divides by zero")
        return Fraction(text)
    raise ValueError(
        f"quantity must be an int, a Fraction or a string such as '1.25', not {type(value).__name__}"
    )


def _validate_quantity(value: object, *, allow_zero: bool = False) -> Fraction:
    qty = _to_fraction(value)
    if qty < 0 or (qty == 0 and not allow_zero):
        raise ValueError(f"quantity {format_qty(qty)} must be greater than 0")
    if qty > MAX_QUANTITY:
        raise ValueError(f"quantity {format_qty(qty)} exceeds the maximum of {MAX_QUANTITY}")
    if qty.denominator > _MAX_DENOMINATOR:
        raise ValueError(f"quantity {format_qty(qty)} is finer than 1/{_MAX_DENOMINATOR} of a unit")
    return qty


def format_qty(qty: Fraction) -> str:
    """Write qty as a plain decimal when it has one ("1.25"), else as "n/d" ("1/3")."""
    denominator = qty.denominator
    twos = fives = 0
    while denominator % 2 == 0:
        denominator //= 2
        twos += 1
    while denominator % 5 == 0:
        denominator //= 5
        fives += 1
    if denominator != 1:
        return f"{qty.numerator}/{qty.denominator}"
    places = max(twos, fives)
    if places == 0:
        return str(qty.numerator)
    scaled = abs(qty.numerator) * 10**places // qty.denominator
    whole, frac = divmod(scaled, 10**places)
    sign = "-" if qty < 0 else ""
    return f"{sign}{whole}.{frac:0{places}d}"


Quantity = Annotated[
    Fraction,
    PlainValidator(_validate_quantity),
    # Always a string, also in Python mode: pydantic would write Fraction as "5/4" there.
    PlainSerializer(format_qty, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^[0-9]+(\.[0-9]+)?$|^[0-9]+/[0-9]+$",
            "examples": ["2", "1.25", "1/3"],
            "description": f"exact quantity (pieces or kg), greater than 0, at most {MAX_QUANTITY}",
        }
    ),
]

# A running count of a quantity (e.g. how much of a line was refunded): 0 allowed.
Counted = Annotated[
    Fraction,
    PlainValidator(lambda v: _validate_quantity(v, allow_zero=True)),
    # Always a string, also in Python mode: pydantic would write Fraction as "5/4" there.
    PlainSerializer(format_qty, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^[0-9]+(\.[0-9]+)?$|^[0-9]+/[0-9]+$",
            "examples": ["2", "1.25", "1/3"],
            "description": f"exact quantity (pieces or kg), 0 or more, at most {MAX_QUANTITY}",
        }
    ),
]
"""An exact line quantity: a Fraction attribute, dumped as "1.25" or "1/3"; never a float."""

_Price = Annotated[Fen, Field(ge=0)]
_Ident = Annotated[StrictStr, Field(min_length=1, max_length=64)]
PriceSource = Literal["list", "store", "member", "override", "label"]
BASIS_POINTS = 10_000


class _PricingModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PriceLine(_PricingModel):
    """One cart line to price: what was sold, how much, and every price that may apply."""

    line_id: _Ident
    sku: _Ident
    qty: Quantity
    list_price_fen: _Price
    store_price_fen: _Price | None = None
    override_price_fen: _Price | None = None
    fixed_total_fen: _Price | None = None
    cost_fen: _Price | None = None
    member_price_fen: _Price | None = None


class MemberPricing(_PricingModel):
    """The attached member's level benefits: a discount rate and/or the member price list.

    `discount_bp` is what the member pays (9500 = 95 %, "9.5折"); 10000 is no discount.
    """

    level: StrictStr = ""
    discount_bp: Annotated[int, Field(strict=True, ge=1, le=BASIS_POINTS)] = BASIS_POINTS
    member_prices: bool = False


class PricedLine(_PricingModel):
    """A priced line; for a scale label, unit_price_fen is the catalog's and total the label's."""

    line_id: _Ident
    sku: _Ident
    qty: Quantity
    unit_price_fen: _Price
    total_fen: _Price
    price_source: PriceSource
    explanation: str


class PricedCart(_PricingModel):
    """A priced cart whose totals always add up."""

    lines: list[PricedLine]
    subtotal_fen: _Price
    discount_fen: _Price = 0
    total_fen: _Price

    @model_validator(mode="after")
    def _check_totals(self) -> Self:
        line_sum = sum(line.total_fen for line in self.lines)
        if self.subtotal_fen != line_sum:
            raise ValueError(f"subtotal_fen {self.subtotal_fen} is not the sum of the line totals {line_sum}")
        if self.total_fen != self.subtotal_fen - self.discount_fen:
            raise ValueError(
                f"total_fen {self.total_fen} is not subtotal_fen {self.subtotal_fen}"
                f" minus discount_fen {self.discount_fen}"
            )
        return self


def _unit_price(line: PriceLine, member: MemberPricing | None) -> tuple[int, PriceSource]:
    """Manual price > member's best (member price list or level discount) > store > list."""
    if line.override_price_fen is not None:
        return line.override_price_fen, "override"
    base: int = line.list_price_fen
    source: PriceSource = "list"
    if line.store_price_fen is not None:
        base, source = line.store_price_fen, "store"
    if member is None:
        return base, source
    offers = [apply_basis_points(base, member.discount_bp)]
    if member.member_prices and line.member_price_fen is not None:
        offers.append(line.member_price_fen)
    best = min(offers)
    return (best, "member") if best < base else (base, source)


def _member_note(member: MemberPricing | None, line: PriceLine, unit_fen: int) -> str:
    if member is None:
        return "member price"
    if member.member_prices and line.member_price_fen == unit_fen:
        return f"{member.level} member price".strip()
    rate = format_qty(Fraction(member.discount_bp, 1000))  # 9500 -> "9.5折", pays 95 %
    return f"{member.level} member {rate}折".strip()


def _explain(qty: Fraction, unit_fen: int, total_fen: int, source: PriceSource, member_note: str = "") -> str:
    qty_text = format_qty(qty)
    weighed = qty.denominator != 1
    if source == "label":
        amount = f" ({qty_text} kg)" if weighed else ""
        return f"label price {format_yuan(total_fen)}{amount}"
    if weighed:
        text = f"{qty_text} kg × {format_yuan(unit_fen)}/kg = {format_yuan(total_fen)}"
    else:
        text = f"{qty_text} × {format_yuan(unit_fen)}"
    if source == "store":
        return f"{text} (store price)"
    if source == "member":
        return f"{text} ({member_note})"
    if source == "override":
        return f"{text} (manual price)"
    return text


def _price_line(line: PriceLine, member: MemberPricing | None) -> PricedLine:
    unit_fen, source = _unit_price(line, member)
    note = _member_note(member, line, unit_fen) if source == "member" else ""
    if line.fixed_total_fen is not None:
        total_fen, source = line.fixed_total_fen, "label"
    else:
        total_fen = mul_fraction(unit_fen, line.qty)
    return PricedLine(
        line_id=line.line_id,
        sku=line.sku,
        qty=line.qty,
        unit_price_fen=unit_fen,
        total_fen=total_fen,
        price_source=source,
        explanation=_explain(line.qty, unit_fen, total_fen, source, note),
    )


def price_cart(lines: Sequence[PriceLine], member: MemberPricing | None = None) -> PricedCart:
    """Price a cart: label total > manual price > member's best > store price > list price, per line.

    With a member attached, each line takes the lower of the level's discount on the
    store/list price and (if the level uses it) the line's member price; a price that is
    not lower than the store/list price leaves the line as it was.
    """
    seen: set[str] = set()
    priced: list[PricedLine] = []
    for index, line in enumerate(lines):
        if not isinstance(line, PriceLine):
            raise TypeError(f"lines[{index}] must be a PriceLine, not {type(line).__name__}")
        if line.line_id in seen:
            raise ValueError(f"line_id {line.line_id!r} appears more than once in the cart")
        seen.add(line.line_id)
        priced.append(_price_line(line, member))
    subtotal = sum(line.total_fen for line in priced)
    discount = 0
    return PricedCart(
        lines=priced, subtotal_fen=subtotal, discount_fen=discount, total_fen=subtotal - discount
    )


def _require_fen(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int amount of fen, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {value}")
    return value


def _require_qty(name: str, value: object) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, int | Fraction):
        raise TypeError(f"{name} must be an int or a Fraction, not {type(value).__name__}")
    return Fraction(value)


def refund_split(paid_total_fen: int, tender_amounts: Sequence[int], refund_fen: int) -> list[int]:
    """Split a refund over the order's tenders in proportion to what each one paid."""
    _require_fen("paid_total_fen", paid_total_fen)
    _require_fen("refund_fen", refund_fen)
    if isinstance(tender_amounts, str | bytes):
        raise TypeError("tender_amounts must be a sequence of ints")
    amounts = [_require_fen(f"tender_amounts[{i}]", a) for i, a in enumerate(tender_amounts)]
    if not amounts:
        raise ValueError("cannot refund an order without tenders: tender_amounts is empty")
    if sum(amounts) != paid_total_fen:
        raise ValueError(
            f"tender_amounts add up to {sum(amounts)} fen but paid_total_fen is {paid_total_fen}"
        )
    if refund_fen > paid_total_fen:
        raise ValueError(
            f"refund of {format_yuan(refund_fen)} exceeds the {format_yuan(paid_total_fen)} paid"
        )
    # allocate rounds cumulative shares; since refund <= paid, no part can exceed its tender.
    return allocate(refund_fen, amounts)


def line_refund_fen(
    line_total_fen: int,
    line_qty: Fraction | int,
    refund_qty: Fraction | int,
    already_refunded_fen: int = 0,
    already_refunded_qty: Fraction | int = 0,
) -> int:
    """Return the fen to refund for refund_qty of a line, so that partial refunds add up.

    The cumulative refunded share is rounded, not each step, so refunding the whole
    quantity in any number of parts returns exactly line_total_fen.
    """
    _require_fen("line_total_fen", line_total_fen)
    _require_fen("already_refunded_fen", already_refunded_fen)
    qty = _require_qty("line_qty", line_qty)
    step = _require_qty("refund_qty", refund_qty)
    before = _require_qty("already_refunded_qty", already_refunded_qty)
    if qty <= 0:
        raise ValueError(f"line_qty must be greater than 0, got {format_qty(qty)}")
    if step <= 0:
        raise ValueError(f"refund_qty must be greater than 0, got {format_qty(step)}")
    if before < 0:
        raise ValueError(f"already_refunded_qty must not be negative, got {format_qty(before)}")
    if before + step > qty:
        raise ValueError(
            f"cannot refund {format_qty(step)} more: {format_qty(before)} of"
            f" {format_qty(qty)} already refunded"
        )
    cumulative = mul_fraction(line_total_fen, (before + step) / qty)
    amount = cumulative - already_refunded_fen
    if amount < 0:
        raise ValueError(
            f"already_refunded_fen {already_refunded_fen} is more than the"
            f" {cumulative} fen due for {format_qty(before + step)} of {format_qty(qty)}"
        )
    return amount

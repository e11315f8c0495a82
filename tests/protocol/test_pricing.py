"""Tests for protocol.pricing: price precedence, half-up lines, exact refunds."""

from __future__ import annotations

import itertools
import json
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from protocol.pricing import (
    MAX_QUANTITY,
    PricedCart,
    PricedLine,
    PriceLine,
    Quantity,
    line_refund_fen,
    price_cart,
    refund_split,
)


def line(**overrides: Any) -> PriceLine:
    fields: dict[str, Any] = {"line_id": "l1", "sku": "sku-1", "qty": 1, "list_price_fen": 350}
    fields.update(overrides)
    return PriceLine(**fields)


def only_line(**overrides: Any) -> PricedLine:
    cart = price_cart([line(**overrides)])
    assert len(cart.lines) == 1
    return cart.lines[0]


quantities = st.fractions(min_value=Fraction(1, 1000), max_value=MAX_QUANTITY, max_denominator=1000)
prices = st.integers(min_value=0, max_value=10**7)

# ---------------------------------------------------------------- precedence


@pytest.mark.parametrize(
    ("overrides", "source", "total"),
    [
        ({}, "list", 700),
        ({"store_price_fen": 320}, "store", 640),
        ({"override_price_fen": 300}, "override", 600),
        ({"store_price_fen": 320, "override_price_fen": 300}, "override", 600),
        ({"store_price_fen": 320, "override_price_fen": 0}, "override", 0),
        ({"store_price_fen": 0}, "store", 0),
        ({"fixed_total_fen": 999}, "label", 999),
        (
            {"store_price_fen": 320, "override_price_fen": 300, "fixed_total_fen": 999},
            "label",
            999,
        ),
    ],
)
def test_price_precedence(overrides: dict[str, int], source: str, total: int) -> None:
    priced = only_line(qty=2, **overrides)
    assert priced.price_source == source
    assert priced.total_fen == total


@given(
    prices,
    st.none() | prices,
    st.none() | prices,
    st.none() | prices,
    quantities,
)
def test_precedence_property(
    list_fen: int, store: int | None, override: int | None, label: int | None, qty: Fraction
) -> None:
    priced = only_line(
        qty=qty,
        list_price_fen=list_fen,
        store_price_fen=store,
        override_price_fen=override,
        fixed_total_fen=label,
    )
    unit = override if override is not None else store if store is not None else list_fen
    assert priced.unit_price_fen == unit
    if label is not None:
        assert priced.price_source == "label"
        assert priced.total_fen == label
    else:
        exact = unit * qty
        # Half-up: the total is within half a fen of the exact amount, and halves go up.
        assert exact - Fraction(1, 2) < priced.total_fen <= exact + Fraction(1, 2)


# ---------------------------------------------------------------- rounding and text


@pytest.mark.parametrize(
    ("qty", "unit", "total"),
    [
        ("0.355", 3980, 1413),  # 1412.9
        ("0.352", 3980, 1401),  # 1400.96
        ("0.5", 397, 199),  # 198.5: half-up, where banker's rounding gives 198
        ("0.5", 399, 200),  # 199.5
        ("0.125", 4, 1),  # 0.5
        ("0.124", 4, 0),  # 0.496
        ("1/3", 100, 33),
        ("2/3", 100, 67),
        ("3", 350, 1050),
    ],
)
def test_line_total_rounds_half_up(qty: str, unit: int, total: int) -> None:
    assert only_line(qty=qty, list_price_fen=unit).total_fen == total


@pytest.mark.parametrize(
    ("overrides", "text"),
    [
        ({"qty": 2}, "2 × ¥3.50"),
        ({"qty": 1, "list_price_fen": 123456}, "1 × ¥1,234.56"),
        ({"qty": "0.352", "list_price_fen": 3980}, "0.352 kg × ¥39.80/kg = ¥14.01"),
        ({"qty": "1/3", "list_price_fen": 3980}, "1/3 kg × ¥39.80/kg = ¥13.27"),
        ({"qty": 2, "store_price_fen": 320}, "2 × ¥3.20 (store price)"),
        ({"qty": 2, "override_price_fen": 300}, "2 × ¥3.00 (manual price)"),
        ({"qty": "0.352", "fixed_total_fen": 1401}, "label price ¥14.01 (0.352 kg)"),
        ({"qty": 1, "fixed_total_fen": 1401}, "label price ¥14.01"),
    ],
)
def test_explanation(overrides: dict[str, Any], text: str) -> None:
    assert only_line(**overrides).explanation == text


def test_cart_totals_and_order() -> None:
    cart = price_cart(
        [
            line(line_id="a", qty=2),
            line(line_id="b", qty="0.355", list_price_fen=3980),
            line(line_id="c", qty=1, fixed_total_fen=1401),
        ]
    )
    assert [pl.line_id for pl in cart.lines] == ["a", "b", "c"]
    assert cart.subtotal_fen == 700 + 1413 + 1401
    assert cart.discount_fen == 0
    assert cart.total_fen == cart.subtotal_fen


def test_empty_cart() -> None:
    assert price_cart([]) == PricedCart(lines=[], subtotal_fen=0, total_fen=0)


def test_price_cart_rejects_duplicate_line_ids() -> None:
    with pytest.raises(ValueError, match="'a' appears more than once"):
        price_cart([line(line_id="a"), line(line_id="a")])


def test_price_cart_rejects_dicts() -> None:
    with pytest.raises(TypeError, match="must be a PriceLine"):
        price_cart([{"line_id": "a"}])  # type: ignore[list-item]


@given(st.lists(st.tuples(quantities, prices, st.none() | prices), max_size=8))
def test_cart_is_deterministic_and_adds_up(rows: list[tuple[Fraction, int, int | None]]) -> None:
    lines = [
        line(line_id=f"l{i}", qty=qty, list_price_fen=unit, fixed_total_fen=label)
        for i, (qty, unit, label) in enumerate(rows)
    ]
    cart = price_cart(lines)
    assert cart == price_cart(lines)
    assert cart.subtotal_fen == sum(pl.total_fen for pl in cart.lines)
    assert cart.total_fen == cart.subtotal_fen - cart.discount_fen


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("qty", [1.0, 0.5, 1.25, float("nan")])
def test_float_quantity_rejected(qty: float) -> None:
    with pytest.raises(ValidationError, match="float"):
        line(qty=qty)


@pytest.mark.parametrize("field", ["list_price_fen", "store_price_fen", "fixed_total_fen"])
def test_float_money_rejected(field: str) -> None:
    with pytest.raises(ValidationError):
        line(**{field: 350.0})


def test_float_quantity_rejected_from_json() -> None:
    payload = '{"line_id": "a", "sku": "x", "qty": 1.5, "list_price_fen": 1}'
    with pytest.raises(ValidationError, match="float"):
        PriceLine.model_validate_json(payload)


@pytest.mark.parametrize(
    ("qty", "expected"),
    [
        (2, Fraction(2)),
        ("2", Fraction(2)),
        ("1.25", Fraction(5, 4)),
        (" 0.352 ", Fraction(352, 1000)),
        ("1/3", Fraction(1, 3)),
        (Fraction(7, 2), Fraction(7, 2)),
        (Decimal("0.125"), Fraction(1, 8)),
        (MAX_QUANTITY, Fraction(MAX_QUANTITY)),
    ],
)
def test_quantity_inputs(qty: object, expected: Fraction) -> None:
    parsed = line(qty=qty).qty
    assert isinstance(parsed, Fraction)
    assert parsed == expected


@pytest.mark.parametrize(
    ("qty", "message"),
    [
        (0, "greater than 0"),
        ("-1", "greater than 0"),
        (MAX_QUANTITY + 1, "maximum of 9999"),
        ("9999.001", "maximum of 9999"),
        (Fraction(1, 10**7), "finer than"),
        ("1e3", "not a number"),
        ("1/0", "divides by zero"),
        ("abc", "not a number"),
        ("", "not a number"),
        ("nan", "not a number"),
        ("1" * 40, "not a number"),
        (True, "bool"),
        (Decimal("NaN"), "not a usable"),
        (Decimal("1e-99"), "not a usable"),
        (None, "int, a Fraction or a string"),
    ],
)
def test_quantity_rejected(qty: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        line(qty=qty)


@pytest.mark.parametrize(
    "overrides",
    [
        {"list_price_fen": -1},
        {"store_price_fen": -1},
        {"override_price_fen": "350"},
        {"line_id": ""},
        {"sku": 12},
        {"unknown": 1},
        {"list_price_fen": True},
    ],
)
def test_price_line_validation(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        line(**overrides)


def test_models_are_frozen() -> None:
    priced = line()
    with pytest.raises(ValidationError):
        priced.qty = Fraction(2)  # type: ignore[misc]


def test_priced_cart_refuses_totals_that_do_not_add_up() -> None:
    good = price_cart([line(qty=2)])
    data = good.model_dump()
    with pytest.raises(ValidationError, match="sum of the line totals"):
        PricedCart.model_validate({**data, "subtotal_fen": 701, "total_fen": 701})
    with pytest.raises(ValidationError, match="minus discount_fen"):
        PricedCart.model_validate({**data, "discount_fen": 100})


# ---------------------------------------------------------------- JSON


def test_json_round_trip_keeps_exact_quantities() -> None:
    cart = price_cart(
        [
            line(line_id="a", qty="1.25"),
            line(line_id="b", qty="1/3", list_price_fen=3980),
            line(line_id="c", qty=2),
            line(line_id="d", qty="0.352", fixed_total_fen=1401),
        ]
    )
    text = cart.model_dump_json()
    raw = json.loads(text)
    assert [row["qty"] for row in raw["lines"]] == ["1.25", "1/3", "2", "0.352"]
    assert PricedCart.model_validate_json(text) == cart
    assert PricedCart.model_validate(cart.model_dump(mode="json")) == cart
    # The attribute is the exact Fraction; every dump writes the same text.
    assert cart.lines[0].qty == Fraction(5, 4)
    assert cart.model_dump()["lines"][0]["qty"] == "1.25"
    assert PricedCart.model_validate(cart.model_dump()) == cart


@given(quantities)
def test_quantity_json_round_trip_property(qty: Fraction) -> None:
    adapter: TypeAdapter[Fraction] = TypeAdapter(Quantity)
    encoded = adapter.dump_python(qty, mode="json")
    assert isinstance(encoded, str)
    assert "e" not in encoded
    assert adapter.validate_python(encoded) == qty
    assert adapter.validate_json(adapter.dump_json(qty)) == qty


@pytest.mark.parametrize(
    ("qty", "text"),
    [
        (Fraction(5, 4), "1.25"),
        (Fraction(1, 3), "1/3"),
        (Fraction(7), "7"),
        (Fraction(1, 1000), "0.001"),
        (Fraction(1, 8), "0.125"),
        (Fraction(1, 6), "1/6"),
        (Fraction(9999), "9999"),
    ],
)
def test_quantity_json_text(qty: Fraction, text: str) -> None:
    assert TypeAdapter(Quantity).dump_python(qty, mode="json") == text


def test_quantity_json_schema_is_a_string() -> None:
    schema = PriceLine.model_json_schema()
    assert schema["properties"]["qty"]["type"] == "string"


# ---------------------------------------------------------------- refund_split


@pytest.mark.parametrize(
    ("tenders", "refund", "expected"),
    [
        ([1000], 300, [300]),
        ([600, 400], 500, [300, 200]),
        ([600, 400], 1000, [600, 400]),
        ([600, 400], 0, [0, 0]),
        ([1, 1, 1], 2, [1, 0, 1]),
        ([0, 500], 100, [0, 100]),
        ([0, 0], 0, [0, 0]),
    ],
)
def test_refund_split_examples(tenders: list[int], refund: int, expected: list[int]) -> None:
    assert refund_split(sum(tenders), tenders, refund) == expected


@given(st.data())
def test_refund_split_property(data: st.DataObject) -> None:
    tenders = data.draw(st.lists(st.integers(0, 10**7), min_size=1, max_size=6))
    paid = sum(tenders)
    refund = data.draw(st.integers(0, paid))
    parts = refund_split(paid, tenders, refund)
    assert len(parts) == len(tenders)
    assert sum(parts) == refund
    for part, tender in zip(parts, tenders, strict=True):
        assert 0 <= part <= tender


@pytest.mark.parametrize(
    ("paid", "tenders", "refund", "message"),
    [
        (1000, [600, 300], 100, "add up to 900"),
        (1000, [600, 400], 1001, "exceeds"),
        (1000, [600, 400], -1, "not be negative"),
        (100, [150, -50], 10, "not be negative"),
        (0, [], 0, "without tenders"),
    ],
)
def test_refund_split_rejects(paid: int, tenders: list[int], refund: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        refund_split(paid, tenders, refund)


@pytest.mark.parametrize(
    ("paid", "tenders", "refund"),
    [(1000.0, [1000], 10), (1000, [1000.0], 10), (1000, [1000], 10.0), (1000, "1000", 10)],
)
def test_refund_split_rejects_floats(paid: Any, tenders: Any, refund: Any) -> None:
    with pytest.raises(TypeError):
        refund_split(paid, tenders, refund)


# ---------------------------------------------------------------- line_refund_fen


def test_line_refund_thirds_add_up() -> None:
    # 1000 fen over 3 pieces: 333, 334, 333 rather than 333 × 3 = 999.
    steps = [
        line_refund_fen(1000, 3, 1),
        line_refund_fen(1000, 3, 1, already_refunded_fen=333, already_refunded_qty=1),
        line_refund_fen(1000, 3, 1, already_refunded_fen=667, already_refunded_qty=2),
    ]
    assert steps == [333, 334, 333]
    assert sum(steps) == 1000


def test_line_refund_whole_line() -> None:
    assert line_refund_fen(1413, Fraction(71, 200), Fraction(71, 200)) == 1413


def test_line_refund_part_of_weighed_line() -> None:
    # 0.1 of 0.355 kg of a 1413 fen line: 1413 × 0.1 / 0.355 = 398.03
    assert line_refund_fen(1413, Fraction("0.355"), Fraction("0.1")) == 398


@given(st.data())
def test_line_refund_in_random_steps_sums_to_total(data: st.DataObject) -> None:
    total = data.draw(st.integers(0, 10**7))
    qty = data.draw(quantities)
    # Cut the quantity at random points into a random number of steps.
    cuts = data.draw(
        st.lists(
            st.fractions(min_value=0, max_value=1, max_denominator=97).filter(lambda f: 0 < f < 1),
            max_size=6,
            unique=True,
        )
    )
    marks = [Fraction(0), *sorted(c * qty for c in cuts), qty]
    refunded_fen = 0
    refunded_qty = Fraction(0)
    for start, end in itertools.pairwise(marks):
        step = line_refund_fen(
            total,
            qty,
            end - start,
            already_refunded_fen=refunded_fen,
            already_refunded_qty=refunded_qty,
        )
        assert 0 <= step <= total
        refunded_fen += step
        refunded_qty += end - start
    assert refunded_qty == qty
    assert refunded_fen == total


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"refund_qty": 0}, "refund_qty must be greater than 0"),
        ({"refund_qty": -1}, "refund_qty must be greater than 0"),
        ({"refund_qty": 4}, "cannot refund 4 more: 0 of 3"),
        ({"refund_qty": 2, "already_refunded_qty": 2}, "cannot refund 2 more: 2 of 3"),
        ({"refund_qty": Fraction(1, 2), "already_refunded_qty": -1}, "not be negative"),
        ({"line_qty": 0}, "line_qty must be greater than 0"),
        ({"already_refunded_fen": 900}, "more than the 333 fen due"),
        ({"line_total_fen": -1}, "not be negative"),
    ],
)
def test_line_refund_rejects(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"line_total_fen": 1000, "line_qty": 3, "refund_qty": 1}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        line_refund_fen(**arguments)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"refund_qty": 0.5},
        {"line_qty": 3.0},
        {"already_refunded_qty": 0.0},
        {"line_total_fen": 1000.0},
        {"refund_qty": True},
    ],
)
def test_line_refund_rejects_floats(kwargs: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {"line_total_fen": 1000, "line_qty": 3, "refund_qty": 1}
    arguments.update(kwargs)
    with pytest.raises(TypeError):
        line_refund_fen(**arguments)

"""Tests for protocol.money: exact half-up rounding, allocation, yuan text."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.money import (
    allocate,
    apply_basis_points,
    format_yuan,
    mul_fraction,
    parse_yuan,
    round_half_up,
)


def _reference_round(value: Fraction) -> int:
    """Half-up (away from zero) rounding computed a different way, via floor of |x| + 1/2."""
    magnitude = math.floor(abs(value) + Fraction(1, 2))
    return magnitude if value >= 0 else -magnitude


@pytest.mark.parametrize(
    ("numerator", "denominator", "expected"),
    [
        (5, 2, 3),
        (-5, 2, -3),
        (3, 2, 2),
        (-3, 2, -2),
        (7, 3, 2),
        (-7, 3, -2),
        (8, 3, 3),
        (-8, 3, -3),
        (0, 7, 0),
        (10, 5, 2),
        (1, 3, 0),
        (-1, 3, 0),
        (149, 100, 1),
        (150, 100, 2),
    ],
)
def test_round_half_up_examples(numerator: int, denominator: int, expected: int) -> None:
    assert round_half_up(numerator, denominator) == expected


@given(st.integers(), st.integers(min_value=1, max_value=10**12))
def test_round_half_up_matches_fraction_reference(numerator: int, denominator: int) -> None:
    assert round_half_up(numerator, denominator) == _reference_round(Fraction(numerator, denominator))


@given(st.integers(), st.integers(min_value=1, max_value=10**6))
def test_round_half_up_is_symmetric(numerator: int, denominator: int) -> None:
    assert round_half_up(-numerator, denominator) == -round_half_up(numerator, denominator)


@pytest.mark.parametrize("denominator", [0, -1, -100])
def test_round_half_up_rejects_non_positive_denominator(denominator: int) -> None:
    with pytest.raises(ValueError, match="denominator must be positive"):
        round_half_up(1, denominator)


@pytest.mark.parametrize(("numerator", "denominator"), [(1.5, 1), (1, 2.0), (True, 1), ("1", 1)])
def test_round_half_up_rejects_non_ints(numerator: Any, denominator: Any) -> None:
    with pytest.raises(TypeError, match="must be an int"):
        round_half_up(numerator, denominator)


def test_mul_fraction_weighs_price_by_kilograms() -> None:
    # 39.80 yuan/kg x 0.355 kg = 14.129 yuan -> 14.13
    assert mul_fraction(3980, Fraction(355, 1000)) == 1413
    # 12.50 yuan/kg x 0.5 kg = 6.25 yuan exactly
    assert mul_fraction(1250, Fraction(1, 2)) == 625
    # 0.25 fen rounds down, 0.5 fen rounds up, negative halves round away from zero
    assert mul_fraction(1, Fraction(1, 4)) == 0
    assert mul_fraction(1, Fraction(1, 2)) == 1
    assert mul_fraction(-1, Fraction(1, 2)) == -1
    assert mul_fraction(250, 3) == 750


@pytest.mark.parametrize("factor", [0.5, Decimal("0.5"), "0.5"])
def test_mul_fraction_rejects_inexact_factors(factor: Any) -> None:
    with pytest.raises(TypeError):
        mul_fraction(100, factor)


def test_mul_fraction_rejects_float_amount() -> None:
    with pytest.raises(TypeError, match="amount_fen"):
        mul_fraction(1.0, Fraction(1, 2))  # type: ignore[arg-type]


@given(st.integers(min_value=-(10**12), max_value=10**12), st.fractions())
def test_mul_fraction_matches_reference(amount: int, factor: Fraction) -> None:
    assert mul_fraction(amount, factor) == _reference_round(amount * factor)


@pytest.mark.parametrize(
    ("amount", "bp", "expected"),
    [
        (10000, 850, 850),  # 8.5 % of 100 yuan
        (999, 500, 50),  # 49.95 fen -> 50
        (990, 500, 50),  # 49.5 fen -> 50
        (989, 500, 49),  # 49.45 fen -> 49
        (-990, 500, -50),
        (12345, 10000, 12345),
        (12345, 0, 0),
    ],
)
def test_apply_basis_points(amount: int, bp: int, expected: int) -> None:
    assert apply_basis_points(amount, bp) == expected


def test_apply_basis_points_rejects_float() -> None:
    with pytest.raises(TypeError):
        apply_basis_points(100, 8.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("total", "weights", "expected"),
    [
        (100, [1, 1, 1], [33, 34, 33]),
        (-100, [1, 1, 1], [-33, -34, -33]),
        (1000, [3000, 1000], [750, 250]),
        (10, [0, 0], [5, 5]),
        (10, [0, 0, 0], [3, 4, 3]),
        (7, [5, 0, 5, 0], [4, 0, 3, 0]),
        (0, [1, 2, 3], [0, 0, 0]),
        (1, [1, 1, 1], [0, 1, 0]),
        (5, [7], [5]),
    ],
)
def test_allocate_examples(total: int, weights: list[int], expected: list[int]) -> None:
    assert allocate(total, weights) == expected


def test_allocate_rejects_empty_and_negative_weights() -> None:
    with pytest.raises(ValueError, match="empty"):
        allocate(100, [])
    with pytest.raises(ValueError, match=r"weights\[1\] is -1"):
        allocate(100, [1, -1])


@pytest.mark.parametrize("weights", [[1.0, 2.0], [1, True]])
def test_allocate_rejects_non_int_weights(weights: list[Any]) -> None:
    with pytest.raises(TypeError):
        allocate(100, weights)


def test_allocate_rejects_float_total() -> None:
    with pytest.raises(TypeError):
        allocate(100.0, [1, 2])  # type: ignore[arg-type]


_totals = st.integers(min_value=-(10**9), max_value=10**9)
_weights = st.lists(st.integers(min_value=0, max_value=10**7), min_size=1, max_size=40)


@given(_totals, _weights)
def test_allocate_parts_sum_to_total(total: int, weights: list[int]) -> None:
    parts = allocate(total, weights)
    assert len(parts) == len(weights)
    assert sum(parts) == total


@given(_totals, _weights)
def test_allocate_parts_have_the_sign_of_the_total(total: int, weights: list[int]) -> None:
    parts = allocate(total, weights)
    if total >= 0:
        assert all(part >= 0 for part in parts)
    else:
        assert all(part <= 0 for part in parts)


@given(_totals, _weights)
def test_allocate_parts_are_within_one_fen_of_exact_share(total: int, weights: list[int]) -> None:
    effective = weights if sum(weights) else [1] * len(weights)
    whole = sum(effective)
    for part, weight in zip(allocate(total, weights), effective, strict=True):
        assert abs(part - Fraction(total * weight, whole)) < 1
        if weight == 0:
            assert part == 0


@given(_totals, _weights)
def test_allocate_refund_mirrors_sale(total: int, weights: list[int]) -> None:
    assert allocate(-total, weights) == [-part for part in allocate(total, weights)]


@pytest.mark.parametrize(
    ("text", "fen"),
    [
        ("12", 1200),
        ("12.3", 1230),
        ("12.30", 1230),
        ("-0.5", -50),
        ("+0.05", 5),
        ("¥12.30", 1230),
        ("￥1,234.50", 123450),
        ("-¥0.05", -5),
        ("¥-0.05", -5),
        ("  7.01 ", 701),
        ("1,234,567", 123456700),
        ("0", 0),
        ("007.5", 750),
    ],
)
def test_parse_yuan_examples(text: str, fen: int) -> None:
    assert parse_yuan(text) == fen


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("12.345", "3 decimal places"),
        ("0.001", "3 decimal places"),
        ("12.", "no digits after"),
        ("", "empty"),
        ("   ", "empty"),
        ("abc", "expected digits"),
        ("1,23", "expected digits"),
        ("12,3456", "expected digits"),
        ("1.2.3", "expected digits"),
        ("$12", "expected digits"),
        ("--1", "more than one sign"),
        ("-¥-1", "more than one sign"),
        ("¥", "expected digits"),
        ("１２", "expected digits"),  # full-width digits
        (".5", "expected digits"),
        ("1e3", "expected digits"),
    ],
)
def test_parse_yuan_rejects_garbage_with_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_yuan(text)


def test_parse_yuan_rejects_non_str() -> None:
    with pytest.raises(TypeError):
        parse_yuan(12.3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fen", "text"),
    [
        (1230, "¥12.30"),
        (-5, "-¥0.05"),
        (123456, "¥1,234.56"),
        (0, "¥0.00"),
        (100, "¥1.00"),
        (-123456789, "-¥1,234,567.89"),
    ],
)
def test_format_yuan_examples(fen: int, text: str) -> None:
    assert format_yuan(fen) == text


def test_format_yuan_symbol() -> None:
    assert format_yuan(1230, symbol="") == "12.30"
    assert format_yuan(-1230, symbol="RMB ") == "-RMB 12.30"


def test_format_yuan_rejects_float() -> None:
    with pytest.raises(TypeError):
        format_yuan(12.3)  # type: ignore[arg-type]


@given(st.integers(min_value=-(10**15), max_value=10**15), st.sampled_from(["¥", "￥", ""]))
def test_format_then_parse_round_trips(fen: int, symbol: str) -> None:
    assert parse_yuan(format_yuan(fen, symbol=symbol)) == fen

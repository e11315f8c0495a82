"""Money arithmetic in integer fen: the one place where rounding happens."""

from __future__ import annotations

import re
from collections.abc import Sequence
from fractions import Fraction

__all__ = [
    "allocate",
    "apply_basis_points",
    "format_yuan",
    "mul_fraction",
    "parse_yuan",
    "round_half_up",
]

_FEN_PER_YUAN = 100
_BASIS_POINTS = 10_000

# Sign may come before or after the symbol so that "-¥0.05" (what format_yuan writes)
# and "¥-0.05" both parse; digits are ASCII only.
_YUAN_RE = re.compile(
    r"(?P<sign1>[-+]?)(?P<symbol>[¥￥]?)(?P<sign2>[-+]?)"
    r"(?P<int>[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)"
    r"(?:(?P<point>\.)(?P<frac>[0-9]*))?",
    re.ASCII,
)


def _require_int(name: str, value: object) -> int:
    # bool is an int subclass but never a meaningful amount; floats are banned outright.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    return value


def round_half_up(numerator: int, denominator: int) -> int:
    """Round numerator/denominator to the nearest int, halves away from zero."""
    _require_int("numerator", numerator)
    _require_int("denominator", denominator)
    if denominator <= 0:
        raise ValueError(f"denominator must be positive, got {denominator}")
    quotient, remainder = divmod(abs(numerator), denominator)
    if 2 * remainder >= denominator:
        quotient += 1
    return -quotient if numerator < 0 else quotient


def mul_fraction(amount_fen: int, factor: Fraction | int) -> int:
    """Multiply an amount by an exact factor, rounding half-up to the fen."""
    _require_int("amount_fen", amount_fen)
    if isinstance(factor, Fraction):
        return round_half_up(amount_fen * factor.numerator, factor.denominator)
    return amount_fen * _require_int("factor", factor)


def apply_basis_points(amount_fen: int, bp: int) -> int:
    """Return amount × bp/10000, rounded half-up to the fen."""
    _require_int("amount_fen", amount_fen)
    _require_int("bp", bp)
    return round_half_up(amount_fen * bp, _BASIS_POINTS)


def allocate(total_fen: int, weights: Sequence[int]) -> list[int]:
    """Split total_fen over parts in proportion to weights; parts sum exactly to total."""
    _require_int("total_fen", total_fen)
    if isinstance(weights, str | bytes):
        raise TypeError("weights must be a sequence of ints")
    if len(weights) == 0:
        raise ValueError("cannot allocate over no parts: weights is empty")
    for index, weight in enumerate(weights):
        _require_int(f"weights[{index}]", weight)
        if weight < 0:
            raise ValueError(f"weights must not be negative, weights[{index}] is {weight}")
    effective = list(weights)
    if sum(effective) == 0:
        effective = [1] * len(effective)
    whole = sum(effective)
    # Rounding the cumulative share and differencing keeps every part between the
    # neighbouring roundings, so no part can go negative and the last part lands on total.
    parts: list[int] = []
    cumulative = 0
    previous = 0
    for weight in effective:
        cumulative += weight
        current = round_half_up(total_fen * cumulative, whole)
        parts.append(current - previous)
        previous = current
    return parts


def parse_yuan(text: str) -> int:
    """Parse a yuan amount such as "12.30", "-0.5" or "￥1,234.50" into fen."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, not {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise ValueError("cannot parse an empty string as a yuan amount")
    match = _YUAN_RE.fullmatch(stripped)
    if match is None:
        raise ValueError(
            f"cannot parse {text!r} as a yuan amount: expected digits with an optional"
            " sign, '¥' and up to 2 decimals, such as '¥1,234.50' or '-12.3'"
        )
    sign1, sign2 = match["sign1"], match["sign2"]
    if sign1 and sign2:
        raise ValueError(f"cannot parse {text!r} as a yuan amount: more than one sign")
    frac = match["frac"] or ""
    if match["point"] and not frac:
        raise ValueError(f"cannot parse {text!r} as a yuan amount: no digits after '.'")
    if len(frac) > 2:
        raise ValueError(
            f"cannot parse {text!r} as a yuan amount: {len(frac)} decimal places,"
            " at most 2 (whole fen) are allowed"
        )
    yuan = int(match["int"].replace(",", ""))
    fen = yuan * _FEN_PER_YUAN + int(frac.ljust(2, "0"))
    return -fen if "-" in (sign1, sign2) else fen


def format_yuan(amount_fen: int, *, symbol: str = "¥") -> str:
    """Format fen as yuan with thousands separators: 123456 → "¥1,234.56"."""
    _require_int("amount_fen", amount_fen)
    yuan, fen = divmod(abs(amount_fen), _FEN_PER_YUAN)
    sign = "-" if amount_fen < 0 else ""
    return f"{sign}{symbol}{yuan:,}.{fen:02d}"

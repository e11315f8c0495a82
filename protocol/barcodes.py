"""Barcodes: GTIN check digits, scanner input clean-up and in-store scale labels."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from protocol.errors import ProtocolError

__all__ = [
    "BarcodeError",
    "ScaleBarcode",
    "ScaleLayout",
    "gtin_check_digit",
    "is_valid_gtin",
    "make_scale_barcode",
    "normalize_barcode",
    "parse_scale_barcode",
]

MAX_BARCODE_LENGTH = 64
_GTIN_LENGTHS = frozenset({8, 12, 13, 14})
_EAN13_LENGTH = 13
_GRAMS_PER_KG = 1000
_VALUE_KINDS = ("price", "weight")

# An IME in full-width mode types U+FF01..U+FF5E for the printable ASCII range; cashiers
# keying a code by hand get full-width digits (and letters) without noticing.
_FULL_WIDTH_TO_ASCII = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)}
# Scanners wrap codes in CR/LF/TAB and sometimes STX/ETX; copy-paste brings BOMs and
# zero-width spaces. Those are only ever noise at the ends of a code.
_NOISE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})


class BarcodeError(ProtocolError, ValueError):
    """A barcode is malformed, has a wrong check digit, or does not fit a layout."""


def _show(code: str) -> str:
    # Scanner garbage can be long; keep error messages readable.
    return repr(code) if len(code) <= 40 else repr(code[:37] + "...")


def _is_ascii_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _require_str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    return value


def _check_digit(digits: str) -> int:
    # GS1 mod 10: weights 3, 1, 3, ... counted from the rightmost body digit, so the same
    # rule serves every GTIN length.
    total = 0
    for position, char in enumerate(reversed(digits)):
        total += int(char) * (3 if position % 2 == 0 else 1)
    return (10 - total % 10) % 10


def gtin_check_digit(body: str) -> int:
    """Return the GS1 mod-10 check digit for a GTIN body (the code without its last digit)."""
    _require_str("body", body)
    if not body or not _is_ascii_digits(body):
        raise BarcodeError(f"GTIN body {_show(body)} must be one or more digits 0-9")
    return _check_digit(body)


def is_valid_gtin(code: str) -> bool:
    """Tell whether code is an EAN-8, UPC-A, EAN-13 or GTIN-14 with a correct check digit."""
    if not isinstance(code, str) or len(code) not in _GTIN_LENGTHS:
        return False
    if not _is_ascii_digits(code):
        return False
    return _check_digit(code[:-1]) == int(code[-1])


def normalize_barcode(code: str) -> str:
    """Clean scanner or keyboard input into a barcode: trim noise, fold full-width characters."""
    _require_str("code", code)
    folded = code.translate(_FULL_WIDTH_TO_ASCII)
    start, end = 0, len(folded)
    while start < end and _is_noise(folded[start]):
        start += 1
    while end > start and _is_noise(folded[end - 1]):
        end -= 1
    cleaned = folded[start:end]
    if not cleaned:
        raise BarcodeError(f"barcode {_show(code)} is empty; scan or type the code again")
    if len(cleaned) > MAX_BARCODE_LENGTH:
        raise BarcodeError(
            f"barcode {_show(cleaned)} has {len(cleaned)} characters,"
            f" at most {MAX_BARCODE_LENGTH} are allowed"
        )
    for index, char in enumerate(cleaned):
        if not char.isprintable():
            raise BarcodeError(
                f"barcode {_show(cleaned)} has a non-printable character"
                f" U+{ord(char):04X} at position {index}; check the scanner's settings"
            )
    return cleaned


def _is_noise(char: str) -> bool:
    return char.isspace() or unicodedata.category(char) in _NOISE_CATEGORIES


@dataclass(frozen=True)
class ScaleLayout:
    """How a label scale lays out its EAN-13: prefix, PLU, value (fen or grams), check digit."""

    prefix: str = "2"
    plu_digits: int = 6
    value_digits: int = 5
    value_kind: Literal["price", "weight"] = "price"

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str) or not 1 <= len(self.prefix) <= 2:
            raise BarcodeError(f"scale prefix {self.prefix!r} must be 1 or 2 digits")
        if not _is_ascii_digits(self.prefix):
            raise BarcodeError(f"scale prefix {self.prefix!r} must be digits 0-9 only")
        for name in ("plu_digits", "value_digits"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BarcodeError(f"{name} must be a positive int, got {value!r}")
        if self.value_kind not in _VALUE_KINDS:
            raise BarcodeError(f"value_kind {self.value_kind!r} must be one of {', '.join(_VALUE_KINDS)}")
        length = len(self.prefix) + self.plu_digits + self.value_digits + 1
        if length != _EAN13_LENGTH:
            raise BarcodeError(
                f"scale layout prefix {self.prefix!r} ({len(self.prefix)}) + {self.plu_digits}"
                f" PLU digits + {self.value_digits} value digits + 1 check digit makes"
                f" {length} digits; an EAN-13 label needs exactly 13"
            )


@dataclass(frozen=True)
class ScaleBarcode:
    """What a scale label encodes: the PLU and either a price in fen or a weight in kg."""

    plu: str
    price_fen: int | None
    weight: Fraction | None


def parse_scale_barcode(code: str, layout: ScaleLayout) -> ScaleBarcode | None:
    """Decode a scale label, or return None when code is not one (so it is a normal barcode).

    A code that carries the layout's prefix but fails its check digit raises
    BarcodeError: a misread label must never be sold at a misread price.
    """
    _require_str("code", code)
    if len(code) != _EAN13_LENGTH or not _is_ascii_digits(code):
        return None
    if not code.startswith(layout.prefix):
        return None
    expected = _check_digit(code[:-1])
    if int(code[-1]) != expected:
        raise BarcodeError(
            f"barcode {code!r} has check digit {code[-1]}, expected {expected};"
            " the label was misread or damaged, scan it again or key the item in"
        )
    plu_start = len(layout.prefix)
    value_start = plu_start + layout.plu_digits
    plu = code[plu_start:value_start]
    value = int(code[value_start : value_start + layout.value_digits])
    if layout.value_kind == "weight":
        return ScaleBarcode(plu=plu, price_fen=None, weight=Fraction(value, _GRAMS_PER_KG))
    return ScaleBarcode(plu=plu, price_fen=value, weight=None)


def make_scale_barcode(plu: str, value: int, layout: ScaleLayout) -> str:
    """Build the EAN-13 a label scale prints for plu and value (fen or grams, per layout)."""
    _require_str("plu", plu)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"value must be an int, not {type(value).__name__}")
    if not plu or not _is_ascii_digits(plu):
        raise BarcodeError(f"PLU {plu!r} must be one or more digits 0-9")
    if len(plu) > layout.plu_digits:
        raise BarcodeError(
            f"PLU {plu!r} has {len(plu)} digits; this scale layout has room for {layout.plu_digits}"
        )
    unit = "fen" if layout.value_kind == "price" else "grams"
    limit = 10**layout.value_digits - 1
    if not 0 <= value <= limit:
        raise BarcodeError(
            f"{layout.value_kind} {value} {unit} does not fit this scale layout's"
            f" {layout.value_digits} digits (0 to {limit})"
        )
    body = f"{layout.prefix}{plu.zfill(layout.plu_digits)}{value:0{layout.value_digits}d}"
    return f"{body}{_check_digit(body)}"

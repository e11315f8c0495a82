"""GS1 application identifiers: element strings (FNC1/GS separated) and the "(01)…(17)…" human-readable form.

Pure parsing of what a GS1-128, GS1 DataMatrix, GS1 QR or DataBar symbol carries: GTINs with
their check digit, batch and serial numbers, dates, weights and prices.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from enum import StrEnum

from drivers.errors import DriverError

__all__ = [
    "GS",
    "AiKind",
    "AiSpec",
    "BarcodeError",
    "Gs1Element",
    "Gs1Message",
    "ai_spec",
    "gs1_check_digit",
    "is_valid_gtin",
    "parse_gs1",
    "parse_gs1_date",
]

GS = "\x1d"

# GS1 General Specifications, figure 7.11-1 "invariant character set 82"; no space.
_CSET82 = frozenset("!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz")
_HRI_AI = re.compile(r"\((\d{2,4})\)")


class BarcodeError(DriverError):
    """A barcode's content is not valid GS1 data; the message names the AI and the problem."""

    def __init__(self, message: str, *, ai: str | None = None) -> None:
        """Keep the offending AI (None when the AI itself could not be read)."""
        super().__init__(message)
        self.ai = ai


class AiKind(StrEnum):
    """How an AI's data field is checked and converted."""

    NUMERIC = "numeric"
    COUNT = "count"
    ALPHANUMERIC = "alphanumeric"
    CHECKED = "checked"
    DATE = "date"
    DECIMAL = "decimal"


@dataclass(frozen=True, slots=True)
class AiSpec:
    """One application identifier: its data title, kind, length range, implied decimals and unit."""

    ai: str
    title: str
    kind: AiKind
    min_length: int
    max_length: int
    decimals: int = 0
    unit: str | None = None

    @property
    def fixed(self) -> bool:
        """Whether the data field has one fixed length."""
        return self.min_length == self.max_length


@dataclass(frozen=True, slots=True)
class Gs1Element:
    """One AI and its data: `raw` as encoded, `value` converted (str, int, date or Decimal)."""

    ai: str
    title: str
    raw: str
    value: str | int | date | Decimal
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class Gs1Message:
    """The element strings of one symbol, in the order they were encoded."""

    elements: tuple[Gs1Element, ...]

    def get(self, ai: str) -> Gs1Element | None:
        """The element for `ai`, or None."""
        return next((element for element in self.elements if element.ai == ai), None)

    @property
    def gtin(self) -> str | None:
        """The GTIN-14 of AI (01), if present."""
        element = self.get("01")
        return element.raw if element else None


def _build_table() -> dict[str, AiSpec]:
    table: dict[str, AiSpec] = {}

    def add(
        ai: str,
        title: str,
        kind: AiKind,
        low: int,
        high: int | None = None,
        *,
        decimals: int = 0,
        unit: str | None = None,
    ) -> None:
        table[ai] = AiSpec(ai, title, kind, low, low if high is None else high, decimals, unit)

    add("00", "SSCC", AiKind.CHECKED, 18)
    add("01", "GTIN", AiKind.CHECKED, 14)
    add("02", "CONTENT", AiKind.CHECKED, 14)
    add("10", "BATCH/LOT", AiKind.ALPHANUMERIC, 1, 20)
    for ai, title in [
        ("11", "PROD DATE"),
        ("12", "DUE DATE"),
        ("13", "PACK DATE"),
        ("15", "BEST BEFORE or BEST BY"),
        ("16", "SELL BY"),
        ("17", "USE BY OR EXPIRY"),
    ]:
        add(ai, title, AiKind.DATE, 6)
    add("20", "VARIANT", AiKind.NUMERIC, 2)
    add("21", "SERIAL", AiKind.ALPHANUMERIC, 1, 20)
    add("22", "CPV", AiKind.ALPHANUMERIC, 1, 20)
    add("240", "ADDITIONAL ID", AiKind.ALPHANUMERIC, 1, 30)
    add("241", "CUST. PART No.", AiKind.ALPHANUMERIC, 1, 30)
    add("250", "SECONDARY SERIAL", AiKind.ALPHANUMERIC, 1, 30)
    add("30", "VAR. COUNT", AiKind.COUNT, 1, 8)
    add("37", "COUNT", AiKind.COUNT, 1, 8)
    for prefix, title, unit in [
        ("310", "NET WEIGHT (kg)", "kg"),
        ("311", "LENGTH (m)", "m"),
        ("312", "WIDTH (m)", "m"),
        ("313", "HEIGHT (m)", "m"),
        ("314", "AREA (m²)", "m2"),
        ("315", "NET VOLUME (l)", "l"),
        ("316", "NET VOLUME (m³)", "m3"),
        ("320", "NET WEIGHT (lb)", "lb"),
        ("330", "GROSS WEIGHT (kg)", "kg"),
    ]:
        for n in range(6):
            add(f"{prefix}{n}", title, AiKind.DECIMAL, 6, decimals=n, unit=unit)
    for n in range(10):
        add(f"390{n}", "AMOUNT", AiKind.DECIMAL, 1, 15, decimals=n)
        add(f"392{n}", "PRICE", AiKind.DECIMAL, 1, 15, decimals=n)
    add("400", "ORDER NUMBER", AiKind.ALPHANUMERIC, 1, 30)
    add("401", "GINC", AiKind.ALPHANUMERIC, 1, 30)
    add("402", "GSIN", AiKind.CHECKED, 17)
    add("403", "ROUTE", AiKind.ALPHANUMERIC, 1, 30)
    for ai, title in [
        ("410", "SHIP TO LOC"),
        ("411", "BILL TO"),
        ("412", "PURCHASE FROM"),
        ("413", "SHIP FOR LOC"),
        ("414", "LOC No."),
        ("415", "PAY TO"),
        ("416", "PROD/SERV LOC"),
    ]:
        add(ai, title, AiKind.CHECKED, 13)
    add("420", "SHIP TO POST", AiKind.ALPHANUMERIC, 1, 20)
    add("422", "ORIGIN", AiKind.NUMERIC, 3)
    add("8005", "PRICE PER UNIT", AiKind.NUMERIC, 6)
    add("8020", "REF No.", AiKind.ALPHANUMERIC, 1, 25)
    add("90", "INTERNAL", AiKind.ALPHANUMERIC, 1, 30)
    for n in range(91, 100):
        add(str(n), "INTERNAL", AiKind.ALPHANUMERIC, 1, 90)
    return table


_TABLE = _build_table()


def ai_spec(ai: str) -> AiSpec | None:
    """The specification of `ai`, or None when we do not know it."""
    return _TABLE.get(ai)


def gs1_check_digit(body: str) -> int:
    """The GS1 mod-10 check digit for `body` (all digits except the check digit)."""
    if not body.isdigit() or not body.isascii():
        raise ValueError(f"check digit needs digits, got {body!r}")
    # Weights 3, 1, 3, ... from the rightmost digit of the body.
    total = sum(int(digit) * (3 if index % 2 == 0 else 1) for index, digit in enumerate(reversed(body)))
    return (10 - total % 10) % 10


def is_valid_gtin(code: str) -> bool:
    """Whether `code` is a GTIN-8, -12, -13 or -14 with a correct check digit."""
    if len(code) not in (8, 12, 13, 14) or not code.isascii() or not code.isdigit():
        return False
    return gs1_check_digit(code[:-1]) == int(code[-1])


def parse_gs1_date(yymmdd: str, *, today: date | None = None, ai: str | None = None) -> date:
    """A GS1 YYMMDD date: DD 00 means the month's last day; the century is chosen as GS1 7.12 says."""
    label = f"AI ({ai}) " if ai else ""
    if len(yymmdd) != 6 or not yymmdd.isascii() or not yymmdd.isdigit():
        raise BarcodeError(f"{label}date must be 6 digits YYMMDD, got {yymmdd!r}", ai=ai)
    yy, month, day = int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:])
    this_year = (today or date.today()).year
    century = this_year - this_year % 100
    # GS1 General Specifications 7.12: a year 51-99 ahead is last century, 50 or more behind is next.
    difference = yy - this_year % 100
    if difference >= 51:
        century -= 100
    elif difference <= -50:
        century += 100
    year = century + yy
    if not 1 <= month <= 12:
        raise BarcodeError(f"{label}date {yymmdd!r} has month {month:02d}; months run 01-12", ai=ai)
    last = calendar.monthrange(year, month)[1]
    if day > last:
        raise BarcodeError(f"{label}date {yymmdd!r}: {year}-{month:02d} has only {last} days", ai=ai)
    return date(year, month, day or last)


def parse_gs1(data: str, *, today: date | None = None, separator: str = GS) -> Gs1Message:
    """Parse GS1 element strings, FNC1-separated ("0109…17…10…") or bracketed ("(01)09…(17)…")."""
    if len(separator) != 1:
        raise ValueError(f"separator must be one character, not {separator!r}")
    text = data.lstrip(separator)
    if not text:
        raise BarcodeError("no GS1 data: the symbol is empty")
    pairs = _split_bracketed(text) if text.startswith("(") else _split_element_strings(text, separator)
    elements: dict[str, Gs1Element] = {}
    for ai, raw in pairs:
        element = _convert(_TABLE[ai], raw, today)
        previous = elements.setdefault(ai, element)
        if previous.raw != raw:
            problem = f"appears twice with different data: {previous.raw!r} and {raw!r}"
            raise BarcodeError(_problem(_TABLE[ai], problem), ai=ai)
    return Gs1Message(tuple(elements.values()))


def _lookup(text: str, position: int) -> AiSpec:
    # GS1 AIs are prefix-free, so the first length that matches is the AI.
    for length in (2, 3, 4):
        spec = _TABLE.get(text[position : position + length])
        if spec is not None:
            return spec
    start = text[position : position + 4]
    raise BarcodeError(f"unknown AI at character {position + 1}: data continues {start!r}")


def _split_element_strings(text: str, separator: str) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        if text[position] == separator:
            # Scanners may send FNC1 after a fixed-length field too; it is harmless there.
            position += 1
            continue
        spec = _lookup(text, position)
        start = position + len(spec.ai)
        if spec.fixed:
            end = start + spec.max_length
            raw = text[start:end]
            if len(raw) < spec.max_length or separator in raw:
                got = len(raw.split(separator)[0])
                problem = f"needs {spec.max_length} characters, got {got}"
                raise BarcodeError(_problem(spec, problem), ai=spec.ai)
        else:
            end = text.find(separator, start)
            end = len(text) if end < 0 else end
            raw = text[start:end]
        pairs.append((spec.ai, raw))
        position = end
    return pairs


def _split_bracketed(text: str) -> list[tuple[str, str]]:
    # "(" and ")" are legal in alphanumeric data, so only "(NN)" with a known AI starts a field.
    marks = [m for m in _HRI_AI.finditer(text) if m.group(1) in _TABLE]
    if not marks or marks[0].start() != 0:
        ai = _HRI_AI.match(text)
        found = f"unknown AI ({ai.group(1)})" if ai else f"no (AI) at the start of {text[:8]!r}"
        raise BarcodeError(f"bracketed GS1 data must start with a known (AI): {found}")
    ends = [m.start() for m in marks[1:]] + [len(text)]
    return [(mark.group(1), text[mark.end() : end].strip()) for mark, end in zip(marks, ends, strict=True)]


def _problem(spec: AiSpec, problem: str) -> str:
    return f"AI ({spec.ai}) {spec.title}: {problem}"


def _convert(spec: AiSpec, raw: str, today: date | None) -> Gs1Element:
    if not spec.min_length <= len(raw) <= spec.max_length:
        allowed = f"exactly {spec.max_length}" if spec.fixed else f"{spec.min_length} to {spec.max_length}"
        hint = "; is a separator (GS) missing?" if len(raw) > spec.max_length else ""
        raise BarcodeError(_problem(spec, f"{len(raw)} characters, {allowed} allowed{hint}"), ai=spec.ai)
    if spec.kind is AiKind.ALPHANUMERIC:
        bad = sorted(set(raw) - _CSET82)
        if bad:
            raise BarcodeError(_problem(spec, f"characters not allowed in GS1 data: {bad!r}"), ai=spec.ai)
        return Gs1Element(spec.ai, spec.title, raw, raw)
    if not raw.isascii() or not raw.isdigit():
        raise BarcodeError(_problem(spec, f"must be digits, got {raw!r}"), ai=spec.ai)
    value: str | int | date | Decimal = raw
    if spec.kind is AiKind.CHECKED:
        expected = gs1_check_digit(raw[:-1])
        if expected != int(raw[-1]):
            problem = f"check digit of {raw} is {raw[-1]}, should be {expected}; misread or mistyped code"
            raise BarcodeError(_problem(spec, problem), ai=spec.ai)
    elif spec.kind is AiKind.DATE:
        value = parse_gs1_date(raw, today=today, ai=spec.ai)
    elif spec.kind is AiKind.DECIMAL:
        value = Decimal(int(raw)).scaleb(-spec.decimals)
    elif spec.kind is AiKind.COUNT:
        value = int(raw)
    return Gs1Element(spec.ai, spec.title, raw, value, spec.unit)

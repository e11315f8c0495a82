"""Tests for protocol.barcodes: GTIN check digits, scanner input, scale labels."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from protocol import ProtocolError
from protocol.barcodes import (
    BarcodeError,
    ScaleBarcode,
    ScaleLayout,
    gtin_check_digit,
    is_valid_gtin,
    make_scale_barcode,
    normalize_barcode,
    parse_scale_barcode,
)

# Published codes, each checked by hand with the GS1 weights.
VALID_GTINS = [
    "4006381333931",  # EAN-13, the Wikipedia EAN-13 example
    "9780306406157",  # EAN-13 / ISBN-13, the Wikipedia ISBN example
    "5901234123457",  # EAN-13, the GS1 sample symbol
    "6901028075831",  # EAN-13 with the Chinese 690 prefix
    "96385074",  # EAN-8, the Wikipedia EAN-8 example
    "73513537",  # EAN-8
    "036000291452",  # UPC-A, the Wikipedia UPC example
    "10012345678902",  # GTIN-14
]


def _reference_check_digit(body: str) -> int:
    """Check digit computed another way: pad to 17 digits and weight 3,1,3,... from the left."""
    padded = body.rjust(17, "0")
    total = sum(int(d) * w for d, w in zip(padded, [3, 1] * 9, strict=False))
    return -total % 10


digits = st.text(alphabet="0123456789", min_size=1, max_size=17)


@st.composite
def valid_layouts(draw: st.DrawFn) -> ScaleLayout:
    prefix = draw(st.text(alphabet="0123456789", min_size=1, max_size=2))
    plu_digits = draw(st.integers(min_value=1, max_value=12 - len(prefix) - 1))
    kind = draw(st.sampled_from(["price", "weight"]))
    return ScaleLayout(
        prefix=prefix,
        plu_digits=plu_digits,
        value_digits=12 - len(prefix) - plu_digits,
        value_kind=kind,
    )


# ---------------------------------------------------------------- check digits


@pytest.mark.parametrize("code", VALID_GTINS)
def test_check_digit_of_published_codes(code: str) -> None:
    assert gtin_check_digit(code[:-1]) == int(code[-1])
    assert is_valid_gtin(code)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("400638133393", 1),
        ("978030640615", 7),
        ("690123456789", 2),
        ("9638507", 4),
        ("03600029145", 2),
        ("0000000", 0),
    ],
)
def test_check_digit_examples(body: str, expected: int) -> None:
    assert gtin_check_digit(body) == expected


@given(digits)
def test_check_digit_matches_reference(body: str) -> None:
    assert gtin_check_digit(body) == _reference_check_digit(body)


@given(st.text(alphabet="0123456789", min_size=12, max_size=12), st.integers(0, 9))
def test_exactly_one_check_digit_is_valid(body: str, digit: int) -> None:
    code = body + str(digit)
    assert is_valid_gtin(code) == (digit == gtin_check_digit(body))


@given(st.text(alphabet="0123456789", min_size=12, max_size=12), st.integers(0, 11))
def test_single_digit_error_is_detected(body: str, position: int) -> None:
    code = body + str(gtin_check_digit(body))
    wrong = str((int(code[position]) + 1) % 10)
    assert not is_valid_gtin(code[:position] + wrong + code[position + 1 :])


@pytest.mark.parametrize("body", ["", "69012345678a", "６９０１２３", "12 34", "-1234567"])
def test_check_digit_rejects_non_digits(body: str) -> None:
    with pytest.raises(BarcodeError, match="digits"):
        gtin_check_digit(body)


def test_check_digit_rejects_non_str() -> None:
    with pytest.raises(TypeError):
        gtin_check_digit(690123456789)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "code",
    [
        "6901234567891",  # wrong check digit
        "400638133393",  # 12 digits but not a UPC-A
        "4006381333931 ",  # trailing space
        "40063813339",  # 11 digits
        "400638133393100",  # 15 digits
        "9638507A",
        "",
        "１２３４５６７０",  # full-width: normalize first
    ],
)
def test_invalid_gtins(code: str) -> None:
    assert not is_valid_gtin(code)


def test_barcode_error_is_protocol_and_value_error() -> None:
    assert issubclass(BarcodeError, ProtocolError)
    assert issubclass(BarcodeError, ValueError)


# ---------------------------------------------------------------- normalization


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("6901028075831", "6901028075831"),
        ("6901028075831\r\n", "6901028075831"),
        ("\t 6901028075831\n", "6901028075831"),
        ("\x026901028075831\x03", "6901028075831"),  # STX/ETX framing
        ("\ufeff6901028075831\u200b", "6901028075831"),  # BOM, zero-width space
        ("６９０１０２８０７５８３１", "6901028075831"),  # full-width digits from an IME
        ("\u3000６９０１０２８０７５８３１\u3000", "6901028075831"),  # ideographic spaces
        ("ＡＢ－１２３", "AB-123"),  # internal code typed in full-width mode
        ("SKU 12", "SKU 12"),  # inner spaces are part of an internal code
        ("x" * 64, "x" * 64),
    ],
)
def test_normalize_barcode(raw: str, expected: str) -> None:
    assert normalize_barcode(raw) == expected


@pytest.mark.parametrize("raw", ["", "   ", "\r\n", "\x02\x03", "\u3000"])
def test_normalize_rejects_empty(raw: str) -> None:
    with pytest.raises(BarcodeError, match="empty"):
        normalize_barcode(raw)


def test_normalize_rejects_too_long() -> None:
    with pytest.raises(BarcodeError, match="65 characters, at most 64"):
        normalize_barcode("1" * 65)


@pytest.mark.parametrize("raw", ["690\x001028", "690\t1028", "690\x1d1028", "69\u200b01"])
def test_normalize_rejects_inner_non_printable(raw: str) -> None:
    with pytest.raises(BarcodeError, match="non-printable"):
        normalize_barcode(raw)


@given(st.text(alphabet="0123456789", min_size=1, max_size=64))
def test_normalize_full_width_digits_property(code: str) -> None:
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in code)
    assert normalize_barcode(f" {full_width}\r\n") == code


@given(st.text(max_size=80))
def test_normalize_is_idempotent_or_raises(raw: str) -> None:
    try:
        once = normalize_barcode(raw)
    except BarcodeError:
        return
    assert normalize_barcode(once) == once
    assert 1 <= len(once) <= 64
    assert once.isprintable()


# ---------------------------------------------------------------- scale layout


def test_default_layout() -> None:
    layout = ScaleLayout()
    assert (layout.prefix, layout.plu_digits, layout.value_digits, layout.value_kind) == (
        "2",
        6,
        5,
        "price",
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prefix": "21"}, "makes 14 digits"),
        ({"plu_digits": 5}, "makes 12 digits"),
        ({"prefix": ""}, "1 or 2 digits"),
        ({"prefix": "123", "plu_digits": 4}, "1 or 2 digits"),
        ({"prefix": "A"}, "digits 0-9"),
        ({"prefix": "２"}, "digits 0-9"),
        ({"plu_digits": 0, "value_digits": 11}, "positive int"),
        ({"value_kind": "volume"}, "value_kind"),
    ],
)
def test_layout_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(BarcodeError, match=message):
        ScaleLayout(**kwargs)  # type: ignore[arg-type]


def test_layout_is_frozen() -> None:
    layout = ScaleLayout(prefix="20", plu_digits=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        layout.prefix = "3"  # type: ignore[misc]


# ---------------------------------------------------------------- scale barcodes


def test_parse_price_label() -> None:
    code = make_scale_barcode("1234", 1401, ScaleLayout())
    assert code == "2001234014014"  # weights 1,3,1,3…: 2+0+0+3+2+9+4+0+1+12+0+3 = 36 → 4
    assert is_valid_gtin(code)
    assert parse_scale_barcode(code, ScaleLayout()) == ScaleBarcode(plu="001234", price_fen=1401, weight=None)


def test_parse_weight_label() -> None:
    layout = ScaleLayout(prefix="22", plu_digits=5, value_kind="weight")
    code = make_scale_barcode("00042", 352, layout)
    assert code == "2200042003528"
    parsed = parse_scale_barcode(code, layout)
    assert parsed == ScaleBarcode(plu="00042", price_fen=None, weight=Fraction(352, 1000))


def test_parse_keeps_leading_zeros_of_plu() -> None:
    parsed = parse_scale_barcode(make_scale_barcode("000007", 5, ScaleLayout()), ScaleLayout())
    assert parsed is not None
    assert parsed.plu == "000007"
    assert parsed.price_fen == 5


@pytest.mark.parametrize(
    "code",
    [
        "6901028075831",  # ordinary EAN-13, other prefix
        "6901234567891",  # other prefix: not ours to judge, even with a wrong check digit
        "200123401401",  # 12 digits
        "20012340140144",  # 14 digits
        "96385074",  # EAN-8
        "2001234O14014",  # letter O instead of zero
        "２００１２３４０１４０１４",  # full-width: callers normalize first
        "",
    ],
)
def test_parse_returns_none_for_other_codes(code: str) -> None:
    assert parse_scale_barcode(code, ScaleLayout()) is None


def test_parse_two_digit_prefix_needs_both_digits() -> None:
    layout = ScaleLayout(prefix="28", plu_digits=5)
    other = make_scale_barcode("12345", 999, ScaleLayout(prefix="27", plu_digits=5))
    assert parse_scale_barcode(other, layout) is None


def test_wrong_check_digit_on_prefix_match_raises() -> None:
    good = make_scale_barcode("1234", 1401, ScaleLayout())
    bad = good[:-1] + str((int(good[-1]) + 3) % 10)
    with pytest.raises(
        BarcodeError, match=rf"barcode '{bad}' has check digit {bad[-1]}, expected {good[-1]}"
    ):
        parse_scale_barcode(bad, ScaleLayout())


@given(valid_layouts(), st.data())
def test_scale_barcode_round_trip(layout: ScaleLayout, data: st.DataObject) -> None:
    plu = data.draw(st.text(alphabet="0123456789", min_size=1, max_size=layout.plu_digits))
    value = data.draw(st.integers(min_value=0, max_value=10**layout.value_digits - 1))
    code = make_scale_barcode(plu, value, layout)
    assert len(code) == 13
    assert code.startswith(layout.prefix)
    assert is_valid_gtin(code)
    parsed = parse_scale_barcode(code, layout)
    assert parsed is not None
    assert parsed.plu == plu.zfill(layout.plu_digits)
    if layout.value_kind == "price":
        assert parsed.price_fen == value
        assert parsed.weight is None
    else:
        assert parsed.price_fen is None
        assert parsed.weight == Fraction(value, 1000)


@given(valid_layouts(), st.data())
def test_any_misread_digit_on_prefix_match_is_refused(layout: ScaleLayout, data: st.DataObject) -> None:
    plu = data.draw(st.text(alphabet="0123456789", min_size=1, max_size=layout.plu_digits))
    value = data.draw(st.integers(min_value=0, max_value=10**layout.value_digits - 1))
    code = make_scale_barcode(plu, value, layout)
    position = data.draw(st.integers(min_value=len(layout.prefix), max_value=12))
    wrong = data.draw(st.sampled_from([d for d in "0123456789" if d != code[position]]))
    misread = code[:position] + wrong + code[position + 1 :]
    assume(misread.startswith(layout.prefix))
    with pytest.raises(BarcodeError, match="check digit"):
        parse_scale_barcode(misread, layout)


@pytest.mark.parametrize(
    ("plu", "value", "message"),
    [
        ("1234567", 100, "has 7 digits"),
        ("", 100, "digits 0-9"),
        ("12a4", 100, "digits 0-9"),
        ("１２３", 100, "digits 0-9"),
        ("1234", 100_000, "does not fit"),
        ("1234", -1, "does not fit"),
    ],
)
def test_make_rejects_what_does_not_fit(plu: str, value: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_scale_barcode(plu, value, ScaleLayout())


@pytest.mark.parametrize("value", [1.5, True, "100"])
def test_make_rejects_non_int_value(value: object) -> None:
    with pytest.raises(TypeError):
        make_scale_barcode("1234", value, ScaleLayout())  # type: ignore[arg-type]

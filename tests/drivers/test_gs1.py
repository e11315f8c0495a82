"""GS1 element strings and bracketed data: real examples, dates, decimals, check digits, errors."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.errors import DriverError
from drivers.gs1 import (
    GS,
    AiKind,
    BarcodeError,
    ai_spec,
    gs1_check_digit,
    is_valid_gtin,
    parse_gs1,
    parse_gs1_date,
)
from drivers.scanner import parse_aim

TODAY = date(2025, 6, 1)


def _values(data: str, **kwargs) -> dict[str, object]:
    return {e.ai: e.value for e in parse_gs1(data, today=TODAY, **kwargs).elements}


def test_gs1_128_scan_with_aim_prefix():
    aim, payload = parse_aim("]C1" + "0109501101530003" + "17261231" + "10ABC123")
    assert aim is not None
    assert aim.gs1
    message = parse_gs1(payload, today=TODAY)
    assert [(e.ai, e.value) for e in message.elements] == [
        ("01", "09501101530003"),
        ("17", date(2026, 12, 31)),
        ("10", "ABC123"),
    ]
    assert message.gtin == "09501101530003"
    assert message.get("17").title == "USE BY OR EXPIRY"
    assert message.get("21") is None


def test_gs_separates_variable_fields():
    data = "0109501101530003" + "10LOT-7" + GS + "21SN(1)" + GS + "3103001250" + "17250200"
    assert _values(data) == {
        "01": "09501101530003",
        "10": "LOT-7",
        "21": "SN(1)",
        "3103": Decimal("1.250"),
        "17": date(2025, 2, 28),
    }


def test_leading_fnc1_and_gs_after_fixed_fields_are_tolerated():
    data = GS + "0109501101530003" + GS + "8005000150" + GS + "3712"
    assert _values(data) == {"01": "09501101530003", "8005": "000150", "37": 12}


def test_bracketed_form_with_spaces_and_parentheses_in_data():
    data = "(01) 09501101530003 (3922)1999 (10)A(B)C (11)240200"
    assert _values(data) == {
        "01": "09501101530003",
        "3922": Decimal("19.99"),
        "10": "A(B)C",
        "11": date(2024, 2, 29),
    }


def test_decimal_ais_carry_their_unit():
    message = parse_gs1("3203000500" + "3100000042" + "39050", today=TODAY)
    assert [(e.ai, e.value, e.unit) for e in message.elements] == [
        ("3203", Decimal("0.500"), "lb"),
        ("3100", Decimal(42), "kg"),
        ("3905", Decimal("0.00000"), None),
    ]
    assert str(message.get("3203").value) == "0.500"


def test_sscc_and_gln():
    assert _values("00106141411234567897" + "4109501101020917") == {
        "00": "106141411234567897",
        "410": "9501101020917",
    }


def test_configurable_separator_for_wedges_that_substitute_gs():
    assert _values("10AB~17261231", separator="~") == {"10": "AB", "17": date(2026, 12, 31)}


@pytest.mark.parametrize(
    ("yymmdd", "today", "expected"),
    [
        ("261231", TODAY, date(2026, 12, 31)),
        ("250200", TODAY, date(2025, 2, 28)),
        ("240200", TODAY, date(2024, 2, 29)),
        ("251100", TODAY, date(2025, 11, 30)),
        ("751231", TODAY, date(2075, 12, 31)),
        ("761231", TODAY, date(1976, 12, 31)),
        ("050101", date(2060, 1, 1), date(2105, 1, 1)),
        ("100101", date(2060, 1, 1), date(2110, 1, 1)),
        ("110101", date(2060, 1, 1), date(2011, 1, 1)),
        ("990101", date(2001, 1, 1), date(1999, 1, 1)),
    ],
)
def test_dates_use_the_gs1_century_rule_and_dd_00(yymmdd, today, expected):
    assert parse_gs1_date(yymmdd, today=today) == expected


@pytest.mark.parametrize(
    ("data", "ai", "fragment"),
    [
        ("0109501101530004", "01", "should be 3"),
        ("17251301", "17", "month 13"),
        ("17250431", "17", "only 30 days"),
        ("1725043", "17", "needs 6 characters, got 5"),
        ("0109501" + GS + "10A", "01", "needs 14 characters, got 5"),
        ("10" + "A" * 21, "10", "separator (GS) missing"),
        ("10AB CD", "10", "not allowed"),
        ("10LOT" + GS + "3712X", "37", "must be digits"),
        ("(10)A(10)B", "10", "appears twice"),
        ("(01)0950110153000", "01", "13 characters, exactly 14"),
        ("10" + GS + "17261231", "10", "0 characters"),
    ],
)
def test_errors_name_the_ai_and_the_problem(data, ai, fragment):
    with pytest.raises(BarcodeError, match=f"AI \\({ai}\\)") as caught:
        parse_gs1(data, today=TODAY)
    assert caught.value.ai == ai
    assert fragment in str(caught.value)
    assert isinstance(caught.value, DriverError)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ("0109501101530003" + "2712", "unknown AI at character 17"),
        ("(27)12", "unknown AI (27)"),
        ("hello", "unknown AI at character 1"),
        ("", "empty"),
        (GS + GS, "empty"),
        ("(x)", "no (AI)"),
    ],
)
def test_unknown_or_missing_ai(data, fragment):
    with pytest.raises(BarcodeError) as caught:
        parse_gs1(data, today=TODAY)
    assert fragment in str(caught.value)
    assert caught.value.ai is None


@pytest.mark.parametrize(
    ("code", "valid"),
    [
        ("4006381333931", True),
        ("9780306406157", True),
        ("012345678905", True),
        ("96385074", True),
        ("09501101530003", True),
        ("4006381333932", False),
        ("400638133393", False),
        ("40063813339a1", False),
        ("", False),
    ],
)
def test_is_valid_gtin(code, valid):
    assert is_valid_gtin(code) is valid


def test_check_digit_refuses_non_digits():
    assert gs1_check_digit("0950110153000") == 3
    with pytest.raises(ValueError, match="digits"):
        gs1_check_digit("12a")


def test_table_covers_the_common_ais():
    for ai in ["00", "01", "02", "10", "11", "13", "15", "17", "21", "30", "37", "400", "8005"]:
        assert ai_spec(ai) is not None, ai
    for prefix in ["310", "311", "312", "313", "314", "315", "316", "320"]:
        assert ai_spec(prefix + "5").decimals == 5
    for ai in ["410", "411", "412", "413", "414"]:
        assert ai_spec(ai).kind is AiKind.CHECKED
    assert ai_spec("3909").decimals == 9
    assert ai_spec("3929").max_length == 15
    assert ai_spec("3106") is None


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from([*"0123456789()ABx -", GS, "é", "٣"]), max_size=60))
def test_arbitrary_text_raises_only_barcode_error(data):
    try:
        message = parse_gs1(data, today=TODAY)
    except BarcodeError:
        return
    assert message.elements


_gtins = st.text(alphabet="0123456789", min_size=13, max_size=13).map(lambda b: b + str(gs1_check_digit(b)))
_lots = st.text(alphabet="ABCXYZ0123456789-./", min_size=1, max_size=20)
_dates = st.dates(min_value=date(1976, 1, 1), max_value=date(2075, 12, 31))


@settings(max_examples=200, deadline=None)
@given(_gtins, _lots, _dates, st.booleans())
def test_encoded_elements_parse_back(gtin, lot, expiry, bracketed):
    yymmdd = expiry.strftime("%y%m%d")
    data = f"(01){gtin}(10){lot}(17){yymmdd}" if bracketed else f"01{gtin}10{lot}{GS}17{yymmdd}"
    assert _values(data) == {"01": gtin, "10": lot, "17": expiry}

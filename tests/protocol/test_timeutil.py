"""Tests for protocol.timeutil: business days and the UtcDatetime wire type."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from protocol.timeutil import UtcDatetime, business_day, format_utc, utcnow

SHANGHAI = ZoneInfo("Asia/Shanghai")


def test_utcnow_is_aware_utc() -> None:
    now = utcnow()
    assert now.tzinfo is UTC
    assert abs(now - datetime.now(UTC)) < timedelta(seconds=5)


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        (datetime(2026, 11, 24, 1, 30, tzinfo=SHANGHAI), date(2026, 11, 23)),
        (datetime(2026, 11, 24, 0, 0, tzinfo=SHANGHAI), date(2026, 11, 23)),
        (datetime(2026, 11, 24, 3, 59, 59, 999999, tzinfo=SHANGHAI), date(2026, 11, 23)),
        (datetime(2026, 11, 24, 4, 0, tzinfo=SHANGHAI), date(2026, 11, 24)),
        (datetime(2026, 11, 24, 23, 59, tzinfo=SHANGHAI), date(2026, 11, 24)),
        (datetime(2027, 1, 1, 2, 0, tzinfo=SHANGHAI), date(2026, 12, 31)),
    ],
)
def test_business_day_cutover_in_shanghai(local: datetime, expected: date) -> None:
    assert business_day(local, SHANGHAI) == expected
    assert business_day(local, "Asia/Shanghai") == expected


def test_business_day_converts_utc_input_to_store_time() -> None:
    # 17:30 UTC on the 23rd is 01:30 on the 24th in Shanghai: still the 23rd's business day.
    assert business_day(datetime(2026, 11, 23, 17, 30, tzinfo=UTC), "Asia/Shanghai") == date(2026, 11, 23)
    # 20:00 UTC on the 23rd is 04:00 on the 24th in Shanghai: a new business day.
    assert business_day(datetime(2026, 11, 23, 20, 0, tzinfo=UTC), "Asia/Shanghai") == date(2026, 11, 24)
    # The same instant in UTC's own calendar would be a different day.
    assert business_day(datetime(2026, 11, 23, 20, 0, tzinfo=UTC), "UTC") == date(2026, 11, 23)


def test_business_day_other_offsets_and_cutovers() -> None:
    plus_two = timezone(timedelta(hours=2))
    ts = datetime(2026, 11, 23, 23, 30, tzinfo=plus_two)  # 05:30 on the 24th in Shanghai
    assert business_day(ts, SHANGHAI) == date(2026, 11, 24)
    assert business_day(ts, SHANGHAI, cutover_hour=6) == date(2026, 11, 23)
    assert business_day(datetime(2026, 11, 24, 0, 0, tzinfo=SHANGHAI), SHANGHAI, 0) == date(2026, 11, 24)
    assert business_day(datetime(2026, 11, 24, 22, 59, tzinfo=SHANGHAI), SHANGHAI, 23) == date(2026, 11, 23)


def test_business_day_across_daylight_saving_change() -> None:
    new_york = ZoneInfo("America/New_York")
    # 2026-03-08 02:00 local does not exist; 07:30 UTC is 03:30 EDT, before a 04:00 cutover.
    assert business_day(datetime(2026, 3, 8, 7, 30, tzinfo=UTC), new_york) == date(2026, 3, 7)
    assert business_day(datetime(2026, 3, 8, 8, 0, tzinfo=UTC), new_york) == date(2026, 3, 8)


def test_business_day_rejects_naive_datetime() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        business_day(datetime(2026, 11, 24, 1, 30), SHANGHAI)


@pytest.mark.parametrize("cutover", [-1, 24, 100])
def test_business_day_rejects_bad_cutover(cutover: int) -> None:
    with pytest.raises(ValueError, match="between 0 and 23"):
        business_day(utcnow(), SHANGHAI, cutover)


def test_business_day_rejects_non_int_cutover() -> None:
    with pytest.raises(TypeError):
        business_day(utcnow(), SHANGHAI, 4.0)  # type: ignore[arg-type]


def test_business_day_rejects_unknown_zone() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        business_day(utcnow(), "Mars/Olympus")
    with pytest.raises(ValueError, match="unknown time zone"):
        business_day(utcnow(), "../etc/passwd")


class _Stamped(BaseModel):
    ts: UtcDatetime


def test_utc_datetime_converts_offsets_to_utc() -> None:
    stamped = _Stamped(ts=datetime(2026, 11, 24, 1, 30, tzinfo=SHANGHAI))
    assert stamped.ts == datetime(2026, 11, 23, 17, 30, tzinfo=UTC)
    assert stamped.ts.tzinfo is UTC
    parsed = _Stamped.model_validate_json('{"ts": "2026-11-24T01:30:00+08:00"}')
    assert parsed.ts.tzinfo is UTC
    assert parsed.ts == datetime(2026, 11, 23, 17, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [datetime(2026, 11, 24, 1, 30), "2026-11-24T01:30:00", "2026-11-24T01:30:00.5"],
)
def test_utc_datetime_rejects_naive(value: Any) -> None:
    with pytest.raises(ValidationError, match="has no time zone"):
        _Stamped.model_validate({"ts": value})


def test_utc_datetime_rejects_out_of_range_after_conversion() -> None:
    with pytest.raises(ValidationError, match="out of range"):
        _Stamped.model_validate_json('{"ts": "9999-12-31T23:59:59-05:00"}')


def test_utc_datetime_serializes_with_z_suffix() -> None:
    stamped = _Stamped(ts=datetime(2026, 11, 23, 4, 5, 6, 123456, tzinfo=UTC))
    assert stamped.model_dump_json() == '{"ts":"2026-11-23T04:05:06.123456Z"}'
    assert stamped.model_dump(mode="json") == {"ts": "2026-11-23T04:05:06.123456Z"}
    # Python-mode dumps keep the datetime for code that works with it directly.
    assert stamped.model_dump() == {"ts": datetime(2026, 11, 23, 4, 5, 6, 123456, tzinfo=UTC)}
    whole = _Stamped(ts=datetime(2026, 11, 24, 1, 0, tzinfo=SHANGHAI))
    assert whole.model_dump_json() == '{"ts":"2026-11-23T17:00:00.000000Z"}'


def test_format_utc_rejects_naive() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        format_utc(datetime(2026, 1, 1))


_aware = st.datetimes(
    min_value=datetime(1971, 1, 1),
    max_value=datetime(9998, 12, 31),
    timezones=st.timezones(),
)


@given(_aware)
def test_utc_datetime_round_trips_through_json(ts: datetime) -> None:
    stamped = _Stamped(ts=ts)
    again = _Stamped.model_validate_json(stamped.model_dump_json())
    assert again == stamped
    # Compare in UTC: Python never calls an interzone time in a DST gap or fold equal.
    assert again.ts == ts.astimezone(UTC)
    assert again.ts.tzinfo is UTC


@given(_aware, _aware)
def test_utc_datetime_text_sorts_like_time(a: datetime, b: datetime) -> None:
    assert (format_utc(a) < format_utc(b)) == (a.astimezone(UTC) < b.astimezone(UTC))

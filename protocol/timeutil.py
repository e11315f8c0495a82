"""UTC timestamps on the wire and the stores' business days."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, PlainSerializer

__all__ = [
    "DEFAULT_CUTOVER_HOUR",
    "DEFAULT_TIMEZONE",
    "UtcDatetime",
    "business_day",
    "format_utc",
    "to_utc",
    "utcnow",
]

DEFAULT_TIMEZONE = "Asia/Shanghai"
DEFAULT_CUTOVER_HOUR = 4


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


def _is_naive(ts: datetime) -> bool:
    return ts.tzinfo is None or ts.utcoffset() is None


def to_utc(ts: datetime) -> datetime:
    """Convert an aware datetime to UTC; naive datetimes raise ValueError."""
    if not isinstance(ts, datetime):
        raise TypeError(f"expected a datetime, not {type(ts).__name__}")
    if _is_naive(ts):
        raise ValueError(
            f"timestamp {ts.isoformat()} has no time zone: send UTC with a 'Z' suffix or an explicit offset"
        )
    try:
        return ts.astimezone(UTC)
    except OverflowError as err:
        # An offset near datetime.min/max can push the UTC value out of range.
        raise ValueError(f"timestamp {ts.isoformat()} is out of range in UTC") from err


def format_utc(ts: datetime) -> str:
    """Format an aware datetime as RFC 3339 UTC with microseconds and a 'Z' suffix."""
    # Fixed width (always microseconds) keeps string order equal to time order.
    return to_utc(ts).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _zone(tz: ZoneInfo | str) -> ZoneInfo:
    if isinstance(tz, ZoneInfo):
        return tz
    if not isinstance(tz, str):
        raise TypeError(f"tz must be a ZoneInfo or a zone name, not {type(tz).__name__}")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ValueError(f"unknown time zone {tz!r}: use an IANA name such as 'Asia/Shanghai'") from err


def business_day(ts: datetime, tz: ZoneInfo | str, cutover_hour: int = DEFAULT_CUTOVER_HOUR) -> date:
    """Return the store's business day of ts; before cutover_hour it is still yesterday."""
    if not isinstance(ts, datetime):
        raise TypeError(f"ts must be a datetime, not {type(ts).__name__}")
    if _is_naive(ts):
        raise ValueError("ts must be timezone-aware; naive datetimes are ambiguous")
    if isinstance(cutover_hour, bool) or not isinstance(cutover_hour, int):
        raise TypeError(f"cutover_hour must be an int, not {type(cutover_hour).__name__}")
    if not 0 <= cutover_hour <= 23:
        raise ValueError(f"cutover_hour must be between 0 and 23, got {cutover_hour}")
    local = ts.astimezone(_zone(tz))
    day = local.date()
    if local.hour < cutover_hour:
        day -= timedelta(days=1)
    return day


UtcDatetime = Annotated[
    datetime,
    AfterValidator(to_utc),
    PlainSerializer(format_utc, return_type=str, when_used="json"),
]
"""An aware datetime, stored as UTC and written as RFC 3339 with a 'Z' suffix."""

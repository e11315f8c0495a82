"""Finding members: search by phone suffix, name, level, tag and segment; the birthday list.

Store-scoped callers pass their stores: they see the members who registered at one of
them (`source_store`); members registered at head office (no source store) are seen by
chain-wide roles only.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import ColumnElement, Integer, Select, and_, case, cast, extract, func, or_, select

from hub.db import AsyncSession
from hub.levels import COUNTERS, MemberLevel
from hub.loyalty_rules import load_levels
from hub.member_segments import check_segment
from hub.member_tag_tables import MemberSegment, MemberTag, MemberTagLink
from hub.members import Member

__all__ = [
    "MAX_BIRTHDAY_DAYS",
    "BirthdayRow",
    "MemberQuery",
    "UnknownLevel",
    "UnknownTag",
    "birthday_in_year",
    "birthdays",
    "next_birthday",
    "search_members",
    "search_statement",
]

MAX_BIRTHDAY_DAYS = 366


@dataclass(frozen=True)
class MemberQuery:
    """What to look for; every given criterion must hold."""

    phone: str | None = None  # 1-11 digits: the end of the number (11: the whole number)
    name: str | None = None  # part of the name, any case
    level: str | None = None  # a level code: members whose level (as the till sees it) is this one
    tag: str | None = None  # a tag code (manual or rule): members who have the tag now
    segment: str | None = None  # an RFM segment name: members in it at the last recompute
    include_merged: bool = False
    stores: frozenset[str] | None = None  # the caller's scope; None is the whole chain

    def __post_init__(self) -> None:
        if self.phone is not None and not (
            self.phone.isascii() and self.phone.isdigit() and len(self.phone) <= 11
        ):
            raise ValueError("phone must be 1 to 11 digits (e.g. the last 4 digits of the number)")
        if self.segment is not None:
            check_segment(self.segment)  # UnknownSegment is a ValueError: a bad query, said at once


def _scoped(query: Select[Member], stores: frozenset[str] | None) -> Select[Member]:
    return query if stores is None else query.where(Member.source_store.in_(stores))


class UnknownLevel(ValueError):
    """A level code the chain has not defined."""


class UnknownTag(ValueError):
    """A tag code the chain has not defined."""


async def _level_filter(session: AsyncSession, code: str) -> ColumnElement[bool]:
    """Members whose level is `code`, decided as `hub.levels.effective_level` decides it.

    The recorded level if it is still defined; otherwise the highest level the member's
    counter reaches (a member without a level row has counters of 0).
    """
    config = await load_levels(session)
    codes = [level.code for level in config.levels]
    if code not in codes:
        raise UnknownLevel(f"no level {code!r}; the chain's levels are {', '.join(codes) or 'none'}")
    position = codes.index(code)
    floor = config.levels[position].threshold
    above = [level.threshold for level in config.levels[position + 1 :]]
    counter = func.coalesce(getattr(MemberLevel, COUNTERS[config.metric]), 0)
    reaches = and_(counter >= floor, counter < min(above)) if above else counter >= floor
    unrecorded = or_(MemberLevel.level_code.is_(None), MemberLevel.level_code.not_in(codes))
    recorded_or_reached = or_(MemberLevel.level_code == code, and_(unrecorded, reaches))
    levelled = select(MemberLevel.member_id).where(recorded_or_reached)
    if floor <= 0 and (not above or min(above) > 0):  # members without a level row qualify too
        unlevelled = ~select(MemberLevel.member_id).where(MemberLevel.member_id == Member.id).exists()
        return or_(Member.id.in_(levelled), unlevelled)
    return Member.id.in_(levelled)


async def search_statement(session: AsyncSession, q: MemberQuery) -> Select[Member]:
    """The SELECT for a search, newest members first (also used by the Excel export).

    `UnknownLevel` if `q.level` names no level of the chain, `UnknownTag` if `q.tag` no tag.
    """
    query = _scoped(select(Member), q.stores)
    if not q.include_merged:
        query = query.where(Member.merged_into.is_(None))
    if q.phone:
        query = query.where(Member.phone == q.phone if len(q.phone) == 11 else Member.phone.endswith(q.phone))
    if q.name:
        query = query.where(func.lower(Member.name).contains(q.name.strip().lower(), autoescape=True))
    if q.level:
        query = query.where(await _level_filter(session, q.level))
    if q.tag:
        if await session.get(MemberTag, q.tag) is None:
            raise UnknownTag(f"no tag {q.tag!r}; GET /api/v1/member-tags lists the chain's tags")
        tagged = select(MemberTagLink.member_id).where(MemberTagLink.tag_code == q.tag)
        query = query.where(Member.id.in_(tagged))
    if q.segment:
        in_segment = select(MemberSegment.member_id).where(MemberSegment.segment == q.segment)
        query = query.where(Member.id.in_(in_segment))
    return query.order_by(Member.created_at.desc(), Member.id)


async def search_members(
    session: AsyncSession, q: MemberQuery, *, limit: int, offset: int = 0
) -> tuple[Sequence[Member], bool]:
    """One page of members and whether more follow."""
    query = await search_statement(session, q)
    rows = (await session.scalars(query.limit(limit + 1).offset(offset))).all()
    return rows[:limit], len(rows) > limit


def birthday_in_year(birthday: date, year: int) -> date:
    """The day a birthday is celebrated in `year`: 29 February falls on 28 February in common years.

    28 February keeps the day in the member's birthday month, so month-based perks and
    "birthday this month" lists agree with the daily list.
    """
    if birthday.month == 2 and birthday.day == 29 and not calendar.isleap(year):
        return date(year, 2, 28)
    return birthday.replace(year=year)


def next_birthday(birthday: date, today: date) -> date:
    """The first celebration day on or after `today`."""
    day = birthday_in_year(birthday, today.year)
    return day if day >= today else birthday_in_year(birthday, today.year + 1)


@dataclass(frozen=True)
class BirthdayRow:
    """A member with a birthday in the window, when it is celebrated and the age turned."""

    member: Member
    next_birthday: date
    turns: int
    days_until: int


def _month_days(first: date, days: int) -> set[int]:
    """month*100+day of every birthday celebrated in the window (0229 on 28 Feb of common years)."""
    found = set()
    for offset in range(days):
        day = first + timedelta(days=offset)
        found.add(day.month * 100 + day.day)
        if day.month == 2 and day.day == 28 and not calendar.isleap(day.year):
            found.add(229)
    return found


async def birthdays(
    session: AsyncSession,
    first: date,
    days: int,
    *,
    stores: frozenset[str] | None,
    limit: int,
    offset: int = 0,
) -> tuple[list[BirthdayRow], bool]:
    """Members whose birthday is celebrated from `first` through the following `days - 1` days.

    Ordered by the day it falls on (the window may cross the new year), then name.
    """
    if not 1 <= days <= MAX_BIRTHDAY_DAYS:
        raise ValueError(f"days must be from 1 to {MAX_BIRTHDAY_DAYS}")
    month_day = cast(extract("month", Member.birthday), Integer) * 100 + cast(
        extract("day", Member.birthday), Integer
    )
    start = first.month * 100 + first.day
    query = (
        _scoped(select(Member), stores)
        .where(Member.birthday.is_not(None), Member.merged_into.is_(None))
        .where(month_day.in_(sorted(_month_days(first, days))))
        .order_by(case((month_day >= start, 0), else_=1), month_day, Member.name, Member.id)
    )
    rows = (await session.scalars(query.limit(limit + 1).offset(offset))).all()
    out = []
    for member in rows[:limit]:
        assert member.birthday is not None  # noqa: S101 - filtered above
        when = next_birthday(member.birthday, first)
        out.append(BirthdayRow(member, when, when.year - member.birthday.year, (when - first).days))
    return out, len(rows) > limit

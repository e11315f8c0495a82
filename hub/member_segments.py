"""RFM scores and segments of members, and the nightly recompute of segments and rule tags.

Over a window of business days (default 365) ending on `as_of`, each member with at least
one paid order gets:

- recency: days from the last visit to `as_of`; frequency: visits (paid orders);
  monetary: net spend in fen (totals less refunds);
- a quintile score 1-5 for each, 5 the best (most recent, most visits, most spend). The
  score is `1 + ⌊5 × (rank − 1) / n⌋` with `rank` the SQL `RANK()` in ascending order of
  the measure over the n scored members: NTILE(5) by another name, except that members
  with equal values always share a score (NTILE would split a tie at a quintile
  boundary by an arbitrary order). Ties therefore decide nothing by member id, and a
  recompute over the same data gives the same scores;
- a segment from R and FM = ⌈(F + M) / 2⌉ (see `SEGMENT_GRID`, documented in docs/members.md).

Everything is one DELETE and one INSERT … SELECT with window functions, on SQLite and
PostgreSQL alike, so the database does the work for any number of members.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Date, Integer, case, cast, delete, func, insert, literal, select

from hub.db import AsyncSession, Database
from hub.member_facts import MemberOrder
from hub.member_tag_tables import MemberSegment
from hub.member_tags import evaluate_rule_tags
from hub.members import Member
from hub.models import UtcDateTime

__all__ = [
    "DEFAULT_WINDOW_DAYS",
    "MAX_WINDOW_DAYS",
    "SEGMENTS",
    "SEGMENT_GRID",
    "Recompute",
    "UnknownSegment",
    "check_segment",
    "last_computed",
    "member_segment",
    "recompute_rfm",
    "recompute_segments",
    "segment_counts",
    "segment_of",
]

DEFAULT_WINDOW_DAYS = 365
MAX_WINDOW_DAYS = 3660

# Rows: R score 5 (top) to 1; columns: FM score 1 to 5. The widely used R×F segment grid of
# RFM analysis (the "segment map" of common RFM tutorials), with its low corner split:
# R 1 and FM 1 (bought least, least often, longest ago) is "lost", the rest "hibernating".
_GRID_ROWS = {
    5: ("new", "potential_loyalist", "potential_loyalist", "champions", "champions"),
    4: ("promising", "potential_loyalist", "potential_loyalist", "loyal", "loyal"),
    3: ("about_to_sleep", "about_to_sleep", "need_attention", "loyal", "loyal"),
    2: ("hibernating", "hibernating", "at_risk", "at_risk", "cannot_lose"),
    1: ("lost", "hibernating", "at_risk", "at_risk", "cannot_lose"),
}
SEGMENT_GRID: dict[tuple[int, int], str] = {
    (r, fm): name for r, row in _GRID_ROWS.items() for fm, name in enumerate(row, start=1)
}
SEGMENTS = (
    "champions",
    "loyal",
    "potential_loyalist",
    "new",
    "promising",
    "need_attention",
    "about_to_sleep",
    "at_risk",
    "cannot_lose",
    "hibernating",
    "lost",
)


class UnknownSegment(ValueError):
    """A segment name that is not one of `SEGMENTS`."""


def check_segment(name: str) -> str:
    """The segment name if it is one of ours; `UnknownSegment` listing them otherwise."""
    if name not in SEGMENTS:
        raise UnknownSegment(f"no segment {name!r}; segments are {', '.join(SEGMENTS)}")
    return name


def segment_of(r: int, f: int, m: int) -> str:
    """The segment of scores (R, F, M): the grid cell of R and FM = ⌈(F + M) / 2⌉."""
    return SEGMENT_GRID[(r, (f + m + 1) // 2)]


def _days_between(session: AsyncSession, later: date, earlier: Any) -> Any:
    if session.get_bind().dialect.name == "sqlite":  # dates are ISO text there
        return cast(func.julianday(literal(later.isoformat())) - func.julianday(earlier), Integer)
    return literal(later, Date) - earlier


def _quintile(measure: Any) -> Any:
    """1-5 by rank over all scored members; equal values share the lower score."""
    return 1 + (5 * (func.rank().over(order_by=measure) - 1)) // func.count().over()


async def recompute_rfm(session: AsyncSession, as_of: date, window_days: int = DEFAULT_WINDOW_DAYS) -> int:
    """Replace every member's RFM row by one computed for `as_of`; how many members were scored."""
    if not 1 <= window_days <= MAX_WINDOW_DAYS:
        raise ValueError(f"window_days must be from 1 to {MAX_WINDOW_DAYS}, got {window_days}")
    o = MemberOrder
    agg = (
        select(
            o.member_id.label("member_id"),
            func.max(o.business_day).label("last_day"),
            func.count().label("frequency"),
            func.sum(o.total_fen - o.refunded_fen).label("monetary"),
        )
        .join(Member, Member.id == o.member_id)  # merged and unknown members are not scored
        .where(
            o.business_day > as_of - timedelta(days=window_days),
            o.business_day <= as_of,
            Member.merged_into.is_(None),
        )
        .group_by(o.member_id)
        .subquery("agg")
    )
    scored = select(
        agg.c.member_id,
        agg.c.last_day,
        agg.c.frequency,
        agg.c.monetary,
        _quintile(agg.c.last_day).label("r"),
        _quintile(agg.c.frequency).label("f"),
        _quintile(agg.c.monetary).label("m"),
    ).subquery("scored")
    fm = (scored.c.f + scored.c.m + 1) // 2
    segment = case(
        {r * 10 + fm_score: name for (r, fm_score), name in SEGMENT_GRID.items()},
        value=scored.c.r * 10 + fm,
        else_="lost",  # not reachable: every (R, FM) cell is in the grid
    )
    now = datetime.now(UTC)
    rows = select(
        scored.c.member_id,
        literal(as_of, Date),
        literal(window_days, Integer),
        _days_between(session, as_of, scored.c.last_day),
        scored.c.frequency,
        scored.c.monetary,
        scored.c.r,
        scored.c.f,
        scored.c.m,
        segment,
        literal(now, UtcDateTime),
    )
    columns = [
        "member_id",
        "as_of",
        "window_days",
        "recency_days",
        "frequency",
        "monetary_fen",
        "r_score",
        "f_score",
        "m_score",
        "segment",
        "computed_at",
    ]
    await session.execute(delete(MemberSegment))
    done = await session.execute(insert(MemberSegment).from_select(columns, rows))
    return int(done.rowcount or 0)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Recompute:
    """What a recompute did: members per segment, members per rule tag, how long it took."""

    as_of: date
    window_days: int
    scored: int
    segments: dict[str, int] = field(default_factory=dict)
    tags: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


async def recompute_segments(
    db: Database, today: date, *, window_days: int = DEFAULT_WINDOW_DAYS
) -> Recompute:
    """Recompute every member's RFM segment and every rule tag as of business day `today`.

    This is the nightly job: the hub's scheduler calls it once a day after the stores'
    business-day cut-over (the API and `storelink-hub members segments` call it on demand).
    One transaction: readers see the previous results until the new ones are complete.
    """
    started = time.perf_counter()
    async with db.session() as session, session.begin():
        scored = await recompute_rfm(session, today, window_days)
        tags = await evaluate_rule_tags(session, today)
        counts = await segment_counts(session, stores=None)
    return Recompute(
        as_of=today,
        window_days=window_days,
        scored=scored,
        segments=counts,
        tags=tags,
        seconds=time.perf_counter() - started,
    )


async def segment_counts(session: AsyncSession, *, stores: frozenset[str] | None) -> dict[str, int]:
    """Members per segment (every segment listed, 0 if empty), within `stores` if given."""
    query = select(MemberSegment.segment, func.count()).group_by(MemberSegment.segment)
    if stores is not None:
        query = query.join(Member, Member.id == MemberSegment.member_id).where(
            Member.source_store.in_(stores)
        )
    found = {str(name): int(n) for name, n in (await session.execute(query)).all()}
    return {name: found.get(name, 0) for name in SEGMENTS}


async def last_computed(session: AsyncSession) -> tuple[date, int, datetime] | None:
    """(as_of, window_days, computed_at) of the stored segments, or None if never computed."""
    row = (
        await session.execute(
            select(MemberSegment.as_of, MemberSegment.window_days, MemberSegment.computed_at).limit(1)
        )
    ).first()
    return None if row is None else (row[0], row[1], row[2])


async def member_segment(session: AsyncSession, member_id: str) -> MemberSegment | None:
    """The member's stored RFM row, or None if the member had no visit in the last computed window."""
    return await session.get(MemberSegment, member_id)

"""Level jobs: the optional yearly downgrade review and birthday points.

Both are idempotent per day and run from the API (`POST /api/v1/loyalty/levels/review`,
`/birthday-points`) and from the hub's nightly jobs (`hub.scheduler`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import false, func, insert, select, update

from hub import points
from hub.db import AsyncSession
from hub.levels import COUNTERS, LevelChange, LevelProgress, MemberLevel, level_steps, lock_level
from hub.loyalty_rules import LOYALTY_ZONE, load_levels, load_points_rules
from hub.members import Member

__all__ = ["ReviewResult", "grant_birthday_points", "review_levels"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReviewResult:
    """What a yearly review did; `skipped` when the chain has no review configured."""

    reviewed: int = 0
    demoted: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    skipped: bool = False


def _local_midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=LOYALTY_ZONE).astimezone(UTC)


def _year_before(day: date) -> date:
    return day.replace(year=day.year - 1) if (day.month, day.day) != (2, 29) else date(day.year - 1, 2, 28)


async def review_levels(session: AsyncSession, today: date) -> ReviewResult:
    """The yearly review: demote members who did not keep their level's threshold in 12 months.

    The window is [today − 1 year, now) in Shanghai dates. A member keeps the level if the
    metric's sum in the window reaches its threshold, or if an upgrade reached the level
    inside the window; otherwise they go down to what the window's sum reaches (one
    `level_changes` row per step, reason "review"). Then every member's counters are reset
    to their window sums, so from now on levels follow a rolling year and a demoted member
    is not upgraded straight back by lifetime totals. Does nothing unless the levels
    configuration has `downgrade_review` on.
    """
    config = await load_levels(session)
    if not config.downgrade_review or not config.levels:
        return ReviewResult(skipped=True)
    now = datetime.now(UTC)
    start = _local_midnight(_year_before(today))
    # Take the write lock (SQLite) / every level row (PostgreSQL) before summing, so no
    # progress committed between the sums and the reset can be lost.
    await session.execute(update(MemberLevel).where(false()).values(updated_at=now))
    members = (
        await session.execute(
            select(MemberLevel.member_id, MemberLevel.level_code, MemberLevel.upgraded_at)
            .order_by(MemberLevel.member_id)
            .with_for_update()
        )
    ).all()
    sums: dict[str, dict[str, int]] = {}
    rows = await session.execute(
        select(LevelProgress.member_id, LevelProgress.metric, func.sum(LevelProgress.amount))
        .where(LevelProgress.at >= start)
        .group_by(LevelProgress.member_id, LevelProgress.metric)
    )
    for member_id, metric, total in rows.all():
        sums.setdefault(member_id, {})[metric] = int(total or 0)
    source = f"review:{today.isoformat()}"
    demoted: list[tuple[str, str | None, str | None]] = []
    for member_id, code, upgraded_at in members:
        window = sums.get(member_id, {})
        value = window.get(config.metric, 0)
        changes: dict[str, Any] = {COUNTERS[m]: window.get(m, 0) for m in COUNTERS}
        current, target = config.by_code(code), config.qualifying(value)
        recent = upgraded_at is not None and upgraded_at >= start
        if current is not None and not recent and (target is None or target.rank < current.rank):
            below = [lvl.code for lvl in reversed(config.levels) if lvl.rank < current.rank]
            path: list[str | None] = [code]
            for lower in below:
                path.append(lower)
                if target is not None and lower == target.code:
                    break
            if target is None:
                path.append(None)
            await session.execute(
                insert(LevelChange),
                level_steps(
                    member_id, path, "review", metric=config.metric, value=value, source=source, now=now
                ),
            )
            changes.update(level_code=None if target is None else target.code, upgraded_at=None)
            demoted.append((member_id, code, changes["level_code"]))
        await session.execute(
            update(MemberLevel)
            .where(MemberLevel.member_id == member_id)
            .values(updated_at=now, **changes)
            .execution_options(synchronize_session=False)
        )
    log.info("level review %s: %d members reviewed, %d demoted", today, len(members), len(demoted))
    return ReviewResult(reviewed=len(members), demoted=demoted)


async def grant_birthday_points(session: AsyncSession, today: date) -> int:
    """Give each member whose birthday is `today` their level's birthday points, once a year.

    A 29 February birthday is celebrated on 28 February in other years. The level is the
    member's effective one (as the till sees it: the recorded level, or what the counters
    reach when none is recorded, e.g. an entry level added after they joined). Returns how
    many members got points. Birthday points are a gift, so they do not count as points earned.

    Idempotent and safe beside another run (a second hub, the API, the nightly job): the
    member's level row and then points row are locked before looking for this year's
    `birthday:<year>` ledger row, so of two runs one waits and then finds the other's row.
    """
    config = await load_levels(session)
    gifts = {level.code: level.birthday_points for level in config.levels if level.birthday_points > 0}
    if not gifts:
        return 0
    month, day = func.extract("month", Member.birthday), func.extract("day", Member.birthday)
    if (today.month, today.day) == (2, 28) and not _is_leap(today.year):
        born_today = (month == 2) & day.in_((28, 29))
    else:
        born_today = (month == today.month) & (day == today.day)
    found = await session.execute(
        select(Member.id, MemberLevel.level_code, *(getattr(MemberLevel, c) for c in COUNTERS.values()))
        .outerjoin(MemberLevel, MemberLevel.member_id == Member.id)
        .where(Member.merged_into.is_(None), born_today)
        .order_by(Member.id)  # lock order: member id order, as everywhere
    )
    rules = await load_points_rules(session)
    now = datetime.now(UTC)
    source = f"birthday:{today.year}"
    granted = 0
    for row in found.all():
        level = config.by_code(row.level_code)
        if level is None:
            level = config.qualifying(int(getattr(row, COUNTERS[config.metric]) or 0))
        if level is None or level.code not in gifts:
            continue
        await lock_level(session, row.id, now)
        await points.lock_balance(session, row.id, now)
        seen = await session.scalar(
            select(points.PointsLedger.id)
            .where(points.PointsLedger.member_id == row.id, points.PointsLedger.source == source)
            .limit(1)
        )
        if seen is not None:
            continue
        await points.credit(
            session,
            row.id,
            gifts[level.code],
            kind="birthday",
            source=source,
            expires_at=rules.expiry.expires_at(now),
            now=now,
            note=f"{level.name} birthday {today.isoformat()}",
        )
        granted += 1
    if granted:
        log.info("birthday points %s: %d members", today, granted)
    return granted


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)

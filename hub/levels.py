"""Member levels (会员等级): progress counters, automatic upgrades, the yearly review.

Each member has counters of cumulative spend, top-up (fen) and points earned; the chain's
configured metric decides the level. Every counter change is a `level_progress` row and
every level change a `level_changes` row with its source, so a level is always explained.
Events only ever upgrade; only the optional yearly review (`hub.levels_jobs`) demotes.

Other modules use `level_of` (the till prices by it), `on_topup` and `on_topup_refund`
(stored value calls them).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, func, insert, select, update
from sqlalchemy.orm import Mapped, mapped_column

from hub import points
from hub.db import AsyncSession
from hub.errors import NotFound
from hub.loyalty_rules import LevelDef, LevelsConfig, load_levels, load_points_rules
from hub.members import Member, get_member
from hub.models import Base

__all__ = [
    "COUNTERS",
    "LevelChange",
    "LevelProgress",
    "MemberLevel",
    "TopupReversal",
    "add_progress",
    "effective_level",
    "level_of",
    "level_report",
    "level_steps",
    "lock_level",
    "move_levels",
    "on_member_created",
    "on_topup",
    "on_topup_refund",
    "review_levels",
]

log = logging.getLogger(__name__)
COUNTERS = {"spend": "spend_fen", "topup": "topup_fen", "points": "points_earned"}


class MemberLevel(Base):
    """A member's level and qualifying counters; `upgraded_at` is when an upgrade reached the level."""

    __tablename__ = "member_levels"

    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"), primary_key=True)
    level_code: Mapped[str | None] = mapped_column(String(32), index=True)
    upgraded_at: Mapped[datetime | None]
    spend_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    topup_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    points_earned: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime]


class LevelProgress(Base):
    """One change of one counter (signed), with its source; the review sums these over 12 months."""

    __tablename__ = "level_progress"
    __table_args__ = (
        Index("ix_level_progress_member_at", "member_id", "at"),
        Index("ix_level_progress_at", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    metric: Mapped[str] = mapped_column(String(8))
    amount: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(120))
    at: Mapped[datetime]


class LevelChange(Base):
    """One step up or down, with the counter value that caused it and the source."""

    __tablename__ = "level_changes"
    __table_args__ = (Index("ix_level_changes_member", "member_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    from_code: Mapped[str | None] = mapped_column(String(32))
    to_code: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(16))  # upgrade, review, merge
    metric: Mapped[str] = mapped_column(String(8))
    value: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(120))
    at: Mapped[datetime]


async def _ensure(session: AsyncSession, member_id: str, now: datetime) -> None:
    await points.insert_missing(
        session,
        MemberLevel,
        {
            "member_id": member_id,
            "level_code": None,
            "upgraded_at": None,
            "spend_fen": 0,
            "topup_fen": 0,
            "points_earned": 0,
            "updated_at": now,
        },
    )


async def lock_level(session: AsyncSession, member_id: str, now: datetime) -> None:
    """Lock the member's level row (creating it) before touching their points, as everywhere.

    Level row first, points row second: the order every transaction takes them in, so two
    of them working on the same member wait for each other instead of deadlocking.
    """
    await _ensure(session, member_id, now)
    await session.execute(
        update(MemberLevel)
        .where(MemberLevel.member_id == member_id)
        .values(updated_at=now)
        .execution_options(synchronize_session=False)
    )


def level_steps(
    member_id: str,
    path: list[str | None],
    reason: str,
    *,
    metric: str,
    value: int,
    source: str,
    now: datetime,
) -> list[dict[str, Any]]:
    """One `level_changes` row per step along `path` (old code first)."""
    return [
        {
            "member_id": member_id,
            "from_code": old,
            "to_code": new,
            "reason": reason,
            "metric": metric,
            "value": value,
            "source": source[:120],
            "at": now,
        }
        for old, new in itertools.pairwise(path)
    ]


async def add_progress(
    session: AsyncSession,
    member_id: str,
    *,
    source: str,
    now: datetime,
    spend_fen: int = 0,
    topup_fen: int = 0,
    points_earned: int = 0,
    config: LevelsConfig | None = None,
) -> str | None:
    """Move the member's counters (any sign) and upgrade if the metric now reaches a higher level.

    Locks the member's level row first: the caller's later points changes come after it,
    the same order everywhere. Returns the level code after the change.
    """
    stmt = (
        update(MemberLevel)
        .where(MemberLevel.member_id == member_id)
        .values(
            spend_fen=MemberLevel.spend_fen + spend_fen,
            topup_fen=MemberLevel.topup_fen + topup_fen,
            points_earned=MemberLevel.points_earned + points_earned,
            updated_at=now,
        )
        .returning(
            MemberLevel.level_code,
            MemberLevel.spend_fen,
            MemberLevel.topup_fen,
            MemberLevel.points_earned,
        )
        .execution_options(synchronize_session=False)
    )
    row = (await session.execute(stmt)).one_or_none()
    if row is None:  # the member's first progress: create the row, then count
        await _ensure(session, member_id, now)
        row = (await session.execute(stmt)).one()
    moves = [("spend", spend_fen), ("topup", topup_fen), ("points", points_earned)]
    rows = [
        {"member_id": member_id, "metric": metric, "amount": amount, "source": source[:120], "at": now}
        for metric, amount in moves
        if amount
    ]
    if rows:
        await session.execute(insert(LevelProgress), rows)
    config = config or await load_levels(session)
    code = row[0]
    value = int({"spend": row[1], "topup": row[2], "points": row[3]}[config.metric])
    current, target = config.by_code(code), config.qualifying(value)
    if target is None or (current is not None and target.rank <= current.rank):
        return code
    path: list[str | None] = [code, *(level.code for level in config.between(current, target))]
    await session.execute(
        insert(LevelChange),
        level_steps(member_id, path, "upgrade", metric=config.metric, value=value, source=source, now=now),
    )
    await session.execute(
        update(MemberLevel)
        .where(MemberLevel.member_id == member_id)
        .values(level_code=target.code, upgraded_at=now)
        .execution_options(synchronize_session=False)
    )
    log.info(
        "member %s: level %s -> %s (%s %d, %s)", member_id, code, target.code, config.metric, value, source
    )
    return target.code


def _public(level: LevelDef) -> dict[str, Any]:
    return {
        "code": level.code,
        "name": level.name,
        "rank": level.rank,
        "discount_bp": level.discount_bp,
        "points_multiplier_bp": level.points_multiplier_bp,
        "member_prices": level.member_prices,
        "birthday_perk": level.birthday_perk,
    }


async def effective_level(
    session: AsyncSession, member_id: str, config: LevelsConfig
) -> tuple[LevelDef | None, Any]:
    """The member's level (the recorded one, or what the counters reach if none is recorded)."""
    row = (
        await session.execute(
            select(
                MemberLevel.level_code,
                MemberLevel.upgraded_at,
                MemberLevel.spend_fen,
                MemberLevel.topup_fen,
                MemberLevel.points_earned,
            ).where(MemberLevel.member_id == member_id)
        )
    ).one_or_none()
    recorded = config.by_code(row.level_code) if row is not None else None
    if recorded is not None:
        return recorded, row
    # e.g. an entry level with threshold 0 configured after the member registered
    value = int(getattr(row, COUNTERS[config.metric])) if row is not None else 0
    return config.qualifying(value), row


async def level_of(session: AsyncSession, member_id: str) -> dict[str, Any] | None:
    """The member's level as the till uses it, or None (no level, or no such member).

    Keys: code, name, rank, discount_bp, points_multiplier_bp, member_prices (bool), birthday_perk.
    """
    try:
        member = await get_member(session, member_id)
    except NotFound:
        return None
    level, _ = await effective_level(session, member.id, await load_levels(session))
    return None if level is None else _public(level)


async def on_topup(session: AsyncSession, member_id: str, amount_fen: int, source: str) -> None:
    """A stored-value top-up: top-up progress, top-up points per rule, maybe an upgrade.

    Called by the stored-value module in its own transaction, once per top-up; `source`
    (e.g. the top-up id) identifies it, and a second call with the same source does nothing.
    """
    if amount_fen <= 0:
        raise ValueError(f"a top-up must be above 0 fen, got {amount_fen}")
    if not source:
        raise ValueError("a top-up needs its source (the top-up id)")
    member = await get_member(session, member_id)
    tag = source[:120]
    now = datetime.now(UTC)
    config = await load_levels(session)
    await _ensure(session, member.id, now)
    seen = await session.scalar(
        select(LevelProgress.id).where(
            LevelProgress.member_id == member.id, LevelProgress.metric == "topup", LevelProgress.source == tag
        )
    )
    if seen is not None:
        return
    await add_progress(session, member.id, source=tag, now=now, topup_fen=amount_fen, config=config)
    rules = await load_points_rules(session)
    earned = amount_fen * rules.topup_points // rules.topup_per_fen
    if earned > 0:
        await points.credit(
            session,
            member.id,
            earned,
            kind="topup",
            source=tag,
            expires_at=rules.expiry.expires_at(now),
            now=now,
        )
        await add_progress(session, member.id, source=tag, now=now, points_earned=earned, config=config)


@dataclass(frozen=True)
class TopupReversal:
    """What a top-up refund took back from levels and points (all zero on a repeated call)."""

    topup_fen: int = 0  # top-up progress taken back
    points: int = 0  # points the top-up earned, to take back
    unrecovered: int = 0  # of those, already spent: the balance could not give them back


async def on_topup_refund(
    session: AsyncSession, member_id: str, topup_source: str, refund_source: str
) -> TopupReversal:
    """A refunded top-up: take back its top-up progress and the points `on_topup` gave for it.

    Called by the stored-value office in the refund's own transaction. `topup_source` is the
    source `on_topup` was given (e.g. `stored_value.topup:<id>`); `refund_source` labels the
    reversal rows and makes the call happen once: a second call with it does nothing. What
    `on_topup` recorded is found by its source, wherever a member merge moved it. Points are
    taken from the top-up's own lot first, then earliest expiry first; points the member
    already spent cannot come back and are counted in `unrecovered` (the level counter
    still drops by all of them). Like a sale refund, this never demotes: only the review does.
    """
    if not topup_source or not refund_source:
        raise ValueError("a top-up refund needs the top-up's source and its own")
    member = await get_member(session, member_id)
    tag, undo = topup_source[:120], refund_source[:120]
    now = datetime.now(UTC)
    await lock_level(session, member.id, now)  # level row first, then points: the order everywhere
    done = await session.scalar(
        select(LevelProgress.id)
        .where(
            LevelProgress.member_id == member.id,
            LevelProgress.metric == "topup",
            LevelProgress.source == undo,
        )
        .limit(1)
    )
    if done is not None:
        return TopupReversal()
    sums = dict(
        (
            await session.execute(
                select(LevelProgress.metric, func.coalesce(func.sum(LevelProgress.amount), 0))
                .where(
                    LevelProgress.member_id == member.id,  # a merge moves progress to the survivor
                    LevelProgress.source == tag,
                    LevelProgress.metric.in_(("topup", "points")),
                )
                .group_by(LevelProgress.metric)
            )
        ).all()
    )
    topup_fen, points_earned = int(sums.get("topup", 0)), int(sums.get("points", 0))
    if topup_fen <= 0:  # on_topup never saw this top-up: nothing of it to take back
        log.warning("%s: no top-up progress recorded for %s; nothing reversed", undo, tag)
        return TopupReversal()
    config = await load_levels(session)
    await add_progress(
        session,
        member.id,
        source=undo,
        now=now,
        topup_fen=-topup_fen,
        points_earned=-points_earned,
        config=config,
    )
    lot = (
        await session.execute(
            select(points.PointsLot.id, points.PointsLot.points).where(
                points.PointsLot.member_id == member.id,
                points.PointsLot.kind == "topup",
                points.PointsLot.source == tag,
            )
        )
    ).first()  # lots move with a member merge, so the survivor holds it
    earned, lot_id = (0, None) if lot is None else (int(lot.points), int(lot.id))
    if earned <= 0:
        return TopupReversal(topup_fen=topup_fen)
    debit = await points.debit(
        session,
        member.id,
        earned,
        kind="reverse",
        source=undo,
        now=now,
        first_lot=lot_id,
        partial=True,
        note=f"top-up refund takes back the {earned} points the top-up earned",
    )
    unrecovered = earned - debit.points
    if unrecovered:
        log.warning("%s: %d points to reverse were already spent by member %s", undo, unrecovered, member.id)
    return TopupReversal(topup_fen=topup_fen, points=earned, unrecovered=unrecovered)


async def on_member_created(session: AsyncSession, member: Member) -> None:
    """Creation listener: the entry level (threshold 0) and registration points."""
    now = datetime.now(UTC)
    source = f"member:{member.id}"
    config = await load_levels(session)
    await add_progress(session, member.id, source=source, now=now, config=config)
    rules = await load_points_rules(session)
    if rules.registration_points > 0:
        await points.credit(
            session,
            member.id,
            rules.registration_points,
            kind="registration",
            source=source,
            expires_at=rules.expiry.expires_at(now),
            now=now,
        )
        await add_progress(
            session, member.id, source=source, now=now, points_earned=rules.registration_points, config=config
        )


async def review_levels(session: AsyncSession, today: date) -> Any:
    """The optional yearly downgrade review; see `hub.levels_jobs.review_levels` (a `ReviewResult`)."""
    from hub.levels_jobs import review_levels as run  # noqa: PLC0415 - levels_jobs imports this module

    return await run(session, today)


async def move_levels(session: AsyncSession, from_id: str, into_id: str) -> None:
    """Merge hook: counters add up, progress moves, the survivor keeps the higher of both levels."""
    now = datetime.now(UTC)
    for member_id in sorted((from_id, into_id)):
        await _ensure(session, member_id, now)
        await session.execute(
            update(MemberLevel)
            .where(MemberLevel.member_id == member_id)
            .values(updated_at=now)
            .execution_options(synchronize_session=False)
        )
    fresh = {"populate_existing": True}
    dup = await session.get_one(MemberLevel, from_id, execution_options=fresh)
    keep = await session.get_one(MemberLevel, into_id, execution_options=fresh)
    config = await load_levels(session)
    theirs, ours = config.by_code(dup.level_code), config.by_code(keep.level_code)
    keep.spend_fen += dup.spend_fen
    keep.topup_fen += dup.topup_fen
    keep.points_earned += dup.points_earned
    if theirs is not None and (ours is None or theirs.rank > ours.rank):
        value = int(getattr(keep, COUNTERS[config.metric]))
        session.add_all(
            LevelChange(**row)
            for row in level_steps(
                into_id,
                [keep.level_code, theirs.code],
                "merge",
                metric=config.metric,
                value=value,
                source=f"merge:{from_id}",
                now=now,
            )
        )
        keep.level_code, keep.upgraded_at = theirs.code, dup.upgraded_at
    dup.spend_fen = dup.topup_fen = dup.points_earned = 0
    dup.level_code, dup.upgraded_at, dup.updated_at, keep.updated_at = None, None, now, now
    await session.execute(
        update(LevelProgress)
        .where(LevelProgress.member_id == from_id)
        .values(member_id=into_id)
        .execution_options(synchronize_session=False)
    )
    await session.flush()


async def level_report(session: AsyncSession, member_id: str, *, limit: int = 100) -> dict[str, Any]:
    """A member's level, counters, the next level and the level history (newest first)."""
    member = await get_member(session, member_id)
    config = await load_levels(session)
    level, row = await effective_level(session, member.id, config)
    counters = {name: int(getattr(row, name)) if row is not None else 0 for name in COUNTERS.values()}
    value = counters[COUNTERS[config.metric]]
    above = [lvl for lvl in config.levels if level is None or lvl.rank > level.rank]
    history = (
        await session.scalars(
            select(LevelChange)
            .where(LevelChange.member_id == member.id)
            .order_by(LevelChange.id.desc())
            .limit(limit)
        )
    ).all()
    return {
        "member_id": member.id,
        "metric": config.metric,
        "level": None if level is None else _public(level),
        "upgraded_at": None if row is None or row.upgraded_at is None else row.upgraded_at.isoformat(),
        "counters": counters,
        "next_level": None
        if not above
        else {
            "code": above[0].code,
            "threshold": above[0].threshold,
            "missing": max(0, above[0].threshold - value),
        },
        "history": [
            {
                "from": change.from_code,
                "to": change.to_code,
                "reason": change.reason,
                "metric": change.metric,
                "value": change.value,
                "source": change.source,
                "at": change.at.isoformat(),
            }
            for change in history
        ],
    }

"""Levels and points in the head-office API: configuration, a member's points and level, jobs.

Reading needs `loyalty.read` (every role); changing rules, adjusting a member's points by
hand and running the expiry / review / birthday jobs need `loyalty.configure` (owner,
marketing). Every change is one transaction: a refusal (409 with the reason, 422 for a
malformed body) writes nothing.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import func, select

from hub import levels, levels_jobs, points
from hub.api import DB, bad_query, principal, query_int, read_body
from hub.db import AsyncSession
from hub.errors import HubError
from hub.loyalty_rules import (
    LOYALTY_ZONE,
    LevelsConfig,
    PointsRules,
    load_levels,
    load_points_rules,
    save_setting,
)
from hub.members import get_member
from hub.points import PointsLedger, PointsLot

__all__ = ["add_routes"]

_MAX_PAGE = 500
_MAX_ADJUST = 10**9


class LevelInUse(HubError):
    """A level that members hold cannot be removed."""


class AdjustIn(BaseModel):
    """A correction by hand: positive adds a lot (usual validity), negative takes FIFO."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    points: int = Field(strict=True, ge=-_MAX_ADJUST, le=_MAX_ADJUST)
    reason: str = Field(min_length=1, max_length=160)

    @field_validator("points")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("an adjustment of 0 points changes nothing; give a positive or negative number")
        return value


def _day(request: web.Request) -> date:
    raw = request.query.get("day")
    if raw is None:
        return datetime.now(LOYALTY_ZONE).date()
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise bad_query(f"day must be a date like 2026-11-23, got {raw!r}") from None


def _entry(row: PointsLedger) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "points": row.points,
        "balance_after": row.balance_after,
        "source": row.source,
        "order_id": row.order_id,
        "lot_id": row.lot_id,
        "note": row.note,
        "at": row.created_at.isoformat(),
    }


async def get_levels(request: web.Request) -> web.Response:
    """The level definitions."""
    principal(request).require("loyalty.read")
    async with request.app[DB].session() as session:
        config = await load_levels(session)
    return web.json_response(text=config.model_dump_json())


async def put_levels(request: web.Request) -> web.Response:
    """Replace the level definitions; a level members hold cannot be removed (409)."""
    who = principal(request)
    who.require("loyalty.configure")
    config = await read_body(request, LevelsConfig)
    codes = [level.code for level in config.levels]
    async with request.app[DB].session() as session, session.begin():
        held = (
            await session.execute(
                select(levels.MemberLevel.level_code, func.count())
                .where(
                    levels.MemberLevel.level_code.is_not(None), levels.MemberLevel.level_code.not_in(codes)
                )
                .group_by(levels.MemberLevel.level_code)
            )
        ).all()
        if held:
            detail = ", ".join(f"'{code}' ({n} members)" for code, n in held)
            raise LevelInUse(f"levels still held cannot be removed: {detail}; keep them or rename instead")
        await save_setting(session, "levels", config, f"user:{who.name}")
    return web.json_response(text=config.model_dump_json())


async def get_points_rules(request: web.Request) -> web.Response:
    """The points rules: earning, validity, paying with points."""
    principal(request).require("loyalty.read")
    async with request.app[DB].session() as session:
        rules = await load_points_rules(session)
    return web.json_response(text=rules.model_dump_json())


async def put_points_rules(request: web.Request) -> web.Response:
    """Replace the points rules (they apply to what happens from now on)."""
    who = principal(request)
    who.require("loyalty.configure")
    rules = await read_body(request, PointsRules)
    async with request.app[DB].session() as session, session.begin():
        await save_setting(session, "points", rules, f"user:{who.name}")
    return web.json_response(text=rules.model_dump_json())


async def _points_view(session: AsyncSession, member_id: str, limit: int, offset: int) -> dict[str, Any]:
    member = await get_member(session, member_id)
    now = datetime.now(UTC)
    rows = (
        await session.scalars(
            select(PointsLedger)
            .where(PointsLedger.member_id == member.id)
            .order_by(PointsLedger.id.desc())
            .limit(limit + 1)
            .offset(offset)
        )
    ).all()
    lots = (
        await session.scalars(
            select(PointsLot)
            .where(PointsLot.member_id == member.id, PointsLot.remaining > 0)
            .order_by(PointsLot.expires_at, PointsLot.id)
        )
    ).all()
    ledger_sum = await session.scalar(
        select(func.coalesce(func.sum(PointsLedger.points), 0)).where(PointsLedger.member_id == member.id)
    )
    return {
        "member_id": member.id,
        "balance": await points.balance_of(session, member.id),
        "spendable": await points.spendable(session, member.id, now),
        "ledger_sum": int(ledger_sum or 0),
        "lots": [
            {
                "id": lot.id,
                "kind": lot.kind,
                "source": lot.source,
                "points": lot.points,
                "remaining": lot.remaining,
                "earned_at": lot.earned_at.isoformat(),
                "expires_at": lot.expires_at.isoformat(),
            }
            for lot in lots
        ],
        "items": [_entry(row) for row in rows[:limit]],
        "next": offset + limit if len(rows) > limit else None,
    }


async def get_member_points(request: web.Request) -> web.Response:
    """A member's balance, open lots (soonest expiry first) and ledger (newest first, paged)."""
    principal(request).require("loyalty.read")
    limit = max(1, query_int(request, "limit", 100, 0, _MAX_PAGE))
    offset = query_int(request, "offset", 0, 0, 10**9)
    async with request.app[DB].session() as session:
        view = await _points_view(session, request.match_info["member_id"], limit, offset)
    return web.json_response(view)


async def post_adjustment(request: web.Request) -> web.Response:
    """Add or take points by hand; the ledger row carries the user's name and the reason."""
    who = principal(request)
    who.require("loyalty.configure")
    body = await read_body(request, AdjustIn)
    now = datetime.now(UTC)
    source = f"user:{who.name}"
    async with request.app[DB].session() as session, session.begin():
        member_id = (await get_member(session, request.match_info["member_id"])).id
        if body.points > 0:
            rules = await load_points_rules(session)
            await points.credit(
                session,
                member_id,
                body.points,
                kind="adjust",
                source=source,
                expires_at=rules.expiry.expires_at(now),
                now=now,
                note=body.reason,
            )
        else:
            try:
                await points.debit(
                    session, member_id, -body.points, kind="adjust", source=source, now=now, note=body.reason
                )
            except points.InsufficientPoints as err:
                raise HubError(
                    f"member has {err.balance} points; cannot take {-body.points} (nothing was changed)"
                ) from None
        row = (
            await session.scalars(
                select(PointsLedger)
                .where(PointsLedger.member_id == member_id, PointsLedger.kind == "adjust")
                .order_by(PointsLedger.id.desc())
                .limit(1)
            )
        ).one()
        answer = {"member_id": member_id, "entry": _entry(row), "balance": row.balance_after}
    return web.json_response(answer, status=201)


async def get_member_level(request: web.Request) -> web.Response:
    """A member's level, counters, the next level and the level history (newest first)."""
    principal(request).require("loyalty.read")
    async with request.app[DB].session() as session:
        report = await levels.level_report(session, request.match_info["member_id"])
    return web.json_response(report)


async def post_expire(request: web.Request) -> web.Response:
    """Expire every lot that is due now (the nightly job, run by hand)."""
    principal(request).require("loyalty.configure")
    async with request.app[DB].session() as session, session.begin():
        done = await points.expire_points(session, datetime.now(UTC))
    return web.json_response({"lots": done.lots, "points": done.points, "members": done.members})


async def post_review(request: web.Request) -> web.Response:
    """Run the yearly level review for `?day=` (default today, Asia/Shanghai)."""
    principal(request).require("loyalty.configure")
    day = _day(request)
    async with request.app[DB].session() as session, session.begin():
        done = await levels_jobs.review_levels(session, day)
    demoted = [{"member_id": m, "from": old, "to": new} for m, old, new in done.demoted]
    return web.json_response(
        {"day": day.isoformat(), "skipped": done.skipped, "reviewed": done.reviewed, "demoted": demoted}
    )


async def post_birthdays(request: web.Request) -> web.Response:
    """Give today's (or `?day=`) birthday members their level's birthday points, once a year."""
    principal(request).require("loyalty.configure")
    day = _day(request)
    async with request.app[DB].session() as session, session.begin():
        granted = await levels_jobs.grant_birthday_points(session, day)
    return web.json_response({"day": day.isoformat(), "members": granted})


def add_routes(app: web.Application) -> None:
    """Register the levels and points routes."""
    r = app.router
    r.add_get("/api/v1/loyalty/levels", get_levels)
    r.add_put("/api/v1/loyalty/levels", put_levels)
    r.add_post("/api/v1/loyalty/levels/review", post_review)
    r.add_get("/api/v1/loyalty/points-rules", get_points_rules)
    r.add_put("/api/v1/loyalty/points-rules", put_points_rules)
    r.add_post("/api/v1/loyalty/expire", post_expire)
    r.add_post("/api/v1/loyalty/birthday-points", post_birthdays)
    r.add_get("/api/v1/members/{member_id}/points", get_member_points)
    r.add_post("/api/v1/members/{member_id}/points/adjustments", post_adjustment)
    r.add_get("/api/v1/members/{member_id}/level", get_member_level)

"""Member tags, RFM segments and preferences in the head-office API.

Reading needs `members.read` (every role). Giving and taking tags needs `members.write`;
a store-scoped user may tag only members whose source store is one of theirs (any other
member answers 404, as in the member routes). The tag list, the rules and the chain-wide
recompute are the chain's: changing them needs `members.write` and a chain-wide role
(owner, regional manager, marketing), not a store-scoped one. A refusal writes nothing.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from hub.api import DB, ProblemError, actor, bad_query, principal, query_int, read_body
from hub.errors import NotFound, PermissionDenied
from hub.member_prefs import preferences
from hub.member_segments import (
    DEFAULT_WINDOW_DAYS,
    MAX_WINDOW_DAYS,
    last_computed,
    member_segment,
    recompute_segments,
    segment_counts,
)
from hub.member_tag_tables import MemberSegment, MemberTag, MemberTagAudit
from hub.member_tags import (
    InvalidTag,
    MemberTagView,
    assign_tag,
    create_tag,
    delete_tag,
    evaluate_rule_tag,
    get_tag,
    list_tags,
    member_tags,
    tag_history,
    unassign_tag,
    update_tag,
)
from hub.members import Member, get_member
from protocol import Problem

__all__ = ["add_routes"]

# Head office works in China time: "today" is the office's date unless `as_of` says otherwise.
_OFFICE_TZ = ZoneInfo("Asia/Shanghai")


class TagIn(BaseModel):
    """A new tag; with `rule` a rule tag (see docs/members.md for the rule kinds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(max_length=32)
    name: str = Field(max_length=200)
    color: str | None = Field(None, max_length=16)
    rule: dict[str, Any] | None = None


class TagPatch(BaseModel):
    """Changes to a tag: name, colour, or a rule tag's rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(None, max_length=200)
    color: str | None = Field(None, max_length=16)
    rule: dict[str, Any] | None = None


class AsOfIn(BaseModel):
    """Which business day to compute for (the office's today if absent), over which window."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    as_of: date | None = None
    window_days: int = Field(DEFAULT_WINDOW_DAYS, strict=True, ge=1, le=MAX_WINDOW_DAYS)


def _today() -> date:
    return datetime.now(UTC).astimezone(_OFFICE_TZ).date()


def _invalid(err: Exception) -> ProblemError:
    return ProblemError(Problem(title="Request is invalid", status=422, detail=str(err)))


def _chain_writer(request: web.Request) -> None:
    who = principal(request)
    who.require("members.write")
    if who.stores is not None:
        raise PermissionDenied(
            "the tag list, tag rules and segments are the chain's; a chain-wide role changes them"
        )


def _tag_json(tag: MemberTag, members: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "code": tag.code,
        "name": tag.name,
        "color": tag.color,
        "kind": "manual" if tag.rule is None else "rule",
        "rule": tag.rule,
        "created_by": tag.created_by,
        "created_at": tag.created_at.isoformat(),
        "updated_at": tag.updated_at.isoformat(),
        "evaluated_at": tag.evaluated_at.isoformat() if tag.evaluated_at else None,
        "evaluated_for": tag.evaluated_for.isoformat() if tag.evaluated_for else None,
    }
    if members is not None:
        out["members"] = members
    return out


def _view_json(view: MemberTagView) -> dict[str, Any]:
    return {
        "code": view.code,
        "name": view.name,
        "color": view.color,
        "kind": view.kind,
        "assigned_by": view.assigned_by,
        "assigned_at": view.assigned_at.isoformat(),
    }


def _segment_json(row: MemberSegment | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "segment": row.segment,
        "r_score": row.r_score,
        "f_score": row.f_score,
        "m_score": row.m_score,
        "recency_days": row.recency_days,
        "frequency": row.frequency,
        "monetary_fen": row.monetary_fen,
        "as_of": row.as_of.isoformat(),
        "window_days": row.window_days,
        "computed_at": row.computed_at.isoformat(),
    }


async def _visible_member(request: web.Request, permission: str) -> Member:
    """The member of the path (not following a merge), if the caller may act on it; 404 otherwise."""
    who = principal(request)
    who.require(permission)
    member_id = request.match_info["member_id"]
    async with request.app[DB].session() as session:
        member = await get_member(session, member_id, follow_merge=False)
    if who.stores is not None and (member.source_store is None or member.source_store not in who.stores):
        raise NotFound(f"no member {member_id!r}")
    return member


async def get_tags(request: web.Request) -> web.Response:
    """`GET /api/v1/member-tags`: the chain's tags with how many of the caller's members have each."""
    who = principal(request)
    who.require("members.read")
    async with request.app[DB].session() as session:
        rows = await list_tags(session, stores=who.stores)
    return web.json_response({"items": [_tag_json(tag, n) for tag, n in rows]})


async def get_one_tag(request: web.Request) -> web.Response:
    """`GET /api/v1/member-tags/{code}`: one tag with its member count."""
    who = principal(request)
    who.require("members.read")
    code = request.match_info["code"]
    async with request.app[DB].session() as session:
        rows = await list_tags(session, stores=who.stores, code=code)
    if not rows:
        raise NotFound(f"no tag {code!r}")
    return web.json_response(_tag_json(*rows[0]))


async def post_tag(request: web.Request) -> web.Response:
    """`POST /api/v1/member-tags {code, name, color?, rule?}`: 201; a rule tag is evaluated at once."""
    _chain_writer(request)
    body = await read_body(request, TagIn)
    async with request.app[DB].session() as session, session.begin():
        try:
            tag = await create_tag(
                session,
                body.code,
                body.name,
                actor=actor(request),
                color=body.color,
                rule=body.rule,
                today=_today(),
            )
        except InvalidTag as err:
            raise _invalid(err) from None
        answer = _tag_json(tag, (await list_tags(session, code=tag.code))[0][1])
    return web.json_response(answer, status=201)


async def patch_tag(request: web.Request) -> web.Response:
    """`PATCH /api/v1/member-tags/{code}`: name, colour, or a rule tag's rule (re-evaluated)."""
    _chain_writer(request)
    changes = (await read_body(request, TagPatch)).model_dump(exclude_unset=True)
    async with request.app[DB].session() as session, session.begin():
        try:
            tag = await update_tag(session, request.match_info["code"], changes, today=_today())
        except InvalidTag as err:
            raise _invalid(err) from None
        answer = _tag_json(tag, (await list_tags(session, code=tag.code))[0][1])
    return web.json_response(answer)


async def remove_tag(request: web.Request) -> web.Response:
    """`DELETE /api/v1/member-tags/{code}`: 204; members lose it (manual links are audited)."""
    _chain_writer(request)
    async with request.app[DB].session() as session, session.begin():
        await delete_tag(session, request.match_info["code"], actor=actor(request))
    return web.Response(status=204)


async def evaluate_tag(request: web.Request) -> web.Response:
    """`POST /api/v1/member-tags/{code}/evaluate {as_of?}`: recompute one rule tag's members now."""
    _chain_writer(request)
    body = await read_body(request, AsOfIn)
    async with request.app[DB].session() as session, session.begin():
        tag = await get_tag(session, request.match_info["code"])
        members = await evaluate_rule_tag(session, tag, body.as_of or _today())
        answer = _tag_json(tag, members)
    return web.json_response(answer)


async def get_member_tags(request: web.Request) -> web.Response:
    """`GET /api/v1/members/{id}/tags`: the member's tags, manual and rule."""
    member = await _visible_member(request, "members.read")
    async with request.app[DB].session() as session:
        views = await member_tags(session, member.id)
    return web.json_response({"member_id": member.id, "items": [_view_json(v) for v in views]})


async def put_member_tag(request: web.Request) -> web.Response:
    """`PUT /api/v1/members/{id}/tags/{code}`: give a manual tag (201 if new, 200 if already had)."""
    member = await _visible_member(request, "members.write")
    async with request.app[DB].session() as session, session.begin():
        added = await assign_tag(session, member.id, request.match_info["code"], actor=actor(request))
        views = await member_tags(session, member.id)
    body = {"member_id": member.id, "assigned": added, "items": [_view_json(v) for v in views]}
    return web.json_response(body, status=201 if added else 200)


async def delete_member_tag(request: web.Request) -> web.Response:
    """`DELETE /api/v1/members/{id}/tags/{code}`: take a manual tag away (`removed` false if not had)."""
    member = await _visible_member(request, "members.write")
    async with request.app[DB].session() as session, session.begin():
        removed = await unassign_tag(session, member.id, request.match_info["code"], actor=actor(request))
        views = await member_tags(session, member.id)
    return web.json_response(
        {"member_id": member.id, "removed": removed, "items": [_view_json(v) for v in views]}
    )


def _audit_json(entry: MemberTagAudit) -> dict[str, Any]:
    return {
        "tag_code": entry.tag_code,
        "action": entry.action,
        "actor": entry.actor,
        "at": entry.at.isoformat(),
    }


async def get_tag_history(request: web.Request) -> web.Response:
    """`GET /api/v1/members/{id}/tag-history?limit=`: who gave or took which manual tag, newest first."""
    member = await _visible_member(request, "members.read")
    limit = query_int(request, "limit", 100, 1, 1000)
    async with request.app[DB].session() as session:
        entries = await tag_history(session, member.id, limit=limit)
    return web.json_response({"member_id": member.id, "items": [_audit_json(e) for e in entries]})


def _as_of(request: web.Request) -> date:
    raw = request.query.get("as_of")
    if not raw:
        return _today()
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise bad_query(f"as_of must be a date like 2026-06-30, got {raw!r}") from None


async def get_profile(request: web.Request) -> web.Response:
    """`GET /api/v1/members/{id}/profile?as_of=&days=`: tags, stored segment, preferences (computed now)."""
    member = await _visible_member(request, "members.read")
    as_of = _as_of(request)
    days = query_int(request, "days", DEFAULT_WINDOW_DAYS, 1, MAX_WINDOW_DAYS)
    async with request.app[DB].session() as session:
        views = await member_tags(session, member.id)
        segment = await member_segment(session, member.id)
        prefs = await preferences(session, member.id, as_of=as_of, window_days=days)
    body = {
        "member_id": member.id,
        "tags": [_view_json(v) for v in views],
        "segment": _segment_json(segment),
        "preferences": prefs.as_json(),
    }
    return web.json_response(body)


async def get_segments(request: web.Request) -> web.Response:
    """`GET /api/v1/member-segments`: members per segment (within the caller's stores), and when computed."""
    who = principal(request)
    who.require("members.read")
    async with request.app[DB].session() as session:
        counts = await segment_counts(session, stores=who.stores)
        last = await last_computed(session)
    body = {
        "as_of": last[0].isoformat() if last else None,
        "window_days": last[1] if last else None,
        "computed_at": last[2].isoformat() if last else None,
        "segments": counts,
        "scored": sum(counts.values()),
    }
    return web.json_response(body)


async def post_recompute(request: web.Request) -> web.Response:
    """`POST /api/v1/member-segments/recompute {as_of?, window_days?}`: RFM segments and rule tags now."""
    _chain_writer(request)
    body = await read_body(request, AsOfIn)
    try:
        done = await recompute_segments(request.app[DB], body.as_of or _today(), window_days=body.window_days)
    except ValueError as err:
        raise _invalid(err) from None
    answer = {
        "as_of": done.as_of.isoformat(),
        "window_days": done.window_days,
        "scored": done.scored,
        "segments": done.segments,
        "tags": done.tags,
        "seconds": round(done.seconds, 3),
    }
    return web.json_response(answer)


def add_routes(app: web.Application) -> None:
    """Register the tag, segment and member-profile routes."""
    app.router.add_get("/api/v1/member-tags", get_tags)
    app.router.add_post("/api/v1/member-tags", post_tag)
    app.router.add_get("/api/v1/member-tags/{code}", get_one_tag)
    app.router.add_patch("/api/v1/member-tags/{code}", patch_tag)
    app.router.add_delete("/api/v1/member-tags/{code}", remove_tag)
    app.router.add_post("/api/v1/member-tags/{code}/evaluate", evaluate_tag)
    app.router.add_get("/api/v1/member-segments", get_segments)
    app.router.add_post("/api/v1/member-segments/recompute", post_recompute)
    app.router.add_get("/api/v1/members/{member_id}/tags", get_member_tags)
    app.router.add_put("/api/v1/members/{member_id}/tags/{code}", put_member_tag)
    app.router.add_delete("/api/v1/members/{member_id}/tags/{code}", delete_member_tag)
    app.router.add_get("/api/v1/members/{member_id}/tag-history", get_tag_history)
    app.router.add_get("/api/v1/members/{member_id}/profile", get_profile)

"""Campaigns, audience previews, a member's messages and unsubscribes in the head-office API.

Authoring (`campaigns.write`) is for marketing and the owner; everyone may read. An
unsubscribe or resubscribe changes the member, so it needs `members.write` (store staff
record a customer's "no more SMS" at the counter). A refusal writes nothing: 404 for an
unknown campaign or member, 409 for a state that does not allow the step, 422 with the
field for a malformed body or an audience naming an unknown tag, level or segment.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from hub.api import DB, ProblemError, actor, bad_query, principal, query_int, read_body
from hub.campaigns import (
    Audience,
    AudienceError,
    CampaignIn,
    audience_statement,
    campaign_json,
    campaign_results,
    cancel_campaign,
    create_campaign,
    get_campaign,
)
from hub.members import get_member
from hub.messaging import resubscribe, unsubscribe
from hub.messaging_tables import Campaign, CampaignState, Message, Unsubscribe
from protocol import FieldError, Problem

__all__ = ["add_routes"]

_MAX_PAGE = 200
_SAMPLE = 20


class PreviewIn(BaseModel):
    """An audience to count before scheduling, as it would be on `day` (default: today in `timezone`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    audience: Audience
    timezone: str = "Asia/Shanghai"
    day: str | None = Field(None, pattern=r"^\d{4}-\d{2}-\d{2}$")


class ChannelIn(BaseModel):
    """The channel to unsubscribe from or resubscribe to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: Literal["sms"] = "sms"


def _audience_problem(err: AudienceError) -> ProblemError:
    return ProblemError(
        Problem(
            type="https://storelink.dev/problems/validation",
            title="Request body is invalid",
            status=422,
            detail=str(err),
            errors=[FieldError(field=err.field, message=err.message)],
        )
    )


async def post_campaign(request: web.Request) -> web.Response:
    """Schedule a campaign (send_at local in its time zone; omitted: at once)."""
    principal(request).require("campaigns.write")
    body = await read_body(request, CampaignIn)
    try:
        async with request.app[DB].session() as session, session.begin():
            campaign = await create_campaign(session, body, actor=actor(request))
            answer = campaign_json(campaign)
    except AudienceError as err:
        raise _audience_problem(err) from None
    return web.json_response(answer, status=201)


async def post_preview(request: web.Request) -> web.Response:
    """How many members an audience has now (and a few of them), before scheduling."""
    principal(request).require("campaigns.write")
    body = await read_body(request, PreviewIn)
    try:
        zone = ZoneInfo(body.timezone)
    except (KeyError, ValueError):
        raise bad_query(f"unknown time zone {body.timezone!r}") from None
    try:
        day = datetime.fromisoformat(body.day).date() if body.day else datetime.now(zone).date()
    except ValueError:
        raise bad_query(f"day {body.day!r} is not a date") from None
    try:
        async with request.app[DB].session() as session:
            query = await audience_statement(session, body.audience, day)
            count = await session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
            sample = list((await session.scalars(query.limit(_SAMPLE))).all())
    except AudienceError as err:
        raise _audience_problem(err) from None
    return web.json_response({"day": day.isoformat(), "members": int(count or 0), "sample": sample})


async def get_campaigns(request: web.Request) -> web.Response:
    """Campaigns, newest send time first; `state` filters."""
    principal(request).require("campaigns.read")
    limit = query_int(request, "limit", 50, 1, _MAX_PAGE)
    offset = query_int(request, "offset", 0, 0, 10**9)
    query = select(Campaign).order_by(Campaign.send_at.desc(), Campaign.id.desc())
    state = request.query.get("state")
    if state is not None:
        if state not in {s.value for s in CampaignState}:
            raise bad_query(f"state must be one of {', '.join(s.value for s in CampaignState)}")
        query = query.where(Campaign.state == state)
    async with request.app[DB].session() as session:
        rows = (await session.scalars(query.limit(limit + 1).offset(offset))).all()
    return web.json_response({"items": [campaign_json(c) for c in rows[:limit]], "more": len(rows) > limit})


async def get_campaign_route(request: web.Request) -> web.Response:
    """One campaign."""
    principal(request).require("campaigns.read")
    async with request.app[DB].session() as session:
        campaign = await get_campaign(session, request.match_info["campaign_id"])
    return web.json_response(campaign_json(campaign))


async def get_results(request: web.Request) -> web.Response:
    """Reach, coupon use, registrations, attributed orders and revenue."""
    principal(request).require("campaigns.read")
    async with request.app[DB].session() as session:
        answer = await campaign_results(session, request.match_info["campaign_id"])
    return web.json_response(answer)


async def post_cancel(request: web.Request) -> web.Response:
    """Cancel a scheduled campaign."""
    principal(request).require("campaigns.write")
    async with request.app[DB].session() as session, session.begin():
        campaign = await cancel_campaign(session, request.match_info["campaign_id"], actor=actor(request))
        answer = campaign_json(campaign)
    return web.json_response(answer)


def _message_json(m: Message) -> dict[str, Any]:
    return {
        "id": m.id,
        "channel": m.channel,
        "category": m.category,
        "template": m.template,
        "params": m.params,
        "campaign_id": m.campaign_id,
        "state": m.state,
        "attempts": m.attempts,
        "recipient": m.recipient,
        "provider_ref": m.provider_ref,
        "last_error": m.last_error,
        "created_at": m.created_at.isoformat(),
        "next_attempt_at": m.next_attempt_at.isoformat(),
        "sent_at": m.sent_at.isoformat() if m.sent_at else None,
    }


async def get_member_messages(request: web.Request) -> web.Response:
    """A member's messages, newest first, and the channels they unsubscribed from."""
    principal(request).require("members.read")
    limit = query_int(request, "limit", 50, 1, _MAX_PAGE)
    async with request.app[DB].session() as session:
        member = await get_member(session, request.match_info["member_id"])
        rows = (
            await session.scalars(
                select(Message)
                .where(Message.member_id == member.id)
                .order_by(Message.created_at.desc(), Message.id.desc())
                .limit(limit)
            )
        ).all()
        channels = (
            await session.scalars(select(Unsubscribe.channel).where(Unsubscribe.member_id == member.id))
        ).all()
    return web.json_response(
        {"member_id": member.id, "unsubscribed": sorted(channels), "items": [_message_json(m) for m in rows]}
    )


async def _subscription(request: web.Request, *, stop: bool) -> web.Response:
    principal(request).require("members.write")
    body = await read_body(request, ChannelIn)
    async with request.app[DB].session() as session, session.begin():
        member = await get_member(session, request.match_info["member_id"])
        if stop:
            await unsubscribe(session, member.id, body.channel, source=actor(request))
        else:
            await resubscribe(session, member.id, body.channel)
    return web.json_response(
        {
            "member_id": member.id,
            "channel": body.channel,
            "unsubscribed": stop,
            "at": datetime.now(UTC).isoformat(),
        }
    )


async def post_unsubscribe(request: web.Request) -> web.Response:
    """No more marketing to the member on the channel (transactional messages still go)."""
    return await _subscription(request, stop=True)


async def post_resubscribe(request: web.Request) -> web.Response:
    """Lift an unsubscribe (the member asked for marketing again)."""
    return await _subscription(request, stop=False)


def add_routes(app: web.Application) -> None:
    """Register the campaign and message routes."""
    app.router.add_post("/api/v1/campaigns", post_campaign)
    app.router.add_get("/api/v1/campaigns", get_campaigns)
    app.router.add_post("/api/v1/campaigns/preview", post_preview)
    app.router.add_get("/api/v1/campaigns/{campaign_id}", get_campaign_route)
    app.router.add_get("/api/v1/campaigns/{campaign_id}/results", get_results)
    app.router.add_post("/api/v1/campaigns/{campaign_id}/cancel", post_cancel)
    app.router.add_get("/api/v1/members/{member_id}/messages", get_member_messages)
    app.router.add_post("/api/v1/members/{member_id}/unsubscribe", post_unsubscribe)
    app.router.add_post("/api/v1/members/{member_id}/resubscribe", post_resubscribe)

"""Referrals (推广员 / 裂变返佣) in the head-office API.

Rules and promoters are configured by marketing and the owner (`referrals.write`); everyone
may read. Registering a member through a share code (`referrals.register`) is done by whoever
signs customers up: store staff, head office, or the member app's back end signed in as a
user. A fraud guard's refusal does not refuse the registration: the member is created and
the answer says why the referral was not counted. 404 unknown code, promoter or member;
409 a refusal (stopped promoter, duplicate rule, phone taken); 422 malformed body.
"""

from __future__ import annotations

from datetime import date

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from hub.api import DB, actor, bad_query, principal, problem, query_int, read_body
from hub.members import InvalidMember, MemberFields, get_member
from hub.referral_sales import commission_json, promoter_totals
from hub.referral_tables import Commission, CommissionState
from hub.referrals import (
    RuleChange,
    RuleIn,
    attribute,
    attribution_json,
    create_rule,
    get_promoter,
    link_for,
    link_json,
    list_rules,
    make_promoter,
    promoter_friends,
    promoter_json,
    register_with_code,
    resolve_code,
    rule_json,
    update_rule,
)

__all__ = ["add_routes"]

_MAX_PAGE = 500


class PromoterIn(BaseModel):
    """Make a member a promoter."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    member_id: str = Field(min_length=1, max_length=36)


class PromoterChange(BaseModel):
    """Stop or restart a promoter (a stopped one's codes attribute nobody and earn nothing more)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    active: bool


class LinkIn(BaseModel):
    """The parameters a share link carries."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    campaign: str = Field("", max_length=64, pattern=r"^[A-Za-z0-9_.-]*$")
    store: str = Field("", max_length=32)
    channel: str = Field("", max_length=32, pattern=r"^[A-Za-z0-9_.-]*$")


class RegisterIn(BaseModel):
    """A new member who came through a share code."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    code: str = Field(min_length=4, max_length=16)
    phone: str = Field(min_length=1, max_length=32)
    name: str = Field("", max_length=64)
    birthday: date | None = None
    consent_marketing: bool = False
    consent_sms: bool = False


class AttributeIn(BaseModel):
    """A new member (registered within the grace period, no orders yet) opened a share link."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    code: str = Field(min_length=4, max_length=16)
    member_id: str = Field(min_length=1, max_length=36)


async def post_rule(request: web.Request) -> web.Response:
    """A new rule (one per campaign, one default)."""
    principal(request).require("referrals.write")
    body = await read_body(request, RuleIn)
    async with request.app[DB].session() as session, session.begin():
        answer = rule_json(await create_rule(session, body, actor=actor(request)))
    return web.json_response(answer, status=201)


async def get_rules(request: web.Request) -> web.Response:
    """Every rule."""
    principal(request).require("referrals.read")
    async with request.app[DB].session() as session:
        rules = await list_rules(session)
    return web.json_response({"items": [rule_json(r) for r in rules]})


async def patch_rule(request: web.Request) -> web.Response:
    """Rename, (de)activate, change caps."""
    principal(request).require("referrals.write")
    body = await read_body(request, RuleChange)
    async with request.app[DB].session() as session, session.begin():
        answer = rule_json(await update_rule(session, request.match_info["rule_id"], body))
    return web.json_response(answer)


async def post_promoter(request: web.Request) -> web.Response:
    """Make a member a promoter: 201 new, 200 already one (restarted if stopped)."""
    principal(request).require("referrals.write")
    body = await read_body(request, PromoterIn)
    async with request.app[DB].session() as session, session.begin():
        promoter, created = await make_promoter(session, body.member_id, actor=actor(request))
        answer = promoter_json(promoter)
    return web.json_response(answer, status=201 if created else 200)


async def get_promoter_route(request: web.Request) -> web.Response:
    """A promoter with their earnings (pending, settled, reversed) and newest friends."""
    principal(request).require("referrals.read")
    member_id = request.match_info["member_id"]
    async with request.app[DB].session() as session:
        promoter = await get_promoter(session, member_id)
        totals = await promoter_totals(session, member_id)
        friends = await promoter_friends(session, member_id, limit=query_int(request, "friends", 50, 0, 500))
    answer = {**promoter_json(promoter), **totals, "recent_friends": [attribution_json(a) for a in friends]}
    return web.json_response(answer)


async def patch_promoter(request: web.Request) -> web.Response:
    """Stop or restart a promoter."""
    principal(request).require("referrals.write")
    body = await read_body(request, PromoterChange)
    async with request.app[DB].session() as session, session.begin():
        promoter = await get_promoter(session, request.match_info["member_id"])
        promoter.active = body.active
        answer = promoter_json(promoter)
    return web.json_response(answer)


async def post_link(request: web.Request) -> web.Response:
    """The promoter's share link with these parameters (the same link for the same parameters)."""
    principal(request).require("referrals.write")
    body = await read_body(request, LinkIn)
    async with request.app[DB].session() as session, session.begin():
        link = await link_for(session, request.match_info["member_id"], **body.model_dump())
        answer = link_json(link)
    return web.json_response(answer)


async def get_link(request: web.Request) -> web.Response:
    """What a share code stands for (the landing page of a link reads it)."""
    principal(request).require("referrals.read")
    async with request.app[DB].session() as session:
        answer = link_json(await resolve_code(session, request.match_info["code"]))
    return web.json_response(answer)


async def post_register(request: web.Request) -> web.Response:
    """Register a member through a share code: the member, and the attribution or why there is none."""
    principal(request).require("referrals.register")
    body = await read_body(request, RegisterIn)
    try:
        fields = MemberFields(
            body.phone,
            channel="referral",
            name=body.name,
            birthday=body.birthday,
            consent_marketing=body.consent_marketing,
            consent_sms=body.consent_sms,
        )
    except InvalidMember as err:
        return problem(422, "Invalid member", str(err))
    async with request.app[DB].session() as session, session.begin():
        member, done, refused = await register_with_code(session, body.code, fields)
        answer = {
            "member_id": member.id,
            "attribution": attribution_json(done) if done is not None else None,
            "refused": refused,
        }
    return web.json_response(answer, status=201)


async def post_attribute(request: web.Request) -> web.Response:
    """Attribute a new member who opened a share link (the fraud guards apply: 409 with the reason)."""
    principal(request).require("referrals.register")
    body = await read_body(request, AttributeIn)
    async with request.app[DB].session() as session, session.begin():
        member = await get_member(session, body.member_id)
        link = await resolve_code(session, body.code)
        answer = attribution_json(await attribute(session, member.id, link, via="link"))
    return web.json_response(answer, status=201)


async def get_commissions(request: web.Request) -> web.Response:
    """Commissions, newest first; `promoter=`, `state=` (pending, settled, reversed), `order=` filter."""
    principal(request).require("referrals.read")
    limit = query_int(request, "limit", 100, 1, _MAX_PAGE)
    query = select(Commission).order_by(Commission.id.desc()).limit(limit)
    state = request.query.get("state")
    if state is not None:
        if state not in {s.value for s in CommissionState}:
            raise bad_query("state must be pending, settled or reversed")
        query = query.where(Commission.state == state)
    if "promoter" in request.query:
        query = query.where(Commission.promoter_id == request.query["promoter"])
    if "order" in request.query:
        query = query.where(Commission.order_id == request.query["order"])
    async with request.app[DB].session() as session:
        rows = (await session.scalars(query)).all()
    return web.json_response({"items": [commission_json(c) for c in rows]})


def add_routes(app: web.Application) -> None:
    """Register the referral routes."""
    app.router.add_post("/api/v1/referrals/rules", post_rule)
    app.router.add_get("/api/v1/referrals/rules", get_rules)
    app.router.add_patch("/api/v1/referrals/rules/{rule_id}", patch_rule)
    app.router.add_post("/api/v1/referrals/promoters", post_promoter)
    app.router.add_get("/api/v1/referrals/promoters/{member_id}", get_promoter_route)
    app.router.add_patch("/api/v1/referrals/promoters/{member_id}", patch_promoter)
    app.router.add_post("/api/v1/referrals/promoters/{member_id}/links", post_link)
    app.router.add_get("/api/v1/referrals/links/{code}", get_link)
    app.router.add_post("/api/v1/referrals/register", post_register)
    app.router.add_post("/api/v1/referrals/attribute", post_attribute)
    app.router.add_get("/api/v1/referrals/commissions", get_commissions)

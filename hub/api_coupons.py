"""Coupons in the head-office API: templates, issuance, the coupon centre, gift packs, statistics.

Designing, issuing and revoking need `coupons.write` (owner, marketing); reading needs
`coupons.read`; a claim on a member's behalf (staff helping at the counter, the member
app's backend) needs `members.write`. Each call is one transaction: a refusal (404, 409
with the reason, 422 with field paths) writes nothing.
"""

from __future__ import annotations

from typing import Any, Self

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, model_validator

from hub.api import DB, ProblemError, actor, principal, read_body
from hub.coupon_gifts import PackIn, get_pack, pack_json, set_pack
from hub.coupon_tables import CouponState, IssueSource
from hub.coupons import (
    TemplateChange,
    TemplateIn,
    claim,
    claimable_templates,
    coupon_json,
    create_template,
    get_template,
    issue,
    issue_to_audience,
    list_templates,
    member_coupons,
    revoke,
    template_json,
    template_stats,
    update_template,
)
from hub.errors import NotFound
from hub.members import get_member
from protocol import Problem
from protocol.problem import FieldError

__all__ = ["add_routes"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class IssueIn(_In):
    """Named members, or an audience (tag, segment, level; all given must hold)."""

    member_ids: list[str] | None = Field(None, min_length=1, max_length=10_000)
    tag: str | None = Field(None, min_length=1, max_length=32)
    segment: str | None = Field(None, min_length=1, max_length=24)
    level: str | None = Field(None, min_length=1, max_length=32)

    @model_validator(mode="after")
    def _one_audience(self) -> Self:
        audience = (self.tag, self.segment, self.level) != (None, None, None)
        if (self.member_ids is not None) == audience:
            raise ValueError("give member_ids, or an audience (tag, segment, level), not both")
        return self


class ClaimIn(_In):
    """A member claims from the coupon centre (template_id) or with a claim code."""

    member_id: str = Field(min_length=1, max_length=36)
    template_id: str | None = Field(None, min_length=1, max_length=36)
    claim_code: str | None = Field(None, pattern=r"^[A-Za-z0-9-]{4,32}$")

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.template_id is None) == (self.claim_code is None):
            raise ValueError("give exactly one of template_id or claim_code")
        return self


def _unprocessable(field: str, message: str) -> ProblemError:
    return ProblemError(
        Problem(
            type="https://storelink.dev/problems/validation",
            title="Request body is invalid",
            status=422,
            detail=f"{field}: {message}",
            errors=[FieldError(field=field, message=message)],
        )
    )


async def post_template(request: web.Request) -> web.Response:
    """Design a coupon."""
    principal(request).require("coupons.write")
    body = await read_body(request, TemplateIn)
    async with request.app[DB].session() as session, session.begin():
        template = await create_template(session, body, actor=actor(request))
        out = template_json(template)
    return web.json_response(out, status=201)


async def get_templates(request: web.Request) -> web.Response:
    """Every template, newest first (`?active=true`: only those still issued)."""
    principal(request).require("coupons.read")
    active = request.query.get("active", "false").lower() in {"1", "true", "yes"}
    async with request.app[DB].session() as session:
        items = [template_json(t) for t in await list_templates(session, active_only=active)]
    return web.json_response({"items": items})


async def get_one_template(request: web.Request) -> web.Response:
    """A template with its statistics."""
    principal(request).require("coupons.read")
    async with request.app[DB].session() as session:
        template = await get_template(session, request.match_info["template_id"])
        out = template_json(template)
        out["stats"] = (await template_stats(session, template.id)).as_json()
    return web.json_response(out)


async def patch_template(request: web.Request) -> web.Response:
    """Rename, (de)activate, list in or take out of the centre, change limits."""
    principal(request).require("coupons.write")
    body = await read_body(request, TemplateChange)
    async with request.app[DB].session() as session, session.begin():
        out = template_json(await update_template(session, request.match_info["template_id"], body))
    return web.json_response(out)


async def get_stats(request: web.Request) -> web.Response:
    """Issued, claimed, used, revoked, and the revenue of the paid orders that used them."""
    principal(request).require("coupons.read")
    async with request.app[DB].session() as session:
        stats = await template_stats(session, request.match_info["template_id"])
    return web.json_response(stats.as_json())


async def post_issue(request: web.Request) -> web.Response:
    """Issue one coupon to each named member (all or none) or to an audience (over-limit members skipped)."""
    principal(request).require("coupons.write")
    body = await read_body(request, IssueIn)
    template_id = request.match_info["template_id"]
    async with request.app[DB].session() as session, session.begin():
        if body.member_ids is not None:
            ids = []
            for n, member_id in enumerate(body.member_ids):
                try:
                    ids.append((await get_member(session, member_id)).id)
                except NotFound as err:
                    raise _unprocessable(f"member_ids.{n}", str(err)) from None
            template = await get_template(session, template_id)
            source = IssueSource.CAMPAIGN if template.campaign else IssueSource.ISSUE
            coupons = await issue(session, template_id, ids, source=source, actor=actor(request))
        else:
            try:
                coupons = await issue_to_audience(
                    session,
                    template_id,
                    tag=body.tag,
                    segment=body.segment,
                    level=body.level,
                    actor=actor(request),
                )
            except ValueError as err:
                raise _unprocessable(
                    "tag" if body.tag else "segment" if body.segment else "level", str(err)
                ) from None
        out = {"issued": len(coupons), "codes": [c.code for c in coupons[:1000]]}
    return web.json_response(out, status=201)


async def get_centre(request: web.Request) -> web.Response:
    """The coupon centre: what can be claimed (at `?store=`), and by `?member_id=` how many more."""
    principal(request).require("coupons.read")
    member_id = request.query.get("member_id")
    async with request.app[DB].session() as session:
        if member_id:
            member_id = (await get_member(session, member_id)).id
        items = await claimable_templates(session, member_id or None, store=request.query.get("store"))
    return web.json_response({"items": items})


async def post_claim(request: web.Request) -> web.Response:
    """A member claims a coupon (centre or claim code), within the per-member and total limits."""
    principal(request).require("members.write")
    body = await read_body(request, ClaimIn)
    async with request.app[DB].session() as session, session.begin():
        coupon = await claim(
            session, body.member_id, template_id=body.template_id, claim_code=body.claim_code
        )
        out = coupon_json(coupon, await get_template(session, coupon.template_id))
    return web.json_response(out, status=201)


async def get_member_coupons(request: web.Request) -> web.Response:
    """A member's coupons (`?state=issued|used|revoked`), soonest expiry first."""
    principal(request).require("coupons.read")
    raw = request.query.get("state")
    try:
        state = CouponState(raw) if raw else None
    except ValueError:
        raise ProblemError(
            Problem(title="Bad query", status=400, detail="state must be issued, used or revoked")
        ) from None
    async with request.app[DB].session() as session:
        member = await get_member(session, request.match_info["member_id"])
        items = [coupon_json(c, t) for c, t in await member_coupons(session, member.id, state=state)]
    return web.json_response({"member_id": member.id, "items": items})


async def post_revoke(request: web.Request) -> web.Response:
    """Take back an unused coupon."""
    principal(request).require("coupons.write")
    async with request.app[DB].session() as session, session.begin():
        coupon = await revoke(session, request.match_info["code"].upper(), actor=actor(request))
        out = coupon_json(coupon)
    return web.json_response(out)


async def get_gift_pack(request: web.Request) -> web.Response:
    """The welcome or birthday pack."""
    principal(request).require("coupons.read")
    kind = request.match_info["kind"]
    async with request.app[DB].session() as session:
        out: dict[str, Any] = pack_json(kind, await get_pack(session, kind))
    return web.json_response(out)


async def put_gift_pack(request: web.Request) -> web.Response:
    """Set the welcome or birthday pack (the templates it grants and, for birthdays, how early)."""
    principal(request).require("coupons.write")
    kind = request.match_info["kind"]
    body = await read_body(request, PackIn)
    async with request.app[DB].session() as session, session.begin():
        out = pack_json(kind, await set_pack(session, kind, body, actor=actor(request)))
    return web.json_response(out)


def add_routes(app: web.Application) -> None:
    """Register the coupon routes."""
    app.router.add_post("/api/v1/coupon-templates", post_template)
    app.router.add_get("/api/v1/coupon-templates", get_templates)
    app.router.add_get("/api/v1/coupon-templates/{template_id}", get_one_template)
    app.router.add_patch("/api/v1/coupon-templates/{template_id}", patch_template)
    app.router.add_get("/api/v1/coupon-templates/{template_id}/stats", get_stats)
    app.router.add_post("/api/v1/coupon-templates/{template_id}/issue", post_issue)
    app.router.add_get("/api/v1/coupon-centre", get_centre)
    app.router.add_post("/api/v1/coupon-centre/claim", post_claim)
    app.router.add_get("/api/v1/members/{member_id}/coupons", get_member_coupons)
    app.router.add_post("/api/v1/coupons/{code}/revoke", post_revoke)
    app.router.add_get("/api/v1/coupon-packs/{kind}", get_gift_pack)
    app.router.add_put("/api/v1/coupon-packs/{kind}", put_gift_pack)

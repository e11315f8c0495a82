"""Group buys (拼团) in the head-office API.

Offers are authored by marketing and the owner (`group_buy.write`); everyone may read.
A join is made for a member by whoever takes the payment (`group_buy.join`: store staff
at the counter, head office, or the member app's back end signed in as a user), always
with an idempotency key, so a retried request answers with the first outcome (200) instead
of charging again (201 the first time). A refusal writes nothing: 404 unknown offer, group
or member; 409 sold out, full, over, limit reached, balance short; 422 malformed body.
"""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select

from hub.api import DB, actor, bad_query, principal, query_int, read_body
from hub.errors import NotFound
from hub.group_buy import (
    JoinIn,
    OfferIn,
    close_offer,
    create_offer,
    get_offer,
    group_json,
    join,
    offer_json,
    participation_json,
)
from hub.group_buy_tables import Group, GroupBuyOffer, GroupState, Participation

__all__ = ["add_routes"]

_MAX_PAGE = 200


async def post_offer(request: web.Request) -> web.Response:
    """A new offer."""
    principal(request).require("group_buy.write")
    body = await read_body(request, OfferIn)
    async with request.app[DB].session() as session, session.begin():
        offer = await create_offer(session, body, actor=actor(request))
        answer = offer_json(offer)
    return web.json_response(answer, status=201)


async def get_offers(request: web.Request) -> web.Response:
    """Offers, newest first."""
    principal(request).require("group_buy.read")
    limit = query_int(request, "limit", 50, 1, _MAX_PAGE)
    offset = query_int(request, "offset", 0, 0, 10**9)
    async with request.app[DB].session() as session:
        rows = (
            await session.scalars(
                select(GroupBuyOffer)
                .order_by(GroupBuyOffer.created_at.desc(), GroupBuyOffer.id.desc())
                .limit(limit + 1)
                .offset(offset)
            )
        ).all()
    return web.json_response({"items": [offer_json(o) for o in rows[:limit]], "more": len(rows) > limit})


async def get_offer_route(request: web.Request) -> web.Response:
    """An offer and its groups (`state` filters them: open, filled, expired)."""
    principal(request).require("group_buy.read")
    state = request.query.get("state")
    if state is not None and state not in {s.value for s in GroupState}:
        raise bad_query("state must be open, filled or expired")
    limit = query_int(request, "limit", 100, 1, _MAX_PAGE)
    async with request.app[DB].session() as session:
        offer = await get_offer(session, request.match_info["offer_id"])
        query = select(Group).where(Group.offer_id == offer.id).order_by(Group.created_at.desc()).limit(limit)
        if state is not None:
            query = query.where(Group.state == state)
        groups = (await session.scalars(query)).all()
    return web.json_response({**offer_json(offer), "groups": [group_json(g) for g in groups]})


async def get_group(request: web.Request) -> web.Response:
    """A group and its members' places (the share link of a group points here)."""
    principal(request).require("group_buy.read")
    async with request.app[DB].session() as session:
        group = await session.get(Group, request.match_info["group_id"])
        if group is None or group.offer_id != request.match_info["offer_id"]:
            raise NotFound(
                f"no group {request.match_info['group_id']} in offer {request.match_info['offer_id']}"
            )
        places = (
            await session.scalars(
                select(Participation)
                .where(Participation.group_id == group.id)
                .order_by(Participation.created_at)
            )
        ).all()
    return web.json_response({**group_json(group), "places": [participation_json(p) for p in places]})


async def post_close(request: web.Request) -> web.Response:
    """No new groups; open ones still fill or expire."""
    principal(request).require("group_buy.write")
    async with request.app[DB].session() as session, session.begin():
        offer = await close_offer(session, request.match_info["offer_id"], actor=actor(request))
        answer = offer_json(offer)
    return web.json_response(answer)


async def post_join(request: web.Request) -> web.Response:
    """Open or join a group for a member and take the payment."""
    principal(request).require("group_buy.join")
    body = await read_body(request, JoinIn)
    async with request.app[DB].session() as session, session.begin():
        done = await join(session, request.match_info["offer_id"], body, actor=actor(request))
        answer = {"participation": participation_json(done.participation), "group": group_json(done.group)}
    return web.json_response(answer, status=201 if done.created else 200)


def add_routes(app: web.Application) -> None:
    """Register the group-buy routes."""
    app.router.add_post("/api/v1/group-buys", post_offer)
    app.router.add_get("/api/v1/group-buys", get_offers)
    app.router.add_get("/api/v1/group-buys/{offer_id}", get_offer_route)
    app.router.add_post("/api/v1/group-buys/{offer_id}/close", post_close)
    app.router.add_post("/api/v1/group-buys/{offer_id}/join", post_join)
    app.router.add_get("/api/v1/group-buys/{offer_id}/groups/{group_id}", get_group)

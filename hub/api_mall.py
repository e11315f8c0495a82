"""Points mall (积分商城) and lucky wheel (大转盘) in the head-office API.

Items and wheels are authored by marketing and the owner (`mall.write`); everyone may read.
A redemption or a spin is made for a member by whoever serves them (`mall.redeem`: store
staff at the counter, head office, or the member app's back end signed in as a user),
always with an idempotency key: a retry answers with the first outcome (200) instead of
charging again (201 the first time). A refusal writes nothing: 404 unknown item, wheel or
member; 409 sold out, limit reached, points short, spins used up; 422 malformed body.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from hub.api import DB, actor, principal, query_int, read_body
from hub.db import AsyncSession
from hub.errors import NotFound
from hub.lucky_wheel import (
    PrizeChange,
    WheelIn,
    collect_prize,
    create_wheel,
    get_wheel,
    odds_report,
    spin,
    spin_json,
    update_prize,
    wheel_json,
)
from hub.mall_tables import MallRedemption, Spin, Wheel, WheelPrize
from hub.models import Store
from hub.points_mall import (
    ItemChange,
    ItemIn,
    RedeemIn,
    cancel_redemption,
    collect_redemption,
    create_item,
    get_item,
    item_json,
    list_items,
    redeem,
    redemption_json,
    update_item,
)

__all__ = ["add_routes"]

_MAX_PAGE = 500


class SpinIn(BaseModel):
    """A spin for a member."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    member_id: str = Field(min_length=1, max_length=36)
    idempotency_key: str = Field(min_length=8, max_length=80)


class CollectIn(BaseModel):
    """The store where the member picked the item up."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    store: str = Field(min_length=1, max_length=32)


class WheelChange(BaseModel):
    """Start or stop a wheel."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    active: bool


async def _check_store(session: AsyncSession, store: str) -> None:
    if await session.get(Store, store) is None:
        raise NotFound(f"no store {store!r}")


async def post_item(request: web.Request) -> web.Response:
    """A new item."""
    principal(request).require("mall.write")
    body = await read_body(request, ItemIn)
    async with request.app[DB].session() as session, session.begin():
        answer = item_json(await create_item(session, body, actor=actor(request)))
    return web.json_response(answer, status=201)


async def get_items(request: web.Request) -> web.Response:
    """Items, newest first (`active=1`: only those on offer)."""
    principal(request).require("mall.read")
    async with request.app[DB].session() as session:
        items = await list_items(session, active_only=request.query.get("active") in {"1", "true"})
    return web.json_response({"items": [item_json(i) for i in items]})


async def get_item_route(request: web.Request) -> web.Response:
    """One item."""
    principal(request).require("mall.read")
    async with request.app[DB].session() as session:
        answer = item_json(await get_item(session, request.match_info["item_id"]))
    return web.json_response(answer)


async def patch_item(request: web.Request) -> web.Response:
    """Rename, (de)activate, change stock or the per-member limit."""
    principal(request).require("mall.write")
    body = await read_body(request, ItemChange)
    async with request.app[DB].session() as session, session.begin():
        answer = item_json(await update_item(session, request.match_info["item_id"], body))
    return web.json_response(answer)


async def post_redeem(request: web.Request) -> web.Response:
    """Redeem an item for a member."""
    principal(request).require("mall.redeem")
    body = await read_body(request, RedeemIn)
    async with request.app[DB].session() as session, session.begin():
        done = await redeem(session, request.match_info["item_id"], body, actor=actor(request))
        answer = {**redemption_json(done.redemption), "balance": done.balance}
    return web.json_response(answer, status=201 if done.created else 200)


async def get_redemptions(request: web.Request) -> web.Response:
    """Redemptions, newest first; `member=` and `item=` filter them."""
    principal(request).require("mall.read")
    limit = query_int(request, "limit", 100, 1, _MAX_PAGE)
    query = select(MallRedemption).order_by(MallRedemption.created_at.desc()).limit(limit)
    if "member" in request.query:
        query = query.where(MallRedemption.member_id == request.query["member"])
    if "item" in request.query:
        query = query.where(MallRedemption.item_id == request.query["item"])
    async with request.app[DB].session() as session:
        rows = (await session.scalars(query)).all()
    return web.json_response({"items": [redemption_json(r) for r in rows]})


async def post_collect_redemption(request: web.Request) -> web.Response:
    """The member picked the item up at a store (which the caller must have access to)."""
    body = await read_body(request, CollectIn)
    principal(request).require("mall.redeem", store=body.store)
    async with request.app[DB].session() as session, session.begin():
        await _check_store(session, body.store)
        done = await collect_redemption(session, request.match_info["redemption_id"], store=body.store)
        answer = redemption_json(done)
    return web.json_response(answer)


async def post_cancel_redemption(request: web.Request) -> web.Response:
    """Give back a redemption not yet collected: points, cash and stock."""
    principal(request).require("mall.redeem")
    async with request.app[DB].session() as session, session.begin():
        done = await cancel_redemption(session, request.match_info["redemption_id"], actor=actor(request))
        answer = redemption_json(done)
    return web.json_response(answer)


async def post_wheel(request: web.Request) -> web.Response:
    """A new wheel with its prizes."""
    principal(request).require("mall.write")
    body = await read_body(request, WheelIn)
    async with request.app[DB].session() as session, session.begin():
        wheel, prizes = await create_wheel(session, body, actor=actor(request))
        answer = wheel_json(wheel, prizes)
    return web.json_response(answer, status=201)


async def get_wheels(request: web.Request) -> web.Response:
    """Wheels, newest first (without prizes)."""
    principal(request).require("mall.read")
    async with request.app[DB].session() as session:
        rows = (await session.scalars(select(Wheel).order_by(Wheel.created_at.desc()))).all()
    return web.json_response({"items": [wheel_json(w, []) | {"prizes": None} for w in rows]})


async def get_wheel_route(request: web.Request) -> web.Response:
    """A wheel and its prizes with their configured probabilities and stock."""
    principal(request).require("mall.read")
    async with request.app[DB].session() as session:
        wheel, prizes = await get_wheel(session, request.match_info["wheel_id"])
    return web.json_response(wheel_json(wheel, prizes))


async def patch_wheel(request: web.Request) -> web.Response:
    """Start or stop a wheel."""
    principal(request).require("mall.write")
    body = await read_body(request, WheelChange)
    async with request.app[DB].session() as session, session.begin():
        wheel, prizes = await get_wheel(session, request.match_info["wheel_id"])
        wheel.active, wheel.updated_at = body.active, datetime.now(UTC)
        answer = wheel_json(wheel, prizes)
    return web.json_response(answer)


async def patch_prize(request: web.Request) -> web.Response:
    """New weight or stock for a prize."""
    principal(request).require("mall.write")
    body = await read_body(request, PrizeChange)
    wheel_id = request.match_info["wheel_id"]
    async with request.app[DB].session() as session, session.begin():
        await update_prize(session, wheel_id, request.match_info["prize_id"], body)
        wheel, prizes = await get_wheel(session, wheel_id)
        answer = wheel_json(wheel, prizes)
    return web.json_response(answer)


async def post_spin(request: web.Request) -> web.Response:
    """Spin for a member: the prize and the audit row."""
    principal(request).require("mall.redeem")
    body = await read_body(request, SpinIn)
    async with request.app[DB].session() as session, session.begin():
        done = await spin(
            session, request.match_info["wheel_id"], body.member_id, idempotency_key=body.idempotency_key
        )
        answer = spin_json(done.spin, done.prize)
    return web.json_response(answer, status=201 if done.created else 200)


async def get_spins(request: web.Request) -> web.Response:
    """The audit: spins newest first (`member=` filters)."""
    principal(request).require("mall.read")
    limit = query_int(request, "limit", 100, 1, _MAX_PAGE)
    query = (
        select(Spin, WheelPrize)
        .join(WheelPrize, WheelPrize.id == Spin.prize_id)
        .where(Spin.wheel_id == request.match_info["wheel_id"])
        .order_by(Spin.spun_at.desc(), Spin.id.desc())
        .limit(limit)
    )
    if "member" in request.query:
        query = query.where(Spin.member_id == request.query["member"])
    async with request.app[DB].session() as session:
        await get_wheel(session, request.match_info["wheel_id"])
        rows = (await session.execute(query)).all()
    return web.json_response({"items": [spin_json(s, p) for s, p in rows]})


async def post_collect_prize(request: web.Request) -> web.Response:
    """An item prize handed over at a store (which the caller must have access to)."""
    body = await read_body(request, CollectIn)
    principal(request).require("mall.redeem", store=body.store)
    async with request.app[DB].session() as session, session.begin():
        await _check_store(session, body.store)
        done = await collect_prize(
            session, request.match_info["wheel_id"], request.match_info["spin_id"], store=body.store
        )
        answer = spin_json(done)
    return web.json_response(answer)


async def get_odds(request: web.Request) -> web.Response:
    """Observed odds recomputed from the audit, against the configured ones."""
    principal(request).require("mall.read")
    async with request.app[DB].session() as session:
        answer = await odds_report(session, request.match_info["wheel_id"])
    return web.json_response(answer)


def add_routes(app: web.Application) -> None:
    """Register the points-mall and lucky-wheel routes."""
    app.router.add_post("/api/v1/mall/items", post_item)
    app.router.add_get("/api/v1/mall/items", get_items)
    app.router.add_get("/api/v1/mall/items/{item_id}", get_item_route)
    app.router.add_patch("/api/v1/mall/items/{item_id}", patch_item)
    app.router.add_post("/api/v1/mall/items/{item_id}/redeem", post_redeem)
    app.router.add_get("/api/v1/mall/redemptions", get_redemptions)
    app.router.add_post("/api/v1/mall/redemptions/{redemption_id}/collect", post_collect_redemption)
    app.router.add_post("/api/v1/mall/redemptions/{redemption_id}/cancel", post_cancel_redemption)
    app.router.add_post("/api/v1/wheels", post_wheel)
    app.router.add_get("/api/v1/wheels", get_wheels)
    app.router.add_get("/api/v1/wheels/{wheel_id}", get_wheel_route)
    app.router.add_patch("/api/v1/wheels/{wheel_id}", patch_wheel)
    app.router.add_patch("/api/v1/wheels/{wheel_id}/prizes/{prize_id}", patch_prize)
    app.router.add_post("/api/v1/wheels/{wheel_id}/spin", post_spin)
    app.router.add_get("/api/v1/wheels/{wheel_id}/spins", get_spins)
    app.router.add_post("/api/v1/wheels/{wheel_id}/spins/{spin_id}/collect", post_collect_prize)
    app.router.add_get("/api/v1/wheels/{wheel_id}/odds", get_odds)

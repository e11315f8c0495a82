"""Promotions in the head-office API: author (versioned), archive, preview, publish.

Owner and marketing write (`promotions.write`); every role reads and previews
(`promotions.read`). A rule the engine refuses (percent above 100, a threshold not above
0, two exclusive rules of equal priority that can meet on a line) or one naming an
unknown store, level or segment is a 422 with a field path per error, and nothing is
saved.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from hub.api import DB, LINK, ProblemError, actor, principal, read_body
from hub.promotion_tables import PromotionStatus
from hub.promotions import (
    InvalidPromotion,
    create_promotion,
    get_promotion,
    list_promotions,
    list_versions,
    preview,
    promotion_json,
    publish,
    set_status,
    update_promotion,
)
from protocol import Problem
from protocol.promotion_rules import Cart

__all__ = ["add_routes"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PromotionIn(_In):
    """A rule as `protocol.promotion_rules` defines it (without `id`), and why it changed."""

    rule: dict[str, Any]
    note: str = Field("", max_length=500)


class PromotionChange(PromotionIn):
    """The new rule, and the version it was based on (a concurrent change is then a 409)."""

    version: int | None = Field(None, ge=1)


class StatusIn(_In):
    """Why it is archived or reactivated."""

    note: str = Field("", max_length=500)


class PreviewIn(_In):
    """A sample cart, and optionally a rule not saved yet to try on it."""

    cart: Cart
    draft: dict[str, Any] | None = None


class PublishIn(_In):
    """Stores to publish to; none: every store."""

    stores: list[str] = Field(default_factory=list, max_length=10_000)


def _invalid(err: InvalidPromotion, instance: str) -> ProblemError:
    return ProblemError(
        Problem(
            type="https://storelink.dev/problems/validation",
            title="Promotion is invalid",
            status=422,
            detail=str(err),
            instance=instance,
            errors=err.errors,
        )
    )


async def post_promotion(request: web.Request) -> web.Response:
    """Create a promotion (version 1)."""
    principal(request).require("promotions.write")
    body = await read_body(request, PromotionIn)
    try:
        async with request.app[DB].session() as session, session.begin():
            promotion = await create_promotion(session, body.rule, actor=actor(request), note=body.note)
            out = promotion_json(promotion)
    except InvalidPromotion as err:
        raise _invalid(err, request.path) from None
    return web.json_response(out, status=201)


async def get_promotions(request: web.Request) -> web.Response:
    """Promotions, newest first (`?status=active|archived`)."""
    principal(request).require("promotions.read")
    raw = request.query.get("status")
    try:
        status = PromotionStatus(raw) if raw else None
    except ValueError:
        raise ProblemError(
            Problem(title="Bad query", status=400, detail="status is active or archived")
        ) from None
    async with request.app[DB].session() as session:
        items = [promotion_json(p) for p in await list_promotions(session, status=status)]
    return web.json_response({"items": items})


async def get_one(request: web.Request) -> web.Response:
    """A promotion with every version it had."""
    principal(request).require("promotions.read")
    promotion_id = request.match_info["promotion_id"]
    async with request.app[DB].session() as session:
        out = promotion_json(await get_promotion(session, promotion_id))
        out["versions"] = [
            {
                "version": v.version,
                "status": v.status,
                "rule": v.rule,
                "note": v.note,
                "created_by": v.created_by,
                "created_at": v.created_at.isoformat(),
            }
            for v in await list_versions(session, promotion_id)
        ]
    return web.json_response(out)


async def put_promotion(request: web.Request) -> web.Response:
    """Change a promotion: a new version (409 if `version` is no longer the current one)."""
    principal(request).require("promotions.write")
    body = await read_body(request, PromotionChange)
    try:
        async with request.app[DB].session() as session, session.begin():
            promotion = await update_promotion(
                session,
                request.match_info["promotion_id"],
                body.rule,
                expected_version=body.version,
                actor=actor(request),
                note=body.note,
            )
            out = promotion_json(promotion)
    except InvalidPromotion as err:
        raise _invalid(err, request.path) from None
    return web.json_response(out)


async def _status(request: web.Request, status: PromotionStatus) -> web.Response:
    principal(request).require("promotions.write")
    body = await read_body(request, StatusIn) if request.can_read_body else StatusIn()
    try:
        async with request.app[DB].session() as session, session.begin():
            promotion = await set_status(
                session, request.match_info["promotion_id"], status, actor=actor(request), note=body.note
            )
            out = promotion_json(promotion)
    except InvalidPromotion as err:
        raise _invalid(err, request.path) from None
    return web.json_response(out)


async def post_archive(request: web.Request) -> web.Response:
    """Archive: left out of the next publish."""
    return await _status(request, PromotionStatus.ARCHIVED)


async def post_activate(request: web.Request) -> web.Response:
    """Reactivate an archived promotion (checked against the active ones again)."""
    return await _status(request, PromotionStatus.ACTIVE)


async def post_preview(request: web.Request) -> web.Response:
    """Evaluate a sample cart with the store's rule set as the next publish would give it."""
    body = await read_body(request, PreviewIn)
    principal(request).require("promotions.read", store=body.cart.store)
    try:
        async with request.app[DB].session() as session:
            result = await preview(session, body.cart, draft=body.draft)
    except InvalidPromotion as err:
        raise _invalid(err, request.path) from None
    return web.json_response(text=result.model_dump_json())


async def post_publish(request: web.Request) -> web.Response:
    """Publish each store's `promotions` snapshot (retained: an offline store gets it on reconnect)."""
    who = principal(request)
    who.require("promotions.write")
    body = await read_body(request, PublishIn) if request.can_read_body else PublishIn()
    for store in body.stores:
        who.require("promotions.write", store=store)
    done = await publish(request.app[DB], actor=actor(request), stores=body.stores or None)
    link = request.app.get(LINK)
    stores: dict[str, Any] = {}
    for store, snapshot in done.snapshots.items():
        sent = link is not None and await link.publish_snapshot(store, snapshot)
        stores[store] = {"version": snapshot.version, "rules": done.rule_counts[store], "sent": sent}
    return web.json_response({"rule_set_version": done.version, "stores": stores}, status=201)


def add_routes(app: web.Application) -> None:
    """Register the promotion routes."""
    app.router.add_post("/api/v1/promotions", post_promotion)
    app.router.add_get("/api/v1/promotions", get_promotions)
    app.router.add_post("/api/v1/promotions/preview", post_preview)
    app.router.add_post("/api/v1/promotions/publish", post_publish)
    app.router.add_get("/api/v1/promotions/{promotion_id}", get_one)
    app.router.add_put("/api/v1/promotions/{promotion_id}", put_promotion)
    app.router.add_post("/api/v1/promotions/{promotion_id}/archive", post_archive)
    app.router.add_post("/api/v1/promotions/{promotion_id}/activate", post_activate)

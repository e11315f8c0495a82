"""Service plans (疗程/健身计划) in the head-office API, and the staff's list of sessions due.

A plan belongs to a store: creating or cancelling one needs `appointments.write` there,
reading `appointments.read`. The due list is the staff's reminder: active plans whose
next session is due within `?within_days=` (default 3), soonest first, each with its
next booking if the member already has one.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from hub.api import DB, actor, principal, query_int, read_body
from hub.appointments_setup import store_zone
from hub.service_plans import cancel_plan, create_plan, get_plan, member_plans, plan_json, plans_due

__all__ = ["add_routes"]


class PlanIn(BaseModel):
    """N sessions of a service, one every `interval_days`, the first due on `first_due`."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    member_id: str = Field(min_length=1, max_length=64)
    service: str = Field(min_length=1, max_length=32)
    store: str = Field(min_length=1, max_length=32)
    sessions: int = Field(ge=1, le=200)
    interval_days: int = Field(ge=1, le=365)
    first_due: date
    note: str = Field("", max_length=500)


async def post_plan(request: web.Request) -> web.Response:
    """Start a plan for a member."""
    body = await read_body(request, PlanIn)
    principal(request).require("appointments.write", store=body.store)
    async with request.app[DB].session() as session, session.begin():
        plan = await create_plan(
            session,
            body.member_id,
            body.service,
            body.store,
            sessions=body.sessions,
            interval_days=body.interval_days,
            first_due=body.first_due,
            note=body.note,
            actor=actor(request),
        )
        answer = plan_json(plan)
    return web.json_response(answer, status=201)


async def get_member_plans(request: web.Request) -> web.Response:
    """A member's plans at the caller's stores, newest first."""
    who = principal(request)
    who.require("appointments.read")
    async with request.app[DB].session() as session:
        plans = await member_plans(session, request.match_info["member_id"])
    return web.json_response({"items": [plan_json(p) for p in plans if who.can_see(p.store)]})


async def get_one(request: web.Request) -> web.Response:
    """One plan with its progress."""
    async with request.app[DB].session() as session:
        plan = await get_plan(session, request.match_info["plan_id"])
    principal(request).require("appointments.read", store=plan.store)
    return web.json_response(plan_json(plan))


async def post_cancel(request: web.Request) -> web.Response:
    """Stop a plan; the sessions done stay counted."""
    async with request.app[DB].session() as session, session.begin():
        plan = await get_plan(session, request.match_info["plan_id"])
        principal(request).require("appointments.write", store=plan.store)
        answer = plan_json(await cancel_plan(session, plan.id))
    return web.json_response(answer)


async def get_due(request: web.Request) -> web.Response:
    """Plans of the store with a session due within `?within_days=` (0: today or overdue)."""
    store = request.match_info["store"]
    principal(request).require("appointments.read", store=store)
    within = query_int(request, "within_days", 3, 0, 60)
    async with request.app[DB].session() as session:
        today = datetime.now(UTC).astimezone(await store_zone(session, store)).date()
        rows = await plans_due(session, store, today + timedelta(days=within))
    items = [
        plan_json(plan, upcoming) | {"overdue": plan.next_due is not None and plan.next_due < today}
        for plan, upcoming in rows
    ]
    return web.json_response({"store": store, "today": today.isoformat(), "items": items})


def add_routes(app: web.Application) -> None:
    """Register the service plan routes."""
    r = app.router
    r.add_post("/api/v1/service-plans", post_plan)
    r.add_get("/api/v1/service-plans/{plan_id}", get_one)
    r.add_post("/api/v1/service-plans/{plan_id}/cancel", post_cancel)
    r.add_get(r"/api/v1/members/{member_id:[0-9A-Za-z-]{1,64}}/service-plans", get_member_plans)
    r.add_get("/api/v1/stores/{store}/service-plans/due", get_due)

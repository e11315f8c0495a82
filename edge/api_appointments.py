"""Appointment routes of the local API: the day's bookings and check-in at the desk."""

from __future__ import annotations

from datetime import date

from aiohttp import web

from edge.api import APPOINTMENTS, BadRequest, Body, answer, principal, reply_json, staff_command
from protocol import Problem

__all__ = ["add_routes"]


class CheckInIn(Body):
    """`use_pass: false` checks in without taking a punch-card use (the member pays at the till)."""

    use_pass: bool = True


async def day(request: web.Request) -> web.Response:
    """The store's appointments of `?day=` (the store's local day; today when left out)."""
    principal(request).require("order.sell")
    raw = request.query.get("day")
    try:
        wanted = date.fromisoformat(raw) if raw else None
    except ValueError:
        raise BadRequest(
            Problem(title="Bad query", status=400, detail="day must be a date like 2026-11-24")
        ) from None
    return reply_json(await request.app[APPOINTMENTS].day(wanted))


async def check_in(request: web.Request) -> web.Response:
    """Check the member in (Idempotency-Key required): a punch-card use is taken if one covers the service."""
    body, staff, idem = await staff_command(request, CheckInIn, "order.sell", optional=True)
    reply = await request.app[APPOINTMENTS].check_in(
        staff, request.match_info["appointment_id"], use_pass=body.use_pass, idem=idem
    )
    return answer(reply)


def add_routes(app: web.Application) -> None:
    """Register the appointment routes."""
    app.router.add_get("/api/v1/appointments/today", day)
    app.router.add_post(r"/api/v1/appointments/{appointment_id:[0-9A-Za-z-]{1,36}}/check-in", check_in)

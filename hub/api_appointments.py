"""Appointments in the head-office API: services, resources, shifts, classes, bookings, visits.

Services are chain-wide (`appointments.configure`, the owner). Everything else belongs to
a store: reading needs `appointments.read` for it, changing `appointments.write` for it
(store managers for their stores, regional managers for theirs, the owner everywhere).
Times travel as RFC 3339 with an offset; shifts as a local day and local "HH:MM".
Each step is one transaction: a refusal writes nothing. A slot that is taken answers 409
problem+json with `next_free`, the next starts that would work.
"""

from __future__ import annotations

from datetime import date, time
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, model_validator

from hub import api_service_plans
from hub.api import DB, actor, bad_query, principal, read_body
from hub.appointment_tables import ApptClass, ResourceKind
from hub.appointments import SlotTaken, book, book_class, cancel, create_class, get_appointment, reschedule
from hub.appointments_classes import cancel_class
from hub.appointments_setup import (
    ServiceTerms,
    add_resource,
    add_shift,
    in_transaction,
    list_resources,
    list_services,
    list_shifts,
    put_service,
    resource_json,
    service_json,
    shift_json,
)
from hub.appointments_views import appointment_json, availability, class_json, day_appointments, day_classes
from hub.appointments_visits import check_in, mark_no_show, notify
from hub.db import AsyncSession
from hub.errors import NotFound
from protocol import PROBLEM_JSON
from protocol.timeutil import UtcDatetime

__all__ = ["add_routes"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class NeedIn(_In):
    """One thing the service needs; `tag` a skill (staff) or feature (room, machine)."""

    kind: ResourceKind
    tag: str | None = Field(None, pattern=r"^[\w-]{1,32}$")


class ServiceIn(_In):
    """A bookable service."""

    name: str = Field(min_length=1, max_length=64)
    duration_min: int = Field(ge=5, le=1440)
    buffer_min: int = Field(0, ge=0, le=240)
    needs: list[NeedIn] = Field(min_length=1, max_length=5)
    capacity: int = Field(1, ge=1, le=500)
    waitlist: bool = False
    pass_sku: str | None = Field(None, min_length=1, max_length=64)
    price_fen: int = Field(0, ge=0, le=10**9)
    book_cutoff_min: int = Field(0, ge=0, le=7 * 1440)
    change_cutoff_min: int = Field(0, ge=0, le=7 * 1440)


class ResourceIn(_In):
    """A staff member, room or machine."""

    kind: ResourceKind
    name: str = Field(min_length=1, max_length=64)
    tags: list[str] = Field(default_factory=list, max_length=20)


class ShiftIn(_In):
    """A shift on a local day from `start` to `end` local time (an earlier end runs past midnight)."""

    resource_id: str = Field(min_length=1, max_length=36)
    day: date
    start: time
    end: time


class ClassIn(_In):
    """A session of a group class."""

    service: str = Field(min_length=1, max_length=32)
    starts_at: UtcDatetime
    resources: list[str] = Field(default_factory=list, max_length=5)


class BookingIn(_In):
    """A booking: a service at a time (optionally with named resources), or a seat in a class."""

    member_id: str = Field(min_length=1, max_length=64)
    service: str | None = Field(None, min_length=1, max_length=32)
    starts_at: UtcDatetime | None = None
    resources: list[str] = Field(default_factory=list, max_length=5)
    class_id: str | None = Field(None, min_length=1, max_length=36)
    plan_id: str | None = Field(None, min_length=1, max_length=36)
    note: str = Field("", max_length=500)

    @model_validator(mode="after")
    def _one_kind(self) -> BookingIn:
        if self.class_id is None and (self.service is None or self.starts_at is None):
            raise ValueError("give service and starts_at, or class_id for a seat in a class")
        if self.class_id is not None and (self.service or self.starts_at or self.resources or self.plan_id):
            raise ValueError("a class seat takes only member_id and class_id")
        return self


class RescheduleIn(_In):
    """A new start (and, if given, other resources)."""

    starts_at: UtcDatetime
    resources: list[str] = Field(default_factory=list, max_length=5)


class CancelIn(_In):
    """Why; `late` accepts a cancellation inside the cut-off (recorded as late)."""

    reason: str = Field(min_length=1, max_length=500)
    late: bool = False


class CheckInIn(_In):
    """`use_pass: false` checks in without taking a punch-card use."""

    use_pass: bool = True


def _day(request: web.Request) -> date:
    raw = request.query.get("day", "")
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise bad_query("day must be a date like 2026-11-24 (the store's local day)") from None


def _store(request: web.Request, permission: str) -> str:
    store = request.match_info["store"]
    principal(request).require(permission, store=store)
    return store


def _conflict(err: SlotTaken, path: str) -> web.Response:
    body: dict[str, Any] = {
        "type": "https://storelink.dev/problems/slot-taken",
        "title": "Slot taken",
        "status": 409,
        "detail": str(err),
        "instance": path,
        "next_free": err.next_free,
    }
    return web.json_response(body, status=409, content_type=PROBLEM_JSON)


async def put_service_route(request: web.Request) -> web.Response:
    """Create or replace a service (chain-wide)."""
    principal(request).require("appointments.configure")
    body = await read_body(request, ServiceIn)
    terms = ServiceTerms(
        name=body.name,
        duration_min=body.duration_min,
        needs=[n.model_dump(mode="json") for n in body.needs],
        buffer_min=body.buffer_min,
        capacity=body.capacity,
        waitlist=body.waitlist,
        pass_sku=body.pass_sku,
        price_fen=body.price_fen,
        book_cutoff_min=body.book_cutoff_min,
        change_cutoff_min=body.change_cutoff_min,
    )
    async with request.app[DB].session() as session, session.begin():
        row = await put_service(session, request.match_info["code"], terms)
        answer = service_json(row)
    return web.json_response(answer)


async def get_services(request: web.Request) -> web.Response:
    """Every service."""
    principal(request).require("appointments.read")
    async with request.app[DB].session() as session:
        rows = await list_services(session)
    return web.json_response({"items": [service_json(s) for s in rows]})


async def post_resource(request: web.Request) -> web.Response:
    """Add a staff member, room or machine to the store."""
    store = _store(request, "appointments.write")
    body = await read_body(request, ResourceIn)
    async with request.app[DB].session() as session, session.begin():
        row = await add_resource(session, store, body.kind, body.name, body.tags)
        answer = resource_json(row)
    return web.json_response(answer, status=201)


async def get_resources(request: web.Request) -> web.Response:
    """The store's staff, rooms and machines."""
    store = _store(request, "appointments.read")
    async with request.app[DB].session() as session:
        rows = await list_resources(session, store)
    return web.json_response({"items": [resource_json(r) for r in rows]})


async def post_shift(request: web.Request) -> web.Response:
    """Put a staff member on a shift (排班)."""
    store = _store(request, "appointments.write")
    body = await read_body(request, ShiftIn)
    async with request.app[DB].session() as session, session.begin():
        resources = {r.id for r in await list_resources(session, store)}
        if body.resource_id not in resources:
            raise bad_query(f"resource {body.resource_id} is not at store '{store}'")
        row = await add_shift(session, body.resource_id, body.day, body.start, body.end, actor=actor(request))
        answer = shift_json(row)
    return web.json_response(answer, status=201)


async def get_shifts(request: web.Request) -> web.Response:
    """The store's shifts starting on `?day=`."""
    store = _store(request, "appointments.read")
    day = _day(request)
    async with request.app[DB].session() as session:
        rows = await list_shifts(session, store, day)
    return web.json_response({"day": day.isoformat(), "items": [shift_json(s) for s in rows]})


async def get_availability(request: web.Request) -> web.Response:
    """Free starts of `?service=` on `?day=` (optionally `?resource=` one staff member/room)."""
    store = _store(request, "appointments.read")
    day = _day(request)
    service = request.query.get("service") or ""
    if not service:
        raise bad_query("service is required")
    wanted = request.query.getall("resource", [])
    async with request.app[DB].session() as session:
        slots = await availability(session, store, service, day, resources=wanted)
    return web.json_response({"store": store, "service": service, "day": day.isoformat(), "slots": slots})


async def post_class(request: web.Request) -> web.Response:
    """Schedule a group class session."""
    store = _store(request, "appointments.write")
    body = await read_body(request, ClassIn)

    async def work(session: AsyncSession) -> dict[str, Any]:
        row = await create_class(
            session, store, body.service, body.starts_at, resources=body.resources, actor=actor(request)
        )
        return class_json(row, 0)

    try:
        answer = await in_transaction(request.app[DB], work)
    except SlotTaken as err:
        return _conflict(err, request.path)
    return web.json_response(answer, status=201)


class ClassCancelIn(_In):
    """Why the whole session is off (told to every member booked)."""

    reason: str = Field(min_length=1, max_length=500)


async def post_class_cancel(request: web.Request) -> web.Response:
    """Cancel a class session: every seat and waitlist place is cancelled and told by SMS."""
    body = await read_body(request, ClassCancelIn)

    async def work(session: AsyncSession) -> dict[str, Any]:
        row = await session.get(ApptClass, request.match_info["class_id"])
        if row is None:
            raise NotFound(f"no class {request.match_info['class_id']}")
        principal(request).require("appointments.write", store=row.store)
        cls, seats = await cancel_class(session, row.id, reason=body.reason)
        for appt in seats:
            await notify(session, appt, "appointment.class_cancelled", "class_cancelled")
        return class_json(cls, 0) | {"cancelled_appointments": [a.id for a in seats]}

    return web.json_response(await in_transaction(request.app[DB], work))


async def get_classes(request: web.Request) -> web.Response:
    """The store's class sessions on `?day=`, with seats taken."""
    store = _store(request, "appointments.read")
    day = _day(request)
    async with request.app[DB].session() as session:
        rows = await day_classes(session, store, day)
    return web.json_response(
        {"store": store, "day": day.isoformat(), "items": [class_json(c, n) for c, n in rows]}
    )


async def post_booking(request: web.Request) -> web.Response:
    """Book a member (one-to-one, or a seat in a class); 409 with `next_free` when the slot is taken."""
    store = _store(request, "appointments.write")
    body = await read_body(request, BookingIn)

    async def work(session: AsyncSession) -> dict[str, Any]:
        if body.class_id is not None:
            appt = await book_class(session, body.class_id, body.member_id, actor=actor(request))
            if appt.store != store:
                raise bad_query(f"class {body.class_id} is at store '{appt.store}'")
        else:
            assert body.service is not None  # noqa: S101 - checked by the model
            assert body.starts_at is not None  # noqa: S101
            appt = await book(
                session,
                store,
                body.service,
                body.member_id,
                body.starts_at,
                resources=body.resources,
                plan_id=body.plan_id,
                note=body.note,
                actor=actor(request),
            )
        await notify(session, appt, f"appointment.{appt.status}", appt.status)
        return appointment_json(appt)

    try:
        answer = await in_transaction(request.app[DB], work)
    except SlotTaken as err:
        return _conflict(err, request.path)
    return web.json_response(answer, status=201)


async def get_bookings(request: web.Request) -> web.Response:
    """The store's appointments on `?day=` (`?all=true` includes cancelled ones)."""
    store = _store(request, "appointments.read")
    day = _day(request)
    everything = request.query.get("all", "false") == "true"
    async with request.app[DB].session() as session:
        rows = await day_appointments(session, store, day, include_cancelled=everything)
    return web.json_response(
        {"store": store, "day": day.isoformat(), "items": [appointment_json(a) for a in rows]}
    )


async def _for_appointment(request: web.Request, permission: str, session: AsyncSession) -> str:
    appt = await get_appointment(session, request.match_info["appointment_id"])
    principal(request).require(permission, store=appt.store)
    return appt.id


async def get_booking(request: web.Request) -> web.Response:
    """One appointment."""
    async with request.app[DB].session() as session:
        appointment_id = await _for_appointment(request, "appointments.read", session)
        answer = appointment_json(await get_appointment(session, appointment_id))
    return web.json_response(answer)


async def post_reschedule(request: web.Request) -> web.Response:
    """Move a booking; 409 with `next_free` when the new slot is taken (the booking stays as it was)."""
    body = await read_body(request, RescheduleIn)

    async def work(session: AsyncSession) -> dict[str, Any]:
        appointment_id = await _for_appointment(request, "appointments.write", session)
        appt = await reschedule(
            session, appointment_id, body.starts_at, resources=body.resources, actor=actor(request)
        )
        await notify(session, appt, "appointment.rescheduled", f"moved:{appt.version}")
        return appointment_json(appt)

    try:
        answer = await in_transaction(request.app[DB], work)
    except SlotTaken as err:
        return _conflict(err, request.path)
    return web.json_response(answer)


async def post_cancel(request: web.Request) -> web.Response:
    """Cancel; a freed class seat goes to the first on the waitlist (who is told by SMS)."""
    body = await read_body(request, CancelIn)

    async def work(session: AsyncSession) -> dict[str, Any]:
        appointment_id = await _for_appointment(request, "appointments.write", session)
        appt, promoted = await cancel(
            session, appointment_id, reason=body.reason, late=body.late, actor=actor(request)
        )
        if promoted is not None:
            await notify(session, promoted, "appointment.promoted", "promoted")
        return appointment_json(appt) | {"promoted": promoted.id if promoted is not None else None}

    return web.json_response(await in_transaction(request.app[DB], work))


async def post_check_in(request: web.Request) -> web.Response:
    """Check the member in, taking a punch-card use if one covers the service."""
    body = await read_body(request, CheckInIn) if request.can_read_body else CheckInIn()

    async def work(session: AsyncSession) -> dict[str, Any]:
        appointment_id = await _for_appointment(request, "appointments.write", session)
        return await check_in(session, appointment_id, use_pass=body.use_pass, actor=actor(request))

    return web.json_response(await in_transaction(request.app[DB], work))


async def post_no_show(request: web.Request) -> web.Response:
    """Mark a booking as a no-show (after its start)."""

    async def work(session: AsyncSession) -> dict[str, Any]:
        appointment_id = await _for_appointment(request, "appointments.write", session)
        return appointment_json(await mark_no_show(session, appointment_id, actor=actor(request)))

    return web.json_response(await in_transaction(request.app[DB], work))


def add_routes(app: web.Application) -> None:
    """Register the appointment routes."""
    r = app.router
    r.add_get("/api/v1/appointment-services", get_services)
    r.add_put(r"/api/v1/appointment-services/{code:[A-Za-z0-9_-]{1,32}}", put_service_route)
    r.add_get("/api/v1/stores/{store}/appointment-resources", get_resources)
    r.add_post("/api/v1/stores/{store}/appointment-resources", post_resource)
    r.add_get("/api/v1/stores/{store}/shifts", get_shifts)
    r.add_post("/api/v1/stores/{store}/shifts", post_shift)
    r.add_get("/api/v1/stores/{store}/availability", get_availability)
    r.add_get("/api/v1/stores/{store}/classes", get_classes)
    r.add_post("/api/v1/stores/{store}/classes", post_class)
    r.add_post("/api/v1/classes/{class_id}/cancel", post_class_cancel)
    r.add_get("/api/v1/stores/{store}/appointments", get_bookings)
    r.add_post("/api/v1/stores/{store}/appointments", post_booking)
    r.add_get("/api/v1/appointments/{appointment_id}", get_booking)
    r.add_post("/api/v1/appointments/{appointment_id}/reschedule", post_reschedule)
    r.add_post("/api/v1/appointments/{appointment_id}/cancel", post_cancel)
    r.add_post("/api/v1/appointments/{appointment_id}/check-in", post_check_in)
    r.add_post("/api/v1/appointments/{appointment_id}/no-show", post_no_show)
    api_service_plans.add_routes(app)

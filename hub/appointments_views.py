"""Reading the schedule: free starts of a day, a store's appointments and classes, their JSON."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import select

from hub.appointment_tables import Appointment, ApptClass, ApptStatus
from hub.appointments import SLOT_STEP, load_board, resource_needs, seats_taken
from hub.appointments_setup import get_service, local_day_bounds, store_zone
from hub.db import AsyncSession
from protocol.timeutil import format_utc

__all__ = ["appointment_json", "availability", "class_json", "day_appointments", "day_classes"]


async def availability(
    session: AsyncSession,
    store: str,
    service_code: str,
    day: date,
    *,
    resources: list[str] | None = None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Every start on the local `day` (15-minute grid) the service can be booked at, with resources."""
    now = now or datetime.now(UTC)
    service = await get_service(session, service_code)
    zone = await store_zone(session, store)
    since, until = local_day_bounds(day, zone)
    needs = await resource_needs(session, store, service, resources or [])
    span = timedelta(minutes=service.duration_min + service.buffer_min)
    board = await load_board(session, service, needs, since - span, until + span)
    earliest = max(since, now + timedelta(minutes=service.book_cutoff_min, seconds=1))
    return [
        {"starts_at": format_utc(t), "local": t.astimezone(zone).strftime("%H:%M"), "resources": rids}
        for t, rids in board.free_starts(earliest, until, step=SLOT_STEP, count=200)
    ]


async def day_appointments(
    session: AsyncSession, store: str, day: date, *, include_cancelled: bool = False
) -> list[Appointment]:
    """The store's appointments starting on the local `day`, by start."""
    since, until = local_day_bounds(day, await store_zone(session, store))
    query = select(Appointment).where(
        Appointment.store == store, Appointment.starts_at >= since, Appointment.starts_at < until
    )
    if not include_cancelled:
        query = query.where(Appointment.status != ApptStatus.CANCELLED.value)
    rows = await session.scalars(query.order_by(Appointment.starts_at, Appointment.id))
    return list(rows.all())


async def day_classes(session: AsyncSession, store: str, day: date) -> list[tuple[ApptClass, int]]:
    """The store's class sessions starting on the local `day`, each with its seats taken."""
    since, until = local_day_bounds(day, await store_zone(session, store))
    rows = await session.scalars(
        select(ApptClass)
        .where(ApptClass.store == store, ApptClass.starts_at >= since, ApptClass.starts_at < until)
        .order_by(ApptClass.starts_at, ApptClass.id)
    )
    return [(row, await seats_taken(session, row.id)) for row in rows.all()]


def appointment_json(a: Appointment) -> dict[str, Any]:
    """An appointment as the API and the till show it."""
    return {
        "id": a.id,
        "store": a.store,
        "service": a.service_code,
        "member_id": a.member_id,
        "class_id": a.class_id,
        "plan_id": a.plan_id,
        "starts_at": format_utc(a.starts_at),
        "ends_at": format_utc(a.ends_at),
        "status": a.status,
        "resources": a.resources,
        "note": a.note,
        "late_cancel": a.late_cancel,
        "cancel_reason": a.cancel_reason,
        "checked_in_at": format_utc(a.checked_in_at) if a.checked_in_at else None,
        "pass_txn_id": a.pass_txn_id,
    }


def class_json(c: ApptClass, taken: int | None = None) -> dict[str, Any]:
    """A class session as the API shows it."""
    return {
        "id": c.id,
        "store": c.store,
        "service": c.service_code,
        "starts_at": format_utc(c.starts_at),
        "ends_at": format_utc(c.ends_at),
        "capacity": c.capacity,
        "taken": taken,
        "resources": c.resources,
        "cancelled": c.cancelled,
    }

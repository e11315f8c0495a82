"""Booking, rescheduling and cancelling appointments (智能预约) without ever double-booking.

How a booking stays conflict-free on SQLite and PostgreSQL alike: in ONE transaction it
(1) locks every candidate resource row with `UPDATE appt_resources SET lock_version = ...`,
one row at a time in id order, (2) reads the holds and shifts of those resources, (3)
picks free ones and inserts their holds. A second booking of any of the same resources
waits at step 1 until the first commits, then reads its holds at step 2 (PostgreSQL's READ
COMMITTED gives each statement a fresh snapshot; on SQLite the UPDATE takes the database's
write lock before anything is read). The fixed order means two bookings never wait on
each other in a cycle. See docs/appointments.md for why not an exclusion constraint.

A group class (团课) holds its resources once, as a class session; its seats are counted
under a lock on the class row, and a cancelled seat promotes the first on the waitlist.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update

from hub.appointment_tables import (
    Appointment,
    ApptClass,
    ApptHold,
    ApptResource,
    ApptService,
    ApptShift,
    ApptStatus,
    PlanStatus,
    ResourceKind,
    ServicePlan,
)
from hub.appointments_setup import AppointmentError, get_service, store_zone
from hub.appointments_slots import Board, Need
from hub.db import AsyncSession
from hub.errors import NotFound
from hub.members import get_member
from protocol.ids import new_id
from protocol.timeutil import format_utc, to_utc

__all__ = [
    "ClassFull",
    "SlotTaken",
    "book",
    "book_class",
    "cancel",
    "create_class",
    "get_appointment",
    "load_board",
    "lock_class",
    "reschedule",
    "resource_needs",
    "seats_taken",
]

SUGGEST_COUNT = 3
SUGGEST_DAYS = 7
SLOT_STEP = timedelta(minutes=15)
_SEATED = (ApptStatus.BOOKED.value, ApptStatus.CHECKED_IN.value)


class SlotTaken(AppointmentError):
    """The resources are not free at that time; `next_free` lists starts that are."""

    def __init__(self, message: str, next_free: list[dict[str, Any]]):
        super().__init__(message)
        self.next_free = next_free


class ClassFull(AppointmentError):
    """Every seat of the class is taken and it has no waitlist."""


def _now() -> datetime:
    return datetime.now(UTC)


def _label(need: dict[str, Any]) -> str:
    tag = need.get("tag")
    if need["kind"] == ResourceKind.STAFF:
        return f"staff member with skill '{tag}'" if tag else "staff member"
    return f"{need['kind']} with '{tag}'" if tag else str(need["kind"])


async def resource_needs(
    session: AsyncSession, store: str, service: ApptService, wanted: list[str]
) -> list[Need]:
    """The candidates of each need at the store; a resource asked for by id fills its need alone."""
    rows = list(
        (
            await session.scalars(
                select(ApptResource)
                .where(ApptResource.store == store, ApptResource.active.is_(True))
                .order_by(ApptResource.id)
            )
        ).all()
    )
    known = {r.id for r in rows}
    for rid in wanted:
        if rid not in known:
            raise NotFound(f"no active resource {rid} at store '{store}'")
    used: set[str] = set()
    needs = []
    for need in service.needs:
        fits = [
            r.id for r in rows if r.kind == need["kind"] and (need["tag"] is None or need["tag"] in r.tags)
        ]
        chosen = [rid for rid in fits if rid in wanted and rid not in used]
        if chosen:
            fits = chosen[:1]
            used.add(chosen[0])
        if not fits:
            raise AppointmentError(f"store '{store}' has no {_label(need)} for {service.name}")
        needs.append(Need(_label(need), tuple(fits)))
    stray = [rid for rid in wanted if rid not in used]
    if stray:
        raise AppointmentError(f"resource {stray[0]} does not fit what {service.name} needs")
    # Fill the most constrained need first, so "any staff" does not take the only specialist.
    return sorted(needs, key=lambda n: len(n.candidates))


async def _lock(session: AsyncSession, resource_ids: list[str]) -> None:
    """Lock the resource rows one by one in id order (see the module docstring)."""
    for rid in sorted(set(resource_ids)):
        await session.execute(
            update(ApptResource)
            .where(ApptResource.id == rid)
            .values(lock_version=ApptResource.lock_version + 1)
            .execution_options(synchronize_session=False)
        )


async def load_board(
    session: AsyncSession,
    service: ApptService,
    needs: list[Need],
    since: datetime,
    until: datetime,
    *,
    ignore: str | None = None,
) -> Board:
    """Holds and shifts of the needs' candidates that touch [since, until)."""
    ids = sorted({r for n in needs for r in n.candidates})
    staff = set(
        (
            await session.scalars(
                select(ApptResource.id).where(
                    ApptResource.id.in_(ids), ApptResource.kind == ResourceKind.STAFF.value
                )
            )
        ).all()
    )
    board = Board(
        timedelta(minutes=service.duration_min), timedelta(minutes=service.buffer_min), needs, staff
    )
    holds = select(ApptHold).where(
        ApptHold.resource_id.in_(ids), ApptHold.starts_at < until, ApptHold.ends_at > since
    )
    if ignore is not None:
        holds = holds.where((ApptHold.appointment_id.is_(None)) | (ApptHold.appointment_id != ignore))
    for hold in (await session.scalars(holds)).all():
        board.add_hold(hold.resource_id, (hold.starts_at, hold.ends_at))
    shifts = select(ApptShift).where(
        ApptShift.resource_id.in_(ids), ApptShift.starts_at < until, ApptShift.ends_at > since
    )
    for shift in (await session.scalars(shifts)).all():
        board.add_shift(shift.resource_id, (shift.starts_at, shift.ends_at))
    return board


async def _place(
    session: AsyncSession,
    store: str,
    service: ApptService,
    starts_at: datetime,
    wanted: list[str],
    *,
    ignore: str | None = None,
) -> list[str]:
    """Lock the candidates, pick free ones at `starts_at`, or raise `SlotTaken` listing next free starts."""
    needs = await resource_needs(session, store, service, wanted)
    candidates = sorted({r for n in needs for r in n.candidates})
    await _lock(session, candidates)
    span = timedelta(minutes=service.duration_min + service.buffer_min)
    board = await load_board(session, service, needs, starts_at - span, starts_at + span, ignore=ignore)
    picked = board.assign(starts_at)
    if picked is not None:
        return picked
    why = board.missing(starts_at)
    until = starts_at + timedelta(days=SUGGEST_DAYS)
    wide = await load_board(session, service, needs, starts_at - span, until + span, ignore=ignore)
    zone = await store_zone(session, store)
    free: list[dict[str, Any]] = [
        {
            "starts_at": format_utc(t),
            "local": t.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
            "resources": rids,
        }
        for t, rids in wide.free_starts(starts_at, until, step=SLOT_STEP, count=SUGGEST_COUNT)
    ]
    local = starts_at.astimezone(zone).strftime("%Y-%m-%d %H:%M")
    nexts = ", ".join(f["local"] for f in free) or f"none in the next {SUGGEST_DAYS} days"
    raise SlotTaken(f"{service.name} at {local}: no {why} is free then; next free: {nexts}", free)


def _hold_rows(resources: list[str], start: datetime, end: datetime, **owner: str) -> list[ApptHold]:
    return [ApptHold(resource_id=rid, starts_at=start, ends_at=end, **owner) for rid in resources]


def _check_start(service: ApptService, starts_at: datetime, now: datetime) -> datetime:
    starts_at = to_utc(starts_at)
    if starts_at <= now + timedelta(minutes=service.book_cutoff_min):
        ahead = f" at least {service.book_cutoff_min} minutes ahead" if service.book_cutoff_min else ""
        raise AppointmentError(f"{service.name} must be booked{ahead} for a time still to come")
    if starts_at.second or starts_at.microsecond:
        raise AppointmentError("an appointment starts on a whole minute")
    return starts_at


async def _check_plan(session: AsyncSession, plan_id: str, member_id: str, service_code: str) -> None:
    plan = await session.get(ServicePlan, plan_id)
    if plan is None:
        raise NotFound(f"no service plan {plan_id}")
    if plan.member_id != member_id or plan.service_code != service_code:
        raise AppointmentError(f"service plan {plan_id} is for another member or service")
    if plan.status != PlanStatus.ACTIVE:
        raise AppointmentError(f"service plan {plan_id} is {plan.status}")


async def book(
    session: AsyncSession,
    store: str,
    service_code: str,
    member_id: str,
    starts_at: datetime,
    *,
    resources: list[str] | None = None,
    plan_id: str | None = None,
    note: str = "",
    actor: str,
    now: datetime | None = None,
) -> Appointment:
    """Book a member into a one-to-one service; `resources` names staff/room/machine, else any free one."""
    now = now or _now()
    service = await get_service(session, service_code)
    if not service.active:
        raise AppointmentError(f"service {service.code} is no longer offered")
    if service.capacity > 1:
        raise AppointmentError(f"{service.name} is a group class: book a seat in one of its sessions")
    member = await get_member(session, member_id)
    starts_at = _check_start(service, starts_at, now)
    if plan_id is not None:
        await _check_plan(session, plan_id, member.id, service.code)
    picked = await _place(session, store, service, starts_at, resources or [])
    ends_at = starts_at + timedelta(minutes=service.duration_min)
    appt = Appointment(
        id=str(new_id()),
        store=store,
        service_code=service.code,
        member_id=member.id,
        plan_id=plan_id,
        starts_at=starts_at,
        ends_at=ends_at,
        status=ApptStatus.BOOKED.value,
        resources=picked,
        note=note[:500],
        late_cancel=False,
        version=1,
        created_by=actor,
        created_at=now,
        updated_at=now,
    )
    session.add(appt)
    await session.flush()
    block_end = ends_at + timedelta(minutes=service.buffer_min)
    session.add_all(_hold_rows(picked, starts_at, block_end, appointment_id=appt.id))
    await session.flush()
    return appt


async def create_class(
    session: AsyncSession,
    store: str,
    service_code: str,
    starts_at: datetime,
    *,
    resources: list[str] | None = None,
    actor: str,
    now: datetime | None = None,
) -> ApptClass:
    """Schedule a session of a group class; its coach and room are held like any booking."""
    now = now or _now()
    service = await get_service(session, service_code)
    if service.capacity == 1:
        raise AppointmentError(f"{service.name} is one-to-one: book it directly")
    starts_at = to_utc(starts_at)
    if starts_at <= now:
        raise AppointmentError("a class is scheduled for a time still to come")
    picked = await _place(session, store, service, starts_at, resources or [])
    ends_at = starts_at + timedelta(minutes=service.duration_min)
    row = ApptClass(
        id=str(new_id()),
        store=store,
        service_code=service.code,
        starts_at=starts_at,
        ends_at=ends_at,
        capacity=service.capacity,
        resources=picked,
        cancelled=False,
        version=0,
        created_by=actor,
        created_at=now,
    )
    session.add(row)
    await session.flush()
    block_end = ends_at + timedelta(minutes=service.buffer_min)
    session.add_all(_hold_rows(picked, starts_at, block_end, class_id=row.id))
    await session.flush()
    return row


async def lock_class(session: AsyncSession, class_id: str) -> ApptClass:
    """Lock the class row (seat counts change only under it) and return it, or `NotFound`."""
    locked = await session.execute(
        update(ApptClass)
        .where(ApptClass.id == class_id)
        .values(version=ApptClass.version + 1)
        .execution_options(synchronize_session=False)
    )
    if locked.rowcount != 1:  # type: ignore[attr-defined]
        raise NotFound(f"no class {class_id}")
    row = await session.get(ApptClass, class_id, populate_existing=True)
    assert row is not None  # noqa: S101 - just updated
    return row


async def seats_taken(session: AsyncSession, class_id: str) -> int:
    """Seats of the class booked or checked in."""
    return int(
        await session.scalar(
            select(func.count())
            .select_from(Appointment)
            .where(Appointment.class_id == class_id, Appointment.status.in_(_SEATED))
        )
        or 0
    )


async def book_class(
    session: AsyncSession, class_id: str, member_id: str, *, actor: str, now: datetime | None = None
) -> Appointment:
    """A seat in a class session; when it is full, a place on its waitlist (if it has one) or `ClassFull`."""
    now = now or _now()
    session_row = await lock_class(session, class_id)
    service = await get_service(session, session_row.service_code)
    if session_row.cancelled:
        raise AppointmentError(f"class {class_id} was cancelled")
    _check_start(service, session_row.starts_at, now)
    member = await get_member(session, member_id)
    already = await session.scalar(
        select(Appointment.id).where(
            Appointment.class_id == class_id,
            Appointment.member_id == member.id,
            Appointment.status.in_([*_SEATED, ApptStatus.WAITLISTED.value]),
        )
    )
    if already is not None:
        raise AppointmentError(f"member {member.id} is already booked into this class ({already})")
    taken = await seats_taken(session, class_id)
    if taken < session_row.capacity:
        status = ApptStatus.BOOKED
    elif service.waitlist:
        status = ApptStatus.WAITLISTED
    else:
        raise ClassFull(f"{service.name} is full ({taken}/{session_row.capacity}) and has no waitlist")
    appt = Appointment(
        id=str(new_id()),
        store=session_row.store,
        service_code=service.code,
        member_id=member.id,
        class_id=class_id,
        starts_at=session_row.starts_at,
        ends_at=session_row.ends_at,
        status=status.value,
        resources=list(session_row.resources),
        note="",
        late_cancel=False,
        version=1,
        created_by=actor,
        created_at=now,
        updated_at=now,
    )
    session.add(appt)
    await session.flush()
    return appt


async def get_appointment(session: AsyncSession, appointment_id: str) -> Appointment:
    """The appointment, freshly read, or `NotFound`."""
    appt = await session.get(Appointment, appointment_id, populate_existing=True)
    if appt is None:
        raise NotFound(f"no appointment {appointment_id}")
    return appt


async def _move(
    session: AsyncSession, appt: Appointment, allowed: tuple[ApptStatus, ...], verb: str, **values: Any
) -> Appointment:
    """Conditional UPDATE on status and version: of two racing steps exactly one wins."""
    moved = await session.execute(
        update(Appointment)
        .where(
            Appointment.id == appt.id,
            Appointment.version == appt.version,
            Appointment.status.in_([s.value for s in allowed]),
        )
        .values(version=Appointment.version + 1, **values)
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        fresh = await get_appointment(session, appt.id)
        raise AppointmentError(f"appointment {appt.id} is {fresh.status}; it cannot be {verb} now")
    return await get_appointment(session, appt.id)


def _is_late(service: ApptService, appt: Appointment, now: datetime) -> bool:
    """True if the change is late (inside the service's cut-off before the start)."""
    return now > appt.starts_at - timedelta(minutes=service.change_cutoff_min)


async def reschedule(
    session: AsyncSession,
    appointment_id: str,
    starts_at: datetime,
    *,
    resources: list[str] | None = None,
    actor: str,
    now: datetime | None = None,
) -> Appointment:
    """Move a one-to-one booking to another time (and, if given, other resources)."""
    now = now or _now()
    appt = await get_appointment(session, appointment_id)
    if appt.class_id is not None:
        raise AppointmentError("a class seat is not moved: cancel it and book another session")
    service = await get_service(session, appt.service_code)
    if appt.status == ApptStatus.BOOKED and _is_late(service, appt, now):
        raise AppointmentError(
            f"changes close {service.change_cutoff_min} minutes before the start; "
            "cancel (late) or keep the booking"
        )
    starts_at = _check_start(service, starts_at, now)
    appt = await _move(session, appt, (ApptStatus.BOOKED,), "rescheduled", updated_at=now)
    picked = await _place(session, appt.store, service, starts_at, resources or [], ignore=appt.id)
    ends_at = starts_at + timedelta(minutes=service.duration_min)
    await session.execute(delete(ApptHold).where(ApptHold.appointment_id == appt.id))
    appt.starts_at, appt.ends_at, appt.resources = starts_at, ends_at, picked
    block_end = ends_at + timedelta(minutes=service.buffer_min)
    session.add_all(_hold_rows(picked, starts_at, block_end, appointment_id=appt.id))
    await session.flush()
    return appt


async def cancel(
    session: AsyncSession,
    appointment_id: str,
    *,
    reason: str,
    late: bool = False,
    actor: str,
    now: datetime | None = None,
) -> tuple[Appointment, Appointment | None]:
    """Cancel; inside the cut-off only with `late` (recorded as a late cancellation).

    Frees the resources (or the class seat, promoting the first on the waitlist, who is
    returned as the second value).
    """
    now = now or _now()
    if not reason.strip():
        raise AppointmentError("cancelling needs a reason")
    appt = await get_appointment(session, appointment_id)
    service = await get_service(session, appt.service_code)
    if appt.class_id is not None:
        await lock_class(session, appt.class_id)  # seat counts change under the class lock only
    is_late = appt.status == ApptStatus.BOOKED and _is_late(service, appt, now)
    if is_late and not late:
        raise AppointmentError(
            f"cancellations close {service.change_cutoff_min} minutes before the start; "
            "send late=true to record a late cancellation"
        )
    was_seated = appt.status == ApptStatus.BOOKED
    appt = await _move(
        session,
        appt,
        (ApptStatus.BOOKED, ApptStatus.WAITLISTED),
        "cancelled",
        status=ApptStatus.CANCELLED.value,
        cancel_reason=reason.strip()[:500],
        late_cancel=is_late,
        updated_at=now,
    )
    await session.execute(delete(ApptHold).where(ApptHold.appointment_id == appt.id))
    promoted = None
    if appt.class_id is not None and was_seated and appt.starts_at > now:
        promoted = await _promote(session, appt.class_id, now)
    await session.flush()
    return appt, promoted


async def _promote(session: AsyncSession, class_id: str, now: datetime) -> Appointment | None:
    """Give a free seat to the first on the waitlist (the class is locked by the caller)."""
    capacity = await session.scalar(select(ApptClass.capacity).where(ApptClass.id == class_id))
    if capacity is None or await seats_taken(session, class_id) >= capacity:
        return None
    first = await session.scalar(
        select(Appointment)
        .where(Appointment.class_id == class_id, Appointment.status == ApptStatus.WAITLISTED.value)
        .order_by(Appointment.created_at, Appointment.id)
        .limit(1)
    )
    if first is None:
        return None
    return await _move(
        session, first, (ApptStatus.WAITLISTED,), "promoted", status=ApptStatus.BOOKED.value, updated_at=now
    )

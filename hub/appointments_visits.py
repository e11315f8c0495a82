"""The visit: check-in at the store (taking a punch-card use if the member has one), no-shows,
reminders, and the sweep that does the time-driven parts.

Check-in is one transaction: the appointment moves booked → checked_in by a conditional
UPDATE (a second check-in, from the till or head office, is refused and changes nothing),
then a use of a pass covering the service's SKU is taken (`hub.passes_consume.consume`)
and the member's service plan counts the session. No pass is not an error: the answer
says how much is left to pay at the till.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from hub.appointment_tables import Appointment, ApptService, ApptStatus, PlanStatus, ServicePlan
from hub.appointments import get_appointment
from hub.appointments_setup import AppointmentError, get_service, store_zone
from hub.appointments_views import appointment_json
from hub.db import AsyncSession, Database
from hub.messaging import Category, enqueue_message
from hub.passes import PassError
from hub.passes_consume import consume
from hub.service_plans import record_session

__all__ = [
    "CHECKIN_EARLY",
    "NO_SHOW_GRACE",
    "REMINDER_LEAD",
    "SweepResult",
    "appointments_tick",
    "check_in",
    "mark_no_show",
    "notify",
    "sweep",
]

log = logging.getLogger(__name__)
CHECKIN_EARLY = timedelta(hours=2)  # how long before the start a member may check in
NO_SHOW_GRACE = timedelta(minutes=30)  # after the end, an unchecked booking becomes a no-show
REMINDER_LEAD = timedelta(hours=24)
PLAN_REMINDER_DAYS = 2  # a member is reminded this many days before a plan session is due
_SWEEP_BATCH = 500  # reminders queued per sweep; the next sweep takes the rest


async def notify(session: AsyncSession, appt: Appointment, template: str, key: str) -> bool:
    """Queue a transactional SMS about `appt` to its member, once per `key`; True if newly queued."""
    service = await session.get(ApptService, appt.service_code)
    zone = await store_zone(session, appt.store)
    queued = await enqueue_message(
        session,
        member_id=appt.member_id,
        channel="sms",
        template=template,
        params={
            "service": service.name if service else appt.service_code,
            "store": appt.store,
            "starts_local": appt.starts_at.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
            "appointment_id": appt.id,
        },
        dedupe_key=f"appointment:{appt.id}:{key}",
        category=Category.TRANSACTIONAL,
    )
    return queued.created


async def check_in(
    session: AsyncSession,
    appointment_id: str,
    *,
    store: str | None = None,
    use_pass: bool = True,
    actor: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Check the member in; with `store` (a till), only an appointment of that store.

    Returns the appointment, the pass use taken (or why none was), the plan's progress,
    and `to_pay_fen` (0 when a pass covered it).
    """
    now = now or datetime.now(UTC)
    appt = await get_appointment(session, appointment_id)
    if store is not None and appt.store != store:
        raise AppointmentError(f"appointment {appt.id} is at store '{appt.store}', not here")
    if now < appt.starts_at - CHECKIN_EARLY:
        raise AppointmentError(
            f"check-in opens {int(CHECKIN_EARLY.total_seconds() // 60)} minutes before the start"
        )
    moved = await session.execute(
        update(Appointment)
        .where(Appointment.id == appt.id, Appointment.status == ApptStatus.BOOKED.value)
        .values(
            status=ApptStatus.CHECKED_IN.value,
            checked_in_at=now,
            updated_at=now,
            version=Appointment.version + 1,
        )
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        fresh = await get_appointment(session, appt.id)
        if fresh.status == ApptStatus.CHECKED_IN:
            raise AppointmentError(f"appointment {appt.id} was already checked in")
        raise AppointmentError(f"appointment {appt.id} is {fresh.status}; only a booked one is checked in")
    appt = await get_appointment(session, appt.id)
    service = await get_service(session, appt.service_code)
    used: dict[str, Any] | None = None
    no_pass: str | None = "not asked to use a pass" if not use_pass else None
    if use_pass:
        try:
            used = await consume(
                session, appt.store, appt.member_id, service.pass_sku, order_id=appt.id, now=now
            )
        except PassError as err:
            no_pass = str(err)
    if used is not None:
        appt.pass_txn_id = used["txn_id"]
    progress = await record_session(session, appt, now)
    await session.flush()
    return {
        "appointment": appointment_json(appt),
        "pass_use": used,
        "no_pass_reason": no_pass,
        "to_pay_fen": 0 if used is not None else service.price_fen,
        "plan": None
        if progress is None
        else {
            "id": progress.plan_id,
            "sessions_done": progress.sessions_done,
            "sessions_total": progress.sessions_total,
            "next_due": progress.next_due.isoformat() if progress.next_due else None,
            "status": progress.status,
        },
    }


async def mark_no_show(
    session: AsyncSession, appointment_id: str, *, actor: str, now: datetime | None = None
) -> Appointment:
    """The member did not come: only once the appointment has started, only if still booked."""
    now = now or datetime.now(UTC)
    appt = await get_appointment(session, appointment_id)
    if now < appt.starts_at:
        raise AppointmentError("a no-show is marked only after the appointment has started")
    moved = await session.execute(
        update(Appointment)
        .where(Appointment.id == appt.id, Appointment.status == ApptStatus.BOOKED.value)
        .values(status=ApptStatus.NO_SHOW.value, updated_at=now, version=Appointment.version + 1)
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        fresh = await get_appointment(session, appt.id)
        raise AppointmentError(f"appointment {appt.id} is {fresh.status}; only a booked one is a no-show")
    return await get_appointment(session, appt.id)


@dataclass(frozen=True)
class SweepResult:
    """What one sweep did."""

    no_shows: int
    waitlist_closed: int
    reminders: int
    plan_reminders: int


async def sweep(
    db: Database, now: datetime | None = None, *, grace: timedelta = NO_SHOW_GRACE
) -> SweepResult:
    """Mark no-shows, close waitlists of started classes, queue reminders; safe to run any time, twice.

    Reminders and plan notices are deduplicated by key in the outbox, so a sweep that runs
    again (or on two hub instances) queues nothing twice.
    """
    now = now or datetime.now(UTC)
    async with db.session() as session, session.begin():
        no_shows = await session.execute(
            update(Appointment)
            .where(Appointment.status == ApptStatus.BOOKED.value, Appointment.ends_at < now - grace)
            .values(status=ApptStatus.NO_SHOW.value, updated_at=now, version=Appointment.version + 1)
            .execution_options(synchronize_session=False)
        )
        closed = await session.execute(
            update(Appointment)
            .where(Appointment.status == ApptStatus.WAITLISTED.value, Appointment.starts_at <= now)
            .values(
                status=ApptStatus.CANCELLED.value,
                cancel_reason="the class started before a seat freed up",
                updated_at=now,
                version=Appointment.version + 1,
            )
            .execution_options(synchronize_session=False)
        )
    reminders = 0
    async with db.session() as session, session.begin():
        due = await session.scalars(
            select(Appointment)
            .where(
                Appointment.status == ApptStatus.BOOKED.value,
                Appointment.reminded.is_(False),
                Appointment.starts_at > now,
                Appointment.starts_at <= now + REMINDER_LEAD,
            )
            .limit(_SWEEP_BATCH)
        )
        for appt in due.all():
            reminders += await notify(session, appt, "appointment.reminder", "reminder")
            appt.reminded = True
    plan_reminders = 0
    async with db.session() as session, session.begin():
        soon = (now + timedelta(days=PLAN_REMINDER_DAYS)).date()
        plans = await session.scalars(
            select(ServicePlan)
            .where(
                ServicePlan.status == PlanStatus.ACTIVE.value,
                ServicePlan.next_due <= soon,
                ServicePlan.reminded_session <= ServicePlan.sessions_done,
            )
            .limit(_SWEEP_BATCH)
        )
        for plan in plans.all():
            service = await session.get(ApptService, plan.service_code)
            assert plan.next_due is not None  # noqa: S101 - filtered above
            number = plan.sessions_done + 1
            queued = await enqueue_message(
                session,
                member_id=plan.member_id,
                channel="sms",
                template="plan.due",
                params={
                    "service": service.name if service else plan.service_code,
                    "store": plan.store,
                    "session": number,
                    "sessions_total": plan.sessions_total,
                    "due": plan.next_due.isoformat(),
                },
                dedupe_key=f"plan:{plan.id}:session:{number}",
                category=Category.TRANSACTIONAL,
            )
            plan.reminded_session = number
            plan_reminders += queued.created
    return SweepResult(
        no_shows=no_shows.rowcount,  # type: ignore[attr-defined]
        waitlist_closed=closed.rowcount,  # type: ignore[attr-defined]
        reminders=reminders,
        plan_reminders=plan_reminders,
    )


async def appointments_tick(db: Database, now: datetime) -> str:
    """The outbox worker's tick (`hub.messaging_worker.Tick`): one sweep, summarised when it did something."""
    done = await sweep(db, now)
    if not any((done.no_shows, done.waitlist_closed, done.reminders, done.plan_reminders)):
        return ""
    return (
        f"appointments: {done.no_shows} no-shows, {done.waitlist_closed} waitlist places closed, "
        f"{done.reminders} reminders, {done.plan_reminders} plan reminders queued"
    )

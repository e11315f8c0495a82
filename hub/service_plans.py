"""Service plans (疗程/健身计划/排课): N sessions of one service for a member, one every `interval_days`.

Progress moves only when a session is checked in (`record_session`, called by check-in in
the same transaction): one conditional UPDATE adds the session and sets the next due day
to the check-in's local day plus the interval, so two check-ins never count as one and a
plan never passes its total. Staff see what is due in a list (`plans_due`); members are
reminded through the message outbox by the appointment sweep.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import case, select, update

from hub.appointment_tables import Appointment, ApptStatus, PlanStatus, ServicePlan
from hub.appointments_setup import AppointmentError, get_service, store_zone
from hub.db import AsyncSession
from hub.errors import NotFound
from hub.members import get_member
from protocol.ids import new_id
from protocol.timeutil import format_utc

__all__ = [
    "PlanProgress",
    "cancel_plan",
    "create_plan",
    "get_plan",
    "member_plans",
    "plan_json",
    "plans_due",
    "record_session",
]

MAX_SESSIONS = 200


@dataclass(frozen=True)
class PlanProgress:
    """A plan after a session was checked in."""

    plan_id: str
    sessions_done: int
    sessions_total: int
    next_due: date | None
    status: str


async def create_plan(
    session: AsyncSession,
    member_id: str,
    service_code: str,
    store: str,
    *,
    sessions: int,
    interval_days: int,
    first_due: date,
    note: str = "",
    actor: str,
) -> ServicePlan:
    """A new plan; the first session is due on `first_due`."""
    if not 1 <= sessions <= MAX_SESSIONS:
        raise AppointmentError(f"a plan has 1 to {MAX_SESSIONS} sessions")
    if not 1 <= interval_days <= 365:
        raise AppointmentError("interval_days must be from 1 to 365")
    member = await get_member(session, member_id)
    service = await get_service(session, service_code)
    await store_zone(session, store)
    now = datetime.now(UTC)
    plan = ServicePlan(
        id=str(new_id()),
        member_id=member.id,
        service_code=service.code,
        store=store,
        sessions_total=sessions,
        sessions_done=0,
        interval_days=interval_days,
        next_due=first_due,
        status=PlanStatus.ACTIVE.value,
        note=note[:500],
        created_by=actor,
        created_at=now,
        updated_at=now,
    )
    session.add(plan)
    await session.flush()
    return plan


async def get_plan(session: AsyncSession, plan_id: str) -> ServicePlan:
    """The plan, freshly read, or `NotFound`."""
    plan = await session.get(ServicePlan, plan_id, populate_existing=True)
    if plan is None:
        raise NotFound(f"no service plan {plan_id}")
    return plan


async def cancel_plan(session: AsyncSession, plan_id: str, *, now: datetime | None = None) -> ServicePlan:
    """Stop a plan that is still running; sessions done stay counted."""
    moved = await session.execute(
        update(ServicePlan)
        .where(ServicePlan.id == plan_id, ServicePlan.status == PlanStatus.ACTIVE.value)
        .values(status=PlanStatus.CANCELLED.value, next_due=None, updated_at=now or datetime.now(UTC))
        .execution_options(synchronize_session=False)
    )
    plan = await get_plan(session, plan_id)
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        raise AppointmentError(f"service plan {plan_id} is {plan.status}; only an active plan is cancelled")
    return plan


async def record_session(session: AsyncSession, appt: Appointment, now: datetime) -> PlanProgress | None:
    """Count a checked-in visit towards its plan (or the member's oldest active plan for the service)."""
    plan_id = appt.plan_id
    if plan_id is None:
        plan_id = await session.scalar(
            select(ServicePlan.id)
            .where(
                ServicePlan.member_id == appt.member_id,
                ServicePlan.service_code == appt.service_code,
                ServicePlan.status == PlanStatus.ACTIVE.value,
            )
            .order_by(ServicePlan.created_at, ServicePlan.id)
            .limit(1)
        )
        if plan_id is None:
            return None
    plan = await get_plan(session, plan_id)
    local_day = now.astimezone(await store_zone(session, appt.store)).date()
    done_after = ServicePlan.sessions_done + 1
    finished = done_after >= ServicePlan.sessions_total
    moved = await session.execute(
        update(ServicePlan)
        .where(
            ServicePlan.id == plan_id,
            ServicePlan.status == PlanStatus.ACTIVE.value,
            ServicePlan.sessions_done < ServicePlan.sessions_total,
        )
        .values(
            sessions_done=done_after,
            status=case((finished, PlanStatus.COMPLETED.value), else_=PlanStatus.ACTIVE.value),
            next_due=case((finished, None), else_=local_day + timedelta(days=plan.interval_days)),
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        return None  # the plan ended meanwhile: the visit still counts as a visit
    if appt.plan_id is None:
        appt.plan_id = plan_id
    plan = await get_plan(session, plan_id)
    return PlanProgress(plan.id, plan.sessions_done, plan.sessions_total, plan.next_due, plan.status)


async def member_plans(session: AsyncSession, member_id: str) -> list[ServicePlan]:
    """The member's plans, newest first."""
    member = await get_member(session, member_id)
    rows = await session.scalars(
        select(ServicePlan)
        .where(ServicePlan.member_id == member.id)
        .order_by(ServicePlan.created_at.desc(), ServicePlan.id.desc())
    )
    return list(rows.all())


async def plans_due(
    session: AsyncSession, store: str, by: date, *, limit: int = 500
) -> list[tuple[ServicePlan, Appointment | None]]:
    """Active plans of the store due by `by`, soonest first, each with its next booked session (if any).

    The staff's reminder list: a plan with no upcoming booking is a member to call.
    """
    plans = list(
        (
            await session.scalars(
                select(ServicePlan)
                .where(
                    ServicePlan.store == store,
                    ServicePlan.status == PlanStatus.ACTIVE.value,
                    ServicePlan.next_due <= by,
                )
                .order_by(ServicePlan.next_due, ServicePlan.id)
                .limit(limit)
            )
        ).all()
    )
    out: list[tuple[ServicePlan, Appointment | None]] = []
    now = datetime.now(UTC)
    for plan in plans:
        upcoming = await session.scalar(
            select(Appointment)
            .where(
                Appointment.member_id == plan.member_id,
                Appointment.service_code == plan.service_code,
                Appointment.status == ApptStatus.BOOKED.value,
                Appointment.starts_at >= now,
            )
            .order_by(Appointment.starts_at)
            .limit(1)
        )
        out.append((plan, upcoming))
    return out


def plan_json(plan: ServicePlan, upcoming: Appointment | None = None) -> dict[str, Any]:
    """A plan as the API shows it."""
    body: dict[str, Any] = {
        "id": plan.id,
        "member_id": plan.member_id,
        "service": plan.service_code,
        "store": plan.store,
        "sessions_total": plan.sessions_total,
        "sessions_done": plan.sessions_done,
        "interval_days": plan.interval_days,
        "next_due": plan.next_due.isoformat() if plan.next_due else None,
        "status": plan.status,
        "note": plan.note,
    }
    if upcoming is not None:
        body["next_booking"] = {"id": upcoming.id, "starts_at": format_utc(upcoming.starts_at)}
    return body

"""Cancelling a whole class session (the coach is ill, the room flooded): every seat and waitlist
place is cancelled and the coach and room are free again, in one transaction under the class lock."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, select, update

from hub.appointment_tables import Appointment, ApptClass, ApptHold, ApptStatus
from hub.appointments import lock_class
from hub.appointments_setup import AppointmentError
from hub.db import AsyncSession

__all__ = ["cancel_class"]


async def cancel_class(
    session: AsyncSession, class_id: str, *, reason: str, now: datetime | None = None
) -> tuple[ApptClass, list[Appointment]]:
    """Cancel the session and its bookings; returns the class and the appointments it cancelled."""
    now = now or datetime.now(UTC)
    if not reason.strip():
        raise AppointmentError("cancelling a class needs a reason")
    row = await lock_class(session, class_id)
    if row.cancelled:
        raise AppointmentError(f"class {class_id} was already cancelled")
    if row.starts_at <= now:
        raise AppointmentError("a class that has started is not cancelled; mark no-shows instead")
    open_states = [ApptStatus.BOOKED.value, ApptStatus.WAITLISTED.value]
    seats = list(
        (
            await session.scalars(
                select(Appointment.id).where(
                    Appointment.class_id == class_id, Appointment.status.in_(open_states)
                )
            )
        ).all()
    )
    await session.execute(
        update(Appointment)
        .where(Appointment.id.in_(seats), Appointment.status.in_(open_states))
        .values(
            status=ApptStatus.CANCELLED.value,
            cancel_reason=f"the class was cancelled: {reason.strip()}"[:500],
            updated_at=now,
            version=Appointment.version + 1,
        )
        .execution_options(synchronize_session=False)
    )
    await session.execute(delete(ApptHold).where(ApptHold.class_id == class_id))
    row.cancelled = True
    await session.flush()
    cancelled = (
        await session.scalars(
            select(Appointment).where(Appointment.id.in_(seats)).execution_options(populate_existing=True)
        )
    ).all()
    return row, list(cancelled)

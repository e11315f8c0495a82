"""Member merge hook for appointments: the duplicate's bookings and service plans move to the survivor.

Imports only the appointment tables so `hub.members` can list it in `MERGE_HOOKS` without a cycle.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.appointment_tables import Appointment, ServicePlan

__all__ = ["move_appointments"]


async def move_appointments(session: AsyncSession, from_id: str, into_id: str) -> None:
    """Give every appointment and plan of `from_id` (whatever its state) to `into_id`, in the merge."""
    for table in (Appointment, ServicePlan):
        await session.execute(
            update(table)
            .where(table.member_id == from_id)
            .values(member_id=into_id)
            .execution_options(synchronize_session=False)
        )

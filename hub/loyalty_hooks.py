"""Member hooks of levels and points, importable by `hub.members` without an import cycle.

`hub.levels` imports `hub.members`, so `hub.members` lists these thin functions, which
import levels only when they run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hub.db import AsyncSession
from hub.points import move_points

if TYPE_CHECKING:
    from hub.members import Member

__all__ = ["loyalty_member_created", "merge_loyalty"]


async def loyalty_member_created(session: AsyncSession, member: Member) -> None:
    """A new member: the entry level and registration points."""
    from hub.levels import on_member_created  # noqa: PLC0415 - levels imports members

    await on_member_created(session, member)


async def merge_loyalty(session: AsyncSession, from_id: str, into_id: str) -> None:
    """A merge: levels (row locked first, as everywhere) then points move to the survivor."""
    from hub.levels import move_levels  # noqa: PLC0415 - levels imports members

    await move_levels(session, from_id, into_id)
    await move_points(session, from_id, into_id)

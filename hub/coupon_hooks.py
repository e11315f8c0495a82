"""Member hooks of coupons, importable by `hub.members` without an import cycle.

`hub.coupons` imports `hub.members`, so `hub.members` lists these thin functions, which
import the coupon modules only when they run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import literal, update

from hub.coupon_tables import Coupon
from hub.db import AsyncSession

if TYPE_CHECKING:
    from hub.members import Member

__all__ = ["coupons_member_created", "move_coupons"]


async def coupons_member_created(session: AsyncSession, member: Member) -> None:
    """A new member: the welcome pack."""
    from hub.coupon_gifts import welcome_coupons  # noqa: PLC0415 - coupon_gifts imports members

    await welcome_coupons(session, member)


async def move_coupons(session: AsyncSession, from_id: str, into_id: str) -> None:
    """A merge: the duplicate's coupons, used or not, go to the survivor.

    Their grant keys become `merged:<code>`: the survivor's own numbering and gift keys
    stay unique, and what the duplicate got does not count against the survivor's limits.
    """
    await session.execute(
        update(Coupon)
        .where(Coupon.member_id == from_id)
        .values(member_id=into_id, grant_key=literal("merged:") + Coupon.code)
        .execution_options(synchronize_session=False)
    )

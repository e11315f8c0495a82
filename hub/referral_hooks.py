"""Member hook of referrals, importable by `hub.members` without an import cycle.

`hub.referrals` imports `hub.members`, so `hub.members` lists this thin function, which
imports referrals only when it runs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from hub.db import AsyncSession

if TYPE_CHECKING:
    from hub.members import Member

__all__ = ["referrals_member_created"]

log = logging.getLogger(__name__)


async def referrals_member_created(session: AsyncSession, member: Member) -> None:
    """A new member registered with a referrer (the till's referrer phone): attribute them if the
    referrer is an active promoter; a fraud guard's refusal leaves the registration as it is."""
    if member.referrer_id is None:
        return
    from hub.referral_tables import Promoter  # noqa: PLC0415 - kept with the lazy import below
    from hub.referrals import ReferralRefused, attribute  # noqa: PLC0415 - referrals imports members

    promoter = await session.get(Promoter, member.referrer_id)
    if promoter is None or not promoter.active:
        return
    try:
        async with session.begin_nested():
            await attribute(session, member.id, None, via="registration", promoter_id=promoter.member_id)
    except ReferralRefused as err:
        log.info("member %s not attributed to promoter %s: %s", member.id, promoter.member_id, err)

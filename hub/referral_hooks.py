"""Member hooks of referrals, the points mall and the lucky wheel, importable by `hub.members`
without an import cycle.

`hub.referrals` imports `hub.members`, so `hub.members` lists these thin functions; the one
that needs referrals imports it only when it runs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import Delete, Update, and_, delete, or_, select, update

from hub.db import AsyncSession
from hub.mall_tables import MallRedemption, Spin
from hub.referral_tables import Attribution, Commission, Promoter, ReferralLink

if TYPE_CHECKING:
    from hub.members import Member

__all__ = ["move_mall_history", "move_referrals", "referrals_member_created"]

log = logging.getLogger(__name__)


async def referrals_member_created(session: AsyncSession, member: Member) -> None:
    """A new member registered with a referrer (the till's referrer phone): attribute them if the
    referrer is an active promoter; a fraud guard's refusal leaves the registration as it is."""
    if member.referrer_id is None:
        return
    from hub.referrals import ReferralRefused, attribute  # noqa: PLC0415 - referrals imports members

    promoter = await session.get(Promoter, member.referrer_id)
    if promoter is None or not promoter.active:
        return
    try:
        async with session.begin_nested():
            await attribute(session, member.id, None, via="registration", promoter_id=promoter.member_id)
    except ReferralRefused as err:
        log.info("member %s not attributed to promoter %s: %s", member.id, promoter.member_id, err)


_Stmt = TypeVar("_Stmt", Update, Delete)


def _quiet(stmt: _Stmt) -> _Stmt:
    return stmt.execution_options(synchronize_session=False)


async def move_referrals(session: AsyncSession, from_id: str, into_id: str) -> None:
    """Merge hook: the duplicate's promoter status, share links, friends and commissions go to the
    survivor. Every code the duplicate shared keeps working. The survivor keeps its own promoter
    (or the duplicate's code becomes its own) and its own attribution if it had one; an attribution
    between the two becomes a self-referral and is dropped."""
    dup = await session.get(Promoter, from_id)
    if dup is not None:
        keep = await session.get(Promoter, into_id)
        if keep is None:  # the survivor takes the duplicate's place, and then its code
            session.add(
                Promoter(
                    member_id=into_id,
                    code=f"~{dup.code}"[:16],
                    active=dup.active,
                    created_by=dup.created_by,
                    created_at=dup.created_at,
                    updated_at=dup.updated_at,
                )
            )
            await session.flush()
        else:  # both shared links: the duplicate's that repeat the survivor's parameters are told apart
            await _rename_clashing_links(session, from_id, into_id)
        await session.execute(
            _quiet(
                update(ReferralLink).where(ReferralLink.promoter_id == from_id).values(promoter_id=into_id)
            )
        )
        code = dup.code
        await session.delete(dup)
        await session.flush()
        if keep is None:
            await session.execute(
                _quiet(update(Promoter).where(Promoter.member_id == into_id).values(code=code))
            )
    await session.execute(
        _quiet(
            delete(Attribution).where(
                or_(
                    and_(Attribution.friend_id == from_id, Attribution.promoter_id == into_id),
                    and_(Attribution.friend_id == into_id, Attribution.promoter_id == from_id),
                )
            )
        )
    )
    await session.execute(
        _quiet(update(Attribution).where(Attribution.promoter_id == from_id).values(promoter_id=into_id))
    )
    survivor_has = await session.scalar(select(Attribution.friend_id).where(Attribution.friend_id == into_id))
    if survivor_has is None:
        await session.execute(
            _quiet(update(Attribution).where(Attribution.friend_id == from_id).values(friend_id=into_id))
        )
    for column in (Commission.promoter_id, Commission.friend_id):
        await session.execute(_quiet(update(Commission).where(column == from_id).values({column: into_id})))


async def _rename_clashing_links(session: AsyncSession, from_id: str, into_id: str) -> None:
    """Links are unique per (promoter, campaign, store, channel): a duplicate's link with the same
    parameters as one of the survivor's keeps its code and campaign, with channel `merged:<code>`."""
    params = (ReferralLink.campaign, ReferralLink.store, ReferralLink.channel)
    taken = set((await session.execute(select(*params).where(ReferralLink.promoter_id == into_id))).all())
    links = (await session.scalars(select(ReferralLink).where(ReferralLink.promoter_id == from_id))).all()
    for link in links:
        if (link.campaign, link.store, link.channel) in taken:
            link.channel = f"merged:{link.code}"[:32]
    await session.flush()


async def move_mall_history(session: AsyncSession, from_id: str, into_id: str) -> None:
    """Merge hook: the duplicate's redemptions and spins count for the survivor's limits."""
    for model in (MallRedemption, Spin):
        await session.execute(
            _quiet(update(model).where(model.member_id == from_id).values(member_id=into_id))
        )

"""A pass's life after issue: transfer to another member, revocation (refund), expiry.

Each runs in the caller's transaction and writes its ledger row; state changes are
conditional UPDATEs so they stay right against a use taken at the same moment.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import case, update

from hub.db import AsyncSession
from hub.members import get_member
from hub.passes import PassError, get_pass, ledger_row
from hub.passes_models import Pass, PassLedger

__all__ = ["expire_passes", "revoke_pass", "transfer_pass"]


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


async def transfer_pass(
    session: AsyncSession,
    pass_id: str,
    to_member_id: str,
    *,
    actor: str,
    reason: str,
    now: datetime | None = None,
) -> Pass:
    """Move a whole pass to another member, if its product allows it."""
    now = _now(now)
    p = await get_pass(session, pass_id)
    to = await get_member(session, to_member_id)
    if not p.transferable:
        raise PassError(f"pass {p.name!r} is not transferable (its product does not allow it)")
    if p.status != "active" or (p.expires_at is not None and p.expires_at <= now):
        raise PassError(
            f"pass {p.name!r} is {p.status if p.status != 'active' else 'expired'}; it cannot move"
        )
    if p.remaining == 0:
        raise PassError(f"pass {p.name!r} has no uses left; there is nothing to transfer")
    if to.id == p.member_id:
        raise PassError("the pass already belongs to that member")
    moved = await session.execute(
        update(Pass)
        .where(Pass.id == p.id, Pass.member_id == p.member_id, Pass.status == "active")
        .values(member_id=to.id)
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        raise PassError("the pass changed meanwhile; reload and try again")
    detail = {"from_member_id": p.member_id, "to_member_id": to.id}
    entry = ledger_row(
        p,
        "transfer",
        0,
        actor=actor,
        now=now,
        remaining_after=p.remaining,
        member_id=to.id,
        reason=reason,
        detail=detail,
    )
    session.add(entry)
    return await get_pass(session, p.id)


async def revoke_pass(
    session: AsyncSession,
    pass_id: str,
    *,
    actor: str,
    reason: str,
    now: datetime | None = None,
    store: str | None = None,
    order_id: str | None = None,
    refund_id: str | None = None,
) -> PassLedger | None:
    """End a pass for good (refund, correction); None if it was already revoked.

    Conditional updates keep it right against a use taken at the same moment: an active
    pass forfeits `total_uses - used` (what was left), an expired one forfeited already.
    """
    now = _now(now)
    forfeited = 0
    ended = await session.execute(
        update(Pass)
        .where(Pass.id == pass_id, Pass.status == "active")
        .values(status="revoked", remaining=case((Pass.remaining.is_(None), None), else_=0))
        .returning(Pass.used, Pass.total_uses)
        .execution_options(synchronize_session=False)
    )
    row = ended.first()
    if row is not None:
        forfeited = (row.total_uses - row.used) if row.total_uses is not None else 0
    else:
        ended = await session.execute(
            update(Pass)
            .where(Pass.id == pass_id, Pass.status == "expired")
            .values(status="revoked")
            .returning(Pass.used)
            .execution_options(synchronize_session=False)
        )
        if ended.first() is None:
            return None
    p = await get_pass(session, pass_id)
    entry = ledger_row(
        p,
        "revoke",
        -forfeited,
        actor=actor,
        now=now,
        remaining_after=p.remaining,
        reason=reason,
        store=store,
        order_id=order_id,
        refund_id=refund_id,
    )
    session.add(entry)
    return entry


async def expire_passes(session: AsyncSession, now: datetime | None = None) -> int:
    """Mark passes past their expiry as expired, forfeiting the uses left; returns how many."""
    now = _now(now)
    ended = await session.execute(
        update(Pass)
        .where(Pass.status == "active", Pass.expires_at.is_not(None), Pass.expires_at <= now)
        .values(status="expired", remaining=case((Pass.remaining.is_(None), None), else_=0))
        .returning(Pass.id, Pass.member_id, Pass.used, Pass.total_uses)
        .execution_options(synchronize_session=False)
    )
    count = 0
    for row in ended.all():
        forfeited = (row.total_uses - row.used) if row.total_uses is not None else 0
        session.add(
            PassLedger(
                txn_id=str(uuid.uuid4()),
                pass_id=row.id,
                member_id=row.member_id,
                kind="expire",
                uses=-forfeited,
                remaining_after=0 if row.total_uses is not None else None,
                reversed=False,
                actor="system",
                reason="expired",
                detail={},
                created_at=now,
            )
        )
        count += 1
    return count

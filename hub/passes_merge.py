"""Member merge hook for passes: the duplicate's passes move to the survivor, with a ledger row.

Imports only the pass tables so `hub.members` can list it in `MERGE_HOOKS` without a cycle.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.passes_models import Pass, PassLedger

__all__ = ["move_passes"]


async def move_passes(session: AsyncSession, from_id: str, into_id: str) -> None:
    """Give every pass of `from_id` (whatever its state) to `into_id`, in the merge's transaction."""
    now = datetime.now(UTC)
    moved = await session.execute(
        update(Pass)
        .where(Pass.member_id == from_id)
        .values(member_id=into_id)
        .returning(Pass.id, Pass.remaining)
        .execution_options(synchronize_session=False)
    )
    for row in moved.all():
        session.add(
            PassLedger(
                txn_id=str(uuid.uuid4()),
                pass_id=row.id,
                member_id=into_id,
                kind="merge",
                uses=0,
                remaining_after=row.remaining,
                reversed=False,
                actor="merge",
                reason="member merged",
                detail={"from_member_id": from_id, "to_member_id": into_id},
                created_at=now,
            )
        )

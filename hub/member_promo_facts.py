"""What the till's promotion engine needs to know about a member beyond the level.

`segments` is the member's RFM segment (from the last recompute) and tag codes: a rule's
`member_segments` names either. `promotion_uses_today` counts, per rule id, the member's
orders of the store's business day that the hub has received with that rule applied, in
any store, so a per-member daily cap holds across tills. Refunded orders still count: the
cap limits uses, and the member did use the rule.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from hub.db import AsyncSession
from hub.member_facts import MemberOrder
from hub.member_tag_tables import MemberSegment, MemberTagLink
from hub.models import HubOrder
from protocol import business_day

__all__ = ["member_segments", "promotion_uses_today"]


async def member_segments(session: AsyncSession, member_id: str) -> list[str]:
    """The member's RFM segment (if the member had a visit in the last computed window) and tags."""
    segment = await session.scalar(select(MemberSegment.segment).where(MemberSegment.member_id == member_id))
    tags = await session.scalars(
        select(MemberTagLink.tag_code)
        .where(MemberTagLink.member_id == member_id)
        .order_by(MemberTagLink.tag_code)
    )
    return ([segment] if segment else []) + list(tags)


def _rule_ids(doc: dict[str, Any]) -> set[str]:
    applied = doc.get("promotions") or ()
    return {str(p["rule_id"]) for p in applied if isinstance(p, dict) and p.get("rule_id")}


async def promotion_uses_today(
    session: AsyncSession, member_id: str, zone: ZoneInfo, now: datetime | None = None
) -> dict[str, int]:
    """Per rule id, how many of the member's orders of today's business day (in `zone`) used it."""
    day = business_day(now or datetime.now(UTC), zone)
    docs = await session.scalars(
        select(HubOrder.doc)
        .join(MemberOrder, MemberOrder.order_id == HubOrder.id)
        .where(MemberOrder.member_id == member_id, MemberOrder.business_day == day)
    )
    uses: dict[str, int] = {}
    for doc in docs:
        for rule_id in _rule_ids(doc):
            uses[rule_id] = uses.get(rule_id, 0) + 1
    return uses

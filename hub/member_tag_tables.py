"""Tables of member tags and RFM segments, and what a member merge does to them.

Kept apart from the code that fills them because `hub.members` lists the merge hook here,
and this module must therefore not import `hub.members`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    delete,
    insert,
    literal,
    select,
)
from sqlalchemy.orm import Mapped, aliased, mapped_column

from hub.db import AsyncSession
from hub.models import Base

__all__ = ["MemberSegment", "MemberTag", "MemberTagAudit", "MemberTagLink", "merge_tags_and_segments"]


class MemberTag(Base):
    """A tag of the chain's one tag list; `rule` is set for a tag computed by a rule.

    A rule tag's members are replaced each time it is evaluated; a manual tag's members
    change only when someone assigns or unassigns it.
    """

    __tablename__ = "member_tags"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    color: Mapped[str | None] = mapped_column(String(7))
    rule: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))  # SQL NULL: manual
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    evaluated_at: Mapped[datetime | None]  # rule tags: when its members were last computed
    evaluated_for: Mapped[date | None] = mapped_column(Date)  # … and for which business day


class MemberTagLink(Base):
    """A member has a tag; `assigned_by` is the head-office user, or `rule` for a rule tag."""

    __tablename__ = "member_tag_links"
    __table_args__ = (Index("ix_member_tag_links_tag", "tag_code", "member_id"),)

    member_id: Mapped[str] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), primary_key=True)
    tag_code: Mapped[str] = mapped_column(
        ForeignKey("member_tags.code", ondelete="CASCADE"), primary_key=True
    )
    assigned_by: Mapped[str] = mapped_column(String(80))
    assigned_at: Mapped[datetime]


class MemberTagAudit(Base):
    """Who gave or took a manual tag, and when; kept after the tag or the link is gone."""

    __tablename__ = "member_tag_audit"
    __table_args__ = (Index("ix_member_tag_audit_member", "member_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    member_id: Mapped[str] = mapped_column(String(36))
    tag_code: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(16))  # assign, unassign, merge_in, tag_deleted
    actor: Mapped[str] = mapped_column(String(80))
    at: Mapped[datetime]


class MemberSegment(Base):
    """A member's RFM scores and segment as computed for `as_of` over `window_days` days.

    Only members with at least one paid order in the window have a row.
    """

    __tablename__ = "member_segments"
    __table_args__ = (Index("ix_member_segments_segment", "segment"),)

    member_id: Mapped[str] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), primary_key=True)
    as_of: Mapped[date] = mapped_column(Date)
    window_days: Mapped[int] = mapped_column(Integer)
    recency_days: Mapped[int] = mapped_column(Integer)
    frequency: Mapped[int] = mapped_column(Integer)
    monetary_fen: Mapped[int] = mapped_column(BigInteger)
    r_score: Mapped[int] = mapped_column(SmallInteger)
    f_score: Mapped[int] = mapped_column(SmallInteger)
    m_score: Mapped[int] = mapped_column(SmallInteger)
    segment: Mapped[str] = mapped_column(String(24))
    computed_at: Mapped[datetime]


async def merge_tags_and_segments(session: AsyncSession, from_id: str, into_id: str) -> None:
    """Merge hook: the survivor gets the duplicate's tags it lacks; the duplicate's segment goes.

    Each tag carried over is written to the audit as `merge_in`. The survivor's segment
    stays as it is until the next recompute counts the orders it took over.
    """
    now = datetime.now(UTC)
    mine = aliased(MemberTagLink)
    carried = select(MemberTagLink.tag_code).where(
        MemberTagLink.member_id == from_id,
        ~select(mine.tag_code)
        .where(mine.member_id == into_id, mine.tag_code == MemberTagLink.tag_code)
        .exists(),
    )
    codes = list((await session.scalars(carried)).all())
    if codes:
        await session.execute(
            insert(MemberTagLink).from_select(
                ["member_id", "tag_code", "assigned_by", "assigned_at"],
                select(
                    literal(into_id, String),
                    MemberTagLink.tag_code,
                    MemberTagLink.assigned_by,
                    MemberTagLink.assigned_at,
                ).where(MemberTagLink.member_id == from_id, MemberTagLink.tag_code.in_(codes)),
            )
        )
        await session.execute(
            insert(MemberTagAudit),
            [
                {
                    "member_id": into_id,
                    "tag_code": code,
                    "action": "merge_in",
                    "actor": f"merge:{from_id}",
                    "at": now,
                }
                for code in codes
            ],
        )
    await session.execute(delete(MemberTagLink).where(MemberTagLink.member_id == from_id))
    await session.execute(delete(MemberSegment).where(MemberSegment.member_id == from_id))

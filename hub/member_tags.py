"""Member tags: the chain's one tag list, manual tags given and taken by head office (audited),
and rule tags whose members a rule decides (see `hub.member_tag_rules`).

Every function works in the caller's transaction; a refusal raises before anything is
written, so the caller's rollback leaves nothing behind.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import String, delete, func, insert, literal, select
from sqlalchemy.exc import IntegrityError

from hub.db import AsyncSession
from hub.errors import HubError, NotFound
from hub.member_tag_rules import InvalidRule, matching_members, parse_rule
from hub.member_tag_tables import MemberTag, MemberTagAudit, MemberTagLink
from hub.members import Member, MemberMerged, get_member, open_transaction
from hub.models import UtcDateTime

__all__ = [
    "RULE_ACTOR",
    "InvalidTag",
    "MemberTagView",
    "TagExists",
    "WrongTagKind",
    "assign_tag",
    "create_tag",
    "delete_tag",
    "evaluate_rule_tag",
    "evaluate_rule_tags",
    "get_tag",
    "list_tags",
    "member_tags",
    "tag_history",
    "unassign_tag",
    "update_tag",
]

_CODE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
MAX_TAG_NAME = 64
RULE_ACTOR = "rule"  # `assigned_by` of a rule tag's links


class InvalidTag(ValueError):
    """A tag field that cannot be stored (bad code, blank name, bad colour, bad rule)."""


class TagExists(HubError):
    """The chain already has a tag with this code."""


class WrongTagKind(HubError):
    """A rule tag given or taken by hand, or a manual tag asked to evaluate a rule it has not."""


def _check_code(code: str) -> str:
    if not _CODE.match(code):
        raise InvalidTag(
            f"tag code {code!r} must be 1-32 of a-z, 0-9, '_' and '-', starting with a letter or digit"
        )
    return code


def _check_name(raw: str) -> str:
    name = raw.strip()
    if not 1 <= len(name) <= MAX_TAG_NAME or not name.isprintable():
        raise InvalidTag(f"a tag name has 1 to {MAX_TAG_NAME} printable characters, got {raw!r}")
    return name


def _check_color(color: str | None) -> str | None:
    if color is None or color == "":
        return None
    if not _COLOR.match(color):
        raise InvalidTag(f"colour {color!r} must look like #1f77b4")
    return color.lower()


def _check_rule(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        return parse_rule(raw).model_dump(mode="json")
    except InvalidRule as err:
        raise InvalidTag(str(err)) from None


async def get_tag(session: AsyncSession, code: str) -> MemberTag:
    """The tag with this code; `NotFound` naming it otherwise."""
    tag = await session.get(MemberTag, code)
    if tag is None:
        raise NotFound(f"no tag {code!r}")
    return tag


async def list_tags(
    session: AsyncSession, *, stores: frozenset[str] | None = None, code: str | None = None
) -> list[tuple[MemberTag, int]]:
    """Every tag (or the one with `code`), by code, with how many members (within `stores`) have it."""
    counting = select(MemberTagLink.tag_code, func.count().label("members")).group_by(MemberTagLink.tag_code)
    if stores is not None:
        counting = counting.join(Member, Member.id == MemberTagLink.member_id).where(
            Member.source_store.in_(stores)
        )
    if code is not None:
        counting = counting.where(MemberTagLink.tag_code == code)
    counts = counting.subquery()
    query = (
        select(MemberTag, func.coalesce(counts.c.members, 0))
        .outerjoin(counts, counts.c.tag_code == MemberTag.code)
        .order_by(MemberTag.code)
    )
    if code is not None:
        query = query.where(MemberTag.code == code)
    rows = await session.execute(query)
    return [(tag, int(n)) for tag, n in rows.all()]


async def evaluate_rule_tag(session: AsyncSession, tag: MemberTag, today: date) -> int:
    """Replace a rule tag's members by those its rule selects as of `today`; how many there are.

    One DELETE and one INSERT … SELECT: the database does the work, whatever the chain's size.
    """
    if tag.rule is None:
        raise WrongTagKind(f"tag {tag.code!r} is a manual tag; it has no rule to evaluate")
    rule = parse_rule(tag.rule)
    now = datetime.now(UTC)
    await session.execute(delete(MemberTagLink).where(MemberTagLink.tag_code == tag.code))
    members = matching_members(rule, today).subquery("tagged")
    await session.execute(
        insert(MemberTagLink).from_select(
            ["member_id", "tag_code", "assigned_by", "assigned_at"],
            select(
                members.c[0],
                literal(tag.code, String),
                literal(RULE_ACTOR, String),
                literal(now, UtcDateTime),
            ),
        )
    )
    tag.evaluated_at, tag.evaluated_for = now, today
    await session.flush()
    count = await session.scalar(select(func.count()).where(MemberTagLink.tag_code == tag.code))
    return int(count or 0)


async def evaluate_rule_tags(session: AsyncSession, today: date) -> dict[str, int]:
    """Evaluate every rule tag as of `today`: {code: members tagged}."""
    tags = (
        await session.scalars(select(MemberTag).where(MemberTag.rule.is_not(None)).order_by(MemberTag.code))
    ).all()
    return {tag.code: await evaluate_rule_tag(session, tag, today) for tag in tags}


async def create_tag(
    session: AsyncSession,
    code: str,
    name: str,
    *,
    actor: str,
    color: str | None = None,
    rule: dict[str, Any] | None = None,
    today: date,
) -> MemberTag:
    """Add a tag; a rule tag gets its members as of `today` at once. `TagExists` if the code is taken."""
    now = datetime.now(UTC)
    tag = MemberTag(
        code=_check_code(code),
        name=_check_name(name),
        color=_check_color(color),
        rule=_check_rule(rule),
        created_by=actor,
        created_at=now,
        updated_at=now,
        evaluated_at=None,
        evaluated_for=None,
    )
    if await session.get(MemberTag, code) is not None:
        raise TagExists(f"tag {code!r} already exists")
    await open_transaction(session)
    try:
        async with session.begin_nested():
            session.add(tag)
            await session.flush()
    except IntegrityError as err:  # created concurrently
        raise TagExists(f"tag {code!r} already exists") from err
    if tag.rule is not None:
        await evaluate_rule_tag(session, tag, today)
    return tag


async def update_tag(session: AsyncSession, code: str, changes: dict[str, Any], *, today: date) -> MemberTag:
    """Change a tag's name, colour or (for a rule tag) its rule, which is then re-evaluated.

    A manual tag cannot become a rule tag or the other way round: people's hand-given tags
    would silently vanish. Create a new tag instead.
    """
    unknown = set(changes) - {"name", "color", "rule"}
    if unknown:
        raise InvalidTag(f"cannot change {', '.join(sorted(unknown))}")
    tag = await get_tag(session, code)
    values: dict[str, Any] = {}
    if "name" in changes:
        values["name"] = _check_name(str(changes["name"] or ""))
    if "color" in changes:
        values["color"] = _check_color(changes["color"])
    if "rule" in changes:
        if tag.rule is None or changes["rule"] is None:
            raise InvalidTag(
                f"tag {code!r} is a {'manual' if tag.rule is None else 'rule'} tag and stays one; "
                "create a new tag instead"
            )
        values["rule"] = _check_rule(changes["rule"])
    for key, value in values.items():
        setattr(tag, key, value)
    tag.updated_at = datetime.now(UTC)
    await session.flush()
    if "rule" in values:
        await evaluate_rule_tag(session, tag, today)
    return tag


async def delete_tag(session: AsyncSession, code: str, *, actor: str) -> None:
    """Remove a tag from the list and from every member; manual links go to the audit first."""
    tag = await get_tag(session, code)
    if tag.rule is None:
        await session.execute(
            insert(MemberTagAudit).from_select(
                ["member_id", "tag_code", "action", "actor", "at"],
                select(
                    MemberTagLink.member_id,
                    MemberTagLink.tag_code,
                    literal("tag_deleted", String),
                    literal(actor, String),
                    literal(datetime.now(UTC), UtcDateTime),
                ).where(MemberTagLink.tag_code == code),
            )
        )
    await session.execute(delete(MemberTagLink).where(MemberTagLink.tag_code == code))
    await session.delete(tag)
    await session.flush()


async def _live_member(session: AsyncSession, member_id: str) -> Member:
    member = await get_member(session, member_id, follow_merge=False)
    if member.merged_into is not None:
        raise MemberMerged(f"member {member_id} was merged into {member.merged_into}; tag that member")
    return member


async def _manual_tag(session: AsyncSession, code: str) -> MemberTag:
    tag = await get_tag(session, code)
    if tag.rule is not None:
        raise WrongTagKind(
            f"tag {code!r} is given by its rule ({tag.rule.get('kind')}); it cannot be given or taken by hand"
        )
    return tag


async def assign_tag(session: AsyncSession, member_id: str, code: str, *, actor: str) -> bool:
    """Give a manual tag to a member; False if the member already had it (nothing is written)."""
    member = await _live_member(session, member_id)
    await _manual_tag(session, code)
    if await session.get(MemberTagLink, (member.id, code)) is not None:
        return False
    now = datetime.now(UTC)
    await open_transaction(session)
    try:
        async with session.begin_nested():
            session.add(MemberTagLink(member_id=member.id, tag_code=code, assigned_by=actor, assigned_at=now))
            await session.flush()
    except IntegrityError:  # given concurrently by someone else: the member has it
        return False
    session.add(MemberTagAudit(member_id=member.id, tag_code=code, action="assign", actor=actor, at=now))
    await session.flush()
    return True


async def unassign_tag(session: AsyncSession, member_id: str, code: str, *, actor: str) -> bool:
    """Take a manual tag from a member; False if the member did not have it (nothing is written)."""
    member = await _live_member(session, member_id)
    await _manual_tag(session, code)
    gone = await session.execute(
        delete(MemberTagLink).where(MemberTagLink.member_id == member.id, MemberTagLink.tag_code == code)
    )
    if not gone.rowcount:  # type: ignore[attr-defined]
        return False
    now = datetime.now(UTC)
    session.add(MemberTagAudit(member_id=member.id, tag_code=code, action="unassign", actor=actor, at=now))
    await session.flush()
    return True


@dataclass(frozen=True)
class MemberTagView:
    """A tag a member has, with who gave it and when (`rule` for rule tags)."""

    code: str
    name: str
    color: str | None
    kind: str
    assigned_by: str
    assigned_at: datetime


async def member_tags(session: AsyncSession, member_id: str) -> list[MemberTagView]:
    """The member's tags, by code."""
    rows = await session.execute(
        select(MemberTag, MemberTagLink)
        .join(MemberTagLink, MemberTagLink.tag_code == MemberTag.code)
        .where(MemberTagLink.member_id == member_id)
        .order_by(MemberTag.code)
    )
    return [
        MemberTagView(
            tag.code,
            tag.name,
            tag.color,
            "manual" if tag.rule is None else "rule",
            link.assigned_by,
            link.assigned_at,
        )
        for tag, link in rows.all()
    ]


async def tag_history(session: AsyncSession, member_id: str, *, limit: int = 200) -> Sequence[MemberTagAudit]:
    """The member's manual tag changes, newest first."""
    rows = await session.scalars(
        select(MemberTagAudit)
        .where(MemberTagAudit.member_id == member_id)
        .order_by(MemberTagAudit.id.desc())
        .limit(limit)
    )
    return rows.all()

"""Members of the chain: one per mainland mobile number, created at a till or at head office.

This module owns the `members` table and its identity rules. Levels, points, stored value,
passes and segments live in their own modules and refer to `members.id`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from enum import StrEnum

from sqlalchemy import Boolean, Date, ForeignKey, String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from hub.db import AsyncSession
from hub.errors import HubError, NotFound
from hub.models import Base

__all__ = [
    "MERGE_HOOKS",
    "CreatedListener",
    "Gender",
    "InvalidPhone",
    "Member",
    "MemberExists",
    "MemberFields",
    "MergeHook",
    "create_member",
    "find_by_phone",
    "get_member",
    "normalize_phone",
]

# Mainland mobile numbers: 11 digits, 1 then 3-9. Landlines and Hong Kong numbers are not
# member identities here; a chain that needs them adds a country code column first.
_MOBILE = re.compile(r"^1[3-9]\d{9}$")
_SEPARATORS = re.compile(r"[\s\-()（）]")


# Domains that act when a member is created (registration points, welcome gifts) or merged
# (moving balances and ledgers to the survivor) add their function here. They run in the
# caller's transaction: one that raises undoes the creation or merge.
CreatedListener = Callable[[AsyncSession, "Member"], Awaitable[None]]
MergeHook = Callable[[AsyncSession, str, str], Awaitable[None]]  # (session, from_id, into_id)
_CREATED_LISTENERS: tuple[CreatedListener, ...] = ()
MERGE_HOOKS: tuple[MergeHook, ...] = ()


class InvalidPhone(ValueError):
    """Not a mainland China mobile number."""


class MemberExists(HubError):
    """Another member already has this phone number."""


class Gender(StrEnum):
    """As the member told us; unknown unless given."""

    FEMALE = "female"
    MALE = "male"
    UNKNOWN = "unknown"


def normalize_phone(raw: str) -> str:
    """The 11-digit form of a mainland mobile number typed any usual way (+86, spaces, dashes)."""
    digits = _SEPARATORS.sub("", raw.strip())
    for prefix in ("+86", "0086", "86"):
        if digits.startswith(prefix) and len(digits) == 11 + len(prefix):
            digits = digits[len(prefix) :]
            break
    if not _MOBILE.match(digits):
        raise InvalidPhone(f"{raw!r} is not a mainland China mobile number (11 digits starting with 13-19)")
    return digits


class Member(Base):
    """A member; `merged_into` is set when a duplicate was merged into another member."""

    __tablename__ = "members"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    phone: Mapped[str] = mapped_column(String(11), unique=True)
    name: Mapped[str] = mapped_column(String(64), default="")
    gender: Mapped[str] = mapped_column(String(8), default=Gender.UNKNOWN.value)
    birthday: Mapped[date | None] = mapped_column(Date)
    source_store: Mapped[str | None] = mapped_column(ForeignKey("stores.id", ondelete="SET NULL"))
    referrer_id: Mapped[str | None] = mapped_column(ForeignKey("members.id", ondelete="SET NULL"))
    channel: Mapped[str] = mapped_column(String(16))
    consent_marketing: Mapped[bool] = mapped_column(Boolean, default=False)
    consent_sms: Mapped[bool] = mapped_column(Boolean, default=False)
    merged_into: Mapped[str | None] = mapped_column(ForeignKey("members.id", ondelete="SET NULL"))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class MemberFields:
    """What a new member is created with; the phone is normalised, the rest as given."""

    __slots__ = (
        "birthday",
        "channel",
        "consent_marketing",
        "consent_sms",
        "gender",
        "name",
        "phone",
        "referrer_id",
        "source_store",
    )

    def __init__(
        self,
        phone: str,
        *,
        channel: str,
        name: str = "",
        gender: Gender = Gender.UNKNOWN,
        birthday: date | None = None,
        source_store: str | None = None,
        referrer_id: str | None = None,
        consent_marketing: bool = False,
        consent_sms: bool = False,
    ):
        self.phone = normalize_phone(phone)
        self.channel, self.name, self.gender, self.birthday = channel, name.strip(), gender, birthday
        self.source_store, self.referrer_id = source_store, referrer_id
        self.consent_marketing, self.consent_sms = consent_marketing, consent_sms


async def create_member(session: AsyncSession, fields: MemberFields) -> Member:
    """Add a member in the caller's transaction; `MemberExists` if the phone is taken."""
    if await find_by_phone(session, fields.phone) is not None:
        raise MemberExists(f"phone {fields.phone} already belongs to a member")
    if fields.referrer_id is not None:
        await get_member(session, fields.referrer_id)
    now = datetime.now(UTC)
    member = Member(
        id=str(uuid.uuid4()),
        phone=fields.phone,
        name=fields.name,
        gender=fields.gender.value,
        birthday=fields.birthday,
        source_store=fields.source_store,
        referrer_id=fields.referrer_id,
        channel=fields.channel,
        consent_marketing=fields.consent_marketing,
        consent_sms=fields.consent_sms,
        merged_into=None,
        created_at=now,
        updated_at=now,
    )
    session.add(member)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as err:  # a concurrent registration of the same phone won
        raise MemberExists(f"phone {fields.phone} already belongs to a member") from err
    for listener in _CREATED_LISTENERS:
        await listener(session, member)
    return member


async def get_member(session: AsyncSession, member_id: str, *, follow_merge: bool = True) -> Member:
    """The member with this id (the surviving one if it was merged); `NotFound` otherwise."""
    member = await session.get(Member, member_id)
    seen = set()
    while member is not None and follow_merge and member.merged_into is not None:
        if member.id in seen:  # a merge cycle would be a bug; never loop forever on it
            break
        seen.add(member.id)
        member = await session.get(Member, member.merged_into)
    if member is None:
        raise NotFound(f"no member {member_id!r}")
    return member


async def find_by_phone(session: AsyncSession, phone: str) -> Member | None:
    """The member with this (already normalised) phone, or None."""
    found = await session.execute(select(Member).where(Member.phone == phone))
    return found.scalar_one_or_none()

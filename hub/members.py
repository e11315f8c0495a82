"""Members of the chain: one per mainland mobile number, created at a till or at head office.

This module owns the `members` table and its identity rules. Levels, points, stored value,
passes and segments live in their own modules and refer to `members.id`.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Boolean, Date, ForeignKey, String, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from hub.appointments_merge import move_appointments
from hub.coupon_hooks import coupons_member_created, move_coupons
from hub.db import AsyncSession
from hub.errors import HubError, NotFound
from hub.loyalty_hooks import loyalty_member_created, merge_loyalty
from hub.member_facts import move_member_orders
from hub.member_tag_tables import merge_tags_and_segments
from hub.models import Base
from hub.passes_merge import move_passes
from hub.referral_hooks import move_mall_history, move_referrals, referrals_member_created
from hub.stored_value_office import merge_stored_value
from protocol.phone import mainland_mobile, mask_phone

__all__ = [
    "MERGE_HOOKS",
    "CreatedListener",
    "Gender",
    "InvalidMember",
    "InvalidPhone",
    "Member",
    "MemberExists",
    "MemberFields",
    "MemberMerged",
    "MergeHook",
    "MergeRefused",
    "add_members",
    "check_birthday",
    "check_name",
    "create_member",
    "find_by_phone",
    "get_member",
    "mask_phone",
    "merge_members",
    "normalize_phone",
    "open_transaction",
    "parse_gender",
    "update_member",
]

MAX_NAME = 64
_OLDEST_BIRTHDAY = date(1900, 1, 1)


# Domains that act when a member is created (registration points, welcome gifts) or merged
# (moving balances and ledgers to the survivor) add their function here. They run in the
# caller's transaction: one that raises undoes the creation or merge.
CreatedListener = Callable[[AsyncSession, "Member"], Awaitable[None]]
MergeHook = Callable[[AsyncSession, str, str], Awaitable[None]]  # (session, from_id, into_id)
_CREATED_LISTENERS: tuple[CreatedListener, ...] = (
    loyalty_member_created,
    coupons_member_created,
    referrals_member_created,
)
MERGE_HOOKS: tuple[MergeHook, ...] = (
    move_passes,
    merge_stored_value,
    merge_loyalty,
    move_member_orders,
    merge_tags_and_segments,
    move_coupons,
    move_appointments,
    move_referrals,
    move_mall_history,
)


class InvalidMember(ValueError):
    """A member field that cannot be stored (name too long, birthday in the future, …)."""


class InvalidPhone(InvalidMember):
    """Not a mainland China mobile number."""


class MemberExists(HubError):
    """Another member already has this phone number."""


class MemberMerged(HubError):
    """The member was merged into another one; changes go to the survivor."""


class MergeRefused(HubError):
    """A merge that would lose or loop members (into itself, into a merged member, twice)."""


class Gender(StrEnum):
    """As the member told us; unknown unless given."""

    FEMALE = "female"
    MALE = "male"
    UNKNOWN = "unknown"


_GENDER_WORDS = {
    **dict.fromkeys(("female", "f", "woman", "女", "女性", "女士"), Gender.FEMALE),
    **dict.fromkeys(("male", "m", "man", "男", "男性", "先生"), Gender.MALE),
    **dict.fromkeys(("unknown", "u", "", "-", "未知", "保密", "不详"), Gender.UNKNOWN),
}


def parse_gender(raw: str) -> Gender:
    """The gender for the usual words a person or a spreadsheet uses (男/女, male/female, M/F)."""
    found = _GENDER_WORDS.get(raw.strip().casefold())
    if found is None:
        raise InvalidMember(f"gender {raw!r} is not one of 男, 女, male, female or unknown (blank)")
    return found


def normalize_phone(raw: str) -> str:
    """The 11-digit form of a mainland mobile number typed any usual way (+86, spaces, dashes)."""
    digits = mainland_mobile(raw)
    if digits is None:
        raise InvalidPhone(f"{raw!r} is not a mainland China mobile number (11 digits starting with 13-19)")
    return digits


def check_name(raw: str) -> str:
    """The name trimmed; `InvalidMember` if longer than 64 characters or not printable."""
    name = raw.strip()
    if len(name) > MAX_NAME:
        raise InvalidMember(f"a name has at most {MAX_NAME} characters, this one has {len(name)}")
    if not name.isprintable():
        raise InvalidMember("a name must not contain control characters or line breaks")
    return name


def check_birthday(day: date | None, *, today: date | None = None) -> date | None:
    """The birthday if it is plausible: not before 1900 and not in the future."""
    if day is None:
        return None
    today = today or datetime.now(UTC).date()
    if day > today:
        raise InvalidMember(f"birthday {day.isoformat()} is in the future")
    if day < _OLDEST_BIRTHDAY:
        raise InvalidMember(f"birthday {day.isoformat()} is before 1900")
    return day


class Member(Base):
    """A member; `merged_into` is set when a duplicate was merged into another member.

    A merged member has no phone (it is freed for the survivor or a new registration);
    `released_phone` keeps the number it gave up, for the record.
    """

    __tablename__ = "members"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    phone: Mapped[str | None] = mapped_column(String(11), unique=True)
    name: Mapped[str] = mapped_column(String(64), default="")
    gender: Mapped[str] = mapped_column(String(8), default=Gender.UNKNOWN.value)
    birthday: Mapped[date | None] = mapped_column(Date)
    source_store: Mapped[str | None] = mapped_column(ForeignKey("stores.id", ondelete="SET NULL"))
    referrer_id: Mapped[str | None] = mapped_column(ForeignKey("members.id", ondelete="SET NULL"))
    channel: Mapped[str] = mapped_column(String(16))
    consent_marketing: Mapped[bool] = mapped_column(Boolean, default=False)
    consent_sms: Mapped[bool] = mapped_column(Boolean, default=False)
    merged_into: Mapped[str | None] = mapped_column(ForeignKey("members.id", ondelete="SET NULL"))
    released_phone: Mapped[str | None] = mapped_column(String(11), index=True)
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
        self.channel, self.name, self.gender = channel, check_name(name), gender
        self.birthday = check_birthday(birthday)
        self.source_store, self.referrer_id = source_store, referrer_id
        self.consent_marketing, self.consent_sms = consent_marketing, consent_sms


async def open_transaction(session: AsyncSession) -> None:
    """Start the database transaction now, so that a savepoint is never the outermost one.

    pysqlite and aiosqlite send BEGIN only before INSERT/UPDATE/DELETE. A SAVEPOINT sent
    first opens a transaction of its own, and on SQLite releasing it commits everything
    so far: a later rollback of the caller's transaction would then be partial.
    PostgreSQL needs nothing.
    """
    conn = await session.connection()
    if conn.dialect.name != "sqlite":
        return
    raw = await conn.get_raw_connection()
    if not raw.driver_connection.in_transaction:  # type: ignore[union-attr]
        await conn.exec_driver_sql("BEGIN")


def _new_member(fields: MemberFields, referrer_id: str | None, now: datetime) -> Member:
    return Member(
        id=str(uuid.uuid4()),
        phone=fields.phone,
        name=fields.name,
        gender=fields.gender.value,
        birthday=fields.birthday,
        source_store=fields.source_store,
        referrer_id=referrer_id,
        channel=fields.channel,
        consent_marketing=fields.consent_marketing,
        consent_sms=fields.consent_sms,
        merged_into=None,
        released_phone=None,
        created_at=now,
        updated_at=now,
    )


async def _insert(session: AsyncSession, members: list[Member], taken: str) -> None:
    await open_transaction(session)
    try:
        # Added inside the savepoint: begin_nested() flushes what is pending before it starts,
        # and a duplicate phone failing there would roll back the caller's whole transaction.
        async with session.begin_nested():
            session.add_all(members)
            await session.flush()
    except IntegrityError as err:  # a concurrent registration of the same phone won
        raise MemberExists(taken) from err


async def create_member(session: AsyncSession, fields: MemberFields, *, welcome: bool = True) -> Member:
    """Add a member in the caller's transaction; `MemberExists` if the phone is taken.

    `welcome` runs the creation listeners (entry level, registration points); an import of
    existing customers from another system leaves it off.
    """
    if await find_by_phone(session, fields.phone) is not None:
        raise MemberExists(f"phone {fields.phone} already belongs to a member")
    referrer_id = None
    if fields.referrer_id is not None:  # a merged referrer's credit goes to the survivor
        referrer_id = (await get_member(session, fields.referrer_id)).id
    member = _new_member(fields, referrer_id, datetime.now(UTC))
    await _insert(session, [member], f"phone {fields.phone} already belongs to a member")
    if welcome:
        for listener in _CREATED_LISTENERS:
            await listener(session, member)
    return member


async def add_members(session: AsyncSession, batch: list[MemberFields], *, welcome: bool) -> list[Member]:
    """Add many members at once (an import) or none; `MemberExists` if any phone is taken.

    Referrers are not taken here. The caller checked the phones; a till registering one of
    them meanwhile makes the whole batch fail, and the caller retries it row by row.
    """
    now = datetime.now(UTC)
    members = [_new_member(fields, None, now) for fields in batch]
    await _insert(session, members, "a phone of this batch already belongs to a member")
    if welcome:
        for member in members:
            for listener in _CREATED_LISTENERS:
                await listener(session, member)
    return members


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


# Fields head office may change; phone changes are re-validated and must stay unique.
_EDITABLE = frozenset({"phone", "name", "gender", "birthday", "consent_marketing", "consent_sms"})


async def update_member(session: AsyncSession, member_id: str, changes: dict[str, Any]) -> Member:
    """Apply `changes` (a subset of the editable fields) to a member that was not merged."""
    unknown = set(changes) - _EDITABLE
    if unknown:
        raise InvalidMember(f"cannot change {', '.join(sorted(unknown))}")
    member = await get_member(session, member_id, follow_merge=False)
    if member.merged_into is not None:
        raise MemberMerged(f"member {member_id} was merged into {member.merged_into}; change that member")
    values: dict[str, Any] = {}
    if "phone" in changes:
        phone = normalize_phone(changes["phone"])
        if phone != member.phone:
            if await find_by_phone(session, phone) is not None:
                raise MemberExists(f"phone {phone} already belongs to a member")
            values["phone"] = phone
    if "name" in changes:
        values["name"] = check_name(changes["name"])
    if "gender" in changes:
        values["gender"] = parse_gender(str(changes["gender"])).value
    if "birthday" in changes:
        values["birthday"] = check_birthday(changes["birthday"])
    for flag in ("consent_marketing", "consent_sms"):
        if flag in changes:
            values[flag] = bool(changes[flag])
    await open_transaction(session)
    try:
        async with session.begin_nested():  # changed inside it, so only the savepoint rolls back
            for name, value in values.items():
                setattr(member, name, value)
            member.updated_at = datetime.now(UTC)
            await session.flush()
    except IntegrityError as err:  # a concurrent change took the phone first
        raise MemberExists(f"phone {values.get('phone')} already belongs to a member") from err
    return member


async def merge_members(
    session: AsyncSession, from_id: str, into_id: str, *, take_phone: bool = False
) -> Member:
    """Merge the duplicate `from_id` into `into_id` in the caller's transaction; return the survivor.

    The duplicate's phone is freed (kept in `released_phone`): with `take_phone` the survivor
    takes it (the customer's new number) and releases its own; otherwise nobody has it and
    it can be registered again. Blank fields of the survivor are filled from the duplicate.
    Members merged earlier into the duplicate, and members it referred, move to the survivor.
    Then every merge hook moves its domain's rows (orders, balances, ledgers).
    """
    if from_id == into_id:
        raise MergeRefused("a member cannot be merged into itself")
    # Both rows locked by a no-op write in id order before anything is read, so two crossing
    # merges cannot deadlock or both succeed (on SQLite the first write takes the database lock).
    for member_id in sorted((from_id, into_id)):
        await session.execute(
            update(Member).where(Member.id == member_id).values(updated_at=Member.updated_at),
            execution_options={"synchronize_session": False},
        )
    rows = await session.scalars(
        select(Member).where(Member.id.in_((from_id, into_id))).execution_options(populate_existing=True)
    )
    found = {m.id: m for m in rows}
    for member_id in (from_id, into_id):
        if member_id not in found:
            raise NotFound(f"no member {member_id!r}")
    dup, keep = found[from_id], found[into_id]
    if dup.merged_into is not None:
        raise MergeRefused(f"member {from_id} was already merged into {dup.merged_into}")
    if keep.merged_into is not None:
        raise MergeRefused(
            f"member {into_id} was itself merged into {keep.merged_into}; merge into that member instead"
        )
    now = datetime.now(UTC)
    freed, dup.phone, dup.released_phone = dup.phone, None, dup.phone
    await session.flush()  # the unique phone is free before the survivor may take it
    if take_phone and freed is not None:
        dup.released_phone, keep.phone = keep.phone, freed
    keep.name = keep.name or dup.name
    keep.birthday = keep.birthday or dup.birthday
    if keep.gender == Gender.UNKNOWN.value:
        keep.gender = dup.gender
    if keep.referrer_id == dup.id:
        keep.referrer_id = dup.referrer_id if dup.referrer_id != keep.id else None
    dup.merged_into, dup.updated_at, keep.updated_at = keep.id, now, now
    await session.flush()
    await session.execute(
        update(Member).where(Member.merged_into == dup.id, Member.id != keep.id).values(merged_into=keep.id)
    )
    await session.execute(
        update(Member).where(Member.referrer_id == dup.id, Member.id != keep.id).values(referrer_id=keep.id)
    )
    for hook in MERGE_HOOKS:
        await hook(session, dup.id, keep.id)
    return keep

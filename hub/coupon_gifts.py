"""Welcome and birthday gifts (进店有礼, 生日礼): coupon packs granted automatically.

The welcome pack is granted in the transaction that creates the member (a members
creation listener), the birthday pack by the nightly job `coupons.birthday`,
`days_before` days before each member's birthday, once per member per year.

Once means once across reruns, restarts and two hubs: every granted coupon carries a
grant key naming its occasion and its place in the pack (`welcome#0.0`,
`birthday:2026#1.0`), unique per template and member, and is inserted with ON CONFLICT DO
NOTHING, so a second run inserts nothing. Gift coupons do not count against a
template's per-member limit; they do take from its total, and a template that has run
out is skipped with a log line (the member gets the rest of the pack).
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, or_, select, true, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from hub.coupon_tables import Coupon, CouponPack, CouponState, CouponTemplate, IssueSource
from hub.coupons import CouponError, new_code
from hub.db import AsyncSession, Database
from hub.errors import NotFound
from hub.members import Member

if TYPE_CHECKING:
    from hub.scheduler_jobs import JobContext

__all__ = [
    "PACK_KINDS",
    "PackIn",
    "birthday_coupons_job",
    "get_pack",
    "grant_birthday_coupons",
    "grant_pack",
    "pack_json",
    "set_pack",
    "welcome_coupons",
]

log = logging.getLogger(__name__)
PACK_KINDS = ("welcome", "birthday")
_ACTOR = "system:gifts"


class PackItem(BaseModel):
    """A template and how many of its coupons the pack holds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    template_id: str = Field(min_length=1, max_length=36)
    count: int = Field(1, strict=True, ge=1, le=20)


class PackIn(BaseModel):
    """A gift pack: its coupons and, for the birthday pack, how many days ahead it is granted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    items: list[PackItem] = Field(max_length=20)
    days_before: int = Field(0, strict=True, ge=0, le=60)
    active: bool = True


async def set_pack(session: AsyncSession, kind: str, body: PackIn, *, actor: str) -> CouponPack:
    """Replace the welcome or birthday pack; every template must exist and be active."""
    if kind not in PACK_KINDS:
        raise NotFound(f"no gift pack {kind!r}; the packs are {', '.join(PACK_KINDS)}")
    for n, item in enumerate(body.items):
        template = await session.get(CouponTemplate, item.template_id)
        if template is None:
            raise NotFound(f"items.{n}.template_id: no coupon template {item.template_id}")
        if not template.active:
            raise CouponError(f"items.{n}.template_id: coupon '{template.name}' is inactive")
    pack = await session.get(CouponPack, kind, with_for_update=True)
    values: dict[str, Any] = {
        "items": [i.model_dump() for i in body.items],
        "days_before": body.days_before,
        "active": body.active,
        "updated_by": actor,
        "updated_at": datetime.now(UTC),
    }
    if pack is None:
        pack = CouponPack(kind=kind, **values)
        session.add(pack)
    else:
        for name, value in values.items():
            setattr(pack, name, value)
    await session.flush()
    return pack


async def get_pack(session: AsyncSession, kind: str) -> CouponPack | None:
    """The pack of `kind`, or None if head office has not set one."""
    if kind not in PACK_KINDS:
        raise NotFound(f"no gift pack {kind!r}; the packs are {', '.join(PACK_KINDS)}")
    return await session.get(CouponPack, kind)


def pack_json(kind: str, pack: CouponPack | None) -> dict[str, Any]:
    """A pack as the API shows it (an unset pack is empty and inactive)."""
    if pack is None:
        return {"kind": kind, "items": [], "days_before": 0, "active": False}
    return {"kind": kind, "items": pack.items, "days_before": pack.days_before, "active": pack.active}


async def _take_one(session: AsyncSession, template_id: str, delta: int) -> bool:
    raised = await session.execute(
        update(CouponTemplate)
        .where(
            CouponTemplate.id == template_id,
            or_(
                true() if delta < 0 else CouponTemplate.total_limit.is_(None),
                CouponTemplate.issued_count + delta <= CouponTemplate.total_limit,
            ),
        )
        .values(issued_count=CouponTemplate.issued_count + delta)
        .execution_options(synchronize_session=False)
    )
    return raised.rowcount == 1  # type: ignore[attr-defined]


async def grant_pack(
    session: AsyncSession, pack: CouponPack, member_id: str, occasion: str, *, now: datetime
) -> int:
    """Grant the pack's coupons for `occasion` ("welcome", "birthday:2026"); returns how many were new."""
    source = IssueSource.WELCOME if pack.kind == "welcome" else IssueSource.BIRTHDAY
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    maker = pg_insert if dialect == "postgresql" else sqlite_insert
    granted = 0
    for n, item in enumerate(pack.items):
        template = await session.get(CouponTemplate, item["template_id"])
        if template is None or not template.active:
            log.warning(
                "gift pack %s: template %s is missing or inactive; skipped", pack.kind, item["template_id"]
            )
            continue
        if template.valid_days is not None:
            valid_from, valid_until = now, now + timedelta(days=template.valid_days)
        else:
            assert template.valid_from is not None  # noqa: S101 - TemplateIn requires both
            assert template.valid_until is not None  # noqa: S101
            valid_from, valid_until = template.valid_from, template.valid_until
            if valid_until <= now:
                log.warning("gift pack %s: coupon '%s' has expired; skipped", pack.kind, template.name)
                continue
        for k in range(int(item.get("count", 1))):
            if not await _take_one(session, template.id, 1):
                log.warning("gift pack %s: coupon '%s' has run out; skipped", pack.kind, template.name)
                break
            row = {
                "code": new_code(),
                "template_id": template.id,
                "member_id": member_id,
                "source": source.value,
                "grant_key": f"{occasion}#{n}.{k}",
                "state": CouponState.ISSUED.value,
                "valid_from": valid_from,
                "valid_until": valid_until,
                "issued_by": _ACTOR,
                "issued_at": now,
                "returned": 0,
            }
            done = await session.execute(maker(Coupon).values(row).on_conflict_do_nothing())
            if done.rowcount == 1:  # type: ignore[attr-defined]
                granted += 1
            else:  # granted before: give the count back
                await _take_one(session, template.id, -1)
    return granted


async def welcome_coupons(session: AsyncSession, member: Member) -> None:
    """Members creation listener: the welcome pack, if head office set an active one."""
    pack = await session.get(CouponPack, "welcome")
    if pack is not None and pack.active and pack.items:
        await grant_pack(session, pack, member.id, "welcome", now=datetime.now(UTC))


def _born_on(day: date) -> Any:
    month, dom = func.extract("month", Member.birthday), func.extract("day", Member.birthday)
    leap = day.year % 4 == 0 and (day.year % 100 != 0 or day.year % 400 == 0)
    if (day.month, day.day) == (2, 28) and not leap:  # 29 February birthdays on the 28th
        return (month == 2) & dom.in_((28, 29))
    return (month == day.month) & (dom == day.day)


async def grant_birthday_coupons(session: AsyncSession, today: date, *, now: datetime | None = None) -> int:
    """The birthday pack for members whose birthday is `days_before` days after `today`.

    The occasion is the year of that birthday, so a pack granted in late December for a
    January birthday counts for January's year and is not granted twice.
    """
    pack = await session.get(CouponPack, "birthday")
    if pack is None or not pack.active or not pack.items:
        return 0
    now = now or datetime.now(UTC)
    birthday = today + timedelta(days=pack.days_before)
    members = (
        await session.scalars(
            select(Member.id).where(Member.merged_into.is_(None), _born_on(birthday)).order_by(Member.id)
        )
    ).all()
    granted = 0
    for member_id in members:
        if await grant_pack(session, pack, member_id, f"birthday:{birthday.year}", now=now):
            granted += 1
    if granted:
        log.info("birthday coupons %s (birthdays %s): %d members", today, birthday, granted)
    return granted


def _days(context: JobContext) -> list[date]:
    from hub.scheduler_jobs import BIRTHDAY_CATCH_UP_DAYS  # noqa: PLC0415 - the scheduler imports this job

    if context.previous is None:
        return [context.day]
    first = max(
        context.previous + timedelta(days=1), context.day - timedelta(days=BIRTHDAY_CATCH_UP_DAYS - 1)
    )
    return [first + timedelta(days=n) for n in range((context.day - first).days + 1)]


async def birthday_coupons_job(db: Database, context: JobContext) -> str:
    """Nightly: birthday packs for the day (and days skipped since the last run), once per member per year."""
    days = _days(context)
    async with db.session() as session, session.begin():
        granted = [await grant_birthday_coupons(session, day, now=context.now) for day in days]
    span = days[0].isoformat() if len(days) == 1 else f"{days[0]}..{days[-1]}"
    return f"birthday coupons for {sum(granted)} members ({span})"

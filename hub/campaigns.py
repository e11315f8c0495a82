"""Campaigns (短信营销): a message to an audience at a local time, an optional coupon, and the results.

An audience is members matching every criterion given: any of the tags, any of the levels,
any of the RFM segments, a birthday this month or within N days, lapsed (had orders, none
in the last N days), registered at one of the stores. Nothing given is refused unless
`all_members` says so, so a typo cannot message the whole chain. The audience is computed
when the campaign is released (its send time, in its time zone), not when it is created:
the members who qualify then get it.

Releasing (the outbox worker's tick, `release_due`) issues the coupon to the audience (as
`hub.coupons.issue` does, members at the coupon's limit skipped) and queues one marketing
message per member, in one transaction: a campaign is released once, whole, or not at
all. Consent, unsubscribes and the frequency cap are applied by the outbox at send time,
and show in the results as suppressed messages with their reasons.

Results are read from the facts: messages by state; coupons issued at the release and
used, with the totals of the orders that used them; members who registered in the
attribution window (context, not attribution); and orders and net revenue of members who
were sent the message, closed within `attribution_days` after the release.
"""

from __future__ import annotations

import calendar
import logging
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import ColumnElement, Integer, Select, cast, extract, func, or_, select

from hub.coupon_tables import Coupon, CouponState, IssueSource
from hub.coupons import CouponError, get_template, issue
from hub.db import AsyncSession, Database
from hub.errors import HubError, NotFound
from hub.member_facts import MemberOrder
from hub.member_search import MemberQuery, UnknownLevel, UnknownTag, search_statement
from hub.member_segments import UnknownSegment, check_segment
from hub.member_tag_tables import MemberSegment, MemberTag, MemberTagLink
from hub.members import Member
from hub.messaging import CHANNELS, Category, NewMessage, enqueue_many, lock_for_write
from hub.messaging_tables import Campaign, CampaignState, Message, MessageState
from protocol import new_id

__all__ = [
    "MAX_AUDIENCE",
    "Audience",
    "AudienceError",
    "CampaignError",
    "CampaignIn",
    "audience_members",
    "campaign_json",
    "campaign_results",
    "cancel_campaign",
    "create_campaign",
    "get_campaign",
    "release_due",
]

log = logging.getLogger(__name__)

MAX_AUDIENCE = 200_000
_TEMPLATE = r"^[a-z][a-z0-9_.]{0,63}$"
_STORE = r"^[a-z0-9][a-z0-9-]{0,31}$"


class CampaignError(HubError):
    """A campaign request was refused; nothing was written."""


class AudienceError(CampaignError):
    """An audience names something the chain does not have; `field` is its path in the request."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class BirthdayFilter(_In):
    """Birthday this month, or within the next `within_days` days (both in the campaign's time zone)."""

    this_month: bool = False
    within_days: int | None = Field(None, strict=True, ge=1, le=60)

    @model_validator(mode="after")
    def _one(self) -> BirthdayFilter:
        if self.this_month == (self.within_days is not None):
            raise ValueError("give this_month: true or within_days, one of them")
        return self


class Audience(_In):
    """Who gets a campaign: members matching every criterion given (within a list: any of it)."""

    all_members: bool = False
    tags: list[str] = Field(default_factory=list, max_length=20)
    levels: list[str] = Field(default_factory=list, max_length=20)
    segments: list[str] = Field(default_factory=list, max_length=20)
    birthday: BirthdayFilter | None = None
    lapsed_days: int | None = Field(None, strict=True, ge=1, le=3650)
    stores: list[str] = Field(default_factory=list, max_length=200)

    @field_validator("stores")
    @classmethod
    def _stores(cls, value: list[str]) -> list[str]:
        for store in value:
            if not re.fullmatch(_STORE, store):
                raise ValueError(f"{store!r} is not a store id")
        return value

    @model_validator(mode="after")
    def _named(self) -> Audience:
        given = self.tags or self.levels or self.segments or self.birthday or self.lapsed_days or self.stores
        if not given and not self.all_members:
            raise ValueError(
                "name an audience (tags, levels, segments, birthday, lapsed_days, stores) "
                "or all_members: true"
            )
        if given and self.all_members:
            raise ValueError("all_members: true takes no other criterion")
        return self


class CampaignIn(_In):
    """A new campaign. `send_at` without an offset is local time in `timezone`; omitted: now."""

    name: str = Field(min_length=1, max_length=100)
    channel: Literal["sms"] = "sms"
    template: str = Field(pattern=_TEMPLATE)
    params: dict[str, str | int] = Field(default_factory=dict, max_length=20)
    audience: Audience
    coupon_template_id: str | None = Field(None, min_length=1, max_length=36)
    send_at: datetime | None = None
    timezone: str = "Asia/Shanghai"
    attribution_days: int = Field(7, strict=True, ge=1, le=90)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}: use an IANA name such as 'Asia/Shanghai'"
            ) from None
        return value

    def send_at_utc(self, now: datetime) -> datetime:
        """The send time in UTC (a local `send_at` read in `timezone`)."""
        if self.send_at is None:
            return now
        local = self.send_at if self.send_at.tzinfo else self.send_at.replace(tzinfo=ZoneInfo(self.timezone))
        return local.astimezone(UTC)


def campaign_json(campaign: Campaign) -> dict[str, Any]:
    """A campaign as the API shows it (send_local: the send time in its own time zone)."""
    return {
        "id": campaign.id,
        "name": campaign.name,
        "channel": campaign.channel,
        "template": campaign.template,
        "params": campaign.params,
        "audience": campaign.audience,
        "coupon_template_id": campaign.coupon_template_id,
        "send_at": campaign.send_at.isoformat(),
        "send_local": campaign.send_at.astimezone(ZoneInfo(campaign.timezone)).isoformat(),
        "timezone": campaign.timezone,
        "attribution_days": campaign.attribution_days,
        "state": campaign.state,
        "audience_size": campaign.audience_size,
        "coupons_issued": campaign.coupons_issued,
        "error": campaign.error,
        "created_by": campaign.created_by,
        "created_at": campaign.created_at.isoformat(),
        "released_at": campaign.released_at.isoformat() if campaign.released_at else None,
    }


# --------------------------------------------------------------------------- audience


def _birthday_condition(rule: BirthdayFilter, day: date) -> ColumnElement[bool]:
    month = cast(extract("month", Member.birthday), Integer)
    if rule.this_month:
        return month == day.month
    month_days = set()
    for offset in range(rule.within_days or 0):
        when = day + timedelta(days=offset)
        month_days.add(when.month * 100 + when.day)
        if when.month == 2 and when.day == 28 and not calendar.isleap(when.year):
            month_days.add(229)  # celebrated on 28 February in common years, as hub.member_search does
    return (month * 100 + cast(extract("day", Member.birthday), Integer)).in_(sorted(month_days))


async def _conditions(session: AsyncSession, audience: Audience, day: date) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [Member.merged_into.is_(None)]
    if audience.tags:
        known = set(
            (await session.scalars(select(MemberTag.code).where(MemberTag.code.in_(audience.tags)))).all()
        )
        missing = [t for t in audience.tags if t not in known]
        if missing:
            raise AudienceError("audience.tags", f"no tag {missing[0]!r}")
        conditions.append(
            Member.id.in_(select(MemberTagLink.member_id).where(MemberTagLink.tag_code.in_(audience.tags)))
        )
    if audience.levels:
        try:
            subqueries = [
                (await search_statement(session, MemberQuery(level=code)))
                .with_only_columns(Member.id)
                .order_by(None)
                .correlate(None)
                for code in audience.levels
            ]
        except (UnknownLevel, UnknownTag) as err:
            raise AudienceError("audience.levels", str(err)) from None
        conditions.append(or_(*(Member.id.in_(q) for q in subqueries)))
    if audience.segments:
        try:
            names = [check_segment(s) for s in audience.segments]
        except UnknownSegment as err:
            raise AudienceError("audience.segments", str(err)) from None
        conditions.append(
            Member.id.in_(select(MemberSegment.member_id).where(MemberSegment.segment.in_(names)))
        )
    if audience.birthday is not None:
        conditions += [Member.birthday.is_not(None), _birthday_condition(audience.birthday, day)]
    if audience.lapsed_days is not None:
        last_visit = (
            select(MemberOrder.member_id)
            .group_by(MemberOrder.member_id)
            .having(func.max(MemberOrder.business_day) < day - timedelta(days=audience.lapsed_days))
        )
        conditions.append(Member.id.in_(last_visit))
    if audience.stores:
        conditions.append(Member.source_store.in_(audience.stores))
    return conditions


async def audience_statement(session: AsyncSession, audience: Audience, day: date) -> Select[Any]:
    """SELECT of the member ids in the audience on `day` (a local date), in a stable order."""
    return select(Member.id).where(*await _conditions(session, audience, day)).order_by(Member.id)


async def audience_members(session: AsyncSession, audience: Audience, day: date) -> list[str]:
    """The audience's member ids on `day`; `CampaignError` beyond `MAX_AUDIENCE`."""
    query = await audience_statement(session, audience, day)
    ids = [str(i) for i in (await session.scalars(query.limit(MAX_AUDIENCE + 1))).all()]
    if len(ids) > MAX_AUDIENCE:
        raise CampaignError(f"the audience has more than {MAX_AUDIENCE} members; narrow it")
    return ids


# --------------------------------------------------------------------------- lifecycle


async def create_campaign(session: AsyncSession, body: CampaignIn, *, actor: str) -> Campaign:
    """Schedule a campaign; its audience is checked now (unknown tags etc.) and computed at release."""
    now = datetime.now(UTC)
    if body.channel not in CHANNELS:  # Literal already; kept in step with the outbox's channels
        raise CampaignError(f"channel must be one of {', '.join(CHANNELS)}")
    send_at = body.send_at_utc(now)
    if send_at < now - timedelta(minutes=5):
        raise CampaignError(f"send_at {send_at.isoformat()} is in the past")
    await _conditions(session, body.audience, send_at.astimezone(ZoneInfo(body.timezone)).date())
    if body.coupon_template_id is not None:
        template = await get_template(session, body.coupon_template_id)
        if not template.active:
            raise CampaignError(f"coupon template {template.name!r} is not active")
    campaign = Campaign(
        id=str(new_id()),
        name=body.name,
        channel=body.channel,
        template=body.template,
        params={k: str(v) for k, v in body.params.items()},
        audience=body.audience.model_dump(mode="json", exclude_defaults=True),
        coupon_template_id=body.coupon_template_id,
        send_at=send_at,
        timezone=body.timezone,
        attribution_days=body.attribution_days,
        state=CampaignState.SCHEDULED.value,
        created_by=actor[:80],
        created_at=now,
        updated_at=now,
    )
    session.add(campaign)
    await session.flush()
    return campaign


async def get_campaign(session: AsyncSession, campaign_id: str, *, lock: bool = False) -> Campaign:
    """The campaign; `NotFound` if unknown."""
    campaign = await session.get(Campaign, campaign_id, with_for_update=lock or None)
    if campaign is None:
        raise NotFound(f"no campaign {campaign_id}")
    return campaign


async def cancel_campaign(session: AsyncSession, campaign_id: str, *, actor: str) -> Campaign:
    """Cancel a scheduled campaign; a released one cannot be called back."""
    campaign = await get_campaign(session, campaign_id, lock=True)
    if campaign.state != CampaignState.SCHEDULED.value:
        raise CampaignError(
            f"campaign {campaign.name!r} is {campaign.state}; only a scheduled one can be cancelled"
        )
    campaign.state, campaign.cancelled_by = CampaignState.CANCELLED.value, actor[:80]
    campaign.updated_at = datetime.now(UTC)
    await session.flush()
    return campaign


async def _release(session: AsyncSession, campaign: Campaign, now: datetime) -> None:
    day = now.astimezone(ZoneInfo(campaign.timezone)).date()
    members = await audience_members(session, Audience.model_validate(campaign.audience), day)
    coupons = 0
    if campaign.coupon_template_id is not None and members:
        issued = await issue(
            session,
            campaign.coupon_template_id,
            members,
            source=IssueSource.CAMPAIGN,
            actor=f"campaign:{campaign.id}",
            skip_over_limit=True,
            now=now,
        )
        coupons = len(issued)
    await enqueue_many(
        session,
        [
            NewMessage(
                member_id=member_id,
                channel=campaign.channel,
                template=campaign.template,
                params=campaign.params,
                dedupe_key=f"campaign:{campaign.id}:{member_id}",
                send_after=now,
                category=Category.MARKETING,
                campaign_id=campaign.id,
            )
            for member_id in members
        ],
        now=now,
    )
    campaign.state, campaign.released_at, campaign.updated_at = CampaignState.RELEASED.value, now, now
    campaign.audience_size, campaign.coupons_issued = len(members), coupons
    await session.flush()


async def _due(session: AsyncSession, now: datetime) -> Campaign | None:
    query = (
        select(Campaign)
        .where(Campaign.state == CampaignState.SCHEDULED.value, Campaign.send_at <= now)
        .order_by(Campaign.send_at, Campaign.id)
        .limit(1)
    )
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return (await session.scalars(query)).first()


async def release_due(db: Database, now: datetime) -> str:
    """The outbox worker's tick: release every campaign whose send time has come, one transaction each."""
    released: list[str] = []
    while True:
        async with db.session() as session, session.begin():
            # SQLite: the write lock first, so two passes cannot both take a campaign, and the
            # savepoint below is not the outermost transaction (see hub.members.open_transaction).
            await lock_for_write(session)
            campaign = await _due(session, now)
            if campaign is None:
                break
            campaign_id, name = campaign.id, campaign.name
            try:
                async with session.begin_nested():
                    await _release(session, campaign, now)
            except (CouponError, CampaignError, NotFound, ValueError) as err:
                campaign = await get_campaign(session, campaign_id)
                campaign.state, campaign.error = CampaignState.FAILED.value, str(err)[:500]
                campaign.updated_at = now
                log.warning("campaign %s (%s) could not be released: %s", campaign_id, name, err)
                continue
        released.append(f"{name} ({campaign.audience_size})")
    return f"campaigns released: {', '.join(released)}" if released else ""


# --------------------------------------------------------------------------- results


async def campaign_results(
    session: AsyncSession, campaign_id: str, *, now: datetime | None = None
) -> dict[str, Any]:
    """Reach, coupon use, registrations and attributed orders of a released campaign."""
    now = now or datetime.now(UTC)
    campaign = await get_campaign(session, campaign_id)
    out: dict[str, Any] = {
        "campaign_id": campaign.id,
        "state": campaign.state,
        "audience": campaign.audience_size,
    }
    if campaign.released_at is None:
        return out
    start = campaign.released_at
    end = start + timedelta(days=campaign.attribution_days)
    out["window"] = {"from": start.isoformat(), "to": end.isoformat(), "complete": now >= end}
    by_state = dict(
        (
            await session.execute(
                select(Message.state, func.count())
                .where(Message.campaign_id == campaign.id)
                .group_by(Message.state)
            )
        ).all()
    )
    reasons = dict(
        (
            await session.execute(
                select(Message.last_error, func.count())
                .where(Message.campaign_id == campaign.id, Message.state == MessageState.SUPPRESSED.value)
                .group_by(Message.last_error)
            )
        ).all()
    )
    out["reach"] = {
        "queued": sum(int(n) for n in by_state.values()),
        **{state.value: int(by_state.get(state.value, 0)) for state in MessageState},
        "suppressed_reasons": {str(k): int(v) for k, v in reasons.items()},
    }
    if campaign.coupon_template_id is not None:
        used = (
            await session.execute(
                select(func.count(), func.coalesce(func.sum(Coupon.order_total_fen), 0)).where(
                    Coupon.template_id == campaign.coupon_template_id,
                    Coupon.source == IssueSource.CAMPAIGN.value,
                    Coupon.issued_at == start,
                    Coupon.state == CouponState.USED.value,
                )
            )
        ).one()
        out["coupons"] = {
            "issued": campaign.coupons_issued,
            "used": int(used[0]),
            "order_total_fen": int(used[1] or 0),
        }
    registered = (
        select(func.count()).select_from(Member).where(Member.created_at >= start, Member.created_at < end)
    )
    stores = (campaign.audience or {}).get("stores") or []
    if stores:
        registered = registered.where(Member.source_store.in_(stores))
    out["new_members"] = int(await session.scalar(registered) or 0)
    sent_to = select(Message.member_id).where(
        Message.campaign_id == campaign.id, Message.state == MessageState.SENT.value
    )
    orders = (
        await session.execute(
            select(
                func.count(),
                func.count(func.distinct(MemberOrder.member_id)),
                func.coalesce(func.sum(MemberOrder.total_fen - MemberOrder.refunded_fen), 0),
            ).where(
                MemberOrder.member_id.in_(sent_to),
                MemberOrder.closed_at >= start,
                MemberOrder.closed_at < end,
            )
        )
    ).one()
    out["attributed"] = {"orders": int(orders[0]), "buyers": int(orders[1]), "revenue_fen": int(orders[2])}
    return out

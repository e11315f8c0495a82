"""Coupons (优惠券): templates, issuance (members, audiences, campaigns, claim codes, the coupon
centre), per-member and total limits, and statistics.

Limits hold under concurrency without locks held across statements:
- the total: one conditional UPDATE raises `issued_count` only while it stays within
  `total_limit`, so two issues racing for the last coupons cannot both get them;
- per member: the n-th coupon a member gets from a template is stored with grant key
  `#n` (unique per template and member), so two claims racing for the same number make
  one fail on the unique index instead of both passing the count.
Redemption, release and the return on void/refund are in `hub.coupon_redeem`.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from hub.coupon_schemas import TemplateChange, TemplateIn
from hub.coupon_tables import Coupon, CouponState, CouponTemplate, IssueSource
from hub.db import AsyncSession
from hub.errors import HubError, NotFound
from hub.member_search import MemberQuery, search_statement
from hub.members import Member, get_member, open_transaction
from hub.models import HubOrder
from protocol.ids import new_id

__all__ = [
    "MAX_AUDIENCE",
    "CouponError",
    "TemplateChange",
    "TemplateIn",
    "TemplateStats",
    "claim",
    "claimable_templates",
    "coupon_json",
    "create_template",
    "get_template",
    "issue",
    "issue_to_audience",
    "list_templates",
    "member_coupons",
    "new_code",
    "revoke",
    "template_json",
    "template_stats",
    "update_template",
]

MAX_AUDIENCE = 200_000  # members one audience issue may reach; more is a mistake worth stopping
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud and typed at a till
_CODE_LENGTH = 12


class CouponError(HubError):
    """A coupon operation refused (limit reached, not claimable, expired, already used)."""


def new_code() -> str:
    """A fresh 12-character coupon code (60 bits: unguessable, and short enough to type)."""
    return "".join(secrets.choice(_CODE_ALPHABET) for _ in range(_CODE_LENGTH))


def _now() -> datetime:
    return datetime.now(UTC)


async def create_template(session: AsyncSession, body: TemplateIn, *, actor: str) -> CouponTemplate:
    """Add a template; `CouponError` if its claim code is taken."""
    if body.claim_code is not None:
        taken = await session.scalar(
            select(CouponTemplate.id).where(CouponTemplate.claim_code == body.claim_code.upper())
        )
        if taken is not None:
            raise CouponError(f"claim code {body.claim_code.upper()} is already used by template {taken}")
    now = _now()
    template = CouponTemplate(
        id=str(new_id()),
        **body.model_dump(exclude={"claim_code", "valid_from", "valid_until"}),
        claim_code=body.claim_code.upper() if body.claim_code else None,
        valid_from=body.valid_from.astimezone(UTC) if body.valid_from else None,
        valid_until=body.valid_until.astimezone(UTC) if body.valid_until else None,
        issued_count=0,
        active=True,
        created_by=actor,
        created_at=now,
        updated_at=now,
    )
    session.add(template)
    await session.flush()
    return template


async def get_template(session: AsyncSession, template_id: str) -> CouponTemplate:
    """The template, or `NotFound`."""
    template = await session.get(CouponTemplate, template_id)
    if template is None:
        raise NotFound(f"no coupon template {template_id}")
    return template


async def list_templates(session: AsyncSession, *, active_only: bool = False) -> Sequence[CouponTemplate]:
    """Templates, newest first."""
    query = select(CouponTemplate).order_by(CouponTemplate.id.desc())
    if active_only:
        query = query.where(CouponTemplate.active.is_(True))
    return (await session.scalars(query)).all()


async def update_template(session: AsyncSession, template_id: str, change: TemplateChange) -> CouponTemplate:
    """Rename, (de)activate, list or unlist in the centre, change limits (never below what was issued)."""
    template = await session.get(CouponTemplate, template_id, with_for_update=True)
    if template is None:
        raise NotFound(f"no coupon template {template_id}")
    values = change.model_dump(exclude_unset=True)
    total = values.get("total_limit", template.total_limit)
    if total is not None and total < template.issued_count:
        raise CouponError(f"total_limit {total} is below the {template.issued_count} coupons already issued")
    for name, value in values.items():
        setattr(template, name, value)
    template.updated_at = _now()
    return template


def _validity(template: CouponTemplate, now: datetime) -> tuple[datetime, datetime]:
    if template.valid_days is not None:
        return now, now + timedelta(days=template.valid_days)
    assert template.valid_from is not None  # noqa: S101 - TemplateIn requires both
    assert template.valid_until is not None  # noqa: S101
    return template.valid_from, template.valid_until


async def _take_stock(session: AsyncSession, template: CouponTemplate, count: int) -> None:
    """Raise the template's issued count by `count` if the total limit allows, atomically."""
    raised = await session.execute(
        update(CouponTemplate)
        .where(
            CouponTemplate.id == template.id,
            or_(
                CouponTemplate.total_limit.is_(None),
                CouponTemplate.issued_count + count <= CouponTemplate.total_limit,
            ),
        )
        .values(issued_count=CouponTemplate.issued_count + count)
        .execution_options(synchronize_session=False)
    )
    if raised.rowcount != 1:  # type: ignore[attr-defined]
        await session.refresh(template)
        left = (template.total_limit or 0) - template.issued_count
        raise CouponError(
            f"coupon '{template.name}' has {max(left, 0)} left of {template.total_limit}; none issued"
        )


def _usable(template: CouponTemplate, now: datetime) -> None:
    if not template.active:
        raise CouponError(f"coupon '{template.name}' is no longer issued (inactive)")
    if template.valid_until is not None and template.valid_until <= now:
        raise CouponError(f"coupon '{template.name}' expired on {template.valid_until.isoformat()}")


async def _held(session: AsyncSession, template_id: str, member_ids: list[str]) -> dict[str, int]:
    rows = await session.execute(
        select(Coupon.member_id, func.count())
        .where(
            Coupon.template_id == template_id, Coupon.member_id.in_(member_ids), Coupon.grant_key.like("#%")
        )
        .group_by(Coupon.member_id)
    )
    return {member_id: int(n) for member_id, n in rows.all()}


async def issue(
    session: AsyncSession,
    template_id: str,
    member_ids: Sequence[str],
    *,
    source: IssueSource,
    actor: str,
    skip_over_limit: bool = False,
    now: datetime | None = None,
) -> list[Coupon]:
    """Give one coupon from the template to each member, within the per-member and total limits.

    A member at the per-member limit refuses the whole issue, or, with `skip_over_limit`
    (an audience), is skipped. All or nothing: a refusal raises before anything is kept.
    """
    now = now or _now()
    template = await get_template(session, template_id)
    _usable(template, now)
    ids = list(dict.fromkeys(member_ids))
    held = await _held(session, template.id, ids) if ids else {}
    over = [m for m in ids if held.get(m, 0) >= template.per_member_limit]
    if over and not skip_over_limit:
        raise CouponError(
            f"member {over[0]} already has {template.per_member_limit} of '{template.name}' "
            f"(the per-member limit){f' and {len(over) - 1} more' if len(over) > 1 else ''}"
        )
    ids = [m for m in ids if m not in over]
    if not ids:
        return []
    await _take_stock(session, template, len(ids))
    valid_from, valid_until = _validity(template, now)
    coupons = [
        Coupon(
            code=new_code(),
            template_id=template.id,
            member_id=member_id,
            source=source.value,
            grant_key=f"#{held.get(member_id, 0) + 1}",
            state=CouponState.ISSUED.value,
            valid_from=valid_from,
            valid_until=valid_until,
            issued_by=actor,
            issued_at=now,
            returned=0,
        )
        for member_id in ids
    ]
    await open_transaction(session)
    try:
        async with session.begin_nested():
            session.add_all(coupons)
            await session.flush()
    except IntegrityError as err:  # the same member got the same numbered coupon at this instant
        raise CouponError(
            f"another issue of '{template.name}' to these members ran at the same time; retry"
        ) from err
    return coupons


async def issue_to_audience(
    session: AsyncSession,
    template_id: str,
    *,
    tag: str | None = None,
    segment: str | None = None,
    level: str | None = None,
    actor: str,
) -> list[Coupon]:
    """One coupon to every live member with the tag / in the segment / at the level (all given must hold).

    Members already at the per-member limit are skipped; the source is `campaign` when the
    template belongs to a campaign. `ValueError` for an unknown tag, segment or level.
    """
    if tag is None and segment is None and level is None:
        raise ValueError("name an audience: tag, segment or level")
    template = await get_template(session, template_id)
    query = await search_statement(session, MemberQuery(tag=tag, segment=segment, level=level))
    members = (
        await session.scalars(query.with_only_columns(Member.id).order_by(None).limit(MAX_AUDIENCE + 1))
    ).all()
    if len(members) > MAX_AUDIENCE:
        raise CouponError(f"the audience has more than {MAX_AUDIENCE} members; narrow it")
    source = IssueSource.CAMPAIGN if template.campaign else IssueSource.AUDIENCE
    return await issue(session, template.id, list(members), source=source, actor=actor, skip_over_limit=True)


def _in_store(template: CouponTemplate, store: str | None) -> bool:
    return store is None or template.stores is None or store in template.stores


async def claimable_templates(
    session: AsyncSession, member_id: str | None, *, store: str | None = None
) -> list[dict[str, Any]]:
    """The coupon centre: claimable templates with stock left, and how many more the member may claim."""
    now = _now()
    found = await session.scalars(
        select(CouponTemplate)
        .where(
            CouponTemplate.active.is_(True),
            CouponTemplate.claimable.is_(True),
            or_(CouponTemplate.valid_until.is_(None), CouponTemplate.valid_until > now),
            or_(
                CouponTemplate.total_limit.is_(None), CouponTemplate.issued_count < CouponTemplate.total_limit
            ),
        )
        .order_by(CouponTemplate.id)
    )
    templates = [t for t in found.all() if _in_store(t, store)]
    held: dict[str, int] = {}
    if member_id is not None and templates:
        rows = await session.execute(
            select(Coupon.template_id, func.count())
            .where(
                Coupon.member_id == member_id,
                Coupon.template_id.in_([t.id for t in templates]),
                Coupon.grant_key.like("#%"),
            )
            .group_by(Coupon.template_id)
        )
        held = {t: int(n) for t, n in rows.all()}
    out = []
    for template in templates:
        item = template_json(template)
        item["left"] = None if template.total_limit is None else template.total_limit - template.issued_count
        if member_id is not None:
            item["may_claim"] = template.per_member_limit - held.get(template.id, 0)
        out.append(item)
    return out


async def claim(
    session: AsyncSession, member_id: str, *, template_id: str | None = None, claim_code: str | None = None
) -> Coupon:
    """A member claims a coupon in the centre (`template_id`) or with a claim code."""
    if (template_id is None) == (claim_code is None):
        raise ValueError("give exactly one of template_id or claim_code")
    member = await get_member(session, member_id)
    if claim_code is not None:
        template = await session.scalar(
            select(CouponTemplate).where(CouponTemplate.claim_code == claim_code.strip().upper())
        )
        if template is None:
            raise NotFound(f"no coupon has the claim code {claim_code.strip().upper()}")
        source = IssueSource.CLAIM_CODE
    else:
        assert template_id is not None  # noqa: S101 - checked above
        template = await get_template(session, template_id)
        if not template.claimable:
            raise CouponError(
                f"coupon '{template.name}' is not in the coupon centre; it is issued by head office"
            )
        source = IssueSource.CENTRE
    (coupon,) = await issue(session, template.id, [member.id], source=source, actor=f"member:{member.id}")
    return coupon


async def revoke(session: AsyncSession, code: str, *, actor: str) -> Coupon:
    """Take back an unused coupon (issued by mistake)."""
    done = await session.execute(
        update(Coupon)
        .where(Coupon.code == code, Coupon.state == CouponState.ISSUED.value)
        .values(state=CouponState.REVOKED.value)
        .execution_options(synchronize_session=False)
    )
    coupon = await session.get(Coupon, code, populate_existing=True)
    if coupon is None:
        raise NotFound(f"no coupon {code}")
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise CouponError(f"coupon {code} is {coupon.state}; only an unused coupon can be revoked")
    return coupon


async def member_coupons(
    session: AsyncSession, member_id: str, *, state: CouponState | None = None
) -> list[tuple[Coupon, CouponTemplate]]:
    """A member's coupons with their templates, soonest expiry first."""
    query = (
        select(Coupon, CouponTemplate)
        .join(CouponTemplate, CouponTemplate.id == Coupon.template_id)
        .where(Coupon.member_id == member_id)
        .order_by(Coupon.valid_until, Coupon.code)
    )
    if state is not None:
        query = query.where(Coupon.state == state.value)
    return [(c, t) for c, t in (await session.execute(query)).all()]


@dataclass(frozen=True)
class TemplateStats:
    """What a template did: coupons issued (claimed among them), used, and the orders they were used on."""

    issued: int
    claimed: int
    used: int
    revoked: int
    orders_fen: int  # revenue: the totals of the paid orders that used them

    def as_json(self) -> dict[str, int]:
        """The JSON the API answers with."""
        return {
            "issued": self.issued,
            "claimed": self.claimed,
            "used": self.used,
            "revoked": self.revoked,
            "revenue_fen": self.orders_fen,
        }


async def template_stats(session: AsyncSession, template_id: str) -> TemplateStats:
    """Counts for one template; revenue counts paid orders only (a voided one gave its coupon back)."""
    await get_template(session, template_id)
    claimed = (IssueSource.CENTRE.value, IssueSource.CLAIM_CODE.value)
    row = (
        await session.execute(
            select(
                func.count(),
                func.coalesce(func.sum(case((Coupon.source.in_(claimed), 1), else_=0)), 0),
                func.coalesce(func.sum(case((Coupon.state == CouponState.USED.value, 1), else_=0)), 0),
                func.coalesce(func.sum(case((Coupon.state == CouponState.REVOKED.value, 1), else_=0)), 0),
            ).where(Coupon.template_id == template_id)
        )
    ).one()
    revenue = await session.scalar(
        select(func.coalesce(func.sum(HubOrder.total_fen), 0))
        .join(Coupon, Coupon.used_order_id == HubOrder.id)
        .where(
            Coupon.template_id == template_id,
            Coupon.state == CouponState.USED.value,
            HubOrder.status == "paid",
        )
    )
    return TemplateStats(int(row[0]), int(row[1]), int(row[2]), int(row[3]), int(revenue or 0))


def template_json(template: CouponTemplate) -> dict[str, Any]:
    """A template as the API shows it."""
    return {
        "id": template.id,
        "name": template.name,
        "kind": template.kind,
        "amount_off_fen": template.amount_off_fen,
        "percent_off_bp": template.percent_off_bp,
        "cap_fen": template.cap_fen,
        "threshold_fen": template.threshold_fen,
        "skus": template.skus,
        "free_sku": template.free_sku,
        "valid_from": template.valid_from.isoformat() if template.valid_from else None,
        "valid_until": template.valid_until.isoformat() if template.valid_until else None,
        "valid_days": template.valid_days,
        "per_member_limit": template.per_member_limit,
        "total_limit": template.total_limit,
        "issued": template.issued_count,
        "claimable": template.claimable,
        "claim_code": template.claim_code,
        "campaign": template.campaign,
        "stores": template.stores,
        "active": template.active,
        "created_by": template.created_by,
        "created_at": template.created_at.isoformat(),
    }


def coupon_json(coupon: Coupon, template: CouponTemplate | None = None) -> dict[str, Any]:
    """A coupon as the API and the till show it."""
    out: dict[str, Any] = {
        "code": coupon.code,
        "template_id": coupon.template_id,
        "member_id": coupon.member_id,
        "source": coupon.source,
        "state": coupon.state,
        "valid_from": coupon.valid_from.isoformat(),
        "valid_until": coupon.valid_until.isoformat(),
        "issued_at": coupon.issued_at.isoformat(),
        "used_at": coupon.used_at.isoformat() if coupon.used_at else None,
        "used_store": coupon.used_store,
        "used_order_id": coupon.used_order_id,
    }
    if template is not None:
        out["name"] = template.name
        out["kind"] = template.kind
    return out

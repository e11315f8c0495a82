"""Referrals (推广员 / 裂变返佣): rules, promoters and share links, attributing friends, registration rewards.

A promoter is a member with a share code; each (campaign, store, channel) they share under
gets its own code (`ReferralLink`), so a registration or a purchase carries one code and
the hub reads the parameters from its own table. A friend is attributed to one promoter,
once, and only while new: the fraud guards refuse self-referral, the promoter's own phone
(now or given up earlier), a phone that was a member's before, a friend who was already a
member (older than `NEW_MEMBER_GRACE` or with a paid order) and a referral cycle.

Registration rewards (points and a coupon for the promoter, a coupon for the friend) are
granted under the promoter's row lock, so the monthly limit holds under concurrency; one
that cannot be granted (a coupon out of stock) is recorded as refused, with the reason, and
the registration stands. Commissions on the friend's orders are in `hub.referral_sales`.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from hub import points
from hub.coupon_tables import IssueSource
from hub.coupons import CouponError, issue
from hub.db import AsyncSession
from hub.errors import NotFound
from hub.loyalty_rules import LOYALTY_ZONE, load_points_rules
from hub.member_facts import MemberOrder
from hub.members import Member, MemberFields, create_member, get_member, open_transaction
from hub.models import Store
from hub.referral_rules import (
    ReferralError,
    RuleChange,
    RuleIn,
    create_rule,
    list_rules,
    rule_json,
    update_rule,
)
from hub.referral_tables import Attribution, Promoter, ReferralLink, ReferralReward, ReferralRule

__all__ = [
    "NEW_MEMBER_GRACE",
    "ReferralError",
    "ReferralRefused",
    "RuleChange",
    "RuleIn",
    "attribute",
    "attribute_registration",
    "attribution_json",
    "create_rule",
    "get_promoter",
    "link_for",
    "link_json",
    "list_rules",
    "lock_promoters",
    "make_promoter",
    "month_of",
    "promoter_friends",
    "promoter_json",
    "register_with_code",
    "resolve_code",
    "rule_json",
    "update_rule",
]

# A member attributed by a link or an order (not at registration) must be at most this old.
NEW_MEMBER_GRACE = timedelta(hours=24)
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud and typed
_MAX_CHAIN = 64  # a referral chain longer than this is treated as a cycle


class ReferralRefused(ReferralError):
    """A fraud guard refused to attribute a friend to a promoter."""


def month_of(moment: datetime) -> str:
    """The chain-calendar month (YYYY-MM) caps and limits count in."""
    return moment.astimezone(LOYALTY_ZONE).strftime("%Y-%m")


def _new_code() -> str:
    return "".join(secrets.choice(_CODE_ALPHABET) for _ in range(8))


def promoter_json(promoter: Promoter) -> dict[str, Any]:
    """A promoter as the API shows it."""
    return {
        "member_id": promoter.member_id,
        "code": promoter.code,
        "active": promoter.active,
        "created_at": promoter.created_at.isoformat(),
    }


def link_json(link: ReferralLink) -> dict[str, Any]:
    """A share link: the code a registration or an order carries, and the path a QR code points to."""
    params = "&".join(
        f"{k}={v}" for k, v in (("c", link.campaign), ("s", link.store), ("ch", link.channel)) if v
    )
    return {
        "code": link.code,
        "promoter_id": link.promoter_id,
        "campaign": link.campaign,
        "store": link.store,
        "channel": link.channel,
        "path": f"/r/{link.code}" + (f"?{params}" if params else ""),
    }


def attribution_json(a: Attribution) -> dict[str, Any]:
    """An attribution as the API shows it."""
    return {
        "friend_id": a.friend_id,
        "promoter_id": a.promoter_id,
        "link_code": a.link_code,
        "rule_id": a.rule_id,
        "via": a.via,
        "campaign": a.campaign,
        "store": a.store,
        "channel": a.channel,
        "created_at": a.created_at.isoformat(),
    }


async def get_promoter(session: AsyncSession, member_id: str) -> Promoter:
    """The promoter, or `NotFound`."""
    promoter = await session.get(Promoter, member_id, populate_existing=True)
    if promoter is None:
        raise NotFound(f"member {member_id} is not a promoter")
    return promoter


async def make_promoter(session: AsyncSession, member_id: str, *, actor: str) -> tuple[Promoter, bool]:
    """Make a member a promoter (again, if they were stopped); (promoter, created)."""
    member = await get_member(session, member_id)
    now = datetime.now(UTC)
    found = await session.get(Promoter, member.id, with_for_update=True)
    if found is not None:
        found.active, found.updated_at = True, now
        return found, False
    promoter = Promoter(
        member_id=member.id, code=_new_code(), active=True, created_by=actor[:80], created_at=now
    )
    promoter.updated_at = now
    await open_transaction(session)
    try:
        async with session.begin_nested():
            session.add(promoter)
            await session.flush()
            session.add(ReferralLink(code=promoter.code, promoter_id=member.id, created_at=now))
            await session.flush()
    except IntegrityError as err:
        raise ReferralError(f"member {member.id} was made a promoter at the same time; retry") from err
    return promoter, True


async def link_for(
    session: AsyncSession, promoter_id: str, *, campaign: str = "", store: str = "", channel: str = ""
) -> ReferralLink:
    """The promoter's share link with these parameters (made the first time it is asked for)."""
    promoter = await get_promoter(session, promoter_id)
    if not promoter.active:
        raise ReferralError(f"promoter {promoter_id} is stopped; make them a promoter again first")
    if store and await session.get(Store, store) is None:
        raise NotFound(f"no store {store!r}")
    params = {"campaign": campaign, "store": store, "channel": channel}
    query = select(ReferralLink).where(
        ReferralLink.promoter_id == promoter.member_id,
        *(getattr(ReferralLink, k) == v for k, v in params.items()),
    )
    found = await session.scalar(query)
    if found is not None:
        return found
    link = ReferralLink(
        code=_new_code(), promoter_id=promoter.member_id, **params, created_at=datetime.now(UTC)
    )
    await open_transaction(session)
    try:
        async with session.begin_nested():
            session.add(link)
            await session.flush()
    except IntegrityError:  # the same link was asked for at the same time: use that one
        found = await session.scalar(query)
        if found is None:
            raise
        return found
    return link


async def resolve_code(session: AsyncSession, code: str) -> ReferralLink:
    """The link of a share code (any case), if its promoter is active."""
    link = await session.get(ReferralLink, code.strip().upper())
    if link is None:
        raise NotFound(f"no share code {code.strip().upper()}")
    promoter = await get_promoter(session, link.promoter_id)
    if not promoter.active:
        raise ReferralError(f"share code {link.code} belongs to a promoter who was stopped")
    return link


async def lock_promoters(session: AsyncSession, member_ids: Sequence[str]) -> None:
    """Lock promoter rows for this transaction, in id order so two transactions cannot deadlock."""
    for member_id in sorted(set(member_ids)):
        await session.execute(
            update(Promoter)
            .where(Promoter.member_id == member_id)
            .values(updated_at=Promoter.updated_at)
            .execution_options(synchronize_session=False)
        )


async def _rule_for(session: AsyncSession, campaign: str) -> ReferralRule | None:
    rules = (
        await session.scalars(
            select(ReferralRule).where(
                ReferralRule.active.is_(True), ReferralRule.campaign.in_({campaign, ""})
            )
        )
    ).all()
    return next((r for r in rules if r.campaign == campaign), None) or next(iter(rules), None)


async def _in_chain(session: AsyncSession, start: str, wanted: str) -> bool:
    """Whether `wanted` is `start` or up `start`'s chain of promoters (attributions)."""
    current: str | None = start
    for _ in range(_MAX_CHAIN):
        if current is None:
            return False
        if current == wanted:
            return True
        current = await session.scalar(
            select(Attribution.promoter_id).where(Attribution.friend_id == current)
        )
    return True


async def _guard(
    session: AsyncSession, promoter: Member, friend: Member, *, new_registration: bool, order_id: str | None
) -> None:
    """Raise `ReferralRefused` if attributing `friend` to `promoter` is self-referral, the same phone,
    a friend who was already a member, or a cycle."""
    if promoter.id == friend.id:
        raise ReferralRefused("a member cannot refer themselves")
    if friend.phone is not None and friend.phone in {promoter.phone, promoter.released_phone}:
        raise ReferralRefused("the friend's phone is the promoter's (now or before)")
    if friend.phone is not None:
        before = await session.scalar(
            select(Member.id).where(Member.released_phone == friend.phone, Member.id != friend.id).limit(1)
        )
        if before is not None:
            raise ReferralRefused(
                f"phone {friend.phone} was a member's before; referrals are for new customers"
            )
    if await session.get(Attribution, friend.id) is not None:
        raise ReferralRefused("the friend was already referred by a promoter")
    if not new_registration:
        if friend.created_at < datetime.now(UTC) - NEW_MEMBER_GRACE:
            raise ReferralRefused("the friend was already a member; referrals are for new customers")
        ordered = await session.scalar(
            select(MemberOrder.order_id)
            .where(MemberOrder.member_id == friend.id, MemberOrder.order_id != (order_id or ""))
            .limit(1)
        )
        if ordered is not None:
            raise ReferralRefused("the friend already bought as a member; referrals are for new customers")
    if await _in_chain(session, promoter.id, friend.id):
        raise ReferralRefused("the friend is up the promoter's own referral chain (a cycle)")


async def attribute(
    session: AsyncSession,
    friend_id: str,
    link: ReferralLink | None,
    *,
    via: str,
    promoter_id: str | None = None,
    order_id: str | None = None,
    now: datetime | None = None,
) -> Attribution:
    """Attribute a friend to a link's promoter (or `promoter_id` with no link) and grant the
    registration rewards; `ReferralRefused` (nothing written) when a fraud guard says no.

    `order_id` is the order that carried the code (via "order"): it does not count as an
    earlier purchase.
    """
    now = now or datetime.now(UTC)
    target = link.promoter_id if link is not None else promoter_id
    if target is None:
        raise ValueError("attribute needs a link or a promoter_id")
    await open_transaction(session)
    await lock_promoters(session, [target])  # rewards and their monthly limit are decided under it
    promoter_row = await get_promoter(session, target)
    if not promoter_row.active:
        raise ReferralRefused(f"promoter {target} is stopped")
    promoter = await get_member(session, target)
    friend = await get_member(session, friend_id)
    await _guard(session, promoter, friend, new_registration=via == "registration", order_id=order_id)
    rule = await _rule_for(session, link.campaign if link is not None else "")
    row = Attribution(
        friend_id=friend.id,
        promoter_id=promoter.id,
        link_code=link.code if link is not None else None,
        rule_id=rule.id if rule is not None else None,
        via=via,
        campaign=link.campaign if link is not None else "",
        store=link.store if link is not None else "",
        channel=link.channel if link is not None else "",
        created_at=now,
    )
    try:
        async with session.begin_nested():
            session.add(row)
            await session.flush()
    except IntegrityError as err:
        raise ReferralRefused("the friend was referred by another promoter at the same time") from err
    if friend.referrer_id is None:
        friend.referrer_id = promoter.id
    if rule is not None:
        await _grant_rewards(session, rule, promoter.id, friend.id, now)
    await session.flush()
    return row


async def _grant_rewards(
    session: AsyncSession, rule: ReferralRule, promoter_id: str, friend_id: str, now: datetime
) -> None:
    """The rule's registration rewards, each recorded as granted or refused (with the reason)."""
    month = month_of(now)
    rows: list[dict[str, Any]] = []

    def record(
        kind: str, member_id: str, *, points_: int = 0, reference: str | None = None, reason: str = ""
    ) -> None:
        rows.append(
            {
                "friend_id": friend_id,
                "member_id": member_id,
                "kind": kind,
                "granted": not reason,
                "points": points_ if not reason else 0,
                "reference": reference,
                "reason": reason[:200],
                "month": month,
                "created_at": now,
            }
        )

    promoter_limit = ""
    if rule.monthly_register_limit is not None:
        rewarded = await session.scalar(
            select(func.count(func.distinct(ReferralReward.friend_id))).where(
                ReferralReward.member_id == promoter_id,
                ReferralReward.month == month,
                ReferralReward.granted.is_(True),
                ReferralReward.kind.in_(("promoter_points", "promoter_coupon")),
            )
        )
        if int(rewarded or 0) >= rule.monthly_register_limit:
            promoter_limit = (
                f"the promoter reached this month's {rule.monthly_register_limit} rewarded friends"
            )
    if rule.register_points:
        if promoter_limit:
            record("promoter_points", promoter_id, reason=promoter_limit)
        else:
            expires = (await load_points_rules(session)).expiry.expires_at(now)
            lot = await points.credit(
                session,
                promoter_id,
                rule.register_points,
                kind="reward",
                source=f"referral:{friend_id}",
                expires_at=expires,
                now=now,
                note="a referred friend registered",
            )
            record("promoter_points", promoter_id, points_=rule.register_points, reference=f"lot:{lot}")
    for kind, member_id, template_id in (
        ("promoter_coupon", promoter_id, rule.register_coupon_template),
        ("friend_coupon", friend_id, rule.friend_coupon_template),
    ):
        if template_id is None:
            continue
        if promoter_limit and kind == "promoter_coupon":
            record(kind, member_id, reason=promoter_limit)
            continue
        try:
            (coupon,) = await issue(
                session, template_id, [member_id], source=IssueSource.CAMPAIGN, actor=f"referral:{friend_id}"
            )
        except (CouponError, NotFound) as err:
            record(kind, member_id, reason=f"coupon not issued: {err}")
        else:
            record(kind, member_id, reference=coupon.code)
    if rows:
        await session.execute(insert(ReferralReward), rows)


async def register_with_code(
    session: AsyncSession, code: str, fields: MemberFields
) -> tuple[Member, Attribution | None, str | None]:
    """Register a member who came through a share code: (member, attribution, why not attributed).

    The member is registered even when a fraud guard refuses the referral (they are a real
    customer); the guard's reason comes back instead of the attribution.
    """
    link = await resolve_code(session, code)
    if fields.referrer_id is not None:
        raise ValueError("a registration through a share code takes its referrer from the code")
    member = await create_member(session, fields)
    done, refused = await attribute_registration(session, member.id, link)
    return member, done, refused


async def attribute_registration(
    session: AsyncSession, member_id: str, link: ReferralLink
) -> tuple[Attribution | None, str | None]:
    """Attribute a member just registered through `link`: (attribution, None), or (None, the
    fraud guard's reason) with nothing of the referral written and the registration standing."""
    try:
        async with session.begin_nested():
            return await attribute(session, member_id, link, via="registration"), None
    except ReferralRefused as err:
        return None, str(err)


async def promoter_friends(session: AsyncSession, promoter_id: str, *, limit: int = 100) -> list[Attribution]:
    """The promoter's attributed friends, newest first."""
    rows = await session.scalars(
        select(Attribution)
        .where(Attribution.promoter_id == promoter_id)
        .order_by(Attribution.created_at.desc())
        .limit(limit)
    )
    return list(rows.all())

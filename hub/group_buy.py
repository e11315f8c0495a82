"""Group buy (拼团): members open or join groups of an offer, pay, and get their order when the group fills.

Every join runs under the offer's row lock (PostgreSQL `FOR UPDATE`; SQLite has one
writer), so joins of one offer are serialised: the place count, the stock reservation and
the payment are decided together and never oversold. Opening a group reserves a whole
group's places (`hub.group_buy_tables`), so a group that exists can always fill, and a
member "joining any group" is put in the fullest open group before a new one is opened.

Payment is taken in the join's transaction: from stored value (`hub.stored_value.debit`,
the ledger entry tied to the participation as its order) or recorded as an outside payment
by its reference. A retried join with the same idempotency key answers with the first
outcome. A group whose time runs out is expired by `expire_due` (the outbox worker's tick):
each paid place is refunded — stored value back to the buckets it came from, an outside
payment recorded as a refund finance pays back — and the places return to the offer's stock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import func, select, update
from sqlalchemy.orm.attributes import set_committed_value

from hub.db import AsyncSession, Database
from hub.errors import HubError, NotFound
from hub.group_buy_tables import (
    Group,
    GroupBuyOffer,
    GroupState,
    OfferState,
    Participation,
    ParticipationState,
)
from hub.messaging import Category, enqueue_message, lock_for_write
from hub.stored_value import Source, StoredValueError, debit, move, resolve_member
from hub.stored_value_tables import LedgerEntry, LedgerKind
from protocol import format_yuan, new_id

__all__ = [
    "GroupBuyError",
    "JoinIn",
    "JoinResult",
    "OfferIn",
    "close_offer",
    "create_offer",
    "expire_due",
    "expire_groups",
    "get_offer",
    "group_json",
    "join",
    "offer_json",
    "participation_json",
]

_EXPIRE_BATCH = 100


class GroupBuyError(HubError):
    """A group-buy request was refused; nothing was written."""


class OfferIn(BaseModel):
    """A new group-buy offer."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=100)
    sku: str = Field(min_length=1, max_length=64)
    price_fen: int = Field(strict=True, ge=1, le=10**9)
    list_price_fen: int | None = Field(None, strict=True, ge=1, le=10**9)
    group_size: int = Field(strict=True, ge=2, le=50)
    time_limit_minutes: int = Field(strict=True, ge=5, le=14 * 24 * 60)
    stock: int = Field(strict=True, ge=1, le=1_000_000)
    per_member_limit: int = Field(1, strict=True, ge=1, le=100)
    starts_at: datetime
    ends_at: datetime

    @model_validator(mode="after")
    def _consistent(self) -> OfferIn:
        if self.starts_at.tzinfo is None or self.ends_at.tzinfo is None:
            raise ValueError("starts_at and ends_at need a time zone offset")
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        if self.stock < self.group_size:
            raise ValueError(f"stock {self.stock} cannot fill even one group of {self.group_size}")
        if self.list_price_fen is not None and self.list_price_fen < self.price_fen:
            raise ValueError("list_price_fen must not be below price_fen")
        return self


class JoinIn(BaseModel):
    """A join: `group_id` for a friend's group, `open_new` to lead a new one, neither for any open group."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    member_id: str = Field(min_length=1, max_length=36)
    group_id: str | None = Field(None, min_length=1, max_length=36)
    open_new: bool = False
    payment_method: Literal["stored_value", "external"]
    payment_reference: str | None = Field(None, min_length=1, max_length=64)
    idempotency_key: str = Field(min_length=8, max_length=80)

    @model_validator(mode="after")
    def _consistent(self) -> JoinIn:
        if self.group_id is not None and self.open_new:
            raise ValueError("give group_id to join a group or open_new to open one, not both")
        if self.payment_method == "external" and not self.payment_reference:
            raise ValueError("an external payment needs its payment_reference")
        if self.payment_method == "stored_value" and self.payment_reference:
            raise ValueError("a stored-value payment takes no payment_reference (the debit is made here)")
        return self


@dataclass(frozen=True)
class JoinResult:
    """The member's place, its group, and whether this call made it (False: an idempotent replay)."""

    participation: Participation
    group: Group
    created: bool


def offer_json(offer: GroupBuyOffer) -> dict[str, Any]:
    """An offer as the API shows it."""
    return {
        "id": offer.id,
        "name": offer.name,
        "sku": offer.sku,
        "price_fen": offer.price_fen,
        "list_price_fen": offer.list_price_fen,
        "group_size": offer.group_size,
        "time_limit_minutes": offer.time_limit_minutes,
        "stock": offer.stock,
        "reserved": offer.reserved,
        "sold": offer.sold,
        "available": offer.stock - offer.reserved,
        "per_member_limit": offer.per_member_limit,
        "starts_at": offer.starts_at.isoformat(),
        "ends_at": offer.ends_at.isoformat(),
        "state": offer.state,
        "created_by": offer.created_by,
    }


def group_json(group: Group) -> dict[str, Any]:
    """A group as the API shows it."""
    return {
        "id": group.id,
        "offer_id": group.offer_id,
        "leader_id": group.leader_id,
        "size": group.size,
        "joined": group.joined,
        "missing": group.size - group.joined,
        "state": group.state,
        "created_at": group.created_at.isoformat(),
        "expires_at": group.expires_at.isoformat(),
        "closed_at": group.closed_at.isoformat() if group.closed_at else None,
    }


def participation_json(p: Participation) -> dict[str, Any]:
    """A member's place as the API shows it."""
    return {
        "id": p.id,
        "offer_id": p.offer_id,
        "group_id": p.group_id,
        "member_id": p.member_id,
        "amount_fen": p.amount_fen,
        "payment_method": p.payment_method,
        "payment_reference": p.payment_reference,
        "state": p.state,
        "created_at": p.created_at.isoformat(),
        "confirmed_at": p.confirmed_at.isoformat() if p.confirmed_at else None,
        "refunded_at": p.refunded_at.isoformat() if p.refunded_at else None,
        "refund_reference": p.refund_reference,
        "external_refund_due": p.external_refund_due,
    }


async def create_offer(session: AsyncSession, body: OfferIn, *, actor: str) -> GroupBuyOffer:
    """Add an offer (active from `starts_at`)."""
    now = datetime.now(UTC)
    offer = GroupBuyOffer(
        id=str(new_id()),
        **body.model_dump(),
        reserved=0,
        sold=0,
        state=OfferState.ACTIVE.value,
        created_by=actor[:80],
        created_at=now,
        updated_at=now,
    )
    session.add(offer)
    await session.flush()
    return offer


async def get_offer(session: AsyncSession, offer_id: str, *, lock: bool = False) -> GroupBuyOffer:
    """The offer, locked for this transaction with `lock` (its row on PostgreSQL, the writer on SQLite)."""
    if lock:
        await lock_for_write(session)
    query = select(GroupBuyOffer).where(GroupBuyOffer.id == offer_id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    offer = (await session.scalars(query)).one_or_none()
    if offer is None:
        raise NotFound(f"no group-buy offer {offer_id}")
    return offer


async def close_offer(session: AsyncSession, offer_id: str, *, actor: str) -> GroupBuyOffer:
    """Stop new groups; open groups still fill or expire."""
    offer = await get_offer(session, offer_id, lock=True)
    offer.state, offer.updated_at = OfferState.CLOSED.value, datetime.now(UTC)
    await session.flush()
    return offer


async def _replay(session: AsyncSession, offer_id: str, body: JoinIn, member_id: str) -> JoinResult | None:
    done = await session.scalar(
        select(Participation).where(Participation.idempotency_key == body.idempotency_key)
    )
    if done is None:
        return None
    if done.offer_id != offer_id or done.member_id != member_id:
        raise GroupBuyError(f"idempotency key {body.idempotency_key} was used for another join")
    group = await session.get(Group, done.group_id)
    if group is None:  # cannot happen: the foreign key holds it
        raise RuntimeError(f"participation {done.id} has no group")
    return JoinResult(done, group, created=False)


async def _pick_group(
    session: AsyncSession, offer: GroupBuyOffer, body: JoinIn, now: datetime
) -> Group | None:
    """The open group to join, or None to open a new one."""
    if body.group_id is not None:
        group = await session.get(Group, body.group_id, with_for_update=True)
        if group is None or group.offer_id != offer.id:
            raise NotFound(f"no group {body.group_id} in offer {offer.id}")
        if group.state != GroupState.OPEN.value or group.expires_at <= now:
            raise GroupBuyError(
                f"group {group.id} is {'full' if group.state == GroupState.FILLED else 'over'}"
            )
        return group
    if body.open_new:
        return None
    return (
        await session.scalars(
            select(Group)
            .where(Group.offer_id == offer.id, Group.state == GroupState.OPEN.value, Group.expires_at > now)
            .order_by(Group.joined.desc(), Group.created_at)
            .limit(1)
        )
    ).first()


async def _open_group(session: AsyncSession, offer: GroupBuyOffer, member_id: str, now: datetime) -> Group:
    if offer.state != OfferState.ACTIVE.value or now >= offer.ends_at:
        raise GroupBuyError(f"offer {offer.name!r} takes no new groups any more")
    reserved = await session.execute(
        update(GroupBuyOffer)
        .where(GroupBuyOffer.id == offer.id, GroupBuyOffer.reserved + offer.group_size <= GroupBuyOffer.stock)
        .values(reserved=GroupBuyOffer.reserved + offer.group_size, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if not getattr(reserved, "rowcount", 0):
        raise GroupBuyError(f"offer {offer.name!r} is sold out: no stock left for a new group")
    group = Group(
        id=str(new_id()),
        offer_id=offer.id,
        leader_id=member_id,
        size=offer.group_size,
        joined=0,
        state=GroupState.OPEN.value,
        created_at=now,
        expires_at=now + timedelta(minutes=offer.time_limit_minutes),
    )
    session.add(group)
    await session.flush()
    return group


async def _check_member(
    session: AsyncSession, offer: GroupBuyOffer, group: Group | None, member_id: str
) -> None:
    held = int(
        await session.scalar(
            select(func.count())
            .select_from(Participation)
            .where(
                Participation.offer_id == offer.id,
                Participation.member_id == member_id,
                Participation.state != ParticipationState.REFUNDED.value,
            )
        )
        or 0
    )
    if held >= offer.per_member_limit:
        raise GroupBuyError(f"a member may hold {offer.per_member_limit} place(s) in {offer.name!r}")
    if group is not None and await session.scalar(
        select(Participation.id).where(
            Participation.group_id == group.id, Participation.member_id == member_id
        )
    ):
        raise GroupBuyError(f"the member is already in group {group.id}")


async def _pay(
    session: AsyncSession, offer: GroupBuyOffer, body: JoinIn, member_id: str, *, order_id: str, actor: str
) -> str:
    if body.payment_method == "external":
        reference = body.payment_reference or ""
        used = await session.scalar(
            select(Participation.id).where(
                Participation.payment_method == "external", Participation.payment_reference == reference
            )
        )
        if used is not None:
            raise GroupBuyError(f"external payment {reference} already paid for group-buy order {used}")
        return reference
    try:
        done = await debit(
            session,
            member_id,
            offer.price_fen,
            Source(actor=actor, order_id=order_id, note=f"group buy {offer.name}"),
        )
    except StoredValueError as err:
        raise GroupBuyError(str(err)) from None
    return done.entry.id


def _notify(
    session: AsyncSession, participation: Participation, template: str, params: dict[str, str]
) -> Any:
    """A transactional message about the member's own order (not capped, not blocked by unsubscribes)."""
    return enqueue_message(
        session,
        member_id=participation.member_id,
        channel="sms",
        template=template,
        params=params,
        dedupe_key=f"group_buy:{participation.id}:{template}",
        category=Category.TRANSACTIONAL,
    )


async def _fill(session: AsyncSession, offer: GroupBuyOffer, group: Group, now: datetime) -> None:
    group.state, group.closed_at = GroupState.FILLED.value, now
    await session.execute(
        update(GroupBuyOffer)
        .where(GroupBuyOffer.id == offer.id)
        .values(sold=GroupBuyOffer.sold + group.size, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    members = (await session.scalars(select(Participation).where(Participation.group_id == group.id))).all()
    for p in members:
        p.state, p.confirmed_at = ParticipationState.CONFIRMED.value, now
        await _notify(session, p, "group_buy_filled", {"offer": offer.name[:40]})


async def join(session: AsyncSession, offer_id: str, body: JoinIn, *, actor: str) -> JoinResult:
    """Place the member in a group of the offer and take the payment, in the caller's transaction."""
    now = datetime.now(UTC)
    offer = await get_offer(session, offer_id, lock=True)  # serialises the offer's joins
    member_id = await resolve_member(session, body.member_id)
    replay = await _replay(session, offer_id, body, member_id)
    if replay is not None:
        return replay
    if now < offer.starts_at:
        raise GroupBuyError(f"offer {offer.name!r} starts at {offer.starts_at.isoformat()}")
    group = await _pick_group(session, offer, body, now)
    await _check_member(session, offer, group, member_id)
    if group is None:
        group = await _open_group(session, offer, member_id, now)
    order_id = str(new_id())
    reference = await _pay(session, offer, body, member_id, order_id=order_id, actor=actor)
    participation = Participation(
        id=order_id,
        offer_id=offer.id,
        group_id=group.id,
        member_id=member_id,
        idempotency_key=body.idempotency_key,
        amount_fen=offer.price_fen,
        payment_method=body.payment_method,
        payment_reference=reference,
        state=ParticipationState.PAID.value,
        created_at=now,
        actor=actor[:80],
    )
    session.add(participation)
    taken = await session.execute(
        update(Group)
        .where(Group.id == group.id, Group.state == GroupState.OPEN.value, Group.joined < Group.size)
        .values(joined=Group.joined + 1)
        .returning(Group.joined)
        .execution_options(synchronize_session=False)
    )
    joined = taken.scalar_one_or_none()
    if joined is None:  # cannot happen under the offer lock; refuse rather than overfill
        raise GroupBuyError(f"group {group.id} is full")
    set_committed_value(group, "joined", joined)
    await session.flush()
    if group.joined == group.size:
        await _fill(session, offer, group, now)
    await session.flush()
    return JoinResult(participation, group, created=True)


async def _refund(session: AsyncSession, offer: GroupBuyOffer, p: Participation, now: datetime) -> None:
    if p.payment_method == "stored_value":
        taken = await session.get(LedgerEntry, p.payment_reference)
        if taken is None or taken.kind != LedgerKind.DEBIT.value:
            raise RuntimeError(f"group-buy order {p.id} names no debit {p.payment_reference}")
        entry = await move(
            session,
            taken.member_id,  # a merge moved the debit to the survivor; the return follows it
            LedgerKind.REFUND_RETURN,
            Source(
                actor="group_buy", order_id=p.id, debit_id=taken.id, note=f"group buy {offer.name} expired"
            ),
            principal=-taken.principal_delta_fen,
            bonus=-taken.bonus_delta_fen,
            now=now,
        )
        if entry is None:  # adding never fails the non-negative check
            raise RuntimeError(f"refund of group-buy order {p.id} was not applied")
        p.refund_reference = entry.id
    else:
        p.external_refund_due = True
    p.state, p.refunded_at = ParticipationState.REFUNDED.value, now
    await _notify(
        session, p, "group_buy_refunded", {"offer": offer.name[:40], "amount": format_yuan(p.amount_fen)}
    )


async def expire_groups(
    session: AsyncSession, now: datetime, *, limit: int = _EXPIRE_BATCH
) -> tuple[int, int]:
    """Expire up to `limit` open groups whose time ran out: refund their places, free their stock.

    (groups, refunds) done. Each group is taken under its offer's lock, so a join that
    raced the deadline either filled the group first or finds it over.
    """
    await lock_for_write(session)
    due = (
        await session.execute(
            select(Group.id, Group.offer_id)
            .where(Group.state == GroupState.OPEN.value, Group.expires_at <= now)
            .order_by(Group.offer_id, Group.expires_at)
            .limit(limit)
        )
    ).all()
    groups = refunds = 0
    for group_id, offer_id in due:
        offer = await get_offer(session, offer_id, lock=True)
        group = await session.get(Group, group_id, with_for_update=True, populate_existing=True)
        if group is None or group.state != GroupState.OPEN.value:
            continue  # filled or expired by someone else meanwhile
        places = (
            await session.scalars(
                select(Participation).where(
                    Participation.group_id == group.id, Participation.state == ParticipationState.PAID.value
                )
            )
        ).all()
        for p in places:
            await _refund(session, offer, p, now)
            refunds += 1
        group.state, group.closed_at = GroupState.EXPIRED.value, now
        await session.execute(
            update(GroupBuyOffer)
            .where(GroupBuyOffer.id == offer.id)
            .values(reserved=GroupBuyOffer.reserved - group.size, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        groups += 1
    await session.flush()
    return groups, refunds


async def expire_due(db: Database, now: datetime) -> str:
    """The outbox worker's tick: expire every due group, a batch per transaction."""
    total_groups = total_refunds = 0
    while True:
        async with db.session() as session, session.begin():
            groups, refunds = await expire_groups(session, now)
        total_groups, total_refunds = total_groups + groups, total_refunds + refunds
        if groups < _EXPIRE_BATCH:
            break
    if not total_groups:
        return ""
    return f"group buy: {total_groups} group(s) expired, {total_refunds} place(s) refunded"

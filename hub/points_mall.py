"""Points mall (积分商城): items bought with points, or points plus cash, from their own stock.

A redemption locks the member first (their points row; their stored-value row before it
when cash comes from stored value, the order every other domain takes), so the member's
per-item limit, balance and idempotency key are decided with nothing of theirs changing
underneath. The item's stock is taken by one conditional UPDATE (`redeemed + q <= stock`),
so redemptions of different members racing for the last units can never oversell.
A retried request with the same idempotency key answers with the first redemption.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import func, select, update

from hub import points
from hub.db import AsyncSession
from hub.errors import HubError, NotFound
from hub.mall_tables import MallItem, MallRedemption, RedemptionState
from hub.members import get_member
from hub.messaging import lock_for_write
from hub.stored_value import Source, StoredValueError, debit, lock_balances, move
from hub.stored_value_tables import LedgerEntry, LedgerKind
from protocol import format_yuan, new_id

__all__ = [
    "ItemChange",
    "ItemIn",
    "MallError",
    "RedeemIn",
    "Redeemed",
    "cancel_redemption",
    "collect_redemption",
    "create_item",
    "get_item",
    "item_json",
    "list_items",
    "redeem",
    "redemption_json",
    "update_item",
]

_MAX_POINTS = 10**9


class MallError(HubError):
    """A points-mall request was refused; nothing was written."""


class ItemIn(BaseModel):
    """A new mall item: `points` per unit, plus `cash_fen` per unit for points + cash."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=100)
    sku: str | None = Field(None, min_length=1, max_length=64)
    points: int = Field(strict=True, ge=1, le=_MAX_POINTS)
    cash_fen: int = Field(0, strict=True, ge=0, le=10**9)
    stock: int = Field(strict=True, ge=0, le=10_000_000)
    per_member_limit: int | None = Field(None, strict=True, ge=1, le=10_000)


class ItemChange(BaseModel):
    """What head office may change on an item; stock never below what was redeemed."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    name: str | None = Field(None, min_length=1, max_length=100)
    stock: int | None = Field(None, strict=True, ge=0, le=10_000_000)
    per_member_limit: int | None = Field(None, strict=True, ge=1, le=10_000)
    active: bool | None = None


class RedeemIn(BaseModel):
    """A redemption; the cash part (if the item has one) from stored value or paid outside by reference."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    member_id: str = Field(min_length=1, max_length=36)
    quantity: int = Field(1, strict=True, ge=1, le=100)
    payment_method: Literal["stored_value", "external"] | None = None
    payment_reference: str | None = Field(None, min_length=1, max_length=64)
    idempotency_key: str = Field(min_length=8, max_length=80)

    @model_validator(mode="after")
    def _consistent(self) -> RedeemIn:
        if self.payment_method == "external" and not self.payment_reference:
            raise ValueError("an external payment needs its payment_reference")
        if self.payment_method != "external" and self.payment_reference:
            raise ValueError("payment_reference goes with payment_method external only")
        return self


@dataclass(frozen=True)
class Redeemed:
    """The redemption, and whether this call made it (False: an idempotent replay)."""

    redemption: MallRedemption
    created: bool
    balance: int | None  # the member's points after it (None on a replay)


def item_json(item: MallItem) -> dict[str, Any]:
    """An item as the API shows it."""
    return {
        "id": item.id,
        "name": item.name,
        "sku": item.sku,
        "points": item.points,
        "cash_fen": item.cash_fen,
        "stock": item.stock,
        "redeemed": item.redeemed,
        "left": item.stock - item.redeemed,
        "per_member_limit": item.per_member_limit,
        "active": item.active,
        "created_by": item.created_by,
        "created_at": item.created_at.isoformat(),
    }


def redemption_json(r: MallRedemption) -> dict[str, Any]:
    """A redemption as the API shows it."""
    return {
        "id": r.id,
        "item_id": r.item_id,
        "member_id": r.member_id,
        "quantity": r.quantity,
        "points": r.points,
        "cash_fen": r.cash_fen,
        "payment_method": r.payment_method,
        "payment_reference": r.payment_reference,
        "state": r.state,
        "created_at": r.created_at.isoformat(),
        "collected_at": r.collected_at.isoformat() if r.collected_at else None,
        "collected_store": r.collected_store,
        "cancelled_at": r.cancelled_at.isoformat() if r.cancelled_at else None,
        "refund_reference": r.refund_reference,
        "external_refund_due": r.external_refund_due,
    }


async def create_item(session: AsyncSession, body: ItemIn, *, actor: str) -> MallItem:
    """Add an item (active at once)."""
    now = datetime.now(UTC)
    item = MallItem(
        id=str(new_id()),
        **body.model_dump(),
        redeemed=0,
        active=True,
        created_by=actor[:80],
        created_at=now,
        updated_at=now,
    )
    session.add(item)
    await session.flush()
    return item


async def get_item(session: AsyncSession, item_id: str) -> MallItem:
    """The item, or `NotFound`."""
    item = await session.get(MallItem, item_id, populate_existing=True)
    if item is None:
        raise NotFound(f"no points-mall item {item_id}")
    return item


async def list_items(session: AsyncSession, *, active_only: bool = False) -> Sequence[MallItem]:
    """Items, newest first."""
    query = select(MallItem).order_by(MallItem.created_at.desc(), MallItem.id.desc())
    if active_only:
        query = query.where(MallItem.active.is_(True))
    return (await session.scalars(query)).all()


async def update_item(session: AsyncSession, item_id: str, change: ItemChange) -> MallItem:
    """Rename, (de)activate, change the limit or the stock (never below the units already redeemed)."""
    await lock_for_write(session)
    item = await session.get(MallItem, item_id, with_for_update=True, populate_existing=True)
    if item is None:
        raise NotFound(f"no points-mall item {item_id}")
    values = change.model_dump(exclude_unset=True)
    if values.get("stock") is not None and values["stock"] < item.redeemed:
        raise MallError(f"stock {values['stock']} is below the {item.redeemed} units already redeemed")
    for name, value in values.items():
        if value is not None or name == "per_member_limit":
            setattr(item, name, value)
    item.updated_at = datetime.now(UTC)
    await session.flush()
    return item


async def _replay(session: AsyncSession, item_id: str, member_id: str, key: str) -> MallRedemption | None:
    done = await session.scalar(select(MallRedemption).where(MallRedemption.idempotency_key == key))
    if done is not None and (done.item_id != item_id or done.member_id != member_id):
        raise MallError(f"idempotency key {key} was used for another redemption")
    return done


async def _take_stock(session: AsyncSession, item: MallItem, quantity: int) -> None:
    taken = await session.execute(
        update(MallItem)
        .where(
            MallItem.id == item.id,
            MallItem.active.is_(True),
            MallItem.redeemed + quantity <= MallItem.stock,
        )
        .values(redeemed=MallItem.redeemed + quantity, updated_at=datetime.now(UTC))
        .execution_options(synchronize_session=False)
    )
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        fresh = await get_item(session, item.id)
        if not fresh.active:
            raise MallError(f"'{fresh.name}' is no longer in the points mall")
        left = fresh.stock - fresh.redeemed
        raise MallError(f"'{fresh.name}' is sold out" if left <= 0 else f"only {left} of '{fresh.name}' left")


async def _pay_cash(
    session: AsyncSession, member_id: str, body: RedeemIn, amount_fen: int, *, redemption_id: str, actor: str
) -> str | None:
    """Take the cash part; the stored-value ledger id or the outside reference."""
    if amount_fen == 0:
        if body.payment_method is not None:
            raise MallError("this item costs points only; leave payment_method out")
        return None
    if body.payment_method is None:
        raise MallError(f"this redemption also costs {format_yuan(amount_fen)}: give payment_method")
    if body.payment_method == "external":
        return body.payment_reference
    try:
        done = await debit(
            session, member_id, amount_fen, Source(actor=actor, order_id=redemption_id, note="points mall")
        )
    except StoredValueError as err:
        raise MallError(str(err)) from None
    return str(done.entry.id)


async def redeem(session: AsyncSession, item_id: str, body: RedeemIn, *, actor: str) -> Redeemed:
    """Redeem `quantity` units of an item for a member in the caller's transaction."""
    await lock_for_write(session)
    member_id = (await get_member(session, body.member_id)).id
    if body.payment_method == "stored_value":
        await lock_balances(session, member_id)  # stored value before points: every domain's lock order
    now = datetime.now(UTC)
    balance = await points.prepare(session, member_id, now)
    done = await _replay(session, item_id, member_id, body.idempotency_key)
    if done is not None:
        return Redeemed(done, created=False, balance=None)
    item = await get_item(session, item_id)
    if not item.active:
        raise MallError(f"'{item.name}' is no longer in the points mall")
    if item.per_member_limit is not None:
        held = await session.scalar(
            select(func.coalesce(func.sum(MallRedemption.quantity), 0)).where(
                MallRedemption.member_id == member_id, MallRedemption.item_id == item.id
            )
        )
        if int(held or 0) + body.quantity > item.per_member_limit:
            raise MallError(
                f"a member may redeem at most {item.per_member_limit} of '{item.name}'; "
                f"this member has {int(held or 0)}"
            )
    cost = item.points * body.quantity
    if cost > balance:
        raise MallError(f"not enough points: {cost} needed, the member has {balance}")
    await _take_stock(session, item, body.quantity)
    redemption_id = str(new_id())
    after = await points.debit(
        session,
        member_id,
        cost,
        kind="redeem",
        source=f"mall:{redemption_id}",
        now=now,
        note=f"points mall: {body.quantity} x {item.name}",
        prepared=True,
    )
    cash = item.cash_fen * body.quantity
    reference = await _pay_cash(session, member_id, body, cash, redemption_id=redemption_id, actor=actor)
    redemption = MallRedemption(
        id=redemption_id,
        item_id=item.id,
        member_id=member_id,
        quantity=body.quantity,
        points=cost,
        cash_fen=cash,
        payment_method=body.payment_method,
        payment_reference=reference,
        idempotency_key=body.idempotency_key,
        points_lots=[[lot_id, n, expires_at.isoformat()] for lot_id, n, expires_at in after.lots],
        state=RedemptionState.REDEEMED.value,
        actor=actor[:80],
        created_at=now,
        external_refund_due=False,
    )
    session.add(redemption)
    await session.flush()
    return Redeemed(redemption, created=True, balance=after.balance)


async def _locked_redemption(session: AsyncSession, redemption_id: str) -> MallRedemption:
    await lock_for_write(session)
    found = await session.get(MallRedemption, redemption_id, with_for_update=True, populate_existing=True)
    if found is None:
        raise NotFound(f"no points-mall redemption {redemption_id}")
    if found.state != RedemptionState.REDEEMED.value:
        raise MallError(f"redemption {redemption_id} is {found.state} already")
    return found


async def collect_redemption(session: AsyncSession, redemption_id: str, *, store: str) -> MallRedemption:
    """The member picked the item up at `store`; a collected redemption cannot be cancelled."""
    found = await _locked_redemption(session, redemption_id)
    found.state, found.collected_at, found.collected_store = (
        RedemptionState.COLLECTED.value,
        datetime.now(UTC),
        store,
    )
    await session.flush()
    return found


async def cancel_redemption(session: AsyncSession, redemption_id: str, *, actor: str) -> MallRedemption:
    """Give back a redemption not yet collected: its points (with their lots' expiry), its cash
    (stored value to the buckets it came from; an outside payment marked for finance) and its stock."""
    found = await _locked_redemption(session, redemption_id)
    member_id = (await get_member(session, found.member_id)).id  # the survivor if merged since
    now = datetime.now(UTC)
    taken = None
    if found.payment_method == "stored_value" and found.payment_reference is not None:
        taken = await session.get(LedgerEntry, found.payment_reference)
        if taken is None or taken.kind != LedgerKind.DEBIT.value:
            raise RuntimeError(f"redemption {found.id} names no debit {found.payment_reference}")
        await lock_balances(session, taken.member_id)  # stored value before points, as everywhere
    await points.lock_balance(session, member_id, now)
    for lot_id, n, expires_at in found.points_lots:
        await points.credit(
            session,
            member_id,
            int(n),
            kind="refund_return",
            source=f"mall:{found.id}",
            expires_at=datetime.fromisoformat(expires_at),
            now=now,
            note=f"points mall redemption cancelled (from lot {lot_id})",
        )
    await session.execute(
        update(MallItem)
        .where(MallItem.id == found.item_id)
        .values(redeemed=MallItem.redeemed - found.quantity, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if taken is not None:
        entry = await move(
            session,
            taken.member_id,
            LedgerKind.REFUND_RETURN,
            Source(
                actor=actor, order_id=found.id, debit_id=taken.id, note="points mall redemption cancelled"
            ),
            principal=-taken.principal_delta_fen,
            bonus=-taken.bonus_delta_fen,
            now=now,
        )
        if entry is None:  # adding never fails the non-negative check
            raise RuntimeError(f"refund of redemption {found.id} was not applied")
        found.refund_reference = entry.id
    elif found.cash_fen:
        found.external_refund_due = True
    found.state, found.cancelled_at = RedemptionState.CANCELLED.value, now
    await session.flush()
    return found

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
from hub.mall_tables import MallItem, MallRedemption
from hub.members import get_member
from hub.stored_value import Source, StoredValueError, debit, lock_balances
from protocol import format_yuan, new_id

__all__ = [
    "ItemChange",
    "ItemIn",
    "MallError",
    "RedeemIn",
    "Redeemed",
    "create_item",
    "get_item",
    "item_json",
    "list_items",
    "redeem",
    "redemption_json",
    "update_item",
    "write_lock",
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


async def write_lock(session: AsyncSession) -> None:
    """SQLite: take the write lock now (BEGIN IMMEDIATE) so what this transaction reads stays true.

    pysqlite sends BEGIN only at the first write, after the reads a decision rests on.
    PostgreSQL needs nothing: its row locks are taken by the statements themselves.
    """
    conn = await session.connection()
    if conn.dialect.name != "sqlite":
        return
    raw = await conn.get_raw_connection()
    if not raw.driver_connection.in_transaction:  # type: ignore[union-attr]
        await conn.exec_driver_sql("BEGIN IMMEDIATE")


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
        "created_at": r.created_at.isoformat(),
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
    await write_lock(session)
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
    await write_lock(session)
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
        actor=actor[:80],
        created_at=now,
    )
    session.add(redemption)
    await session.flush()
    return Redeemed(redemption, created=True, balance=after.balance)

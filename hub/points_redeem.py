"""Paying with points at the till (RPC `points.quote`, `points.redeem`) and giving them back.

`points.redeem` is in `RPC_KEYED`: the RpcServer refuses it without an idempotency key
(the till uses order id + tender index) and stores its first outcome with our writes, so
a retry never debits twice. The till records the payment as a tender with method
"points" and reference = the txn id; when that order is refunded or voided, the sale
listener calls `return_points` once per refund or void.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import BigInteger, ForeignKey, String, func, select
from sqlalchemy.orm import Mapped, mapped_column

from hub import points
from hub.db import AsyncSession
from hub.errors import NotFound
from hub.loyalty_rules import BP, RedeemRule, load_points_rules
from hub.members import get_member
from hub.models import Base
from hub.rpc import Method, RpcError

__all__ = ["RPC_KEYED", "RPC_METHODS", "PointsTxn", "PointsTxnLot", "return_points"]

log = logging.getLogger(__name__)
_MAX_FEN = 10**12


class PointsTxn(Base):
    """Points paid for (part of) an order at a till; `returned_points` came back on refunds."""

    __tablename__ = "points_txns"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    store: Mapped[str] = mapped_column(String(32))
    order_id: Mapped[str] = mapped_column(String(36), index=True)
    points: Mapped[int] = mapped_column(BigInteger)
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    refunded_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    returned_points: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime]


class PointsTxnLot(Base):
    """Which lots a txn took points from, so points given back keep their original expiry."""

    __tablename__ = "points_txn_lots"

    txn_id: Mapped[str] = mapped_column(ForeignKey("points_txns.id"), primary_key=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("points_lots.id"), primary_key=True)
    points: Mapped[int] = mapped_column(BigInteger)
    returned: Mapped[int] = mapped_column(BigInteger, default=0)
    expires_at: Mapped[datetime]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    member_id: str = Field(min_length=1, max_length=36)
    order_total_fen: int = Field(strict=True, ge=0, le=_MAX_FEN)


class _RedeemParams(_Params):
    order_id: str = Field(min_length=1, max_length=36)
    points: int = Field(strict=True, ge=1, le=_MAX_FEN)


_P = TypeVar("_P", bound=_Params)


def _parse(model: type[_P], params: dict[str, Any]) -> _P:
    try:
        return model.model_validate(params)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}" for e in err.errors()
        )
        raise RpcError(f"请求有误 (bad request): {problems}") from None


def _yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


async def _member_id(session: AsyncSession, member_id: str) -> str:
    try:
        return (await get_member(session, member_id)).id
    except NotFound:
        raise RpcError(f"找不到会员 {member_id} (no such member)") from None


def _max_points(rule: RedeemRule, balance: int, order_total_fen: int, used_fen: int = 0) -> int:
    """The most points this order may still take: balance, share of the order, whole steps, minimum."""
    cap_fen = max(0, order_total_fen * rule.max_share_bp // BP - used_fen)
    most = min(balance - balance % rule.step, rule.points_for(cap_fen))
    return most if rule.enabled and most >= max(rule.min_points, 1) else 0


async def quote(session: AsyncSession, store: str, params: dict[str, Any]) -> Any:
    """What the member could pay with points on an order of `order_total_fen`."""
    p = _parse(_Params, params)
    member_id = await _member_id(session, p.member_id)
    rule = (await load_points_rules(session)).redeem
    balance = await points.spendable(session, member_id, datetime.now(UTC))
    most = _max_points(rule, balance, p.order_total_fen)
    return {
        "balance": balance,
        "max_points": most,
        "max_amount_fen": rule.fen_for(most),
        "rate": {"points": rule.points, "fen": rule.fen},
        "min_points": rule.min_points,
        "step": rule.step,
        "enabled": rule.enabled,
    }


async def redeem(session: AsyncSession, store: str, params: dict[str, Any]) -> Any:
    """Debit points for an order; the till then records a "points" tender with the txn id."""
    p = _parse(_RedeemParams, params)
    member_id = await _member_id(session, p.member_id)
    rule = (await load_points_rules(session)).redeem
    if not rule.enabled:
        raise RpcError("本店暂不支持积分抵现 (points cannot pay here)")
    if p.points < rule.min_points:
        raise RpcError(f"每次至少使用 {rule.min_points} 积分 (at least {rule.min_points} points per use)")
    if p.points % rule.step:
        raise RpcError(f"积分须为 {rule.step} 的整数倍 (use a multiple of {rule.step} points)")
    now = datetime.now(UTC)
    # Locks the member's points row: what follows sees every committed redemption of theirs.
    balance = await points.prepare(session, member_id, now)
    if p.points > balance:
        raise RpcError(f"积分不足：当前 {balance} 积分，需要 {p.points} 积分 (only {balance} points)")
    used = await session.scalar(
        select(func.coalesce(func.sum(PointsTxn.amount_fen), 0)).where(
            PointsTxn.order_id == p.order_id, PointsTxn.returned_points < PointsTxn.points
        )
    )
    most = _max_points(rule, balance, p.order_total_fen, int(used or 0))
    if p.points > most:
        share = f"{rule.max_share_bp // 100}.{rule.max_share_bp % 100:02d}%"
        raise RpcError(
            f"本单最多可用 {most} 积分，抵 {_yuan(rule.fen_for(most))} 元 "
            f"(at most {most} points on this order: {share} of it)"
        )
    txn_id = str(uuid.uuid4())
    amount = rule.fen_for(p.points)
    try:
        taken = await points.debit(
            session,
            member_id,
            p.points,
            kind="redeem",
            source=f"rpc:{store}:{txn_id}",
            now=now,
            order_id=p.order_id,
            prepared=True,
        )
    except points.InsufficientPoints as err:  # only if the lock above did not hold, kept as a guard
        raise RpcError(f"积分不足：当前 {err.balance} 积分 (only {err.balance} points)") from None
    session.add(
        PointsTxn(
            id=txn_id,
            member_id=member_id,
            store=store,
            order_id=p.order_id,
            points=p.points,
            amount_fen=amount,
            refunded_fen=0,
            returned_points=0,
            created_at=now,
        )
    )
    await session.flush()
    session.add_all(
        PointsTxnLot(txn_id=txn_id, lot_id=lot_id, points=n, returned=0, expires_at=expires_at)
        for lot_id, n, expires_at in taken.lots
    )
    await session.flush()
    return {"txn_id": txn_id, "points": p.points, "amount_fen": amount, "balance": taken.balance}


async def return_points(
    session: AsyncSession, txn_id: str, refunded_fen: int, *, source: str, now: datetime
) -> int:
    """Give back the points of `refunded_fen` more of a txn's tender; return how many came back.

    Cumulative and floored: after refunds of R of the tender's A fen, floor(points × R / A)
    have come back in total, so refunding all of A returns exactly all points. Returned
    points are new lots with the expiry of the lots they were taken from, latest first
    (a lot whose expiry has passed meanwhile expires at the next expiry run).
    """
    txn = (
        await session.execute(
            select(PointsTxn)
            .where(PointsTxn.id == txn_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if txn is None:
        log.warning("%s names points txn %s, which the hub does not know; nothing returned", source, txn_id)
        return 0
    refunded = min(txn.amount_fen, txn.refunded_fen + max(0, refunded_fen))
    target = txn.points * refunded // txn.amount_fen if txn.amount_fen else txn.points
    give = target - txn.returned_points
    txn.refunded_fen, txn.returned_points = refunded, max(target, txn.returned_points)
    if give <= 0:
        return 0
    member_id = (await get_member(session, txn.member_id)).id  # the survivor if merged since
    lots = (
        await session.scalars(
            select(PointsTxnLot)
            .where(PointsTxnLot.txn_id == txn_id)
            .order_by(PointsTxnLot.expires_at.desc(), PointsTxnLot.lot_id.desc())
            .execution_options(populate_existing=True)
        )
    ).all()
    left = give
    for used in lots:
        n = min(left, used.points - used.returned)
        if n <= 0:
            continue
        await points.credit(
            session,
            member_id,
            n,
            kind="refund_return",
            source=source,
            expires_at=used.expires_at,
            now=now,
            order_id=txn.order_id,
            note=f"paid with txn {txn_id} from lot {used.lot_id}",
        )
        used.returned += n
        left -= n
    if left:  # txn lots always add up to txn.points; guard against a hand-edited database
        raise RuntimeError(f"points txn {txn_id} has lots for fewer than its {txn.points} points")
    await session.flush()
    return give


RPC_METHODS: dict[str, Method] = {"points.quote": quote, "points.redeem": redeem}
RPC_KEYED = {"points.redeem"}

"""Member points (积分): balance, lots with an expiry, and a ledger that explains every balance.

Each credit is a lot with its own expiry; debits take lots earliest expiry first (FIFO).
Every movement is a ledger row with its source, so for every member
`balance == sum(ledger.points) == sum(lot.remaining)`.

Concurrency: the balance changes only through UPDATEs on the member's `points_accounts`
row, and a debit is conditional (`WHERE balance >= :points`). That UPDATE is the first
write on the member and locks the row until commit (PostgreSQL row lock, SQLite's single
writer), so lots are only read and changed by the transaction holding the lock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, mapped_column

from hub.db import AsyncSession
from hub.errors import HubError
from hub.models import Base

__all__ = [
    "KINDS",
    "Debit",
    "ExpiryResult",
    "InsufficientPoints",
    "PointsAccount",
    "PointsLedger",
    "PointsLot",
    "balance_of",
    "credit",
    "debit",
    "expire_member",
    "expire_points",
    "insert_missing",
    "lock_balance",
    "move_points",
    "prepare",
    "spendable",
]

log = logging.getLogger(__name__)

# Every kind of ledger row; `source` says which order, refund, RPC txn, user or job caused it.
KINDS = (
    "earn",  # a sale (source order:<id>)
    "registration",  # a new member (source member:<id>)
    "topup",  # a stored-value top-up (source topup:<…>)
    "birthday",  # a level's birthday points (source birthday:<year>)
    "redeem",  # paid at a till (source rpc:<store>:<txn id>)
    "refund_return",  # points paid for a refunded or voided sale come back (source refund:<id> / void:<id>)
    "reverse",  # earned on a refunded sale or top-up, taken back (refund:<id>, stored_value.topup_refund:…)
    "expire",  # a lot ran out (source expiry)
    "adjust",  # head office by hand (source user:<name>)
    "merge",  # duplicate members merged (source merge:<other member>)
)


class InsufficientPoints(HubError):
    """A debit larger than the member's balance; nothing was taken."""

    def __init__(self, member_id: str, wanted: int, balance: int):
        super().__init__(f"member {member_id} has {balance} points; {wanted} cannot be taken")
        self.wanted, self.balance = wanted, balance


class PointsAccount(Base):
    """A member's points balance; changed only by conditional UPDATEs (never below zero)."""

    __tablename__ = "points_accounts"
    __table_args__ = (CheckConstraint("balance >= 0", name="ck_points_accounts_balance"),)

    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"), primary_key=True)
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime]


class PointsLot(Base):
    """Points credited at once, spendable until `expires_at`; `remaining` is what is left."""

    __tablename__ = "points_lots"
    __table_args__ = (
        CheckConstraint("remaining >= 0 AND remaining <= points", name="ck_points_lots_remaining"),
        Index("ix_points_lots_member_expiry", "member_id", "expires_at"),
        Index("ix_points_lots_expiry", "expires_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    kind: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(120))
    order_id: Mapped[str | None] = mapped_column(String(36))
    points: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    earned_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class PointsLedger(Base):
    """One movement of a member's points (signed) and the balance right after it."""

    __tablename__ = "points_ledger"
    __table_args__ = (Index("ix_points_ledger_member", "member_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    kind: Mapped[str] = mapped_column(String(16))
    points: Mapped[int] = mapped_column(BigInteger)
    balance_after: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(120))
    order_id: Mapped[str | None] = mapped_column(String(36), index=True)
    lot_id: Mapped[int | None] = mapped_column(Integer)
    note: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime]


@dataclass(frozen=True)
class Debit:
    """What a debit took: points in total and from which lots (id, points, lot expiry)."""

    points: int
    balance: int
    lots: list[tuple[int, int, datetime]] = field(default_factory=list)


@dataclass(frozen=True)
class ExpiryResult:
    """What an expiry run did."""

    lots: int
    points: int
    members: int


async def insert_missing(session: AsyncSession, model: type[Base], values: dict[str, Any]) -> None:
    """INSERT the row unless its primary key exists (two transactions may try at once)."""
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    insert_ = pg_insert if dialect == "postgresql" else sqlite_insert
    await session.execute(insert_(model).values(**values).on_conflict_do_nothing())


async def _ensure_account(session: AsyncSession, member_id: str, now: datetime) -> None:
    await insert_missing(session, PointsAccount, {"member_id": member_id, "balance": 0, "updated_at": now})


async def _change_balance(
    session: AsyncSession, member_id: str, delta: int, now: datetime, *, at_least: int | None = None
) -> int | None:
    """Add `delta`; with `at_least`, only if the balance is at least that. The new balance or None."""
    stmt = (
        update(PointsAccount)
        .where(PointsAccount.member_id == member_id)
        .values(balance=PointsAccount.balance + delta, updated_at=now)
        .returning(PointsAccount.balance)
        .execution_options(synchronize_session=False)
    )
    if at_least is not None:
        stmt = stmt.where(PointsAccount.balance >= at_least)
    return (await session.execute(stmt)).scalar_one_or_none()


async def lock_balance(session: AsyncSession, member_id: str, now: datetime | None = None) -> int:
    """Lock the member's account row for this transaction (creating it) and return the balance."""
    now = now or datetime.now(UTC)
    balance = await _change_balance(session, member_id, 0, now)
    if balance is None:  # the member's first points: create the account, then lock it
        await _ensure_account(session, member_id, now)
        balance = await _change_balance(session, member_id, 0, now)
    if balance is None:  # cannot happen: the row was inserted just above
        raise RuntimeError(f"points account of {member_id} vanished")
    return balance


async def balance_of(session: AsyncSession, member_id: str) -> int:
    """The balance as stored (0 for a member who never had points)."""
    found = await session.scalar(select(PointsAccount.balance).where(PointsAccount.member_id == member_id))
    return int(found or 0)


async def spendable(session: AsyncSession, member_id: str, now: datetime) -> int:
    """The balance minus lots already past their expiry that no expiry run has taken yet."""
    due = await session.scalar(
        select(func.coalesce(func.sum(PointsLot.remaining), 0)).where(
            PointsLot.member_id == member_id, PointsLot.remaining > 0, PointsLot.expires_at <= now
        )
    )
    return await balance_of(session, member_id) - int(due or 0)


def _ledger(
    member_id: str,
    kind: str,
    points: int,
    balance: int,
    source: str,
    *,
    now: datetime,
    order_id: str | None = None,
    lot_id: int | None = None,
    note: str = "",
) -> dict[str, Any]:
    return {
        "member_id": member_id,
        "kind": kind,
        "points": points,
        "balance_after": balance,
        "source": source[:120],
        "order_id": order_id,
        "lot_id": lot_id,
        "note": note[:200],
        "created_at": now,
    }


async def credit(
    session: AsyncSession,
    member_id: str,
    points: int,
    *,
    kind: str,
    source: str,
    expires_at: datetime,
    now: datetime,
    order_id: str | None = None,
    note: str = "",
) -> int:
    """Add a lot of `points` (> 0) with its ledger row; return the lot id."""
    if points <= 0:
        raise ValueError(f"a credit must be above 0 points, got {points}")
    balance = await _change_balance(session, member_id, points, now)
    if balance is None:  # the member's first points
        await _ensure_account(session, member_id, now)
        balance = await _change_balance(session, member_id, points, now)
    assert balance is not None  # noqa: S101 - the row exists (ensured above)
    lot_id = await session.scalar(
        insert(PointsLot)
        .values(
            member_id=member_id,
            kind=kind,
            source=source[:120],
            order_id=order_id,
            points=points,
            remaining=points,
            earned_at=now,
            expires_at=expires_at,
        )
        .returning(PointsLot.id)
    )
    assert lot_id is not None  # noqa: S101 - RETURNING of an INSERT always has the row
    await session.execute(
        insert(PointsLedger).values(
            **_ledger(
                member_id, kind, points, balance, source, now=now, order_id=order_id, lot_id=lot_id, note=note
            )
        )
    )
    return int(lot_id)


async def _take_lots(
    session: AsyncSession, member_id: str, points: int, first_lot: int | None
) -> list[tuple[int, int, datetime]]:
    """Take `points` from the member's lots, `first_lot` first, then earliest expiry first."""
    rows = (
        await session.execute(
            select(PointsLot.id, PointsLot.remaining, PointsLot.expires_at)
            .where(PointsLot.member_id == member_id, PointsLot.remaining > 0)
            .order_by(PointsLot.expires_at, PointsLot.id)
        )
    ).all()
    ordered = sorted(rows, key=lambda row: row[0] != first_lot)  # stable: FIFO otherwise
    taken: list[tuple[int, int, datetime]] = []
    left = points
    for lot_id, remaining, expires_at in ordered:
        if left == 0:
            break
        take = min(left, int(remaining))
        await session.execute(
            update(PointsLot)
            .where(PointsLot.id == lot_id)
            .values(remaining=PointsLot.remaining - take)
            .execution_options(synchronize_session=False)
        )
        taken.append((int(lot_id), take, expires_at))
        left -= take
    if left:  # the balance said there were enough: lots and balance disagree, which is a bug
        raise RuntimeError(f"points lots of {member_id} hold {points - left} points, the balance more")
    return taken


async def debit(
    session: AsyncSession,
    member_id: str,
    points: int,
    *,
    kind: str,
    source: str,
    now: datetime,
    order_id: str | None = None,
    note: str = "",
    first_lot: int | None = None,
    partial: bool = False,
    prepared: bool = False,
) -> Debit:
    """Take `points` (> 0) FIFO with one ledger row; `InsufficientPoints` unless `partial`.

    Lots past their expiry are expired first (with their own ledger rows), so a debit never
    spends points that should be gone. With `partial`, takes what there is (maybe 0).
    """
    if points <= 0:
        raise ValueError(f"a debit must be above 0 points, got {points}")
    if prepared and partial:
        raise ValueError("a partial debit prepares itself")
    balance = -1 if prepared else await prepare(session, member_id, now)
    take = min(points, balance) if partial else points
    if take == 0:
        return Debit(0, balance)
    after = await _change_balance(session, member_id, -take, now, at_least=take)
    if after is None:
        raise InsufficientPoints(member_id, points, await balance_of(session, member_id))
    lots = await _take_lots(session, member_id, take, first_lot)
    await session.execute(
        insert(PointsLedger).values(
            **_ledger(member_id, kind, -take, after, source, now=now, order_id=order_id, note=note)
        )
    )
    return Debit(take, after, lots)


async def _has_due_lots(session: AsyncSession, member_id: str, now: datetime) -> bool:
    found = await session.scalar(
        select(PointsLot.id)
        .where(PointsLot.member_id == member_id, PointsLot.remaining > 0, PointsLot.expires_at <= now)
        .limit(1)
    )
    return found is not None


async def prepare(session: AsyncSession, member_id: str, now: datetime) -> int:
    """Lock the member's points row and expire what is due at `now`; return the balance left.

    A caller that checks the balance before a debit prepares first, then debits with
    `prepared=True`: one lock, one look for due lots.
    """
    balance = await lock_balance(session, member_id, now)
    if await _has_due_lots(session, member_id, now):
        await _expire_locked(session, member_id, now)
        balance = await balance_of(session, member_id)
    return balance


async def expire_member(
    session: AsyncSession, member_id: str, now: datetime, *, due_by: datetime | None = None
) -> tuple[int, int]:
    """Expire the member's lots due at `due_by` (default `now`), one ledger row per lot; (lots, points).

    The ledger rows are stamped `now`, when the expiry was written.
    """
    await lock_balance(session, member_id, now)
    return await _expire_locked(session, member_id, now, due_by=due_by)


async def _expire_locked(
    session: AsyncSession, member_id: str, now: datetime, *, due_by: datetime | None = None
) -> tuple[int, int]:
    cutoff = now if due_by is None else min(due_by, now)
    due = (
        await session.execute(
            select(PointsLot.id, PointsLot.remaining, PointsLot.expires_at)
            .where(PointsLot.member_id == member_id, PointsLot.remaining > 0, PointsLot.expires_at <= cutoff)
            .order_by(PointsLot.expires_at, PointsLot.id)
        )
    ).all()
    total = 0
    for lot_id, remaining, expires_at in due:
        await session.execute(
            update(PointsLot)
            .where(PointsLot.id == lot_id)
            .values(remaining=0)
            .execution_options(synchronize_session=False)
        )
        balance = await _change_balance(session, member_id, -int(remaining), now, at_least=int(remaining))
        if balance is None:
            raise RuntimeError(f"points lots of {member_id} hold more than the balance")
        note = f"lot {lot_id} expired at {expires_at.isoformat()}"
        await session.execute(
            insert(PointsLedger).values(
                **_ledger(
                    member_id, "expire", -int(remaining), balance, "expiry", now=now, lot_id=lot_id, note=note
                )
            )
        )
        total += int(remaining)
    return len(due), total


async def expire_points(
    session: AsyncSession, now: datetime, *, due_by: datetime | None = None
) -> ExpiryResult:
    """Expire every lot due at `due_by` (default `now`); members in id order, so runs cannot deadlock.

    Idempotent: a lot once expired has nothing left, so a second run with the same `due_by`
    changes nothing. The nightly job passes the start of its day as `due_by`, so running
    the job for a day again (by hand, or on another hub instance) finds exactly nothing
    more, while redemptions still never spend a lot past its date (`prepare` expires it).
    """
    cutoff = now if due_by is None else min(due_by, now)
    members = (
        await session.scalars(
            select(PointsLot.member_id)
            .where(PointsLot.remaining > 0, PointsLot.expires_at <= cutoff)
            .distinct()
            .order_by(PointsLot.member_id)
        )
    ).all()
    lots = points = 0
    for member_id in members:
        n, p = await expire_member(session, member_id, now, due_by=cutoff)
        lots, points = lots + n, points + p
    if lots:
        log.info("expired %d points in %d lots of %d members", points, lots, len(members))
    return ExpiryResult(lots=lots, points=points, members=len(members))


async def move_points(session: AsyncSession, from_id: str, into_id: str) -> None:
    """Merge hook: the duplicate's lots and balance move to the survivor, a ledger row on each."""
    now = datetime.now(UTC)
    for member_id in sorted((from_id, into_id)):  # lock order is id order, as everywhere
        await lock_balance(session, member_id, now)
    moved = await balance_of(session, from_id)
    await session.execute(
        update(PointsLot)
        .where(PointsLot.member_id == from_id)
        .values(member_id=into_id)
        .execution_options(synchronize_session=False)
    )
    if moved == 0:
        return
    out = await _change_balance(session, from_id, -moved, now, at_least=moved)
    into = await _change_balance(session, into_id, moved, now)
    assert out is not None  # noqa: S101 - both rows locked above
    assert into is not None  # noqa: S101
    await session.execute(
        insert(PointsLedger),
        [
            _ledger(
                from_id, "merge", -moved, out, f"merge:{into_id}", now=now, note="merged into another member"
            ),
            _ledger(into_id, "merge", moved, into, f"merge:{from_id}", now=now, note="a duplicate merged in"),
        ],
    )

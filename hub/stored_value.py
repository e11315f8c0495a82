"""Stored value (会员储值): a member's principal and bonus balances and every movement of them.

Balances change only here, through `move`: a conditional UPDATE that never lets a bucket go
below zero, under a row lock taken first (PostgreSQL; SQLite serialises writers), and a
ledger entry in the same transaction with the source and the balances right after it.
Rules (bonus tiers, spending order, rounding) are pure functions in `stored_value_rules`;
returns from sale refunds and voids, and offline payments, are applied by the sale
listener in `stored_value_sales`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from hub.db import AsyncSession
from hub.errors import HubError
from hub.stored_value_rules import (
    MAX_TOPUP_FEN,
    BonusRules,
    BonusTier,
    SpendingOrder,
    bonus_for,
    split_debit,
)
from hub.stored_value_tables import Account, LedgerEntry, LedgerKind, RulesRow, Topup
from protocol import format_yuan, new_id
from protocol.timeutil import DEFAULT_CUTOVER_HOUR, business_day

__all__ = [
    "LIABILITY_ZONE",
    "Balance",
    "Debit",
    "InsufficientBalance",
    "Source",
    "StoredValueError",
    "TopupDone",
    "balance_after",
    "debit",
    "ensure_account",
    "ledger_day",
    "load_rules",
    "lock_balances",
    "move",
    "resolve_member",
    "save_rules",
    "stored_value_balances",
    "topup",
]

# The liability report's day: chain-wide, Shanghai time, 04:00 cut-over like the stores.
LIABILITY_ZONE = "Asia/Shanghai"
_LOCK_ATTEMPTS = 3
# Methods that never pay for a top-up: money cannot buy itself.
_NOT_TOPUP_METHODS = frozenset({"stored_value", "points"})


class StoredValueError(HubError):
    """A stored-value operation was refused; nothing was written."""


class InsufficientBalance(StoredValueError):
    """The balance does not cover what was asked."""


@dataclass(frozen=True)
class Balance:
    """A member's balances in fen."""

    principal_fen: int
    bonus_fen: int

    @property
    def total_fen(self) -> int:
        """Principal plus bonus."""
        return self.principal_fen + self.bonus_fen

    def as_json(self) -> dict[str, int]:
        """The `balance` object of RPC replies and API answers."""
        return {"principal_fen": self.principal_fen, "bonus_fen": self.bonus_fen, "total_fen": self.total_fen}

    def describe(self) -> str:
        """For messages a cashier reads."""
        return (
            f"{format_yuan(self.total_fen)} (principal {format_yuan(self.principal_fen)}, "
            f"bonus {format_yuan(self.bonus_fen)})"
        )


@dataclass(frozen=True)
class Source:
    """Where a movement comes from; every ledger entry records one."""

    actor: str  # head-office user name, "store:<id>" (RPC) or "sync:<id>" (sale events)
    store: str | None = None
    order_id: str | None = None
    refund_id: str | None = None
    tender_index: int | None = None
    topup_id: str | None = None
    debit_id: str | None = None
    note: str = ""


@dataclass(frozen=True)
class Debit:
    """A payment taken from a member's balance."""

    entry: LedgerEntry
    balance: Balance


@dataclass(frozen=True)
class TopupDone:
    """A top-up and its bonus."""

    topup: Topup
    balance: Balance


def ledger_day(now: datetime) -> date:
    return business_day(now, LIABILITY_ZONE, DEFAULT_CUTOVER_HOUR)


async def resolve_member(session: AsyncSession, member_id: str) -> str:
    """The id whose account is used: the survivor if `member_id` was merged; `NotFound` if unknown."""
    from hub.members import get_member  # noqa: PLC0415 - hub.members imports this module for its merge hook

    return (await get_member(session, member_id)).id


async def stored_value_balances(session: AsyncSession, member_id: str) -> tuple[int, int]:
    """(principal, bonus) of a member in fen; (0, 0) for a member without an account."""
    row = (
        await session.execute(
            select(Account.principal_fen, Account.bonus_fen).where(Account.member_id == member_id)
        )
    ).one_or_none()
    return (int(row[0]), int(row[1])) if row is not None else (0, 0)


async def ensure_account(session: AsyncSession, member_id: str, now: datetime) -> None:
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    insert_ = pg_insert if dialect == "postgresql" else sqlite_insert
    await session.execute(
        insert_(Account)
        .values(member_id=member_id, principal_fen=0, bonus_fen=0, updated_at=now)
        .on_conflict_do_nothing()
    )


async def lock_balances(session: AsyncSession, member_id: str) -> Balance:
    """The account's balances, locked for this transaction on PostgreSQL; zeros if no account.

    On SQLite nothing is locked until the first write; `move` re-checks the balance in its
    UPDATE, so a stale read only costs a retry, never a wrong balance.
    """
    row = (
        await session.execute(
            select(Account.principal_fen, Account.bonus_fen)
            .where(Account.member_id == member_id)
            .with_for_update()
        )
    ).one_or_none()
    return Balance(int(row[0]), int(row[1])) if row is not None else Balance(0, 0)


async def move(
    session: AsyncSession,
    member_id: str,
    kind: LedgerKind,
    source: Source,
    *,
    principal: int = 0,
    bonus: int = 0,
    shortfall_fen: int = 0,
    entry_id: str | None = None,
    now: datetime | None = None,
) -> LedgerEntry | None:
    """Add the deltas to both buckets and write the ledger entry.

    None, and nothing written, if a bucket would go below zero.
    """
    now = now or datetime.now(UTC)
    if principal > 0 or bonus > 0:
        await ensure_account(session, member_id, now)
    changed = (
        await session.execute(
            update(Account)
            .where(
                Account.member_id == member_id,
                Account.principal_fen >= -principal,
                Account.bonus_fen >= -bonus,
            )
            .values(
                principal_fen=Account.principal_fen + principal,
                bonus_fen=Account.bonus_fen + bonus,
                updated_at=now,
            )
            .returning(Account.principal_fen, Account.bonus_fen)
            .execution_options(synchronize_session=False)
        )
    ).one_or_none()
    if changed is None:
        return None
    entry = LedgerEntry(
        id=entry_id or str(new_id()),
        member_id=member_id,
        kind=kind.value,
        principal_delta_fen=principal,
        bonus_delta_fen=bonus,
        principal_after_fen=int(changed[0]),
        bonus_after_fen=int(changed[1]),
        shortfall_fen=shortfall_fen,
        store=source.store,
        order_id=source.order_id,
        refund_id=source.refund_id,
        tender_index=source.tender_index,
        topup_id=source.topup_id,
        debit_id=source.debit_id,
        actor=source.actor[:80],
        note=source.note[:500],
        business_day=ledger_day(now),
        created_at=now,
    )
    session.add(entry)
    await session.flush()
    return entry


def balance_after(entry: LedgerEntry) -> Balance:
    return Balance(entry.principal_after_fen, entry.bonus_after_fen)


# --------------------------------------------------------------------------- rules


async def load_rules(session: AsyncSession) -> BonusRules:
    """The chain's bonus tiers and spending order (no tiers, principal first, until set)."""
    row = await session.get(RulesRow, 1)
    if row is None:
        return BonusRules()
    return BonusRules(
        tiers=[BonusTier(**t) for t in row.tiers], spending_order=SpendingOrder(row.spending_order)
    )


async def save_rules(session: AsyncSession, rules: BonusRules, *, actor: str) -> BonusRules:
    """Replace the chain's rules; applies to top-ups and payments from now on."""
    row = await session.get(RulesRow, 1, with_for_update=True)
    tiers = [t.model_dump() for t in rules.tiers]
    now = datetime.now(UTC)
    if row is None:
        session.add(
            RulesRow(
                id=1, tiers=tiers, spending_order=rules.spending_order.value, updated_by=actor, updated_at=now
            )
        )
    else:
        row.tiers, row.spending_order, row.updated_by, row.updated_at = (
            tiers,
            rules.spending_order.value,
            actor,
            now,
        )
    await session.flush()
    return rules


# --------------------------------------------------------------------------- operations


async def debit(
    session: AsyncSession, member_id: str, amount_fen: int, source: Source, *, rules: BonusRules | None = None
) -> Debit:
    """Take a payment from the member's balances in the configured spending order."""
    if amount_fen <= 0:
        raise StoredValueError(f"a payment must be at least 1 fen, got {amount_fen}")
    member_id = await resolve_member(session, member_id)
    rules = rules or await load_rules(session)
    for _ in range(_LOCK_ATTEMPTS):
        balance = await lock_balances(session, member_id)
        if balance.total_fen < amount_fen:
            raise InsufficientBalance(
                f"stored value balance is {balance.describe()}, not enough to pay {format_yuan(amount_fen)}; "
                "take the rest another way"
            )
        principal, bonus = split_debit(
            amount_fen, balance.principal_fen, balance.bonus_fen, rules.spending_order
        )
        entry = await move(session, member_id, LedgerKind.DEBIT, source, principal=-principal, bonus=-bonus)
        if entry is not None:
            return Debit(entry, balance_after(entry))
    raise StoredValueError("the member's balance is changing right now; try the payment again")


def _check_payment(method: str, reference: str | None) -> None:
    if method in _NOT_TOPUP_METHODS:
        raise StoredValueError(f"a top-up cannot be paid with {method}")
    if method != "cash" and not reference:
        raise StoredValueError(f"a top-up paid by {method} needs its payment reference")


async def topup(
    session: AsyncSession,
    member_id: str,
    amount_fen: int,
    *,
    payment_method: str,
    payment_reference: str | None,
    source: Source,
) -> TopupDone:
    """Add principal and the bonus the chain's tiers give for it; tell levels about the top-up."""
    if not 1 <= amount_fen <= MAX_TOPUP_FEN:
        raise StoredValueError(
            f"a top-up must be from 1 fen to {format_yuan(MAX_TOPUP_FEN)}, got {amount_fen} fen"
        )
    _check_payment(payment_method, payment_reference)
    member_id = await resolve_member(session, member_id)
    if payment_reference:
        used = await session.scalar(
            select(Topup.id).where(
                Topup.payment_method == payment_method, Topup.payment_reference == payment_reference
            )
        )
        if used is not None:
            raise StoredValueError(
                f"{payment_method} payment {payment_reference} was already used for top-up {used}"
            )
    rules = await load_rules(session)
    bonus, tier = bonus_for(amount_fen, rules.tiers)
    now = datetime.now(UTC)
    topup_id = str(new_id())
    row = Topup(
        id=topup_id,
        member_id=member_id,
        store=source.store,
        amount_fen=amount_fen,
        bonus_fen=bonus,
        rule=tier.model_dump() if tier is not None else None,
        payment_method=payment_method,
        payment_reference=payment_reference or None,
        actor=source.actor[:80],
        created_at=now,
    )
    session.add(row)
    await session.flush()
    linked = replace(source, topup_id=topup_id)
    entry = await move(
        session, member_id, LedgerKind.TOPUP, linked, principal=amount_fen, entry_id=topup_id, now=now
    )
    if bonus:
        entry = await move(session, member_id, LedgerKind.BONUS, linked, bonus=bonus, now=now)
    if entry is None:  # cannot happen: adding never fails the non-negative check
        raise RuntimeError(f"top-up {topup_id} was not applied")
    from hub.levels import on_topup  # noqa: PLC0415 - levels may import stored value

    await on_topup(session, member_id, amount_fen, f"stored_value.topup:{topup_id}")
    return TopupDone(row, balance_after(entry))

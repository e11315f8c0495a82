"""Head-office stored-value operations: top-up refunds, manual adjustments, member merges."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from hub.db import AsyncSession
from hub.errors import NotFound
from hub.stored_value import (
    Balance,
    InsufficientBalance,
    Source,
    StoredValueError,
    balance_after,
    ensure_account,
    ledger_day,
    lock_balances,
    move,
    resolve_member,
    stored_value_balances,
)
from hub.stored_value_tables import Account, LedgerEntry, LedgerKind, ReconciliationFlag, Topup
from protocol import format_yuan, new_id

__all__ = ["TopupRefundDone", "adjust", "entry_json", "merge_stored_value", "refund_topup", "resolve_flag"]


@dataclass(frozen=True)
class TopupRefundDone:
    """What a top-up refund clawed back and what is paid out to the member."""

    topup: Topup
    clawback_fen: int  # bonus taken back from the bonus balance
    shortfall_fen: int  # spent bonus, taken from the principal instead of paid out
    paid_fen: int  # principal paid back to the member
    balance: Balance
    points_reversed: int = 0  # points the top-up had earned, taken back (`on_topup_refund`)
    points_unrecovered: int = 0  # of those, already spent by the member


async def refund_topup(session: AsyncSession, topup_id: str, *, actor: str, reason: str) -> TopupRefundDone:
    """Pay a top-up's principal back after clawing back its bonus and the points it earned.

    Bonus already spent (the bonus balance is short of the top-up's bonus) is taken from
    the principal instead of being paid out; see docs/members.md for a worked example.
    The top-up's level progress and points are taken back by `hub.levels.on_topup_refund`
    in this same transaction, so a refund that fails leaves both untouched.
    """
    topup_row = (
        await session.execute(select(Topup).where(Topup.id == topup_id).with_for_update())
    ).scalar_one_or_none()
    if topup_row is None:
        raise NotFound(f"no top-up {topup_id!r}")
    if topup_row.refunded_at is not None:
        raise StoredValueError(
            f"top-up {topup_id} was already refunded on {topup_row.refunded_at.isoformat()}"
        )
    member_id = topup_row.member_id
    balance = await lock_balances(session, member_id)
    clawback = min(topup_row.bonus_fen, balance.bonus_fen)
    shortfall = topup_row.bonus_fen - clawback
    principal = min(topup_row.amount_fen, balance.principal_fen)
    paid = principal - shortfall
    if paid <= 0:
        raise StoredValueError(
            f"nothing can be paid back for top-up {topup_id}: the balance is {balance.describe()} and "
            f"{format_yuan(shortfall)} of its bonus was already spent"
        )
    now = datetime.now(UTC)
    source = Source(actor=actor, topup_id=topup_id, note=reason)
    entry: LedgerEntry | None = None
    if clawback or shortfall:
        entry = await move(
            session,
            member_id,
            LedgerKind.BONUS_CLAWBACK,
            source,
            principal=-shortfall,
            bonus=-clawback,
            now=now,
        )
        if entry is None:
            raise StoredValueError("the member's balance changed during the refund; try again")
    entry = await move(session, member_id, LedgerKind.TOPUP_REFUND, source, principal=-paid, now=now)
    if entry is None:
        raise StoredValueError("the member's balance changed during the refund; try again")
    topup_row.refunded_at, topup_row.refunded_by, topup_row.refund_reason = now, actor[:80], reason[:500]
    topup_row.refund_paid_fen, topup_row.refund_clawback_fen = paid, clawback
    topup_row.refund_shortfall_fen = shortfall
    await session.flush()
    from hub.levels import on_topup_refund  # noqa: PLC0415 - levels may import stored value

    reversal = await on_topup_refund(
        session, member_id, f"stored_value.topup:{topup_id}", f"stored_value.topup_refund:{topup_id}"
    )
    return TopupRefundDone(
        topup_row,
        clawback,
        shortfall,
        paid,
        balance_after(entry),
        points_reversed=reversal.points,
        points_unrecovered=reversal.unrecovered,
    )


async def adjust(
    session: AsyncSession, member_id: str, principal_delta: int, bonus_delta: int, *, actor: str, reason: str
) -> LedgerEntry:
    """A head-office correction of either bucket, with its reason on the ledger."""
    if principal_delta == 0 and bonus_delta == 0:
        raise StoredValueError("an adjustment must change principal or bonus")
    if not reason.strip():
        raise StoredValueError("an adjustment needs a reason")
    member_id = await resolve_member(session, member_id)
    await lock_balances(session, member_id)
    source = Source(actor=actor, note=reason.strip())
    entry = await move(
        session, member_id, LedgerKind.ADJUST, source, principal=principal_delta, bonus=bonus_delta
    )
    if entry is None:
        balance = Balance(*await stored_value_balances(session, member_id))
        raise InsufficientBalance(
            f"the adjustment would take a balance below zero; the balance is {balance.describe()}"
        )
    return entry


async def merge_stored_value(session: AsyncSession, from_id: str, into_id: str) -> None:
    """Merge hook: the duplicate's balances, ledger, top-ups and flags move to the survivor.

    The moved entries keep their deltas, so the survivor's ledger still sums to its
    balances; a `merge` entry (no deltas) records the move and the balances after it.
    """
    # Rows first, accounts last: the order the sale listener locks in (debit entry, flag,
    # account), so a refund applied at the same moment waits instead of deadlocking.
    entries = 0
    for table in (LedgerEntry, Topup, ReconciliationFlag):
        result = await session.execute(
            update(table)
            .where(table.member_id == from_id)
            .values(member_id=into_id)
            .execution_options(synchronize_session=False)
        )
        entries += getattr(result, "rowcount", 0) or 0
    locked = {m: await lock_balances(session, m) for m in sorted((from_id, into_id))}  # id order
    moved = locked[from_id]
    if not entries and moved.total_fen == 0:
        return
    now = datetime.now(UTC)
    await session.execute(
        update(Account)
        .where(Account.member_id == from_id)
        .values(principal_fen=0, bonus_fen=0, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    note = (
        f"merged member {from_id}: principal {format_yuan(moved.principal_fen)}, "
        f"bonus {format_yuan(moved.bonus_fen)} moved here with its ledger"
    )
    await ensure_account(session, into_id, now)
    after = (
        await session.execute(
            update(Account)
            .where(Account.member_id == into_id)
            .values(
                principal_fen=Account.principal_fen + moved.principal_fen,
                bonus_fen=Account.bonus_fen + moved.bonus_fen,
                updated_at=now,
            )
            .returning(Account.principal_fen, Account.bonus_fen)
            .execution_options(synchronize_session=False)
        )
    ).one()
    session.add(
        LedgerEntry(
            id=str(new_id()),
            member_id=into_id,
            kind=LedgerKind.MERGE.value,
            principal_delta_fen=0,
            bonus_delta_fen=0,
            principal_after_fen=int(after[0]),
            bonus_after_fen=int(after[1]),
            shortfall_fen=0,
            actor="merge",
            note=note,
            business_day=ledger_day(now),
            created_at=now,
        )
    )
    await session.flush()


def entry_json(entry: LedgerEntry) -> dict[str, Any]:
    """A ledger entry as the API shows it."""
    return {
        "id": entry.id,
        "member_id": entry.member_id,
        "kind": entry.kind,
        "principal_delta_fen": entry.principal_delta_fen,
        "bonus_delta_fen": entry.bonus_delta_fen,
        "principal_after_fen": entry.principal_after_fen,
        "bonus_after_fen": entry.bonus_after_fen,
        "shortfall_fen": entry.shortfall_fen,
        "store": entry.store,
        "order_id": entry.order_id,
        "refund_id": entry.refund_id,
        "tender_index": entry.tender_index,
        "topup_id": entry.topup_id,
        "debit_id": entry.debit_id,
        "actor": entry.actor,
        "note": entry.note,
        "business_day": entry.business_day.isoformat(),
        "created_at": entry.created_at.isoformat().replace("+00:00", "Z"),
    }


async def resolve_flag(
    session: AsyncSession, flag_id: int, *, actor: str, resolution: str
) -> ReconciliationFlag:
    """Close a reconciliation flag with what was done about it (money moves are separate adjustments)."""
    flag = await session.get(ReconciliationFlag, flag_id, with_for_update=True)
    if flag is None:
        raise NotFound(f"no stored-value flag {flag_id}")
    if flag.resolved:
        raise StoredValueError(f"flag {flag_id} was already resolved by {flag.resolved_by}")
    if not resolution.strip():
        raise StoredValueError("resolving a flag needs a note saying what was done")
    flag.resolved, flag.resolved_at, flag.resolved_by = True, datetime.now(UTC), actor[:80]
    flag.resolution = resolution.strip()[:500]
    await session.flush()
    return flag

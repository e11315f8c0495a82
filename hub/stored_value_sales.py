"""The stored-value sale listener: what a store's order and refund events do to balances.

Runs inside ingest's batch transaction, once per first-seen order or refund, so a refund
delivered three times returns its money once, and an offline sale is charged once when it
syncs. A tender paid with stored value has method "stored_value" and, as reference, the
txn id `stored_value.debit` returned, or "offline:…" when the till took it offline.

- `order.paid`: an offline tender is charged now (`offline_debit`), taking what the
  balance has and flagging any shortfall; debits nobody tendered are flagged.
- `order.voided`: every debit made for the order is given back in full (`void_return`).
- `order.refunded`: each stored-value tender's refunded fen go back to the buckets the
  debit took them from, in its proportion (`refund_return`, `split_return`).

Nothing here raises on a malformed document: a listener that raises rolls the batch back
and the store would re-send it forever. Odd cases become reconciliation flags instead.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from hub.db import AsyncSession
from hub.errors import NotFound
from hub.models import HubOrder
from hub.stored_value import Source, ensure_account, load_rules, lock_balances, move, resolve_member
from hub.stored_value_rules import split_debit, split_return
from hub.stored_value_tables import FlagKind, LedgerEntry, LedgerKind, PendingRefund, ReconciliationFlag

__all__ = ["OFFLINE_PREFIX", "apply_stored_value_sales"]

log = logging.getLogger(__name__)

OFFLINE_PREFIX = "offline:"
_METHOD = "stored_value"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _tenders(doc: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The order's stored-value tenders by tender index."""
    found: dict[int, dict[str, Any]] = {}
    for position, tender in enumerate(doc.get("tenders") or ()):
        if isinstance(tender, dict) and tender.get("method") == _METHOD:
            index = _int(tender.get("index"))
            found[index if index is not None else position] = tender
    return found


def _reference(tender: dict[str, Any]) -> str:
    reference = tender.get("reference")
    return reference if isinstance(reference, str) else ""


async def _lock_order(session: AsyncSession, order_id: str) -> None:
    """Serialise this order's and its refunds' stored-value work across hub instances.

    A refund can reach one hub instance while its order is still being ingested by
    another: each side takes this lock before looking for the other, so one of them
    always sees the other's rows. SQLite has a single writer already.
    """
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        key = f"stored_value:{order_id}"
        await session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(key, 0))))


def _flag(
    session: AsyncSession,
    kind: FlagKind,
    store: str,
    amount_fen: int,
    note: str,
    *,
    member_id: str | None = None,
    order_id: str | None = None,
    tender_index: int | None = None,
    debit_id: str | None = None,
) -> None:
    log.warning("store %s: stored value %s on order %s: %s", store, kind.value, order_id, note)
    session.add(
        ReconciliationFlag(
            kind=kind.value,
            member_id=member_id,
            store=store,
            order_id=order_id,
            tender_index=tender_index,
            debit_id=debit_id,
            shortfall_fen=amount_fen,
            covered_fen=0,
            note=note[:500],
            resolved=False,
            created_at=datetime.now(UTC),
        )
    )


async def _debits_of(session: AsyncSession, order_ids: list[str]) -> dict[str, dict[str, LedgerEntry]]:
    """Online debits made for these orders, by order id then debit id (one query per batch)."""
    found: dict[str, dict[str, LedgerEntry]] = {}
    if not order_ids:
        return found
    rows = await session.scalars(
        select(LedgerEntry)
        .where(LedgerEntry.order_id.in_(order_ids), LedgerEntry.kind == LedgerKind.DEBIT.value)
        .order_by(LedgerEntry.id)
        .with_for_update()
    )
    for row in rows:
        found.setdefault(str(row.order_id), {})[row.id] = row
    return found


async def _offline_debit(
    session: AsyncSession, store: str, doc: dict[str, Any], index: int, tender: dict[str, Any]
) -> None:
    """Charge a tender the till took offline: what the balance has, the rest flagged as owed."""
    order_id = str(doc["id"])
    amount = _int(tender.get("amount_fen")) or 0
    if amount <= 0:
        return
    raw_member = doc.get("member_id")
    member_id: str | None = None
    if isinstance(raw_member, str) and raw_member:
        try:
            member_id = await resolve_member(session, raw_member)
        except NotFound:
            member_id = None
    if member_id is None:
        _flag(
            session,
            FlagKind.OFFLINE_NO_MEMBER,
            store,
            amount,
            f"offline stored-value payment of {amount} fen names no known member ({raw_member!r})",
            order_id=order_id,
            tender_index=index,
        )
        return
    rules = await load_rules(session)
    now = datetime.now(UTC)
    await ensure_account(session, member_id, now)
    source = Source(
        actor=f"sync:{store}",
        store=store,
        order_id=order_id,
        tender_index=index,
        note=f"offline payment {_reference(tender)}",
    )
    balance = await lock_balances(session, member_id)
    taken = min(amount, balance.total_fen)
    principal, bonus = split_debit(taken, balance.principal_fen, balance.bonus_fen, rules.spending_order)
    shortfall = amount - taken
    entry = await move(
        session,
        member_id,
        LedgerKind.OFFLINE_DEBIT,
        source,
        principal=-principal,
        bonus=-bonus,
        shortfall_fen=shortfall,
        now=now,
    )
    if entry is None:  # the account is locked (PostgreSQL) or we hold the only write lock (SQLite)
        raise RuntimeError(f"offline debit of order {order_id} raced with another writer")
    if shortfall:
        _flag(
            session,
            FlagKind.OFFLINE_SHORTFALL,
            store,
            shortfall,
            f"offline stored-value payment of {amount} fen, the balance had {taken} fen; "
            f"the member owes {shortfall} fen",
            member_id=member_id,
            order_id=order_id,
            tender_index=index,
            debit_id=entry.id,
        )


async def _give_back(
    session: AsyncSession, store: str, debit: LedgerEntry, amount_fen: int | None, source: Source
) -> None:
    """Return `amount_fen` (None: all that is left) of a debit to the buckets it came from."""
    sums = (
        await session.execute(
            select(
                func.coalesce(func.sum(LedgerEntry.principal_delta_fen), 0),
                func.coalesce(func.sum(LedgerEntry.bonus_delta_fen), 0),
            ).where(LedgerEntry.debit_id == debit.id)
        )
    ).one()
    shortfall_flag = None
    if debit.shortfall_fen:
        shortfall_flag = await session.scalar(
            select(ReconciliationFlag)
            .where(
                ReconciliationFlag.debit_id == debit.id,
                ReconciliationFlag.kind == FlagKind.OFFLINE_SHORTFALL.value,
            )
            .with_for_update()
        )
    covered = shortfall_flag.covered_fen if shortfall_flag is not None else 0
    principal, bonus = -debit.principal_delta_fen, -debit.bonus_delta_fen
    if amount_fen is None:
        amount_fen = max(0, principal + bonus + debit.shortfall_fen - int(sums[0]) - int(sums[1]) - covered)
    split = split_return(
        amount_fen,
        debit_principal_fen=principal,
        debit_bonus_fen=bonus,
        shortfall_fen=debit.shortfall_fen,
        returned_principal_fen=int(sums[0]),
        returned_bonus_fen=int(sums[1]),
        covered_fen=covered,
    )
    if split.covered_fen and shortfall_flag is not None:
        shortfall_flag.covered_fen += split.covered_fen
        if shortfall_flag.covered_fen >= shortfall_flag.shortfall_fen and not shortfall_flag.resolved:
            shortfall_flag.resolved = True
            shortfall_flag.resolved_at = datetime.now(UTC)
            shortfall_flag.resolved_by = source.actor
            shortfall_flag.resolution = "the refund cancelled what the member owed"
    if split.principal_fen or split.bonus_fen:
        kind = LedgerKind.REFUND_RETURN if source.refund_id else LedgerKind.VOID_RETURN
        entry = await move(
            session, debit.member_id, kind, source, principal=split.principal_fen, bonus=split.bonus_fen
        )
        if entry is None:  # adding never fails the non-negative check
            raise RuntimeError(f"return against debit {debit.id} was not applied")
    if split.excess_fen:
        _flag(
            session,
            FlagKind.OVER_REFUND,
            store,
            split.excess_fen,
            f"refunds of this tender asked for {split.excess_fen} fen more than debit {debit.id} took",
            member_id=debit.member_id,
            order_id=debit.order_id,
            tender_index=source.tender_index,
            debit_id=debit.id,
        )


async def _debit_for_tender(
    session: AsyncSession, order_id: str, index: int, tender: dict[str, Any]
) -> LedgerEntry | None:
    reference = _reference(tender)
    if reference.startswith(OFFLINE_PREFIX):
        query = select(LedgerEntry).where(
            LedgerEntry.order_id == order_id,
            LedgerEntry.tender_index == index,
            LedgerEntry.kind == LedgerKind.OFFLINE_DEBIT.value,
        )
    else:
        query = select(LedgerEntry).where(
            LedgerEntry.id == reference,
            LedgerEntry.order_id == order_id,
            LedgerEntry.kind == LedgerKind.DEBIT.value,
        )
    return (await session.scalars(query.with_for_update())).first()


async def _paid(
    session: AsyncSession,
    store: str,
    doc: dict[str, Any],
    tenders: dict[int, dict[str, Any]],
    debits: dict[str, LedgerEntry],
) -> None:
    order_id = str(doc["id"])
    named: set[str] = set()
    for index, tender in sorted(tenders.items()):
        reference = _reference(tender)
        if reference.startswith(OFFLINE_PREFIX):
            await _offline_debit(session, store, doc, index, tender)
        elif reference in debits:
            named.add(reference)
        else:
            amount = _int(tender.get("amount_fen")) or 0
            _flag(
                session,
                FlagKind.UNMATCHED_REFERENCE,
                store,
                amount,
                f"stored-value tender {index} names {reference!r}, which is no debit of this order",
                order_id=order_id,
                tender_index=index,
            )
    for debit_id, debit in debits.items():
        if debit_id not in named:
            taken = -(debit.principal_delta_fen + debit.bonus_delta_fen)
            _flag(
                session,
                FlagKind.DEBIT_NOT_IN_ORDER,
                store,
                taken,
                f"debit {debit_id} of {taken} fen was made for this order but no tender of the paid "
                "order names it; give it back with an adjustment if the member was not served",
                member_id=debit.member_id,
                order_id=order_id,
                debit_id=debit_id,
            )


async def _voided(
    session: AsyncSession,
    store: str,
    doc: dict[str, Any],
    tenders: dict[int, dict[str, Any]],
    debits: dict[str, LedgerEntry],
) -> None:
    order_id = str(doc["id"])
    by_reference = {_reference(t): i for i, t in tenders.items()}
    for debit_id, debit in debits.items():
        source = Source(
            actor=f"sync:{store}",
            store=store,
            order_id=order_id,
            tender_index=by_reference.get(debit_id),
            debit_id=debit_id,
            note="order voided",
        )
        await _give_back(session, store, debit, None, source)


async def _apply_refund(session: AsyncSession, store: str, doc: dict[str, Any], body: dict[str, Any]) -> None:
    order_id = str(body.get("order_id"))
    refund = _obj(body.get("refund"))
    parts = _obj(refund.get("tenders"))
    tenders = _tenders(doc)
    for key, fen in sorted(parts.items()):
        try:
            index = int(key)
        except ValueError:
            continue
        amount = _int(fen)
        if index not in tenders or amount is None or amount <= 0:
            continue
        debit = await _debit_for_tender(session, order_id, index, tenders[index])
        if debit is None:
            _flag(
                session,
                FlagKind.UNMATCHED_REFERENCE,
                store,
                amount,
                f"refund {refund.get('id')} gives {amount} fen back to stored-value tender {index}, "
                "whose debit the hub does not know",
                order_id=order_id,
                tender_index=index,
            )
            continue
        source = Source(
            actor=f"sync:{store}",
            store=store,
            order_id=order_id,
            refund_id=str(refund.get("id")),
            tender_index=index,
            debit_id=debit.id,
            note=str(refund.get("reason") or "")[:200],
        )
        await _give_back(session, store, debit, amount, source)


async def _order(
    session: AsyncSession, store: str, doc: dict[str, Any], debits: dict[str, LedgerEntry]
) -> None:
    tenders = _tenders(doc)
    if not tenders and not debits:
        return
    order_id = str(doc.get("id"))
    if doc.get("status") == "voided":
        await _voided(session, store, doc, tenders, debits)
    else:
        await _paid(session, store, doc, tenders, debits)
    if not tenders:
        return
    await _lock_order(session, order_id)
    pending = (await session.scalars(select(PendingRefund).where(PendingRefund.order_id == order_id))).all()
    for row in pending:
        await _apply_refund(session, row.store, doc, row.body)
        await session.delete(row)


async def _refund(session: AsyncSession, store: str, body: dict[str, Any]) -> None:
    order_id = str(body.get("order_id"))
    order = await session.get(HubOrder, order_id)
    if order is None:
        await _lock_order(session, order_id)
        order = await session.scalar(
            select(HubOrder).where(HubOrder.id == order_id).execution_options(populate_existing=True)
        )
    if order is None:
        refund = _obj(body.get("refund"))
        session.add(
            PendingRefund(
                refund_id=str(refund.get("id")),
                order_id=order_id,
                store=store,
                body=body,
                received_at=datetime.now(UTC),
            )
        )
        return
    await _apply_refund(session, store, order.doc, body)


async def apply_stored_value_sales(
    session: AsyncSession, store: str, orders: list[dict[str, Any]], refunds: list[dict[str, Any]]
) -> None:
    """Sale listener: orders first, so a refund in the same batch finds its order's debits."""
    debits = await _debits_of(session, [str(doc.get("id")) for doc in orders])
    for doc in orders:
        await _order(session, store, doc, debits.get(str(doc.get("id")), {}))
    for body in refunds:
        await _refund(session, store, body)

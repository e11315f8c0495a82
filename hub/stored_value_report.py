"""Stored-value reading for head office: a member's account and ledger, the daily liability report.

The liability at the end of a business day is the sum of every ledger delta dated up to
that day, which equals the sum of the account balances then: the ledger explains every
balance. Days are Asia/Shanghai business days with the 04:00 cut-over (`ledger_day`).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import date
from typing import Any

from sqlalchemy import func, select

from hub.db import AsyncSession
from hub.stored_value import LIABILITY_ZONE, Balance, resolve_member, stored_value_balances
from hub.stored_value_tables import LedgerEntry, ReconciliationFlag, Topup
from protocol.timeutil import DEFAULT_CUTOVER_HOUR

__all__ = ["account_view", "flag_json", "ledger_page", "liability_report", "list_flags", "topup_json"]


def _utc(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def topup_json(row: Topup) -> dict[str, Any]:
    """A top-up as the API shows it, with its refund if any."""
    return {
        "id": row.id,
        "member_id": row.member_id,
        "store": row.store,
        "amount_fen": row.amount_fen,
        "bonus_fen": row.bonus_fen,
        "rule": row.rule,
        "payment_method": row.payment_method,
        "payment_reference": row.payment_reference,
        "actor": row.actor,
        "created_at": _utc(row.created_at),
        "refund": None
        if row.refunded_at is None
        else {
            "refunded_at": _utc(row.refunded_at),
            "refunded_by": row.refunded_by,
            "reason": row.refund_reason,
            "paid_fen": row.refund_paid_fen,
            "clawback_fen": row.refund_clawback_fen,
            "shortfall_fen": row.refund_shortfall_fen,
        },
    }


def flag_json(row: ReconciliationFlag) -> dict[str, Any]:
    """A reconciliation flag as the API shows it; `open_fen` is what is still unexplained or owed."""
    return {
        "id": row.id,
        "kind": row.kind,
        "member_id": row.member_id,
        "store": row.store,
        "order_id": row.order_id,
        "tender_index": row.tender_index,
        "debit_id": row.debit_id,
        "shortfall_fen": row.shortfall_fen,
        "covered_fen": row.covered_fen,
        "open_fen": row.shortfall_fen - row.covered_fen,
        "note": row.note,
        "resolved": row.resolved,
        "created_at": _utc(row.created_at),
        "resolved_at": _utc(row.resolved_at),
        "resolved_by": row.resolved_by,
        "resolution": row.resolution,
    }


async def account_view(session: AsyncSession, member_id: str, *, topups: int = 100) -> dict[str, Any]:
    """A member's balances and newest top-ups (the survivor's, if the member was merged)."""
    member_id = await resolve_member(session, member_id)
    balance = Balance(*await stored_value_balances(session, member_id))
    rows = await session.scalars(
        select(Topup).where(Topup.member_id == member_id).order_by(Topup.created_at.desc()).limit(topups)
    )
    return {"member_id": member_id, **balance.as_json(), "topups": [topup_json(r) for r in rows]}


async def ledger_page(
    session: AsyncSession, member_id: str, *, limit: int, offset: int
) -> tuple[str, list[LedgerEntry], bool]:
    """(member id, newest-first entries, whether more follow)."""
    member_id = await resolve_member(session, member_id)
    rows = (
        await session.scalars(
            select(LedgerEntry)
            .where(LedgerEntry.member_id == member_id)
            .order_by(LedgerEntry.created_at.desc(), LedgerEntry.id.desc())
            .limit(limit + 1)
            .offset(offset)
        )
    ).all()
    return member_id, list(rows[:limit]), len(rows) > limit


async def list_flags(
    session: AsyncSession, *, resolved: bool | None, stores: Collection[str] | None, limit: int = 500
) -> list[ReconciliationFlag]:
    """Flags, oldest first; `stores` limits them to those stores (None: all)."""
    query = select(ReconciliationFlag)
    if resolved is not None:
        query = query.where(ReconciliationFlag.resolved.is_(resolved))
    if stores is not None:
        query = query.where(ReconciliationFlag.store.in_(stores))
    return list((await session.scalars(query.order_by(ReconciliationFlag.id).limit(limit))).all())


def _bucket(rows: list[Any]) -> dict[str, Any]:
    kinds: dict[str, dict[str, int]] = {}
    for row in rows:
        kind = kinds.setdefault(row.kind, {"count": 0, "principal_fen": 0, "bonus_fen": 0})
        kind["count"] += int(row.n)
        kind["principal_fen"] += int(row.p)
        kind["bonus_fen"] += int(row.b)
    principal = sum(k["principal_fen"] for k in kinds.values())
    bonus = sum(k["bonus_fen"] for k in kinds.values())
    return {
        "movements": kinds,
        "principal_fen": principal,
        "bonus_fen": bonus,
        "total_fen": principal + bonus,
    }


async def liability_report(
    session: AsyncSession, day: date, *, stores: Collection[str] | None
) -> dict[str, Any]:
    """What the chain owes members at the end of `day`, and that day's movements per store.

    `stores` limits the movements to those stores (a store-scoped user) and then leaves
    out the chain-wide amount owed, which only chain-wide users see. Head-office movements
    (top-ups and adjustments made at the hub) have store None.
    """
    owed: dict[str, int] | None = None
    if stores is None:
        total = (
            await session.execute(
                select(
                    func.coalesce(func.sum(LedgerEntry.principal_delta_fen), 0),
                    func.coalesce(func.sum(LedgerEntry.bonus_delta_fen), 0),
                ).where(LedgerEntry.business_day <= day)
            )
        ).one()
        owed = Balance(int(total[0]), int(total[1])).as_json()
    query = (
        select(
            LedgerEntry.store,
            LedgerEntry.kind,
            func.count().label("n"),
            func.coalesce(func.sum(LedgerEntry.principal_delta_fen), 0).label("p"),
            func.coalesce(func.sum(LedgerEntry.bonus_delta_fen), 0).label("b"),
        )
        .where(LedgerEntry.business_day == day)
        .group_by(LedgerEntry.store, LedgerEntry.kind)
    )
    if stores is not None:
        query = query.where(LedgerEntry.store.in_(stores))
    rows = (await session.execute(query)).all()
    by_store: dict[str | None, list[Any]] = {}
    for row in rows:
        by_store.setdefault(row.store, []).append(row)
    per_store = [
        {"store": store, **_bucket(by_store[store])}
        for store in sorted(by_store, key=lambda s: (s is None, s or ""))
    ]
    return {
        "day": day.isoformat(),
        "zone": LIABILITY_ZONE,
        "cutover_hour": DEFAULT_CUTOVER_HOUR,
        "owed_at_end": owed,
        "stores": per_store,
        "total": _bucket(list(rows)),
    }

"""Stored-value tables: one account per member, its ledger, top-ups, rules and flags.

The account holds the balances; the ledger explains them: for every member, the sum of
the ledger's deltas equals the account's balances (a merge moves both together).
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, CheckConstraint, Date, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from hub.models import Base

__all__ = [
    "Account",
    "FlagKind",
    "LedgerEntry",
    "LedgerKind",
    "PendingRefund",
    "ReconciliationFlag",
    "RulesRow",
    "Topup",
]


class LedgerKind(StrEnum):
    """Why a balance moved."""

    TOPUP = "topup"  # principal paid in
    BONUS = "bonus"  # bonus granted with a top-up
    DEBIT = "debit"  # paid at a till, online
    REFUND_RETURN = "refund_return"  # a sale refund gives a debit back
    VOID_RETURN = "void_return"  # a voided order gives its debit back
    TOPUP_REFUND = "topup_refund"  # principal paid back out (cash/original method)
    BONUS_CLAWBACK = "bonus_clawback"  # a refunded top-up's bonus taken back
    ADJUST = "adjust"  # head office, with a reason
    OFFLINE_DEBIT = "offline_debit"  # paid at a till while the hub was unreachable
    MERGE = "merge"  # marker, no deltas: a merged member's balances and ledger moved here


class FlagKind(StrEnum):
    """What a reconciliation flag asks a person to look at."""

    OFFLINE_SHORTFALL = "offline_shortfall"  # an offline payment exceeded the balance
    OFFLINE_NO_MEMBER = "offline_no_member"  # an offline payment names no known member
    UNMATCHED_REFERENCE = "unmatched_reference"  # a tender names no debit of its order
    DEBIT_NOT_IN_ORDER = "debit_not_in_order"  # a debit of a paid order no tender names
    OVER_REFUND = "over_refund"  # refunds asked for more than the debit took


class Account(Base):
    """A member's two balances; changed only by conditional UPDATEs under a row lock."""

    __tablename__ = "stored_value_accounts"
    __table_args__ = (
        CheckConstraint("principal_fen >= 0", name="ck_sv_principal_not_negative"),
        CheckConstraint("bonus_fen >= 0", name="ck_sv_bonus_not_negative"),
    )

    member_id: Mapped[str] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), primary_key=True)
    principal_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    bonus_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime]


class LedgerEntry(Base):
    """One movement with its source and the balances right after it; never changed later.

    `debit_id` ties a return to the debit it gives back; `topup_id` ties bonus, clawback
    and top-up refund to their top-up.
    """

    __tablename__ = "stored_value_ledger"
    __table_args__ = (
        Index("ix_sv_ledger_member", "member_id", "created_at"),
        Index("ix_sv_ledger_day", "business_day", "store"),
        Index("ix_sv_ledger_order", "order_id"),
        Index("ix_sv_ledger_debit", "debit_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # UUIDv7: sorts by creation
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    principal_delta_fen: Mapped[int] = mapped_column(BigInteger)
    bonus_delta_fen: Mapped[int] = mapped_column(BigInteger)
    principal_after_fen: Mapped[int] = mapped_column(BigInteger)
    bonus_after_fen: Mapped[int] = mapped_column(BigInteger)
    shortfall_fen: Mapped[int] = mapped_column(BigInteger, default=0)  # offline_debit only
    store: Mapped[str | None] = mapped_column(String(32))  # where it happened; None: head office
    order_id: Mapped[str | None] = mapped_column(String(36))
    refund_id: Mapped[str | None] = mapped_column(String(36))
    tender_index: Mapped[int | None] = mapped_column(Integer)
    topup_id: Mapped[str | None] = mapped_column(String(36))
    debit_id: Mapped[str | None] = mapped_column(String(36))
    actor: Mapped[str] = mapped_column(String(80))  # head-office user, "store:<id>" or "sync:<id>"
    note: Mapped[str] = mapped_column(String(500), default="")
    business_day: Mapped[date] = mapped_column(Date)  # Asia/Shanghai, 04:00 cut-over
    created_at: Mapped[datetime]


class Topup(Base):
    """A top-up and its bonus, so a refund of it knows what bonus to claw back."""

    __tablename__ = "stored_value_topups"
    __table_args__ = (
        Index("uq_sv_topup_payment", "payment_method", "payment_reference", unique=True),
        Index("ix_sv_topup_member", "member_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # = its `topup` ledger entry
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    store: Mapped[str | None] = mapped_column(String(32))
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    bonus_fen: Mapped[int] = mapped_column(BigInteger)
    rule: Mapped[dict[str, Any] | None]  # the tier that gave the bonus, as it was then
    payment_method: Mapped[str] = mapped_column(String(16))
    payment_reference: Mapped[str | None] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime]
    refunded_at: Mapped[datetime | None]
    refunded_by: Mapped[str | None] = mapped_column(String(80))
    refund_reason: Mapped[str | None] = mapped_column(String(500))
    refund_paid_fen: Mapped[int | None] = mapped_column(BigInteger)
    refund_clawback_fen: Mapped[int | None] = mapped_column(BigInteger)
    refund_shortfall_fen: Mapped[int | None] = mapped_column(BigInteger)


class RulesRow(Base):
    """The chain's bonus tiers and spending order (one row, id 1); absent means the defaults."""

    __tablename__ = "stored_value_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tiers: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    spending_order: Mapped[str] = mapped_column(String(16))
    updated_by: Mapped[str] = mapped_column(String(80))
    updated_at: Mapped[datetime]


class ReconciliationFlag(Base):
    """Something about stored value a person must settle, such as an offline shortfall."""

    __tablename__ = "stored_value_flags"
    __table_args__ = (Index("ix_sv_flags_open", "resolved", "store"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(24))
    member_id: Mapped[str | None] = mapped_column(ForeignKey("members.id", ondelete="SET NULL"))
    store: Mapped[str] = mapped_column(String(32))
    order_id: Mapped[str | None] = mapped_column(String(36))
    tender_index: Mapped[int | None] = mapped_column(Integer)
    debit_id: Mapped[str | None] = mapped_column(String(36))
    shortfall_fen: Mapped[int] = mapped_column(BigInteger)  # what is owed or unexplained
    covered_fen: Mapped[int] = mapped_column(BigInteger, default=0)  # later cancelled by refunds
    note: Mapped[str] = mapped_column(String(500))
    resolved: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(80))
    resolution: Mapped[str | None] = mapped_column(String(500))


class PendingRefund(Base):
    """A refund that reached the hub before its order; applied when the order arrives."""

    __tablename__ = "stored_value_pending_refunds"

    refund_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(36), index=True)
    store: Mapped[str] = mapped_column(String(32))
    body: Mapped[dict[str, Any]]
    received_at: Mapped[datetime]

"""Stored-value arithmetic as pure functions: top-up bonus tiers and how a payment or a return
splits between the principal and bonus buckets, exact to the fen.

No I/O here, so every rounding rule is tested directly and documented once
(docs/members.md, "Stored value").
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "MAX_TOPUP_FEN",
    "BonusRules",
    "BonusTier",
    "ReturnSplit",
    "SpendingOrder",
    "bonus_for",
    "split_debit",
    "split_return",
]

# A typo guard, not a business limit: one top-up of more than ¥100,000 is refused.
MAX_TOPUP_FEN = 10_000_000
MAX_TIERS = 20


class SpendingOrder(StrEnum):
    """Which bucket a payment draws on first; chain-wide."""

    PRINCIPAL_FIRST = "principal_first"
    BONUS_FIRST = "bonus_first"
    PROPORTIONAL = "proportional"


class BonusTier(BaseModel):
    """Pay at least `min_fen`, get `bonus_fen`; with `per_each`, get it for every full `min_fen`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_fen: int = Field(ge=1, le=MAX_TOPUP_FEN, strict=True)
    bonus_fen: int = Field(ge=0, strict=True)
    per_each: bool = False

    @model_validator(mode="after")
    def _not_more_than_paid(self) -> BonusTier:
        # 充100送100 is the most any real promotion gives; more is a typo (80000 for 8000).
        if self.bonus_fen > self.min_fen:
            raise ValueError(
                f"bonus {self.bonus_fen} fen is more than the {self.min_fen} fen paid for it; "
                "check for a typo"
            )
        return self


class BonusRules(BaseModel):
    """The chain's top-up bonus tiers and spending order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tiers: list[BonusTier] = Field(default_factory=list, max_length=MAX_TIERS)
    spending_order: SpendingOrder = SpendingOrder.PRINCIPAL_FIRST

    @field_validator("tiers")
    @classmethod
    def _ascending(cls, tiers: list[BonusTier]) -> list[BonusTier]:
        for lower, higher in itertools.pairwise(tiers):
            if higher.min_fen <= lower.min_fen:
                raise ValueError(
                    f"tiers must be in increasing min_fen order without repeats; "
                    f"{higher.min_fen} comes after {lower.min_fen}"
                )
        return tiers


def bonus_for(amount_fen: int, tiers: list[BonusTier]) -> tuple[int, BonusTier | None]:
    """The bonus a top-up of `amount_fen` earns and the tier that gave it.

    The highest tier the amount reaches applies, alone: tiers do not add up. A `per_each`
    tier multiplies its bonus by the number of full `min_fen` in the amount (floor).
    """
    reached = [tier for tier in tiers if tier.min_fen <= amount_fen]
    if not reached:
        return 0, None
    tier = max(reached, key=lambda t: t.min_fen)
    times = amount_fen // tier.min_fen if tier.per_each else 1
    return tier.bonus_fen * times, tier


def split_debit(amount_fen: int, principal_fen: int, bonus_fen: int, order: SpendingOrder) -> tuple[int, int]:
    """(principal, bonus) parts of a payment of `amount_fen`; the caller checks it is covered.

    Proportional: each bucket gives its share of the payment, floored, and the one fen
    left over (if any) goes to the bucket with the larger remainder; on a tie, principal.
    """
    if not 0 <= amount_fen <= principal_fen + bonus_fen:
        raise ValueError(f"{amount_fen} fen is not covered by {principal_fen} + {bonus_fen} fen")
    if order is SpendingOrder.PRINCIPAL_FIRST:
        principal = min(amount_fen, principal_fen)
        return principal, amount_fen - principal
    if order is SpendingOrder.BONUS_FIRST:
        bonus = min(amount_fen, bonus_fen)
        return amount_fen - bonus, bonus
    total = principal_fen + bonus_fen
    if total == 0:
        return 0, 0
    principal, principal_rest = divmod(amount_fen * principal_fen, total)
    bonus, bonus_rest = divmod(amount_fen * bonus_fen, total)
    if principal + bonus < amount_fen:  # at most one fen: the remainders add up to `total`
        if principal_rest >= bonus_rest:
            principal += 1
        else:
            bonus += 1
    return principal, bonus


@dataclass(frozen=True)
class ReturnSplit:
    """What one refund gives back against one debit."""

    principal_fen: int
    bonus_fen: int
    covered_fen: int  # of an offline shortfall, cancelled instead of paid back
    excess_fen: int  # asked for beyond what the debit took: not returned


def split_return(
    amount_fen: int,
    *,
    debit_principal_fen: int,
    debit_bonus_fen: int,
    shortfall_fen: int = 0,
    returned_principal_fen: int = 0,
    returned_bonus_fen: int = 0,
    covered_fen: int = 0,
) -> ReturnSplit:
    """Split a refund of `amount_fen` against a debit, given what earlier refunds returned.

    Shares are computed on the running total of all refunds of the debit and differenced,
    so any number of partial refunds returns exactly the debit's principal and bonus in
    the end and never more. The principal share is floored (bonus takes the odd fen). An
    offline debit's shortfall (what the member did not have) is cancelled first: money
    never taken is not given back.
    """
    if amount_fen < 0:
        raise ValueError(f"a refund cannot be negative, got {amount_fen}")
    taken = debit_principal_fen + debit_bonus_fen
    before = returned_principal_fen + returned_bonus_fen + covered_fen
    cumulative = min(before + amount_fen, taken + shortfall_fen)
    covered_total = min(cumulative, shortfall_fen)
    bucket_total = cumulative - covered_total
    principal_total = debit_principal_fen * bucket_total // taken if taken else 0
    bonus_total = bucket_total - principal_total
    return ReturnSplit(
        principal_fen=principal_total - returned_principal_fen,
        bonus_fen=bonus_total - returned_bonus_fen,
        covered_fen=covered_total - covered_fen,
        excess_fen=before + amount_fen - cumulative,
    )

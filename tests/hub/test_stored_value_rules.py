"""Stored-value arithmetic: bonus tiers, spending orders and returns, exact to the fen."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from hub.stored_value_rules import (
    BonusRules,
    BonusTier,
    SpendingOrder,
    bonus_for,
    split_debit,
    split_return,
)

TIERS = [BonusTier(min_fen=50000, bonus_fen=8000), BonusTier(min_fen=100000, bonus_fen=20000)]


@pytest.mark.parametrize(
    ("amount", "bonus"),
    [(49999, 0), (50000, 8000), (99999, 8000), (100000, 20000), (250000, 20000)],
)
def test_the_highest_tier_reached_applies_alone(amount, bonus):
    assert bonus_for(amount, TIERS)[0] == bonus


def test_a_per_each_tier_counts_full_steps_only():
    tiers = [BonusTier(min_fen=10000, bonus_fen=1000, per_each=True)]
    assert bonus_for(9999, tiers) == (0, None)
    assert bonus_for(35000, tiers)[0] == 3000


@pytest.mark.parametrize(
    ("tiers", "message"),
    [
        ([{"min_fen": 100000, "bonus_fen": 1}, {"min_fen": 50000, "bonus_fen": 1}], "increasing min_fen"),
        ([{"min_fen": 50000, "bonus_fen": 1}, {"min_fen": 50000, "bonus_fen": 2}], "increasing min_fen"),
        ([{"min_fen": 50000, "bonus_fen": 80000}], "check for a typo"),
        ([{"min_fen": 0, "bonus_fen": 0}], "greater than or equal to 1"),
        ([{"min_fen": 50000, "bonus_fen": -1}], "greater than or equal to 0"),
        ([{"min_fen": 500.5, "bonus_fen": 1}], "valid integer"),
    ],
)
def test_bad_tiers_are_refused_with_a_reason(tiers, message):
    with pytest.raises(ValidationError, match=message):
        BonusRules.model_validate({"tiers": tiers})


def test_unknown_spending_order_is_refused():
    with pytest.raises(ValidationError, match="principal_first"):
        BonusRules.model_validate({"spending_order": "cheapest"})


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        (SpendingOrder.PRINCIPAL_FIRST, (3000, 0)),
        (SpendingOrder.BONUS_FIRST, (0, 3000)),
        (SpendingOrder.PROPORTIONAL, (2308, 692)),  # 3000 x 10000/13000 = 2307.69 -> 2307 + the odd fen
    ],
)
def test_spending_orders(order, expected):
    assert split_debit(3000, 10000, 3000, order) == expected


def test_the_first_bucket_spills_into_the_other():
    assert split_debit(12000, 10000, 3000, SpendingOrder.PRINCIPAL_FIRST) == (10000, 2000)
    assert split_debit(5000, 10000, 3000, SpendingOrder.BONUS_FIRST) == (2000, 3000)


def test_a_payment_the_balance_does_not_cover_is_an_error():
    with pytest.raises(ValueError, match="not covered"):
        split_debit(13001, 10000, 3000, SpendingOrder.PRINCIPAL_FIRST)


@given(
    amount=st.integers(0, 10**7),
    principal=st.integers(0, 10**7),
    bonus=st.integers(0, 10**7),
    order=st.sampled_from(list(SpendingOrder)),
)
def test_every_split_is_exact_and_within_the_buckets(amount, principal, bonus, order):
    amount = min(amount, principal + bonus)
    p, b = split_debit(amount, principal, bonus, order)
    assert p + b == amount
    assert 0 <= p <= principal
    assert 0 <= b <= bonus


def test_partial_refunds_return_the_debit_exactly():
    # debit took 2308 principal + 692 bonus; refunds of 1000, 1000, 1000
    returned_p = returned_b = 0
    for _ in range(3):
        part = split_return(
            1000,
            debit_principal_fen=2308,
            debit_bonus_fen=692,
            returned_principal_fen=returned_p,
            returned_bonus_fen=returned_b,
        )
        returned_p += part.principal_fen
        returned_b += part.bonus_fen
    assert (returned_p, returned_b) == (2308, 692)
    extra = split_return(
        1, debit_principal_fen=2308, debit_bonus_fen=692, returned_principal_fen=2308, returned_bonus_fen=692
    )
    assert (extra.principal_fen, extra.bonus_fen, extra.excess_fen) == (0, 0, 1)


def test_an_offline_shortfall_is_cancelled_before_anything_is_returned():
    # tender 5000 offline, the balance had 3000 (all principal): shortfall 2000
    first = split_return(1500, debit_principal_fen=3000, debit_bonus_fen=0, shortfall_fen=2000)
    assert (first.covered_fen, first.principal_fen) == (1500, 0)
    second = split_return(
        3500, debit_principal_fen=3000, debit_bonus_fen=0, shortfall_fen=2000, covered_fen=1500
    )
    assert (second.covered_fen, second.principal_fen, second.excess_fen) == (500, 3000, 0)


@given(
    principal=st.integers(0, 10**6),
    bonus=st.integers(0, 10**6),
    shortfall=st.integers(0, 10**5),
    parts=st.lists(st.integers(0, 5 * 10**5), min_size=1, max_size=8),
)
def test_any_refund_sequence_never_returns_more_than_was_taken(principal, bonus, shortfall, parts):
    rp = rb = covered = 0
    for amount in parts:
        part = split_return(
            amount,
            debit_principal_fen=principal,
            debit_bonus_fen=bonus,
            shortfall_fen=shortfall,
            returned_principal_fen=rp,
            returned_bonus_fen=rb,
            covered_fen=covered,
        )
        assert min(part.principal_fen, part.bonus_fen, part.covered_fen, part.excess_fen) >= 0
        assert part.principal_fen + part.bonus_fen + part.covered_fen + part.excess_fen == amount
        rp, rb, covered = rp + part.principal_fen, rb + part.bonus_fen, covered + part.covered_fen
        assert rp <= principal
        assert rb <= bonus
        assert covered <= shortfall
    if sum(parts) >= principal + bonus + shortfall:
        assert (rp, rb, covered) == (principal, bonus, shortfall)

"""Rules that decide a rule tag's members, stored as validated JSON and evaluated in one SQL statement.

Each rule becomes a SELECT of member ids over the `member_orders` facts (and stored-value
accounts), so a chain of 200,000 members is tagged by the database in one pass, never by a
Python loop over members. Windows are business days: "the last D days" as of `today` are
the days after `today - D` up to and including `today`.

A visit is a paid order of the member; spend is net of refunds (`total_fen - refunded_fen`).
Merged members are never tagged (their orders already count for the survivor).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from sqlalchemy import Numeric, Select, and_, cast, func, select, true

from hub.member_facts import MemberOrder
from hub.members import Member
from hub.stored_value_tables import Account

__all__ = [
    "MAX_RULE_DAYS",
    "ChurnRiskRule",
    "HighValueRule",
    "InvalidRule",
    "SpentAtLeastRule",
    "TagRule",
    "matching_members",
    "parse_rule",
]

MAX_RULE_DAYS = 3660  # ten years: longer windows are a typo, not a marketing question
_BP = 10_000
_BIG = Numeric(38, 0)  # products of spends and counts can pass 2**63 on PostgreSQL


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    days: int = Field(strict=True, ge=1, le=MAX_RULE_DAYS)


class HighValueRule(_Rule):
    """At least `min_visits` visits in the window, and an average ticket of at least
    `min_ticket_bp` basis points of the average ticket at the member's source store (the
    whole chain's for a member registered at head office) over the same window.

    The store's average is over the member orders of that store (the facts table holds
    member orders only): the member is compared with the store's other members.
    """

    kind: Literal["high_value"]
    min_visits: int = Field(strict=True, ge=1, le=100_000)
    min_ticket_bp: int = Field(strict=True, ge=0, le=1_000_000)  # 15000: 150 % of the average


class ChurnRiskRule(_Rule):
    """No visit in the window, and a stored-value balance (principal + bonus) above 0.

    `min_member_days` leaves out members registered fewer days ago than that (0: nobody is
    left out), so a member who topped up at registration yesterday is not "at risk".
    """

    kind: Literal["churn_risk"]
    min_member_days: int = Field(0, strict=True, ge=0, le=MAX_RULE_DAYS)


class SpentAtLeastRule(_Rule):
    """Net spend of at least `min_spend_fen` in the window."""

    kind: Literal["spent_at_least"]
    min_spend_fen: int = Field(strict=True, ge=1, le=10**12)


TagRule = Annotated[HighValueRule | ChurnRiskRule | SpentAtLeastRule, Field(discriminator="kind")]
_ADAPTER: TypeAdapter[HighValueRule | ChurnRiskRule | SpentAtLeastRule] = TypeAdapter(TagRule)


class InvalidRule(ValueError):
    """A rule whose JSON does not describe one of the known rule kinds with valid parameters."""


def parse_rule(raw: Any) -> HighValueRule | ChurnRiskRule | SpentAtLeastRule:
    """The rule described by `raw` (a dict from JSON); `InvalidRule` naming the bad field otherwise."""
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as err:
        problems = []
        for error in err.errors():
            where = ".".join(str(part) for part in error["loc"]) or "rule"
            problems.append(f"rule.{where}: {error['msg']}")
        kinds = "high_value, churn_risk, spent_at_least"
        raise InvalidRule(f"{'; '.join(problems)} (rule kinds: {kinds})") from None


def _window(o: type[MemberOrder], today: date, days: int) -> Any:
    return and_(o.business_day > today - timedelta(days=days), o.business_day <= today)


def _high_value(rule: HighValueRule, today: date) -> Select[Any]:
    o = MemberOrder
    net = o.total_fen - o.refunded_fen
    window = _window(o, today, rule.days)
    mine = (
        select(o.member_id, func.count().label("visits"), func.sum(net).label("spend"))
        .where(window)
        .group_by(o.member_id)
        .having(func.count() >= rule.min_visits)
        .subquery("mine")
    )
    per_store = (
        select(o.store, func.count().label("visits"), func.sum(net).label("spend"))
        .where(window)
        .group_by(o.store)
        .subquery("per_store")
    )
    chain = select(func.count().label("visits"), func.sum(net).label("spend")).where(window).subquery("chain")
    base_visits = func.coalesce(per_store.c.visits, chain.c.visits)
    base_spend = func.coalesce(per_store.c.spend, chain.c.spend)
    # avg(member) >= bp/10000 * avg(base), multiplied out so no division rounds anything
    reaches = (
        cast(mine.c.spend, _BIG) * cast(base_visits, _BIG) * _BP
        >= cast(base_spend, _BIG) * cast(mine.c.visits, _BIG) * rule.min_ticket_bp
    )
    return (
        select(mine.c.member_id)
        .join(Member, Member.id == mine.c.member_id)
        .join(chain, true())
        .outerjoin(per_store, per_store.c.store == Member.source_store)
        .where(Member.merged_into.is_(None), reaches)
    )


def _churn_risk(rule: ChurnRiskRule, today: date) -> Select[Any]:
    o = MemberOrder
    visited = select(o.order_id).where(o.member_id == Member.id, _window(o, today, rule.days)).exists()
    query = (
        select(Member.id)
        .join(Account, Account.member_id == Member.id)
        .where(Member.merged_into.is_(None), Account.principal_fen + Account.bonus_fen > 0, ~visited)
    )
    if rule.min_member_days:
        joined_before = datetime.combine(today - timedelta(days=rule.min_member_days - 1), time(), UTC)
        query = query.where(Member.created_at < joined_before)
    return query


def _spent_at_least(rule: SpentAtLeastRule, today: date) -> Select[Any]:
    o = MemberOrder
    spenders = (
        select(o.member_id)
        .where(_window(o, today, rule.days))
        .group_by(o.member_id)
        .having(func.sum(o.total_fen - o.refunded_fen) >= rule.min_spend_fen)
        .subquery("spenders")
    )
    return (
        select(spenders.c.member_id)
        .join(Member, Member.id == spenders.c.member_id)
        .where(Member.merged_into.is_(None))
    )


def matching_members(rule: HighValueRule | ChurnRiskRule | SpentAtLeastRule, today: date) -> Select[Any]:
    """The SELECT of the ids of the members the rule tags as of business day `today`."""
    if isinstance(rule, HighValueRule):
        return _high_value(rule, today)
    if isinstance(rule, ChurnRiskRule):
        return _churn_risk(rule, today)
    return _spent_at_least(rule, today)

"""Referral rules (推广员规则): what promoters earn, one rule per campaign plus the default.

Kept apart from `hub.referrals` (promoters, links, attribution) by role; `hub.referrals`
re-exports these names.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from hub.coupons import get_template
from hub.db import AsyncSession
from hub.errors import HubError, NotFound
from hub.referral_tables import ReferralRule
from protocol import new_id

__all__ = ["ReferralError", "RuleChange", "RuleIn", "create_rule", "list_rules", "rule_json", "update_rule"]


class ReferralError(HubError):
    """A referral request was refused; nothing was written."""


class RuleIn(BaseModel):
    """A referral rule; `campaign` "" is the default rule for links without a campaign of their own."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=100)
    campaign: str = Field("", max_length=64, pattern=r"^[A-Za-z0-9_.-]*$")
    register_points: int = Field(0, strict=True, ge=0, le=1_000_000)
    register_coupon_template: str | None = Field(None, min_length=1, max_length=36)
    friend_coupon_template: str | None = Field(None, min_length=1, max_length=36)
    monthly_register_limit: int | None = Field(None, strict=True, ge=1, le=100_000)
    level1_bp: int = Field(0, strict=True, ge=0, le=10_000)
    level2_bp: int = Field(0, strict=True, ge=0, le=10_000)
    per_friend_cap_fen: int | None = Field(None, strict=True, ge=0, le=10**10)
    monthly_cap_fen: int | None = Field(None, strict=True, ge=0, le=10**10)
    refund_window_days: int = Field(7, strict=True, ge=0, le=180)
    commission_days: int | None = Field(None, strict=True, ge=1, le=3650)

    @model_validator(mode="after")
    def _consistent(self) -> RuleIn:
        rewards = (self.register_points, self.register_coupon_template, self.friend_coupon_template)
        if not any(rewards) and self.level1_bp == 0:
            raise ValueError("a rule must reward something: register_points, a coupon, or level1_bp")
        if self.level2_bp > self.level1_bp:
            raise ValueError("level2_bp must not exceed level1_bp (the friend's own promoter earns most)")
        return self


class RuleChange(BaseModel):
    """What may change on a rule; friends already attributed follow the rule as it is now."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    name: str | None = Field(None, min_length=1, max_length=100)
    active: bool | None = None
    monthly_register_limit: int | None = Field(None, strict=True, ge=1, le=100_000)
    per_friend_cap_fen: int | None = Field(None, strict=True, ge=0, le=10**10)
    monthly_cap_fen: int | None = Field(None, strict=True, ge=0, le=10**10)


def rule_json(rule: ReferralRule) -> dict[str, Any]:
    """A rule as the API shows it."""
    names = [
        "id",
        "name",
        "campaign",
        "active",
        "register_points",
        "register_coupon_template",
        "friend_coupon_template",
        "monthly_register_limit",
        "level1_bp",
        "level2_bp",
        "per_friend_cap_fen",
        "monthly_cap_fen",
        "refund_window_days",
        "commission_days",
        "created_by",
    ]
    return {name: getattr(rule, name) for name in names}


async def _check_templates(session: AsyncSession, *template_ids: str | None) -> None:
    for template_id in template_ids:
        if template_id is not None:
            try:
                await get_template(session, template_id)
            except NotFound:
                raise ReferralError(f"no coupon template {template_id}") from None


async def create_rule(session: AsyncSession, body: RuleIn, *, actor: str) -> ReferralRule:
    """Add a rule; one per campaign (and one default)."""
    await _check_templates(session, body.register_coupon_template, body.friend_coupon_template)
    taken = await session.scalar(select(ReferralRule.id).where(ReferralRule.campaign == body.campaign))
    if taken is not None:
        which = f"campaign {body.campaign!r}" if body.campaign else "the default (no campaign)"
        raise ReferralError(f"{which} already has rule {taken}; change that one")
    now = datetime.now(UTC)
    rule = ReferralRule(
        id=str(new_id()),
        **body.model_dump(),
        active=True,
        created_by=actor[:80],
        created_at=now,
        updated_at=now,
    )
    session.add(rule)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as err:
        raise ReferralError(f"a rule for campaign {body.campaign!r} was added at the same time") from err
    return rule


async def list_rules(session: AsyncSession) -> Sequence[ReferralRule]:
    """Every rule, the default first."""
    return (await session.scalars(select(ReferralRule).order_by(ReferralRule.campaign))).all()


async def update_rule(session: AsyncSession, rule_id: str, change: RuleChange) -> ReferralRule:
    """Rename, (de)activate, change caps; an inactive rule rewards and pays nothing more."""
    rule = await session.get(ReferralRule, rule_id, with_for_update=True)
    if rule is None:
        raise NotFound(f"no referral rule {rule_id}")
    for name, value in change.model_dump(exclude_unset=True).items():
        if value is not None or name.endswith(("_limit", "_cap_fen")):
            setattr(rule, name, value)
    rule.updated_at = datetime.now(UTC)
    await session.flush()
    return rule

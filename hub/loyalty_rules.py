"""Chain-wide loyalty configuration: level definitions and points rules, validated and versioned.

Both are small JSON documents in `loyalty_settings`, one row per kind, replaced whole by
head office (PUT) and read by the sale listener, the till RPC and the level review. A
document that is not there yet means the defaults: no levels, 1 point per yuan, points
valid to the end of the next calendar year.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from hub.db import AsyncSession
from hub.models import Base

__all__ = [
    "BP",
    "LOYALTY_ZONE",
    "ExpiryRule",
    "LevelDef",
    "LevelsConfig",
    "LoyaltySetting",
    "PointsRules",
    "RedeemRule",
    "load_levels",
    "load_points_rules",
    "save_setting",
]

BP = 10_000  # 100 % in basis points
# Loyalty is chain-wide, so its calendar is the chain's: expiry dates and the review window.
LOYALTY_ZONE = ZoneInfo("Asia/Shanghai")
_CODE = r"^[a-z0-9][a-z0-9_-]{0,31}$"
_MAX_POINTS = 10**12  # far above any real figure; keeps products of rules inside BIGINT


class _Rules(BaseModel):
    # strict: "100" or true for a number is a mistake in a rule, not something to coerce.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class LevelDef(_Rules):
    """One level and what it gives; `threshold` is in the chain's metric (fen or points)."""

    code: str = Field(pattern=_CODE)
    name: str = Field(min_length=1, max_length=32)
    rank: int = Field(ge=0, le=1000)
    threshold: int = Field(ge=0, le=_MAX_POINTS)
    discount_bp: int = Field(BP, ge=1, le=BP)
    member_prices: bool = False
    points_multiplier_bp: int = Field(BP, ge=0, le=10 * BP)
    birthday_perk: str = Field("", max_length=200)
    birthday_points: int = Field(0, ge=0, le=10**7)


class LevelsConfig(_Rules):
    """Ordered levels, lowest first; which cumulative counter upgrades; whether a yearly review demotes."""

    metric: Literal["spend", "topup", "points"] = "spend"
    downgrade_review: bool = False
    levels: list[LevelDef] = Field(default_factory=list, max_length=20)

    @model_validator(mode="after")
    def _check_order(self) -> LevelsConfig:
        codes = [level.code for level in self.levels]
        duplicates = sorted({code for code in codes if codes.count(code) > 1})
        if duplicates:
            raise ValueError(f"level codes must be unique; repeated: {', '.join(duplicates)}")
        for lower, higher in zip(self.levels, self.levels[1:], strict=False):
            if higher.rank <= lower.rank or higher.threshold <= lower.threshold:
                raise ValueError(
                    "levels must be listed lowest first, each with a higher rank and a higher "
                    f"threshold than the one before: '{higher.code}' (rank {higher.rank}, threshold "
                    f"{higher.threshold}) follows '{lower.code}' (rank {lower.rank}, "
                    f"threshold {lower.threshold})"
                )
        return self

    def by_code(self, code: str | None) -> LevelDef | None:
        """The level with this code, if it is (still) defined."""
        return next((level for level in self.levels if level.code == code), None)

    def qualifying(self, value: int) -> LevelDef | None:
        """The highest level whose threshold `value` reaches, or None below the lowest."""
        reached = [level for level in self.levels if level.threshold <= value]
        return reached[-1] if reached else None

    def between(self, low: LevelDef | None, high: LevelDef) -> list[LevelDef]:
        """Levels above `low` up to and including `high`, lowest first (each step of an upgrade)."""
        floor = -1 if low is None else low.rank
        return [level for level in self.levels if floor < level.rank <= high.rank]


class ExpiryRule(_Rules):
    """How long an earned lot lives: N days, or to the end of the next calendar year (Shanghai)."""

    mode: Literal["days", "next_year_end"] = "next_year_end"
    days: int = Field(365, ge=1, le=3650)

    def expires_at(self, earned_at: datetime) -> datetime:
        """When a lot earned at `earned_at` expires (it is spendable strictly before this instant)."""
        if self.mode == "days":
            return earned_at + timedelta(days=self.days)
        local = earned_at.astimezone(LOYALTY_ZONE)
        return datetime(local.year + 2, 1, 1, tzinfo=LOYALTY_ZONE).astimezone(UTC)


class RedeemRule(_Rules):
    """Paying with points: `points` points pay `fen` fen; a minimum per use and a maximum share."""

    enabled: bool = True
    points: int = Field(100, ge=1, le=10**6)
    fen: int = Field(100, ge=1, le=10**6)
    min_points: int = Field(100, ge=0, le=_MAX_POINTS)
    max_share_bp: int = Field(5000, ge=0, le=BP)

    @property
    def step(self) -> int:
        """Points must come in multiples of this so they pay a whole number of fen."""
        a, b = self.points, self.fen
        while b:
            a, b = b, a % b
        return self.points // a

    def fen_for(self, points: int) -> int:
        """What `points` pay (exact when `points` is a multiple of `step`)."""
        return points * self.fen // self.points

    def points_for(self, fen: int) -> int:
        """The most points, in whole steps, that pay at most `fen`."""
        points = fen * self.points // self.fen
        return points - points % self.step


class PointsRules(_Rules):
    """How points are earned, how long they live and how they pay."""

    # Sales: earn_points per earn_per_fen spent (1 per 100 fen = 1 point per yuan), floored per order.
    earn_points: int = Field(1, ge=0, le=1000)
    earn_per_fen: int = Field(100, ge=1, le=10**6)
    category_multipliers_bp: dict[str, int] = Field(default_factory=dict, max_length=500)
    # Tenders paid with these methods earn nothing (points do not earn points).
    no_earn_methods: list[str] = Field(default_factory=lambda: ["points"], max_length=20)
    registration_points: int = Field(0, ge=0, le=10**7)
    topup_points: int = Field(0, ge=0, le=1000)
    topup_per_fen: int = Field(100, ge=1, le=10**6)
    expiry: ExpiryRule = Field(default_factory=ExpiryRule)
    redeem: RedeemRule = Field(default_factory=RedeemRule)

    @model_validator(mode="after")
    def _check_categories(self) -> PointsRules:
        for category, bp in self.category_multipliers_bp.items():
            if not 1 <= len(category) <= 64:
                raise ValueError(f"category name {category!r} must be 1-64 characters")
            if not 0 <= bp <= 10 * BP:
                raise ValueError(f"category {category!r}: multiplier {bp} bp is outside 0-100000")
        return self


class LoyaltySetting(Base):
    """One configuration document ("levels" or "points"); `version` grows with each change."""

    __tablename__ = "loyalty_settings"

    key: Mapped[str] = mapped_column(String(16), primary_key=True)
    body: Mapped[dict[str, Any]]
    version: Mapped[int] = mapped_column(Integer)
    updated_by: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime]


async def _load(session: AsyncSession, key: str) -> dict[str, Any] | None:
    row = await session.get(LoyaltySetting, key)
    return None if row is None else row.body


async def load_levels(session: AsyncSession) -> LevelsConfig:
    """The level definitions (none until head office configures them)."""
    body = await _load(session, "levels")
    return LevelsConfig() if body is None else LevelsConfig.model_validate(body)


async def load_points_rules(session: AsyncSession) -> PointsRules:
    """The points rules (defaults until head office configures them)."""
    body = await _load(session, "points")
    return PointsRules() if body is None else PointsRules.model_validate(body)


async def save_setting(session: AsyncSession, key: str, config: _Rules, user: str) -> LoyaltySetting:
    """Replace one configuration document, in the caller's transaction."""
    now = datetime.now(UTC)
    row = await session.get(LoyaltySetting, key, with_for_update=True)
    body = config.model_dump(mode="json")
    if row is None:
        row = LoyaltySetting(key=key, body=body, version=1, updated_by=user, updated_at=now)
        session.add(row)
    else:
        row.body, row.version, row.updated_by, row.updated_at = body, row.version + 1, user, now
    await session.flush()
    return row

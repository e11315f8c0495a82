"""What head office sends to design or change a coupon template, checked before anything is written."""

from __future__ import annotations

from datetime import datetime
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hub.coupon_tables import CouponKind

__all__ = ["MAX_PER_MEMBER", "TemplateChange", "TemplateIn"]

MAX_PER_MEMBER = 100
_TEXT = r"^[^\x00-\x1f\x7f]*$"


class TemplateIn(BaseModel):
    """A coupon design. Value fields are fixed once created; a new value is a new template."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=64, pattern=_TEXT)
    kind: CouponKind
    amount_off_fen: int | None = Field(None, strict=True, gt=0, le=10**9)
    percent_off_bp: int | None = Field(None, strict=True, gt=0, le=10_000)
    cap_fen: int | None = Field(None, strict=True, gt=0, le=10**9)
    threshold_fen: int = Field(0, strict=True, ge=0, le=10**9)
    skus: list[str] = Field(default_factory=list, max_length=500)
    free_sku: str | None = Field(None, min_length=1, max_length=64, pattern=_TEXT)
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    valid_days: int | None = Field(None, strict=True, ge=1, le=3660)
    per_member_limit: int = Field(1, strict=True, ge=1, le=MAX_PER_MEMBER)
    total_limit: int | None = Field(None, strict=True, ge=1, le=10**8)
    claimable: bool = False
    claim_code: str | None = Field(None, pattern=r"^[A-Za-z0-9-]{4,32}$")
    campaign: str | None = Field(None, min_length=1, max_length=64, pattern=_TEXT)
    stores: list[str] | None = Field(None, min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        self._check_value()
        self._check_validity()
        if len(set(self.skus)) != len(self.skus) or any(not s or len(s) > 64 for s in self.skus):
            raise ValueError("skus must be distinct SKUs of 1-64 characters")
        if self.total_limit is not None and self.total_limit < self.per_member_limit:
            raise ValueError("total_limit is below per_member_limit")
        return self

    def _check_value(self) -> None:
        kind = self.kind
        needs = {
            CouponKind.AMOUNT_OFF: ("amount_off_fen", self.amount_off_fen),
            CouponKind.PERCENT_OFF: ("percent_off_bp", self.percent_off_bp),
            CouponKind.FREE_ITEM: ("free_sku", self.free_sku),
        }
        name, value = needs[kind]
        if value is None:
            raise ValueError(f"a {kind.value} coupon needs {name}")
        extra = {
            "amount_off_fen": kind is not CouponKind.AMOUNT_OFF and self.amount_off_fen is not None,
            "percent_off_bp": kind is not CouponKind.PERCENT_OFF and self.percent_off_bp is not None,
            "cap_fen": kind is not CouponKind.PERCENT_OFF and self.cap_fen is not None,
            "free_sku": kind is not CouponKind.FREE_ITEM and self.free_sku is not None,
            "threshold_fen": kind is not CouponKind.AMOUNT_OFF and self.threshold_fen > 0,
        }
        wrong = [field for field, bad in extra.items() if bad]
        if wrong:
            raise ValueError(f"{', '.join(wrong)} do not apply to a {kind.value} coupon")
        amount = self.amount_off_fen or 0
        if self.threshold_fen and amount >= self.threshold_fen:
            raise ValueError(
                "amount_off_fen must be below threshold_fen: the coupon would make the order free"
            )

    def _check_validity(self) -> None:
        fixed = self.valid_from is not None or self.valid_until is not None
        if fixed == (self.valid_days is not None):
            raise ValueError("give either valid_from and valid_until (fixed dates) or valid_days, not both")
        if not fixed:
            return
        if self.valid_from is None or self.valid_until is None:
            raise ValueError("fixed dates need both valid_from and valid_until")
        if self.valid_from.tzinfo is None or self.valid_until.tzinfo is None:
            raise ValueError("valid_from and valid_until need a time zone (e.g. 2026-12-01T00:00:00+08:00)")
        if self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")


class TemplateChange(BaseModel):
    """What may change on a template without changing coupons already issued."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    name: str | None = Field(None, min_length=1, max_length=64, pattern=_TEXT)
    active: bool | None = None
    claimable: bool | None = None
    per_member_limit: int | None = Field(None, strict=True, ge=1, le=MAX_PER_MEMBER)
    total_limit: int | None = Field(None, strict=True, ge=1, le=10**8)

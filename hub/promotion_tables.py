"""Promotion authoring tables: each promotion with its current rule, every version it had, and
each publication to the stores.

A promotion's rule is an engine rule (`protocol.promotion_rules.Rule`) stored as JSON with
the promotion's id as the rule id; schedule (window), scope (stores, channels, member
levels and segments) and stacking are fields of the rule itself, so what head office
authored is exactly what the tills evaluate.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from hub.models import Base

__all__ = ["Promotion", "PromotionPublication", "PromotionStatus", "PromotionVersion"]


class PromotionStatus(StrEnum):
    """`active` promotions are published (when in a store's scope); `archived` ones no longer."""

    ACTIVE = "active"
    ARCHIVED = "archived"


class Promotion(Base):
    """A promotion and its current version; changes go through a conditional UPDATE on `version`."""

    __tablename__ = "promotions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # UUIDv7; also the rule id
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(24))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(12))
    rule: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime]
    updated_by: Mapped[str] = mapped_column(String(80))
    updated_at: Mapped[datetime]


class PromotionVersion(Base):
    """One version of a promotion as it was saved; never changed."""

    __tablename__ = "promotion_versions"

    promotion_id: Mapped[str] = mapped_column(
        ForeignKey("promotions.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(12))
    rule: Mapped[dict[str, Any]] = mapped_column(JSON)
    note: Mapped[str] = mapped_column(String(500), default="")
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime]


class PromotionPublication(Base):
    """A publish: which promotion versions went to which store at which snapshot version."""

    __tablename__ = "promotion_publications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)  # the rule set version
    published_by: Mapped[str] = mapped_column(String(80))
    published_at: Mapped[datetime]
    promotions: Mapped[dict[str, Any]] = mapped_column(JSON)  # promotion id -> version
    stores: Mapped[dict[str, Any]] = mapped_column(JSON)  # store -> {"version", "rules"}

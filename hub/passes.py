"""Punch cards and passes (次卡/月卡/年卡/疗程): products, issuing, the queries the till and API use.

Everything here runs in the caller's transaction. Uses are taken and given back in
`hub.passes_consume`; transfer, revocation and expiry are in `hub.passes_lifecycle`;
sales issue and refunds revoke in `hub.passes_sales`; the till's RPC methods are in
`hub.passes_rpc`. Every change writes a `PassLedger` row with its source, so a pass's
remaining uses are the sum of its ledger.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import case, select

from hub.db import AsyncSession
from hub.errors import HubError, NotFound
from hub.members import get_member
from hub.models import Store
from hub.passes_models import Pass, PassFlag, PassLedger, PassProduct
from protocol.timeutil import DEFAULT_TIMEZONE, format_utc

__all__ = [
    "PassError",
    "PassKind",
    "ProductSpec",
    "create_product",
    "flag",
    "get_pass",
    "get_product",
    "issue_manual",
    "issue_pass",
    "ledger_of_member",
    "ledger_of_pass",
    "ledger_row",
    "list_products",
    "member_passes",
    "passes_of",
    "store_zone",
    "summary",
    "update_product",
]

_SKU = r"^[^\s\x00-\x1f\x7f]{1,64}$"


class PassError(HubError):
    """A pass operation was refused; the message says why in words a cashier understands."""


class PassKind(StrEnum):
    """What a pass grants."""

    COUNT = "count"  # N uses; expiry optional
    PERIOD = "period"  # unlimited use until it expires
    COUNT_IN_PERIOD = "count_in_period"  # N uses that must be taken before it expires


class ProductSpec(BaseModel):
    """The terms of a pass product as head office configures them (`code` fixed once created)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64)
    kind: PassKind
    sale_sku: str = Field(pattern=_SKU)
    covers_skus: list[str] = Field(default_factory=list, max_length=200)
    covers_categories: list[str] = Field(default_factory=list, max_length=50)
    uses: int | None = Field(None, ge=1, le=9999)
    valid_days: int | None = Field(None, ge=1, le=3660)
    valid_until: date | None = None
    transferable: bool = False
    daily_limit: int | None = Field(None, ge=1, le=100)
    active: bool = True

    @field_validator("name")
    @classmethod
    def _printable(cls, name: str) -> str:
        if not name.strip() or not name.isprintable():
            raise ValueError("name must be printable and not blank")
        return name.strip()

    @field_validator("covers_skus", "covers_categories")
    @classmethod
    def _distinct(cls, items: list[str]) -> list[str]:
        for item in items:
            if not 1 <= len(item) <= 64 or not item.isprintable() or not item.strip():
                raise ValueError(f"{item!r} is not a SKU or category (1-64 printable characters)")
        if len(set(items)) != len(items):
            raise ValueError("lists an item twice")
        return items

    @model_validator(mode="after")
    def _coherent(self) -> ProductSpec:
        if not self.covers_skus and not self.covers_categories:
            raise ValueError("a pass must cover at least one service SKU or category")
        if self.sale_sku in self.covers_skus:
            raise ValueError(f"sale_sku {self.sale_sku!r} cannot also be a service the pass covers")
        if self.valid_days is not None and self.valid_until is not None:
            raise ValueError("give valid_days (from purchase) or valid_until (fixed end date), not both")
        dated = self.valid_days is not None or self.valid_until is not None
        if self.kind is PassKind.PERIOD:
            if self.uses is not None:
                raise ValueError("a period pass gives unlimited use: leave uses out")
            if not dated:
                raise ValueError("a period pass needs valid_days or valid_until")
        else:
            if self.uses is None:
                raise ValueError(f"a {self.kind.value} pass needs uses (how many times it can be used)")
            if self.kind is PassKind.COUNT_IN_PERIOD and not dated:
                raise ValueError("a count_in_period pass needs valid_days or valid_until")
        return self


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def _iso(ts: datetime | None) -> str | None:
    return format_utc(ts) if ts is not None else None


async def store_zone(session: AsyncSession, store: str | None) -> str:
    """The store's time zone name (the chain default when unknown)."""
    if store is None:
        return DEFAULT_TIMEZONE
    zone = await session.scalar(select(Store.timezone).where(Store.id == store))
    return zone or DEFAULT_TIMEZONE


def expiry_of(product: PassProduct, issued_at: datetime, zone: str) -> datetime | None:
    """When a pass bought at `issued_at` stops working: local midnight after its last valid day.

    The day of purchase counts as day 1, so a 30-day pass bought on 1 March is valid
    through 30 March; a fixed end date is valid through that whole date.
    """
    tz = ZoneInfo(zone)
    if product.valid_days is not None:
        last = issued_at.astimezone(tz).date() + timedelta(days=product.valid_days - 1)
    elif product.valid_until is not None:
        last = product.valid_until
    else:
        return None
    return datetime.combine(last + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC)


def summary(p: Pass) -> dict[str, Any]:
    """A pass as JSON for the till and the API."""
    return {
        "pass_id": p.id,
        "product_code": p.product_code,
        "name": p.name,
        "kind": p.kind,
        "member_id": p.member_id,
        "status": p.status,
        "total_uses": p.total_uses,
        "remaining": p.remaining,
        "used": p.used,
        "daily_limit": p.daily_limit,
        "transferable": p.transferable,
        "covers_skus": list(p.covers_skus),
        "covers_categories": list(p.covers_categories),
        "issued_at": _iso(p.issued_at),
        "expires_at": _iso(p.expires_at),
        "source": p.source,
        "store": p.store,
        "order_id": p.order_id,
    }


def ledger_row(
    pass_: Pass,
    kind: str,
    uses: int,
    *,
    actor: str,
    now: datetime,
    remaining_after: int | None,
    member_id: str | None = None,
    reason: str = "",
    **extra: Any,
) -> PassLedger:
    """A ledger row for `pass_` (not yet added to the session)."""
    return PassLedger(
        txn_id=extra.pop("txn_id", None) or str(uuid.uuid4()),
        pass_id=pass_.id,
        member_id=member_id or pass_.member_id,
        kind=kind,
        uses=uses,
        remaining_after=remaining_after,
        store=extra.pop("store", None),
        business_day=extra.pop("business_day", None),
        order_id=extra.pop("order_id", None),
        refund_id=extra.pop("refund_id", None),
        service_sku=extra.pop("service_sku", None),
        ref_txn_id=extra.pop("ref_txn_id", None),
        reversed=False,
        actor=actor[:80],
        reason=reason[:200],
        detail=extra.pop("detail", {}),
        created_at=now,
    )


def flag(
    session: AsyncSession, kind: str, now: datetime, detail: dict[str, Any], **where: str | None
) -> None:
    """Record something head office should look at (listed under GET /api/v1/pass-flags)."""
    session.add(
        PassFlag(
            kind=kind,
            pass_id=where.get("pass_id"),
            member_id=where.get("member_id"),
            store=where.get("store"),
            order_id=where.get("order_id"),
            refund_id=where.get("refund_id"),
            detail=detail,
            created_at=now,
            resolved=False,
        )
    )


# --------------------------------------------------------------------------- products


async def get_product(session: AsyncSession, code: str) -> PassProduct:
    """The product with this code; `NotFound` otherwise."""
    product = await session.get(PassProduct, code)
    if product is None:
        raise NotFound(f"no pass product {code!r}")
    return product


async def list_products(session: AsyncSession, *, include_retired: bool = True) -> list[PassProduct]:
    """Every pass product, by code."""
    query = select(PassProduct).order_by(PassProduct.code)
    if not include_retired:
        query = query.where(PassProduct.active.is_(True))
    return list((await session.scalars(query)).all())


async def _check_sku_free(session: AsyncSession, sku: str, code: str) -> None:
    owner = await session.scalar(select(PassProduct.code).where(PassProduct.sale_sku == sku))
    if owner is not None and owner != code:
        raise PassError(f"SKU {sku!r} already sells pass product {owner!r}; one SKU sells one product")


async def create_product(session: AsyncSession, code: str, spec: ProductSpec) -> PassProduct:
    """Add a product; `PassError` if the code or sale SKU is taken."""
    if await session.get(PassProduct, code) is not None:
        raise PassError(f"pass product {code!r} already exists; change it with PUT")
    await _check_sku_free(session, spec.sale_sku, code)
    now = datetime.now(UTC)
    product = PassProduct(code=code, created_at=now, updated_at=now, **spec.model_dump())
    session.add(product)
    await session.flush()
    return product


async def update_product(session: AsyncSession, code: str, spec: ProductSpec) -> PassProduct:
    """Replace a product's terms; passes already issued keep the terms they were sold with."""
    product = await get_product(session, code)
    await _check_sku_free(session, spec.sale_sku, code)
    for name, value in spec.model_dump().items():
        setattr(product, name, value)
    product.updated_at = datetime.now(UTC)
    await session.flush()
    return product


# --------------------------------------------------------------------------- issuing


async def issue_pass(
    session: AsyncSession,
    product: PassProduct,
    member_id: str,
    *,
    issued_at: datetime,
    actor: str,
    reason: str = "",
    store: str | None = None,
    order_id: str | None = None,
    line_id: str | None = None,
    unit: int | None = None,
    price_fen: int | None = None,
) -> Pass:
    """Give `member_id` (already resolved) one pass of `product` with the product's current terms."""
    expires_at = expiry_of(product, issued_at, await store_zone(session, store))
    new = Pass(
        id=str(uuid.uuid4()),
        product_code=product.code,
        member_id=member_id,
        name=product.name,
        kind=product.kind,
        total_uses=product.uses,
        remaining=product.uses,
        used=0,
        covers_skus=list(product.covers_skus),
        covers_categories=list(product.covers_categories),
        daily_limit=product.daily_limit,
        transferable=product.transferable,
        day=None,
        day_uses=0,
        status="active",
        issued_at=issued_at,
        expires_at=expires_at,
        source="sale" if order_id else "manual",
        store=store,
        order_id=order_id,
        line_id=line_id,
        unit=unit,
        price_fen=price_fen,
    )
    session.add(new)
    detail = {"expires_at": _iso(expires_at), "price_fen": price_fen}
    session.add(
        ledger_row(
            new,
            "issue",
            product.uses or 0,
            actor=actor,
            now=issued_at,
            remaining_after=product.uses,
            reason=reason,
            store=store,
            order_id=order_id,
            detail=detail,
        )
    )
    return new


async def issue_manual(
    session: AsyncSession,
    code: str,
    member_id: str,
    *,
    actor: str,
    reason: str,
    quantity: int = 1,
    store: str | None = None,
    now: datetime | None = None,
) -> list[Pass]:
    """Head office gives passes (a gift, a correction) with a reason; only active products."""
    product = await get_product(session, code)
    if not product.active:
        raise PassError(f"pass product {code!r} is retired; reactivate it to issue passes")
    member = await get_member(session, member_id)
    if store is not None and await session.get(Store, store) is None:
        raise NotFound(f"no store {store!r}")
    issued = [
        await issue_pass(
            session, product, member.id, issued_at=_now(now), actor=actor, reason=reason, store=store
        )
        for _ in range(quantity)
    ]
    await session.flush()
    return issued


# --------------------------------------------------------------------------- queries


async def get_pass(session: AsyncSession, pass_id: str) -> Pass:
    """The pass with this id; `NotFound` otherwise."""
    found = await session.get(Pass, pass_id, populate_existing=True)
    if found is None:
        raise NotFound(f"no pass {pass_id!r}")
    return found


async def member_passes(session: AsyncSession, member_id: str, *, usable_only: bool) -> list[Pass]:
    """A member's passes (the survivor's, if merged), those expiring first first."""
    member = await get_member(session, member_id)
    query = select(Pass).where(Pass.member_id == member.id)
    if usable_only:
        now = datetime.now(UTC)
        query = query.where(
            Pass.status == "active",
            (Pass.expires_at.is_(None)) | (Pass.expires_at > now),
            (Pass.remaining.is_(None)) | (Pass.remaining > 0),
        )
    # NULL expiry (never expires) sorts last on both backends through the CASE.
    query = query.order_by(case((Pass.expires_at.is_(None), 1), else_=0), Pass.expires_at, Pass.issued_at)
    return list((await session.scalars(query.execution_options(populate_existing=True))).all())


async def passes_of(session: AsyncSession, member_id: str) -> list[dict[str, Any]]:
    """The member's usable passes as JSON (for the member lookup and other modules)."""
    return [summary(p) for p in await member_passes(session, member_id, usable_only=True)]


def _ledger_json(row: PassLedger) -> dict[str, Any]:
    return {
        "txn_id": row.txn_id,
        "pass_id": row.pass_id,
        "member_id": row.member_id,
        "kind": row.kind,
        "uses": row.uses,
        "remaining_after": row.remaining_after,
        "store": row.store,
        "business_day": row.business_day.isoformat() if row.business_day else None,
        "order_id": row.order_id,
        "refund_id": row.refund_id,
        "service_sku": row.service_sku,
        "ref_txn_id": row.ref_txn_id,
        "reversed": row.reversed,
        "actor": row.actor,
        "reason": row.reason,
        "detail": row.detail,
        "created_at": _iso(row.created_at),
    }


async def ledger_of_pass(session: AsyncSession, pass_id: str) -> list[dict[str, Any]]:
    """Every ledger row of one pass, oldest first."""
    await get_pass(session, pass_id)
    rows = await session.scalars(
        select(PassLedger).where(PassLedger.pass_id == pass_id).order_by(PassLedger.id)
    )
    return [_ledger_json(row) for row in rows.all()]


async def ledger_of_member(session: AsyncSession, member_id: str) -> list[dict[str, Any]]:
    """Every ledger row of every pass the member holds now, oldest first."""
    member = await get_member(session, member_id)
    held = select(Pass.id).where(Pass.member_id == member.id)
    rows = await session.scalars(
        select(PassLedger).where(PassLedger.pass_id.in_(held)).order_by(PassLedger.id)
    )
    return [_ledger_json(row) for row in rows.all()]

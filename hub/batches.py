"""Batches and expiry: what is left of each lot (FEFO), picking, near-expiry facts, expiry blocks.

A `stock_batches` row records what a receipt line brought in and never changes. What is
left of each lot is derived from the SKU's on-hand at the store: stores sell first-expiry-
first-out, so the stock still on the shelf is taken to be the **latest-expiring** lots.
The on-hand (0 if negative) is attributed to the lots from the latest expiry (a lot without
an expiry date counts as never expiring) to the earliest, newest receipt first on a tie,
each lot taking at most what it brought in; what is left over after every lot has taken
its share is stock from no receipt (opening counts, transfers in), with no known expiry.

A lot expires at the end of its `expires_on` day: on that day it is still sellable, the day
after it is expired.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select

from hub.commands import create_command
from hub.db import AsyncSession, Database
from hub.models import Store
from hub.purchasing_tables import ExpiryBlock, StockBatch
from hub.stock import StockError, check_sku, format_milli
from hub.stock_tables import StockLevel

__all__ = [
    "BLOCK_COMMAND",
    "UNBLOCK_COMMAND",
    "BatchLeft",
    "BlockRun",
    "Pick",
    "batch_json",
    "batches_left",
    "expiry_blocks_job",
    "fefo_pick",
    "near_expiry",
    "near_expiry_fact",
    "refresh_blocks",
]

log = logging.getLogger(__name__)
BLOCK_COMMAND = "stock.block"
UNBLOCK_COMMAND = "stock.unblock"
_NEVER = date.max


@dataclass(frozen=True)
class BatchLeft:
    """A lot at a store and how much of it is left on the shelf."""

    batch_id: int
    store: str
    sku: str
    lot: str
    expires_on: date | None
    received_milli: int
    left_milli: int
    received_at: datetime

    def expired(self, today: date) -> bool:
        """True from the day after `expires_on`."""
        return self.expires_on is not None and self.expires_on < today


def _attribute(batches: list[StockBatch], on_hand: int) -> tuple[list[BatchLeft], int]:
    """FEFO attribution of one SKU's on-hand to its lots; also what is left unbatched."""
    rest = max(on_hand, 0)
    found = []
    for batch in sorted(batches, key=lambda b: (b.expires_on or _NEVER, b.received_at, b.id), reverse=True):
        take = min(rest, batch.qty_milli)
        rest -= take
        found.append(
            BatchLeft(
                batch.id,
                batch.store,
                batch.sku,
                batch.lot,
                batch.expires_on,
                batch.qty_milli,
                take,
                batch.received_at,
            )
        )
    found.sort(key=lambda b: (b.expires_on or _NEVER, b.received_at, b.batch_id))
    return found, rest


async def _left(
    session: AsyncSession, store: str, skus: list[str] | None
) -> dict[str, tuple[list[BatchLeft], int]]:
    """Per SKU (all with batches at the store, or `skus`): its lots earliest-expiry first, and unbatched."""
    query = select(StockBatch).where(StockBatch.store == store)
    if skus is not None:
        query = query.where(StockBatch.sku.in_(skus))
    grouped: dict[str, list[StockBatch]] = {}
    for batch in (await session.scalars(query)).all():
        grouped.setdefault(batch.sku, []).append(batch)
    if not grouped:
        return {}
    on_hand = dict(
        (
            await session.execute(
                select(StockLevel.sku, StockLevel.on_hand_milli).where(
                    StockLevel.store == store, StockLevel.sku.in_(sorted(grouped))
                )
            )
        ).all()
    )
    return {sku: _attribute(rows, int(on_hand.get(sku, 0))) for sku, rows in sorted(grouped.items())}


async def batches_left(
    session: AsyncSession, store: str, *, sku: str | None = None, only_left: bool = True
) -> list[BatchLeft]:
    """A store's lots by SKU and expiry with what is left of each (by default only those with some left)."""
    found = await _left(session, store, [sku] if sku is not None else None)
    return [b for lots, _ in found.values() for b in lots if b.left_milli > 0 or not only_left]


@dataclass(frozen=True)
class Pick:
    """Take `qty_milli` from lot `lot` (expiring `expires_on`), in this order."""

    lot: str
    expires_on: date | None
    qty_milli: int


async def fefo_pick(
    session: AsyncSession, store: str, sku: str, qty_milli: int, *, today: date
) -> tuple[list[Pick], int]:
    """Which lots to take `qty_milli` from, earliest unexpired expiry first; and the part no lot covers.

    Expired lots are never picked; stock from no receipt comes last, as lot "".
    """
    check_sku(sku)
    if qty_milli <= 0:
        raise StockError("the quantity to pick must be greater than 0")
    lots, unbatched = (await _left(session, store, [sku])).get(sku, ([], 0))
    if not lots:
        row = await session.get(StockLevel, (store, sku))
        unbatched = max(row.on_hand_milli, 0) if row is not None else 0
    picks, rest = [], qty_milli
    for lot in lots:
        if rest <= 0:
            break
        if lot.expired(today) or lot.left_milli <= 0:
            continue
        take = min(rest, lot.left_milli)
        picks.append(Pick(lot.lot, lot.expires_on, take))
        rest -= take
    if rest > 0 and unbatched > 0:
        take = min(rest, unbatched)
        picks.append(Pick("", None, take))
        rest -= take
    return picks, rest


async def near_expiry(
    session: AsyncSession, store: str, *, today: date, within_days: int, include_expired: bool = False
) -> list[BatchLeft]:
    """Lots with stock left expiring from `today` to `today + within_days` (or expired, if asked)."""
    if not 0 <= within_days <= 366:
        raise StockError("within_days must be from 0 to 366")
    until = today + timedelta(days=within_days)
    query = select(StockBatch.sku).where(StockBatch.store == store, StockBatch.expires_on <= until)
    if not include_expired:
        query = query.where(StockBatch.expires_on >= today)
    skus = sorted(set((await session.scalars(query.distinct())).all()))
    if not skus:
        return []
    found = await _left(session, store, skus)
    return [
        b
        for lots, _ in found.values()
        for b in lots
        if b.left_milli > 0
        and b.expires_on is not None
        and b.expires_on <= until
        and (include_expired or b.expires_on >= today)
    ]


def near_expiry_fact(batch: BatchLeft) -> dict[str, Any]:
    """The promotions engine's near-expiry fact: `{sku, lot, expires_on, qty_milli}`."""
    return {
        "sku": batch.sku,
        "lot": batch.lot,
        "expires_on": batch.expires_on.isoformat() if batch.expires_on else None,
        "qty_milli": batch.left_milli,
    }


def batch_json(batch: BatchLeft, today: date) -> dict[str, Any]:
    """A lot as the API returns it."""
    return {
        "id": batch.batch_id,
        "store": batch.store,
        "sku": batch.sku,
        "lot": batch.lot,
        "expires_on": batch.expires_on.isoformat() if batch.expires_on else None,
        "expired": batch.expired(today),
        "received": format_milli(batch.received_milli),
        "left": format_milli(batch.left_milli),
        "received_at": batch.received_at.isoformat(),
    }


@dataclass(frozen=True)
class BlockRun:
    """What one pass over expiry blocks did."""

    blocked: int
    unblocked: int


def _verdict(lots: list[BatchLeft], unbatched: int, today: date) -> bool | None:
    """True: block (all stock left is expired); False: sellable stock is there; None: no stock left."""
    expired = sum(b.left_milli for b in lots if b.expired(today))
    sellable = unbatched + sum(b.left_milli for b in lots if not b.expired(today))
    if sellable > 0:
        return False
    return True if expired > 0 else None


async def refresh_blocks(db: Database, store: str, today: date, *, skus: list[str] | None = None) -> BlockRun:
    """Block SKUs whose every unit left at `store` is expired, unblock blocked ones with sellable stock.

    Looks at SKUs with a lot expired by `today` and at SKUs blocked now (or only at `skus`).
    A blocked SKU whose stock is all gone stays blocked until sellable stock arrives. The
    command is created before the block is recorded: a crash between the two sends the
    same command again on the next pass, which the store applies as a no-op.
    """
    async with db.session() as session:
        blocked = set(
            (await session.scalars(select(ExpiryBlock.sku).where(ExpiryBlock.store == store))).all()
        )
        if skus is None:
            expired_skus = set(
                (
                    await session.scalars(
                        select(StockBatch.sku)
                        .where(StockBatch.store == store, StockBatch.expires_on < today)
                        .distinct()
                    )
                ).all()
            )
            candidates = sorted(expired_skus | blocked)
        else:
            candidates = sorted(set(skus))
        found = await _left(session, store, candidates) if candidates else {}
    to_block, to_unblock = [], []
    for sku in candidates:
        lots, unbatched = found.get(sku, ([], 0))
        verdict = _verdict(lots, unbatched, today) if lots else None
        if verdict is True and sku not in blocked:
            to_block.append(sku)
        elif verdict is False and sku in blocked:
            to_unblock.append(sku)
    for sku in to_block:
        reason = f"all stock of {sku} at this store is past its expiry date; remove it from the shelf"
        command = await create_command(
            db, store, BLOCK_COMMAND, {"sku": sku, "reason": reason}, created_by="job:stock.expiry"
        )
        async with db.session() as session, session.begin():
            await session.merge(
                ExpiryBlock(
                    store=store, sku=sku, reason=reason, command_id=command.id, blocked_at=command.created_at
                )
            )
        log.info("store %s: %s blocked from sale, all stock expired", store, sku)
    for sku in to_unblock:
        await create_command(
            db,
            store,
            UNBLOCK_COMMAND,
            {"sku": sku, "reason": "unexpired stock arrived"},
            created_by="job:stock.expiry",
        )
        async with db.session() as session, session.begin():
            await session.execute(
                delete(ExpiryBlock).where(ExpiryBlock.store == store, ExpiryBlock.sku == sku)
            )
        log.info("store %s: %s unblocked, unexpired stock arrived", store, sku)
    return BlockRun(len(to_block), len(to_unblock))


async def expiry_blocks_job(db: Database, day: date) -> BlockRun:
    """The nightly job: `refresh_blocks` for every store, for `day`."""
    async with db.session() as session:
        stores = list((await session.scalars(select(Store.id).order_by(Store.id))).all())
    blocked = unblocked = 0
    for store in stores:
        run = await refresh_blocks(db, store, day)
        blocked, unblocked = blocked + run.blocked, unblocked + run.unblocked
    return BlockRun(blocked, unblocked)

"""Stocktakes (盘点): counting → submitted → posted (approved), or cancelled.

Start: the on-hand of every SKU in scope is snapshotted (`snapshot_milli`) and the store
gets a `stocktake.count` command, so its staff see the count as a task and scan.
Counts arrive from the store (`stocktake.counted` events, `hub.stock_reports`) or by API,
each with the moment the SKU was counted (`counted_at`); a later count of a SKU replaces
an earlier one, whatever order they arrive in.

**Sales during the count.** The store keeps selling while it counts. A line's variance is
`counted − book quantity at counted_at`, where the book quantity at a moment is the sum of
the SKU's ledger movements that happened before it: a sale at the store's `closed_at`
(its own clock, so a sale synced late still lands in the right place), anything else at
the time the hub recorded it. So a sale between the snapshot and the moment the item was
counted lowers what the books expect and shows no variance; a sale after it is not in the
count and not in the variance. Posting adds the variance as one `stocktake` movement per
SKU, which leaves on-hand = counted + everything that moved after the count.

**Approval.** Posting needs the `stocktakes.approve` role (owner, regional manager) and a
second person: whoever started the count cannot post it. It posts once: a conditional
UPDATE `submitted → posted` and the ledger's source key (stocktake id, SKU).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, func, insert, literal, or_, select

from hub.catalog_tables import CatalogCategory, CatalogProduct
from hub.commands import add_command
from hub.db import AsyncSession
from hub.errors import NotFound
from hub.models import HubOrder, Store
from hub.stock import Movement, StockError, check_sku, format_milli, record_movements, step_document
from hub.stock_tables import MovementKind, StockLevel, StockMovement
from hub.stocktake_tables import StockReport, Stocktake, StocktakeLine, StocktakeScope, StocktakeState
from protocol.ids import new_id

__all__ = [
    "MAX_SKUS",
    "CountIn",
    "StocktakeView",
    "cancel_stocktake",
    "load_stocktake",
    "post_stocktake",
    "record_counts",
    "start_stocktake",
    "stocktake_json",
    "submit_stocktake",
]

MAX_SKUS = 20_000  # a whole store's range, with room
MAX_LISTED = 500  # SKUs sent to the store with a `skus` count (a category's list stays at the hub)
_OPEN = (StocktakeState.COUNTING, StocktakeState.SUBMITTED)


@dataclass(frozen=True)
class CountIn:
    """One SKU as counted at one moment (`counted_at` UTC)."""

    sku: str
    qty_milli: int
    counted_at: datetime


@dataclass
class StocktakeView:
    """A stocktake, its lines, and the variance report."""

    stocktake: Stocktake
    lines: list[dict[str, Any]]
    parts: dict[str, int]


def _now() -> datetime:
    return datetime.now(UTC)


async def _category_skus(session: AsyncSession, category: str) -> list[str]:
    """The SKUs of a catalog category and its subcategories."""
    path = category.strip("/")
    found = await session.scalar(select(CatalogCategory.id).where(CatalogCategory.path == path))
    if found is None:
        raise NotFound(f"no catalog category '{path}' (give its full path, such as '饮料/碳酸饮料')")
    ids = select(CatalogCategory.id).where(
        or_(CatalogCategory.path == path, CatalogCategory.path.startswith(path + "/", autoescape=True))
    )
    rows = await session.scalars(
        select(CatalogProduct.sku).where(CatalogProduct.category_id.in_(ids)).order_by(CatalogProduct.sku)
    )
    return list(rows.all())


async def _snapshot(
    session: AsyncSession, store: str, scope: StocktakeScope, category: str | None, skus: list[str] | None
) -> dict[str, int]:
    """On-hand now of every SKU in scope (0 for a listed SKU that never moved here)."""
    levels = select(StockLevel.sku, StockLevel.on_hand_milli).where(StockLevel.store == store)
    if scope is StocktakeScope.STORE:
        return dict((await session.execute(levels)).all())
    wanted = await _category_skus(session, category or "") if category is not None else list(skus or [])
    if not wanted:
        raise StockError("the count has no SKUs in it")
    if len(set(wanted)) != len(wanted):
        raise StockError("each SKU is listed once")
    for sku in wanted:
        check_sku(sku)
    snapshot = dict.fromkeys(wanted, 0)
    for start in range(0, len(wanted), 1000):
        found = await session.execute(levels.where(StockLevel.sku.in_(wanted[start : start + 1000])))
        snapshot.update(found.all())
    return snapshot


async def start_stocktake(
    session: AsyncSession,
    store: str,
    scope: StocktakeScope,
    *,
    actor: str,
    category: str | None = None,
    skus: list[str] | None = None,
    note: str = "",
) -> StocktakeView:
    """Snapshot the SKUs in scope and send the count to the store as a task.

    One open count per store: two counts of one shelf at once would each post the same
    variance.
    """
    if await session.get(Store, store) is None:
        raise NotFound(f"unknown store '{store}'")
    if (scope is StocktakeScope.CATEGORY) != (category is not None):
        raise StockError("a count by category names the category, and only such a count does")
    if (scope is StocktakeScope.SKUS) != (skus is not None):
        raise StockError("a count of listed SKUs gives the SKUs, and only such a count does")
    open_id = await session.scalar(
        select(Stocktake.id).where(Stocktake.store == store, Stocktake.state.in_([s.value for s in _OPEN]))
    )
    if open_id is not None:
        raise StockError(f"store '{store}' already has count {open_id} open; post or cancel it first")
    now = _now()
    snapshot = await _snapshot(session, store, scope, category, skus)
    if len(snapshot) > MAX_SKUS:
        raise StockError(f"a count covers at most {MAX_SKUS} SKUs; count by category")
    if scope is StocktakeScope.SKUS and len(snapshot) > MAX_LISTED:
        raise StockError(f"a count of listed SKUs has at most {MAX_LISTED}; count by category instead")
    row = Stocktake(
        id=str(new_id()),
        store=store,
        scope=scope.value,
        category=category.strip("/") if category else None,
        state=StocktakeState.COUNTING.value,
        note=note[:500],
        version=1,
        created_by=actor,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    await session.flush()
    if snapshot:
        await session.execute(
            insert(StocktakeLine),
            [
                {"stocktake_id": row.id, "sku": sku, "in_scope": True, "snapshot_milli": qty}
                for sku, qty in sorted(snapshot.items())
            ],
        )
    task: dict[str, Any] = {"stocktake_id": row.id, "scope": scope.value, "note": row.note}
    if row.category:
        task["category"] = row.category
    if scope is StocktakeScope.SKUS:
        task["skus"] = sorted(snapshot)
    add_command(session, store, "stocktake.count", task, created_by=actor)
    return await load_stocktake(session, row.id)


async def _step(
    session: AsyncSession, stocktake_id: str, allowed: tuple[StocktakeState, ...], verb: str, **values: Any
) -> Stocktake:
    """Move the count on if it is in one of `allowed` states, else refuse saying where it is."""
    return await step_document(
        session, Stocktake, stocktake_id, allowed, verb=verb, label="stocktake", **values
    )


async def record_counts(
    session: AsyncSession, stocktake_id: str, counts: list[CountIn], *, actor: str
) -> Stocktake:
    """Record counts; per SKU the latest `counted_at` wins, so a late or repeated report changes nothing.

    A SKU outside a category or list count is kept (`in_scope` false) so head office sees
    what was found, but it is not posted; a whole-store count takes it in with a snapshot of 0.
    """
    if len({c.sku for c in counts}) != len(counts):
        raise StockError("a count report gives each SKU once")
    for count in counts:
        check_sku(count.sku)
        if count.qty_milli < 0:
            raise StockError(f"sku {count.sku}: a counted quantity cannot be negative")
    # Locks the count against a concurrent post (the state UPDATE waits for this one).
    row = await _step(session, stocktake_id, _OPEN, "counted")
    existing = {
        line.sku: line
        for line in (
            await session.scalars(
                select(StocktakeLine).where(
                    StocktakeLine.stocktake_id == stocktake_id,
                    StocktakeLine.sku.in_([c.sku for c in counts]),
                )
            )
        ).all()
    }
    whole_store = row.scope == StocktakeScope.STORE.value
    for count in counts:
        line = existing.get(count.sku)
        if line is None:
            line = StocktakeLine(
                stocktake_id=stocktake_id, sku=count.sku, in_scope=whole_store, snapshot_milli=0
            )
            session.add(line)
        elif line.counted_at is not None and line.counted_at > count.counted_at:
            continue
        line.counted_milli, line.counted_at, line.counted_by = count.qty_milli, count.counted_at, actor[:80]
    await session.flush()
    return row


async def submit_stocktake(
    session: AsyncSession, stocktake_id: str, *, lines: int | None = None, at: datetime | None = None
) -> Stocktake:
    """The store is done counting; `lines` is how many SKUs it says it counted."""
    return await _step(
        session,
        stocktake_id,
        (StocktakeState.COUNTING,),
        "submitted",
        state=StocktakeState.SUBMITTED.value,
        submitted_at=at or _now(),
        submitted_lines=lines,
    )


async def cancel_stocktake(session: AsyncSession, stocktake_id: str, *, actor: str, reason: str) -> Stocktake:
    """Drop a count that was not posted; nothing had moved. The store's task is withdrawn."""
    if not reason.strip():
        raise StockError("cancelling a count needs a reason")
    row = await _step(
        session,
        stocktake_id,
        _OPEN,
        "cancelled",
        state=StocktakeState.CANCELLED.value,
        cancelled_by=actor,
        cancelled_at=_now(),
        reason=reason.strip()[:500],
    )
    add_command(
        session,
        row.store,
        "stocktake.cancel",
        {"stocktake_id": row.id, "reason": row.reason},
        created_by=actor,
    )
    return row


async def _book_at_count(session: AsyncSession, row: Stocktake) -> dict[str, int]:
    """Per counted SKU: the ledger's sum of what happened before it was counted."""
    line, move = StocktakeLine, StockMovement
    happened = func.coalesce(HubOrder.closed_at, move.created_at)
    query = (
        select(line.sku, func.coalesce(func.sum(move.qty_milli), literal(0)))
        .join(move, and_(move.store == row.store, move.sku == line.sku))
        .outerjoin(HubOrder, and_(move.source_type == "order", HubOrder.id == move.source_id))
        .where(
            line.stocktake_id == row.id,
            line.counted_at.is_not(None),
            happened < line.counted_at,
            ~and_(move.source_type == "stocktake", move.source_id == row.id),
        )
        .group_by(line.sku)
    )
    return {sku: int(total) for sku, total in (await session.execute(query)).all()}


async def _costs(session: AsyncSession, skus: list[str]) -> dict[str, int]:
    costs: dict[str, int] = {}
    for start in range(0, len(skus), 1000):
        rows = await session.execute(
            select(CatalogProduct.sku, CatalogProduct.cost_fen).where(
                CatalogProduct.sku.in_(skus[start : start + 1000]), CatalogProduct.cost_fen.is_not(None)
            )
        )
        costs.update((sku, int(cost)) for sku, cost in rows.all() if cost is not None)
    return costs


def _value_fen(qty_milli: int, cost_fen: int | None) -> int | None:
    """Cost value of a quantity, half-up to the fen (the sign follows the quantity)."""
    if cost_fen is None:
        return None
    scaled = abs(qty_milli) * cost_fen
    value = (scaled + 500) // 1000
    return value if qty_milli >= 0 else -value


async def load_stocktake(session: AsyncSession, stocktake_id: str) -> StocktakeView:
    """The count with each line's snapshot, count, book quantity at the count and variance."""
    row = await session.get(Stocktake, stocktake_id, populate_existing=True)
    if row is None:
        raise NotFound(f"no stocktake {stocktake_id}")
    lines = list(
        (
            await session.scalars(
                select(StocktakeLine)
                .where(StocktakeLine.stocktake_id == stocktake_id)
                .order_by(StocktakeLine.sku)
                .execution_options(populate_existing=True)
            )
        ).all()
    )
    posted = row.state == StocktakeState.POSTED.value
    book = {} if posted else await _book_at_count(session, row)
    costs = {} if posted else await _costs(session, [x.sku for x in lines])
    out = []
    for line in lines:
        variance: int | None
        if posted:
            variance, cost = line.variance_milli, line.unit_cost_fen
            expected = (
                None if variance is None or line.counted_milli is None else line.counted_milli - variance
            )
        elif line.counted_milli is None:
            variance, cost, expected = None, costs.get(line.sku), None
        else:
            expected = book.get(line.sku, 0)
            variance, cost = line.counted_milli - expected, costs.get(line.sku)
        out.append(
            {
                "sku": line.sku,
                "in_scope": line.in_scope,
                "snapshot": format_milli(line.snapshot_milli),
                "counted": None if line.counted_milli is None else format_milli(line.counted_milli),
                "counted_at": line.counted_at.isoformat() if line.counted_at else None,
                "expected_at_count": None if expected is None else format_milli(expected),
                "variance": None if variance is None else format_milli(variance),
                "variance_milli": variance,
                "unit_cost_fen": cost,
                "variance_value_fen": None if variance is None else _value_fen(variance, cost),
            }
        )
    parts = await session.execute(
        select(func.count()).select_from(StockReport).where(StockReport.ref == stocktake_id)
    )
    return StocktakeView(row, out, {"reports": int(parts.scalar_one())})


async def post_stocktake(
    session: AsyncSession, stocktake_id: str, *, actor: str, uncounted: str = "skip"
) -> StocktakeView:
    """Post the variances as `stocktake` movements, once; `uncounted` in-scope SKUs are skipped
    or counted as zero, as the approver chooses."""
    if uncounted not in ("skip", "zero"):
        raise StockError("uncounted is 'skip' (leave them as they are) or 'zero' (none on the shelf)")
    current = await session.get(Stocktake, stocktake_id)
    if current is None:
        raise NotFound(f"no stocktake {stocktake_id}")
    if current.created_by == actor:
        raise StockError("a count is approved by a second person: whoever started it cannot post it")
    if current.submitted_lines is not None:
        counted = await session.scalar(
            select(func.count())
            .select_from(StocktakeLine)
            .where(StocktakeLine.stocktake_id == stocktake_id, StocktakeLine.counted_at.is_not(None))
        )
        if (counted or 0) < current.submitted_lines:
            raise StockError(
                f"the store counted {current.submitted_lines} SKUs but only {counted} have arrived; "
                "wait for the store to sync, then post"
            )
    now = _now()
    row = await _step(
        session,
        stocktake_id,
        (StocktakeState.SUBMITTED,),
        "posted",
        state=StocktakeState.POSTED.value,
        posted_by=actor,
        posted_at=now,
    )
    lines = list(
        (
            await session.scalars(
                select(StocktakeLine)
                .where(StocktakeLine.stocktake_id == stocktake_id)
                .execution_options(populate_existing=True)
            )
        ).all()
    )
    if uncounted == "zero":
        for line in lines:
            if line.in_scope and line.counted_at is None:
                line.counted_milli, line.counted_at, line.counted_by = 0, now, actor[:80]
        await session.flush()
    book = await _book_at_count(session, row)
    costs = await _costs(session, [x.sku for x in lines])
    movements = []
    for line in lines:
        if not line.in_scope or line.counted_milli is None:
            continue
        line.variance_milli = line.counted_milli - book.get(line.sku, 0)
        line.unit_cost_fen = costs.get(line.sku)
        if line.variance_milli:
            movements.append(
                Movement(
                    row.store,
                    line.sku,
                    MovementKind.STOCKTAKE,
                    line.variance_milli,
                    "stocktake",
                    row.id,
                    actor,
                    note=f"count of {line.counted_at.isoformat() if line.counted_at else ''}",
                )
            )
    await record_movements(session, movements, now=now)
    await session.flush()
    return await load_stocktake(session, stocktake_id)


def stocktake_json(view: StocktakeView) -> dict[str, Any]:
    """A stocktake with its variance report, as the API returns it."""
    row = view.stocktake
    counted = [x for x in view.lines if x["counted"] is not None]
    values = [
        x["variance_value_fen"] for x in counted if x["in_scope"] and x["variance_value_fen"] is not None
    ]
    return {
        "id": row.id,
        "store": row.store,
        "scope": row.scope,
        "category": row.category,
        "state": row.state,
        "note": row.note,
        "created_by": row.created_by,
        "created_at": row.created_at.isoformat(),
        "submitted_at": row.submitted_at.isoformat() if row.submitted_at else None,
        "submitted_lines": row.submitted_lines,
        "posted_by": row.posted_by,
        "posted_at": row.posted_at.isoformat() if row.posted_at else None,
        "cancelled_by": row.cancelled_by,
        "reason": row.reason,
        "summary": {
            "lines": len(view.lines),
            "counted": len(counted),
            "uncounted": sum(1 for x in view.lines if x["in_scope"] and x["counted"] is None),
            "with_variance": sum(1 for x in counted if x["in_scope"] and x["variance_milli"]),
            "not_in_scope": sum(1 for x in view.lines if not x["in_scope"]),
            "variance_value_fen": sum(values),
            "store_reports": view.parts["reports"],
        },
        "lines": [{k: v for k, v in x.items() if k != "variance_milli"} for x in view.lines],
    }

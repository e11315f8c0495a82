"""The stock ledger: every movement once, and running levels updated with it.

`record_movements` (and `record_movement` for one) is the only writer of `stock_levels`.
It inserts movements with `ON CONFLICT DO NOTHING` on the movement's source key (store,
sku, kind, source document, line), and adds only the inserted ones' deltas to the levels
with one atomic upsert (`on_hand_milli = stock_levels.on_hand_milli + excluded.on_hand_milli`). So a replayed
sale changes nothing, and two transactions moving the same SKU at once both count: on
PostgreSQL the second upsert waits for the first's row lock and adds to its result; SQLite
has a single writer.

Quantities are integer thousandths (`*_milli`); `parse_qty` and `format_milli` convert
from and to the wire's decimal strings ("2", "0.352").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from fractions import Fraction
from typing import Any, TypeVar

from sqlalchemy import and_, case, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from hub.db import AsyncSession
from hub.errors import HubError, NotFound
from hub.models import Store
from hub.stock_tables import MovementKind, StockFlag, StockLevel, StockMovement
from protocol import format_qty
from protocol.ids import new_id

__all__ = [
    "MAX_QTY_MILLI",
    "Level",
    "Movement",
    "StockError",
    "adjust",
    "flag_json",
    "format_milli",
    "level",
    "level_json",
    "levels_for_sku",
    "levels_for_store",
    "list_flags",
    "movement_json",
    "movements_page",
    "on_hand",
    "parse_qty",
    "record_movement",
    "record_movements",
    "to_milli",
]

MAX_QTY_MILLI = 10**12  # a billion units: far beyond any real movement, far inside BIGINT
_MAX_SKU = 64
_ADJUST_KINDS = {MovementKind.ADJUSTMENT, MovementKind.WASTE, MovementKind.STOCKTAKE}


class StockError(HubError):
    """A stock operation was refused; the message says why and what to do."""


def to_milli(qty: Fraction | Decimal | int) -> int:
    """Thousandths of a unit, rounded half away from zero (a till's "1/3" kg becomes 0.333)."""
    scaled = Fraction(qty) * 1000
    whole = abs(scaled.numerator) * 2 + scaled.denominator
    rounded = whole // (2 * scaled.denominator)
    return rounded if scaled >= 0 else -rounded


def parse_qty(value: Any, *, field: str = "qty", signed: bool = False) -> int:
    """A quantity from JSON ("2", "0.352", 3) as thousandths; `StockError` if unusable.

    At most three decimals: a finer quantity would be silently rounded, which for a
    document a person typed is a mistake to point out, not to hide.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise StockError(f"{field} must be a number as a string such as '2' or '0.352'")
    try:
        number = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise StockError(f"{field} {value!r} is not a number; use digits such as '2' or '0.352'") from None
    if not number.is_finite():
        raise StockError(f"{field} {value!r} is not a number")
    if number != number.quantize(Decimal("0.001")):
        raise StockError(f"{field} {value!r} has more than three decimals (0.001 is the smallest unit)")
    milli = int(number * 1000)
    if milli < 0 and not signed:
        raise StockError(f"{field} must not be negative, got {value!r}")
    if abs(milli) > MAX_QTY_MILLI:
        raise StockError(f"{field} {value!r} is too large")
    return milli


def format_milli(milli: int) -> str:
    """Thousandths as the wire's decimal string: 2000 -> "2", 352 -> "0.352", -1500 -> "-1.5"."""
    return format_qty(Fraction(milli, 1000))


def check_sku(sku: str) -> str:
    """A SKU as the ledger keeps it; there is no catalog at the hub yet to check it against."""
    if not isinstance(sku, str) or not sku.strip() or len(sku) > _MAX_SKU or not sku.isprintable():
        raise StockError(f"sku must be 1-{_MAX_SKU} printable characters, got {str(sku)[:80]!r}")
    return sku


def _insert(session: AsyncSession) -> Any:
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    return pg_insert if dialect == "postgresql" else sqlite_insert


@dataclass(frozen=True)
class Movement:
    """One movement to append; the source key (store, sku, kind, source, line) makes it once."""

    store: str
    sku: str
    kind: MovementKind
    qty_milli: int
    source_type: str
    source_id: str
    actor: str
    line_ref: str = ""
    note: str = ""
    in_transit_milli: int = 0

    def row(self, now: datetime) -> dict[str, Any]:
        return {
            "store": self.store,
            "sku": self.sku,
            "kind": self.kind.value,
            "qty_milli": self.qty_milli,
            "in_transit_milli": self.in_transit_milli,
            "source_type": self.source_type,
            "source_id": self.source_id[:64],
            "line_ref": self.line_ref[:64],
            "actor": self.actor[:80],
            "note": self.note[:500],
            "created_at": now,
        }


_SOURCE_KEY = ("store", "sku", "kind", "source_type", "source_id", "line_ref")
_CHUNK = 1000  # rows per statement: far inside SQLite's and PostgreSQL's parameter limits


async def record_movements(
    session: AsyncSession, movements: list[Movement], *, now: datetime | None = None
) -> dict[tuple[str, ...], int]:
    """Append movements and move the levels with the ones that are new, in a few statements.

    One multi-row `INSERT … ON CONFLICT DO NOTHING RETURNING` per chunk (a movement seen
    before, also twice in one call, inserts nothing), then one multi-row level upsert with
    the summed deltas per (store, sku), in sorted order so concurrent batches lock level
    rows in the same order. Returns the ids of the inserted movements by source key.
    """
    now = now or datetime.now(UTC)
    insert = _insert(session)
    inserted: dict[tuple[str, ...], int] = {}
    deltas: dict[tuple[str, str], list[int]] = {}
    for start in range(0, len(movements), _CHUNK):
        rows = [m.row(now) for m in movements[start : start + _CHUNK]]
        result = await session.execute(
            insert(StockMovement)
            .values(rows)
            .on_conflict_do_nothing(index_elements=list(_SOURCE_KEY))
            .returning(
                StockMovement.id,
                *(getattr(StockMovement, c) for c in _SOURCE_KEY),
                StockMovement.qty_milli,
                StockMovement.in_transit_milli,
            )
        )
        for movement_id, *key, qty, transit in result.all():
            inserted[tuple(key)] = movement_id
            delta = deltas.setdefault((key[0], key[1]), [0, 0])
            delta[0] += qty
            delta[1] += transit
    if deltas:
        await _move_levels(session, insert, deltas, now)
    return inserted


async def _move_levels(
    session: AsyncSession, insert: Any, deltas: dict[tuple[str, str], list[int]], now: datetime
) -> None:
    """Add each (store, sku)'s summed deltas to its level with one atomic upsert."""
    rows = [
        {
            "store": store,
            "sku": sku,
            "on_hand_milli": on_hand,
            "in_transit_in_milli": transit,
            "reserved_milli": 0,
            "negative_since": now if on_hand < 0 else None,
            "updated_at": now,
        }
        for (store, sku), (on_hand, transit) in sorted(deltas.items())
    ]
    for start in range(0, len(rows), _CHUNK):
        stmt = insert(StockLevel).values(rows[start : start + _CHUNK])
        new_on_hand = StockLevel.on_hand_milli + stmt.excluded.on_hand_milli
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=["store", "sku"],
                set_={
                    "on_hand_milli": new_on_hand,
                    "in_transit_in_milli": StockLevel.in_transit_in_milli + stmt.excluded.in_transit_in_milli,
                    # keeps the first moment it went negative; cleared once back at zero or above
                    "negative_since": case(
                        (new_on_hand < 0, func.coalesce(StockLevel.negative_since, stmt.excluded.updated_at)),
                        else_=None,
                    ),
                    "updated_at": stmt.excluded.updated_at,
                },
            )
        )


async def record_movement(
    session: AsyncSession,
    *,
    store: str,
    sku: str,
    kind: MovementKind,
    qty_milli: int,
    source_type: str,
    source_id: str,
    actor: str,
    line_ref: str = "",
    note: str = "",
    in_transit_milli: int = 0,
    now: datetime | None = None,
) -> int | None:
    """Append one movement and move the level with it; the movement's id, or None if a
    movement with the same source key was recorded before (then nothing changes)."""
    movement = Movement(
        store, sku, kind, qty_milli, source_type, source_id, actor, line_ref, note, in_transit_milli
    )
    inserted = await record_movements(session, [movement], now=now)
    return next(iter(inserted.values()), None)


@dataclass(frozen=True)
class Level:
    """One SKU at one store; `available` is what can still be promised."""

    store: str
    sku: str
    on_hand_milli: int
    in_transit_in_milli: int
    reserved_milli: int
    negative_since: datetime | None

    @property
    def available_milli(self) -> int:
        """On hand less what is reserved (in-transit is not on the shelf yet)."""
        return self.on_hand_milli - self.reserved_milli


def _level(row: StockLevel | None, store: str, sku: str) -> Level:
    if row is None:
        return Level(store, sku, 0, 0, 0, None)
    return Level(
        row.store, row.sku, row.on_hand_milli, row.in_transit_in_milli, row.reserved_milli, row.negative_since
    )


async def level(session: AsyncSession, store: str, sku: str) -> Level:
    """The level of one SKU at one store (all zero if it never moved)."""
    row = await session.get(StockLevel, (store, sku), populate_existing=True)
    return _level(row, store, sku)


async def on_hand(session: AsyncSession, store: str, sku: str) -> int:
    """On-hand thousandths of one SKU at one store."""
    return (await level(session, store, sku)).on_hand_milli


# Plain columns, not ORM entities: a store's 5,000 levels load in a fraction of the time
# (no identity map, no instance state), which keeps the whole-store read under 200 ms.
_LEVEL_COLUMNS = (
    StockLevel.store,
    StockLevel.sku,
    StockLevel.on_hand_milli,
    StockLevel.in_transit_in_milli,
    StockLevel.reserved_milli,
    StockLevel.negative_since,
)


async def levels_for_store(
    session: AsyncSession,
    store: str,
    *,
    sku_prefix: str | None = None,
    below_zero: bool = False,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[Level], bool]:
    """A store's levels by SKU, and whether more follow; `below_zero` keeps the flagged ones."""
    query = select(*_LEVEL_COLUMNS).where(StockLevel.store == store)
    if sku_prefix:
        query = query.where(StockLevel.sku.startswith(sku_prefix, autoescape=True))
    if below_zero:
        query = query.where(StockLevel.on_hand_milli < 0)
    rows = (await session.execute(query.order_by(StockLevel.sku).limit(limit + 1).offset(offset))).all()
    return [Level(*r) for r in rows[:limit]], len(rows) > limit


async def levels_for_sku(
    session: AsyncSession, sku: str, *, stores: frozenset[str] | None = None
) -> list[Level]:
    """One SKU at every store (or at `stores`), by store."""
    query = select(*_LEVEL_COLUMNS).where(StockLevel.sku == sku)
    if stores is not None:
        query = query.where(StockLevel.store.in_(sorted(stores)))
    rows = (await session.execute(query.order_by(StockLevel.store))).all()
    return [Level(*r) for r in rows]


async def movements_page(
    session: AsyncSession, store: str, sku: str, *, limit: int = 100, offset: int = 0
) -> tuple[list[StockMovement], bool]:
    """The ledger of one SKU at one store, newest first, and whether more follow."""
    rows = (
        await session.scalars(
            select(StockMovement)
            .where(and_(StockMovement.store == store, StockMovement.sku == sku))
            .order_by(StockMovement.id.desc())
            .limit(limit + 1)
            .offset(offset)
        )
    ).all()
    return list(rows[:limit]), len(rows) > limit


async def adjust(  # noqa: PLR0917 - (store, sku, delta, reason, actor) as the inventory issue names it
    session: AsyncSession,
    store: str,
    sku: str,
    delta_milli: int,
    reason: str,
    actor: str,
    *,
    kind: MovementKind = MovementKind.ADJUSTMENT,
    reference: str | None = None,
) -> int:
    """A correction (`adjustment`, either way) or a write-off (`waste`, out only), with its reason.

    `reference` (the caller's id for this correction) makes a retried request apply once;
    a reference already used is refused rather than silently ignored, so a person who
    reuses one by mistake hears about it.
    """
    check_sku(sku)
    if kind not in _ADJUST_KINDS:
        raise StockError(f"an adjustment is one of {', '.join(sorted(_ADJUST_KINDS))}, not {kind.value!r}")
    if delta_milli == 0:
        raise StockError("an adjustment of 0 changes nothing; give the quantity to add or take away")
    if kind is MovementKind.WASTE and delta_milli > 0:
        raise StockError("waste takes stock away: give a negative quantity")
    if abs(delta_milli) > MAX_QTY_MILLI:
        raise StockError("the adjustment is too large")
    if not reason.strip():
        raise StockError("an adjustment needs a reason")
    if await session.get(Store, store) is None:
        raise NotFound(f"unknown store '{store}'")
    source_id = reference or str(new_id())
    movement = await record_movement(
        session,
        store=store,
        sku=sku,
        kind=kind,
        qty_milli=delta_milli,
        source_type="adjustment",
        source_id=source_id,
        actor=actor,
        note=reason.strip(),
    )
    if movement is None:
        raise StockError(f"adjustment reference {source_id!r} was already used for {sku} at {store}")
    return movement


async def list_flags(
    session: AsyncSession, *, stores: frozenset[str] | list[str] | None, resolved: bool | None = False
) -> list[StockFlag]:
    """Flags of documents the stock listener could not fully apply, oldest first."""
    query = select(StockFlag)
    if resolved is not None:
        query = query.where(StockFlag.resolved.is_(resolved))
    if stores is not None:
        query = query.where(StockFlag.store.in_(sorted(stores)))
    return list((await session.scalars(query.order_by(StockFlag.id).limit(1000))).all())


def level_json(row: Level) -> dict[str, Any]:
    """A level as the API returns it (quantities as decimal strings)."""
    return {
        "store": row.store,
        "sku": row.sku,
        "on_hand": format_milli(row.on_hand_milli),
        "in_transit_in": format_milli(row.in_transit_in_milli),
        "reserved": format_milli(row.reserved_milli),
        "available": format_milli(row.available_milli),
        "negative_since": row.negative_since.isoformat() if row.negative_since else None,
    }


def movement_json(row: StockMovement) -> dict[str, Any]:
    """A ledger entry as the API returns it."""
    return {
        "id": row.id,
        "store": row.store,
        "sku": row.sku,
        "kind": row.kind,
        "qty": format_milli(row.qty_milli),
        "in_transit": format_milli(row.in_transit_milli),
        "source_type": row.source_type,
        "source_id": row.source_id,
        "line_ref": row.line_ref,
        "actor": row.actor,
        "note": row.note,
        "created_at": row.created_at.isoformat(),
    }


def flag_json(row: StockFlag) -> dict[str, Any]:
    """A stock flag as the API returns it."""
    return {
        "id": row.id,
        "kind": row.kind,
        "store": row.store,
        "sku": row.sku,
        "source_type": row.source_type,
        "source_id": row.source_id,
        "note": row.note,
        "resolved": row.resolved,
        "created_at": row.created_at.isoformat(),
    }


Doc = TypeVar("Doc")


async def step_document(
    session: AsyncSession,
    model: type[Doc],
    doc_id: str,
    allowed: Sequence[StrEnum],
    *,
    verb: str,
    label: str,
    **values: Any,
) -> Doc:
    """Move a stock document (transfer, purchase order, stocktake) on by one conditional UPDATE.

    Only from one of the `allowed` states, else it refuses saying where the document is. On
    PostgreSQL the UPDATE holds the row's lock until commit, so concurrent steps go one by
    one and two "ship" calls ship once. `model` has id, state, version and updated_at columns.
    """
    table: Any = model
    moved = await session.execute(
        update(table)
        .where(table.id == doc_id, table.state.in_([s.value for s in allowed]))
        .values(version=table.version + 1, updated_at=datetime.now(UTC), **values)
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        state = await session.scalar(select(table.state).where(table.id == doc_id))
        if state is None:
            raise NotFound(f"no {label} {doc_id}")
        wanted = " or ".join(s.value for s in allowed)
        raise StockError(f"{label} {doc_id} is {state}; it can be {verb} only when {wanted}")
    row = await session.get(model, doc_id, populate_existing=True)
    if row is None:  # cannot happen: the row was just updated
        raise NotFound(f"no {label} {doc_id}")
    return row

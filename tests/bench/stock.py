"""Benchmark: the stock ledger at chain scale on PostgreSQL — 500 stores × 5,000 SKUs, 20 million movements.

The issue's goals: on-hand for one store (all its SKUs) and for one SKU (all stores) under
200 ms each, and the replenishment list of one store of 5,000 SKUs under 1 s.

Data, bulk-loaded with COPY into a fresh database that is dropped afterwards (loading is
not measured): per (store, SKU) one opening receipt and then sales spread over the last
60 days — `movements / (stores × skus)` movements each — and the running level that is
their sum, as `record_movements` would have left it. The ledger's unique key and index
are dropped for the load and rebuilt after it (as a real bulk import would), then ANALYZE.
Store 0 has a days-of-cover default rule (every SKU), and 20 other stores a min/max
default rule, so the list also looks for surplus to transfer before buying.

Ours, through the hub's functions on a pooled SQLAlchemy session (what the API handlers
call): `levels_for_store(store, limit=5000)`, `levels_for_sku(sku)`, and
`replenishment_list(store)`. Baselines, same run, same data, asyncpg: the raw
`SELECT … FROM stock_levels WHERE store = $1` (resp. `sku = $1`), and for the list the raw
velocity `SELECT sku, sum(qty_milli) … GROUP BY sku` over the store's window joined to its
levels. `main` also times the ledger sum without the level rollup, to show what it saves.

Run alone: `.venv/bin/python -m tests.bench.stock [stores] [skus] [movements] [rounds]`
(PostgreSQL from STORELINK_TEST_PG_URL, default postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from hub.db import Database, migrate
from hub.purchasing_tables import DEFAULT_RULE
from hub.replenishment import DEFAULT_WINDOW_DAYS, RuleIn, replenishment_list, set_rule
from hub.stock import levels_for_sku, levels_for_store
from tests.bench.sync import BenchSkipped, _pg_database

__all__ = ["Row", "main", "rows"]

Row = tuple[str, str, list[float], list[float]]
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
_DONORS = 20
_GOAL_LEVEL_S = 0.2
_GOAL_LIST_S = 1.0
_COLUMNS = [
    "id", "store", "sku", "kind", "qty_milli", "in_transit_milli", "source_type", "source_id",
    "line_ref", "actor", "note", "created_at",
]  # fmt: skip
_INDEX_SQL = (
    "ALTER TABLE stock_movements ADD CONSTRAINT uq_stock_movements_source "
    "UNIQUE (store, sku, kind, source_type, source_id, line_ref)",
    "CREATE INDEX ix_stock_movements_store_sku ON stock_movements (store, sku, id)",
)


def _store(n: int) -> str:
    return f"store-{n:03d}"


def _sku(n: int) -> str:
    return f"SKU-{n:05d}"


async def _load(dsn: str, stores: int, skus: int, movements: int) -> None:
    """Stores, movements (COPY, per store), levels (COPY), then the ledger's indexes and ANALYZE."""
    per_pair = max(2, movements // (stores * skus))
    conn = await asyncpg.connect(dsn)
    try:
        await conn.copy_records_to_table(
            "stores",
            records=[(_store(s), _store(s), "Asia/Shanghai", False, NOW) for s in range(stores)],
            columns=["id", "name", "timezone", "online", "created_at"],
        )
        await conn.execute("ALTER TABLE stock_movements DROP CONSTRAINT uq_stock_movements_source")
        await conn.execute("DROP INDEX ix_stock_movements_store_sku")
        opened = NOW - timedelta(days=90)
        times = [NOW - timedelta(days=60 * k / per_pair, minutes=k) for k in range(1, per_pair)]
        next_id = 1
        for s in range(stores):
            store, actor = _store(s), f"sync:{_store(s)}"
            records: list[tuple[Any, ...]] = []
            levels: list[tuple[Any, ...]] = []
            for k in range(skus):
                sku = _sku(k)
                sold = 1000 + 1000 * ((s + k) % 3)  # 1 to 3 a sale
                opening = sold * (per_pair - 1) + 1000 * (
                    (k + 7 * s) % 40
                )  # some SKUs run out, some keep plenty
                records.append(
                    (
                        next_id,
                        store,
                        sku,
                        "receipt",
                        opening,
                        0,
                        "purchase",
                        f"p{s}-{k}",
                        "r",
                        "bench",
                        "",
                        opened,
                    )
                )
                for j, when in enumerate(times):
                    records.append(
                        (
                            next_id + 1 + j,
                            store,
                            sku,
                            "sale",
                            -sold,
                            0,
                            "order",
                            f"o{s}-{k}-{j}",
                            "l0",
                            actor,
                            "",
                            when,
                        )
                    )
                next_id += per_pair
                levels.append((store, sku, opening - sold * (per_pair - 1), 0, 0, NOW))
            await conn.copy_records_to_table("stock_movements", records=records, columns=_COLUMNS)
            await conn.copy_records_to_table(
                "stock_levels",
                records=levels,
                columns=[
                    "store",
                    "sku",
                    "on_hand_milli",
                    "in_transit_in_milli",
                    "reserved_milli",
                    "updated_at",
                ],
            )
        await conn.execute("SELECT setval(pg_get_serial_sequence('stock_movements', 'id'), $1)", next_id)
        await conn.execute("SET maintenance_work_mem = '512MB'")
        for sql in _INDEX_SQL:
            await conn.execute(sql)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def _rules(db: Database, stores: int) -> None:
    async with db.session() as session, session.begin():
        await set_rule(
            session,
            _store(0),
            DEFAULT_RULE,
            RuleIn(cover_days=7, lead_time_days=2, safety_days=1, order_multiple_milli=6_000),
            actor="bench",
        )
        for s in range(1, min(stores, _DONORS + 1)):
            await set_rule(
                session, _store(s), DEFAULT_RULE, RuleIn(min_milli=0, max_milli=20_000), actor="bench"
            )


async def _timed(work: Awaitable[Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    found = await work
    return time.perf_counter() - started, found


async def measure(stores: int, skus: int, movements: int, rounds: int) -> dict[str, Any]:
    """Times of ours and the baselines, per measurement, over freshly loaded data."""
    async with _pg_database() as url:
        dsn = url.replace("postgresql+asyncpg://", "postgresql://")
        db = Database.from_url(url)
        try:
            await migrate(db.engine)
            started = time.perf_counter()
            await _load(dsn, stores, skus, movements)
            loaded_s = time.perf_counter() - started
            await _rules(db, stores)
            gc.collect()  # the loader's garbage is not the hub's: keep its collection out of the timings
            gc.freeze()
            raw = await asyncpg.connect(dsn)
            out: dict[str, Any] = {"load_s": loaded_s}
            since = NOW - timedelta(days=DEFAULT_WINDOW_DAYS)
            try:
                # warm both paths once (connection pools, plans), then measure
                async with db.session() as session:
                    await levels_for_store(session, _store(0), limit=skus)
                for key in ("store", "sku", "list", "ledger"):
                    out[key] = ([], [])
                for r in range(rounds):
                    store, sku = _store(r % stores), _sku((r * 997) % skus)
                    async with db.session() as session:
                        took, found = await _timed(levels_for_store(session, store, limit=skus))
                        assert len(found[0]) == skus, "the load did not work"
                        out["store"][0].append(took)
                        took, found = await _timed(levels_for_sku(session, sku))
                        assert len(found) == stores
                        out["sku"][0].append(took)
                        took, lines = await _timed(replenishment_list(session, _store(0), now=NOW))
                        out["list"][0].append(took)
                        out["lines"] = lines
                    out["store"][1].append(
                        (
                            await _timed(
                                raw.fetch(
                                    "SELECT sku, on_hand_milli FROM stock_levels WHERE store = $1", store
                                )
                            )
                        )[0]
                    )
                    out["sku"][1].append(
                        (
                            await _timed(
                                raw.fetch("SELECT store, on_hand_milli FROM stock_levels WHERE sku = $1", sku)
                            )
                        )[0]
                    )
                    out["list"][1].append(
                        (
                            await _timed(
                                raw.fetch(
                                    "SELECT l.sku, l.on_hand_milli, v.sold FROM stock_levels l LEFT JOIN ("
                                    " SELECT sku, -sum(qty_milli) AS sold FROM stock_movements"
                                    " WHERE store = $1 AND kind IN ('sale', 'refund') AND created_at >= $2"
                                    " GROUP BY sku) v ON v.sku = l.sku WHERE l.store = $1",
                                    _store(0),
                                    since,
                                )
                            )
                        )[0]
                    )
                    out["ledger"][1].append(
                        (
                            await _timed(
                                raw.fetch(
                                    "SELECT sku, sum(qty_milli) FROM stock_movements WHERE store = $1 GROUP BY sku",
                                    store,
                                )
                            )
                        )[0]
                    )
            finally:
                await raw.close()
        finally:
            await db.close()
    return out


async def rows(
    tmp: Path | None = None,
    stores: int = 500,
    skus: int = 5_000,
    movements: int = 20_000_000,
    rounds: int = 5,
) -> list[Row]:
    """Three rows: on-hand for a store, on-hand for a SKU, one store's replenishment list.

    `tmp` is not used (the data lives in PostgreSQL); it is there so this module is called
    like the other benchmark modules.
    """
    out = await measure(stores, skus, movements, rounds)
    size = f"{stores:,} stores × {skus:,} SKUs, {movements:,} movements, PostgreSQL"
    return [
        (
            f"on-hand of one store, all {skus:,} SKUs (`levels_for_store`), {size} (goal < 200 ms)",
            "raw `SELECT sku, on_hand_milli FROM stock_levels WHERE store = $1`",
            *out["store"],
        ),
        (
            f"on-hand of one SKU at all {stores:,} stores (`levels_for_sku`), {size} (goal < 200 ms)",
            "raw `SELECT store, on_hand_milli FROM stock_levels WHERE sku = $1`",
            *out["sku"],
        ),
        (
            f"replenishment list of one store, {skus:,} SKUs, {_DONORS} donor stores (goal < 1 s)",
            "raw velocity `GROUP BY sku` over the window joined to the store's levels",
            *out["list"],
        ),
    ]


def _ms(values: list[float]) -> str:
    return ", ".join(f"{v * 1000:.1f}" for v in values) + " ms"


async def main(stores: int, skus: int, movements: int, rounds: int) -> None:
    """Print each round, medians next to the baselines, and whether the goals are met."""
    try:
        out = await measure(stores, skus, movements, rounds)
    except BenchSkipped as err:
        print(f"skipped: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    lines = out["lines"]
    print(f"{stores:,} stores × {skus:,} SKUs, {movements:,} movements; load {out['load_s']:.0f} s")
    print(
        f"list of {_store(0)}: {len(lines)} lines to replenish, "
        f"{sum(1 for x in lines if x.transfers)} with transfers, {sum(1 for x in lines if x.buy_milli)} to buy"
    )
    met = True
    for key, what, goal in (
        ("store", "on-hand one store ", _GOAL_LEVEL_S),
        ("sku", "on-hand one SKU   ", _GOAL_LEVEL_S),
        ("list", "replenishment list", _GOAL_LIST_S),
    ):
        ours, base = out[key]
        print(
            f"{what} ours {_ms(ours)}; baseline {_ms(base)}; median {statistics.median(ours) * 1000:.1f} ms"
        )
        met = met and max(ours) < goal
    print(f"ledger sum without the rollup (one store): {_ms(out['ledger'][1])}")
    print("goals met" if met else "goals NOT met")


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    defaults = [500, 5_000, 20_000_000, 5]
    asyncio.run(main(*(args + defaults[len(args) :])))

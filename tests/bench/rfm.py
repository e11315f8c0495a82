"""Benchmark: the nightly RFM segments and rule tags for 200,000 members and 2,000,000 orders on PostgreSQL.

The issue's goal: `recompute_segments` (RFM scores and segments for every member, and every
rule tag) under 60 s at that size. The data is bulk-loaded with COPY into a fresh database
that is dropped afterwards; loading is not measured. Each round of ours is one full
`recompute_segments` with three rule tags defined (high value, churn risk, spent at least).

Baseline, same run, same data: the raw aggregate RFM starts from,
`SELECT member_id, count(*), sum(total_fen - refunded_fen), max(business_day) FROM member_orders
WHERE <window> GROUP BY member_id`, fetched by asyncpg. It scans the same rows but ranks,
joins and writes nothing, so ours / baseline says what the scoring, segment mapping,
rule tags and writes cost on top of reading the facts once.

Run alone: `.venv/bin/python -m tests.bench.rfm [members] [orders] [rounds]`
(PostgreSQL from STORELINK_TEST_PG_URL, default postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from hub.db import Database, migrate
from hub.member_segments import DEFAULT_WINDOW_DAYS, Recompute, recompute_segments
from hub.member_tags import create_tag
from tests.bench.sync import BenchSkipped, _pg_database

__all__ = ["Row", "main", "rows"]

Row = tuple[str, str, list[float], list[float]]
AS_OF = date(2026, 6, 30)
_STORES = 50
_CHUNK = 200_000
_GOAL_S = 60.0
_RULES: dict[str, dict[str, Any]] = {
    "high-value": {"kind": "high_value", "days": 90, "min_visits": 3, "min_ticket_bp": 15000},
    "churn-risk": {"kind": "churn_risk", "days": 60},
    "big-spender": {"kind": "spent_at_least", "days": 365, "min_spend_fen": 200_000},
}


def _member_id(n: int) -> str:
    return str(uuid.UUID(int=n + 1))


async def _load(dsn: str, members: int, orders: int) -> None:
    """Stores, members (10 % registered at head office), 30 % with a balance, orders skewed to regulars."""
    conn = await asyncpg.connect(dsn)
    rnd = random.Random(20260630)  # the same data every run
    now = datetime(2025, 1, 1, tzinfo=UTC)
    try:
        stores = [f"store-{i:02d}" for i in range(_STORES)]
        await conn.copy_records_to_table(
            "stores",
            records=[(s, s, "Asia/Shanghai", None, False, None, None, None, now) for s in stores],
            columns=[
                "id",
                "name",
                "timezone",
                "mqtt_password_hash",
                "online",
                "last_seen",
                "epoch",
                "status",
                "created_at",
            ],
        )
        home = [None if n % 10 == 0 else stores[n % _STORES] for n in range(members)]
        await conn.copy_records_to_table(
            "members",
            records=[
                (_member_id(n), f"138{n:08d}", "", "unknown", home[n], "hub", False, False, now, now)
                for n in range(members)
            ],
            columns=[
                "id", "phone", "name", "gender", "source_store", "channel",
                "consent_marketing", "consent_sms", "created_at", "updated_at",
            ],
        )  # fmt: skip
        await conn.copy_records_to_table(
            "stored_value_accounts",
            records=[
                (_member_id(n), rnd.randrange(100, 100_000), 0, now) for n in range(members) if n % 10 < 3
            ],
            columns=["member_id", "principal_fen", "bonus_fen", "updated_at"],
        )
        items = json.dumps([{"sku": "SKU-1", "qty": "1", "total_fen": 1000}])
        for start in range(0, orders, _CHUNK):
            records = []
            for k in range(start, min(start + _CHUNK, orders)):
                member = int(members * rnd.random() ** 2)  # a few regulars, many occasional members
                store = home[member] or stores[k % _STORES]
                total = rnd.randrange(300, 30_000)
                refunded = total // 2 if k % 50 == 0 else 0
                day = AS_OF - timedelta(days=rnd.randrange(0, 450))  # some before the window
                records.append(
                    (
                        str(uuid.UUID(int=(1 << 64) + k)),
                        _member_id(member),
                        store,
                        day,
                        None,
                        total,
                        refunded,
                        items,
                    )
                )
            await conn.copy_records_to_table(
                "member_orders",
                records=records,
                columns=[
                    "order_id", "member_id", "store", "business_day", "closed_at",
                    "total_fen", "refunded_fen", "items",
                ],
            )  # fmt: skip
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def _baseline(dsn: str, window_days: int) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        found = await conn.fetch(
            "SELECT member_id, count(*), sum(total_fen - refunded_fen), max(business_day) FROM member_orders "
            "WHERE business_day > $1 AND business_day <= $2 GROUP BY member_id",
            AS_OF - timedelta(days=window_days),
            AS_OF,
        )
        elapsed = time.perf_counter() - started
    finally:
        await conn.close()
    if not found:
        raise RuntimeError("the baseline found no orders: the load did not work")
    return elapsed


async def measure(members: int, orders: int, rounds: int) -> tuple[list[float], list[float], Recompute]:
    """(ours, baseline, the last recompute's result) over freshly loaded data."""
    async with _pg_database() as url:
        dsn = url.replace("postgresql+asyncpg://", "postgresql://")
        db = Database.from_url(url)
        try:
            await migrate(db.engine)
            async with db.session() as session, session.begin():  # defined before the load: not measured
                for code, rule in _RULES.items():
                    await create_tag(session, code, code, actor="bench", rule=rule, today=AS_OF)
            await _load(dsn, members, orders)
            ours, base = [], []
            last: Recompute | None = None
            for _ in range(rounds):
                last = await recompute_segments(db, AS_OF)
                ours.append(last.seconds)
                base.append(await _baseline(dsn, DEFAULT_WINDOW_DAYS))
        finally:
            await db.close()
    assert last is not None
    return ours, base, last


async def rows(
    tmp: Path | None = None, members: int = 200_000, orders: int = 2_000_000, rounds: int = 3
) -> list[Row]:
    """One row: the full nightly recompute next to the raw GROUP BY over the same orders.

    `tmp` is not used (the data lives in PostgreSQL); it is there so this module is called
    like the other benchmark modules.
    """
    ours, base, _ = await measure(members, orders, rounds)
    what = (
        f"`recompute_segments`: RFM quintiles + segments + 3 rule tags, {members:,} members / "
        f"{orders:,} orders, PostgreSQL (goal < {_GOAL_S:.0f} s)"
    )
    baseline = "raw `SELECT member_id, count(*), sum(), max(day) … GROUP BY member_id` over the same window"
    return [(what, baseline, ours, base)]


async def main(members: int, orders: int, rounds: int) -> None:
    """Print each round, the median next to the baseline, and whether the goal is met."""
    try:
        ours, base, last = await measure(members, orders, rounds)
    except BenchSkipped as err:
        print(f"skipped: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"{members:,} members, {orders:,} orders, window {last.window_days} days as of {last.as_of}")
    print(f"scored {last.scored:,}; segments {last.segments}; rule tags {last.tags}")
    print(f"ours     recompute_segments: {', '.join(f'{s:.2f}' for s in ours)} s")
    print(f"baseline raw GROUP BY:       {', '.join(f'{s:.2f}' for s in base)} s")
    worst = max(ours)
    ratio = statistics.median(ours) / statistics.median(base)
    print(
        f"median ratio {ratio:.1f}x; goal < {_GOAL_S:.0f} s: worst {worst:.1f} s, {'met' if worst < _GOAL_S else 'NOT met'}"
    )


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:4]]
    defaults = [200_000, 2_000_000, 3]
    asyncio.run(main(*(args + defaults[len(args) :])))

"""Benchmarks: `python3 dev.py bench` writes docs/benchmarks.md.

Every storelink number is measured next to a baseline taken in the same run on the same
machine (raw JSON, raw sqlite3 commit, raw MQTT round trip), so the table shows what our
layers cost rather than how fast this machine happens to be.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import aiomqtt

from hub.config import BrokerSettings, HubSettings
from hub.service import Hub
from hub.stores import add_store, list_stores, record_status
from protocol import Status, decode, encode, topics
from tests.bench import hardware, member_rpc, promotions, rfm, stock, sync, till
from tests.conftest import Mosquitto, free_port

ROOT = Path(__file__).resolve().parents[2]
Row = tuple[str, str, list[float], list[float]]
T = TypeVar("T")


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, int(len(ordered) * 0.99) - 1)]


def _stats(samples: list[float]) -> str:
    median = statistics.median(samples)
    scale, unit = (1, "s") if median >= 1 else (1e3, "ms") if median >= 1e-3 else (1e6, "µs")
    return f"{median * scale:,.1f} {unit} / {_p99(samples) * scale:,.1f} {unit}"


def _timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


async def _atimed(fn: Callable[[], Awaitable[object]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - start)
    return out


def bench_codec(n: int) -> Row:
    status = Status(
        online=True,
        store="shop-1",
        epoch=3,
        acked_through=1234,
        outbox_depth=2,
        versions={"catalog": 7, "prices": 9},
        ts=datetime.now(UTC),
    )
    payload = encode(status)
    return (
        "decode a `Status` (validated model)",
        "`json.loads` of the same bytes",
        _timed(lambda: decode(Status, payload), n),
        _timed(lambda: json.loads(payload), n),
    )


async def bench_record_status(tmp: Path, n: int) -> Row:
    hub_settings = HubSettings(
        state_dir=tmp / "h",
        http_host="127.0.0.1",
        http_port=0,
        broker=BrokerSettings(bind="127.0.0.1", port=free_port()),
    )
    async with Hub(hub_settings) as hub:
        await add_store(hub.db, "shop-1")
        status = Status(online=True, store="shop-1", epoch=1)
        ours = await _atimed(lambda: record_status(hub.db, "shop-1", status), n)
    conn = sqlite3.connect(tmp / "raw.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE s (id TEXT PRIMARY KEY, online INT, last_seen TEXT, status TEXT)")
    conn.execute("INSERT INTO s VALUES ('shop-1', 0, NULL, NULL)")
    body = status.model_dump_json()

    def raw() -> None:
        conn.execute("BEGIN")
        conn.execute(
            "UPDATE s SET online=1, last_seen=?, status=? WHERE id='shop-1'",
            (datetime.now(UTC).isoformat(), body),
        )
        conn.execute("COMMIT")

    baseline = _timed(raw, n)
    conn.close()
    return (
        "hub records a status (SQLAlchemy async, SQLite WAL)",
        "raw `sqlite3` UPDATE + COMMIT",
        ours,
        baseline,
    )


async def _deliveries(port: int, n: int, *, auth: tuple[str, str] | None, topic: str) -> list[float]:
    """Publish (QoS 1) from one client until a second client has received the message."""
    user, password = auth or (None, None)
    async with (
        aiomqtt.Client("127.0.0.1", port, username=user, password=password) as sub,
        aiomqtt.Client("127.0.0.1", port, username=user, password=password) as pub,
    ):
        await sub.subscribe(topic, qos=1)
        out = []
        for i in range(n):
            start = time.perf_counter()
            await pub.publish(topic, str(i).encode(), qos=1)
            async for _ in sub.messages:
                break
            out.append(time.perf_counter() - start)
        return out


async def bench_status_to_hub(tmp: Path, n: int) -> Row:
    """Edge-style publish of a status until the hub's database shows it; baseline: MQTT echo."""
    port = free_port()
    hub_settings = HubSettings(
        state_dir=tmp / "e2e",
        http_host="127.0.0.1",
        http_port=0,
        broker=BrokerSettings(bind="127.0.0.1", port=port),
        store_stale_after_s=3600,
    )
    async with Hub(hub_settings) as hub:
        await hub.link.connected.wait()
        creds = await add_store(hub.db, "shop-1")
        stale = timedelta(hours=1)
        baseline = await _deliveries(
            port, n, auth=("shop-1", creds.password), topic="storelink/v1/shop-1/up/echo"
        )
        async with aiomqtt.Client("127.0.0.1", port, username="shop-1", password=creds.password) as edge:
            ours = []
            for i in range(n):
                online = i % 2 == 0
                start = time.perf_counter()
                await edge.publish(topics.status("shop-1"), encode(Status(online=online, epoch=1)), qos=1)
                while (await list_stores(hub.db, stale_after=stale))[0].online != online:
                    await asyncio.sleep(0.0005)
                ours.append(time.perf_counter() - start)
    return (
        "status published → visible in hub DB (embedded amqtt, SQLite)",
        "raw MQTT QoS 1 publish → other client receives (same broker)",
        ours,
        baseline,
    )


async def bench_mosquitto_echo(tmp: Path, n: int) -> Row | None:
    if shutil.which("mosquitto") is None:
        return None
    (tmp / "mosq").mkdir()
    mosq = Mosquitto(tmp / "mosq", secure=False)
    mosq.write_config()
    await asyncio.to_thread(mosq.start)
    try:
        baseline = await _deliveries(mosq.port, n, auth=None, topic="storelink/v1/shop-1/up/echo")
    finally:
        await asyncio.to_thread(mosq.stop)
    amqtt_port = free_port()
    hub_settings = HubSettings(
        state_dir=tmp / "m",
        http_host="127.0.0.1",
        http_port=0,
        broker=BrokerSettings(bind="127.0.0.1", port=amqtt_port),
    )
    async with Hub(hub_settings) as hub:
        creds = await add_store(hub.db, "shop-1")
        ours = await _deliveries(
            amqtt_port, n, auth=("shop-1", creds.password), topic="storelink/v1/shop-1/up/echo"
        )
    return (
        "embedded amqtt: QoS 1 publish → other client receives (auth + ACL plugins)",
        "same on Mosquitto 2",
        ours,
        baseline,
    )


def _arg(env: str, default: int) -> int:
    """STORELINK_BENCH_<env>, else the issue's number."""
    return int(os.environ.get(f"STORELINK_BENCH_{env}", default))


def _throughput_rows(
    drain: sync.Drain | None, fanin: sync.Fanin | None
) -> tuple[list[str], list[str], list[str]]:
    """Table rows, goal lines and notes for the sync benchmarks (a skipped one is left out)."""
    rows, goals, notes = [], [], []
    if drain is not None:
        ratio = drain.seconds / drain.baseline_s
        rows.append(
            f"| {drain.orders:,} orders sold offline → all committed at the hub after the edge reconnects "
            f"(real edge process, Mosquitto with ACL, PostgreSQL) | {drain.seconds:,.2f} s = "
            f"**{drain.rate:,.0f} orders/s**; hub per batch of ~{(drain.orders + 1) / drain.batches:.0f} "
            f"events {_ms(drain.batch_ms)} | "
            f"raw aiomqtt: {drain.orders:,} QoS 1 messages of {drain.event_bytes:,} B (one order event) "
            f"→ other client, same broker | {drain.baseline_s:,.2f} s = {drain.baseline_rate:,.0f} msg/s "
            f"| {ratio:.2f}× time |"
        )
        goals.append(
            f"- backlog drain ≥ 1,000 orders/s and no slower than raw MQTT: {drain.rate:,.0f} orders/s, "
            f"{ratio:.2f}× the raw time, {_verdict(drain.rate >= 1000 and ratio <= 1)}"
        )
        notes.append(
            f"- Backlog drain: timed from the reconnected edge's first `status` to the hub's commit of "
            f"the last order, {drain.batches} batches (the edge's 200 KiB cap binds before 200 events). "
            f"CPU during the drain: hub {drain.hub_cpu_s:.1f} s "
            f"({drain.hub_cpu_s / drain.seconds:.0%} of one core), edge process {drain.edge_cpu_s:.1f} s "
            f"({drain.edge_cpu_s / drain.seconds:.0%}): the hub, which ingests one batch at a time, is "
            "the bottleneck. The raw baseline keeps 20 publishes in flight and at most 500 messages "
            "unreceived (Mosquitto drops QoS 1 messages beyond 1,000 queued for a slow subscriber)."
        )
    if fanin is not None:
        ratio = fanin.seconds / fanin.baseline_s
        rows.append(
            f"| {fanin.stores} stores publish at once, {fanin.events:,} `order.paid` events in batches of "
            f"{fanin.per_batch} → all committed and acked (Mosquitto with ACL, PostgreSQL) | {fanin.seconds:,.2f} s = "
            f"**{fanin.rate:,.0f} events/s**; per store to final ack {_ms(fanin.ack_s)} | "
            "raw asyncpg: the same batches as JSON rows, one transaction each, no MQTT | "
            f"{fanin.baseline_s:,.2f} s = {fanin.events / fanin.baseline_s:,.0f} events/s | {ratio:.1f}× time |"
        )
        goals.append(
            f"- hub ingest with {fanin.stores} stores publishing at once, counts exact: "
            f"{fanin.rate:,.0f} events/s, every event committed once and acked (checked)"
        )
        notes.append(
            f"- {fanin.stores} stores: each client publishes its {fanin.events // fanin.stores:,} events "
            "(the edge's whole window) without waiting, then waits for the ack of its last seq; hub and "
            f"clients share this process, which used {fanin.cpu_s:.1f} s CPU "
            f"({fanin.cpu_s / fanin.seconds:.0%} of one core) in {fanin.seconds:.1f} s. "
            "The hub counts (events, orders, gross, acked_through per store, no reconciliation rows) "
            "are checked exactly; a mismatch fails the run."
        )
    return rows, goals, notes


def _ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:,.0f} / {_p99(samples) * 1000:,.0f} ms median / p99"


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


async def _skippable(what: str, bench: Awaitable[T]) -> T | None:
    try:
        return await bench
    except sync.BenchSkipped as err:
        print(f"skipped {what}: {err}", file=sys.stderr)
        return None


def _member_goals(rows: list[Row]) -> list[str]:
    """Issue 6: member lookup and stored-value debit through Mosquitto to the hub on PostgreSQL."""
    goals = []
    for name, _, ours, _ in rows:
        p99_ms = _p99(ours) * 1000
        goals.append(f"- {name}: p99 under 30 ms: {p99_ms:.0f} ms, {_verdict(p99_ms < 30)}")
    return goals


@dataclass
class Section:
    """One group's measurements: latency rows, throughput table rows, goal lines and notes."""

    rows: list[Row] = field(default_factory=list)
    throughput: list[str] = field(default_factory=list)
    goals: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


async def _core(tmp: Path) -> Section:
    n = _arg("N", 300)
    rss_orders = _arg("RSS_ORDERS", 10_000)
    section = Section(
        rows=[
            bench_codec(n * 10),
            await bench_record_status(tmp, n),
            await bench_status_to_hub(tmp, n),
        ]
    )
    mosq = await bench_mosquitto_echo(tmp, n)
    if mosq:
        section.rows.append(mosq)
    ours, base = await till.durable_close(tmp, n)
    close_tail = _p99(ours) / _p99(base)
    section.rows.append(
        (
            "till closes a paid order (pricing, journal, outbox, FULL fsync)",
            "raw `sqlite3` INSERT + COMMIT, WAL, synchronous=FULL, same disk",
            ours,
            base,
        )
    )
    close_rate = len(ours) / sum(ours)
    ours, base = await till.scan_to_push(tmp, 1000)
    push_p99_ms = _p99(ours) * 1000
    section.rows.append(
        (
            "line added over HTTP → `order.updated` at a 2nd WebSocket client (1,000 adds, 20-line baskets)",
            "raw aiohttp WebSocket echo round trip",
            ours,
            base,
        )
    )
    receipt_rows = hardware.receipt_rows(n * 10)
    section.rows += receipt_rows
    render_ms = statistics.median(receipt_rows[0][2]) * 1000
    ours, base = await hardware.scan_to_till(n)
    section.rows.append(
        (
            "USB scanner: Enter key event → `scan` event with its product at a till subscriber "
            "(evdev driver, keymap in auto mode, catalog lookup)",
            "event bus alone: publish → subscriber",
            ours,
            base,
        )
    )
    scan_p99_ms = _p99(ours) * 1000
    rss_start, rss_end, sell_rate = await till.rss_after_orders(tmp, rss_orders)
    section.goals += [
        f"- durable close p99 within 2× of the raw commit: {close_tail:.1f}×, {_verdict(close_tail <= 2)}",
        f"- scan→push p99 under 10 ms: {push_p99_ms:.1f} ms, {_verdict(push_p99_ms < 10)}",
        f"- edge RSS after {rss_orders:,} orders under 80 MB: {rss_end:.1f} MB, {_verdict(rss_end < 80)}",
        f"- receipt render under 2 ms (30 lines, Chinese, 80 mm): {render_ms:.2f} ms median, "
        f"{_verdict(render_ms < 2)}",
        f"- scan → till event (issue 5 sets no number; the till's own goal is 10 ms): {scan_p99_ms:.2f} ms p99, "
        f"{_verdict(scan_p99_ms < 10)}",
    ]
    section.notes += [
        f"- Durable order close: {close_rate:,.0f} orders/s one at a time (the till serialises its writes "
        "on one journal thread).",
        f"- Edge process RSS: {rss_start:.1f} MB after start-up, {rss_end:.1f} MB after {rss_orders:,} closed "
        f"orders sold over HTTP by 4 concurrent clients ({sell_rate:,.0f} orders/s end to end, 3 requests each). "
        "Goal: under 80 MB.",
        "- The status row polls the hub database every 0.5 ms, so it includes up to one "
        'poll interval and one query. It serves the requirement "a store shows online '
        "within 2 s of its edge starting\": most of those 2 s go to the edge's own start-up.",
    ]
    return section


async def _sync(tmp: Path) -> Section:
    drain = await _skippable("backlog drain", sync.backlog_drain(tmp, _arg("DRAIN_ORDERS", 10_000)))
    fanin = await _skippable(
        "many stores", sync.many_stores(tmp, _arg("STORES", 50), batches=20, per_batch=100)
    )
    throughput, goals, notes = _throughput_rows(drain, fanin)
    return Section(throughput=throughput, goals=goals, notes=notes)


async def _members(tmp: Path) -> Section:
    members = await _skippable("member RPC", member_rpc.measure(tmp))
    if members is None:
        return Section()
    return Section(
        rows=members.rows,
        goals=_member_goals(members.rows),
        notes=[
            f"- Member RPC: {members.cpu_note()}. One hub process serves the 50 requests of a burst "
            "on one event loop, about ten database round trips each through SQLAlchemy and asyncpg, "
            "so the last answer of a burst comes that CPU time × 50 after the first; a p99 under "
            "30 ms at 50 at once needs several hub processes (MQTT shared subscriptions) and the "
            "cores to run them, which this 2-core machine does not have."
        ],
    )


async def _rfm(tmp: Path) -> Section:
    rows = await _skippable("nightly RFM", rfm.rows(tmp)) or []
    return Section(
        rows=rows,
        goals=[
            f"- nightly RFM + rule tags for 200,000 members / 2,000,000 orders under 60 s: worst of "
            f"{len(ours)} runs {max(ours):.1f} s, {_verdict(max(ours) < 60)}"
            for _, _, ours, _ in rows
        ],
    )


def _goals_from(rows: list[Row], goal_s: dict[int, float], what: str = "p99") -> list[str]:
    """One goal line per row: `goal_s[i]` is row i's limit in seconds, checked against its p99."""
    return [
        f"- {rows[i][0]}: {what} {_p99(rows[i][2]) * 1000:,.1f} ms, {_verdict(_p99(rows[i][2]) < limit)}"
        for i, limit in goal_s.items()
        if i < len(rows)
    ]


async def _stock(tmp: Path) -> Section:
    rows = await _skippable("stock ledger", stock.rows(tmp)) or []
    return Section(rows=rows, goals=_goals_from(rows, {0: 0.2, 1: 0.2, 2: 1.0}))


async def _promotions(tmp: Path) -> Section:
    rows = await promotions.rows(tmp)
    return Section(rows=rows, goals=_goals_from(rows, {0: 0.005}))


# name → (heading, runner); the document keeps this order.
GROUPS: dict[str, tuple[str, Callable[[Path], Awaitable[Section]]]] = {
    "core": ("Edge: codec, status, till, printing, scanning, memory", _core),
    "sync": ("Sync: backlog drain and many stores", _sync),
    "members": ("Members: RPC at the till", _members),
    "rfm": ("Members: nightly segments", _rfm),
    "stock": ("Inventory: stock ledger and replenishment", _stock),
    "promotions": ("Promotions: the engine at every scan", _promotions),
}
_BLOCK = re.compile(r"<!-- bench:(?P<name>[a-z]+) -->\n(?P<body>.*?)<!-- /bench:(?P=name) -->\n", re.S)


def _render(name: str, section: Section) -> str:
    heading = GROUPS[name][0]
    lines = [
        f"<!-- bench:{name} -->",
        f"## {heading}",
        "",
        f"`python3 dev.py bench {name}` on {platform.machine()} / Python {platform.python_version()}, "
        f"{datetime.now(UTC):%Y-%m-%d}.",
        "",
    ]
    if section.rows:
        lines += [
            "| measured | median / p99 | baseline | median / p99 | ratio median / p99 |",
            "|---|---|---|---|---|",
        ]
        for row_name, base_name, ours, base in section.rows:
            ratio = statistics.median(ours) / statistics.median(base)
            tail = _p99(ours) / _p99(base)
            lines.append(
                f"| {row_name} | {_stats(ours)} | {base_name} | {_stats(base)} | {ratio:.1f}× / {tail:.1f}× |"
            )
        lines.append("")
    if section.throughput:
        lines += [
            "Throughput (one run each; the ratio is our time over the baseline's):",
            "",
            "| measured | result | baseline | result | ratio |",
            "|---|---|---|---|---|",
            *section.throughput,
            "",
        ]
    if section.goals:
        lines += ["Goals from the issues:", "", *section.goals, ""]
    if section.notes:
        lines += [*section.notes, ""]
    if len(lines) == 6:
        lines += ["Skipped: a service it needs was missing (see the run's output).", ""]
    return "\n".join([*lines, f"<!-- /bench:{name} -->", ""])


async def main() -> None:
    names = sys.argv[1:] or list(GROUPS)
    unknown = [name for name in names if name not in GROUPS]
    if unknown:
        sys.exit(f"unknown benchmark group {', '.join(unknown)}; the groups are {', '.join(GROUPS)}")
    path = ROOT / "docs" / "benchmarks.md"
    old = path.read_text() if path.exists() else ""
    blocks = {match["name"]: match.group(0) for match in _BLOCK.finditer(old)}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for name in names:
            print(f"bench {name} …", file=sys.stderr, flush=True)
            blocks[name] = _render(name, await GROUPS[name][1](tmp))
    lines = [
        "# Benchmarks",
        "",
        "`python3 dev.py bench` runs every group below and rewrites this file; "
        "`python3 dev.py bench <group> …` runs the named groups and replaces only their sections. "
        "Median / p99 per operation; every baseline is measured in the same run on the same machine, "
        "so the ratios say what our layers cost rather than how fast this machine happens to be.",
        "",
    ]
    for name in GROUPS:
        lines.append(
            blocks.get(
                name,
                f"<!-- bench:{name} -->\n## {GROUPS[name][0]}\n\nNot measured yet: "
                f"`python3 dev.py bench {name}`.\n\n<!-- /bench:{name} -->\n",
            )
        )
    text = "\n".join(lines)
    path.write_text(text)
    print(text)


if __name__ == "__main__":
    asyncio.run(main())

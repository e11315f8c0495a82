"""Sync benchmarks: an offline backlog drained to the hub, and many stores publishing at once.

Both run on the real thing: Mosquitto with per-store passwords and ACLs (the conftest
`Mosquitto`), the hub on PostgreSQL, and for the backlog a real `storelink-edge` process
whose outbox was filled by the till. Counts are checked exactly at the end; a benchmark
that loses or doubles data raises instead of printing a rate.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import logging
import os
import signal
import sqlite3
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import aiomqtt
import asyncpg
from sqlalchemy import func, select

from edge.access import Role, StaffMember
from edge.api_till import LineIn, _build_line
from edge.daemon import EdgeDaemon
from hub.config import HubSettings
from hub.models import HubOrder, Reconciliation, StoreEvent, SyncState
from hub.service import Hub
from hub.stores import add_store
from protocol import Ack, Event, EventBatch, decode, encode, new_id, topics
from tests.conftest import PG_URL, ROOT, Mosquitto, free_port
from tests.edge.conftest import edge_settings, seed

__all__ = ["Drain", "Fanin", "backlog_drain", "many_stores"]

_STAFF = StaffMember(id="bench", name="bench", role=Role.MANAGER, pin_hash="-")
_BARCODES = ("6954767410388", "6921168509256")  # cola, water: the sample catalog
_STORE = "shop-1"
_RAW_AHEAD = 500
_PROFILE = os.environ.get("STORELINK_BENCH_PROFILE")  # a path: cProfile the in-process hub there


class BenchSkipped(Exception):
    """A service the benchmark needs (Mosquitto, PostgreSQL) is not available."""


@dataclass(frozen=True)
class Drain:
    """An offline backlog drained to the hub, next to raw MQTT moving as many messages."""

    orders: int
    event_bytes: int
    seconds: float  # first status from the reconnected edge → last order committed at the hub
    batches: int
    batch_ms: list[float]  # hub: one batch received → committed (median/p99 in the table)
    baseline_s: float  # raw: first QoS 1 publish → last message received by another client
    hub_cpu_s: float  # CPU of this process (the hub) during the drain
    edge_cpu_s: float  # CPU of the edge process during the drain

    @property
    def rate(self) -> float:
        """Orders committed at the hub per second."""
        return self.orders / self.seconds

    @property
    def baseline_rate(self) -> float:
        """Raw MQTT messages delivered per second."""
        return self.orders / self.baseline_s


@dataclass(frozen=True)
class Fanin:
    """Many stores publishing event batches at once into one hub."""

    stores: int
    events: int
    per_batch: int
    seconds: float  # first publish → every store holds the ack for its last event
    ack_s: list[float]  # per store: first publish → its final ack
    baseline_s: float  # raw asyncpg: the same batches inserted, one transaction each
    cpu_s: float  # CPU of this process (hub and the store clients) during the run

    @property
    def rate(self) -> float:
        """Events committed and acknowledged per second."""
        return self.events / self.seconds


# --------------------------------------------------------------------------- services


@asynccontextmanager
async def _pg_database() -> AsyncIterator[str]:
    """A fresh PostgreSQL database for one benchmark, dropped afterwards."""
    dsn = PG_URL.replace("postgresql+asyncpg://", "postgresql://")
    try:
        admin = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as err:
        raise BenchSkipped(f"PostgreSQL at {PG_URL} is unreachable ({err})") from err
    name = f"storelink_bench_{uuid.uuid4().hex[:12]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        base = dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
        yield f"{base}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@asynccontextmanager
async def _mosquitto(workdir: Path) -> AsyncIterator[Mosquitto]:
    """Mosquitto with passwords and the per-store ACL, as in the integration tests."""
    await asyncio.to_thread(workdir.mkdir, parents=True)
    broker = Mosquitto(workdir, secure=True)
    try:
        await asyncio.to_thread(broker.write_config)
        await asyncio.to_thread(broker.start)
    except FileNotFoundError as err:
        raise BenchSkipped(f"mosquitto is not installed ({err})") from err
    try:
        yield broker
    finally:
        await asyncio.to_thread(broker.stop)


def _hub_settings(state: Path, database_url: str, broker: Mosquitto) -> HubSettings:
    return HubSettings(
        state_dir=state,
        database_url=database_url,
        http_host="127.0.0.1",
        http_port=0,
        log_level="WARNING",
        mqtt={
            "host": "127.0.0.1",
            "port": broker.port,
            "username": broker.hub_user,
            "password": broker.hub_password,
        },
    )


async def _register(hub: Hub, broker: Mosquitto, stores: list[str]) -> dict[str, str]:
    """Add stores to the hub and their passwords to Mosquitto, with one reload at the end."""
    passwords = {}
    for store in stores:
        creds = await add_store(hub.db, store)
        await asyncio.to_thread(broker.add_user, store, creds.password, reload=False)
        passwords[store] = creds.password
    if broker.proc is not None:
        broker.proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(0.3)
    return passwords


@asynccontextmanager
async def _running_hub(settings: HubSettings) -> AsyncIterator[Hub]:
    async with Hub(settings) as hub:
        async with asyncio.timeout(10):
            await hub.link.connected.wait()
        yield hub


@asynccontextmanager
async def _profiled(name: str) -> AsyncIterator[None]:
    """cProfile the event loop thread (the hub's ingest) when STORELINK_BENCH_PROFILE is set."""
    if not _PROFILE:
        yield
        return
    profile = cProfile.Profile()
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        profile.dump_stats(f"{_PROFILE}.{name}.prof")


async def _hub_totals(hub: Hub, stores: list[str]) -> tuple[int, int, int, int, dict[str, int]]:
    """(events, orders, gross fen, reconciliation rows, acked_through per store) at the hub."""
    async with hub.db.session() as session:
        events = await session.scalar(
            select(func.count()).select_from(StoreEvent).where(StoreEvent.store.in_(stores))
        )
        orders = await session.scalar(
            select(func.count()).select_from(HubOrder).where(HubOrder.store.in_(stores))
        )
        gross = await session.scalar(
            select(func.coalesce(func.sum(HubOrder.total_fen), 0)).where(HubOrder.store.in_(stores))
        )
        conflicts = await session.scalar(select(func.count()).select_from(Reconciliation))
        acked = dict((await session.execute(select(SyncState.store, SyncState.acked_through))).all())
    return int(events or 0), int(orders or 0), int(gross or 0), int(conflicts or 0), acked


def _check(what: str, got: object, expected: object) -> None:
    if got != expected:
        raise AssertionError(f"{what}: the hub holds {got!r}, expected {expected!r}: data lost or doubled")


# --------------------------------------------------------------------------- backlog drain


async def _sell_offline(state: Path, orders: int) -> int:
    """Sell `orders` one-line cash orders through the till with no broker; return their total."""
    seed(state)
    total = 0
    async with EdgeDaemon(edge_settings(state)) as daemon:  # its broker port has no broker
        till, catalog = daemon.till, daemon.snapshots.catalog
        assert catalog is not None
        await till.open_shift(_STAFF, 0, None)
        for i in range(orders):
            order = (await till.open_order(_STAFF, idem=None)).body["order"]
            await till.add_line(order["id"], _build_line(catalog, LineIn(barcode=_BARCODES[i % 2])), None)
            paid = await till.pay(
                order["id"], _STAFF, method="cash", amount_fen=500, reference=None, idem=None
            )
            total += paid.body["order"]["total_fen"]
        pending = (await daemon.journal.state()).outbox_pending
    _check("outbox after selling offline", pending, orders + 1)  # + the shift's opening
    return total


def _one_event(journal: Path) -> bytes:
    """One serialized `order.paid` event from the outbox, as it travels inside a batch."""
    conn = sqlite3.connect(journal)
    try:
        seq, event_id, kind, ts, body = conn.execute(
            "SELECT seq, event_id, type, ts, body FROM outbox WHERE type = 'order.paid' LIMIT 1"
        ).fetchone()
    finally:
        conn.close()
    event = Event(id=event_id, seq=seq, type=kind, ts=datetime.fromisoformat(ts), body=json.loads(body))
    return encode(event)


async def _raw_mqtt(broker: Mosquitto, auth: tuple[str, str], n: int, payload: bytes) -> float:
    """Publish n QoS 1 messages until another client has them all.

    20 publishes in flight (paho's window) and at most `_RAW_AHEAD` not yet received:
    beyond 1,000 queued QoS 1 messages Mosquitto drops them for a slow subscriber.
    """
    user, password = auth
    topic = f"storelink/v1/{user}/up/raw"
    quiet = logging.getLogger("tests.bench.raw-mqtt")  # not one warning per queued publish
    quiet.setLevel(logging.ERROR)
    async with (
        aiomqtt.Client("127.0.0.1", broker.port, username=user, password=password, logger=quiet) as sub,
        aiomqtt.Client("127.0.0.1", broker.port, username=user, password=password, logger=quiet) as pub,
    ):
        await sub.subscribe(topic, qos=1)
        counter = iter(range(n))
        received = 0
        progress = asyncio.Condition()

        def _room(index: int) -> bool:
            return index - received < _RAW_AHEAD

        async def publisher() -> None:
            for i in counter:
                async with progress:
                    await progress.wait_for(partial(_room, i))
                await pub.publish(topic, payload, qos=1)

        async def receive() -> None:
            nonlocal received
            async for _ in sub.messages:
                async with progress:
                    received += 1
                    progress.notify_all()
                if received == n:
                    return

        start = time.perf_counter()
        try:
            async with asyncio.timeout(120), asyncio.TaskGroup() as group:
                group.create_task(receive(), name="bench-raw-receive")
                for i in range(20):
                    group.create_task(publisher(), name=f"bench-raw-publish-{i}")
        except TimeoutError:
            raise AssertionError(f"raw MQTT: {received} of {n} messages arrived within 120 s") from None
        return time.perf_counter() - start


async def _first_status(broker: Mosquitto, ready: asyncio.Event, seen: list[float]) -> None:
    """Note when the edge's first live status arrives: its uplink starts right after it."""
    async with aiomqtt.Client(
        "127.0.0.1", broker.port, username=broker.hub_user, password=broker.hub_password
    ) as client:
        await client.subscribe(topics.status(_STORE), qos=1)
        ready.set()
        async for message in client.messages:
            if (
                not message.retain
                and isinstance(message.payload, bytes)
                and b'"online":true' in message.payload
            ):
                seen.append(time.perf_counter())
                return


async def backlog_drain(tmp: Path, orders: int) -> Drain:
    """`orders` sold while the store is offline, then its edge comes up: time until the hub has all."""
    state = tmp / "drain-edge"
    total = await _sell_offline(state, orders)
    sample = _one_event(state / "journal.sqlite3")
    async with _pg_database() as url, _mosquitto(tmp / "drain-mosq") as broker:
        async with _running_hub(_hub_settings(tmp / "drain-hub", url, broker)) as hub:
            password = (await _register(hub, broker, [_STORE]))[_STORE]
            config = tmp / "drain-edge.toml"
            config.write_text(
                f'store = "{_STORE}"\nstate_dir = "{state}"\nhttp_host = "127.0.0.1"\n'
                f'http_port = {free_port()}\nlog_level = "WARNING"\n'
                f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\npassword = "{password}"\n'
            )
            ready, seen = asyncio.Event(), list[float]()
            watch = asyncio.create_task(_first_status(broker, ready, seen), name="bench-first-status")
            await ready.wait()
            spans = _time_batches(hub)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "edge", "--config", str(config), "run", cwd=ROOT
            )
            try:
                async with _profiled("drain"), asyncio.timeout(600):
                    while not seen:
                        await asyncio.sleep(0.001)
                    cpu = time.process_time(), _cpu_s(proc.pid)
                    while hub.link.stats["events"] < orders + 1:
                        if proc.returncode is not None:
                            raise RuntimeError(f"the edge exited with {proc.returncode}")
                        await asyncio.sleep(0.002)
                    end = time.perf_counter()
                    hub_cpu, edge_cpu = time.process_time() - cpu[0], _cpu_s(proc.pid) - cpu[1]
                await watch
                events, got_orders, gross, conflicts, acked = await _hub_totals(hub, [_STORE])
                async with asyncio.timeout(30):  # the edge deletes its outbox on the final ack
                    while _outbox_depth(state / "journal.sqlite3") > 0:
                        await asyncio.sleep(0.05)
            finally:
                proc.terminate()
                await proc.wait()
            batches = hub.link.stats["batches"]
        _check("orders", (got_orders, gross), (orders, total))
        _check("events", events, orders + 1)
        _check("reconciliation rows", conflicts, 0)
        _check("acked_through", list(acked.values()), [orders + 1])
        baseline = await _raw_mqtt(broker, (_STORE, password), orders, sample)
    return Drain(orders, len(sample), end - seen[0], batches, spans, baseline, hub_cpu, edge_cpu)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _outbox_depth(journal: Path) -> int:
    conn = sqlite3.connect(journal)
    try:
        return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])
    finally:
        conn.close()


def _time_batches(hub: Hub) -> list[float]:
    """Wrap the hub link's batch handler to record how long each batch takes to commit and ack."""
    spans: list[float] = []
    handlers = hub.link._handlers  # a benchmark probe, not an API
    from protocol.topics import TopicKind  # noqa: PLC0415

    inner = handlers[TopicKind.UP_EVENTS]

    async def timed(store: str, payload: bytes, retained: bool) -> None:
        start = time.perf_counter()
        await inner(store, payload, retained)
        spans.append(time.perf_counter() - start)

    handlers[TopicKind.UP_EVENTS] = timed
    return spans


# --------------------------------------------------------------------------- many stores


def _batches(store: str, template: dict[str, Any], batches: int, per_batch: int) -> tuple[list[bytes], int]:
    """A store's pre-encoded batches of `order.paid` events (fresh ids); and their total fen."""
    epoch = int(time.time())
    out, total, seq = [], 0, 0
    for _ in range(batches):
        events = []
        for _ in range(per_batch):
            seq += 1
            body = {**template, "id": str(new_id()), "store": store, "number": seq}
            total += body["total_fen"]
            events.append(Event(id=new_id(), seq=seq, type="order.paid", ts=datetime.now(UTC), body=body))
        batch = EventBatch(store=store, epoch=epoch, seq_from=seq - per_batch + 1, seq_to=seq, events=events)
        out.append(encode(batch))
    return out, total


async def _store_client(
    broker: Mosquitto, store: str, password: str, payloads: list[bytes], *, last: int, start: asyncio.Event
) -> float:
    """Publish a store's batches as an edge does (all within its window); wait for the final ack."""
    async with aiomqtt.Client("127.0.0.1", broker.port, username=store, password=password) as client:
        await client.subscribe(topics.down_ack(store), qos=1)
        await start.wait()
        began = time.perf_counter()
        for payload in payloads:
            await client.publish(topics.up_events(store), payload, qos=1)
        async for message in client.messages:
            if isinstance(message.payload, bytes) and decode(Ack, message.payload).acked_through >= last:
                return time.perf_counter() - began
    raise RuntimeError(f"{store}: the broker connection ended before the final ack")


async def many_stores(tmp: Path, stores: int, batches: int, per_batch: int) -> Fanin:
    """`stores` clients with their own credentials publish at once; time until every one is acked."""
    state = tmp / "fanin-edge"
    await _sell_offline(state, 1)
    template = json.loads(_one_event(state / "journal.sqlite3"))["body"]
    names = [f"bench-{i:03d}" for i in range(stores)]
    prepared = {name: _batches(name, template, batches, per_batch) for name in names}
    last = batches * per_batch
    async with (
        _pg_database() as url,
        _mosquitto(tmp / "fanin-mosq") as broker,
        _running_hub(_hub_settings(tmp / "fanin-hub", url, broker)) as hub,
    ):
        passwords = await _register(hub, broker, names)
        go = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            clients = [
                group.create_task(
                    _store_client(broker, name, passwords[name], prepared[name][0], last=last, start=go),
                    name=f"bench-store-{name}",
                )
                for name in names
            ]
            await asyncio.sleep(1.0)  # every client connected and subscribed
            start, cpu = time.perf_counter(), time.process_time()
            go.set()
            async with _profiled("fanin"), asyncio.timeout(600):
                await asyncio.gather(*clients)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        events, orders, gross, conflicts, acked = await _hub_totals(hub, names)
    _check("events", events, stores * last)
    _check("orders", (orders, gross), (stores * last, sum(total for _, total in prepared.values())))
    _check("reconciliation rows", conflicts, 0)
    _check("acked_through", sorted(acked.items()), [(name, last) for name in names])
    async with _pg_database() as url:
        baseline = await _raw_pg(url, [p for payloads, _ in prepared.values() for p in payloads])
    return Fanin(stores, stores * last, per_batch, seconds, [c.result() for c in clients], baseline, cpu)


async def _raw_pg(url: str, payloads: list[bytes]) -> float:
    """The floor under ingest: each batch's events as JSON rows, one asyncpg transaction per batch."""
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(
            "CREATE TABLE raw_events (id BIGSERIAL PRIMARY KEY, store TEXT, epoch BIGINT, seq BIGINT,"
            " body JSON, UNIQUE (store, epoch, seq))"
        )
        start = time.perf_counter()
        for payload in payloads:
            batch = json.loads(payload)
            rows = [(batch["store"], batch["epoch"], e["seq"], json.dumps(e)) for e in batch["events"]]
            async with conn.transaction():
                await conn.executemany(
                    "INSERT INTO raw_events (store, epoch, seq, body) VALUES ($1, $2, $3, $4)", rows
                )
        seconds = time.perf_counter() - start
        _check(
            "raw rows",
            await conn.fetchval("SELECT count(*) FROM raw_events"),
            sum(len(json.loads(p)["events"]) for p in payloads),
        )
        return seconds
    finally:
        await conn.close()

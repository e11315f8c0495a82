"""Benchmark: till RPC round trip, edge → Mosquitto → hub on PostgreSQL → edge, 50 requests at once.

The issue's goal: `member.lookup` and `stored_value.debit` p99 under 30 ms at 50 concurrent
requests on this machine. The hub runs in this process (as in production it runs on its
own server); the edge side runs in a child process of its own (`--edge`), as it does on
the store's Pi: the real `edge.hublink.HubLink` with its journal and the real
`edge.rpc.RpcClient`, so the edge's encoding, its MQTT client and its reply matching are
all in the measurement but do not share an event loop with the hub.

Baseline, same run, same broker, same two processes: a raw aiomqtt request/reply round
trip at the same concurrency — the edge process publishes QoS 1 on `bench/echo-request` and an
aiomqtt echo responder in this process answers QoS 1 on `bench/echo-reply`. That is the floor:
two QoS 1 publishes through the broker and two Python MQTT clients, with no hub work.

Run alone: `.venv/bin/python -m tests.bench.member_rpc [rounds] [concurrency]`;
STORELINK_BENCH_PROFILE=<path> writes a cProfile of the hub process to <path>.member_rpc.prof.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt

from edge.config import EdgeSettings
from edge.hublink import HubLink
from edge.journal import Journal
from edge.rpc import OfflinePolicy, RpcClient
from hub.members import MemberFields, create_member
from hub.service import Hub
from hub.stored_value import Source, stored_value_balances, topup
from protocol.mqtt import tune_client
from tests.bench.sync import (
    BenchSkipped,
    _hub_settings,
    _mosquitto,
    _pg_database,
    _profiled,
    _register,
    _running_hub,
)
from tests.conftest import ROOT

__all__ = ["Result", "Row", "main", "measure"]

Row = tuple[str, str, list[float], list[float]]
_STORE = "shop-1"
_TOPUP_FEN = 1_000_000  # per member: far more than the rounds debit
_DEBIT_FEN = 100
_WARMUP_ROUNDS = 3
# Inside the store's ACL but outside what the hub consumes (up/#), so the hub never sees them.
_ECHO_UP = f"storelink/v1/{_STORE}/bench/echo-request"
_ECHO_DOWN = f"storelink/v1/{_STORE}/bench/echo-reply"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _EdgeJob:
    """What the edge process is told to do (JSON on its command line)."""

    port: int
    password: str
    state_dir: str
    phones: list[str]
    member_ids: list[str]
    rounds: int
    concurrency: int


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, int(len(ordered) * 0.99) - 1)]


# --------------------------------------------------------------------------- edge process


async def _timed(call: Any) -> float:
    start = time.perf_counter()
    await call
    return time.perf_counter() - start


async def _rpc_rounds(rpc: RpcClient, job: _EdgeJob, rounds: int, record: bool) -> dict[str, list[float]]:
    """Alternate a batch of lookups and a batch of debits; each batch is `concurrency` at once."""
    out: dict[str, list[float]] = {"lookup": [], "debit": []}
    n = job.concurrency
    for r in range(rounds):
        lookups = [
            _timed(rpc.call("member.lookup", {"phone": job.phones[i % len(job.phones)]})) for i in range(n)
        ]
        spans = await asyncio.gather(*lookups)
        if record:
            out["lookup"] += spans
        debits = [
            _timed(
                rpc.call(
                    "stored_value.debit",
                    {
                        "member_id": job.member_ids[i % len(job.member_ids)],
                        "order_id": f"bench-{r}-{i}-{record}",
                        "amount_fen": _DEBIT_FEN,
                    },
                    idempotency_key=f"bench-{uuid.uuid4().hex}:0",
                )
            )
            for i in range(n)
        ]
        spans = await asyncio.gather(*debits)
        if record:
            out["debit"] += spans
    return out


async def _echo_rounds(job: _EdgeJob, rounds: int) -> list[float]:
    """Raw request/reply through the same broker: publish a request, wait for its echo."""
    waiting: dict[str, asyncio.Future[None]] = {}
    out: list[float] = []
    client = aiomqtt.Client(
        "127.0.0.1", job.port, username=_STORE, password=job.password, max_queued_incoming_messages=1000
    )
    async with tune_client(client):  # as the edge's own client
        await client.subscribe(_ECHO_DOWN, qos=1)

        async def replies() -> None:
            async for message in client.messages:
                payload = message.payload if isinstance(message.payload, bytes) else b""
                future = waiting.get(payload.decode())
                if future is not None and not future.done():
                    future.set_result(None)

        async def one() -> float:
            key = uuid.uuid4().hex
            future = asyncio.get_running_loop().create_future()
            waiting[key] = future
            start = time.perf_counter()
            await client.publish(_ECHO_UP, key.encode(), qos=1)
            async with asyncio.timeout(10):
                await future
            del waiting[key]
            return time.perf_counter() - start

        reader = asyncio.create_task(replies(), name="bench-echo-replies")
        try:
            for r in range(_WARMUP_ROUNDS + rounds):
                spans = await asyncio.gather(*(one() for _ in range(job.concurrency)))
                if r >= _WARMUP_ROUNDS:
                    out += spans
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
    return out


async def _edge_main(job: _EdgeJob) -> dict[str, list[float]]:
    """The store's side: real hub link and RPC client, then the raw echo baseline."""
    settings = EdgeSettings(
        store=_STORE,
        state_dir=Path(job.state_dir),
        http_host="127.0.0.1",
        http_port=0,
        log_level="WARNING",
        mqtt={"host": "127.0.0.1", "port": job.port, "password": job.password},
        discovery={"enabled": False},
    )
    policy = OfflinePolicy(timeout_s=10)
    link: HubLink | None = None

    async def publish(request: Any) -> bool:
        assert link is not None
        return await link.publish_rpc(request)

    rpc = RpcClient(publish, lambda: policy)
    journal = Journal(settings.state_dir / "journal.sqlite3")
    link = HubLink(settings, journal, software="bench-edge", on_rpc_reply=rpc.on_reply)
    async with journal, link:
        async with asyncio.timeout(10):
            await link.connected.wait()
        await _rpc_rounds(rpc, job, _WARMUP_ROUNDS, record=False)
        samples = await _rpc_rounds(rpc, job, job.rounds, record=True)
    samples["echo"] = await _echo_rounds(job, job.rounds)
    return samples


# --------------------------------------------------------------------------- hub process


async def _echo_responder(port: int, user: str, password: str, ready: asyncio.Event) -> None:
    """Answer every echo request with the same payload (QoS 1 both ways, like RPC)."""
    client = tune_client(  # as the hub's own client
        aiomqtt.Client("127.0.0.1", port, username=user, password=password, max_queued_incoming_messages=1000)
    )
    async with client:
        await client.subscribe(_ECHO_UP, qos=1)
        ready.set()
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            await client.publish(_ECHO_DOWN, payload, qos=1)


async def _seed_members(hub: Hub, count: int) -> tuple[list[str], list[str]]:
    """`count` members, each topped up with `_TOPUP_FEN`; their phones and ids."""
    phones, ids = [], []
    async with hub.db.session() as session, session.begin():
        for i in range(count):
            phone = f"139{i:08d}"
            member = await create_member(session, MemberFields(phone, channel="till", name=f"会员{i}"))
            await topup(
                session,
                member.id,
                _TOPUP_FEN,
                payment_method="cash",
                payment_reference=None,
                source=Source(actor="bench", store=_STORE),
            )
            phones.append(phone)
            ids.append(member.id)
    return phones, ids


async def _check_debits(hub: Hub, member_ids: list[str], expected_fen: int) -> None:
    """Every debit the edge recorded as answered was applied exactly once."""
    total = 0
    async with hub.db.session() as session:
        for member_id in member_ids:
            principal, bonus = await stored_value_balances(session, member_id)
            total += _TOPUP_FEN - principal - bonus
    if total != expected_fen:
        raise AssertionError(f"the hub debited {total} fen in all, expected {expected_fen}: lost or doubled")


async def _run_edge(job: _EdgeJob) -> dict[str, list[float]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.bench.member_rpc",
        "--edge",
        json.dumps(job.__dict__),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the benchmark's edge process exited with {proc.returncode}")
    samples: dict[str, list[float]] = json.loads(stdout)
    return samples


@dataclass(frozen=True)
class Result:
    rows: list[Row]
    hub_cpu_s: float  # this process (hub + echo responder) while the edge process ran
    edge_cpu_s: float  # the edge process, all of it
    requests: int  # RPC requests answered (warm-up included)

    def cpu_note(self) -> str:
        """Where the time goes: CPU per request on each side."""
        n = self.requests
        return (
            f"CPU per RPC request (echo baseline included): hub process {self.hub_cpu_s / n * 1000:.2f} ms, "
            f"edge process {self.edge_cpu_s / n * 1000:.2f} ms"
        )


async def measure(tmp: Path, rounds: int = 20, concurrency: int = 50) -> Result:
    """Lookup and debit round trips at `concurrency` at once, each next to the raw MQTT echo."""
    async with (
        _pg_database() as url,
        _mosquitto(tmp / "rpc-mosq") as broker,
        _running_hub(_hub_settings(tmp / "rpc-hub", url, broker)) as hub,
    ):
        password = (await _register(hub, broker, [_STORE]))[_STORE]
        phones, member_ids = await _seed_members(hub, concurrency)
        ready = asyncio.Event()
        echo = asyncio.create_task(
            _echo_responder(broker.port, broker.hub_user, broker.hub_password, ready),
            name="bench-echo-responder",
        )
        try:
            await ready.wait()
            job = _EdgeJob(
                broker.port,
                password,
                str(tmp / "rpc-edge"),
                phones,
                member_ids,
                rounds,
                concurrency,
            )
            cpu = time.process_time(), resource.getrusage(resource.RUSAGE_CHILDREN)
            async with _profiled("member_rpc"):
                samples = await _run_edge(job)
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            hub_cpu = time.process_time() - cpu[0]
            edge_cpu = children.ru_utime + children.ru_stime - cpu[1].ru_utime - cpu[1].ru_stime
        finally:
            echo.cancel()
            await asyncio.gather(echo, return_exceptions=True)
        debits = (_WARMUP_ROUNDS + rounds) * concurrency
        await _check_debits(hub, member_ids, debits * _DEBIT_FEN)
    what = f"at {concurrency} concurrent (edge process → Mosquitto with ACL → hub on PostgreSQL → edge)"
    baseline = (
        f"raw aiomqtt QoS 1 request → echo responder → QoS 1 reply, {concurrency} concurrent, same broker"
    )
    table = [
        (f"RPC `member.lookup` by phone {what}", baseline, samples["lookup"], samples["echo"]),
        (
            f"RPC `stored_value.debit`, own idempotency key each, {what}",
            baseline,
            samples["debit"],
            samples["echo"],
        ),
    ]
    return Result(table, hub_cpu, edge_cpu, 2 * debits)


def _ms(samples: list[float]) -> str:
    return f"p50 {statistics.median(samples) * 1000:7.2f} ms   p99 {_p99(samples) * 1000:7.2f} ms"


async def main(rounds: int = 20, concurrency: int = 50) -> None:
    """Print p50/p99 of each row and its baseline."""
    with tempfile.TemporaryDirectory() as tmpdir:
        try:
            measured = await measure(Path(tmpdir), rounds, concurrency)
        except BenchSkipped as err:
            print(f"skipped: {err}", file=sys.stderr)
            raise SystemExit(2) from None
    for what, baseline, ours, base in measured.rows:
        print(f"{what}\n    ours     {_ms(ours)}   (n={len(ours)})\n    baseline {_ms(base)}   ({baseline})")
    print(measured.cpu_note())
    goal = max(_p99(ours) for _, _, ours, _ in measured.rows) * 1000
    print(f"goal p99 < 30 ms: worst p99 {goal:.1f} ms, {'met' if goal < 30 else 'NOT met'}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    if len(sys.argv) > 2 and sys.argv[1] == "--edge":
        result = asyncio.run(_edge_main(_EdgeJob(**json.loads(sys.argv[2]))))
        print(json.dumps(result))
    else:
        args = [int(a) for a in sys.argv[1:3]]
        asyncio.run(main(*args))

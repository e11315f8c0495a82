"""`kill -9` of the edge and of the hub at random points while 5,000 orders sync: exact at the hub.

The orders are sold first (the hub is unreachable), then edge and hub run as real
processes that are killed again and again in random order during the drain. At the end
the hub must hold every order exactly once with the exact total.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
import sys

import pytest
from sqlalchemy import func, select

from hub.db import Database, migrate
from hub.models import HubOrder, StoreEvent
from hub.stores import add_store
from tests.conftest import ROOT, free_port
from tests.integration.test_sync import _edge, _sell

pytestmark = pytest.mark.slow
ORDERS = int(os.environ.get("STORELINK_SYNC_ORDERS", "5000"))
ROUNDS = int(os.environ.get("STORELINK_SYNC_KILL_ROUNDS", "8"))


async def _spawn(module: str, config) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        "--config",
        str(config),
        "run",
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def _kill(proc: asyncio.subprocess.Process | None) -> None:
    if proc is not None and proc.returncode is None:
        proc.kill()
        await proc.wait()


def _pending(journal) -> int:
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
    finally:
        conn.close()


async def test_kill_9_of_edge_and_hub_during_sync_is_exact(tmp_path, pg_database_url, mosquitto_factory):
    mosq = mosquitto_factory(secure=True)
    db = Database.from_url(pg_database_url)
    await migrate(db.engine)
    creds = await add_store(db, "shop-1")
    await asyncio.to_thread(mosq.add_user, "shop-1", creds.password)
    async with _edge(tmp_path, free_port(), creds.password) as daemon:  # no broker there: sells offline
        total = await _sell(daemon, ORDERS)
        state_dir = daemon.settings.state_dir
    edge_toml = tmp_path / "edge.toml"
    edge_toml.write_text(
        f'store = "shop-1"\nstate_dir = "{state_dir}"\nhttp_host = "127.0.0.1"\nhttp_port = {free_port()}\n'
        f'log_level = "ERROR"\n[mqtt]\nhost = "127.0.0.1"\nport = {mosq.port}\npassword = "{creds.password}"\n'
        "backoff_cap = 1\n"
    )
    hub_toml = tmp_path / "hub.toml"
    hub_toml.write_text(
        f'state_dir = "{tmp_path / "hub"}"\ndatabase_url = "{pg_database_url}"\nhttp_host = "127.0.0.1"\n'
        f'http_port = {free_port()}\nlog_level = "ERROR"\n[mqtt]\nhost = "127.0.0.1"\nport = {mosq.port}\n'
        f'username = "{mosq.hub_user}"\npassword = "{mosq.hub_password}"\n'
    )
    seed = int(os.environ.get("STORELINK_KILL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    edge = hub = None
    journal = state_dir / "journal.sqlite3"
    pending_at_kill: list[int] = []
    try:
        for _ in range(ROUNDS):
            edge = edge if edge is not None and edge.returncode is None else await _spawn("edge", edge_toml)
            hub = hub if hub is not None and hub.returncode is None else await _spawn("hub", hub_toml)
            # Kill soon after the sync (re)starts: the hub drains thousands of orders a second,
            # so a fixed 1-3 s wait could land after the outbox is already empty.
            before = await asyncio.to_thread(_pending, journal)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(rng.uniform(1.0, 3.0)):
                    while before and await asyncio.to_thread(_pending, journal) == before:
                        await asyncio.sleep(0.05)
            await asyncio.sleep(rng.uniform(0.0, 0.3))
            pending_at_kill.append(await asyncio.to_thread(_pending, journal))
            if rng.random() < 0.5:
                await _kill(edge)
            else:
                await _kill(hub)
        edge = edge if edge.returncode is None else await _spawn("edge", edge_toml)
        hub = hub if hub.returncode is None else await _spawn("hub", hub_toml)
        async with asyncio.timeout(180):
            while await asyncio.to_thread(_pending, journal):
                await asyncio.sleep(0.5)
    finally:
        await _kill(edge)
        await _kill(hub)
    async with db.session() as session:
        orders = await session.scalar(select(func.count()).select_from(HubOrder))
        gross = await session.scalar(select(func.coalesce(func.sum(HubOrder.total_fen), 0)))
        events = await session.scalar(select(func.count()).select_from(StoreEvent))
    await db.close()
    note = f"(seed {seed}, outbox depth at each kill: {pending_at_kill})"
    assert sum(1 for n in pending_at_kill if n > 0) >= 2, f"the kills missed the sync {note}"
    assert (orders, gross) == (ORDERS, total), note
    assert events == ORDERS + 1, note  # every order and the shift's opening, once each

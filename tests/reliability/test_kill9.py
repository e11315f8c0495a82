"""`kill -9` at random moments never loses or duplicates an order the till said was paid.

A real edge process is killed with SIGKILL many times while a client keeps selling and
paying. Afterwards every order the API answered "paid" must be paid in the journal with
exactly one `order.paid` event in the outbox, open orders must still be there, the
outbox seqs must have no gaps, and the journal must pass `PRAGMA integrity_check`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sqlite3
import sys

import aiohttp
import pytest

from edge.access import create_pairing_code
from edge.journal import Journal
from hub.broker import free_port
from tests.conftest import ROOT
from tests.edge.conftest import seed

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]  # 50 edge process starts
ROUNDS = int(os.environ.get("STORELINK_KILL_ROUNDS", "50"))
COLA = "6954767410388"


async def _ready(http: aiohttp.ClientSession, base: str) -> None:
    async with asyncio.timeout(15):
        while True:
            try:
                async with http.get(base + "/api/v1/status") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)


async def _post(http: aiohttp.ClientSession, url: str, token: str, body: dict | None = None) -> dict:
    async with http.post(url, json=body or {}, headers={"Authorization": f"Bearer {token}"}) as resp:
        data = await resp.json()
        assert resp.status in (200, 201), data
        return data


async def test_kill_9_never_loses_or_duplicates_a_paid_order(tmp_path):
    state = tmp_path / "state"
    seed(state)
    port = free_port()
    config = tmp_path / "edge.toml"
    config.write_text(
        f'store = "crash"\nstate_dir = "{state}"\nhttp_host = "127.0.0.1"\nhttp_port = {port}\n'
        f'log_level = "ERROR"\n[mqtt]\nhost = "127.0.0.1"\nport = {free_port()}\npassword = "x"\n'
    )
    async with Journal(state / "journal.sqlite3") as journal:
        code = await create_pairing_code(journal)
    seed_value = int(os.environ.get("STORELINK_KILL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed_value)
    base = f"http://127.0.0.1:{port}"
    told_paid: list[str] = []
    opened: set[str] = set()
    token = ""

    async def sell(http: aiohttp.ClientSession) -> None:
        while True:
            order = (await _post(http, base + "/api/v1/orders", token))["order"]
            opened.add(order["id"])
            for _ in range(rng.randint(1, 3)):
                await _post(http, f"{base}/api/v1/orders/{order['id']}/lines", token, {"barcode": COLA})
            paid = (
                await _post(
                    http,
                    f"{base}/api/v1/orders/{order['id']}/payments",
                    token,
                    {"method": "cash", "amount_fen": 1000},
                )
            )["order"]
            if paid["status"] == "paid":
                told_paid.append(paid["id"])

    async with aiohttp.ClientSession() as http:
        for round_no in range(ROUNDS):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "edge",
                "--config",
                str(config),
                "run",
                cwd=ROOT,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                await _ready(http, base)
                if round_no == 0:
                    device = (
                        await _post(http, base + "/api/v1/devices/pair", "", {"code": code, "name": "t"})
                    )["token"]
                    token = (
                        await _post(
                            http, base + "/api/v1/sessions", device, {"staff_id": "c1", "pin": "5678"}
                        )
                    )["token"]
                    await _post(http, base + "/api/v1/shifts", token, {"float_fen": 0})
                seller = asyncio.create_task(sell(http))
                await asyncio.sleep(rng.uniform(0.01, 0.4))
            finally:
                proc.kill()
                await proc.wait()
            seller.cancel()
            # The request in flight when the process died has no answer: that is fine.
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError, AssertionError, ValueError):
                await seller

    conn = sqlite3.connect(state / "journal.sqlite3")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        status = dict(conn.execute("SELECT id, status FROM orders").fetchall())
        events = [
            json.loads(body)["id"]
            for (body,) in conn.execute("SELECT body FROM outbox WHERE type = 'order.paid' ORDER BY seq")
        ]
        seqs = [s for (s,) in conn.execute("SELECT seq FROM outbox ORDER BY seq")]
    finally:
        conn.close()
    note = f"(seed {seed_value}, {len(told_paid)} paid orders over {ROUNDS} kills)"
    assert len(told_paid) >= ROUNDS // 2, f"too few sales to prove anything {note}"
    assert all(status.get(order_id) == "paid" for order_id in told_paid), note
    assert len(events) == len(set(events)), f"duplicate order.paid events {note}"
    assert set(told_paid) <= set(events), f"paid order missing from the outbox {note}"
    assert {order_id for order_id, s in status.items() if s == "paid"} == set(events), note
    assert opened <= set(status), f"an opened order was lost {note}"
    assert seqs == list(range(1, len(seqs) + 1)), f"outbox seqs have gaps {note}"

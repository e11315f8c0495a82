"""Till benchmarks: durable order close, scan→push latency, RSS after many orders."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from edge.access import Role, StaffMember, create_pairing_code
from edge.api_till import LineIn, _build_line
from edge.daemon import EdgeDaemon
from edge.journal import Journal
from edge.till import Till
from hub.broker import free_port
from tests.edge.conftest import edge_settings, seed

COLA = "6954767410388"
BASKET = 20  # lines per order in the scan→push run
_STAFF = StaffMember(id="bench", name="bench", role=Role.MANAGER, pin_hash="-")


async def _timed(n: int, make: Callable[[], Awaitable[object]]) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await make()
        out.append(time.perf_counter() - start)
    return out


async def durable_close(tmp: Path, n: int) -> tuple[list[float], list[float]]:
    """`Till.pay` closing an order (FULL fsync, outbox event) vs a raw INSERT+COMMIT, same disk."""
    state = tmp / "close"
    seed(state)
    async with EdgeDaemon(edge_settings(state)) as daemon:
        till: Till = daemon.till
        catalog = daemon.snapshots.catalog
        assert catalog is not None
        await till.open_shift(_STAFF, 0, None)
        ids = []
        for _ in range(n):
            order = (await till.open_order(_STAFF, idem=None)).body["order"]
            await till.add_line(order["id"], _build_line(catalog, LineIn(barcode=COLA)), None)
            ids.append(order["id"])
        it = iter(ids)
        ours = await _timed(
            n, lambda: till.pay(next(it), _STAFF, method="cash", amount_fen=300, reference=None, idem=None)
        )
    conn = sqlite3.connect(tmp / "raw.sqlite3", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
    body = "x" * 1500  # about the size of a closed order document

    async def raw() -> None:
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t (body) VALUES (?)", (body,))
        conn.execute("COMMIT")

    baseline = await _timed(n, raw)
    conn.close()
    return ours, baseline


async def scan_to_push(tmp: Path, n: int) -> tuple[list[float], list[float]]:
    """Line added over HTTP → `order.updated` at a second WebSocket client, vs raw WS echo."""
    state = tmp / "push"
    seed(state)
    async with EdgeDaemon(edge_settings(state)) as daemon, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{daemon.http_port}/api/v1"
        code = await create_pairing_code(daemon.journal)
        async with http.post(base + "/devices/pair", json={"code": code, "name": "b"}) as resp:
            device = (await resp.json())["token"]
        async with http.post(
            base + "/sessions",
            json={"staff_id": "mgr", "pin": "1234"},
            headers={"Authorization": f"Bearer {device}"},
        ) as resp:
            token = (await resp.json())["token"]
        auth = {"Authorization": f"Bearer {token}"}
        async with http.ws_connect(f"{base}/events?token={device}") as ws:
            await ws.receive_json()
            ours = []
            for i in range(n):
                if i % BASKET == 0:  # a new basket every BASKET scans, as at a real till
                    async with http.post(base + "/orders", headers=auth) as resp:
                        order_id = (await resp.json())["order"]["id"]
                    await ws.receive_json()
                start = time.perf_counter()
                async with http.post(
                    f"{base}/orders/{order_id}/lines", json={"sku": "FRS-EGG", "note": "x"}, headers=auth
                ) as resp:
                    assert resp.status == 201
                    await resp.read()
                await ws.receive_json()
                ours.append(time.perf_counter() - start)

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/echo", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(f"http://127.0.0.1:{port}/echo") as ws:
            baseline = []
            for i in range(n):
                start = time.perf_counter()
                await ws.send_str(str(i))
                await ws.receive_str()
                baseline.append(time.perf_counter() - start)
    finally:
        await runner.cleanup()
    return ours, baseline


async def rss_after_orders(tmp: Path, orders: int) -> tuple[float, float, float]:
    """(RSS MB at start, RSS MB after `orders` closed orders, orders/s) of a real edge process."""
    state = tmp / "rss"
    seed(state)
    port = free_port()
    config = tmp / "rss.toml"
    config.write_text(
        f'store = "bench"\nstate_dir = "{state}"\nhttp_host = "127.0.0.1"\nhttp_port = {port}\n'
        f'log_level = "ERROR"\n[mqtt]\nhost = "127.0.0.1"\nport = {free_port()}\npassword = "x"\n'
    )
    async with Journal(state / "journal.sqlite3") as journal:
        code = await create_pairing_code(journal)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge",
        "--config",
        str(config),
        "run",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    async with http.get(base + "/status") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
            async with http.post(base + "/devices/pair", json={"code": code, "name": "b"}) as resp:
                device = (await resp.json())["token"]
            async with http.post(
                base + "/sessions",
                json={"staff_id": "mgr", "pin": "1234"},
                headers={"Authorization": f"Bearer {device}"},
            ) as resp:
                auth = {"Authorization": f"Bearer {(await resp.json())['token']}"}
            async with http.post(base + "/shifts", json={"float_fen": 0}, headers=auth):
                pass
            start_rss = _rss_mb(proc.pid)

            async def sell(count: int) -> None:
                for _ in range(count):
                    async with http.post(base + "/orders", headers=auth) as resp:
                        order_id = (await resp.json())["order"]["id"]
                    async with http.post(
                        f"{base}/orders/{order_id}/lines", json={"barcode": COLA}, headers=auth
                    ):
                        pass
                    async with http.post(
                        f"{base}/orders/{order_id}/payments",
                        json={"method": "cash", "amount_fen": 300},
                        headers=auth,
                    ) as resp:
                        assert resp.status == 201

            started = time.perf_counter()
            await asyncio.gather(*(sell(orders // 4) for _ in range(4)))
            rate = orders / (time.perf_counter() - started)
            return start_rss, _rss_mb(proc.pid), rate
    finally:
        proc.terminate()
        await proc.wait()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc (Linux only)")

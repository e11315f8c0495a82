"""`kill -9` while an order is sent, changed, held, fired and voided: each station gets it exactly once.

A real edge process has three kitchen stations: 吧台 (a network printer), 面点 (a screen) and
茶水 (a printer and a screen). A scripted waiter sends orders, adds lines, changes
quantities, deletes lines, holds and fires courses and voids an order over HTTP; at random
steps the edge is SIGKILLed at one of three moments and restarted:

- `queued`: the printers are switched off, the step is answered, the edge dies before any
  printer saw the ticket (it must print after the restart, once);
- `printing`: the edge dies the moment a printer's first byte of the ticket arrives, i.e.
  between "printing" and "done" in the journal (it must not print again);
- `in-flight`: the edge dies a few milliseconds into the request, which may or may not have
  committed; the client retries with the same Idempotency-Key, as the phone app does.

At the end, per station, what the printer received (decoded from its bytes) and what the
screen shows add up to the final order: every line's net quantity, every cancellation. No
job reached a printer twice and no queued job was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import sqlite3
import sys
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from drivers import decode_escpos
from drivers.sim import SimNetworkPrinter
from edge.access import create_pairing_code
from edge.devices import DeviceEntry, DeviceRegistry, save_registry
from edge.journal import Journal
from hub.broker import free_port
from tests.conftest import ROOT
from tests.edge.conftest import SAMPLE, seed

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]
KILL_SHARE = float(os.environ.get("STORELINK_KDS_KILL_SHARE", "0.45"))
MAX_KILLS = int(os.environ.get("STORELINK_KDS_MAX_KILLS", "14"))
STATION_OF = {"咖啡": "吧台", "烘焙": "面点", "茶饮": "茶水"}
PRINTED = ("吧台", "茶水")
SCREENS = ("茶水", "面点")
Json = dict[str, Any]


def _config(tmp: Path, state: Path, port: int) -> Path:
    config = tmp / "edge.toml"
    config.write_text(
        f'store = "kitchen"\nstate_dir = "{state}"\nhttp_host = "127.0.0.1"\nhttp_port = {port}\n'
        f'log_level = "ERROR"\n[mqtt]\nhost = "127.0.0.1"\nport = {free_port()}\npassword = "x"\n'
        "[discovery]\nenabled = false\n"
        '[kds]\nscreens = [{station = "茶水"}, {station = "面点", categories = ["烘焙"]}]\n'
    )
    return config


class Edge:
    """The edge subprocess and a client that survives its deaths."""

    def __init__(
        self,
        state: Path,
        config: Path,
        base: str,
        http: aiohttp.ClientSession,
        printers: list[SimNetworkPrinter],
    ):
        self.config, self.base, self.http, self.printers = config, base, http, printers
        self.state = state
        self.proc: asyncio.subprocess.Process | None = None
        self.kills: Counter[str] = Counter()

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "edge",
            "--config",
            str(self.config),
            "run",
            cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        async with asyncio.timeout(20):
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with self.http.get(self.base + "/api/v1/status") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.05)

    async def kill(self, why: str) -> None:
        assert self.proc is not None
        self.proc.kill()
        await self.proc.wait()
        self.kills[why] += 1

    async def call(self, method: str, path: str, token: str, body: Json | None = None, key: str = "") -> Json:
        headers = {"Authorization": f"Bearer {token}"} | ({"Idempotency-Key": key} if key else {})
        async with self.http.request(method, self.base + path, json=body, headers=headers) as resp:
            data: Json = await resp.json()
            assert resp.status in (200, 201), (method, path, body, data)
            return data


class Waiter:
    """Runs each step once in effect, killing the edge at chosen moments on the way."""

    def __init__(self, edge: Edge, rng: random.Random):
        self.edge, self.rng = edge, rng
        self.token = self.manager = ""

    def _mode(self) -> str:
        if sum(self.edge.kills.values()) >= MAX_KILLS or self.rng.random() > KILL_SHARE:
            return "none"
        return self.rng.choice(["queued", "printing", "in-flight"])

    async def _restart(self, why: str) -> None:
        await self.edge.kill(why)
        await self.edge.start()

    async def do(self, method: str, path: str, body: Json | None = None, *, manager: bool = False) -> Json:
        edge, key = self.edge, str(uuid.uuid4())
        token = self.manager if manager else self.token
        call: Callable[[], Awaitable[Json]] = lambda: edge.call(method, path, token, body, key)  # noqa: E731
        mode = self._mode()
        if mode == "queued":
            # Only once nothing is printing: a printer switched off under a job it is being sent
            # may swallow the job while the edge's write succeeds (a raw TCP printer confirms nothing).
            await _settled(edge.state)
            for printer in edge.printers:
                await printer.set_offline(True)
            reply = await call()
            await edge.kill(mode)
            for printer in edge.printers:
                await printer.set_offline(False)
            await edge.start()
            return reply
        if mode == "printing":
            before = [len(p.received) for p in edge.printers]
            reply = await call()
            with contextlib.suppress(TimeoutError):  # a step that tickets no printer: a plain kill
                async with asyncio.timeout(3):
                    while all(len(p.received) == n for p, n in zip(edge.printers, before, strict=True)):
                        await asyncio.sleep(0.001)
            await self._restart(mode)
            return reply
        if mode == "in-flight":
            task: asyncio.Task[Json] = asyncio.create_task(call())
            await asyncio.sleep(self.rng.uniform(0.0, 0.03))
            await self._restart(mode)
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                return await task
        return await call()  # the same key: answered from the journal if it had committed


async def _script(waiter: Waiter) -> list[str]:
    """The orders of a busy table service; returns their ids."""
    do = waiter.do

    async def order() -> str:
        return str((await do("POST", "/api/v1/orders"))["order"]["id"])

    async def add(order_id: str, sku: str, qty: str = "1") -> str:
        lines = (await do("POST", f"/api/v1/orders/{order_id}/lines", {"sku": sku, "qty": qty}))["order"][
            "lines"
        ]
        return str(lines[-1]["line_id"])

    async def qty(order_id: str, line_id: str, value: str) -> None:
        await do("PATCH", f"/api/v1/orders/{order_id}/lines/{line_id}", {"qty": value})

    async def drop(order_id: str, line_id: str) -> None:
        await do("DELETE", f"/api/v1/orders/{order_id}/lines/{line_id}")

    async def send(order_id: str, plan: list[Json] | None = None) -> None:
        await do("POST", f"/api/v1/orders/{order_id}/kitchen", {"lines": plan or []})

    async def fire(order_id: str, course: int) -> None:
        await do("POST", f"/api/v1/orders/{order_id}/kitchen/fire", {"course": course})

    a, b, c = await order(), await order(), await order()
    latte, tea = await add(a, "COF-LAT", "2"), await add(a, "TEA-PEARL")
    croissant = await add(a, "BAK-001", "3")
    await send(a)
    mango = await add(a, "TEA-MANGO", "2")
    await qty(a, latte, "3")
    await drop(a, croissant)
    await send(a)
    americano, toast = await add(b, "COF-AME"), await add(b, "BAK-003", "2")
    lemon = await add(b, "TEA-LEMON")
    await send(
        b, [{"line_id": toast, "course": 2, "hold": True}, {"line_id": lemon, "course": 2, "hold": True}]
    )
    await qty(b, toast, "3")
    await send(b)  # still held: the station learns the new quantity, not to cook it
    await fire(b, 2)
    await qty(a, tea, "2")
    await drop(a, mango)
    await send(a)
    capp, tiramisu = await add(c, "COF-CAP", "2"), await add(c, "BAK-004")
    await send(c, [{"line_id": tiramisu, "course": 2, "hold": True}])
    await qty(b, americano, "2")
    await send(b)
    await do("POST", f"/api/v1/orders/{b}/void", {"reason": "客人离开"}, manager=True)
    await qty(c, capp, "1")
    await add(c, "TEA-PEARL-L", "2")
    await send(c)
    await fire(c, 2)
    await qty(a, latte, "1")
    await send(a)
    return [a, b, c]


# ---------------------------------------------------------------------- what the stations got

_DELTA = re.compile(r"^(加|减) (\S+) (.+)$")
_WAS_HELD = re.compile(r"^  \(叫起时 x(\S+)\)$")
_NEW = re.compile(r"^(.+) x(\S+)$")


def _printed_delta(job: list[str]) -> dict[str, Fraction]:
    """Name -> how much more (or less) this ticket tells the station to make."""
    rules = [i for i, line in enumerate(job) if line and set(line) == {"="}]
    assert job[-1] == "[CUT]", f"a torn ticket: {job}"
    assert len(rules) == 2, f"not a kitchen ticket: {job}"
    delta: defaultdict[str, Fraction] = defaultdict(Fraction)
    fired: tuple[str, Fraction] | None = None
    for line in job[rules[0] + 1 : rules[1]]:
        if line.startswith("  "):
            if fired is not None and (was := _WAS_HELD.match(line)):
                delta[fired[0]] += fired[1] - Fraction(was[1])  # fired at another quantity than held
            continue
        fired = None
        if match := _DELTA.match(line):
            delta[match[3]] += Fraction(match[2]) * (1 if match[1] == "加" else -1)
        elif line.startswith("起菜 ") and (match := _NEW.match(line[3:])):
            fired = (match[1], Fraction(match[2]))
        elif line.startswith("取消 ") and (match := _NEW.match(line[3:])):
            delta[match[1]] -= Fraction(match[2])
        elif line.startswith("改 "):
            continue
        else:
            match = _NEW.match(line)
            assert match, f"unreadable ticket line {line!r} in {job}"
            delta[match[1]] += Fraction(match[2])
    return delta


def _nonzero(amounts: dict[str, Fraction]) -> dict[str, Fraction]:
    return {name: qty for name, qty in amounts.items() if qty}


def _journal(state: Path) -> tuple[list[Json], dict[str, list[tuple[bytes, str]]], dict[str, list[Json]]]:
    conn = sqlite3.connect(state / "journal.sqlite3")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        orders = [json.loads(doc) for (doc,) in conn.execute("SELECT doc FROM orders")]
        jobs: dict[str, list[tuple[bytes, str]]] = {}
        for printer, payload, job_state in conn.execute(
            "SELECT printer, payload, state FROM print_jobs WHERE kind = 'kitchen' ORDER BY created_at, rowid"
        ):
            jobs.setdefault(printer, []).append((payload, job_state))
        screens: dict[str, list[Json]] = {}
        for station, items in conn.execute("SELECT station, items FROM kds_tickets ORDER BY version"):
            screens.setdefault(station, []).append(json.loads(items))
    finally:
        conn.close()
    return orders, jobs, screens


def _expected(orders: list[Json]) -> dict[str, dict[str, tuple[str, Fraction]]]:
    """Station -> line id -> (name, quantity the kitchen should be making) for the final orders."""
    category = {p["sku"]: p["category"] for p in json.loads(SAMPLE.read_text())["products"]}
    out: dict[str, dict[str, tuple[str, Fraction]]] = {}
    for order in orders:
        for line in order["lines"]:
            station = STATION_OF.get(category[line["sku"]])
            if station is not None:
                qty = Fraction(0) if order["status"] == "voided" else Fraction(line["qty"])
                out.setdefault(station, {})[line["line_id"]] = (line["name"], qty)
    return out


async def _settled(state: Path) -> None:
    """Wait until no kitchen job is still queued (printers have backoff after being off)."""

    def pending() -> int:
        conn = sqlite3.connect(f"file:{state / 'journal.sqlite3'}?mode=ro", uri=True)
        try:
            return int(
                conn.execute(
                    "SELECT count(*) FROM print_jobs WHERE kind = 'kitchen' AND state IN ('queued', 'printing')"
                ).fetchone()[0]
            )
        finally:
            conn.close()

    async with asyncio.timeout(45):
        while await asyncio.to_thread(pending):
            await asyncio.sleep(0.1)


async def test_kitchen_tickets_are_exact_across_kill_9(tmp_path):
    state = tmp_path / "state"
    seed(state)
    seed_value = int(os.environ.get("STORELINK_KILL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed_value)
    async with SimNetworkPrinter() as bar, SimNetworkPrinter() as tea, aiohttp.ClientSession() as http:
        printers = {"吧台": bar, "茶水": tea}
        save_registry(
            state,
            DeviceRegistry(
                devices=[
                    DeviceEntry(
                        id=f"kitchen-{role}",
                        name=name,
                        transport="network",
                        host="127.0.0.1",
                        port=printers[name].port,
                        role=f"kitchen-{role}",
                        categories=[category],
                    )
                    for name, role, category in (("吧台", "bar", "咖啡"), ("茶水", "tea", "茶饮"))
                ]
            ),
        )
        async with Journal(state / "journal.sqlite3") as journal:
            code = await create_pairing_code(journal)
        port = free_port()
        edge = Edge(state, _config(tmp_path, state, port), f"http://127.0.0.1:{port}", http, [bar, tea])
        waiter = Waiter(edge, rng)
        await edge.start()
        try:
            device = (
                await edge.call("POST", "/api/v1/devices/pair", "", {"code": code, "name": "服务员手机"})
            )["token"]
            sign_in = "/api/v1/sessions"
            waiter.token = (await edge.call("POST", sign_in, device, {"staff_id": "w1", "pin": "2468"}))[
                "token"
            ]
            waiter.manager = (await edge.call("POST", sign_in, device, {"staff_id": "mgr", "pin": "1234"}))[
                "token"
            ]
            order_ids = await _script(waiter)
            await _settled(state)
            await asyncio.sleep(0.3)  # the last "done" is written after the bytes went out
        finally:
            if edge.proc is not None and edge.proc.returncode is None:
                await edge.kill("end")
        received = {name: printer.received for name, printer in printers.items()}

    orders, jobs, screens = _journal(state)
    note = f"(seed {seed_value}, kills {dict(edge.kills)})"
    assert {o["id"] for o in orders} >= set(order_ids), note
    assert sum(n for why, n in edge.kills.items() if why != "end") >= 4, (
        f"too few kills to prove anything {note}"
    )
    expected = _expected(orders)
    owed = 0
    for station in PRINTED:
        arrived = Counter(tuple(job) for job in decode_escpos(received[station]).jobs() if job != ["[CUT]"])
        tally: defaultdict[str, Fraction] = defaultdict(Fraction)
        for payload, job_state in jobs[f"kitchen-{'bar' if station == '吧台' else 'tea'}"]:
            job = tuple(decode_escpos(payload).jobs()[0])
            if arrived[job]:
                arrived[job] -= 1
            else:
                # Killed after the job was marked "printing" and before its bytes left: the edge
                # cannot know whether it is on paper, so it shows it as "unknown" for a person to
                # reprint; it must never print it again by itself. Count it as reprinted.
                assert job_state == "unknown", f"{station}: a {job_state} job never arrived {job} {note}"
                owed += 1
            for name, change in _printed_delta(list(job)).items():
                tally[name] += change
        assert not +arrived, f"{station}: printed twice or never queued: {list(+arrived)} {note}"
        want: defaultdict[str, Fraction] = defaultdict(Fraction)
        for name, qty in expected[station].values():
            want[name] += qty
        assert _nonzero(tally) == _nonzero(want), f"{station} printed {dict(tally)} for {dict(want)} {note}"

    for station in SCREENS:
        told: dict[str, Fraction] = {}
        for items in screens[station]:
            for item in items:
                line = item["line_id"]
                # Each change starts from what the screen last showed: a repeat or a gap breaks the chain.
                assert Fraction(item["sent_qty"]) == told.get(line, 0), f"{station} {item} {note}"
                told[line] = Fraction(0) if item["kind"] == "cancelled" else Fraction(item["qty"])
        want_lines = {line: qty for line, (_, qty) in expected[station].items() if qty}
        # A line deleted or voided after it was sent must have been taken back to 0 on the screen.
        assert {k: v for k, v in told.items() if v} == want_lines, f"{station}: {told} {note}"
        assert any(item["kind"] == "cancelled" for items in screens[station] for item in items), note

    # The station with a printer and a screen gets the same rounds on both.
    assert len(screens["茶水"]) == len(jobs["kitchen-tea"]), note
    assert owed <= edge.kills["printing"] + edge.kills["in-flight"], f"{owed} tickets left unknown {note}"

"""The edge's devices at run time: a print worker per printer, the inputs, health, tests.

The registry file is watched, so `storelink-edge devices add|bind` takes effect within
seconds while the daemon runs. Jobs are rendered here, from the journal, with the
printer's own profile (paper width, code page, CJK font). Scanners, the scale and the
pole display are run by `edge.inputs.InputManager`, which follows the same registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from zoneinfo import ZoneInfo

from drivers import DrawerKick, decode_escpos, encode
from drivers.receipt import Element
from edge import kds, printing
from edge.catalog import Catalog
from edge.config import EdgeSettings
from edge.devices import DeviceEntry, DeviceRegistry, load_registry, open_printer
from edge.discovery import Discovery
from edge.errors import EdgeError
from edge.inputs import InputManager
from edge.journal import Journal
from edge.kitchen_tickets import KitchenLine, kitchen_tickets
from edge.orders import Order
from edge.print_queue import Job, PrintWorker, Renderer, enqueue, recent_jobs
from edge.receipt import receipt
from edge.shifts import load_shift
from edge.tables import tables_of_order
from edge.till import load_order
from protocol.aio import cancel_and_wait
from protocol.categories import category_keys

__all__ = ["DeviceManager", "preview"]

log = logging.getLogger(__name__)
POLL_S = 2.0


class DeviceManager:
    """Start and stop print workers as the registry changes; queue jobs by role."""

    def __init__(
        self,
        settings: EdgeSettings,
        journal: Journal,
        catalog: Callable[[], Catalog | None] | None = None,
        inputs: InputManager | None = None,
        discovery: Discovery | None = None,
    ):
        self._settings = settings
        self.inputs = inputs
        self.discovery = discovery
        self._journal = journal
        self._catalog = catalog or (lambda: None)
        self._zone = ZoneInfo(settings.timezone)
        self.registry = DeviceRegistry()
        self._mtime: float | None = None
        self._workers: dict[str, tuple[DeviceEntry, contextlib.AsyncExitStack, PrintWorker]] = {}
        self._task: asyncio.Task[None] | None = None
        # Fired after kitchen-screen and queue changes; their live pages wait on it.
        self.live = kds.LiveSignal()

    # ------------------------------------------------------------------ rendering

    def _render(self, entry: DeviceEntry) -> Renderer:
        def render(conn: sqlite3.Connection, kind: str, ref: str | None) -> bytes:
            profile = entry.profile()
            if kind == "test":
                page = printing.printer_test_page(profile, printer_name=entry.name, printed_at=self._now())
                return encode(page, profile)
            if kind == "drawer":
                return encode([DrawerKick()], profile)
            if ref is None:
                raise ValueError(f"a {kind} job needs an order or shift id")
            name = self._settings.store_name or self._settings.store
            if kind == "shift":
                view = load_shift(conn, ref).view()
                report = printing.shift_report(view, zone=self._zone, store_name=name, printed_at=self._now())
                return encode(report, profile)
            if kind == "topup":
                row = conn.execute("SELECT doc FROM topups WHERE id = ?", (ref,)).fetchone()
                if row is None:
                    raise ValueError(f"no top-up {ref} in the journal")
                slip = printing.topup_slip(json.loads(row[0]), store_name=name, zone=self._zone)
                return encode(slip, profile)
            order = load_order(conn, ref)
            if kind in ("receipt", "reprint"):
                data = receipt(order, store_name=name, zone=self._zone, reprint=kind == "reprint")
                return encode(printing.sales_receipt(data, paper=profile), profile)
            if kind == "refund":
                return encode(
                    printing.refund_receipt(order, store_name=name, zone=self._zone, paper=profile), profile
                )
            raise ValueError(f"unknown print job kind {kind!r}")

        return render

    def _now(self) -> datetime:
        return datetime.now(UTC).astimezone(self._zone)

    # ------------------------------------------------------------------ queueing

    def queue_in(self, conn: sqlite3.Connection, role: str, kind: str, ref: str | None = None) -> str | None:
        """Queue a job for the printer bound to `role` inside the caller's transaction.

        None (and nothing queued) when the store has no such printer: jobs for a printer
        that does not exist would only pile up.
        """
        if role == "kitchen":
            return self._kitchen(conn, ref) if ref is not None else None
        entry = self.registry.by_role(role)
        if entry is None:
            return None
        job_id = enqueue(conn, entry.id, kind, ref)
        self._notify(entry.id)
        return job_id

    def _notify(self, device_id: str) -> None:
        worker = self._workers.get(device_id)
        if worker is not None:
            worker[2].notify()  # the worker's read waits for this transaction on the journal thread

    def print_document(
        self, conn: sqlite3.Connection, role: str, kind: str, ref: str | None, document: list[Element]
    ) -> str | None:
        """Queue a laid-out document (a queue ticket, a QR) for the printer bound to `role`.

        Encoded now with that printer's profile; None when the store has no such printer.
        """
        entry = self.registry.by_role(role)
        if entry is None:
            return None
        job_id = enqueue(conn, entry.id, kind, ref, encode(document, entry.profile()))
        self._notify(entry.id)
        return job_id

    def stations(self) -> dict[str, kds.Station]:
        """The kitchen stations now: printers with role `kitchen-…` and the configured screens."""
        printers = [(d.id, d.name, d.categories) for d in self.registry.kitchens()]
        return kds.stations(printers, self._settings.kds.screens)

    def _kitchen_lines(
        self, conn: sqlite3.Connection, order: Order, station_of: dict[str, str]
    ) -> list[KitchenLine] | None:
        catalog = self._catalog()
        if catalog is None:
            return None  # without a catalog nothing is routed, and nothing must look cancelled
        plan = kds.load_plan(conn, order.id)
        lines = []
        for line in order.lines:
            product = catalog.by_sku(line.sku)
            keys = category_keys(product.category) if product else []
            station = next((station_of[key] for key in keys if key in station_of), None)
            if station is not None:
                # A voided order takes everything back from the kitchen; a refund what it gave back.
                qty = 0 if order.status == "voided" else line.qty - line.refunded_qty
                course, held = plan.get(line.line_id, (1, False))
                lines.append(
                    KitchenLine(line.line_id, line.name, qty, line.note, station, held=held, course=course)
                )
        return lines

    def kitchen_round(
        self, conn: sqlite3.Connection, order_id: str, *, pickup: bool | None = None
    ) -> list[dict[str, Any]]:
        """Send each station what it has not been told yet: print jobs and screen tickets.

        Jobs, screen tickets and the new "sent" state commit together with the caller's
        transaction, so a line reaches each station exactly once whatever crashes or retries.
        Returns what was sent, one entry per station ticket.
        """
        stations = self.stations()
        station_of = {category: s.name for s in stations.values() for category in s.categories}
        order = load_order(conn, order_id)
        lines = self._kitchen_lines(conn, order, station_of)
        row = conn.execute("SELECT state FROM kitchen_sent WHERE order_id = ?", (order_id,)).fetchone()
        sent = json.loads(row[0]) if row else {}
        if lines is None or (not lines and not sent):
            return []
        table = ", ".join(tables_of_order(conn, order_id)) or None  # 桌号 on a table's tickets
        round_ = kitchen_tickets(lines, sent, order_number=f"{order.number:04d}", at=self._now(), table=table)
        with_pickup = kds.kitchen_order(
            conn, order_id, pickup=pickup, default=self._settings.kds.pickup_on_pay
        )
        now = datetime.now(UTC)
        out: list[dict[str, Any]] = []
        for ticket in round_.tickets:
            station = stations.get(ticket.station)
            if station is None:
                log.warning(
                    "kitchen station %s is gone; its ticket for order %04d is dropped",
                    ticket.station,
                    order.number,
                )
                continue
            done: dict[str, Any] = {"station": station.name, "changes": [c.kind for c in ticket.changes]}
            if station.printer is not None:
                device = self.registry.find(station.printer)
                done["job"] = enqueue(
                    conn, device.id, "kitchen", order_id, encode(list(ticket.document), device.profile())
                )
                self._notify(device.id)
            if station.screen:
                done["screen_ticket"] = kds.record_ticket(
                    conn,
                    ticket,
                    order_id=order_id,
                    order_number=order.number,
                    first=ticket.station not in sent,
                    pickup=with_pickup,
                    now=now,
                )
            out.append(done)
        conn.execute(
            "INSERT INTO kitchen_sent (order_id, state) VALUES (?, ?) "
            "ON CONFLICT (order_id) DO UPDATE SET state = excluded.state",
            (order_id, json.dumps(round_.sent, ensure_ascii=False)),
        )
        if any("screen_ticket" in done for done in out):
            self.live.fire()
        return out

    def _kitchen(self, conn: sqlite3.Connection, order_id: str) -> str | None:
        """The till's kitchen hook (paid, refunded, voided): the round, answering its last print job."""
        jobs = [done["job"] for done in self.kitchen_round(conn, order_id) if "job" in done]
        return jobs[-1] if jobs else None

    async def test(self, key: str) -> dict[str, Any]:
        """Try a device (by id, name or role): a printer prints a test page, a scale reads a weight.

        A scanner is tested by scanning: the answer says what it last read.
        """
        entry = self.registry.find(key)
        if entry.kind == "scale" and self.inputs is not None:
            reading = await self.inputs.read_weight(entry.id)
            return {"device": entry.id, "grams": reading.grams, "net": reading.net}
        if entry.kind == "display" and self.inputs is not None:
            self.inputs.show_test()
            return {"device": entry.id, "hint": "the display shows 'storelink test' and the time"}
        if entry.kind != "printer":
            scans = self.inputs.scans if self.inputs is not None else []
            last = next((scan for scan in reversed(scans) if scan["device"] == entry.id), None)
            return {
                "device": entry.id,
                "last_scan": last,
                "hint": "scan a barcode; it shows up as a scan event",
            }
        job_id = await self._journal.transaction(lambda conn: enqueue(conn, entry.id, "test"))
        self._notify(entry.id)
        return {"device": entry.id, "job": job_id}

    def health(self) -> list[dict[str, Any]]:
        """Every registered device with its role and what is wrong, if anything."""
        out = []
        for entry in self.registry.of_kind("printer"):
            worker = self._workers.get(entry.id)
            out.append(
                {
                    "id": entry.id,
                    "name": entry.name,
                    "kind": "printer",
                    "role": self.registry.role_of(entry),
                    "transport": entry.transport,
                    "address": entry.address,
                    "health": worker[2].health if worker else "not started",
                }
            )
        return out + (self.inputs.health() if self.inputs is not None else [])

    # ------------------------------------------------------------------ lifecycle

    async def _apply(self, registry: DeviceRegistry) -> None:
        if self.inputs is not None:
            await self.inputs.apply(registry)
        wanted = {entry.id: entry for entry in registry.of_kind("printer")}
        for device_id, (entry, stack, _) in list(self._workers.items()):
            if wanted.get(device_id) != entry:
                del self._workers[device_id]
                await stack.aclose()
        self.registry = registry
        for device_id, entry in wanted.items():
            if device_id in self._workers:
                continue
            stack = contextlib.AsyncExitStack()
            worker = await stack.enter_async_context(
                PrintWorker(
                    self._journal,
                    entry.id,
                    open_printer(entry),
                    self._render(entry),
                    status_query=entry.status_query,
                )
            )
            self._workers[device_id] = (entry, stack, worker)
            log.info("printer %s (%s, %s) ready for %s", entry.id, entry.name, entry.address, entry.role)

    async def _reload(self) -> None:
        path = self._settings.state_dir / "devices.json"
        try:
            mtime = (await asyncio.to_thread(path.stat)).st_mtime
        except FileNotFoundError:
            mtime = None
        if mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            registry = await asyncio.to_thread(load_registry, self._settings.state_dir)
        except EdgeError as err:
            log.error("cannot read %s, keeping the current devices: %s", path, err)
            return
        await self._apply(registry)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            await self._reload()

    async def __aenter__(self) -> DeviceManager:
        await self._reload()
        self._task = asyncio.create_task(self._watch(), name="edge-device-watch")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await cancel_and_wait(self._task, log)
        if self.inputs is not None:
            await self.inputs.apply(DeviceRegistry())
        for _, stack, _ in self._workers.values():
            await stack.aclose()
        self._workers.clear()


async def preview(
    journal: Journal, registry: DeviceRegistry, key: str, limit: int = 3
) -> list[dict[str, Any]]:
    """The newest jobs of a printer as the paper shows them, decoded from the bytes it was sent."""
    entry = registry.find(key)
    jobs = await journal.read(lambda conn: recent_jobs(conn, entry.id, limit))
    return await asyncio.to_thread(_decoded, jobs, entry.encoding)


def _decoded(jobs: list[Job], encoding: str) -> list[dict[str, Any]]:
    return [
        {
            "id": job.id,
            "kind": job.kind,
            "ref": job.ref,
            "state": job.state,
            "error": job.error,
            "created_at": job.created_at,
            "lines": decode_escpos(job.payload, encoding).lines if job.payload else [],
        }
        for job in reversed(jobs)
    ]

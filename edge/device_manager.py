"""The edge's printers at run time: one print worker per registered printer, health, test pages.

The registry file is watched, so `storelink-edge devices add|bind` takes effect within
seconds while the daemon runs. Jobs are rendered here, from the journal, with the
printer's own profile (paper width, code page, CJK font).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from zoneinfo import ZoneInfo

from drivers import decode_escpos, encode
from edge import printing
from edge.config import EdgeSettings
from edge.devices import DeviceEntry, DeviceRegistry, load_registry, open_printer
from edge.errors import EdgeError
from edge.journal import Journal
from edge.print_queue import PrintWorker, enqueue, recent_jobs
from edge.receipt import receipt
from edge.till import load_order
from protocol.aio import cancel_and_wait

__all__ = ["DeviceManager", "preview"]

log = logging.getLogger(__name__)
POLL_S = 2.0


class DeviceManager:
    """Start and stop print workers as the registry changes; queue jobs by role."""

    def __init__(self, settings: EdgeSettings, journal: Journal):
        self._settings = settings
        self._journal = journal
        self._zone = ZoneInfo(settings.timezone)
        self.registry = DeviceRegistry()
        self._mtime: float | None = None
        self._workers: dict[str, tuple[DeviceEntry, contextlib.AsyncExitStack, PrintWorker]] = {}
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ rendering

    def _render(self, entry: DeviceEntry) -> Any:
        def render(conn: sqlite3.Connection, kind: str, ref: str | None) -> bytes:
            profile = entry.profile()
            if kind == "test":
                page = printing.printer_test_page(profile, printer_name=entry.name, printed_at=self._now())
                return encode(page, profile)
            if ref is None:
                raise ValueError(f"a {kind} job needs an order id")
            order = load_order(conn, ref)
            name = self._settings.store_name or self._settings.store
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
        entry = self.registry.by_role(role)
        if entry is None:
            return None
        job_id = enqueue(conn, entry.id, kind, ref)
        worker = self._workers.get(entry.id)
        if worker is not None:
            worker[2].notify()  # the worker's read waits for this transaction on the journal thread
        return job_id

    async def test(self, key: str) -> str:
        """Queue a test page on a device (by id, name or role); the job id."""
        entry = self.registry.find(key)
        job_id = await self._journal.transaction(lambda conn: enqueue(conn, entry.id, "test"))
        worker = self._workers.get(entry.id)
        if worker is not None:
            worker[2].notify()
        return job_id

    def health(self) -> list[dict[str, Any]]:
        """Every registered device with its role and what is wrong, if anything."""
        out = []
        for entry in self.registry.devices:
            worker = self._workers.get(entry.id)
            out.append(
                {
                    "id": entry.id,
                    "name": entry.name,
                    "kind": "printer",
                    "role": entry.role or ("receipt" if self.registry.by_role("receipt") is entry else None),
                    "transport": entry.transport,
                    "address": entry.address,
                    "health": worker[2].health if worker else "not started",
                }
            )
        return out

    # ------------------------------------------------------------------ lifecycle

    async def _apply(self, registry: DeviceRegistry) -> None:
        wanted = {entry.id: entry for entry in registry.devices}
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
                PrintWorker(self._journal, entry.id, open_printer(entry), self._render(entry))
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
        for _, stack, _ in self._workers.values():
            await stack.aclose()
        self._workers.clear()


async def preview(
    journal: Journal, registry: DeviceRegistry, key: str, limit: int = 3
) -> list[dict[str, Any]]:
    """The newest jobs of a printer as the paper shows them, decoded from the bytes it was sent."""
    entry = registry.find(key)
    jobs = await journal.read(lambda conn: recent_jobs(conn, entry.id, limit))
    return [
        {
            "id": job.id,
            "kind": job.kind,
            "ref": job.ref,
            "state": job.state,
            "error": job.error,
            "created_at": job.created_at,
            "lines": decode_escpos(job.payload, entry.encoding).lines if job.payload else [],
        }
        for job in reversed(jobs)
    ]

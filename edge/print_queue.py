"""Print jobs in the journal: queued → printing → done, each printed at most once.

A job is written in the same journal transaction as what it prints (a paid order gets its
receipt job atomically), with no bytes yet: rendering happens in the printer's worker, so
a sale never waits for layout. Before sending, the worker checks the printer's status
(DLE EOT) and waits with backoff while it is offline, out of paper or open; a printer
that fails mid-job gets the job again once it is back. The worker marks a job `printing`
in the journal before the first byte goes out, so after an edge crash such a job is
`unknown` (it may be on paper) and is reprinted only on request, never twice by itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType

from drivers import DriverError, Printer
from edge.journal import Journal
from protocol import Backoff, new_id
from protocol.aio import cancel_and_wait

__all__ = ["Job", "PrintWorker", "Renderer", "enqueue", "recent_jobs"]

log = logging.getLogger(__name__)
IDLE_POLL_S = 2.0  # also picks up jobs written by another process (CLI test pages)
HEALTH_CHECK_S = 10.0  # how often an idle printer is asked for its status
KEEP_DONE = 500  # finished jobs kept per printer for preview and reprint
# A drawer kick that could not be sent within this long is dropped: a drawer springing open
# minutes later, when the printer comes back and nobody is at the till, is worse than none.
DRAWER_STALE_S = 30.0

# kind, ref (order or shift id) and the journal connection -> ESC/POS bytes
Renderer = Callable[[sqlite3.Connection, str, str | None], bytes]


@dataclass(frozen=True)
class Job:
    """One print job as the journal holds it."""

    id: str
    printer: str
    kind: str
    ref: str | None
    state: str
    attempts: int
    error: str | None
    payload: bytes | None
    created_at: str


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _age_s(created_at: str) -> float:
    return (datetime.now(UTC) - datetime.fromisoformat(created_at)).total_seconds()


def enqueue(
    conn: sqlite3.Connection, printer: str, kind: str, ref: str | None = None, payload: bytes | None = None
) -> str:
    """Add a job inside the caller's transaction; the bytes are rendered later unless given."""
    job_id = str(new_id())
    conn.execute(
        "INSERT INTO print_jobs (id, printer, kind, ref, payload, state, attempts, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, 'queued', 0, ?, ?)",
        (job_id, printer, kind, ref, payload, _now(), _now()),
    )
    return job_id


def _job(row: tuple[object, ...]) -> Job:
    return Job(*row)  # type: ignore[arg-type]


_COLUMNS = "id, printer, kind, ref, state, attempts, error, payload, created_at"


def recent_jobs(conn: sqlite3.Connection, printer: str, limit: int = 20) -> list[Job]:
    """The newest jobs of a printer, newest first."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM print_jobs WHERE printer = ? "  # noqa: S608 - constant column list
        "ORDER BY created_at DESC, rowid DESC LIMIT ?",
        (printer, limit),
    ).fetchall()
    return [_job(row) for row in rows]


_FINE = ("ok", "paper low")


class PrintWorker:
    """Prints one printer's queue in order; `health` says what is wrong, if anything."""

    def __init__(
        self,
        journal: Journal,
        printer_id: str,
        printer: Printer,
        render: Renderer,
        *,
        status_query: bool = True,
    ):
        self._journal = journal
        self._status_query = status_query
        self.printer_id = printer_id
        self._printer = printer
        self._render = render
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._backoff = Backoff(initial=1.0, cap=30.0)
        self.health = "starting"
        self.printed = 0

    def notify(self) -> None:
        """A job was queued for this printer."""
        self._wake.set()

    def _recover(self, conn: sqlite3.Connection) -> int:
        # A job that was printing when the edge died may be on paper already.
        return conn.execute(
            "UPDATE print_jobs SET state = 'unknown', error = 'the edge stopped while printing; "
            "reprint it if it did not come out', updated_at = ? WHERE printer = ? AND state = 'printing'",
            (_now(), self.printer_id),
        ).rowcount

    def _next(self, conn: sqlite3.Connection) -> Job | None:
        """The oldest queued job, laid out; jobs that cannot be laid out are failed on the way."""
        while True:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM print_jobs WHERE printer = ? AND state = 'queued' "  # noqa: S608
                "ORDER BY created_at, rowid LIMIT 1",
                (self.printer_id,),
            ).fetchone()
            if row is None:
                return None
            job = _job(row)
            if job.kind == "drawer" and _age_s(job.created_at) > DRAWER_STALE_S:
                conn.execute(
                    "UPDATE print_jobs SET state = 'failed', error = ?, updated_at = ? WHERE id = ?",
                    ("not opened: the printer was not ready in time; open the drawer again", _now(), job.id),
                )
                continue
            if job.payload is not None:
                return job
            try:
                payload = self._render(conn, job.kind, job.ref)
            except Exception as err:  # a template bug must fail this job, not stop the printer
                conn.execute(
                    "UPDATE print_jobs SET state = 'failed', error = ?, updated_at = ? WHERE id = ?",
                    (f"cannot lay out this {job.kind}: {err}", _now(), job.id),
                )
                log.error("print job %s (%s) cannot be laid out: %r", job.id, job.kind, err)
                continue
            conn.execute("UPDATE print_jobs SET payload = ? WHERE id = ?", (payload, job.id))
            return dataclasses.replace(job, payload=payload)

    def _set(self, job_id: str, state: str, error: str | None = None) -> Callable[[sqlite3.Connection], None]:
        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE print_jobs SET state = ?, error = ?, updated_at = ?,"
                " attempts = attempts + (? = 'printing') WHERE id = ?",
                (state, error, _now(), state, job_id),
            )
            if state == "done":
                conn.execute(
                    "DELETE FROM print_jobs WHERE printer = ? AND state = 'done' AND rowid NOT IN "
                    "(SELECT rowid FROM print_jobs WHERE printer = ? AND state = 'done' "
                    "ORDER BY created_at DESC LIMIT ?)",
                    (self.printer_id, self.printer_id, KEEP_DONE),
                )

        return work

    async def _check(self) -> str:
        """The printer's health before a job: raises when it cannot print, else "ok" or a warning."""
        if not self._status_query:
            return "ok (this printer reports no status; jobs are sent blind)"
        status = await self._printer.status()
        problem = status.problem()
        if problem is not None:
            raise _NotReady(problem)
        return "paper low; put a new roll in soon" if status.paper_near_end else "ok"

    async def _print_one(self) -> bool:
        """Print the oldest queued job; False when there is none."""
        job = await self._journal.transaction(self._next)
        if job is None:
            return False
        assert job.payload is not None  # noqa: S101 - rendered by _next
        self.health = await self._check()
        await self._journal.transaction(self._set(job.id, "printing"), durable=True)
        try:
            await self._printer.send(job.payload)
        except BaseException as err:
            # Torn paper at worst; the whole job prints again once the printer is back.
            await asyncio.shield(self._journal.transaction(self._set(job.id, "queued", str(err)[:300])))
            raise
        await self._journal.transaction(self._set(job.id, "done"))
        self.printed += 1
        log.info("printed %s %s on %s", job.kind, job.ref or "", self.printer_id)
        return True

    async def _loop(self) -> None:
        recovered = await self._journal.transaction(self._recover)
        if recovered:
            log.warning("%d job(s) on %s were mid-print at the last stop", recovered, self.printer_id)
        idle = 0
        while True:
            self._wake.clear()
            try:
                while await self._print_one():
                    idle = 0
                if idle * IDLE_POLL_S >= HEALTH_CHECK_S or not self.health.startswith(_FINE):
                    # Nothing to print: still look (at once after a problem), so the store's
                    # status shows a dead printer and a fixed one.
                    idle = 0
                    self.health = await self._check()
                self._backoff.connected()
            except (DriverError, _NotReady, sqlite3.Error) as err:
                reason = str(err)
                if reason != self.health:
                    log.warning("printer %s: %s; jobs wait", self.printer_id, reason)
                self.health = reason
                await asyncio.sleep(self._backoff.next_delay())
                continue
            try:
                async with asyncio.timeout(IDLE_POLL_S):
                    await self._wake.wait()
            except TimeoutError:
                idle += 1

    async def __aenter__(self) -> PrintWorker:
        self._task = asyncio.create_task(self._loop(), name=f"print-{self.printer_id}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await cancel_and_wait(self._task, log)
        await self._printer.close()


class _NotReady(Exception):
    """The printer answered but cannot print now (paper, cover, error)."""

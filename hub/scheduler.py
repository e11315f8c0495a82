"""Nightly jobs: named daily jobs run at a local time, each once per day across restarts and hub instances.

Every run is a `job_runs` row, unique per (job, day): a scheduler claims the day by
inserting the row before it runs the job, so a restarted hub, or a second hub on the same
database, finds the claim and does not run the job again. After downtime only the latest
due day runs (a hub down for a week catches up once, not seven times); each job is written
to cover what the skipped days would have done (`JobContext.previous` is the last day it
succeeded for). A job that raises is recorded as `failed` with its error and the other
jobs run on; a failed day is not retried by itself (the next day's run covers it), but
`storelink-hub jobs run NAME --day D` or `POST /api/v1/jobs/{name}/run` runs it again.
Every job is idempotent: running it twice for the same day changes nothing the second time.

Adding a job is one line in `JOBS` at the bottom of `hub/scheduler_jobs.py`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from types import TracebackType
from typing import Any, Protocol

from sqlalchemy import Date, Index, Integer, String, UniqueConstraint, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, mapped_column

from hub.config import JobsSettings
from hub.db import AsyncSession, Database
from hub.errors import HubError, NotFound
from hub.models import Base
from hub.scheduler_jobs import JOBS, Job, JobContext
from protocol.aio import cancel_and_wait

__all__ = [
    "JOBS",
    "Clock",
    "Job",
    "JobBusy",
    "JobContext",
    "JobRun",
    "RunRecord",
    "Scheduler",
    "SystemClock",
    "due_day",
    "find_job",
    "last_runs",
    "local_today",
    "next_run_at",
    "run_by_hand",
    "run_job",
]

log = logging.getLogger(__name__)
_MAX_NAP_S = 900.0  # wake at least this often: a suspended machine or a clock change is noticed
_RETRY_S = 60.0  # after a pass that failed outside any job (a bug in the scheduler itself)


class JobBusy(HubError):
    """The job is already running for that day (here or on another hub instance)."""


class Clock(Protocol):
    """Where the scheduler gets the time and waits; tests inject one they move by hand."""

    def now(self) -> datetime:
        """The current instant, timezone-aware."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this clock's time."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        """UTC now."""
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        """asyncio.sleep."""
        await asyncio.sleep(seconds)


class JobRun(Base):
    """One job for one day: who claimed it, when it started and finished, and what it did or why it failed."""

    __tablename__ = "job_runs"
    __table_args__ = (
        UniqueConstraint("job", "day", name="uq_job_runs_job_day"),
        Index("ix_job_runs_started", "started_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job: Mapped[str] = mapped_column(String(64))
    day: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(8))  # running, ok, failed
    runs: Mapped[int] = mapped_column(Integer)  # how often this day was run (by hand again, or re-claimed)
    started_by: Mapped[str] = mapped_column(String(80))  # "scheduler", "cli", "user:<name>"
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    summary: Mapped[str] = mapped_column(String(500))
    error: Mapped[str | None] = mapped_column(String(2000))


@dataclass(frozen=True)
class RunRecord:
    """A `job_runs` row as the CLI and the API show it."""

    job: str
    day: date
    status: str
    runs: int
    started_by: str
    started_at: datetime
    finished_at: datetime | None
    summary: str
    error: str | None

    @classmethod
    def of(cls, row: JobRun) -> RunRecord:
        """From a row."""
        return cls(
            row.job,
            row.day,
            row.status,
            row.runs,
            row.started_by,
            row.started_at,
            row.finished_at,
            row.summary,
            row.error,
        )

    def as_json(self) -> dict[str, Any]:
        """For the API."""

        def stamp(ts: datetime | None) -> str | None:
            return None if ts is None else ts.astimezone(UTC).isoformat().replace("+00:00", "Z")

        return {
            "job": self.job,
            "day": self.day.isoformat(),
            "status": self.status,
            "runs": self.runs,
            "started_by": self.started_by,
            "started_at": stamp(self.started_at),
            "finished_at": stamp(self.finished_at),
            "summary": self.summary,
            "error": self.error,
        }


def due_day(now: datetime, settings: JobsSettings) -> date:
    """The latest day whose run time has come: today from `nightly_at` on, yesterday before it."""
    local = now.astimezone(settings.zone)
    return local.date() if local.time() >= settings.run_time else local.date() - timedelta(days=1)


def next_run_at(now: datetime, settings: JobsSettings) -> datetime:
    """The next instant after `now` at which a new day becomes due (UTC)."""
    local = now.astimezone(settings.zone)
    candidate = datetime.combine(local.date(), settings.run_time, tzinfo=settings.zone)
    if candidate <= local:
        candidate = datetime.combine(
            local.date() + timedelta(days=1), settings.run_time, tzinfo=settings.zone
        )
    return candidate.astimezone(UTC)


def find_job(name: str, jobs: Sequence[Job] = JOBS) -> Job:
    """The job called `name`, or NotFound listing the names there are."""
    for job in jobs:
        if job.name == name:
            return job
    raise NotFound(f"no job {name!r}; the jobs are {', '.join(j.name for j in jobs)}")


async def _claim(
    session: AsyncSession, job: str, day: date, now: datetime, by: str, *, stale_before: datetime, force: bool
) -> int | None:
    """Claim (job, day): insert its row, or take over a cut-off run (any finished one with `force`)."""
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    insert_ = pg_insert if dialect == "postgresql" else sqlite_insert
    fresh = {
        "status": "running",
        "started_by": by[:80],
        "started_at": now,
        "finished_at": None,
        "summary": "",
    }
    claimed = await session.scalar(
        insert_(JobRun)
        .values(job=job, day=day, runs=1, error=None, **fresh)
        .on_conflict_do_nothing()
        .returning(JobRun.id)
    )
    if claimed is not None:
        return int(claimed)
    abandoned = (JobRun.status == "running") & (JobRun.started_at < stale_before)
    again = await session.scalar(
        update(JobRun)
        .where(
            JobRun.job == job,
            JobRun.day == day,
            or_(JobRun.status != "running", abandoned) if force else abandoned,
        )
        .values(runs=JobRun.runs + 1, error=None, **fresh)
        .returning(JobRun.id)
        .execution_options(synchronize_session=False)
    )
    return None if again is None else int(again)


async def _previous_ok(session: AsyncSession, job: str, day: date) -> date | None:
    return await session.scalar(
        select(func.max(JobRun.day)).where(JobRun.job == job, JobRun.status == "ok", JobRun.day < day)
    )


async def _finish(
    db: Database, run_id: int, now: datetime, *, summary: str = "", error: str | None = None
) -> RunRecord:
    async with db.session() as session, session.begin():
        await session.execute(
            update(JobRun)
            .where(JobRun.id == run_id)
            .values(status="failed" if error else "ok", finished_at=now, summary=summary[:500], error=error)
            .execution_options(synchronize_session=False)
        )
        row = await session.get_one(JobRun, run_id, populate_existing=True)
        return RunRecord.of(row)


async def run_job(
    db: Database,
    job: Job,
    day: date,
    settings: JobsSettings,
    *,
    clock: Clock | None = None,
    started_by: str = "scheduler",
    force: bool = False,
) -> RunRecord | None:
    """Run `job` for `day` unless that day is already claimed; the finished record, or None if not run.

    With `force` (a run by hand) a finished day runs again (jobs are idempotent); a run in
    progress is never doubled: `JobBusy`. The job's own exception is recorded, logged and
    returned as a `failed` record, never raised; only a database failure while claiming or
    recording escapes.
    """
    clock = clock or SystemClock()
    now = clock.now()
    stale_before = now - timedelta(minutes=settings.stale_after_minutes)
    async with db.session() as session, session.begin():
        run_id = await _claim(session, job.name, day, now, started_by, stale_before=stale_before, force=force)
        if run_id is None:
            if not force:
                return None
            busy = await session.scalar(select(JobRun).where(JobRun.job == job.name, JobRun.day == day))
            since = "" if busy is None else f" since {busy.started_at.isoformat()} ({busy.started_by})"
            raise JobBusy(
                f"job {job.name} is already running for {day.isoformat()}{since}; wait for it to finish"
            )
        previous = await _previous_ok(session, job.name, day)
    context = JobContext(day=day, now=now, previous=previous, settings=settings)
    log.info("job %s for %s started (%s)", job.name, day, started_by)
    try:
        summary = await job.run(db, context)
    except asyncio.CancelledError:
        # The job's transaction was rolled back; say so rather than leave "running" behind
        # (if even that fails, the row is taken over after stale_after_minutes).
        log.warning("job %s for %s cut off: the hub is stopping", job.name, day)
        cut_off = "cancelled: the hub stopped during the run; nothing was kept"
        try:
            await asyncio.shield(_finish(db, run_id, clock.now(), error=cut_off))
        except (SQLAlchemyError, OSError) as err:
            log.warning("job %s for %s: could not record the cut-off run: %s", job.name, day, err)
        raise
    except Exception as err:  # one failing job must never stop the others
        log.exception("job %s for %s failed", job.name, day)
        return await _finish(db, run_id, clock.now(), error=f"{type(err).__name__}: {err}"[:2000])
    record = await _finish(db, run_id, clock.now(), summary=summary)
    log.info("job %s for %s done: %s", job.name, day, summary)
    return record


def local_today(now: datetime, settings: JobsSettings) -> date:
    """The chain-local calendar date at `now`."""
    return now.astimezone(settings.zone).date()


async def run_by_hand(
    db: Database,
    name: str,
    day: date | None,
    settings: JobsSettings,
    *,
    started_by: str,
    clock: Clock | None = None,
) -> RunRecord:
    """Run a job now for `day` (default today), even if that day already ran: the CLI's and the API's way.

    NotFound for an unknown job, ValueError for a day that has not come yet (its data is not
    there: birthdays would be given early, lots expired before their date), `JobBusy` when
    the same day is being run right now.
    """
    job = find_job(name)
    now = (clock or SystemClock()).now()
    today = local_today(now, settings)
    day = day or today
    if day > today:
        raise ValueError(
            f"{day.isoformat()} has not come yet in {settings.timezone} (today is {today.isoformat()}); "
            "a job runs for today or an earlier day"
        )
    record = await run_job(db, job, day, settings, clock=clock, started_by=started_by, force=True)
    if record is None:  # cannot happen: a forced claim either succeeds or raises JobBusy
        raise RuntimeError(f"job {name} for {day} was neither run nor refused")
    return record


async def last_runs(db: Database, *, job: str | None = None, limit: int = 50) -> list[RunRecord]:
    """The latest runs, newest day first (of one job, or of all)."""
    stmt = select(JobRun).order_by(JobRun.day.desc(), JobRun.job).limit(limit)
    if job is not None:
        stmt = stmt.where(JobRun.job == job)
    async with db.session() as session:
        return [RunRecord.of(row) for row in (await session.scalars(stmt)).all()]


class Scheduler:
    """Runs the due day's jobs at start (catch-up) and at `nightly_at` every day, until exited.

    An async context manager: entering starts one named background task, exiting cancels
    it and waits. `passes` counts finished passes (tests wait on it).
    """

    def __init__(
        self, db: Database, settings: JobsSettings, *, clock: Clock | None = None, jobs: Sequence[Job] = JOBS
    ):
        unknown = sorted(set(settings.disabled) - {job.name for job in jobs})
        if unknown:
            raise ValueError(
                f"jobs.disabled names unknown jobs: {', '.join(unknown)}; "
                f"the jobs are {', '.join(job.name for job in jobs)}"
            )
        self.db, self.settings, self.clock = db, settings, clock or SystemClock()
        self.jobs = [job for job in jobs if job.name not in settings.disabled]
        self.passes = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Scheduler:
        names = ", ".join(job.name for job in self.jobs) or "none"
        log.info("nightly jobs at %s %s: %s", self.settings.nightly_at, self.settings.timezone, names)
        self._task = asyncio.create_task(self._loop(), name="hub-jobs")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await cancel_and_wait(self._task, log)

    async def run_due(self) -> list[RunRecord]:
        """Run every job for the latest due day that no run has claimed yet; what ran."""
        day = due_day(self.clock.now(), self.settings)
        done: list[RunRecord] = []
        for job in self.jobs:
            try:
                record = await run_job(self.db, job, day, self.settings, clock=self.clock)
            except (SQLAlchemyError, OSError) as err:  # the next pass (within _MAX_NAP_S) tries again
                log.warning("job %s for %s could not be claimed or recorded: %s", job.name, day, err)
                continue
            if record is not None:
                done.append(record)
        return done

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_due()
                now = self.clock.now()
                delay = min(_MAX_NAP_S, max(0.0, (next_run_at(now, self.settings) - now).total_seconds()))
            except Exception:  # a bug here must not end nightly jobs for good
                log.exception("job scheduler pass failed; trying again in %d s", _RETRY_S)
                delay = _RETRY_S
            self.passes += 1
            await self.clock.sleep(delay)

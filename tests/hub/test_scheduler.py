"""The nightly job scheduler: once per day across restarts and hub instances, one catch-up after
downtime, failures recorded without stopping other jobs, and the real jobs (points expiry in FIFO
order, birthday points once a year, the yearly review) run through it (SQLite and PostgreSQL).

Time is a fake clock the tests move by hand; nothing sleeps for real beyond a few polls."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from hub import points
from hub.broker import free_port
from hub.config import HubSettings, JobsSettings
from hub.db import Database, migrate
from hub.levels import LevelChange, add_progress
from hub.scheduler import (
    Job,
    JobBusy,
    JobContext,
    JobRun,
    Scheduler,
    due_day,
    find_job,
    last_runs,
    next_run_at,
    run_by_hand,
    run_job,
)
from hub.service import Hub
from hub.stores import add_store
from tests.hub.loyalty_helpers import books, ledger, new_member, set_levels

SHANGHAI = ZoneInfo("Asia/Shanghai")
SETTINGS = JobsSettings(nightly_at="03:30")
D = date(2026, 3, 3)


def at(day: date, hour: int, minute: int = 0) -> datetime:
    """A Shanghai wall-clock time as UTC."""
    return datetime.combine(day, time(hour, minute), tzinfo=SHANGHAI).astimezone(UTC)


class FakeClock:
    """A clock that moves only when the test says so; `sleep` waits until it has moved far enough."""

    def __init__(self, now: datetime):
        self._now = now
        self._moved = asyncio.Condition()

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        until = self._now + timedelta(seconds=seconds)
        async with self._moved:
            await self._moved.wait_for(lambda: self._now >= until)

    async def move_to(self, when: datetime) -> None:
        async with self._moved:
            self._now = when
            self._moved.notify_all()


async def _passes(scheduler: Scheduler, n: int) -> None:
    async with asyncio.timeout(10):
        while scheduler.passes < n:
            await asyncio.sleep(0.01)


def counting(name: str, calls: list[tuple[str, date, date | None]], *, fail: bool = False) -> Job:
    async def run(db: Database, context: JobContext) -> str:
        calls.append((name, context.day, context.previous))
        if fail:
            raise RuntimeError("the printer is on fire")
        return f"counted {context.day}"

    return Job(name, "a test job", run)


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    await add_store(database, "shop-1")
    yield database
    await database.close()


async def _rows(db: Database) -> list[tuple[str, date, str, int]]:
    async with db.session() as session:
        rows = await session.execute(
            select(JobRun.job, JobRun.day, JobRun.status, JobRun.runs).order_by(JobRun.day, JobRun.job)
        )
        return [(job, day, status, runs) for job, day, status, runs in rows.all()]


def test_the_due_day_turns_at_nightly_at_in_the_chains_time_zone():
    assert due_day(at(D, 3, 29), SETTINGS) == D - timedelta(days=1)
    assert due_day(at(D, 3, 30), SETTINGS) == D
    assert due_day(at(D, 23, 59), SETTINGS) == D
    assert next_run_at(at(D, 3, 29), SETTINGS) == at(D, 3, 30)
    assert next_run_at(at(D, 3, 30), SETTINGS) == at(D + timedelta(days=1), 3, 30)
    assert next_run_at(at(D, 3, 30), SETTINGS).isoformat() == "2026-03-03T19:30:00+00:00"


async def test_jobs_run_once_per_day_across_a_restart(db):
    calls: list[tuple[str, date, date | None]] = []
    jobs = [counting("a", calls), counting("b", calls)]
    clock = FakeClock(at(D, 5, 0))
    async with Scheduler(db, SETTINGS, clock=clock, jobs=jobs) as scheduler:
        await _passes(scheduler, 1)
    assert calls == [("a", D, None), ("b", D, None)]

    await clock.move_to(at(D, 9, 0))  # the hub restarts later the same day
    async with Scheduler(db, SETTINGS, clock=clock, jobs=jobs) as scheduler:
        await _passes(scheduler, 1)
        assert len(calls) == 2
        await clock.move_to(at(D + timedelta(days=1), 3, 29))
        await _passes(scheduler, 2)
        assert len(calls) == 2  # one minute early
        await clock.move_to(at(D + timedelta(days=1), 3, 30))
        await _passes(scheduler, 3)
        assert calls[2:] == [("a", D + timedelta(days=1), D), ("b", D + timedelta(days=1), D)]
    assert await _rows(db) == [
        ("a", D, "ok", 1),
        ("b", D, "ok", 1),
        ("a", D + timedelta(days=1), "ok", 1),
        ("b", D + timedelta(days=1), "ok", 1),
    ]
    latest = (await last_runs(db, job="a", limit=1))[0]
    assert (latest.summary, latest.started_by, latest.error) == (
        f"counted {D + timedelta(days=1)}",
        "scheduler",
        None,
    )
    assert latest.started_at == at(D + timedelta(days=1), 3, 30)


async def test_two_hub_instances_run_each_job_once(db):
    calls: list[tuple[str, date, date | None]] = []
    jobs = [counting("a", calls), counting("b", calls)]
    clock = FakeClock(at(D, 4, 0))
    async with (
        Scheduler(db, SETTINGS, clock=clock, jobs=jobs) as one,
        Scheduler(db, SETTINGS, clock=clock, jobs=jobs) as two,
    ):
        await _passes(one, 1)
        await _passes(two, 1)
    assert sorted(calls) == [("a", D, None), ("b", D, None)]


async def test_after_downtime_the_missed_days_are_caught_up_by_one_run(db):
    calls: list[tuple[str, date, date | None]] = []
    jobs = [counting("a", calls)]
    clock = FakeClock(at(D, 4, 0))
    async with Scheduler(db, SETTINGS, clock=clock, jobs=jobs) as scheduler:
        await _passes(scheduler, 1)
    back = D + timedelta(days=5)
    await clock.move_to(at(back, 10, 0))  # down for four nights
    async with Scheduler(db, SETTINGS, clock=clock, jobs=jobs) as scheduler:
        await _passes(scheduler, 1)
    assert calls == [("a", D, None), ("a", back, D)]  # once, told which day last succeeded
    assert [row[1] for row in await _rows(db)] == [D, back]


async def test_a_failing_job_is_recorded_and_the_others_still_run(db):
    calls: list[tuple[str, date, date | None]] = []
    jobs = [counting("first", calls), counting("boom", calls, fail=True), counting("last", calls)]
    clock = FakeClock(at(D, 4, 0))
    async with Scheduler(db, SETTINGS, clock=clock, jobs=jobs) as scheduler:
        await _passes(scheduler, 1)
        await clock.move_to(at(D, 4, 20))  # the next wake-up the same day does not retry it
        await _passes(scheduler, 2)
    assert [name for name, _, _ in calls] == ["first", "boom", "last"]
    assert await _rows(db) == [("boom", D, "failed", 1), ("first", D, "ok", 1), ("last", D, "ok", 1)]
    failed = (await last_runs(db, job="boom"))[0]
    assert failed.error == "RuntimeError: the printer is on fire"
    assert failed.finished_at is not None

    # the next day runs it again; its "previous" is the last day it succeeded, so it covers the gap
    ok_jobs = [counting("boom", calls)]
    await clock.move_to(at(D + timedelta(days=1), 3, 30))
    async with Scheduler(db, SETTINGS, clock=clock, jobs=ok_jobs) as scheduler:
        await _passes(scheduler, 1)
    assert calls[-1] == ("boom", D + timedelta(days=1), None)
    # by hand, a failed day runs again and counts the attempt
    record = await run_job(db, ok_jobs[0], D, SETTINGS, clock=clock, started_by="cli", force=True)
    assert (record.status, record.runs, record.error, record.started_by) == ("ok", 2, None, "cli")


async def test_a_run_in_progress_is_not_doubled_and_a_cut_off_one_is_taken_over(db):
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(db: Database, context: JobContext) -> str:
        started.set()
        await release.wait()
        return "slow done"

    job = Job("slow", "waits", slow)
    clock = FakeClock(at(D, 4, 0))
    running = asyncio.create_task(run_job(db, job, D, SETTINGS, clock=clock))
    await started.wait()
    assert await run_job(db, job, D, SETTINGS, clock=clock) is None
    with pytest.raises(JobBusy, match="already running"):
        await run_job(db, job, D, SETTINGS, clock=clock, force=True)
    release.set()
    assert (await running).summary == "slow done"

    # a run whose hub died mid-way stays "running"; after stale_after_minutes it may run again
    async with db.session() as session, session.begin():
        row = (await session.scalars(select(JobRun).where(JobRun.job == "slow"))).one()
        row.status, row.finished_at = "running", None
    quick = Job("slow", "quick now", lambda db, context: asyncio.sleep(0, "quick"))
    assert await run_job(db, quick, D, SETTINGS, clock=clock) is None
    await clock.move_to(at(D, 4, 0) + timedelta(minutes=SETTINGS.stale_after_minutes + 1))
    record = await run_job(db, quick, D, SETTINGS, clock=clock)
    assert record is not None
    assert (record.status, record.runs, record.summary) == ("ok", 2, "quick")


async def test_stopping_the_hub_mid_run_records_the_cut_off_run(db):
    started = asyncio.Event()

    async def forever(db: Database, context: JobContext) -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    clock = FakeClock(at(D, 4, 0))
    async with Scheduler(db, SETTINGS, clock=clock, jobs=[Job("forever", "hangs", forever)]):
        await started.wait()
    run = (await last_runs(db, job="forever"))[0]
    assert run.status == "failed"
    assert run.error is not None
    assert run.error.startswith("cancelled: the hub stopped")


async def test_points_expire_through_the_job_fifo_with_the_ledger_explaining_the_balance(db):
    member = await new_member(db)
    earned = at(date(2026, 1, 10), 12, 0)
    async with db.session() as session, session.begin():
        late = await points.credit(
            session, member, 100, kind="adjust", source="user:t", expires_at=at(D, 12, 0), now=earned
        )
        early = await points.credit(
            session, member, 50, kind="adjust", source="user:t", expires_at=at(D, 8, 0), now=earned
        )
        await points.credit(
            session,
            member,
            200,
            kind="adjust",
            source="user:t",
            expires_at=at(date(2026, 3, 20), 0),
            now=earned,
        )
        await points.debit(
            session, member, 30, kind="redeem", source="rpc:shop-1:t1", now=earned
        )  # FIFO: early
    expire = find_job("points.expire")
    clock = FakeClock(at(D, 3, 30))
    first = await run_job(db, expire, D, SETTINGS, clock=clock)
    assert first is not None
    assert first.summary == "expired 0 points in 0 lots of 0 members (due by 2026-03-03 00:00 Asia/Shanghai)"

    await clock.move_to(at(D + timedelta(days=1), 3, 30))
    async with Scheduler(db, SETTINGS, clock=clock, jobs=[expire]) as scheduler:
        await _passes(scheduler, 1)
    async with db.session() as session:
        rows = (
            await session.execute(
                select(
                    points.PointsLedger.kind,
                    points.PointsLedger.points,
                    points.PointsLedger.balance_after,
                    points.PointsLedger.lot_id,
                )
                .where(points.PointsLedger.member_id == member)
                .order_by(points.PointsLedger.id)
            )
        ).all()
    # the lot expiring first goes first, whatever order the lots were earned in
    assert [(k, p, b) for k, p, b, _ in rows] == [
        ("adjust", 100, 100),
        ("adjust", 50, 150),
        ("adjust", 200, 350),
        ("redeem", -30, 320),
        ("expire", -20, 300),
        ("expire", -100, 200),
    ]
    assert [lot for *_, lot in rows[-2:]] == [early, late]
    running = 0
    for _, change, after, _ in rows:
        running += change
        assert after == running  # every balance_after is explained by the rows before it
    assert await books(db, member) == (200, 200, 200)
    summary = (await last_runs(db, job="points.expire", limit=1))[0].summary
    assert summary.startswith("expired 120 points in 2 lots of 1 members")

    again = await run_by_hand(db, "points.expire", D + timedelta(days=1), SETTINGS, started_by="cli")
    assert (again.runs, again.summary.split(" (")[0]) == (2, "expired 0 points in 0 lots of 0 members")
    assert len(await ledger(db, member)) == 6


BIRTHDAY_LEVELS = [
    {"code": "silver", "name": "银卡", "rank": 1, "threshold": 0, "birthday_points": 66},
    {"code": "gold", "name": "金卡", "rank": 2, "threshold": 10000, "birthday_points": 200},
]


async def _birthday_rows(db: Database, member: str) -> list[tuple[int, str]]:
    return [(p, s) for k, p, s in await ledger(db, member) if k == "birthday"]


async def test_birthday_points_once_per_member_per_year_through_the_job(db):
    today = await new_member(db, "13800000001", birthday=date(1990, 3, 3))
    skipped_day = await new_member(db, "13800000002", birthday=date(1985, 3, 5))
    not_yet = await new_member(db, "13800000003", birthday=date(1991, 3, 7))
    gold = await new_member(db, "13800000004", birthday=date(1988, 3, 3))
    # levels configured after they joined: silver (threshold 0) is theirs without a recorded level
    await set_levels(db, levels=BIRTHDAY_LEVELS)
    async with db.session() as session, session.begin():
        await add_progress(session, gold, source="order:g", now=at(date(2026, 2, 1), 12), spend_fen=20000)
    job = find_job("levels.birthday")
    clock = FakeClock(at(D, 3, 30))
    async with Scheduler(db, SETTINGS, clock=clock, jobs=[job]) as scheduler:
        await _passes(scheduler, 1)
    assert await _birthday_rows(db, today) == [(66, "birthday:2026")]
    assert await _birthday_rows(db, gold) == [(200, "birthday:2026")]
    again = await run_by_hand(db, "levels.birthday", D, SETTINGS, started_by="cli")
    assert again.summary == f"birthday points for 0 members ({D})"
    assert await _birthday_rows(db, today) == [(66, "birthday:2026")]

    # down on 4 and 5 March: the run on the 6th also celebrates the 5th, and not the 7th
    await clock.move_to(at(date(2026, 3, 6), 3, 30))
    async with Scheduler(db, SETTINGS, clock=clock, jobs=[job]) as scheduler:
        await _passes(scheduler, 1)
    assert (await last_runs(db, job="levels.birthday", limit=1))[0].summary == (
        "birthday points for 1 members (2026-03-04..2026-03-06)"
    )
    assert await _birthday_rows(db, skipped_day) == [(66, "birthday:2026")]
    assert await _birthday_rows(db, not_yet) == []

    # the next year it comes again, once
    next_year = date(2027, 3, 3)
    for _ in range(2):
        await run_job(db, job, next_year, SETTINGS, clock=FakeClock(at(next_year, 3, 30)), force=True)
    assert await _birthday_rows(db, today) == [(66, "birthday:2026"), (66, "birthday:2027")]
    assert (await books(db, today))[0] == 132


async def _platinum_lapsed(db: Database) -> str:
    member = await new_member(db)
    await set_levels(
        db,
        downgrade_review=True,
        levels=[
            {"code": "silver", "name": "银卡", "rank": 1, "threshold": 0},
            {"code": "platinum", "name": "白金卡", "rank": 2, "threshold": 50000},
        ],
    )
    async with db.session() as session, session.begin():
        await add_progress(session, member, source="order:a", now=at(date(2024, 5, 1), 12), spend_fen=60000)
    return member


async def test_the_level_review_runs_on_its_day(db):
    await _platinum_lapsed(db)
    settings = JobsSettings(level_review_on="03-01")
    review = find_job("levels.review")
    before = await run_job(db, review, date(2026, 2, 28), settings, clock=FakeClock(at(date(2026, 2, 28), 4)))
    assert before is not None
    assert before.summary == "not due: the review runs on 2026-03-01"
    on_day = await run_job(db, review, date(2026, 3, 1), settings, clock=FakeClock(at(date(2026, 3, 1), 4)))
    assert on_day is not None
    assert on_day.summary == "review of 2026-03-01: 1 members reviewed, 1 demoted"
    async with db.session() as session:
        changes = len((await session.scalars(select(LevelChange))).all())
    again = await run_job(
        db, review, date(2026, 3, 1), settings, force=True, clock=FakeClock(at(date(2026, 3, 1), 9))
    )
    assert again is not None
    assert again.summary == "review of 2026-03-01: 1 members reviewed, 0 demoted"  # nothing more to do
    async with db.session() as session:
        assert len((await session.scalars(select(LevelChange))).all()) == changes
    after = await run_job(db, review, date(2026, 3, 2), settings, clock=FakeClock(at(date(2026, 3, 2), 4)))
    assert after is not None
    assert after.summary == "not due: the review runs on 2027-03-01"


async def test_a_missed_level_review_runs_once_on_the_first_day_back(db):
    member = await _platinum_lapsed(db)
    settings = JobsSettings(level_review_on="03-01")
    review = find_job("levels.review")
    clock = FakeClock(at(date(2026, 2, 27), 4))
    async with Scheduler(db, settings, clock=clock, jobs=[review]) as scheduler:
        await _passes(scheduler, 1)
    await clock.move_to(at(date(2026, 3, 3), 4))  # down from the 28th to the 3rd
    async with Scheduler(db, settings, clock=clock, jobs=[review]) as scheduler:
        await _passes(scheduler, 1)
        await clock.move_to(at(date(2026, 3, 4), 4))
        await _passes(scheduler, 2)
    summaries = [run.summary for run in await last_runs(db, job="levels.review")]
    assert summaries == [
        "not due: the review runs on 2027-03-01",  # newest day first: 4 March
        "review of 2026-03-01: 1 members reviewed, 1 demoted",  # 3 March, the first day back
        "not due: the review runs on 2026-03-01",  # 27 February
    ]
    async with db.session() as session:
        from hub.levels import level_of  # noqa: PLC0415

        assert (await level_of(session, member))["code"] == "silver"


async def test_the_hub_runs_the_jobs_and_stops_them_on_exit(db, database_url, tmp_path):
    clock = FakeClock(at(D, 4, 0))
    settings = HubSettings(
        state_dir=tmp_path / "hub",
        database_url=database_url,
        http_host="127.0.0.1",
        http_port=0,
        broker={"bind": "127.0.0.1", "port": free_port()},
    )
    async with Hub(settings, db=db, clock=clock) as hub:
        assert hub.scheduler is not None
        await _passes(hub.scheduler, 1)
        task = hub.scheduler._task
    assert task is not None
    assert task.done()
    assert sorted((name, day, status) for name, day, status, _ in await _rows(db)) == [
        ("coupons.birthday", D, "ok"),
        ("levels.birthday", D, "ok"),
        ("levels.review", D, "ok"),
        ("members.segments", D, "ok"),
        ("points.expire", D, "ok"),
        ("referrals.settle", D, "ok"),
        ("stock.expiry", D, "ok"),
    ]
    off = settings.model_copy(update={"jobs": JobsSettings(enabled=False)})
    assert Hub(off, db=db).scheduler is None
    with pytest.raises(ValueError, match=r"jobs\.disabled names unknown jobs: points\.expiry"):
        Hub(settings.model_copy(update={"jobs": JobsSettings(disabled=["points.expiry"])}), db=db)


async def test_a_job_added_in_one_line_from_a_day_function_runs_and_summarises(db):
    # the line that adds the RFM recompute to JOBS in hub/scheduler_jobs.py
    segments = Job.day_function("members.segments", "hub.member_segments:recompute_segments", "RFM segments")
    record = await run_job(db, segments, D, SETTINGS, clock=FakeClock(at(D, 4, 0)))
    assert record is not None
    assert record.status == "ok", record.error
    assert record.summary.startswith(f"as_of {D}, window_days 365, scored 0, segments {{")  # no sales yet

    missing = Job.day_function("members.nothing", "hub.no_such_module:run", "not there")
    failed = await run_job(db, missing, D, SETTINGS, clock=FakeClock(at(D, 4, 0)))
    assert failed is not None
    assert (failed.status, failed.error) == (
        "failed",
        "ModuleNotFoundError: No module named 'hub.no_such_module'",
    )
    with pytest.raises(ValueError, match=r"must look like 'hub\.module:function'"):
        Job.day_function("x", "hub.member_segments.recompute_segments", "no colon")

"""The nightly jobs `hub.scheduler` runs: one `Job` per line of `JOBS`, in that order.

A job gets the database and a `JobContext` (the day it runs for, the clock's now, the last
day it succeeded for) and returns a one-line summary for `job_runs`. It must be idempotent
for its day and cover days the scheduler skipped after downtime (only the latest due day
runs): expiry takes everything due, birthdays go back to the day after the last success,
the review runs if its date passed since the last success.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from hub import coupon_gifts, levels_jobs, points
from hub.config import JobsSettings
from hub.db import Database

__all__ = [
    "BIRTHDAY_CATCH_UP_DAYS",
    "JOBS",
    "Job",
    "JobContext",
    "JobFunc",
    "birthday_points_job",
    "expire_points_job",
    "level_review_job",
]

# After downtime, birthdays of at most this many days back are still celebrated.
BIRTHDAY_CATCH_UP_DAYS = 31


@dataclass(frozen=True)
class JobContext:
    """What one run of a job is for."""

    day: date  # the chain-local day the run is for
    now: datetime  # when the run started (UTC, from the scheduler's clock)
    previous: date | None  # the last day this job succeeded for (None: never)
    settings: JobsSettings

    def start_of_day(self) -> datetime:
        """00:00 of `day` in the chain's time zone, as UTC."""
        return datetime.combine(self.day, time(0), tzinfo=self.settings.zone).astimezone(UTC)


JobFunc = Callable[[Database, JobContext], Awaitable[str]]


@dataclass(frozen=True)
class Job:
    """A named daily job."""

    name: str
    description: str
    run: JobFunc

    @classmethod
    def day_function(cls, name: str, target: str, description: str) -> Job:
        """A job from an `async def f(db, day)` named "package.module:function", imported when it runs.

        Its return value (None, a dataclass, anything printable) becomes the summary. Importing
        late keeps the scheduler free of import cycles with the domains it runs.
        """
        module_name, _, attr = target.partition(":")
        if not module_name or not attr:
            raise ValueError(f"job {name}: target must look like 'hub.module:function', got {target!r}")

        async def run(db: Database, context: JobContext) -> str:
            function = getattr(importlib.import_module(module_name), attr)
            result = await function(db, context.day)
            if result is None:
                return "done"
            if dataclasses.is_dataclass(result) and not isinstance(result, type):
                return ", ".join(f"{k} {v}" for k, v in dataclasses.asdict(result).items())
            return str(result)

        return cls(name, description, run)


async def expire_points_job(db: Database, context: JobContext) -> str:
    """Expire every points lot whose validity ended before the day began (FIFO, a ledger row per lot)."""
    due_by = context.start_of_day()
    async with db.session() as session, session.begin():
        done = await points.expire_points(session, context.now, due_by=due_by)
    local = due_by.astimezone(context.settings.zone)
    return (
        f"expired {done.points} points in {done.lots} lots of {done.members} members "
        f"(due by {local:%Y-%m-%d %H:%M} {context.settings.timezone})"
    )


async def level_review_job(db: Database, context: JobContext) -> str:
    """The yearly level review, on `jobs.level_review_on` (or the first run after it, after downtime)."""
    review_day = context.settings.review_day(context.day.year)
    if review_day > context.day:
        review_day = context.settings.review_day(context.day.year - 1)
    missed = context.previous is not None and context.previous < review_day
    if context.day != review_day and not missed:
        coming = context.settings.review_day(context.day.year)
        if coming <= context.day:
            coming = context.settings.review_day(context.day.year + 1)
        return f"not due: the review runs on {coming}"
    async with db.session() as session, session.begin():
        done = await levels_jobs.review_levels(session, review_day)
    if done.skipped:
        return f"review of {review_day}: skipped, the levels configuration has no downgrade_review"
    return f"review of {review_day}: {done.reviewed} members reviewed, {len(done.demoted)} demoted"


def _birthday_days(context: JobContext) -> list[date]:
    if context.previous is None:
        return [context.day]
    first = max(
        context.previous + timedelta(days=1), context.day - timedelta(days=BIRTHDAY_CATCH_UP_DAYS - 1)
    )
    return [first + timedelta(days=n) for n in range((context.day - first).days + 1)]


async def birthday_points_job(db: Database, context: JobContext) -> str:
    """Birthday points for members born on the day (and on days skipped since the last run), once a year."""
    days = _birthday_days(context)
    async with db.session() as session, session.begin():
        granted = [await levels_jobs.grant_birthday_points(session, day) for day in days]
    span = days[0].isoformat() if len(days) == 1 else f"{days[0]}..{days[-1]}"
    return f"birthday points for {sum(granted)} members ({span})"


JOBS: tuple[Job, ...] = (
    Job("points.expire", "expire points lots whose validity ended", expire_points_job),
    Job("levels.review", "the yearly level downgrade review (levels configuration)", level_review_job),
    Job("levels.birthday", "birthday points of each member's level, once a year", birthday_points_job),
    # A new job is one line here.
    Job.day_function(
        "members.segments", "hub.member_segments:recompute_segments", "RFM segments and rule tags"
    ),
    Job.day_function(
        "stock.expiry", "hub.batches:expiry_blocks_job", "block SKUs whose stock at a store is all expired"
    ),
    Job(
        "coupons.birthday",
        "birthday coupon packs, days_before each birthday",
        coupon_gifts.birthday_coupons_job,
    ),
    Job.day_function(
        "referrals.settle",
        "hub.referral_sales:settle_job",
        "settle referral commissions past their refund window",
    ),
)

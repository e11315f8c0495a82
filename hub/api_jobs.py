"""Nightly jobs in the head-office API: the jobs and their last runs, and running one by hand.

Both routes are the owner's only (`jobs.read`, `jobs.run`): a job touches every member of
the chain. A run by hand runs the job now for `?day=` (default today in the jobs' time
zone) even if that day already ran — jobs are idempotent — and answers with the run's
record: `status` is `ok` or `failed` (with `error`), as `job_runs` keeps it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from aiohttp import web

from hub.api import DB, SETTINGS, actor, bad_query, principal, query_int
from hub.scheduler import JOBS, due_day, last_runs, local_today, next_run_at, run_by_hand

__all__ = ["add_routes"]


async def get_jobs(request: web.Request) -> web.Response:
    """Each job with its latest run, and the latest `?limit=` runs of all jobs (newest day first)."""
    principal(request).require("jobs.read")
    limit = query_int(request, "limit", 50, 1, 500)
    settings = request.app[SETTINGS].jobs
    db = request.app[DB]
    now = datetime.now(UTC)
    jobs = []
    for job in JOBS:
        latest = await last_runs(db, job=job.name, limit=1)
        jobs.append(
            {
                "name": job.name,
                "description": job.description,
                "scheduled": settings.enabled and job.name not in settings.disabled,
                "last_run": latest[0].as_json() if latest else None,
            }
        )
    return web.json_response(
        {
            "enabled": settings.enabled,
            "nightly_at": settings.nightly_at,
            "timezone": settings.timezone,
            "due_day": due_day(now, settings).isoformat(),
            "next_run_at": next_run_at(now, settings).isoformat().replace("+00:00", "Z"),
            "jobs": jobs,
            "runs": [run.as_json() for run in await last_runs(db, limit=limit)],
        }
    )


async def post_run(request: web.Request) -> web.Response:
    """Run one job now for `?day=` (default today); 404 for an unknown job, 409 while it runs elsewhere."""
    principal(request).require("jobs.run")
    settings = request.app[SETTINGS].jobs
    raw = request.query.get("day")
    day: date | None = None
    if raw is not None:
        try:
            day = date.fromisoformat(raw)
        except ValueError:
            raise bad_query(f"day must be a date like 2026-11-23, got {raw!r}") from None
        today = local_today(datetime.now(UTC), settings)
        if day > today:
            raise bad_query(f"{raw} has not come yet in {settings.timezone}; a job runs for today or earlier")
    record = await run_by_hand(
        request.app[DB], request.match_info["name"], day, settings, started_by=actor(request)
    )
    return web.json_response(record.as_json())


def add_routes(app: web.Application) -> None:
    """Register the jobs routes."""
    app.router.add_get("/api/v1/jobs", get_jobs)
    app.router.add_post("/api/v1/jobs/{name}/run", post_run)

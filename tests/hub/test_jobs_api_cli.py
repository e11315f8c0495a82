"""Nightly jobs by hand: `GET /api/v1/jobs` and `POST /api/v1/jobs/{name}/run` (owner only), and
`storelink-hub jobs list` / `jobs run NAME --day D`."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from hub import auth
from hub.api import make_app
from hub.cli import main
from hub.config import HubSettings
from hub.db import Database, migrate
from hub.scheduler import last_runs, local_today
from hub.stores import add_store

DAY = "2026-03-06"


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    await add_store(database, "shop-1")
    await auth.add_user(database, "boss", "owner-pw", "owner")
    await auth.add_user(database, "mia", "marketing-pw", "marketing")
    yield database
    await database.close()


@pytest.fixture
async def client(db, tmp_path):
    settings = HubSettings(state_dir=tmp_path, jobs={"nightly_at": "02:15", "disabled": ["levels.review"]})
    async with TestClient(TestServer(make_app(db, settings))) as test_client:
        yield test_client


async def _headers(client, name: str, password: str) -> dict[str, str]:
    resp = await client.post("/api/v1/auth/token", json={"name": name, "password": password})
    assert resp.status == 201, await resp.text()
    return {"Authorization": f"Bearer {(await resp.json())['token']}"}


async def test_the_owner_lists_jobs_and_runs_one_by_hand(client, db):
    owner = await _headers(client, "boss", "owner-pw")
    resp = await client.get("/api/v1/jobs", headers=owner)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert (body["nightly_at"], body["timezone"], body["enabled"]) == ("02:15", "Asia/Shanghai", True)
    assert [(j["name"], j["scheduled"], j["last_run"]) for j in body["jobs"]] == [
        ("points.expire", True, None),
        ("levels.review", False, None),
        ("levels.birthday", True, None),
        ("members.segments", True, None),
        ("stock.expiry", True, None),
        ("coupons.birthday", True, None),
        ("referrals.settle", True, None),
    ]
    assert body["runs"] == []

    for expected_runs in (1, 2):  # a day that already ran runs again by hand (the job is idempotent)
        resp = await client.post(f"/api/v1/jobs/points.expire/run?day={DAY}", headers=owner)
        assert resp.status == 200, await resp.text()
        run = await resp.json()
        assert (run["job"], run["day"], run["status"], run["runs"]) == (
            "points.expire",
            DAY,
            "ok",
            expected_runs,
        )
        assert run["started_by"] == "user:boss"
        assert run["summary"].startswith("expired 0 points in 0 lots of 0 members")
        assert run["finished_at"].endswith("Z")

    body = await (await client.get("/api/v1/jobs?limit=5", headers=owner)).json()
    assert body["jobs"][0]["last_run"]["runs"] == 2
    assert [r["job"] for r in body["runs"]] == ["points.expire"]
    # without ?day= it runs for today in the jobs' time zone
    resp = await client.post("/api/v1/jobs/levels.birthday/run", headers=owner)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["day"] == local_today(datetime.now(UTC), HubSettings().jobs).isoformat()


async def test_only_the_owner_may_see_or_run_jobs_and_bad_requests_change_nothing(client, db):
    marketing = await _headers(client, "mia", "marketing-pw")
    for method, path in (("GET", "/api/v1/jobs"), ("POST", "/api/v1/jobs/points.expire/run")):
        resp = await client.request(method, path, headers=marketing)
        assert resp.status == 403, await resp.text()
        assert "jobs." in (await resp.json())["detail"]
    assert (await client.get("/api/v1/jobs")).status == 401

    owner = await _headers(client, "boss", "owner-pw")
    resp = await client.post("/api/v1/jobs/points.expiry/run", headers=owner)
    assert resp.status == 404
    assert (
        "the jobs are points.expire, levels.review, levels.birthday, members.segments, stock.expiry, "
        "coupons.birthday, referrals.settle" in (await resp.json())["detail"]
    )
    resp = await client.post("/api/v1/jobs/points.expire/run?day=6.3.2026", headers=owner)
    assert resp.status == 400
    tomorrow = datetime.now(UTC).date() + timedelta(days=2)
    resp = await client.post(f"/api/v1/jobs/points.expire/run?day={tomorrow}", headers=owner)
    assert resp.status == 400
    assert "has not come yet" in (await resp.json())["detail"]
    assert await last_runs(db) == []


def _cli(config: Path, *args: str) -> None:
    main(["--config", str(config), *args])


def test_cli_runs_and_lists_jobs(tmp_path, capsys):
    config = tmp_path / "hub.toml"
    config.write_text(
        f'database_url = "sqlite+aiosqlite:///{tmp_path / "hub.db"}"\n\n[jobs]\nnightly_at = "04:45"\n'
    )
    _cli(config, "jobs", "run", "points.expire", "--day", DAY)
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"points.expire for {DAY}: ok (run 1x for that day)"
    assert out.splitlines()[1].startswith("expired 0 points in 0 lots of 0 members")

    _cli(config, "jobs", "list")
    out = capsys.readouterr().out
    assert out.startswith("nightly at 04:45 Asia/Shanghai: on")
    assert f"  {DAY} ok (run 1x, last by cli at " in out
    assert "levels.birthday: birthday points of each member's level, once a year\n  never run" in out

    with pytest.raises(SystemExit) as exited:
        _cli(config, "jobs", "run", "points.expiry")
    assert exited.value.code == 2
    assert "no job 'points.expiry'" in capsys.readouterr().err
    future = (date.today() + timedelta(days=3)).isoformat()
    with pytest.raises(SystemExit) as exited:
        _cli(config, "jobs", "run", "levels.birthday", "--day", future)
    assert exited.value.code == 2
    assert "has not come yet" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        _cli(config, "jobs", "run", "points.expire", "--day", "yesterday")
    assert exited.value.code == 2
    assert "a day looks like 2026-11-23" in capsys.readouterr().err

    async def runs() -> list[str]:
        database = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
        try:
            return [run.job for run in await last_runs(database)]
        finally:
            await database.close()

    assert asyncio.run(runs()) == ["points.expire"]

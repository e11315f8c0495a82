"""Service plans: progress as sessions are checked in, the next due day from the store's local
day, completion, the staff's due list with the next booking, member reminders once per
session through the outbox, concurrent check-ins never passing the total, role scoping
(SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from hub import auth
from hub.api import make_app
from hub.appointment_tables import Appointment, ResourceKind
from hub.appointments import book
from hub.appointments_setup import ServiceTerms, add_resource, add_shift, put_service
from hub.appointments_visits import check_in, sweep
from hub.config import HubSettings
from hub.db import Database, migrate
from hub.members import MemberFields, create_member, merge_members
from hub.messaging_tables import Message
from hub.service_plans import create_plan, get_plan
from hub.stores import add_store

SH = ZoneInfo("Asia/Shanghai")
DAY = date(2031, 3, 10)
NOW = datetime(2031, 3, 1, 2, 0, tzinfo=UTC)


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=SH).astimezone(UTC)


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    await add_store(database, "gym-1", "Iron Gym")
    await add_store(database, "gym-2", "Iron Gym East")
    yield database
    await database.close()


@pytest.fixture
async def gym(db):
    ids: dict[str, str] = {}
    async with db.session() as session, session.begin():
        await put_service(
            session, "PT", ServiceTerms("Personal training", 60, [{"kind": "staff", "tag": "pt"}])
        )
        for name in ("Chen", "Zhou"):
            coach = await add_resource(session, "gym-1", ResourceKind.STAFF, name, ["pt"])
            ids[name] = coach.id
            for n in range(0, 40):
                await add_shift(
                    session, coach.id, DAY + timedelta(days=n), time(8), time(20), actor="user:boss"
                )
        ids["member"] = (
            await create_member(session, MemberFields("13800138000", channel="hub", name="Sun"))
        ).id
    return ids


async def _session(
    db: Database, gym: dict[str, str], start: datetime, plan_id: str | None, coach: str = "Chen"
):
    async with db.session() as session, session.begin():
        return await book(
            session,
            "gym-1",
            "PT",
            gym["member"],
            start,
            resources=[gym[coach]],
            plan_id=plan_id,
            actor="u",
            now=NOW,
        )


async def test_progress_next_due_and_completion(db, gym):
    async with db.session() as session, session.begin():
        plan = await create_plan(
            session,
            gym["member"],
            "PT",
            "gym-1",
            sessions=3,
            interval_days=7,
            first_due=DAY,
            actor="user:mgr",
        )
    for n in range(3):
        day = DAY + timedelta(days=7 * n + 1)  # each a day late
        appt = await _session(db, gym, at(day, 19, 0), plan.id if n == 0 else None)
        async with db.session() as session, session.begin():
            done = await check_in(session, appt.id, actor="u", now=at(day, 18, 30), use_pass=False)
        assert done["plan"]["sessions_done"] == n + 1
        if n < 2:
            assert done["plan"]["next_due"] == (day + timedelta(days=7)).isoformat()
            assert done["plan"]["status"] == "active"
    assert done["plan"] == {
        "id": plan.id,
        "sessions_done": 3,
        "sessions_total": 3,
        "next_due": None,
        "status": "completed",
    }
    # a fourth visit of the same service counts as a visit, not towards the finished plan
    extra = await _session(db, gym, at(DAY + timedelta(days=30), 10), None)
    async with db.session() as session, session.begin():
        later = await check_in(
            session, extra.id, actor="u", now=at(DAY + timedelta(days=30), 10), use_pass=False
        )
    assert later["plan"] is None
    async with db.session() as session:
        assert (await get_plan(session, plan.id)).sessions_done == 3


async def test_concurrent_check_ins_never_pass_the_total(db, gym):
    async with db.session() as session, session.begin():
        plan = await create_plan(
            session,
            gym["member"],
            "PT",
            "gym-1",
            sessions=1,
            interval_days=7,
            first_due=DAY,
            actor="user:mgr",
        )
    one = await _session(db, gym, at(DAY, 10), plan.id, "Chen")
    two = await _session(db, gym, at(DAY, 10), plan.id, "Zhou")

    async def go(appointment_id: str):
        async with db.session() as session, session.begin():
            return await check_in(session, appointment_id, actor="u", now=at(DAY, 10), use_pass=False)

    results = await asyncio.gather(go(one.id), go(two.id), return_exceptions=True)
    plans = [r["plan"] for r in results if isinstance(r, dict)]
    assert [p for p in plans if p is not None] == [
        {"id": plan.id, "sessions_done": 1, "sessions_total": 1, "next_due": None, "status": "completed"}
    ]
    async with db.session() as session:
        assert (await get_plan(session, plan.id)).sessions_done == 1


async def test_member_reminders_once_per_session(db, gym):
    async with db.session() as session, session.begin():
        plan = await create_plan(
            session,
            gym["member"],
            "PT",
            "gym-1",
            sessions=2,
            interval_days=7,
            first_due=DAY,
            actor="user:mgr",
        )
    assert (await sweep(db, at(DAY - timedelta(days=5), 9))).plan_reminders == 0  # not yet within 2 days
    assert (await sweep(db, at(DAY - timedelta(days=1), 9))).plan_reminders == 1
    assert (await sweep(db, at(DAY - timedelta(days=1), 10))).plan_reminders == 0
    appt = await _session(db, gym, at(DAY, 10), plan.id)
    async with db.session() as session, session.begin():
        await check_in(session, appt.id, actor="u", now=at(DAY, 10), use_pass=False)
    assert (await sweep(db, at(DAY + timedelta(days=6), 9))).plan_reminders == 1  # session 2, due DAY+7
    async with db.session() as session:
        messages = (await session.scalars(select(Message).where(Message.template == "plan.due"))).all()
    assert sorted((m.params["session"], m.params["due"]) for m in messages) == [
        ("1", DAY.isoformat()),
        ("2", (DAY + timedelta(days=7)).isoformat()),
    ]


@pytest.fixture
async def client(db, tmp_path):
    async with TestClient(TestServer(make_app(db, HubSettings(state_dir=tmp_path)))) as test_client:
        yield test_client


async def _headers(client, db, name: str, role: str, stores=None) -> dict[str, str]:
    await auth.add_user(db, name, "long enough", role, stores)
    resp = await client.post("/api/v1/auth/token", json={"name": name, "password": "long enough"})
    return {"Authorization": f"Bearer {(await resp.json())['token']}"}


async def test_plans_api_due_list_and_role_scoping(db, gym, client):
    manager = await _headers(client, db, "mgr", "store-manager", ["gym-1"])
    stranger = await _headers(client, db, "east", "store-manager", ["gym-2"])
    today = datetime.now(SH).date()
    body = {
        "member_id": gym["member"],
        "service": "PT",
        "store": "gym-1",
        "sessions": 10,
        "interval_days": 3,
        "first_due": (today - timedelta(days=1)).isoformat(),
    }
    resp = await client.post("/api/v1/service-plans", json=body, headers=stranger)
    assert resp.status == 403
    resp = await client.post("/api/v1/service-plans", json={**body, "sessions": 0}, headers=manager)
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["field"] == "sessions"
    resp = await client.post("/api/v1/service-plans", json=body, headers=manager)
    assert resp.status == 201, await resp.text()
    plan = await resp.json()
    assert (plan["sessions_done"], plan["next_due"], plan["status"]) == (0, body["first_due"], "active")

    resp = await client.get("/api/v1/stores/gym-1/service-plans/due?within_days=0", headers=manager)
    due = await resp.json()
    assert [(p["id"], p["overdue"]) for p in due["items"]] == [(plan["id"], True)]
    assert "next_booking" not in due["items"][0]
    assert (await client.get("/api/v1/stores/gym-1/service-plans/due", headers=stranger)).status == 403
    resp = await client.get(f"/api/v1/members/{gym['member']}/service-plans", headers=stranger)
    assert (await resp.json())["items"] == []  # the plan is at a store the stranger cannot see
    resp = await client.get(f"/api/v1/members/{gym['member']}/service-plans", headers=manager)
    assert [p["id"] for p in (await resp.json())["items"]] == [plan["id"]]

    resp = await client.post(f"/api/v1/service-plans/{plan['id']}/cancel", headers=stranger)
    assert resp.status == 403
    resp = await client.post(f"/api/v1/service-plans/{plan['id']}/cancel", headers=manager)
    assert (await resp.json())["status"] == "cancelled"
    resp = await client.post(f"/api/v1/service-plans/{plan['id']}/cancel", headers=manager)
    assert resp.status == 409
    resp = await client.get("/api/v1/stores/gym-1/service-plans/due?within_days=0", headers=manager)
    assert (await resp.json())["items"] == []


async def test_a_merge_moves_bookings_and_plans_to_the_survivor(db, gym):
    async with db.session() as session, session.begin():
        plan = await create_plan(
            session,
            gym["member"],
            "PT",
            "gym-1",
            sessions=4,
            interval_days=7,
            first_due=DAY,
            actor="user:mgr",
        )
        survivor = (await create_member(session, MemberFields("13800138999", channel="hub"))).id
    appt = await _session(db, gym, at(DAY, 10), plan.id)
    async with db.session() as session, session.begin():
        await merge_members(session, gym["member"], survivor)
    async with db.session() as session:
        assert (await get_plan(session, plan.id)).member_id == survivor
        assert (await session.get(Appointment, appt.id)).member_id == survivor
    async with db.session() as session, session.begin():
        done = await check_in(session, appt.id, actor="u", now=at(DAY, 10), use_pass=False)
    assert done["plan"]["sessions_done"] == 1

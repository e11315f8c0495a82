"""Appointments: resource choice with buffer and shifts in the store's time zone, conflicts with the
next free slots, 200 concurrent bookings of one staff member never overlapping (409 problem+json
through the API), group classes with capacity and waitlist, cut-off rules, rescheduling,
check-in taking a punch-card use, no-shows by hand and by the sweep, reminders in the outbox
(SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from hub import auth
from hub.api import make_app
from hub.appointment_tables import Appointment, ApptHold, ResourceKind
from hub.appointments import ClassFull, SlotTaken, book, book_class, cancel, create_class, reschedule
from hub.appointments_setup import AppointmentError, ServiceTerms, add_resource, add_shift, put_service
from hub.appointments_visits import check_in, mark_no_show, sweep
from hub.config import HubSettings
from hub.db import Database, migrate
from hub.members import MemberFields, create_member
from hub.messaging import LogSender
from hub.messaging_settings import MessagingSettings
from hub.messaging_tables import Message
from hub.messaging_worker import build_outbox
from hub.passes import ProductSpec, create_product, issue_manual
from hub.stores import add_store

SH = ZoneInfo("Asia/Shanghai")
DAY = date(2031, 3, 10)  # a Monday in the future, so bookings are ahead of the real clock too
NOW = datetime(2031, 3, 9, 12, 0, tzinfo=UTC)


def at(hour: int, minute: int = 0, day: date = DAY) -> datetime:
    """A local Shanghai time on `day`, in UTC."""
    return datetime.combine(day, time(hour, minute), tzinfo=SH).astimezone(UTC)


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    await add_store(database, "beauty-1", "Lotus Beauty")
    await add_store(database, "beauty-2", "Lotus Beauty East")
    yield database
    await database.close()


@pytest.fixture
async def shop(db):
    """A facial (60 min + 15 min buffer, a facial therapist and a room), two therapists, one room."""
    ids: dict[str, str] = {}
    async with db.session() as session, session.begin():
        await put_service(
            session,
            "FACIAL",
            ServiceTerms(
                "Facial",
                60,
                [{"kind": "staff", "tag": "facial"}, {"kind": "room", "tag": None}],
                buffer_min=15,
                price_fen=19_800,
                change_cutoff_min=120,
            ),
        )
        await put_service(
            session,
            "YOGA",
            ServiceTerms("Yoga class", 60, [{"kind": "staff", "tag": "yoga"}], capacity=2, waitlist=True),
        )
        for name, kind, tags in (
            ("Li", ResourceKind.STAFF, ["facial"]),
            ("Wang", ResourceKind.STAFF, ["facial", "yoga"]),
            ("Room A", ResourceKind.ROOM, []),
            ("Room B", ResourceKind.ROOM, []),
        ):
            ids[name] = (await add_resource(session, "beauty-1", kind, name, tags)).id
        for name in ("Li", "Wang"):
            await add_shift(session, ids[name], DAY, time(10), time(18), actor="user:boss")
        member = await create_member(session, MemberFields("13800138000", channel="hub", name="Zhang"))
        ids["member"] = member.id
        other = await create_member(session, MemberFields("13800138001", channel="hub", name="Zhao"))
        ids["other"] = other.id
    return ids


async def _book(
    db: Database, shop: dict[str, str], start: datetime, now: datetime = NOW, **kw
) -> Appointment:
    async with db.session() as session, session.begin():
        return await book(session, "beauty-1", "FACIAL", shop["member"], start, actor="user:t", now=now, **kw)


async def test_booking_holds_staff_and_room_with_buffer_and_lists_next_free(db, shop):
    first = await _book(db, shop, at(10), resources=[shop["Li"]])
    assert set(first.resources) == {shop["Li"], shop["Room A"]}
    assert first.ends_at == at(11)
    # same therapist in her buffer (until 11:15): refused with the next free starts
    with pytest.raises(SlotTaken) as err:
        await _book(db, shop, at(11), resources=[shop["Li"]])
    assert "staff member with skill 'facial'" in str(err.value)
    assert [f["local"] for f in err.value.next_free] == [
        "2031-03-10 11:15",
        "2031-03-10 11:30",
        "2031-03-10 11:45",
    ]
    assert all(shop["Li"] in f["resources"] for f in err.value.next_free)
    ok = await _book(db, shop, at(11, 15), resources=[shop["Li"]])
    assert ok.resources[0] == shop["Li"] or shop["Li"] in ok.resources
    # any therapist at 10:30: Wang is free, and Room B (Room A is held until 11:15)
    other = await _book(db, shop, at(10, 30))
    assert set(other.resources) == {shop["Wang"], shop["Room B"]}
    # a third at 10:45 finds both therapists (and both rooms) taken
    with pytest.raises(
        SlotTaken, match="no staff member with skill 'facial' is free then; next free: 2031-03-10 11:45"
    ):
        await _book(db, shop, at(10, 45))


async def test_shifts_bound_bookings_in_the_store_time_zone(db, shop):
    with pytest.raises(SlotTaken) as err:  # 17:30 + 60 min runs past the 18:00 end of the shift
        await _book(db, shop, at(17, 30))
    assert err.value.next_free == [] or err.value.next_free[0]["local"].startswith("2031-03-1")
    late = await _book(db, shop, at(17))  # ends 18:00 sharp; the buffer may run past the shift
    assert late.ends_at == at(18)
    with pytest.raises(SlotTaken):
        await _book(db, shop, at(9, 30))  # before the shift
    async with db.session() as session, session.begin():
        with pytest.raises(AppointmentError, match="overlapping"):
            await add_shift(session, shop["Li"], DAY, time(17), time(20), actor="user:boss")
        night = await add_shift(
            session, shop["Li"], DAY + timedelta(days=1), time(22), time(2), actor="user:b"
        )
    assert night.ends_at - night.starts_at == timedelta(hours=4)  # runs past midnight
    assert night.starts_at == at(22, day=DAY + timedelta(days=1))


async def test_refusals_write_nothing(db, shop):
    async with db.session() as session, session.begin():
        with pytest.raises(AppointmentError, match="time still to come"):
            await book(
                session, "beauty-1", "FACIAL", shop["member"], NOW - timedelta(hours=1), actor="u", now=NOW
            )
        with pytest.raises(AppointmentError, match="group class"):
            await book(session, "beauty-1", "YOGA", shop["member"], at(10), actor="u", now=NOW)
        with pytest.raises(AppointmentError, match="does not fit"):
            await book(
                session, "beauty-1", "FACIAL", shop["member"], at(10), resources=[shop["Room A"], shop["Room B"]],
                actor="u", now=NOW,
            )  # fmt: skip
    async with db.session() as session:
        assert (await session.scalars(select(Appointment))).all() == []
        assert (await session.scalars(select(ApptHold))).all() == []


def _overlaps(spans: list[tuple[datetime, datetime]]) -> bool:
    spans = sorted(spans)
    return any(a_end > b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))


async def _headers(client: TestClient, db: Database, name: str, role: str, stores=None) -> dict[str, str]:
    await auth.add_user(db, name, "long enough", role, stores)
    resp = await client.post("/api/v1/auth/token", json={"name": name, "password": "long enough"})
    return {"Authorization": f"Bearer {(await resp.json())['token']}"}


@pytest.fixture
async def client(db, tmp_path):
    async with TestClient(TestServer(make_app(db, HubSettings(state_dir=tmp_path)))) as test_client:
        yield test_client


async def test_200_concurrent_bookings_of_one_staff_member_never_overlap(db, shop, client):
    """Real concurrency: 200 requests at once for overlapping slots of Li; losers get 409 with next free slots."""
    manager = await _headers(client, db, "mgr", "store-manager", ["beauty-1"])
    rng = random.Random(9)
    starts = [at(10) + timedelta(minutes=5 * rng.randrange(0, 90)) for _ in range(200)]  # 10:00 .. 17:25

    async def attempt(start: datetime):
        resp = await client.post(
            "/api/v1/stores/beauty-1/appointments",
            json={
                "service": "FACIAL",
                "member_id": shop["member"],
                "starts_at": start.isoformat(),
                "resources": [shop["Li"]],
            },
            headers=manager,
        )
        return start, resp.status, resp.content_type, await resp.json()

    results = await asyncio.gather(*(attempt(s) for s in starts))
    statuses = [r[1] for r in results]
    assert set(statuses) <= {201, 409}, [r for r in results if r[1] not in (201, 409)][:3]
    won = [(r[0], r[3]) for r in results if r[1] == 201]
    lost = [r for r in results if r[1] == 409]
    assert won
    assert lost
    block = timedelta(minutes=75)  # 60 minutes and the 15-minute buffer
    for start, _, content_type, body in lost:
        assert content_type == "application/problem+json"
        assert body["status"] == 409
        assert "next free" in body["detail"]
        assert isinstance(body["next_free"], list)
        for slot in body["next_free"]:
            assert shop["Li"] in slot["resources"]
        # refused only for a reason: a winner's block overlaps, or the facial would end after the shift
        clash = any(w < start + block and start < w + block for w, _ in won)
        assert clash or start + timedelta(minutes=60) > at(18), start
    async with db.session() as session:
        holds = (await session.scalars(select(ApptHold).where(ApptHold.resource_id == shop["Li"]))).all()
        booked = (await session.scalars(select(Appointment).where(Appointment.status == "booked"))).all()
    assert len(holds) == len(booked) == len(won)
    assert not _overlaps([(h.starts_at, h.ends_at) for h in holds])
    assert not _overlaps([(a.starts_at, a.ends_at + timedelta(minutes=15)) for a in booked])


async def test_a_class_outside_the_coach_shift_is_refused(db, shop):
    async with db.session() as session, session.begin():
        with pytest.raises(SlotTaken, match="staff member with skill 'yoga'"):
            await create_class(session, "beauty-1", "YOGA", at(19), actor="u", now=NOW)


async def test_class_seats(db, shop):
    async with db.session() as session, session.begin():
        cls = await create_class(session, "beauty-1", "YOGA", at(16), actor="u", now=NOW)
        assert cls.resources == [shop["Wang"]]
        members = [shop["member"], shop["other"]]
        for i in range(2):
            members.append((await create_member(session, MemberFields(f"1390000000{i}", channel="hub"))).id)
    seats = []
    for member in members:
        async with db.session() as session, session.begin():
            seats.append(await book_class(session, cls.id, member, actor="u", now=NOW))
    assert [s.status for s in seats] == ["booked", "booked", "waitlisted", "waitlisted"]
    async with db.session() as session, session.begin():
        with pytest.raises(AppointmentError, match="already booked"):
            await book_class(session, cls.id, members[0], actor="u", now=NOW)
    async with db.session() as session, session.begin():
        _, promoted = await cancel(session, seats[0].id, reason="ill", actor="u", now=NOW)
    assert promoted is not None
    assert promoted.id == seats[2].id
    assert promoted.status == "booked"
    # the class held Wang once for every seat: a facial with Wang at 16:30 is refused
    with pytest.raises(SlotTaken):
        await _book(db, shop, at(16, 30), resources=[shop["Wang"]])
    async with db.session() as session, session.begin():
        await put_service(
            session, "PILATES", ServiceTerms("Pilates", 45, [{"kind": "staff", "tag": "yoga"}], capacity=2)
        )
        full = await create_class(session, "beauty-1", "PILATES", at(12), actor="u", now=NOW)
        for member in members[:2]:
            await book_class(session, full.id, member, actor="u", now=NOW)
    async with db.session() as session, session.begin():
        with pytest.raises(ClassFull, match=r"full \(2/2\) and has no waitlist"):
            await book_class(session, full.id, members[2], actor="u", now=NOW)


async def test_cut_off_late_cancel_and_reschedule(db, shop):
    appt = await _book(db, shop, at(14), resources=[shop["Li"]])
    inside = at(13)  # one hour before: inside the two-hour cut-off
    async with db.session() as session, session.begin():
        with pytest.raises(AppointmentError, match="changes close 120 minutes"):
            await reschedule(session, appt.id, at(15), actor="u", now=inside)
    async with db.session() as session, session.begin():
        moved = await reschedule(session, appt.id, at(15), resources=[shop["Wang"]], actor="u", now=NOW)
    assert moved.starts_at == at(15)
    assert shop["Wang"] in moved.resources
    taken = await _book(db, shop, at(14), resources=[shop["Li"]])  # the old slot is free again
    assert taken.status == "booked"
    async with db.session() as session, session.begin():
        with pytest.raises(AppointmentError, match="late=true"):
            await cancel(session, moved.id, reason="busy", actor="u", now=at(14))
    async with db.session() as session, session.begin():
        done, _ = await cancel(session, moved.id, reason="busy", late=True, actor="u", now=at(14))
    assert done.status == "cancelled"
    assert done.late_cancel
    async with db.session() as session:
        assert (
            await session.scalars(select(ApptHold).where(ApptHold.appointment_id == moved.id))
        ).all() == []


FACIAL10 = ProductSpec(
    name="Facial x10", kind="count", sale_sku="CARD-F10", covers_skus=["FACIAL"], uses=10, valid_days=3650
)


async def test_check_in_takes_a_pass_use_once_and_no_pass_means_pay(db, shop):
    async with db.session() as session, session.begin():
        await create_product(session, "FACIAL10", FACIAL10)
        await issue_manual(session, "FACIAL10", shop["member"], actor="user:boss", reason="bought")
    appt = await _book(db, shop, at(10), resources=[shop["Li"]])
    async with db.session() as session, session.begin():
        with pytest.raises(AppointmentError, match="check-in opens"):
            await check_in(session, appt.id, actor="u", now=at(7))
        with pytest.raises(AppointmentError, match="not here"):
            await check_in(session, appt.id, store="beauty-2", actor="u", now=at(9, 50))
    async with db.session() as session, session.begin():
        done = await check_in(session, appt.id, store="beauty-1", actor="store:beauty-1", now=at(9, 50))
    assert done["appointment"]["status"] == "checked_in"
    assert done["pass_use"]["remaining"] == 9
    assert done["to_pay_fen"] == 0
    async with db.session() as session, session.begin():
        with pytest.raises(AppointmentError, match="already checked in"):
            await check_in(session, appt.id, actor="u", now=at(9, 55))
    # the other member has no pass: checked in, pays the price at the till
    async with db.session() as session, session.begin():
        plain = await book(session, "beauty-1", "FACIAL", shop["other"], at(12), actor="u", now=NOW)
    async with db.session() as session, session.begin():
        done = await check_in(session, plain.id, actor="u", now=at(12))
    assert done["pass_use"] is None
    assert done["to_pay_fen"] == 19_800
    assert "no active pass" in done["no_pass_reason"]


async def test_no_show_by_hand_and_by_sweep_and_reminders_once(db, shop):
    early = await _book(db, shop, at(10), resources=[shop["Li"]])
    later = await _book(db, shop, at(15), resources=[shop["Li"]])
    async with db.session() as session, session.begin():
        with pytest.raises(AppointmentError, match="after the appointment has started"):
            await mark_no_show(session, early.id, actor="u", now=at(9))
        marked = await mark_no_show(session, early.id, actor="u", now=at(10, 20))
    assert marked.status == "no_show"
    first = await sweep(db, at(8))  # both within 24 h: one reminder each (the no-show was booked, too)
    assert first.reminders == 1
    assert first.no_shows == 0
    again = await sweep(db, at(8, 5))
    assert again.reminders == 0
    done = await sweep(db, at(16, 40))  # 15:00-16:00 + 30 min grace passed
    assert done.no_shows == 1
    async with db.session() as session:
        status = await session.scalar(select(Appointment.status).where(Appointment.id == later.id))
        messages = (await session.scalars(select(Message).where(Message.member_id == shop["member"]))).all()
    assert status == "no_show"
    assert [m.template for m in messages] == ["appointment.reminder"]
    assert messages[0].params["starts_local"] == "2031-03-10 15:00"


async def test_the_hub_outbox_worker_marks_no_shows_and_sends_reminders(db, shop):
    """The service's worker runs the sweep as a tick: a booking that ended an hour ago becomes a no-show."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    gone, soon = now - timedelta(hours=2), now + timedelta(hours=3)
    async with db.session() as session, session.begin():
        for start in (gone, soon):
            day = start.astimezone(SH).date()
            with contextlib.suppress(AppointmentError):  # shifts of one day are added once
                await add_shift(session, shop["Li"], day, time(0), time(16), actor="u")
                await add_shift(session, shop["Li"], day, time(16), time(0), actor="u")
    past = await _book(db, shop, gone, resources=[shop["Li"]], now=gone - timedelta(days=1))
    coming = await _book(db, shop, soon, resources=[shop["Li"]], now=soon - timedelta(days=1))
    worker = build_outbox(db, MessagingSettings(interval_s=0.5))
    async with worker:
        for _ in range(100):
            async with db.session() as session:
                status = await session.scalar(select(Appointment.status).where(Appointment.id == past.id))
                reminded = await session.scalar(
                    select(Appointment.reminded).where(Appointment.id == coming.id)
                )
            if status == "no_show" and reminded and worker.senders["sms"].sent:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.1)
    assert status == "no_show"
    assert reminded
    sent = worker.senders["sms"]
    assert isinstance(sent, LogSender)
    assert [m.template for m in sent.sent] == ["appointment.reminder"]


async def test_api_roles_validation_classes_and_visits(db, shop, client):
    owner = await _headers(client, db, "boss", "owner")
    manager = await _headers(client, db, "mgr", "store-manager", ["beauty-1"])
    east = await _headers(client, db, "east", "store-manager", ["beauty-2"])
    service = {"name": "Massage", "duration_min": 30, "needs": [{"kind": "staff", "tag": "massage"}]}
    resp = await client.put("/api/v1/appointment-services/MASSAGE", json=service, headers=manager)
    assert resp.status == 403  # services are chain-wide: head office
    resp = await client.put(
        "/api/v1/appointment-services/MASSAGE", json={**service, "duration_min": 2}, headers=owner
    )
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["field"] == "duration_min"
    resp = await client.put(
        "/api/v1/appointment-services/MASSAGE", json={**service, "needs": [{"kind": "room"}]}, headers=owner
    )
    assert resp.status == 409
    assert "at least one staff member" in (await resp.json())["detail"]
    base = "/api/v1/stores/beauty-1"
    resp = await client.post(
        f"{base}/appointment-resources", json={"kind": "room", "name": "X"}, headers=east
    )
    assert resp.status == 403
    bad_shift = {"resource_id": shop["Li"], "day": "2031-03-11", "start": "25:00", "end": "18:00"}
    resp = await client.post(f"{base}/shifts", json=bad_shift, headers=manager)
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["field"] == "start"
    booking = {"service": "FACIAL", "member_id": shop["member"], "starts_at": "2031-03-10T10:00:00"}
    resp = await client.post(f"{base}/appointments", json=booking, headers=manager)
    assert resp.status == 422  # no time zone
    resp = await client.post(f"{base}/appointments", json={"member_id": shop["member"]}, headers=manager)
    assert resp.status == 422
    resp = await client.post(
        f"{base}/appointments", json={**booking, "starts_at": at(10).isoformat()}, headers=east
    )
    assert resp.status == 403
    resp = await client.get(f"{base}/availability?service=FACIAL&day=2031-03-10", headers=manager)
    slots = (await resp.json())["slots"]
    assert (slots[0]["local"], slots[-1]["local"]) == ("10:00", "17:00")
    first = await client.post(
        f"{base}/appointments", json={**booking, "starts_at": at(10).isoformat(), "resources": [shop["Li"]]},
        headers=manager,
    )  # fmt: skip
    assert first.status == 201, await first.text()
    appt = await first.json()
    # move it onto itself plus half an hour: its own hold does not block it
    resp = await client.post(
        f"/api/v1/appointments/{appt['id']}/reschedule",
        json={"starts_at": at(10, 30).isoformat()},
        headers=manager,
    )
    assert resp.status == 200, await resp.text()
    other = await client.post(
        f"{base}/appointments",
        json={
            **booking,
            "member_id": shop["other"],
            "starts_at": at(12).isoformat(),
            "resources": [shop["Li"]],
        },
        headers=manager,
    )
    assert other.status == 201
    resp = await client.post(
        f"/api/v1/appointments/{appt['id']}/reschedule",
        json={"starts_at": at(12, 15).isoformat(), "resources": [shop["Li"]]},
        headers=manager,
    )
    problem = await resp.json()
    assert resp.status == 409
    assert problem["next_free"][0]["local"] == "2031-03-10 13:15"
    resp = await client.get(f"/api/v1/appointments/{appt['id']}", headers=manager)
    assert (await resp.json())["starts_at"] == "2031-03-10T02:30:00.000000Z"  # unchanged by the refusal
    assert (await client.get(f"/api/v1/appointments/{appt['id']}", headers=east)).status == 403
    resp = await client.get(f"{base}/appointments?day=2031-03-10", headers=manager)
    assert [a["id"] for a in (await resp.json())["items"]] == [appt["id"], (await other.json())["id"]]

    # a class with one seat left and a waitlist, through the API
    resp = await client.post(
        f"{base}/classes", json={"service": "YOGA", "starts_at": at(16).isoformat()}, headers=manager
    )
    assert resp.status == 201, await resp.text()
    yoga = await resp.json()
    seats = []
    for member in (shop["member"], shop["other"], shop["member"]):
        resp = await client.post(
            f"{base}/appointments", json={"member_id": member, "class_id": yoga["id"]}, headers=manager
        )
        seats.append((resp.status, await resp.json()))
    assert [s[0] for s in seats] == [201, 201, 409]
    assert "already booked" in seats[2][1]["detail"]
    third = await _headers(client, db, "mgr2", "store-manager", ["beauty-1"])
    async with db.session() as session, session.begin():
        late = (await create_member(session, MemberFields("13900000009", channel="hub"))).id
    resp = await client.post(
        f"{base}/appointments", json={"member_id": late, "class_id": yoga["id"]}, headers=third
    )
    waiting = await resp.json()
    assert waiting["status"] == "waitlisted"
    resp = await client.post(
        f"/api/v1/appointments/{seats[0][1]['id']}/cancel", json={"reason": "ill"}, headers=manager
    )
    assert (await resp.json())["promoted"] == waiting["id"]
    resp = await client.get(f"{base}/classes?day=2031-03-10", headers=manager)
    assert [(c["id"], c["taken"]) for c in (await resp.json())["items"]] == [(yoga["id"], 2)]
    async with db.session() as session:
        templates = (await session.scalars(select(Message.template).where(Message.member_id == late))).all()
    assert sorted(templates) == ["appointment.promoted", "appointment.waitlisted"]


async def test_shifts_follow_daylight_saving_in_the_store_zone(db):
    await add_store(db, "berlin", "Berlin", timezone="Europe/Berlin")
    async with db.session() as session, session.begin():
        coach = await add_resource(session, "berlin", ResourceKind.STAFF, "Anna", ["yoga"])
        spring = await add_shift(session, coach.id, date(2031, 3, 30), time(1), time(5), actor="u")
        summer = await add_shift(session, coach.id, date(2031, 7, 1), time(9), time(17), actor="u")
    assert spring.ends_at - spring.starts_at == timedelta(hours=3)  # the clocks went forward at 02:00
    assert spring.starts_at == datetime(2031, 3, 30, 0, 0, tzinfo=UTC)
    assert summer.starts_at == datetime(2031, 7, 1, 7, 0, tzinfo=UTC)  # 09:00 CEST


async def test_cancelling_a_class_cancels_its_seats_and_frees_the_coach(db, shop, client):
    manager = await _headers(client, db, "mgr", "store-manager", ["beauty-1"])
    east = await _headers(client, db, "east", "store-manager", ["beauty-2"])
    async with db.session() as session, session.begin():
        cls = await create_class(session, "beauty-1", "YOGA", at(16), actor="u", now=NOW)
        seat = await book_class(session, cls.id, shop["member"], actor="u", now=NOW)
    with pytest.raises(SlotTaken):
        await _book(db, shop, at(16), resources=[shop["Wang"]])
    resp = await client.post(f"/api/v1/classes/{cls.id}/cancel", json={"reason": "coach ill"}, headers=east)
    assert resp.status == 403
    resp = await client.post(
        f"/api/v1/classes/{cls.id}/cancel", json={"reason": "coach ill"}, headers=manager
    )
    body = await resp.json()
    assert resp.status == 200, body
    assert body["cancelled"] is True
    assert body["cancelled_appointments"] == [seat.id]
    again = await client.post(f"/api/v1/classes/{cls.id}/cancel", json={"reason": "x"}, headers=manager)
    assert again.status == 409
    freed = await _book(db, shop, at(16), resources=[shop["Wang"]])  # the coach is free again
    assert freed.status == "booked"
    async with db.session() as session:
        row = await session.get(Appointment, seat.id)
        templates = (
            await session.scalars(select(Message.template).where(Message.member_id == shop["member"]))
        ).all()
    assert row.status == "cancelled"
    assert row.cancel_reason == "the class was cancelled: coach ill"
    assert "appointment.class_cancelled" in templates

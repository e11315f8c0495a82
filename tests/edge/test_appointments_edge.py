"""Appointments at the store's desk: the day's bookings and check-in go to a real hub through
Mosquitto (RPC), a punch-card use is taken once even when the desk retries, and without a
hub the desk says so clearly."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from edge.access import create_pairing_code
from edge.daemon import EdgeDaemon
from hub import auth
from hub.members import MemberFields, create_member
from hub.passes import ProductSpec, create_product, issue_manual, passes_of
from hub.stores import add_store
from tests.conftest import BrokerSetup, hub_settings, running_hub
from tests.edge.conftest import Api, edge_settings, seed

SH = ZoneInfo("Asia/Shanghai")


async def test_check_in_needs_a_key_and_the_hub(api):
    status, body = await api.call("POST", "/api/v1/appointments/a-1/check-in", {})
    assert status == 428
    assert "Idempotency-Key" in body["detail"]
    status, body = await api.call("POST", "/api/v1/appointments/a-1/check-in", {}, key="c-1")
    assert status == 503
    assert "checking in" in body["detail"]
    status, body = await api.call("GET", "/api/v1/appointments/today?day=tomorrow")
    assert status == 400
    status, body = await api.call(
        "POST", "/api/v1/appointments/a-1/check-in", {"use_pass": "maybe"}, key="c-2"
    )
    assert status == 422


async def _hub(http: aiohttp.ClientSession, method: str, url: str, body: object = None) -> tuple[int, dict]:
    async with http.request(method, url, json=body) as resp:
        return resp.status, await resp.json()


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_desk_lists_the_day_and_checks_in_through_the_hub(tmp_path, database_url, mosquitto_factory):
    mosq = mosquitto_factory(secure=True)
    mqtt = {"host": "127.0.0.1", "port": mosq.port, "username": mosq.hub_user, "password": mosq.hub_password}
    setup = BrokerSetup("mosquitto", {"mqtt": mqtt}, mosq)
    async with running_hub(hub_settings(tmp_path, database_url, setup)) as hub:
        creds = await add_store(hub.db, "shop-1")
        await setup.register("shop-1", creds.password)
        await auth.add_user(hub.db, "boss", "long enough", "owner")
        user = await auth.authenticate(hub.db, "boss", "long enough")
        token = (await auth.issue_token(hub.db, user.id, timedelta(hours=1))).token
        async with hub.db.session() as session, session.begin():
            member = await create_member(session, MemberFields("13800138000", channel="hub", name="张三"))
            spec = ProductSpec(
                name="护理10次", kind="count", sale_sku="CARD-F10", covers_skus=["FACIAL"], uses=10
            )
            await create_product(session, "F10", spec)
            await issue_manual(session, "F10", member.id, actor="user:boss", reason="bought")
        base = f"http://127.0.0.1:{hub.http_port}/api/v1"
        now_local = datetime.now(SH)
        start_local = (now_local + timedelta(minutes=30)).replace(second=0, microsecond=0)
        start_local += timedelta(minutes=-start_local.minute % 15)
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as office:
            service = {"name": "面部护理", "duration_min": 60, "needs": [{"kind": "staff", "tag": "facial"}]}
            status, body = await _hub(office, "PUT", f"{base}/appointment-services/FACIAL", service)
            assert status == 200, body
            status, li = await _hub(
                office,
                "POST",
                f"{base}/stores/shop-1/appointment-resources",
                {"kind": "staff", "name": "李", "tags": ["facial"]},
            )
            assert status == 201, li
            shift = {
                "resource_id": li["id"],
                "day": now_local.date().isoformat(),
                "start": f"{now_local.hour:02d}:00",
                "end": f"{(now_local.hour + 6) % 24:02d}:00",
            }
            status, body = await _hub(office, "POST", f"{base}/stores/shop-1/shifts", shift)
            assert status == 201, body
            booking = {"service": "FACIAL", "member_id": member.id, "starts_at": start_local.isoformat()}
            status, appt = await _hub(office, "POST", f"{base}/stores/shop-1/appointments", booking)
            assert status == 201, appt

        state = tmp_path / "edge"
        seed(state)
        settings = edge_settings(state)
        settings = settings.model_copy(
            update={"mqtt": settings.mqtt.model_copy(update={"port": mosq.port, "password": creds.password})}
        )
        async with EdgeDaemon(settings) as daemon, aiohttp.ClientSession() as http:
            async with asyncio.timeout(10):
                await daemon.link.connected.wait()
            desk = Api(http, f"http://127.0.0.1:{daemon.http_port}", daemon)
            code = await create_pairing_code(daemon.journal)
            status, body = await desk.call("POST", "/api/v1/devices/pair", {"code": code, "name": "前台"})
            assert status == 201, body
            desk.device = body["token"]
            await desk.sign_in("c1")

            day = start_local.date().isoformat()
            status, listing = await desk.call("GET", f"/api/v1/appointments/today?day={day}")
            assert status == 200, listing
            assert [
                (i["id"], i["member_name"], i["phone_masked"], i["service_name"]) for i in listing["items"]
            ] == [(appt["id"], "张三", "138****8000", "面部护理")]
            path = f"/api/v1/appointments/{appt['id']}/check-in"
            status, first = await desk.call("POST", path, {}, key="ci-1")
            assert status == 201, first
            result = first["check_in"]
            assert result["appointment"]["status"] == "checked_in"
            assert result["pass_use"]["remaining"] == 9
            assert result["to_pay_fen"] == 0
            status, retry = await desk.call("POST", path, {}, key="ci-1")
            assert (status, retry) == (201, first)  # the retry takes no second use
            status, again = await desk.call("POST", path, {}, key="ci-2")
            assert status == 409
            assert "already checked in" in again["detail"]
        async with hub.db.session() as session:
            held = await passes_of(session, member.id)
        assert [p["remaining"] for p in held] == [9]

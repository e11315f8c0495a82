"""Stored value in the head-office API: permissions, rules validation, top-up and its refund,
adjustments, ledger, liability report and flags."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from aiohttp.test_utils import TestClient, TestServer

from hub import auth
from hub.api import make_app
from hub.config import HubSettings
from hub.db import Database, migrate
from hub.members import MemberFields, create_member
from hub.stored_value import ledger_day
from hub.stored_value_tables import ReconciliationFlag
from hub.stores import add_store


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    await add_store(database, "shop-1")
    yield database
    await database.close()


@pytest.fixture
async def client(db, tmp_path):
    settings = HubSettings(state_dir=tmp_path)
    async with TestClient(TestServer(make_app(db, settings))) as test_client:
        yield test_client


@pytest.fixture
async def headers(db, client) -> dict[str, dict[str, str]]:
    users = {
        "boss": ("owner", None),
        "cash": ("finance", None),
        "li": ("store-manager", ["shop-1"]),
        "mkt": ("marketing", None),
    }
    found = {}
    for name, (role, stores) in users.items():
        await auth.add_user(db, name, "password-123", role, stores)
        resp = await client.post("/api/v1/auth/token", json={"name": name, "password": "password-123"})
        found[name] = {"Authorization": f"Bearer {(await resp.json())['token']}"}
    return found


@pytest.fixture
async def member(db) -> str:
    async with db.session() as session, session.begin():
        return (await create_member(session, MemberFields("13700000007", channel="hub"))).id


async def test_rules_are_validated_and_need_write_permission(client, headers):
    rules = {
        "tiers": [{"min_fen": 50000, "bonus_fen": 8000}, {"min_fen": 100000, "bonus_fen": 20000}],
        "spending_order": "bonus_first",
    }
    resp = await client.put("/api/v1/stored-value/rules", json=rules, headers=headers["li"])
    assert resp.status == 403
    bad = {"tiers": [{"min_fen": 100000, "bonus_fen": 1}, {"min_fen": 50000, "bonus_fen": 1}]}
    resp = await client.put("/api/v1/stored-value/rules", json=bad, headers=headers["boss"])
    assert resp.status == 422
    assert "increasing min_fen" in (await resp.json())["detail"]
    resp = await client.put("/api/v1/stored-value/rules", json=rules, headers=headers["cash"])
    assert resp.status == 200, await resp.text()
    got = await (await client.get("/api/v1/stored-value/rules", headers=headers["li"])).json()
    assert got["spending_order"] == "bonus_first"
    assert got["tiers"][1] == {"min_fen": 100000, "bonus_fen": 20000, "per_each": False}
    resp = await client.get("/api/v1/stored-value/rules", headers=headers["mkt"])
    assert resp.status == 403


async def test_topup_refund_adjust_and_ledger(client, headers, member):
    rules = {"tiers": [{"min_fen": 50000, "bonus_fen": 8000}], "spending_order": "principal_first"}
    assert (await client.put("/api/v1/stored-value/rules", json=rules, headers=headers["boss"])).status == 200
    url = f"/api/v1/members/{member}/stored-value"
    for body in ({"amount_fen": 0, "payment_method": "cash"}, {"amount_fen": -5, "payment_method": "cash"}):
        resp = await client.post(f"{url}/topups", json=body, headers=headers["boss"])
        assert resp.status == 422
    resp = await client.post(
        "/api/v1/members/nobody/stored-value/topups",
        json={"amount_fen": 100, "payment_method": "cash"},
        headers=headers["boss"],
    )
    assert resp.status == 404
    body = {"amount_fen": 50000, "payment_method": "bank_transfer", "payment_reference": "B-1"}
    resp = await client.post(f"{url}/topups", json=body, headers=headers["li"])
    assert resp.status == 403
    resp = await client.post(f"{url}/topups", json=body, headers=headers["cash"])
    assert resp.status == 201, await resp.text()
    topup = await resp.json()
    assert topup["bonus_fen"] == 8000
    assert topup["balance"] == {"principal_fen": 50000, "bonus_fen": 8000, "total_fen": 58000}
    again = await client.post(f"{url}/topups", json=body, headers=headers["cash"])
    assert again.status == 409
    assert "already used" in (await again.json())["detail"]
    resp = await client.post(
        f"{url}/adjustments", json={"bonus_delta_fen": -9000, "reason": "typo"}, headers=headers["boss"]
    )
    assert resp.status == 409
    resp = await client.post(
        f"{url}/adjustments",
        json={"bonus_delta_fen": -3000, "reason": "goodwill error"},
        headers=headers["boss"],
    )
    assert resp.status == 201
    assert (await resp.json())["actor"] == "user:boss"
    refund_url = f"/api/v1/stored-value/topups/{topup['txn_id']}/refund"
    resp = await client.post(refund_url, json={"reason": "moved away"}, headers=headers["li"])
    assert resp.status == 403
    resp = await client.post(refund_url, json={"reason": "moved away"}, headers=headers["cash"])
    assert resp.status == 200, await resp.text()
    # 5000 of the 8000 bonus left: 5000 clawed back, the 3000 gone is kept from the principal
    assert await resp.json() == {
        "topup_id": topup["txn_id"],
        "member_id": member,
        "clawback_fen": 5000,
        "shortfall_fen": 3000,
        "paid_fen": 47000,
        "balance": {"principal_fen": 0, "bonus_fen": 0, "total_fen": 0},
    }
    account = await (await client.get(url, headers=headers["li"])).json()
    assert account["total_fen"] == 0
    assert account["topups"][0]["refund"]["paid_fen"] == 47000
    ledger = await (await client.get(f"{url}/ledger?limit=2", headers=headers["li"])).json()
    assert [e["kind"] for e in ledger["items"]] == ["topup_refund", "bonus_clawback"]
    assert ledger["next"] == 2
    rest = await (await client.get(f"{url}/ledger?offset=2", headers=headers["li"])).json()
    assert [e["kind"] for e in rest["items"]] == ["adjust", "bonus", "topup"]
    assert rest["next"] is None
    everything = ledger["items"] + rest["items"]
    assert sum(e["principal_delta_fen"] + e["bonus_delta_fen"] for e in everything) == 0


async def test_liability_and_flags(client, headers, db, member):
    day = ledger_day(datetime.now(UTC)).isoformat()
    body = {"amount_fen": 12345, "payment_method": "cash"}
    assert (
        await client.post(f"/api/v1/members/{member}/stored-value/topups", json=body, headers=headers["boss"])
    ).status == 201
    report = await (
        await client.get(f"/api/v1/stored-value/liability?day={day}", headers=headers["cash"])
    ).json()
    assert report["owed_at_end"]["total_fen"] == 12345
    assert report["stores"][0]["store"] is None  # topped up at head office
    scoped = await (
        await client.get(f"/api/v1/stored-value/liability?day={day}", headers=headers["li"])
    ).json()
    assert scoped["owed_at_end"] is None
    assert scoped["stores"] == []
    resp = await client.get("/api/v1/stored-value/liability?day=yesterday", headers=headers["boss"])
    assert resp.status == 400
    async with db.session() as session, session.begin():
        session.add(
            ReconciliationFlag(
                kind="offline_shortfall",
                member_id=member,
                store="shop-1",
                order_id="o-1",
                shortfall_fen=700,
                covered_fen=0,
                note="test",
                resolved=False,
                created_at=datetime.now(UTC),
            )
        )
    flags = await (await client.get("/api/v1/stored-value/flags", headers=headers["li"])).json()
    assert [(f["kind"], f["open_fen"]) for f in flags["items"]] == [("offline_shortfall", 700)]
    flag_id = flags["items"][0]["id"]
    resp = await client.post(
        f"/api/v1/stored-value/flags/{flag_id}/resolve",
        json={"reason": "collected ¥7 cash"},
        headers=headers["li"],
    )
    assert resp.status == 403
    resp = await client.post(
        f"/api/v1/stored-value/flags/{flag_id}/resolve",
        json={"reason": "collected ¥7 cash"},
        headers=headers["cash"],
    )
    assert resp.status == 200
    assert (await resp.json())["resolved_by"] == "user:cash"
    assert (await (await client.get("/api/v1/stored-value/flags", headers=headers["li"])).json())[
        "items"
    ] == []

"""Passes in the head-office API: product CRUD with 422 for nonsense, roles, manual issue,
transfer, revocation, reversal and flags (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from hub import auth
from hub.api import make_app
from hub.config import HubSettings
from hub.db import Database, migrate
from hub.members import MemberFields, create_member
from hub.passes_consume import consume
from hub.stores import add_store

FACIAL10 = {
    "code": "FACIAL10",
    "name": "面部护理10次卡",
    "kind": "count",
    "sale_sku": "CARD-FACIAL10",
    "covers_skus": ["FACIAL"],
    "uses": 10,
    "valid_days": 365,
    "transferable": True,
}


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    await add_store(database, "north")
    await add_store(database, "south")
    yield database
    await database.close()


@pytest.fixture
async def client(db, tmp_path):
    async with TestClient(TestServer(make_app(db, HubSettings(state_dir=tmp_path)))) as test_client:
        yield test_client


async def _headers(client, db, name: str, role: str, stores: list[str] | None = None) -> dict[str, str]:
    await auth.add_user(db, name, "long enough", role, stores)
    resp = await client.post("/api/v1/auth/token", json={"name": name, "password": "long enough"})
    return {"Authorization": f"Bearer {(await resp.json())['token']}"}


async def _member(db: Database, phone: str) -> str:
    async with db.session() as session, session.begin():
        return (await create_member(session, MemberFields(phone, channel="hub"))).id


async def test_products_crud_and_nonsense_is_422(client, db):
    boss = await _headers(client, db, "boss", "owner")
    resp = await client.post("/api/v1/pass-products", json=FACIAL10, headers=boss)
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["uses"] == 10
    again = await client.post("/api/v1/pass-products", json=FACIAL10, headers=boss)
    assert again.status == 409
    same_sku = await client.post("/api/v1/pass-products", json={**FACIAL10, "code": "OTHER"}, headers=boss)
    assert same_sku.status == 409
    assert "already sells" in (await same_sku.json())["detail"]
    for nonsense in (
        {**FACIAL10, "code": "X1", "sale_sku": "S1", "kind": "period"},
        {**FACIAL10, "code": "X2", "sale_sku": "S2", "uses": -3},
        {**FACIAL10, "code": "X3", "sale_sku": "S3", "covers_skus": []},
        {**FACIAL10, "code": "bad code", "sale_sku": "S4"},
    ):
        bad = await client.post("/api/v1/pass-products", json=nonsense, headers=boss)
        assert bad.status == 422, nonsense
        assert bad.content_type == "application/problem+json"
    terms = {k: v for k, v in FACIAL10.items() if k != "code"}
    put = await client.put("/api/v1/pass-products/FACIAL10", json={**terms, "uses": 12}, headers=boss)
    assert (await put.json())["uses"] == 12
    missing = await client.put("/api/v1/pass-products/NOPE", json=terms, headers=boss)
    assert missing.status == 404
    retired = await client.delete("/api/v1/pass-products/FACIAL10", headers=boss)
    assert (await retired.json())["active"] is False
    listed = await (await client.get("/api/v1/pass-products?active=true", headers=boss)).json()
    assert listed["items"] == []


async def test_roles_read_and_write(client, db):
    finance = await _headers(client, db, "cfo", "finance")
    boss = await _headers(client, db, "boss", "owner")
    assert (await client.get("/api/v1/pass-products", headers=finance)).status == 200
    assert (await client.post("/api/v1/pass-products", json=FACIAL10, headers=finance)).status == 403
    manager = await _headers(client, db, "li", "store-manager", ["north"])
    assert (await client.post("/api/v1/pass-products", json=FACIAL10, headers=manager)).status == 201
    member = await _member(db, "13800000001")
    gift = {"product_code": "FACIAL10", "reason": "birthday gift", "store": "south"}
    assert (await client.post(f"/api/v1/members/{member}/passes", json=gift, headers=manager)).status == 403
    assert (await client.post(f"/api/v1/members/{member}/passes", json=gift, headers=boss)).status == 201


async def test_issue_transfer_reverse_revoke_with_ledger(client, db):
    boss = await _headers(client, db, "boss", "owner")
    await client.post("/api/v1/pass-products", json=FACIAL10, headers=boss)
    mum = await _member(db, "13800000001")
    son = await _member(db, "13800000002")
    no_reason = await client.post(
        f"/api/v1/members/{mum}/passes", json={"product_code": "FACIAL10"}, headers=boss
    )
    assert no_reason.status == 422
    unknown = await client.post(
        "/api/v1/members/nobody/passes", json={"product_code": "FACIAL10", "reason": "gift"}, headers=boss
    )
    assert unknown.status == 404
    resp = await client.post(
        f"/api/v1/members/{mum}/passes",
        json={"product_code": "FACIAL10", "reason": "gift", "quantity": 2},
        headers=boss,
    )
    first, second = (await resp.json())["items"]
    async with db.session() as session, session.begin():
        use = await consume(session, "north", mum, "FACIAL", pass_id=first["pass_id"])
    moved = await client.post(
        f"/api/v1/passes/{first['pass_id']}/transfer",
        json={"to_member_id": son, "reason": "for my son"},
        headers=boss,
    )
    assert moved.status == 200, await moved.text()
    assert (await moved.json())["member_id"] == son
    back = await client.post(
        f"/api/v1/pass-txns/{use['txn_id']}/reverse", json={"reason": "double"}, headers=boss
    )
    assert (await back.json())["remaining"] == 10
    twice = await client.post(
        f"/api/v1/pass-txns/{use['txn_id']}/reverse", json={"reason": "x"}, headers=boss
    )
    assert twice.status == 409
    revoke = await client.post(
        f"/api/v1/passes/{second['pass_id']}/revoke", json={"reason": "wrong"}, headers=boss
    )
    assert (await revoke.json())["status"] == "revoked"
    assert (
        await client.post(f"/api/v1/passes/{second['pass_id']}/revoke", json={"reason": "x"}, headers=boss)
    ).status == 409
    detail = await (await client.get(f"/api/v1/passes/{first['pass_id']}", headers=boss)).json()
    assert [row["kind"] for row in detail["ledger"]] == ["issue", "consume", "transfer", "reverse"]
    assert sum(row["uses"] for row in detail["ledger"]) == detail["pass"]["remaining"] == 10
    assert detail["ledger"][2]["actor"] == "user:boss"
    mum_view = await (await client.get(f"/api/v1/members/{mum}/passes?all=true", headers=boss)).json()
    assert [p["status"] for p in mum_view["items"]] == ["revoked"]
    son_ledger = await (await client.get(f"/api/v1/members/{son}/pass-ledger", headers=boss)).json()
    assert len(son_ledger["items"]) == 4
    flags = await (await client.get("/api/v1/pass-flags", headers=boss)).json()
    assert flags["items"] == []

"""Promotion authoring at the hub: versions kept, invalid rules refused at authoring time with
field paths (percent > 100, threshold <= 0, overlapping exclusive rules of equal priority,
unknown store/level/segment), a concurrent change refused, preview with the engine the tills
run, and publishing each store's rule set (scope by store, future starts included, ended and
archived ones left out), with the roles (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from hub import auth
from hub.api import make_app
from hub.config import HubSettings
from hub.db import Database, migrate
from hub.models import StoreSnapshot
from hub.promotion_tables import PromotionPublication
from hub.promotions import rule_set_for
from hub.stores import add_store
from protocol.promotion_rules import Cart, RuleSet
from protocol.promotions import evaluate

NOW = datetime.now(UTC)


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    for store in ("shop-1", "shop-2"):
        await add_store(database, store)
    yield database
    await database.close()


@pytest.fixture
async def client(db):
    for name, role, stores in (
        ("boss", "owner", None),
        ("mia", "marketing", None),
        ("li", "store-manager", ["shop-1"]),
    ):
        await auth.add_user(db, name, f"{name}-password", role, stores)
    async with TestClient(TestServer(make_app(db, HubSettings()))) as test_client:
        yield test_client


async def _headers(client: TestClient, name: str) -> dict[str, str]:
    resp = await client.post("/api/v1/auth/token", json={"name": name, "password": f"{name}-password"})
    return {"Authorization": f"Bearer {(await resp.json())['token']}"}


THRESHOLD = {"kind": "threshold", "name": "满100减20", "threshold_fen": 10_000, "amount_fen": 2000}
EVENING = {
    "kind": "percent_off",
    "name": "晚市生鲜7折",
    "off_bp": 3000,
    "scope": {"categories": ["fresh"]},
    "window": {"hours": [{"start": "20:00", "end": "23:59"}]},
}


def _cart(store: str = "shop-1", **extra: Any) -> dict[str, Any]:
    return {
        "store": store,
        "local_time": "2026-11-24T20:30:00+08:00",
        "lines": [
            {"line_id": "l1", "sku": "APPLE", "category": "fresh", "qty": "2", "unit_price_fen": 3000},
            {"line_id": "l2", "sku": "COLA", "category": "drinks", "qty": "10", "unit_price_fen": 500},
        ],
        **extra,
    }


async def _create(client: TestClient, headers: dict[str, str], rule: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/api/v1/promotions", json={"rule": rule}, headers=headers)
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def test_each_change_is_a_new_version_and_a_stale_change_is_refused(client):
    mia = await _headers(client, "mia")
    created = await _create(client, mia, THRESHOLD)
    assert (created["version"], created["status"], created["rule"]["id"]) == (1, "active", created["id"])
    url = f"/api/v1/promotions/{created['id']}"
    changed = {**THRESHOLD, "amount_fen": 2500, "name": "满100减25"}
    resp = await client.put(url, json={"rule": changed, "version": 1, "note": "richer"}, headers=mia)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["version"] == 2
    resp = await client.put(url, json={"rule": THRESHOLD, "version": 1}, headers=mia)
    assert resp.status == 409
    assert "at version 2, not 1" in (await resp.json())["detail"]
    resp = await client.post(f"{url}/archive", headers=mia)
    assert (await resp.json())["status"] == "archived"
    body = await (await client.get(url, headers=mia)).json()
    assert [(v["version"], v["status"], v["rule"]["amount_fen"]) for v in body["versions"]] == [
        (1, "active", 2000),
        (2, "active", 2500),
        (3, "archived", 2500),
    ]
    assert body["versions"][1]["note"] == "richer"


@pytest.mark.parametrize(
    ("rule", "field", "words"),
    [
        ({**EVENING, "off_bp": 15_000}, "rule.off_bp", "more than 100 %"),
        ({**THRESHOLD, "threshold_fen": 0}, "rule.threshold_fen", "above 0"),
        ({**THRESHOLD, "threshold_fen": -100}, "rule.threshold_fen", "above 0"),
        ({**THRESHOLD, "stores": ["shop-9"]}, "rule.stores.0", "no store"),
        ({**THRESHOLD, "member_levels": ["gold"]}, "rule.member_levels.0", "no level"),
        ({**THRESHOLD, "member_segments": ["whales"]}, "rule.member_segments.0", "neither an RFM segment"),
        ({**THRESHOLD, "id": "mine"}, "rule.id", "gives the promotion its id"),
    ],
)
async def test_invalid_rules_are_refused_at_authoring_time_with_field_paths(client, db, rule, field, words):
    mia = await _headers(client, "mia")
    resp = await client.post("/api/v1/promotions", json={"rule": rule}, headers=mia)
    assert resp.status == 422, await resp.text()
    problem = await resp.json()
    assert [e["field"] for e in problem["errors"]] == [field]
    assert words in problem["errors"][0]["message"]
    assert (await (await client.get("/api/v1/promotions", headers=mia)).json())["items"] == []


async def test_overlapping_exclusive_rules_of_equal_priority_are_refused(client):
    mia = await _headers(client, "mia")
    first = await _create(client, mia, {**EVENING, "stackable": False})
    clash = {**EVENING, "name": "生鲜8折", "off_bp": 2000, "stackable": False}
    resp = await client.post("/api/v1/promotions", json={"rule": clash}, headers=mia)
    assert resp.status == 422
    error = (await resp.json())["errors"][0]
    assert error["field"] == "rule.priority"
    assert first["id"] in error["message"]
    # a higher priority says which wins; a store the first does not reach cannot clash either
    assert (await _create(client, mia, {**clash, "priority": 10}))["version"] == 1
    assert await _create(client, mia, {**clash, "window": {"hours": [{"start": "08:00", "end": "10:00"}]}})
    # an archived rule clashes with nothing, and reactivating it is checked again
    await client.post(f"/api/v1/promotions/{first['id']}/archive", headers=mia)
    third = await _create(client, mia, clash)
    resp = await client.post(f"/api/v1/promotions/{first['id']}/activate", headers=mia)
    assert resp.status == 422, await resp.text()
    assert third["id"] in (await resp.json())["errors"][0]["message"]


async def test_only_owner_and_marketing_author_and_everyone_previews_in_scope(client):
    li, boss = await _headers(client, "li"), await _headers(client, "boss")
    resp = await client.post("/api/v1/promotions", json={"rule": THRESHOLD}, headers=li)
    assert resp.status == 403
    await _create(client, boss, THRESHOLD)
    resp = await client.post("/api/v1/promotions/publish", headers=li)
    assert resp.status == 403
    resp = await client.post("/api/v1/promotions/preview", json={"cart": _cart()}, headers=li)
    assert resp.status == 200, await resp.text()
    resp = await client.post("/api/v1/promotions/preview", json={"cart": _cart("shop-2")}, headers=li)
    assert resp.status == 403


async def test_preview_uses_the_engine_on_the_stores_rule_set_and_a_draft(client, db):
    mia = await _headers(client, "mia")
    await _create(client, mia, THRESHOLD)
    await _create(client, mia, EVENING)
    resp = await client.post("/api/v1/promotions/preview", json={"cart": _cart()}, headers=mia)
    assert resp.status == 200, await resp.text()
    result = await resp.json()
    # apples 60.00 at 30 % off = 42.00, cola 50.00: 92.00 is below the 满减's 100.00
    assert (result["subtotal_fen"], result["total_fen"]) == (11_000, 9200)
    async with db.session() as session:
        rules = await rule_set_for(session, "shop-1")
    direct = evaluate(rules, Cart.model_validate(_cart()))
    assert direct.total_fen == result["total_fen"]
    assert [a["name"] for a in result["applied"]] == ["晚市生鲜7折"]
    # before 20:00 the evening markdown is not live and the 满减 applies
    morning = _cart(local_time="2026-11-24T19:59:00+08:00")
    result = await (
        await client.post("/api/v1/promotions/preview", json={"cart": morning}, headers=mia)
    ).json()
    assert (result["total_fen"], [a["name"] for a in result["applied"]]) == (9000, ["满100减20"])
    draft = {"kind": "percent_off", "name": "可乐9折", "off_bp": 1000, "scope": {"skus": ["COLA"]}}
    resp = await client.post(
        "/api/v1/promotions/preview", json={"cart": morning, "draft": draft}, headers=mia
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["total_fen"] == 6000 + 4500 - 2000
    bad = await client.post(
        "/api/v1/promotions/preview",
        json={"cart": morning, "draft": {**draft, "off_bp": 10_001}},
        headers=mia,
    )
    assert bad.status == 422
    assert (await bad.json())["errors"][0]["field"] == "draft.off_bp"
    assert (await (await client.get("/api/v1/promotions", headers=mia)).json())["items"][0][
        "name"
    ] != "可乐9折"


async def test_publish_gives_each_store_the_rules_in_its_scope_including_future_ones(client, db):
    mia = await _headers(client, "mia")
    everywhere = await _create(client, mia, THRESHOLD)
    only_two = await _create(client, mia, {**EVENING, "stores": ["shop-2"]})
    later = await _create(
        client,
        mia,
        {**EVENING, "name": "下周生鲜", "window": {"starts_at": (NOW + timedelta(days=7)).isoformat()}},
    )
    ended = await _create(
        client,
        mia,
        {
            **EVENING,
            "name": "上周生鲜",
            "window": {
                "starts_at": (NOW - timedelta(days=14)).isoformat(),
                "ends_at": (NOW - timedelta(days=7)).isoformat(),
            },
        },
    )
    archived = await _create(client, mia, {**THRESHOLD, "name": "旧满减", "threshold_fen": 20_000})
    await client.post(f"/api/v1/promotions/{archived['id']}/archive", headers=mia)
    resp = await client.post("/api/v1/promotions/publish", headers=mia)
    assert resp.status == 201, await resp.text()
    published = await resp.json()
    assert published["stores"]["shop-1"] == {"version": 1, "rules": 2, "sent": False}
    assert published["stores"]["shop-2"]["rules"] == 3
    async with db.session() as session:
        rows = {r.store: r for r in (await session.scalars(select(StoreSnapshot))).all()}
    shop1 = RuleSet.model_validate(rows["shop-1"].body)
    shop2 = RuleSet.model_validate(rows["shop-2"].body)
    assert shop1.version == shop2.version == published["rule_set_version"]
    assert {r.id for r in shop1.rules} == {everywhere["id"], later["id"]}
    assert {r.id for r in shop2.rules} == {everywhere["id"], only_two["id"], later["id"]}
    assert ended["id"] not in {r.id for r in shop2.rules}
    async with db.session() as session:
        record = await session.get(PromotionPublication, published["rule_set_version"])
    assert record is not None
    assert record.published_by == "user:mia"
    assert record.promotions == {p["id"]: 1 for p in (everywhere, only_two, later, ended)}
    assert record.stores["shop-1"] == {
        "snapshot_version": 1,
        "rules": sorted([everywhere["id"], later["id"]]),
    }
    # publishing again is the next version of each store's snapshot
    resp = await client.post("/api/v1/promotions/publish", json={"stores": ["shop-1"]}, headers=mia)
    assert (await resp.json())["stores"] == {"shop-1": {"version": 2, "rules": 2, "sent": False}}
    resp = await client.post("/api/v1/promotions/publish", json={"stores": ["shop-9"]}, headers=mia)
    assert resp.status == 404

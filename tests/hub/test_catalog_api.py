"""The catalog's HTTP API: head office edits, a store manager links and publishes for their
store but sets no prices, problems name field paths, refusals write nothing (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from edge.catalog import CatalogDocument
from hub import auth
from hub.api import make_app
from hub.config import HubSettings
from hub.db import Database, migrate
from hub.models import StoreSnapshot
from hub.stores import add_store
from tests.hub.test_catalog import COLA, COLA_CASE, HEADER, _bad_1000, _xlsx

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
COLA_BODY = {
    "name": "可口可乐330ml",
    "category": "饮料/碳酸饮料",
    "price_fen": 300,
    "member_price_fen": 250,
    "tax_rate_bp": 1300,
    "barcodes": [COLA],
    "units": [{"unit": "箱", "qty": "24", "barcodes": [COLA_CASE]}],
}


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    for store in ("shop-1", "shop-2"):
        await add_store(database, store)
    yield database
    await database.close()


@pytest.fixture
async def client(db, tmp_path):
    async with TestClient(TestServer(make_app(db, HubSettings(state_dir=tmp_path)))) as test_client:
        yield test_client


@pytest.fixture
async def users(db, client) -> dict[str, dict[str, str]]:
    found = {}
    for name, role, stores in (
        ("boss", "owner", None),
        ("zhao", "regional", ["shop-1", "shop-2"]),
        ("li", "store-manager", ["shop-1"]),
        ("mkt", "marketing", None),
    ):
        await auth.add_user(db, name, "password-123", role, stores)
        resp = await client.post("/api/v1/auth/token", json={"name": name, "password": "password-123"})
        found[name] = {"Authorization": f"Bearer {(await resp.json())['token']}"}
    return found


async def _ok(resp, status: int = 200):
    assert resp.status == status, await resp.text()
    return await resp.json()


async def _refused(resp, status: int, words: str) -> dict:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    body = await resp.json()
    assert words in body["detail"], body
    return body


async def _snapshots(db: Database) -> list[tuple[str, str, int]]:
    async with db.session() as session:
        rows = (
            await session.scalars(select(StoreSnapshot).order_by(StoreSnapshot.store, StoreSnapshot.kind))
        ).all()
    return [(r.store, r.kind, r.version) for r in rows]


async def test_head_office_builds_the_catalog_and_a_store_links_and_publishes(client, users, db):
    boss, li, mkt = users["boss"], users["li"], users["mkt"]
    await _refused(
        await client.post("/api/v1/catalog/categories", json={"path": "饮料"}, headers=li), 403, "may not"
    )
    got = await _ok(
        await client.post("/api/v1/catalog/categories", json={"path": "饮料/碳酸饮料"}, headers=boss), 201
    )
    assert got["path"] == "饮料/碳酸饮料"
    await _ok(await client.post("/api/v1/catalog/categories", json={"path": "饮料"}, headers=boss), 200)
    tree = await _ok(await client.get("/api/v1/catalog/categories", headers=mkt))
    assert [c["path"] for c in tree["items"]] == ["饮料", "饮料/碳酸饮料"]

    created = await _ok(
        await client.put("/api/v1/catalog/products/DRK-002", json=COLA_BODY, headers=boss), 201
    )
    assert created["units"] == [{"unit": "箱", "qty": "24", "barcodes": [COLA_CASE]}]
    assert created["updated_by"] == "user:boss"
    # a GET's answer goes back as it is
    again = await _ok(await client.put("/api/v1/catalog/products/DRK-002", json=created, headers=boss))
    assert again["barcodes"] == [COLA]
    await _refused(
        await client.put("/api/v1/catalog/products/DRK-003", json=COLA_BODY, headers=li), 403, "may not"
    )
    page = await _ok(await client.get("/api/v1/catalog/products?q=kekou&limit=1", headers=li))
    assert page["items"] == []
    page = await _ok(await client.get(f"/api/v1/catalog/products?q={COLA}&category=饮料", headers=li))
    assert [p["sku"] for p in page["items"]] == ["DRK-002"]

    # the store manager links their store's products and publishes; sets no prices
    link = "/api/v1/stores/shop-1/catalog/link"
    await _refused(await client.post(link, json={}, headers=li), 422, "skus")
    assert (await _ok(await client.post(link, json={"all": True}, headers=li)))["linked"] == 1
    await _refused(
        await client.post("/api/v1/stores/shop-2/catalog/link", json={"all": True}, headers=li), 403, "shop-2"
    )
    item = "/api/v1/stores/shop-1/catalog/DRK-002"
    await _refused(await client.patch(item, json={"price_fen": 280}, headers=li), 403, "catalog.price")
    got = await _ok(await client.patch(item, json={"available": False}, headers=li))
    assert (got["available"], got["price_fen"]) == (False, 300)
    got = await _ok(
        await client.patch(item, json={"price_fen": 280, "available": True}, headers=users["zhao"])
    )
    assert (got["linked"], got["available"], got["store_price_fen"], got["price_fen"]) == (
        True,
        True,
        280,
        280,
    )
    view = await _ok(await client.get("/api/v1/stores/shop-1/catalog?linked=true", headers=li))
    assert [i["sku"] for i in view["items"]] == ["DRK-002"]
    await _refused(await client.get("/api/v1/stores/shop-2/catalog", headers=li), 403, "shop-2")

    published = await _ok(await client.post("/api/v1/stores/shop-1/catalog/publish", headers=li), 201)
    assert published == {
        "store": "shop-1",
        "products": 1,
        "catalog_version": 1,
        "prices_version": 1,
        "sent": False,
    }
    assert await _snapshots(db) == [("shop-1", "catalog", 1), ("shop-1", "prices", 1)]
    async with db.session() as session:
        body = (await session.get(StoreSnapshot, ("shop-1", "catalog"))).body
    doc = CatalogDocument.model_validate({**body, "version": 1})
    assert doc.price_overrides == {"DRK-002": 280}
    # publish-all goes to every store that links something; shop-2 links nothing
    answer = await _ok(await client.post("/api/v1/catalog/publish", json={}, headers=boss), 201)
    assert [(i["store"], i["catalog_version"]) for i in answer["items"]] == [("shop-1", 2)]
    await _refused(
        await client.post("/api/v1/stores/shop-2/catalog/publish", headers=boss), 409, "links no products"
    )


async def test_bad_products_get_field_paths_and_write_nothing(client, users, db):
    boss = users["boss"]
    url = "/api/v1/catalog/products/X-1"
    body = await _refused(
        await client.put(
            url, json={**COLA_BODY, "barcodes": ["6954767410389"], "price_fen": -5}, headers=boss
        ),
        422,
        "check digit",
    )
    assert {e["field"] for e in body["errors"]} == {"barcodes", "price_fen"}
    body = await _refused(await client.put(url, json=COLA_BODY, headers=boss), 422, "unknown category")
    assert [e["field"] for e in body["errors"]] == ["category"]
    await _refused(await client.put(url, json={**COLA_BODY, "sku": "X-2"}, headers=boss), 422, "differs")
    resp = await client.put(url, data=b"{", headers={**boss, "Content-Type": "application/json"})
    assert resp.status == 400
    await _refused(await client.get("/api/v1/catalog/products/X-1", headers=boss), 404, "X-1")
    await _refused(await client.get("/api/v1/catalog/products?active=maybe", headers=boss), 400, "active")
    await _refused(
        await client.patch("/api/v1/stores/shop-1/catalog/X-1", json={"available": True}, headers=boss),
        404,
        "X-1",
    )
    assert await _snapshots(db) == []


async def test_import_and_export_over_http(client, users):
    boss = users["boss"]
    await _ok(await client.post("/api/v1/catalog/categories", json={"path": "零食"}, headers=boss), 201)
    data = _xlsx(_bad_1000())
    headers = {**boss, "Content-Type": XLSX}
    report = await _ok(await client.post("/api/v1/catalog/import", data=data, headers=headers))
    assert ([e["row"] for e in report["errors"]], report["written"]) == ([101, 301, 501, 801], False)
    resp = await client.post(
        "/api/v1/catalog/import", data=data, headers={**users["li"], "Content-Type": XLSX}
    )
    assert resp.status == 403
    report = await _ok(
        await client.post("/api/v1/catalog/import?mode=valid-only", data=data, headers=headers)
    )
    assert (report["imported"], report["written"]) == (996, True)
    await _refused(
        await client.post("/api/v1/catalog/import?mode=some", data=data, headers=headers), 400, "mode"
    )
    await _refused(
        await client.post(
            "/api/v1/catalog/import", data=b"a,b\n", headers={**boss, "Content-Type": "text/csv"}
        ),
        422,
        "商品编码",
    )
    resp = await client.get("/api/v1/catalog/export?format=csv", headers=users["li"])
    assert resp.status == 200
    text = (await resp.read()).decode("utf-8-sig")
    assert text.splitlines()[0].split(",")[:3] == [HEADER[0], HEADER[1], HEADER[2]]
    assert len(text.splitlines()) == 997

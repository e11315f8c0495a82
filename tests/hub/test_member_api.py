"""Members in the head-office API: validation, conflicts, store scope, search, birthdays, merge, codes, Excel."""

from __future__ import annotations

import io

import openpyxl
import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from hub import auth
from hub.api import make_app
from hub.config import HubSettings
from hub.db import Database, migrate
from hub.member_io import XLSX
from hub.members import Member
from hub.stores import add_store


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    for store in ("north", "south"):
        await add_store(database, store)
    await auth.add_user(database, "boss", "correct horse", "owner")
    await auth.add_user(database, "li", "battery staple", "store-manager", ["north"])
    await auth.add_user(database, "money", "counting beans", "finance")
    yield database
    await database.close()


@pytest.fixture
async def client(db, tmp_path):
    async with TestClient(TestServer(make_app(db, HubSettings(state_dir=tmp_path)))) as test_client:
        yield test_client


async def _headers(client, name: str, password: str) -> dict[str, str]:
    resp = await client.post("/api/v1/auth/token", json={"name": name, "password": password})
    assert resp.status == 201, await resp.text()
    return {"Authorization": f"Bearer {(await resp.json())['token']}"}


@pytest.fixture
async def boss(client):
    return await _headers(client, "boss", "correct horse")


@pytest.fixture
async def li(client):
    return await _headers(client, "li", "battery staple")


async def _count(db) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(Member)))


async def _create(client, headers, **body):
    resp = await client.post("/api/v1/members", json=body, headers=headers)
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def test_create_validates_and_refuses_duplicates(client, db, boss):
    member = await _create(
        client, boss, phone="+86 138-1234-5678", name="张三", gender="男", birthday="1990-05-01"
    )
    assert (member["phone"], member["gender"], member["channel"], member["source_store"]) == (
        "13812345678",
        "male",
        "hub",
        None,
    )
    resp = await client.post("/api/v1/members", json={"phone": "12345"}, headers=boss)
    assert resp.status == 422
    problem = await resp.json()
    assert problem["errors"][0]["field"] == "phone"
    assert "not a mainland China mobile number" in problem["errors"][0]["message"]
    resp = await client.post("/api/v1/members", json={"phone": "13812345678"}, headers=boss)
    assert resp.status == 409
    assert "already belongs to a member" in (await resp.json())["detail"]
    for bad in ({"phone": "13900000000", "birthday": "2999-01-01"}, {"phone": "13900000000", "gender": "?"}):
        resp = await client.post("/api/v1/members", json=bad, headers=boss)
        assert resp.status == 422, await resp.text()
    resp = await client.post(
        "/api/v1/members", json={"phone": "13900000000", "referrer_id": "nobody"}, headers=boss
    )
    assert resp.status == 422
    assert await _count(db) == 1


async def test_get_update_and_unknown_member(client, db, boss):
    member = await _create(client, boss, phone="13812345678")
    resp = await client.get(f"/api/v1/members/{member['id']}", headers=boss)
    assert (await resp.json())["phone"] == "13812345678"
    resp = await client.get("/api/v1/members/nobody", headers=boss)
    assert resp.status == 404
    resp = await client.patch("/api/v1/members/nobody", json={"name": "x"}, headers=boss)
    assert resp.status == 404
    other = await _create(client, boss, phone="13900000000")
    resp = await client.patch(f"/api/v1/members/{member['id']}", json={"phone": "13900000000"}, headers=boss)
    assert resp.status == 409
    resp = await client.patch(f"/api/v1/members/{member['id']}", json={"phone": "1"}, headers=boss)
    assert resp.status == 422
    resp = await client.patch(f"/api/v1/members/{member['id']}", json={"phone": None}, headers=boss)
    assert resp.status == 422
    resp = await client.patch(
        f"/api/v1/members/{member['id']}",
        json={"name": "李四", "consent_marketing": True, "birthday": "2001-02-03", "phone": "137 0000 0000"},
        headers=boss,
    )
    assert resp.status == 200, await resp.text()
    changed = await resp.json()
    assert (changed["name"], changed["consent_marketing"], changed["birthday"], changed["phone"]) == (
        "李四",
        True,
        "2001-02-03",
        "13700000000",
    )
    resp = await client.patch(f"/api/v1/members/{member['id']}", json={"birthday": None}, headers=boss)
    assert (await resp.json())["birthday"] is None
    assert other["phone"] == "13900000000"


async def test_store_manager_sees_and_changes_only_their_stores_members(client, db, boss, li):
    theirs = await _create(client, li, phone="13800000001")
    assert theirs["source_store"] == "north"  # the manager's only store
    elsewhere = await _create(client, boss, phone="13800000002", source_store="south")
    hub_made = await _create(client, boss, phone="13800000003")
    resp = await client.post(
        "/api/v1/members", json={"phone": "13800000004", "source_store": "south"}, headers=li
    )
    assert resp.status == 403
    for other in (elsewhere, hub_made):
        assert (await client.get(f"/api/v1/members/{other['id']}", headers=li)).status == 404
        resp = await client.patch(f"/api/v1/members/{other['id']}", json={"name": "x"}, headers=li)
        assert resp.status == 404
    page = await (await client.get("/api/v1/members", headers=li)).json()
    assert [m["id"] for m in page["items"]] == [theirs["id"]]
    page = await (await client.get("/api/v1/members", headers=boss)).json()
    assert len(page["items"]) == 3
    money = await _headers(client, "money", "counting beans")
    assert (await client.get(f"/api/v1/members/{theirs['id']}", headers=money)).status == 200
    resp = await client.patch(f"/api/v1/members/{theirs['id']}", json={"name": "x"}, headers=money)
    assert resp.status == 403
    assert (await client.get(f"/api/v1/members/{theirs['id']}/code", headers=money)).status == 403


async def test_search_by_phone_suffix_and_name_with_pages(client, boss):
    for i in range(5):
        await _create(client, boss, phone=f"1380000{i:02d}78", name=f"王{i}")
    await _create(client, boss, phone="13912345678", name="Li Lei")
    page = await (await client.get("/api/v1/members?phone=5678", headers=boss)).json()
    assert [m["phone"] for m in page["items"]] == ["13912345678"]
    page = await (await client.get("/api/v1/members?phone=78&limit=4", headers=boss)).json()
    assert len(page["items"]) == 4
    assert page["next"] == 4
    rest = await (await client.get("/api/v1/members?phone=78&limit=4&offset=4", headers=boss)).json()
    assert len(rest["items"]) == 2
    assert rest["next"] is None
    page = await (await client.get("/api/v1/members?name=li%20l", headers=boss)).json()
    assert [m["name"] for m in page["items"]] == ["Li Lei"]
    page = await (await client.get("/api/v1/members?name=王&phone=0178", headers=boss)).json()
    assert [m["name"] for m in page["items"]] == ["王1"]
    for bad in ("phone=12ab", "phone=123456789012", "limit=0", "offset=-1", "tag=vip", "level=platinum"):
        resp = await client.get(f"/api/v1/members?{bad}", headers=boss)
        assert resp.status == 400, bad


async def test_birthday_list_across_the_year_end(client, boss):
    await _create(client, boss, phone="13800000001", name="甲", birthday="1990-12-31")
    await _create(client, boss, phone="13800000002", name="乙", birthday="1988-01-01")
    await _create(client, boss, phone="13800000003", name="丙", birthday="1988-01-05")
    body = await (await client.get("/api/v1/members/birthdays?from=2026-12-30&days=3", headers=boss)).json()
    assert [(m["name"], m["next_birthday"], m["turns"], m["days_until"]) for m in body["items"]] == [
        ("甲", "2026-12-31", 36, 1),
        ("乙", "2027-01-01", 39, 2),
    ]
    assert (body["from"], body["days"], body["next"]) == ("2026-12-30", 3, None)
    for bad in ("days=0", "days=367", "from=30/12/2026"):
        assert (await client.get(f"/api/v1/members/birthdays?{bad}", headers=boss)).status == 400


async def test_merge_over_the_api(client, db, boss):
    keep = await _create(client, boss, phone="13800000001")
    dup = await _create(client, boss, phone="13800000002", name="李雷")
    resp = await client.post(f"/api/v1/members/{dup['id']}/merge", json={"into": dup["id"]}, headers=boss)
    assert resp.status == 409
    assert "itself" in (await resp.json())["detail"]
    resp = await client.post(f"/api/v1/members/{dup['id']}/merge", json={"into": "nobody"}, headers=boss)
    assert resp.status == 404
    resp = await client.post(f"/api/v1/members/{dup['id']}/merge", json={"into": keep["id"]}, headers=boss)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["name"] == "李雷"
    gone = await (await client.get(f"/api/v1/members/{dup['id']}", headers=boss)).json()
    assert (gone["merged_into"], gone["phone"], gone["released_phone"]) == (keep["id"], None, "13800000002")
    resp = await client.post(f"/api/v1/members/{dup['id']}/merge", json={"into": keep["id"]}, headers=boss)
    assert resp.status == 409
    resp = await client.patch(f"/api/v1/members/{dup['id']}", json={"name": "x"}, headers=boss)
    assert resp.status == 409
    # the freed number can be given to the survivor afterwards
    resp = await client.patch(f"/api/v1/members/{keep['id']}", json={"phone": "13800000002"}, headers=boss)
    assert (await resp.json())["phone"] == "13800000002"
    page = await (await client.get("/api/v1/members", headers=boss)).json()
    assert [m["id"] for m in page["items"]] == [keep["id"]]
    page = await (await client.get("/api/v1/members?include_merged=true", headers=boss)).json()
    assert len(page["items"]) == 2


async def test_member_code_endpoint(client, boss):
    member = await _create(client, boss, phone="13800000001")
    resp = await client.get(f"/api/v1/members/{member['id']}/code", headers=boss)
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    assert body["code"].startswith("96")
    assert len(body["code"]) == 18
    assert body["qr"] == body["code"]
    assert body["expires_at"] > body["refresh_at"]
    assert (await client.get("/api/v1/members/nobody/code", headers=boss)).status == 404


def _xlsx(rows):
    book = openpyxl.Workbook()
    for row in rows:
        book.active.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


async def test_import_and_export_over_the_api(client, db, boss, li):
    bad = _xlsx([["手机号", "姓名"], ["13800000001", "张三"], ["123", "坏"]])
    resp = await client.post("/api/v1/members/import", data=bad, headers={**boss, "Content-Type": XLSX})
    assert resp.status == 422
    problem = await resp.json()
    assert problem["title"] == "Nothing was imported"
    assert problem["errors"] == [
        {
            "field": "row 3: 手机号",
            "message": "'123' is not a mainland China mobile number (11 digits starting with 13-19)",
        }
    ]
    assert await _count(db) == 0
    resp = await client.post(
        "/api/v1/members/import?skip_invalid=true", data=bad, headers={**boss, "Content-Type": XLSX}
    )
    report = await resp.json()
    assert (resp.status, report["imported"], report["skipped"]) == (200, 1, 1)
    resp = await client.post("/api/v1/members/import", data=b"junk", headers=boss)
    assert resp.status == 422
    # a store manager's rows land in their store
    good = _xlsx([["phone"], ["13900000002"]])
    resp = await client.post("/api/v1/members/import", data=good, headers=li)
    assert resp.status == 200, await resp.text()
    resp = await client.get("/api/v1/members/export", headers=li)
    assert resp.status == 200
    assert resp.content_type == XLSX
    assert "attachment" in resp.headers["Content-Disposition"]
    rows = list(
        openpyxl.load_workbook(io.BytesIO(await resp.read())).worksheets[0].iter_rows(values_only=True)
    )
    assert [(r[0], r[4]) for r in rows[1:]] == [("13900000002", "north")]
    resp = await client.get("/api/v1/members/export?phone=0001", headers=boss)
    rows = list(
        openpyxl.load_workbook(io.BytesIO(await resp.read())).worksheets[0].iter_rows(values_only=True)
    )
    assert [r[0] for r in rows[1:]] == ["13800000001"]


async def test_openapi_lists_the_member_routes(client):
    doc = await (await client.get("/api/v1/openapi.json")).json()
    for path in ("/api/v1/members", "/api/v1/members/{member_id}/merge", "/api/v1/members/import"):
        assert path in doc["paths"]
    assert "MemberOut" in doc["components"]["schemas"]
    assert doc["paths"]["/api/v1/members"]["post"]["responses"]["409"]

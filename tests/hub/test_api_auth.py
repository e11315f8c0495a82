"""Head-office API: tokens, 401/403 problem+json, role and store scoping, rate limiting."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select, update

from hub import auth
from hub.api import make_app
from hub.config import HubSettings
from hub.db import Database, migrate
from hub.errors import NotFound, PermissionDenied
from hub.models import ApiToken, User, UserStore
from hub.stores import add_store


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    yield database
    await database.close()


@pytest.fixture
async def client(db, tmp_path):
    settings = HubSettings(state_dir=tmp_path, login_max_failures=3, login_window_s=60)
    async with TestClient(TestServer(make_app(db, settings))) as test_client:
        yield test_client


async def _token(client, name: str, password: str) -> str:
    resp = await client.post("/api/v1/auth/token", json={"name": name, "password": password})
    assert resp.status == 201, await resp.text()
    return (await resp.json())["token"]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_stores_needs_a_token_and_answers_problem_json(client):
    resp = await client.get("/api/v1/stores")
    assert resp.status == 401
    assert resp.content_type == "application/problem+json"
    body = await resp.json()
    assert body["status"] == 401
    assert body["title"] == "Unauthorized"
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    resp = await client.get("/api/v1/stores", headers=_bearer("slh_made-up"))
    assert resp.status == 401


async def test_health_and_openapi_are_public(client):
    resp = await client.get("/api/v1/health")
    assert resp.status == 503  # no broker link in this app
    assert (await resp.json())["database"] is True
    doc = await (await client.get("/api/v1/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    assert "/api/v1/stores" in doc["paths"]
    assert "StoreList" in doc["components"]["schemas"]


async def test_store_manager_sees_only_their_stores(client, db):
    for store in ("north", "south", "east"):
        await add_store(db, store)
    await auth.add_user(db, "boss", "correct horse", "owner")
    await auth.add_user(db, "li", "battery staple", "store-manager", ["north", "east"])
    boss = await _token(client, "boss", "correct horse")
    li = await _token(client, "li", "battery staple")
    owner_view = await (await client.get("/api/v1/stores", headers=_bearer(boss))).json()
    assert [s["id"] for s in owner_view["items"]] == ["east", "north", "south"]
    assert set(owner_view["items"][0]) >= {"id", "name", "online", "last_seen"}
    li_view = await (await client.get("/api/v1/stores", headers=_bearer(li))).json()
    assert [s["id"] for s in li_view["items"]] == ["east", "north"]
    me = await (await client.get("/api/v1/me", headers=_bearer(li))).json()
    assert me == {"name": "li", "role": "store-manager", "stores": ["east", "north"]}


async def test_scope_rules_are_checked_before_writing(db):
    await add_store(db, "north")
    with pytest.raises(ValueError, match="needs --stores"):
        await auth.add_user(db, "r", "long enough", "regional")
    with pytest.raises(NotFound, match="ghost"):
        await auth.add_user(db, "r", "long enough", "regional", ["north", "ghost"])
    with pytest.raises(ValueError, match="owner sees every store"):
        await auth.add_user(db, "o", "long enough", "owner", ["north"])
    with pytest.raises(ValueError, match="unknown role 'cashier'"):
        await auth.add_user(db, "x", "long enough", "cashier")
    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(User)) == 0
        assert await session.scalar(select(func.count()).select_from(UserStore)) == 0


async def test_principal_require_enforces_role_and_store():
    who = auth.Principal(1, "li", auth.Role.STORE_MANAGER, frozenset({"north"}))
    who.require("stores.read", store="north")
    with pytest.raises(PermissionDenied, match="no access to store 'south'"):
        who.require("stores.read", store="south")
    with pytest.raises(PermissionDenied, match=r"may not users\.write"):
        who.require("users.write")


async def test_wrong_password_is_rate_limited(client, db):
    await auth.add_user(db, "boss", "correct horse", "owner")
    for _ in range(3):
        resp = await client.post("/api/v1/auth/token", json={"name": "boss", "password": "guess"})
        assert resp.status == 401
    resp = await client.post("/api/v1/auth/token", json={"name": "boss", "password": "correct horse"})
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) > 0
    assert resp.content_type == "application/problem+json"


async def test_expired_and_revoked_tokens_are_refused(client, db):
    await auth.add_user(db, "boss", "correct horse", "owner")
    token = await _token(client, "boss", "correct horse")
    assert (await client.get("/api/v1/stores", headers=_bearer(token))).status == 200
    assert (await client.delete("/api/v1/auth/token", headers=_bearer(token))).status == 204
    resp = await client.get("/api/v1/stores", headers=_bearer(token))
    assert resp.status == 401
    assert "revoked" in (await resp.json())["detail"]

    token = await _token(client, "boss", "correct horse")
    async with db.session() as session, session.begin():
        await session.execute(update(ApiToken).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    resp = await client.get("/api/v1/stores", headers=_bearer(token))
    assert resp.status == 401
    assert "expired" in (await resp.json())["detail"]


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b'{"name": "boss"}', "application/json", 422),
        (b'{"name": "boss", "password": 5}', "application/json", 422),
        (b'{"name": "boss", "password": "x", "admin": true}', "application/json", 422),
        (b"name=boss", "application/x-www-form-urlencoded", 415),
    ],
)
async def test_malformed_sign_in_gets_4xx_with_a_reason(client, body, content_type, status):
    resp = await client.post("/api/v1/auth/token", data=body, headers={"Content-Type": content_type})
    assert resp.status == status
    problem = await resp.json()
    assert problem["status"] == status
    assert problem["detail"]
    if status == 422:
        assert problem["errors"][0]["field"] in {"password", "admin"}


async def test_password_change_revokes_tokens(client, db):
    await auth.add_user(db, "boss", "correct horse", "owner")
    token = await _token(client, "boss", "correct horse")
    await auth.set_password(db, "boss", "another horse")
    assert (await client.get("/api/v1/me", headers=_bearer(token))).status == 401
    await _token(client, "boss", "another horse")


async def test_parallel_wrong_guesses_cannot_outrun_the_limit(client, db):
    await auth.add_user(db, "boss", "correct horse", "owner")

    async def guess():
        resp = await client.post("/api/v1/auth/token", json={"name": "boss", "password": "nope"})
        return resp.status

    statuses = await asyncio.gather(*(guess() for _ in range(20)))
    assert statuses.count(401) == 3  # login_max_failures in the fixture
    assert statuses.count(429) == 17


async def test_one_address_spraying_names_is_capped(client, db):
    statuses = []
    for i in range(35):
        resp = await client.post("/api/v1/auth/token", json={"name": f"u{i}", "password": "x"})
        statuses.append(resp.status)
    assert statuses[:30] == [401] * 30  # 10 x login_max_failures per address
    assert set(statuses[30:]) == {429}


async def test_control_characters_are_422_on_every_database(client):
    resp = await client.post("/api/v1/auth/token", json={"name": "boss\u0000", "password": "x"})
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["field"] == "name"


async def test_every_route_but_the_public_ones_needs_a_token(client):
    public = {
        ("GET", "/api/v1/health"),
        ("HEAD", "/api/v1/health"),
        ("GET", "/api/v1/openapi.json"),
        ("POST", "/api/v1/auth/token"),
    }
    checked = 0
    for route in client.server.app.router.routes():
        path = route.resource.canonical if route.resource else ""
        if (route.method, path) in public:
            continue
        resp = await client.request(route.method, path)
        assert resp.status == 401, (route.method, path)
        checked += 1
    assert checked >= 3
    assert (await client.get("/not-api/anything")).status == 401
    assert (await client.head("/api/v1/health")).status in {200, 503}


async def test_token_response_is_not_cached(client, db):
    await auth.add_user(db, "boss", "correct horse", "owner")
    resp = await client.post("/api/v1/auth/token", json={"name": "boss", "password": "correct horse"})
    assert resp.headers["Cache-Control"] == "no-store"

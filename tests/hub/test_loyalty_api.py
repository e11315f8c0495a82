"""Levels and points in the head-office API: validated configuration, roles, a member's ledgers,
manual adjustments with the user's name, expiry now; refusals change nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from aiohttp.test_utils import TestClient, TestServer

from hub import auth, points
from hub.api import make_app
from hub.config import HubSettings
from hub.db import Database, migrate
from hub.stores import add_store
from tests.hub.loyalty_helpers import books, new_member, set_levels

LEVELS = {
    "metric": "spend",
    "downgrade_review": False,
    "levels": [
        {"code": "silver", "name": "银卡", "rank": 1, "threshold": 0},
        {"code": "gold", "name": "金卡", "rank": 2, "threshold": 10000, "discount_bp": 9500},
    ],
}


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    await add_store(database, "shop-1")
    await auth.add_user(database, "mia", "marketing-pw", "marketing")
    await auth.add_user(database, "li", "manager-pw", "store-manager", ["shop-1"])
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


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"levels": [{"code": "a", "name": "A", "rank": 1, "threshold": -1}]}, "greater than or equal to 0"),
        (
            {
                "levels": [
                    {"code": "gold", "name": "金", "rank": 2, "threshold": 10000},
                    {"code": "silver", "name": "银", "rank": 1, "threshold": 0},
                ]
            },
            "lowest first",
        ),
        (
            {
                "levels": [
                    {"code": "a", "name": "A", "rank": 1, "threshold": 0},
                    {"code": "a", "name": "B", "rank": 2, "threshold": 5},
                ]
            },
            "unique",
        ),
        ({"levels": [{"code": "a", "name": "A", "rank": 1, "threshold": "100"}]}, "valid integer"),
        (
            {"levels": [{"code": "a", "name": "A", "rank": 1, "threshold": 0, "discount_bp": 0}]},
            "discount_bp",
        ),
        ({"metric": "visits"}, "metric"),
        ({"levels": [], "colour": "red"}, "colour"),
    ],
)
async def test_nonsense_levels_are_refused_with_422_and_change_nothing(client, body, message):
    mia = await _headers(client, "mia", "marketing-pw")
    saved = await (await client.put("/api/v1/loyalty/levels", json=LEVELS, headers=mia)).json()
    assert saved["levels"][1]["points_multiplier_bp"] == 10000  # defaults filled in
    resp = await client.put("/api/v1/loyalty/levels", json=body, headers=mia)
    assert resp.status == 422
    assert resp.content_type == "application/problem+json"
    assert message in await resp.text()
    assert await (await client.get("/api/v1/loyalty/levels", headers=mia)).json() == saved


@pytest.mark.parametrize(
    "body",
    [
        {"registration_points": -5},
        {"redeem": {"max_share_bp": 10001}},
        {"redeem": {"points": 0}},
        {"category_multipliers_bp": {"drinks": "2x"}},
        {"expiry": {"mode": "never"}},
        {"earn_per_fen": 0},
    ],
)
async def test_nonsense_points_rules_are_refused_with_422(client, body):
    mia = await _headers(client, "mia", "marketing-pw")
    before = await (await client.get("/api/v1/loyalty/points-rules", headers=mia)).json()
    resp = await client.put("/api/v1/loyalty/points-rules", json=body, headers=mia)
    assert resp.status == 422, await resp.text()
    assert await (await client.get("/api/v1/loyalty/points-rules", headers=mia)).json() == before


async def test_only_owner_and_marketing_configure_and_held_levels_stay(client, db):
    li = await _headers(client, "li", "manager-pw")
    mia = await _headers(client, "mia", "marketing-pw")
    assert (await client.put("/api/v1/loyalty/levels", json=LEVELS, headers=li)).status == 403
    assert (await client.get("/api/v1/loyalty/levels", headers=li)).status == 200
    saved = await (await client.put("/api/v1/loyalty/levels", json=LEVELS, headers=mia)).json()
    rules = {
        "registration_points": 50,
        "redeem": {"points": 100, "fen": 100, "min_points": 100, "max_share_bp": 3000},
    }
    resp = await client.put("/api/v1/loyalty/points-rules", json=rules, headers=mia)
    assert resp.status == 200
    assert (await resp.json())["redeem"]["max_share_bp"] == 3000
    await new_member(db)  # gets silver
    only_gold = {**LEVELS, "levels": [{"code": "gold", "name": "金卡", "rank": 2, "threshold": 0}]}
    resp = await client.put("/api/v1/loyalty/levels", json=only_gold, headers=mia)
    assert resp.status == 409
    assert "'silver' (1 members)" in (await resp.json())["detail"]
    assert await (await client.get("/api/v1/loyalty/levels", headers=li)).json() == saved


async def test_manual_adjustment_is_audited_and_cannot_overdraw(client, db):
    await set_levels(db, **LEVELS)
    member = await new_member(db)
    mia = await _headers(client, "mia", "marketing-pw")
    url = f"/api/v1/members/{member}/points/adjustments"
    resp = await client.post(url, json={"points": 300, "reason": "补录 11 月 3 日小票"}, headers=mia)
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert body["balance"] == 300
    assert (body["entry"]["kind"], body["entry"]["source"], body["entry"]["note"]) == (
        "adjust",
        "user:mia",
        "补录 11 月 3 日小票",
    )
    refused = await client.post(url, json={"points": -301, "reason": "oops"}, headers=mia)
    assert refused.status == 409
    assert "has 300 points" in (await refused.json())["detail"]
    for bad in (
        {"points": 0, "reason": "x"},
        {"points": 5},
        {"points": 5, "reason": ""},
        {"points": 1.5, "reason": "x"},
    ):
        assert (await client.post(url, json=bad, headers=mia)).status == 422
    assert (
        await client.post(
            "/api/v1/members/nobody/points/adjustments", json={"points": 1, "reason": "x"}, headers=mia
        )
    ).status == 404
    li = await _headers(client, "li", "manager-pw")
    assert (await client.post(url, json={"points": 1, "reason": "x"}, headers=li)).status == 403
    assert (await client.post(url, json={"points": -100, "reason": "兑换礼品"}, headers=mia)).status == 201
    assert await books(db, member) == (200, 200, 200)

    view = await (await client.get(f"/api/v1/members/{member}/points?limit=1", headers=li)).json()
    assert (view["balance"], view["ledger_sum"], view["spendable"]) == (200, 200, 200)
    assert [item["points"] for item in view["items"]] == [-100]
    assert view["next"] == 1
    assert [lot["remaining"] for lot in view["lots"]] == [200]
    level = await (await client.get(f"/api/v1/members/{member}/level", headers=li)).json()
    assert level["level"]["code"] == "silver"
    assert level["history"][0]["source"] == f"member:{member}"
    assert (await client.get("/api/v1/members/nobody/level", headers=li)).status == 404


async def test_expire_now_and_jobs(client, db):
    member = await new_member(db)
    past = datetime.now(UTC) - timedelta(minutes=1)
    async with db.session() as session, session.begin():
        await points.credit(session, member, 40, kind="earn", source="order:x", expires_at=past, now=past)
        await points.credit(
            session, member, 60, kind="earn", source="order:y", expires_at=past + timedelta(days=9), now=past
        )
    mia = await _headers(client, "mia", "marketing-pw")
    resp = await client.post("/api/v1/loyalty/expire", headers=mia)
    assert await resp.json() == {"lots": 1, "points": 40, "members": 1}
    assert await (await client.post("/api/v1/loyalty/expire", headers=mia)).json() == {
        "lots": 0,
        "points": 0,
        "members": 0,
    }
    assert await books(db, member) == (60, 60, 60)
    review = await client.post("/api/v1/loyalty/levels/review?day=2027-01-01", headers=mia)
    assert (await review.json())["skipped"] is True
    assert (await client.post("/api/v1/loyalty/levels/review?day=tomorrow", headers=mia)).status == 400
    birthdays = await client.post("/api/v1/loyalty/birthday-points?day=2027-01-01", headers=mia)
    assert await birthdays.json() == {"day": "2027-01-01", "members": 0}


async def test_the_openapi_document_lists_the_loyalty_routes(client):
    doc = await (await client.get("/api/v1/openapi.json")).json()
    assert {"get", "put"} <= set(doc["paths"]["/api/v1/loyalty/levels"])
    assert "/api/v1/members/{member_id}/points" in doc["paths"]
    assert {"LevelsConfig", "PointsRules", "LevelDef", "RedeemRule"} <= set(doc["components"]["schemas"])

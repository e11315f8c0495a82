"""Stocktakes: snapshot at the start, counts from the store (events, any order, replayed), sales
during the count kept out of the variance, posting once with a second person, cancel, the
stores' transfer scans (ship with scanned quantities, partial receipt, refusals kept), and
the API's role and store checks (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from hub import auth
from hub.api import make_app
from hub.catalog_tables import CatalogCategory, CatalogProduct
from hub.config import HubSettings
from hub.db import Database, migrate
from hub.ingest import ingest_batch
from hub.models import StoreCommand
from hub.stock import StockError, adjust, level
from hub.stock_tables import StockMovement
from hub.stocktake_tables import StockReport, StocktakeScope
from hub.stocktakes import (
    CountIn,
    cancel_stocktake,
    load_stocktake,
    post_stocktake,
    record_counts,
    start_stocktake,
    stocktake_json,
    submit_stocktake,
)
from hub.stores import add_store
from hub.transfers import LineIn, approve, create_transfer
from hub.transfers_views import load_transfer
from protocol import Event, EventBatch

T0 = datetime.now(UTC)


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    for store in ("shop-1", "shop-2", "shop-3"):
        await add_store(database, store)
    async with database.session() as session, session.begin():
        for sku, qty in (("COLA", 20_000), ("APPLE-KG", 8_000), ("CAKE", 4_000)):
            await adjust(session, "shop-1", sku, qty, "opening count", "user:boss")
        drinks = CatalogCategory(name="饮料", path="饮料", created_at=T0)
        session.add(drinks)
        await session.flush()
        for sku, cost, category in (("COLA", 180, drinks.id), ("APPLE-KG", 900, None), ("CAKE", None, None)):
            session.add(
                CatalogProduct(
                    sku=sku,
                    name=sku,
                    category_id=category,
                    base_unit="piece",
                    price_fen=300,
                    cost_fen=cost,
                    tax_rate_bp=1300,
                    open_price=False,
                    pinyin="",
                    active=True,
                    created_at=T0,
                    updated_at=T0,
                    updated_by="user:boss",
                )
            )
    yield database
    await database.close()


class _Seq:
    def __init__(self) -> None:
        self.value = 0

    def next(self) -> int:
        self.value += 1
        return self.value


async def _send(db: Database, store: str, seq: int, kind: str, body: dict, *, epoch: int = 1) -> None:
    event = Event(id=uuid.uuid4(), seq=seq, type=kind, ts=datetime.now(UTC), body=body)
    await ingest_batch(
        db, store, EventBatch(store=store, epoch=epoch, seq_from=seq, seq_to=seq, events=[event])
    )


async def _sell(
    db: Database, seq: int, sku: str, qty: str, closed_at: datetime, *, store: str = "shop-1"
) -> None:
    doc = {
        "id": str(uuid.uuid4()),
        "store": store,
        "number": seq,
        "business_day": "2026-11-24",
        "status": "paid",
        "total_fen": 300,
        "closed_at": closed_at.isoformat(),
        "lines": [{"line_id": "l0", "sku": sku, "qty": qty, "total_fen": 300}],
    }
    await _send(db, store, seq, "order.paid", doc)


async def _start(db: Database, scope=StocktakeScope.STORE, **kwargs) -> str:
    async with db.session() as session, session.begin():
        view = await start_stocktake(session, "shop-1", scope, actor="user:li", **kwargs)
    return view.stocktake.id


async def _report(db: Database, stocktake_id: str) -> dict:
    async with db.session() as session:
        return stocktake_json(await load_stocktake(session, stocktake_id))


def _line(report: dict, sku: str) -> dict:
    return next(x for x in report["lines"] if x["sku"] == sku)


async def _on_hand(db: Database, store: str, sku: str) -> int:
    async with db.session() as session:
        return (await level(session, store, sku)).on_hand_milli


async def _commands(db: Database, store: str, kind: str) -> list[dict]:
    async with db.session() as session:
        rows = await session.scalars(
            select(StoreCommand).where(StoreCommand.store == store, StoreCommand.type == kind)
        )
        return [r.body for r in rows.all()]


async def test_sales_during_the_count_are_not_variances_and_posting_moves_stock_once(db):
    seq = _Seq()
    stocktake_id = await _start(db)
    start = await _report(db, stocktake_id)
    assert _line(start, "COLA")["snapshot"] == "20"
    assert [c["stocktake_id"] for c in await _commands(db, "shop-1", "stocktake.count")] == [stocktake_id]
    counted_at = datetime.now(UTC) + timedelta(minutes=10)
    # 3 colas sold after the snapshot, before the cola shelf was counted: the shelf shows 17.
    await _sell(db, seq.next(), "COLA", "3", counted_at - timedelta(minutes=5))
    # 2 sold after the count: on the shelf when counted, so not in the count nor the variance.
    await _sell(db, seq.next(), "COLA", "2", counted_at + timedelta(minutes=5))
    # A sale made offline before the count started and synced only now: already gone from the shelf.
    await _sell(db, seq.next(), "CAKE", "1", T0 - timedelta(hours=1))
    async with db.session() as session, session.begin():
        await record_counts(
            session,
            stocktake_id,
            [
                CountIn("COLA", 17_000, counted_at),  # exactly right
                CountIn("CAKE", 2_500, counted_at),  # 3 expected: 0.5 missing
                CountIn("APPLE-KG", 8_352, counted_at),  # 0.352 found
                CountIn("TEA", 4_000, counted_at),  # not in the books at all
            ],
            actor="store:shop-1/xiao",
        )
        await submit_stocktake(session, stocktake_id, lines=4)
    report = await _report(db, stocktake_id)
    cola = _line(report, "COLA")
    assert (cola["expected_at_count"], cola["variance"]) == ("17", "0")
    assert (_line(report, "CAKE")["variance"], _line(report, "CAKE")["variance_value_fen"]) == ("-0.5", None)
    apple = _line(report, "APPLE-KG")
    assert (apple["variance"], apple["unit_cost_fen"], apple["variance_value_fen"]) == ("0.352", 900, 317)
    assert (_line(report, "TEA")["snapshot"], _line(report, "TEA")["variance"]) == ("0", "4")
    assert report["summary"]["with_variance"] == 3
    async with db.session() as session, session.begin():
        with pytest.raises(StockError, match="second person"):
            await post_stocktake(session, stocktake_id, actor="user:li")
    async with db.session() as session, session.begin():
        await post_stocktake(session, stocktake_id, actor="user:boss")
    # on-hand = counted + what moved after the count
    assert await _on_hand(db, "shop-1", "COLA") == 15_000
    assert await _on_hand(db, "shop-1", "CAKE") == 2_500
    assert await _on_hand(db, "shop-1", "APPLE-KG") == 8_352
    assert await _on_hand(db, "shop-1", "TEA") == 4_000
    posted = await _report(db, stocktake_id)
    assert posted["state"] == "posted"
    assert (_line(posted, "COLA")["variance"], _line(posted, "APPLE-KG")["variance_value_fen"]) == ("0", 317)
    async with db.session() as session, session.begin():
        with pytest.raises(StockError, match="is posted"):
            await post_stocktake(session, stocktake_id, actor="user:zhao")
    async with db.session() as session:
        kinds = await session.scalar(select(func.count()).where(StockMovement.kind == "stocktake"))
    assert kinds == 3


async def test_counts_arrive_as_store_events_in_parts_in_any_order_and_replays_change_nothing(db):
    stocktake_id = await _start(db, StocktakeScope.SKUS, skus=["COLA", "CAKE"])
    assert (await _commands(db, "shop-1", "stocktake.count"))[0]["skus"] == ["CAKE", "COLA"]
    early, late = datetime.now(UTC), datetime.now(UTC) + timedelta(minutes=1)

    def part(n: int, lines: list[tuple[str, str, datetime]]) -> dict:
        return {
            "report_id": f"sub-1:{n}",
            "stocktake_id": stocktake_id,
            "part": n,
            "parts": 2,
            "total_lines": 3,
            "staff": "xiao",
            "lines": [{"sku": s, "qty": q, "counted_at": t.isoformat()} for s, q, t in lines],
        }

    # head office submits before the store's parts arrive: they are still recorded
    async with db.session() as session, session.begin():
        await submit_stocktake(session, stocktake_id, lines=3)
    # part 2 first, carrying the later recount of COLA
    await _send(
        db, "shop-1", 1, "stocktake.counted", part(2, [("COLA", "19", late), ("APPLE-KG", "1", late)])
    )
    assert (await _report(db, stocktake_id))["summary"]["counted"] == 2
    await _send(db, "shop-1", 2, "stocktake.counted", part(1, [("COLA", "18", early), ("CAKE", "4", early)]))
    report = await _report(db, stocktake_id)
    assert report["state"] == "submitted"
    assert _line(report, "COLA")["counted"] == "19"  # the later count wins
    assert _line(report, "APPLE-KG")["in_scope"] is False  # found, reported, never posted
    # the journal restored: the same reports again under a new epoch
    await _send(db, "shop-1", 1, "stocktake.counted", part(1, [("COLA", "18", early)]), epoch=2)
    assert _line(await _report(db, stocktake_id), "COLA")["counted"] == "19"
    async with db.session() as session, session.begin():
        await post_stocktake(session, stocktake_id, actor="user:boss")
    assert await _on_hand(db, "shop-1", "COLA") == 19_000
    assert await _on_hand(db, "shop-1", "APPLE-KG") == 8_000
    # a count for a posted stocktake is refused, kept, and the store is told; the batch is acked
    await _send(
        db, "shop-1", 3, "stocktake.counted", {**part(1, [("COLA", "5", late)]), "report_id": "sub-2:1"}
    )
    async with db.session() as session:
        refused = (await session.scalars(select(StockReport).where(StockReport.outcome == "refused"))).all()
    assert [(r.id, r.ref) for r in refused] == [("sub-2:1", stocktake_id)]
    assert "is posted" in refused[0].detail
    assert any("could not take the count" in m["text"] for m in await _commands(db, "shop-1", "message"))
    assert await _on_hand(db, "shop-1", "COLA") == 19_000
    # a count of another store's stocktake is refused too
    await _send(db, "shop-2", 1, "stocktake.counted", {**part(1, []), "report_id": "x:1"})
    async with db.session() as session:
        row = await session.get(StockReport, "x:1")
    assert row is not None
    assert row.outcome == "refused"
    assert "not a count of this store" in row.detail


async def test_posting_waits_for_every_counted_line_uncounted_are_skipped_or_zero(db):
    stocktake_id = await _start(db, StocktakeScope.CATEGORY, category="饮料")
    report = await _report(db, stocktake_id)
    assert [x["sku"] for x in report["lines"]] == ["COLA"]
    async with db.session() as session, session.begin():
        await submit_stocktake(session, stocktake_id, lines=1)
    async with db.session() as session, session.begin():
        with pytest.raises(StockError, match="only 0 have arrived"):
            await post_stocktake(session, stocktake_id, actor="user:boss")
    async with db.session() as session, session.begin():
        await record_counts(session, stocktake_id, [CountIn("COLA", 20_000, datetime.now(UTC))], actor="x")
        await post_stocktake(session, stocktake_id, actor="user:boss")
    assert await _on_hand(db, "shop-1", "COLA") == 20_000
    # a second count, nothing counted: "zero" empties the shelf in the books, "skip" leaves it
    second = await _start(db, StocktakeScope.SKUS, skus=["CAKE"])
    async with db.session() as session, session.begin():
        await submit_stocktake(session, second)
        await post_stocktake(session, second, actor="user:boss", uncounted="zero")
    assert await _on_hand(db, "shop-1", "CAKE") == 0


async def test_one_open_count_per_store_cancel_and_refusals_write_nothing(db):
    stocktake_id = await _start(db)
    with pytest.raises(StockError, match="already has count"):
        await _start(db)
    async with db.session() as session, session.begin():
        with pytest.raises(StockError, match="negative"):
            await record_counts(session, stocktake_id, [CountIn("COLA", -1, T0)], actor="x")
    async with db.session() as session, session.begin():
        with pytest.raises(StockError, match="submitted"):
            await post_stocktake(session, stocktake_id, actor="user:boss")
    async with db.session() as session, session.begin():
        await cancel_stocktake(session, stocktake_id, actor="user:li", reason="wrong day")
    assert (await _commands(db, "shop-1", "stocktake.cancel"))[0]["stocktake_id"] == stocktake_id
    async with db.session() as session, session.begin():
        with pytest.raises(StockError, match="is cancelled"):
            await record_counts(session, stocktake_id, [CountIn("COLA", 1, T0)], actor="x")
    assert (await _report(db, stocktake_id))["summary"]["counted"] == 0
    await _start(db)  # the store is free for a new count


async def test_concurrent_posts_post_once(db):
    stocktake_id = await _start(db)
    async with db.session() as session, session.begin():
        await record_counts(session, stocktake_id, [CountIn("COLA", 25_000, datetime.now(UTC))], actor="x")
        await submit_stocktake(session, stocktake_id)

    async def post(who: str) -> bool:
        try:
            async with db.session() as session, session.begin():
                await post_stocktake(session, stocktake_id, actor=who)
        except StockError:
            return False
        return True

    results = await asyncio.gather(*(post(f"user:boss{n}") for n in range(6)))
    assert sorted(results) == [False] * 5 + [True]
    assert await _on_hand(db, "shop-1", "COLA") == 25_000


async def test_stores_ship_and_receive_transfers_by_scanning(db):
    async with db.session() as session, session.begin():
        view = await create_transfer(
            session, "shop-1", "shop-2", [LineIn("COLA", 10_000), LineIn("CAKE", 2_000)], actor="user:li"
        )
        transfer_id = view.transfer.id
        await approve(session, transfer_id, actor="user:boss")
    task = (await _commands(db, "shop-1", "transfer.ship"))[0]
    assert task["transfer_id"] == transfer_id
    assert task["lines"] == [
        {"sku": "CAKE", "qty": "2"},
        {"sku": "COLA", "qty": "10"},
    ]
    ship = {
        "report_id": "s-1",
        "transfer_id": transfer_id,
        "staff": "xiao",
        "lines": [{"sku": "COLA", "qty": "8"}],
    }
    await _send(db, "shop-1", 1, "transfer.shipped", ship)
    await _send(db, "shop-1", 1, "transfer.shipped", ship, epoch=2)  # replayed: applied once
    assert await _on_hand(db, "shop-1", "COLA") == 12_000
    assert await _on_hand(db, "shop-1", "CAKE") == 4_000  # not scanned, not shipped
    receive_task = (await _commands(db, "shop-2", "transfer.receive"))[0]
    assert receive_task["lines"] == [{"sku": "COLA", "qty": "8"}]
    # more than shipped without saying so: refused, kept, the store told; nothing moved
    over = {"report_id": "r-0", "transfer_id": transfer_id, "lines": [{"sku": "COLA", "qty": "9"}]}
    await _send(db, "shop-2", 1, "transfer.received", over)
    async with db.session() as session:
        row = await session.get(StockReport, "r-0")
    assert row is not None
    assert row.outcome == "refused"
    assert "only 8 is in transit" in row.detail
    assert await _on_hand(db, "shop-2", "COLA") == 0
    # partial receipt, then the rest with one broken
    part = {"report_id": "r-1", "transfer_id": transfer_id, "lines": [{"sku": "COLA", "qty": "5"}]}
    await _send(db, "shop-2", 2, "transfer.received", part)
    async with db.session() as session:
        assert (await load_transfer(session, transfer_id)).transfer.state == "partially_received"
    rest = {
        "report_id": "r-2",
        "transfer_id": transfer_id,
        "lines": [{"sku": "COLA", "qty": "3", "damaged": "1", "discrepancy": "damaged", "note": "dented"}],
    }
    await _send(db, "shop-2", 3, "transfer.received", rest)
    async with db.session() as session:
        assert (await load_transfer(session, transfer_id)).transfer.state == "received"
        shipped_from_3 = await session.get(StockReport, "s-1")
    assert await _on_hand(db, "shop-2", "COLA") == 7_000
    assert shipped_from_3 is not None
    assert shipped_from_3.outcome == "applied"
    # a store that is not the source cannot ship it
    await _send(db, "shop-3", 1, "transfer.shipped", {**ship, "report_id": "s-9"})
    async with db.session() as session:
        row = await session.get(StockReport, "s-9")
    assert row is not None
    assert row.outcome == "refused"
    assert "not one this store ships" in row.detail


# --------------------------------------------------------------------------- HTTP API


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
        ("wang", "store-manager", ["shop-2"]),
    ):
        await auth.add_user(db, name, "password-123", role, stores)
        resp = await client.post("/api/v1/auth/token", json={"name": name, "password": "password-123"})
        found[name] = {"Authorization": f"Bearer {(await resp.json())['token']}"}
    return found


async def _refused(resp, status: int, words: str) -> None:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    assert words in (await resp.json())["detail"]


async def test_stocktake_api_checks_roles_and_stores(db, client, users):
    url = "/api/v1/stores/shop-1/stocktakes"
    await _refused(await client.post(url, json={"scope": "store"}, headers=users["wang"]), 403, "shop-1")
    await _refused(await client.post(url, json={"scope": "skus"}, headers=users["li"]), 422, "skus")
    await _refused(
        await client.post(url, json={"scope": "skus", "skus": ["COLA"], "x": 1}, headers=users["li"]),
        422,
        "x",
    )
    resp = await client.post(url, json={"scope": "skus", "skus": ["COLA", "CAKE"]}, headers=users["li"])
    assert resp.status == 201, await resp.text()
    stocktake_id = (await resp.json())["id"]
    base = f"/api/v1/stocktakes/{stocktake_id}"
    counts = {"lines": [{"sku": "COLA", "qty": "18.5"}, {"sku": "CAKE", "qty": "4"}]}
    await _refused(await client.post(f"{base}/counts", json=counts, headers=users["wang"]), 403, "shop-1")
    await _refused(
        await client.post(
            f"{base}/counts", json={"lines": [{"sku": "COLA", "qty": "1.0001"}]}, headers=users["li"]
        ),
        422,
        "three decimals",
    )
    resp = await client.post(f"{base}/counts", json=counts, headers=users["li"])
    assert resp.status == 200, await resp.text()
    assert (await client.post(f"{base}/submit", headers=users["li"])).status == 200
    await _refused(await client.post(f"{base}/post", json={}, headers=users["li"]), 403, "stocktakes.approve")
    resp = await client.get(base, headers=users["zhao"])
    report = await resp.json()
    assert report["summary"]["variance_value_fen"] == -270  # 1.5 colas at 1.80
    assert (await client.get(base, headers=users["wang"])).status == 403
    resp = await client.post(f"{base}/post", json={"uncounted": "skip"}, headers=users["zhao"])
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["state"] == "posted"
    await _refused(await client.post(f"{base}/post", json={}, headers=users["boss"]), 409, "is posted")
    assert await _on_hand(db, "shop-1", "COLA") == 18_500
    listed = await (await client.get(url + "?state=posted", headers=users["li"])).json()
    assert [x["id"] for x in listed["items"]] == [stocktake_id]
    reports = await client.get("/api/v1/stores/shop-1/stock-reports?outcome=refused", headers=users["li"])
    assert (await reports.json())["items"] == []

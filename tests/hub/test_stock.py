"""The stock ledger: sales and refunds through ingest move stock exactly once (offline and
replayed alike), concurrent movements add up, negative stock is allowed and flagged,
levels always equal the ledger's sums, adjustments refuse bad input without writing
(SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from fractions import Fraction

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from hub import auth
from hub.api import make_app
from hub.config import HubSettings
from hub.db import Database, migrate
from hub.ingest import ingest_batch
from hub.stock import (
    StockError,
    adjust,
    level,
    levels_for_sku,
    levels_for_store,
    list_flags,
    on_hand,
    parse_qty,
    record_movement,
    to_milli,
)
from hub.stock_sales import stock_from_sales
from hub.stock_tables import MovementKind, StockLevel, StockMovement, StockPendingRefund
from hub.stores import add_store
from protocol import Event, EventBatch

TS = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    for store in ("shop-1", "shop-2"):
        await add_store(database, store)
    yield database
    await database.close()


class Till:
    """Numbers one store's events like an edge's outbox; each batch is delivered `times` times."""

    def __init__(self, db: Database, store: str):
        self.db, self.store, self.seq = db, store, 0

    def event(self, kind: str, body: dict) -> Event:
        self.seq += 1
        return Event(id=uuid.uuid4(), seq=self.seq, type=kind, ts=TS, body=body)

    async def send(self, *events: Event, times: int = 1, epoch: int = 1) -> int:
        """Deliver the batch; return what the hub acknowledged the last time."""
        batch = EventBatch(
            store=self.store, epoch=epoch, seq_from=events[0].seq, seq_to=events[-1].seq, events=list(events)
        )
        for _ in range(times):
            result = await ingest_batch(self.db, self.store, batch)
        return result.acked_through


def order(store: str, number: int, lines: list[tuple[str, str]], status: str = "paid") -> dict:
    """An order document as the till sends it: (sku, qty) per line."""
    return {
        "id": str(uuid.uuid4()),
        "store": store,
        "number": number,
        "business_day": "2026-11-23",
        "status": status,
        "closed_at": TS.isoformat(),
        "total_fen": 100 * len(lines),
        "lines": [
            {"line_id": f"l{i}", "sku": sku, "name": sku, "qty": qty, "total_fen": 100, "refunded_qty": "0"}
            for i, (sku, qty) in enumerate(lines)
        ],
        "tenders": [{"index": 0, "method": "cash", "amount_fen": 100 * len(lines)}],
    }


def refund(doc: dict, lines: list[tuple[str, str]]) -> dict:
    """A refund event body of (line_id, qty)."""
    return {
        "order_id": doc["id"],
        "store": doc["store"],
        "business_day": "2026-11-23",
        "refund": {
            "id": str(uuid.uuid4()),
            "total_fen": 100,
            "reason": "customer changed mind",
            "lines": [{"line_id": line_id, "qty": qty, "amount_fen": 50} for line_id, qty in lines],
            "tenders": {"0": 100},
        },
    }


async def _levels(db: Database, store: str) -> dict[str, int]:
    async with db.session() as session:
        rows, _ = await levels_for_store(session, store, limit=500)
    return {r.sku: r.on_hand_milli for r in rows}


async def _ledger_sums(db: Database) -> dict[tuple[str, str], tuple[int, int]]:
    async with db.session() as session:
        rows = await session.execute(
            select(
                StockMovement.store,
                StockMovement.sku,
                func.sum(StockMovement.qty_milli),
                func.sum(StockMovement.in_transit_milli),
            ).group_by(StockMovement.store, StockMovement.sku)
        )
        return {(r[0], r[1]): (int(r[2]), int(r[3])) for r in rows}


async def _all_levels(db: Database) -> dict[tuple[str, str], tuple[int, int]]:
    async with db.session() as session:
        rows = (await session.scalars(select(StockLevel))).all()
        return {(r.store, r.sku): (r.on_hand_milli, r.in_transit_in_milli) for r in rows}


def _day(store: str) -> list[tuple[str, list[tuple[str, str]], str]]:
    """One day of a store's sales: pieces, weighed goods, a voided order."""
    return [
        ("paid", [("COLA", "2"), ("APPLE-KG", "0.352")], "a"),
        ("paid", [("COLA", "1"), ("COLA", "3")], "b"),
        ("voided", [("COLA", "5")], "c"),
        ("paid", [("APPLE-KG", "1.25"), ("CAKE", "1")], "d"),
    ]


async def test_offline_sync_ends_where_online_would_and_replays_change_nothing(db):
    # shop-1 is online: each sale reaches the hub as it happens, once.
    online = Till(db, "shop-1")
    docs: dict[str, dict] = {}
    for number, (status, lines, key) in enumerate(_day("shop-1"), start=1):
        docs[key] = order("shop-1", number, lines, status)
        await online.send(online.event(f"order.{status}", docs[key]))
    await online.send(online.event("order.refunded", refund(docs["b"], [("l1", "2")])))
    # shop-2 sold the same while offline: the whole day arrives later in one batch, three times,
    # and once more under a new epoch (a re-imaged journal re-sending everything).
    offline = Till(db, "shop-2")
    events, offline_docs = [], {}
    for number, (status, lines, key) in enumerate(_day("shop-2"), start=1):
        offline_docs[key] = order("shop-2", number, lines, status)
        events.append(offline.event(f"order.{status}", offline_docs[key]))
    events.append(offline.event("order.refunded", refund(offline_docs["b"], [("l1", "2")])))
    await offline.send(*events, times=3)
    await offline.send(*events, times=1, epoch=2)

    expected = {"COLA": -(2 + 1 + 3 - 2) * 1000, "APPLE-KG": -(352 + 1250), "CAKE": -1000}
    assert await _levels(db, "shop-1") == expected
    assert await _levels(db, "shop-2") == expected
    # the listener itself, called again with the same documents, adds nothing either
    async with db.session() as session, session.begin():
        await stock_from_sales(session, "shop-2", list(offline_docs.values()), [])
    assert await _levels(db, "shop-2") == expected
    async with db.session() as session:
        sales = await session.scalar(
            select(func.count()).where(StockMovement.store == "shop-2", StockMovement.kind == "sale")
        )
    assert sales == 6  # 2 + 2 + 0 (voided) + 2 lines
    assert await _ledger_sums(db) == await _all_levels(db)


async def test_refunds_put_stock_back_once_even_before_their_order(db):
    till = Till(db, "shop-1")
    doc = order("shop-1", 1, [("COLA", "4"), ("SALMON-KG", "0.5")])
    early = refund(doc, [("l0", "1"), ("l1", "0.125")])
    # the refund's batch is ingested before the order's (two hub instances, events out of order)
    till.seq = 10
    await till.send(till.event("order.refunded", early), times=3)
    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(StockPendingRefund)) == 1
        assert await on_hand(session, "shop-1", "COLA") == 0
    till.seq = 0
    await till.send(till.event("order.paid", doc), times=3)
    later = refund(doc, [("l0", "2")])
    till.seq = 11
    await till.send(till.event("order.refunded", later), times=3)
    assert await _levels(db, "shop-1") == {"COLA": -1000, "SALMON-KG": -375}
    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(StockPendingRefund)) == 0
        kinds = (await session.scalars(select(StockMovement.kind).order_by(StockMovement.id))).all()
    assert sorted(kinds) == ["refund", "refund", "refund", "sale", "sale"]


async def test_odd_documents_are_flagged_and_never_block_the_sync(db):
    till = Till(db, "shop-1")
    doc = order("shop-1", 1, [("COLA", "2"), ("TEA", "2")])
    doc["lines"].append({"line_id": "l9", "qty": "1"})  # no sku
    doc["lines"].append({"line_id": "l8", "sku": "MILK", "qty": "lots"})
    doc["lines"].append("not even a line")
    assert await till.send(till.event("order.paid", doc)) == 1
    bad = refund(doc, [("l0", "1"), ("nope", "1")])
    bad["refund"]["lines"].append({"line_id": "l1", "qty": "-3"})
    assert await till.send(till.event("order.refunded", bad)) == 2  # acknowledged: the sync goes on
    # a refund that waited for its order, which then arrives voided, puts nothing back
    voided = order("shop-1", 2, [("COLA", "1")], status="voided")
    till.seq = 10
    await till.send(till.event("order.refunded", refund(voided, [("l0", "1")])))
    till.seq = 2
    await till.send(till.event("order.voided", voided))
    assert await _levels(db, "shop-1") == {"COLA": -1000, "TEA": -2000}
    async with db.session() as session:
        flags = await list_flags(session, stores=["shop-1"])
        assert await session.scalar(select(func.count()).select_from(StockPendingRefund)) == 0
    assert sorted(f.kind for f in flags) == [
        "unknown_refund_line",
        "unknown_refund_line",
        "unreadable_line",
        "unreadable_line",
        "unreadable_line",
        "unreadable_line",
    ]


async def test_negative_stock_is_allowed_flagged_and_cleared(db):
    till = Till(db, "shop-1")
    await till.send(till.event("order.paid", order("shop-1", 1, [("COLA", "3")])))
    async with db.session() as session:
        now = await level(session, "shop-1", "COLA")
        below, _ = await levels_for_store(session, "shop-1", below_zero=True)
    assert now.on_hand_milli == -3000
    assert now.negative_since is not None
    assert [r.sku for r in below] == ["COLA"]
    async with db.session() as session, session.begin():
        await adjust(session, "shop-1", "COLA", 2000, "found behind the fridge", "user:li")
    async with db.session() as session:
        still = await level(session, "shop-1", "COLA")
    assert still.negative_since == now.negative_since  # the first moment it went negative is kept
    async with db.session() as session, session.begin():
        await adjust(session, "shop-1", "COLA", 1000, "found another", "user:li")
    async with db.session() as session:
        back = await level(session, "shop-1", "COLA")
        below, _ = await levels_for_store(session, "shop-1", below_zero=True)
    assert (back.on_hand_milli, back.negative_since, below) == (0, None, [])


async def _move(db: Database, index: int) -> None:
    async with db.session() as session, session.begin():
        kind, qty = (MovementKind.SALE, -1000) if index % 3 else (MovementKind.TRANSFER_IN, 2500)
        await record_movement(
            session,
            store="shop-1",
            sku="COLA",
            kind=kind,
            qty_milli=qty,
            source_type="test",
            source_id=str(index),
            actor="test",
        )


async def test_concurrent_movements_of_one_sku_add_up(db):
    await asyncio.gather(*(_move(db, i) for i in range(60)))
    # and the same 60 again: every one is a replay of a recorded source, nothing changes
    await asyncio.gather(*(_move(db, i) for i in range(60)))
    receipts = len([i for i in range(60) if i % 3 == 0])
    async with db.session() as session:
        assert await on_hand(session, "shop-1", "COLA") == receipts * 2500 - (60 - receipts) * 1000
        assert await session.scalar(select(func.count()).select_from(StockMovement)) == 60
    assert await _ledger_sums(db) == await _all_levels(db)


async def test_adjustments_refuse_bad_input_and_write_nothing(db):
    cases = [
        (0, MovementKind.ADJUSTMENT, "counted", "of 0 changes nothing"),
        (1000, MovementKind.WASTE, "spoiled", "waste takes stock away"),
        (-1000, MovementKind.ADJUSTMENT, "  ", "needs a reason"),
        (-1000, MovementKind.SALE, "x", "an adjustment is one of"),
    ]
    for delta, kind, reason, message in cases:
        with pytest.raises(StockError, match=message):
            async with db.session() as session, session.begin():
                await adjust(session, "shop-1", "COLA", delta, reason, "user:li", kind=kind)
    async with db.session() as session, session.begin():
        await adjust(
            session, "shop-1", "COLA", -500, "dropped", "user:li", kind=MovementKind.WASTE, reference="r1"
        )
    with pytest.raises(StockError, match="already used"):
        async with db.session() as session, session.begin():
            await adjust(
                session, "shop-1", "COLA", -500, "dropped", "user:li", kind=MovementKind.WASTE, reference="r1"
            )
    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(StockMovement)) == 1
        assert [lv.on_hand_milli for lv in await levels_for_sku(session, "COLA")] == [-500]


def test_quantities_are_exact_thousandths():
    assert [parse_qty(v) for v in ("2", "0.352", 3, " 1.5 ")] == [2000, 352, 3000, 1500]
    assert parse_qty("-1.25", signed=True) == -1250
    for bad, message in (
        ("-1", "negative"),
        ("0.0001", "three decimals"),
        ("abc", "not a number"),
        (1.5, "must be a number"),
    ):
        with pytest.raises(StockError, match=message):
            parse_qty(bad)
    assert [to_milli(Fraction(1, 3)), to_milli(Fraction(2, 3)), to_milli(Fraction(1, 2000))] == [333, 667, 1]


# --------------------------------------------------------------------------- HTTP API


@pytest.fixture
async def client(db, tmp_path):
    async with TestClient(TestServer(make_app(db, HubSettings(state_dir=tmp_path)))) as test_client:
        yield test_client


async def _token(db, client, name: str, role: str, stores: list[str] | None) -> dict[str, str]:
    await auth.add_user(db, name, "password-123", role, stores)
    resp = await client.post("/api/v1/auth/token", json={"name": name, "password": "password-123"})
    return {"Authorization": f"Bearer {(await resp.json())['token']}"}


async def test_stock_api_levels_ledger_and_scoped_adjustments(db, client):
    boss = await _token(db, client, "boss", "owner", None)
    li = await _token(db, client, "li", "store-manager", ["shop-1"])
    till = Till(db, "shop-1")
    await till.send(till.event("order.paid", order("shop-1", 1, [("APPLE-KG", "0.352"), ("COLA", "2")])))
    adj = {"sku": "COLA", "qty": "10", "reason": "opening count"}
    resp = await client.post("/api/v1/stores/shop-1/stock/adjustments", json=adj, headers=li)
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["level"]["on_hand"] == "8"
    # a manager of shop-1 may not touch shop-2: 403 with the reason, nothing written
    resp = await client.post("/api/v1/stores/shop-2/stock/adjustments", json=adj, headers=li)
    assert resp.status == 403
    assert "shop-2" in (await resp.json())["detail"]
    resp = await client.post("/api/v1/stores/shop-9/stock/adjustments", json=adj, headers=boss)
    assert resp.status == 404
    for bad in (
        {**adj, "qty": "1.0001"},
        {**adj, "qty": "-1", "kind": "waste", "reason": ""},
        {**adj, "extra": 1},
    ):
        resp = await client.post("/api/v1/stores/shop-1/stock/adjustments", json=bad, headers=li)
        assert resp.status == 422, bad
        assert resp.content_type == "application/problem+json"
    resp = await client.post(
        "/api/v1/stores/shop-1/stock/adjustments", json={**adj, "qty": "5", "kind": "waste"}, headers=li
    )
    assert resp.status == 409
    assert "negative" in (await resp.json())["detail"]

    resp = await client.get("/api/v1/stores/shop-1/stock", headers=li)
    items = {i["sku"]: i for i in (await resp.json())["items"]}
    assert items["APPLE-KG"]["on_hand"] == "-0.352"
    assert items["APPLE-KG"]["negative_since"] is not None
    assert (items["COLA"]["on_hand"], items["COLA"]["available"], items["COLA"]["in_transit_in"]) == (
        "8",
        "8",
        "0",
    )
    resp = await client.get("/api/v1/stores/shop-1/stock?below_zero=true", headers=li)
    assert [i["sku"] for i in (await resp.json())["items"]] == ["APPLE-KG"]
    resp = await client.get("/api/v1/stores/shop-1/stock?sku=CO&limit=1", headers=li)
    assert [i["sku"] for i in (await resp.json())["items"]] == ["COLA"]
    resp = await client.get("/api/v1/stores/shop-1/stock/COLA/movements?limit=1", headers=li)
    page = await resp.json()
    assert [(m["kind"], m["qty"], m["actor"]) for m in page["items"]] == [("adjustment", "10", "user:li")]
    assert page["next"] == 1
    resp = await client.get("/api/v1/stores/shop-1/stock/COLA/movements?offset=1", headers=li)
    assert [(m["kind"], m["qty"], m["source_type"]) for m in (await resp.json())["items"]] == [
        ("sale", "-2", "order")
    ]
    resp = await client.get("/api/v1/stock/COLA", headers=boss)
    assert [(i["store"], i["on_hand"]) for i in (await resp.json())["items"]] == [("shop-1", "8")]
    resp = await client.get("/api/v1/stores/shop-2/stock", headers=li)
    assert resp.status == 403
    resp = await client.get("/api/v1/stores/shop-1/stock?below_zero=maybe", headers=li)
    assert resp.status == 400

"""Transfers between stores: quantities conserved through every state (partial receipt,
damaged, short, over, close), in-transit visible on its own, refusals write nothing,
concurrent ships ship once, a receipt racing sales ends right, and the API's role and
store checks (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from hub import auth
from hub.api import make_app
from hub.config import HubSettings
from hub.db import Database, migrate
from hub.errors import NotFound
from hub.ingest import ingest_batch
from hub.stock import StockError, adjust, level
from hub.stock_tables import StockLevel, StockMovement
from hub.stores import add_store
from hub.transfers import LineIn, ReceiptLineIn, approve, cancel, close, create_transfer, receive, ship
from hub.transfers_tables import DiscrepancyKind, TransferReceipt
from hub.transfers_views import TransferView, load_transfer
from protocol import Event, EventBatch

TS = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
SHORT, OVER, DAMAGED = DiscrepancyKind.SHORT, DiscrepancyKind.OVER, DiscrepancyKind.DAMAGED


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    for store in ("shop-1", "shop-2", "shop-3"):
        await add_store(database, store)
    async with database.session() as session, session.begin():
        for sku, qty in (("COLA", 20_000), ("APPLE-KG", 8_000), ("CAKE", 4_000)):
            await adjust(session, "shop-1", sku, qty, "opening count", "user:boss")
    yield database
    await database.close()


async def _new(db: Database, lines: list[tuple[str, int]], *, state: str = "draft") -> str:
    async with db.session() as session, session.begin():
        view = await create_transfer(
            session,
            "shop-1",
            "shop-2",
            [LineIn(s, q) for s, q in lines],
            actor="user:li",
            note="for the weekend",
        )
        transfer_id = view.transfer.id
        if state in ("approved", "shipped"):
            await approve(session, transfer_id, actor="user:boss")
        if state == "shipped":
            await ship(session, transfer_id, actor="user:li")
    return transfer_id


async def _view(db: Database, transfer_id: str) -> TransferView:
    async with db.session() as session:
        return await load_transfer(session, transfer_id)


async def _stock(db: Database, store: str, sku: str) -> tuple[int, int]:
    async with db.session() as session:
        got = await level(session, store, sku)
    return got.on_hand_milli, got.in_transit_in_milli


async def _check_conserved(db: Database, transfer_id: str, opening: dict[str, int]) -> TransferView:
    """shipped = received + damaged + lost + in transit (less any excess), line by line and in stock."""
    view = await _view(db, transfer_id)
    for line in view.lines:
        received = line.arrived_milli - line.damaged_milli
        assert line.shipped_milli == received - line.over_milli + line.damaged_milli + line.lost_milli + (
            line.in_transit_milli
        )
        assert line.in_transit_milli >= 0
        src_on_hand, _ = await _stock(db, "shop-1", line.sku)
        dst_on_hand, dst_transit = await _stock(db, "shop-2", line.sku)
        assert opening[line.sku] - src_on_hand == line.shipped_milli
        assert dst_on_hand == received  # the damaged part went to waste
        assert dst_transit == line.in_transit_milli
    async with db.session() as session:
        sums = dict(
            (
                await session.execute(
                    select(
                        StockMovement.store + "/" + StockMovement.sku, func.sum(StockMovement.qty_milli)
                    ).group_by(StockMovement.store, StockMovement.sku)
                )
            ).all()
        )
        levels = {
            f"{r.store}/{r.sku}": r.on_hand_milli for r in (await session.scalars(select(StockLevel))).all()
        }
    assert {k: int(v) for k, v in sums.items()} == levels
    return view


async def test_a_transfer_conserves_quantities_through_every_state(db):
    opening = {"COLA": 20_000, "APPLE-KG": 8_000, "CAKE": 4_000}
    transfer_id = await _new(db, [("COLA", 10_000), ("APPLE-KG", 5_500), ("CAKE", 4_000)])
    view = await _check_conserved(db, transfer_id, opening)
    assert view.transfer.state == "draft"
    async with db.session() as session, session.begin():
        await approve(session, transfer_id, actor="user:boss")
    assert (await _check_conserved(db, transfer_id, opening)).transfer.state == "approved"
    async with db.session() as session, session.begin():
        await ship(session, transfer_id, actor="user:li")
    view = await _check_conserved(db, transfer_id, opening)
    assert view.transfer.state == "shipped"
    assert await _stock(db, "shop-1", "COLA") == (10_000, 0)
    assert await _stock(db, "shop-2", "COLA") == (0, 10_000)  # in transit, not on the shelf

    # first receipt: part of the cola, all the apples with half a kilo crushed
    async with db.session() as session, session.begin():
        await receive(
            session,
            transfer_id,
            [
                ReceiptLineIn("COLA", 6_000),
                ReceiptLineIn("APPLE-KG", 5_500, damaged_milli=500, note="crushed box"),
            ],
            actor="user:wang",
        )
    view = await _check_conserved(db, transfer_id, opening)
    assert view.transfer.state == "partially_received"
    assert await _stock(db, "shop-2", "APPLE-KG") == (5_000, 0)
    assert await _stock(db, "shop-2", "COLA") == (6_000, 4_000)

    # second receipt: three colas, the fourth will not come; one cake more than was sent
    async with db.session() as session, session.begin():
        await receive(
            session,
            transfer_id,
            [
                ReceiptLineIn("COLA", 3_000, discrepancy=SHORT, note="one carton missing"),
                ReceiptLineIn("CAKE", 5_000, discrepancy=OVER, note="an extra cake in the crate"),
            ],
            actor="user:wang",
        )
    view = await _check_conserved(db, transfer_id, opening)
    assert view.transfer.state == "partially_received"  # the missing cola is still in transit until closed
    assert await _stock(db, "shop-2", "COLA") == (9_000, 1_000)
    assert await _stock(db, "shop-2", "CAKE") == (5_000, 0)

    async with db.session() as session, session.begin():
        await close(session, transfer_id, actor="user:boss", reason="carrier confirms the carton is lost")
    view = await _check_conserved(db, transfer_id, opening)
    assert view.transfer.state == "received"
    assert view.transfer.closed_by == "user:boss"
    assert await _stock(db, "shop-2", "COLA") == (9_000, 0)
    lines = {line.sku: line for line in view.lines}
    assert (lines["COLA"].lost_milli, lines["CAKE"].over_milli, lines["APPLE-KG"].damaged_milli) == (
        1000,
        1000,
        500,
    )
    found = sorted((d.sku, d.kind, d.qty_milli, d.resolved) for d in view.discrepancies)
    assert found == [
        ("APPLE-KG", "damaged", 500, True),
        ("CAKE", "over", 1000, False),  # the source's books are off by one cake: for a person to settle
        ("COLA", "short", 1000, True),
    ]
    assert len(view.receipts) == 2
    async with db.session() as session:
        kinds = (
            await session.scalars(
                select(StockMovement.kind)
                .where(StockMovement.source_id == transfer_id)
                .order_by(StockMovement.id)
            )
        ).all()
    assert sorted(kinds) == sorted(
        ["transfer_out"] * 3 + ["transit_in"] * 3 + ["transfer_in"] * 4 + ["waste", "transit_lost"]
    )


async def test_a_full_receipt_needs_no_close(db):
    transfer_id = await _new(db, [("COLA", 2_000)], state="shipped")
    async with db.session() as session, session.begin():
        await receive(session, transfer_id, [ReceiptLineIn("COLA", 2_000)], actor="user:wang")
    view = await _view(db, transfer_id)
    assert (view.transfer.state, view.transfer.closed_by, view.discrepancies) == ("received", None, [])
    with pytest.raises(StockError, match="is received; it can be closed only when shipped"):
        async with db.session() as session, session.begin():
            await close(session, transfer_id, actor="user:boss", reason="x")


async def _snapshot(db: Database, transfer_id: str) -> tuple:
    async with db.session() as session:
        movements = await session.scalar(select(func.count()).select_from(StockMovement))
        receipts = await session.scalar(select(func.count()).select_from(TransferReceipt))
    view = await _view(db, transfer_id)
    lines = [(x.sku, x.arrived_milli, x.damaged_milli, x.over_milli, x.lost_milli) for x in view.lines]
    return movements, receipts, view.transfer.state, view.transfer.version, lines, len(view.discrepancies)


async def test_invalid_documents_are_refused_and_write_nothing(db):
    transfer_id = await _new(db, [("COLA", 5_000), ("CAKE", 1_000)], state="shipped")
    before = await _snapshot(db, transfer_id)
    bad_receipts = [
        (
            [ReceiptLineIn("COLA", 6_000)],
            "only 5 is in transit; if more really arrived, say discrepancy 'over'",
        ),
        ([ReceiptLineIn("COLA", 6_000, discrepancy=OVER)], "need a note"),
        ([ReceiptLineIn("COLA", -1_000)], "must not be negative"),
        ([ReceiptLineIn("COLA", 1_000, damaged_milli=500)], "need a note"),
        ([ReceiptLineIn("COLA", 1_000, damaged_milli=2_000, note="x")], "at most qty"),
        ([ReceiptLineIn("COLA", 5_000, discrepancy=SHORT, note="x")], "everything in transit arrived"),
        ([ReceiptLineIn("COLA", 1_000, discrepancy=DAMAGED, note="x")], "needs the damaged quantity"),
        ([ReceiptLineIn("COLA", 0)], "nothing arrived"),
        # a good first line does not survive a bad second one
        ([ReceiptLineIn("CAKE", 1_000), ReceiptLineIn("TEA", 1_000)], "sku TEA is not on transfer"),
        ([ReceiptLineIn("COLA", 1_000), ReceiptLineIn("COLA", 1_000)], "each SKU once"),
    ]
    for lines, message in bad_receipts:
        with pytest.raises(StockError, match=message):
            async with db.session() as session, session.begin():
                await receive(session, transfer_id, lines, actor="user:wang")
        assert await _snapshot(db, transfer_id) == before, message
    with pytest.raises(StockError, match="is shipped; it can be cancelled only when draft or approved"):
        async with db.session() as session, session.begin():
            await cancel(session, transfer_id, actor="user:boss", reason="changed our mind")
    draft = await _new(db, [("COLA", 1_000)])
    with pytest.raises(StockError, match="is draft; it can be shipped only when approved"):
        async with db.session() as session, session.begin():
            await ship(session, draft, actor="user:li")
    with pytest.raises(StockError, match="is draft; it can be received only when shipped"):
        async with db.session() as session, session.begin():
            await receive(session, draft, [ReceiptLineIn("COLA", 1_000)], actor="user:wang")
    with pytest.raises(NotFound):
        async with db.session() as session, session.begin():
            await approve(session, str(uuid.uuid4()), actor="user:boss")
    bad_creates = [
        ("shop-1", "shop-1", [LineIn("COLA", 1_000)], "not from 'shop-1' to itself"),
        ("shop-1", "shop-2", [LineIn("COLA", -1_000)], "greater than 0"),
        ("shop-1", "shop-2", [LineIn("COLA", 1_000), LineIn("COLA", 2_000)], "appears twice"),
        ("shop-1", "shop-2", [], "at least one line"),
    ]
    for src, dst, lines, message in bad_creates:
        with pytest.raises(StockError, match=message):
            async with db.session() as session, session.begin():
                await create_transfer(session, src, dst, lines, actor="user:li")
    with pytest.raises(NotFound, match="shop-9"):
        async with db.session() as session, session.begin():
            await create_transfer(session, "shop-1", "shop-9", [LineIn("COLA", 1)], actor="user:li")
    assert await _snapshot(db, transfer_id) == before


async def _try_ship(db: Database, transfer_id: str) -> bool:
    try:
        async with db.session() as session, session.begin():
            await ship(session, transfer_id, actor="user:li")
    except StockError:
        return False
    return True


async def test_concurrent_ships_ship_once(db):
    transfer_id = await _new(db, [("COLA", 3_000), ("CAKE", 1_000)], state="approved")
    results = await asyncio.gather(*(_try_ship(db, transfer_id) for _ in range(6)))
    assert sorted(results) == [False] * 5 + [True]
    assert await _stock(db, "shop-1", "COLA") == (17_000, 0)
    assert await _stock(db, "shop-2", "COLA") == (0, 3_000)
    async with db.session() as session:
        out = await session.scalar(select(func.count()).where(StockMovement.kind == "transfer_out"))
    assert out == 2


async def _sell_one(db: Database, seq: int) -> None:
    doc = {
        "id": str(uuid.uuid4()),
        "store": "shop-2",
        "number": seq,
        "business_day": "2026-11-23",
        "status": "paid",
        "total_fen": 300,
        "closed_at": TS.isoformat(),
        "lines": [{"line_id": "l0", "sku": "COLA", "qty": "1", "total_fen": 300}],
    }
    event = Event(id=uuid.uuid4(), seq=seq, type="order.paid", ts=TS, body=doc)
    await ingest_batch(
        db, "shop-2", EventBatch(store="shop-2", epoch=1, seq_from=seq, seq_to=seq, events=[event])
    )


async def _receive_some(db: Database, transfer_id: str) -> None:
    async with db.session() as session, session.begin():
        await receive(session, transfer_id, [ReceiptLineIn("COLA", 1_000)], actor="user:wang")


async def test_receipts_racing_sales_of_the_same_sku_end_right(db):
    transfer_id = await _new(db, [("COLA", 20_000)], state="shipped")
    work = [_receive_some(db, transfer_id) for _ in range(12)]
    work += [_sell_one(db, seq) for seq in range(1, 31)]
    await asyncio.gather(*work)
    assert await _stock(db, "shop-2", "COLA") == (12_000 - 30_000, 8_000)
    view = await _view(db, transfer_id)
    assert (view.lines[0].arrived_milli, len(view.receipts), view.transfer.state) == (
        12_000,
        12,
        "partially_received",
    )


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
        ("chen", "store-manager", ["shop-3"]),
        ("mkt", "marketing", None),
    ):
        await auth.add_user(db, name, "password-123", role, stores)
        resp = await client.post("/api/v1/auth/token", json={"name": name, "password": "password-123"})
        found[name] = {"Authorization": f"Bearer {(await resp.json())['token']}"}
    return found


async def _refused(resp, status: int, words: str) -> None:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    assert words in (await resp.json())["detail"]


async def test_transfer_api_checks_roles_and_stores_at_each_step(db, client, users):
    body = {"from_store": "shop-1", "to_store": "shop-2", "lines": [{"sku": "COLA", "qty": "4"}]}
    await _refused(await client.post("/api/v1/transfers", json=body, headers=users["chen"]), 403, "neither")
    await _refused(
        await client.post("/api/v1/transfers", json=body, headers=users["mkt"]), 403, "transfers.write"
    )
    bad = {**body, "lines": [{"sku": "COLA", "qty": "-4"}]}
    resp = await client.post("/api/v1/transfers", json=bad, headers=users["li"])
    assert resp.status == 422
    assert "must not be negative" in (await resp.json())["detail"]
    resp = await client.post("/api/v1/transfers", json=body, headers=users["li"])
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    base = f"/api/v1/transfers/{created['id']}"
    assert (created["state"], created["lines"][0]["qty"]) == ("draft", "4")

    await _refused(await client.post(f"{base}/approve", headers=users["li"]), 403, "store-manager")
    resp = await client.post(f"{base}/approve", headers=users["zhao"])
    assert (await resp.json())["state"] == "approved"
    await _refused(await client.post(f"{base}/approve", headers=users["boss"]), 409, "is approved")
    await _refused(await client.post(f"{base}/ship", headers=users["wang"]), 403, "shop-1")
    resp = await client.post(f"{base}/ship", headers=users["li"])
    assert (await resp.json())["state"] == "shipped"
    resp = await client.get("/api/v1/stores/shop-2/stock/COLA/movements", headers=users["wang"])
    assert (await resp.json())["level"]["in_transit_in"] == "4"

    receipt = {"lines": [{"sku": "COLA", "qty": "5"}]}
    await _refused(await client.post(f"{base}/receive", json=receipt, headers=users["li"]), 403, "shop-2")
    await _refused(
        await client.post(f"{base}/receive", json=receipt, headers=users["wang"]), 409, "only 4 is in transit"
    )
    resp = await client.get(base, headers=users["wang"])
    assert [(x["in_transit"], x["received"]) for x in (await resp.json())["lines"]] == [("4", "0")]
    receipt = {"lines": [{"sku": "COLA", "qty": "3", "discrepancy": "short", "note": "one can missing"}]}
    resp = await client.post(f"{base}/receive", json=receipt, headers=users["wang"])
    assert resp.status == 200, await resp.text()
    got = await resp.json()
    assert got["state"] == "partially_received"
    assert [(d["kind"], d["qty"], d["resolved"]) for d in got["discrepancies"]] == [("short", "1", False)]
    await _refused(
        await client.post(f"{base}/close", json={"reason": "lost"}, headers=users["wang"]), 403, ""
    )
    resp = await client.post(f"{base}/close", json={"reason": "lost"}, headers=users["boss"])
    got = await resp.json()
    assert (got["state"], got["lines"][0]["lost"], got["lines"][0]["in_transit"]) == ("received", "1", "0")

    # lists are scoped: chen (shop-3) sees nothing and may not open it
    resp = await client.get("/api/v1/transfers", headers=users["chen"])
    assert (await resp.json())["items"] == []
    await _refused(await client.get(base, headers=users["chen"]), 403, "neither store")
    resp = await client.get("/api/v1/transfers?store=shop-2&state=received", headers=users["wang"])
    assert [t["id"] for t in (await resp.json())["items"]] == [created["id"]]
    await _refused(await client.get("/api/v1/transfers?store=shop-3", headers=users["wang"]), 403, "shop-3")
    assert (await client.get("/api/v1/transfers?state=lost", headers=users["boss"])).status == 400

    # cancelling: the source store's manager may, before shipping; the destination's may not
    resp = await client.post("/api/v1/transfers", json=body, headers=users["wang"])
    other = f"/api/v1/transfers/{(await resp.json())['id']}"
    await _refused(
        await client.post(f"{other}/cancel", json={"reason": "no"}, headers=users["wang"]), 403, "shop-1"
    )
    resp = await client.post(f"{other}/cancel", json={"reason": "not needed"}, headers=users["li"])
    assert (await resp.json())["state"] == "cancelled"
    await _refused(await client.post(f"{other}/approve", headers=users["boss"]), 409, "is cancelled")
    assert (await client.get("/api/v1/transfers/nope", headers=users["boss"])).status == 404


async def test_the_worked_example_in_docs_inventory(db):
    """docs/inventory.md walks 10 COLA from shop-1 (20 on hand) to shop-2; these are its rows."""
    transfer_id = await _new(db, [("COLA", 10_000)], state="approved")

    async def row() -> tuple:
        view = await _view(db, transfer_id)
        line = view.lines[0]
        return (
            (await _stock(db, "shop-1", "COLA"))[0],
            *(await _stock(db, "shop-2", "COLA")),
            (line.arrived_milli - line.damaged_milli, line.damaged_milli, line.over_milli, line.lost_milli),
            line.in_transit_milli,
            view.transfer.state,
        )

    assert await row() == (20_000, 0, 0, (0, 0, 0, 0), 0, "approved")
    async with db.session() as session, session.begin():
        await ship(session, transfer_id, actor="user:li")
    assert await row() == (10_000, 0, 10_000, (0, 0, 0, 0), 10_000, "shipped")
    async with db.session() as session, session.begin():
        await receive(session, transfer_id, [ReceiptLineIn("COLA", 6_000)], actor="user:wang")
    assert await row() == (10_000, 6_000, 4_000, (6_000, 0, 0, 0), 4_000, "partially_received")
    async with db.session() as session, session.begin():
        line = ReceiptLineIn(
            "COLA", 3_000, damaged_milli=1_000, discrepancy=SHORT, note="one dented, one missing"
        )
        await receive(session, transfer_id, [line], actor="user:wang")
    assert await row() == (10_000, 8_000, 1_000, (8_000, 1_000, 0, 0), 1_000, "partially_received")
    async with db.session() as session, session.begin():
        await close(session, transfer_id, actor="user:boss", reason="carton lost")
    assert await row() == (10_000, 8_000, 0, (8_000, 1_000, 0, 1_000), 0, "received")
    view = await _view(db, transfer_id)
    assert sorted((d.kind, d.qty_milli, d.resolved) for d in view.discrepancies) == [
        ("damaged", 1_000, True),
        ("short", 1_000, True),
    ]

"""Suppliers, quotes and purchase orders: generated from the replenishment list by best valid quote,
sent, received in parts with lots and expiry exactly once, moving-average cost, refusals that
write nothing, a receipt racing sales, supplier rating, exports (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from aiohttp.test_utils import TestClient, TestServer
from openpyxl import load_workbook
from sqlalchemy import func, select

from hub import auth
from hub.api import make_app
from hub.config import HubSettings
from hub.db import Database, migrate
from hub.errors import NotFound
from hub.ingest import ingest_batch
from hub.purchasing import (
    PoLineIn,
    QuoteIn,
    SupplierIn,
    add_quote,
    best_quotes,
    cancel_po,
    create_po,
    create_supplier,
    generate_orders,
    load_po,
    rating,
    send_po,
)
from hub.purchasing_export import po_csv, po_text, po_xlsx
from hub.purchasing_receipts import ReceiptLine, average_cost, cost_of, receive_po
from hub.purchasing_tables import PurchaseReceipt, StockBatch
from hub.replenishment import RuleIn, set_rule
from hub.stock import StockError, adjust, level
from hub.stock_tables import StockLevel, StockMovement
from hub.stores import add_store
from protocol import Event, EventBatch

TODAY = datetime.now(UTC).date()


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    for store in ("shop-1", "shop-2"):
        await add_store(database, store)
    yield database
    await database.close()


async def _supplier(db: Database, name: str, **extra) -> str:
    async with db.session() as session, session.begin():
        return (await create_supplier(session, SupplierIn(name, **extra))).id


async def _quote(db: Database, supplier_id: str, sku: str, fen: int, **extra) -> None:
    valid = {"valid_from": TODAY - timedelta(days=1), "valid_to": TODAY + timedelta(days=30), **extra}
    async with db.session() as session, session.begin():
        await add_quote(session, supplier_id, QuoteIn(sku, fen, **valid), actor="user:boss")


async def _sent_po(db: Database, lines: list[tuple[str, int, int]], supplier: str | None = None) -> str:
    supplier = supplier or await _supplier(db, "Fresh Farm")
    async with db.session() as session, session.begin():
        view = await create_po(
            session,
            "shop-1",
            supplier,
            [PoLineIn(*x) for x in lines],
            actor="user:li",
            expected_on=TODAY + timedelta(days=2),
        )
        await send_po(session, view.po.id, actor="user:li")
    return view.po.id


async def _receive(db: Database, po_id: str, receipt_id: str, lines: list[ReceiptLine]):
    async with db.session() as session, session.begin():
        return await receive_po(session, po_id, receipt_id, lines, actor="user:wang", today=TODAY)


async def _counts(db: Database) -> tuple:
    async with db.session() as session:
        return tuple(
            [
                await session.scalar(select(func.count()).select_from(table))
                for table in (StockMovement, StockBatch, PurchaseReceipt)
            ]
            + [
                sorted(
                    (r.store, r.sku, r.on_hand_milli)
                    for r in (await session.scalars(select(StockLevel))).all()
                )
            ]
        )


async def test_orders_are_generated_from_the_list_split_by_best_valid_quote(db):
    farm = await _supplier(db, "Fresh Farm", lead_time_days=2)
    bev = await _supplier(db, "Bev Co", lead_time_days=5)
    lapsed = await _supplier(db, "Cheap But Lapsed", licence_expires_on=TODAY - timedelta(days=1))
    await _quote(db, farm, "MILK", 450)
    await _quote(db, bev, "MILK", 480)
    await _quote(db, bev, "COLA", 250)
    await _quote(db, farm, "COLA", 200, valid_to=TODAY - timedelta(days=1))  # no longer valid
    await _quote(db, lapsed, "COLA", 100)  # its licence expired
    await _quote(db, farm, "BREAD", 300, min_qty_milli=100_000)  # minimum not met
    async with db.session() as session, session.begin():
        for sku in ("MILK", "COLA", "BREAD"):
            await set_rule(session, "shop-1", sku, RuleIn(min_milli=5_000, max_milli=20_000), actor="user:li")
        await adjust(session, "shop-1", "MILK", 2_000, "opening count", "user:li")
    async with db.session() as session, session.begin():
        done = await generate_orders(session, "shop-1", actor="user:li", today=TODAY)
    assert [
        (v.supplier_name, [(x.sku, x.qty_milli, x.unit_cost_fen) for x in v.lines]) for v in done.orders
    ] == [
        ("Bev Co", [("COLA", 20_000, 250)]),
        ("Fresh Farm", [("MILK", 18_000, 450)]),
    ]
    assert [v.po.expected_on for v in done.orders] == [TODAY + timedelta(days=5), TODAY + timedelta(days=2)]
    assert {v.po.state for v in done.orders} == {"draft"}
    assert done.unquoted == [("BREAD", 20_000)]
    # what is on order counts: generating again orders nothing more
    async with db.session() as session, session.begin():
        again = await generate_orders(session, "shop-1", actor="user:li", today=TODAY)
    assert (again.orders, again.unquoted) == ([], [("BREAD", 20_000)])
    async with db.session() as session:
        best = await best_quotes(session, {"COLA": 1000, "MILK": 1000}, TODAY)
    assert {sku: (q.unit_cost_fen, s.name) for sku, (q, s) in best.items()} == {
        "COLA": (250, "Bev Co"),
        "MILK": (450, "Fresh Farm"),
    }


async def test_partial_receipts_with_lots_move_stock_once_and_average_the_cost(db):
    async with db.session() as session, session.begin():
        await adjust(session, "shop-1", "MILK", 10_000, "opening count", "user:li")
    po_id = await _sent_po(db, [("MILK", 30_000, 450), ("EGGS", 12_000, 1_200)])
    first = [
        ReceiptLine("MILK", 8_000, lot="L1", expires_on=TODAY + timedelta(days=5)),
        ReceiptLine("MILK", 2_000, lot="L2", expires_on=TODAY + timedelta(days=9), unit_cost_fen=500),
    ]
    view, created = await _receive(db, po_id, "rcpt-1", first)
    assert created
    assert view.po.state == "partially_received"
    assert [(x.sku, x.received_milli) for x in view.lines] == [("EGGS", 0), ("MILK", 10_000)]
    async with db.session() as session:
        assert (await level(session, "shop-1", "MILK")).on_hand_milli == 20_000
        # no cost before: the receipt's own average, (8 x 450 + 2 x 500) / 10 = 460
        assert await cost_of(session, "shop-1", "MILK") == 460
    before = await _counts(db)
    # the same receipt again (a retry) changes nothing; the same id with other lines is refused
    view, created = await _receive(db, po_id, "rcpt-1", first)
    assert not created
    with pytest.raises(StockError, match="already used"):
        await _receive(db, po_id, "rcpt-1", [ReceiptLine("MILK", 1_000, lot="L1")])
    assert await _counts(db) == before

    second = [ReceiptLine("MILK", 20_000, lot="L3"), ReceiptLine("EGGS", 12_000, lot="E1")]
    view, created = await _receive(db, po_id, "rcpt-2", second)
    assert view.po.state == "received"
    assert view.po.received_at is not None
    async with db.session() as session:
        assert (await level(session, "shop-1", "MILK")).on_hand_milli == 40_000
        # (460 x 20 on hand + 450 x 20) / 40 = 455
        assert await cost_of(session, "shop-1", "MILK") == 455
        assert await cost_of(session, "shop-1", "EGGS") == 1_200
        receipts = (
            await session.scalars(
                select(StockMovement).where(StockMovement.kind == "receipt").order_by(StockMovement.id)
            )
        ).all()
    assert [(m.sku, m.qty_milli, m.source_id, m.line_ref) for m in receipts] == [
        ("MILK", 10_000, po_id, "rcpt-1"),
        ("EGGS", 12_000, po_id, "rcpt-2"),
        ("MILK", 20_000, po_id, "rcpt-2"),
    ]
    with pytest.raises(StockError, match="is received; it can be received only when sent"):
        await _receive(db, po_id, "rcpt-3", [ReceiptLine("MILK", 1_000)])
    # a retry of the last receipt after the order completed still answers, unchanged
    assert (await _receive(db, po_id, "rcpt-2", second))[1] is False


def test_moving_average_rounds_half_up_once_and_ignores_negative_stock():
    assert average_cost(None, 5_000, [(3_000, 101), (1_000, 100)]) == 101  # 403/4 = 100.75
    assert average_cost(100, 1_000, [(1_000, 101)]) == 101  # 100.5 -> 101
    assert average_cost(100, -4_000, [(2_000, 300)]) == 300  # nothing on the shelf to average with
    assert average_cost(100, 0, [(2_000, 300)]) == 300


async def test_invalid_receipts_are_refused_and_write_nothing(db):
    po_id = await _sent_po(db, [("MILK", 5_000, 450)])
    await _receive(db, po_id, "ok-1", [ReceiptLine("MILK", 2_000, lot="A")])
    before = await _counts(db)
    bad = [
        ([ReceiptLine("MILK", 4_000)], "only 3 is still open"),
        ([ReceiptLine("MILK", 2_000, lot="A"), ReceiptLine("MILK", 2_000, lot="B")], "only 3 is still open"),
        ([ReceiptLine("MILK", -1_000)], "greater than 0"),
        ([ReceiptLine("MILK", 0)], "greater than 0"),
        ([ReceiptLine("BUTTER", 1_000)], "not on purchase order"),
        ([ReceiptLine("MILK", 1_000, lot="X"), ReceiptLine("MILK", 1_000, lot="X")], "appears twice"),
        ([ReceiptLine("MILK", 1_000, expires_on=TODAY - timedelta(days=1))], "refuse it at the door"),
        ([ReceiptLine("MILK", 1_000, unit_cost_fen=-1)], "0 or more"),
        ([], "at least one line"),
    ]
    for lines, message in bad:
        with pytest.raises(StockError, match=message):
            await _receive(db, po_id, "bad-1", lines)
    with pytest.raises(NotFound):
        await _receive(db, "no-such-po", "bad-2", [ReceiptLine("MILK", 1_000)])
    with pytest.raises(StockError, match="receipt_id"):
        await _receive(db, po_id, "", [ReceiptLine("MILK", 1_000)])
    assert await _counts(db) == before
    async with db.session() as session:
        view = await load_po(session, po_id)
    assert (view.po.state, view.lines[0].received_milli, len(view.receipts)) == (
        "partially_received",
        2_000,
        1,
    )


async def test_draft_and_cancelled_orders_cannot_be_received_and_cancel_needs_a_reason(db):
    supplier = await _supplier(db, "Fresh Farm")
    async with db.session() as session, session.begin():
        view = await create_po(session, "shop-1", supplier, [PoLineIn("MILK", 5_000, 450)], actor="user:li")
    with pytest.raises(StockError, match="is draft; it can be received only when sent or partially_received"):
        await _receive(db, view.po.id, "r-1", [ReceiptLine("MILK", 1_000)])
    async with db.session() as session, session.begin():
        with pytest.raises(StockError, match="needs a reason"):
            await cancel_po(session, view.po.id, actor="user:li", reason=" ")
        cancelled = await cancel_po(session, view.po.id, actor="user:li", reason="ordered by phone instead")
    assert cancelled.po.state == "cancelled"
    with pytest.raises(StockError, match="is cancelled"):
        await _receive(db, view.po.id, "r-1", [ReceiptLine("MILK", 1_000)])
    async with db.session() as session, session.begin():
        with pytest.raises(StockError, match="appears twice"):
            await create_po(
                session, "shop-1", supplier, [PoLineIn("A", 1000, 1), PoLineIn("A", 1000, 1)], actor="user:li"
            )
        with pytest.raises(StockError, match="greater than 0"):
            await create_po(session, "shop-1", supplier, [PoLineIn("A", -1000, 1)], actor="user:li")
        with pytest.raises(NotFound):
            await create_po(session, "shop-9", supplier, [PoLineIn("A", 1000, 1)], actor="user:li")


async def test_an_expired_licence_blocks_sending(db):
    supplier = await _supplier(
        db, "Old Farm", licence_no="SC123", licence_expires_on=TODAY - timedelta(days=3)
    )
    async with db.session() as session, session.begin():
        view = await create_po(session, "shop-1", supplier, [PoLineIn("MILK", 5_000, 450)], actor="user:li")
    with pytest.raises(StockError, match="licence expired"):
        async with db.session() as session, session.begin():
            await send_po(session, view.po.id, actor="user:li")


async def _sell_one(db: Database, seq: int) -> None:
    doc = {
        "id": str(uuid.uuid4()),
        "store": "shop-1",
        "number": seq,
        "business_day": TODAY.isoformat(),
        "status": "paid",
        "total_fen": 500,
        "closed_at": datetime.now(UTC).isoformat(),
        "lines": [{"line_id": "l0", "sku": "MILK", "qty": "1", "total_fen": 500}],
    }
    event = Event(id=uuid.uuid4(), seq=seq, type="order.paid", ts=datetime.now(UTC), body=doc)
    await ingest_batch(
        db, "shop-1", EventBatch(store="shop-1", epoch=1, seq_from=seq, seq_to=seq, events=[event])
    )


async def test_concurrent_receipt_and_sales_of_one_sku_end_with_the_right_on_hand(db):
    po_id = await _sent_po(db, [("MILK", 100_000, 450)])

    async def take_in(n: int) -> None:
        await _receive(db, po_id, f"r-{n}", [ReceiptLine("MILK", 10_000, lot=f"L{n}")])

    await asyncio.gather(*(_sell_one(db, n) for n in range(1, 21)), *(take_in(n) for n in range(1, 6)))
    async with db.session() as session:
        now = await level(session, "shop-1", "MILK")
        total = await session.scalar(
            select(func.sum(StockMovement.qty_milli)).where(
                StockMovement.store == "shop-1", StockMovement.sku == "MILK"
            )
        )
        view = await load_po(session, po_id)
    assert now.on_hand_milli == 5 * 10_000 - 20 * 1_000 == total
    assert view.lines[0].received_milli == 50_000
    assert len(view.receipts) == 5


async def test_concurrent_retries_of_one_receipt_count_once(db):
    po_id = await _sent_po(db, [("MILK", 100_000, 450)])
    lines = [ReceiptLine("MILK", 10_000, lot="L1")]
    results = await asyncio.gather(
        *(_receive(db, po_id, "same", lines) for _ in range(4)), return_exceptions=True
    )
    created = [r[1] for r in results if not isinstance(r, BaseException)]
    assert created.count(True) == 1, results
    async with db.session() as session:
        assert (await level(session, "shop-1", "MILK")).on_hand_milli == 10_000


async def test_supplier_rating_counts_on_time_and_fill_rate(db):
    supplier = await _supplier(db, "Fresh Farm")
    full = await _sent_po(db, [("MILK", 10_000, 450)], supplier)
    await _receive(db, full, "a", [ReceiptLine("MILK", 10_000)])
    short = await _sent_po(db, [("EGGS", 10_000, 100)], supplier)
    await _receive(db, short, "b", [ReceiptLine("EGGS", 5_000)])
    async with db.session() as session, session.begin():
        await cancel_po(session, short, actor="user:li", reason="rest never came")
        po = (await load_po(session, short)).po
        po.expected_on = TODAY - timedelta(days=10)  # it was late
    async with db.session() as session:
        got = await rating(session, supplier)
    assert (got.orders, got.on_time_bp, got.fill_rate_bp) == (2, 5_000, 7_500)


async def test_exports_carry_the_lines_and_totals(db):
    po_id = await _sent_po(db, [("MILK", 2_500, 451), ("EGGS", 12_000, 1_200)])
    async with db.session() as session:
        view = await load_po(session, po_id)
    rows = list(csv.reader(io.StringIO(po_csv(view))))
    assert rows[1:] == [
        ["sku", "qty", "unit_cost", "total", "received"],
        ["EGGS", "12", "12.00", "144.00", "0"],
        ["MILK", "2.5", "4.51", "11.28", "0"],  # 11.275 half up
        ["total", "", "", "155.28", ""],
    ]
    text = po_text(view)
    assert "Fresh Farm" in text
    assert "155.28" in text
    sheet = load_workbook(io.BytesIO(po_xlsx(view))).active
    values = [tuple(row) for row in sheet.iter_rows(min_row=6, values_only=True)]
    assert values[0] == ("sku", "qty", "unit_cost", "total", "received")
    assert values[2][0] == "MILK"
    assert values[-1][3] == pytest.approx(155.28)


async def test_quotes_and_suppliers_are_checked(db):
    supplier = await _supplier(db, "Fresh Farm")
    with pytest.raises(StockError, match="exists already"):
        await _supplier(db, "Fresh Farm")
    async with db.session() as session:
        with pytest.raises(StockError, match="before its valid_from"):
            await add_quote(
                session, supplier, QuoteIn("MILK", 1, date(2026, 2, 1), date(2026, 1, 1)), actor="user:x"
            )
        with pytest.raises(StockError, match="0 or more"):
            await add_quote(session, supplier, QuoteIn("MILK", -1, TODAY, TODAY), actor="user:x")
        with pytest.raises(NotFound):
            await add_quote(session, "nope", QuoteIn("MILK", 1, TODAY, TODAY), actor="user:x")


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
        ("li", "store-manager", ["shop-1"]),
        ("wang", "store-manager", ["shop-2"]),
        ("mkt", "marketing", None),
    ):
        await auth.add_user(db, name, "password-123", role, stores)
        resp = await client.post("/api/v1/auth/token", json={"name": name, "password": "password-123"})
        found[name] = {"Authorization": f"Bearer {(await resp.json())['token']}"}
    return found


async def _ok(resp, status: int = 200) -> dict:
    assert resp.status == status, await resp.text()
    return await resp.json()


async def _refused(resp, status: int, words: str) -> None:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    assert words in (await resp.json())["detail"]


async def test_purchasing_api_from_quote_to_receipt_with_role_scoping(db, client, users):
    boss, li, wang = users["boss"], users["li"], users["wang"]
    supplier = {
        "name": "Fresh Farm",
        "licence_no": "SC1101",
        "licence_expires_on": "2099-12-31",
        "lead_time_days": 2,
    }
    await _refused(await client.post("/api/v1/suppliers", json=supplier, headers=li), 403, "suppliers.write")
    farm = await _ok(await client.post("/api/v1/suppliers", json=supplier, headers=boss), 201)
    quote = {"sku": "MILK", "unit_cost_fen": 450, "valid_from": "2020-01-01", "valid_to": "2099-12-31"}
    await _ok(await client.post(f"/api/v1/suppliers/{farm['id']}/quotes", json=quote, headers=boss), 201)
    bad_quote = {**quote, "unit_cost_fen": -1}
    assert (
        await client.post(f"/api/v1/suppliers/{farm['id']}/quotes", json=bad_quote, headers=boss)
    ).status == 422
    quotes = await _ok(await client.get("/api/v1/quotes?sku=MILK&valid_on=2026-11-23", headers=li))
    assert [q["unit_cost_fen"] for q in quotes["items"]] == [450]

    # a store manager sets the rule of their own store only
    rule = {"min": "5", "max": "20", "order_multiple": "6"}
    await _refused(
        await client.put("/api/v1/stores/shop-1/replenishment/rules/MILK", json=rule, headers=wang),
        403,
        "shop-1",
    )
    await _ok(await client.put("/api/v1/stores/shop-1/replenishment/rules/MILK", json=rule, headers=li))
    bad_rule = {"min": "5"}
    await _refused(
        await client.put("/api/v1/stores/shop-1/replenishment/rules/MILK", json=bad_rule, headers=li),
        409,
        "both",
    )
    listed = await _ok(await client.get("/api/v1/stores/shop-1/replenishment", headers=li))
    assert [(x["sku"], x["need"], x["buy"]) for x in listed["items"]] == [("MILK", "20", "24")]
    chain = await _ok(await client.get("/api/v1/replenishment", headers=boss))
    assert chain["totals"] == [{"sku": "MILK", "transfer": "0", "buy": "24"}]
    assert (await _ok(await client.get("/api/v1/replenishment", headers=wang)))["items"] == []

    await _refused(
        await client.post("/api/v1/stores/shop-1/purchase-orders/generate", headers=wang), 403, "shop-1"
    )
    made = await _ok(await client.post("/api/v1/stores/shop-1/purchase-orders/generate", headers=li), 201)
    assert made["unquoted"] == []
    (po,) = made["orders"]
    assert (po["supplier"], po["state"], po["total_fen"]) == ("Fresh Farm", "draft", 24 * 450)
    base = f"/api/v1/purchase-orders/{po['id']}"
    await _refused(await client.get(base, headers=wang), 403, "shop-1")
    assert (await _ok(await client.get("/api/v1/purchase-orders", headers=wang)))["items"] == []
    await _refused(await client.get("/api/v1/purchase-orders?store=shop-1", headers=wang), 403, "shop-1")
    assert (await client.get("/api/v1/purchase-orders?state=lost", headers=li)).status == 400
    receipt = {
        "receipt_id": "dn-1",
        "lines": [{"sku": "MILK", "qty": "12", "lot": "L1", "expires_on": "2099-01-01"}],
    }
    await _refused(await client.post(f"{base}/receipts", json=receipt, headers=li), 409, "is draft")
    await _ok(await client.post(f"{base}/send", headers=li))

    resp = await client.get(f"{base}/export?format=csv", headers=li)
    assert resp.status == 200
    assert resp.content_type == "text/csv"
    assert "MILK,24,4.50,108.00,0" in await resp.text()
    resp = await client.get(f"{base}/export?format=xlsx", headers=li)
    assert load_workbook(io.BytesIO(await resp.read())).active["A7"].value == "MILK"
    assert "PURCHASE ORDER" in await (await client.get(f"{base}/export?format=txt", headers=li)).text()
    assert (await client.get(f"{base}/export?format=pdf", headers=li)).status == 400

    # refusals write nothing: more than ordered, a negative quantity, a SKU not on the order, another store
    before = await _counts(db)
    over = {"receipt_id": "dn-x", "lines": [{"sku": "MILK", "qty": "25"}]}
    await _refused(await client.post(f"{base}/receipts", json=over, headers=li), 409, "only 24 is still open")
    negative = {"receipt_id": "dn-x", "lines": [{"sku": "MILK", "qty": "-1"}]}
    await _refused(
        await client.post(f"{base}/receipts", json=negative, headers=li), 422, "must not be negative"
    )
    unknown = {"receipt_id": "dn-x", "lines": [{"sku": "BUTTER", "qty": "1"}]}
    await _refused(
        await client.post(f"{base}/receipts", json=unknown, headers=li), 409, "not on purchase order"
    )
    await _refused(await client.post(f"{base}/receipts", json=receipt, headers=wang), 403, "shop-1")
    assert await _counts(db) == before

    got = await _ok(await client.post(f"{base}/receipts", json=receipt, headers=li), 201)
    assert (got["state"], got["lines"][0]["received"], got["lines"][0]["open"]) == (
        "partially_received",
        "12",
        "12",
    )
    again = await _ok(await client.post(f"{base}/receipts", json=receipt, headers=li), 200)  # a retry
    assert again["lines"][0]["received"] == "12"
    stock = await _ok(await client.get("/api/v1/stores/shop-1/stock/MILK/movements", headers=li))
    assert stock["level"]["on_hand"] == "12"
    cost = await _ok(await client.get("/api/v1/stores/shop-1/stock/MILK/cost", headers=li))
    assert cost["avg_cost_fen"] == 450
    batches = await _ok(await client.get("/api/v1/stores/shop-1/batches?sku=MILK", headers=li))
    assert [(b["lot"], b["left"], b["expired"]) for b in batches["items"]] == [("L1", "12", False)]
    picks = await _ok(await client.get("/api/v1/stores/shop-1/stock/MILK/fefo?qty=13", headers=li))
    assert (picks["picks"], picks["short"]) == ([{"lot": "L1", "expires_on": "2099-01-01", "qty": "12"}], "1")
    assert (await client.get("/api/v1/stores/shop-1/stock/MILK/fefo?qty=-1", headers=li)).status == 400
    near = await _ok(await client.get("/api/v1/stores/shop-1/near-expiry?days=366", headers=li))
    assert near["items"] == []
    rated = await _ok(await client.get(f"/api/v1/suppliers/{farm['id']}", headers=li))
    assert rated["rating"] == {"orders": 0, "on_time_bp": None, "fill_rate_bp": None}  # nothing finished yet

    await _refused(
        await client.post(f"{base}/cancel", json={"reason": "rest out of stock"}, headers=wang), 403, ""
    )
    done = await _ok(await client.post(f"{base}/cancel", json={"reason": "rest out of stock"}, headers=li))
    assert done["state"] == "cancelled"
    rated = await _ok(await client.get(f"/api/v1/suppliers/{farm['id']}", headers=boss))
    assert rated["rating"]["fill_rate_bp"] == 5_000
    assert (await client.get("/api/v1/suppliers/nope", headers=boss)).status == 404
    assert (await client.get("/api/v1/purchase-orders/nope", headers=boss)).status == 404
    await _refused(await client.get("/api/v1/stores/shop-1/stock-alerts", headers=wang), 403, "shop-1")
    alerts = await _ok(await client.get("/api/v1/stores/shop-1/stock-alerts?slow_days=7", headers=li))
    assert alerts["slow_movers"] == [{"sku": "MILK", "on_hand": "12"}]


async def test_a_suggested_transfer_through_the_api(db, client, users):
    async with db.session() as session, session.begin():
        await adjust(session, "shop-2", "COLA", 30_000, "count", "user:wang")
        await set_rule(session, "shop-1", "COLA", RuleIn(min_milli=5_000, max_milli=20_000), actor="x")
        await set_rule(session, "shop-2", "COLA", RuleIn(min_milli=0, max_milli=10_000), actor="x")
    path = "/api/v1/stores/shop-1/replenishment/transfers"
    await _refused(
        await client.post(path, json={"from_store": "shop-2"}, headers=users["mkt"]), 403, "transfers.write"
    )
    assert (await client.post(path, json={"from_store": "Bad Store!"}, headers=users["li"])).status == 400
    made = await _ok(await client.post(path, json={"from_store": "shop-2"}, headers=users["li"]), 201)
    assert (made["from_store"], made["to_store"], made["state"]) == ("shop-2", "shop-1", "draft")
    assert [(x["sku"], x["qty"]) for x in made["lines"]] == [("COLA", "20")]

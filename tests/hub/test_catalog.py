"""Head-office catalog: products, variants, barcodes and units checked as a batch; store links,
availability and prices; the store snapshot the edge accepts; import with a report per row
(all-or-nothing or valid-only) and export that imports back (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import csv
import io

import openpyxl
import pytest
from sqlalchemy import func, select

from edge.catalog import Catalog, CatalogDocument
from hub.catalog import (
    CatalogError,
    InvalidProducts,
    ProductIn,
    get_product,
    product_json,
    products_page,
    resolve_barcode,
    save_products,
    to_base_milli,
)
from hub.catalog_categories import add_category, delete_category
from hub.catalog_io import BadCatalogFile, export_catalog, import_catalog
from hub.catalog_stores import link_products, set_store_item, store_catalog_body, unlink_products
from hub.catalog_tables import CatalogProduct
from hub.db import Database, migrate
from hub.errors import NotFound
from hub.stores import add_store
from protocol.barcodes import gtin_check_digit

COLA = "6954767410388"
COLA_CASE = "16954767410385"  # GTIN-14 of the case of 24


def ean(n: int) -> str:
    body = f"69{n:010d}"
    return body + str(gtin_check_digit(body))


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    for store in ("shop-1", "shop-2"):
        await add_store(database, store)
    async with database.session() as session, session.begin():
        for path in ("饮料/碳酸饮料", "咖啡", "零食"):
            await add_category(session, path)
    yield database
    await database.close()


def cola(**extra) -> ProductIn:
    fields = {
        "sku": "DRK-002",
        "name": "可口可乐330ml",
        "category": "饮料/碳酸饮料",
        "price_fen": 300,
        "cost_fen": 180,
        "member_price_fen": 250,
        "tax_rate_bp": 1300,
        "barcodes": [COLA, "6954767410456"],
        "pinyin": "kkkl330ml",
        "units": [{"unit": "箱", "qty": "24", "barcodes": [COLA_CASE]}],
    }
    return ProductIn.model_validate(fields | extra)


COFFEE = [
    ProductIn(sku="COF-LAT", name="拿铁 中杯", category="咖啡", price_fen=1800, variant="中杯"),
    ProductIn(sku="COF-LAT-L", name="拿铁 大杯", category="咖啡", price_fen=2100, variant_of="COF-LAT"),
]


async def _save(db: Database, items: list[ProductIn]) -> None:
    async with db.session() as session, session.begin():
        await save_products(session, items, actor="user:boss")


async def test_a_product_with_variants_barcodes_and_a_case_unit(db):
    await _save(db, [cola(), *COFFEE])
    async with db.session() as session:
        view = product_json(await get_product(session, "DRK-002"))
        assert view["category"] == "饮料/碳酸饮料"
        assert view["barcodes"] == [COLA, "6954767410456"]
        assert view["units"] == [{"unit": "箱", "qty": "24", "barcodes": [COLA_CASE]}]
        assert (view["price_fen"], view["tax_rate_bp"]) == (300, 1300)
        # the hub knows a case scan is 24 pieces; UPC/EAN padding does not matter
        assert await resolve_barcode(session, COLA_CASE) == ("DRK-002", 24_000)
        assert await resolve_barcode(session, "0" + COLA) == ("DRK-002", 1000)
        assert await resolve_barcode(session, ean(99)) is None
        assert await to_base_milli(session, "DRK-002", "箱", 3000) == 72_000
        with pytest.raises(CatalogError, match="no unit '盒'"):
            await to_base_milli(session, "DRK-002", "盒", 1000)
        page, more = await products_page(session, category="饮料")
        assert ([v.product.sku for v in page], more) == (["DRK-002"], False)
        page, _ = await products_page(session, text="6954767410456")
        assert [v.product.sku for v in page] == ["DRK-002"]
        page, more = await products_page(session, limit=2)
        assert ([v.product.sku for v in page], more) == (["COF-LAT", "COF-LAT-L"], True)
    # saving again replaces barcodes and units, not adds
    await _save(db, [cola(barcodes=[COLA], units=[])])
    async with db.session() as session:
        view = product_json(await get_product(session, "DRK-002"))
        assert (view["barcodes"], view["units"]) == ([COLA], [])
        assert await resolve_barcode(session, COLA_CASE) is None


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([cola(category="饮料/果汁")], [(0, "category", "unknown category '饮料/果汁'")]),
        ([cola(), cola()], [(1, "sku", "also item 0")]),
        ([cola(), cola(sku="DRK-X", units=[], barcodes=[COLA])], [(1, "barcodes", "already belongs to 'DRK-002'")]),
        ([cola(variant_of="NOPE")], [(0, "variant_of", "'NOPE' is not in the catalog")]),
        ([*COFFEE, COFFEE[0].model_copy(update={"sku": "C3", "variant_of": "COF-LAT-L"})], [(1, "variant_of", "has variants of its own"), (2, "variant_of", "itself a variant")]),
        ([cola(), COFFEE[0].model_copy(update={"variant_of": "DRK-002"}), COFFEE[1]], [(1, "variant_of", "has variants"), (2, "variant_of", "itself a variant")]),
    ],
)  # fmt: skip
async def test_a_bad_batch_names_each_problem_and_writes_nothing(db, items, expected):
    with pytest.raises(InvalidProducts) as caught:
        await _save(db, items)
    got = [(i.index, i.field, i.message) for i in caught.value.issues]
    assert len(got) == len(expected), got
    for (index, field, message), (e_index, e_field, e_part) in zip(got, expected, strict=True):
        assert (index, field) == (e_index, e_field)
        assert e_part in message
    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(CatalogProduct)) == 0


async def test_a_barcode_taken_by_a_stored_product_is_refused(db):
    await _save(db, [cola()])
    with pytest.raises(InvalidProducts, match="already belongs to 'DRK-002'"):
        await _save(
            db,
            [
                ProductIn(
                    sku="X", name="x", price_fen=1, units=[{"unit": "箱", "qty": 6, "barcodes": [COLA_CASE]}]
                )
            ],
        )
    # moving a barcode from one product to another in one batch is fine
    await _save(
        db, [cola(barcodes=["6954767410456"]), ProductIn(sku="X", name="x", price_fen=1, barcodes=[COLA])]
    )


def test_product_fields_are_validated():
    with pytest.raises(ValueError, match="wrong check digit"):
        cola(barcodes=["6954767410389"])
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        cola(price_fen=-1)
    with pytest.raises(ValueError, match="whitespace"):
        cola(sku="DRK 2")
    with pytest.raises(ValueError, match="more than 0"):
        cola(units=[{"unit": "箱", "qty": "0"}])
    with pytest.raises(ValueError, match="empty name"):
        cola(category="饮料//碳酸")


async def test_categories_form_a_tree(db):
    async with db.session() as session, session.begin():
        row, created = await add_category(session, " 饮料 / 果汁 ")
        assert (row.path, created) == ("饮料/果汁", True)
        assert (await add_category(session, "饮料/果汁"))[1] is False
    await _save(db, [cola()])
    async with db.session() as session, session.begin():
        with pytest.raises(CatalogError, match="sub-categories"):
            await delete_category(session, "饮料")
        with pytest.raises(CatalogError, match="still has products"):
            await delete_category(session, "饮料/碳酸饮料")
        await delete_category(session, "饮料/果汁")
        with pytest.raises(NotFound):
            await delete_category(session, "饮料/果汁")


async def test_store_links_prices_and_the_snapshot_the_edge_accepts(db):
    await _save(db, [cola(), *COFFEE])
    async with db.session() as session, session.begin():
        assert await link_products(session, "shop-1", None, actor="user:boss") == 3
        assert await link_products(session, "shop-1", None, actor="user:boss") == 0  # link-all is idempotent
        assert await link_products(session, "shop-2", ["COF-LAT-L"], actor="user:li") == 1
        await set_store_item(session, "shop-1", "DRK-002", actor="user:boss", price_fen=280)
        await set_store_item(session, "shop-1", "COF-LAT", actor="user:boss", available=False)
        with pytest.raises(CatalogError, match="not linked"):
            await set_store_item(session, "shop-2", "DRK-002", actor="user:li", price_fen=1)
        with pytest.raises(NotFound, match="NOPE"):
            await link_products(session, "shop-1", ["NOPE"], actor="user:boss")
        with pytest.raises(NotFound):
            await link_products(session, "shop-9", None, actor="user:boss")
    async with db.session() as session:
        body1 = await store_catalog_body(session, "shop-1")
        body2 = await store_catalog_body(session, "shop-2")
    doc = CatalogDocument.model_validate({**body1, "version": 1})
    till = Catalog(doc)
    assert till.store_price_fen("DRK-002") == 280
    match = till.lookup_barcode(COLA)
    assert match is not None
    assert (match.product.price_fen, match.product.member_price_fen, match.product.category) == (
        300,
        250,
        "饮料/碳酸饮料",  # the full path: rules and stations match it and its ancestors
    )
    assert till.lookup_barcode(COLA_CASE) is None  # the till cannot sell a case as 24 pieces: not sent
    assert till.by_sku("COF-LAT").active is False  # unavailable at this store
    assert till.by_sku("COF-LAT-L").variant_of == "COF-LAT"
    # shop-2 sells the large latte without its parent: it goes out as a product of its own
    doc2 = CatalogDocument.model_validate({**body2, "version": 1})
    assert [p.sku for p in doc2.products] == ["COF-LAT-L"]
    assert doc2.products[0].variant_of is None
    async with db.session() as session, session.begin():
        await set_store_item(session, "shop-1", "DRK-002", actor="user:boss", clear_price=True)
        assert await unlink_products(session, "shop-1", ["COF-LAT", "COF-LAT-L"], actor="user:boss") == 2
    async with db.session() as session:
        body1 = await store_catalog_body(session, "shop-1")
    assert ([p["sku"] for p in body1["products"]], body1["price_overrides"]) == (["DRK-002"], {})


# --------------------------------------------------------------------------- import / export

HEADER = ["商品编码", "商品名称", "分类", "售价", "进价", "税率", "条码", "包装单位", "包装数量", "包装条码"]


def _rows(n: int) -> list[list[object]]:
    rows: list[list[object]] = [
        [f"SKU-{i:04d}", f"商品{i}", "零食", f"{1 + i % 50}.50", "1.2", "13%", ean(i), "", "", ""]
        for i in range(1, n + 1)
    ]
    rows[0][7:10] = ["箱", "24", ean(5000)]
    return rows


def _bad_1000() -> list[list[object]]:
    rows = _rows(1000)
    rows[99][2] = "零食/进口"  # row 101: unknown category
    bad = ean(300)
    rows[299][6] = bad[:-1] + str((int(bad[-1]) + 1) % 10)  # row 301: wrong check digit
    rows[499][3] = "-2"  # row 501: negative price
    rows[799][0] = "SKU-0007"  # row 801: duplicate SKU (row 8 has it)
    return rows


def _xlsx(rows: list[list[object]]) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(HEADER)
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _csv(rows: list[list[object]], encoding: str = "utf-8-sig") -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows([HEADER, *rows])
    return out.getvalue().encode(encoding)


async def _count(db: Database) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(CatalogProduct)) or 0)


@pytest.mark.parametrize("fmt", ["xlsx", "csv"])
async def test_an_import_with_3_bad_rows_of_1000_reports_them_and_imports_nothing_or_the_rest(db, fmt):
    rows = _bad_1000()
    data = _xlsx(rows) if fmt == "xlsx" else _csv(rows, "gb18030")
    report = await import_catalog(db, data, filename=f"c.{fmt}", actor="user:boss")
    got = [(e.row, e.column) for e in report.errors]
    assert got == [(101, "分类"), (301, "条码"), (501, "售价"), (801, "商品编码")], report.errors
    assert "wrong check digit" in report.errors[1].message
    assert "must not be negative" in report.errors[2].message
    assert report.errors[3].message == "sku 'SKU-0007' is also on row 8"
    assert (report.rows, report.valid, report.imported, report.written) == (1000, 996, 0, False)
    assert await _count(db) == 0
    # valid-only: the 996 good rows, and row 8 (the first SKU-0007) is one of them
    report = await import_catalog(db, data, filename=f"c.{fmt}", mode="valid-only", actor="user:boss")
    assert [(e.row, e.column) for e in report.errors] == got
    assert (report.imported, report.written) == (996, True)
    assert await _count(db) == 996
    async with db.session() as session:
        view = product_json(await get_product(session, "SKU-0001"))
    assert (view["price_fen"], view["cost_fen"], view["tax_rate_bp"]) == (250, 120, 1300)
    assert view["units"] == [{"unit": "箱", "qty": "24", "barcodes": [ean(5000)]}]


async def test_export_imports_back_unchanged(db):
    await _save(db, [cola(), *COFFEE])
    async with db.session() as session:
        before = [product_json(v) for v in (await products_page(session))[0]]
    for fmt in ("xlsx", "csv"):
        data = await export_catalog(db, fmt=fmt)  # type: ignore[arg-type]
        report = await import_catalog(db, data, filename=f"x.{fmt}", actor="user:boss")
        assert (report.errors, report.imported) == ([], 3)
        async with db.session() as session:
            after = [product_json(v) for v in (await products_page(session))[0]]
        strip = [{k: v for k, v in p.items() if k != "updated_at"} for p in before]
        assert [{k: v for k, v in p.items() if k != "updated_at"} for p in after] == strip


async def test_import_can_create_categories_and_refuses_unusable_files(db):
    rows = [["A-1", "新品", "季节限定/冬季", "9.9", "", "", "", "", "", ""]]
    report = await import_catalog(db, _csv(rows), filename="n.csv", actor="user:boss")
    assert [e.message for e in report.errors] == ["unknown category '季节限定/冬季'; create it first"]
    report = await import_catalog(db, _csv(rows), filename="n.csv", create_categories=True, actor="user:boss")
    assert (report.errors, report.imported) == ([], 1)
    with pytest.raises(BadCatalogFile, match="no 售价"):
        await import_catalog(db, "商品编码,商品名称\nA,b\n".encode(), filename="n.csv", actor="user:boss")
    with pytest.raises(BadCatalogFile, match=r"not a readable \.xlsx"):
        await import_catalog(db, b"PK\x03\x04garbage", filename="n.xlsx", actor="user:boss")
    with pytest.raises(ValueError, match="mode"):
        await import_catalog(db, b"", mode="some", actor="user:boss")  # type: ignore[arg-type]


async def test_a_dropped_parent_row_takes_its_variants_along_in_valid_only(db):
    rows = [
        ["COF-AME", "美式", "咖啡", "-1", "", "", "", "", "", ""],  # bad: negative price
        ["COF-AME-L", "美式 大杯", "咖啡", "18", "", "", "", "", "", ""],
    ]
    header_plus = [*HEADER, "主商品"]
    out = io.StringIO()
    csv.writer(out).writerows([header_plus, rows[0] + [""], rows[1] + ["COF-AME"]])
    report = await import_catalog(db, out.getvalue().encode(), filename="v.csv", mode="valid-only", actor="u")
    assert [(e.row, e.column) for e in report.errors] == [(2, "售价"), (3, "主商品")]
    assert report.imported == 0


def test_cli_imports_with_progress_exports_and_publishes(tmp_path, monkeypatch, capsys):
    from hub import cli  # noqa: PLC0415

    monkeypatch.setenv("STORELINK_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    monkeypatch.setenv("STORELINK_STATE_DIR", str(tmp_path))
    first = tmp_path / "first.csv"
    first.write_bytes(_csv([["NEW-1", "新品", "零食", "1", "", "", "", "", "", ""]]))
    cli.main(["catalog", "import", str(first), "--create-categories"])
    assert "1 rows: 1 imported, 0 with errors" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_bytes(_csv(_bad_1000()))
    with pytest.raises(SystemExit) as exited:
        cli.main(["catalog", "import", str(bad)])
    assert exited.value.code == 1
    out, err = capsys.readouterr()
    assert "row 301, 条码: barcode" in out
    assert "row 801, 商品编码: sku 'SKU-0007' is also on row 8" in out
    assert "1000 rows: 0 imported, 4 with errors" in out
    assert "nothing was imported" in err
    cli.main(["catalog", "import", str(bad), "--mode", "valid-only"])
    out, err = capsys.readouterr()
    assert "1000 rows: 996 imported, 4 with errors" in out
    assert err.splitlines()[-1] == "importing 996/996"  # plain lines: stderr is not a terminal here
    cli.main(["catalog", "export", str(tmp_path / "out.xlsx")])
    rows = list(openpyxl.load_workbook(tmp_path / "out.xlsx").worksheets[0].iter_rows(values_only=True))
    assert len(rows) == 998
    with pytest.raises(SystemExit):
        cli.main(["catalog", "publish"])
    assert "no store links any products" in capsys.readouterr().err


async def test_concurrent_saves_claiming_one_barcode_and_concurrent_link_alls(db):
    """Two head-office users at once: one barcode ends with one SKU, the other gets a clear
    refusal (not a database error); linking the same products twice at once links them once."""

    async def claim(sku: str) -> str:
        try:
            await _save(db, [ProductIn(sku=sku, name=sku, price_fen=100, barcodes=[COLA])])
        except CatalogError as err:
            return f"refused: {err}"
        return "saved"

    results = await asyncio.gather(*(claim(f"SKU-{n}") for n in range(6)))
    assert sorted(results)[-1] == "saved"
    assert [r for r in results if r == "saved"] == ["saved"], results
    assert all("already belongs" in r or "changed while saving" in r for r in results if r != "saved")
    async with db.session() as session:
        assert (await resolve_barcode(session, COLA))[0] in {f"SKU-{n}" for n in range(6)}

    async def link_all() -> int:
        async with db.session() as session, session.begin():
            return await link_products(session, "shop-1", None, actor="user:boss")

    counts = await asyncio.gather(*(link_all() for _ in range(4)))
    assert max(counts) >= 1
    async with db.session() as session:
        body = await store_catalog_body(session, "shop-1")
    assert len(body["products"]) == 1

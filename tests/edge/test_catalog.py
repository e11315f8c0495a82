"""Catalog: product rules, scan lookup (incl. scale labels), search, TinyDB file, file import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from pydantic import ValidationError

from edge.catalog import Catalog, CatalogDocument, CatalogError, CatalogStore, Product
from edge.catalog_files import read_catalog_file
from protocol.barcodes import BarcodeError, ScaleLayout, is_valid_gtin, make_scale_barcode

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "edge" / "sample_catalog.json"

WATER = "6921168509256"
COLA = "6954767410388"
NOODLE = "6920152400289"
UPC_A = "036000291452"


def product(sku: str, name: str, price_fen: int = 100, **fields: object) -> Product:
    return Product(sku=sku, name=name, price_fen=price_fen, **fields)


def sample_products() -> list[Product]:
    return [
        product("DRK-001", "农夫山泉550ml", 200, barcodes=[WATER], pinyin="nfsq550ml"),
        product("DRK-002", "可口可乐330ml", 300, barcodes=[COLA], pinyin="kkkl330ml"),
        product("DRK-003", "百事可乐330ml", 300, pinyin="bskl330ml"),
        product("SNK-001", "可乐味软糖", 500, pinyin="klwrt"),
        product("INS-001", "康师傅红烧牛肉面", 450, barcodes=[NOODLE], pinyin="ksfhsnrm"),
        product("INS-002", "统一老坛酸菜牛肉面", 450, pinyin="tyltscnrm"),
        product("US-001", "Imported snack", 900, barcodes=["0" + UPC_A]),
        product("FRS-BANANA", "香蕉", 798, unit="kg", plu="1001", pinyin="xj"),
        product("FRS-CAKE", "蛋糕切块", 1500, plu="2001", pinyin="dgqk"),
        product("OLD-001", "旺仔牛奶", 450, active=False, pinyin="wznn"),
    ]


@pytest.fixture
def document() -> CatalogDocument:
    return CatalogDocument(version=3, products=sample_products(), price_overrides={"DRK-001": 180})


@pytest.fixture
def catalog(document: CatalogDocument) -> Catalog:
    return Catalog(document, ScaleLayout(value_kind="weight"))


# --------------------------------------------------------------------------- products


def test_bad_gtin_check_digit_is_rejected_naming_the_code():
    with pytest.raises(ValidationError) as caught:
        product("A", "水", barcodes=["6921168509257"])
    message = str(caught.value)
    assert "6921168509257" in message
    assert "check digit" in message
    assert "ends in 6" in message


def test_barcodes_are_normalized_full_width_and_noise():
    item = product("A", "水", barcodes=["６９２１１６８５０９２５６\r\n"])
    assert item.barcodes == [WATER]


def test_non_gtin_store_codes_are_allowed():
    assert product("A", "自制", barcodes=["SL-0001", "123"]).barcodes == ["SL-0001", "123"]


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"sku": "A 1"}, "whitespace"),
        ({"sku": "A\x07"}, "control"),
        ({"sku": ""}, "at least 1"),
        ({"sku": "x" * 65}, "at most 64"),
        ({"name": "   "}, "blank"),
        ({"name": "可乐\x1b@"}, "control character"),
        ({"variant": "大杯\n"}, "control character"),
        ({"name": "名" * 101}, "at most 100"),
        ({"price_fen": -1}, "greater than or equal to 0"),
        ({"price_fen": 3.5}, "valid integer"),
        ({"price_fen": "350"}, "valid integer"),
        ({"unit": "jin"}, "'piece' or 'kg'"),
        ({"plu": "10a1"}, "pattern"),
        ({"pinyin": "KKKL"}, "pattern"),
        ({"colour": "red"}, "Extra inputs"),
        ({"variant_of": "A"}, "variant of itself"),
        ({"barcodes": [WATER, "０" + WATER]}, "listed twice"),
    ],
)
def test_product_rejects(fields, needle):
    values = {"sku": "A", "name": "水", "price_fen": 100, **fields}
    with pytest.raises(ValidationError, match=needle):
        Product(**values)


def test_product_is_frozen():
    item = product("A", "水")
    with pytest.raises(ValidationError):
        item.price_fen = 1


def test_duplicate_barcode_across_skus_names_both():
    with pytest.raises(ValidationError) as caught:
        CatalogDocument(
            version=1,
            products=[
                product("WATER-1", "水", barcodes=[WATER]),
                product("WATER-2", "水2", barcodes=[WATER]),
            ],
        )
    message = str(caught.value)
    assert WATER in message
    assert "'WATER-1'" in message
    assert "'WATER-2'" in message


def test_upc_a_and_its_ean13_form_are_the_same_barcode():
    with pytest.raises(ValidationError, match="belongs to both"):
        CatalogDocument(
            version=1,
            products=[product("A", "a", barcodes=[UPC_A]), product("B", "b", barcodes=["0" + UPC_A])],
        )


@pytest.mark.parametrize(
    ("products", "overrides", "needle"),
    [
        ([product("A", "a"), product("A", "b")], {}, "sku 'A' is used twice"),
        (
            [product("A", "a", plu="1001"), product("B", "b", plu="001001")],
            {},
            "plu '001001' belongs to both 'A' and 'B'",
        ),
        ([product("A", "a")], {"B": 100}, "unknown sku 'B'"),
        ([product("A", "a", variant_of="X")], {}, "'A' is a variant of 'X', which is not in the catalog"),
        (
            [product("A", "a"), product("B", "b", variant_of="A"), product("C", "c", variant_of="B")],
            {},
            "itself a variant",
        ),
    ],
)
def test_document_consistency(products, overrides, needle):
    with pytest.raises(ValidationError, match=needle):
        CatalogDocument(version=1, products=products, price_overrides=overrides)


# --------------------------------------------------------------------------- lookup


def test_lookup_exact_barcode(catalog):
    match = catalog.lookup_barcode(COLA)
    assert match is not None
    assert match.product.sku == "DRK-002"
    assert (match.qty, match.label_price_fen, match.barcode) == (None, None, COLA)


def test_lookup_full_width_and_scanner_noise(catalog):
    match = catalog.lookup_barcode("\x02６９５４７６７４１０３８８\r\n")
    assert match is not None
    assert match.product.sku == "DRK-002"
    assert match.barcode == COLA


def test_lookup_upc_a_with_or_without_leading_zero(catalog):
    assert catalog.lookup_barcode(UPC_A).product.sku == "US-001"
    assert catalog.lookup_barcode("0" + UPC_A).product.sku == "US-001"


def test_lookup_unknown_and_garbage(catalog):
    assert catalog.lookup_barcode("6900000000000"[:-1] + "2") is None
    with pytest.raises(BarcodeError):
        catalog.lookup_barcode("   ")


def test_weight_label_finds_product_by_plu_with_kg_qty(catalog):
    layout = ScaleLayout(value_kind="weight")
    code = make_scale_barcode("1001", 1234, layout)
    match = catalog.lookup_barcode(code)
    assert match is not None
    assert match.product.sku == "FRS-BANANA"
    assert match.qty == Fraction(1234, 1000)
    assert match.label_price_fen is None
    assert match.barcode == code


def test_price_label_carries_the_label_price(document):
    layout = ScaleLayout(value_kind="price")
    catalog = Catalog(document, layout)
    match = catalog.lookup_barcode(make_scale_barcode("2001", 1590, layout))
    assert match is not None
    assert match.product.sku == "FRS-CAKE"
    assert (match.label_price_fen, match.qty) == (1590, None)


def test_misread_scale_label_raises(catalog):
    code = make_scale_barcode("1001", 1234, ScaleLayout(value_kind="weight"))
    misread = code[:-1] + str((int(code[-1]) + 1) % 10)
    with pytest.raises(BarcodeError, match="check digit"):
        catalog.lookup_barcode(misread)


def test_scale_label_for_unknown_plu_is_not_found(catalog):
    assert catalog.lookup_barcode(make_scale_barcode("9999", 500, ScaleLayout(value_kind="weight"))) is None


def test_weight_label_for_a_per_piece_product_is_refused(catalog):
    with pytest.raises(CatalogError, match="sold per piece"):
        catalog.lookup_barcode(make_scale_barcode("2001", 500, ScaleLayout(value_kind="weight")))


# --------------------------------------------------------------------------- search


def skus(products: list[Product]) -> list[str]:
    return [item.sku for item in products]


def test_search_chinese_substring(catalog):
    assert skus(catalog.search("牛肉")) == ["INS-001", "INS-002"]


def test_search_pinyin_initials_prefix_and_substring(catalog):
    assert skus(catalog.search("kkkl")) == ["DRK-002"]
    assert skus(catalog.search("KSF")) == ["INS-001"]
    assert skus(catalog.search("nrm")) == ["INS-001", "INS-002"]


def test_search_sku_and_barcode_prefix_case_insensitive(catalog):
    assert skus(catalog.search("drk-00")) == ["DRK-001", "DRK-002", "DRK-003"]
    assert skus(catalog.search("695476")) == ["DRK-002"]
    assert skus(catalog.search("６９５４７６")) == ["DRK-002"]


def test_search_ranks_exact_and_prefix_before_substring(catalog):
    # "可乐味软糖" starts with the query; the colas only contain it.
    assert skus(catalog.search("可乐")) == ["SNK-001", "DRK-002", "DRK-003"]
    assert skus(catalog.search("xj")) == ["FRS-BANANA"]


def test_search_skips_inactive_and_honours_limit(catalog):
    assert catalog.search("旺仔") == []
    assert catalog.by_sku("OLD-001") is not None
    assert len(catalog.search("牛肉", limit=1)) == 1
    assert catalog.search("   ") == []


def test_store_price_override_and_basics(catalog):
    assert catalog.store_price_fen("DRK-001") == 180
    assert catalog.store_price_fen("DRK-002") is None
    assert catalog.by_sku("nope") is None
    assert catalog.version == 3
    assert len(catalog) == len(sample_products())


# --------------------------------------------------------------------------- store


def test_store_round_trip_keeps_chinese_readable(tmp_path, document):
    path = tmp_path / "state" / "catalog.json"
    store = CatalogStore(path)
    assert store.load() is None
    store.save(document)
    store.close()
    text = path.read_text(encoding="utf-8")
    assert "康师傅红烧牛肉面" in text
    assert "\\u" not in text
    assert "\n  " in text  # indented for people
    json.loads(text)
    reopened = CatalogStore(path)
    assert reopened.load() == document
    reopened.close()
    assert sorted(p.name for p in path.parent.iterdir()) == ["catalog.json"]


def test_store_refuses_a_lower_version(tmp_path, document):
    store = CatalogStore(tmp_path / "catalog.json")
    store.save(document)
    older = document.model_copy(update={"version": 2, "products": document.products[:1]})
    with pytest.raises(CatalogError, match="older than version 3"):
        store.save(older)
    assert store.load() == document
    store.save(document.model_copy(update={"version": 3}))
    store.save(older, force=True)
    assert store.load() == older
    newer = document.model_copy(update={"version": 7})
    store.save(newer)
    assert store.load().version == 7
    store.close()


def test_store_save_is_atomic_when_the_write_fails(tmp_path, document, monkeypatch):
    path = tmp_path / "catalog.json"
    store = CatalogStore(path)
    store.save(document)
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        store.save(document.model_copy(update={"version": 9}))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["catalog.json"]
    assert store.load() == document
    store.close()


@pytest.mark.parametrize(
    "content",
    [
        '{"catalog": {"1": {"version": 1, "products": [',
        '{"catalog": {"1": {"version": 1, "products": [{"sku": "A"}]}}}',
        '["not", "tinydb"]',
        '{"catalog": {"1": {"version": 1, "products": [], "price_overrides": {"X": 1}}}}',
    ],
)
def test_corrupt_file_raises_catalog_error_naming_the_path(tmp_path, document, content):
    path = tmp_path / "catalog.json"
    path.write_text(content, encoding="utf-8")
    store = CatalogStore(path)
    with pytest.raises(CatalogError) as caught:
        store.load()
    assert str(path) in str(caught.value)
    store.save(document, force=True)
    assert store.load() == document
    store.close()


def test_save_over_unreadable_file_needs_force(tmp_path, document):
    path = tmp_path / "catalog.json"
    path.write_text("{oops", encoding="utf-8")
    store = CatalogStore(path)
    with pytest.raises(CatalogError, match="cannot be read"):
        store.save(document)
    assert path.read_text(encoding="utf-8") == "{oops"
    store.close()


# --------------------------------------------------------------------------- files

CSV_TEXT = (
    "sku,name,category,unit,price,barcodes,plu,open_price,variant_of,variant,cost\n"
    f"DRK-002,可口可乐330ml,饮料,个,3.50,{COLA}|{WATER},,否,,,1.8\n"
    "FRS-BANANA,香蕉,鲜食,公斤,7.98,,1001,0,,,\n"
    "SRV-PARCEL,代收快递费,服务,,,,,是,,,\n"
    "COF-LAT,拿铁 中杯,咖啡,piece,18,,,false,,中杯,\n"
    "COF-LAT-L,拿铁 大杯,咖啡,piece,¥21.00,,,,COF-LAT,大杯,\n"
    ",,,,,,,,,,\n"
)


def check_csv_document(doc: CatalogDocument) -> None:
    by_sku = {item.sku: item for item in doc.products}
    cola = by_sku["DRK-002"]
    assert (cola.price_fen, cola.cost_fen, cola.barcodes) == (350, 180, [COLA, WATER])
    assert cola.pinyin == "kkkl330ml"
    banana = by_sku["FRS-BANANA"]
    assert (banana.unit, banana.price_fen, banana.plu) == ("kg", 798, "1001")
    parcel = by_sku["SRV-PARCEL"]
    assert parcel.open_price
    assert parcel.price_fen == 0
    assert by_sku["COF-LAT-L"].variant_of == "COF-LAT"
    assert by_sku["COF-LAT-L"].price_fen == 2100
    assert by_sku["COF-LAT"].pinyin == "ntzb"
    assert len(doc.products) == 5


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-8", "gb18030"])
def test_csv_import_in_excel_encodings(tmp_path, encoding):
    path = tmp_path / "catalog.csv"
    path.write_bytes(CSV_TEXT.replace("\n", "\r\n").encode(encoding))
    doc = read_catalog_file(path, version=42)
    assert doc.version == 42
    check_csv_document(doc)


def test_csv_errors_list_every_bad_row(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(
        "SKU,Name,Price,Barcodes,Unit\n"
        "A,苹果,3.5,,\n"
        "B,香蕉,3.555,,\n"  # row 3
        "C,梨,2,6921168509257,\n"  # row 4
        "D,桃,2,,斤\n"  # row 5
        "A,重复,2,,\n"  # row 6
        "E,,,,\n"  # row 7
        "F,西瓜,2,6.92117E+12,\n",  # row 8
        encoding="utf-8-sig",
    )
    with pytest.raises(CatalogError) as caught:
        read_catalog_file(path)
    message = str(caught.value)
    assert str(path) in message
    assert "7 problems" in message
    assert "row 3, price: " in message
    assert "row 4, barcodes: barcode '6921168509257'" in message
    assert "row 5, unit: '斤'" in message
    assert "row 6, sku: sku 'A' is used twice" in message
    assert "row 7, name: is empty" in message
    assert "row 7, price: is empty" in message
    assert "row 8, barcodes: '6.92117E+12' was turned into scientific notation" in message
    assert message.index("row 6,") < message.index("row 7,")  # file order, cross-row checks included


def test_csv_error_list_is_capped(tmp_path):
    path = tmp_path / "bad.csv"
    rows = "".join(f"S{n},商品{n},abc\n" for n in range(30))
    path.write_text("sku,name,price\n" + rows, encoding="utf-8")
    with pytest.raises(CatalogError) as caught:
        read_catalog_file(path)
    message = str(caught.value)
    assert "row 21, price" in message
    assert "row 22, price" not in message
    assert "and 10 more" in message


def test_csv_unknown_or_missing_columns(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("sku,name,colour\nA,苹果,red\n", encoding="utf-8")
    with pytest.raises(CatalogError) as caught:
        read_catalog_file(path)
    assert "unknown column 'colour'" in str(caught.value)
    assert "missing column 'price'" in str(caught.value)


def test_csv_variant_of_a_bad_row_is_reported_once(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("sku,name,price,variant_of\nP,拿铁,x,\nC,拿铁大杯,21,P\n", encoding="utf-8")
    with pytest.raises(CatalogError) as caught:
        read_catalog_file(path)
    assert "1 problem:" in str(caught.value)


def test_json_import_bare_list_and_document(tmp_path):
    items = [{"sku": "A", "name": "可口可乐", "price_fen": 300, "barcodes": [COLA]}]
    bare = tmp_path / "list.json"
    bare.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    doc = read_catalog_file(bare, version=5)
    assert doc.version == 5
    assert doc.products[0].pinyin == "kkkl"

    full = tmp_path / "doc.json"
    full.write_text(
        json.dumps({"version": 1, "products": items, "price_overrides": {"A": 280}}), encoding="utf-8"
    )
    doc = read_catalog_file(full)
    assert doc.price_overrides == {"A": 280}
    assert doc.version >= 20240101000000  # load time, so a later load wins


def test_json_import_errors(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("[{", encoding="utf-8")
    with pytest.raises(CatalogError, match="not valid UTF-8 JSON"):
        read_catalog_file(broken)
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps([{"sku": "A", "name": "x", "price_fen": 1.5}]), encoding="utf-8")
    with pytest.raises(CatalogError, match=r"products\.0\.price_fen"):
        read_catalog_file(invalid)
    with pytest.raises(CatalogError, match=r"\.json or \.csv"):
        read_catalog_file(tmp_path / "catalog.xlsx")


# --------------------------------------------------------------------------- sample


def test_sample_catalog_is_valid_and_barcodes_are_gtins(tmp_path):
    doc = CatalogDocument.model_validate_json(SAMPLE.read_text(encoding="utf-8"))
    assert doc.version == 1
    assert 40 <= len(doc.products) <= 60
    codes = [code for item in doc.products for code in item.barcodes]
    assert len(codes) > 30
    assert all(is_valid_gtin(code) and code.startswith("69") for code in codes)
    assert all(item.pinyin for item in doc.products)
    assert any(item.unit == "kg" and item.plu for item in doc.products)
    assert any(item.open_price for item in doc.products)
    assert any(item.variant_of for item in doc.products)
    assert Catalog(doc).lookup_barcode(WATER).product.name.startswith("农夫山泉")
    # The stored initials are what the importer computes, so search behaves the same.
    raw = json.loads(SAMPLE.read_text(encoding="utf-8"))
    for item in raw["products"]:
        del item["pinyin"]
    stripped = tmp_path / "sample.json"
    stripped.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    assert read_catalog_file(stripped, version=1) == doc


def test_daemon_side_imports_do_not_load_pypinyin():
    code = "import sys, edge.catalog, edge.catalog_files; print('pypinyin' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"

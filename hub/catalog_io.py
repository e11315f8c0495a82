"""The catalog to and from Excel (.xlsx, openpyxl) and CSV, with a report per row.

Row 1 names the columns, in Chinese or English, in any order (see `_COLUMNS`); prices
are in yuan as people type them ("3.5"), tax as a percentage ("13%"), several barcodes
separated by commas or spaces, and one extra unit per row (包装单位 箱, 包装数量 24,
包装条码). Every row is checked, on its own and against the file and the stored catalog
(unknown category, wrong check digit, negative price, duplicate SKU, a barcode another
SKU has), before anything is written. Mode `all-or-nothing` (default) writes nothing if
any row is bad; `valid-only` writes the good rows and reports the bad ones. A CSV may be
UTF-8 (with or without BOM) or GB18030, as Excel in China saves it. Export writes the same
columns, so an exported file imports back unchanged.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import openpyxl
from pydantic import ValidationError
from sqlalchemy import select

from hub.catalog import (
    MAX_PRICE_FEN,
    CatalogError,
    Issue,
    ProductIn,
    check_products,
    load_products,
    product_json,
    save_products,
)
from hub.catalog_categories import add_category
from hub.catalog_tables import CatalogProduct
from hub.db import Database
from hub.sheets import RowError, blank_row, cell_text, read_xlsx

__all__ = [
    "MAX_ROWS",
    "BadCatalogFile",
    "ImportMode",
    "ImportReport",
    "RowError",
    "export_catalog",
    "import_catalog",
]

MAX_ROWS = 100_000
ImportMode = Literal["all-or-nothing", "valid-only"]
Progress = Callable[[str, int, int], None]  # (phase, done, total): "checking" or "importing"
_CHUNK = 500
_COLUMNS: dict[str, tuple[str, ...]] = {
    "sku": ("商品编码", "编码", "sku"),
    "name": ("商品名称", "名称", "品名", "name"),
    "category": ("分类", "类别", "category"),
    "variant_of": ("主商品", "variant_of"),
    "variant": ("规格", "variant"),
    "unit": ("单位", "unit"),
    "price": ("售价", "零售价", "price"),
    "cost": ("进价", "成本价", "cost"),
    "member_price": ("会员价", "member_price"),
    "tax_rate": ("税率", "tax_rate"),
    "barcodes": ("条码", "barcodes", "barcode"),
    "plu": ("plu", "称重码"),
    "open_price": ("时价", "open_price"),
    "pinyin": ("拼音", "pinyin"),
    "active": ("在售", "active"),
    "case_unit": ("包装单位", "case_unit"),
    "case_qty": ("包装数量", "case_qty"),
    "case_barcodes": ("包装条码", "case_barcodes"),
}
_HEADER_KEYS = {word.casefold(): key for key, words in _COLUMNS.items() for word in words}
_EXPORT = [words[0] for words in _COLUMNS.values()]
_UNITS = {
    "piece": "piece",
    "件": "piece",
    "个": "piece",
    "pcs": "piece",
    "kg": "kg",
    "千克": "kg",
    "公斤": "kg",
}
_YES = {"是", "y", "yes", "true", "1", "√"}
_NO = {"否", "n", "no", "false", "0", "×"}
# Which column a ProductIn field's error belongs to.
_FIELD_COLUMN = {
    "price_fen": "price",
    "cost_fen": "cost",
    "member_price_fen": "member_price",
    "tax_rate_bp": "tax_rate",
    "units": "case_unit",
}


class BadCatalogFile(ValueError):
    """The file is not a readable .xlsx or CSV, or lacks the sku, name or price column."""


@dataclass
class ImportReport:
    """What an import found and did; `written` is False when nothing was imported."""

    mode: str = "all-or-nothing"
    rows: int = 0
    valid: int = 0
    imported: int = 0
    written: bool = False
    errors: list[RowError] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form for the API and the CLI."""
        return asdict(self)


def _yuan(value: Any) -> int | None:
    """Yuan as typed ("3.5", 3.5, "¥3.50") to fen; None when empty."""
    raw = cell_text(value).lstrip("¥￥").replace(",", "")
    if not raw:
        return None
    try:
        # floats from Excel cells go through their shortest repr: 3.3 stays 3.3, not 3.2999…
        number = Decimal(repr(value) if isinstance(value, float) else raw)
    except InvalidOperation:
        raise ValueError(f"{raw!r} is not an amount in yuan such as 3.50") from None
    if not number.is_finite() or number != number.quantize(Decimal("0.01")):
        raise ValueError(f"{raw!r} has more than two decimals (0.01 yuan is one fen)")
    if number < 0:
        raise ValueError(f"{raw} must not be negative")
    fen = int(number * 100)
    if fen > MAX_PRICE_FEN:
        raise ValueError(f"{raw} is too large")
    return fen


def _percent(value: Any) -> int:
    raw = cell_text(value).rstrip("%").strip()
    if not raw:
        return 0
    try:
        number = Decimal(repr(value) if isinstance(value, float) else raw)
    except InvalidOperation:
        raise ValueError(f"{raw!r} is not a tax rate such as 13%") from None
    if isinstance(value, float) and 0 < number < 1:  # an Excel percent cell holds 0.13
        number *= 100
    if not number.is_finite() or not 0 <= number <= 100 or number != number.quantize(Decimal("0.01")):
        raise ValueError(f"{raw!r} is not a tax rate from 0% to 100%")
    return int(number * 100)


def _flag(value: Any, default: bool) -> bool:
    if isinstance(value, bool):
        return value
    word = cell_text(value).casefold()
    if not word:
        return default
    if word in _YES:
        return True
    if word in _NO:
        return False
    raise ValueError(f"{value!r} is not 是/否 (yes/no)")


def _codes(value: Any) -> list[str]:
    raw = cell_text(value)
    for sep in ("，", ";", "；", "/", "|", "\n"):
        raw = raw.replace(sep, ",")
    return [code for part in raw.split(",") for code in part.split() if code]


def _read_rows(data: bytes, filename: str) -> list[Sequence[Any]]:
    """The rows of an .xlsx (first sheet) or CSV file (blocking: call in a thread)."""
    if filename.lower().endswith(".xlsx") or data[:2] == b"PK":
        return read_xlsx(data, max_rows=MAX_ROWS, what="products", error=BadCatalogFile)
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise BadCatalogFile("the CSV is neither UTF-8 nor GB18030 text")
    try:
        rows: list[Sequence[Any]] = list(csv.reader(io.StringIO(text)))
    except csv.Error as err:
        raise BadCatalogFile(f"not a readable CSV file ({err})") from err
    if len(rows) > MAX_ROWS + 1:
        raise BadCatalogFile(f"at most {MAX_ROWS} products per file; split the file")
    return rows


class _Rows:
    """Turns file rows into `ProductIn`s, collecting each row's errors by column title."""

    def __init__(self, header: Sequence[Any]):
        self.columns: dict[str, int] = {}
        self.titles: dict[str, str] = {}
        self.ignored: list[str] = []
        for index, title in enumerate(header):
            text = cell_text(title)
            key = _HEADER_KEYS.get(text.casefold())
            if key is None or key in self.columns:
                if text:
                    self.ignored.append(text)
                continue
            self.columns[key], self.titles[key] = index, text
        missing = [_COLUMNS[k][0] for k in ("sku", "name", "price") if k not in self.columns]
        if missing:
            raise BadCatalogFile(f"row 1 has no {', '.join(missing)} column (English: sku, name, price)")
        self.errors: list[RowError] = []

    def title(self, key: str) -> str:
        return self.titles.get(key, _COLUMNS[key][0] if key in _COLUMNS else key)

    def cell(self, row: Sequence[Any], key: str) -> Any:
        index = self.columns.get(key)
        return row[index] if index is not None and index < len(row) else None

    def parse(self, number: int, row: Sequence[Any]) -> ProductIn | None:
        before = len(self.errors)
        values: dict[str, Any] = {}
        simple = {
            "sku": "sku", "name": "name", "category": "category", "variant_of": "variant_of",
            "variant": "variant", "plu": "plu", "pinyin": "pinyin",
        }  # fmt: skip
        for key, name in simple.items():
            text = cell_text(self.cell(row, key))
            if text or key in ("sku", "name"):
                values[name] = text
        converters: dict[str, tuple[str, Callable[[Any], Any]]] = {
            "price": ("price_fen", _yuan),
            "cost": ("cost_fen", _yuan),
            "member_price": ("member_price_fen", _yuan),
            "tax_rate": ("tax_rate_bp", _percent),
            "open_price": ("open_price", lambda v: _flag(v, False)),
            "active": ("active", lambda v: _flag(v, True)),
            "barcodes": ("barcodes", _codes),
            "unit": ("unit", self._unit),
        }
        for key, (name, convert) in converters.items():
            try:
                values[name] = convert(self.cell(row, key))
            except ValueError as err:
                self.errors.append(RowError(number, self.title(key), str(err)))
        if values.get("price_fen", 0) is None:
            self.errors.append(RowError(number, self.title("price"), "a price is required"))
        case_unit = cell_text(self.cell(row, "case_unit"))
        case_qty = cell_text(self.cell(row, "case_qty"))
        case_codes = _codes(self.cell(row, "case_barcodes"))
        if case_unit or case_qty or case_codes:
            values["units"] = [{"unit": case_unit, "qty": case_qty, "barcodes": case_codes}]
        if len(self.errors) > before:
            return None
        try:
            return ProductIn.model_validate({k: v for k, v in values.items() if v is not None})
        except ValidationError as err:
            for error in err.errors():
                self.errors.append(RowError(number, self._column(error["loc"]), _message(error)))
            return None

    def _unit(self, value: Any) -> str:
        word = cell_text(value).casefold()
        if not word:
            return "piece"
        if word not in _UNITS:
            raise ValueError(f"unit {value!r} is not 件 (piece) or kg")
        return _UNITS[word]

    def _column(self, loc: Sequence[Any]) -> str:
        head = str(loc[0]) if loc else "sku"
        if head == "units" and len(loc) >= 3:
            key = {"unit": "case_unit", "qty": "case_qty", "barcodes": "case_barcodes"}.get(
                str(loc[2]), "case_unit"
            )
            return self.title(key)
        return self.title(_FIELD_COLUMN.get(head, head))

    def column_of(self, field_path: str) -> str:
        return self._column(field_path.split("."))


def _message(error: Any) -> str:
    return str(error["msg"]).removeprefix("Value error, ")


def _row_error(parser: _Rows, parsed: list[tuple[int, ProductIn]], issue: Issue) -> RowError:
    row = parsed[issue.index][0]
    message = issue.message
    if issue.other is not None:
        message = f"sku {parsed[issue.index][1].sku!r} is also on row {parsed[issue.other][0]}"
    return RowError(row, parser.column_of(issue.field), message)


class _Abort(Exception):
    """Leaves the import's transaction so that it rolls back."""


async def _parse_file(
    data: bytes, filename: str, report: ImportReport
) -> tuple[_Rows, list[tuple[int, ProductIn]]]:
    """Each non-blank row as (row number, product); rows that do not parse are in the parser's errors."""
    rows = await asyncio.to_thread(_read_rows, data, filename)
    if not rows:
        raise BadCatalogFile("the file is empty; row 1 must name the columns (商品编码, 商品名称, 售价, …)")
    parser = _Rows(rows[0])
    report.ignored_columns = parser.ignored
    parsed: list[tuple[int, ProductIn]] = []
    for number, row in enumerate(rows[1:], start=2):
        if blank_row(row):
            continue
        report.rows += 1
        item = parser.parse(number, row)
        if item is not None:
            parsed.append((number, item))
    return parser, parsed


async def import_catalog(
    db: Database,
    data: bytes,
    *,
    filename: str = "",
    mode: ImportMode = "all-or-nothing",
    create_categories: bool = False,
    actor: str,
    progress: Progress | None = None,
) -> ImportReport:
    """Check every row of a catalog file, then save the products in one transaction (or none).

    `create_categories` makes the categories the file names instead of reporting them
    unknown. `BadCatalogFile` if the file itself is unusable.
    """
    if mode not in ("all-or-nothing", "valid-only"):
        raise ValueError(f"mode must be all-or-nothing or valid-only, not {mode!r}")
    report = ImportReport(mode=mode)
    if progress is not None:
        progress("checking", 0, 0)
    parser, parsed = await _parse_file(data, filename, report)
    try:
        async with db.session() as session, session.begin():
            if create_categories:
                for path in sorted({item.category for _, item in parsed if item.category}):
                    await add_category(session, path)
            # Dropping a bad row can break a good one (a variant of it): check until stable.
            while parsed:
                issues = await check_products(session, [item for _, item in parsed])
                if not issues:
                    break
                bad = {issue.index for issue in issues}
                parser.errors.extend(_row_error(parser, parsed, issue) for issue in issues)
                parsed = [entry for index, entry in enumerate(parsed) if index not in bad]
            report.errors = sorted(parser.errors, key=lambda e: (e.row, e.column))
            report.valid = len(parsed)
            if (report.errors and mode == "all-or-nothing") or not parsed:
                raise _Abort
            for start in range(0, len(parsed), _CHUNK):
                chunk = [item for _, item in parsed[start : start + _CHUNK]]
                await save_products(session, chunk, actor=actor)
                report.imported += len(chunk)
                if progress is not None:
                    progress("importing", report.imported, len(parsed))
    except _Abort:
        report.imported = 0
        return report
    except CatalogError:
        report.imported = 0
        raise
    report.written = True
    return report


def _export_row(item: dict[str, Any]) -> list[Any]:
    unit = item["units"][0] if item["units"] else None

    def yuan(fen: int | None) -> str:
        return "" if fen is None else f"{Decimal(fen) / 100:.2f}"

    return [
        item["sku"],
        item["name"],
        item["category"] or "",
        item["variant_of"] or "",
        item["variant"] or "",
        "kg" if item["unit"] == "kg" else "件",
        yuan(item["price_fen"]),
        yuan(item["cost_fen"]),
        yuan(item["member_price_fen"]),
        f"{Decimal(item['tax_rate_bp']) / 100:g}%",
        ",".join(item["barcodes"]),
        item["plu"] or "",
        "是" if item["open_price"] else "否",
        item["pinyin"],
        "是" if item["active"] else "否",
        unit["unit"] if unit else "",
        unit["qty"] if unit else "",
        ",".join(unit["barcodes"]) if unit else "",
    ]


async def export_catalog(db: Database, *, fmt: Literal["xlsx", "csv"] = "xlsx") -> bytes:
    """The whole catalog as an .xlsx or a UTF-8 CSV (with BOM, so Excel reads the Chinese)."""
    rows: list[list[Any]] = [_EXPORT]
    async with db.session() as session:
        offset = 0
        while True:
            products = (
                await session.scalars(
                    select(CatalogProduct).order_by(CatalogProduct.sku).limit(_CHUNK).offset(offset)
                )
            ).all()
            if not products:
                break
            rows.extend(_export_row(product_json(v)) for v in await load_products(session, list(products)))
            offset += _CHUNK
    return await asyncio.to_thread(_write, rows, fmt)


def _write(rows: list[list[Any]], fmt: str) -> bytes:
    if fmt == "csv":
        out = io.StringIO()
        csv.writer(out).writerows(rows)
        return out.getvalue().encode("utf-8-sig")
    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("商品")
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()

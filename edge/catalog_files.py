"""Catalog files an installer or head office hands over: JSON documents and Excel CSV exports.

Only the `storelink-edge catalog load` command imports this module; the daemon never does,
which keeps pypinyin (tens of MB of dictionaries) out of the till's memory.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edge.catalog import (
    CatalogDocument,
    CatalogError,
    Product,
    _cross_check,
    _describe_errors,
    _truncate,
)
from protocol.money import parse_yuan

__all__ = ["read_catalog_file"]

_MAX_LISTED = 20
_REQUIRED_COLUMNS = ("sku", "name", "price")
_COLUMNS = (
    "sku",
    "name",
    "category",
    "unit",
    "price",
    "barcodes",
    "plu",
    "open_price",
    "variant_of",
    "variant",
    "cost",
    "member_price",
)
# Spreadsheet users write units in Chinese; the model only knows two.
_UNITS = {
    "piece": "piece",
    "pcs": "piece",
    "个": "piece",
    "件": "piece",
    "kg": "kg",
    "公斤": "kg",
    "千克": "kg",
}
_TRUE = {"1", "true", "yes", "y", "是"}
_FALSE = {"", "0", "false", "no", "n", "否"}
_BARCODE_SEPARATORS = re.compile(r"[|;；｜]")
# Excel shows long numbers like 6901234567892 as 6.90123E+12 and saves them that way.
_SCIENTIFIC = re.compile(r"[0-9](\.[0-9]+)?e\+?[0-9]+", re.IGNORECASE)
# A model field → the CSV column a spreadsheet user knows it by.
_FIELD_COLUMNS = {"price_fen": "price", "cost_fen": "cost", "member_price_fen": "member_price"}


def read_catalog_file(path: Path, *, version: int | None = None) -> CatalogDocument:
    """Read a catalog from a .json or .csv file, filling in pinyin initials for search."""
    if version is None:
        # Load time as version: a file loaded later always replaces one loaded earlier.
        version = int(datetime.now(UTC).strftime("%Y%m%d%H%M%S"))
    suffix = path.suffix.lower()
    if suffix not in (".json", ".csv"):
        raise CatalogError(f"catalog file {path} must end in .json or .csv (Excel: save as CSV UTF-8)")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CatalogError(f"cannot read catalog file {path}: {err.strerror or err}") from err
    document = (_read_json if suffix == ".json" else _read_csv)(path, data, version)
    # Imported here, not at the top: pypinyin loads ~55 MB of dictionaries, which only the
    # loading command should pay for, never the daemon.
    from pypinyin import Style, lazy_pinyin  # noqa: PLC0415

    def initials(name: str) -> str:
        letters = "".join(lazy_pinyin(unicodedata.normalize("NFKC", name), style=Style.FIRST_LETTER))
        return "".join(char for char in letters.lower() if char.isascii() and char.isalnum())

    # model_copy skips validation, which is safe: initials() only yields [a-z0-9].
    products = [
        product if product.pinyin else product.model_copy(update={"pinyin": initials(product.name)})
        for product in document.products
    ]
    return document.model_copy(update={"products": products})


def _fail(path: Path, problems: list[str]) -> CatalogError:
    lines = "\n".join(f"  {line}" for line in _truncate(problems, _MAX_LISTED))
    count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
    return CatalogError(f"catalog file {path} was not loaded, {count}:\n{lines}")


# --------------------------------------------------------------------------- JSON


def _read_json(path: Path, data: bytes, version: int) -> CatalogDocument:
    try:
        raw = json.loads(data.decode("utf-8-sig"))
    except ValueError as err:
        raise _fail(path, [f"not valid UTF-8 JSON: {err}"]) from err
    if isinstance(raw, list):
        raw = {"products": raw}
    if not isinstance(raw, dict):
        raise _fail(path, ["expected a catalog object or a list of products"])
    raw = {**raw, "version": version}
    try:
        return CatalogDocument.model_validate(raw)
    except ValidationError as err:
        raise _fail(path, _describe_errors(err, limit=len(err.errors()))) from err


# --------------------------------------------------------------------------- CSV


def _decode(path: Path, data: bytes) -> str:
    # Excel in China saves "CSV" as GBK/GB18030 and "CSV UTF-8" with a BOM; both are common.
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise _fail(path, ["the file is neither UTF-8 nor GB18030 text; save it from Excel as CSV UTF-8"])


def _read_csv(path: Path, data: bytes, version: int) -> CatalogDocument:
    reader = csv.reader(io.StringIO(_decode(path, data), newline=""))
    header = next(reader, None)
    if header is None:
        raise _fail(path, ["the file is empty"])
    columns = [name.strip().lower() for name in header]
    _check_header(path, columns)
    problems: list[tuple[int, str]] = []  # (row, line)
    rows: list[int] = []
    products: list[Product] = []
    failed_skus: set[str] = set()
    try:
        for values in reader:
            if not any(value.strip() for value in values):
                continue  # Excel leaves blank lines and ",,,," rows at the end
            row = reader.line_num
            if len(values) > len(columns):
                problems.append(
                    (row, f"row {row}: {len(values)} values, the header has {len(columns)} columns")
                )
                continue
            cells = dict(zip(columns, (value.strip() for value in values), strict=False))
            product = _product_from_row(row, cells, problems)
            if product is None:
                failed_skus.add(cells.get("sku", ""))
            else:
                rows.append(row)
                products.append(product)
    except csv.Error as err:
        row = reader.line_num + 1
        problems.append((row, f"row {row}: {err}; the rest of the file was not read"))
    for problem in _cross_check(products, {}):
        product = products[problem.index] if problem.index is not None else None
        if product is not None and problem.field == "variant_of" and product.variant_of in failed_skus:
            continue  # the parent's own row is already reported; one mistake, one line
        row = rows[problem.index] if problem.index is not None else 0
        problems.append((row, f"row {row}, {_column(problem.field)}: {problem.message}"))
    if problems:
        # Cross-row problems are found after the row pass; sorting puts them in file order.
        raise _fail(path, [line for _, line in sorted(problems, key=lambda problem: problem[0])])
    if not products:
        raise _fail(path, ["the file has a header but no products"])
    try:
        return CatalogDocument(version=version, products=products)
    except ValidationError as err:  # _cross_check found nothing, so this is unexpected
        raise _fail(path, _describe_errors(err)) from err


def _check_header(path: Path, columns: list[str]) -> None:
    problems = [f"unknown column {name!r}" for name in columns if name not in _COLUMNS]
    problems += [f"column {name!r} appears twice" for name in set(columns) if columns.count(name) > 1]
    problems += [f"missing column {name!r}" for name in _REQUIRED_COLUMNS if name not in columns]
    if problems:
        problems.append(f"the header must use these columns: {','.join(_COLUMNS)}")
        raise _fail(path, problems)


def _product_from_row(row: int, cells: dict[str, str], problems: list[tuple[int, str]]) -> Product | None:
    fields: dict[str, Any] = {}
    errors: list[tuple[str, str]] = []
    for column, text in cells.items():
        if not text:
            continue  # an empty cell means the model's default
        try:
            fields.update(_PARSERS.get(column, _as_is)(column, text))
        except ValueError as err:
            errors.append((column, str(err)))
    if "price_fen" not in fields and not any(column == "price" for column, _ in errors):
        if fields.get("open_price"):
            fields["price_fen"] = 0  # keyed in at the till; 0 is only its list price
        else:
            errors.append(("price", "is empty; write the price in yuan, such as 3.50"))
    try:
        product = Product.model_validate(fields)
    except ValidationError as err:
        # Validate even a row with bad cells, so one pass reports all of its mistakes;
        # a cell that already failed to parse is not reported again as "missing".
        reported = {column for column, _ in errors}
        for error in err.errors():
            column = _column(str(error["loc"][0])) if error["loc"] else "product"
            message = error["msg"].removeprefix("Value error, ")
            if column not in reported:
                errors.append((column, "is empty" if error["type"] == "missing" else message))
        product = None
    problems.extend((row, f"row {row}, {column}: {message}") for column, message in errors)
    return product if not errors else None


def _as_is(column: str, text: str) -> dict[str, Any]:
    return {column: text}


def _parse_unit(column: str, text: str) -> dict[str, Any]:
    unit = _UNITS.get(text.lower())
    if unit is None:
        raise ValueError(f"{text!r} is not a unit; use piece (个) or kg (公斤)")
    return {"unit": unit}


def _parse_flag(column: str, text: str) -> dict[str, Any]:
    flag = text.lower()
    if flag not in _TRUE | _FALSE:
        raise ValueError(f"{text!r} is not yes/no; use 1 or 0 (是 or 否)")
    return {column: flag in _TRUE}


def _parse_money(column: str, text: str) -> dict[str, Any]:
    fen = parse_yuan(text)
    if fen < 0:
        raise ValueError(f"{text} is negative")
    return {f"{column}_fen": fen}


def _parse_barcodes(column: str, text: str) -> dict[str, Any]:
    codes = [code.strip() for code in _BARCODE_SEPARATORS.split(text) if code.strip()]
    for code in codes:
        if _SCIENTIFIC.fullmatch(code):
            raise ValueError(
                f"{code!r} was turned into scientific notation by Excel;"
                " format the column as text and type the barcodes again"
            )
    return {"barcodes": codes}


_PARSERS = {
    "unit": _parse_unit,
    "open_price": _parse_flag,
    "price": _parse_money,
    "cost": _parse_money,
    "member_price": _parse_money,
    "barcodes": _parse_barcodes,
}


def _column(field: str) -> str:
    return _FIELD_COLUMNS.get(field, field)

"""The head-office catalog: categories, products (SKUs and variants), barcodes and units.

Head office creates items once (品项由总部创建); stores link them (`hub.catalog_stores`).
`save_products` checks a whole batch against itself and the database before writing any
of it, and reports each problem with the batch position and field, so the importer can
name the file's row and the API the body's field path. Writes are Core bulk statements
inside the caller's transaction: a refusal leaves nothing half-written.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, StrictInt, field_validator
from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from hub.catalog_tables import CatalogBarcode, CatalogCategory, CatalogProduct, CatalogUnit
from hub.db import AsyncSession
from hub.errors import HubError, NotFound
from hub.stock import StockError, format_milli, parse_qty
from protocol.barcodes import gtin_check_digit, is_valid_gtin, normalize_barcode

__all__ = [
    "MAX_PRICE_FEN",
    "CatalogError",
    "InvalidProducts",
    "Issue",
    "ProductIn",
    "ProductView",
    "UnitIn",
    "barcode_key",
    "category_path",
    "get_product",
    "load_products",
    "product_json",
    "products_page",
    "resolve_barcode",
    "save_products",
    "to_base_milli",
]

MAX_PRICE_FEN = 10**10  # ¥100 million: beyond any item, so a typo in the thousands is caught
_GTIN_LENGTHS = frozenset({8, 12, 13, 14})
_CHUNK = 500
_Fen = Annotated[StrictInt, Field(ge=0, le=MAX_PRICE_FEN)]


class CatalogError(HubError):
    """A catalog change was refused; the message says why and what to do."""


@dataclass(frozen=True)
class Issue:
    """One problem with a batch: which item (0-based), which field, what is wrong."""

    index: int
    field: str
    message: str
    other: int | None = None  # the other item of a duplicate


class InvalidProducts(CatalogError):
    """Some products of a batch are invalid; nothing of the batch was written."""

    def __init__(self, issues: list[Issue]):
        shown = "; ".join(f"item {i.index} {i.field}: {i.message}" for i in issues[:5])
        more = f" and {len(issues) - 5} more" if len(issues) > 5 else ""
        super().__init__(f"{len(issues)} problem(s), nothing was saved: {shown}{more}")
        self.issues = issues


def barcode_key(code: str) -> str:
    """The code as the till matches it: GTINs zero-padded to 14 digits (UPC-A = EAN-13 with a 0)."""
    gtin = code.isascii() and code.isdigit() and len(code) in _GTIN_LENGTHS
    return code.zfill(14) if gtin else code


def _check_barcode(raw: str) -> str:
    code = normalize_barcode(raw)
    if code.isascii() and code.isdigit() and len(code) in _GTIN_LENGTHS and not is_valid_gtin(code):
        expected = gtin_check_digit(code[:-1])
        raise ValueError(f"barcode {code!r} has a wrong check digit (a valid code ends in {expected})")
    return code


def _check_barcodes(codes: list[str]) -> list[str]:
    out: list[str] = []
    for raw in codes:
        code = _check_barcode(raw)
        if barcode_key(code) in {barcode_key(c) for c in out}:
            raise ValueError(f"barcode {code!r} is listed twice")
        out.append(code)
    return out


def _printable(text: str | None) -> str | None:
    # Names are printed on receipts: a control character could drive the printer.
    if text is not None and any(unicodedata.category(c) in {"Cc", "Cf"} for c in text):
        raise ValueError(f"{text!r} contains a control character")
    return text


def _positive_qty(value: Any) -> int:
    try:
        milli = parse_qty(value, field="qty")
    except StockError as err:
        raise ValueError(str(err)) from None
    if milli <= 0:
        raise ValueError("qty must be more than 0 base units")
    return milli


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class UnitIn(_In):
    """Another unit of the SKU (箱, case): how many base units it holds, and its barcodes."""

    unit: str = Field(min_length=1, max_length=16)
    qty: Annotated[int, PlainValidator(_positive_qty)]  # thousandths of the base unit
    barcodes: list[str] = Field(default=[], max_length=20)

    _barcodes = field_validator("barcodes")(_check_barcodes)
    _unit = field_validator("unit")(_printable)


class ProductIn(_In):
    """A product as head office defines it; `category` is a path such as "饮料/碳酸饮料"."""

    sku: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=100)
    category: str | None = Field(None, max_length=400)
    variant_of: str | None = Field(None, min_length=1, max_length=64)
    variant: str | None = Field(None, min_length=1, max_length=40)
    unit: Literal["piece", "kg"] = "piece"
    price_fen: _Fen
    cost_fen: _Fen | None = None
    member_price_fen: _Fen | None = None
    tax_rate_bp: Annotated[StrictInt, Field(ge=0, le=10_000)] = 0
    barcodes: list[str] = Field(default=[], max_length=20)
    plu: str | None = Field(None, pattern=r"^[0-9]{1,13}$")
    open_price: bool = False
    pinyin: str = Field("", max_length=100, pattern=r"^[a-z0-9]*$")
    active: bool = True
    units: list[UnitIn] = Field(default=[], max_length=10)

    _barcodes = field_validator("barcodes")(_check_barcodes)
    _text = field_validator("name", "variant")(_printable)

    @field_validator("sku", "variant_of")
    @classmethod
    def _check_sku(cls, sku: str | None) -> str | None:
        if sku is not None and any(c.isspace() or unicodedata.category(c) in {"Cc", "Cf"} for c in sku):
            raise ValueError(f"sku {sku!r} contains whitespace or a control character")
        return sku

    @field_validator("category")
    @classmethod
    def _check_category(cls, path: str | None) -> str | None:
        return category_path(path) if path else None


def category_path(path: str) -> str:
    """A category path with each name trimmed: " 饮料 / 碳酸 " -> "饮料/碳酸"; `ValueError` if unusable."""
    names = [name.strip() for name in path.split("/")]
    if not names or any(not name for name in names):
        raise ValueError(f"category {path!r} has an empty name; write it as 饮料/碳酸饮料")
    for name in names:
        if len(name) > 40 or _printable(name) != name:
            raise ValueError(f"category name {name!r} must be 1-40 printable characters")
    return "/".join(names)


# --------------------------------------------------------------------------- products


async def _in_chunks(session: AsyncSession, column: Any, values: list[str], *cols: Any) -> list[Any]:
    found: list[Any] = []
    for start in range(0, len(values), _CHUNK):
        part = values[start : start + _CHUNK]
        found.extend((await session.execute(select(*cols).where(column.in_(part)))).all())
    return found


class _Checker:
    """Cross-checks a batch against itself and the catalog as it will be after the batch."""

    def __init__(self, items: list[ProductIn]):
        self.items = items
        self.issues: list[Issue] = []
        self.skus = {item.sku for item in items}

    def add(self, index: int, field: str, message: str) -> None:
        self.issues.append(Issue(index, field, message))

    async def run(self, session: AsyncSession) -> dict[str, int]:
        first: dict[str, int] = {}
        for index, item in enumerate(self.items):
            if item.sku in first:
                message = f"sku {item.sku!r} is also item {first[item.sku]} of this batch"
                self.issues.append(Issue(index, "sku", message, first[item.sku]))
            else:
                first[item.sku] = index
        categories = await self._categories(session)
        await self._variants(session)
        await self._codes(session)
        await self._plus(session)
        self.issues.sort(key=lambda i: (i.index, i.field))
        return categories

    async def _categories(self, session: AsyncSession) -> dict[str, int]:
        paths = sorted({item.category for item in self.items if item.category})
        found = dict(
            await _in_chunks(session, CatalogCategory.path, paths, CatalogCategory.path, CatalogCategory.id)
        )
        for index, item in enumerate(self.items):
            if item.category and item.category not in found:
                self.add(index, "category", f"unknown category {item.category!r}; create it first")
        return found

    async def _variants(self, session: AsyncSession) -> None:
        parents = sorted({item.variant_of for item in self.items if item.variant_of})
        stored = dict(
            await _in_chunks(
                session, CatalogProduct.sku, parents, CatalogProduct.sku, CatalogProduct.variant_of
            )
        )
        final = {**stored, **{item.sku: item.variant_of for item in self.items}}
        # a product that is to become a variant must not itself have variants (one level only)
        becoming = sorted(item.sku for item in self.items if item.variant_of)
        children = {
            parent
            for child, parent in await _in_chunks(
                session, CatalogProduct.variant_of, becoming, CatalogProduct.sku, CatalogProduct.variant_of
            )
            if child not in self.skus
        } | {item.variant_of for item in self.items if item.variant_of}
        for index, item in enumerate(self.items):
            if item.variant_of is None:
                continue
            if item.variant_of == item.sku:
                self.add(index, "variant_of", f"{item.sku!r} cannot be a variant of itself")
            elif item.variant_of not in final:
                self.add(index, "variant_of", f"{item.variant_of!r} is not in the catalog")
            elif final[item.variant_of] is not None:
                self.add(index, "variant_of", f"{item.variant_of!r} is itself a variant (one level only)")
            elif item.sku in children:
                self.add(index, "variant_of", f"{item.sku!r} has variants of its own, so it cannot be one")

    def _batch_codes(self) -> list[tuple[int, str, str]]:
        return [
            (index, field, code)
            for index, item in enumerate(self.items)
            for field, code in [("barcodes", c) for c in item.barcodes]
            + [(f"units.{n}.barcodes", c) for n, u in enumerate(item.units) for c in u.barcodes]
        ]

    async def _codes(self, session: AsyncSession) -> None:
        codes = self._batch_codes()
        keys = sorted({barcode_key(code) for _, _, code in codes})
        owner = {
            key: sku
            for key, sku in await _in_chunks(
                session, CatalogBarcode.code_key, keys, CatalogBarcode.code_key, CatalogBarcode.sku
            )
            if sku not in self.skus  # a SKU of this batch gets its barcodes replaced
        }
        for index, item in enumerate(self.items):
            names = [u.unit for u in item.units]
            for n, unit in enumerate(item.units):
                if unit.unit in {item.unit, *names[:n]}:
                    self.add(index, f"units.{n}.unit", f"unit {unit.unit!r} is listed twice")
        for index, field, code in codes:
            key = barcode_key(code)
            sku = self.items[index].sku
            taken = owner.setdefault(key, sku)
            if taken != sku:
                self.add(index, field, f"barcode {code} already belongs to {taken!r}")

    async def _plus(self, session: AsyncSession) -> None:
        plus = sorted({item.plu.lstrip("0") or "0" for item in self.items if item.plu})
        if not plus:
            return
        rows = (
            await session.execute(
                select(CatalogProduct.sku, CatalogProduct.plu).where(CatalogProduct.plu.is_not(None))
            )
        ).all()
        owner = {(plu or "").lstrip("0") or "0": sku for sku, plu in rows if sku not in self.skus}
        for index, item in enumerate(self.items):
            if item.plu:
                taken = owner.setdefault(item.plu.lstrip("0") or "0", item.sku)
                if taken != item.sku:
                    self.add(index, "plu", f"PLU {item.plu} already belongs to {taken!r}")


async def check_products(session: AsyncSession, items: list[ProductIn]) -> list[Issue]:
    """Every problem of the batch against itself and the stored catalog; writes nothing."""
    checker = _Checker(items)
    await checker.run(session)
    return checker.issues


async def save_products(session: AsyncSession, items: list[ProductIn], *, actor: str) -> int:
    """Create or replace products (with their barcodes and units) in the caller's transaction.

    Raises `InvalidProducts` listing every problem, before writing anything.
    """
    if not items:
        return 0
    checker = _Checker(items)
    categories = await checker.run(session)
    if checker.issues:
        raise InvalidProducts(checker.issues)
    now = datetime.now(UTC)
    skus = [item.sku for item in items]
    existing = {row[0] for row in await _in_chunks(session, CatalogProduct.sku, skus, CatalogProduct.sku)}
    rows = [_product_row(item, categories, now) | {"updated_by": actor[:80]} for item in items]
    try:
        new = [r for r in rows if r["sku"] not in existing]
        old = [{k: v for k, v in r.items() if k != "created_at"} for r in rows if r["sku"] in existing]
        if new:
            await session.execute(insert(CatalogProduct), new)
        if old:
            await session.execute(update(CatalogProduct), old)
        for start in range(0, len(skus), _CHUNK):
            part = skus[start : start + _CHUNK]
            await session.execute(delete(CatalogBarcode).where(CatalogBarcode.sku.in_(part)))
            await session.execute(delete(CatalogUnit).where(CatalogUnit.sku.in_(part)))
        codes = [
            {"code_key": barcode_key(code), "code": code, "sku": item.sku, "unit": unit}
            for item in items
            for unit, code in [(None, c) for c in item.barcodes]
            + [(u.unit, c) for u in item.units for c in u.barcodes]
        ]
        units = [{"sku": item.sku, "unit": u.unit, "base_milli": u.qty} for item in items for u in item.units]
        if codes:
            await session.execute(insert(CatalogBarcode), codes)
        if units:
            await session.execute(insert(CatalogUnit), units)
    except IntegrityError as err:
        # Another request saved a clashing barcode between our check and our write.
        raise CatalogError(
            f"the catalog changed while saving ({err.orig}); nothing was saved, try again"
        ) from err
    return len(items)


def _product_row(item: ProductIn, categories: dict[str, int], now: datetime) -> dict[str, Any]:
    return {
        "sku": item.sku,
        "name": item.name,
        "category_id": categories[item.category] if item.category else None,
        "variant_of": item.variant_of,
        "variant": item.variant,
        "base_unit": item.unit,
        "price_fen": item.price_fen,
        "cost_fen": item.cost_fen,
        "member_price_fen": item.member_price_fen,
        "tax_rate_bp": item.tax_rate_bp,
        "plu": item.plu,
        "open_price": item.open_price,
        "pinyin": item.pinyin,
        "active": item.active,
        "created_at": now,
        "updated_at": now,
    }


@dataclass(frozen=True)
class ProductView:
    """A product with its category path, barcodes by unit and units."""

    product: CatalogProduct
    category: str | None
    barcodes: dict[str | None, list[str]]  # unit (None: base) -> codes
    units: dict[str, int]  # unit -> base thousandths


async def load_products(session: AsyncSession, products: list[CatalogProduct]) -> list[ProductView]:
    """Views of the given products, with two queries per 500 products."""
    skus = [p.sku for p in products]
    codes: dict[str, dict[str | None, list[str]]] = {}
    units: dict[str, dict[str, int]] = {}
    for sku, unit, code in await _in_chunks(
        session, CatalogBarcode.sku, skus, CatalogBarcode.sku, CatalogBarcode.unit, CatalogBarcode.code
    ):
        codes.setdefault(sku, {}).setdefault(unit, []).append(code)
    for sku, unit, milli in await _in_chunks(
        session, CatalogUnit.sku, skus, CatalogUnit.sku, CatalogUnit.unit, CatalogUnit.base_milli
    ):
        units.setdefault(sku, {})[unit] = milli
    paths: dict[int | None, str] = dict(
        (await session.execute(select(CatalogCategory.id, CatalogCategory.path))).all()
    )
    return [
        ProductView(p, paths.get(p.category_id), codes.get(p.sku, {}), units.get(p.sku, {})) for p in products
    ]


async def get_product(session: AsyncSession, sku: str) -> ProductView:
    """One product, or `NotFound`."""
    row = await session.get(CatalogProduct, sku, populate_existing=True)
    if row is None:
        raise NotFound(f"no product with sku {sku!r} in the catalog")
    return (await load_products(session, [row]))[0]


async def products_page(
    session: AsyncSession,
    *,
    text: str | None = None,
    category: str | None = None,
    active: bool | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[ProductView], bool]:
    """Products by SKU: `text` in SKU, name, pinyin or a barcode; `category` includes sub-categories."""
    query = select(CatalogProduct)
    if text:
        like = f"%{text.strip().casefold()}%"
        by_code = select(CatalogBarcode.sku).where(
            CatalogBarcode.code.contains(text.strip(), autoescape=True)
        )
        query = query.where(
            or_(
                func.lower(CatalogProduct.sku).like(like),
                CatalogProduct.name.like(f"%{text.strip()}%"),
                CatalogProduct.pinyin.like(like),
                CatalogProduct.sku.in_(by_code),
            )
        )
    if category:
        path = category_path(category)
        ids = select(CatalogCategory.id).where(
            or_(CatalogCategory.path == path, CatalogCategory.path.startswith(path + "/", autoescape=True))
        )
        query = query.where(CatalogProduct.category_id.in_(ids))
    if active is not None:
        query = query.where(CatalogProduct.active.is_(active))
    rows = (await session.scalars(query.order_by(CatalogProduct.sku).limit(limit + 1).offset(offset))).all()
    return await load_products(session, list(rows[:limit])), len(rows) > limit


def product_json(view: ProductView) -> dict[str, Any]:
    """A product as the API returns it; the same shape `ProductIn` accepts back."""
    p = view.product
    return {
        "sku": p.sku,
        "name": p.name,
        "category": view.category,
        "variant_of": p.variant_of,
        "variant": p.variant,
        "unit": p.base_unit,
        "price_fen": p.price_fen,
        "cost_fen": p.cost_fen,
        "member_price_fen": p.member_price_fen,
        "tax_rate_bp": p.tax_rate_bp,
        "barcodes": sorted(view.barcodes.get(None, [])),
        "plu": p.plu,
        "open_price": p.open_price,
        "pinyin": p.pinyin,
        "active": p.active,
        "units": [
            {"unit": unit, "qty": format_milli(milli), "barcodes": sorted(view.barcodes.get(unit, []))}
            for unit, milli in sorted(view.units.items())
        ],
        "updated_at": p.updated_at.isoformat(),
        "updated_by": p.updated_by,
    }


async def to_base_milli(session: AsyncSession, sku: str, unit: str, qty_milli: int) -> int:
    """A quantity in one of the SKU's units as thousandths of its base unit (3 cases -> 72 pieces)."""
    product = await session.get(CatalogProduct, sku)
    if product is None:
        raise NotFound(f"no product with sku {sku!r} in the catalog")
    if unit == product.base_unit:
        return qty_milli
    size = await session.get(CatalogUnit, (sku, unit))
    if size is None:
        raise CatalogError(f"{sku} has no unit {unit!r}; it is counted in {product.base_unit}")
    return qty_milli * size.base_milli // 1000


async def resolve_barcode(session: AsyncSession, code: str) -> tuple[str, int] | None:
    """The SKU a scanned code names and how many base thousandths one scan is (a case: 24000)."""
    row = await session.get(CatalogBarcode, barcode_key(normalize_barcode(code)))
    if row is None:
        return None
    if row.unit is None:
        return row.sku, 1000
    size = await session.get(CatalogUnit, (row.sku, row.unit))
    return row.sku, size.base_milli if size is not None else 1000

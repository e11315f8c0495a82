"""The store's product catalog: validated models, in-memory lookup for the till, TinyDB file.

Lookups run on every scan, so the indexes are built once per catalog version and every
method here is a dict access or one linear pass over precomputed lowercase strings.
"""

from __future__ import annotations

import heapq
import threading
import unicodedata
from collections.abc import MutableMapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)
from tinydb import TinyDB
from tinydb.table import Document

from edge.documents import AtomicJSONStorage
from edge.errors import EdgeError
from protocol.barcodes import (
    ScaleLayout,
    gtin_check_digit,
    is_valid_gtin,
    normalize_barcode,
    parse_scale_barcode,
)

__all__ = ["Catalog", "CatalogDocument", "CatalogError", "CatalogStore", "Product", "ScanMatch"]

_GTIN_LENGTHS = frozenset({8, 12, 13, 14})
_NonNegativeInt = Annotated[StrictInt, Field(ge=0)]


class CatalogError(EdgeError):
    """The catalog (a file, a document or a lookup) is unusable; the message says why."""


def _is_gtin_shaped(code: str) -> bool:
    return code.isascii() and code.isdigit() and len(code) in _GTIN_LENGTHS


def _barcode_key(code: str) -> str:
    # GS1 treats EAN-8, UPC-A, EAN-13 and GTIN-14 as one number space once zero-padded
    # to 14 digits, and scanners differ in whether they send UPC-A with a leading zero.
    return code.zfill(14) if _is_gtin_shaped(code) else code


def _plu_key(plu: str) -> str:
    # Scale labels zero-pad the PLU to the layout's width; the catalog may not.
    return plu.lstrip("0") or "0"


def _fold(text: str) -> str:
    # NFKC turns full-width letters and digits (Chinese input methods) into ASCII.
    return unicodedata.normalize("NFKC", text).strip().casefold()


class Product(BaseModel):
    """One sellable item; prices are per piece or per kg, in fen."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sku: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=100)
    category: str = ""
    unit: Literal["piece", "kg"] = "piece"
    price_fen: _NonNegativeInt
    barcodes: list[str] = []
    plu: str | None = Field(default=None, pattern=r"^[0-9]{1,13}$")
    open_price: bool = False
    variant_of: str | None = None
    variant: str | None = None
    pinyin: str = Field(default="", pattern=r"^[a-z0-9]*$")
    cost_fen: _NonNegativeInt | None = None
    member_price_fen: _NonNegativeInt | None = None  # for levels that use the member price list
    active: bool = True

    @field_validator("sku")
    @classmethod
    def _check_sku(cls, sku: str) -> str:
        for char in sku:
            if char.isspace() or unicodedata.category(char) in {"Cc", "Cf"}:
                raise ValueError(f"sku {sku!r} contains whitespace or a control character")
        return sku

    @field_validator("name", "category", "variant")
    @classmethod
    def _check_text(cls, text: str | None) -> str | None:
        # These are printed on receipts: a control character could drive the printer.
        if text is not None and any(unicodedata.category(char) == "Cc" for char in text):
            raise ValueError(f"{text!r} contains a control character")
        if text is not None and text and not text.strip():
            raise ValueError("is blank")
        return text

    @field_validator("barcodes")
    @classmethod
    def _check_barcodes(cls, barcodes: list[str]) -> list[str]:
        codes: list[str] = []
        seen: set[str] = set()
        for raw in barcodes:
            code = normalize_barcode(raw)
            if _is_gtin_shaped(code) and not is_valid_gtin(code):
                expected = gtin_check_digit(code[:-1])
                raise ValueError(
                    f"barcode {code!r} has a wrong check digit (a valid code ends in"
                    f" {expected}); it was probably mistyped"
                )
            if _barcode_key(code) in seen:
                raise ValueError(f"barcode {code!r} is listed twice")
            seen.add(_barcode_key(code))
            codes.append(code)
        return codes

    @model_validator(mode="after")
    def _check_variant(self) -> Product:
        if self.variant_of is not None and self.variant_of == self.sku:
            raise ValueError(f"product {self.sku!r} cannot be a variant of itself")
        return self


@dataclass(frozen=True)
class _Problem:
    index: int | None  # position in products; None for price_overrides
    field: str
    message: str


def _cross_check(products: list[Product], price_overrides: dict[str, int]) -> list[_Problem]:
    """Problems that involve more than one product; shared with the file importer."""
    problems: list[_Problem] = []
    skus: dict[str, int] = {}
    barcode_owner: dict[str, str] = {}
    plu_owner: dict[str, str] = {}
    for index, product in enumerate(products):
        if product.sku in skus:
            problems.append(_Problem(index, "sku", f"sku {product.sku!r} is used twice"))
            continue
        skus[product.sku] = index
        for code in product.barcodes:
            owner = barcode_owner.setdefault(_barcode_key(code), product.sku)
            if owner != product.sku:
                message = f"barcode {code!r} belongs to both {owner!r} and {product.sku!r}"
                problems.append(_Problem(index, "barcodes", message))
        if product.plu is not None:
            owner = plu_owner.setdefault(_plu_key(product.plu), product.sku)
            if owner != product.sku:
                message = f"plu {product.plu!r} belongs to both {owner!r} and {product.sku!r}"
                problems.append(_Problem(index, "plu", message))
    for index, product in enumerate(products):
        if product.variant_of is None:
            continue
        parent = skus.get(product.variant_of)
        if parent is None:
            message = f"{product.sku!r} is a variant of {product.variant_of!r}, which is not in the catalog"
            problems.append(_Problem(index, "variant_of", message))
        elif products[parent].variant_of is not None:
            # One level only: keeps variant groups simple and makes cycles impossible.
            message = f"{product.sku!r} is a variant of {product.variant_of!r}, which is itself a variant"
            problems.append(_Problem(index, "variant_of", message))
    problems.extend(
        _Problem(None, "price_overrides", f"price override for unknown sku {sku!r}")
        for sku in price_overrides
        if sku not in skus
    )
    return problems


class CatalogDocument(BaseModel):
    """A versioned catalog snapshot: what the hub sends and what the edge stores."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: _NonNegativeInt
    products: list[Product]
    price_overrides: dict[str, _NonNegativeInt] = {}

    @model_validator(mode="after")
    def _check_consistency(self) -> CatalogDocument:
        problems = _cross_check(self.products, self.price_overrides)
        if problems:
            # Capped: a hub bug can produce thousands of these, and the message is logged.
            raise ValueError("; ".join(_truncate([problem.message for problem in problems], 10)))
        return self


@dataclass(frozen=True)
class ScanMatch:
    """What a scanned code means: the product, plus weight or price from a scale label."""

    product: Product
    qty: Fraction | None
    label_price_fen: int | None
    barcode: str


@dataclass(frozen=True)
class _SearchEntry:
    index: int
    product: Product
    sku: str
    name: str
    pinyin: str
    barcodes: tuple[str, ...]

    def rank(self, query: str) -> int | None:
        if query in (self.sku, self.name, self.pinyin) or query in self.barcodes:
            return 0
        if (
            self.sku.startswith(query)
            or self.name.startswith(query)
            or self.pinyin.startswith(query)
            or any(code.startswith(query) for code in self.barcodes)
        ):
            return 1
        if query in self.name or query in self.pinyin:
            return 2
        return None


class Catalog:
    """Read-only, indexed view of one CatalogDocument for the till."""

    def __init__(self, document: CatalogDocument, layout: ScaleLayout | None = None):
        self._document = document
        self._layout = layout if layout is not None else ScaleLayout()
        self._by_sku = {product.sku: product for product in document.products}
        self._by_barcode = {
            _barcode_key(code): product for product in document.products for code in product.barcodes
        }
        self._by_plu = {
            _plu_key(product.plu): product for product in document.products if product.plu is not None
        }
        self._search = [
            _SearchEntry(
                index,
                product,
                _fold(product.sku),
                _fold(product.name),
                product.pinyin,
                tuple(_fold(code) for code in product.barcodes),
            )
            for index, product in enumerate(document.products)
            if product.active
        ]

    @property
    def version(self) -> int:
        """Version of the document this catalog was built from."""
        return self._document.version

    def __len__(self) -> int:
        return len(self._by_sku)

    def by_sku(self, sku: str) -> Product | None:
        """The product with this sku, active or not."""
        return self._by_sku.get(sku)

    def store_price_fen(self, sku: str) -> int | None:
        """This store's override of the product's price, if head office set one."""
        return self._document.price_overrides.get(sku)

    def lookup_barcode(self, code: str) -> ScanMatch | None:
        """Resolve a scanned code (inactive products included, so the till can say so)."""
        normalized = normalize_barcode(code)
        product = self._by_barcode.get(_barcode_key(normalized))
        if product is not None:
            return ScanMatch(product, None, None, normalized)
        label = parse_scale_barcode(normalized, self._layout)
        if label is None:
            return None
        product = self._by_plu.get(_plu_key(label.plu))
        if product is None:
            return None
        if label.weight is not None and product.unit != "kg":
            raise CatalogError(
                f"scale label {normalized} carries a weight, but PLU {label.plu} ({product.sku}"
                f" {product.name}) is sold per piece; set its unit to kg in the catalog"
            )
        return ScanMatch(product, label.weight, label.price_fen, normalized)

    def search(self, text: str, limit: int = 20) -> list[Product]:
        """Active products matching sku/barcode prefix, name or pinyin; best matches first."""
        query = _fold(text)
        if not query or limit <= 0:
            return []
        ranked = (
            (rank, entry.index, entry.product)
            for entry in self._search
            if (rank := entry.rank(query)) is not None
        )
        # index is unique, so tuple comparison never reaches the (unorderable) product.
        return [product for _, _, product in heapq.nsmallest(limit, ranked)]


# --------------------------------------------------------------------------- storage

_TABLE = "catalog"
_DOC_ID = 1


class CatalogStore:
    """The catalog document in a TinyDB JSON file; synchronous, run it in a thread."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = TinyDB(path, storage=AtomicJSONStorage)
        self._lock = threading.Lock()

    def _read_raw(self) -> dict[str, Any] | None:
        try:
            stored = self._db.table(_TABLE).get(doc_id=_DOC_ID)
        # Bad JSON, or a hand-edited file of the wrong shape, surfaces from TinyDB as these.
        except (ValueError, TypeError, AttributeError, EdgeError) as err:
            raise CatalogError(
                f"catalog file {self.path} cannot be read ({err}); load a catalog again"
                " with force, or restore the file from a backup"
            ) from err
        if stored is None or isinstance(stored, list):
            return None
        return dict(stored)

    def load(self) -> CatalogDocument | None:
        """The stored catalog, or None if none was saved yet."""
        with self._lock:
            raw = self._read_raw()
        if raw is None:
            return None
        try:
            return CatalogDocument.model_validate(raw)
        except ValidationError as err:
            details = "; ".join(_describe_errors(err, limit=5))
            raise CatalogError(f"catalog file {self.path} does not hold a valid catalog: {details}") from err

    def save(self, doc: CatalogDocument, *, force: bool = False) -> None:
        """Store doc, refusing to go back to an older version unless force is set."""
        # Defaults are left out so the file stays short enough for an installer to read.
        payload = doc.model_dump(mode="json", exclude_defaults=True)
        payload["version"] = doc.version
        with self._lock:
            try:
                stored = self._read_raw()
            except CatalogError:
                if not force:
                    raise
                # A forced save replaces an unreadable file outright, in one atomic write.
                self._db.storage.write({_TABLE: {str(_DOC_ID): payload}})
                return
            stored_version = stored.get("version") if stored is not None else None
            if not force and isinstance(stored_version, int) and doc.version < stored_version:
                raise CatalogError(
                    f"catalog version {doc.version} is older than version {stored_version}"
                    f" stored in {self.path}; nothing was changed (use force to go back)"
                )
            # Exactly one file write per save: replace the document in place, or insert it.
            table = self._db.table(_TABLE)
            if stored is not None:
                table.update(lambda old: _replace(old, payload), doc_ids=[_DOC_ID])
            else:
                table.insert(Document(payload, doc_id=_DOC_ID))

    def close(self) -> None:
        """Release the TinyDB handle."""
        self._db.close()


def _replace(stored: MutableMapping[str, Any], payload: dict[str, Any]) -> None:
    stored.clear()
    stored.update(payload)


def _describe_errors(err: ValidationError, *, limit: int = 20) -> list[str]:
    """Pydantic errors as short "field: message" lines, at most limit plus a tail line."""
    lines = [
        f"{'.'.join(map(str, error['loc'])) or 'catalog'}: {error['msg'].removeprefix('Value error, ')}"
        for error in err.errors()
    ]
    return _truncate(lines, limit)


def _truncate(lines: list[str], limit: int) -> list[str]:
    if len(lines) <= limit:
        return lines
    return [*lines[:limit], f"and {len(lines) - limit} more"]

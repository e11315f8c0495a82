"""The head-office catalog in the API: categories, products, import/export, store links, publishing.

Who may do what (`hub.auth` permissions):
- everyone signed in reads the catalog (`catalog.read`); a store's view needs the store in scope;
- head office (owner, regional manager) edits categories and products and imports (`catalog.write`),
  and sets a store's price (`catalog.price`, for stores in scope);
- a store manager links and unlinks products for their store, marks them unavailable there
  (`catalog.link`) and publishes their store's catalog (`catalog.publish`), but does not set
  prices: a chain's prices are head office's decision.

Money is integer fen. A refused request (403, 404, 409 with the reason, 422 with field
paths) writes nothing.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from hub.api import DB, LINK, ProblemError, actor, bad_query, principal, query_int, read_body
from hub.catalog import (
    MAX_PRICE_FEN,
    InvalidProducts,
    ProductIn,
    category_path,
    get_product,
    product_json,
    products_page,
    save_products,
)
from hub.catalog_categories import add_category, delete_category, list_categories
from hub.catalog_io import BadCatalogFile, export_catalog, import_catalog
from hub.catalog_stores import (
    link_products,
    linked_stores,
    publish_store,
    set_store_item,
    store_item_json,
    store_items_page,
    unlink_products,
)
from hub.catalog_tables import CatalogProduct
from protocol import PROBLEM_JSON, FieldError, Problem, validation_problem

__all__ = ["add_routes"]

_MAX_PAGE = 500
_XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class CategoryIn(_In):
    """A category path; missing parents are created too."""

    path: str = Field(min_length=1, max_length=400)


class LinkIn(_In):
    """Products to link (or unlink); `all` links every active product."""

    skus: list[str] = Field(default=[], max_length=10_000)
    all: bool = False


class StoreItemIn(_In):
    """A store's availability of a linked product and/or its own price (null: back to the list price)."""

    available: bool | None = None
    price_fen: StrictInt | None = Field(None, ge=0, le=MAX_PRICE_FEN)


class PublishIn(_In):
    """Stores to publish to; none given: every store in scope that links products."""

    stores: list[str] | None = Field(None, max_length=1000)


def _bool(request: web.Request, name: str) -> bool | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if raw not in {"true", "false"}:
        raise bad_query(f"{name} must be true or false")
    return raw == "true"


def _page(request: web.Request) -> tuple[int, int]:
    return max(1, query_int(request, "limit", 100, 0, _MAX_PAGE)), query_int(request, "offset", 0, 0, 10**9)


def _invalid(err: InvalidProducts, instance: str) -> ProblemError:
    errors = [FieldError(field=issue.field, message=issue.message) for issue in err.issues]
    return ProblemError(
        Problem(
            type="https://storelink.dev/problems/validation",
            title="Product is invalid",
            status=422,
            detail="; ".join(f"{e.field}: {e.message}" for e in errors),
            instance=instance,
            errors=errors,
        )
    )


async def get_categories(request: web.Request) -> web.Response:
    """The category tree, parents before children, with product counts."""
    principal(request).require("catalog.read")
    async with request.app[DB].session() as session:
        return web.json_response({"items": await list_categories(session)})


async def post_category(request: web.Request) -> web.Response:
    """Create a category (and its missing parents); 200 if it already existed."""
    principal(request).require("catalog.write")
    body = await read_body(request, CategoryIn)
    try:
        path = category_path(body.path)
    except ValueError as err:
        raise ProblemError(
            Problem(
                title="Request body is invalid",
                status=422,
                detail=str(err),
                errors=[FieldError(field="path", message=str(err))],
            )
        ) from None
    async with request.app[DB].session() as session, session.begin():
        row, created = await add_category(session, path)
        answer = {"id": row.id, "path": row.path, "name": row.name, "parent_id": row.parent_id}
    return web.json_response(answer, status=201 if created else 200)


async def delete_category_route(request: web.Request) -> web.Response:
    """Remove an empty category: `?path=饮料/果汁`."""
    principal(request).require("catalog.write")
    path = request.query.get("path", "")
    if not path:
        raise bad_query("give the category as ?path=饮料/果汁")
    try:
        path = category_path(path)
    except ValueError as err:
        raise bad_query(str(err)) from None
    async with request.app[DB].session() as session, session.begin():
        await delete_category(session, path)
    return web.Response(status=204)


async def get_products(request: web.Request) -> web.Response:
    """Products by SKU: `?q=` SKU, name, pinyin or barcode; `?category=` with sub-categories; `?active=`."""
    principal(request).require("catalog.read")
    limit, offset = _page(request)
    category = request.query.get("category") or None
    if category is not None:
        try:
            category = category_path(category)
        except ValueError as err:
            raise bad_query(str(err)) from None
    async with request.app[DB].session() as session:
        views, more = await products_page(
            session,
            text=request.query.get("q") or None,
            category=category,
            active=_bool(request, "active"),
            limit=limit,
            offset=offset,
        )
    return web.json_response(
        {"items": [product_json(v) for v in views], "next": offset + limit if more else None}
    )


async def get_product_route(request: web.Request) -> web.Response:
    """One product with its barcodes and units."""
    principal(request).require("catalog.read")
    async with request.app[DB].session() as session:
        return web.json_response(product_json(await get_product(session, request.match_info["sku"])))


async def put_product(request: web.Request) -> web.Response:
    """Create or replace a product (its barcodes and units are replaced with the body's)."""
    principal(request).require("catalog.write")
    sku = request.match_info["sku"]
    if request.content_type != "application/json":
        raise ProblemError(
            Problem(title="Unsupported media type", status=415, detail="send application/json")
        )
    raw = await request.json(loads=_loads)
    if not isinstance(raw, dict):
        raise ProblemError(Problem(title="Request body is invalid", status=422, detail="send a JSON object"))
    if raw.setdefault("sku", sku) != sku:
        detail = f"the body's sku {raw['sku']!r} differs from the path's {sku!r}"
        raise ProblemError(
            Problem(
                title="Request body is invalid",
                status=422,
                detail=detail,
                errors=[FieldError(field="sku", message=detail)],
            )
        )
    for key in ("updated_at", "updated_by"):
        raw.pop(key, None)  # a GET's answer can be sent back as it is
    try:
        item = ProductIn.model_validate(raw)
    except ValidationError as err:
        raise ProblemError(validation_problem(err, instance=request.path)) from err
    async with request.app[DB].session() as session, session.begin():
        existed = await session.get(CatalogProduct, sku) is not None
        try:
            await save_products(session, [item], actor=actor(request))
        except InvalidProducts as err:
            raise _invalid(err, request.path) from err
        view = await get_product(session, sku)
        answer = product_json(view)
    return web.json_response(answer, status=200 if existed else 201)


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as err:
        raise ProblemError(Problem(title="Malformed JSON", status=400, detail=str(err))) from None


async def post_import(request: web.Request) -> web.Response:
    """Import an .xlsx or CSV sent as the body: `?mode=all-or-nothing|valid-only`, `?create_categories=true`.

    200 with the report either way; `written` says whether anything was saved.
    """
    principal(request).require("catalog.write")
    mode = request.query.get("mode", "all-or-nothing")
    if mode not in ("all-or-nothing", "valid-only"):
        raise bad_query("mode must be all-or-nothing or valid-only")
    data = await request.read()
    filename = "upload.xlsx" if request.content_type == _XLSX else "upload.csv"
    try:
        report = await import_catalog(
            request.app[DB],
            data,
            filename=filename,
            mode=mode,  # type: ignore[arg-type]
            create_categories=bool(_bool(request, "create_categories")),
            actor=actor(request),
        )
    except BadCatalogFile as err:
        body = Problem(title="Unusable catalog file", status=422, detail=str(err)).body()
        return web.json_response(body, status=422, content_type=PROBLEM_JSON)
    return web.json_response(report.as_dict())


async def get_export(request: web.Request) -> web.Response:
    """The whole catalog as `?format=xlsx` (default) or `csv`."""
    principal(request).require("catalog.read")
    fmt: Literal["xlsx", "csv"]
    raw = request.query.get("format", "xlsx")
    if raw not in ("xlsx", "csv"):
        raise bad_query("format must be xlsx or csv")
    fmt = "csv" if raw == "csv" else "xlsx"
    data = await export_catalog(request.app[DB], fmt=fmt)
    ctype = "text/csv" if fmt == "csv" else _XLSX
    return web.Response(
        body=data,
        content_type=ctype,
        charset="utf-8" if fmt == "csv" else None,
        headers={"Content-Disposition": f'attachment; filename="catalog.{fmt}"'},
    )


def _store(request: web.Request, permission: str) -> str:
    store = request.match_info["store"]
    principal(request).require(permission, store=store)
    return store


async def get_store_catalog(request: web.Request) -> web.Response:
    """The catalog as one store sees it: linked, available, its price; `?linked=true|false`."""
    store = _store(request, "catalog.read")
    limit, offset = _page(request)
    async with request.app[DB].session() as session:
        rows, more = await store_items_page(
            session, store, linked=_bool(request, "linked"), limit=limit, offset=offset
        )
    items = [store_item_json(store, r) for r in rows]
    return web.json_response({"store": store, "items": items, "next": offset + limit if more else None})


async def post_link(request: web.Request) -> web.Response:
    """Link products to the store (门店一键关联: `{"all": true}` links every active product)."""
    store = _store(request, "catalog.link")
    body = await read_body(request, LinkIn)
    if body.all == bool(body.skus):
        raise ProblemError(
            Problem(title="Request body is invalid", status=422, detail='give either "skus" or "all": true')
        )
    async with request.app[DB].session() as session, session.begin():
        linked = await link_products(
            session, store, None if body.all else list(body.skus), actor=actor(request)
        )
    return web.json_response({"store": store, "linked": linked})


async def post_unlink(request: web.Request) -> web.Response:
    """Stop selling products at the store."""
    store = _store(request, "catalog.link")
    body = await read_body(request, LinkIn)
    if body.all or not body.skus:
        raise ProblemError(
            Problem(title="Request body is invalid", status=422, detail='give the "skus" to unlink')
        )
    async with request.app[DB].session() as session, session.begin():
        unlinked = await unlink_products(session, store, list(body.skus), actor=actor(request))
    return web.json_response({"store": store, "unlinked": unlinked})


async def patch_store_item(request: web.Request) -> web.Response:
    """Set a linked product's availability at the store and/or the store's price."""
    store = _store(request, "catalog.link")
    body = await read_body(request, StoreItemIn)
    sets_price = "price_fen" in body.model_fields_set
    if sets_price:
        principal(request).require("catalog.price", store=store)
    if body.available is None and not sets_price:
        raise ProblemError(
            Problem(title="Request body is invalid", status=422, detail='give "available" or "price_fen"')
        )
    sku = request.match_info["sku"]
    async with request.app[DB].session() as session, session.begin():
        await set_store_item(
            session,
            store,
            sku,
            actor=actor(request),
            available=body.available,
            price_fen=body.price_fen,
            clear_price=sets_price and body.price_fen is None,
        )
        rows, _ = await store_items_page(session, store, limit=1, offset=0, sku=sku)
    return web.json_response(store_item_json(store, rows[0]))


async def post_publish_store(request: web.Request) -> web.Response:
    """Build and send the store's catalog and prices snapshots."""
    store = _store(request, "catalog.publish")
    published = await publish_store(request.app[DB], store, request.app.get(LINK))
    return web.json_response(published.as_dict(), status=201)


async def post_publish(request: web.Request) -> web.Response:
    """Publish to the given stores, or to every store in scope that links products."""
    who = principal(request)
    who.require("catalog.publish")
    body = await read_body(request, PublishIn)
    if body.stores is not None:
        stores = sorted(set(body.stores))
        for store in stores:
            who.require("catalog.publish", store=store)
    else:
        async with request.app[DB].session() as session:
            stores = await linked_stores(session, only=who.stores)
    if not stores:
        detail = "no store in your scope links any products yet; link products to a store first"
        raise ProblemError(Problem(title="Nothing to publish", status=409, detail=detail))
    results = [
        (await publish_store(request.app[DB], store, request.app.get(LINK))).as_dict() for store in stores
    ]
    return web.json_response({"items": results}, status=201)


def add_routes(app: web.Application) -> None:
    """Register the catalog routes."""
    app.router.add_get("/api/v1/catalog/categories", get_categories)
    app.router.add_post("/api/v1/catalog/categories", post_category)
    app.router.add_delete("/api/v1/catalog/categories", delete_category_route)
    app.router.add_get("/api/v1/catalog/products", get_products)
    app.router.add_get("/api/v1/catalog/products/{sku}", get_product_route)
    app.router.add_put("/api/v1/catalog/products/{sku}", put_product)
    app.router.add_post("/api/v1/catalog/import", post_import)
    app.router.add_get("/api/v1/catalog/export", get_export)
    app.router.add_post("/api/v1/catalog/publish", post_publish)
    app.router.add_get("/api/v1/stores/{store}/catalog", get_store_catalog)
    app.router.add_post("/api/v1/stores/{store}/catalog/link", post_link)
    app.router.add_post("/api/v1/stores/{store}/catalog/unlink", post_unlink)
    app.router.add_post("/api/v1/stores/{store}/catalog/publish", post_publish_store)
    app.router.add_patch("/api/v1/stores/{store}/catalog/{sku}", patch_store_item)

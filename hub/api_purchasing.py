"""Suppliers, quotes and purchase orders in the head-office API.

Suppliers and quotes are chain-wide: anyone signed in reads them (`suppliers.read`), head
office changes them (`suppliers.write`). A purchase order belongs to its store: reading it
needs `purchasing.read` there, creating, generating, sending, cancelling and receiving it
`purchasing.write` there. Every step is one transaction; a refusal (403, 404, 409 with the
reason, 422 for a malformed body) writes nothing. A receipt is keyed by its `receipt_id`:
sending it again answers 200 with the order, unchanged.
"""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from hub.api import DB, actor, bad_query, principal, query_int, read_body
from hub.api_replenishment import store_today
from hub.api_stock import Qty
from hub.batches import refresh_blocks
from hub.errors import PermissionDenied
from hub.purchasing import (
    PoLineIn,
    PoView,
    QuoteIn,
    SupplierIn,
    add_quote,
    cancel_po,
    create_po,
    create_supplier,
    generate_orders,
    list_pos,
    list_quotes,
    list_suppliers,
    load_po,
    load_supplier,
    rating,
    send_po,
    update_supplier,
)
from hub.purchasing_export import po_csv, po_text, po_xlsx
from hub.purchasing_receipts import ReceiptLine, cost_of, receive_po
from hub.purchasing_tables import PoState
from hub.purchasing_views import po_json, quote_json, supplier_json
from hub.stock import format_milli

__all__ = ["add_routes"]

_MAX_PAGE = 500
_FEN = 10**12


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class SupplierBody(_In):
    """A supplier: name, qualification (licence number and expiry), contact, usual lead time."""

    name: str = Field(min_length=1, max_length=100)
    licence_no: str = Field("", max_length=64)
    licence_expires_on: date | None = None
    contact_name: str = Field("", max_length=100)
    phone: str = Field("", max_length=32)
    email: str = Field("", max_length=200)
    lead_time_days: int = Field(1, ge=0, le=366)
    active: bool = True


class QuoteBody(_In):
    """A price per whole unit in fen for one SKU, valid between two days (both included)."""

    sku: str = Field(min_length=1, max_length=64)
    unit_cost_fen: int = Field(ge=0, le=_FEN)
    valid_from: date
    valid_to: date
    min_qty: Qty = 0


class PoLineBody(_In):
    """A SKU, how much, at what cost per whole unit."""

    sku: str = Field(min_length=1, max_length=64)
    qty: Qty
    unit_cost_fen: int = Field(ge=0, le=_FEN)


class PoBody(_In):
    """A purchase order by hand."""

    supplier_id: str = Field(min_length=1, max_length=36)
    lines: list[PoLineBody] = Field(min_length=1, max_length=500)
    expected_on: date | None = None
    note: str = Field("", max_length=500)


class ReceiptLineBody(_In):
    """One lot of one SKU that came in (`unit_cost_fen` if the invoice differs from the order)."""

    sku: str = Field(min_length=1, max_length=64)
    qty: Qty
    lot: str = Field("", max_length=64)
    expires_on: date | None = None
    unit_cost_fen: int | None = Field(None, ge=0, le=_FEN)


class ReceiptBody(_In):
    """A delivery: the caller's id for it (a retry with the same id is recorded once), and its lots."""

    receipt_id: str = Field(min_length=1, max_length=64)
    lines: list[ReceiptLineBody] = Field(min_length=1, max_length=1000)
    note: str = Field("", max_length=500)


class ReasonBody(_In):
    """Why (kept on the order)."""

    reason: str = Field(min_length=1, max_length=500)


def _page(request: web.Request) -> tuple[int, int]:
    return max(1, query_int(request, "limit", 100, 0, _MAX_PAGE)), query_int(request, "offset", 0, 0, 10**9)


def _supplier_in(body: SupplierBody) -> SupplierIn:
    return SupplierIn(**body.model_dump())


async def get_suppliers(request: web.Request) -> web.Response:
    """Suppliers by name: `?active=true|false`."""
    principal(request).require("suppliers.read")
    raw = request.query.get("active")
    if raw not in {None, "true", "false"}:
        raise bad_query("active must be true or false")
    limit, offset = _page(request)
    async with request.app[DB].session() as session:
        rows, more = await list_suppliers(
            session, active=None if raw is None else raw == "true", limit=limit, offset=offset
        )
    return web.json_response(
        {"items": [supplier_json(r) for r in rows], "next": offset + limit if more else None}
    )


async def post_supplier(request: web.Request) -> web.Response:
    """A new supplier."""
    principal(request).require("suppliers.write")
    body = await read_body(request, SupplierBody)
    async with request.app[DB].session() as session, session.begin():
        answer = supplier_json(await create_supplier(session, _supplier_in(body)))
    return web.json_response(answer, status=201)


async def get_supplier(request: web.Request) -> web.Response:
    """One supplier with its rating (on-time and fill rate, basis points)."""
    principal(request).require("suppliers.read")
    supplier_id = request.match_info["supplier_id"]
    async with request.app[DB].session() as session:
        row = await load_supplier(session, supplier_id)
        rated = await rating(session, supplier_id)
    return web.json_response(supplier_json(row, rated))


async def put_supplier(request: web.Request) -> web.Response:
    """Replace a supplier's details (deactivate with `active: false`)."""
    principal(request).require("suppliers.write")
    body = await read_body(request, SupplierBody)
    async with request.app[DB].session() as session, session.begin():
        row = await update_supplier(session, request.match_info["supplier_id"], _supplier_in(body))
        answer = supplier_json(row)
    return web.json_response(answer)


async def post_quote(request: web.Request) -> web.Response:
    """A new quote from this supplier."""
    principal(request).require("suppliers.write")
    body = await read_body(request, QuoteBody)
    quote = QuoteIn(body.sku, body.unit_cost_fen, body.valid_from, body.valid_to, body.min_qty)
    async with request.app[DB].session() as session, session.begin():
        row = await add_quote(session, request.match_info["supplier_id"], quote, actor=actor(request))
        answer = quote_json(row)
    return web.json_response(answer, status=201)


async def get_quotes(request: web.Request) -> web.Response:
    """Quotes by SKU and price: `?supplier=`, `?sku=`, `?valid_on=YYYY-MM-DD`."""
    principal(request).require("suppliers.read")
    raw_day = request.query.get("valid_on")
    try:
        valid_on = date.fromisoformat(raw_day) if raw_day else None
    except ValueError:
        raise bad_query("valid_on must be a date such as 2026-11-23") from None
    async with request.app[DB].session() as session:
        rows = await list_quotes(
            session,
            supplier_id=request.query.get("supplier") or None,
            sku=request.query.get("sku") or None,
            valid_on=valid_on,
        )
    return web.json_response({"items": [quote_json(r) for r in rows]})


def _store(request: web.Request, permission: str) -> str:
    store = request.match_info["store"]
    principal(request).require(permission, store=store)
    return store


async def post_po(request: web.Request) -> web.Response:
    """A purchase order by hand, in draft."""
    store = _store(request, "purchasing.write")
    body = await read_body(request, PoBody)
    lines = [PoLineIn(x.sku, x.qty, x.unit_cost_fen) for x in body.lines]
    async with request.app[DB].session() as session, session.begin():
        view = await create_po(
            session,
            store,
            body.supplier_id,
            lines,
            actor=actor(request),
            expected_on=body.expected_on,
            note=body.note,
        )
        answer = po_json(view)
    return web.json_response(answer, status=201)


async def post_generate(request: web.Request) -> web.Response:
    """Draft orders from the store's replenishment list, one per supplier by best valid quote."""
    store = _store(request, "purchasing.write")
    async with request.app[DB].session() as session, session.begin():
        today = await store_today(session, store)
        done = await generate_orders(session, store, actor=actor(request), today=today)
        answer = {
            "orders": [po_json(v) for v in done.orders],
            "unquoted": [{"sku": s, "qty": format_milli(q)} for s, q in done.unquoted],
        }
    return web.json_response(answer, status=201)


async def get_pos(request: web.Request) -> web.Response:
    """Orders of the caller's stores, drafts first then newest: `?store=`, `?state=`, `?supplier=`."""
    who = principal(request)
    who.require("purchasing.read")
    store = request.query.get("store") or None
    if store is not None:
        who.require("purchasing.read", store=store)
    raw_state = request.query.get("state") or None
    try:
        state = PoState(raw_state) if raw_state else None
    except ValueError:
        raise bad_query(f"state must be one of {', '.join(s.value for s in PoState)}") from None
    limit, offset = _page(request)
    async with request.app[DB].session() as session:
        rows, more = await list_pos(
            session,
            scope=who.stores,
            store=store,
            state=state,
            supplier_id=request.query.get("supplier") or None,
            limit=limit,
            offset=offset,
        )
    items = [po_json(PoView(r, []), with_lines=False) for r in rows]
    return web.json_response({"items": items, "next": offset + limit if more else None})


async def _po_for(request: web.Request, permission: str, session: Any) -> PoView:
    view = await load_po(session, request.match_info["po_id"])
    who = principal(request)
    if not who.can_see(view.po.store):
        raise PermissionDenied(f"user '{who.name}' has no access to store '{view.po.store}'")
    who.require(permission, store=view.po.store)
    return view


async def get_po(request: web.Request) -> web.Response:
    """One order with its lines and receipts."""
    async with request.app[DB].session() as session:
        view = await _po_for(request, "purchasing.read", session)
    return web.json_response(po_json(view))


async def post_send(request: web.Request) -> web.Response:
    """Mark the order sent (after exporting or printing it for the supplier)."""
    async with request.app[DB].session() as session, session.begin():
        view = await _po_for(request, "purchasing.write", session)
        answer = po_json(await send_po(session, view.po.id, actor=actor(request)))
    return web.json_response(answer)


async def post_cancel(request: web.Request) -> web.Response:
    """Cancel the order, or the part of it not yet received."""
    body = await read_body(request, ReasonBody)
    async with request.app[DB].session() as session, session.begin():
        view = await _po_for(request, "purchasing.write", session)
        answer = po_json(await cancel_po(session, view.po.id, actor=actor(request), reason=body.reason))
    return web.json_response(answer)


async def post_receipt(request: web.Request) -> web.Response:
    """Take a delivery in at the store: 201 when recorded, 200 when it was a retry of one recorded."""
    body = await read_body(request, ReceiptBody)
    items = [ReceiptLine(x.sku, x.qty, x.lot, x.expires_on, x.unit_cost_fen) for x in body.lines]
    db = request.app[DB]
    async with db.session() as session, session.begin():
        view = await _po_for(request, "purchasing.write", session)
        today = await store_today(session, view.po.store)
        done, created = await receive_po(
            session, view.po.id, body.receipt_id, items, actor=actor(request), today=today, note=body.note
        )
        answer = po_json(done)
    if created:  # fresh stock may lift an expiry block at once rather than at the nightly job
        await refresh_blocks(db, view.po.store, today, skus=sorted({i.sku for i in items}))
    return web.json_response(answer, status=201 if created else 200)


async def get_export(request: web.Request) -> web.Response:
    """The order for the supplier: `?format=csv` (default), `xlsx` or `txt` (printable)."""
    fmt = request.query.get("format", "csv")
    if fmt not in {"csv", "xlsx", "txt"}:
        raise bad_query("format must be csv, xlsx or txt")
    async with request.app[DB].session() as session:
        view = await _po_for(request, "purchasing.read", session)
    name = f"purchase-order-{view.po.id}.{fmt}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    if fmt == "xlsx":
        data = await asyncio.to_thread(po_xlsx, view)
        return web.Response(
            body=data,
            content_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            headers=headers,
        )
    if fmt == "txt":
        return web.Response(text=po_text(view), content_type="text/plain", headers=headers)
    return web.Response(text=po_csv(view), content_type="text/csv", headers=headers)


async def get_cost(request: web.Request) -> web.Response:
    """The moving-average cost of a SKU at the store, per whole unit in fen."""
    store = _store(request, "stock.read")
    sku = request.match_info["sku"]
    async with request.app[DB].session() as session:
        cost = await cost_of(session, store, sku)
    return web.json_response({"store": store, "sku": sku, "avg_cost_fen": cost})


def add_routes(app: web.Application) -> None:
    """Register the supplier and purchasing routes."""
    app.router.add_get("/api/v1/suppliers", get_suppliers)
    app.router.add_post("/api/v1/suppliers", post_supplier)
    app.router.add_get("/api/v1/suppliers/{supplier_id}", get_supplier)
    app.router.add_put("/api/v1/suppliers/{supplier_id}", put_supplier)
    app.router.add_post("/api/v1/suppliers/{supplier_id}/quotes", post_quote)
    app.router.add_get("/api/v1/quotes", get_quotes)
    app.router.add_post("/api/v1/stores/{store}/purchase-orders", post_po)
    app.router.add_post("/api/v1/stores/{store}/purchase-orders/generate", post_generate)
    app.router.add_get("/api/v1/stores/{store}/stock/{sku}/cost", get_cost)
    app.router.add_get("/api/v1/purchase-orders", get_pos)
    app.router.add_get("/api/v1/purchase-orders/{po_id}", get_po)
    app.router.add_post("/api/v1/purchase-orders/{po_id}/send", post_send)
    app.router.add_post("/api/v1/purchase-orders/{po_id}/cancel", post_cancel)
    app.router.add_post("/api/v1/purchase-orders/{po_id}/receipts", post_receipt)
    app.router.add_get("/api/v1/purchase-orders/{po_id}/export", get_export)

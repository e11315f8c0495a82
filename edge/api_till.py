"""Till routes of the local API: products, orders, lines, payments, refunds, shifts, receipts, events."""

from __future__ import annotations

import asyncio
import contextlib
import json
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import WSCloseCode, web
from pydantic import Field, StrictInt, model_validator

from edge.api import (
    BUS,
    MEMBERS,
    SETTINGS,
    SNAPSHOTS,
    TILL,
    Body,
    answer,
    idempotency,
    principal,
    read_body,
    reply_json,
    staff_command,
)
from edge.catalog import Catalog, CatalogError, Product
from edge.errors import TillError
from edge.orders import MEMBER_METHODS, OrderLine, TenderMethod
from edge.receipt import receipt
from edge.stock_tasks import read_gs1, refuse_expired, store_today
from protocol import new_id
from protocol.barcodes import BarcodeError
from protocol.pricing import Quantity

__all__ = ["add_routes"]

_TEXT = r"^[^\x00-\x1f\x7f]*$"


class OrderIn(Body):
    """Open an order."""

    note: str = Field("", max_length=200, pattern=_TEXT)
    member_id: str | None = Field(None, max_length=64, pattern=_TEXT)


class OrderPatch(Body):
    """Change an order's note or member."""

    note: str | None = Field(None, max_length=200, pattern=_TEXT)
    member_id: str | None = Field(None, max_length=64, pattern=_TEXT)


class LineIn(Body):
    """Add a line by scanned barcode or by SKU; kg items take their weight as `qty`."""

    barcode: str | None = Field(None, max_length=64)
    sku: str | None = Field(None, max_length=64)
    qty: Quantity | None = None
    price_fen: StrictInt | None = Field(None, ge=0, le=10_000_000, description="only for open-price items")
    note: str = Field("", max_length=100, pattern=_TEXT)

    @model_validator(mode="after")
    def _one_key(self) -> LineIn:
        if (self.barcode is None) == (self.sku is None):
            raise ValueError("give exactly one of barcode or sku")
        return self


class LinePatch(Body):
    """Change a line: quantity, note, or (managers, with a reason) its unit price."""

    qty: Quantity | None = None
    note: str | None = Field(None, max_length=100, pattern=_TEXT)
    override_price_fen: StrictInt | None = Field(None, ge=0, le=10_000_000)
    reason: str | None = Field(None, min_length=1, max_length=200, pattern=_TEXT)

    @model_validator(mode="after")
    def _reason(self) -> LinePatch:
        if self.override_price_fen is not None and not self.reason:
            raise ValueError("a price override needs a reason")
        return self


class ReasonIn(Body):
    """An action that needs a reason (void)."""

    reason: str = Field(min_length=1, max_length=200, pattern=_TEXT)


class PaymentIn(Body):
    """A tender: cash (what was handed over), an external method with its reference, or the
    attached member's stored value (`amount_fen`) or points (`points`), debited at the hub."""

    method: TenderMethod
    amount_fen: StrictInt | None = Field(None, gt=0, le=100_000_000)
    points: StrictInt | None = Field(None, gt=0, le=100_000_000)
    reference: str | None = Field(None, min_length=1, max_length=64, pattern=_TEXT)

    @model_validator(mode="after")
    def _amount(self) -> PaymentIn:
        if self.method == "points":
            if self.points is None or self.amount_fen is not None:
                raise ValueError("a points payment gives points (the hub says what they pay), not amount_fen")
        elif self.amount_fen is None or self.points is not None:
            raise ValueError(f"a {self.method} payment gives amount_fen")
        if self.method in MEMBER_METHODS and self.reference is not None:
            raise ValueError("the reference of a member-account payment comes from the hub; leave it out")
        return self


class RefundLineIn(Body):
    """A line and how much of it goes back."""

    line_id: str = Field(max_length=64)
    qty: Quantity


class RefundIn(Body):
    """Refund chosen lines, or the whole rest of the order when `lines` is omitted."""

    lines: list[RefundLineIn] | None = Field(None, min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=200, pattern=_TEXT)


class ShiftOpenIn(Body):
    """Open a shift with the cash float in the drawer."""

    float_fen: StrictInt = Field(ge=0, le=100_000_000)


class ShiftCloseIn(Body):
    """Close the shift with the cash counted in the drawer."""

    counted_cash_fen: StrictInt = Field(ge=0, le=100_000_000)


def _catalog(request: web.Request) -> Catalog:
    catalog = request.app[SNAPSHOTS].catalog
    if catalog is None:
        raise TillError("no catalog is loaded; run `storelink-edge catalog load FILE`", status=503)
    return catalog


def _product_view(product: Product, catalog: Catalog) -> dict[str, Any]:
    body = product.model_dump(mode="json")
    body["store_price_fen"] = catalog.store_price_fen(product.sku)
    return body


async def search_products(request: web.Request) -> web.Response:
    """Search by name, pinyin initials, SKU or barcode prefix; or look up `barcode=` exactly."""
    catalog = _catalog(request)
    if "barcode" in request.query:
        try:
            match = catalog.lookup_barcode(request.query["barcode"])
        except (BarcodeError, CatalogError) as err:
            raise TillError(str(err), status=422) from err
        items = [match.product] if match else []
    else:
        raw_limit = request.query.get("limit", "20")
        if not (raw_limit.isascii() and raw_limit.isdigit()):
            raise TillError("limit must be a whole number", status=422)
        limit = min(max(int(raw_limit), 1), 100)
        items = catalog.search(request.query.get("q", ""), limit=limit)
    return reply_json({"items": [_product_view(p, catalog) for p in items]})


async def get_product(request: web.Request) -> web.Response:
    """One product by SKU."""
    catalog = _catalog(request)
    product = catalog.by_sku(request.match_info["sku"])
    if product is None:
        raise TillError(f"no product with SKU {request.match_info['sku']}", status=404)
    return reply_json(_product_view(product, catalog))


def _scan(catalog: Catalog, body: LineIn) -> tuple[Product, Quantity | None, int | None, str]:
    """Resolve a barcode: (product, qty, label price, normalised barcode)."""
    code = body.barcode or ""
    try:
        match = catalog.lookup_barcode(code)
    except (BarcodeError, CatalogError) as err:
        raise TillError(f"{err}; scan it again", status=422) from err
    if match is None:
        raise TillError(f"unknown barcode {code}; it is not in the catalog", status=404)
    if match.qty is None and match.label_price_fen is None:
        return match.product, body.qty, None, match.barcode
    if body.qty is not None:
        raise TillError("a scale label carries its own weight or price; do not send qty", status=422)
    if not (match.qty or match.label_price_fen):
        raise TillError(f"scale label {code} carries a zero weight or price; weigh it again", status=422)
    qty = match.qty
    if qty is None:  # a price label: the weight is only informational
        price = match.product.price_fen
        qty = Fraction(match.label_price_fen or 0, price) if price else Fraction(1)
    return match.product, qty, match.label_price_fen, match.barcode


def _build_line(catalog: Catalog, body: LineIn) -> OrderLine:
    """Resolve a scan or SKU to a line, before any transaction starts."""
    label_price: int | None = None
    barcode: str | None = None
    if body.barcode is not None:
        product, qty, label_price, barcode = _scan(catalog, body)
    else:
        found = catalog.by_sku(body.sku or "")
        if found is None:
            raise TillError(f"unknown SKU {body.sku}", status=404)
        product, qty = found, body.qty
    if not product.active:
        raise TillError(f"{product.name} is not for sale at the moment", status=409)
    if product.unit == "kg" and qty is None:
        raise TillError(f'{product.name} is sold by weight; send qty in kg (e.g. "0.352")', status=422)
    price = product.price_fen
    if product.open_price:
        if body.price_fen is None:
            raise TillError(f"{product.name} has an open price; send price_fen", status=422)
        price = body.price_fen
    elif body.price_fen is not None:
        raise TillError("price_fen is only for open-price items; use a price override", status=422)
    return OrderLine(
        line_id=str(new_id()),
        sku=product.sku,
        name=product.name,  # catalog names already carry the variant (拿铁 大杯)
        unit=product.unit,
        qty=qty if qty is not None else Fraction(1),
        barcode=barcode,
        note=body.note,
        list_price_fen=price,
        store_price_fen=None if product.open_price else catalog.store_price_fen(product.sku),
        member_price_fen=None if product.open_price else product.member_price_fen,
        label_price_fen=label_price,
    )


async def open_order(request: web.Request) -> web.Response:
    """Open an order (needs a staff session)."""
    body, staff, idem = await staff_command(request, OrderIn, "order.sell", optional=True)
    till = request.app[TILL]
    return answer(await till.open_order(staff, note=body.note, member_id=body.member_id, idem=idem))


async def list_orders(request: web.Request) -> web.Response:
    """Recent orders, `?status=open|held|paid|voided`."""
    wanted = request.query.get("status")
    if wanted not in (None, "open", "held", "paid", "voided"):
        raise TillError("status must be open, held, paid or voided", status=422)
    orders = await request.app[TILL].list_orders(wanted)
    return reply_json({"items": [o.model_dump(mode="json") for o in orders]})


async def get_order(request: web.Request) -> web.Response:
    """One order."""
    order = await request.app[TILL].get_order(request.match_info["order_id"])
    return reply_json(order.model_dump(mode="json"))


async def patch_order(request: web.Request) -> web.Response:
    """Order note / member."""
    body, _, idem = await staff_command(request, OrderPatch, "order.sell")
    order_id = request.match_info["order_id"]
    return answer(
        await request.app[TILL].annotate(order_id, note=body.note, member_id=body.member_id, idem=idem)
    )


async def add_line(request: web.Request) -> web.Response:
    """Add a line by barcode or SKU."""
    body, _, idem = await staff_command(request, LineIn, "order.sell")
    expires_on = None
    if body.barcode is not None and (gs1 := read_gs1(body.barcode)) is not None:
        refuse_expired(gs1, store_today(request.app[SETTINGS].timezone))  # AI (17) before today: refused
        body = body.model_copy(update={"barcode": gs1.gtin})
        expires_on = gs1.expiry
    line = _build_line(_catalog(request), body)
    if expires_on is not None:  # near-expiry promotions mark the line down by it
        line = line.model_copy(update={"expires_on": expires_on})
    return answer(await request.app[TILL].add_line(request.match_info["order_id"], line, idem))


async def patch_line(request: web.Request) -> web.Response:
    """Change quantity, note, or price (override: manager, audited)."""
    raw = await request.read()
    body = await read_body(request, LinePatch)
    staff = principal(request).require(
        "price.override" if body.override_price_fen is not None else "order.sell"
    )
    reply = await request.app[TILL].update_line(
        request.match_info["order_id"],
        request.match_info["line_id"],
        staff,
        qty=body.qty,
        note=body.note,
        override_price_fen=body.override_price_fen,
        reason=body.reason,
        idem=idempotency(request, raw),
    )
    return answer(reply)


async def delete_line(request: web.Request) -> web.Response:
    """Remove a line."""
    principal(request).require("order.sell")
    match = request.match_info
    return answer(
        await request.app[TILL].remove_line(match["order_id"], match["line_id"], idempotency(request, b""))
    )


def _hold(hold: bool) -> Any:
    async def handler(request: web.Request) -> web.Response:
        principal(request).require("order.sell")
        return answer(
            await request.app[TILL].hold(request.match_info["order_id"], hold, idempotency(request, b""))
        )

    return handler


async def void_order(request: web.Request) -> web.Response:
    """Void an unpaid order (manager)."""
    body, staff, idem = await staff_command(request, ReasonIn, "order.void")
    return answer(await request.app[TILL].void(request.match_info["order_id"], staff, body.reason, idem))


async def pay(request: web.Request) -> web.Response:
    """Apply a payment; the order closes when fully paid."""
    body, staff, idem = await staff_command(request, PaymentIn, "order.pay")
    order_id = request.match_info["order_id"]
    if body.method in MEMBER_METHODS:
        reply = await request.app[MEMBERS].pay(
            order_id, staff, method=body.method, amount_fen=body.amount_fen, points=body.points, idem=idem
        )
        return answer(reply)
    assert body.amount_fen is not None  # noqa: S101 - checked by PaymentIn
    reply = await request.app[TILL].pay(
        order_id, staff, method=body.method, amount_fen=body.amount_fen, reference=body.reference, idem=idem
    )
    return answer(reply)


async def refund(request: web.Request) -> web.Response:
    """Refund lines (or the rest of the order) to the original tenders (manager)."""
    body, staff, idem = await staff_command(request, RefundIn, "order.refund")
    lines = [(x.line_id, x.qty) for x in body.lines] if body.lines is not None else None
    order_id = request.match_info["order_id"]
    return answer(await request.app[TILL].refund(order_id, staff, lines=lines, reason=body.reason, idem=idem))


def _receipt(request: web.Request, order: Any, *, reprint: bool) -> web.Response:
    settings = request.app[SETTINGS]
    body = receipt(
        order,
        store_name=settings.store_name or settings.store,
        zone=ZoneInfo(settings.timezone),
        reprint=reprint,
    )
    return reply_json(body)


async def get_receipt(request: web.Request) -> web.Response:
    """The receipt as structured JSON."""
    order = await request.app[TILL].get_order(request.match_info["order_id"])
    return _receipt(request, order, reprint=False)


async def reprint(request: web.Request) -> web.Response:
    """Re-print: audited; returns the receipt marked as a reprint."""
    staff = principal(request).require("receipt.reprint")
    order = await request.app[TILL].audit_reprint(request.match_info["order_id"], staff)
    return _receipt(request, order, reprint=True)


async def open_shift(request: web.Request) -> web.Response:
    """Open the shift with a float."""
    body, staff, idem = await staff_command(request, ShiftOpenIn, "shift.open")
    return answer(await request.app[TILL].open_shift(staff, body.float_fen, idem))


async def current_shift(request: web.Request) -> web.Response:
    """The open shift with its running totals."""
    shift = await request.app[TILL].current_shift()
    if shift is None:
        raise TillError("no shift is open", status=404)
    return reply_json({"shift": shift.view()})


async def close_shift(request: web.Request) -> web.Response:
    """Close the shift: expected vs counted cash, per-tender totals."""
    body, staff, idem = await staff_command(request, ShiftCloseIn, "shift.close")
    return answer(await request.app[TILL].close_shift(staff, body.counted_cash_fen, idem))


async def events(request: web.Request) -> web.WebSocketResponse:
    """Live order changes; `?order=ID` follows one order. A slow client is closed (1013) to resync."""
    ws = web.WebSocketResponse(heartbeat=20)
    await ws.prepare(request)
    bus = request.app[BUS]
    sub = bus.subscribe(request.query.get("order"))

    async def pump() -> None:
        await ws.send_json({"type": "hello", "store": request.app[SETTINGS].store})
        while True:
            event = await sub.queue.get()
            # Order changes carry the order; other events (scan, hub.message) their own data.
            key = "order" if event.type.startswith("order.") else "data"
            await ws.send_str(json.dumps({"type": event.type, key: event.data}, ensure_ascii=False))

    sender = asyncio.create_task(pump(), name="ws-pump")
    overflow = asyncio.create_task(sub.overflowed.wait(), name="ws-overflow")
    reader = asyncio.create_task(_drain(ws), name="ws-reader")
    try:
        await asyncio.wait({sender, overflow, reader}, return_when=asyncio.FIRST_COMPLETED)
        if overflow.done():
            await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too slow; reconnect and re-read")
    finally:
        bus.unsubscribe(sub)
        for task in (sender, overflow, reader):
            task.cancel()
        for task in (sender, overflow, reader):
            with contextlib.suppress(asyncio.CancelledError, ConnectionResetError):
                await task
        await ws.close()
    return ws


async def _drain(ws: web.WebSocketResponse) -> None:
    async for _ in ws:  # clients only listen; reading keeps pings/close flowing
        pass


def add_routes(app: web.Application) -> None:
    """Register the till routes."""
    r = app.router
    r.add_get("/api/v1/products", search_products)
    r.add_get("/api/v1/products/{sku}", get_product)
    r.add_post("/api/v1/orders", open_order)
    r.add_get("/api/v1/orders", list_orders)
    r.add_get("/api/v1/orders/{order_id}", get_order)
    r.add_patch("/api/v1/orders/{order_id}", patch_order)
    r.add_post("/api/v1/orders/{order_id}/lines", add_line)
    r.add_patch("/api/v1/orders/{order_id}/lines/{line_id}", patch_line)
    r.add_delete("/api/v1/orders/{order_id}/lines/{line_id}", delete_line)
    r.add_post("/api/v1/orders/{order_id}/hold", _hold(True))
    r.add_post("/api/v1/orders/{order_id}/resume", _hold(False))
    r.add_post("/api/v1/orders/{order_id}/void", void_order)
    r.add_post("/api/v1/orders/{order_id}/payments", pay)
    r.add_post("/api/v1/orders/{order_id}/refunds", refund)
    r.add_get("/api/v1/orders/{order_id}/receipt", get_receipt)
    r.add_post("/api/v1/orders/{order_id}/reprint", reprint)
    r.add_post("/api/v1/shifts", open_shift)
    r.add_get("/api/v1/shifts/current", current_shift)
    r.add_post("/api/v1/shifts/current/close", close_shift)
    r.add_get("/api/v1/events", events)

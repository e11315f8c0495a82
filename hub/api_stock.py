"""Stock and transfers in the head-office API.

Quantities travel as decimal strings ("2", "0.352"; at most three decimals). Reading
stock needs `stock.read` for the store; an adjustment `stock.adjust` for it. Transfers:
creating needs `transfers.write` at the source or the destination, shipping it at the
source, receiving it at the destination; approving and closing with a shortage need
`transfers.approve` (head office) for both stores; cancelling needs either. Each step is
one transaction: a refusal (403, 404, 409 with the reason, 422 for a malformed body)
writes nothing.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, PlainValidator

from hub.api import DB, actor, bad_query, principal, query_int, read_body
from hub.auth import Principal
from hub.errors import PermissionDenied
from hub.stock import (
    StockError,
    adjust,
    flag_json,
    level,
    level_json,
    levels_for_sku,
    levels_for_store,
    list_flags,
    movement_json,
    movements_page,
    parse_qty,
)
from hub.stock_tables import MovementKind
from hub.transfers import LineIn, ReceiptLineIn, approve, cancel, close, create_transfer, receive, ship
from hub.transfers_tables import DiscrepancyKind, TransferState
from hub.transfers_views import TransferView, list_transfers, load_transfer, transfer_head_json, transfer_json
from protocol import validate_store_id

__all__ = ["add_routes"]

_MAX_PAGE = 500


def _qty(value: Any, *, signed: bool = False) -> int:
    try:
        return parse_qty(value, signed=signed)
    except StockError as err:
        raise ValueError(str(err)) from None


# Thousandths after validation; on the wire a decimal string (or a whole number).
Qty = Annotated[int, PlainValidator(_qty)]
SignedQty = Annotated[int, PlainValidator(lambda v: _qty(v, signed=True))]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class AdjustmentIn(_In):
    """A correction (either way) or a write-off (`waste`, negative), with its reason."""

    sku: str = Field(min_length=1, max_length=64)
    qty: SignedQty
    kind: Literal["adjustment", "waste"] = "adjustment"
    reason: str = Field(min_length=1, max_length=500)
    reference: str | None = Field(None, min_length=1, max_length=64)


class TransferLineIn(_In):
    """A SKU and how much of it to send."""

    sku: str = Field(min_length=1, max_length=64)
    qty: Qty


class TransferIn(_In):
    """A new transfer (draft)."""

    from_store: str = Field(max_length=32)
    to_store: str = Field(max_length=32)
    lines: list[TransferLineIn] = Field(min_length=1, max_length=500)
    note: str = Field("", max_length=500)


class ReceiptLine(_In):
    """What arrived for one SKU: `qty` counts everything, `damaged` the part of it that is broken."""

    sku: str = Field(min_length=1, max_length=64)
    qty: Qty
    damaged: Qty = 0
    discrepancy: DiscrepancyKind | None = None
    note: str = Field("", max_length=500)


class ReceiptIn(_In):
    """One scan-in at the destination."""

    lines: list[ReceiptLine] = Field(min_length=1, max_length=500)
    note: str = Field("", max_length=500)


class ReasonIn(_In):
    """Why (kept on the transfer)."""

    reason: str = Field(min_length=1, max_length=500)


def _store(request: web.Request, permission: str) -> str:
    store = request.match_info["store"]
    principal(request).require(permission, store=store)
    return store


def _bool(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false")
    if raw not in {"true", "false"}:
        raise bad_query(f"{name} must be true or false")
    return raw == "true"


async def get_store_stock(request: web.Request) -> web.Response:
    """A store's levels by SKU: `?sku=` a SKU prefix, `?below_zero=true` only the negative ones."""
    store = _store(request, "stock.read")
    limit = max(1, query_int(request, "limit", 100, 0, _MAX_PAGE))
    offset = query_int(request, "offset", 0, 0, 10**9)
    async with request.app[DB].session() as session:
        rows, more = await levels_for_store(
            session,
            store,
            sku_prefix=request.query.get("sku") or None,
            below_zero=_bool(request, "below_zero"),
            limit=limit,
            offset=offset,
        )
    items = [level_json(r) for r in rows]
    return web.json_response({"store": store, "items": items, "next": offset + limit if more else None})


async def get_sku_stock(request: web.Request) -> web.Response:
    """One SKU at every store in the caller's scope."""
    who = principal(request)
    who.require("stock.read")
    async with request.app[DB].session() as session:
        rows = await levels_for_sku(session, request.match_info["sku"], stores=who.stores)
    return web.json_response({"sku": request.match_info["sku"], "items": [level_json(r) for r in rows]})


async def get_movements(request: web.Request) -> web.Response:
    """The ledger of one SKU at one store, newest first."""
    store = _store(request, "stock.read")
    sku = request.match_info["sku"]
    limit = max(1, query_int(request, "limit", 100, 0, _MAX_PAGE))
    offset = query_int(request, "offset", 0, 0, 10**9)
    async with request.app[DB].session() as session:
        rows, more = await movements_page(session, store, sku, limit=limit, offset=offset)
        now = await level(session, store, sku)
    return web.json_response(
        {
            "level": level_json(now),
            "items": [movement_json(r) for r in rows],
            "next": offset + limit if more else None,
        }
    )


async def post_adjustment(request: web.Request) -> web.Response:
    """Correct a store's stock of one SKU, or write some off as waste."""
    store = _store(request, "stock.adjust")
    body = await read_body(request, AdjustmentIn)
    async with request.app[DB].session() as session, session.begin():
        movement = await adjust(
            session,
            store,
            body.sku,
            body.qty,
            body.reason,
            actor(request),
            kind=MovementKind(body.kind),
            reference=body.reference,
        )
        now = await level(session, store, body.sku)
    return web.json_response({"movement_id": movement, "level": level_json(now)}, status=201)


async def get_flags(request: web.Request) -> web.Response:
    """Sale documents the stock listener could not fully apply, at this store."""
    store = _store(request, "stock.read")
    async with request.app[DB].session() as session:
        rows = await list_flags(session, stores=[store], resolved=None if _bool(request, "all") else False)
    return web.json_response({"items": [flag_json(r) for r in rows]})


def _may_touch(who: Principal, view: TransferView) -> bool:
    return who.can_see(view.transfer.from_store) or who.can_see(view.transfer.to_store)


async def _transfer_step(request: web.Request, check: Any, step: Any) -> web.Response:
    """Load the transfer, check the caller may do this step to it, do it; all in one transaction."""
    who = principal(request)
    transfer_id = request.match_info["transfer_id"]
    async with request.app[DB].session() as session, session.begin():
        view = await load_transfer(session, transfer_id)
        check(who, view)
        result = await step(session, transfer_id)
        answer = transfer_json(result)
    return web.json_response(answer)


def _head_office(who: Principal, view: TransferView) -> None:
    who.require("transfers.approve", store=view.transfer.from_store)
    who.require("transfers.approve", store=view.transfer.to_store)


async def post_transfer(request: web.Request) -> web.Response:
    """A new transfer in draft, by someone at either end (or head office)."""
    who = principal(request)
    who.require("transfers.write")
    body = await read_body(request, TransferIn)
    for store in (body.from_store, body.to_store):
        try:
            validate_store_id(store)
        except ValueError as err:
            raise bad_query(str(err)) from None
    if not (who.can_see(body.from_store) or who.can_see(body.to_store)):
        raise PermissionDenied(
            f"user '{who.name}' has access to neither '{body.from_store}' nor '{body.to_store}'"
        )
    lines = [LineIn(line.sku, line.qty) for line in body.lines]
    async with request.app[DB].session() as session, session.begin():
        view = await create_transfer(
            session, body.from_store, body.to_store, lines, actor=actor(request), note=body.note
        )
        answer = transfer_json(view)
    return web.json_response(answer, status=201)


async def get_transfers(request: web.Request) -> web.Response:
    """Transfers touching the caller's stores: `?store=` one of them, `?state=` one state."""
    who = principal(request)
    who.require("transfers.read")
    store = request.query.get("store") or None
    if store is not None:
        who.require("transfers.read", store=store)
    raw_state = request.query.get("state") or None
    try:
        state = TransferState(raw_state) if raw_state else None
    except ValueError:
        raise bad_query(f"state must be one of {', '.join(s.value for s in TransferState)}") from None
    limit = max(1, query_int(request, "limit", 100, 0, _MAX_PAGE))
    offset = query_int(request, "offset", 0, 0, 10**9)
    async with request.app[DB].session() as session:
        rows, more = await list_transfers(
            session, scope=who.stores, store=store, state=state, limit=limit, offset=offset
        )
    items = [transfer_head_json(r) for r in rows]
    return web.json_response({"items": items, "next": offset + limit if more else None})


async def get_transfer(request: web.Request) -> web.Response:
    """One transfer with its lines, receipts and discrepancies."""
    who = principal(request)
    who.require("transfers.read")
    async with request.app[DB].session() as session:
        view = await load_transfer(session, request.match_info["transfer_id"])
    if not _may_touch(who, view):
        raise PermissionDenied(f"user '{who.name}' has access to neither store of this transfer")
    return web.json_response(transfer_json(view))


async def post_approve(request: web.Request) -> web.Response:
    """Head office approves a draft."""
    name = actor(request)
    return await _transfer_step(request, _head_office, lambda s, i: approve(s, i, actor=name))


async def post_ship(request: web.Request) -> web.Response:
    """The source store ships: its stock leaves, the destination sees it in transit."""
    name = actor(request)

    def check(who: Principal, view: TransferView) -> None:
        who.require("transfers.write", store=view.transfer.from_store)

    return await _transfer_step(request, check, lambda s, i: ship(s, i, actor=name))


async def post_receive(request: web.Request) -> web.Response:
    """The destination scans goods in (partial receipts allowed; discrepancies recorded)."""
    name = actor(request)
    body = await read_body(request, ReceiptIn)
    items = [ReceiptLineIn(x.sku, x.qty, x.damaged, x.discrepancy, x.note) for x in body.lines]

    def check(who: Principal, view: TransferView) -> None:
        who.require("transfers.write", store=view.transfer.to_store)

    async def step(session: Any, transfer_id: str) -> TransferView:
        view, _ = await receive(session, transfer_id, items, actor=name, note=body.note)
        return view

    return await _transfer_step(request, check, step)


async def post_cancel(request: web.Request) -> web.Response:
    """Cancel before shipping: the source store or head office."""
    name = actor(request)
    body = await read_body(request, ReasonIn)

    def check(who: Principal, view: TransferView) -> None:
        try:
            _head_office(who, view)
        except PermissionDenied:
            who.require("transfers.write", store=view.transfer.from_store)

    return await _transfer_step(request, check, lambda s, i: cancel(s, i, actor=name, reason=body.reason))


async def post_close(request: web.Request) -> web.Response:
    """Head office closes a transfer with a shortage: what never arrived is lost in transit."""
    name = actor(request)
    body = await read_body(request, ReasonIn)
    return await _transfer_step(
        request, _head_office, lambda s, i: close(s, i, actor=name, reason=body.reason)
    )


def add_routes(app: web.Application) -> None:
    """Register the stock and transfer routes."""
    app.router.add_get("/api/v1/stores/{store}/stock", get_store_stock)
    app.router.add_post("/api/v1/stores/{store}/stock/adjustments", post_adjustment)
    app.router.add_get("/api/v1/stores/{store}/stock-flags", get_flags)
    app.router.add_get("/api/v1/stores/{store}/stock/{sku}/movements", get_movements)
    app.router.add_get("/api/v1/stock/{sku}", get_sku_stock)
    app.router.add_post("/api/v1/transfers", post_transfer)
    app.router.add_get("/api/v1/transfers", get_transfers)
    app.router.add_get("/api/v1/transfers/{transfer_id}", get_transfer)
    app.router.add_post("/api/v1/transfers/{transfer_id}/approve", post_approve)
    app.router.add_post("/api/v1/transfers/{transfer_id}/ship", post_ship)
    app.router.add_post("/api/v1/transfers/{transfer_id}/receive", post_receive)
    app.router.add_post("/api/v1/transfers/{transfer_id}/cancel", post_cancel)
    app.router.add_post("/api/v1/transfers/{transfer_id}/close", post_close)

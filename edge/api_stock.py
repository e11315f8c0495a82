"""Stock routes of the local API: the store's tasks (ship, receive, count), scanning, submitting,
and the SKUs blocked from sale.

Counting needs `stock.count` (any staff who sells); shipping and receiving transfers
`stock.transfer` (cashier and up). A scan may carry an `Idempotency-Key`, so a phone's
retry does not count twice.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import Field, PlainValidator, model_validator

from edge.api import JOURNAL, LINK, SNAPSHOTS, Body, principal, read_body, reply_json
from edge.catalog import CatalogError
from edge.errors import TillError
from edge.stock_desk import LineChange, StockDesk
from edge.stock_tasks import milli_of, read_gs1
from protocol.barcodes import BarcodeError

__all__ = ["STOCK", "add_routes"]

STOCK = web.AppKey("stock", StockDesk)
_TEXT = r"^[^\x00-\x1f\x7f]*$"


def _milli(value: Any) -> int:
    return milli_of(value)


Milli = Annotated[int, PlainValidator(_milli)]


class ScanIn(Body):
    """One scan into a task: a barcode (GS1 and scale labels too) or a SKU, and how many (default 1)."""

    barcode: str | None = Field(None, min_length=1, max_length=100)
    sku: str | None = Field(None, min_length=1, max_length=64)
    qty: Milli | None = None

    @model_validator(mode="after")
    def _one_key(self) -> ScanIn:
        if (self.barcode is None) == (self.sku is None):
            raise ValueError("give exactly one of barcode or sku")
        return self


class LineIn(Body):
    """Set a line: the quantity counted or scanned, and for a receipt damage and a discrepancy."""

    qty: Milli
    damaged: Milli = 0
    discrepancy: Literal["short", "over", "damaged"] | None = None
    note: str = Field("", max_length=500, pattern=_TEXT)


class SubmitIn(Body):
    """Send the task's result to head office."""

    note: str = Field("", max_length=500, pattern=_TEXT)


async def _permission(request: web.Request, task_id: str) -> str:
    """The staff member, with the permission the task's kind needs."""
    kind = task_id.partition(":")[0]
    staff = principal(request).require("stock.count" if kind == "count" else "stock.transfer")
    return staff.id


def _resolve(request: web.Request, body: ScanIn) -> tuple[str, int]:
    """The SKU and thousandths a scan stands for."""
    qty = body.qty
    if body.sku is not None:
        return body.sku, 1000 if qty is None else qty
    catalog = request.app[SNAPSHOTS].catalog
    if catalog is None:
        raise TillError("no catalog is loaded; scan by SKU or load the catalog", status=503)
    code = body.barcode or ""
    gs1 = read_gs1(code)
    try:
        match = catalog.lookup_barcode(gs1.gtin if gs1 else code)
    except (BarcodeError, CatalogError) as err:
        raise TillError(f"{err}; scan it again", status=422) from err
    if match is None:
        raise TillError(f"unknown barcode {code}; it is not in the catalog", status=404)
    if qty is None and match.qty is not None:  # a scale label carries its weight
        weight = Fraction(match.qty) * 1000
        if weight.denominator != 1:
            raise TillError(f"scale label {code}: weight finer than a gram", status=422)
        qty = int(weight)
    return match.product.sku, 1000 if qty is None else qty


async def get_tasks(request: web.Request) -> web.Response:
    """The store's tasks, newest first: `?state=open|done|cancelled`."""
    principal(request).require("stock.count")
    state = request.query.get("state") or None
    if state not in (None, "open", "done", "cancelled"):
        raise TillError("state must be open, done or cancelled", status=422)
    return reply_json({"items": await request.app[STOCK].tasks(state)})


async def get_task(request: web.Request) -> web.Response:
    """One task with its lines."""
    principal(request).require("stock.count")
    return reply_json(await request.app[STOCK].task(request.match_info["task_id"]))


async def post_scan(request: web.Request) -> web.Response:
    """Add a scan to a task."""
    task_id = request.match_info["task_id"]
    body = await read_body(request, ScanIn)
    staff = await _permission(request, task_id)
    sku, qty = _resolve(request, body)
    if qty <= 0:
        raise TillError("a scan adds at least 0.001; set the line to correct it", status=422)
    key = request.headers.get("Idempotency-Key")
    scoped = f"{principal(request).device_id}:{key}" if key else None
    view = await request.app[STOCK].scan(task_id, sku, qty, key=scoped)
    return reply_json({"task": view, "scanned": {"sku": sku, "by": staff}}, 201)


async def put_line(request: web.Request) -> web.Response:
    """Set a line's quantity (a recount), damage or discrepancy."""
    task_id = request.match_info["task_id"]
    body = await read_body(request, LineIn)
    await _permission(request, task_id)
    change = LineChange(body.qty, body.damaged, body.discrepancy, body.note)
    return reply_json(await request.app[STOCK].set_line(task_id, request.match_info["sku"], change))


async def post_submit(request: web.Request) -> web.Response:
    """Send the result up (through the outbox: it arrives even if the hub is away now)."""
    task_id = request.match_info["task_id"]
    body = await read_body(request, SubmitIn, optional=True)
    staff = await _permission(request, task_id)
    return reply_json(await request.app[STOCK].submit(task_id, staff, body.note))


async def get_blocked(request: web.Request) -> web.Response:
    """SKUs head office blocked from sale at this store, with the reason."""
    principal(request).require("order.sell")
    return reply_json({"items": await request.app[STOCK].blocked()})


def add_routes(app: web.Application) -> None:
    """Register the stock routes (the desk shares the app's journal and hub link)."""
    app[STOCK] = StockDesk(app[JOURNAL], on_outbox=app[LINK].notify_outbox)
    r = app.router
    r.add_get("/api/v1/stock/tasks", get_tasks)
    r.add_get("/api/v1/stock/tasks/{task_id}", get_task)
    r.add_post("/api/v1/stock/tasks/{task_id}/scans", post_scan)
    r.add_put("/api/v1/stock/tasks/{task_id}/lines/{sku}", put_line)
    r.add_post("/api/v1/stock/tasks/{task_id}/submit", post_submit)
    r.add_get("/api/v1/stock/blocked", get_blocked)

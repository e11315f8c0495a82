"""OpenAPI 3.1 document of the local API: every route the app registers, request models where known.

`_ROUTES` are written by hand (summary, body, who may call); every other registered route gets its
summary and body from its handler (`protocol.openapi`).
"""

from __future__ import annotations

import functools
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from edge.api import _PUBLIC, PairIn, SessionIn, StatusOut
from edge.api_members import LookupIn, RegisterIn, TopupIn
from edge.api_tables import OPENAPI_ROUTES
from edge.api_till import (
    LineIn,
    LinePatch,
    OrderIn,
    OrderPatch,
    PaymentIn,
    ReasonIn,
    RefundIn,
    ShiftCloseIn,
    ShiftOpenIn,
)
from protocol.openapi import (
    Route,
    body,
    json_response,
    path_parameters,
    problem_response,
    resolve_refs,
    routes_of,
)

__all__ = ["openapi_document"]

_OPEN, _DEVICE, _STAFF = "open", "device", "staff"
# (method, path, summary, request body, who may call)
_ROUTES: list[tuple[str, str, str, type[BaseModel] | None, str]] = [
    ("get", "/api/v1/status", "Store, hub link and journal state", None, _OPEN),
    ("post", "/api/v1/devices/pair", "Pair a device with a code from `storelink-edge pair`", PairIn, _OPEN),
    ("post", "/api/v1/sessions", "Staff PIN sign-in → session token", SessionIn, _DEVICE),
    ("delete", "/api/v1/sessions", "Sign out", None, _STAFF),
    ("get", "/api/v1/products", "Search products (`q`, `barcode`, `limit`)", None, _DEVICE),
    ("get", "/api/v1/products/{sku}", "One product", None, _DEVICE),
    ("post", "/api/v1/orders", "Open an order", OrderIn, _STAFF),
    ("get", "/api/v1/orders", "Recent orders (`status`)", None, _DEVICE),
    ("get", "/api/v1/orders/{order_id}", "One order", None, _DEVICE),
    ("patch", "/api/v1/orders/{order_id}", "Order note or member", OrderPatch, _STAFF),
    ("post", "/api/v1/orders/{order_id}/lines", "Add a line by barcode or SKU", LineIn, _STAFF),
    ("patch", "/api/v1/orders/{order_id}/lines/{line_id}", "Change a line", LinePatch, _STAFF),
    ("delete", "/api/v1/orders/{order_id}/lines/{line_id}", "Remove a line", None, _STAFF),
    ("post", "/api/v1/orders/{order_id}/hold", "Hold (挂单)", None, _STAFF),
    ("post", "/api/v1/orders/{order_id}/resume", "Resume a held order", None, _STAFF),
    ("post", "/api/v1/orders/{order_id}/void", "Void an unpaid order (manager)", ReasonIn, _STAFF),
    (
        "post",
        "/api/v1/orders/{order_id}/payments",
        "Pay (cash, wechat, alipay, unionpay; stored_value or points of the attached member)",
        PaymentIn,
        _STAFF,
    ),
    (
        "post",
        "/api/v1/orders/{order_id}/member",
        "Attach a member by phone or code (level prices)",
        LookupIn,
        _STAFF,
    ),
    ("delete", "/api/v1/orders/{order_id}/member", "Take the member off an unpaid order", None, _STAFF),
    (
        "get",
        "/api/v1/orders/{order_id}/points-quote",
        "Points the member may use on this order",
        None,
        _STAFF,
    ),
    ("post", "/api/v1/members/lookup", "A member's level, points, stored value, passes", LookupIn, _STAFF),
    ("post", "/api/v1/members", "Register a member at this store", RegisterIn, _STAFF),
    ("post", "/api/v1/members/{member_id}/topups", "Top up stored value (bonus at the hub)", TopupIn, _STAFF),
    ("post", "/api/v1/orders/{order_id}/refunds", "Refund lines or the rest (manager)", RefundIn, _STAFF),
    ("get", "/api/v1/orders/{order_id}/receipt", "Receipt as structured JSON", None, _DEVICE),
    ("post", "/api/v1/orders/{order_id}/reprint", "Re-print (audited)", None, _STAFF),
    ("post", "/api/v1/shifts", "Open a shift with a float", ShiftOpenIn, _STAFF),
    ("get", "/api/v1/shifts/current", "The open shift", None, _DEVICE),
    ("post", "/api/v1/shifts/current/close", "Close the shift with counted cash", ShiftCloseIn, _STAFF),
    ("get", "/api/v1/events", "WebSocket of order changes (`order`, `token`)", None, _DEVICE),
    ("get", "/api/v1/hub/check", "Round trip to the hub, its snapshot versions (503 offline)", None, _DEVICE),
    ("get", "/api/v1/messages", "Head office's latest messages to this store", None, _DEVICE),
]
_ROUTES += OPENAPI_ROUTES  # tables (edge/api_tables.py)
_WHO = {
    _OPEN: "No token needed.",
    _DEVICE: "Device or session token.",
    _STAFF: "Staff session token; changes accept an `Idempotency-Key` header.",
}
_ANY_CALLER = "Device or session token; a change that needs a staff permission answers 403 to a device token."
_TOKEN_ERRORS = {
    "401": problem_response("missing, unknown or expired token"),
    "403": problem_response("the token's staff member lacks the permission"),
}
_SERVER_ERRORS = {"503": problem_response("hub unreachable (see Retry-After) or journal unavailable")}


def _operation(
    route: Route, curated: dict[tuple[str, str], tuple[str, type[BaseModel] | None, str]]
) -> dict[str, Any]:
    summary, model, who = curated.get((route.method, route.path), (route.summary, route.body, ""))
    open_route = (route.method.upper(), route.path) in _PUBLIC
    who = _OPEN if open_route else who
    responses: dict[str, Any] = {"2XX": {"description": "done; docs/api.md describes the answer"}}
    op: dict[str, Any] = {"summary": summary, "description": _WHO.get(who, _ANY_CALLER)}
    if route.websocket:
        op["description"] += " A WebSocket: browsers, which cannot set headers, pass `?token=`."
        responses = {"101": {"description": "switched to a WebSocket"}}
    elif route.path == "/api/v1/status":
        responses = {"200": json_response(StatusOut, "the store's state")}
    if model is not None:
        op["requestBody"] = body(model)
        responses["422"] = problem_response("invalid body; nothing was changed")
    if params := path_parameters(route.path):
        op["parameters"] = params
        responses["404"] = problem_response("no such item")
    if open_route:
        op["security"] = []
    else:
        op["security"] = [{"bearer": []}]
        responses.update(_TOKEN_ERRORS)
    op["responses"] = {**responses, "4XX": problem_response("refused; nothing was changed"), **_SERVER_ERRORS}
    return op


@functools.cache
def _document(version: str, registered: tuple[tuple[str, str | None, Any], ...]) -> dict[str, Any]:
    curated = {(method, path): (summary, model, who) for method, path, summary, model, who in _ROUTES}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes_of(registered):
        paths.setdefault(route.path, {})[route.method] = _operation(route, curated)
    return resolve_refs(
        {
            "openapi": "3.1.0",
            "info": {"title": "storelink edge (store LAN)", "version": version},
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
            "security": [{"bearer": []}],
            "paths": paths,
        }
    )


def openapi_document(version: str, router: web.UrlDispatcher) -> dict[str, Any]:
    """The whole document: every route `router` holds."""
    registered = tuple(
        (r.method, r.resource.canonical if r.resource else None, r.handler) for r in router.routes()
    )
    return _document(version, registered)

"""OpenAPI 3.1 document of the local API, built from the request models."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel

from edge.api import PairIn, SessionIn, StatusOut
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
from protocol import Problem

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
_PROBLEM = {
    "description": "refused; nothing was changed",
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}


@functools.cache
def openapi_document(version: str) -> dict[str, Any]:
    """The whole document."""
    schemas: dict[str, Any] = {}
    models: list[type[BaseModel]] = [StatusOut, Problem]
    models += sorted({m for *_, m, _ in _ROUTES if m is not None}, key=lambda m: m.__name__)
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, body, who in _ROUTES:
        op: dict[str, Any] = {
            "summary": summary,
            "description": {
                _OPEN: "No token needed.",
                _DEVICE: "Device or session token.",
                _STAFF: "Staff session token; changes accept an `Idempotency-Key` header.",
            }[who],
            "responses": {"200": {"description": "OK"}, "4XX": _PROBLEM},
        }
        if who == _OPEN:
            op["security"] = []
        if body is not None:
            ref = {"$ref": f"#/components/schemas/{body.__name__}"}
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref}}}
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "storelink edge (store LAN)", "version": version},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }

"""Coupon routes of the local API: redeem a presented coupon onto an order, take it off, and
list a member's coupons.

Redeeming and releasing go to the hub (single use is decided there); while the hub is out
of reach they answer 503 with what to do, and the order is unchanged.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import Field

from edge.api import COUPONS, Body, answer, idempotency, principal, reply_json, staff_command

__all__ = ["add_routes"]

_CODE = r"^\s*[A-Za-z0-9]{4,16}\s*$"


class CouponIn(Body):
    """The code on the coupon (scanned or typed)."""

    code: str = Field(pattern=_CODE)


async def redeem(request: web.Request) -> web.Response:
    """Use a coupon on an open order; the order comes back repriced with the coupon's saving."""
    body, _, idem = await staff_command(request, CouponIn, "order.sell")
    return answer(await request.app[COUPONS].redeem(request.match_info["order_id"], body.code, idem))


async def release(request: web.Request) -> web.Response:
    """Take a coupon off an unpaid order; the member keeps it."""
    principal(request).require("order.sell")
    code = request.match_info["code"]
    if not (4 <= len(code) <= 16 and code.isascii() and code.isalnum()):
        raise web.HTTPBadRequest(text="a coupon code is 4-16 letters and digits")
    idem = idempotency(request, b"")
    return answer(await request.app[COUPONS].release(request.match_info["order_id"], code, idem))


async def member_coupons(request: web.Request) -> web.Response:
    """The member's unused coupons valid at this store (from the hub)."""
    principal(request).require("order.sell")
    return reply_json(await request.app[COUPONS].list_for_member(request.match_info["member_id"]))


def add_routes(app: web.Application) -> None:
    """Register the coupon routes."""
    app.router.add_post("/api/v1/orders/{order_id}/coupons", redeem)
    app.router.add_delete("/api/v1/orders/{order_id}/coupons/{code}", release)
    app.router.add_get("/api/v1/members/{member_id}/coupons", member_coupons)

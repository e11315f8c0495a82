"""Member routes of the local API: look up, register, attach to an order, points quote, top up.

Paying from a member's account goes through the ordinary payments route with method
`stored_value` or `points` (see `edge.api_till.pay`).
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from aiohttp import web
from pydantic import Field, StrictInt, field_validator, model_validator

from edge.api import MEMBERS, TILL, Body, answer, idempotency, principal, reply_json, staff_command
from edge.api_till import ReasonIn
from edge.orders import TenderMethod
from protocol.phone import mainland_mobile

__all__ = ["add_routes"]

_TEXT = r"^[^\x00-\x1f\x7f]*$"


def _phone(value: str | None) -> str | None:
    if value is None:
        return None
    digits = mainland_mobile(value)
    if digits is None:
        raise ValueError(f"{value!r} is not a mainland China mobile number (11 digits starting with 13-19)")
    return digits


class LookupIn(Body):
    """A member by phone number, or by the rotating code their phone shows (used once)."""

    phone: str | None = Field(None, max_length=32)
    code: str | None = Field(None, pattern=r"^[0-9]{6,32}$")

    _check_phone = field_validator("phone")(_phone)

    @model_validator(mode="after")
    def _one_of(self) -> LookupIn:
        if (self.phone is None) == (self.code is None):
            raise ValueError("give exactly one of phone or code")
        return self


class RegisterIn(Body):
    """A new member registered at this till (consume = become a member)."""

    phone: str = Field(max_length=32)
    name: str = Field("", max_length=64, pattern=_TEXT)
    gender: Literal["male", "female", "unknown"] = "unknown"
    birthday: date | None = None
    referrer_phone: str | None = Field(None, max_length=32)
    consent_marketing: bool = False
    consent_sms: bool = False

    _check_phones = field_validator("phone", "referrer_phone")(_phone)


class TopupIn(Body):
    """Money the member puts on their account, and how they paid it."""

    amount_fen: StrictInt = Field(gt=0, le=10_000_000)
    method: TenderMethod
    reference: str | None = Field(None, min_length=1, max_length=64, pattern=_TEXT)


class PassUseIn(Body):
    """Uses of a member's punch card or pass for a service (the hub picks the pass expiring first)."""

    service_sku: str = Field(min_length=1, max_length=64, pattern=_TEXT)
    pass_id: str | None = Field(None, min_length=1, max_length=36, pattern=_TEXT)
    order_id: str | None = Field(None, min_length=1, max_length=36, pattern=_TEXT)
    uses: StrictInt = Field(1, ge=1, le=100)


async def lookup(request: web.Request) -> web.Response:
    """The member's level, points, stored value and passes."""
    body, _, idem = await staff_command(request, LookupIn, "order.sell")
    return reply_json(await request.app[MEMBERS].lookup(phone=body.phone, code=body.code, idem=idem))


async def register(request: web.Request) -> web.Response:
    """Register a member; a phone that is already a member answers 200 with `existing: true`."""
    body, _, _ = await staff_command(request, RegisterIn, "order.sell")
    view = await request.app[MEMBERS].register(body.model_dump(mode="json", exclude_none=True))
    return reply_json(view, 200 if view.get("existing") else 201)


async def attach(request: web.Request) -> web.Response:
    """Attach a member to an order by phone or code; the order is repriced at their level."""
    body, _, idem = await staff_command(request, LookupIn, "order.sell")
    reply = await request.app[MEMBERS].attach(
        request.match_info["order_id"], phone=body.phone, code=body.code, idem=idem
    )
    return answer(reply)


async def detach(request: web.Request) -> web.Response:
    """Take the member off an unpaid order; prices go back to the store's."""
    principal(request).require("order.sell")
    till = request.app[TILL]
    return answer(await till.set_member(request.match_info["order_id"], None, idempotency(request, b"")))


async def points_quote(request: web.Request) -> web.Response:
    """How many points the order's member may use now and what they pay."""
    principal(request).require("order.pay")
    return reply_json(await request.app[MEMBERS].points_quote(request.match_info["order_id"]))


async def topup(request: web.Request) -> web.Response:
    """Top up a member's stored value (bonus rules apply at the hub); the money goes into the shift."""
    body, staff, idem = await staff_command(request, TopupIn, "order.pay")
    reply = await request.app[MEMBERS].topup(
        staff,
        request.match_info["member_id"],
        amount_fen=body.amount_fen,
        method=body.method,
        reference=body.reference,
        idem=idem,
    )
    return answer(reply)


async def use_pass(request: web.Request) -> web.Response:
    """Take uses of a member's pass (次卡/月卡) at check-in or with a sale."""
    body, staff, idem = await staff_command(request, PassUseIn, "order.sell")
    reply = await request.app[MEMBERS].use_pass(
        staff,
        request.match_info["member_id"],
        service_sku=body.service_sku,
        pass_id=body.pass_id,
        order_id=body.order_id,
        uses=body.uses,
        idem=idem,
    )
    return answer(reply)


async def reverse_pass_use(request: web.Request) -> web.Response:
    """Give back a pass use taken by mistake today (manager)."""
    body, staff, idem = await staff_command(request, ReasonIn, "order.void")
    members = request.app[MEMBERS]
    return answer(await members.reverse_pass_use(staff, request.match_info["txn_id"], body.reason, idem))


def add_routes(app: web.Application) -> None:
    """Register the member routes."""
    r = app.router
    r.add_post("/api/v1/members/lookup", lookup)
    r.add_post("/api/v1/members", register)
    r.add_post(r"/api/v1/members/{member_id:[0-9A-Za-z-]{1,64}}/topups", topup)
    r.add_post("/api/v1/orders/{order_id}/member", attach)
    r.add_delete("/api/v1/orders/{order_id}/member", detach)
    r.add_get("/api/v1/orders/{order_id}/points-quote", points_quote)
    r.add_post(r"/api/v1/members/{member_id:[0-9A-Za-z-]{1,64}}/pass-uses", use_pass)
    r.add_post(r"/api/v1/pass-uses/{txn_id:[0-9A-Za-z-]{1,36}}/reverse", reverse_pass_use)

"""Punch cards and passes in the head-office API: products, members' passes and ledgers,
manual issue, transfer, revocation, reversal of a use, and the flags to look at.

Reading needs `passes.read` (every role); changing needs `passes.write` (owner, regional,
store manager). Every change is recorded in the pass ledger with the user's name.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from hub.api import DB, ProblemError, actor, principal, read_body
from hub.errors import NotFound
from hub.passes import (
    ProductSpec,
    create_product,
    get_pass,
    get_product,
    issue_manual,
    ledger_of_member,
    ledger_of_pass,
    list_products,
    member_passes,
    summary,
    update_product,
)
from hub.passes_consume import reverse_use
from hub.passes_lifecycle import expire_passes, revoke_pass, transfer_pass
from hub.passes_models import PassFlag, PassLedger, PassProduct
from protocol import Problem

__all__ = ["add_routes"]


class ProductIn(ProductSpec):
    """A new pass product: its terms and a code that never changes."""

    code: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")


class ProductOut(BaseModel):
    """A pass product as stored."""

    model_config = ConfigDict(from_attributes=True)

    code: str
    name: str
    kind: str
    sale_sku: str
    covers_skus: list[str]
    covers_categories: list[str]
    uses: int | None
    valid_days: int | None
    valid_until: date | None
    transferable: bool
    daily_limit: int | None
    active: bool
    created_at: datetime
    updated_at: datetime


class _Reason(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: str = Field(min_length=1, max_length=200)


class IssueIn(_Reason):
    """Passes head office gives a member by hand (a gift, a correction)."""

    product_code: str = Field(min_length=1, max_length=32)
    quantity: int = Field(1, ge=1, le=20)
    store: str | None = Field(None, min_length=1, max_length=32)


class TransferIn(_Reason):
    """Move a pass to another member."""

    to_member_id: str = Field(min_length=1, max_length=64)


def _product(row: PassProduct, status: int = 200) -> web.Response:
    return web.json_response(text=ProductOut.model_validate(row).model_dump_json(), status=status)


async def get_products(request: web.Request) -> web.Response:
    """Every pass product; `?active=true` leaves the retired ones out."""
    principal(request).require("passes.read")
    async with request.app[DB].session() as session:
        rows = await list_products(session, include_retired=request.query.get("active") != "true")
    return web.json_response({"items": [ProductOut.model_validate(r).model_dump(mode="json") for r in rows]})


async def get_one_product(request: web.Request) -> web.Response:
    """One pass product."""
    principal(request).require("passes.read")
    async with request.app[DB].session() as session:
        return _product(await get_product(session, request.match_info["code"]))


async def post_product(request: web.Request) -> web.Response:
    """Create a pass product (409 if its code or sale SKU is taken)."""
    principal(request).require("passes.write")
    body = await read_body(request, ProductIn)
    spec = ProductSpec.model_validate(body.model_dump(exclude={"code"}))
    async with request.app[DB].session() as session, session.begin():
        row = await create_product(session, body.code, spec)
    return _product(row, 201)


async def put_product(request: web.Request) -> web.Response:
    """Replace a product's terms; passes already sold keep theirs."""
    principal(request).require("passes.write")
    spec = await read_body(request, ProductSpec)
    async with request.app[DB].session() as session, session.begin():
        row = await update_product(session, request.match_info["code"], spec)
    return _product(row)


async def delete_product(request: web.Request) -> web.Response:
    """Retire a product: no more manual issues; a till sale of its SKU still issues (it was paid)."""
    principal(request).require("passes.write")
    async with request.app[DB].session() as session, session.begin():
        row = await get_product(session, request.match_info["code"])
        row.active = False
    return _product(row)


async def get_member_passes(request: web.Request) -> web.Response:
    """A member's passes: usable ones, or all with `?all=true`."""
    principal(request).require("passes.read")
    usable_only = request.query.get("all") != "true"
    async with request.app[DB].session() as session:
        rows = await member_passes(session, request.match_info["member_id"], usable_only=usable_only)
    return web.json_response({"items": [summary(p) for p in rows]})


async def get_member_ledger(request: web.Request) -> web.Response:
    """The ledger of every pass the member holds."""
    principal(request).require("passes.read")
    async with request.app[DB].session() as session:
        items = await ledger_of_member(session, request.match_info["member_id"])
    return web.json_response({"items": items})


async def post_member_pass(request: web.Request) -> web.Response:
    """Issue passes to a member by hand, with a reason."""
    who = principal(request)
    body = await read_body(request, IssueIn)
    who.require("passes.write", store=body.store)
    async with request.app[DB].session() as session, session.begin():
        issued = await issue_manual(
            session,
            body.product_code,
            request.match_info["member_id"],
            actor=actor(request),
            reason=body.reason,
            quantity=body.quantity,
            store=body.store,
        )
        items = [summary(p) for p in issued]
    return web.json_response({"items": items}, status=201)


async def get_one_pass(request: web.Request) -> web.Response:
    """A pass and its ledger."""
    principal(request).require("passes.read")
    async with request.app[DB].session() as session:
        found = await get_pass(session, request.match_info["pass_id"])
        body = {"pass": summary(found), "ledger": await ledger_of_pass(session, found.id)}
    return web.json_response(body)


async def post_transfer(request: web.Request) -> web.Response:
    """Move a pass to another member (only if its product allows it)."""
    principal(request).require("passes.write")
    body = await read_body(request, TransferIn)
    async with request.app[DB].session() as session, session.begin():
        moved = await transfer_pass(
            session,
            request.match_info["pass_id"],
            body.to_member_id,
            actor=actor(request),
            reason=body.reason,
        )
        out = summary(moved)
    return web.json_response(out)


async def post_revoke(request: web.Request) -> web.Response:
    """End a pass for good (the uses left are forfeited), with a reason."""
    principal(request).require("passes.write")
    body = await read_body(request, _Reason)
    pass_id = request.match_info["pass_id"]
    async with request.app[DB].session() as session, session.begin():
        await get_pass(session, pass_id)
        if await revoke_pass(session, pass_id, actor=actor(request), reason=body.reason) is None:
            raise ProblemError(Problem(title="Conflict", status=409, detail="the pass was already revoked"))
        out = summary(await get_pass(session, pass_id))
    return web.json_response(out)


async def post_reverse(request: web.Request) -> web.Response:
    """Give back a use taken by mistake, any day, with a reason."""
    who = principal(request)
    body = await read_body(request, _Reason)
    txn_id = request.match_info["txn_id"]
    async with request.app[DB].session() as session, session.begin():
        store = await session.scalar(select(PassLedger.store).where(PassLedger.txn_id == txn_id))
        who.require("passes.write", store=store)
        out = await reverse_use(session, txn_id, actor=actor(request), reason=body.reason)
    return web.json_response(out)


def _flag(row: PassFlag) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "pass_id": row.pass_id,
        "member_id": row.member_id,
        "store": row.store,
        "order_id": row.order_id,
        "refund_id": row.refund_id,
        "detail": row.detail,
        "created_at": row.created_at.isoformat(),
        "resolved": row.resolved,
        "resolved_by": row.resolved_by,
    }


async def get_flags(request: web.Request) -> web.Response:
    """Pass events head office should look at; unresolved ones unless `?resolved=true`."""
    who = principal(request)
    who.require("passes.read")
    resolved = request.query.get("resolved") == "true"
    query = select(PassFlag).where(PassFlag.resolved.is_(resolved)).order_by(PassFlag.id).limit(1000)
    if who.stores is not None:
        query = query.where(PassFlag.store.in_(who.stores))
    async with request.app[DB].session() as session:
        rows = (await session.scalars(query)).all()
    return web.json_response({"items": [_flag(r) for r in rows]})


async def post_flag_resolved(request: web.Request) -> web.Response:
    """Mark a flag as dealt with."""
    who = principal(request)
    raw = request.match_info["flag_id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
        raise NotFound(f"no pass flag {raw!r}")
    async with request.app[DB].session() as session, session.begin():
        row = await session.get(PassFlag, int(raw))
        if row is None:
            raise NotFound(f"no pass flag {raw!r}")
        who.require("passes.write", store=row.store)
        row.resolved, row.resolved_by = True, who.name[:64]
        out = _flag(row)
    return web.json_response(out)


async def post_expire(request: web.Request) -> web.Response:
    """Expire the passes past their date now (also meant for a nightly job)."""
    principal(request).require("passes.write")
    async with request.app[DB].session() as session, session.begin():
        count = await expire_passes(session)
    return web.json_response({"expired": count})


def add_routes(app: web.Application) -> None:
    """Register the pass routes."""
    r = app.router
    r.add_get("/api/v1/pass-products", get_products)
    r.add_post("/api/v1/pass-products", post_product)
    r.add_get("/api/v1/pass-products/{code}", get_one_product)
    r.add_put("/api/v1/pass-products/{code}", put_product)
    r.add_delete("/api/v1/pass-products/{code}", delete_product)
    r.add_get("/api/v1/members/{member_id}/passes", get_member_passes)
    r.add_post("/api/v1/members/{member_id}/passes", post_member_pass)
    r.add_get("/api/v1/members/{member_id}/pass-ledger", get_member_ledger)
    r.add_post("/api/v1/passes/expire", post_expire)
    r.add_get("/api/v1/passes/{pass_id}", get_one_pass)
    r.add_post("/api/v1/passes/{pass_id}/transfer", post_transfer)
    r.add_post("/api/v1/passes/{pass_id}/revoke", post_revoke)
    r.add_post("/api/v1/pass-txns/{txn_id}/reverse", post_reverse)
    r.add_get("/api/v1/pass-flags", get_flags)
    r.add_post("/api/v1/pass-flags/{flag_id}/resolve", post_flag_resolved)

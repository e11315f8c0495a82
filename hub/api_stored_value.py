"""Stored value in the head-office API: accounts, ledgers, rules, top-ups and their refunds,
adjustments, the daily liability report and reconciliation flags.

Reading needs `stored_value.read` (owner, finance, regional and store managers); moving
money or changing rules needs `stored_value.write` (owner, finance); refunding a top-up
needs `stored_value.refund` (owner, finance). Every change is one transaction: a refusal
(409 with the reason, 422 for a malformed body) writes nothing.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from hub.api import DB, actor, bad_query, principal, query_int, read_body
from hub.stored_value import Source, load_rules, save_rules, topup
from hub.stored_value_office import adjust, entry_json, refund_topup, resolve_flag
from hub.stored_value_report import (
    account_view,
    flag_json,
    ledger_page,
    liability_report,
    list_flags,
    topup_json,
)
from hub.stored_value_rules import MAX_TOPUP_FEN, BonusRules

__all__ = ["add_routes"]

_MAX_PAGE = 500
_MAX_ADJUST_FEN = 10**10


class TopupIn(BaseModel):
    """A top-up taken at head office (bank transfer, corporate gift card purchase, …)."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    amount_fen: int = Field(strict=True, ge=1, le=MAX_TOPUP_FEN)
    payment_method: str = Field(pattern=r"^[a-z][a-z0-9_]{0,15}$")
    payment_reference: str | None = Field(None, max_length=64)


class ReasonIn(BaseModel):
    """Why: kept on the ledger or the flag for the audit."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    reason: str = Field(min_length=1, max_length=500)


class AdjustIn(ReasonIn):
    """A correction of either bucket; negative takes away."""

    principal_delta_fen: int = Field(0, strict=True, ge=-_MAX_ADJUST_FEN, le=_MAX_ADJUST_FEN)
    bonus_delta_fen: int = Field(0, strict=True, ge=-_MAX_ADJUST_FEN, le=_MAX_ADJUST_FEN)


async def get_account(request: web.Request) -> web.Response:
    """A member's balances and top-ups."""
    principal(request).require("stored_value.read")
    async with request.app[DB].session() as session:
        view = await account_view(session, request.match_info["member_id"])
    return web.json_response(view)


async def get_ledger(request: web.Request) -> web.Response:
    """A member's ledger, newest first; pass `next` as `offset` for the following page."""
    principal(request).require("stored_value.read")
    limit = max(1, query_int(request, "limit", 100, 0, _MAX_PAGE))
    offset = query_int(request, "offset", 0, 0, 10**9)
    async with request.app[DB].session() as session:
        member_id, rows, more = await ledger_page(
            session, request.match_info["member_id"], limit=limit, offset=offset
        )
    items = [entry_json(r) for r in rows]
    return web.json_response(
        {"member_id": member_id, "items": items, "next": offset + limit if more else None}
    )


async def post_topup(request: web.Request) -> web.Response:
    """Top up a member at head office; the chain's bonus tiers apply as at a till."""
    principal(request).require("stored_value.write")
    body = await read_body(request, TopupIn)
    async with request.app[DB].session() as session, session.begin():
        done = await topup(
            session,
            request.match_info["member_id"],
            body.amount_fen,
            payment_method=body.payment_method,
            payment_reference=body.payment_reference or None,
            source=Source(actor=actor(request)),
        )
        answer = {
            "txn_id": done.topup.id,
            "bonus_fen": done.topup.bonus_fen,
            "balance": done.balance.as_json(),
            "topup": topup_json(done.topup),
        }
    return web.json_response(answer, status=201)


async def post_topup_refund(request: web.Request) -> web.Response:
    """Refund a top-up: its bonus is clawed back first, spent bonus is kept from the principal."""
    principal(request).require("stored_value.refund")
    body = await read_body(request, ReasonIn)
    async with request.app[DB].session() as session, session.begin():
        done = await refund_topup(
            session, request.match_info["topup_id"], actor=actor(request), reason=body.reason
        )
        answer = {
            "topup_id": done.topup.id,
            "member_id": done.topup.member_id,
            "clawback_fen": done.clawback_fen,
            "shortfall_fen": done.shortfall_fen,
            "paid_fen": done.paid_fen,
            "balance": done.balance.as_json(),
        }
    return web.json_response(answer)


async def post_adjustment(request: web.Request) -> web.Response:
    """A manual correction with its reason, on the ledger under the user's name."""
    principal(request).require("stored_value.write")
    body = await read_body(request, AdjustIn)
    async with request.app[DB].session() as session, session.begin():
        entry = await adjust(
            session,
            request.match_info["member_id"],
            body.principal_delta_fen,
            body.bonus_delta_fen,
            actor=actor(request),
            reason=body.reason,
        )
        answer = entry_json(entry)
    return web.json_response(answer, status=201)


async def get_rules(request: web.Request) -> web.Response:
    """The chain's bonus tiers and spending order."""
    principal(request).require("stored_value.read")
    async with request.app[DB].session() as session:
        rules = await load_rules(session)
    return web.json_response(text=rules.model_dump_json())


async def put_rules(request: web.Request) -> web.Response:
    """Replace the chain's bonus tiers and spending order."""
    principal(request).require("stored_value.write")
    rules = await read_body(request, BonusRules)
    async with request.app[DB].session() as session, session.begin():
        await save_rules(session, rules, actor=actor(request))
    return web.json_response(text=rules.model_dump_json())


async def get_liability(request: web.Request) -> web.Response:
    """`?day=YYYY-MM-DD`: owed to members at the end of that business day, and its movements."""
    who = principal(request)
    who.require("stored_value.read")
    raw = request.query.get("day")
    if raw is None:
        raise bad_query("day is required, like 2026-11-23 (an Asia/Shanghai business day)")
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        raise bad_query(f"day must be a date like 2026-11-23, got {raw!r}") from None
    async with request.app[DB].session() as session:
        report = await liability_report(session, day, stores=who.stores)
    return web.json_response(report)


async def get_flags(request: web.Request) -> web.Response:
    """Reconciliation flags in the caller's stores: `?resolved=false` (default), `true` or `all`."""
    who = principal(request)
    who.require("stored_value.read")
    wanted = request.query.get("resolved", "false")
    choices: dict[str, bool | None] = {"false": False, "true": True, "all": None}
    if wanted not in choices:
        raise bad_query("resolved must be false, true or all")
    store = request.query.get("store")
    stores: Any = who.stores
    if store is not None:
        who.require("stored_value.read", store=store)
        stores = [store]
    async with request.app[DB].session() as session:
        rows = await list_flags(session, resolved=choices[wanted], stores=stores)
    return web.json_response({"items": [flag_json(r) for r in rows]})


async def post_flag_resolution(request: web.Request) -> web.Response:
    """Close a flag, saying what was done (an adjustment, cash collected, …)."""
    principal(request).require("stored_value.write")
    body = await read_body(request, ReasonIn)
    raw = request.match_info["flag_id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
        raise bad_query(f"flag id must be a number, got {raw!r}")
    async with request.app[DB].session() as session, session.begin():
        flag = await resolve_flag(session, int(raw), actor=actor(request), resolution=body.reason)
        answer = flag_json(flag)
    return web.json_response(answer)


def add_routes(app: web.Application) -> None:
    """Register the stored-value routes."""
    app.router.add_get("/api/v1/members/{member_id}/stored-value", get_account)
    app.router.add_get("/api/v1/members/{member_id}/stored-value/ledger", get_ledger)
    app.router.add_post("/api/v1/members/{member_id}/stored-value/topups", post_topup)
    app.router.add_post("/api/v1/members/{member_id}/stored-value/adjustments", post_adjustment)
    app.router.add_post("/api/v1/stored-value/topups/{topup_id}/refund", post_topup_refund)
    app.router.add_get("/api/v1/stored-value/rules", get_rules)
    app.router.add_put("/api/v1/stored-value/rules", put_rules)
    app.router.add_get("/api/v1/stored-value/liability", get_liability)
    app.router.add_get("/api/v1/stored-value/flags", get_flags)
    app.router.add_post("/api/v1/stored-value/flags/{flag_id}/resolve", post_flag_resolution)

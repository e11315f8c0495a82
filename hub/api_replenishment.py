"""Replenishment, batches and expiry in the head-office API.

Rules and lists need `replenishment.read` / `replenishment.write` at the store; the chain-wide
list covers the stores in the caller's scope. Lots, picks and near-expiry facts need
`stock.read` at the store. Turning a suggested transfer into a draft needs `transfers.write`
at either store. Quantities are decimal strings, as in the stock routes.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from hub.api import DB, actor, bad_query, principal, query_int, read_body
from hub.api_stock import Qty
from hub.batches import batch_json, batches_left, fefo_pick, near_expiry, near_expiry_fact
from hub.db import AsyncSession
from hub.errors import NotFound, PermissionDenied
from hub.models import Store
from hub.purchasing_tables import ReplenishmentRule
from hub.replenishment import (
    DEFAULT_WINDOW_DAYS,
    RuleIn,
    delete_rule,
    line_json,
    list_rules,
    replenishment_list,
    rule_json,
    set_rule,
    store_alerts,
    suggestion_to_transfer,
)
from hub.stock import StockError, format_milli, parse_qty
from hub.transfers_views import transfer_json
from protocol import validate_store_id

__all__ = ["add_routes", "store_today"]

_MAX_PAGE = 500


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class RuleBody(_In):
    """`min` and `max`, or `cover_days` (days of sales to keep on top of lead time and safety days)."""

    min: Qty | None = None
    max: Qty | None = None
    cover_days: int | None = Field(None, ge=1, le=366)
    safety_days: int = Field(0, ge=0, le=366)
    lead_time_days: int = Field(0, ge=0, le=366)
    order_multiple: Qty = 1000


class FromStoreIn(_In):
    """The store to take the suggested stock from."""

    from_store: str = Field(min_length=1, max_length=32)


def _store(request: web.Request, permission: str) -> str:
    store = request.match_info["store"]
    principal(request).require(permission, store=store)
    return store


def _flag(request: web.Request, name: str, default: bool) -> bool:
    raw = request.query.get(name, "true" if default else "false")
    if raw not in {"true", "false"}:
        raise bad_query(f"{name} must be true or false")
    return raw == "true"


async def store_today(session: AsyncSession, store: str) -> date:
    """The calendar date at the store now (its own time zone): expiry dates are local days."""
    zone = await session.scalar(select(Store.timezone).where(Store.id == store))
    if zone is None:
        raise NotFound(f"unknown store '{store}'")
    return datetime.now(ZoneInfo(zone)).date()


def _page(request: web.Request) -> tuple[int, int]:
    return max(1, query_int(request, "limit", 100, 0, _MAX_PAGE)), query_int(request, "offset", 0, 0, 10**9)


async def get_rules(request: web.Request) -> web.Response:
    """A store's replenishment rules by SKU ("*" is the store's default)."""
    store = _store(request, "replenishment.read")
    limit, offset = _page(request)
    async with request.app[DB].session() as session:
        rows, more = await list_rules(session, store, limit=limit, offset=offset)
    return web.json_response(
        {"items": [rule_json(r) for r in rows], "next": offset + limit if more else None}
    )


async def put_rule(request: web.Request) -> web.Response:
    """Set the rule of one SKU, or with sku "*" the store's default."""
    store = _store(request, "replenishment.write")
    body = await read_body(request, RuleBody)
    rule = RuleIn(
        body.min, body.max, body.cover_days, body.safety_days, body.lead_time_days, body.order_multiple
    )
    async with request.app[DB].session() as session, session.begin():
        row = await set_rule(session, store, request.match_info["sku"], rule, actor=actor(request))
        answer = rule_json(row)
    return web.json_response(answer)


async def delete_rule_route(request: web.Request) -> web.Response:
    """Drop a rule."""
    store = _store(request, "replenishment.write")
    async with request.app[DB].session() as session, session.begin():
        await delete_rule(session, store, request.match_info["sku"])
    return web.Response(status=204)


def _window(request: web.Request) -> int:
    return query_int(request, "window_days", DEFAULT_WINDOW_DAYS, 1, 366)


async def get_store_list(request: web.Request) -> web.Response:
    """The store's replenishment list: `?all=true` every SKU under a rule, `?transfers=false` buying only."""
    store = _store(request, "replenishment.read")
    limit, offset = _page(request)
    async with request.app[DB].session() as session:
        lines = await replenishment_list(
            session,
            store,
            window_days=_window(request),
            transfers=_flag(request, "transfers", True),
            everything=_flag(request, "all", False),
        )
    page = lines[offset : offset + limit]
    more = len(lines) > offset + limit
    return web.json_response(
        {"store": store, "items": [line_json(x) for x in page], "next": offset + limit if more else None}
    )


async def get_chain_list(request: web.Request) -> web.Response:
    """Head office: the lists of every store in scope with rules (or `?store=`), and totals by SKU."""
    who = principal(request)
    who.require("replenishment.read")
    limit, offset = _page(request)
    window = _window(request)
    only = request.query.get("store") or None
    if only is not None:
        who.require("replenishment.read", store=only)
    async with request.app[DB].session() as session:
        query = select(ReplenishmentRule.store).distinct().order_by(ReplenishmentRule.store)
        stores = [s for s in (await session.scalars(query)).all() if who.can_see(s) and only in {None, s}]
        lines = [x for s in stores for x in await replenishment_list(session, s, window_days=window)]
    totals: dict[str, list[int]] = {}
    for line in lines:
        total = totals.setdefault(line.sku, [0, 0])
        total[0] += sum(q for _, q in line.transfers)
        total[1] += line.buy_milli
    page = lines[offset : offset + limit]
    return web.json_response(
        {
            "items": [line_json(x) for x in page],
            "next": offset + limit if len(lines) > offset + limit else None,
            "totals": [
                {"sku": sku, "transfer": format_milli(t), "buy": format_milli(b)}
                for sku, (t, b) in sorted(totals.items())
            ],
        }
    )


async def get_alerts(request: web.Request) -> web.Response:
    """Below-safety SKUs and slow movers (on-hand, no sale in `slow_days`, default 30)."""
    store = _store(request, "replenishment.read")
    slow_days = query_int(request, "slow_days", 30, 1, 366)
    async with request.app[DB].session() as session:
        alerts = await store_alerts(session, store, slow_days=slow_days, window_days=_window(request))
    return web.json_response(
        {
            "store": store,
            "below_safety": [line_json(x) for x in alerts.below_safety],
            "slow_movers": [{"sku": s, "on_hand": format_milli(q)} for s, q in alerts.slow_movers],
            "slow_days": slow_days,
        }
    )


async def post_suggested_transfer(request: web.Request) -> web.Response:
    """A draft transfer to this store of everything its list suggests taking from `from_store`."""
    store = request.match_info["store"]
    body = await read_body(request, FromStoreIn)
    try:
        validate_store_id(body.from_store)
    except ValueError as err:
        raise bad_query(str(err)) from None
    who = principal(request)
    who.require("transfers.write")
    if not (who.can_see(store) or who.can_see(body.from_store)):
        raise PermissionDenied(f"user '{who.name}' has access to neither '{store}' nor '{body.from_store}'")
    async with request.app[DB].session() as session, session.begin():
        view = await suggestion_to_transfer(session, store, body.from_store, actor=actor(request))
        answer = transfer_json(view)
    return web.json_response(answer, status=201)


async def get_batches(request: web.Request) -> web.Response:
    """A store's lots with what is left of each (FEFO): `?sku=` one SKU, `?all=true` also used-up lots."""
    store = _store(request, "stock.read")
    limit, offset = _page(request)
    async with request.app[DB].session() as session:
        today = await store_today(session, store)
        rows = await batches_left(
            session, store, sku=request.query.get("sku") or None, only_left=not _flag(request, "all", False)
        )
    page = rows[offset : offset + limit]
    return web.json_response(
        {
            "store": store,
            "today": today.isoformat(),
            "items": [batch_json(b, today) for b in page],
            "next": offset + limit if len(rows) > offset + limit else None,
        }
    )


async def get_near_expiry(request: web.Request) -> web.Response:
    """Near-expiry facts `{sku, lot, expires_on, qty_milli}` for lots expiring within `?days=` (default 3)."""
    store = _store(request, "stock.read")
    days = query_int(request, "days", 3, 0, 366)
    async with request.app[DB].session() as session:
        today = await store_today(session, store)
        rows = await near_expiry(
            session, store, today=today, within_days=days, include_expired=_flag(request, "expired", False)
        )
    return web.json_response(
        {"store": store, "today": today.isoformat(), "items": [near_expiry_fact(b) for b in rows]}
    )


async def get_fefo(request: web.Request) -> web.Response:
    """Which lots to take `?qty=` from, earliest expiry first (expired lots never)."""
    store = _store(request, "stock.read")
    try:
        qty = parse_qty(request.query.get("qty", ""))
    except StockError as err:
        raise bad_query(str(err)) from None
    async with request.app[DB].session() as session:
        today = await store_today(session, store)
        picks, short = await fefo_pick(session, store, request.match_info["sku"], qty, today=today)
    items: list[dict[str, Any]] = [
        {
            "lot": p.lot,
            "expires_on": p.expires_on.isoformat() if p.expires_on else None,
            "qty": format_milli(p.qty_milli),
        }
        for p in picks
    ]
    return web.json_response(
        {"store": store, "sku": request.match_info["sku"], "picks": items, "short": format_milli(short)}
    )


def add_routes(app: web.Application) -> None:
    """Register the replenishment, batch and expiry routes."""
    app.router.add_get("/api/v1/stores/{store}/replenishment", get_store_list)
    app.router.add_get("/api/v1/stores/{store}/replenishment/rules", get_rules)
    app.router.add_put("/api/v1/stores/{store}/replenishment/rules/{sku}", put_rule)
    app.router.add_delete("/api/v1/stores/{store}/replenishment/rules/{sku}", delete_rule_route)
    app.router.add_post("/api/v1/stores/{store}/replenishment/transfers", post_suggested_transfer)
    app.router.add_get("/api/v1/stores/{store}/stock-alerts", get_alerts)
    app.router.add_get("/api/v1/replenishment", get_chain_list)
    app.router.add_get("/api/v1/stores/{store}/batches", get_batches)
    app.router.add_get("/api/v1/stores/{store}/near-expiry", get_near_expiry)
    app.router.add_get("/api/v1/stores/{store}/stock/{sku}/fefo", get_fefo)

"""Stocktakes (盘点) in the head-office API, and the store stock reports the hub refused.

Starting, entering counts, submitting and cancelling need `stocktakes.write` for the
store (a store manager for their own store); posting the variances needs
`stocktakes.approve` (owner, regional manager) and a second person (not whoever started
the count). Each call is one transaction: a refusal (403, 404, 409 with the reason, 422
for a malformed body) writes nothing.
"""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select

from hub.api import DB, actor, bad_query, principal, query_int, read_body
from hub.api_stock import Qty
from hub.stocktake_tables import StockReport, Stocktake, StocktakeScope, StocktakeState
from hub.stocktakes import (
    CountIn,
    cancel_stocktake,
    load_stocktake,
    post_stocktake,
    record_counts,
    start_stocktake,
    stocktake_json,
    submit_stocktake,
)
from protocol import UtcDatetime, utcnow

__all__ = ["add_routes"]

_MAX_PAGE = 500


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class StocktakeIn(_In):
    """Start a count: the whole store, a catalog category (its path), or listed SKUs."""

    scope: StocktakeScope
    category: str | None = Field(None, min_length=1, max_length=400)
    skus: list[str] | None = Field(None, min_length=1, max_length=500)
    note: str = Field("", max_length=500)

    @model_validator(mode="after")
    def _matches_scope(self) -> StocktakeIn:
        if (self.scope is StocktakeScope.CATEGORY) != (self.category is not None):
            raise ValueError("give category with scope 'category', and only then")
        if (self.scope is StocktakeScope.SKUS) != (self.skus is not None):
            raise ValueError("give skus with scope 'skus', and only then")
        return self


class CountLineIn(_In):
    """One SKU as counted; `counted_at` defaults to now."""

    sku: str = Field(min_length=1, max_length=64)
    qty: Qty
    counted_at: UtcDatetime | None = None


class CountsIn(_In):
    """Counts entered at head office (a paper count typed in, a correction)."""

    lines: list[CountLineIn] = Field(min_length=1, max_length=1000)


class PostIn(_In):
    """Approve and post: uncounted SKUs in scope are skipped or taken as none on the shelf."""

    uncounted: Literal["skip", "zero"] = "skip"


class ReasonIn(_In):
    """Why the count is cancelled."""

    reason: str = Field(min_length=1, max_length=500)


async def _load_checked(request: web.Request, session: Any, permission: str) -> Stocktake:
    view = await load_stocktake(session, request.match_info["stocktake_id"])
    principal(request).require(permission, store=view.stocktake.store)
    return view.stocktake


async def post_stocktake_start(request: web.Request) -> web.Response:
    """Start a count at a store: snapshot now, the store gets it as a task."""
    store = request.match_info["store"]
    principal(request).require("stocktakes.write", store=store)
    body = await read_body(request, StocktakeIn)
    async with request.app[DB].session() as session, session.begin():
        view = await start_stocktake(
            session,
            store,
            body.scope,
            actor=actor(request),
            category=body.category,
            skus=body.skus,
            note=body.note,
        )
        answer = stocktake_json(view)
    return web.json_response(answer, status=201)


async def get_stocktakes(request: web.Request) -> web.Response:
    """A store's counts, newest first; `?state=` one state."""
    store = request.match_info["store"]
    principal(request).require("stocktakes.read", store=store)
    raw = request.query.get("state") or None
    try:
        state = StocktakeState(raw) if raw else None
    except ValueError:
        raise bad_query(f"state must be one of {', '.join(s.value for s in StocktakeState)}") from None
    limit = max(1, query_int(request, "limit", 100, 0, _MAX_PAGE))
    offset = query_int(request, "offset", 0, 0, 10**9)
    query = select(Stocktake).where(Stocktake.store == store)
    if state is not None:
        query = query.where(Stocktake.state == state.value)
    async with request.app[DB].session() as session:
        rows = (
            await session.scalars(query.order_by(Stocktake.id.desc()).limit(limit + 1).offset(offset))
        ).all()
    items = [
        {
            "id": r.id,
            "store": r.store,
            "scope": r.scope,
            "category": r.category,
            "state": r.state,
            "created_by": r.created_by,
            "created_at": r.created_at.isoformat(),
            "posted_by": r.posted_by,
        }
        for r in rows[:limit]
    ]
    return web.json_response({"items": items, "next": offset + limit if len(rows) > limit else None})


async def get_stocktake(request: web.Request) -> web.Response:
    """One count with its variance report (quantity and cost value per SKU)."""
    async with request.app[DB].session() as session:
        view = await load_stocktake(session, request.match_info["stocktake_id"])
        principal(request).require("stocktakes.read", store=view.stocktake.store)
        answer = stocktake_json(view)
    return web.json_response(answer)


async def post_counts(request: web.Request) -> web.Response:
    """Enter counts at head office; the latest count of a SKU wins."""
    body = await read_body(request, CountsIn)
    now = utcnow()
    counts = [CountIn(x.sku, x.qty, x.counted_at or now) for x in body.lines]
    async with request.app[DB].session() as session, session.begin():
        row = await _load_checked(request, session, "stocktakes.write")
        await record_counts(session, row.id, counts, actor=actor(request))
        answer = stocktake_json(await load_stocktake(session, row.id))
    return web.json_response(answer)


async def post_submit(request: web.Request) -> web.Response:
    """Counting is done; the count waits for approval."""
    async with request.app[DB].session() as session, session.begin():
        row = await _load_checked(request, session, "stocktakes.write")
        await submit_stocktake(session, row.id)
        answer = stocktake_json(await load_stocktake(session, row.id))
    return web.json_response(answer)


async def post_post(request: web.Request) -> web.Response:
    """Approve: the variances go into the ledger as `stocktake` movements, once."""
    body = await read_body(request, PostIn)
    async with request.app[DB].session() as session, session.begin():
        row = await _load_checked(request, session, "stocktakes.approve")
        view = await post_stocktake(session, row.id, actor=actor(request), uncounted=body.uncounted)
        answer = stocktake_json(view)
    return web.json_response(answer)


async def post_cancel(request: web.Request) -> web.Response:
    """Cancel a count that was not posted; the store's task is withdrawn."""
    body = await read_body(request, ReasonIn)
    async with request.app[DB].session() as session, session.begin():
        row = await _load_checked(request, session, "stocktakes.write")
        await cancel_stocktake(session, row.id, actor=actor(request), reason=body.reason)
        answer = stocktake_json(await load_stocktake(session, row.id))
    return web.json_response(answer)


def _report_json(row: StockReport) -> dict[str, Any]:
    return {
        "id": row.id,
        "store": row.store,
        "kind": row.kind,
        "ref": row.ref,
        "outcome": row.outcome,
        "detail": row.detail,
        "received_at": row.received_at.isoformat(),
    }


async def get_stock_reports(request: web.Request) -> web.Response:
    """Counts and transfer scans the store reported; `?outcome=refused` the ones the hub refused."""
    store = request.match_info["store"]
    principal(request).require("stock.read", store=store)
    outcome = request.query.get("outcome") or None
    if outcome not in (None, "applied", "refused"):
        raise bad_query("outcome must be applied or refused")
    limit = max(1, query_int(request, "limit", 100, 0, _MAX_PAGE))
    query = select(StockReport).where(StockReport.store == store)
    if outcome is not None:
        query = query.where(StockReport.outcome == outcome)
    async with request.app[DB].session() as session:
        rows = (await session.scalars(query.order_by(StockReport.received_at.desc()).limit(limit))).all()
    return web.json_response({"items": [_report_json(r) for r in rows]})


def add_routes(app: web.Application) -> None:
    """Register the stocktake routes."""
    app.router.add_post("/api/v1/stores/{store}/stocktakes", post_stocktake_start)
    app.router.add_get("/api/v1/stores/{store}/stocktakes", get_stocktakes)
    app.router.add_get("/api/v1/stores/{store}/stock-reports", get_stock_reports)
    app.router.add_get("/api/v1/stocktakes/{stocktake_id}", get_stocktake)
    app.router.add_post("/api/v1/stocktakes/{stocktake_id}/counts", post_counts)
    app.router.add_post("/api/v1/stocktakes/{stocktake_id}/submit", post_submit)
    app.router.add_post("/api/v1/stocktakes/{stocktake_id}/post", post_post)
    app.router.add_post("/api/v1/stocktakes/{stocktake_id}/cancel", post_cancel)

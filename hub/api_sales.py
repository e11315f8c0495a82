"""Orders and sales reports of the head-office API, scoped to the caller's stores."""

from __future__ import annotations

from datetime import date
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Select, func, select

from hub.api import DB, bad_query, principal, query_int
from hub.auth import Principal
from hub.models import HubOrder, HubRefund, Reconciliation

__all__ = ["add_routes"]

MAX_PAGE = 500
Q = TypeVar("Q", bound=Select)


class OrderItem(BaseModel):
    """One order in `GET /api/v1/orders`."""

    model_config = ConfigDict(frozen=True)

    id: str
    store: str
    number: int
    business_day: date
    total_fen: int
    refunded_fen: int
    status: str


class OrderPage(BaseModel):
    """A page of orders; pass `next` as `offset` for the following page."""

    items: list[OrderItem]
    next: int | None


def _day(request: web.Request, name: str) -> date | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise bad_query(f"{name} must be a date like 2026-11-23, got {raw!r}") from None


def _scope(query: Q, column: Any, who: Principal, store: str | None) -> Q:
    """Limit a query to one store (if asked and allowed) and to the caller's stores."""
    if store is not None:
        who.require("sales.read", store=store)
        return query.where(column == store)
    who.require("sales.read")
    if who.stores is not None:
        query = query.where(column.in_(who.stores))
    return query


def _days(query: Q, column: Any, first: date | None, last: date | None) -> Q:
    if first is not None:
        query = query.where(column >= first)
    if last is not None:
        query = query.where(column <= last)
    return query


async def list_orders(request: web.Request) -> web.Response:
    """`GET /api/v1/orders?store=&from=&to=&limit=&offset=`, newest business day first."""
    who = principal(request)
    store = request.query.get("store")
    first, last = _day(request, "from"), _day(request, "to")
    limit = query_int(request, "limit", 100, 1, MAX_PAGE)
    offset = query_int(request, "offset", 0, 0, 10**9)
    refunded = (
        select(func.coalesce(func.sum(HubRefund.total_fen), 0))
        .where(HubRefund.order_id == HubOrder.id)
        .scalar_subquery()
    )
    query = select(HubOrder, refunded)
    query = _days(_scope(query, HubOrder.store, who, store), HubOrder.business_day, first, last)
    query = query.order_by(HubOrder.business_day.desc(), HubOrder.store, HubOrder.number.desc())
    async with request.app[DB].session() as session:
        rows = (await session.execute(query.limit(limit + 1).offset(offset))).all()
    items = [
        OrderItem(
            id=o.id,
            store=o.store,
            number=o.number,
            business_day=o.business_day,
            total_fen=o.total_fen,
            refunded_fen=int(r),
            status=o.status,
        )
        for o, r in rows[:limit]
    ]
    page = OrderPage(items=items, next=offset + limit if len(rows) > limit else None)
    return web.json_response(text=page.model_dump_json())


async def sales_report(request: web.Request) -> web.Response:
    """`GET /api/v1/reports/sales?store=&from=&to=`: orders, gross, refunds and net in fen."""
    who = principal(request)
    store = request.query.get("store")
    first, last = _day(request, "from"), _day(request, "to")
    sold = select(func.count(HubOrder.id), func.coalesce(func.sum(HubOrder.total_fen), 0)).where(
        HubOrder.status == "paid"
    )
    sold = _days(_scope(sold, HubOrder.store, who, store), HubOrder.business_day, first, last)
    back = select(func.coalesce(func.sum(HubRefund.total_fen), 0))
    back = _days(_scope(back, HubRefund.store, who, store), HubRefund.business_day, first, last)
    async with request.app[DB].session() as session:
        row = (await session.execute(sold)).one()
        count, gross = int(row[0]), int(row[1])
        refunds = int((await session.execute(back)).scalar_one())
    report = {
        "store": store,
        "from": first.isoformat() if first else None,
        "to": last.isoformat() if last else None,
        "orders": count,
        "gross_fen": gross,
        "refunds_fen": refunds,
        "net_fen": gross - refunds,
    }
    return web.json_response(report)


async def reconciliation(request: web.Request) -> web.Response:
    """Events that arrived twice with different bodies, waiting for a decision."""
    who = principal(request)
    query = _scope(select(Reconciliation), Reconciliation.store, who, request.query.get("store"))
    query = query.where(Reconciliation.resolved.is_(False)).order_by(Reconciliation.id).limit(MAX_PAGE)
    async with request.app[DB].session() as session:
        rows = (await session.scalars(query)).all()
    items = [
        {
            "id": r.id,
            "store": r.store,
            "epoch": r.epoch,
            "seq": r.seq,
            "kind": r.kind,
            "key": r.key,
            "existing_hash": r.existing_hash,
            "incoming": r.incoming,
            "received_at": r.received_at.isoformat().replace("+00:00", "Z"),
        }
        for r in rows
    ]
    return web.json_response({"items": items})


def add_routes(app: web.Application) -> None:
    """Register the sales routes."""
    app.router.add_get("/api/v1/orders", list_orders)
    app.router.add_get("/api/v1/reports/sales", sales_report)
    app.router.add_get("/api/v1/reconciliation", reconciliation)

"""A member's consumption preferences: what they buy most and when they usually come.

Computed on demand for one member from their `member_orders` facts (bounded to the most
recent orders of the window), so nothing has to be kept up to date for 200,000 members.

Order lines carry no category on the wire; a line's category is its SKU's category in the
store's newest catalog snapshot (as points' category multipliers find it). Lines whose SKU
the catalog does not know count for their SKU only. Spend per category or SKU is the
lines' totals as sold: a later refund of the order is not spread back over its lines.
The visit time is the order's closing time in the store's own timezone.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from hub.db import AsyncSession
from hub.member_facts import MemberOrder
from hub.models import Store, StoreSnapshot

__all__ = ["HOUR_BUCKETS", "MAX_PREF_ORDERS", "Preferences", "preferences"]

MAX_PREF_ORDERS = 5000  # the newest orders of the window; years of a daily regular
_TOP = 5
# (name, first hour, first hour after): local hours of the day, 21:00-05:00 is "night".
HOUR_BUCKETS = (
    ("early_morning", 5, 8),
    ("morning", 8, 11),
    ("lunch", 11, 14),
    ("afternoon", 14, 17),
    ("evening", 17, 21),
    ("night", 21, 29),
)
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _bucket(hour: int) -> str:
    for name, first, end in HOUR_BUCKETS:
        if first <= hour < end or first <= hour + 24 < end:
            return name
    raise AssertionError(hour)  # pragma: no cover - the buckets cover 0-23


@dataclass(frozen=True)
class Preferences:
    """Top categories and SKUs by spend, and the usual visit time, over `orders` orders."""

    window_days: int
    as_of: date
    orders: int
    top_categories: list[dict[str, Any]]
    top_skus: list[dict[str, Any]]
    hours: dict[str, int]  # bucket -> visits
    usual_time: str | None
    weekdays: dict[str, int]  # monday … sunday -> visits (by business day)
    usual_weekday: str | None

    def as_json(self) -> dict[str, Any]:
        """The JSON the API answers."""
        return {
            "window_days": self.window_days,
            "as_of": self.as_of.isoformat(),
            "orders": self.orders,
            "top_categories": self.top_categories,
            "top_skus": self.top_skus,
            "hours": self.hours,
            "usual_time": self.usual_time,
            "weekdays": self.weekdays,
            "usual_weekday": self.usual_weekday,
        }


async def _categories(session: AsyncSession, stores: set[str]) -> dict[str, dict[str, str]]:
    """store -> {sku: category} from each store's newest catalog snapshot."""
    rows = await session.execute(
        select(StoreSnapshot.store, StoreSnapshot.body).where(
            StoreSnapshot.store.in_(stores), StoreSnapshot.kind == "catalog"
        )
    )
    found: dict[str, dict[str, str]] = {}
    for store, body in rows.all():
        products = body.get("products") if isinstance(body, dict) else None
        found[store] = {
            str(p["sku"]): str(p["category"])
            for p in (products if isinstance(products, list) else [])
            if isinstance(p, dict) and p.get("sku") is not None and p.get("category")
        }
    return found


def _usual(counts: Counter[str], order: tuple[str, ...]) -> str | None:
    """The most frequent key; a tie goes to the one earliest in `order`."""
    if not counts:
        return None
    return max(order, key=lambda k: (counts[k], -order.index(k)))


def _top(spend: Counter[str], orders: Counter[str], key: str) -> list[dict[str, Any]]:
    ranked = sorted(spend, key=lambda k: (-spend[k], k))[:_TOP]
    return [{key: k, "spend_fen": spend[k], "orders": orders[k]} for k in ranked]


async def preferences(session: AsyncSession, member_id: str, *, as_of: date, window_days: int) -> Preferences:
    """The member's preferences over the business days after `as_of - window_days` through `as_of`."""
    rows = (
        await session.execute(
            select(MemberOrder.store, MemberOrder.business_day, MemberOrder.closed_at, MemberOrder.items)
            .where(
                MemberOrder.member_id == member_id,
                MemberOrder.business_day > as_of - timedelta(days=window_days),
                MemberOrder.business_day <= as_of,
            )
            .order_by(MemberOrder.business_day.desc())
            .limit(MAX_PREF_ORDERS)
        )
    ).all()
    stores = {row.store for row in rows}
    catalogs = await _categories(session, stores)
    zones = dict((await session.execute(select(Store.id, Store.timezone).where(Store.id.in_(stores)))).all())
    cat_spend, cat_orders, hours = Counter[str](), Counter[str](), Counter[str]()
    sku_spend, sku_orders, weekdays = Counter[str](), Counter[str](), Counter[str]()
    for store, day, closed_at, items in rows:
        categories = catalogs.get(store, {})
        seen_cats, seen_skus = set(), set()
        for line in items or ():
            sku, total = str(line.get("sku", "")), int(line.get("total_fen", 0))
            if sku:
                sku_spend[sku] += total
                seen_skus.add(sku)
            category = categories.get(sku)
            if category:
                cat_spend[category] += total
                seen_cats.add(category)
        cat_orders.update(seen_cats)
        sku_orders.update(seen_skus)
        weekdays[_WEEKDAYS[day.weekday()]] += 1
        if closed_at is not None:
            local = closed_at.astimezone(ZoneInfo(zones.get(store) or "Asia/Shanghai"))
            hours[_bucket(local.hour)] += 1
    buckets = tuple(name for name, _, _ in HOUR_BUCKETS)
    return Preferences(
        window_days=window_days,
        as_of=as_of,
        orders=len(rows),
        top_categories=_top(cat_spend, cat_orders, "category"),
        top_skus=_top(sku_spend, sku_orders, "sku"),
        hours={name: hours[name] for name in buckets},
        usual_time=_usual(hours, buckets),
        weekdays={name: weekdays[name] for name in _WEEKDAYS},
        usual_weekday=_usual(weekdays, _WEEKDAYS),
    )

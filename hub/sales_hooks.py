"""What the hub derives from a store's sales (points, stock), applied once per order or refund.

Ingest calls `apply_new_sales` inside the transaction that first inserts an order or refund,
so a sale delivered three times, or made offline and synced days later, counts once. A
domain that derives from sales adds its function to `_LISTENERS`; a listener that raises
rolls back the whole batch, which the store then re-sends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from hub.coupon_redeem import coupons_from_sales
from hub.db import AsyncSession
from hub.member_facts import record_member_sales
from hub.passes_sales import passes_from_sales
from hub.points_sales import points_from_sales
from hub.referral_sales import referrals_from_sales
from hub.stock_sales import stock_from_sales
from hub.stored_value_sales import apply_stored_value_sales

__all__ = ["SaleListener", "apply_new_sales"]

# (session, store, new order bodies, new refund bodies); bodies are the store's JSON documents.
SaleListener = Callable[[AsyncSession, str, list[dict[str, Any]], list[dict[str, Any]]], Awaitable[None]]

_LISTENERS: tuple[SaleListener, ...] = (
    record_member_sales,
    passes_from_sales,
    apply_stored_value_sales,
    points_from_sales,
    stock_from_sales,
    coupons_from_sales,
    referrals_from_sales,
)


async def apply_new_sales(
    session: AsyncSession, store: str, orders: list[dict[str, Any]], refunds: list[dict[str, Any]]
) -> None:
    """Run every listener over the orders and refunds this batch inserted for the first time."""
    for listener in _LISTENERS:
        await listener(session, store, orders, refunds)

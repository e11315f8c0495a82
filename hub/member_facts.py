"""Member-sales facts: one narrow row per paid order of a member, for RFM, segments and preferences.

Filled by a sale listener inside ingest's batch transaction, so each order and refund
counts exactly once however often the store re-sends it. The table holds only what
recency/frequency/monetary scans and preference queries read; the full order stays in
`orders.doc`.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Date, Index, String, func, insert, select, update
from sqlalchemy.orm import Mapped, mapped_column

from hub.db import AsyncSession
from hub.models import Base, HubRefund

__all__ = ["MemberOrder", "move_member_orders", "record_member_sales"]

# A merge chain longer than this is a bug somewhere; stop following rather than loop.
_MAX_MERGE_DEPTH = 8


class MemberOrder(Base):
    """A member's paid order: net spend is `total_fen - refunded_fen`.

    `member_id` has no foreign key on purpose: a till may sell offline to a member id the
    hub cannot resolve, and one such order must not make the whole batch fail forever.
    Indexes: (member_id, business_day) for one member's history and per-member grouping,
    (business_day) for a window scan over the whole chain, (store, business_day) for one store.
    """

    __tablename__ = "member_orders"
    __table_args__ = (
        Index("ix_member_orders_member_day", "member_id", "business_day"),
        Index("ix_member_orders_day", "business_day"),
        Index("ix_member_orders_store_day", "store", "business_day"),
    )

    order_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    member_id: Mapped[str] = mapped_column(String(36))
    store: Mapped[str] = mapped_column(String(32))
    business_day: Mapped[date] = mapped_column(Date)
    closed_at: Mapped[datetime | None]
    total_fen: Mapped[int] = mapped_column(BigInteger)
    refunded_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    # [{"sku", "qty" (exact decimal string), "total_fen"}]: what preferences are made of
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSON)


def _items(order: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "sku": str(line.get("sku", "")),
            "qty": str(line.get("qty", "")),
            "total_fen": int(line["total_fen"]),
        }
        for line in order.get("lines") or ()
        if isinstance(line, dict) and isinstance(line.get("total_fen"), int)
    ]


async def _survivors(session: AsyncSession, member_ids: set[str]) -> dict[str, str]:
    """Map each id to the member it was (transitively) merged into; unknown ids map to themselves."""
    from hub.members import Member  # noqa: PLC0415 - hub.members lists this module's merge hook

    resolved = {member_id: member_id for member_id in member_ids}
    pending = set(member_ids)
    for _ in range(_MAX_MERGE_DEPTH):
        if not pending:
            break
        rows = await session.execute(
            select(Member.id, Member.merged_into).where(
                Member.id.in_(pending), Member.merged_into.is_not(None)
            )
        )
        step = {member_id: str(into) for member_id, into in rows.all()}
        for start, current in resolved.items():
            if current in step:
                resolved[start] = step[current]
        pending = set(step.values())
    return resolved


async def record_member_sales(
    session: AsyncSession, store: str, orders: list[dict[str, Any]], refunds: list[dict[str, Any]]
) -> None:
    """Sale listener: add new paid member orders, add new refunds to their order's `refunded_fen`.

    A refund can reach the hub before its order (another epoch, a resend): an order row is
    created with the refunds already stored for it, and a refund only updates an order row
    that existed before this batch, so every refund counts once either way.
    """
    paid = [o for o in orders if o.get("status") == "paid" and o.get("member_id")]
    inserted: set[str] = set()
    if paid:
        survivor = await _survivors(session, {str(o["member_id"]) for o in paid})
        ids = [str(o["id"]) for o in paid]
        earlier = await session.execute(
            select(HubRefund.order_id, func.sum(HubRefund.total_fen))
            .where(HubRefund.order_id.in_(ids))
            .group_by(HubRefund.order_id)
        )
        refunded = {order_id: int(total) for order_id, total in earlier.all()}
        rows = [
            {
                "order_id": str(o["id"]),
                "member_id": survivor[str(o["member_id"])],
                "store": store,
                "business_day": date.fromisoformat(str(o["business_day"])),
                "closed_at": datetime.fromisoformat(o["closed_at"]) if o.get("closed_at") else None,
                "total_fen": int(o["total_fen"]),
                "refunded_fen": refunded.get(str(o["id"]), 0),
                "items": _items(o),
            }
            for o in paid
        ]
        await session.execute(insert(MemberOrder), rows)
        inserted.update(ids)
    for body in refunds:
        order_id = str(body["order_id"])
        if order_id in inserted:
            continue
        await session.execute(
            update(MemberOrder)
            .where(MemberOrder.order_id == order_id)
            .values(refunded_fen=MemberOrder.refunded_fen + int(body["refund"]["total_fen"]))
        )


async def move_member_orders(session: AsyncSession, from_id: str, into_id: str) -> None:
    """Merge hook: the duplicate's orders count for the survivor."""
    await session.execute(
        update(MemberOrder).where(MemberOrder.member_id == from_id).values(member_id=into_id)
    )

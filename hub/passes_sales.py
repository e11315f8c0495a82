"""Passes from sales: a paid line of a pass product's SKU issues one pass per unit to the
order's member; a refund of that line revokes them.

Runs as a sale listener inside the ingest transaction, so a sale delivered three times,
or made offline and synced days later, issues its passes once. It never raises for bad
data (that would roll the batch back and the store would re-send it forever): what it
cannot apply becomes a `PassFlag` for head office.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

from sqlalchemy import select

from hub.db import AsyncSession
from hub.errors import NotFound
from hub.members import get_member
from hub.models import HubOrder, HubRefund
from hub.passes import flag, issue_pass
from hub.passes_lifecycle import revoke_pass
from hub.passes_models import Pass, PassProduct

__all__ = ["passes_from_sales"]


def _units(qty: Any) -> int:
    """Whole units of a line quantity ("2", 2, "2.5" → 2); a pass is never split."""
    try:
        return max(int(Fraction(str(qty))), 0)
    except (ValueError, ZeroDivisionError):
        return 0


def _when(order: dict[str, Any], now: datetime) -> datetime:
    """When the pass was bought: the order's close time (an offline sale keeps its date)."""
    raw = order.get("closed_at")
    try:
        ts = datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        ts = None
    return ts if ts is not None and ts.tzinfo is not None else now


def _lines(doc: dict[str, Any]) -> list[dict[str, Any]]:
    lines = doc.get("lines")
    return [line for line in lines if isinstance(line, dict)] if isinstance(lines, list) else []


def _sku(line: dict[str, Any]) -> str:
    sku = line.get("sku")
    return sku if isinstance(sku, str) else ""


async def _products(session: AsyncSession, skus: set[str]) -> dict[str, PassProduct]:
    if not skus:
        return {}
    found = await session.scalars(select(PassProduct).where(PassProduct.sale_sku.in_(skus)))
    return {p.sale_sku: p for p in found.all()}


async def _refunded_before(session: AsyncSession, order_id: str, skip: set[str]) -> Counter[str]:
    """Units per line refunded by refunds ingested earlier (a refund can arrive before its order)."""
    refunded: Counter[str] = Counter()
    docs = await session.scalars(select(HubRefund.doc).where(HubRefund.order_id == order_id))
    for doc in docs.all():
        refund = doc.get("refund") if isinstance(doc, dict) else None
        if not isinstance(refund, dict) or refund.get("id") in skip:
            continue
        for line in _lines(refund):
            refunded[str(line.get("line_id"))] += _units(line.get("qty"))
    return refunded


async def _issue_for_order(
    session: AsyncSession, store: str, order: dict[str, Any], products: dict[str, PassProduct], skip: set[str]
) -> None:
    now = datetime.now(UTC)
    order_id = str(order.get("id"))
    lines = [line for line in _lines(order) if _sku(line) in products]
    if not lines:
        return
    raw_member = order.get("member_id")
    where = {"store": store, "order_id": order_id}
    member_id = None
    if isinstance(raw_member, str) and raw_member:
        try:
            member_id = (await get_member(session, raw_member)).id
        except NotFound:
            flag(
                session,
                "unknown_member",
                now,
                {"member_id": raw_member, "skus": [x["sku"] for x in lines]},
                **where,
            )
            return
    if member_id is None:
        # Sold at the till without a member attached: head office issues it by hand.
        flag(session, "sold_without_member", now, {"skus": [x["sku"] for x in lines]}, **where)
        return
    refunded = await _refunded_before(session, order_id, skip)
    bought = _when(order, now)
    for line in lines:
        product = products[line["sku"]]
        line_id = str(line.get("line_id"))
        units = _units(line.get("qty"))
        total = line.get("total_fen")
        price = total // units if isinstance(total, int) and units else None
        for unit in range(refunded[line_id], units):
            issued = await issue_pass(
                session,
                product,
                member_id,
                issued_at=bought,
                actor=f"sale:{store}",
                store=store,
                order_id=order_id,
                line_id=line_id,
                unit=unit,
                price_fen=price,
            )
            if issued.expires_at is not None and issued.expires_at <= bought:
                detail = {"product_code": product.code, "expires_at": issued.expires_at.isoformat()}
                flag(session, "sold_expired", now, detail, pass_id=issued.id, member_id=member_id, **where)


async def _revoke_for_refund(
    session: AsyncSession, store: str, body: dict[str, Any], products: dict[str, PassProduct]
) -> None:
    now = datetime.now(UTC)
    refund = body.get("refund")
    order_id = str(body.get("order_id"))
    if not isinstance(refund, dict):
        return
    refund_id = str(refund.get("id"))
    order = await session.get(HubOrder, order_id)
    if order is None:
        return  # the order arrives later; issuing then leaves out what this refund took back
    sku_of = {str(line.get("line_id")): _sku(line) for line in _lines(order.doc)}
    for refund_line in _lines(refund):
        line_id = str(refund_line.get("line_id"))
        if sku_of.get(line_id, "") not in products:
            continue
        units = _units(refund_line.get("qty"))
        held = await session.scalars(
            select(Pass)
            .where(Pass.order_id == order_id, Pass.line_id == line_id, Pass.status != "revoked")
            .order_by(Pass.used, Pass.unit)
        )
        passes = list(held.all())[:units]
        amount = refund_line.get("amount_fen")
        per_unit = amount // units if isinstance(amount, int) and units else None
        where = {"store": store, "order_id": order_id, "refund_id": refund_id}
        if len(passes) < units:
            detail = {"line_id": line_id, "units": units, "passes_found": len(passes)}
            flag(session, "refund_without_pass", now, detail, **where)
        for p in passes:
            used, total_uses, member = p.used, p.total_uses, p.member_id
            await revoke_pass(
                session,
                p.id,
                actor=f"refund:{store}",
                reason="refunded at the till",
                now=now,
                store=store,
                order_id=order_id,
                refund_id=refund_id,
            )
            if used > 0:
                detail = _refund_detail(p, used, total_uses, per_unit, now)
                flag(session, "refund_after_use", now, detail, pass_id=p.id, member_id=member, **where)


def _refund_detail(
    p: Pass, used: int, total_uses: int | None, refunded_fen: int | None, now: datetime
) -> dict[str, Any]:
    """What head office needs to judge a refund of a pass that was already used."""
    detail: dict[str, Any] = {
        "name": p.name,
        "uses_taken": used,
        "total_uses": total_uses,
        "price_fen": p.price_fen,
        "refunded_fen": refunded_fen,
    }
    if total_uses and p.price_fen is not None:
        # What the unused uses were worth at the price paid, floored to the fen.
        detail["unused_value_fen"] = p.price_fen * (total_uses - used) // total_uses
    else:
        detail["days_held"] = (now - p.issued_at).days
    return detail


async def passes_from_sales(
    session: AsyncSession, store: str, orders: list[dict[str, Any]], refunds: list[dict[str, Any]]
) -> None:
    """Sale listener: issue passes for new paid orders, revoke them for new refunds."""
    skus = {_sku(line) for order in orders for line in _lines(order)}
    refund_orders = {str(r.get("order_id")) for r in refunds}
    if refund_orders:
        docs = await session.scalars(select(HubOrder.doc).where(HubOrder.id.in_(refund_orders)))
        skus |= {_sku(line) for doc in docs.all() for line in _lines(doc)}
    products = await _products(session, skus)
    if not products:
        return
    new_refunds = {str(r["refund"].get("id")) for r in refunds if isinstance(r.get("refund"), dict)}
    for order in orders:
        if order.get("status") == "paid":
            await _issue_for_order(session, store, order, products, new_refunds)
    for body in refunds:
        await _revoke_for_refund(session, store, body, products)

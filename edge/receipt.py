"""The receipt as structured JSON: what the phone renders and the printer driver lays out."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from edge.orders import METHOD_NAMES, Order
from protocol import format_qty, format_yuan, mul_fraction

__all__ = ["receipt"]


def _mask(reference: str | None) -> str | None:
    # A payment reference is enough to look a payment up; show only its tail.
    if not reference:
        return None
    return "*" * max(0, len(reference) - 4) + reference[-4:]


def _local(ts: datetime | None, zone: ZoneInfo) -> str | None:
    return ts.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S") if ts else None


def _member(order: Order) -> str | None:
    """The masked phone and level printed for the member (never the full number)."""
    member = order.member
    if member is None:
        return None
    return " ".join(x for x in (member.phone_masked, member.level_name) if x) or member.id


def _member_saved(order: Order) -> int:
    """What member pricing took off the store/list prices of the lines it priced."""
    saved = 0
    for line in order.lines:
        if line.price_source == "member":
            base = line.store_price_fen if line.store_price_fen is not None else line.list_price_fen
            # total_fen is after promotions; what they took is counted as their saving, not here.
            saved += mul_fraction(base, line.qty) - (line.total_fen + line.promo_discount_fen)
    return saved


def _saved_text(order: Order) -> str | None:
    saved = _member_saved(order) + order.discount_fen
    return f"您共节省 {format_yuan(saved)}" if saved > 0 else None


def receipt(order: Order, *, store_name: str, zone: ZoneInfo, reprint: bool = False) -> dict[str, Any]:
    """Header, lines, totals, tenders and refunds, amounts in fen plus display text."""
    return {
        "store": {"id": order.store, "name": store_name},
        "title": "重打小票 REPRINT" if reprint else "购物小票",
        "order_id": order.id,
        "number": f"{order.number:04d}",
        "business_day": order.business_day.isoformat(),
        "opened_at": _local(order.opened_at, zone),
        "closed_at": _local(order.closed_at, zone),
        "status": order.status,
        "cashier": order.opened_by,
        "member_id": order.member_id,
        "member": _member(order),
        "member_saved_fen": _member_saved(order),
        "note": order.note or None,
        "lines": [
            {
                "name": line.name,
                "sku": line.sku,
                "qty": format_qty(line.qty),
                "unit": line.unit,
                "unit_price_fen": line.unit_price_fen,
                "total_fen": line.total_fen,
                "text": line.explanation,
                "note": line.note or None,
                "refunded_fen": line.refunded_fen or None,
                "promotions": [{"name": a.name, "amount_fen": a.amount_fen} for a in line.promotions],
            }
            for line in order.lines
        ],
        "subtotal_fen": order.subtotal_fen,
        "discount_fen": order.discount_fen,
        "promotions": [
            {"name": p.name, "saving_fen": p.saving_fen, "code": p.code}
            for p in order.promotions
            if p.saving_fen
        ],
        "gifts": [{"name": g.name, "sku": g.sku, "qty": g.qty, "rule": g.rule_name} for g in order.gifts],
        "saved_fen": _member_saved(order) + order.discount_fen,
        "saved_text": _saved_text(order),
        "total_fen": order.total_fen,
        "total_text": format_yuan(order.total_fen),
        "tenders": [
            {
                "method": t.method,
                "name": METHOD_NAMES[t.method],
                "amount_fen": t.amount_fen,
                "tendered_fen": t.tendered_fen,
                "change_fen": t.change_fen,
                "reference": _mask(t.reference),
            }
            for t in order.tenders
        ],
        "refunds": [
            {"at": _local(r.ts, zone), "total_fen": r.total_fen, "reason": r.reason} for r in order.refunds
        ],
        "refunded_fen": order.refunded_fen,
    }

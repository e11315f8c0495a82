"""Purchasing as the API returns it: suppliers (with their rating), quotes, purchase orders."""

from __future__ import annotations

from typing import Any

from hub.purchasing import PoView, Rating
from hub.purchasing_tables import PurchaseOrderLine, Supplier, SupplierQuote
from hub.stock import format_milli
from protocol.money import round_half_up

__all__ = ["line_total_fen", "po_json", "quote_json", "supplier_json"]


def supplier_json(row: Supplier, rated: Rating | None = None) -> dict[str, Any]:
    """A supplier as the API returns it."""
    body: dict[str, Any] = {
        "id": row.id,
        "name": row.name,
        "licence_no": row.licence_no,
        "licence_expires_on": row.licence_expires_on.isoformat() if row.licence_expires_on else None,
        "contact_name": row.contact_name,
        "phone": row.phone,
        "email": row.email,
        "lead_time_days": row.lead_time_days,
        "active": row.active,
    }
    if rated is not None:
        body["rating"] = {
            "orders": rated.orders,
            "on_time_bp": rated.on_time_bp,
            "fill_rate_bp": rated.fill_rate_bp,
        }
    return body


def quote_json(row: SupplierQuote) -> dict[str, Any]:
    """A quote as the API returns it."""
    return {
        "id": row.id,
        "supplier_id": row.supplier_id,
        "sku": row.sku,
        "unit_cost_fen": row.unit_cost_fen,
        "min_qty": format_milli(row.min_qty_milli),
        "valid_from": row.valid_from.isoformat(),
        "valid_to": row.valid_to.isoformat(),
    }


def po_json(view: PoView, *, with_lines: bool = True) -> dict[str, Any]:
    """A purchase order as the API returns it; `total_fen` is Σ qty × unit cost, rounded half up per line."""
    po = view.po
    body: dict[str, Any] = {
        "id": po.id,
        "store": po.store,
        "supplier_id": po.supplier_id,
        "supplier": view.supplier_name,
        "state": po.state,
        "version": po.version,
        "note": po.note,
        "expected_on": po.expected_on.isoformat() if po.expected_on else None,
        "created_by": po.created_by,
        "created_at": po.created_at.isoformat(),
        "sent_at": po.sent_at.isoformat() if po.sent_at else None,
        "received_at": po.received_at.isoformat() if po.received_at else None,
        "cancelled_at": po.cancelled_at.isoformat() if po.cancelled_at else None,
        "reason": po.reason,
    }
    if with_lines:
        body["lines"] = [
            {
                "sku": line.sku,
                "qty": format_milli(line.qty_milli),
                "received": format_milli(line.received_milli),
                "open": format_milli(line.qty_milli - line.received_milli),
                "unit_cost_fen": line.unit_cost_fen,
                "total_fen": line_total_fen(line),
            }
            for line in view.lines
        ]
        body["total_fen"] = sum(line_total_fen(line) for line in view.lines)
        body["receipts"] = [
            {
                "id": r.id,
                "actor": r.actor,
                "note": r.note,
                "created_at": r.created_at.isoformat(),
                "lines": r.lines,
            }
            for r in view.receipts
        ]
    return body


def line_total_fen(line: PurchaseOrderLine) -> int:
    """qty × unit cost for a line, half up to the fen."""
    return round_half_up(line.qty_milli * line.unit_cost_fen, 1000)

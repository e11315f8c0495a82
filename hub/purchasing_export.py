"""A purchase order as a file for the supplier: CSV, Excel (openpyxl) or printable plain text.

Pure functions of a `PoView` (no I/O); building the workbook is CPU work, so the API calls
`po_xlsx` in a thread. Money is shown in yuan with two decimals, computed from integer fen.
"""

from __future__ import annotations

import csv
import io
from decimal import Decimal

from openpyxl import Workbook

from hub.purchasing import PoView
from hub.purchasing_views import line_total_fen
from hub.stock import format_milli

__all__ = ["po_csv", "po_text", "po_xlsx", "yuan"]

_HEAD = ["sku", "qty", "unit_cost", "total", "received"]


def yuan(fen: int) -> str:
    """Integer fen as yuan text: 12345 -> "123.45", -5 -> "-0.05"."""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}{whole}.{cents:02d}"


def _rows(view: PoView) -> list[list[str]]:
    return [
        [
            line.sku,
            format_milli(line.qty_milli),
            yuan(line.unit_cost_fen),
            yuan(line_total_fen(line)),
            format_milli(line.received_milli),
        ]
        for line in view.lines
    ]


def _total(view: PoView) -> int:
    return sum(line_total_fen(line) for line in view.lines)


def po_csv(view: PoView) -> str:
    """The order as CSV: a header row, one row per line, a total row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["purchase_order", view.po.id, "supplier", view.supplier_name, "store", view.po.store])
    writer.writerow(_HEAD)
    writer.writerows(_rows(view))
    writer.writerow(["total", "", "", yuan(_total(view)), ""])
    return out.getvalue()


def po_xlsx(view: PoView) -> bytes:
    """The order as an .xlsx workbook: quantities and money as numbers the supplier can sum."""
    book = Workbook()
    sheet = book.active
    assert sheet is not None  # noqa: S101 - a new Workbook always has its first sheet
    sheet.title = "order"
    sheet.append(["Purchase order", view.po.id])
    sheet.append(["Supplier", view.supplier_name])
    sheet.append(["Store", view.po.store])
    sheet.append(["Expected", view.po.expected_on.isoformat() if view.po.expected_on else ""])
    sheet.append([])
    sheet.append(_HEAD)
    for line in view.lines:
        sheet.append(
            [
                line.sku,
                Decimal(format_milli(line.qty_milli)),
                Decimal(yuan(line.unit_cost_fen)),
                Decimal(yuan(line_total_fen(line))),
                Decimal(format_milli(line.received_milli)),
            ]
        )
    sheet.append(["total", None, None, Decimal(yuan(_total(view))), None])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def po_text(view: PoView) -> str:
    """The order laid out for printing (monospace, 72 columns)."""
    po = view.po
    lines = [
        f"PURCHASE ORDER {po.id}",
        f"Supplier: {view.supplier_name}",
        f"Deliver to store: {po.store}",
        f"Expected: {po.expected_on.isoformat() if po.expected_on else '-'}    State: {po.state}",
        "",
        f"{'SKU':<28}{'QTY':>10}{'UNIT':>12}{'TOTAL':>14}",
        "-" * 64,
    ]
    for sku, qty, unit, total, _ in _rows(view):
        lines.append(f"{sku[:27]:<28}{qty:>10}{unit:>12}{total:>14}")
    lines += ["-" * 64, f"{'TOTAL':<50}{yuan(_total(view)):>14}"]
    if po.note:
        lines += ["", f"Note: {po.note}"]
    return "\n".join(lines) + "\n"

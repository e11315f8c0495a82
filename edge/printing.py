"""Print templates: edge data in, a `drivers.receipt.Document` out, for 58 mm and 80 mm paper.

Pure functions with no I/O and no clock: the caller passes the times (store-local; they
print as given) and, where the arrangement differs by paper, the paper. Wrapping,
double-width Chinese and column shares are the layout's job (`drivers.layout`), so a
template only chooses elements; it is tested by encoding it and reading the bytes back
with `drivers.escpos_decode`.

Fixed labels are Simplified Chinese: on a Big5 printer they print as "?" while merchant
text in Traditional characters and amounts print correctly.

Kitchen tickets (a diff against what each station was already sent) live in
`edge.kitchen_tickets`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, TypeAlias
from zoneinfo import ZoneInfo

from drivers.escpos import PrinterProfile
from drivers.receipt import QR, Barcode, Cell, Columns, Cut, Element, Feed, Rule, Text
from edge.errors import EdgeError
from edge.orders import METHOD_NAMES, Order
from protocol import format_qty, format_yuan

__all__ = [
    "DEFAULT_FOOTER",
    "Paper",
    "PrintTemplateError",
    "kds_link_ticket",
    "pairing_ticket",
    "paper_columns",
    "printer_test_page",
    "queue_ticket",
    "refund_receipt",
    "sales_receipt",
    "shift_report",
    "topup_slip",
]

Paper: TypeAlias = PrinterProfile | int
"""The target printer's profile, or its font A columns (32 for 58 mm, 48 for 80 mm)."""

DEFAULT_FOOTER = "谢谢惠顾 欢迎再次光临"
_REPRINT_TITLE = "重打小票 REPRINT"
# From 40 columns (80 mm) name, qty × price and amount share one row; on 58 mm the name
# would get under ten cells, so it takes a line of its own there.
_WIDE_FROM = 40
_DETAIL_CELLS = 17  # "0.35kg × ￥30.00"
_AMOUNT_CELLS = 11  # "￥12,345.67": the full-width yen takes two cells
_MIN_COLUMNS, _MAX_COLUMNS = 16, 64
_PAIRING_DIGITS = 6


class PrintTemplateError(EdgeError, ValueError):
    """Data handed to a print template cannot be printed as given."""


def paper_columns(paper: Paper) -> int:
    """Font A columns across the paper."""
    if isinstance(paper, PrinterProfile):
        return paper.columns
    if not _MIN_COLUMNS <= paper <= _MAX_COLUMNS:
        # Most likely the paper width in mm was passed instead of the columns.
        raise PrintTemplateError(f"{paper} columns is not a receipt printer; 58 mm paper has 32, 80 mm 48")
    return paper


def _row(label: str, value: str, *, bold: bool = False) -> Columns:
    return Columns((Cell(label), Cell(value, align="right")), bold=bold)


def _facts(pairs: Iterable[tuple[str, object]]) -> list[Element]:
    return [Text(f"{label}: {value}") for label, value in pairs if value not in (None, "")]


def _mask(reference: str | None) -> str | None:
    # edge.receipt already masks; masking again is idempotent and protects a raw reference.
    if not reference:
        return None
    return "*" * max(0, len(reference) - 4) + reference[-4:]


def _local(utc_text: str | None, zone: ZoneInfo) -> str | None:
    if not utc_text:
        return None
    return datetime.fromisoformat(utc_text).astimezone(zone).strftime("%Y-%m-%d %H:%M")


def _item(name: str, detail: str, amount: str, *, wide: bool) -> list[Element]:
    if wide:
        cells = (
            Cell(name),
            Cell(detail, width=_DETAIL_CELLS, align="right"),
            Cell(amount, width=_AMOUNT_CELLS, align="right"),
        )
        return [Columns(cells)]
    return [Text(name), Columns((Cell("  " + detail), Cell(amount, width=_AMOUNT_CELLS, align="right")))]


def _item_header(detail: str, amount: str, *, wide: bool) -> Columns:
    if wide:
        cells = (
            Cell("品名"),
            Cell(detail, width=_DETAIL_CELLS, align="right"),
            Cell(amount, width=_AMOUNT_CELLS, align="right"),
        )
        return Columns(cells, bold=True)
    return Columns((Cell(f"品名/{detail}"), Cell(amount, width=_AMOUNT_CELLS, align="right")), bold=True)


def _plain_explanation(line: Mapping[str, Any]) -> str:
    # What protocol.pricing writes for a list-price line, which the qty × price cell already
    # says. If pricing changes its wording the receipt merely shows the text once more.
    qty = line["qty"]
    unit = format_yuan(line["unit_price_fen"])
    if qty.isdigit():
        return f"{qty} × {unit}"
    return f"{qty} kg × {unit}/kg = {format_yuan(line['total_fen'])}"


def _sale_line(line: Mapping[str, Any], *, wide: bool) -> list[Element]:
    qty = line["qty"] + ("kg" if line["unit"] == "kg" else "")
    rows = _item(
        line["name"],
        f"{qty} × {format_yuan(line['unit_price_fen'])}",
        format_yuan(line["total_fen"]),
        wide=wide,
    )
    if line.get("text") and line["text"] != _plain_explanation(line):
        rows.append(Text(f"  {line['text']}"))
    if line.get("note"):
        rows.append(Text(f"  备注: {line['note']}"))
    if line.get("refunded_fen"):
        rows.append(_row("  已退", format_yuan(line["refunded_fen"])))
    for promotion in line.get("promotions") or ():
        rows.append(_row(f"  {promotion['name']}", format_yuan(-promotion["amount_fen"])))
    return rows


def _tender(tender: Mapping[str, Any]) -> list[Element]:
    rows: list[Element] = [_row(tender["name"], format_yuan(tender["tendered_fen"]))]
    if tender.get("change_fen"):
        rows.append(_row("找零", format_yuan(tender["change_fen"])))
    reference = _mask(tender.get("reference"))
    if reference:
        rows.append(Text(f"  交易号 {reference}"))
    return rows


def _title(title: str) -> Text:
    if title == _REPRINT_TITLE:
        # Inverted so a reprint can never pass for the original at the door or for a refund.
        return Text(title, height=2, bold=True, invert=True, align="center")
    return Text(title, bold=True, align="center")


def sales_receipt(receipt: Mapping[str, Any], *, paper: Paper, footer: str = DEFAULT_FOOTER) -> list[Element]:
    """The customer receipt for the JSON `edge.receipt.receipt` builds."""
    wide = paper_columns(paper) >= _WIDE_FROM
    doc: list[Element] = [
        Text(receipt["store"]["name"], width=2, height=2, bold=True, align="center"),
        _title(receipt["title"]),
    ]
    if receipt["status"] == "voided":
        doc.append(Text("已作废 VOID", width=2, height=2, bold=True, invert=True, align="center"))
    doc += _facts(
        [
            ("单号", receipt["number"]),
            ("营业日", receipt["business_day"]),
            ("时间", receipt["closed_at"] or receipt["opened_at"]),
            ("收银员", receipt["cashier"]),
            ("会员", receipt.get("member") or receipt.get("member_id")),
        ]
    )
    doc += [Rule(), _item_header("数量×单价", "金额", wide=wide), Rule()]
    for line in receipt["lines"]:
        doc += _sale_line(line, wide=wide)
    doc += [Rule(), _row("小计", format_yuan(receipt["subtotal_fen"]))]
    promotions = receipt.get("promotions") or []
    for promotion in promotions:  # what each promotion or coupon saved on the whole order
        doc.append(_row(promotion["name"], format_yuan(-promotion["saving_fen"])))
    if receipt["discount_fen"] and not promotions:
        doc.append(_row("优惠", format_yuan(-receipt["discount_fen"])))
    for gift in receipt.get("gifts") or ():
        doc.append(_row(f"赠品 {gift['name']}", f"×{gift['qty']}"))
    if receipt.get("member_saved_fen"):
        doc.append(_row("会员价已省", format_yuan(receipt["member_saved_fen"])))
    doc += [
        Text(f"合计 {format_yuan(receipt['total_fen'])}", width=2, height=2, bold=True, align="right"),
        Rule(),
    ]
    for tender in receipt["tenders"]:
        doc += _tender(tender)
    if receipt.get("refunded_fen"):
        doc.append(_row("已退款", format_yuan(receipt["refunded_fen"])))
    if receipt.get("note"):
        doc.append(Text(f"备注: {receipt['note']}"))
    if receipt.get("saved_text"):
        doc.append(Text(receipt["saved_text"], bold=True, align="center"))
    doc += [Rule(), QR(receipt["order_id"], module_size=5), Text(footer, align="center"), Cut()]
    return doc


def refund_receipt(
    order: Order,
    *,
    store_name: str,
    zone: ZoneInfo,
    paper: Paper,
    refund_id: str | None = None,
    footer: str = DEFAULT_FOOTER,
) -> list[Element]:
    """The slip for one refund of `order` (the latest unless `refund_id` names one)."""
    if not order.refunds:
        raise PrintTemplateError(f"order {order.number:04d} has no refund to print")
    refund = order.refunds[-1]
    if refund_id is not None:
        found = [r for r in order.refunds if r.id == refund_id]
        if not found:
            raise PrintTemplateError(f"order {order.number:04d} has no refund {refund_id}")
        refund = found[0]
    wide = paper_columns(paper) >= _WIDE_FROM
    doc: list[Element] = [
        Text(store_name, width=2, height=2, bold=True, align="center"),
        Text("退款单 REFUND", height=2, bold=True, align="center"),
    ]
    doc += _facts(
        [
            ("原单号", f"{order.number:04d}"),
            ("营业日", order.business_day.isoformat()),
            ("退款时间", refund.ts.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")),
            ("经办人", refund.staff_id),
            ("原因", refund.reason),
        ]
    )
    doc += [Rule(), _item_header("退货数量", "退款", wide=wide), Rule()]
    for part in refund.lines:
        line = order.line(part.line_id)
        unit = "kg" if line.unit == "kg" else ""
        detail = f"{format_qty(part.qty)}{unit} / 共{format_qty(line.qty)}{unit}"
        doc += _item(line.name, detail, format_yuan(part.amount_fen), wide=wide)
    doc += [
        Rule(),
        Text(f"退款 {format_yuan(refund.total_fen)}", width=2, height=2, bold=True, align="right"),
    ]
    tenders = {t.index: t for t in order.tenders}
    for index, amount in sorted(refund.tenders.items()):
        tender = tenders[index]
        doc.append(_row(f"退回 {METHOD_NAMES[tender.method]}", format_yuan(amount)))
        reference = _mask(tender.reference)
        if reference:
            doc.append(Text(f"  交易号 {reference}"))
    doc += [Rule(), QR(order.id, module_size=5), Text(footer, align="center"), Cut()]
    return doc


def topup_slip(
    topup: Mapping[str, Any], *, store_name: str, zone: ZoneInfo, footer: str = DEFAULT_FOOTER
) -> list[Element]:
    """The 充值小票 for a stored-value top-up the till recorded (`Till.record_topup`)."""
    balance = topup.get("balance") or {}
    doc: list[Element] = [
        Text(store_name, width=2, height=2, bold=True, align="center"),
        Text("会员充值 TOP-UP", height=2, bold=True, align="center"),
    ]
    doc += _facts(
        [
            ("时间", _local(topup["ts"], zone)),
            ("经办人", topup["staff_id"]),
            ("会员", topup["member_id"]),
            ("交易号", topup["id"]),
        ]
    )
    doc += [Rule(), _row("充值金额", format_yuan(topup["amount_fen"]), bold=True)]
    if topup.get("bonus_fen"):
        doc.append(_row("赠送金额", format_yuan(topup["bonus_fen"])))
    doc.append(
        _row(f"付款 {METHOD_NAMES.get(topup['method'], topup['method'])}", format_yuan(topup["amount_fen"]))
    )
    reference = _mask(topup.get("reference"))
    if reference:
        doc.append(Text(f"  交易号 {reference}"))
    if "total_fen" in balance:
        doc += [
            Rule(),
            _row("储值余额", format_yuan(balance["total_fen"]), bold=True),
            _row("  其中本金", format_yuan(balance.get("principal_fen", 0))),
            _row("  其中赠送", format_yuan(balance.get("bonus_fen", 0))),
        ]
    doc += [Rule(), Text("持卡人签字:"), Feed(2), Text(footer, align="center"), Cut()]
    return doc


def queue_ticket(
    number: str,
    *,
    issued_at: datetime,
    title: str = "排队号",
    category: str | None = None,
    ahead: int | None = None,
    wait_minutes: int | None = None,
    store_name: str | None = None,
) -> list[Element]:
    """A 取餐号/排队号 slip: the number huge, the party-size category and the wait below it."""
    doc: list[Element] = []
    if store_name:
        doc.append(Text(store_name, width=2, height=2, bold=True, align="center"))
    doc += [Text(title, height=2, bold=True, align="center"), Feed()]
    doc.append(Text(number, width=4, height=4, bold=True, align="center"))
    if category:
        doc.append(Text(category, width=2, height=2, align="center"))
    doc.append(Feed())
    if ahead is not None:
        doc.append(Text(f"前面还有 {ahead} 位", align="center"))
    if wait_minutes is not None:
        doc.append(Text(f"预计等待约 {wait_minutes} 分钟", align="center"))
    doc += [
        Text(f"取号时间 {issued_at:%Y-%m-%d %H:%M}", align="center"),
        Text("请留意叫号，过号请重新取号", align="center"),
        Cut(),
    ]
    return doc


def _per_method(totals: Mapping[str, int]) -> list[Element]:
    # Known methods in the till's order, then anything newer by code, so reports compare.
    known = [m for m in METHOD_NAMES if m in totals]
    other = sorted(set(totals) - set(METHOD_NAMES))
    rows: list[Element] = [_row(f"  {METHOD_NAMES.get(m, m)}", format_yuan(totals[m])) for m in known + other]
    rows.append(_row("  合计", format_yuan(sum(totals.values())), bold=True))
    return rows


def shift_report(
    view: Mapping[str, Any],
    *,
    zone: ZoneInfo,
    store_name: str | None = None,
    printed_at: datetime | None = None,
) -> list[Element]:
    """The 交班 report for `edge.shifts.Shift.view()`: takings per tender and the cash count."""
    doc: list[Element] = []
    if store_name:
        doc.append(Text(store_name, width=2, height=2, bold=True, align="center"))
    closed = view["status"] == "closed"
    doc.append(Text("交班报表" if closed else "交班报表 (未交班)", height=2, bold=True, align="center"))
    doc += _facts(
        [
            ("班次", view["id"]),
            ("开班", f"{_local(view['opened_at'], zone)} {view['opened_by']}"),
            ("交班", f"{_local(view['closed_at'], zone)} {view['closed_by']}" if closed else None),
            ("打印", f"{printed_at:%Y-%m-%d %H:%M}" if printed_at else None),
        ]
    )
    doc += [Rule(), _row("订单数", str(view["orders"])), _row("备用金", format_yuan(view["float_fen"]))]
    doc += [Text("销售", bold=True), *_per_method(view["sales"])]
    doc += [Text("退款", bold=True), *_per_method(view["refunds"])]
    if view.get("topups"):
        doc += [Text("会员充值", bold=True), *_per_method(view["topups"])]
    doc.append(Rule())
    doc.append(_row("应有现金", format_yuan(view["expected_cash_fen"]), bold=True))
    counted = view.get("counted_cash_fen")
    doc.append(_row("实点现金", "未清点" if counted is None else format_yuan(counted), bold=True))
    difference = view.get("difference_fen")
    if difference is not None:
        label = "差额 (短款)" if difference < 0 else "差额 (长款)" if difference > 0 else "差额"
        doc.append(Text(f"{label} {format_yuan(difference)}", height=2, bold=True, align="right"))
    doc += [Rule(), Text("收银员签字:"), Feed(2), Text("店长签字:"), Cut()]
    return doc


def pairing_ticket(
    code: str, url: str, *, valid_minutes: int = 5, store_name: str | None = None
) -> list[Element]:
    """The 6-digit device pairing code, big, and a QR the app scans to open `url`."""
    if len(code) != _PAIRING_DIGITS or not code.isdigit():
        raise PrintTemplateError(f"a pairing code is {_PAIRING_DIGITS} digits, got {code!r}")
    doc: list[Element] = []
    if store_name:
        doc.append(Text(store_name, bold=True, align="center"))
    doc += [
        Text("设备配对码 PAIRING CODE", height=2, bold=True, align="center"),
        Feed(),
        # Split in threes: people read a code out loud as "123 456" and mistype less.
        Text(f"{code[:3]} {code[3:]}", width=3, height=3, bold=True, align="center"),
        Feed(),
        QR(url, module_size=6),
        Text(f"{valid_minutes} 分钟内有效，仅可配对一台设备", align="center"),
        Text(f"Valid for {valid_minutes} minutes, one device", align="center"),
        Cut(),
    ]
    return doc


def kds_link_ticket(
    station: str, url: str, device_id: str, *, store_name: str | None = None
) -> list[Element]:
    """A kitchen screen's link as a QR: the tablet scans it and opens the station page, paired.

    The link carries the screen's device token, so the slip says how to revoke it.
    """
    doc: list[Element] = []
    if store_name:
        doc.append(Text(store_name, bold=True, align="center"))
    doc += [
        Text("后厨屏 KITCHEN SCREEN", height=2, bold=True, align="center"),
        Text(station, width=2, height=2, bold=True, align="center"),
        Feed(),
        QR(url, module_size=5),
        Text("用平板扫码打开本工位页面", align="center"),
        Text("扫码后请销毁本单 / destroy after scanning", align="center"),
        Text("撤销 revoke: storelink-edge paired --revoke"),
        Text(device_id),
        Cut(),
    ]
    return doc


def _ruler(columns: int) -> list[str]:
    marks = "".join(
        str(i // 10 % 10) if i % 10 == 0 else "+" if i % 5 == 0 else "." for i in range(1, columns + 1)
    )
    units = "".join(str(i % 10) for i in range(1, columns + 1))
    return [marks, units]


def printer_test_page(
    profile: PrinterProfile, *, printer_name: str | None = None, printed_at: datetime | None = None
) -> list[Element]:
    """The page `storelink-edge devices test` prints: profile, character samples, column ruler."""
    columns = profile.columns
    doc: list[Element] = [Text("打印测试 TEST PAGE", height=2, bold=True, align="center"), Rule("=")]
    doc += _facts(
        [
            ("打印机 Printer", printer_name or profile.name),
            ("配置 Profile", profile.name),
            ("纸宽 Paper", f"{profile.paper_mm} mm / {columns} 列"),
            ("编码 Encoding", f"{profile.encoding}{' 中文字库' if profile.cjk_font else ' 图形打印'}"),
            ("切刀 Cutter", "有" if profile.cutter else "无"),
            ("时间 Time", f"{printed_at:%Y-%m-%d %H:%M:%S}" if printed_at else None),
        ]
    )
    # Each sample shows one thing that goes wrong with a wrong profile: simplified characters
    # on a Big5 printer, traditional ones on a GB2312-only font, the yen sign's width.
    doc += [
        Rule(),
        Text("简体：欢迎光临 中文打印"),
        Text("繁體：歡迎光臨 中文列印"),
        Text("English: Thank you, come again!"),
        _row("金额 Amount", format_yuan(123456)),
        Rule(),
    ]
    doc += [Text(line) for line in _ruler(columns)]
    doc.append(Text("中" * (columns // 2)))
    doc += [
        _row("左 LEFT", "右 RIGHT"),
        Rule(),
        Text("加大 BIG", width=2, height=2, align="center"),
        Text("粗体 BOLD", bold=True, align="center"),
        Barcode("CODE128", "STORELINK"),
        QR("storelink printer test", module_size=4),
        Cut(),
    ]
    return doc

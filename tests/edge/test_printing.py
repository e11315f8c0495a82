"""Print templates: real orders through edge.receipt, encoded for real profiles, read back off the bytes."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from drivers.escpos import PrinterProfile, encode
from drivers.escpos_decode import PrintedLine, decode_escpos
from drivers.layout import display_width
from drivers.receipt import Element
from edge.kitchen_tickets import KitchenLine, SentLine, kitchen_tickets
from edge.orders import Order, OrderLine, add_line, apply_payment, plan_refund
from edge.printing import (
    PrintTemplateError,
    pairing_ticket,
    paper_columns,
    printer_test_page,
    queue_ticket,
    refund_receipt,
    sales_receipt,
    shift_report,
    topup_slip,
)
from edge.receipt import receipt
from edge.shifts import Shift

GB58 = PrinterProfile("front-58", paper_mm=58)
GB80 = PrinterProfile("front-80", paper_mm=80)
BIG5_58 = PrinterProfile("tw-58", paper_mm=58, encoding="big5")
SHANGHAI = ZoneInfo("Asia/Shanghai")
PAID_AT = datetime(2024, 5, 1, 4, 30, tzinfo=UTC)  # 12:30 in Shanghai
STORE = "好邻居便利店"
RICE = "五常稻花香大米（东北特产，真空包装）5kg"
AMOUNT_AT_END = re.compile(r"-?[￥¥][\d,]+\.\d\d$")


def _order(**lines: Any) -> Order:
    order = Order(
        id="01HXORDER0000000000000001",
        store="s-001",
        number=12,
        business_day=date(2024, 5, 1),
        opened_at=PAID_AT,
        opened_by="c1",
    )
    for line in lines.get("lines") or _LINES:
        order = add_line(order, line)
    return order


_LINES = [
    OrderLine(line_id="l1", sku="cola", name="可口可乐 330ml", qty=Fraction(2), list_price_fen=350),
    OrderLine(
        line_id="l2", sku="rice", name=RICE, qty=Fraction(1), list_price_fen=8990, store_price_fen=7990
    ),
    OrderLine(
        line_id="l3",
        sku="pork",
        name="五花肉",
        unit="kg",
        qty=Fraction("0.35"),
        list_price_fen=3000,
        note="切片",
    ),
]


def _paid(order: Order | None = None) -> Order:
    order = order or _order()
    order = apply_payment(
        order, method="wechat", amount_fen=5000, reference="4200001234567890", staff_id="c1", now=PAID_AT
    )
    return apply_payment(order, method="cash", amount_fen=5000, reference=None, staff_id="c1", now=PAID_AT)


def _records(document: list[Element] | tuple[Element, ...], profile: PrinterProfile) -> list[PrintedLine]:
    return decode_escpos(encode(document, profile), profile.encoding).records


def _lines(document: list[Element] | tuple[Element, ...], profile: PrinterProfile) -> list[str]:
    return [record.text for record in _records(document, profile)]


def _cells(record: PrintedLine) -> int:
    # Decoded from a Chinese-mode printer: every non-ASCII character printed two cells wide.
    return display_width(record.text, ambiguous_wide=True, wide_non_ascii=True) * record.width


GOLDEN_58 = [
    "  好邻居便利店",
    "            购物小票",
    "单号: 0012",
    "营业日: 2024-05-01",
    "时间: 2024-05-01 12:30:00",
    "收银员: c1",
    "-" * 32,
    "品名/数量×单价             金额",
    "-" * 32,
    "可口可乐 330ml",
    "  2 × ￥3.50             ￥7.00",
    "五常稻花香大米（东北特产，真空包",
    "装）5kg",
    "  1 × ￥79.90           ￥79.90",
    "  1 × ￥79.90 (store price)",
    "五花肉",
    "  0.35kg × ￥30.00      ￥10.50",
    "  备注: 切片",
    "-" * 32,
    "小计                     ￥97.40",
    "    合计 ￥97.40",
    "-" * 32,
    "微信支付                 ￥50.00",
    "  交易号 ************7890",
    "现金                     ￥50.00",
    "找零                      ￥2.60",
    "-" * 32,
    "[QR 01HXORDER0000000000000001]",
    "",
    "     谢谢惠顾 欢迎再次光临",
    "",
    "",
    "",
    "",
    "[CUT]",
]

GOLDEN_80 = [
    "      好邻居便利店",
    "                    购物小票",
    "单号: 0012",
    "营业日: 2024-05-01",
    "时间: 2024-05-01 12:30:00",
    "收银员: c1",
    "-" * 48,
    "品名                      数量×单价        金额",
    "-" * 48,
    "可口可乐 330ml           2 × ￥3.50      ￥7.00",
    "五常稻花香大米（东      1 × ￥79.90     ￥79.90",
    "北特产，真空包装）",
    "5kg",
    "  1 × ￥79.90 (store price)",
    "五花肉             0.35kg × ￥30.00     ￥10.50",
    "  备注: 切片",
    "-" * 48,
    "小计                                     ￥97.40",
    "            合计 ￥97.40",
    "-" * 48,
    "微信支付                                 ￥50.00",
    "  交易号 ************7890",
    "现金                                     ￥50.00",
    "找零                                      ￥2.60",
    "-" * 48,
    "[QR 01HXORDER0000000000000001]",
    "",
    "             谢谢惠顾 欢迎再次光临",
    "",
    "",
    "",
    "",
    "[CUT]",
]


@pytest.mark.parametrize(("profile", "golden"), [(GB58, GOLDEN_58), (GB80, GOLDEN_80)])
def test_sales_receipt_prints_exactly_the_golden_text(profile, golden):
    data = receipt(_paid(), store_name=STORE, zone=SHANGHAI)
    assert _lines(sales_receipt(data, paper=profile), profile) == golden


def test_store_name_and_total_are_big():
    records = _records(sales_receipt(receipt(_paid(), store_name=STORE, zone=SHANGHAI), paper=GB58), GB58)
    big = {r.text.strip(): (r.width, r.height, r.bold) for r in records if r.width > 1}
    assert big == {STORE: (2, 2, True), "合计 ￥97.40": (2, 2, True)}


def _documents(profile: PrinterProfile) -> dict[str, list[Element] | tuple[Element, ...]]:
    refunded = plan_refund(_paid(), None, refund_id="rf1", reason="顾客退货", staff_id="mgr", now=PAID_AT)
    shift = Shift(id="sh1", opened_at=PAID_AT, opened_by="c1", float_fen=20000, sales={"cash": 4440})
    kitchen = kitchen_tickets(
        [KitchenLine("k1", "招牌红烧狮子头配秘制酱汁（大份）", 12, "少油少盐，不要香菜，多放葱花", "热菜")],
        {},
        order_number="0012",
        table="大厅 A3",
        at=PAID_AT,
    )
    return {
        "sale": sales_receipt(
            receipt(refunded, store_name=STORE, zone=SHANGHAI, reprint=True), paper=profile
        ),
        "refund": refund_receipt(refunded, store_name=STORE, zone=SHANGHAI, paper=profile),
        "queue": queue_ticket("A012", issued_at=PAID_AT, category="大桌 5-8人", ahead=12, wait_minutes=40),
        "shift": shift_report(shift.view(), zone=SHANGHAI, store_name=STORE),
        "pairing": pairing_ticket("042917", "https://edge.local:8443/pair?code=042917"),
        "test page": printer_test_page(profile),
        "topup": topup_slip(TOPUP, store_name=STORE, zone=SHANGHAI),
        "kitchen": kitchen.tickets[0].document,
    }


@pytest.mark.parametrize("profile", [GB58, GB80, BIG5_58], ids=lambda p: p.name)
def test_every_printed_line_fits_the_paper(profile):
    for name, document in _documents(profile).items():
        records = [r for r in _records(document, profile) if r.kind == "text"]
        assert len(records) > 5, name
        too_wide = [r.text for r in records if _cells(r) > profile.columns]
        assert not too_wide, name


@pytest.mark.parametrize("profile", [GB58, GB80, BIG5_58], ids=lambda p: p.name)
def test_amounts_end_exactly_at_the_right_edge(profile):
    refunded = plan_refund(_paid(), None, refund_id="rf1", reason="顾客退货", staff_id="mgr", now=PAID_AT)
    data = receipt(refunded, store_name=STORE, zone=SHANGHAI)
    for document in (
        sales_receipt(data, paper=profile),
        refund_receipt(refunded, store_name=STORE, zone=SHANGHAI, paper=profile),
    ):
        money = [r for r in _records(document, profile) if AMOUNT_AT_END.search(r.text)]
        assert len(money) >= 6
        assert [r.text for r in money if _cells(r) != profile.columns] == []


def test_long_chinese_names_wrap_without_losing_a_character():
    name = "进口特级初榨橄榄油西班牙原装冷压工艺家庭装大桶"  # 25 characters, 50 cells
    order = _paid(
        _order(lines=[OrderLine(line_id="x", sku="oil", name=name, qty=Fraction(1), list_price_fen=12800)])
    )
    for profile, width in ((GB58, 32), (GB80, 18)):
        lines = _lines(sales_receipt(receipt(order, store_name=STORE, zone=SHANGHAI), paper=profile), profile)
        start = next(i for i, line in enumerate(lines) if line.startswith("进口"))
        pieces = [line[: len(line.split("  ")[0])] for line in lines[start : start + 3]]
        assert "".join(pieces).startswith(name)
        assert display_width(pieces[0], ambiguous_wide=True) == width


def test_big5_printer_prints_traditional_names_and_its_own_yen_sign():
    order = _paid(
        _order(
            lines=[
                OrderLine(
                    line_id="t", sku="tea", name="凍頂烏龍茶 Oolong", qty=Fraction(3), list_price_fen=3300
                )
            ]
        )
    )
    lines = _lines(
        sales_receipt(receipt(order, store_name="台北好鄰居", zone=SHANGHAI), paper=BIG5_58), BIG5_58
    )
    assert "   台北好鄰居" in lines
    assert "凍頂烏龍茶 Oolong" in lines
    assert "  3 × ¥33.00           ¥99.00" in lines
    assert "找零                      ¥1.00" in lines


def test_reprint_is_titled_and_shows_what_was_refunded():
    refunded = plan_refund(
        _paid(), [("l1", Fraction(1))], refund_id="rf1", reason="顾客不要了", staff_id="mgr", now=PAID_AT
    )
    records = _records(
        sales_receipt(receipt(refunded, store_name=STORE, zone=SHANGHAI, reprint=True), paper=GB58), GB58
    )
    title = next(r for r in records if "REPRINT" in r.text)
    assert (title.text.strip(), title.height, title.bold) == ("重打小票 REPRINT", 2, True)
    texts = [r.text for r in records]
    assert "  已退                    ￥3.50" in texts
    assert "已退款                    ￥3.50" in texts


def test_discount_raw_reference_and_void_from_a_plain_receipt_dict():
    data = receipt(_paid(), store_name=STORE, zone=SHANGHAI)
    lines = _lines(sales_receipt(data, paper=GB58), GB58)
    assert not [line for line in lines if line.startswith(("优惠", "已作废"))]
    data |= {"discount_fen": 500, "status": "voided", "note": "顾客要发票"}
    data["tenders"][0]["reference"] = (
        "4200001234567890"  # not masked by the caller: the slip must still mask it
    )
    lines = _lines(sales_receipt(data, paper=GB58), GB58)
    assert "优惠                     -￥5.00" in lines
    assert "已作废 VOID" in [line.strip() for line in lines]
    assert "备注: 顾客要发票" in lines
    assert not [line for line in lines if "42000012" in line]


def test_refund_receipt_shows_lines_tenders_reason_and_who():
    refunded = plan_refund(
        _paid(), [("l1", Fraction(1))], refund_id="rf1", reason="顾客不要了", staff_id="mgr", now=PAID_AT
    )
    refunded = plan_refund(
        refunded, [("l3", Fraction("0.35"))], refund_id="rf2", reason="不新鲜", staff_id="c1", now=PAID_AT
    )
    first = _lines(
        refund_receipt(refunded, store_name=STORE, zone=SHANGHAI, paper=GB80, refund_id="rf1"), GB80
    )
    assert first[2:7] == [
        "原单号: 0012",
        "营业日: 2024-05-01",
        "退款时间: 2024-05-01 12:30:00",
        "经办人: mgr",
        "原因: 顾客不要了",
    ]
    assert "可口可乐 330ml               1 / 共2      ￥3.50" in first
    assert "退回 微信支付                             ￥1.80" in first
    assert "退回 现金                                 ￥1.70" in first
    assert "  交易号 ************7890" in first
    latest = _lines(refund_receipt(refunded, store_name=STORE, zone=SHANGHAI, paper=32), GB58)
    assert "原因: 不新鲜" in latest
    assert "  0.35kg / 共0.35kg      ￥10.50" in latest
    with pytest.raises(PrintTemplateError, match="no refund rf9"):
        refund_receipt(refunded, store_name=STORE, zone=SHANGHAI, paper=GB80, refund_id="rf9")
    with pytest.raises(PrintTemplateError, match="no refund to print"):
        refund_receipt(_paid(), store_name=STORE, zone=SHANGHAI, paper=GB80)


def test_queue_ticket_number_is_huge_and_the_wait_optional():
    records = _records(
        queue_ticket("A012", issued_at=PAID_AT, title="取餐号", category="小桌 1-2人", wait_minutes=15), GB58
    )
    number = next(r for r in records if r.text.strip() == "A012")
    assert (number.width, number.height) == (4, 4)
    texts = [r.text.strip() for r in records]
    assert {"取餐号", "小桌 1-2人", "预计等待约 15 分钟", "取号时间 2024-05-01 04:30"} <= set(texts)
    bare = [r.text for r in _records(queue_ticket("37", issued_at=PAID_AT), GB58)]
    assert not [line for line in bare if "等待" in line or "前面" in line]


def test_shift_report_per_tender_and_cash_difference():
    shift = Shift(
        id="sh1",
        status="closed",
        opened_at=PAID_AT,
        opened_by="c1",
        float_fen=20000,
        sales={"wechat": 5000, "cash": 4440},
        refunds={"cash": 350},
        orders=2,
        closed_at=PAID_AT,
        closed_by="mgr",
        counted_cash_fen=24000,
    )
    lines = _lines(shift_report(shift.view(), zone=SHANGHAI), GB58)
    start = lines.index("销售")
    assert lines[start - 2 : start + 9] == [
        "订单数                         2",
        "备用金                  ￥200.00",
        "销售",
        "  现金                   ￥44.40",
        "  微信支付               ￥50.00",
        "  合计                   ￥94.40",
        "退款",
        "  现金                    ￥3.50",
        "  合计                    ￥3.50",
        "-" * 32,
        "应有现金                ￥240.90",
    ]
    assert "实点现金                ￥240.00" in lines
    assert "             差额 (短款) -￥0.90" in lines
    assert "交班: 2024-05-01 12:30 mgr" in lines
    still_open = _lines(
        shift_report(Shift(id="sh2", opened_at=PAID_AT, opened_by="c1", float_fen=0).view(), zone=SHANGHAI),
        GB58,
    )
    assert "实点现金                  未清点" in still_open
    assert not [line for line in still_open if "差额" in line or line.startswith("交班:")]


TOPUP = {
    "id": "0193b2c4-7a10-7def-8000-00000000abcd",
    "member_id": "m-1",
    "amount_fen": 50000,
    "bonus_fen": 8000,
    "method": "wechat",
    "reference": "4200001234567890",
    "balance": {"principal_fen": 50500, "bonus_fen": 8000, "total_fen": 58500},
    "staff_id": "c1",
    "ts": PAID_AT.isoformat(),
}


def test_topup_slip_shows_bonus_and_balances_and_the_shift_counts_cash_topups():
    lines = _lines(topup_slip(TOPUP, store_name=STORE, zone=SHANGHAI), GB58)
    assert "时间: 2024-05-01 12:30" in lines
    assert "充值金额                ￥500.00" in lines
    assert "赠送金额                 ￥80.00" in lines
    assert "付款 微信支付           ￥500.00" in lines
    assert "储值余额                ￥585.00" in lines
    assert "  其中赠送               ￥80.00" in lines
    assert not [line for line in lines if "4200001234567890" in line]  # the reference is masked

    shift = Shift(
        id="sh3",
        opened_at=PAID_AT,
        opened_by="c1",
        float_fen=1000,
        sales={"cash": 500},
        topups={"cash": 50000},
    )
    assert shift.view()["expected_cash_fen"] == 51500
    report = _lines(shift_report(shift.view(), zone=SHANGHAI), GB58)
    start = report.index("会员充值")
    assert report[start + 1 : start + 3] == [
        "  现金                  ￥500.00",
        "  合计                  ￥500.00",
    ]


def test_pairing_ticket_code_big_and_qr_of_the_url():
    records = _records(pairing_ticket("042917", "https://edge.local:8443/pair?code=042917"), GB58)
    code = next(r for r in records if "042" in r.text)
    assert (code.text.strip(), code.width, code.height) == ("042 917", 3, 3)
    assert "[QR https://edge.local:8443/pair?code=042917]" in [r.text for r in records]
    with pytest.raises(PrintTemplateError, match="6 digits"):
        pairing_ticket("12345", "https://edge.local")


@pytest.mark.parametrize(
    "profile", [GB58, GB80, PrinterProfile("tw-80", encoding="big5")], ids=lambda p: p.name
)
def test_test_page_names_the_printer_and_rules_the_full_width(profile):
    lines = _lines(printer_test_page(profile, printer_name="前台"), profile)
    assert "打印机 Printer: 前台" in lines
    assert f"配置 Profile: {profile.name}" in lines
    assert "繁體：歡迎光臨 中文列印" in lines  # printable on GB18030 and Big5 alike
    assert "English: Thank you, come again!" in lines
    ruler = next(line for line in lines if line.startswith("1234567890"))
    assert len(ruler) == profile.columns
    assert "中" * (profile.columns // 2) in lines
    assert [line for line in lines if line.startswith("金") and line.endswith("1,234.56")]


def test_paper_given_in_millimetres_is_refused():
    assert paper_columns(GB58) == 32
    assert paper_columns(48) == 48
    with pytest.raises(PrintTemplateError, match="58 mm paper has 32"):
        paper_columns(80)


# ------------------------------------------------------------------ kitchen tickets

ORDER = [
    KitchenLine("k1", "宫保鸡丁", "2", "少辣", "热菜"),
    KitchenLine("k2", "酸梅汤", Fraction(1), station="饮品"),
    KitchenLine("k3", "麻婆豆腐", 1, station="热菜"),
]


def _round(lines: list[KitchenLine], sent: Any) -> Any:
    return kitchen_tickets(lines, sent, order_number="0012", table="A3", at=PAID_AT)


def _body(ticket: Any) -> list[str]:
    """The item lines of a ticket: between the two "=" rules."""
    lines = _lines(ticket.document, GB58)
    first = lines.index("=" * 32)
    return lines[first + 1 : lines.index("=" * 32, first + 1)]


def test_a_new_order_sends_every_line_to_its_station():
    result = _round(ORDER, {})
    assert [t.station for t in result.tickets] == ["热菜", "饮品"]
    hot, drinks = result.tickets
    assert _body(hot) == ["宫保鸡丁 x2", "  备注: 少辣", "麻婆豆腐 x1"]
    assert _body(drinks) == ["酸梅汤 x1"]
    head = _records(hot.document, GB58)[:4]
    assert [(r.text.strip(), r.width, r.height) for r in head[:2]] == [("热菜", 2, 2), ("桌号 A3", 2, 2)]
    assert head[2].text == "单号 0012               04:30:00"
    assert head[3].text.strip() == "新单"
    item = next(r for r in _records(hot.document, GB58) if r.text == "宫保鸡丁 x2")
    assert (item.width, item.height, item.bold) == (2, 2, True)
    assert result.sent == {
        "热菜": {"k1": SentLine("2", "少辣", "宫保鸡丁"), "k3": SentLine("1", "", "麻婆豆腐")},
        "饮品": {"k2": SentLine("1", "", "酸梅汤")},
    }


def test_sending_again_without_changes_prints_nothing():
    sent = _round(ORDER, {}).sent
    again = _round(ORDER, sent)
    assert again.tickets == ()
    assert again.sent == sent


def test_the_persisted_state_survives_json_and_makes_the_next_round_empty():
    sent = json.loads(json.dumps(_round(ORDER, {}).sent))
    assert sent["热菜"]["k1"] == ["2", "少辣", "宫保鸡丁"]
    assert _round(ORDER, sent).tickets == ()
    # The brief's (qty, note) pairs, as Fractions, are read too.
    pairs = {"热菜": {"k1": (Fraction(2), "少辣"), "k3": (Fraction(1), "")}, "饮品": {"k2": ("1", "")}}
    assert _round(ORDER, pairs).tickets == ()


def test_a_quantity_change_prints_only_that_line_with_its_delta():
    sent = _round(ORDER, {}).sent
    more = [KitchenLine("k1", "宫保鸡丁", "3", "少辣", "热菜"), *ORDER[1:]]
    result = _round(more, sent)
    assert [t.station for t in result.tickets] == ["热菜"]
    assert _body(result.tickets[0]) == ["加 1 宫保鸡丁", "  现共 3 (原 2)"]
    assert "加单/改单" in [line.strip() for line in _lines(result.tickets[0].document, GB58)]
    assert result.tickets[0].changes[0].delta == 1
    fewer = [KitchenLine("k1", "宫保鸡丁", "1", "少辣", "热菜"), *ORDER[1:]]
    assert _body(_round(fewer, result.sent).tickets[0]) == ["减 2 宫保鸡丁", "  现共 1 (原 3)"]
    assert _round(more, result.sent).tickets == ()


def test_cancelled_lines_print_prominently_even_when_gone_from_the_order():
    sent = _round(ORDER, {}).sent
    result = _round([ORDER[0], ORDER[1], KitchenLine("k3", "麻婆豆腐", 0, station="热菜")], sent)
    assert [(t.station, _body(t)) for t in result.tickets] == [("热菜", ["取消 麻婆豆腐 x1"])]
    line = next(r for r in _records(result.tickets[0].document, GB58) if r.text.startswith("取消"))
    assert (line.width, line.height, line.bold) == (2, 2, True)
    assert "k3" not in result.sent["热菜"]
    # Removed outright: the name comes from the sent state, and the emptied station is dropped.
    gone = _round([ORDER[0]], sent)
    assert [(t.station, _body(t)) for t in gone.tickets] == [
        ("热菜", ["取消 麻婆豆腐 x1"]),
        ("饮品", ["取消 酸梅汤 x1"]),
    ]
    assert gone.sent == {"热菜": {"k1": SentLine("2", "少辣", "宫保鸡丁")}}
    assert _round([ORDER[0]], gone.sent).tickets == ()


def test_a_note_change_and_a_station_move_are_told_to_the_right_stations():
    sent = _round(ORDER, {}).sent
    changed = [
        KitchenLine("k1", "宫保鸡丁", "2", "不辣", "热菜"),
        ORDER[1],
        KitchenLine("k3", "麻婆豆腐", 1, station="凉菜"),
    ]
    result = _round(changed, sent)
    bodies = {t.station: _body(t) for t in result.tickets}
    assert bodies == {
        "热菜": ["取消 麻婆豆腐 x1", "改 宫保鸡丁 x2", "  备注改为: 不辣", "  (原备注: 少辣)"],
        "凉菜": ["麻婆豆腐 x1"],
    }
    assert _round(changed, result.sent).tickets == ()


def test_weighed_quantities_and_bad_input():
    result = _round([KitchenLine("f", "清蒸鲈鱼", "0.75", station="海鲜")], {})
    assert _body(result.tickets[0]) == ["清蒸鲈鱼 x0.75"]
    assert _round([KitchenLine("f", "清蒸鲈鱼", Fraction(3, 4), station="海鲜")], result.sent).tickets == ()
    with pytest.raises(PrintTemplateError, match="appears twice"):
        _round([ORDER[0], ORDER[0]], {})
    with pytest.raises(PrintTemplateError, match="decimal string or Fraction"):
        _round([KitchenLine("f", "鱼", 0.5)], {})  # type: ignore[arg-type]
    with pytest.raises(PrintTemplateError, match="negative"):
        _round([KitchenLine("f", "鱼", "-1")], {})
    with pytest.raises(PrintTemplateError, match=r"is not \(qty, note, name\)"):
        _round(ORDER, {"热菜": {"k1": "2"}})

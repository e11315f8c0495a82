"""Golden ESC/POS bytes of whole receipts, so layout and encoder changes cannot shift a byte unnoticed.

The files in golden/ were produced by the encoder and checked by decoding them (58/80 mm,
GB18030, Big5, UTF-8, narrow and wide text, the characters that need substitution). A
change that is meant to alter the output regenerates them with
``STORELINK_UPDATE_GOLDEN=1 pytest tests/drivers/test_receipt_golden.py``; review the
decoded text (``storelink-edge devices preview`` or `drivers.escpos_decode`) before committing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from drivers.escpos import PrinterProfile, encode, render
from drivers.layout import Block, Line
from drivers.receipt import QR, Barcode, Cell, Columns, Cut, DrawerKick, Element, Feed, Rule, Text

GOLDEN = Path(__file__).parent / "golden"
_UPDATE = os.environ.get("STORELINK_UPDATE_GOLDEN") == "1"

# name, quantity text, unit price, amount: the shapes edge.printing.sales_receipt prints.
_GOODS = [
    ("可口可乐 330ml", "2", "¥3.50", "¥7.00"),
    ("五常稻花香大米（东北特产，真空包装）5kg", "1", "¥79.90", "¥79.90"),
    ("五花肉", "0.35kg", "¥30.00", "¥10.50"),
    ("农夫山泉 550ml", "6", "¥2.00", "¥12.00"),
    ("康师傅红烧牛肉面(桶装)", "3", "¥5.00", "¥15.00"),
    ("德芙巧克力礼盒装“心语”榛仁味 Dove Hazelnut Gift Box 252g", "1", "¥128.00", "¥128.00"),
    ("蒙牛纯牛奶 250ml×24盒", "1", "¥59.90", "¥59.90"),
    ("鸡蛋", "1.2kg", "¥11.90", "¥14.28"),
    ("三只松鼠每日坚果 750g", "1", "¥139.00", "¥139.00"),
    ("Oreo 奥利奥夹心饼干原味 388g", "1", "¥12.90", "¥12.90"),
    ("苹果（山东烟台红富士，特级）", "1.85kg", "¥12.80", "¥23.68"),
    ("青岛啤酒 经典 500ml", "12", "¥5.90", "¥70.80"),
    ("维达抽纸 3层130抽×6包", "2", "¥19.90", "¥39.80"),
    ("雀巢咖啡 1+2 原味 15g×30条", "1", "¥49.90", "¥49.90"),
    ("心相印湿巾 80片 家庭装（加厚无香型，适合婴儿）", "1", "¥24.90", "¥24.90"),
    ("Lay's 乐事薯片 黄瓜味 70g", "3", "¥7.50", "¥22.50"),
    ("Coca-Cola Zero Sugar 330ml can, 24 pack", "1", "¥59.00", "¥59.00"),
    ("冷冻水饺（猪肉白菜馅）1kg", "1", "¥28.90", "¥28.90"),
]
_TAIWAN_GOODS = [
    ("珍珠奶茶（大杯）", "2", "¥55", "¥110"),
    ("鳳梨酥禮盒 12入·精裝版", "1", "￥480", "￥480"),
    ("烏龍茶 Oolong Tea 600ml", "3", "¥25", "¥75"),
    ("臺灣高山茶葉（阿里山，特選）150g", "1", "¥1,280", "¥1,280"),
    ("简体字商品 (not in Big5)", "1", "¥10", "¥10"),
]


def _row(label: str, value: str, *, bold: bool = False) -> Columns:
    return Columns((Cell(label), Cell(value, align="right")), bold=bold)


def _items(goods: list[tuple[str, str, str, str]], *, wide: bool) -> list[Element]:
    doc: list[Element] = []
    for name, qty, unit, amount in goods:
        detail = f"{qty} × {unit}"
        if wide:
            cells = (Cell(name), Cell(detail, width=17, align="right"), Cell(amount, width=11, align="right"))
            doc.append(Columns(cells))
        else:
            doc += [Text(name), Columns((Cell("  " + detail), Cell(amount, width=11, align="right")))]
    return doc


def sale(*, wide: bool) -> list[Element]:
    """A supermarket receipt laid out the way the sales template lays one out."""
    return [
        Text("好邻居便利店（建国路店）", width=2, height=2, bold=True, align="center"),
        Text("重打小票 REPRINT", height=2, bold=True, invert=True, align="center"),
        Text("单号: 0012"),
        Text("时间: 2024-05-01 12:30:00"),
        Rule(),
        _row("品名", "数量×单价      金额", bold=True),
        Rule(),
        *_items(_GOODS, wide=wide),
        Text("  备注: 切片，不要肥的"),
        Rule(),
        _row("小计", "¥784.96"),
        _row("优惠 (满200减10)", "-¥10.00"),
        Text("合计 ¥774.96", width=2, height=2, bold=True, align="right"),
        Rule(),
        _row("微信支付", "¥200.00"),
        Text("  交易号 ************7890"),
        _row("现金", "¥600.00"),
        _row("找零", "¥25.04"),
        Rule(),
        QR("01HXORDER0000000000000001", module_size=5),
        Text("谢谢惠顾 欢迎再次光临", align="center"),
        Cut(),
    ]


def taiwan(*, wide: bool) -> list[Element]:
    """Traditional Chinese for a Big5 printer, with a Simplified line that must become '?'."""
    return [
        Text("珍珠奶茶專賣店", width=2, height=2, bold=True, align="center"),
        Text("臺北市信義區松仁路 100 號 1 樓", align="center"),
        Rule("="),
        *_items(_TAIWAN_GOODS, wide=wide),
        Rule("="),
        _row("合計", "¥1,955", bold=True),
        Text("統一編號：12345678", align="right"),
        Barcode("CODE128", "TW-0012"),
        Cut("full"),
        DrawerKick(),
    ]


def awkward() -> list[Element]:
    """Characters each width rule and substitution exists for."""
    return [
        Text("Tab\tand\r\nCRLF, café and cafe\u0301, zero\u200bwidth, bell\x07, emoji 😀 end"),
        Text("全角空格\u3000后, no-break\u00a0space, “quotes” ‘single’ …— · × ° ± ① ■ αβγ абв"),
        Text("¥12.00 ￥12.00 $3 €4 £5 ₩6 ½ ﹏ ｱｲｳ ＡＢＣ ㈱ 〒 ㎏"),
        Text("（括号）【方括号】《书名号》「引号」『双引号』，。！？：；、"),
        Text(
            "An English sentence that is long enough to wrap at a space, Supercalifragilisticexpialidocious."
        ),
        Text("一二三四五六七八九十" * 4 + "￥" + "100.00"),
        Text("宽 WIDE", width=3, height=2, underline=True, align="center"),
        Text("右对齐 right", align="right"),
        Rule("—"),
        Rule("·"),
        Rule("═"),
        Columns(
            (
                Cell("备注：这一列会被截断而不是折行 truncated note column", truncate=True),
                Cell("x2", width=4, align="center"),
                Cell("中", width=1, align="right"),
            ),
            gap=2,
        ),
        Columns((Cell("左", weight=1), Cell("中 middle", weight=2, align="center"), Cell("右", weight=1))),
        Feed(2),
        Text(""),
        Text("\n\n"),
        DrawerKick(pin=5, on_ms=50, off_ms=250),
        Cut(),
    ]


_PROFILES = {
    "gb18030-58": PrinterProfile("gb58", paper_mm=58),
    "gb18030-80": PrinterProfile("gb80", paper_mm=80),
    "gbk-80": PrinterProfile("gbk80", encoding="gbk", paper_mm=80),
    "big5-58": PrinterProfile("big5-58", encoding="big5", paper_mm=58),
    "big5-80": PrinterProfile("big5-80", encoding="big5", paper_mm=80),
    "utf8-80": PrinterProfile("utf80", encoding="utf-8", paper_mm=80),
    "utf8-58-narrow": PrinterProfile("utf58", encoding="utf-8", paper_mm=58, ambiguous_wide=False),
    "raster-58": PrinterProfile("raster58", cjk_font=False, paper_mm=58),
    "raster-80": PrinterProfile("raster80", cjk_font=False, paper_mm=80),
}
_CASES = [
    ("sale", "gb18030-58"),
    ("sale", "gb18030-80"),
    ("sale", "gbk-80"),
    ("sale", "big5-80"),
    ("sale", "utf8-58-narrow"),
    ("taiwan", "big5-58"),
    ("taiwan", "big5-80"),
    ("awkward", "gb18030-58"),
    ("awkward", "gb18030-80"),
    ("awkward", "big5-80"),
    ("awkward", "utf8-80"),
    ("awkward", "utf8-58-narrow"),
]
# Raster bytes depend on the FreeType build, so for printers without a CJK font the golden
# is the laid-out text, which fixes where every glyph is drawn.
_RASTER_CASES = [("sale", "raster-80"), ("awkward", "raster-58")]


def _document(name: str, profile: PrinterProfile) -> list[Element]:
    wide = profile.columns >= 40
    if name == "sale":
        return sale(wide=wide)
    if name == "taiwan":
        return taiwan(wide=wide)
    return awkward()


def _check(path: Path, actual: bytes) -> None:
    if _UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(actual)
    expected = path.read_bytes()
    # Compared line by line first so a failure shows which printed line moved.
    assert actual.split(b"\n") == expected.split(b"\n")
    assert actual == expected


@pytest.mark.parametrize(("document", "profile"), _CASES, ids=[f"{d}-{p}" for d, p in _CASES])
def test_receipt_bytes_match_the_golden_file(document: str, profile: str) -> None:
    printer = _PROFILES[profile]
    _check(GOLDEN / f"{document}-{profile}.bin", encode(_document(document, printer), printer))


def _describe(block: Block) -> str:
    if not isinstance(block, Line):
        return f"[{type(block).__name__}]"
    styles = "".join(
        flag for flag, on in (("B", block.bold), ("U", block.underline), ("I", block.invert)) if on
    )
    return f"{block.width}x{block.height}{styles}|{block.text}"


@pytest.mark.parametrize(("document", "profile"), _RASTER_CASES, ids=[f"{d}-{p}" for d, p in _RASTER_CASES])
def test_raster_receipt_lines_match_the_golden_file(document: str, profile: str) -> None:
    printer = _PROFILES[profile]
    blocks = render(_document(document, printer), printer)
    text = "".join(_describe(block) + "\n" for block in blocks)
    _check(GOLDEN / f"{document}-{profile}.txt", text.encode("utf-8"))


def test_golden_files_are_all_in_use() -> None:
    expected = {f"{d}-{p}.bin" for d, p in _CASES} | {f"{d}-{p}.txt" for d, p in _RASTER_CASES}
    assert {path.name for path in GOLDEN.iterdir()} == expected

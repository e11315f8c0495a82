"""ESC/POS encoder: golden bytes for real Chinese receipts, read-back through the codecs, raster fallback."""

from __future__ import annotations

import pytest
from PIL import Image as PILImage

from drivers.escpos import PrinterProfile, ProfileError, encode, render
from drivers.layout import Line
from drivers.receipt import QR, Barcode, Cell, Columns, Cut, DrawerKick, Feed, Image, Rule, Text

GB58 = PrinterProfile("front-58", paper_mm=58)
GB80 = PrinterProfile("front-80", paper_mm=80)

# Fixed-length commands we emit: prefix -> total length. Variable ones are handled in `_walk`.
_FIXED = {
    b"\x1b@": 2,
    b"\x1c&": 2,
    b"\x1b!": 3,
    b"\x1bE": 3,
    b"\x1b-": 3,
    b"\x1ba": 3,
    b"\x1bd": 3,
    b"\x1bp": 5,
    b"\x1d!": 3,
    b"\x1dB": 3,
    b"\x1dH": 3,
    b"\x1dh": 3,
    b"\x1dw": 3,
    b"\x1dV": 3,
}


def _walk(data: bytes) -> list[tuple[str, bytes]]:
    """Split a stream into ("cmd", bytes) and ("text", line bytes without LF); enough to read our output."""
    items: list[tuple[str, bytes]] = []
    i = 0
    while i < len(data):
        prefix = data[i : i + 2]
        if prefix in _FIXED:
            size = _FIXED[prefix]
        elif prefix == b"\x1d(":  # GS ( k pL pH ...
            size = 5 + int.from_bytes(data[i + 3 : i + 5], "little")
        elif prefix == b"\x1dk":  # GS k m n data
            size = 4 + data[i + 3]
        elif prefix == b"\x1dv":  # GS v 0 m xL xH yL yH data
            size = 8 + int.from_bytes(data[i + 4 : i + 6], "little") * int.from_bytes(
                data[i + 6 : i + 8], "little"
            )
        elif data[i] == 0x0A:
            items.append(("text", b""))
            i += 1
            continue
        else:
            end = data.index(b"\n", i)
            assert all(byte >= 0x20 for byte in data[i:end]), data[i:end]
            items.append(("text", data[i:end]))
            i = end + 1
            continue
        items.append(("cmd", data[i : i + size]))
        i += size
    return items


def printed_lines(data: bytes, codec: str) -> list[str]:
    return [chunk.decode(codec) for kind, chunk in _walk(data) if kind == "text"]


def commands(data: bytes) -> list[bytes]:
    return [chunk for kind, chunk in _walk(data) if kind == "cmd"]


def shop_receipt() -> list:
    def item(name: str, qty: str, amount: str, *, bold: bool = False) -> Columns:
        cells = (Cell(name), Cell(qty, width=4, align="right"), Cell(amount, width=9, align="right"))
        return Columns(cells, bold=bold)

    return [
        Text("好邻居便利店", width=2, height=2, bold=True, align="center"),
        Text("北京市朝阳区建国路88号", align="center"),
        Text("单号 0012    2024-05-01 12:30"),
        Rule(),
        item("商品", "数量", "金额", bold=True),
        item("农夫山泉 550ml", "2", "¥4.00"),
        item("康师傅红烧牛肉面(桶装)", "1", "¥5.50"),
        item("德芙巧克力礼盒装“心语”榛仁味 Dove Hazelnut Gift Box 252g", "1", "¥128.00"),
        Rule(),
        Columns((Cell("合计"), Cell("¥137.50", align="right")), bold=True),
        Text("谢谢惠顾，欢迎再来！", align="center"),
        QR("https://storelink.cn/r/0012", module_size=4),
        Cut(),
    ]


LINES_58 = [
    "  好邻居便利店",
    "     北京市朝阳区建国路88号",
    "单号 0012    2024-05-01 12:30",
    "--------------------------------",
    "商品              数量      金额",
    "农夫山泉 550ml       2    ￥4.00",
    "康师傅红烧牛肉面     1    ￥5.50",
    "(桶装)",
    "德芙巧克力礼盒装     1  ￥128.00",
    "“心语”榛仁味",
    "Dove Hazelnut",
    "Gift Box 252g",
    "--------------------------------",
    "合计                    ￥137.50",
    "      谢谢惠顾，欢迎再来！",
]
LINES_80 = [
    "      好邻居便利店",
    "             北京市朝阳区建国路88号",
    "单号 0012    2024-05-01 12:30",
    "-" * 48,
    "商品                              数量      金额",
    "农夫山泉 550ml                       2    ￥4.00",
    "康师傅红烧牛肉面(桶装)               1    ￥5.50",
    "德芙巧克力礼盒装“心语”榛仁味       1  ￥128.00",
    "Dove Hazelnut Gift Box 252g",
    "-" * 48,
    "合计                                    ￥137.50",
    "              谢谢惠顾，欢迎再来！",
]
INIT_CHINESE = b"\x1b@\x1b!\x00\x1c&"
QR_0012 = (
    b"\x1ba\x01"
    b"\x1d(k\x04\x001A2\x00"
    b"\x1d(k\x03\x001C\x04"
    b"\x1d(k\x03\x001E1"
    b"\x1d(k\x1e\x001P0https://storelink.cn/r/0012"
    b"\x1d(k\x03\x001Q0\n"
)
PARTIAL_CUT = b"\x1bd\x04\x1dV\x01"


def _golden(lines: list[str]) -> bytes:
    """Expected stream: big bold title, then plain lines, with the two bold rows switched on and off."""
    gb = [line.encode("gb18030") + b"\n" for line in lines]
    header, total = 4, len(lines) - 2
    return (
        INIT_CHINESE
        + b"\x1d!\x11\x1bE\x01"
        + gb[0]
        + b"\x1d!\x00\x1bE\x00"
        + b"".join(gb[1:header])
        + b"\x1bE\x01"
        + gb[header]
        + b"\x1bE\x00"
        + b"".join(gb[header + 1 : total])
        + b"\x1bE\x01"
        + gb[total]
        + b"\x1bE\x00"
        + gb[total + 1]
        + QR_0012
        + PARTIAL_CUT
    )


@pytest.mark.parametrize(("profile", "lines"), [(GB58, LINES_58), (GB80, LINES_80)], ids=["58mm", "80mm"])
def test_chinese_receipt_golden_bytes(profile: PrinterProfile, lines: list[str]) -> None:
    data = encode(shop_receipt(), profile)
    assert data == _golden(lines)
    # Spot-check the codec and the yen sign byte by byte, independently of Python's encoder.
    assert b"\xc5\xa9\xb7\xf2\xc9\xbd\xc8\xaa 550ml" in data  # 农夫山泉 550ml
    assert b"\xa3\xa4128.00\n" in data  # ￥ is A3A4 in GB2312/GBK/GB18030
    assert "¥".encode("gb18030") not in data  # U+00A5 has no glyph in GB printer fonts


@pytest.mark.parametrize(("profile", "lines"), [(GB58, LINES_58), (GB80, LINES_80)], ids=["58mm", "80mm"])
def test_chinese_receipt_reads_back_through_gb18030(profile: PrinterProfile, lines: list[str]) -> None:
    data = encode(shop_receipt(), profile)
    assert printed_lines(data, "gb18030") == [*lines, ""]  # the last LF ends the QR code's line
    rendered = [block.text for block in render(shop_receipt(), profile) if isinstance(block, Line)]
    assert rendered == lines


def test_traditional_receipt_reads_back_through_big5() -> None:
    profile = PrinterProfile("tea-tw", encoding="big5", paper_mm=58)
    doc = [
        Text("珍珠奶茶專賣店", align="center"),
        Columns(
            (
                Cell("珍珠奶茶（大杯）"),
                Cell("2", width=4, align="right"),
                Cell("¥110", width=9, align="right"),
            )
        ),
        Columns((Cell("合計"), Cell("￥110", align="right"))),
    ]
    data = encode(doc, profile)
    lines = ["         珍珠奶茶專賣店", "珍珠奶茶（大杯）     2     ¥110", "合計" + " " * 23 + "¥110"]
    assert printed_lines(data, "big5") == lines
    assert data.startswith(INIT_CHINESE)
    assert b"\xac\xc3\xaf]\xa5\xa4\xaf\xf9" in data  # 珍珠奶茶 in Big5
    assert b"\xa2\x44110\n" in data  # both yen spellings print Big5's own yen sign, A244


def test_unencodable_characters_are_replaced_not_fatal() -> None:
    profile = PrinterProfile("gbk", encoding="gbk", paper_mm=58)
    data = encode([Text("한국 김치 ¥9"), Text("emoji 😀 ok")], profile)
    assert printed_lines(data, "gbk") == ["???? ???? ￥9", "emoji ?? ok"]


def test_control_characters_in_text_cannot_inject_commands() -> None:
    data = encode([Text("a\x1dV\x00b")], GB58)
    assert data == INIT_CHINESE + b"a?V?b\n"


def test_utf8_printer_gets_utf8_without_chinese_mode() -> None:
    profile = PrinterProfile("u8", encoding="utf-8", ambiguous_wide=False)
    data = encode([Text("奶茶 ¥12 “好”")], profile)
    assert data == b"\x1b@\x1b!\x00" + "奶茶 ¥12 “好”".encode() + b"\n"


def test_text_styles_are_sent_on_change_only() -> None:
    doc = [
        Text("A", underline=True, invert=True),
        Text("B", underline=True, invert=True),
        Text("C", width=3, height=2, align="right"),
        Text("D"),
    ]
    data = encode(doc, GB80)
    assert data == (
        INIT_CHINESE
        + b"\x1b-\x01\x1dB\x01A\nB\n"
        + b"\x1d!\x21\x1b-\x00\x1dB\x00"
        + b" " * 15
        + b"C\n"
        + b"\x1d!\x00D\n"
    )


def test_barcodes_qr_feed_and_drawer() -> None:
    doc = [
        Barcode("EAN13", "6901234567892"),
        Barcode("CODE128", "A{1", hri="none", height=50, align="left"),
        Feed(3),
        DrawerKick(),
        DrawerKick(pin=5, on_ms=200),
        QR("x", error_level="H", module_size=8, align="left"),
    ]
    assert commands(encode(doc, GB58))[3:] == [
        b"\x1ba\x01",
        b"\x1dH\x02",
        b"\x1dhP",
        b"\x1dw\x02",
        b"\x1dkC\x0d6901234567892",
        b"\x1ba\x00",
        b"\x1dH\x00",
        b"\x1dh2",
        b"\x1dw\x02",
        b"\x1dkI\x06{BA{{1",
        b"\x1bd\x03",
        b"\x1bp\x002\xfa",
        b"\x1bp\x01d\xfa",
        b"\x1d(k\x04\x001A2\x00",
        b"\x1d(k\x03\x001C\x08",
        b"\x1d(k\x03\x001E3",
        b"\x1d(k\x04\x001P0x",
        b"\x1d(k\x03\x001Q0",
    ]


def test_printer_without_cutter_only_feeds() -> None:
    assert encode([Cut("full")], PrinterProfile("p", cutter=False)).endswith(INIT_CHINESE + b"\x1bd\x04")
    assert encode([Cut("full")], GB80).endswith(b"\x1bd\x04\x1dV\x00")


def _raster_commands(data: bytes) -> list[tuple[int, int, bytes]]:
    return [
        (int.from_bytes(cmd[4:6], "little"), int.from_bytes(cmd[6:8], "little"), cmd[8:])
        for cmd in commands(data)
        if cmd.startswith(b"\x1dv0\x00")
    ]


def _column_ink(row_bytes: bytes, width_bytes: int, first_dot: int, last_dot: int) -> bool:
    rows = [row_bytes[i : i + width_bytes] for i in range(0, len(row_bytes), width_bytes)]
    return any(row[dot // 8] & (0x80 >> dot % 8) for row in rows for dot in range(first_dot, last_dot))


@pytest.mark.parametrize(("paper", "width_bytes"), [(58, 48), (80, 72)])
def test_printer_without_cjk_font_rasterises_only_chinese_lines(paper: int, width_bytes: int) -> None:
    profile = PrinterProfile("no-cjk", cjk_font=False, paper_mm=paper)
    data = encode([Text("Total 12.00"), Text("中  中"), Text("合计 ¥9", width=2, height=2)], profile)
    assert printed_lines(data, "ascii") == ["Total 12.00"]
    assert b"\x1c&" not in data
    rasters = _raster_commands(data)
    assert [(x, y) for x, y, _ in rasters] == [(width_bytes, 30), (width_bytes, 54)]
    _, _, dots = rasters[0]
    # Cells are 12 dots: the wide characters fill cells 0-1 and 4-5; cells 2-3 are the spaces.
    assert _column_ink(dots, width_bytes, 0, 24)
    assert not _column_ink(dots, width_bytes, 24, 48)
    assert _column_ink(dots, width_bytes, 48, 72)
    assert not _column_ink(dots, width_bytes, 72, width_bytes * 8)


def test_images_are_scaled_to_the_paper_and_centred() -> None:
    logo = PILImage.new("L", (1000, 100), 0)  # all black, far wider than the paper
    small = PILImage.new("1", (64, 10), 0)
    data = encode([Image(logo), Image(small)], GB58)
    (x1, y1, dots1), (x2, y2, dots2) = _raster_commands(data)
    assert (x1, y1) == (48, 38)
    assert set(dots1) == {0xFF}
    assert (x2, y2) == (48, 10)
    row = dots2[:48]
    assert row == bytes(20) + b"\xff" * 8 + bytes(20)


def test_tall_images_are_sent_in_bands() -> None:
    data = encode([Image(PILImage.new("1", (8, 600), 0))], GB58)
    assert [(x, y) for x, y, _ in _raster_commands(data)] == [(48, 256), (48, 256), (48, 88)]


def test_profile_is_checked() -> None:
    with pytest.raises(ProfileError, match="encoding"):
        PrinterProfile("bad", encoding="shift_jis")  # type: ignore[arg-type]
    with pytest.raises(ProfileError, match="58 or 80"):
        PrinterProfile("bad", paper_mm=76)  # type: ignore[arg-type]


def test_missing_raster_font_says_what_to_install() -> None:
    profile = PrinterProfile("no-font", cjk_font=False, raster_font="/nonexistent/font.ttc")
    with pytest.raises(ProfileError, match="fonts-wqy-microhei"):
        encode([Text("中文")], profile)

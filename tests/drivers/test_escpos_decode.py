"""The ESC/POS decoder: hand-written byte streams in, what the paper shows out."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from drivers.escpos import PrinterProfile, encode
from drivers.escpos_decode import EscPosDecodeError, EscPosDecoder, Marker, PrintedLine, decode_escpos
from drivers.receipt import QR, Barcode, Cell, Columns, Cut, DrawerKick, Feed, Image, Rule, Text

ESC, GS, FS, DLE = b"\x1b", b"\x1d", b"\x1c", b"\x10"
INIT = ESC + b"@"
CUT = GS + b"V\x00"


def feed_in_pieces(data: bytes, encoding: str, sizes: list[int]) -> EscPosDecoder:
    decoder = EscPosDecoder(encoding)
    pos = 0
    for size in sizes:
        decoder.feed(data[pos : pos + size])
        pos += size
    decoder.feed(data[pos:])
    return decoder


def test_plain_text_lines_and_cr_lf():
    assert decode_escpos(INIT + b"hello\r\nworld\n").lines == ["hello", "world"]


def test_trailing_text_without_lf_is_shown_as_pending_line():
    decoder = decode_escpos(b"one\ntwo")
    assert decoder.lines == ["one", "two"]
    assert [r.text for r in decoder.records] == ["one"]


def test_esc_d_feeds_blank_lines_after_printing_the_buffer():
    assert decode_escpos(b"a" + ESC + b"d\x03b\n").lines == ["a", "", "", "b"]


def test_styles_are_kept_as_line_attributes():
    stream = (
        INIT
        + ESC + b"a\x01" + ESC + b"E\x01" + "合计".encode("gb18030") + b"\n"
        + ESC + b"E\x00" + ESC + b"a\x02" + GS + b"!\x11" + b"BIG\n"
        + GS + b"!\x00" + ESC + b"a\x00" + ESC + b"-\x01" + b"under\n"
        + ESC + b"!\x38" + b"both\n"
    )  # fmt: skip
    records = decode_escpos(stream).records
    assert records[0] == PrintedLine("合计", align="center", bold=True)
    assert records[1] == PrintedLine("BIG", align="right", width=2, height=2)
    assert records[2] == PrintedLine("under", underline=True)
    assert records[3] == PrintedLine("both", bold=True, width=2, height=2)


def test_command_parameters_never_leak_into_text():
    # Each of these carries parameter bytes that are printable ASCII.
    stream = (
        ESC + b"3A" + ESC + b"2" + ESC + b"tA" + GS + b"BA" + GS + b"HA" + GS + b"hA" + GS + b"wA"
        + GS + b"fA" + FS + b"!A" + GS + b"LAA" + GS + b"WAA" + ESC + b"JA" + b"text\n"
    )  # fmt: skip
    decoder = decode_escpos(stream, "cp437")
    assert decoder.lines == ["text"]
    assert decoder.unknown == []


@pytest.mark.parametrize("encoding", ["gb18030", "gbk"])
def test_simplified_chinese_split_inside_a_character(encoding):
    text = "鸡蛋灌饼 ￥12.50"
    data = INIT + FS + b"&" + text.encode(encoding) + b"\n" + FS + b"."
    lead = data.index(text[0].encode(encoding)) + 1  # between the two bytes of 鸡
    for split in range(len(data)):
        decoder = feed_in_pieces(data, encoding, [split, 1, lead % 3])
        assert decoder.lines == [text], split
    assert feed_in_pieces(data, encoding, [lead]).lines == [text]


def test_gb18030_four_byte_character_split_everywhere():
    text = "𠮷野家 €"  # 𠮷 is a four-byte GB18030 sequence; € is two bytes
    data = text.encode("gb18030") + b"\n"
    assert len("𠮷".encode("gb18030")) == 4
    decoder = EscPosDecoder("gb18030")
    for byte in data:
        decoder.feed(bytes([byte]))
    assert decoder.lines == [text]


def test_big5_traditional_chinese_split_across_reads():
    text = "珍珠奶茶 大杯"
    data = FS + b"&" + text.encode("big5") + b"\n"
    for split in range(1, len(data)):
        assert feed_in_pieces(data, "big5", [split]).lines == [text]


def test_utf8_split_across_reads():
    text = "拿铁 ×2"
    data = text.encode("utf-8") + b"\n"
    for split in range(1, len(data)):
        assert feed_in_pieces(data, "utf-8", [split]).lines == [text]


def test_outside_chinese_mode_high_bytes_use_the_code_page():
    # FS . leaves Chinese mode: 0x9C is "£" in PC437, not half of a GB18030 character.
    assert decode_escpos(FS + b"." + b"\x9c5\n", "gb18030").lines == ["£5"]
    assert decode_escpos(FS + b"." + ESC + b"t\x10" + b"\x80\n", "gb18030").lines == ["€"]


def test_a_command_inside_a_double_byte_character_breaks_only_that_character():
    half = "鸡".encode("gb18030")[:1]
    decoder = decode_escpos(b"A" + half + ESC + b"E\x01" + b"B\n")
    assert decoder.lines == ["A\ufffdB"]


def test_barcode_both_forms_and_code128_sets():
    stream = (
        GS + b"H\x02" + GS + b"h\x50" + GS + b"w\x02"
        + GS + b"k\x02" + b"6901234567892\x00"
        + GS + b"kI\x0d{B" + b"SKU-12345{{"
        + GS + b"kI\x06{C" + bytes([12, 34, 5, 6])
        + GS + b"kE\x05" + b"ABC-1"
    )  # fmt: skip
    decoder = decode_escpos(stream)
    assert decoder.lines == [
        "[BARCODE EAN13 6901234567892]",
        "[BARCODE CODE128 SKU-12345{]",
        "[BARCODE CODE128 12340506]",
        "[BARCODE CODE39 ABC-1]",
    ]
    assert decoder.markers[0] == Marker("barcode", "6901234567892")


def test_barcode_ends_the_pending_text_line():
    assert decode_escpos(b"code:" + GS + b"kD\x08" + b"12345670").lines == [
        "code:",
        "[BARCODE EAN8 12345670]",
    ]


def test_qr_store_and_print():
    url = "https://s.example.cn/o/0001?店=1".encode()
    store = GS + b"(k" + (len(url) + 3).to_bytes(2, "little") + b"\x31\x50\x30" + url
    model = GS + b"(k\x04\x00\x31\x41\x32\x00"
    size = GS + b"(k\x03\x00\x31\x43\x06"
    level = GS + b"(k\x03\x00\x31\x45\x31"
    show = GS + b"(k\x03\x00\x31\x51\x30"
    decoder = feed_in_pieces(model + size + level + store + show + b"\n", "gb18030", [3, 7, 11])
    assert decoder.lines == ["[QR https://s.example.cn/o/0001?店=1]", ""]
    assert decoder.markers == [Marker("qr", "https://s.example.cn/o/0001?店=1")]


def test_raster_image_marker_and_bits():
    width_bytes, height = 3, 4
    bits = bytes([0xFF, 0x00, 0x81] * height)
    header = GS + b"v0\x00" + bytes([width_bytes, 0, height, 0])
    decoder = feed_in_pieces(header + bits + b"after\n", "gb18030", [5, 9])
    assert decoder.lines == ["[IMAGE 24x4]", "after"]
    (image,) = decoder.images
    assert (image.width, image.height, image.bits) == (24, 4, bits)
    assert image.ink == 10 * height


def test_image_bytes_never_print_as_text():
    bits = b"ABC\n\x1b@" * 2
    decoder = decode_escpos(GS + b"v0\x00\x02\x00\x06\x00" + bits + b"ok\n")
    assert decoder.lines == ["[IMAGE 16x6]", "ok"]


@pytest.mark.parametrize(
    ("cut", "drawer", "expected_pin"),
    [
        (GS + b"V\x00", ESC + b"p\x00\x19\xfa", "2"),
        (GS + b"V\x42\x03", ESC + b"p\x01\x19\xfa", "5"),
        (GS + b"V\x31", ESC + b"p\x30\x32\x32", "2"),
    ],
)
def test_cut_and_drawer_markers(cut, drawer, expected_pin):
    decoder = decode_escpos(b"last line\n" + cut + drawer)
    assert decoder.lines == ["last line", "[CUT]", f"[DRAWER {expected_pin}]"]
    assert [m.kind for m in decoder.markers] == ["cut", "drawer"]


def test_status_requests_are_markers_not_lines():
    decoder = EscPosDecoder()
    new = decoder.feed(DLE + b"\x04\x01" + b"x" + DLE + b"\x04")
    assert new == [Marker("status", "1")]
    assert decoder.feed(b"\x04") == [Marker("status", "4")]
    assert decoder.status_requests == [1, 4]
    assert decoder.lines == ["x"]


def test_init_drops_unprinted_text_and_resets_style():
    decoder = decode_escpos(ESC + b"E\x01" + b"lost" + INIT + b"kept\n")
    assert decoder.records == [PrintedLine("kept")]


def test_jobs_split_at_cuts():
    decoder = decode_escpos(b"one\n" + CUT + b"two\nthree\n" + CUT + b"tail\n")
    assert decoder.jobs() == [["one", "[CUT]"], ["two", "three", "[CUT]"], ["tail"]]


def test_unknown_sequences_are_skipped_and_recorded():
    decoder = decode_escpos(ESC + b"\x7f" + b"a" + GS + b"\x01" + b"b" + FS + b"\x02" + b"c\n")
    assert decoder.lines == ["abc"]
    assert decoder.unknown == [ESC + b"\x7f", GS + b"\x01", FS + b"\x02"]


def test_barcode_without_terminator_is_dropped_not_buffered_forever():
    decoder = decode_escpos(GS + b"k\x04" + b"A" * 300 + b"\n")
    assert decoder.unknown == [GS + b"k\x04"]
    assert decoder.lines == ["A" * 300]


def test_unknown_encoding_is_a_driver_error():
    with pytest.raises(EscPosDecodeError):
        EscPosDecoder("klingon")


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=400), encoding=st.sampled_from(["gb18030", "gbk", "big5", "utf-8", "cp437"]))
def test_arbitrary_bytes_never_raise(data, encoding):
    decoder = decode_escpos(data, encoding)
    assert all(isinstance(line, str) for line in decoder.lines)


# Streams made of real command prefixes hit the parsers far more often than random bytes do.
_PIECES = st.sampled_from(
    [ESC, GS, FS, DLE, b"\x00", b"\n", b"(k", b"v0", b"k", b"V", b"p", b"!", b"\x04", b"\x03\x00", b"&"]
)
_COMMANDISH = st.lists(st.one_of(_PIECES, st.binary(max_size=6)), max_size=60).map(b"".join)


@settings(max_examples=200, deadline=None)
@given(data=_COMMANDISH, cuts=st.lists(st.integers(0, 40), max_size=8))
def test_any_split_gives_the_same_result(data, cuts):
    whole = decode_escpos(data, "gb18030")
    pieces = feed_in_pieces(data, "gb18030", cuts)
    assert pieces.lines == whole.lines
    assert pieces.markers == whole.markers
    assert pieces.unknown == whole.unknown


@pytest.mark.parametrize("encoding", ["gb18030", "big5", "utf-8"])
def test_round_trip_through_our_encoder(encoding):
    logo = PILImage.new("1", (64, 16), 1)
    logo.paste(0, (8, 4, 56, 12))  # a black bar, so the raster is not blank
    document = [
        Image(logo),
        Text("珍珠奶茶", width=2, height=2, bold=True, align="center"),
        Rule(),
        Columns((Cell("大杯"), Cell("¥12.50", width=8, align="right"))),
        Feed(1),
        QR("https://example.cn/o/0042"),
        Barcode("CODE128", "ORD-0042"),
        DrawerKick(pin=5),
        Cut(),
    ]
    profile = PrinterProfile("test", encoding=encoding, paper_mm=58)
    decoder = decode_escpos(encode(document, profile), encoding)
    lines = decoder.lines
    assert decoder.unknown == []
    assert lines[0].startswith("[IMAGE ")
    assert decoder.images[0].ink > 0
    title = next(r for r in decoder.records if "珍珠奶茶" in r.text)
    # The encoder centres by padding with spaces itself.
    assert (title.text.strip(), title.bold, title.width, title.height) == ("珍珠奶茶", True, 2, 2)
    assert any(line.startswith("大杯") and line.endswith("12.50") for line in lines)
    assert "[QR https://example.cn/o/0042]" in lines
    assert "[BARCODE CODE128 ORD-0042]" in lines
    assert lines.index("[DRAWER 5]") < lines.index("[CUT]") == len(lines) - 1
    assert decoder.jobs() == [lines]

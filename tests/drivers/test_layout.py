"""Receipt layout: cell widths, wrapping, columns and substitutions, with no printer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.escpos import PrinterProfile
from drivers.layout import (
    LayoutError,
    LayoutRules,
    Line,
    cell_widths,
    display_width,
    layout,
    printable_text,
    truncate,
    wrap,
)
from drivers.receipt import Cell, Columns, Feed, ReceiptError, Rule, Text

GB58 = LayoutRules(columns=32, wide_non_ascii=True)
GB80 = LayoutRules(columns=48, wide_non_ascii=True)
UTF8 = LayoutRules(columns=32, ambiguous_wide=False, fullwidth_yen=False, encoding="utf-8")
GBK = LayoutRules(columns=32, wide_non_ascii=True, encoding="gbk")


def width(text: str, rules: LayoutRules) -> int:
    return display_width(text, ambiguous_wide=rules.ambiguous_wide, wide_non_ascii=rules.wide_non_ascii)


def item(name: str, qty: str, amount: str) -> Columns:
    return Columns((Cell(name), Cell(qty, width=4, align="right"), Cell(amount, width=9, align="right")))


def texts(blocks: list) -> list[str]:
    return [block.text for block in blocks if isinstance(block, Line)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("abc", 3),
        ("农夫山泉", 8),
        ("农夫山泉 550ml", 14),
        ("ＡＢ", 4),  # fullwidth Latin
        ("ｱｲ", 2),  # halfwidth katakana
        ("e\u0301", 1),  # combining acute adds nothing
        ("", 0),
    ],
)
def test_display_width_counts_wide_and_combining(text: str, expected: int) -> None:
    assert display_width(text) == expected


def test_ambiguous_characters_follow_the_flag() -> None:
    quotes = "“”‘’…—·×"
    assert display_width(quotes, ambiguous_wide=True) == 16
    assert display_width(quotes, ambiguous_wide=False) == 8


def test_chinese_mode_counts_every_non_ascii_character_as_two_cells() -> None:
    # A GB printer prints "é" from its 24x24 font, so "Café" takes five cells there.
    assert display_width("Café", wide_non_ascii=True) == 5
    assert display_width("Café") == 4


def test_profiles_choose_the_width_rules() -> None:
    assert PrinterProfile("gb").layout_rules().wide_non_ascii is True
    assert PrinterProfile("u8", encoding="utf-8", ambiguous_wide=False).layout_rules().ambiguous_wide is False
    assert PrinterProfile("raster", cjk_font=False).layout_rules().wide_non_ascii is False
    assert PrinterProfile("p58", paper_mm=58).layout_rules().columns == 32


def test_yen_becomes_fullwidth_and_counts_two_cells() -> None:
    assert printable_text("¥4.00", GB58) == "￥4.00"
    assert width(printable_text("¥4.00", GB58), GB58) == 6
    # Big5 has one yen sign (A244), which Python's codec spells U+00A5.
    big5 = LayoutRules(columns=32, wide_non_ascii=True, encoding="big5")
    assert printable_text("￥4.00", big5) == "¥4.00"
    assert printable_text("¥4.00", UTF8) == "¥4.00"


def test_yen_substitution_keeps_columns_aligned() -> None:
    lines = texts(layout([item("可乐", "1", "¥3.00"), item("雪碧", "1", "￥13.00")], GB58))
    assert lines == ["可乐                 1    ￥3.00", "雪碧                 1   ￥13.00"]
    assert {width(line, GB58) for line in lines} == {32}


def test_unencodable_and_control_characters_are_replaced_visibly() -> None:
    # Hangul is not in GBK; an emoji is in no printer font; ESC must never reach the printer.
    assert printable_text("한A\x1b@😀", GBK) == "??A?@??"
    assert printable_text("a\u200bb\r", GB58) == "ab"  # invisible format characters are dropped
    assert printable_text("e\u0301", GB58) == "é"  # NFC first, so the accent survives


def test_wrap_breaks_chinese_anywhere_and_english_at_spaces() -> None:
    assert wrap("康师傅红烧牛肉面(桶装)超大份加量", 16, GB58) == ["康师傅红烧牛肉面", "(桶装)超大份加量"]
    assert wrap("Nongfu Spring mineral water 550ml bottle", 16, GB58) == [
        "Nongfu Spring",
        "mineral water",
        "550ml bottle",
    ]
    assert wrap("中文 English mixed 混合文本", 12, GB58) == ["中文 English", "mixed 混合文", "本"]


def test_wrap_never_splits_a_wide_character() -> None:
    # 7 cells: three Chinese characters fit, the fourth would straddle the edge.
    assert wrap("一二三四五", 7, GB58) == ["一二三", "四五"]


def test_wrap_keeps_the_currency_sign_with_its_amount() -> None:
    assert wrap("小计：¥12.00", 12, GB58) == ["小计：", "￥12.00"]


def test_wrap_splits_a_word_longer_than_the_line() -> None:
    assert wrap("a" * 20, 8, GB58) == ["aaaaaaaa", "aaaaaaaa", "aaaa"]


def test_wrap_honours_newlines_and_keeps_empty_lines() -> None:
    assert wrap("第一行\n\n第三行", 32, GB58) == ["第一行", "", "第三行"]


def test_truncate_never_cuts_a_wide_character_in_half() -> None:
    assert truncate("农夫山泉", 5, GB58) == "农夫"
    assert truncate("ab农夫", 3, GB58) == "ab"


def test_columns_at_58mm_wrap_the_name_and_keep_numbers_on_the_first_line() -> None:
    lines = texts(layout([item("德芙巧克力礼盒装 Dove Hazelnut Gift Box", "1", "¥128.00")], GB58))
    assert lines == ["德芙巧克力礼盒装     1  ￥128.00", "Dove Hazelnut", "Gift Box"]


def test_columns_at_80mm_give_the_name_the_extra_width() -> None:
    lines = texts(layout([item("德芙巧克力礼盒装 Dove Hazelnut Gift Box", "1", "¥128.00")], GB80))
    assert lines == ["德芙巧克力礼盒装 Dove Hazelnut       1  ￥128.00", "Gift Box"]
    assert width(lines[0], GB80) == 48


def test_relative_cells_share_the_paper_by_weight() -> None:
    row = Columns((Cell("a", weight=2), Cell("b", weight=1)))
    assert cell_widths(row, 48) == [31, 16]


def test_fixed_widths_too_wide_for_58mm_keep_their_proportions() -> None:
    row = Columns((Cell("名称", width=30), Cell("数量", width=10), Cell("金额", width=10)))
    widths = cell_widths(row, 32)
    assert sum(widths) == 30
    assert widths[0] > widths[1] == widths[2]


def test_too_many_columns_for_the_paper_is_an_error() -> None:
    with pytest.raises(LayoutError, match="do not fit"):
        cell_widths(Columns(tuple(Cell("x") for _ in range(12))), 32)


def test_truncated_cell_stays_on_one_line() -> None:
    row = Columns((Cell("备注：少冰少糖多加珍珠", width=10, truncate=True), Cell("¥5.00", align="right")))
    assert texts(layout([row], GB58)) == ["备注：少冰                ￥5.00"]


def test_magnified_text_uses_fewer_columns() -> None:
    blocks = layout([Text("好邻居便利店欢迎您光临本店", width=2, height=2, align="center")], GB58)
    assert blocks == [
        Line("好邻居便利店欢迎", width=2, height=2),
        Line("   您光临本店", width=2, height=2),
    ]
    triple = layout([Text("abcdefghijk", width=3)], GB58)
    assert texts(triple) == ["abcdefghij", "k"]


def test_alignment_pads_on_the_left_only() -> None:
    blocks = layout([Text("合计", align="right"), Text("谢谢", align="center")], GB58)
    assert texts(blocks) == [" " * 28 + "合计", " " * 14 + "谢谢"]


def test_rule_fills_the_paper_even_with_a_wide_character() -> None:
    assert texts(layout([Rule(), Rule("═")], GB58)) == ["-" * 32, "═" * 16]


def test_non_text_elements_pass_through_in_order() -> None:
    feed = Feed(2)
    assert layout([Text("a"), feed, Text("b")], GB58) == [Line("a"), feed, Line("b")]


def test_element_values_are_checked() -> None:
    with pytest.raises(ReceiptError, match="between 1 and 8"):
        Text("x", width=9)
    with pytest.raises(ReceiptError, match="at least one cell"):
        Columns(())


_rules = st.builds(
    LayoutRules,
    columns=st.sampled_from([32, 48]),
    ambiguous_wide=st.booleans(),
    wide_non_ascii=st.booleans(),
    fullwidth_yen=st.booleans(),
    encoding=st.sampled_from(["gb18030", "gbk", "big5", "utf-8"]),
)


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet=st.characters(codec=None), max_size=200),
    magnification=st.integers(1, 8),
    align=st.sampled_from(["left", "center", "right"]),
    rules=_rules,
)
def test_text_lines_never_exceed_the_paper(
    text: str, magnification: int, align: str, rules: LayoutRules
) -> None:
    for line in layout([Text(text, width=magnification, align=align)], rules):
        assert isinstance(line, Line)
        assert width(line.text, rules) * magnification <= rules.columns
        assert "\n" not in line.text
        assert all(ord(char) >= 0x20 for char in line.text)


@settings(max_examples=300, deadline=None)
@given(
    cells=st.lists(
        st.tuples(st.text(max_size=60), st.one_of(st.none(), st.integers(1, 20)), st.booleans()),
        min_size=1,
        max_size=4,
    ),
    rules=_rules,
)
def test_columns_never_exceed_the_paper(
    cells: list[tuple[str, int | None, bool]], rules: LayoutRules
) -> None:
    row = Columns(tuple(Cell(text, width=fixed, truncate=cut) for text, fixed, cut in cells))
    for line in layout([row], rules):
        assert isinstance(line, Line)
        assert width(line.text, rules) <= rules.columns

"""Layout's per-character memo tables and ASCII shortcuts give the answers unicodedata gives."""

from __future__ import annotations

import importlib
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.layout import LayoutRules, display_width, printable_text

# The module itself: `drivers.layout` as an attribute of the package is the `layout` function.
layout = importlib.import_module("drivers.layout")

_rules = st.builds(
    LayoutRules,
    columns=st.just(32),
    ambiguous_wide=st.booleans(),
    wide_non_ascii=st.booleans(),
    fullwidth_yen=st.booleans(),
    encoding=st.sampled_from(["gb18030", "gbk", "big5", "utf-8"]),
)
# Every code point, plus ASCII alone so the shortcuts for ASCII text are taken often.
_texts = st.one_of(
    st.text(alphabet=st.characters(codec=None)), st.text(alphabet=st.characters(max_codepoint=127))
)


def _slow_width(text: str, rules: LayoutRules) -> int:
    return sum(layout._char_width(char, rules.ambiguous_wide, rules.wide_non_ascii) for char in text)


def _slow_printable(text: str, rules: LayoutRules) -> str:
    text = unicodedata.normalize("NFC", text.replace("\t", " "))
    return "".join(layout._printable(char, rules) for char in text)


def _check(text: str, rules: LayoutRules) -> None:
    flags = {"ambiguous_wide": rules.ambiguous_wide, "wide_non_ascii": rules.wide_non_ascii}
    assert display_width(text, **flags) == _slow_width(text, rules)
    assert printable_text(text, rules) == _slow_printable(text, rules)


@settings(max_examples=500, deadline=None)
@given(text=_texts, rules=_rules)
def test_memoised_width_and_substitution_match_unicodedata(text: str, rules: LayoutRules) -> None:
    _check(text, rules)
    _check(text, rules)  # the second time every character comes from the tables


@pytest.mark.parametrize("text", ["", "abc\x07\r", "合计 ¥12.00 “好”😀\u200b", "e\u0301\u3000\u00a0"])
def test_full_tables_still_answer_correctly(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr(layout, "_MEMO_LIMIT", 0)
    layout._cell_widths.cache_clear()
    layout._substitutions.cache_clear()
    rules = LayoutRules(wide_non_ascii=True)
    _check(text, rules)
    assert not layout._cell_widths(True, True)
    assert not layout._substitutions(rules)

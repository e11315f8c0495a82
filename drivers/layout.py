"""Pure receipt layout: character cell widths, wrapping and columns on a fixed-pitch printer.

A thermal printer in font A prints on a grid of character cells (12 x 24 dots): 32 cells
across 58 mm paper, 48 across 80 mm. East-Asian wide characters take two cells. Layout
works in cells and returns logical lines whose characters are exactly the ones the
encoder will print (after the same substitutions), so what is measured is what prints.

Width rules:

- East-Asian Wide and Fullwidth characters count 2, combining marks 0, the rest 1.
- East-Asian *Ambiguous* characters (“ ” ‘ ’ … — · × ° ± ① ■ and Greek/Cyrillic) count 2
  when ``ambiguous_wide`` is set: GB2312/GBK/GB18030 and Big5 printer fonts store them as
  double-byte glyphs printed in a full cell pair. A UTF-8 printer with a Latin font prints
  them narrow, so the profile decides.
- ``wide_non_ascii``: a printer in Chinese mode (FS &) prints *every* multi-byte character
  from its 24 x 24 font, so "é" in "Café" takes two cells too. Encoder profiles for
  GB18030/GBK/Big5 printers with a built-in CJK font set it; it overrides the rules above
  for non-ASCII characters.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeAlias

from drivers.errors import DriverError
from drivers.receipt import (
    QR,
    Align,
    Barcode,
    Columns,
    Cut,
    Document,
    DrawerKick,
    Feed,
    Image,
    Rule,
    Text,
)

YEN = "\u00a5"
FULLWIDTH_YEN = "\uffe5"
_MIN_CELL = 2  # a cell must hold one wide character, or wrapping could not progress
_MEMO_LIMIT = 8192  # characters remembered per width/substitution table; a store meets far fewer
_SPACES = (" ", "\u3000")
# A line should not end on an opening bracket or a currency sign ("￥" / "12.00" reads as two amounts).
_OPENERS = frozenset("￥$(（[【《「『“‘")


class LayoutError(DriverError):
    """A row cannot be laid out on this paper (e.g. more columns than the paper has cells)."""


@dataclass(frozen=True)
class LayoutRules:
    """How the target printer measures and prints characters; built from a printer profile."""

    columns: int = 48
    ambiguous_wide: bool = True
    wide_non_ascii: bool = False
    fullwidth_yen: bool = True
    encoding: str = "gb18030"
    replacement: str = "?"

    def __post_init__(self) -> None:
        if self.columns < _MIN_CELL:
            raise LayoutError(f"paper must be at least {_MIN_CELL} columns wide, got {self.columns}")
        if len(self.replacement) != 1 or not self.replacement.isascii():
            raise LayoutError("the replacement character must be one ASCII character")


@dataclass(frozen=True)
class Line:
    """One printed line: its text (already aligned, no trailing spaces) and its style."""

    text: str
    width: int = 1
    height: int = 1
    bold: bool = False
    underline: bool = False
    invert: bool = False


Block: TypeAlias = Line | QR | Barcode | Image | Feed | Cut | DrawerKick


def _char_width(char: str, ambiguous_wide: bool, wide_non_ascii: bool) -> int:
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    if wide_non_ascii and not char.isascii():
        return 2
    kind = unicodedata.east_asian_width(char)
    if kind in ("W", "F") or (kind == "A" and ambiguous_wide):
        return 2
    return 1


class _CellWidths(dict[str, int]):
    """Cells per character for one pair of width flags, worked out the first time a character is seen.

    Layout measures every character several times per receipt; a dict lookup costs a fraction
    of asking unicodedata (or an lru_cache) again. Growth stops at `_MEMO_LIMIT` characters.
    """

    def __init__(self, ambiguous_wide: bool, wide_non_ascii: bool) -> None:
        super().__init__()
        self.ambiguous_wide = ambiguous_wide
        self.wide_non_ascii = wide_non_ascii

    def __missing__(self, char: str) -> int:
        cells = _char_width(char, self.ambiguous_wide, self.wide_non_ascii)
        if len(self) < _MEMO_LIMIT:
            self[char] = cells
        return cells


@lru_cache(maxsize=4)
def _cell_widths(ambiguous_wide: bool, wide_non_ascii: bool) -> _CellWidths:
    return _CellWidths(ambiguous_wide, wide_non_ascii)


def display_width(text: str, *, ambiguous_wide: bool = False, wide_non_ascii: bool = False) -> int:
    """Number of character cells `text` takes on a fixed-pitch printer."""
    if text.isascii():
        return len(text)  # every ASCII character, control characters included, takes one cell
    return sum(map(_cell_widths(ambiguous_wide, wide_non_ascii).__getitem__, text))


def _width(text: str, rules: LayoutRules) -> int:
    return display_width(text, ambiguous_wide=rules.ambiguous_wide, wide_non_ascii=rules.wide_non_ascii)


def _printable(char: str, rules: LayoutRules) -> str:
    if char in (YEN, FULLWIDTH_YEN) and rules.fullwidth_yen:
        # CJK printer fonts have one yen sign, full width (two cells): GB2312/GBK at A3A4, which
        # is U+FFE5 (U+00A5 is not in GBK at all); Big5 at A244, which Python's codec calls U+00A5.
        return YEN if rules.encoding == "big5" else FULLWIDTH_YEN
    category = unicodedata.category(char)
    if category in ("Mn", "Me", "Cf") or char == "\r":
        # A printer cannot overlay a mark on the previous cell; after NFC the rest are rare.
        return ""
    if category in ("Zs", "Zl", "Zp") and char != "\u3000":
        return " "
    cells = max(1, _char_width(char, rules.ambiguous_wide, rules.wide_non_ascii))
    if category in ("Cc", "Cs", "Co", "Cn") or ord(char) > 0xFFFF:
        # Control bytes would be read as printer commands; private-use and astral characters
        # (emoji) have no glyph in any printer font. One mark per cell keeps columns aligned.
        return rules.replacement * cells
    try:
        char.encode(rules.encoding)
    except UnicodeEncodeError:
        return rules.replacement * cells
    return char


class _Substitutions(dict[int, str]):
    """A `str.translate` table from code point to what one printer prints, filled in on first sight."""

    def __init__(self, rules: LayoutRules) -> None:
        super().__init__()
        self.rules = rules

    def __missing__(self, code: int) -> str:
        printed = _printable(chr(code), self.rules)
        if len(self) < _MEMO_LIMIT:
            self[code] = printed
        return printed


@lru_cache(maxsize=16)
def _substitutions(rules: LayoutRules) -> _Substitutions:
    # One table per rules, so `rules` is hashed once per text rather than once per character.
    return _Substitutions(rules)


def printable_text(text: str, rules: LayoutRules) -> str:
    """`text` as the printer will print it: NFC, ¥ substituted, unprintable characters replaced."""
    text = unicodedata.normalize("NFC", text.replace("\t", " "))
    if text.isascii() and text.isprintable():
        return text  # every codec prints printable ASCII as itself, one cell per character
    return text.translate(_substitutions(rules))


def _wrap_paragraph(text: str, columns: int, rules: LayoutRules) -> list[str]:
    if _width(text, rules) <= columns:
        return [text.rstrip(" \u3000")]  # most cells (amounts, labels, short names) fit as they are
    lines: list[str] = []
    current: list[str] = []
    used = 0
    # Index in `current` where a new line may begin: after a space or next to a wide character.
    breakable = 0
    widths = _cell_widths(rules.ambiguous_wide, rules.wide_non_ascii)
    for original in text:
        cells = widths[original]
        char = original
        if cells > columns:  # a wide character cannot fit a one-cell column at all
            char, cells = rules.replacement, 1
        if used + cells > columns:
            if char in _SPACES:
                lines.append("".join(current).rstrip(" \u3000"))
                current, used, breakable = [], 0, 0
                continue
            if cells == 1 and breakable > 0:
                head, current = current[:breakable], current[breakable:]
            elif len(current) > 1 and current[-1] in _OPENERS:
                head, current = current[:-1], current[-1:]
            else:
                # Chinese breaks anywhere; an English word longer than the line must break too.
                head, current = current, []
            lines.append("".join(head).rstrip(" \u3000"))
            used = _width("".join(current), rules)
            breakable = 0
        if char in _SPACES and not current and lines:
            continue
        current.append(char)
        used += cells
        if char in _SPACES or (cells == 2 and char not in _OPENERS):
            breakable = len(current)
        elif cells == 2:
            breakable = len(current) - 1
    lines.append("".join(current).rstrip(" \u3000"))
    return lines


def wrap(text: str, columns: int, rules: LayoutRules) -> list[str]:
    """Wrap printable text into lines at most `columns` cells wide, honouring newlines."""
    if columns < 1:
        raise LayoutError(f"cannot wrap into {columns} columns")
    lines: list[str] = []
    for paragraph in text.replace("\r\n", "\n").split("\n"):
        lines.extend(_wrap_paragraph(printable_text(paragraph, rules), columns, rules))
    return lines


def truncate(text: str, columns: int, rules: LayoutRules) -> str:
    """The longest prefix of the printable text that fits; a wide character is never halved."""
    kept: list[str] = []
    used = 0
    for char in printable_text(text.replace("\n", " "), rules):
        cells = _width(char, rules)
        if used + cells > columns:
            break
        kept.append(char)
        used += cells
    return "".join(kept)


def pad(text: str, columns: int, align: Align, rules: LayoutRules) -> str:
    """`text` padded with spaces to exactly `columns` cells (it must already fit)."""
    spare = max(0, columns - _width(text, rules))
    if align == "right":
        return " " * spare + text
    if align == "center":
        left = spare // 2
        return " " * left + text + " " * (spare - left)
    return text + " " * spare


def _share(space: int, weights: list[int]) -> list[int]:
    widths = [_MIN_CELL] * len(weights)
    rest = space - _MIN_CELL * len(weights)
    total = sum(weights)
    extra = [rest * weight // total for weight in weights]
    widths = [width + more for width, more in zip(widths, extra, strict=True)]
    # Rounding leftovers go to the first cell: it holds the item name, which wraps.
    widths[0] += space - sum(widths)
    return widths


def cell_widths(row: Columns, columns: int) -> list[int]:
    """Width in cells of each cell of `row` on paper `columns` wide (gaps excluded)."""
    cells = row.cells
    space = columns - row.gap * (len(cells) - 1)
    if space < _MIN_CELL * len(cells):
        raise LayoutError(f"{len(cells)} columns do not fit on paper {columns} characters wide")
    fixed_total = sum(cell.width or 0 for cell in cells)
    relative = [cell for cell in cells if cell.width is None]
    if fixed_total + _MIN_CELL * len(relative) > space:
        # Widths chosen for 80 mm paper on a 58 mm printer: keep their proportions instead.
        return _share(space, [cell.width or cell.weight for cell in cells])
    shares = iter(_share(space - fixed_total, [cell.weight for cell in relative]) if relative else [])
    widths = [cell.width if cell.width is not None else next(shares) for cell in cells]
    if not relative:
        widths[0] += space - fixed_total  # fixed cells narrower than the paper: the name gets the rest
    return widths


def _columns(row: Columns, rules: LayoutRules) -> list[Line]:
    widths = cell_widths(row, rules.columns)
    texts = [
        [truncate(cell.text, width, rules)] if cell.truncate else wrap(cell.text, width, rules)
        for cell, width in zip(row.cells, widths, strict=True)
    ]
    gap = " " * row.gap
    lines = []
    for index in range(max(len(cell_lines) for cell_lines in texts)):
        parts = [
            pad(cell_lines[index] if index < len(cell_lines) else "", width, cell.align, rules)
            for cell, width, cell_lines in zip(row.cells, widths, texts, strict=True)
        ]
        lines.append(Line(gap.join(parts).rstrip(" "), bold=row.bold))
    return lines


def _text(element: Text, rules: LayoutRules) -> list[Line]:
    columns = max(1, rules.columns // element.width)
    return [
        Line(
            pad(line, columns, element.align, rules).rstrip(" "),
            width=element.width,
            height=element.height,
            bold=element.bold,
            underline=element.underline,
            invert=element.invert,
        )
        for line in wrap(element.content, columns, rules)
    ]


def _rule(element: Rule, rules: LayoutRules) -> Line:
    char = printable_text(element.char, rules)[:1] or "-"
    cells = _width(char, rules) or 1
    return Line(char * (rules.columns // cells))


def layout(document: Document, rules: LayoutRules) -> list[Block]:
    """Turn a document into printed lines; non-text elements pass through in order."""
    blocks: list[Block] = []
    for element in document:
        if isinstance(element, Text):
            blocks.extend(_text(element, rules))
        elif isinstance(element, Columns):
            blocks.extend(_columns(element, rules))
        elif isinstance(element, Rule):
            blocks.append(_rule(element, rules))
        else:
            blocks.append(element)
    return blocks

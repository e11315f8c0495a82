"""ESC/POS encoder: a receipt document and a printer profile in, the exact bytes to send out.

We pick the character encoding from the profile and never let a library guess a code
page: guessing is what garbles Chinese (python-escpos issues #190, #269, #281, #491, #678).
See docs/decisions/0006-own-escpos-encoder.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, TypeAlias

from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from drivers.errors import DriverError
from drivers.layout import Block, LayoutRules, Line, display_width, layout
from drivers.receipt import QR, Align, Barcode, Cut, Document, DrawerKick, Feed, Image

Encoding: TypeAlias = Literal["gb18030", "gbk", "big5", "utf-8"]

DEFAULT_RASTER_FONT = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"
ESC = b"\x1b"
GS = b"\x1d"
FS = b"\x1c"
LF = b"\n"
INIT = ESC + b"@"
FONT_A = ESC + b"!\x00"
CHINESE_MODE = FS + b"&"

_CJK_CODECS = ("gb18030", "gbk", "big5")
_CELL_DOTS = 12  # font A: 12 x 24 dots per character cell
_LINE_DOTS = 24
_LINE_GAP_DOTS = 6  # a text line advances 30 dots; raster lines keep the same pitch
_GLYPH_SIZE = 22  # WenQuanYi Micro Hei at 22 px fits a CJK glyph in 24 dots with its descenders
_BAND_ROWS = 256  # rows per GS v 0 command: cheap printers have small receive buffers
_ALIGN = {"left": 0, "center": 1, "right": 2}
_HRI = {"none": 0, "above": 1, "below": 2, "both": 3}
_QR_LEVEL = {"L": 48, "M": 49, "Q": 50, "H": 51}
_BARCODE = {
    "UPC-A": 65,
    "UPC-E": 66,
    "EAN13": 67,
    "EAN8": 68,
    "CODE39": 69,
    "ITF": 70,
    "CODABAR": 71,
    "CODE93": 72,
    "CODE128": 73,
}
_INVERT_BITS = bytes(255 - value for value in range(256))
_THRESHOLD = [255 if value >= 128 else 0 for value in range(256)]
_NEGATIVE = [255 - value for value in range(256)]


class ProfileError(DriverError):
    """A printer profile is inconsistent (unknown encoding, paper width, missing raster font)."""


@dataclass(frozen=True)
class PrinterProfile:
    """What a printer model can do: its character set, paper, cutter and drawer wiring."""

    name: str
    encoding: Encoding = "gb18030"
    cjk_font: bool = True
    paper_mm: Literal[58, 80] = 80
    cutter: bool = True
    drawer_pin: Literal[2, 5] = 2
    drawer_on_ms: int = 100
    drawer_off_ms: int = 500
    ambiguous_wide: bool = True
    raster_font: str = DEFAULT_RASTER_FONT
    cut_feed_lines: int = 4

    def __post_init__(self) -> None:
        if self.encoding not in (*_CJK_CODECS, "utf-8"):
            raise ProfileError(f"printer {self.name!r}: unsupported encoding {self.encoding!r}")
        if self.paper_mm not in (58, 80):
            raise ProfileError(f"printer {self.name!r}: paper must be 58 or 80 mm, got {self.paper_mm}")
        if self.drawer_pin not in (2, 5):
            raise ProfileError(f"printer {self.name!r}: drawer pin must be 2 or 5, got {self.drawer_pin}")
        if not 0 <= self.cut_feed_lines <= 255:
            raise ProfileError(f"printer {self.name!r}: cut feed must be 0 to 255 lines")

    @property
    def columns(self) -> int:
        """Font A characters per line."""
        return 32 if self.paper_mm == 58 else 48

    @property
    def dots(self) -> int:
        """Printable width in dots at 203 dpi."""
        return 384 if self.paper_mm == 58 else 576

    @property
    def chinese_mode(self) -> bool:
        """Whether text goes through the printer's double-byte CJK font (FS &)."""
        return self.cjk_font and self.encoding in _CJK_CODECS

    def layout_rules(self) -> LayoutRules:
        """How layout must measure text so columns line up on this printer."""
        raster = not self.cjk_font
        return LayoutRules(
            columns=self.columns,
            ambiguous_wide=self.ambiguous_wide,
            wide_non_ascii=self.chinese_mode,
            fullwidth_yen=self.chinese_mode,
            # Raster lines are drawn from a TrueType font, so any BMP character can print.
            encoding="utf-8" if raster else self.encoding,
        )


def render(document: Document, profile: PrinterProfile) -> list[Block]:
    """The logical lines (and graphics) `document` prints as on this printer."""
    return layout(document, profile.layout_rules())


def _u16(value: int) -> bytes:
    return value.to_bytes(2, "little")


def _ms_units(ms: int) -> int:
    return max(1, min(255, ms // 2))


@lru_cache(maxsize=4)
def _font(path: str) -> ImageFont.FreeTypeFont:
    try:
        return ImageFont.truetype(path, _GLYPH_SIZE)
    except OSError as err:
        raise ProfileError(
            f"raster font {path!r} cannot be loaded; install fonts-wqy-microhei or set raster_font"
        ) from err


@lru_cache(maxsize=4096)
def _glyph(path: str, char: str, cells: int) -> PILImage.Image:
    """One character drawn centred in its cells; cached because FreeType rendering dominates raster time."""
    font = _font(path)
    glyph = PILImage.new("L", (cells * _CELL_DOTS, _LINE_DOTS), 0)
    left = (glyph.width - font.getlength(char)) / 2
    ImageDraw.Draw(glyph).text((left, -2), char, font=font, fill=255)
    return glyph


def _raster(image: PILImage.Image) -> bytes:
    """GS v 0 commands for a 1-bit image whose set bits are ink and whose width is a multiple of 8."""
    width_bytes = image.width // 8
    data = image.tobytes()
    out = bytearray()
    for top in range(0, image.height, _BAND_ROWS):
        rows = min(_BAND_ROWS, image.height - top)
        band = data[top * width_bytes : (top + rows) * width_bytes]
        out += GS + b"v0\x00" + _u16(width_bytes) + _u16(rows) + band
    return bytes(out)


def _line_image(line: Line, profile: PrinterProfile, rules: LayoutRules) -> PILImage.Image:
    """Draw a line on the same 12-dot cell grid the printer's font uses, so columns still align."""
    cells = profile.columns // line.width
    canvas = PILImage.new("L", (cells * _CELL_DOTS, _LINE_DOTS), 0)
    x = 0
    for char in line.text:
        span = display_width(char, ambiguous_wide=rules.ambiguous_wide, wide_non_ascii=rules.wide_non_ascii)
        if span and char.strip():
            glyph = _glyph(profile.raster_font, char, span)
            for dx in (0, 1) if line.bold else (0,):
                canvas.paste(255, (x + dx, 0), mask=glyph)
        x += span * _CELL_DOTS
    draw = ImageDraw.Draw(canvas)
    if line.underline:
        draw.line([(0, _LINE_DOTS - 1), (x - 1, _LINE_DOTS - 1)], fill=255, width=1)
    if line.invert:
        inked = canvas.crop((0, 0, x, _LINE_DOTS)).point(_NEGATIVE)
        canvas.paste(inked, (0, 0))
    if line.width > 1 or line.height > 1:
        # The printer magnifies by repeating dots; NEAREST does the same.
        size = (canvas.width * line.width, _LINE_DOTS * line.height)
        canvas = canvas.resize(size, PILImage.Resampling.NEAREST)
    paper = PILImage.new("L", (profile.dots, canvas.height + _LINE_GAP_DOTS), 0)
    paper.paste(canvas, (0, 0))
    return paper.point(_THRESHOLD).convert("1", dither=PILImage.Dither.NONE)


def _picture(element: Image, dots: int) -> PILImage.Image:
    picture = element.image.convert("L")
    if picture.width > dots:
        height = max(1, round(picture.height * dots / picture.width))
        picture = picture.resize((dots, height), PILImage.Resampling.LANCZOS)
    # Dithered to 1 bit (white = 1), then placed on a full-width white strip so alignment
    # does not depend on whether a printer honours ESC a for raster images.
    mono = picture.convert("1")
    paper = PILImage.new("1", (dots, mono.height), 1)
    spare = dots - mono.width
    offset = {"left": 0, "center": spare // 2, "right": spare}[element.align]
    paper.paste(mono, (offset, 0))
    return PILImage.frombytes("1", paper.size, paper.tobytes().translate(_INVERT_BITS))


class _Encoder:
    """Tracks the printer's style state so each command is sent only when it changes."""

    def __init__(self, profile: PrinterProfile) -> None:
        self.profile = profile
        self.rules = profile.layout_rules()
        self.out = bytearray(INIT + FONT_A)
        if profile.chinese_mode:
            self.out += CHINESE_MODE
        self.size = 0
        self.bold = False
        self.underline = False
        self.invert = False
        self.align = 0

    def set_align(self, align: Align) -> None:
        value = _ALIGN[align]
        if value != self.align:
            self.out += ESC + b"a" + bytes([value])
            self.align = value

    def style(self, line: Line) -> None:
        size = (line.width - 1) << 4 | (line.height - 1)
        if size != self.size:
            self.out += GS + b"!" + bytes([size])
            self.size = size
        if line.bold != self.bold:
            self.out += ESC + b"E" + bytes([line.bold])
            self.bold = line.bold
        if line.underline != self.underline:
            self.out += ESC + b"-" + bytes([line.underline])
            self.underline = line.underline
        if line.invert != self.invert:
            self.out += GS + b"B" + bytes([line.invert])
            self.invert = line.invert

    def line(self, line: Line) -> None:
        self.set_align("left")
        if not line.text:
            self.out += LF
            return
        if not self.profile.cjk_font and not line.text.isascii():
            self.out += _raster(_line_image(line, self.profile, self.rules))
            return
        self.style(line)
        # Layout already replaced what the codec cannot encode; "replace" only guards the invariant.
        self.out += line.text.encode(self.profile.encoding, errors="replace") + LF

    def qr(self, element: QR) -> None:
        self.set_align(element.align)
        data = element.data.encode("utf-8")
        self.out += GS + b"(k\x04\x001A2\x00"  # fn 165: model 2
        self.out += GS + b"(k\x03\x001C" + bytes([element.module_size])  # fn 167: module size
        self.out += GS + b"(k\x03\x001E" + bytes([_QR_LEVEL[element.error_level]])  # fn 169
        self.out += GS + b"(k" + _u16(len(data) + 3) + b"1P0" + data  # fn 180: store
        self.out += GS + b"(k\x03\x001Q0"  # fn 181: print
        self.out += LF

    def barcode(self, element: Barcode) -> None:
        self.set_align(element.align)
        data = element.data
        if element.symbology == "CODE128":
            # Function B CODE128 needs an explicit code set; "{" is its escape character.
            data = "{B" + data.replace("{", "{{")
        payload = data.encode("ascii")
        self.out += GS + b"H" + bytes([_HRI[element.hri]])
        self.out += GS + b"h" + bytes([element.height])
        self.out += GS + b"w" + bytes([element.module_width])
        self.out += GS + b"k" + bytes([_BARCODE[element.symbology], len(payload)]) + payload
        self.out += LF

    def image(self, element: Image) -> None:
        self.set_align("left")
        self.out += _raster(_picture(element, self.profile.dots))

    def cut(self, element: Cut) -> None:
        # The cutter sits a few lines above the print head; without a cutter, feed to the tear bar.
        if self.profile.cut_feed_lines:
            self.out += ESC + b"d" + bytes([self.profile.cut_feed_lines])
        if self.profile.cutter:
            self.out += GS + b"V" + (b"\x00" if element.mode == "full" else b"\x01")

    def drawer(self, element: DrawerKick) -> None:
        pin = element.pin or self.profile.drawer_pin
        on_ms = element.on_ms if element.on_ms is not None else self.profile.drawer_on_ms
        off_ms = element.off_ms if element.off_ms is not None else self.profile.drawer_off_ms
        self.out += ESC + b"p" + bytes([0 if pin == 2 else 1, _ms_units(on_ms), _ms_units(off_ms)])

    def block(self, block: Block) -> None:
        if isinstance(block, Line):
            self.line(block)
        elif isinstance(block, QR):
            self.qr(block)
        elif isinstance(block, Barcode):
            self.barcode(block)
        elif isinstance(block, Image):
            self.image(block)
        elif isinstance(block, Feed):
            self.out += ESC + b"d" + bytes([block.lines])
        elif isinstance(block, Cut):
            self.cut(block)
        else:
            self.drawer(block)


def encode_blocks(blocks: list[Block], profile: PrinterProfile) -> bytes:
    """Bytes for already laid-out blocks (see `render`)."""
    encoder = _Encoder(profile)
    for block in blocks:
        encoder.block(block)
    return bytes(encoder.out)


def encode(document: Document, profile: PrinterProfile) -> bytes:
    """The complete ESC/POS byte stream that prints `document` on a printer of this profile."""
    return encode_blocks(render(document, profile), profile)

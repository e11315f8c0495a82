"""Receipt document model: what to print, independent of paper width, code page or printer."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

from PIL import Image as PILImage

from drivers.errors import DriverError

Align: TypeAlias = Literal["left", "center", "right"]
Symbology: TypeAlias = Literal[
    "UPC-A", "UPC-E", "EAN13", "EAN8", "CODE39", "ITF", "CODABAR", "CODE93", "CODE128"
]
Hri: TypeAlias = Literal["none", "above", "below", "both"]
QrLevel: TypeAlias = Literal["L", "M", "Q", "H"]

# Byte capacity of a version-40 QR code in byte mode at the lowest EC level; the printer
# rejects more, and silently printing nothing is worse than failing while building the receipt.
_QR_MAX_BYTES = 2953
_DIGITS = {
    "UPC-A": re.compile(r"\d{11,12}"),
    "UPC-E": re.compile(r"\d{6,8}|\d{11,12}"),
    "EAN13": re.compile(r"\d{12,13}"),
    "EAN8": re.compile(r"\d{7,8}"),
    "ITF": re.compile(r"(\d\d)+"),
    "CODE39": re.compile(r"[0-9A-Z $%*+\-./]+"),
    "CODABAR": re.compile(r"[A-Da-d][0-9$+\-./:]+[A-Da-d]"),
}


class ReceiptError(DriverError):
    """A receipt element was built with values no printer can print."""


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ReceiptError(f"{name} must be between {low} and {high}, got {value}")


@dataclass(frozen=True)
class Text:
    """A paragraph, wrapped to the paper; magnification multiplies each character cell."""

    content: str
    width: int = 1
    height: int = 1
    bold: bool = False
    underline: bool = False
    align: Align = "left"
    invert: bool = False

    def __post_init__(self) -> None:
        _check_range("text width magnification", self.width, 1, 8)
        _check_range("text height magnification", self.height, 1, 8)


@dataclass(frozen=True)
class Cell:
    """One column of a Columns row: a fixed width in columns, or a share (weight) of what is left."""

    text: str
    width: int | None = None
    weight: int = 1
    align: Align = "left"
    # Money must never be cut, so cells wrap by default; truncation is opt-in (e.g. a note column).
    truncate: bool = False

    def __post_init__(self) -> None:
        if self.width is not None:
            _check_range("cell width", self.width, 1, 48)
        _check_range("cell weight", self.weight, 1, 100)


@dataclass(frozen=True)
class Columns:
    """A table row such as name | qty | amount; the first cell wraps, the others stay on line one."""

    cells: tuple[Cell, ...]
    bold: bool = False
    gap: int = 1

    def __post_init__(self) -> None:
        if not self.cells:
            raise ReceiptError("a Columns row needs at least one cell")
        _check_range("column gap", self.gap, 0, 4)


@dataclass(frozen=True)
class Rule:
    """A horizontal line across the paper made of one repeated character."""

    char: str = "-"

    def __post_init__(self) -> None:
        if len(self.char) != 1:
            raise ReceiptError(f"a rule is drawn with exactly one character, got {self.char!r}")


@dataclass(frozen=True)
class Feed:
    """Blank lines."""

    lines: int = 1

    def __post_init__(self) -> None:
        _check_range("feed lines", self.lines, 1, 255)


@dataclass(frozen=True)
class QR:
    """A QR code printed by the printer itself (model 2)."""

    data: str
    module_size: int = 6
    error_level: QrLevel = "M"
    align: Align = "center"

    def __post_init__(self) -> None:
        _check_range("QR module size", self.module_size, 1, 16)
        size = len(self.data.encode("utf-8"))
        if not 0 < size <= _QR_MAX_BYTES:
            raise ReceiptError(f"QR data must be 1 to {_QR_MAX_BYTES} bytes, got {size}")


@dataclass(frozen=True)
class Barcode:
    """A 1-D barcode printed by the printer, with its human-readable text (HRI) where asked."""

    symbology: Symbology
    data: str
    hri: Hri = "below"
    height: int = 80
    module_width: int = 2
    align: Align = "center"

    def __post_init__(self) -> None:
        _check_range("barcode height", self.height, 1, 255)
        _check_range("barcode module width", self.module_width, 2, 6)
        pattern = _DIGITS.get(self.symbology)
        if pattern is not None and not pattern.fullmatch(self.data):
            raise ReceiptError(f"{self.data!r} is not valid {self.symbology} data")
        if not self.data or not self.data.isascii() or not self.data.isprintable() or len(self.data) > 255:
            raise ReceiptError(f"barcode data must be 1 to 255 printable ASCII characters, got {self.data!r}")


@dataclass(frozen=True, eq=False)
class Image:
    """A picture (logo); scaled down to the paper's dot width and dithered to black and white."""

    image: PILImage.Image
    align: Align = "center"


@dataclass(frozen=True)
class Cut:
    """Cut the paper (or feed it to the tear bar on printers without a cutter)."""

    mode: Literal["full", "partial"] = "partial"


@dataclass(frozen=True)
class DrawerKick:
    """Pulse the cash drawer; None takes the printer profile's pin and pulse."""

    pin: Literal[2, 5] | None = None
    on_ms: int | None = None
    off_ms: int | None = None

    def __post_init__(self) -> None:
        for name, value in (("drawer on time", self.on_ms), ("drawer off time", self.off_ms)):
            if value is not None:
                _check_range(name, value, 2, 510)


Element: TypeAlias = Text | Columns | Rule | Feed | QR | Barcode | Image | Cut | DrawerKick
Document: TypeAlias = Sequence[Element]

"""A 2x20 serial pole display (Epson DM-D command set): a pure screen encoder and a thin transport.

Pole displays show ASCII and one code page, not Chinese, so every string is made safe first:
full-width and accented letters fold to ASCII, a name that still is not ASCII falls back to
the item's SKU, and "¥" becomes the yen character of code page PC437 (the power-on page).
"""

from __future__ import annotations

import asyncio
import contextlib
import unicodedata
from types import TracebackType
from typing import Self

import serial

from drivers.errors import DriverError

COLUMNS = 20
ESC, FF, US = 0x1B, 0x0C, 0x1F
INIT = bytes([ESC, ord("@")])
CLEAR = bytes([FF])
OVERWRITE_MODE = bytes([US, 0x01])
PC437_YEN = b"\x9d"


class DisplayOffline(DriverError):
    """The customer display's port cannot be opened or written."""

    def __init__(self, port: str, reason: str) -> None:
        super().__init__(f"customer display on {port} is not responding ({reason}); check its cable")
        self.port = port


def format_fen(amount_fen: int, yen: str = "¥") -> str:
    """``1250`` -> ``"¥12.50"``; negative amounts (refunds) keep their sign before the yen sign."""
    sign = "-" if amount_fen < 0 else ""
    yuan, fen = divmod(abs(amount_fen), 100)
    return f"{sign}{yen}{yuan}.{fen:02d}"


def ascii_text(text: str) -> str:
    """Fold ``text`` to printable ASCII: NFKC then accent stripping; anything left becomes ``?``."""
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text))
    chars = (c for c in folded if not unicodedata.combining(c))
    return "".join(c if " " <= c <= "~" else "?" for c in chars)


def item_label(name: str, sku: str | None = None) -> str:
    """The item name if it folds to ASCII, else its SKU, else the name with ``?`` for each unknown char."""
    label = ascii_text(name).strip()
    if "?" in label and "?" not in name and sku:
        return ascii_text(sku).strip()
    return label


def two_columns(left: str, right: str, width: int = COLUMNS) -> str:
    """``left`` truncated so ``right`` stays whole and right-aligned in ``width`` columns."""
    right = right[:width]
    room = max(width - len(right) - 1, 0)
    left = left[:room]
    return left + " " * (width - len(left) - len(right)) + right


def encode_screen(top: str, bottom: str) -> bytes:
    """Both lines, each padded to 20 columns so no old character survives, without a flicker clear."""
    return (
        _cursor(1, 1)
        + _encode(_display_text(top).ljust(COLUMNS)[:COLUMNS])
        + _cursor(1, 2)
        + _encode(_display_text(bottom).ljust(COLUMNS)[:COLUMNS])
    )


def encode_line_and_total(
    name: str, amount_fen: int, total_fen: int, *, sku: str | None = None, total_label: str = "TOTAL"
) -> bytes:
    """The last scanned item with its amount on line 1 and the order total on line 2."""
    return encode_screen(
        two_columns(item_label(name, sku), format_fen(amount_fen)),
        two_columns(ascii_text(total_label), format_fen(total_fen)),
    )


def encode_init() -> bytes:
    """Reset, clear and select overwrite mode, so writing past column 20 never scrolls."""
    return INIT + CLEAR + OVERWRITE_MODE


def _cursor(column: int, row: int) -> bytes:
    return bytes([US, ord("$"), column, row])


def _display_text(text: str) -> str:
    """``text`` as the display can show it: ASCII plus "¥", one column per character."""
    return "".join(c if c == "¥" else ascii_text(c) for c in unicodedata.normalize("NFKC", text))


def _encode(text: str) -> bytes:
    return b"".join(PC437_YEN if c == "¥" else c.encode("ascii") for c in text)


class SerialCustomerDisplay:
    """An async context manager writing screens to a pole display; writes run in a worker thread."""

    def __init__(self, port: str, *, baudrate: int = 9600) -> None:
        self.port = port
        self.baudrate = baudrate
        self._serial: serial.Serial | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Open the port and initialise the display; raise DisplayOffline on failure."""
        if self._serial is not None:
            return
        try:
            self._serial = await asyncio.to_thread(
                serial.Serial, self.port, baudrate=self.baudrate, timeout=0, write_timeout=1
            )
        except (serial.SerialException, OSError, ValueError) as err:
            raise DisplayOffline(self.port, str(err)) from err
        await self.write(encode_init())

    async def close(self) -> None:
        """Close the port; safe to call twice."""
        port, self._serial = self._serial, None
        if port is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                await asyncio.to_thread(port.close)

    async def show(self, name: str, amount_fen: int, total_fen: int, *, sku: str | None = None) -> None:
        """Show the last item and the running total."""
        await self.write(encode_line_and_total(name, amount_fen, total_fen, sku=sku))

    async def show_lines(self, top: str, bottom: str = "") -> None:
        """Show two free-text lines (e.g. a welcome or a thank-you)."""
        await self.write(encode_screen(top, bottom))

    async def write(self, data: bytes) -> None:
        """Send raw display bytes."""
        port = self._serial
        if port is None:
            raise DisplayOffline(self.port, "port is not open")
        async with self._lock:
            try:
                await asyncio.to_thread(_write_blocking, port, data)
            except (serial.SerialException, OSError) as err:
                raise DisplayOffline(self.port, str(err)) from err


def _write_blocking(port: serial.Serial, data: bytes) -> None:
    port.write(data)
    port.flush()

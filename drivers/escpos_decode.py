"""Decode an ESC/POS byte stream into what the paper shows: text lines plus marker lines.

Used by the simulators, by "preview" and by tests that assert on receipts. The decoder is
incremental (``feed`` chunk by chunk, as bytes arrive over TCP) and never raises on the
data it is given: a printer that chokes on one bad byte loses a whole receipt, and so would
a simulator that is meant to behave like one.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import Literal

from drivers.errors import DriverError

ESC, GS, FS, DLE = 0x1B, 0x1D, 0x1C, 0x10
_HT, _LF, _FF = 0x09, 0x0A, 0x0C

Align = Literal["left", "center", "right"]
LineKind = Literal["text", "barcode", "qr", "image", "cut", "drawer"]
MarkerKind = Literal["barcode", "qr", "image", "cut", "drawer", "status"]

# Chinese-model printers power up (and reset on ESC @) with Chinese mode on, so a stream
# that never sends FS & still prints its GB18030/Big5 text correctly.
_CJK_ENCODINGS = frozenset({"gb18030", "gbk", "gb2312", "big5", "big5hkscs", "cp936", "cp950"})
# ESC t n: the single-byte code pages we can decode; anything else falls back to PC437.
_CODE_PAGES = {0: "cp437", 2: "cp850", 3: "cp860", 4: "cp863", 5: "cp865", 16: "cp1252", 17: "cp866"}
_CODE_PAGES |= {18: "cp852", 19: "cp858"}
_BARCODES = {0: "UPC-A", 1: "UPC-E", 2: "EAN13", 3: "EAN8", 4: "CODE39", 5: "ITF", 6: "CODABAR"}
_BARCODES |= {65 + m: name for m, name in _BARCODES.items()} | {72: "CODE93", 73: "CODE128"}
_ALIGN: dict[int, Align] = {0: "left", 1: "center", 2: "right"}


def _param_counts(spec: str) -> dict[int, int]:
    """``"$2,%1"`` -> ``{ord("$"): 2, ord("%"): 1}``."""
    return {ord(item[0]): int(item[1:]) for item in spec.split(",")}


# Commands with no effect we model, by the number of parameter bytes after the two command
# bytes: knowing their length keeps their parameters out of the printed text.
_SKIP_ESC = _param_counts(" 1,$2,%1,=1,?1,G1,L0,M1,R1,S0,T1,U1,V1,W8,\\2,e1,r1,u1,v0,{1,B2,20")
_SKIP_GS = _param_counts("$2,/1,:0,B1,H1,I1,L2,P2,T1,W2,\\2,^3,a1,b1,f1,h1,r1,w1,Z1")
_SKIP_FS = _param_counts("-1,C1,S2,W1,p2,274")
_ONE_PARAM_ESC = frozenset(b"!EtdJ-a3")
# Larger than any real receipt image; beyond it the bits are counted, not kept.
_MAX_IMAGE_BYTES = 4 << 20
# GS k form 1 has no length byte; real symbologies are far shorter than this.
_MAX_NUL_DATA = 255


class EscPosDecodeError(DriverError):
    """The decoder was configured with a text encoding Python cannot decode."""


@dataclass(frozen=True)
class PrintedLine:
    """One printed line: text with the style it was printed in, or a marker such as ``[CUT]``."""

    text: str
    kind: LineKind = "text"
    align: Align = "left"
    bold: bool = False
    underline: bool = False
    width: int = 1
    height: int = 1


@dataclass(frozen=True)
class Marker:
    """A non-text event in the stream; ``value`` is the barcode/QR data, pin or status function."""

    kind: MarkerKind
    value: str = ""


@dataclass(frozen=True)
class RasterImage:
    """A GS v 0 raster image: ``width`` and ``height`` in dots, ``bits`` row-major, MSB first."""

    width: int
    height: int
    bits: bytes

    @property
    def ink(self) -> int:
        """Number of black dots, so a test can tell a blank image from a real one."""
        return sum(bin(b).count("1") for b in self.bits)


@dataclass
class _Style:
    align: Align = "left"
    bold: bool = False
    underline: bool = False
    width: int = 1
    height: int = 1


@dataclass
class _Payload:
    """A length-prefixed payload being consumed across chunks without buffering it whole."""

    remaining: int
    action: Literal["skip", "image", "qr"]
    keep: bool = False
    data: bytearray = field(default_factory=bytearray)
    width: int = 0
    height: int = 0


class EscPosDecoder:
    """Incremental ESC/POS decoder: ``feed`` chunks, then read ``lines``, ``records`` and ``markers``."""

    def __init__(self, encoding: str = "gb18030", *, chinese_mode: bool | None = None) -> None:
        try:
            self.encoding = codecs.lookup(encoding).name
        except LookupError as err:
            raise EscPosDecodeError(f"unknown text encoding {encoding!r} for the receipt preview") from err
        self._cjk = self.encoding.replace("_", "") in _CJK_ENCODINGS
        self._chinese_default = self._cjk if chinese_mode is None else chinese_mode
        self.records: list[PrintedLine] = []
        self.markers: list[Marker] = []
        self.images: list[RasterImage] = []
        self.unknown: list[bytes] = []
        self._buf = bytearray()
        self._payload: _Payload | None = None
        self._qr_data = b""
        self._reset()

    # ------------------------------------------------------------------ public API

    def feed(self, chunk: bytes) -> list[Marker]:
        """Decode ``chunk`` (any split is fine) and return the markers it completed."""
        before = len(self.markers)
        self._buf += chunk
        pos = 0
        while True:
            if self._payload is not None:
                pos = self._consume_payload(self._payload, pos)
                if self._payload is not None:
                    break
            if pos >= len(self._buf):
                break
            byte = self._buf[pos]
            if byte < 0x20:
                # No control byte is part of a multi-byte character: one arriving mid-character
                # ends it, whatever the command does.
                self._flush_text()
            if byte in (ESC, GS, FS, DLE):
                used = self._command(pos)
                if used == 0:
                    break
                pos += used
            elif byte < 0x20:
                self._control(byte)
                pos += 1
            else:
                end = pos
                while end < len(self._buf) and self._buf[end] >= 0x20:
                    end += 1
                self._append_text(self._decoder.decode(bytes(self._buf[pos:end])))
                pos = end
        del self._buf[:pos]
        return self.markers[before:]

    @property
    def lines(self) -> list[str]:
        """Printed lines; a trailing line not yet ended by LF is included, as the next feed prints it."""
        lines = [record.text for record in self.records]
        pending = self._pending_text()
        if pending:
            lines.append(pending)
        return lines

    @property
    def status_requests(self) -> list[int]:
        """The DLE EOT functions (1-4) asked for, in order."""
        return [int(m.value) for m in self.markers if m.kind == "status"]

    def text(self) -> str:
        """The printed lines joined with newlines."""
        return "\n".join(self.lines)

    def jobs(self) -> list[list[str]]:
        """Lines grouped into receipts: each ``[CUT]`` ends one; trailing uncut lines form the last."""
        jobs: list[list[str]] = [[]]
        for line in self.lines:
            jobs[-1].append(line)
            if line == "[CUT]":
                jobs.append([])
        return jobs if jobs[-1] else jobs[:-1]

    # ------------------------------------------------------------------ state

    def _reset(self) -> None:
        """ESC @: styles, code page and Chinese mode back to power-on; the unprinted line is dropped."""
        self._style = _Style()
        self._code_page: str | None = None
        self._chinese = self._chinese_default
        self._line_chars: list[str] = []
        self._line_style: _Style | None = None
        self._decoder = self._new_text_decoder()

    def _new_text_decoder(self) -> codecs.IncrementalDecoder:
        if self.encoding == "utf-8" or (self._chinese and self._cjk):
            name = self.encoding
        elif self._code_page is None:
            # Until ESC t picks a code page, a single-byte encoding chosen by the caller applies.
            name = "cp437" if self._cjk else self.encoding
        else:
            name = self._code_page
        return codecs.getincrementaldecoder(name)(errors="replace")

    def _flush_text(self) -> None:
        """Close the text decoder so a multi-byte character cut short shows as one replacement mark."""
        self._append_text(self._decoder.decode(b"", final=True))

    def _pending_text(self) -> str:
        return "".join(self._line_chars).rstrip()

    def _append_text(self, text: str) -> None:
        if not text:
            return
        if self._line_style is None:
            self._line_style = _Style(align=self._style.align)
        style = self._line_style
        style.bold = style.bold or self._style.bold
        style.underline = style.underline or self._style.underline
        style.width = max(style.width, self._style.width)
        style.height = max(style.height, self._style.height)
        self._line_chars.append(text)

    def _end_line(self, *, force: bool = True) -> None:
        """Print the buffered line; with ``force`` an empty buffer still feeds one blank line."""
        self._flush_text()
        text = "".join(self._line_chars).rstrip()
        if text or force:
            style = self._line_style or _Style(align=self._style.align)
            self.records.append(
                PrintedLine(text, "text", style.align, style.bold, style.underline, style.width, style.height)
            )
        self._line_chars = []
        self._line_style = None

    def _mark(self, kind: MarkerKind, value: str, text: str) -> None:
        """Record a marker; paper-visible ones also get a line of their own."""
        self.markers.append(Marker(kind, value))
        if kind != "status":
            self._end_line(force=False)
            self.records.append(PrintedLine(text, kind, self._style.align))

    # ------------------------------------------------------------------ bytes

    def _control(self, byte: int) -> None:
        if byte == _LF:
            self._end_line()
        elif byte == _FF:
            self._end_line(force=False)
        elif byte == _HT:
            self._flush_text()
            column = len("".join(self._line_chars))
            self._append_text(" " * (8 - column % 8))
        # CR is ignored (auto line feed off, the default); other C0 bytes print nothing.

    def _command(self, pos: int) -> int:
        """Handle the command at ``pos``; return the bytes it used, or 0 if it is not complete yet."""
        buf = self._buf
        if pos + 1 >= len(buf):
            return 0
        prefix, cmd = buf[pos], buf[pos + 1]
        if prefix == ESC:
            return self._esc(pos, cmd)
        if prefix == GS:
            return self._gs(pos, cmd)
        if prefix == FS:
            return self._fs(pos, cmd)
        return self._dle(pos, cmd)

    def _params(self, pos: int, count: int) -> bytes | None:
        """The ``count`` parameter bytes after a two-byte command, or None until they have arrived."""
        start = pos + 2
        if start + count > len(self._buf):
            return None
        return bytes(self._buf[start : start + count])

    def _unknown(self, pos: int, length: int = 2) -> int:
        self.unknown.append(bytes(self._buf[pos : pos + length]))
        return length

    def _esc(self, pos: int, cmd: int) -> int:
        if cmd == ord("@"):
            self._reset()
            return 2
        if cmd in (ord("i"), ord("m")):  # old partial-cut commands
            self._mark("cut", "", "[CUT]")
            return 2
        if cmd == ord("*"):
            if (head := self._params(pos, 3)) is None:
                return 0
            dots = head[1] | head[2] << 8
            self._payload = _Payload(dots * (1 if head[0] in (0, 1) else 3), "skip")
            return 5
        if cmd == ord("D"):  # tab positions, NUL-terminated (at most 32)
            end = self._until_nul(pos, 2, 33)
            return 0 if end is None else self._unknown(pos) if end == -1 else end
        if cmd == ord("p"):
            if (args := self._params(pos, 3)) is None:
                return 0
            pin = "5" if args[0] in (1, 49) else "2"
            self._mark("drawer", pin, f"[DRAWER {pin}]")
            return 5
        if cmd == ord("c"):  # ESC c 0/3/4/5 n: paper sensors and panel keys
            return 4 if self._params(pos, 2) is not None else 0
        if cmd in _SKIP_ESC:
            return 2 + _SKIP_ESC[cmd] if self._params(pos, _SKIP_ESC[cmd]) is not None else 0
        if cmd not in _ONE_PARAM_ESC:
            return self._unknown(pos)
        if (args := self._params(pos, 1)) is None:
            return 0
        self._esc_one(cmd, args[0])
        return 3

    def _esc_one(self, cmd: int, n: int) -> None:
        """The one-parameter ESC commands that change style, code page or feed."""
        if cmd == ord("!"):
            self._style.bold = bool(n & 0x08)
            self._style.height = 2 if n & 0x10 else 1
            self._style.width = 2 if n & 0x20 else 1
            self._style.underline = bool(n & 0x80)
        elif cmd == ord("E"):
            self._style.bold = bool(n & 1)
        elif cmd == ord("-"):
            self._style.underline = bool(n & 3)
        elif cmd == ord("a"):
            self._style.align = _ALIGN.get(n & 3, "left")
        elif cmd == ord("t"):
            self._flush_text()
            self._code_page = _CODE_PAGES.get(n, "cp437")
            self._decoder = self._new_text_decoder()
        elif cmd == ord("d"):
            self._end_line(force=n > 0 or bool(self._line_chars))
            for _ in range(n - 1):
                self._end_line()
        elif cmd == ord("J"):
            self._end_line(force=False)

    def _gs(self, pos: int, cmd: int) -> int:
        if cmd == ord("!"):
            if (args := self._params(pos, 1)) is None:
                return 0
            self._style.width = (args[0] >> 4 & 7) + 1
            self._style.height = (args[0] & 7) + 1
            return 3
        if cmd == ord("V"):
            if (head := self._params(pos, 1)) is None:
                return 0
            used = 4 if head[0] in (65, 66, 97, 98, 103, 104) else 3
            if pos + used > len(self._buf):
                return 0
            self._mark("cut", "", "[CUT]")
            return used
        if cmd == ord("k"):
            return self._barcode(pos)
        if cmd in (ord("v"), ord("8"), ord("*")):
            return self._gs_graphics(pos, cmd)
        if cmd == ord("("):
            return self._gs_paren(pos)
        if cmd in _SKIP_GS:
            return 2 + _SKIP_GS[cmd] if self._params(pos, _SKIP_GS[cmd]) is not None else 0
        return self._unknown(pos)

    def _gs_graphics(self, pos: int, cmd: int) -> int:
        """Raster images become markers; other graphics are skipped by their declared length."""
        if cmd == ord("v"):
            if (head := self._params(pos, 6)) is None:
                return 0
            if head[0] != ord("0"):
                return self._unknown(pos)
            width, height = head[2] | head[3] << 8, head[4] | head[5] << 8
            size = width * height
            self._payload = _Payload(size, "image", size <= _MAX_IMAGE_BYTES, width=width, height=height)
            return 8
        if cmd == ord("8"):  # GS 8 L p1..p4: large graphics data, four-byte length
            if (head := self._params(pos, 5)) is None:
                return 0
            self._payload = _Payload(int.from_bytes(head[1:5], "little"), "skip")
            return 7
        head = self._params(pos, 2)  # GS * x y: downloaded bit image of x * y * 8 bytes
        if head is None:
            return 0
        self._payload = _Payload(head[0] * head[1] * 8, "skip")
        return 4

    def _gs_paren(self, pos: int) -> int:
        """GS ( x pL pH ...: every function carries its own length, so unknown ones skip cleanly."""
        if (head := self._params(pos, 3)) is None:
            return 0
        length = head[1] | head[2] << 8
        if head[0] != ord("k") or length < 3:
            self._payload = _Payload(length, "skip")
            return 5
        if (body := self._params(pos, 6)) is None:
            return 0
        cn, fn = body[3], body[4]
        if cn == 49 and fn == 80:  # QR: store data (after cn fn m)
            self._payload = _Payload(length - 3, "qr", keep=True)
        elif cn == 49 and fn == 81:
            self._mark("qr", self._qr_text(), f"[QR {self._qr_text()}]")
            self._payload = _Payload(length - 3, "skip")
        else:
            self._payload = _Payload(length - 3, "skip")
        return 8

    def _qr_text(self) -> str:
        try:
            return self._qr_data.decode("utf-8")
        except UnicodeDecodeError:
            return self._qr_data.decode(self.encoding, errors="replace")

    def _barcode(self, pos: int) -> int:
        if (head := self._params(pos, 1)) is None:
            return 0
        kind = head[0]
        if kind <= 6:
            if (end := self._until_nul(pos, 3, _MAX_NUL_DATA + 1)) is None:
                return 0
            if end == -1:
                return self._unknown(pos, 3)
            data = bytes(self._buf[pos + 3 : pos + end - 1])
        elif 65 <= kind <= 73:
            if (size := self._params(pos, 2)) is None:
                return 0
            end = 4 + size[1]
            if pos + end > len(self._buf):
                return 0
            data = bytes(self._buf[pos + 4 : pos + end])
        else:
            return self._unknown(pos, 3)
        name = _BARCODES.get(kind, "?")
        value = _code128_text(data) if name == "CODE128" else data.decode("ascii", errors="replace")
        self._mark("barcode", value, f"[BARCODE {name} {value}]")
        return end

    def _until_nul(self, pos: int, start: int, limit: int) -> int | None:
        """Length up to and including the NUL after ``pos+start``; None if not yet here; -1 if absent."""
        window = self._buf[pos + start : pos + start + limit]
        nul = window.find(b"\x00")
        if nul >= 0:
            return start + nul + 1
        return -1 if len(window) >= limit else None

    def _fs(self, pos: int, cmd: int) -> int:
        if cmd in (ord("&"), ord(".")):
            self._flush_text()
            self._chinese = cmd == ord("&")
            self._decoder = self._new_text_decoder()
            return 2
        if cmd == ord("!"):
            if (args := self._params(pos, 1)) is None:
                return 0
            self._style.width = 2 if args[0] & 0x04 else 1
            self._style.height = 2 if args[0] & 0x08 else 1
            self._style.underline = bool(args[0] & 0x80)
            return 3
        if cmd in _SKIP_FS:
            return 2 + _SKIP_FS[cmd] if self._params(pos, _SKIP_FS[cmd]) is not None else 0
        return self._unknown(pos)

    def _dle(self, pos: int, cmd: int) -> int:
        if cmd in (0x04, 0x05):  # DLE EOT n (status), DLE ENQ n (real-time request)
            if (args := self._params(pos, 1)) is None:
                return 0
            if cmd == 0x04:
                self._mark("status", str(args[0]), "")
            return 3
        if cmd == 0x14:  # DLE DC4 fn a b
            if (args := self._params(pos, 3)) is None:
                return 0
            if args[0] == 1:
                pin = "5" if args[1] == 1 else "2"
                self._mark("drawer", pin, f"[DRAWER {pin}]")
            return 5
        return self._unknown(pos)

    # ------------------------------------------------------------------ payloads

    def _consume_payload(self, payload: _Payload, pos: int) -> int:
        take = min(payload.remaining, len(self._buf) - pos)
        if payload.keep:
            payload.data += self._buf[pos : pos + take]
        payload.remaining -= take
        pos += take
        if payload.remaining == 0:
            self._payload = None
            if payload.action == "image":
                image = RasterImage(payload.width * 8, payload.height, bytes(payload.data))
                self.images.append(image)
                self._mark("image", f"{image.width}x{image.height}", f"[IMAGE {image.width}x{image.height}]")
            elif payload.action == "qr":
                self._qr_data = bytes(payload.data)
        return pos


def _code128_text(data: bytes) -> str:
    """Human-readable CODE128 data: drop ``{A``/``{B``/``{C`` set switches, expand code C pairs."""
    out: list[str] = []
    code_c = False
    i = 0
    while i < len(data):
        byte = data[i]
        if byte == ord("{") and i + 1 < len(data):
            nxt = data[i + 1]
            if nxt == ord("{"):
                out.append("{")
            elif nxt in b"ABC":
                code_c = nxt == ord("C")
            i += 2  # function codes ({1}..{4}, {S}) print nothing
            continue
        out.append(f"{byte:02d}" if code_c else chr(byte) if 0x20 <= byte < 0x7F else "?")
        i += 1
    return "".join(out)


def decode_escpos(data: bytes, encoding: str = "gb18030") -> EscPosDecoder:
    """Decode a whole ESC/POS stream at once."""
    decoder = EscPosDecoder(encoding)
    decoder.feed(data)
    return decoder

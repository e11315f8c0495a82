"""Keyboard-wedge scan decoding: evdev key events in, scans or rejections out, no I/O.

A wedge scanner is a USB keyboard that types very fast and ends with Enter (or Tab). The
decoder turns its key events into text, and in "auto" mode tells a scanner from a person by
the gaps between key presses, using the events' own timestamps so that a busy event loop
cannot make a person look fast or a scanner look slow.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from enum import StrEnum

from evdev import InputEvent, ecodes

from drivers.errors import DriverError
from drivers.keymap import ENTER, GS, TAB, KeyboardState

__all__ = [
    "ENTER",
    "TAB",
    "AimId",
    "OutcomeQueue",
    "RejectReason",
    "Rejection",
    "Scan",
    "ScanDecoder",
    "ScanMode",
    "ScanOutcome",
    "ScannerUnavailable",
    "parse_aim",
]

_log = logging.getLogger(__name__)
_EXCERPT = 64
_KEY_REPEAT = 2


class ScannerUnavailable(DriverError):
    """A scanner could not be opened, or went away while we were reading it."""

    def __init__(self, device: str, problem: str) -> None:
        """`device` names the scanner (port or stable id); `problem` says what the OS reported."""
        super().__init__(
            f"scanner {device!r} is unavailable ({problem}); "
            "check its cable: scans resume once it is reopened"
        )
        self.device = device


class RejectReason(StrEnum):
    """Why input was not accepted as a barcode."""

    TOO_SLOW = "too_slow"
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    UNTERMINATED = "unterminated"
    MISSING_PREFIX = "missing_prefix"
    MISSING_SUFFIX = "missing_suffix"
    NON_PRINTABLE = "non_printable"
    BAD_ENCODING = "bad_encoding"


class ScanMode(StrEnum):
    """How far to trust a keyboard device: "scanner" takes every line, "auto" checks the typing speed."""

    SCANNER = "scanner"
    AUTO = "auto"


@dataclass(frozen=True, slots=True)
class AimId:
    """An AIM symbology identifier such as "]C1"; `gs1` says the payload is a GS1 element string."""

    code: str
    symbology: str
    gs1: bool

    @property
    def prefix(self) -> str:
        """The identifier as sent, e.g. "]C1"."""
        return f"]{self.code}"


@dataclass(frozen=True, slots=True)
class Scan:
    """A barcode read: text without AIM prefix, epoch seconds of its first key and its terminator."""

    text: str
    started: float
    ended: float
    aim: AimId | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """Input that was not a barcode; `excerpt` holds at most the first 64 characters of `length`."""

    reason: RejectReason
    detail: str
    excerpt: str
    length: int
    started: float
    ended: float


ScanOutcome = Scan | Rejection

# AIM ISO/IEC 15424 code characters; the second table marks the modifiers whose data is a
# GS1 element string (FNC1 in first position), which is what tells GS1 data from plain text.
_AIM_SYMBOLOGIES: dict[str, str] = {
    "A": "Code 39",
    "C": "Code 128",
    "d": "Data Matrix",
    "E": "EAN/UPC",
    "e": "GS1 DataBar",
    "F": "Codabar",
    "G": "Code 93",
    "H": "Code 11",
    "I": "Interleaved 2 of 5",
    "L": "PDF417",
    "M": "MSI",
    "Q": "QR Code",
    "R": "Straight 2 of 5",
    "U": "MaxiCode",
    "X": "Other",
    "z": "Aztec",
    "h": "Han Xin",
}
_AIM_GS1: dict[str, str] = {
    "C1": "GS1-128",
    "d2": "GS1 DataMatrix",
    "e0": "GS1 DataBar",
    "Q3": "GS1 QR Code",
    "z1": "GS1 Aztec",
}
_AIM_NAMED: dict[str, str] = {"E0": "EAN-13/UPC-A", "E4": "EAN-8"}


def parse_aim(text: str) -> tuple[AimId | None, str]:
    """Split a leading AIM identifier ("]" + code + modifier) from `text`; (None, text) when there is none."""
    if len(text) < 3 or text[0] != "]" or text[1] not in _AIM_SYMBOLOGIES or not text[2].isalnum():
        return None, text
    code = text[1:3]
    if code in _AIM_GS1:
        return AimId(code, _AIM_GS1[code], gs1=True), text[3:]
    return AimId(code, _AIM_NAMED.get(code, _AIM_SYMBOLOGIES[text[1]]), gs1=False), text[3:]


class _Run:
    """Characters collected between two boundaries, bounded so garbage cannot grow memory."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chars: list[str] = []
        self.length = 0
        self.started = 0.0
        self.ended = 0.0
        self.slowest = 0.0
        self.held = False

    def add(self, text: str, started: float, ended: float) -> None:
        if self.length == 0:
            self.started = started
        self.ended = ended
        room = self.limit - len(self.chars)
        if room > 0:
            self.chars.extend(text[:room])
        self.length += len(text)

    @property
    def overflow(self) -> bool:
        return self.length > self.limit

    def text(self) -> str:
        return "".join(self.chars)

    def clear(self) -> None:
        self.chars.clear()
        self.length = 0
        self.slowest = 0.0
        self.held = False

    def reject(self, reason: RejectReason, detail: str) -> Rejection:
        rejection = Rejection(reason, detail, self.text()[:_EXCERPT], self.length, self.started, self.ended)
        self.clear()
        return rejection


class ScanDecoder:
    """Turns a keyboard device's `evdev.InputEvent`s into `Scan`s and `Rejection`s; pure, one per device."""

    def __init__(
        self,
        *,
        mode: ScanMode = ScanMode.SCANNER,
        terminator: str | int = ENTER,
        max_gap: float = 0.040,
        min_length: int = 4,
        idle_timeout: float = 0.5,
        max_length: int = 4096,
        aim: bool = False,
        gs_substitute: str | None = None,
    ) -> None:
        """Configure; `terminator` is a character (ENTER, TAB, ...) or an evdev key code."""
        if isinstance(terminator, str) and len(terminator) != 1:
            raise ValueError(f"terminator must be one character or a key code, not {terminator!r}")
        if not 0 < max_gap < idle_timeout:
            raise ValueError(f"need 0 < max_gap ({max_gap}) < idle_timeout ({idle_timeout})")
        self.mode = mode
        self.terminator = terminator
        self.max_gap = max_gap
        self.min_length = min_length
        self.idle_timeout = idle_timeout
        self.aim = aim
        self.gs_substitute = gs_substitute
        self._keys = KeyboardState()
        self._burst = _Run(max_length)
        # Auto mode: characters that came too slowly to be a scanner, reported as one rejection.
        self._typed = _Run(_EXCERPT)
        self._last: float | None = None

    @property
    def pending(self) -> bool:
        """Whether characters are waiting for a terminator; the transport calls `flush()` when idle."""
        return self._burst.length > 0 or self._typed.length > 0

    @property
    def buffered(self) -> int:
        """Characters held in memory; never more than `max_length` plus a 64-character excerpt."""
        return len(self._burst.chars) + len(self._typed.chars)

    def feed(self, event: InputEvent) -> list[ScanOutcome]:
        """Apply one event; return the scans and rejections it completed (usually none)."""
        if event.type != ecodes.EV_KEY:
            return []
        stamp = event.timestamp()
        if isinstance(self.terminator, int) and event.code == self.terminator:
            return self._terminate(stamp) if event.value else []
        char = self._keys.key(event.code, event.value)
        if char is None:
            return []
        if char == self.terminator:
            return self._terminate(stamp)
        outcomes = self._gap(stamp)
        self._last = stamp
        if self.mode is ScanMode.AUTO and event.value == _KEY_REPEAT:
            # Only the kernel's autorepeat sends value 2, and only for a key held by a person;
            # its 33 ms rate would otherwise pass the speed test.
            started = self._burst.started if self._burst.length else stamp
            self._typed.add(self._burst.text() + char, started, stamp)
            self._typed.held = True
            self._burst.clear()
        else:
            self._burst.add(char, stamp, stamp)
        return outcomes

    def feed_all(self, events: list[InputEvent]) -> list[ScanOutcome]:
        """Apply `events` in order and return everything they completed."""
        return [outcome for event in events for outcome in self.feed(event)]

    def flush(self) -> list[ScanOutcome]:
        """Give up on a burst that never got its terminator (device idle or gone)."""
        outcomes = self._report_typed()
        if self._burst.length:
            if self._burst.overflow:
                outcomes.append(self._too_long())
            else:
                detail = f"no terminator after {self._burst.length} characters; check the scanner's suffix"
                outcomes.append(self._burst.reject(RejectReason.UNTERMINATED, detail))
        self._last = None
        return outcomes

    def reset(self) -> None:
        """Drop all state, including held modifiers and CapsLock (device reopened)."""
        self.flush()
        self._keys.reset()

    def _gap(self, stamp: float) -> list[ScanOutcome]:
        if self._last is None:
            return []
        gap = stamp - self._last
        # A backwards step means the clock was set; treat it like a long pause.
        if gap > self.idle_timeout or gap < 0:
            return self.flush()
        if self.mode is ScanMode.AUTO and gap > self.max_gap and self._burst.length:
            if self._burst.length >= self.min_length:
                pause = f"{gap * 1000:.0f} ms"
                detail = f"{self._burst.length} fast characters then a {pause} pause, no terminator"
                return [self._burst.reject(RejectReason.UNTERMINATED, detail)]
            self._typed.add(self._burst.text(), self._burst.started, self._burst.ended)
            self._typed.slowest = max(self._typed.slowest, gap)
            self._burst.clear()
        return []

    def _terminate(self, stamp: float) -> list[ScanOutcome]:
        outcomes = self._gap(stamp)
        outcomes += self._report_typed()
        self._last = None
        burst = self._burst
        if not burst.length:
            return outcomes
        burst.ended = stamp
        if burst.overflow:
            outcomes.append(self._too_long())
        elif self.mode is ScanMode.AUTO and burst.length < self.min_length:
            detail = f"{burst.length} characters, fewer than the {self.min_length} a barcode needs"
            outcomes.append(burst.reject(RejectReason.TOO_SHORT, detail))
        else:
            outcomes.append(self._scan(burst.text(), burst.started, stamp))
            burst.clear()
        return outcomes

    def _report_typed(self) -> list[ScanOutcome]:
        if not self._typed.length:
            return []
        if self._typed.held:
            detail = "a key was held until it auto-repeated: keyboard typing, not a barcode"
            return [self._typed.reject(RejectReason.TOO_SLOW, detail)]
        detail = (
            f"keys up to {self._typed.slowest * 1000:.0f} ms apart (a scanner types faster than "
            f"{self.max_gap * 1000:.0f} ms per key): keyboard typing, not a barcode"
        )
        return [self._typed.reject(RejectReason.TOO_SLOW, detail)]

    def _too_long(self) -> Rejection:
        detail = f"{self._burst.length} characters, more than the {self._burst.limit} allowed"
        return self._burst.reject(RejectReason.TOO_LONG, detail)

    def _scan(self, raw: str, started: float, ended: float) -> Scan:
        aim, text = parse_aim(raw) if self.aim else (None, raw)
        if self.gs_substitute:
            text = text.replace(self.gs_substitute, GS)
        return Scan(text, started, ended, aim)


class OutcomeQueue:
    """Hands outcomes from a transport to its async consumer; bounded, it drops the oldest if nobody reads."""

    def __init__(self, device: str, maxsize: int = 256) -> None:
        """`device` names the scanner in errors and log lines."""
        self.device = device
        self._queue: asyncio.Queue[ScanOutcome | None] = asyncio.Queue(maxsize)
        self._problem: str | None = None
        self._dropping = False

    def put(self, item: ScanOutcome | None) -> None:
        """Queue an outcome (None marks the end); call from the event loop's thread only."""
        if self._queue.full():
            if not self._dropping:
                _log.warning("scanner %r: nobody is reading scans; dropping the oldest", self.device)
            self._dropping = True
            self._queue.get_nowait()
        else:
            self._dropping = False
        self._queue.put_nowait(item)

    def close(self, problem: str) -> None:
        """Mark the device gone: `get()` raises ScannerUnavailable once the queued outcomes are read."""
        self._problem = problem
        self.put(None)

    async def get(self) -> ScanOutcome:
        """The next outcome; ScannerUnavailable after `close()` and every later call."""
        if self._problem is None or not self._queue.empty():
            item = await self._queue.get()
            if item is not None:
                return item
        raise ScannerUnavailable(self.device, self._problem or "closed")

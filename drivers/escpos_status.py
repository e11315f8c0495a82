"""Real-time status (DLE EOT n): the request bytes and a pure parser of the printer's replies."""

from __future__ import annotations

from dataclasses import dataclass

from drivers.errors import DriverError

PRINTER = 1
OFFLINE_CAUSE = 2
ERROR_CAUSE = 3
PAPER_SENSOR = 4
_KINDS = (PRINTER, OFFLINE_CAUSE, ERROR_CAUSE, PAPER_SENSOR)
# Every DLE EOT reply has bit 1 and bit 4 set and bits 0 and 7 clear; anything else is not a
# status byte (line noise, or bytes left over from an earlier, timed-out query).
_FIXED_MASK = 0x93
_FIXED_BITS = 0x12


class StatusReplyError(DriverError):
    """The printer answered a status query with something that is not a status reply."""


def status_request(kind: int) -> bytes:
    """DLE EOT n: ask for printer (1), offline cause (2), error cause (3) or paper sensor (4) status."""
    if kind not in _KINDS:
        raise ValueError(f"DLE EOT takes 1, 2, 3 or 4, got {kind}")
    return bytes([0x10, 0x04, kind])


# The four queries in one write; the printer answers each with one byte, in order.
FULL_STATUS_REQUEST = b"".join(status_request(kind) for kind in _KINDS)


@dataclass(frozen=True)
class PrinterStatus:
    """What the printer reported about itself."""

    online: bool
    cover_open: bool
    paper_out: bool
    paper_near_end: bool
    drawer_open: bool
    error: bool

    @property
    def ready(self) -> bool:
        """Whether a ticket sent now will print."""
        return self.online and not (self.cover_open or self.paper_out or self.error)

    def problem(self) -> str | None:
        """A short user-facing reason the printer cannot print, or None when it can."""
        if self.cover_open:
            return "the printer cover is open; close it"
        if self.paper_out:
            return "the printer has no paper; load a new roll"
        if self.error:
            return "the printer reports an error (cutter jam or overheating); clear it, then restart it"
        if not self.online:
            return "the printer is offline; check it is switched on"
        return None


def _check(kind: int, reply: int) -> int:
    if not 0 <= reply <= 0xFF or reply & _FIXED_MASK != _FIXED_BITS:
        raise StatusReplyError(f"reply {reply:#04x} to DLE EOT {kind} is not a status byte")
    return reply


def parse_status(replies: bytes) -> PrinterStatus:
    """Parse the four one-byte replies to `FULL_STATUS_REQUEST` (DLE EOT 1, 2, 3, 4 in that order)."""
    if len(replies) != len(_KINDS):
        raise StatusReplyError(f"expected {len(_KINDS)} status bytes, got {len(replies)}: {replies!r}")
    printer, offline, error, paper = (
        _check(kind, reply) for kind, reply in zip(_KINDS, replies, strict=True)
    )
    return PrinterStatus(
        online=not printer & 0x08,
        cover_open=bool(offline & 0x04),
        # Paper end (roll sensor bits 5-6) stops printing; offline bit 5 says the same.
        paper_out=bool(paper & 0x60 or offline & 0x20),
        paper_near_end=bool(paper & 0x0C),
        # Bit 2 reports drawer connector pin 3; most drawers' switch raises it when open.
        drawer_open=bool(printer & 0x04),
        # Mechanical (2), autocutter (3), unrecoverable (5) and auto-recoverable (6) errors.
        error=bool(error & 0x6C or offline & 0x40),
    )

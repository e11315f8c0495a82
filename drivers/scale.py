"""Mettler-Toledo 8217 scale protocol, sans I/O: requests to send, replies parsed into integer grams.

The host sends one letter; the scale answers one frame ``STX ... CR``:

* ``W`` (weight): ``STX 01.234 CR`` when the weight is stable (an ``N`` before CR marks a net
  weight), or ``STX ? <status> CR`` when it is in motion, over capacity, under zero or has no
  valid zero. The number of decimals follows the scale's setup (``WW.WWW`` kg, ``WW.WW`` lb);
  the unit itself is not on the wire, so it is configured, not guessed.
* ``Z`` (zero), ``C`` (clear tare): answered with a status frame.

Status byte bits: 0 motion, 1 over capacity, 2 under zero, 3 outside zero-capture range,
4 centre of zero, 5 net mode, 6 always 1, 7 parity (lines run 7E1 and a 7-bit UART drops it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from drivers.errors import DriverError

STX, CR = 0x02, 0x0D
WEIGHT_REQUEST = b"W"
ZERO_REQUEST = b"Z"
CLEAR_TARE_REQUEST = b"C"
# A reply is a handful of bytes; anything longer is not a scale talking 8217.
MAX_FRAME = 16

Unit = Literal["kg", "lb"]
Framing = Literal["7E1", "8N1"]

_WEIGHT = re.compile(rb"\x02 *(\d{1,7}(?:\.\d{1,4})?|\.\d{1,4})(N?)\r")
_STATUS = re.compile(rb"\x02\?([\x40-\x7f\xc0-\xff])\r")
_MOTION, _OVER, _UNDER, _OUTSIDE_ZERO, _CENTER_ZERO, _NET = (1 << bit for bit in range(6))
# 1 lb = 0.45359237 kg exactly; kept as an integer ratio so no float ever touches a weight.
_LB_NUM, _LB_DEN = 45_359_237, 100_000


class ScaleError(DriverError):
    """A scale problem; the message says what the cashier should do."""


class ScaleFrameError(ScaleError):
    """The bytes received are not a well-formed 8217 reply."""


class ScaleNotReady(ScaleError):
    """The scale answered with a status instead of a weight (motion, over capacity, under zero)."""

    def __init__(self, status: ScaleStatus) -> None:
        super().__init__(status.message)
        self.status = status


@dataclass(frozen=True)
class WeightReading:
    """A weight in integer grams; ``stable`` is False only for protocols that send moving weights."""

    grams: int
    stable: bool = True
    net: bool = False


@dataclass(frozen=True)
class ScaleStatus:
    """The decoded status byte of a ``STX ? <status> CR`` reply."""

    byte: int

    @property
    def in_motion(self) -> bool:
        """The pan has not settled."""
        return bool(self.byte & _MOTION)

    @property
    def over_capacity(self) -> bool:
        """More weight than the scale can measure."""
        return bool(self.byte & _OVER)

    @property
    def under_zero(self) -> bool:
        """Negative gross or net weight."""
        return bool(self.byte & _UNDER)

    @property
    def zero_error(self) -> bool:
        """Outside the zero-capture range: the scale could not find its zero."""
        return bool(self.byte & _OUTSIDE_ZERO)

    @property
    def at_zero(self) -> bool:
        """At the centre of zero."""
        return bool(self.byte & _CENTER_ZERO)

    @property
    def net(self) -> bool:
        """A tare is in use."""
        return bool(self.byte & _NET)

    @property
    def message(self) -> str:
        """What the cashier sees when this status stands in for a weight."""
        if self.over_capacity:
            return "the scale is over capacity; take some weight off the pan"
        if self.under_zero:
            return "the scale reads below zero; empty the pan and press ZERO on the scale"
        if self.zero_error:
            return "the scale cannot find zero; empty the pan and restart the scale"
        if self.in_motion:
            return "the weight is still moving; wait until it settles and weigh again"
        return "the scale sent its status instead of a weight; weigh again"


Reply = WeightReading | ScaleStatus


def parse_frame(frame: bytes, unit: Unit = "kg") -> Reply:
    """Parse exactly one reply frame (``STX ... CR``); raise ScaleFrameError for anything else."""
    weight = _WEIGHT.fullmatch(frame)
    if weight is not None:
        return WeightReading(_to_grams(weight.group(1).decode("ascii"), unit), True, weight.group(2) == b"N")
    status = _STATUS.fullmatch(frame)
    if status is not None:
        return ScaleStatus(status.group(1)[0] & 0x7F)
    raise ScaleFrameError(f"not a Toledo 8217 reply: {frame[:MAX_FRAME]!r}")


def reading_from(reply: Reply) -> WeightReading:
    """The weight in ``reply``; a status reply raises ScaleNotReady with the cashier's message."""
    if isinstance(reply, ScaleStatus):
        raise ScaleNotReady(reply)
    return reply


def claims_scale(reply: bytes, unit: Unit = "kg") -> bool:
    """Whether ``reply`` to a ``W`` probe proves an 8217 scale: one whole frame and nothing else.

    Echo (``W`` back), silence, a scanner's barcode line or noise that merely contains a
    frame-like run are all refused, because claiming the wrong port takes it from its device.
    """
    try:
        parse_frame(reply, unit)
    except ScaleFrameError:
        return False
    return True


def format_weight(grams: int, unit: Unit = "kg", *, net: bool = False) -> bytes:
    """The stable-weight frame a scale sends for ``grams`` (used by the simulator and tests)."""
    if grams < 0:
        raise ScaleError("a negative weight is sent as an under-zero status, not a weight frame")
    if unit == "kg":
        digits = f"{grams // 1000:02d}.{grams % 1000:03d}"
    else:
        hundredths = _round_half_up(grams * _LB_DEN * 100, _LB_NUM)
        digits = f"{hundredths // 100:02d}.{hundredths % 100:02d}"
    return bytes([STX]) + digits.encode("ascii") + (b"N" if net else b"") + bytes([CR])


def format_status(
    *,
    in_motion: bool = False,
    over_capacity: bool = False,
    under_zero: bool = False,
    zero_error: bool = False,
    net: bool = False,
) -> bytes:
    """The status frame a scale sends instead of a weight (used by the simulator and tests)."""
    byte = 0x40
    for flag, bit in (
        (in_motion, _MOTION),
        (over_capacity, _OVER),
        (under_zero, _UNDER),
        (zero_error, _OUTSIDE_ZERO),
        (net, _NET),
    ):
        byte |= bit if flag else 0
    return bytes([STX, ord("?"), byte, CR])


class FrameReader:
    """Collects ``STX ... CR`` frames from a byte stream that may arrive in pieces or carry noise."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return the complete frames it finished. Bytes outside a frame are dropped."""
        self._buf += data
        frames: list[bytes] = []
        while True:
            start = self._buf.find(STX)
            if start < 0:
                self._buf.clear()
                break
            del self._buf[:start]
            end = self._buf.find(CR)
            if (end < 0 and len(self._buf) > MAX_FRAME) or end >= MAX_FRAME:
                del self._buf[:1]  # no frame is this long: resync on the next STX
                continue
            if end < 0:
                break
            frames.append(bytes(self._buf[: end + 1]))
            del self._buf[: end + 1]
        return frames


def with_even_parity(data: bytes) -> bytes:
    """7E1 on an 8N1 port: bit 7 carries the even parity of the low seven bits.

    Both framings are ten bits on the wire, so a port (or pty) opened 8N1 talks to a 7E1
    scale exactly, whatever the serial driver supports.
    """
    return bytes(b & 0x7F | (bin(b & 0x7F).count("1") & 1) << 7 for b in data)


def seven_bit(data: bytes) -> bytes:
    """Drop the parity bit that a 7E1 sender puts in bit 7 of each byte read 8N1."""
    return bytes(b & 0x7F for b in data)


def _round_half_up(numerator: int, denominator: int) -> int:
    return (2 * numerator + denominator) // (2 * denominator)


def _to_grams(text: str, unit: Unit) -> int:
    whole, _, fraction = text.partition(".")
    scale = 10 ** len(fraction)
    value = int(whole or "0") * scale + int(fraction or "0")  # the weight times ``scale``
    if unit == "kg":
        return _round_half_up(value * 1000, scale)
    return _round_half_up(value * _LB_NUM, scale * _LB_DEN)

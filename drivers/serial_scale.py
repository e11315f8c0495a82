"""A Toledo 8217 scale on a serial port: pyserial runs in a worker thread, the protocol lives in scale.py."""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import TracebackType
from typing import Self

import serial

from drivers.scale import (
    CR,
    MAX_FRAME,
    WEIGHT_REQUEST,
    FrameReader,
    Framing,
    ScaleError,
    ScaleFrameError,
    Unit,
    WeightReading,
    claims_scale,
    parse_frame,
    reading_from,
    seven_bit,
    with_even_parity,
)


class ScaleOffline(ScaleError):
    """The scale's port cannot be opened or the scale did not answer in time."""

    def __init__(self, port: str, reason: str) -> None:
        super().__init__(f"scale on {port} is not answering ({reason}); check its cable and power")
        self.port = port


class NotAScale(ScaleError):
    """The device on the port answered, but not as a Toledo 8217 scale."""

    def __init__(self, port: str, reply: bytes) -> None:
        super().__init__(
            f"the device on {port} does not answer like a Toledo 8217 scale (got {reply[:MAX_FRAME]!r}); "
            "set the scale's protocol to 8217 or choose another port"
        )
        self.port = port
        self.reply = reply


class SerialScale:
    """An async context manager around one scale port; each call holds the port for one exchange."""

    def __init__(
        self, port: str, *, unit: Unit = "kg", baudrate: int = 9600, framing: Framing = "7E1"
    ) -> None:
        self.port = port
        self.unit = unit
        self.baudrate = baudrate
        self.framing = framing
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
        """Open the port; raise ScaleOffline if it does not exist or is busy."""
        if self._serial is not None:
            return
        try:
            # Always 8N1: 7E1 is done in software (see with_even_parity), because not every serial
            # driver accepts 7-bit framing and the bytes on the wire are the same.
            self._serial = await asyncio.to_thread(
                serial.Serial, self.port, baudrate=self.baudrate, timeout=0, write_timeout=1, exclusive=True
            )
        except (serial.SerialException, OSError, ValueError) as err:
            raise ScaleOffline(self.port, str(err)) from err

    async def close(self) -> None:
        """Close the port; safe to call twice."""
        port, self._serial = self._serial, None
        if port is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                await asyncio.to_thread(port.close)

    async def probe(self, io_timeout: float = 0.5) -> bool:
        """Send one weight request; True only if the whole reply is one well-formed 8217 frame."""
        try:
            reply = await self._exchange(WEIGHT_REQUEST, io_timeout)
        except ScaleOffline:
            return False
        return claims_scale(reply, self.unit)

    async def read_weight(self, io_timeout: float = 1.0) -> WeightReading:
        """Ask for the weight; raise ScaleNotReady (motion, over capacity...), ScaleOffline or NotAScale."""
        reply = await self._exchange(WEIGHT_REQUEST, io_timeout)
        if not reply:
            raise ScaleOffline(self.port, f"no reply within {io_timeout:g} s")
        frames = FrameReader().feed(reply)
        if not frames:
            raise NotAScale(self.port, reply)
        try:
            return reading_from(parse_frame(frames[-1], self.unit))
        except ScaleFrameError as err:
            raise NotAScale(self.port, reply) from err

    async def _exchange(self, request: bytes, io_timeout: float) -> bytes:
        """Write ``request`` and read up to the first CR, in a thread so the event loop never waits."""
        port = self._serial
        if port is None:
            raise ScaleOffline(self.port, "port is not open")
        async with self._lock:
            try:
                parity = self.framing == "7E1"
                request = with_even_parity(request) if parity else request
                reply = await asyncio.to_thread(_exchange_blocking, port, request, io_timeout)
                return seven_bit(reply) if parity else reply
            except (serial.SerialException, OSError) as err:
                raise ScaleOffline(self.port, str(err)) from err


def _exchange_blocking(port: serial.Serial, request: bytes, io_timeout: float) -> bytes:
    """Write ``request``; read until a CR (parity bit ignored), ``2 * MAX_FRAME`` bytes or the deadline."""
    port.reset_input_buffer()  # a stale frame must not answer this request
    port.write(request)
    port.flush()
    deadline = time.monotonic() + io_timeout
    reply = bytearray()
    while len(reply) < 2 * MAX_FRAME:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        port.timeout = remaining
        byte: bytes = port.read(1)
        if not byte:
            break
        reply += byte
        if byte[0] & 0x7F == CR:
            break
    return bytes(reply)


async def probe_scale(
    port: str, *, unit: Unit = "kg", baudrate: int = 9600, framing: Framing = "7E1", io_timeout: float = 0.5
) -> bool:
    """Open ``port``, probe it once and close it; any failure means "not a scale"."""
    try:
        async with SerialScale(port, unit=unit, baudrate=baudrate, framing=framing) as scale:
            return await scale.probe(io_timeout)
    except ScaleError:
        return False

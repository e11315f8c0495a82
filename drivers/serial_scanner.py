"""Serial and USB-CDC scanners: a pure byte-frame decoder and a thin pyserial transport in a thread.

pyserial only blocks, so the port is read in a worker thread that owns it from open to
close, and completed scans cross to the event loop with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Self

import serial

from drivers.scanner import (
    OutcomeQueue,
    Rejection,
    RejectReason,
    Scan,
    ScannerUnavailable,
    ScanOutcome,
    parse_aim,
)

__all__ = ["CR", "CRLF", "EOL", "ETX", "LF", "SerialFrameDecoder", "SerialScanner"]


CR = b"\r"
LF = b"\n"
CRLF = b"\r\n"
ETX = b"\x03"
# Any line ending: scanners ship with CR, LF or CRLF and installers rarely know which.
EOL = (CRLF, CR, LF)
_EXCERPT = 64


class SerialFrameDecoder:
    """Splits a scanner's byte stream into scans at terminators; pure, never raises on input bytes."""

    def __init__(
        self,
        *,
        terminator: bytes | tuple[bytes, ...] = EOL,
        prefix: bytes = b"",
        suffix: bytes = b"",
        max_frame: int = 4096,
        encoding: str = "utf-8",
        aim: bool = False,
        allowed_controls: str = "\x1d",
    ) -> None:
        """Configure framing; `allowed_controls` are control characters kept in data (GS for GS1)."""
        terminators = (terminator,) if isinstance(terminator, bytes) else terminator
        if not terminators or not all(terminators):
            raise ValueError(f"terminators must be non-empty byte strings, not {terminator!r}")
        # Longest first, so CRLF wins over CR when both match at the same place.
        self._terminators = tuple(sorted(terminators, key=len, reverse=True))
        self._keep = max(map(len, self._terminators)) - 1
        self.prefix = prefix
        self.suffix = suffix
        self.max_frame = max_frame
        self.encoding = encoding
        self.aim = aim
        self.allowed_controls = allowed_controls
        self._buffer = bytearray()
        self._started = 0.0
        # After an over-long frame: drop bytes until the next terminator, then resync.
        self._skipping = False

    @property
    def pending(self) -> bool:
        """Whether a frame has started and not yet ended."""
        return bool(self._buffer) and not self._skipping

    @property
    def buffered(self) -> int:
        """Bytes held in memory; never more than `max_frame` plus one terminator."""
        return len(self._buffer)

    def feed(self, data: bytes, now: float) -> list[ScanOutcome]:
        """Add bytes received at `now` (epoch seconds); return the frames they completed."""
        outcomes: list[ScanOutcome] = []
        if data and not self._buffer:
            self._started = now
        self._buffer += data
        while True:
            found = self._find_terminator()
            if found is None:
                break
            position, length = found
            frame = bytes(self._buffer[:position])
            del self._buffer[: position + length]
            if self._skipping:
                self._skipping = False
            elif frame:
                outcomes.append(self._frame(frame, self._started, now))
            self._started = now
        if len(self._buffer) > self.max_frame + self._keep:
            if not self._skipping:
                outcomes.append(self._too_long(now))
            # Keep a possible first half of a terminator split across reads.
            del self._buffer[: len(self._buffer) - self._keep]
            self._skipping = True
        return outcomes

    def flush(self, now: float) -> list[ScanOutcome]:
        """End a frame that never got its terminator (device idle or unplugged)."""
        frame, skipping = bytes(self._buffer), self._skipping
        self._buffer.clear()
        self._skipping = False
        if not frame or skipping:
            return []
        detail = (
            f"{len(frame)} bytes with no terminator; the scanner stopped mid-frame or its suffix is wrong"
        )
        return [Rejection(RejectReason.UNTERMINATED, detail, _excerpt(frame), len(frame), self._started, now)]

    def _find_terminator(self) -> tuple[int, int] | None:
        best: tuple[int, int] | None = None
        for terminator in self._terminators:
            position = self._buffer.find(terminator)
            if position >= 0 and (best is None or position < best[0]):
                best = (position, len(terminator))
        return best

    def _too_long(self, now: float) -> Rejection:
        detail = f"more than {self.max_frame} bytes without a terminator; dropping input until the next one"
        size = len(self._buffer)
        return Rejection(RejectReason.TOO_LONG, detail, _excerpt(self._buffer), size, self._started, now)

    def _frame(self, frame: bytes, started: float, ended: float) -> ScanOutcome:
        def reject(reason: RejectReason, detail: str) -> Rejection:
            return Rejection(reason, detail, _excerpt(frame), len(frame), started, ended)

        if len(frame) > self.max_frame:
            return reject(
                RejectReason.TOO_LONG, f"{len(frame)} bytes, more than the {self.max_frame} allowed"
            )
        body = frame
        if self.prefix:
            if not body.startswith(self.prefix):
                return reject(RejectReason.MISSING_PREFIX, f"frame does not start with {self.prefix!r}")
            body = body[len(self.prefix) :]
        if self.suffix:
            if not body.endswith(self.suffix):
                return reject(RejectReason.MISSING_SUFFIX, f"frame does not end with {self.suffix!r}")
            body = body[: -len(self.suffix)]
        try:
            text = body.decode(self.encoding)
        except UnicodeDecodeError as err:
            return reject(
                RejectReason.BAD_ENCODING, f"byte {err.start} not {self.encoding}: noise or wrong baud rate"
            )
        bad = next(
            (i for i, c in enumerate(text) if not c.isprintable() and c not in self.allowed_controls), None
        )
        if bad is not None:
            detail = (
                f"character {bad} is the control code {ord(text[bad]):#04x}: line noise or wrong baud rate"
            )
            return reject(RejectReason.NON_PRINTABLE, detail)
        aim, text = parse_aim(text) if self.aim else (None, text)
        return Scan(text, started, ended, aim)


def _excerpt(data: bytes | bytearray) -> str:
    return bytes(data[:_EXCERPT]).decode("utf-8", "backslashreplace")[:_EXCERPT]


class SerialScanner:
    """A scanner on a serial port: `async with` opens it; `read()` or `async for` yields its outcomes."""

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = 9600,
        decoder: SerialFrameDecoder | None = None,
        idle_timeout: float = 0.5,
        queue_size: int = 256,
        serial_factory: Callable[..., Any] | None = None,
    ) -> None:
        """`serial_factory` defaults to `serial.Serial`; tests and simulators may pass their own."""
        self.port = port
        self.baudrate = baudrate
        self.decoder = decoder or SerialFrameDecoder()
        self.idle_timeout = idle_timeout
        self._factory = serial_factory or serial.Serial
        self._outcomes = OutcomeQueue(port, queue_size)
        self._stop = threading.Event()
        self._tasks: asyncio.TaskGroup | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        """Open the port (in a thread) and start reading it."""
        try:
            # A short read timeout lets the thread notice `_stop` within 0.1 s.
            handle = await asyncio.to_thread(self._factory, self.port, self.baudrate, timeout=0.1)
        except (serial.SerialException, OSError) as err:
            raise ScannerUnavailable(self.port, str(err)) from err
        loop = asyncio.get_running_loop()
        self._stop.clear()
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        reader = asyncio.to_thread(self._read_loop, handle, loop)
        self._reader = self._tasks.create_task(reader, name=f"serial-scanner {self.port}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the reader thread; it closes the port itself so no other thread touches it."""
        self._stop.set()
        if self._tasks is None:
            return
        tasks, self._tasks = self._tasks, None
        try:
            # Not passing the body's exception on: that would make the group abandon the thread.
            await tasks.__aexit__(None, None, None)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise

    def __aiter__(self) -> Self:
        """Iterate over outcomes until the scanner goes away (which raises ScannerUnavailable)."""
        return self

    async def __anext__(self) -> ScanOutcome:
        """The next scan or rejection."""
        return await self.read()

    async def read(self) -> ScanOutcome:
        """Wait for the next scan or rejection; raise ScannerUnavailable once the port has failed."""
        return await self._outcomes.get()

    def _read_loop(self, handle: Any, loop: asyncio.AbstractEventLoop) -> None:
        last_data = time.monotonic()
        try:
            while not self._stop.is_set():
                data: bytes = handle.read(handle.in_waiting or 1)
                if data:
                    last_data = time.monotonic()
                    self._deliver(loop, self.decoder.feed(data, time.time()))
                elif self.decoder.pending and time.monotonic() - last_data > self.idle_timeout:
                    self._deliver(loop, self.decoder.flush(time.time()))
        except (serial.SerialException, OSError) as err:
            self._deliver(loop, self.decoder.flush(time.time()))
            loop.call_soon_threadsafe(self._outcomes.close, str(err))
        finally:
            with contextlib.suppress(serial.SerialException, OSError):
                handle.close()

    def _deliver(self, loop: asyncio.AbstractEventLoop, items: Iterable[ScanOutcome]) -> None:
        for item in items:
            loop.call_soon_threadsafe(self._outcomes.put, item)

"""Simulated devices on real transports, for tests and for ``storelink-hub demo``.

``SimNetworkPrinter`` listens on a real TCP socket like a :9100 printer; the serial devices
sit on a real pty, so the code under test opens ``port_path`` with pyserial exactly as it
would open ``/dev/ttyUSB0``. All are async context managers and never block the event loop
(the pty master is served with ``loop.add_reader``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import Callable
from types import TracebackType
from typing import Literal, Self

from drivers.customer_display import COLUMNS
from drivers.escpos_decode import EscPosDecoder
from drivers.scale import CR, STX, Framing, Unit, format_status, format_weight, seven_bit, with_even_parity

ScaleMode = Literal["scale", "silent", "echo", "garbage"]
# What a noisy or misconfigured device (wrong baud rate, another protocol) tends to send.
GARBAGE = b"\xfe\x00\x7f\x15 1x\x9f\xe3\x1b\xff 0.0 \x1e\x80"
_CHUNK = 4096


async def _wait_until(changed: asyncio.Event, predicate: Callable[[], bool], within: float) -> None:
    async with asyncio.timeout(within):
        while not predicate():
            changed.clear()
            await changed.wait()


class SimNetworkPrinter:
    """An ESC/POS network printer: records every byte, answers DLE EOT, can run out of paper."""

    def __init__(
        self,
        *,
        encoding: str = "gb18030",
        paper_out: bool = False,
        paper_near_end: bool = False,
        cover_open: bool = False,
        cutter_error: bool = False,
        drawer_open: bool = False,
        offline: bool = False,
        answers_status: bool = True,
    ) -> None:
        """`answers_status=False` is a cheap model that ignores DLE EOT and never replies."""
        self.encoding = encoding
        self.answers_status = answers_status
        self.paper_out = paper_out
        self.paper_near_end = paper_near_end
        self.cover_open = cover_open
        self.cutter_error = cutter_error
        self.drawer_open = drawer_open
        self.port = 0
        self.connections = 0
        self._offline = offline
        self._received = bytearray()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()

    async def __aenter__(self) -> Self:
        await self._listen()
        if self._offline:
            await self._stop_listening()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stop_listening()

    @property
    def offline(self) -> bool:
        """True while the printer refuses connections (switched off or unplugged)."""
        return self._offline

    async def set_offline(self, offline: bool) -> None:
        """Go offline (close the listener, drop connections) or come back on the same port."""
        if offline == self._offline:
            return
        self._offline = offline
        if offline:
            await self._stop_listening()
        else:
            await self._listen()

    @property
    def received(self) -> bytes:
        """Every byte received so far, over all connections."""
        return bytes(self._received)

    def clear(self) -> None:
        """Forget what was received (the paper was torn off)."""
        self._received.clear()

    def status_byte(self, function: int) -> int:
        """The answer to DLE EOT ``function`` (1 printer, 2 offline cause, 3 error, 4 paper sensor)."""
        byte = 0x12  # bits 1 and 4 are fixed to 1 in every status byte
        stopped = self.paper_out or self.cover_open or self.cutter_error
        if function == 1:
            byte |= (0x04 if self.drawer_open else 0) | (0x08 if stopped else 0)
        elif function == 2:
            byte |= (0x04 if self.cover_open else 0) | (0x20 if self.paper_out else 0)
            byte |= 0x40 if self.cutter_error else 0
        elif function == 3:
            byte |= 0x08 if self.cutter_error else 0
        elif function == 4:
            byte |= (0x0C if self.paper_near_end or self.paper_out else 0) | (0x60 if self.paper_out else 0)
        return byte

    def decoded(self, encoding: str | None = None) -> EscPosDecoder:
        """Everything received, decoded (lines, markers, images, unknown commands)."""
        decoder = EscPosDecoder(encoding or self.encoding)
        decoder.feed(bytes(self._received))
        return decoder

    def lines(self, encoding: str | None = None) -> list[str]:
        """The printed lines, markers included."""
        return self.decoded(encoding).lines

    def text(self, encoding: str | None = None) -> str:
        """The printed lines joined with newlines."""
        return self.decoded(encoding).text()

    @property
    def jobs(self) -> list[list[str]]:
        """Printed lines split into receipts at each cut."""
        return self.decoded().jobs()

    async def wait_for(self, predicate: Callable[[SimNetworkPrinter], bool], within: float = 2.0) -> None:
        """Wait until ``predicate(self)`` holds, e.g. ``lambda p: len(p.jobs) >= 1``."""
        await _wait_until(self._changed, lambda: predicate(self), within)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop_listening(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=1.0)
        if server is not None:
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._offline:
            writer.transport.abort()
            return
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        self._writers.add(writer)
        self.connections += 1
        # Only DLE EOT matters while bytes arrive; text is decoded later in the caller's encoding.
        decoder = EscPosDecoder("cp437")
        try:
            while data := await reader.read(_CHUNK):
                self._received += data
                self._changed.set()
                answers = bytes(
                    self.status_byte(int(m.value))
                    for m in decoder.feed(data)
                    if m.kind == "status" and m.value in {"1", "2", "3", "4"}
                )
                if answers and self.answers_status:
                    writer.write(answers)
                    await writer.drain()
        except (ConnectionError, OSError):
            pass  # the client hung up or we went offline: a printer just stops talking
        finally:
            self._writers.discard(writer)
            writer.transport.abort()
            if task is not None:
                self._handlers.discard(task)
            self._changed.set()


class _PtyDevice:
    """A serial device on the master side of a pty; the code under test opens ``port_path``."""

    def __init__(self) -> None:
        self.port_path = ""
        self._master = -1
        self._slave = -1
        self._received = bytearray()
        self._outbox = bytearray()
        self._changed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> Self:
        self._master, self._slave = os.openpty()
        # Raw mode: no echo of what we write, no CR/LF rewriting, before any client opens the port.
        # We keep the slave open so the master never sees a hang-up between client sessions.
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.port_path = os.ttyname(self._slave)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._master, self._on_readable)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._master)
            self._loop.remove_writer(self._master)
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._master = self._slave = -1

    @property
    def received(self) -> bytes:
        """Every byte the host wrote to the device."""
        return bytes(self._received)

    async def wait_for(self, predicate: Callable[[], bool], within: float = 2.0) -> None:
        """Wait until ``predicate()`` holds after bytes arrive from the host."""
        await _wait_until(self._changed, predicate, within)

    def write(self, data: bytes) -> None:
        """Send ``data`` to the host; what the pty cannot take now is sent when it drains."""
        self._outbox += data
        self._flush()

    def _flush(self) -> None:
        try:
            sent = os.write(self._master, self._outbox) if self._outbox else 0
        except BlockingIOError:
            sent = 0
        del self._outbox[:sent]
        if self._loop is not None:
            if self._outbox:
                self._loop.add_writer(self._master, self._flush)
            else:
                self._loop.remove_writer(self._master)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._master, _CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""  # EIO: no slave open; cannot happen while we hold the slave
        if data:
            self._received += data
            self._on_bytes(data)
            self._changed.set()

    def _on_bytes(self, data: bytes) -> None:
        """React to bytes from the host; the base device only records them."""


class SimSerialScale(_PtyDevice):
    """A Toledo 8217 scale: answers ``W`` with the weight or a status, per its state and mode.

    ``mode`` makes it misbehave for handshake tests: ``silent`` never answers, ``echo``
    returns every byte (a loopback plug), ``garbage`` answers with noise.
    """

    def __init__(
        self, grams: int = 0, *, unit: Unit = "kg", mode: ScaleMode = "scale", framing: Framing = "7E1"
    ) -> None:
        super().__init__()
        self.framing: Framing = framing
        self.grams = grams
        self.unit: Unit = unit
        self.mode: ScaleMode = mode
        self.in_motion = False
        self.over_capacity = False
        self.net = False
        self.requests = 0
        self._echo = False

    def set_weight(self, grams: int, *, stable: bool = True) -> None:
        """Put ``grams`` on the pan; ``stable=False`` leaves it moving."""
        self.grams = grams
        self.in_motion = not stable

    def emit_garbage(self, data: bytes = GARBAGE) -> None:
        """Send unsolicited noise, as a scale with the wrong baud rate would."""
        self.write(data)

    def reply(self) -> bytes:
        """The frame this scale sends for ``W`` in its current state."""
        if self.in_motion or self.over_capacity or self.grams < 0:
            return format_status(
                in_motion=self.in_motion,
                over_capacity=self.over_capacity,
                under_zero=self.grams < 0,
                net=self.net,
            )
        return format_weight(self.grams, self.unit, net=self.net)

    def write(self, data: bytes) -> None:
        """Send ``data`` to the host with this scale's framing (7E1 puts parity in bit 7)."""
        super().write(with_even_parity(data) if self.framing == "7E1" else data)

    def _on_bytes(self, data: bytes) -> None:
        if self.mode == "silent":
            return
        if self.mode == "echo":
            super().write(data)  # a loopback plug returns the bytes untouched
            return
        for byte in seven_bit(data) if self.framing == "7E1" else data:
            self._command(byte)

    def _command(self, byte: int) -> None:
        if self._echo:
            # Echo mode (the 8217 serial-port test): every byte comes back until F ends it.
            self._echo = byte != ord("F")
            self.write(bytes([STX, byte, CR]) if byte == ord("F") else bytes([byte]))
            return
        if byte in (CR, 0x0A):
            return
        self.requests += 1
        if self.mode == "garbage":
            self.write(GARBAGE)
        elif byte == ord("W"):
            self.write(self.reply())
        elif byte == ord("E"):
            self._echo = True
            self.write(bytes([STX, byte, CR]))
        elif byte == ord("Z") and not self.in_motion:
            self.grams = 0
            self.write(format_status(net=self.net))
        else:
            self.write(format_status(in_motion=self.in_motion, net=self.net))


class SimSerialScanner(_PtyDevice):
    """A serial barcode scanner: each ``scan`` writes one code and its terminator."""

    def scan(self, text: str, terminator: str = "\r") -> None:
        """Scan ``text``, as the reader sends it after a good read."""
        self.write((text + terminator).encode("utf-8"))

    def write_partial(self, text: str) -> None:
        """Send part of a code with no terminator, as a scanner unplugged mid-frame would."""
        self.write(text.encode("utf-8"))

    def write_garbage(self, data: bytes = GARBAGE) -> None:
        """Send line noise."""
        self.write(data)


class SimPoleDisplay(_PtyDevice):
    """A 2x20 Epson DM-D pole display: records bytes and keeps the two visible lines."""

    def __init__(self) -> None:
        super().__init__()
        self._screen = PoleScreen()
        self._pending = bytearray()

    @property
    def lines(self) -> tuple[str, str]:
        """The two lines as the customer sees them, 20 columns each."""
        return self._screen.lines()

    def _on_bytes(self, data: bytes) -> None:
        self._pending += data
        used = self._screen.feed(bytes(self._pending))
        del self._pending[:used]


class PoleScreen:
    """A pure 2x20 screen emulator for the DM-D command subset our encoder and common POS software use."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.rows = [[" "] * COLUMNS for _ in range(2)]
        self.col = self.row = 0
        self.scroll = False

    def lines(self) -> tuple[str, str]:
        """The two lines as shown."""
        return "".join(self.rows[0]), "".join(self.rows[1])

    def feed(self, data: bytes) -> int:
        """Apply complete commands in ``data``; return how many bytes were used."""
        pos = 0
        while pos < len(data):
            used = self._step(data, pos)
            if used == 0:
                break
            pos += used
        return pos

    def _step(self, data: bytes, pos: int) -> int:  # noqa: PLR0912 - one branch per command byte
        byte = data[pos]
        if byte in (0x1B, 0x1F):
            if pos + 1 >= len(data):
                return 0
            cmd = data[pos + 1]
            if byte == 0x1B and cmd == ord("@"):
                self._reset()
                return 2
            if byte == 0x1F and cmd == ord("$"):
                if pos + 3 >= len(data):
                    return 0
                col, row = data[pos + 2], data[pos + 3]
                if 1 <= col <= COLUMNS and 1 <= row <= 2:
                    self.col, self.row = col - 1, row - 1
                return 4
            if byte == 0x1F and cmd in (1, 2, 3):
                self.scroll = cmd == 2
                return 2
            if cmd in b"tR=%?CEXr#":  # one-parameter settings that do not change the text
                return 3 if pos + 2 < len(data) else 0
            return 2
        if byte == 0x0C:
            self.rows = [[" "] * COLUMNS for _ in range(2)]
            self.col = self.row = 0
        elif byte == 0x0B:
            self.col = self.row = 0
        elif byte == 0x0D:
            self.col = 0
        elif byte == 0x0A:
            self._next_line()
        elif byte == 0x18:
            self.rows[self.row] = [" "] * COLUMNS
            self.col = 0
        elif byte == 0x08:
            self.col = max(self.col - 1, 0)
        elif byte >= 0x20:
            self.rows[self.row][self.col] = bytes([byte]).decode("cp437")
            self.col += 1
            if self.col == COLUMNS:
                self.col = 0
                self._next_line()
        return 1

    def _next_line(self) -> None:
        if self.row == 0:
            self.row = 1
        elif self.scroll:
            self.rows = [self.rows[1], [" "] * COLUMNS]
        else:
            self.row = 0  # overwrite mode wraps from the bottom line to the top

"""Printer transports against a real TCP server and a real pty; status replies parsed purely."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.escpos import PrinterProfile, encode
from drivers.escpos_status import (
    FULL_STATUS_REQUEST,
    PrinterStatus,
    StatusReplyError,
    parse_status,
    status_request,
)
from drivers.printer import NetworkPrinter, PrinterOffline, SerialPrinter
from drivers.receipt import Cell, Columns, Cut, Text

PROFILE = PrinterProfile("front", paper_mm=58)
OK = bytes([0x12, 0x12, 0x12, 0x12])
RECEIPT = [
    Text("好邻居便利店", width=2, align="center"),
    Columns((Cell("农夫山泉"), Cell("¥4.00", align="right"))),
    Cut(),
]


@dataclass
class FakePrinterServer:
    """A raw :9100 printer: records every byte and answers each DLE EOT n with status[n-1]."""

    status: bytes = OK
    answer: bool = True
    hang_up: bool = False  # answer the first query, then drop the connection
    received: bytearray = field(default_factory=bytearray)
    connections: int = 0
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        pending = b""
        try:
            while chunk := await reader.read(4096):
                self.received += chunk
                pending += chunk
                while (at := pending.find(b"\x10\x04")) >= 0 and len(pending) > at + 2:
                    if self.answer:
                        writer.write(self.status[pending[at + 2] - 1 : pending[at + 2]])
                        await writer.drain()
                    if self.hang_up:
                        return
                    pending = pending[at + 3 :]
        finally:
            writer.close()


@pytest.fixture
async def server() -> AsyncIterator[FakePrinterServer]:
    fake = FakePrinterServer()
    tcp = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    fake.port = tcp.sockets[0].getsockname()[1]
    async with tcp:
        yield fake
        tcp.close()


def network_printer(port: int) -> NetworkPrinter:
    return NetworkPrinter("kitchen", PROFILE, "127.0.0.1", port, connect_timeout=1.0)


async def test_print_sends_exactly_the_encoded_bytes(server: FakePrinterServer) -> None:
    async with network_printer(server.port) as printer:
        await printer.print_document(RECEIPT)
        await printer.send(b"\x1bd\x02")
        status = await printer.status()  # a round trip: everything before it has arrived
    assert bytes(server.received) == encode(RECEIPT, PROFILE) + b"\x1bd\x02" + FULL_STATUS_REQUEST
    assert status.ready
    assert server.connections == 1


async def test_status_reports_what_the_printer_answers(server: FakePrinterServer) -> None:
    server.status = bytes([0x16, 0x12, 0x12, 0x1E])  # drawer open, paper near end
    async with network_printer(server.port) as printer:
        status = await printer.status()
    assert status == PrinterStatus(
        online=True, cover_open=False, paper_out=False, paper_near_end=True, drawer_open=True, error=False
    )


async def test_silent_printer_is_offline_and_the_connection_is_replaced(server: FakePrinterServer) -> None:
    server.answer = False
    async with network_printer(server.port) as printer:
        with pytest.raises(PrinterOffline, match="'kitchen' is offline") as caught:
            await printer.status(io_timeout=0.2)
        assert isinstance(caught.value.__cause__, TimeoutError)
        server.answer = True
        assert (await printer.status()).ready
    assert server.connections == 2


async def test_refused_connection_raises_printer_offline_from_the_socket_error() -> None:
    tcp = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = tcp.sockets[0].getsockname()[1]
    tcp.close()
    await tcp.wait_closed()
    printer = network_printer(port)
    with pytest.raises(PrinterOffline) as caught:
        await printer.print_document(RECEIPT)
    assert caught.value.printer_id == "kitchen"
    assert "check that it is switched on" in str(caught.value)
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)


async def test_printer_hanging_up_mid_reply_is_offline(server: FakePrinterServer) -> None:
    server.hang_up = True
    async with network_printer(server.port) as printer:
        with pytest.raises(PrinterOffline) as caught:
            await printer.status()
    assert isinstance(caught.value.__cause__, asyncio.IncompleteReadError)


async def test_concurrent_print_and_status_do_not_interleave(server: FakePrinterServer) -> None:
    big = [Text("康师傅红烧牛肉面(桶装) " * 40)] * 50
    async with network_printer(server.port) as printer:
        _, status = await asyncio.gather(printer.print_document(big), printer.status())
    payload = encode(big, PROFILE)
    assert bytes(server.received) in (payload + FULL_STATUS_REQUEST, FULL_STATUS_REQUEST + payload)
    assert status.ready


async def test_serial_printer_on_a_pty() -> None:
    controller, device = os.openpty()
    received = bytearray()

    def fake_printer() -> None:
        while len(received) < len(FULL_STATUS_REQUEST) or not received.endswith(FULL_STATUS_REQUEST):
            received.extend(os.read(controller, 4096))
        os.write(controller, bytes([0x12, 0x16, 0x12, 0x72]))  # cover open, paper out

    thread = threading.Thread(target=fake_printer, daemon=True)
    thread.start()
    try:
        async with SerialPrinter("bar", PROFILE, os.ttyname(device), 19200) as printer:
            await printer.print_document(RECEIPT)
            status = await printer.status(io_timeout=2.0)
    finally:
        thread.join(timeout=2)
        os.close(controller)
        os.close(device)
    assert bytes(received) == encode(RECEIPT, PROFILE) + FULL_STATUS_REQUEST
    assert status.cover_open
    assert status.paper_out
    assert status.problem() == "the printer cover is open; close it"


async def test_missing_serial_port_is_offline() -> None:
    with pytest.raises(PrinterOffline, match="/dev/nonexistent-printer"):
        await SerialPrinter("bar", PROFILE, "/dev/nonexistent-printer").send(b"x")


def test_status_request_bytes() -> None:
    assert [status_request(n) for n in (1, 2, 3, 4)] == [
        b"\x10\x04\x01",
        b"\x10\x04\x02",
        b"\x10\x04\x03",
        b"\x10\x04\x04",
    ]
    assert FULL_STATUS_REQUEST == b"\x10\x04\x01\x10\x04\x02\x10\x04\x03\x10\x04\x04"
    with pytest.raises(ValueError, match="1, 2, 3 or 4"):
        status_request(5)


@pytest.mark.parametrize(
    ("replies", "expected", "problem"),
    [
        (OK, PrinterStatus(True, False, False, False, False, False), None),
        (
            bytes([0x1A, 0x16, 0x12, 0x12]),
            PrinterStatus(False, True, False, False, False, False),
            "cover is open",
        ),
        (bytes([0x1A, 0x32, 0x12, 0x72]), PrinterStatus(False, False, True, False, False, False), "no paper"),
        (bytes([0x12, 0x12, 0x12, 0x1E]), PrinterStatus(True, False, False, True, False, False), None),
        # Near-end sensors report on bit 2 or bit 3 depending on the model; either means near end.
        (bytes([0x12, 0x12, 0x12, 0x16]), PrinterStatus(True, False, False, True, False, False), None),
        (bytes([0x12, 0x12, 0x12, 0x1A]), PrinterStatus(True, False, False, True, False, False), None),
        (bytes([0x1A, 0x52, 0x1A, 0x12]), PrinterStatus(False, False, False, False, False, True), "error"),
        (bytes([0x16, 0x12, 0x12, 0x12]), PrinterStatus(True, False, False, False, True, False), None),
        (bytes([0x1A, 0x12, 0x12, 0x12]), PrinterStatus(False, False, False, False, False, False), "offline"),
    ],
)
def test_parse_status(replies: bytes, expected: PrinterStatus, problem: str | None) -> None:
    status = parse_status(replies)
    assert status == expected
    if problem is None:
        assert status.problem() is None
    else:
        assert problem in (status.problem() or "")
        assert not status.ready


@pytest.mark.parametrize(
    "replies", [b"", b"\x12\x12\x12", b"\x12\x12\x12\x12\x12", b"\xff\x12\x12\x12", b"\x12\x12\x12\x13"]
)
def test_bad_status_replies_are_rejected(replies: bytes) -> None:
    with pytest.raises(StatusReplyError):
        parse_status(replies)


@given(st.binary(max_size=8))
def test_status_parser_accepts_only_four_well_formed_bytes(replies: bytes) -> None:
    if len(replies) == 4 and all(byte & 0x93 == 0x12 for byte in replies):
        assert isinstance(parse_status(replies), PrinterStatus)
    else:
        with pytest.raises(StatusReplyError):
            parse_status(replies)

"""Simulators on real transports: the network printer over TCP, the scanner over a pty."""

from __future__ import annotations

import asyncio

import pytest
import serial

from drivers.escpos import PrinterProfile
from drivers.printer import NetworkPrinter, PrinterOffline
from drivers.receipt import Cut, Text
from drivers.sim import GARBAGE, SimNetworkPrinter, SimSerialScanner

STATUS_ALL = b"\x10\x04\x01\x10\x04\x02\x10\x04\x03\x10\x04\x04"


async def ask_status(port: int, request: bytes = STATUS_ALL) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(1.5):
            return await reader.readexactly(request.count(b"\x10\x04"))
    finally:
        writer.close()


async def test_bytes_are_recorded_and_decoded():
    receipt = b"\x1b@\x1c&" + "豆浆 ￥3.00".encode("gb18030") + b"\n\x1dV\x00" + b"second\n\x1dV\x01"
    async with SimNetworkPrinter() as printer:
        _reader, writer = await asyncio.open_connection("127.0.0.1", printer.port)
        for i in range(0, len(receipt), 5):  # small writes split the Chinese text across reads
            writer.write(receipt[i : i + 5])
            await writer.drain()
        await printer.wait_for(lambda p: len(p.jobs) == 2 and p.jobs[1][-1] == "[CUT]", within=1.5)
        writer.close()
        assert printer.received == receipt
        assert printer.lines() == ["豆浆 ￥3.00", "[CUT]", "second", "[CUT]"]
        assert printer.jobs == [["豆浆 ￥3.00", "[CUT]"], ["second", "[CUT]"]]
        assert printer.text("gb18030").startswith("豆浆")
        assert printer.connections == 1


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ({}, bytes([0x12, 0x12, 0x12, 0x12])),
        ({"paper_out": True}, bytes([0x1A, 0x32, 0x12, 0x7E])),
        ({"paper_near_end": True}, bytes([0x12, 0x12, 0x12, 0x1E])),
        ({"cover_open": True}, bytes([0x1A, 0x16, 0x12, 0x12])),
        ({"cutter_error": True}, bytes([0x1A, 0x52, 0x1A, 0x12])),
        ({"drawer_open": True}, bytes([0x16, 0x12, 0x12, 0x12])),
    ],
)
async def test_dle_eot_is_answered_per_state(state, expected):
    async with SimNetworkPrinter(**state) as printer:
        assert await ask_status(printer.port) == expected
        assert printer.decoded().lines == []  # status polls print nothing


async def test_state_changes_are_seen_by_the_next_request():
    async with SimNetworkPrinter() as printer:
        assert await ask_status(printer.port, b"\x10\x04\x04") == b"\x12"
        printer.paper_out = True
        assert await ask_status(printer.port, b"\x10\x04\x04") == b"\x7e"


async def test_status_split_across_writes_is_answered_once_complete():
    async with SimNetworkPrinter(cover_open=True) as printer:
        reader, writer = await asyncio.open_connection("127.0.0.1", printer.port)
        writer.write(b"\x10\x04")
        await writer.drain()
        await printer.wait_for(lambda p: len(p.received) == 2, within=1.0)
        writer.write(b"\x02")
        async with asyncio.timeout(1.0):
            assert await reader.readexactly(1) == b"\x16"
        writer.close()


async def test_our_network_printer_reads_the_simulated_status():
    async with SimNetworkPrinter(paper_out=True) as sim:
        printer = NetworkPrinter("kitchen", PrinterProfile("sim"), "127.0.0.1", sim.port)
        async with printer:
            status = await printer.status(io_timeout=1.5)
            assert status.paper_out
            assert not status.ready
            await printer.print_document([Text("厨房单 #0042"), Cut()], io_timeout=1.5)
            await sim.wait_for(lambda p: "[CUT]" in p.lines(), within=1.5)
        assert "厨房单 #0042" in sim.lines()


async def test_offline_refuses_connections_and_comes_back_on_the_same_port():
    async with SimNetworkPrinter(offline=True) as printer:
        port = printer.port
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        await printer.set_offline(False)
        assert printer.port == port
        assert await ask_status(port, b"\x10\x04\x01") == b"\x12"


async def test_going_offline_drops_open_connections():
    async with SimNetworkPrinter() as printer:
        reader, writer = await asyncio.open_connection("127.0.0.1", printer.port)
        writer.write(b"hello\n")
        await printer.wait_for(lambda p: p.received == b"hello\n", within=1.0)
        await printer.set_offline(True)
        assert printer.offline
        async with asyncio.timeout(1.0):
            assert await reader.read(10) == b""  # the printer hung up
        writer.close()
        client = NetworkPrinter("bar", PrinterProfile("sim"), "127.0.0.1", printer.port, connect_timeout=1.0)
        with pytest.raises(PrinterOffline):
            await client.status(io_timeout=0.5)


async def test_scanner_frames_garbage_and_partial_reads_through_a_pty():
    async with SimSerialScanner() as scanner:
        # pyserial flushes input on open, as real hardware loses scans made before the port is open.
        port = await asyncio.to_thread(serial.Serial, scanner.port_path, timeout=1.0)
        try:
            scanner.scan("6901234567892")
            scanner.write_garbage()
            scanner.write_partial("69012")
            expected = b"6901234567892\r" + GARBAGE + b"69012"
            assert await asyncio.to_thread(port.read, len(expected)) == expected
            scanner.scan("ABC", terminator="\r\n")
            assert await asyncio.to_thread(port.read, 5) == b"ABC\r\n"
            await asyncio.to_thread(port.write, b"\x16T\r")  # a host command reaches the scanner
            await scanner.wait_for(lambda: scanner.received == b"\x16T\r", within=1.0)
        finally:
            await asyncio.to_thread(port.close)

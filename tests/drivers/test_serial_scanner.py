"""Serial scanner framing (pure) and the pyserial transport through a real pty."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterator

import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.gs1 import GS
from drivers.scanner import Rejection, RejectReason, Scan, ScannerUnavailable
from drivers.serial_scanner import CR, CRLF, ETX, LF, SerialFrameDecoder, SerialScanner

T0 = 1_700_000_000.0


def _texts(outcomes) -> list[tuple[str, str]]:
    return [("scan", o.text) if isinstance(o, Scan) else (o.reason.value, o.excerpt) for o in outcomes]


@pytest.mark.parametrize("terminator", [CR, LF, CRLF, ETX, b"#!"])
def test_each_terminator(terminator):
    decoder = SerialFrameDecoder(terminator=terminator)
    outcomes = decoder.feed(b"4006381333931" + terminator + b"]C1X" + terminator, T0)
    assert _texts(outcomes) == [("scan", "4006381333931"), ("scan", "]C1X")]


def test_any_line_ending_by_default_and_crlf_split_across_reads():
    decoder = SerialFrameDecoder()
    assert _texts(decoder.feed(b"A1\r", T0)) == [("scan", "A1")]
    assert _texts(decoder.feed(b"\nB2\n", T0 + 1)) == [("scan", "B2")]
    assert _texts(decoder.feed(b"C3\r\nD4\r", T0 + 2)) == [("scan", "C3"), ("scan", "D4")]


def test_frame_assembled_from_pieces_keeps_its_start_time():
    decoder = SerialFrameDecoder(terminator=CRLF)
    assert decoder.feed(b"0123", T0) == []
    assert decoder.feed(b"45\r", T0 + 0.01) == []
    assert decoder.pending
    [scan] = decoder.feed(b"\n", T0 + 0.02)
    assert (scan.text, scan.started, scan.ended) == ("012345", T0, T0 + 0.02)


def test_prefix_and_suffix_are_stripped_and_required():
    decoder = SerialFrameDecoder(prefix=b"\x02", suffix=b"*", terminator=ETX)
    outcomes = decoder.feed(b"\x0212345*\x03" + b"12345*\x03" + b"\x0212345\x03", T0)
    assert _texts(outcomes) == [
        ("scan", "12345"),
        ("missing_prefix", "12345*"),
        ("missing_suffix", "\x0212345"),
    ]


def test_garbage_is_rejected_and_the_decoder_resyncs_at_the_next_terminator():
    decoder = SerialFrameDecoder(terminator=CR)
    outcomes = decoder.feed(b"\x00\x07AB\r\xff\xfe12\r9501\r", T0)
    assert _texts(outcomes) == [
        ("non_printable", "\x00\x07AB"),
        ("bad_encoding", "\\xff\\xfe12"),
        ("scan", "9501"),
    ]
    assert "0x00" in outcomes[0].detail


def test_gs_is_kept_and_utf8_text_is_printable():
    decoder = SerialFrameDecoder(aim=True)
    outcomes = decoder.feed(
        b"]C1" + b"10AB" + GS.encode() + b"17261231\r" + "]Q1茶 12元".encode() + b"\r", T0
    )
    assert [o.text for o in outcomes] == ["10AB" + GS + "17261231", "茶 12元"]
    assert [o.aim.code for o in outcomes] == ["C1", "Q1"]


def test_over_long_frame_is_rejected_once_then_resyncs():
    decoder = SerialFrameDecoder(terminator=CRLF, max_frame=16)
    outcomes = []
    for _ in range(100):
        outcomes += decoder.feed(b"X" * 50, T0)
        assert decoder.buffered <= 16 + 1
    outcomes += decoder.feed(b"tail\r", T0 + 1)
    outcomes += decoder.feed(b"\nOK1\r\n", T0 + 1)
    assert _texts(outcomes) == [("too_long", "X" * 50), ("scan", "OK1")]


def test_exact_max_frame_is_accepted_and_one_more_byte_is_not():
    decoder = SerialFrameDecoder(terminator=CR, max_frame=8)
    outcomes = decoder.feed(b"12345678\r123456789\r", T0)
    assert _texts(outcomes) == [("scan", "12345678"), ("too_long", "123456789")]


def test_flush_reports_a_partial_frame():
    decoder = SerialFrameDecoder()
    decoder.feed(b"9501", T0)
    [rejection] = decoder.flush(T0 + 5)
    assert (rejection.reason, rejection.excerpt, rejection.started, rejection.ended) == (
        RejectReason.UNTERMINATED,
        "9501",
        T0,
        T0 + 5,
    )
    assert decoder.flush(T0 + 6) == []


def test_empty_terminator_is_refused():
    with pytest.raises(ValueError, match="non-empty"):
        SerialFrameDecoder(terminator=(CR, b""))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=40))
def test_frame_decoder_never_raises_on_arbitrary_bytes(chunks):
    decoder = SerialFrameDecoder(max_frame=24, prefix=b"\x02", aim=True)
    for chunk in chunks:
        for outcome in decoder.feed(chunk, T0):
            assert isinstance(outcome, Scan | Rejection)
        assert decoder.buffered <= 24 + 1
    decoder.flush(T0)
    assert not decoder.pending


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.text(alphabet="0123456789ABCXYZ-./ ", min_size=1, max_size=30), max_size=10),
    st.sampled_from([CR, LF, CRLF, ETX]),
    st.data(),
)
def test_frames_survive_any_chunking(texts, terminator, data):
    stream = b"".join(t.encode() + terminator for t in texts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder = SerialFrameDecoder(terminator=terminator)
    outcomes = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        outcomes += decoder.feed(stream[start:end], T0)
    assert [o.text for o in outcomes] == texts


# --- the transport, through a real pseudo-terminal ----------------------------------------


@pytest.fixture
def pty_port() -> Iterator[tuple[int, str]]:
    """A pty pair: the test writes to the master fd as the scanner; the slave path is the port."""
    master, slave = os.openpty()
    path = os.ttyname(slave)
    # pyserial opens the path itself; our copy of the slave only has to outlive that.
    os.close(slave)
    yield master, path
    with contextlib.suppress(OSError):  # the unplug test closes it itself
        os.close(master)


async def _until(predicate, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest.fixture
async def loop_guard(caplog):
    """Fail the test if any callback held the event loop for 50 ms or more (a blocking call)."""
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = 0.05
    caplog.set_level(logging.WARNING, logger="asyncio")
    yield
    records = caplog.get_records("call")
    slow = [r.getMessage() for r in records if r.name == "asyncio" and "took" in r.getMessage()]
    assert not slow, slow


async def test_pty_scans_garbage_and_unplug_mid_frame(pty_port, loop_guard):
    master, path = pty_port
    decoder = SerialFrameDecoder(terminator=CRLF, aim=True)
    async with SerialScanner(path, baudrate=115200, decoder=decoder, idle_timeout=30) as scanner:
        os.write(master, b"4006381333931\r\n")
        async with asyncio.timeout(2):
            first = await scanner.read()
        assert isinstance(first, Scan)
        assert first.text == "4006381333931"
        assert abs(first.ended - time.time()) < 5

        os.write(master, b"\x00\x01\xff\xfe\r\n]C10109501101530003\r\n")
        async with asyncio.timeout(2):
            garbage, second = await scanner.read(), await scanner.read()
        assert isinstance(garbage, Rejection)
        assert garbage.reason is RejectReason.BAD_ENCODING
        assert isinstance(second, Scan)
        assert (second.aim.code, second.text) == ("C1", "0109501101530003")

        os.write(master, b"9501")
        await _until(lambda: decoder.pending)
        os.close(master)  # the scanner is unplugged half-way through a frame
        async with asyncio.timeout(2):
            partial = await scanner.read()
            assert isinstance(partial, Rejection)
            assert (partial.reason, partial.excerpt) == (RejectReason.UNTERMINATED, "9501")
            with pytest.raises(ScannerUnavailable) as caught:
                await scanner.read()
        assert caught.value.device == path
        with pytest.raises(ScannerUnavailable):
            await scanner.read()


async def test_pty_async_iteration_and_idle_flush(pty_port):
    master, path = pty_port
    async with SerialScanner(path, idle_timeout=0.2) as scanner:
        os.write(master, b"12\r\n34")
        seen = []
        async with asyncio.timeout(3):
            async for outcome in scanner:
                seen.append(outcome)
                if len(seen) == 2:
                    break
    assert _texts(seen) == [("scan", "12"), ("unterminated", "34")]


async def test_exit_stops_the_reader_promptly_and_closes_the_port(pty_port):
    _master, path = pty_port
    opened = []

    def factory(*args, **kwargs):
        port = serial.Serial(*args, **kwargs)
        opened.append(port)
        return port

    started = time.monotonic()
    async with SerialScanner(path, serial_factory=factory):
        await asyncio.sleep(0.05)
    assert time.monotonic() - started < 1.0
    assert not opened[0].is_open


async def test_missing_port_is_unavailable(tmp_path):
    with pytest.raises(ScannerUnavailable, match="no-such-tty"):
        async with SerialScanner(str(tmp_path / "no-such-tty")):
            pass

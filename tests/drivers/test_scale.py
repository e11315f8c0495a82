"""Toledo 8217 scale: frames, the claiming handshake, and the serial transport over a real pty."""

from __future__ import annotations

import time

import pytest

from drivers.scale import (
    FrameReader,
    ScaleError,
    ScaleFrameError,
    ScaleNotReady,
    ScaleStatus,
    WeightReading,
    claims_scale,
    format_status,
    format_weight,
    parse_frame,
    reading_from,
    seven_bit,
    with_even_parity,
)
from drivers.serial_scale import NotAScale, ScaleOffline, SerialScale, probe_scale
from drivers.sim import SimPoleDisplay, SimSerialScale, SimSerialScanner

# --------------------------------------------------------------------------- frames


@pytest.mark.parametrize(
    ("frame", "grams"),
    [
        (b"\x0201.234\r", 1234),
        (b"\x0200.005\r", 5),
        (b"\x02  0.5\r", 500),
        (b"\x0212.35\r", 12350),
        (b"\x02150.000\r", 150_000),
        (b"\x0203\r", 3000),
        (b"\x02.250\r", 250),
        (b"\x020.0005\r", 1),  # half a gram rounds half up
        (b"\x020.0004\r", 0),
    ],
)
def test_weight_frames_in_kg_become_integer_grams(frame, grams):
    assert parse_frame(frame) == WeightReading(grams, stable=True)


def test_net_weight_frame():
    assert parse_frame(b"\x0200.750N\r") == WeightReading(750, stable=True, net=True)


@pytest.mark.parametrize(
    ("frame", "grams"), [(b"\x0201.00\r", 454), (b"\x0210.00\r", 4536), (b"\x0200.01\r", 5)]
)
def test_weight_frames_in_pounds(frame, grams):
    assert parse_frame(frame, "lb").grams == grams


def test_status_frame_in_motion():
    status = parse_frame(b"\x02?A\r")  # 0x41: bit 6 always set, bit 0 motion
    assert status == ScaleStatus(0x41)
    assert isinstance(status, ScaleStatus)
    assert status.in_motion
    assert not status.over_capacity
    with pytest.raises(ScaleNotReady, match="settles"):
        reading_from(status)


@pytest.mark.parametrize(
    ("byte", "flag", "advice"),
    [
        (0x42, "over_capacity", "take some weight off"),
        (0x44, "under_zero", "below zero"),
        (0x48, "zero_error", "cannot find zero"),
        (0xC2, "over_capacity", "take some weight off"),  # parity bit set by an 8-bit UART
    ],
)
def test_status_frames_name_the_problem(byte, flag, advice):
    status = parse_frame(bytes([0x02, ord("?"), byte, 0x0D]))
    assert isinstance(status, ScaleStatus)
    assert getattr(status, flag)
    with pytest.raises(ScaleNotReady, match=advice) as caught:
        reading_from(status)
    assert isinstance(caught.value, ScaleError)


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"W",
        b"\x0201.234",  # no CR
        b"01.234\r",  # no STX
        b"\x0201.2.3\r",
        b"\x02-01.234\r",
        b"\x02?\x01\r",  # bit 6 clear: not a status byte
        b"\x02??\r",
        b"\x0201.234\r\x0201.234\r",  # two frames: a continuous sender, not a reply
        b"junk\x0201.234\r",
        b"\x02ABC\r",
    ],
)
def test_malformed_frames_are_rejected(frame):
    with pytest.raises(ScaleFrameError):
        parse_frame(frame)
    assert not claims_scale(frame)


def test_simulator_frames_round_trip():
    assert parse_frame(format_weight(1234)) == WeightReading(1234)
    assert parse_frame(format_weight(2500, net=True)).net
    assert parse_frame(format_weight(4536, "lb"), "lb").grams == 4536
    assert parse_frame(format_status(over_capacity=True)) == ScaleStatus(0x42)


def test_frame_reader_handles_pieces_and_noise():
    reader = FrameReader()
    assert reader.feed(b"\xff\x00\x0201.") == []
    assert reader.feed(b"234\rnoise\x02?A") == [b"\x0201.234\r"]
    assert reader.feed(b"\r") == [b"\x02?A\r"]
    assert reader.feed(b"\x02" + b"9" * 40 + b"\r") == []  # too long to be a frame: dropped


def test_software_7e1_framing():
    assert with_even_parity(b"W\r\x02") == b"\xd7\x8d\x82"
    assert seven_bit(b"\xd7\x8d\x82") == b"W\r\x02"


# --------------------------------------------------------------------------- handshake


@pytest.mark.parametrize(
    "reply",
    [b"\x0201.234\r", b"\x0200.000\r", b"\x02?A\r", b"\x02?D\r"],
)
def test_handshake_claims_a_scale_that_answers_with_a_frame(reply):
    assert claims_scale(reply)


@pytest.mark.parametrize(
    "reply",
    [b"", b"W", b"W\r", b"6901234567892\r", b"\x15\xff\x00", b"OK\r\n", b"\x02\r"],
    ids=["silence", "echo", "echo-cr", "scanner", "noise", "modem", "empty-frame"],
)
def test_handshake_never_claims_anything_else(reply):
    assert not claims_scale(reply)


# --------------------------------------------------------------------------- over a real pty


async def test_read_weight_through_a_pty():
    async with SimSerialScale(1234) as sim, SerialScale(sim.port_path) as scale:
        assert await scale.probe()
        assert await scale.read_weight() == WeightReading(1234, stable=True)
        sim.set_weight(250, stable=True)
        assert await scale.read_weight() == WeightReading(250, stable=True)
        assert sim.requests == 3


async def test_8n1_scale_through_a_pty():
    async with SimSerialScale(2000, framing="8N1") as sim, SerialScale(sim.port_path, framing="8N1") as scale:
        assert (await scale.read_weight()).grams == 2000
        assert sim.received == b"W"


async def test_motion_and_over_capacity_through_a_pty():
    async with SimSerialScale(800) as sim, SerialScale(sim.port_path) as scale:
        sim.set_weight(800, stable=False)
        with pytest.raises(ScaleNotReady) as caught:
            await scale.read_weight()
        assert caught.value.status.in_motion
        sim.in_motion, sim.over_capacity = False, True
        with pytest.raises(ScaleNotReady, match="over capacity"):
            await scale.read_weight()
        sim.over_capacity = False
        sim.set_weight(-20)
        with pytest.raises(ScaleNotReady, match="below zero"):
            await scale.read_weight()


async def test_a_moving_scale_is_still_claimed():
    async with SimSerialScale(500) as sim:
        sim.set_weight(500, stable=False)
        assert await probe_scale(sim.port_path)


async def test_garbage_device_is_not_claimed():
    async with SimSerialScale(mode="garbage") as sim:
        assert not await probe_scale(sim.port_path, io_timeout=0.3)
        assert sim.requests == 1


async def test_echo_device_is_not_claimed():
    async with SimSerialScale(mode="echo") as sim:
        assert not await probe_scale(sim.port_path, io_timeout=0.3)
        assert sim.received == b"\xd7"  # "W" with its even-parity bit


async def test_silent_device_is_not_claimed_within_the_timeout():
    async with SimSerialScale(mode="silent") as sim:
        started = time.monotonic()
        assert not await probe_scale(sim.port_path, io_timeout=0.3)
        assert time.monotonic() - started < 1.0
        assert sim.received == b"\xd7"  # "W" with its even-parity bit


async def test_other_devices_are_not_claimed():
    async with SimSerialScanner() as scanner, SimPoleDisplay() as display:
        scanner.scan("6901234567892")  # a code read while we probe must not look like a reply
        assert not await probe_scale(scanner.port_path, io_timeout=0.3)
        assert not await probe_scale(display.port_path, io_timeout=0.3)


async def test_missing_port_is_offline_and_not_claimed(tmp_path):
    missing = str(tmp_path / "ttyUSB9")
    assert not await probe_scale(missing)
    with pytest.raises(ScaleOffline, match="check its cable"):
        await SerialScale(missing).open()


async def test_silent_scale_read_is_offline_with_advice():
    async with SimSerialScale(mode="silent") as sim, SerialScale(sim.port_path) as scale:
        with pytest.raises(ScaleOffline, match="not answering"):
            await scale.read_weight(io_timeout=0.2)


async def test_wrong_protocol_read_is_not_a_scale():
    async with SimSerialScale(mode="garbage") as sim, SerialScale(sim.port_path) as scale:
        with pytest.raises(NotAScale, match="protocol to 8217"):
            await scale.read_weight(io_timeout=0.2)


async def test_stale_bytes_do_not_answer_the_next_request():
    async with SimSerialScale(1000) as sim, SerialScale(sim.port_path) as scale:
        sim.write(b"\x0299.999\r")  # a frame nobody asked for, e.g. from a PRINT key press
        await sim.wait_for(lambda: True, within=0.1)
        assert (await scale.read_weight()).grams == 1000

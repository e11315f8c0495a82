"""evdev scanner discovery (pure: capability check, node grouping, stable ids) and the transport with fake nodes.

There is no /dev/input here, so the transport runs against stand-ins that keep evdev's shape:
`async_read_loop()` whose `__anext__` returns a future, `grab`, `ungrab`, `close`.
"""

from __future__ import annotations

import asyncio
import errno

import pytest
from evdev import ecodes

from drivers.evdev_scanner import (
    EvdevScanner,
    InputNode,
    WedgeDevice,
    can_be_scanner,
    device_id,
    group_nodes,
    list_input_nodes,
    port_path,
)
from drivers.scanner import Rejection, RejectReason, Scan, ScanDecoder, ScannerUnavailable
from tests.drivers.keyseq import typed

KEYBOARD = frozenset(range(1, 128))
CONSUMER = frozenset({ecodes.KEY_VOLUMEUP, ecodes.KEY_VOLUMEDOWN, ecodes.KEY_MUTE, ecodes.KEY_PLAYPAUSE})
KEYPAD_ONLY = frozenset({*(getattr(ecodes, f"KEY_KP{d}") for d in range(10)), ecodes.KEY_KPENTER})
MOUSE = frozenset({ecodes.BTN_LEFT, ecodes.BTN_RIGHT, ecodes.BTN_MIDDLE})
PI_PORT = "usb-3f980000.usb-1.2"


def _node(path, name, phys, *, uniq="", vendor=0x0C2E, product=0x0B61, bustype=ecodes.BUS_USB, keys=KEYBOARD):
    return InputNode(path, name, phys, uniq, bustype, vendor, product, keys)


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (KEYBOARD, True),
        (KEYPAD_ONLY, True),
        (CONSUMER, False),
        (MOUSE, False),
        (KEYBOARD - {ecodes.KEY_ENTER}, True),
        (KEYBOARD - {ecodes.KEY_ENTER, ecodes.KEY_KPENTER}, False),
        (KEYBOARD - {ecodes.KEY_7}, True),
        (KEYBOARD - {ecodes.KEY_7, ecodes.KEY_KP7}, False),
        (frozenset(), False),
    ],
)
def test_can_be_scanner(keys, expected):
    assert can_be_scanner(keys) is expected


@pytest.mark.parametrize(
    ("phys", "port"),
    [
        ("usb-3f980000.usb-1.2/input0", "usb-3f980000.usb-1.2"),
        ("usb-0000:00:14.0-2.4/input1", "usb-0000:00:14.0-2.4"),
        ("usb-0000:00:14.0-2.4/input12", "usb-0000:00:14.0-2.4"),
        ("b8:27:eb:12:34:56", "b8:27:eb:12:34:56"),
        ("isa0060/serio0/input0", "isa0060/serio0"),
        ("", ""),
    ],
)
def test_port_path(phys, port):
    assert port_path(phys) == port


def test_device_id_from_vid_pid_serial_and_port():
    assert (
        device_id(bustype=ecodes.BUS_USB, vendor=0x0C2E, product=0x0B61, serial="21093B4F22", port=PI_PORT)
        == "usb-0c2e:0b61-sn:21093B4F22@3f980000.usb-1.2"
    )
    assert device_id(bustype=ecodes.BUS_USB, vendor=0x05E0, product=0x1200, serial="", port=PI_PORT) == (
        "usb-05e0:1200@3f980000.usb-1.2"
    )
    assert device_id(bustype=0x99, vendor=1, product=2, serial="", port="") == "bus99-0001:0002"


def test_device_id_keeps_a_safe_bounded_alphabet():
    ident = device_id(
        bustype=ecodes.BUS_USB, vendor=1, product=2, serial="a b/c\x00" + "x" * 200, port="p/q r"
    )
    assert ident.startswith("usb-0001:0002-sn:a_b_c_")
    assert " " not in ident
    assert "/" not in ident.split("@")[0]
    assert len(ident) < 160


def _store_nodes(numbering: list[int]) -> list[InputNode]:
    a, b, c, d, e, f, g = (f"/dev/input/event{n}" for n in numbering)
    return [
        _node(a, "Honeywell Scanner", f"{PI_PORT}/input0", uniq="21093B4F22"),
        _node(b, "Honeywell Scanner Consumer Control", f"{PI_PORT}/input1", uniq="21093B4F22", keys=CONSUMER),
        # the same model without a serial number, in the next port
        _node(c, "Honeywell Scanner", "usb-3f980000.usb-1.3/input0"),
        _node(d, "Logitech Keyboard", "usb-3f980000.usb-1.4/input0", vendor=0x046D, product=0xC31C),
        # two Bluetooth scanners: phys is the Pi's adapter for both, uniq is each scanner's address
        _node(e, "BT Scanner", "b8:27:eb:12:34:56", uniq="00:11:22:33:44:55", bustype=ecodes.BUS_BLUETOOTH),
        _node(f, "BT Scanner", "b8:27:eb:12:34:56", uniq="00:11:22:33:44:66", bustype=ecodes.BUS_BLUETOOTH),
        _node(g, "USB Mouse", "usb-3f980000.usb-1.5/input0", vendor=0x093A, product=0x2510, keys=MOUSE),
    ]


def test_group_nodes_one_device_per_physical_scanner():
    devices = {d.id: d for d in group_nodes(_store_nodes([3, 4, 5, 6, 7, 8, 9]))}
    assert sorted(devices) == [
        "bt-0c2e:0b61-sn:00:11:22:33:44:55@b8:27:eb:12:34:56",
        "bt-0c2e:0b61-sn:00:11:22:33:44:66@b8:27:eb:12:34:56",
        "usb-046d:c31c@3f980000.usb-1.4",
        "usb-093a:2510@3f980000.usb-1.5",
        "usb-0c2e:0b61-sn:21093B4F22@3f980000.usb-1.2",
        "usb-0c2e:0b61@3f980000.usb-1.3",
    ]
    honeywell = devices["usb-0c2e:0b61-sn:21093B4F22@3f980000.usb-1.2"]
    assert [n.path for n in honeywell.nodes] == ["/dev/input/event3", "/dev/input/event4"]
    assert honeywell.name == "Honeywell Scanner"
    assert (honeywell.serial, honeywell.port) == ("21093B4F22", PI_PORT)
    assert honeywell.can_be_scanner
    assert not devices["usb-093a:2510@3f980000.usb-1.5"].can_be_scanner


def test_ids_do_not_depend_on_event_numbers():
    first = {d.id: len(d.nodes) for d in group_nodes(_store_nodes([3, 4, 5, 6, 7, 8, 9]))}
    after_reboot = {d.id: len(d.nodes) for d in group_nodes(_store_nodes([12, 2, 9, 0, 14, 1, 5]))}
    assert first == after_reboot


def test_virtual_devices_without_phys_group_by_name():
    nodes = [_node("/dev/input/event1", "uinput-a", ""), _node("/dev/input/event2", "uinput-b", "")]
    devices = group_nodes(nodes)
    assert len(devices) == 2
    assert all(d.port == "" for d in devices)


def test_list_input_nodes_skips_what_is_not_an_input_device(tmp_path):
    not_a_device = tmp_path / "event0"
    not_a_device.write_bytes(b"")
    assert list_input_nodes([str(not_a_device), str(tmp_path / "gone")]) == []


# --- the transport, with stand-ins for evdev.InputDevice ---------------------------------


class _FakeReadIterator:
    def __init__(self, queue: asyncio.Queue) -> None:
        self._queue = queue

    def __anext__(self) -> asyncio.Future:
        return asyncio.ensure_future(self._next())

    async def _next(self):
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item


class _FakeNode:
    def __init__(self, path: str, *, busy: bool = False) -> None:
        self.path = path
        self.busy = busy
        self.grabbed = False
        self.closed = False
        self.events: asyncio.Queue = asyncio.Queue()

    def grab(self) -> None:
        if self.busy:
            raise OSError(errno.EBUSY, "Device or resource busy")
        self.grabbed = True

    def ungrab(self) -> None:
        self.grabbed = False

    def close(self) -> None:
        self.closed = True

    def async_read_loop(self) -> _FakeReadIterator:
        return _FakeReadIterator(self.events)


def _honeywell() -> WedgeDevice:
    return next(d for d in group_nodes(_store_nodes([3, 4, 5, 6, 7, 8, 9])) if d.serial == "21093B4F22")


async def test_transport_grabs_all_nodes_reads_scans_and_reports_unplug():
    fakes = {}

    def opener(path):
        fakes[path] = _FakeNode(path)
        return fakes[path]

    device = _honeywell()
    async with EvdevScanner(device, opener=opener) as scanner:
        keyboard = fakes["/dev/input/event3"]
        assert all(f.grabbed for f in fakes.values())
        assert len(fakes) == 2
        for e in typed("4006381333931\n"):
            keyboard.events.put_nowait(e)
        async with asyncio.timeout(2):
            scan = await scanner.read()
        assert isinstance(scan, Scan)
        assert scan.text == "4006381333931"

        for e in typed("9501", start=1_700_000_010.0):
            keyboard.events.put_nowait(e)
        keyboard.events.put_nowait(OSError(errno.ENODEV, "No such device"))
        async with asyncio.timeout(2):
            partial = await scanner.read()
            with pytest.raises(ScannerUnavailable, match="No such device") as caught:
                await scanner.read()
        assert isinstance(partial, Rejection)
        assert (partial.reason, partial.excerpt) == (RejectReason.UNTERMINATED, "9501")
        assert caught.value.device == device.id
    assert all(f.closed and not f.grabbed for f in fakes.values())


async def test_transport_flushes_an_unterminated_burst_when_the_device_goes_quiet():
    fakes = {}

    def opener(path):
        fakes[path] = _FakeNode(path)
        return fakes[path]

    decoders = lambda: ScanDecoder(idle_timeout=0.1)  # noqa: E731
    async with EvdevScanner(_honeywell(), opener=opener, decoder_factory=decoders) as scanner:
        for e in typed("12345"):
            fakes["/dev/input/event3"].events.put_nowait(e)
        async with asyncio.timeout(2):
            outcome = await scanner.read()
        assert isinstance(outcome, Rejection)
        assert (outcome.reason, outcome.excerpt) == (RejectReason.UNTERMINATED, "12345")
        # the read left pending across the timeout still delivers the next event
        for e in typed("678\n", start=1_700_000_100.0):
            fakes["/dev/input/event3"].events.put_nowait(e)
        async with asyncio.timeout(2):
            scan = await scanner.read()
        assert isinstance(scan, Scan)
        assert scan.text == "678"


async def test_a_node_grabbed_by_someone_else_makes_the_scanner_unavailable():
    fakes = {}

    def opener(path):
        fakes[path] = _FakeNode(path, busy=path.endswith("event4"))
        return fakes[path]

    with pytest.raises(ScannerUnavailable, match="busy"):
        async with EvdevScanner(_honeywell(), opener=opener):
            pass
    assert all(f.closed for f in fakes.values())
    assert not any(f.grabbed for f in fakes.values())

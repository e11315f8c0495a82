"""Discovery: stable ids from plain data, presence hysteresis, hot-plug wake-ups on a real socket,
and zeroconf browsing of a simulated printer and the gateway over real multicast on loopback."""

from __future__ import annotations

import asyncio
import socket
import struct
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
import usb.backend.libusb1
from evdev import ecodes
from serial.tools.list_ports_common import ListPortInfo
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from drivers.discovery import (
    GATEWAY_TYPE,
    PDL_DATASTREAM,
    DeviceEvent,
    DeviceInfo,
    DiscoveryUnavailable,
    LocalScan,
    NetworkBrowser,
    ResolvedService,
    ServiceTable,
    advertise_gateway,
    list_serial_ports,
    list_usb_printers,
    scan_local,
    scanner_info,
    serial_port_info,
    stable_id,
    usb_printer_info,
)
from drivers.escpos import PrinterProfile
from drivers.evdev_scanner import InputNode, group_nodes
from drivers.hotplug import DeviceInventory, PresenceTracker, RescanTrigger
from drivers.printer import NetworkPrinter
from drivers.sim import SimNetworkPrinter, SimSerialScale

# --- stable ids ---------------------------------------------------------------------------------


def ftdi(device: str, location: str = "1-1.2", serial_number: str | None = "A10K3Z") -> ListPortInfo:
    """A USB-serial adapter as pyserial's sysfs scan describes it."""
    port = ListPortInfo(device, skip_link_detection=True)
    port.vid, port.pid, port.serial_number, port.location = 0x0403, 0x6001, serial_number, location
    port.manufacturer, port.product = "FTDI", "FT232R USB UART"
    port.apply_usb_info()
    return port


def test_stable_id_from_plain_data():
    assert stable_id("usb", vendor_id=0x0416, product_id=0x5011, serial_number="A1", location="1-1.3") == (
        "usb-0416:5011-sn:A1@1-1.3"
    )
    assert stable_id("usb", vendor_id=0x0416, product_id=0x5011, location="1-1.3") == "usb-0416:5011@1-1.3"
    assert stable_id("serial", serial_number="x", fallback="ttyAMA0") == "serial-ttyAMA0"
    # Whatever a device puts in its serial number, the id stays a plain token.
    assert (
        stable_id("usb", vendor_id=1, product_id=2, serial_number="a b/../c\n") == "usb-0001:0002-sn:a_b_.._c"
    )


def test_serial_port_renumbered_keeps_its_id():
    before, after = serial_port_info(ftdi("/dev/ttyUSB0")), serial_port_info(ftdi("/dev/ttyUSB1"))
    assert before.id == after.id == "serial-0403:6001-sn:A10K3Z@1-1.2"
    assert (before.device, after.device) == ("/dev/ttyUSB0", "/dev/ttyUSB1")


def test_same_device_on_another_port_is_another_device():
    # Clone adapters ship with one shared serial number (or none): only the port tells them apart.
    here, there = ftdi("/dev/ttyUSB0", "1-1.2"), ftdi("/dev/ttyUSB0", "1-1.4")
    assert serial_port_info(here).id != serial_port_info(there).id
    printer = {"vendor_id": 0x0416, "product_id": 0x5011, "serial_number": None, "bus": 1}
    assert (
        usb_printer_info(**printer, port_numbers=(1, 3)).id
        != usb_printer_info(**printer, port_numbers=(1, 4)).id
    )
    assert usb_printer_info(**printer, port_numbers=(1, 3)).usb_path == "1-1.3"


def test_onboard_uart_is_named_by_its_device():
    port = ListPortInfo("/dev/ttyAMA0", skip_link_detection=True)
    info = serial_port_info(port)
    assert (info.id, info.kind, info.name, info.device) == (
        "serial-ttyAMA0",
        "serial",
        "/dev/ttyAMA0",
        "/dev/ttyAMA0",
    )


async def test_serial_ports_are_never_claimed_as_scales():
    scale_like = ftdi("/dev/ttyUSB3")
    scale_like.product = "Toledo 8217 Scale"
    async with SimSerialScale() as scale:
        pty = ListPortInfo(scale.port_path, skip_link_detection=True)
        listed = list_serial_ports([scale_like, pty])
    assert [info.kind for info in listed] == ["serial", "serial"]
    # and the machine's own ports, whatever they are, through pyserial's real sysfs scan
    real = await asyncio.to_thread(list_serial_ports)
    assert {info.kind for info in real} <= {"serial"}
    assert all(info.transport == "serial" and info.device for info in real)


@dataclass
class FakeInterface:
    bInterfaceClass: int


@dataclass
class FakeUsbDevice:
    """The attributes pyusb's usb.core.Device offers; iterating yields configurations of interfaces."""

    idVendor: int
    idProduct: int
    classes: list[int]
    bus: int = 1
    port_numbers: tuple[int, ...] = (1, 2)
    bDeviceClass: int = 0
    manufacturer: str | None = "Xprinter"
    product: str | None = "XP-58"
    strings_readable: bool = True
    serial: str | None = "XP1"
    configs: list[list[FakeInterface]] = field(init=False)

    def __post_init__(self) -> None:
        self.configs = [[FakeInterface(cls) for cls in self.classes]]

    def __iter__(self) -> Any:
        return iter(self.configs)

    @property
    def serial_number(self) -> str | None:
        if not self.strings_readable:
            raise ValueError(
                "The device has no langid (permission issue, no string descriptors supported or device error)"
            )
        return self.serial


def test_usb_enumeration_lists_printer_class_only():
    devices = [
        FakeUsbDevice(0x0416, 0x5011, [7]),
        FakeUsbDevice(0x05E0, 0x1200, [3], port_numbers=(1, 3)),  # a HID scanner: evdev's business
        FakeUsbDevice(0x0483, 0x5743, [3, 7], port_numbers=(1, 4), strings_readable=False),
    ]
    found = list_usb_printers(devices)
    assert [(info.id, info.kind, info.name) for info in found] == [
        ("usb-0416:5011-sn:XP1@1-1.2", "printer", "Xprinter XP-58"),
        # no permission for string descriptors yet (udev rule missing): listed anyway, by port
        ("usb-0483:5743@1-1.4", "printer", "Xprinter XP-58"),
    ]


def test_usb_enumeration_here_reports_a_missing_libusb_clearly():
    if usb.backend.libusb1.get_backend() is None:
        with pytest.raises(DiscoveryUnavailable, match="libusb is missing") as caught:
            list_usb_printers()
        assert caught.value.transport == "usb"
    else:
        assert all(info.kind == "printer" and info.transport == "usb" for info in list_usb_printers())


def test_scanner_info_keeps_the_evdev_id_and_all_nodes():
    keys = frozenset({ecodes.KEY_ENTER, *(getattr(ecodes, f"KEY_{d}") for d in range(10))})
    nodes = [
        InputNode(
            f"/dev/input/event{n}",
            name,
            f"usb-3f980000.usb-1.3/input{n}",
            "S1",
            ecodes.BUS_USB,
            0x05E0,
            0x1200,
            keys,
        )
        for n, name in ((4, "Symbol Scanner"), (5, "Symbol Scanner Consumer Control"))
    ]
    (device,) = group_nodes(nodes)
    info = scanner_info(device)
    assert (info.id, info.kind, info.transport, info.name) == (
        "usb-05e0:1200-sn:S1@3f980000.usb-1.3",
        "scanner",
        "evdev",
        "Symbol Scanner",
    )
    assert info.nodes == ("/dev/input/event4", "/dev/input/event5")


async def test_scan_local_reports_failed_transports_instead_of_raising():
    scan = await asyncio.wait_for(scan_local(), 5)
    assert set(scan.found) | set(scan.failed) == {"usb", "serial", "evdev"}
    assert all(device.kind != "scale" for device in scan.devices)


# --- presence -------------------------------------------------------------------------------------


def test_device_appears_at_once_and_leaves_after_three_misses():
    tracker = PresenceTracker()
    assert tracker.update({"a"}).added == {"a"}
    assert tracker.update(set()).removed == frozenset()
    assert tracker.update(set()).removed == frozenset()
    assert "a" in tracker.present
    assert tracker.update(set()).removed == {"a"}
    assert tracker.present == frozenset()
    assert tracker.update(set()).removed == frozenset()  # removed once, not on every later scan


def test_flicker_causes_no_events():
    tracker = PresenceTracker(misses=3)
    tracker.update({"printer", "scanner"})
    # a loose cable: the scanner drops out of every other scan, the printer out of two in a row
    pattern = [{"printer"}, {"scanner"}, set(), {"printer", "scanner"}, {"printer"}, {"printer", "scanner"}]
    for seen in pattern:
        changes = tracker.update(seen)
        assert (changes.added, changes.removed) == (frozenset(), frozenset()), seen


def test_reappearing_after_removal_is_added_again():
    tracker = PresenceTracker(misses=1)
    tracker.update({"a"})
    assert tracker.update({"b"}).removed == {"a"}
    changes = tracker.update({"a", "b"})
    assert (changes.added, changes.removed) == ({"a"}, frozenset())
    with pytest.raises(ValueError, match="at least 1"):
        PresenceTracker(misses=0)


def test_inventory_updates_a_renumbered_port_and_ignores_failed_transports():
    inventory = DeviceInventory(misses=2)
    tty0, tty1 = serial_port_info(ftdi("/dev/ttyUSB0")), serial_port_info(ftdi("/dev/ttyUSB1"))
    printer = usb_printer_info(
        vendor_id=0x0416, product_id=0x5011, serial_number=None, bus=1, port_numbers=(2,)
    )
    assert inventory.apply(LocalScan({"serial": (tty0,), "usb": (printer,)}, {})) == [
        DeviceEvent("added", tty0),
        DeviceEvent("added", printer),
    ]
    # a replug renumbers the adapter: same id, new node, so whoever holds it reopens, nothing rebinds
    assert inventory.apply(LocalScan({"serial": (tty1,)}, {"usb": "libusb is missing"})) == [
        DeviceEvent("updated", tty1)
    ]
    # usb could not be listed twice: that is not two misses for the printer
    assert inventory.apply(LocalScan({"serial": (tty1,)}, {"usb": "libusb is missing"})) == []
    assert set(inventory.devices) == {tty1.id, printer.id}
    assert inventory.apply(LocalScan({"serial": (), "usb": (printer,)}, {})) == []
    assert inventory.apply(LocalScan({"serial": (), "usb": (printer,)}, {})) == [DeviceEvent("removed", tty1)]


# --- services (pure) ------------------------------------------------------------------------------


def service(
    type_: str, port: int, instance: str = "Kitchen", server: str = "XP-Q200.local."
) -> ResolvedService:
    return ResolvedService(
        type_, f"{instance}.{type_}", server, ("fd00::9", "192.0.2.9"), port, {"ty": "XP-Q200"}
    )


def test_one_printer_under_three_service_types_is_one_device():
    table = ServiceTable()
    (added,) = table.add(service("_ipp._tcp.local.", 631))
    assert (added.change, added.device.id, added.device.port, added.device.host) == (
        "added",
        "net-xp-q200:9100",
        9100,
        "192.0.2.9",
    )
    # the same device again, now also as raw pdl-datastream, which is preferred; nothing moved
    assert table.add(service(PDL_DATASTREAM, 9100)) == []
    assert table.devices["net-xp-q200:9100"].service == f"Kitchen.{PDL_DATASTREAM}"
    assert table.add(service("_printer._tcp.local.", 515)) == []
    assert table.remove(PDL_DATASTREAM, f"Kitchen.{PDL_DATASTREAM}") == []
    assert table.remove("_ipp._tcp.local.", "Kitchen._ipp._tcp.local.") == []
    (removed,) = table.remove("_printer._tcp.local.", "Kitchen._printer._tcp.local.")
    assert (removed.change, removed.device.id) == ("removed", "net-xp-q200:9100")
    assert table.remove("_printer._tcp.local.", "Kitchen._printer._tcp.local.") == []


def test_two_raw_ports_on_one_print_server_are_two_printers():
    table = ServiceTable()
    table.add(service(PDL_DATASTREAM, 9100, "Hot"))
    table.add(service(PDL_DATASTREAM, 9101, "Cold"))
    assert sorted(table.devices) == ["net-xp-q200:9100", "net-xp-q200:9101"]
    # the print server got a new address: the printers on it say so
    (moved,) = table.add(replace(service(PDL_DATASTREAM, 9100, "Hot"), addresses=("192.0.2.10",)))
    assert (moved.change, moved.device.host) == ("updated", "192.0.2.10")


# --- hot-plug ---------------------------------------------------------------------------------


class SocketMonitor:
    """A udev monitor stand-in on a real socket: one datagram per event, read without blocking."""

    def __init__(self) -> None:
        self.kernel, self.ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.ours.setblocking(False)
        self.read = 0

    def fileno(self) -> int:
        return self.ours.fileno()

    def poll(self, timeout: float | None = None) -> object | None:
        try:
            event = self.ours.recv(64)
        except BlockingIOError:
            return None
        self.read += 1
        return event


async def test_polling_fallback_rescans_on_a_timer():
    async with RescanTrigger(interval=0.05, monitor_factory=lambda: None) as trigger:
        assert not trigger.watching
        reasons = [await asyncio.wait_for(anext(trigger), 1) for _ in range(3)]
    assert reasons == ["startup", "poll", "poll"]


async def test_udev_burst_wakes_one_rescan():
    monitor = SocketMonitor()
    try:
        async with RescanTrigger(interval=30, settle=0.1, monitor_factory=lambda: monitor) as trigger:
            assert trigger.watching
            assert await anext(trigger) == "startup"
            for action in (b"add usb", b"add usb:1.0", b"add tty", b"bind usb"):
                monitor.kernel.send(action)
            assert await asyncio.wait_for(anext(trigger), 1) == "hotplug"
            assert monitor.read == 4
            # coalesced: the next rescan waits for the next event, not for the rest of the burst
            waiting = asyncio.ensure_future(anext(trigger))
            await asyncio.sleep(0.2)
            assert not waiting.done()
            monitor.kernel.send(b"remove usb")
            assert await asyncio.wait_for(waiting, 1) == "hotplug"
            consumer = asyncio.ensure_future(anext(trigger))
            await asyncio.sleep(0)
            consumer.cancel()  # a consumer is cancelled cleanly mid-wait
            with pytest.raises(asyncio.CancelledError):
                await consumer
    finally:
        monitor.kernel.close()
        monitor.ours.close()


# --- zeroconf over real multicast ---------------------------------------------------------------


def _loopback_multicast_works() -> bool:
    """Send one datagram to an mDNS-like group on 127.0.0.1 and see whether it comes back."""
    group = "224.0.0.251"
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
    ):
        try:
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            rx.bind(("", 0))  # a private port: real mDNS traffic on 5353 must not disturb the check
            membership = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton("127.0.0.1"))
            rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
            rx.settimeout(0.5)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            token = uuid.uuid4().bytes
            tx.sendto(token, (group, rx.getsockname()[1]))
            while True:
                if rx.recv(64) == token:
                    return True
        except OSError:  # includes the timeout
            return False


@pytest.fixture(scope="module")
def multicast() -> None:
    if not _loopback_multicast_works():
        # Not a CI failure: the pure ServiceTable tests and the resolver seam cover the rest.
        pytest.skip("multicast on 127.0.0.1 does not work here; zeroconf round trips cannot run")


@pytest.fixture
async def zeroconf_pair(multicast: None) -> AsyncIterator[tuple[AsyncZeroconf, AsyncZeroconf]]:
    """Two independent responders on loopback: one advertises, the other browses."""
    advertiser, browser = AsyncZeroconf(interfaces=["127.0.0.1"]), AsyncZeroconf(interfaces=["127.0.0.1"])
    try:
        yield advertiser, browser
    finally:
        await asyncio.gather(advertiser.async_close(), browser.async_close())


async def next_event(browser: NetworkBrowser, change: str, within: float = 4.0) -> DeviceEvent:
    async with asyncio.timeout(within):
        async for event in browser:
            if event.change == change:
                return event
    raise AssertionError("browser stopped")


def unique(prefix: str) -> str:
    # Other test runs on this host share the loopback mDNS group.
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_simulated_printer_found_over_mdns_and_printed_to(zeroconf_pair):
    advertiser, browsing = zeroconf_pair
    async with SimNetworkPrinter() as sim:
        instance = unique("Kitchen")
        host = f"{instance.lower()}.local."
        info = AsyncServiceInfo(
            PDL_DATASTREAM,
            f"{instance}.{PDL_DATASTREAM}",
            port=sim.port,
            parsed_addresses=["127.0.0.1"],
            server=host,
        )
        await advertiser.async_register_service(info)
        async with NetworkBrowser(zc=browsing) as browser:
            while (event := await next_event(browser, "added")).device.name != instance:
                pass
            device = event.device
            assert (device.kind, device.transport, device.host, device.port) == (
                "printer",
                "network",
                "127.0.0.1",
                sim.port,
            )
            assert device.id == f"net-{instance.lower()}:{sim.port}"
            async with NetworkPrinter(
                device.id, PrinterProfile(device.id), device.host, device.port
            ) as printer:
                await printer.send(b"\x1b@found by mdns\n")
            await sim.wait_for(lambda s: b"found by mdns" in s.received, within=2)
            await advertiser.async_unregister_service(info)
            gone = await next_event(browser, "removed")
            assert gone.device.id == device.id
            assert device.id not in browser.devices


async def test_gateway_is_advertised_and_browsed_back(zeroconf_pair):
    advertiser, browsing = zeroconf_pair
    name = unique("store-0042")
    async with NetworkBrowser([GATEWAY_TYPE], zc=browsing) as browser:
        async with await advertise_gateway(
            advertiser, name, 8470, {"store": "0042", "api": "/api/v1"}, addresses=["127.0.0.1"]
        ) as advertisement:
            assert advertisement.name == f"{name}.{GATEWAY_TYPE}"
            event = await next_event(browser, "added")
            gateway = event.device
            assert (gateway.kind, gateway.id, gateway.host, gateway.port) == (
                "gateway",
                f"gw-{name}",
                "127.0.0.1",
                8470,
            )
            assert gateway.properties == {"store": "0042", "api": "/api/v1"}
        assert (await next_event(browser, "removed")).device.id == gateway.id


async def test_injected_resolver_is_what_the_browser_trusts(zeroconf_pair):
    advertiser, browsing = zeroconf_pair
    asked: list[tuple[str, str]] = []
    async with SimNetworkPrinter() as sim:

        async def resolve(type_: str, name: str) -> ResolvedService | None:
            asked.append((type_, name))
            return ResolvedService(type_, name, "sim.local.", ("127.0.0.1",), sim.port)

        instance = unique("Bar")
        info = AsyncServiceInfo(
            PDL_DATASTREAM, f"{instance}.{PDL_DATASTREAM}", port=1, parsed_addresses=["127.0.0.1"]
        )
        await advertiser.async_register_service(info)
        async with NetworkBrowser([PDL_DATASTREAM], zc=browsing, resolve=resolve) as browser:
            while (event := await next_event(browser, "added")).device.name != instance:
                pass
        assert (PDL_DATASTREAM, f"{instance}.{PDL_DATASTREAM}") in asked
        assert event.device.port == sim.port


def test_device_info_is_hashable_and_compares_by_address():
    a = DeviceInfo(
        "net-x:9100", "printer", "network", "X", host="192.0.2.1", port=9100, properties={"a": "1"}
    )
    b = DeviceInfo(
        "net-x:9100", "printer", "network", "X", host="192.0.2.1", port=9100, properties={"a": "2"}
    )
    assert a == b
    assert len({a, b}) == 1

"""Finding store hardware: what is plugged in or on the LAN, under ids that survive a replug.

Ids come from what a device is (VID:PID, serial number) and where it is plugged (the USB
port path), never from kernel counters such as ttyUSB0 or event3, which change with probe
order. A serial port is only ever listed as "serial": a port becomes a scale after a
positive probe elsewhere (drivers.serial_scale.probe_scale), never because it exists.

Enumeration is blocking (sysfs, libusb) and runs in threads; zeroconf browsing runs on the
loop with one injected AsyncZeroconf. Presence over repeated scans lives in drivers.hotplug.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Literal, Self

from zeroconf import Error as ZeroconfError
from zeroconf import IPVersion, ServiceStateChange, Zeroconf, get_all_addresses
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from drivers.errors import DriverError
from drivers.evdev_scanner import WedgeDevice, discover_scanners

__all__ = [
    "GATEWAY_TYPE",
    "NETWORK_PRINTER_TYPES",
    "DeviceEvent",
    "DeviceInfo",
    "DiscoveryUnavailable",
    "GatewayAdvertisement",
    "Kind",
    "LocalScan",
    "NetworkBrowser",
    "ResolvedService",
    "ServiceTable",
    "Transport",
    "advertise_gateway",
    "list_serial_ports",
    "list_usb_printers",
    "network_device",
    "scan_local",
    "scanner_info",
    "serial_port_info",
    "stable_id",
    "usb_printer_info",
]

log = logging.getLogger(__name__)

Kind = Literal["printer", "scanner", "serial", "scale", "display", "gateway", "service"]
Transport = Literal["usb", "serial", "network", "evdev"]
Change = Literal["added", "removed", "updated"]

PDL_DATASTREAM = "_pdl-datastream._tcp.local."
NETWORK_PRINTER_TYPES = (PDL_DATASTREAM, "_printer._tcp.local.", "_ipp._tcp.local.")
GATEWAY_TYPE = "_storelink._tcp.local."
RAW_PRINT_PORT = 9100
USB_PRINTER_CLASS = 7
_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]+")
# What a service type means for us; _printer (LPD) and _ipp advertise their own port, but the
# ESC/POS printers that announce them take raw jobs on 9100, which is what we open.
_SERVICE_KINDS: dict[str, tuple[Kind, int | None]] = {
    PDL_DATASTREAM: ("printer", None),
    "_printer._tcp.local.": ("printer", RAW_PRINT_PORT),
    "_ipp._tcp.local.": ("printer", RAW_PRINT_PORT),
    GATEWAY_TYPE: ("gateway", None),
}


class DiscoveryUnavailable(DriverError):
    """One way of finding devices does not work on this machine (library or permission missing)."""

    def __init__(self, transport: str, reason: str) -> None:
        super().__init__(f"cannot list {transport} devices: {reason}")
        self.transport = transport
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """One device found by a scan: a stable id plus what is needed to open it now."""

    id: str
    kind: Kind
    transport: Transport
    name: str
    vendor_id: int | None = None
    product_id: int | None = None
    serial_number: str = ""
    usb_path: str = ""  # bus-port path such as "1-1.3", the part of the id that says where it is plugged
    device: str = ""  # serial device node for today, e.g. /dev/ttyUSB1; may change, the id does not
    host: str = ""
    port: int | None = None
    service: str = ""  # zeroconf service name it was found under
    nodes: tuple[str, ...] = ()  # evdev event nodes
    properties: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """A device appeared, disappeared, or is still there under a new address."""

    change: Change
    device: DeviceInfo


def _safe(text: str) -> str:
    # Ids end up in TinyDB keys, log lines and URLs: keep them to a plain, bounded alphabet.
    return _UNSAFE.sub("_", text.strip())[:64]


def stable_id(
    transport: str,
    *,
    vendor_id: int | None = None,
    product_id: int | None = None,
    serial_number: str | None = None,
    location: str | None = None,
    fallback: str = "",
) -> str:
    """An id from VID:PID, serial number and port path, e.g. "usb-0416:5011-sn:A1@1-1.3".

    The port is always part of it: cheap adapters share one serial number (or have none), so
    only the port tells two identical devices apart. Without VID:PID (an on-board UART) the
    `fallback`, such as the device name, is used; on-board names do not move.
    """
    if vendor_id is None or product_id is None:
        return f"{transport}-{_safe(fallback or 'unknown')}"
    parts = [f"{transport}-{vendor_id:04x}:{product_id:04x}"]
    if serial_number and serial_number.strip():
        parts.append(f"-sn:{_safe(serial_number)}")
    if location and location.strip():
        parts.append(f"@{_safe(location)}")
    return "".join(parts)


def _label(*words: str | None, default: str) -> str:
    return " ".join(word.strip() for word in words if word and word.strip()) or default


def usb_printer_info(
    *,
    vendor_id: int,
    product_id: int,
    serial_number: str | None,
    bus: int | None,
    port_numbers: Iterable[int] | None,
    manufacturer: str | None = None,
    product: str | None = None,
) -> DeviceInfo:
    """A USB printer-class device as DeviceInfo; `usb_path` is the kernel's "bus-port.port" form."""
    ports = ".".join(str(number) for number in port_numbers or ())
    usb_path = f"{bus}-{ports}" if bus is not None and ports else ""
    ident = stable_id(
        "usb", vendor_id=vendor_id, product_id=product_id, serial_number=serial_number, location=usb_path
    )
    name = _label(manufacturer, product, default=f"USB printer {vendor_id:04x}:{product_id:04x}")
    return DeviceInfo(
        ident, "printer", "usb", name, vendor_id, product_id, (serial_number or "").strip(), usb_path
    )


def _usb_string(device: Any, attribute: str) -> str | None:
    # Reading string descriptors needs write access to the device node (the udev rule gives it);
    # without it the printer is still listed, only less precisely named.
    try:
        value = getattr(device, attribute)
    except (ValueError, NotImplementedError, OSError) as err:  # usb.core.USBError is an OSError
        log.debug("cannot read %s of USB device %s: %s", attribute, device, err)
        return None
    return value if isinstance(value, str) else None


def _is_printer(device: Any) -> bool:
    if device.bDeviceClass == USB_PRINTER_CLASS:
        return True
    return any(interface.bInterfaceClass == USB_PRINTER_CLASS for config in device for interface in config)


def list_usb_printers(devices: Iterable[Any] | None = None) -> list[DeviceInfo]:
    """USB devices with a printer-class interface (class 7); blocking, so call it in a thread."""
    if devices is None:
        import usb.core  # noqa: PLC0415  (libusb is loaded only when USB is scanned)

        try:
            devices = list(usb.core.find(find_all=True))
        except usb.core.NoBackendError as err:
            raise DiscoveryUnavailable("usb", "libusb is missing; install libusb-1.0-0") from err
    found = []
    for device in devices:
        try:
            if not _is_printer(device):
                continue
        except (ValueError, OSError):
            continue  # unplugged while we read its descriptors
        found.append(
            usb_printer_info(
                vendor_id=device.idVendor,
                product_id=device.idProduct,
                serial_number=_usb_string(device, "serial_number"),
                bus=device.bus,
                port_numbers=getattr(device, "port_numbers", None),
                manufacturer=_usb_string(device, "manufacturer"),
                product=_usb_string(device, "product"),
            )
        )
    return sorted(found, key=lambda info: info.id)


def serial_port_info(port: Any) -> DeviceInfo:
    """A pyserial ListPortInfo as DeviceInfo, always of kind "serial" (claiming needs a probe)."""
    ident = stable_id(
        "serial",
        vendor_id=port.vid,
        product_id=port.pid,
        serial_number=port.serial_number,
        location=port.location,
        fallback=port.name or port.device,
    )
    name = _label(port.manufacturer, port.product, default=port.description or port.device)
    if name == "n/a":
        name = port.device
    return DeviceInfo(
        ident,
        "serial",
        "serial",
        name,
        port.vid,
        port.pid,
        (port.serial_number or "").strip(),
        port.location or "",
        device=port.device,
    )


def list_serial_ports(ports: Iterable[Any] | None = None) -> list[DeviceInfo]:
    """Serial ports from pyserial (sysfs); blocking, so call it in a thread."""
    if ports is None:
        from serial.tools.list_ports import comports  # noqa: PLC0415

        ports = comports()
    return sorted((serial_port_info(port) for port in ports), key=lambda info: info.id)


def scanner_info(device: WedgeDevice) -> DeviceInfo:
    """A keyboard-wedge scanner found through evdev; its id is already stable (see evdev_scanner)."""
    return DeviceInfo(
        device.id,
        "scanner",
        "evdev",
        device.name,
        device.vendor,
        device.product,
        device.serial,
        device.port,
        nodes=tuple(node.path for node in device.nodes),
    )


@dataclass(frozen=True, slots=True)
class LocalScan:
    """One scan of local buses: devices per transport that could be listed, and why others could not."""

    found: Mapping[Transport, tuple[DeviceInfo, ...]]
    failed: Mapping[Transport, str]

    @property
    def devices(self) -> list[DeviceInfo]:
        """Every device found, over all transports."""
        return [device for devices in self.found.values() for device in devices]


async def scan_local() -> LocalScan:
    """List USB printers, serial ports and evdev scanners, each in a worker thread, concurrently."""

    async def evdev() -> list[DeviceInfo]:
        return [scanner_info(device) for device in await discover_scanners()]

    sources: dict[Transport, Awaitable[list[DeviceInfo]]] = {
        "usb": asyncio.to_thread(list_usb_printers),
        "serial": asyncio.to_thread(list_serial_ports),
        "evdev": evdev(),
    }
    results = await asyncio.gather(*sources.values(), return_exceptions=True)
    found: dict[Transport, tuple[DeviceInfo, ...]] = {}
    failed: dict[Transport, str] = {}
    for transport, result in zip(sources, results, strict=True):
        if isinstance(result, DriverError | OSError):
            failed[transport] = str(result)
        elif isinstance(result, BaseException):
            raise result
        else:
            found[transport] = tuple(result)
    return LocalScan(found, failed)


@dataclass(frozen=True, slots=True)
class ResolvedService:
    """What an mDNS service resolved to: the seam between zeroconf and our device model."""

    type: str
    name: str
    server: str
    addresses: tuple[str, ...]
    port: int
    properties: Mapping[str, str] = field(default_factory=dict)


Resolver = Callable[[str, str], Awaitable[ResolvedService | None]]


def _instance(service: ResolvedService) -> str:
    return service.name.removesuffix("." + service.type)


def network_device(service: ResolvedService) -> DeviceInfo:
    """A resolved service as DeviceInfo; the id names the host and raw port, so one printer
    announcing itself as pdl-datastream, printer and ipp is one device."""
    kind, fixed_port = _SERVICE_KINDS.get(service.type, ("service", None))
    port = fixed_port or service.port
    server = service.server.lower().removesuffix(".").removesuffix(".local")
    ident = f"net-{_safe(server or _instance(service))}:{port}"
    if kind == "gateway":
        ident = f"gw-{_safe(_instance(service))}"  # the instance name is what the gateway chose to be
    ipv4 = [address for address in service.addresses if ":" not in address]
    host = (ipv4 or list(service.addresses) or [service.server.removesuffix(".")])[0]
    return DeviceInfo(
        ident,
        kind,
        "network",
        _instance(service),
        host=host,
        port=port,
        service=service.name,
        properties=dict(service.properties),
    )


class ServiceTable:
    """Which services are up, folded into devices: pure, so browse events are testable without mDNS."""

    def __init__(self) -> None:
        self._services: dict[tuple[str, str], DeviceInfo] = {}
        self.devices: dict[str, DeviceInfo] = {}

    def _best(self, ident: str) -> DeviceInfo | None:
        # Raw pdl-datastream says exactly where to send ESC/POS; prefer it over the others.
        candidates = [device for device in self._services.values() if device.id == ident]
        candidates.sort(key=lambda device: (not device.service.endswith(PDL_DATASTREAM), device.service))
        return candidates[0] if candidates else None

    def _settle(self, ident: str) -> list[DeviceEvent]:
        before, after = self.devices.get(ident), self._best(ident)
        if after is None:
            self.devices.pop(ident, None)
            return [DeviceEvent("removed", before)] if before is not None else []
        self.devices[ident] = after
        if before is None:
            return [DeviceEvent("added", after)]
        # Which of its service types now stands for the device is no news to whoever opens it.
        moved = replace(before, service="") != replace(after, service="")
        return [DeviceEvent("updated", after)] if moved else []

    def add(self, service: ResolvedService) -> list[DeviceEvent]:
        """A service resolved (new or changed)."""
        key = (service.type, service.name)
        old = self._services.get(key)
        device = self._services[key] = network_device(service)
        events = self._settle(old.id) if old is not None and old.id != device.id else []
        return events + self._settle(device.id)

    def remove(self, type_: str, name: str) -> list[DeviceEvent]:
        """A service said goodbye or expired."""
        old = self._services.pop((type_, name), None)
        return self._settle(old.id) if old is not None else []


async def _zeroconf_resolve(
    zc: AsyncZeroconf, type_: str, name: str, within: float
) -> ResolvedService | None:
    info = AsyncServiceInfo(type_, name)
    if not await info.async_request(zc.zeroconf, within * 1000) or info.port is None:
        return None
    properties = {key: value or "" for key, value in info.decoded_properties.items()}
    addresses = tuple(info.parsed_scoped_addresses(IPVersion.All))
    return ResolvedService(type_, name, info.server or "", addresses, info.port, properties)


class NetworkBrowser:
    """Browse mDNS for printers (or any types): `async with` starts it, `async for` yields DeviceEvents."""

    def __init__(
        self,
        types: Iterable[str] = NETWORK_PRINTER_TYPES,
        *,
        zc: AsyncZeroconf | None = None,
        resolve: Resolver | None = None,
        resolve_timeout: float = 3.0,
    ) -> None:
        self.types = list(types)
        self._zc = zc
        self._own_zc = zc is None
        self._resolve = resolve
        self._resolve_timeout = resolve_timeout
        self.table = ServiceTable()
        self._events: asyncio.Queue[DeviceEvent] = asyncio.Queue()
        self._browser: AsyncServiceBrowser | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._resolving: dict[tuple[str, str], asyncio.Task[None]] = {}

    async def __aenter__(self) -> Self:
        """Start browsing; resolutions run as named tasks in one TaskGroup."""
        if self._zc is None:
            self._zc = AsyncZeroconf()
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        self._browser = AsyncServiceBrowser(self._zc.zeroconf, self.types, handlers=[self._on_change])
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop browsing and resolving; close the zeroconf instance only if we made it."""
        try:
            if self._browser is not None:
                await self._browser.async_cancel()
                self._browser = None
            if self._tasks is not None:
                tasks, self._tasks = self._tasks, None
                for task in self._resolving.values():
                    task.cancel()
                try:
                    await tasks.__aexit__(None, None, None)
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if current is not None and current.cancelling():
                        raise
        finally:
            if self._own_zc and self._zc is not None:
                await self._zc.async_close()
                self._zc = None

    def __aiter__(self) -> Self:
        """Iterate over device events for as long as the browser runs."""
        return self

    async def __anext__(self) -> DeviceEvent:
        """The next added, updated or removed network device."""
        return await self._events.get()

    @property
    def devices(self) -> dict[str, DeviceInfo]:
        """Network devices currently up, by id."""
        return dict(self.table.devices)

    def _on_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        # Called on the event loop by zeroconf; resolving takes network round trips, so it gets a task.
        key = (service_type, name)
        pending = self._resolving.pop(key, None)
        if pending is not None:
            pending.cancel()  # an older answer must not overwrite what just happened
        if state_change is ServiceStateChange.Removed:
            self._publish(self.table.remove(service_type, name))
        elif self._tasks is not None:
            self._resolving[key] = self._tasks.create_task(
                self._resolve_one(service_type, name), name=f"zeroconf-resolve {name}"
            )

    async def _resolve_one(self, service_type: str, name: str) -> None:
        try:
            if self._resolve is not None:
                service = await self._resolve(service_type, name)
            else:
                assert self._zc is not None  # noqa: S101  (set before the browser starts)
                service = await _zeroconf_resolve(self._zc, service_type, name, self._resolve_timeout)
        except (OSError, TimeoutError, ZeroconfError) as err:
            # Anyone on the LAN can announce anything; one odd service must not stop the browser.
            log.warning("cannot resolve %s: %s", name, err)
            service = None
        finally:
            if self._resolving.get((service_type, name)) is asyncio.current_task():
                del self._resolving[(service_type, name)]
        if service is None:
            log.debug("%s did not resolve in time; it is listed when it announces again", name)
            return
        self._publish(self.table.add(service))

    def _publish(self, events: Iterable[DeviceEvent]) -> None:
        for event in events:
            self._events.put_nowait(event)


@dataclass(slots=True)
class GatewayAdvertisement:
    """A registered `_storelink._tcp.local.` service; `close()` (or `async with`) sends the goodbye."""

    zc: AsyncZeroconf
    info: AsyncServiceInfo
    _closed: bool = False

    @property
    def name(self) -> str:
        """The registered instance name (zeroconf may have appended a number to make it unique)."""
        return self.info.name

    async def close(self) -> None:
        """Unregister, so browsers drop the gateway now rather than when its records expire."""
        if self._closed:
            return
        self._closed = True
        goodbye = await self.zc.async_unregister_service(self.info)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await goodbye

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def _host_label(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "storelink"


async def advertise_gateway(
    zc: AsyncZeroconf,
    name: str,
    port: int,
    properties: Mapping[str, str] | None = None,
    *,
    addresses: Iterable[str] | None = None,
) -> GatewayAdvertisement:
    """Announce the edge's API as `<name>._storelink._tcp.local.`; returns what to close on shutdown.

    `addresses` defaults to this machine's non-loopback IPv4 addresses; pass the API's bind
    address when it listens on one interface only.
    """
    if addresses is None:
        local = await asyncio.to_thread(get_all_addresses)
        addresses = [address for address in local if not address.startswith("127.")] or local
    hostname = await asyncio.to_thread(socket.gethostname)
    # Our own host name, not "<hostname>.local.": avahi-daemon on the Pi owns that one, and a
    # second responder answering for it with other addresses makes avahi rename the host.
    info = AsyncServiceInfo(
        GATEWAY_TYPE,
        f"{name}.{GATEWAY_TYPE}",
        port=port,
        properties=dict(properties or {}),
        server=f"{_host_label(hostname)}-storelink.local.",
        parsed_addresses=list(addresses),
    )
    # Two stores' gateways on one LAN (a shared mall network) may pick the same name: let
    # zeroconf rename the second rather than fail to start.
    await zc.async_register_service(info, allow_name_change=True)
    return GatewayAdvertisement(zc, info)

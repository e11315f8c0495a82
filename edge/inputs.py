"""Scanners, the scale and the pole display at run time.

Each registered scanner gets a reader task that reopens the device whenever it comes back
(unplugged mid-scan, cable swapped); every accepted scan becomes a `scan` event on the
till's event bus, the same event a phone camera scan posted to the API produces. The scale
is opened per reading, so `storelink-edge devices test scale` works next to the daemon.
The pole display follows the till: the line just added and the order total.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Protocol

from drivers import (
    BarcodeError,
    DriverError,
    SerialCustomerDisplay,
    SerialFrameDecoder,
    SerialScale,
    SerialScanner,
    WeightReading,
    parse_gs1,
)
from drivers.customer_display import format_fen, two_columns
from drivers.evdev_scanner import EvdevScanner, discover_scanners
from drivers.keymap import ENTER, TAB
from drivers.scanner import AimId, Rejection, ScanDecoder, ScanMode, ScanOutcome
from drivers.serial_scanner import EOL, ETX
from edge.catalog import Catalog
from edge.devices import DeviceEntry, DeviceRegistry, UnknownDevice
from edge.events import Event, EventBus
from protocol.aio import cancel_and_wait
from protocol.backoff import Backoff

__all__ = ["InputManager", "Reader", "ScanSource", "scan_event"]

log = logging.getLogger(__name__)
RECENT_SCANS = 50


class Reader(Protocol):
    """An opened scanner: `read()` waits for the next scan or rejection."""

    async def read(self) -> ScanOutcome: ...


# Opens a registered scanner for the life of the context; raises DriverError when it cannot.
ScanSource = Callable[[DeviceEntry], contextlib.AbstractAsyncContextManager[Reader]]


def _json_value(value: str | int | date | Decimal) -> str | int:
    if isinstance(value, date):
        return value.isoformat()
    return str(value) if isinstance(value, Decimal) else value


def scan_event(
    code: str,
    *,
    source: str,
    catalog: Catalog | None,
    device: DeviceEntry | None = None,
    role: str | None = None,
    aim: AimId | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """The `scan` event a till client receives: the code, what it means, and where it came from.

    GS1 data (batch, expiry, weight) is parsed when the scanner said so (AIM id) or the text is
    bracketed "(01)…"; the product is looked up by the code or by the GTIN inside GS1 data.
    """
    gs1: dict[str, Any] | None = None
    problem = None
    lookup = code
    if (aim is not None and aim.gs1) or code.startswith("(01)"):
        try:
            message = parse_gs1(code)
        except BarcodeError as err:
            problem = str(err)
        else:
            gs1 = {e.ai: {"title": e.title, "value": _json_value(e.value)} for e in message.elements}
            lookup = message.gtin or code
    match = catalog.lookup_barcode(lookup) if catalog is not None else None
    product = None
    if match is not None:
        product = {
            "sku": match.product.sku,
            "name": match.product.name,
            "price_fen": match.label_price_fen or match.product.price_fen,
            "active": match.product.active,
        }
    return {
        "code": code,
        "symbology": aim.symbology if aim is not None else None,
        "gs1": gs1,
        "problem": problem,
        "product": product,
        "source": source,
        "device": device.id if device is not None else None,
        "role": role,
        "at": (at or datetime.now(UTC)).isoformat(),
    }


@contextlib.asynccontextmanager
async def open_scanner(entry: DeviceEntry) -> AsyncIterator[Reader]:
    """The real transports: an evdev wedge scanner found by its stable id, or a serial port."""
    if entry.transport == "serial":
        assert entry.path is not None  # noqa: S101 - checked by DeviceEntry
        terminator = {"etx": ETX}.get(entry.terminator, EOL)
        decoder = SerialFrameDecoder(terminator=terminator, aim=entry.aim)
        async with SerialScanner(entry.path, baudrate=entry.baudrate, decoder=decoder) as scanner:
            yield scanner
        return
    wedge = next((d for d in await discover_scanners() if d.id == entry.path), None)
    if wedge is None:
        raise DriverError(f"scanner {entry.path!r} is not plugged in (or this user may not read it)")
    mode = ScanMode(entry.scan_mode)
    key = TAB if entry.terminator == "tab" else ENTER
    async with EvdevScanner(
        wedge, decoder_factory=lambda: ScanDecoder(mode=mode, terminator=key, aim=entry.aim)
    ) as scanner:
        yield scanner


class InputManager:
    """Runs a reader per scanner, reads the scale on request and drives the pole display."""

    def __init__(
        self,
        bus: EventBus,
        catalog: Callable[[], Catalog | None],
        *,
        scan_source: ScanSource = open_scanner,
        open_scale: Callable[[DeviceEntry], SerialScale] | None = None,
        open_display: Callable[[DeviceEntry], SerialCustomerDisplay] | None = None,
    ):
        self._bus = bus
        self._catalog = catalog
        self._scan_source = scan_source
        self._open_scale = open_scale or (lambda e: SerialScale(e.path or "", baudrate=e.baudrate))
        self._open_display = open_display or (
            lambda e: SerialCustomerDisplay(e.path or "", baudrate=e.baudrate)
        )
        self.registry = DeviceRegistry()
        self._readers: dict[str, tuple[DeviceEntry, asyncio.Task[None]]] = {}
        self._health: dict[str, str] = {}
        self.scans: deque[dict[str, Any]] = deque(maxlen=RECENT_SCANS)
        self._display_task: asyncio.Task[None] | None = None
        self._display_entry: DeviceEntry | None = None

    # ------------------------------------------------------------------ scans

    def submit(
        self, code: str, *, source: str, device: DeviceEntry | None = None, aim: AimId | None = None
    ) -> dict[str, Any]:
        """Publish a scan (from a scanner, a phone camera or a file) to every till client."""
        role = self.registry.role_of(device) if device is not None else None
        event = scan_event(code, source=source, catalog=self._catalog(), device=device, role=role, aim=aim)
        self.scans.append(event)
        self._bus.publish(Event("scan", event))
        return event

    async def _read_scanner(self, entry: DeviceEntry) -> None:
        backoff = Backoff(initial=1.0, cap=10.0)
        while True:
            try:
                async with self._scan_source(entry) as scanner:
                    self._set_health(entry, "ok")
                    backoff.connected()
                    while True:
                        self._take(entry, await scanner.read())
            except DriverError as err:
                self._set_health(entry, f"offline: {err}")
            except Exception as err:  # a driver bug must not end scanning for the day
                log.exception("scanner %s failed; reopening it", entry.id)
                self._set_health(entry, f"failed: {err!r}"[:200])
            await asyncio.sleep(backoff.next_delay())

    def _take(self, entry: DeviceEntry, outcome: ScanOutcome) -> None:
        if isinstance(outcome, Rejection):
            # Keyboard typing in auto mode, noise on a serial line: never a barcode, never fatal.
            log.info("scanner %s: input refused (%s): %s", entry.id, outcome.reason, outcome.detail)
            return
        self.submit(outcome.text, source="scanner", device=entry, aim=outcome.aim)

    def _set_health(self, entry: DeviceEntry, health: str) -> None:
        if self._health.get(entry.id) != health:
            (log.info if health == "ok" else log.warning)("%s %s: %s", entry.kind, entry.id, health)
        self._health[entry.id] = health

    # ------------------------------------------------------------------ scale

    async def read_weight(self, key: str = "scale") -> WeightReading:
        """A stable weight from the scale (by id, name or role); DriverError says what is wrong."""
        entry = self.registry.find(key)
        if entry.kind != "scale":
            raise UnknownDevice(f"device {entry.id} is a {entry.kind}, not a scale")
        try:
            async with self._open_scale(entry) as scale:
                reading = await scale.read_weight()
        except DriverError as err:
            self._set_health(entry, f"offline: {err}")
            raise
        self._set_health(entry, "ok")
        return reading

    # ------------------------------------------------------------------ pole display

    async def _drive_display(self, entry: DeviceEntry) -> None:
        backoff = Backoff(initial=1.0, cap=30.0)
        while True:
            try:
                async with self._open_display(entry) as display:
                    self._set_health(entry, "ok")
                    backoff.connected()
                    await display.show_lines("Welcome", "")
                    await self._follow_till(display)
            except DriverError as err:
                self._set_health(entry, f"offline: {err}")
            await asyncio.sleep(backoff.next_delay())

    async def _follow_till(self, display: SerialCustomerDisplay) -> None:
        """Show till changes for as long as the display keeps up.

        Subscribed only while the port is open: an unplugged display must not sit on the bus
        until it overflows and is dropped. If it does fall behind, the stale screens are
        skipped and it follows again from the next change.
        """
        while True:
            sub = self._bus.subscribe()
            try:
                while not sub.overflowed.is_set():
                    await self._show(display, await sub.queue.get())
            finally:
                self._bus.unsubscribe(sub)

    def show_test(self) -> None:
        """Put a test screen on the pole display (through its own task, which owns the port)."""
        now = datetime.now(UTC).strftime("%H:%M:%S UTC")
        self._bus.publish(Event("display.test", {"top": "storelink test", "bottom": now}))

    @staticmethod
    async def _show(display: SerialCustomerDisplay, event: Event) -> None:
        if event.type == "display.test":
            await display.show_lines(event.data["top"], event.data["bottom"])
            return
        if event.type != "order.updated":
            return
        order = event.data
        if order.get("status") == "paid":
            change = sum(t.get("change_fen", 0) for t in order.get("tenders", []))
            await display.show_lines(
                two_columns("TOTAL", format_fen(order["total_fen"])),
                two_columns("CHANGE", format_fen(change)),
            )
            return
        lines = order.get("lines") or []
        if lines:
            last = lines[-1]
            await display.show(last["name"], last["total_fen"], order["total_fen"], sku=last.get("sku"))

    # ------------------------------------------------------------------ lifecycle

    def health(self) -> list[dict[str, Any]]:
        """Every scanner, scale and display with its role and state."""
        return [
            {
                "id": entry.id,
                "name": entry.name,
                "kind": entry.kind,
                "role": self.registry.role_of(entry),
                "transport": entry.transport,
                "address": entry.address,
                "health": self._health.get(entry.id, "not used yet" if entry.kind == "scale" else "starting"),
            }
            for entry in self.registry.devices
            if entry.kind != "printer"
        ]

    async def apply(self, registry: DeviceRegistry) -> None:
        """Start readers for new scanners, stop those removed or changed; follow the display."""
        self.registry = registry
        wanted = {e.id: e for e in registry.of_kind("scanner")}
        for device_id, (entry, task) in list(self._readers.items()):
            if wanted.get(device_id) != entry:
                del self._readers[device_id]
                await cancel_and_wait(task, log)
        for device_id, entry in wanted.items():
            if device_id not in self._readers:
                task = asyncio.create_task(self._read_scanner(entry), name=f"scanner-{device_id}")
                self._readers[device_id] = (entry, task)
        display = registry.by_role("display")
        if display != self._display_entry:
            await cancel_and_wait(self._display_task, log)
            self._display_entry, self._display_task = display, None
            if display is not None:
                self._display_task = asyncio.create_task(self._drive_display(display), name="pole-display")

    async def __aenter__(self) -> InputManager:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.apply(DeviceRegistry())

"""Finding the store's hardware while the daemon runs, and announcing the gateway on the LAN.

Local buses are rescanned on every udev event (polling when udev is unavailable) and mDNS
is browsed for network printers; a device counts as gone only after several missed scans.
What is found is listed by the API (`GET /api/v1/devices/discovered`) for the installer to
bind. With `[discovery] auto_bind` a store that has no printer takes the first printer
found as its receipt printer, and one without a scanner the only scanner found: the
"plug it in and it works" case. The edge announces itself as `_storelink._tcp.local.` so
kitchen screens and phones find it without typing an address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from zeroconf import Error as ZeroconfError
from zeroconf.asyncio import AsyncZeroconf

from drivers.discovery import DeviceEvent, DeviceInfo, NetworkBrowser, advertise_gateway, scan_local
from drivers.hotplug import DeviceInventory, RescanTrigger
from edge.config import DiscoverySettings
from edge.devices import DeviceEntry, DeviceRegistry, load_registry, network_id, save_registry
from protocol.aio import cancel_and_wait

__all__ = ["KDS_PATH", "Discovery", "entry_for"]

log = logging.getLogger(__name__)
KDS_PATH = "/kds"  # served by edge.api_kds; announced in the gateway's mDNS TXT record


def entry_for(device: DeviceInfo, role: str | None = None) -> DeviceEntry | None:
    """A registry entry for a discovered printer or scanner; None for what needs a person to say.

    A bare serial port may be a scale, a pole display or a scanner: it is bound by hand.
    """
    if device.kind == "printer" and device.transport == "network" and device.host:
        return DeviceEntry(
            id=network_id(device.host, device.port or 9100),
            name=device.name[:60] or device.host,
            transport="network",
            host=device.host,
            port=device.port or 9100,
            role=role,
        )
    if device.kind == "printer" and device.transport == "usb":
        return DeviceEntry(
            id=device.id,
            name=device.name[:60] or device.id,
            transport="usb",
            usb_vendor=device.vendor_id,
            usb_product=device.product_id,
            role=role,
        )
    if device.kind == "scanner" and device.transport == "evdev":
        return DeviceEntry(
            id=device.id,
            name=device.name[:60] or device.id,
            kind="scanner",
            transport="evdev",
            path=device.id,
        )
    return None


class Discovery:
    """Runs the rescans, the mDNS browser and the gateway announcement; `found` is what is there now."""

    def __init__(
        self,
        settings: DiscoverySettings,
        state_dir: Path,
        *,
        store: str,
        http_port: Callable[[], int | None],
        zc: AsyncZeroconf | None = None,
    ):
        self._settings = settings
        self._state_dir = state_dir
        self._store = store
        self._http_port = http_port
        self._zc = zc
        self.inventory = DeviceInventory(settings.misses)
        self.network: dict[str, DeviceInfo] = {}
        self.failed: dict[str, str] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stack = contextlib.AsyncExitStack()

    @property
    def found(self) -> list[DeviceInfo]:
        """Every device present now, local and on the LAN."""
        return [*self.inventory.devices.values(), *self.network.values()]

    def describe(self, registry: DeviceRegistry) -> list[dict[str, Any]]:
        """What the API shows: each device and whether `registry` has it already."""
        known = {e.id for e in registry.devices} | {e.path for e in registry.devices if e.path}
        out = []
        for d in self.found:
            entry = entry_for(d)
            out.append(
                {
                    "id": d.id,
                    "kind": d.kind,
                    "transport": d.transport,
                    "name": d.name,
                    "address": f"{d.host}:{d.port}" if d.host else d.device or d.usb_path,
                    "registered": d.id in known or (entry is not None and entry.id in known),
                }
            )
        return out

    # ------------------------------------------------------------------ loops

    async def _rescan_loop(self) -> None:
        async with RescanTrigger(interval=self._settings.interval_s) as trigger:
            if not trigger.watching:
                log.info("no udev events here; looking for devices every %.0f s", self._settings.interval_s)
            async for _reason in trigger:
                scan = await scan_local()
                if scan.failed != self.failed:
                    for transport, why in scan.failed.items():
                        log.info("cannot list %s devices: %s", transport, why)
                    self.failed = {str(transport): why for transport, why in scan.failed.items()}
                for event in self.inventory.apply(scan):
                    await self._changed(event)

    async def _browse_loop(self, zc: AsyncZeroconf) -> None:
        async with NetworkBrowser(zc=zc) as browser:
            async for event in browser:
                if event.change == "removed":
                    self.network.pop(event.device.id, None)
                else:
                    self.network[event.device.id] = event.device
                await self._changed(event)

    async def _changed(self, event: DeviceEvent) -> None:
        device = event.device
        log.info("%s %s %s (%s)", device.kind, event.change, device.id, device.name)
        if event.change != "added" or not self._settings.auto_bind:
            return
        await asyncio.to_thread(self._auto_bind, device)

    def _auto_bind(self, device: DeviceInfo) -> None:
        registry = load_registry(self._state_dir)
        if device.kind == "printer" and not registry.of_kind("printer"):
            entry = entry_for(device, role="receipt")
        elif device.kind == "scanner" and not registry.of_kind("scanner") and self._lone_scanner():
            entry = entry_for(device)
        else:
            return
        if entry is None:
            return
        save_registry(self._state_dir, registry.upsert(entry))
        log.warning(
            "%s %s (%s) bound automatically as %s; change it with `storelink-edge devices bind`",
            entry.kind,
            entry.id,
            entry.name,
            DeviceRegistry(devices=[entry]).role_of(entry),
        )

    def _lone_scanner(self) -> bool:
        # A keyboard can type digits and Enter too: bind only when exactly one such device is
        # plugged in and it does not call itself a keyboard.
        scanners = [d for d in self.inventory.devices.values() if d.kind == "scanner"]
        return len(scanners) == 1 and "keyboard" not in scanners[0].name.lower()

    # ------------------------------------------------------------------ lifecycle

    async def _advertise(self, zc: AsyncZeroconf) -> None:
        port = self._http_port()
        if port is None:
            return
        try:
            ad = await advertise_gateway(
                zc,
                f"storelink {self._store}",
                port,
                # `kds`: the kitchen screen page, so a screen app that browses finds it without a QR.
                {"store": self._store, "api": "/api/v1", "kds": KDS_PATH},
            )
        except (ZeroconfError, OSError) as err:
            log.warning("cannot announce the gateway on the LAN (%s); screens need its address typed", err)
            return
        self._stack.push_async_callback(ad.close)
        log.info("announced as %s on port %d", ad.name, port)

    async def _start_mdns(self) -> None:
        zc = self._zc
        if zc is None:
            try:
                zc = AsyncZeroconf()
            except (ZeroconfError, OSError) as err:
                log.warning("no mDNS on this machine (%s): no LAN discovery or announcement", err)
                return
            self._stack.push_async_callback(zc.async_close)
        if self._settings.mdns_browse:
            self._tasks.append(asyncio.create_task(self._browse_loop(zc), name="device-browse"))
        if self._settings.advertise:
            await self._advertise(zc)

    async def __aenter__(self) -> Discovery:
        # Everything runs in tasks: mDNS probing takes a second or two, and the daemon must be
        # up (and stoppable) at once.
        if self._settings.enabled:
            self._tasks.append(asyncio.create_task(self._rescan_loop(), name="device-rescan"))
            if self._settings.advertise or self._settings.mdns_browse:
                self._tasks.append(asyncio.create_task(self._start_mdns(), name="mdns-start"))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in self._tasks:
            await cancel_and_wait(task, log)
        self._tasks.clear()
        await self._stack.aclose()

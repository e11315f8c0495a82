"""Devices coming and going: when to rescan, and when a device missing from a scan is really gone.

Rescans happen at once after a udev event (usb, tty, input) and every few seconds regardless.
The periodic rescan is not only the fallback for machines without udev (containers, CI): a
PresenceTracker removes a device only after several scans without it, so scans must keep
coming after the single udev "remove" event, or an unplugged device would linger.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Protocol, Self

from drivers.discovery import DeviceEvent, DeviceInfo, LocalScan, Transport

__all__ = [
    "DEFAULT_SUBSYSTEMS",
    "DeviceInventory",
    "Monitor",
    "PresenceChanges",
    "PresenceTracker",
    "Rescan",
    "RescanTrigger",
    "open_udev_monitor",
]

log = logging.getLogger(__name__)

DEFAULT_SUBSYSTEMS = ("usb", "tty", "input")
Rescan = Literal["startup", "hotplug", "poll"]


class Monitor(Protocol):
    """The part of pyudev.Monitor we use: a pollable fd and a non-blocking read of one event."""

    def fileno(self) -> int:
        """The netlink socket, for loop.add_reader."""
        ...

    def poll(self, timeout: float | None = None) -> object | None:
        """One pending event, or None when there is none (timeout=0 never blocks)."""
        ...


def open_udev_monitor(subsystems: Iterable[str] = DEFAULT_SUBSYSTEMS) -> Monitor | None:
    """A started pyudev netlink monitor, or None where udev is unavailable; blocking, call in a thread."""
    try:
        import pyudev  # noqa: PLC0415  (libudev is optional: containers and non-Linux lack it)

        monitor = pyudev.Monitor.from_netlink(pyudev.Context())
        for subsystem in subsystems:
            monitor.filter_by(subsystem)
        monitor.start()
    except (ImportError, OSError) as err:
        log.info("no udev monitor (%s); finding devices by polling only", err)
        return None
    return monitor  # type: ignore[no-any-return]


class RescanTrigger:
    """`async with` it, then `async for reason in trigger` to rescan on hot-plug and on a timer.

    Events within `settle` seconds are coalesced: one plug-in sends a burst of udev events
    (the USB device, each interface, its tty or input nodes), which should cost one scan.
    """

    def __init__(
        self,
        *,
        interval: float = 3.0,
        settle: float = 0.5,
        subsystems: Iterable[str] = DEFAULT_SUBSYSTEMS,
        monitor_factory: Callable[[], Monitor | None] | None = None,
    ) -> None:
        self.interval = interval
        self.settle = settle
        self._factory = monitor_factory or (lambda: open_udev_monitor(tuple(subsystems)))
        self._monitor: Monitor | None = None
        self._wake = asyncio.Event()
        self._started = False

    @property
    def watching(self) -> bool:
        """Whether udev events wake rescans (False: polling only)."""
        return self._monitor is not None

    async def __aenter__(self) -> Self:
        """Open the udev monitor off the loop and watch its socket from the loop."""
        self._monitor = await asyncio.to_thread(self._factory)
        if self._monitor is not None:
            asyncio.get_running_loop().add_reader(self._monitor.fileno(), self._drain)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop watching udev."""
        if self._monitor is not None:
            asyncio.get_running_loop().remove_reader(self._monitor.fileno())
            self._monitor = None

    def __aiter__(self) -> Self:
        """Iterate over rescan reasons forever; cancel the consumer to stop."""
        return self

    async def __anext__(self) -> Rescan:
        """Wait until the next rescan is due and say why."""
        if not self._started:
            self._started = True
            return "startup"
        try:
            async with asyncio.timeout(self.interval):
                await self._wake.wait()
        except TimeoutError:
            return "poll"
        await asyncio.sleep(self.settle)
        self._wake.clear()  # everything that arrived while settling is covered by this scan
        return "hotplug"

    def _drain(self) -> None:
        monitor = self._monitor
        if monitor is None:
            return
        try:
            while monitor.poll(timeout=0) is not None:
                self._wake.set()
        except OSError as err:
            # The netlink socket overflowed (ENOBUFS) or broke: events were lost, so rescan anyway.
            log.warning("udev monitor read failed (%s); rescanning", err)
            self._wake.set()
            if err.errno != errno.ENOBUFS:  # ENOBUFS is transient; anything else means the socket is gone
                with contextlib.suppress(ValueError, OSError):
                    asyncio.get_running_loop().remove_reader(monitor.fileno())
                self._monitor = None


@dataclass(frozen=True, slots=True)
class PresenceChanges:
    """Ids that appeared and ids that are gone after one scan."""

    added: frozenset[str] = frozenset()
    removed: frozenset[str] = frozenset()


class PresenceTracker:
    """Hysteresis for scans: an id appears at once and disappears after `misses` scans without it.

    A USB device that re-enumerates (power dip, loose cable) vanishes for a scan or two; without
    this every flicker would unbind and rebind its role.
    """

    def __init__(self, misses: int = 3) -> None:
        if misses < 1:
            raise ValueError("misses must be at least 1")
        self.misses = misses
        self._missed: dict[str, int] = {}

    @property
    def present(self) -> frozenset[str]:
        """Ids currently considered present, including those missed fewer than `misses` times."""
        return frozenset(self._missed)

    def update(self, seen: Iterable[str]) -> PresenceChanges:
        """Feed the ids one scan saw; return what appeared and what is now considered gone."""
        seen = set(seen)
        added = seen - self._missed.keys()
        removed = set()
        for ident in list(self._missed):
            if ident in seen:
                self._missed[ident] = 0
                continue
            self._missed[ident] += 1
            if self._missed[ident] >= self.misses:
                del self._missed[ident]
                removed.add(ident)
        for ident in added:
            self._missed[ident] = 0
        return PresenceChanges(frozenset(added), frozenset(removed))


class DeviceInventory:
    """Local devices as of the latest scans, with a PresenceTracker per transport.

    A transport whose listing failed keeps its devices as they were: not being able to look
    (libusb missing, a permission error) is not evidence that a device was unplugged.
    """

    def __init__(self, misses: int = 3) -> None:
        self._misses = misses
        self._trackers: dict[Transport, PresenceTracker] = {}
        self.devices: dict[str, DeviceInfo] = {}

    def apply(self, scan: LocalScan) -> list[DeviceEvent]:
        """Fold one scan in; return added, updated (same id, new address) and removed devices."""
        events = []
        for transport, devices in scan.found.items():
            tracker = self._trackers.setdefault(transport, PresenceTracker(self._misses))
            by_id = {device.id: device for device in devices}
            changes = tracker.update(by_id)
            for ident, device in sorted(by_id.items()):
                before = self.devices.get(ident)
                self.devices[ident] = device
                if ident in changes.added:
                    events.append(DeviceEvent("added", device))
                elif before is not None and before != device:
                    events.append(DeviceEvent("updated", device))
            for ident in sorted(changes.removed):
                events.append(DeviceEvent("removed", self.devices.pop(ident)))
        return events

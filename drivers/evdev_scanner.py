"""Keyboard-wedge scanners through evdev: find them, name them stably, grab and read their input nodes.

One USB scanner often shows up as several /dev/input/event* nodes (keyboard, consumer keys,
sometimes a second keyboard); the kernel numbers them in probe order, so ids come from what
the device is (VID:PID, serial) and where it is plugged (the port path in `phys`), never
from eventN. Everything but `list_input_nodes` and `EvdevScanner` is pure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import evdev
from evdev import ecodes

from drivers.scanner import OutcomeQueue, ScanDecoder, ScannerUnavailable, ScanOutcome

__all__ = [
    "EvdevScanner",
    "InputNode",
    "WedgeDevice",
    "can_be_scanner",
    "device_id",
    "discover_scanners",
    "group_nodes",
    "list_input_nodes",
    "port_path",
]

_DIGITS = frozenset(getattr(ecodes, f"KEY_{digit}") for digit in range(10))
_KEYPAD_DIGITS = frozenset(getattr(ecodes, f"KEY_KP{digit}") for digit in range(10))
_ENTERS = frozenset({ecodes.KEY_ENTER, ecodes.KEY_KPENTER})
_BUSES = {
    ecodes.BUS_USB: "usb",
    ecodes.BUS_BLUETOOTH: "bt",
    ecodes.BUS_RS232: "serial",
    ecodes.BUS_I2C: "i2c",
}
_INTERFACE = re.compile(r"/input\d+$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]+")


@dataclass(frozen=True, slots=True)
class InputNode:
    """What the kernel says about one event node: path, names, ids and the EV_KEY codes it can send."""

    path: str
    name: str
    phys: str
    uniq: str
    bustype: int
    vendor: int
    product: int
    keys: frozenset[int]


@dataclass(frozen=True, slots=True)
class WedgeDevice:
    """One physical keyboard-like device with all its event nodes and a stable id."""

    id: str
    name: str
    vendor: int
    product: int
    serial: str
    port: str
    nodes: tuple[InputNode, ...]

    @property
    def can_be_scanner(self) -> bool:
        """Whether any of its nodes can type digits and Enter."""
        return any(can_be_scanner(node.keys) for node in self.nodes)


def can_be_scanner(keys: Collection[int]) -> bool:
    """Whether a node with these EV_KEY codes can type a barcode: Enter and all ten digits (row or keypad)."""
    if _ENTERS.isdisjoint(keys):
        return False
    return _DIGITS.issubset(keys) or _KEYPAD_DIGITS.issubset(keys)


def port_path(phys: str) -> str:
    """The physical port of a node, e.g. "usb-3f980000.usb-1.3" from "usb-3f980000.usb-1.3/input1"."""
    return _INTERFACE.sub("", phys.strip())


def device_id(*, bustype: int, vendor: int, product: int, serial: str, port: str) -> str:
    """A stable id from bus, VID:PID, serial and port path, e.g. "usb-05e0:1200-sn:S1@3f980000.usb-1.3"."""
    bus = _BUSES.get(bustype, f"bus{bustype:x}")
    parts = [f"{bus}-{vendor:04x}:{product:04x}"]
    if serial:
        parts.append(f"-sn:{_safe(serial)}")
    if port:
        parts.append(f"@{_safe(port.removeprefix('usb-'))}")
    return "".join(parts)


def _safe(text: str) -> str:
    # Ids end up in TinyDB keys, log lines and URLs: keep them to a plain, bounded alphabet.
    return _UNSAFE.sub("_", text.strip())[:64]


def group_nodes(nodes: Iterable[InputNode]) -> list[WedgeDevice]:
    """Group event nodes into physical devices: same bus, VID:PID, serial and port path."""
    groups: dict[tuple[int, int, int, str, str], list[InputNode]] = {}
    for node in sorted(nodes, key=lambda n: n.path):
        # Bluetooth nodes report the adapter as phys, so the serial (device address) tells them apart;
        # virtual devices have no phys at all, and fall back on their name.
        port = port_path(node.phys) or f"name:{node.name}"
        groups.setdefault((node.bustype, node.vendor, node.product, node.uniq.strip(), port), []).append(node)
    devices = []
    for (bustype, vendor, product, serial, port), members in groups.items():
        real_port = "" if port.startswith("name:") else port
        ident = device_id(bustype=bustype, vendor=vendor, product=product, serial=serial, port=real_port)
        # Composite devices name their extra nodes "<name> Consumer Control" etc.; the shortest is the device.
        name = min((member.name for member in members), key=len)
        devices.append(WedgeDevice(ident, name, vendor, product, serial, real_port, tuple(members)))
    return devices


def list_input_nodes(paths: Iterable[str] | None = None) -> list[InputNode]:
    """Read every event node the process may open; blocking, so call it in a thread."""
    nodes = []
    for path in sorted(evdev.list_devices() if paths is None else paths):
        try:
            device: evdev.InputDevice[str] = evdev.InputDevice(path)
        except OSError:
            continue  # unplugged meanwhile, or not ours to read (udev rule missing)
        try:
            info = device.info
            keys = frozenset(device.capabilities().get(ecodes.EV_KEY, []))
            nodes.append(
                InputNode(
                    path, device.name, device.phys, device.uniq, info.bustype, info.vendor, info.product, keys
                )
            )
        finally:
            device.close()
    return nodes


async def discover_scanners() -> list[WedgeDevice]:
    """Physical devices that can type barcodes, read off the event loop."""
    nodes = await asyncio.to_thread(list_input_nodes)
    return [device for device in group_nodes(nodes) if device.can_be_scanner]


class EvdevScanner:
    """A wedge scanner: `async with` grabs all its nodes; `read()` or `async for` yields its outcomes."""

    def __init__(
        self,
        device: WedgeDevice,
        *,
        decoder_factory: Callable[[], ScanDecoder] = ScanDecoder,
        grab: bool = True,
        queue_size: int = 256,
        opener: Callable[[str], evdev.InputDevice[str]] = evdev.InputDevice,
    ) -> None:
        """One decoder per node, because modifier state belongs to the node that sent it."""
        self.device = device
        self._decoder_factory = decoder_factory
        self._grab = grab
        self._opener = opener
        self._outcomes = OutcomeQueue(device.id, queue_size)
        self._open: list[evdev.InputDevice[str]] = []
        self._tasks: asyncio.TaskGroup | None = None
        self._running: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Self:
        """Open and grab every node (so keystrokes never reach a console), then start reading."""
        try:
            await asyncio.to_thread(self._open_all)
        except OSError as err:
            self._close_all()
            raise ScannerUnavailable(self.device.id, f"cannot open or grab its input nodes: {err}") from err
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        for handle in self._open:
            decoder = self._decoder_factory()
            reader = self._read(handle, decoder)
            self._running.append(
                self._tasks.create_task(reader, name=f"evdev-scanner {os.fsdecode(handle.path)}")
            )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the readers, then ungrab and close the nodes."""
        try:
            if self._tasks is not None:
                tasks, self._tasks = self._tasks, None
                for task in self._running:
                    task.cancel()
                try:
                    await tasks.__aexit__(None, None, None)
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if current is not None and current.cancelling():
                        raise
        finally:
            self._close_all()

    def __aiter__(self) -> Self:
        """Iterate over outcomes until the device goes away (which raises ScannerUnavailable)."""
        return self

    async def __anext__(self) -> ScanOutcome:
        """The next scan or rejection."""
        return await self.read()

    async def read(self) -> ScanOutcome:
        """Wait for the next scan or rejection; raise ScannerUnavailable once the device is gone."""
        return await self._outcomes.get()

    def _open_all(self) -> None:
        for node in self.device.nodes:
            handle = self._opener(node.path)
            self._open.append(handle)
            if self._grab:
                handle.grab()

    def _close_all(self) -> None:
        handles, self._open = self._open, []
        for handle in handles:
            # The node may already be gone (unplugged); there is nothing left to release then.
            with contextlib.suppress(OSError):
                if self._grab:
                    handle.ungrab()
            with contextlib.suppress(OSError):
                handle.close()

    async def _read(self, handle: evdev.InputDevice[str], decoder: ScanDecoder) -> None:
        events = handle.async_read_loop()
        waiting: asyncio.Future[evdev.InputEvent] | None = None
        try:
            while True:
                if waiting is None:
                    waiting = events.__anext__()
                # asyncio.wait, unlike wait_for, leaves the read pending on timeout, so no event is lost;
                # the timeout is the decoder's, to end a burst that never got its terminator.
                done, _ = await asyncio.wait(
                    {waiting}, timeout=decoder.idle_timeout if decoder.pending else None
                )
                if not done:
                    self._put_all(decoder.flush())
                    continue
                event, waiting = waiting.result(), None
                self._put_all(decoder.feed(event))
        except OSError as err:
            self._put_all(decoder.flush())
            self._outcomes.close(f"{os.fsdecode(handle.path)}: {err.strerror or err}")
        finally:
            if waiting is not None:
                waiting.cancel()

    def _put_all(self, outcomes: Iterable[ScanOutcome]) -> None:
        for outcome in outcomes:
            self._outcomes.put(outcome)

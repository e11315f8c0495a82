"""The store's device registry (TinyDB): which device is which, and the role each one plays.

Roles are how the till talks about devices: it prints "to the receipt printer", never to
"192.168.1.50". An installer binds a device to a role once (`storelink-edge devices add`
or `bind`); a store with exactly one printer gets it as its receipt printer by itself, and
one scanner, scale or pole display serves the store's only lane without a binding.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drivers import NetworkPrinter, Printer, PrinterProfile, SerialPrinter, UsbPrinter
from edge.documents import read_document, write_document
from edge.errors import EdgeError

__all__ = [
    "DeviceEntry",
    "DeviceRegistry",
    "UnknownDevice",
    "load_registry",
    "network_id",
    "open_printer",
    "save_registry",
]

ROLE_PATTERN = r"^(receipt|kitchen-[a-z0-9-]{1,20}|label|display|scanner(-[a-z0-9-]{1,20})?|scale)$"
Kind = Literal["printer", "scanner", "scale", "display"]
# How each kind of device can be attached.
_TRANSPORTS: dict[str, tuple[str, ...]] = {
    "printer": ("network", "serial", "usb"),
    "scanner": ("evdev", "serial"),
    "scale": ("serial",),
    "display": ("serial",),
}
# The role a lone device of a kind plays without being bound.
_LONE_ROLE = {"printer": "receipt", "scanner": "scanner", "scale": "scale", "display": "display"}


class DeviceEntry(BaseModel):
    """One device the store knows: what it is, how to reach it, and its role."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=120, pattern=r"^[A-Za-z0-9._:@/-]+$")
    name: str = Field(min_length=1, max_length=60)
    kind: Kind = "printer"
    transport: Literal["network", "serial", "usb", "evdev"]
    host: str | None = None
    port: int = Field(9100, ge=1, le=65535)
    # Serial: the device, e.g. /dev/serial/by-path/...; evdev scanners: the stable id from discovery.
    path: str | None = None
    # 9600 8N1 is what pole displays, scales and most serial printers and scanners ship with.
    baudrate: int = Field(9600, ge=1200, le=921600)
    usb_vendor: int | None = Field(None, ge=0, le=0xFFFF)
    usb_product: int | None = Field(None, ge=0, le=0xFFFF)
    role: str | None = Field(None, pattern=ROLE_PATTERN)
    paper_mm: Literal[58, 80] = 80
    encoding: Literal["gb18030", "gbk", "big5", "utf-8"] = "gb18030"
    cjk_font: bool = True
    cutter: bool = True
    drawer_pin: Literal[2, 5] = 2
    # Printers without DLE EOT status (some cheap serial models) print without asking first.
    status_query: bool = True
    # Scanners: "auto" refuses keyboard-speed typing; the terminator ends a scan; AIM ids parsed.
    scan_mode: Literal["scanner", "auto"] = "auto"
    terminator: Literal["enter", "tab", "any-eol", "etx"] = "enter"
    aim: bool = False
    # For kitchen printers: the catalog categories whose items go to this station.
    categories: list[str] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _address(self) -> DeviceEntry:
        if self.transport not in _TRANSPORTS[self.kind]:
            allowed = " or ".join(_TRANSPORTS[self.kind])
            raise ValueError(f"a {self.kind} is attached by {allowed}, not {self.transport}")
        usb = None if self.usb_vendor is None or self.usb_product is None else self.usb_vendor
        needed = {"network": self.host, "serial": self.path, "usb": usb, "evdev": self.path}[self.transport]
        if needed is None:
            what = {
                "network": "host",
                "serial": "path",
                "usb": "usb_vendor and usb_product",
                "evdev": "path (the scanner's id from `storelink-edge devices discover`)",
            }[self.transport]
            raise ValueError(f"a {self.transport} {self.kind} needs {what}")
        if self.role is not None and _role_kind(self.role) != self.kind:
            raise ValueError(f"role {self.role!r} is for a {_role_kind(self.role)}, not a {self.kind}")
        return self

    def profile(self) -> PrinterProfile:
        """The ESC/POS profile the encoder lays receipts out with."""
        return PrinterProfile(
            name=self.name,
            encoding=self.encoding,
            cjk_font=self.cjk_font,
            paper_mm=self.paper_mm,
            cutter=self.cutter,
            drawer_pin=self.drawer_pin,
        )

    @property
    def address(self) -> str:
        """Where it is, for people."""
        if self.transport == "network":
            return f"{self.host}:{self.port}"
        if self.transport == "serial":
            return f"{self.path} @ {self.baudrate}"
        if self.transport == "evdev":
            return f"input {self.path}"
        return f"usb {self.usb_vendor or 0:04x}:{self.usb_product or 0:04x}"


def _role_kind(role: str) -> str:
    if role.startswith("scanner"):
        return "scanner"
    return role if role in ("scale", "display") else "printer"


class UnknownDevice(EdgeError):
    """No registered device answers to that id, name or role."""


class DeviceRegistry(BaseModel):
    """Every device of the store (devices.json)."""

    model_config = ConfigDict(extra="forbid")

    devices: list[DeviceEntry] = []

    def by_role(self, role: str) -> DeviceEntry | None:
        """The device bound to `role`; a lone device of a kind takes its kind's main role unbound."""
        for device in self.devices:
            if device.role == role:
                return device
        kind = _role_kind(role)
        if _LONE_ROLE[kind] != role:
            return None
        same = self.of_kind(kind)
        if len(same) == 1 and same[0].role is None:
            return same[0]
        return None

    def of_kind(self, kind: str) -> list[DeviceEntry]:
        """The registered devices of one kind."""
        return [d for d in self.devices if d.kind == kind]

    def role_of(self, entry: DeviceEntry) -> str | None:
        """The role `entry` plays, including the role a lone device of its kind takes by itself."""
        lone = _LONE_ROLE[entry.kind]
        return entry.role or (lone if self.by_role(lone) is entry else None)

    def kitchens(self) -> list[DeviceEntry]:
        """The kitchen station printers (role `kitchen-…`)."""
        return [d for d in self.devices if d.role is not None and d.role.startswith("kitchen-")]

    def find(self, key: str) -> DeviceEntry:
        """A device by id, name or role."""
        for device in self.devices:
            if key in (device.id, device.name):
                return device
        by_role = self.by_role(key)
        if by_role is not None:
            return by_role
        known = ", ".join(d.id for d in self.devices) or "none yet"
        raise UnknownDevice(f"no device {key!r} (known: {known}); see `storelink-edge devices`")

    def upsert(self, entry: DeviceEntry) -> DeviceRegistry:
        """A copy with `entry` added or replaced; a role moves to it from any other device."""
        others = [
            d.model_copy(update={"role": None}) if entry.role and d.role == entry.role else d
            for d in self.devices
            if d.id != entry.id
        ]
        return DeviceRegistry(devices=[*others, entry])


def _path(state_dir: Path) -> Path:
    return state_dir / "devices.json"


def load_registry(state_dir: Path) -> DeviceRegistry:
    """The registry, empty if the store has none yet."""
    return read_document(_path(state_dir), DeviceRegistry) or DeviceRegistry()


def save_registry(state_dir: Path, registry: DeviceRegistry) -> None:
    """Write the registry atomically."""
    write_document(_path(state_dir), registry)


def network_id(host: str, port: int) -> str:
    """A stable id for a LAN printer (its address is what identifies it)."""
    return "net-" + re.sub(r"[^A-Za-z0-9.-]", "-", host) + f"-{port}"


def open_printer(entry: DeviceEntry) -> Printer:
    """The driver for a registered printer (not connected until first use)."""
    if entry.kind != "printer":
        raise ValueError(f"device {entry.id} is a {entry.kind}, not a printer")
    profile = entry.profile()
    if entry.transport == "network":
        assert entry.host is not None  # noqa: S101 - checked by DeviceEntry
        return NetworkPrinter(entry.id, profile, entry.host, entry.port)
    if entry.transport == "serial":
        assert entry.path is not None  # noqa: S101
        return SerialPrinter(entry.id, profile, entry.path, baudrate=entry.baudrate)
    assert entry.usb_vendor is not None  # noqa: S101
    assert entry.usb_product is not None  # noqa: S101
    return UsbPrinter(entry.id, profile, entry.usb_vendor, entry.usb_product)

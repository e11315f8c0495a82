"""The store's device registry (TinyDB): which printer is which, and the role each one plays.

Roles are how the till talks about devices: it prints "to the receipt printer", never to
"192.168.1.50". An installer binds a device to a role once (`storelink-edge devices add`
or `bind`); a store with exactly one printer gets it as its receipt printer by itself.
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

ROLE_PATTERN = r"^(receipt|kitchen-[a-z0-9-]{1,20}|label|display)$"


class DeviceEntry(BaseModel):
    """One printer the store knows: how to reach it, what it can print, and its role."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=120, pattern=r"^[A-Za-z0-9._:@/-]+$")
    name: str = Field(min_length=1, max_length=60)
    transport: Literal["network", "serial", "usb"]
    host: str | None = None
    port: int = Field(9100, ge=1, le=65535)
    path: str | None = None  # serial device, e.g. /dev/serial/by-path/...
    baudrate: int = Field(19200, ge=1200, le=921600)
    usb_vendor: int | None = Field(None, ge=0, le=0xFFFF)
    usb_product: int | None = Field(None, ge=0, le=0xFFFF)
    role: str | None = Field(None, pattern=ROLE_PATTERN)
    paper_mm: Literal[58, 80] = 80
    encoding: Literal["gb18030", "gbk", "big5", "utf-8"] = "gb18030"
    cjk_font: bool = True
    cutter: bool = True
    drawer_pin: Literal[2, 5] = 2
    # For kitchen printers: the catalog categories whose items go to this station.
    categories: list[str] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _address(self) -> DeviceEntry:
        usb = None if self.usb_vendor is None or self.usb_product is None else self.usb_vendor
        needed = {"network": self.host, "serial": self.path, "usb": usb}[self.transport]
        if needed is None:
            what = {"network": "host", "serial": "path", "usb": "usb_vendor and usb_product"}[self.transport]
            raise ValueError(f"a {self.transport} printer needs {what}")
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
        return f"usb {self.usb_vendor or 0:04x}:{self.usb_product or 0:04x}"


class UnknownDevice(EdgeError):
    """No registered device answers to that id, name or role."""


class DeviceRegistry(BaseModel):
    """Every device of the store (devices.json)."""

    model_config = ConfigDict(extra="forbid")

    devices: list[DeviceEntry] = []

    def by_role(self, role: str) -> DeviceEntry | None:
        """The device bound to `role`; a lone printer is the receipt printer without binding."""
        for device in self.devices:
            if device.role == role:
                return device
        if role == "receipt" and len(self.devices) == 1 and self.devices[0].role is None:
            return self.devices[0]
        return None

    def role_of(self, entry: DeviceEntry) -> str | None:
        """The role `entry` plays, including the receipt role a lone printer takes by itself."""
        return entry.role or ("receipt" if self.by_role("receipt") is entry else None)

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

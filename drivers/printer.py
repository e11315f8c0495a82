"""Printer transports: one raw-I/O method each; encoding and status parsing stay pure elsewhere."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Any, Self

from drivers.errors import DriverError
from drivers.escpos import PrinterProfile, encode
from drivers.escpos_status import FULL_STATUS_REQUEST, PrinterStatus, parse_status
from drivers.receipt import Document


class PrinterOffline(DriverError):
    """The printer cannot be reached or stopped answering."""

    def __init__(self, printer_id: str, reason: str = "it does not answer") -> None:
        self.printer_id = printer_id
        self.reason = reason
        super().__init__(
            f"printer {printer_id!r} is offline ({reason}); check that it is switched on and connected"
        )


class Printer(ABC):
    """A receipt or kitchen printer; subclasses implement only `_raw`."""

    def __init__(self, printer_id: str, profile: PrinterProfile) -> None:
        self.printer_id = printer_id
        self.profile = profile

    # `io_timeout` is handed down to the device: pyserial and pyusb calls run in threads,
    # which a caller's asyncio.timeout cannot interrupt, so the deadline must travel with them.
    @abstractmethod
    async def _raw(self, data: bytes, reply_size: int = 0, io_timeout: float = 10.0) -> bytes:
        """Send `data`, then read exactly `reply_size` bytes; raise PrinterOffline on any failure."""

    async def send(self, data: bytes, io_timeout: float = 30.0) -> None:
        """Send already encoded ESC/POS bytes."""
        await self._raw(data, 0, io_timeout)

    async def print_document(self, document: Document, io_timeout: float = 30.0) -> None:
        """Encode (in a thread: raster fallback can take milliseconds) and print `document`."""
        data = await asyncio.to_thread(encode, document, self.profile)
        await self._raw(data, 0, io_timeout)

    async def status(self, io_timeout: float = 2.0) -> PrinterStatus:
        """Ask the printer for its real-time status (DLE EOT 1-4)."""
        return parse_status(await self._raw(FULL_STATUS_REQUEST, 4, io_timeout))

    @abstractmethod
    async def close(self) -> None:
        """Release the connection or device; the next call reopens it."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class NetworkPrinter(Printer):
    """A printer on raw TCP port 9100; one connection, reopened after any failure."""

    def __init__(
        self,
        printer_id: str,
        profile: PrinterProfile,
        host: str,
        port: int = 9100,
        *,
        connect_timeout: float = 5.0,
    ) -> None:
        super().__init__(printer_id, profile)
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        # A print and a status query must not interleave on the one connection.
        self._lock = asyncio.Lock()

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._streams is None:
            async with asyncio.timeout(self.connect_timeout):
                self._streams = await asyncio.open_connection(self.host, self.port)
        return self._streams

    def _drop(self) -> None:
        # Never reuse a connection after a failure or a cancel: late status bytes or half a
        # raster command would corrupt the next exchange.
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None

    async def _raw(self, data: bytes, reply_size: int = 0, io_timeout: float = 10.0) -> bytes:
        async with self._lock:
            try:
                reader, writer = await self._open()
                async with asyncio.timeout(io_timeout):
                    writer.write(data)
                    await writer.drain()
                    return await reader.readexactly(reply_size) if reply_size else b""
            except TimeoutError as err:
                self._drop()
                raise PrinterOffline(self.printer_id, f"no answer from {self.host}:{self.port}") from err
            except (OSError, asyncio.IncompleteReadError) as err:
                self._drop()
                raise PrinterOffline(self.printer_id, f"{self.host}:{self.port}: {err}") from err
            except BaseException:
                self._drop()
                raise

    async def close(self) -> None:
        """Close the TCP connection."""
        async with self._lock:
            if self._streams is not None:
                writer = self._streams[1]
                self._streams = None
                writer.close()
                with contextlib.suppress(OSError):  # the peer already left; closed is what we wanted
                    await writer.wait_closed()


class _ThreadedPrinter(Printer):
    """Blocking device I/O (pyserial, pyusb) run in a worker thread, one call at a time."""

    def __init__(self, printer_id: str, profile: PrinterProfile) -> None:
        super().__init__(printer_id, profile)
        self._io_lock = threading.Lock()

    @abstractmethod
    def _blocking_io(self, data: bytes, reply_size: int, io_timeout: float) -> bytes:
        """Do one exchange on the device; raise PrinterOffline on failure."""

    @abstractmethod
    def _blocking_close(self) -> None:
        """Release the device."""

    def _locked_io(self, data: bytes, reply_size: int, io_timeout: float) -> bytes:
        with self._io_lock:
            return self._blocking_io(data, reply_size, io_timeout)

    def _locked_close(self) -> None:
        with self._io_lock:
            self._blocking_close()

    async def _raw(self, data: bytes, reply_size: int = 0, io_timeout: float = 10.0) -> bytes:
        return await asyncio.to_thread(self._locked_io, data, reply_size, io_timeout)

    async def close(self) -> None:
        """Close the device in the worker thread."""
        await asyncio.to_thread(self._locked_close)


class SerialPrinter(_ThreadedPrinter):
    """A printer on a serial port (RS-232 or a USB-serial adapter), via pyserial."""

    def __init__(
        self,
        printer_id: str,
        profile: PrinterProfile,
        port: str,
        baudrate: int = 9600,
        *,
        rtscts: bool = False,
    ) -> None:
        super().__init__(printer_id, profile)
        self.port = port
        self.baudrate = baudrate
        self.rtscts = rtscts
        self._serial: Any = None

    def _blocking_io(self, data: bytes, reply_size: int, io_timeout: float) -> bytes:
        import serial  # noqa: PLC0415  (pyserial is only needed by sites with serial printers)

        try:
            if self._serial is None:
                self._serial = serial.Serial(self.port, self.baudrate, rtscts=self.rtscts)
            self._serial.write_timeout = io_timeout
            self._serial.timeout = io_timeout
            self._serial.write(data)
            self._serial.flush()
            reply = bytes(self._serial.read(reply_size)) if reply_size else b""
        except (serial.SerialException, OSError) as err:
            self._blocking_close()
            raise PrinterOffline(self.printer_id, f"{self.port}: {err}") from err
        if len(reply) < reply_size:
            self._blocking_close()
            raise PrinterOffline(self.printer_id, f"no answer on {self.port}")
        return reply

    def _blocking_close(self) -> None:
        if self._serial is not None:
            self._serial.close()
            self._serial = None


class UsbPrinter(_ThreadedPrinter):
    """A USB printer-class device, via pyusb: first bulk OUT/IN endpoints of interface 0."""

    def __init__(
        self,
        printer_id: str,
        profile: PrinterProfile,
        vendor_id: int,
        product_id: int,
        *,
        serial_number: str | None = None,
    ) -> None:
        super().__init__(printer_id, profile)
        self.vendor_id = vendor_id
        self.product_id = product_id
        self.serial_number = serial_number
        self._device: Any = None
        self._out: Any = None
        self._in: Any = None

    def _open(self) -> None:
        import usb.core  # noqa: PLC0415  (pyusb needs libusb, loaded only when a USB printer is used)
        import usb.util  # noqa: PLC0415

        def matches(device: Any) -> bool:
            return self.serial_number is None or usb.util.get_string(device, device.iSerialNumber) == (
                self.serial_number
            )

        device = usb.core.find(idVendor=self.vendor_id, idProduct=self.product_id, custom_match=matches)
        if device is None:
            where = f"{self.vendor_id:04x}:{self.product_id:04x}"
            raise PrinterOffline(self.printer_id, f"USB device {where} not found")
        try:
            if device.is_kernel_driver_active(0):
                device.detach_kernel_driver(0)  # usblp would otherwise own the interface
        except NotImplementedError:
            pass  # not Linux: there is no kernel driver to detach
        try:
            device.get_active_configuration()
        except usb.core.USBError:
            device.set_configuration()  # unconfigured: take the first (printers have one)
        interface = device.get_active_configuration()[(0, 0)]

        def endpoint(direction: int) -> Any:
            return usb.util.find_descriptor(
                interface, custom_match=lambda e: usb.util.endpoint_direction(e.bEndpointAddress) == direction
            )

        self._device = device
        self._out = endpoint(usb.util.ENDPOINT_OUT)
        self._in = endpoint(usb.util.ENDPOINT_IN)

    def _blocking_io(self, data: bytes, reply_size: int, io_timeout: float) -> bytes:
        import usb.core  # noqa: PLC0415

        try:
            if self._device is None:
                self._open()
            self._out.write(data, timeout=int(io_timeout * 1000))
            if not reply_size:
                return b""
            if self._in is None:
                raise PrinterOffline(self.printer_id, "this USB printer cannot report its status")
            return bytes(self._in.read(reply_size, timeout=int(io_timeout * 1000)))
        except usb.core.USBError as err:
            self._blocking_close()
            raise PrinterOffline(self.printer_id, f"USB: {err}") from err

    def _blocking_close(self) -> None:
        if self._device is not None:
            import usb.util  # noqa: PLC0415

            usb.util.dispose_resources(self._device)
            self._device = self._out = self._in = None

"""Store hardware: pure protocol cores (keymaps, receipt layout, scale frames) and thin transports.

Re-exported here: everything that imports on any platform. The evdev-based scanner
modules (`drivers.keymap`, `drivers.scanner`, `drivers.evdev_scanner`) need Linux's evdev
and the simulators (`drivers.sim`) are for tests and the demo; import those directly.
"""

from drivers.customer_display import (
    DisplayOffline,
    SerialCustomerDisplay,
    encode_line_and_total,
    encode_screen,
)
from drivers.errors import DriverError
from drivers.escpos import PrinterProfile, ProfileError, encode, render
from drivers.escpos_decode import EscPosDecodeError, EscPosDecoder, PrintedLine, decode_escpos
from drivers.escpos_status import (
    FULL_STATUS_REQUEST,
    PrinterStatus,
    StatusReplyError,
    parse_status,
    status_request,
)
from drivers.gs1 import BarcodeError, Gs1Element, Gs1Message, parse_gs1, parse_gs1_date
from drivers.layout import LayoutError, display_width, layout, wrap
from drivers.printer import NetworkPrinter, Printer, PrinterOffline, SerialPrinter, UsbPrinter
from drivers.receipt import (
    QR,
    Barcode,
    Cell,
    Columns,
    Cut,
    Document,
    DrawerKick,
    Feed,
    Image,
    ReceiptError,
    Rule,
    Text,
)
from drivers.scale import ScaleError, ScaleNotReady, WeightReading, claims_scale, parse_frame
from drivers.serial_scale import NotAScale, ScaleOffline, SerialScale, probe_scale
from drivers.serial_scanner import SerialFrameDecoder, SerialScanner

__all__ = [
    "FULL_STATUS_REQUEST",
    "QR",
    "Barcode",
    "BarcodeError",
    "Cell",
    "Columns",
    "Cut",
    "DisplayOffline",
    "Document",
    "DrawerKick",
    "DriverError",
    "EscPosDecodeError",
    "EscPosDecoder",
    "Feed",
    "Gs1Element",
    "Gs1Message",
    "Image",
    "LayoutError",
    "NetworkPrinter",
    "NotAScale",
    "PrintedLine",
    "Printer",
    "PrinterOffline",
    "PrinterProfile",
    "PrinterStatus",
    "ProfileError",
    "ReceiptError",
    "Rule",
    "ScaleError",
    "ScaleNotReady",
    "ScaleOffline",
    "SerialCustomerDisplay",
    "SerialFrameDecoder",
    "SerialPrinter",
    "SerialScale",
    "SerialScanner",
    "StatusReplyError",
    "Text",
    "UsbPrinter",
    "WeightReading",
    "claims_scale",
    "decode_escpos",
    "display_width",
    "encode",
    "encode_line_and_total",
    "encode_screen",
    "layout",
    "parse_frame",
    "parse_gs1",
    "parse_gs1_date",
    "parse_status",
    "probe_scale",
    "render",
    "status_request",
    "wrap",
]

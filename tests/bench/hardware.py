"""Hardware benchmarks: a sales receipt rendered to ESC/POS bytes; a scan reaching the till.

Run one row alone with `python -m tests.bench.hardware [N]`; `python3 dev.py bench` puts the
rows in docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from evdev import InputEvent, ecodes

from drivers.escpos import PrinterProfile, encode, render
from drivers.evdev_scanner import EvdevScanner, InputNode, WedgeDevice
from drivers.layout import Line
from drivers.scanner import ScanDecoder, ScanMode
from edge.catalog import Catalog, CatalogDocument
from edge.devices import DeviceEntry, DeviceRegistry
from edge.events import Event, EventBus
from edge.inputs import InputManager
from edge.orders import Order, OrderLine, apply_payment, reprice
from edge.printing import sales_receipt
from edge.receipt import receipt
from tests.drivers.keyseq import typed

RECEIPT_LINES = 30
SAMPLE_CATALOG = Path(__file__).resolve().parents[2] / "edge" / "sample_catalog.json"
SHANGHAI = ZoneInfo("Asia/Shanghai")
_PAID_AT = datetime(2024, 5, 1, 4, 30, tzinfo=UTC)
# A convenience store's basket: short and long names, Chinese with Latin brands and sizes,
# pieces and weighed goods, store prices (their explanation prints as an extra line) and notes.
_GOODS: list[tuple[str, str, int, int | None]] = [
    # name, quantity ("0.35" is kg), list price, store price (None: list price)
    ("可口可乐 330ml", "2", 350, None),
    ("五常稻花香大米（东北特产，真空包装）5kg", "1", 8990, 7990),
    ("五花肉", "0.35", 3000, None),
    ("农夫山泉 550ml", "6", 200, None),
    ("康师傅红烧牛肉面(桶装)", "3", 550, 500),
    ("德芙巧克力礼盒装“心语”榛仁味 Dove Hazelnut Gift Box 252g", "1", 12800, None),
    ("蒙牛纯牛奶 250ml×24盒", "1", 6500, 5990),
    ("鸡蛋", "1.2", 1190, None),
    ("三只松鼠每日坚果 750g", "1", 13900, None),
    ("洗洁精", "2", 990, None),
    ("Oreo 奥利奥夹心饼干原味 388g", "1", 1590, 1290),
    ("苹果（山东烟台红富士，特级）", "1.85", 1280, None),
    ("卫龙辣条", "5", 300, None),
    ("青岛啤酒 经典 500ml", "12", 650, 590),
    ("维达抽纸 3层130抽×6包", "2", 1990, None),
    ("海天金标生抽 1.28L", "1", 1680, None),
    ("西红柿", "0.72", 690, None),
    ("雀巢咖啡 1+2 原味 15g×30条", "1", 5900, 4990),
    ("旺旺雪饼", "1", 1290, None),
    ("李锦记蚝油", "1", 1390, None),
    ("香蕉", "1.1", 590, None),
    ("康师傅冰红茶 1L", "4", 450, None),
    ("心相印湿巾 80片 家庭装（加厚无香型，适合婴儿）", "1", 2490, None),
    ("金龙鱼大豆油 5L", "1", 6990, 6490),
    ("恰恰香瓜子 308g", "2", 990, None),
    ("光明莫斯利安酸奶", "6", 650, None),
    ("Lay's 乐事薯片 黄瓜味 70g", "3", 750, None),
    ("冷冻水饺（猪肉白菜馅）1kg", "1", 2890, None),
    ("白菜", "2.4", 250, None),
    ("绿箭口香糖", "3", 250, None),
]
_NOTES = {2: "切片", 11: "挑大个的", 27: "请单独装袋"}
_DISCOUNT_FEN = 1000  # an order-level coupon: 满200减10


def sample_order() -> Order:
    """A paid 30-line order: store prices, weighed goods, notes, a coupon, WeChat plus cash."""
    lines = [
        OrderLine(
            line_id=f"l{index}",
            sku=f"sku{index}",
            name=name,
            unit="piece" if qty.isdigit() else "kg",
            qty=Fraction(qty),
            list_price_fen=list_fen,
            store_price_fen=store_fen,
            note=_NOTES.get(index, ""),
        )
        for index, (name, qty, list_fen, store_fen) in enumerate(_GOODS)
    ]
    order = reprice(
        Order(
            id="01HXORDER0000000000000001",
            store="s-001",
            number=12,
            business_day=date(2024, 5, 1),
            opened_at=_PAID_AT,
            opened_by="c1",
            member_id="M13800138000",
            lines=lines,
        )
    )
    order = order.model_copy(
        update={"discount_fen": _DISCOUNT_FEN, "total_fen": order.subtotal_fen - _DISCOUNT_FEN}
    )
    order = apply_payment(
        order, method="wechat", amount_fen=20000, reference="4200001234567890", staff_id="c1", now=_PAID_AT
    )
    cash = order.due_fen // 10000 * 10000 + 10000  # a round note, so there is change
    return apply_payment(order, method="cash", amount_fen=cash, reference=None, staff_id="c1", now=_PAID_AT)


def receipt_profile(paper_mm: Literal[58, 80], *, cjk_font: bool = True) -> PrinterProfile:
    """A GB18030 printer; without a CJK font, Chinese lines are drawn as raster images."""
    return PrinterProfile(f"bench-{paper_mm}", paper_mm=paper_mm, cjk_font=cjk_font)


def _timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def receipt_render(n: int, profile: PrinterProfile) -> tuple[list[float], list[float]]:
    """Sales receipt JSON → template → ESC/POS bytes, vs `str.encode` of the lines it prints.

    The baseline encodes the receipt's printed text, joined with newlines, with the same
    codec: the cost no encoder can avoid, so the ratio is what layout and commands add.
    Warm caches on both sides: a till prints the same characters receipt after receipt.
    """
    data: dict[str, Any] = receipt(sample_order(), store_name="好邻居便利店（建国路店）", zone=SHANGHAI)
    printed = "\n".join(
        block.text for block in render(sales_receipt(data, paper=profile), profile) if isinstance(block, Line)
    )
    ours = _timed(lambda: encode(sales_receipt(data, paper=profile), profile), n)
    baseline = _timed(lambda: printed.encode(profile.encoding), n)
    return ours, baseline


def receipt_rows(n: int) -> list[tuple[str, str, list[float], list[float]]]:
    """Benchmark-table rows: the goal's 80 mm receipt first, then 58 mm and the raster fallback.

    The raster printer draws every Chinese line as an image with FreeType; it is much slower,
    reported for what it costs, and not part of the 2 ms goal (so it runs a tenth as often).
    """
    baseline = "`str.encode('gb18030')` of the same printed lines"
    what = f"sales receipt, {RECEIPT_LINES} lines, Chinese → ESC/POS bytes (template + layout + encoder)"
    rows = []
    for label, profile, runs in [
        ("80 mm GB18030, CJK font", receipt_profile(80), n),
        ("58 mm GB18030, CJK font", receipt_profile(58), n),
        ("80 mm, no CJK font: Chinese lines as raster images", receipt_profile(80, cjk_font=False), n // 10),
    ]:
        ours, base = receipt_render(max(1, runs), profile)
        rows.append((f"{what}, {label}", baseline, ours, base))
    return rows


class _FakeNode:
    """An evdev node whose events the benchmark writes: `EvdevScanner` reads it like a device."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.queue: asyncio.Queue[InputEvent] = asyncio.Queue()

    def async_read_loop(self) -> _FakeNode:
        return self

    def __anext__(self) -> asyncio.Future[InputEvent]:
        # Like python-evdev's ReadIterator: a future, which the driver may leave pending.
        return asyncio.ensure_future(self.queue.get())

    def grab(self) -> None:
        pass

    def ungrab(self) -> None:
        pass

    def close(self) -> None:
        pass


async def scan_to_till(n: int) -> tuple[list[float], list[float]]:
    """Terminator key event in → `scan` event (product looked up) at a till subscriber.

    The real driver path: EvdevScanner reading a node, the keymap decoder in "auto" mode
    (typing-speed check on), the InputManager with the sample catalog, the event bus. The
    keystrokes are synthetic `evdev.InputEvent`s with scanner timing (4 ms apart); the clock
    starts when the Enter key press is handed to the node, as the kernel would. Baseline: the
    bus alone, publish → subscriber.
    """
    node = _FakeNode("/dev/input/bench")
    wedge = WedgeDevice(
        "usb-bench",
        "bench scanner",
        0x05E0,
        0x1200,
        "",
        "usb-1.2",
        (InputNode(node.path, "bench scanner", "usb-1.2/input0", "", 3, 0x05E0, 0x1200, frozenset()),),
    )
    bus = EventBus()
    catalog = Catalog(CatalogDocument.model_validate_json(SAMPLE_CATALOG.read_text(encoding="utf-8")))

    @contextlib.asynccontextmanager
    async def source(entry: DeviceEntry) -> AsyncIterator[EvdevScanner]:
        decoder = lambda: ScanDecoder(mode=ScanMode.AUTO)  # noqa: E731
        async with EvdevScanner(wedge, decoder_factory=decoder, opener=lambda _: node) as scanner:  # type: ignore[arg-type,return-value]
            yield scanner

    entry = DeviceEntry(id="usb-bench", name="bench", kind="scanner", transport="evdev", path="usb-bench")
    inputs = InputManager(bus, lambda: catalog, scan_source=source)
    sub = bus.subscribe()
    ours: list[float] = []
    async with inputs:
        await inputs.apply(DeviceRegistry(devices=[entry]))
        for _ in range(n):
            events = typed("6954767410388\n", start=time.time())
            enter = next(i for i, e in enumerate(events) if e.code == ecodes.KEY_ENTER and e.value == 1)
            for event in events[:enter]:
                node.queue.put_nowait(event)
            while not node.queue.empty():  # the code's keys are read: only the terminator is timed
                await asyncio.sleep(0)
            await asyncio.sleep(0)
            start = time.perf_counter()
            for event in events[enter:]:
                node.queue.put_nowait(event)
            got = await sub.queue.get()
            ours.append(time.perf_counter() - start)
            assert got.type == "scan" and got.data["product"] is not None  # noqa: PT018
    baseline: list[float] = []
    for _ in range(n):
        start = time.perf_counter()
        bus.publish(Event("scan", {"code": "6954767410388"}))
        await sub.queue.get()
        baseline.append(time.perf_counter() - start)
    return ours, baseline


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, int(len(ordered) * 0.99) - 1)]


def main() -> None:
    """Print median / p99 of each row, without the rest of `dev.py bench`."""
    ours, base = asyncio.run(scan_to_till(500))
    print(
        f"scan to till: {statistics.median(ours) * 1e6:.0f} / {_p99(ours) * 1e6:.0f} µs; "
        f"bus alone {statistics.median(base) * 1e6:.1f} µs"
    )
    for name, _, ours, base in receipt_rows(int(sys.argv[1]) if len(sys.argv) > 1 else 2000):
        print(
            f"{name}: {statistics.median(ours) * 1e3:.3f} / {_p99(ours) * 1e3:.3f} ms median / p99; "
            f"baseline {statistics.median(base) * 1e6:.1f} / {_p99(base) * 1e6:.1f} µs ({len(ours)} runs)"
        )


if __name__ == "__main__":
    main()

"""2x20 pole display: the pure encoder, and the serial transport through a real pty."""

from __future__ import annotations

import pytest

from drivers.customer_display import (
    DisplayOffline,
    SerialCustomerDisplay,
    ascii_text,
    encode_init,
    encode_line_and_total,
    encode_screen,
    format_fen,
    item_label,
    two_columns,
)
from drivers.sim import PoleScreen, SimPoleDisplay


def screen_of(data: bytes) -> tuple[str, str]:
    screen = PoleScreen()
    assert screen.feed(data) == len(data)
    return screen.lines()


def test_format_fen():
    assert format_fen(1250) == "¥12.50"
    assert format_fen(5) == "¥0.05"
    assert format_fen(-300) == "-¥3.00"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Cola 330ml", "Cola 330ml"),
        ("Ｃａｆé Latte", "Cafe Latte"),
        ("可乐", "??"),
        ("tab\there", "tab?here"),
    ],
)
def test_ascii_text(text, expected):
    assert ascii_text(text) == expected


def test_item_label_falls_back_to_sku_then_question_marks():
    assert item_label("可口可乐 330ml", sku="COKE-330") == "COKE-330"
    assert item_label("可乐") == "??"
    assert item_label("Latte", sku="LAT-1") == "Latte"


def test_two_columns_keeps_the_amount_whole():
    assert two_columns("Cola", "¥3.50") == "Cola           ¥3.50"
    assert two_columns("A very long item name here", "¥123.00") == "A very long  ¥123.00"
    assert len(two_columns("x", "y")) == 20


def test_screen_bytes_are_ascii_except_the_pc437_yen():
    data = encode_line_and_total("可口可乐", 350, 1250, sku="COKE-330")
    assert all(b < 0x80 or b == 0x9D for b in data)
    assert screen_of(encode_init() + data) == ("COKE-330       ¥3.50", "TOTAL         ¥12.50")


def test_full_width_yen_in_a_name_becomes_the_yen_char():
    assert screen_of(encode_screen("￥5 deal", "")) == ("¥5 deal".ljust(20), " " * 20)


def test_a_shorter_screen_overwrites_a_longer_one():
    first = encode_screen("Long item name 12345", "TOTAL        ¥999.99")
    second = encode_screen("Tea", "")
    assert screen_of(encode_init() + first + second) == ("Tea".ljust(20), " " * 20)


async def test_show_through_a_pty():
    async with SimPoleDisplay() as sim, SerialCustomerDisplay(sim.port_path) as display:
        await display.show("Americano", 1800, 3600)
        await sim.wait_for(lambda: sim.lines[1].strip() != "", within=1.5)
        assert sim.lines == ("Americano     ¥18.00", "TOTAL         ¥36.00")
        assert sim.received.startswith(b"\x1b@\x0c\x1f\x01")
        await display.show_lines("Thank you!", "谢谢")
        await sim.wait_for(lambda: sim.lines[0].startswith("Thank"), within=1.5)
        assert sim.lines == ("Thank you!".ljust(20), "??".ljust(20))


async def test_missing_port_is_offline(tmp_path):
    with pytest.raises(DisplayOffline, match="check its cable"):
        await SerialCustomerDisplay(str(tmp_path / "ttyUSB7")).open()


async def test_write_after_close_is_offline():
    async with SimPoleDisplay() as sim:
        display = SerialCustomerDisplay(sim.port_path)
        await display.open()
        await display.close()
        with pytest.raises(DisplayOffline, match="not open"):
            await display.show("x", 1, 1)

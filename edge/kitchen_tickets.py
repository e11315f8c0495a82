"""Kitchen tickets as a pure diff: each station is told only what changed since its last ticket.

`kitchen_tickets` compares the order's kitchen lines now with what every station was
already sent and returns the tickets to print plus the new sent state. Printing exactly
once rests on the caller: it stores the returned `KitchenRound.sent` in the same journal
transaction that queues the tickets' print jobs. A crash before that commit leaves the
old state, so the next round produces the same tickets again; after it, the jobs are in
the queue and the state says they were sent, so nothing prints twice and nothing goes
missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Literal, NamedTuple, TypeAlias

from drivers.receipt import Cell, Columns, Cut, Element, Rule, Text
from edge.printing import PrintTemplateError
from protocol import format_qty

__all__ = [
    "DEFAULT_STATION",
    "ChangeKind",
    "KitchenChange",
    "KitchenLine",
    "KitchenRound",
    "KitchenTicket",
    "SentLine",
    "SentState",
    "kitchen_tickets",
]

DEFAULT_STATION = "厨房"
ChangeKind: TypeAlias = Literal["new", "changed", "cancelled"]
_ZERO = Fraction(0)


@dataclass(frozen=True)
class KitchenLine:
    """One order line as the kitchen should make it now; qty 0 means it was taken off the order."""

    line_id: str
    name: str
    qty: Fraction | int | str
    note: str = ""
    station: str = DEFAULT_STATION


class SentLine(NamedTuple):
    """What a station was last told about a line; JSON-serialises as ["1.5", "少辣", "宫保鸡丁"]."""

    qty: str
    note: str
    # Kept so a line deleted from the order can still be named on its cancellation ticket.
    name: str


SentState: TypeAlias = dict[str, dict[str, SentLine]]
"""Station -> line id -> what that station was sent; persist it with the print jobs."""


@dataclass(frozen=True)
class KitchenChange:
    """One thing a station must act on; `sent_qty` is 0 for a new line, `qty` 0 for a cancelled one."""

    kind: ChangeKind
    line_id: str
    name: str
    qty: Fraction
    sent_qty: Fraction
    note: str
    sent_note: str

    @property
    def delta(self) -> Fraction:
        """How much more (positive) or less (negative) to make than the station was told."""
        return self.qty - self.sent_qty


@dataclass(frozen=True)
class KitchenTicket:
    """The ticket for one station: its changes and the document to print."""

    station: str
    changes: tuple[KitchenChange, ...]
    document: tuple[Element, ...]


@dataclass(frozen=True)
class KitchenRound:
    """Tickets to print now and the sent state to store with them in one transaction."""

    tickets: tuple[KitchenTicket, ...]
    sent: SentState


def _qty(value: object, what: str) -> Fraction:
    # Floats are refused like everywhere else in storelink: 0.1 + 0.2 portions is not a dish.
    if isinstance(value, bool) or not isinstance(value, Fraction | int | str):
        raise PrintTemplateError(f"{what}: quantity must be a decimal string or Fraction, got {value!r}")
    try:
        qty = Fraction(value)
    except ValueError as err:
        raise PrintTemplateError(f"{what}: {value!r} is not a quantity") from err
    if qty < 0:
        raise PrintTemplateError(f"{what}: quantity {value!r} is negative")
    return qty


def _sent_lines(station: str, lines: Mapping[str, Sequence[object]]) -> dict[str, tuple[Fraction, str, str]]:
    parsed = {}
    for line_id, entry in lines.items():
        # Two-item (qty, note) entries are accepted too; such a line, once deleted, is named by its id.
        if isinstance(entry, str) or len(entry) not in (2, 3):
            raise PrintTemplateError(
                f"station {station} line {line_id}: sent entry {entry!r} is not (qty, note, name)"
            )
        qty, note, *rest = entry
        name = str(rest[0]) if rest else ""
        parsed[line_id] = (_qty(qty, f"station {station} line {line_id}"), str(note), name)
    return parsed


def _current(lines: Sequence[KitchenLine]) -> dict[str, dict[str, tuple[KitchenLine, Fraction]]]:
    by_station: dict[str, dict[str, tuple[KitchenLine, Fraction]]] = {}
    seen: set[str] = set()
    for line in lines:
        if line.line_id in seen:
            raise PrintTemplateError(f"kitchen line {line.line_id} appears twice; each line has one station")
        seen.add(line.line_id)
        qty = _qty(line.qty, f"line {line.line_id} ({line.name})")
        by_station.setdefault(line.station, {})[line.line_id] = (line, qty)
    return by_station


def _diff(
    now: Mapping[str, tuple[KitchenLine, Fraction]], before: Mapping[str, tuple[Fraction, str, str]]
) -> list[KitchenChange]:
    cancelled: list[KitchenChange] = []
    changed: list[KitchenChange] = []
    for line_id, (sent_qty, sent_note, sent_name) in before.items():
        current = now.get(line_id)
        if current is None or current[1] == 0:
            name = current[0].name if current else sent_name or line_id
            cancelled.append(KitchenChange("cancelled", line_id, name, _ZERO, sent_qty, "", sent_note))
    for line_id, (line, qty) in now.items():
        if qty == 0:
            continue
        if line_id not in before:
            changed.append(KitchenChange("new", line_id, line.name, qty, _ZERO, line.note, ""))
            continue
        sent_qty, sent_note, _ = before[line_id]
        if qty != sent_qty or line.note != sent_note:
            changed.append(KitchenChange("changed", line_id, line.name, qty, sent_qty, line.note, sent_note))
    # Cancellations first: stopping a dish already on the stove matters most.
    return cancelled + changed


def _change_rows(change: KitchenChange) -> list[Element]:
    # An ASCII "x" before the quantity: the layout may break after the wide "×", which would
    # leave a bare "1" on the next line of a cancellation.
    qty = format_qty(change.qty)
    if change.kind == "cancelled":
        return [
            Text(
                f"取消 {change.name} x{format_qty(change.sent_qty)}",
                width=2,
                height=2,
                bold=True,
                invert=True,
            )
        ]
    if change.kind == "new":
        rows: list[Element] = [Text(f"{change.name} x{qty}", width=2, height=2, bold=True)]
        if change.note:
            rows.append(Text(f"  备注: {change.note}", height=2, bold=True))
        return rows
    delta = change.delta
    if delta > 0:
        head = f"加 {format_qty(delta)} {change.name}"
    elif delta < 0:
        head = f"减 {format_qty(-delta)} {change.name}"
    else:
        head = f"改 {change.name} x{qty}"
    rows = [Text(head, width=2, height=2, bold=True)]
    if delta:
        rows.append(Text(f"  现共 {qty} (原 {format_qty(change.sent_qty)})"))
    if change.note != change.sent_note:
        rows.append(Text(f"  备注改为: {change.note or '无'}", height=2, bold=True))
        rows.append(Text(f"  (原备注: {change.sent_note or '无'})"))
    return rows


def _ticket(
    station: str,
    changes: Sequence[KitchenChange],
    *,
    first: bool,
    order_number: str,
    table: str | None,
    at: datetime,
) -> tuple[Element, ...]:
    doc: list[Element] = [Text(station, width=2, height=2, bold=True, align="center")]
    if table:
        doc.append(Text(f"桌号 {table}", width=2, height=2, bold=True))
    doc.append(Columns((Cell(f"单号 {order_number}"), Cell(f"{at:%H:%M:%S}", align="right"))))
    # A cook who sees "加单" knows the earlier ticket stands and this one adds to it.
    doc += [Text("新单" if first else "加单/改单", bold=True, align="center"), Rule("=")]
    for change in changes:
        doc += _change_rows(change)
    doc += [Rule("="), Text(f"{at:%Y-%m-%d %H:%M:%S}", align="center"), Cut()]
    return tuple(doc)


def kitchen_tickets(
    lines: Sequence[KitchenLine],
    sent: Mapping[str, Mapping[str, Sequence[object]]],
    *,
    order_number: str,
    at: datetime,
    table: str | None = None,
) -> KitchenRound:
    """Per-station tickets with only new, changed and cancelled lines, and the state after them."""
    current = _current(lines)
    before = {station: _sent_lines(station, entries) for station, entries in sent.items()}
    tickets: list[KitchenTicket] = []
    state: SentState = {}
    # Stations in the order's line order, then those that only have cancellations.
    for station in [*current, *(s for s in before if s not in current)]:
        now = current.get(station, {})
        previous = before.get(station, {})
        changes = _diff(now, previous)
        if changes:
            document = _ticket(
                station, changes, first=not previous, order_number=order_number, table=table, at=at
            )
            tickets.append(KitchenTicket(station, tuple(changes), document))
        kept = {
            line_id: SentLine(format_qty(qty), line.note, line.name)
            for line_id, (line, qty) in now.items()
            if qty > 0
        }
        if kept:
            state[station] = kept
    return KitchenRound(tuple(tickets), state)

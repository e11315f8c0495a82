"""Kitchen tickets as a pure diff: each station is told only what changed since its last ticket.

`kitchen_tickets` compares the order's kitchen lines now with what every station was
already sent and returns the tickets to print plus the new sent state. Printing exactly
once rests on the caller: it stores the returned `KitchenRound.sent` in the same journal
transaction that queues the tickets' print jobs. A crash before that commit leaves the
old state, so the next round produces the same tickets again; after it, the jobs are in
the queue and the state says they were sent, so nothing prints twice and nothing goes
missing.

Hold-and-fire (叫起): a line sent `held` reaches its station marked "wait for the call";
when it is later sent not held, the station gets a "fire" change (起菜) for it, once. A
line that was fired never goes back to held.
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
    "HeldLine",
    "KitchenChange",
    "KitchenLine",
    "KitchenRound",
    "KitchenTicket",
    "SentLine",
    "SentState",
    "kitchen_tickets",
    "ticket_title",
]

DEFAULT_STATION = "厨房"
ChangeKind: TypeAlias = Literal["new", "changed", "cancelled", "fire"]
_ZERO = Fraction(0)


@dataclass(frozen=True)
class KitchenLine:
    """One order line as the kitchen should make it now; qty 0 means it was taken off the order."""

    line_id: str
    name: str
    qty: Fraction | int | str
    note: str = ""
    station: str = DEFAULT_STATION
    # 叫起: the station knows of the line but waits for the call; `course` groups what is fired together.
    held: bool = False
    course: int = 1


class SentLine(NamedTuple):
    """What a station was last told about a line; JSON-serialises as ["1.5", "少辣", "宫保鸡丁"]."""

    qty: str
    note: str
    # Kept so a line deleted from the order can still be named on its cancellation ticket.
    name: str


class HeldLine(NamedTuple):
    """A line the station was sent held (叫起); JSON-serialises with a fourth item, true."""

    qty: str
    note: str
    name: str
    held: bool = True


SentState: TypeAlias = dict[str, dict[str, SentLine | HeldLine]]
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
    held: bool = False
    course: int = 1

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


_Sent: TypeAlias = tuple[Fraction, str, str, bool]  # qty, note, name, held


def _sent_lines(station: str, lines: Mapping[str, Sequence[object]]) -> dict[str, _Sent]:
    parsed = {}
    for line_id, entry in lines.items():
        # Two-item (qty, note) entries are accepted too; such a line, once deleted, is named by its id.
        if isinstance(entry, str) or len(entry) not in (2, 3, 4):
            raise PrintTemplateError(
                f"station {station} line {line_id}: sent entry {entry!r} is not (qty, note, name)"
            )
        qty, note, *rest = entry
        name = str(rest[0]) if rest else ""
        held = len(rest) == 2 and rest[1] is True
        parsed[line_id] = (_qty(qty, f"station {station} line {line_id}"), str(note), name, held)
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


def _held(line: KitchenLine, before: _Sent | None) -> bool:
    # A dish the station was told to cook (never held, or fired since) is never held again.
    return line.held and (before is None or before[3])


def _diff(
    now: Mapping[str, tuple[KitchenLine, Fraction]], before: Mapping[str, _Sent]
) -> list[KitchenChange]:
    cancelled: list[KitchenChange] = []
    changed: list[KitchenChange] = []
    for line_id, (sent_qty, sent_note, sent_name, sent_held) in before.items():
        current = now.get(line_id)
        if current is None or current[1] == 0:
            name = current[0].name if current else sent_name or line_id
            course = current[0].course if current else 1
            cancelled.append(
                KitchenChange("cancelled", line_id, name, _ZERO, sent_qty, "", sent_note, sent_held, course)
            )
    for line_id, (line, qty) in now.items():
        if qty == 0:
            continue
        previous = before.get(line_id)
        held = _held(line, previous)
        if previous is None:
            changed.append(
                KitchenChange("new", line_id, line.name, qty, _ZERO, line.note, "", held, line.course)
            )
            continue
        sent_qty, sent_note, _, sent_held = previous
        if sent_held and not held:
            kind: ChangeKind = "fire"
        elif qty != sent_qty or line.note != sent_note:
            kind = "changed"
        else:
            continue
        changed.append(
            KitchenChange(kind, line_id, line.name, qty, sent_qty, line.note, sent_note, held, line.course)
        )
    # Cancellations first: stopping a dish already on the stove matters most.
    return cancelled + changed


def _fire_rows(change: KitchenChange) -> list[Element]:
    rows: list[Element] = [
        Text(f"起菜 {change.name} x{format_qty(change.qty)}", width=2, height=2, bold=True, invert=True)
    ]
    if change.qty != change.sent_qty:
        rows.append(Text(f"  (叫起时 x{format_qty(change.sent_qty)})"))
    if change.note:
        rows.append(Text(f"  备注: {change.note}", height=2, bold=True))
    return rows


def _change_rows(change: KitchenChange) -> list[Element]:
    # An ASCII "x" before the quantity: the layout may break after the wide "×", which would
    # leave a bare "1" on the next line of a cancellation.
    qty = format_qty(change.qty)
    if change.kind == "fire":
        return _fire_rows(change)
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
    hold = f"  [叫起 第{change.course}道]" if change.held else ""
    rows: list[Element]
    if change.kind == "new":
        rows = [Text(f"{change.name} x{qty}", width=2, height=2, bold=True)]
        if hold:
            rows.append(Text(hold, bold=True))
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
    if hold:
        rows.append(Text(hold, bold=True))
    if delta:
        rows.append(Text(f"  现共 {qty} (原 {format_qty(change.sent_qty)})"))
    if change.note != change.sent_note:
        rows.append(Text(f"  备注改为: {change.note or '无'}", height=2, bold=True))
        rows.append(Text(f"  (原备注: {change.sent_note or '无'})"))
    return rows


def ticket_title(changes: Sequence[KitchenChange], *, first: bool) -> str:
    """新单, 加单/改单 or 起菜 (a ticket that only fires held dishes)."""
    if changes and all(change.kind == "fire" for change in changes):
        return "起菜"
    return "新单" if first else "加单/改单"


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
    doc += [Text(ticket_title(changes, first=first), bold=True, align="center"), Rule("=")]
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
        kept: dict[str, SentLine | HeldLine] = {
            line_id: (HeldLine if _held(line, previous.get(line_id)) else SentLine)(
                format_qty(qty), line.note, line.name
            )
            for line_id, (line, qty) in now.items()
            if qty > 0
        }
        if kept:
            state[station] = kept
    return KitchenRound(tuple(tickets), state)

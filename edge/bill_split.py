"""Splitting a table's bill, as pure functions: evenly in N parts, or by item into sub-bills.

Both are exact in fen. An even split uses `protocol.money.allocate` with equal weights:
part k is round_half_up(total·k/N) − round_half_up(total·(k−1)/N), so parts differ by at
most 1 fen and the last one lands on the total. A split by item moves whole lines or
partial quantities to new orders *with the amounts the bill already had*: a line cut in
pieces has its total, its promotion discount and each rule's share allocated over the
pieces in proportion to their quantities, so the sub-bills add up to the bill to the fen
and nothing is re-priced (a promotion earned by the whole table stays earned).

The kitchen's "sent" state moves with the lines (`split_sent`, `merge_sent`): a station
that was told about 3 beers still knows 3 in total, now spread over the orders that hold
them, so no round after a split or merge re-sends or cancels anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from edge.errors import TillError
from edge.orders import Order, OrderLine
from protocol import format_qty
from protocol.money import allocate
from protocol.promotion_rules import AppliedRule

__all__ = [
    "MAX_EVEN_PARTS",
    "Piece",
    "SentState",
    "even_parts",
    "merge_sent",
    "regroup",
    "split_lines",
    "split_sent",
]

MAX_EVEN_PARTS = 50
SentState = dict[str, dict[str, list[Any]]]
"""Station -> line id -> [qty, note, name] or [qty, note, name, true] (held), as `kitchen_sent` stores it."""


def even_parts(total_fen: int, parts: int) -> list[int]:
    """N parts that sum exactly to the total (cumulative half-up rounding, see the module doc)."""
    if not 1 <= parts <= MAX_EVEN_PARTS:
        raise TillError(f"a bill splits into 1 to {MAX_EVEN_PARTS} parts, not {parts}", status=422)
    if total_fen < 0:
        raise TillError(f"a bill of {total_fen} fen cannot be split", status=422)
    return allocate(total_fen, [1] * parts)


@dataclass(frozen=True)
class Piece:
    """Part of a line after a split: which bill holds it (0 = the table's order), its line id and qty."""

    owner: int
    line_id: str
    qty: Fraction


def _weights(quantities: Sequence[Fraction]) -> list[int]:
    scale = math.lcm(*(q.denominator for q in quantities))
    return [int(q * scale) for q in quantities]


def _cut(line: OrderLine, pieces: Sequence[Piece]) -> list[OrderLine]:
    """The line cut into pieces; money allocated by quantity, so the pieces add up to the line."""
    if len(pieces) == 1:
        return [line.model_copy(update={"line_id": pieces[0].line_id})]
    weights = _weights([p.qty for p in pieces])
    totals = allocate(line.total_fen, weights)
    discounts = allocate(line.promo_discount_fen, weights)
    shares = [allocate(a.amount_fen, weights) for a in line.promotions]
    out = []
    for index, piece in enumerate(pieces):
        promotions = [
            a.model_copy(update={"amount_fen": share[index]})
            for a, share in zip(line.promotions, shares, strict=True)
            if share[index]
        ]
        out.append(
            line.model_copy(
                update={
                    "line_id": piece.line_id,
                    "qty": piece.qty,
                    "total_fen": totals[index],
                    "promo_discount_fen": discounts[index],
                    "promotions": promotions,
                }
            )
        )
    return out


def _asked(
    order: Order, parts: Sequence[Sequence[tuple[str, Fraction | None]]]
) -> dict[str, list[tuple[int, Fraction]]]:
    """Line id -> (part, qty) for every line a part asked for, checked against what the line holds."""
    if not parts or any(not part for part in parts):
        raise TillError("each part lists at least one line", status=422)
    asked: dict[str, list[tuple[int, Fraction]]] = {}
    for owner, part in enumerate(parts, start=1):
        for line_id, qty in part:
            line = order.line(line_id)
            if any(o == owner for o, _ in asked.get(line_id, [])):
                raise TillError(f"part {owner} lists line {line.name} twice", status=422)
            taken = sum((q for _, q in asked.get(line_id, [])), Fraction(0))
            want = line.qty - taken if qty is None else qty
            if want <= 0 or taken + want > line.qty:
                raise TillError(
                    f"line {line.name}: cannot put {format_qty(want)} on part {owner}, "
                    f"only {format_qty(line.qty - taken)} of {format_qty(line.qty)} is left",
                    status=422,
                )
            if want != line.qty and line.label_price_fen is not None:
                raise TillError(f"line {line.name} is priced as a whole; move all of it", status=422)
            if line.unit == "piece" and want.denominator != 1:
                raise TillError(
                    f"line {line.name}: {format_qty(want)} is not a whole number of pieces", status=422
                )
            asked.setdefault(line_id, []).append((owner, want))
    return asked


def split_lines(
    order: Order, parts: Sequence[Sequence[tuple[str, Fraction | None]]], new_line_id: Callable[[], str]
) -> tuple[list[list[OrderLine]], dict[str, list[Piece]]]:
    """Cut the order's lines into bills: index 0 keeps what no part asked for, 1..N the parts.

    Each part lists (line id, qty or None for the whole rest of the line). If the parts take
    everything, the last part stays on the order (as bill 0) instead of leaving it empty.
    Returns the lines of each bill and, per original line id, its pieces (for the kitchen).
    """
    if order.status != "open":
        raise TillError(f"order {order.number:04d} is {order.status}; only an open bill is split")
    if order.tenders:
        raise TillError(f"order {order.number:04d} is partly paid; it cannot be split by item now")
    if order.coupons:
        raise TillError(
            f"order {order.number:04d} has a coupon, which belongs to the whole bill; "
            "take it off or split the bill evenly",
        )
    asked = _asked(order, parts)
    if all(sum(q for _, q in asked.get(x.line_id, [])) == x.qty for x in order.lines):
        # Everything was asked for: the last part is what stays on the table's order.
        last = len(parts)
        asked = {k: [(0 if o == last else o, q) for o, q in v] for k, v in asked.items()}
    bills: list[list[OrderLine]] = [[] for _ in range(len(parts) + 1)]
    pieces: dict[str, list[Piece]] = {}
    for line in order.lines:
        wanted = asked.get(line.line_id, [])
        rest = line.qty - sum((q for _, q in wanted), Fraction(0))
        # Whatever stays on the table's order comes first and keeps the line id.
        chunks = sorted(([(0, rest)] if rest else []) + wanted, key=lambda chunk: chunk[0] != 0)
        cut = [Piece(o, line.line_id if i == 0 else new_line_id(), q) for i, (o, q) in enumerate(chunks)]
        for piece, new_line in zip(cut, _cut(line, cut), strict=True):
            bills[piece.owner].append(new_line)
        if wanted:
            pieces[line.line_id] = cut
    if not bills[-1]:
        bills.pop()  # the last part stayed on the table's order
    return bills, pieces


def regroup(order: Order, lines: list[OrderLine], **update: Any) -> Order:
    """The order holding exactly these (already priced) lines, its totals and promotions summed from them."""
    subtotal = sum(line.total_fen + line.promo_discount_fen for line in lines)
    discount = sum(line.promo_discount_fen for line in lines)
    savings: dict[str, int] = {}
    for line in lines:
        for share in line.promotions:
            savings[share.rule_id] = savings.get(share.rule_id, 0) + share.amount_fen
    promotions: list[AppliedRule] = [
        rule.model_copy(update={"saving_fen": savings[rule.rule_id]})
        for rule in order.promotions
        if savings.get(rule.rule_id)
    ]
    return order.model_copy(
        update={
            "lines": lines,
            "subtotal_fen": subtotal,
            "discount_fen": discount,
            "total_fen": subtotal - discount,
            "promotions": promotions,
        }
        | update
    )


def _station_of(sent: Mapping[str, Mapping[str, Any]], line_id: str) -> str | None:
    return next((station for station, lines in sent.items() if line_id in lines), None)


def split_sent(sent: SentState, pieces: Mapping[str, Sequence[Piece]], bills: int) -> list[SentState]:
    """The kitchen's sent state of each bill after a split; the quantities sent add up as before.

    Each piece is sent as much as it holds, in order, and whatever the station was sent beyond
    that (a reduction not yet sent) stays with the piece that kept the line id, so the next
    round of that bill tells the station exactly what it was going to be told anyway.
    """
    out: list[SentState] = [{} for _ in range(bills)]
    for station, lines in sent.items():
        for line_id, entry in lines.items():
            if line_id not in pieces:
                out[0].setdefault(station, {})[line_id] = list(entry)
                continue
            left = Fraction(entry[0])
            given: list[tuple[Piece, Fraction]] = []
            for piece in pieces[line_id]:
                share = min(piece.qty, left)
                left -= share
                given.append((piece, share))
            given = [(p, s + left if p.line_id == line_id else s) for p, s in given]
            for piece, share in given:
                if share:
                    out[piece.owner].setdefault(station, {})[piece.line_id] = [format_qty(share), *entry[1:]]
    return out


def merge_sent(into: SentState, other: SentState) -> SentState:
    """Both orders' sent states as one (line ids are unique, so nothing overlaps)."""
    merged = {station: dict(lines) for station, lines in into.items()}
    for station, lines in other.items():
        target = merged.setdefault(station, {})
        for line_id, entry in lines.items():
            if line_id in target or _station_of(into, line_id) is not None:
                raise TillError(f"line {line_id} is on both orders; they cannot be merged", status=409)
            target[line_id] = list(entry)
    return merged

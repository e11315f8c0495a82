"""What the stores report about stock through the outbox: counts, transfers shipped and received.

Ingest calls `apply_stock_reports` in the batch's transaction for events it inserts for
the first time. Each report carries its own id (made at the store), kept in
`stock_reports`, so a report re-sent under a new epoch is recognised and changes nothing.

A report the hub refuses (the transfer was cancelled, more arrived than shipped without
saying so) must not roll the batch back, or the store would re-send it forever: it runs
in a savepoint, a refusal undoes only its own writes, is kept in `stock_reports` with the
reason, and the store's screens get a `message` command saying what to do.

Events (quantities as decimal strings, times RFC 3339 UTC):
- `stocktake.counted` `{report_id, stocktake_id, part, parts, total_lines, staff,
  lines: [{sku, qty, counted_at}]}`; when all `parts` of a submission have arrived the count is `submitted`.
- `transfer.shipped` `{report_id, transfer_id, staff, lines: [{sku, qty}]}`.
- `transfer.received` `{report_id, transfer_id, staff, note,
  lines: [{sku, qty, damaged, discrepancy, note}]}`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError
from sqlalchemy import func, select

from hub.commands import add_command
from hub.db import AsyncSession
from hub.errors import HubError
from hub.stock import StockError, parse_qty
from hub.stocktake_tables import StockReport, Stocktake, StocktakeState
from hub.stocktakes import CountIn, record_counts, submit_stocktake
from hub.transfers import ReceiptLineIn, receive, ship
from hub.transfers_tables import DiscrepancyKind, Transfer
from protocol import UtcDatetime

__all__ = ["REPORT_TYPES", "apply_stock_reports"]

log = logging.getLogger(__name__)
REPORT_TYPES = frozenset({"stocktake.counted", "transfer.shipped", "transfer.received"})


def _qty(value: Any) -> int:
    try:
        return parse_qty(value)
    except StockError as err:
        raise ValueError(str(err)) from None


Qty = Annotated[int, PlainValidator(_qty)]


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _CountLine(_In):
    sku: str = Field(min_length=1, max_length=64)
    qty: Qty
    counted_at: UtcDatetime


class _Counted(_In):
    report_id: str = Field(min_length=1, max_length=80)
    stocktake_id: str = Field(min_length=1, max_length=36)
    part: int = Field(ge=1)
    parts: int = Field(ge=1, le=1000)
    total_lines: int = Field(ge=0)
    staff: str = Field("", max_length=40)
    lines: list[_CountLine] = Field(max_length=1000)


class _ShipLine(_In):
    sku: str = Field(min_length=1, max_length=64)
    qty: Qty


class _Shipped(_In):
    report_id: str = Field(min_length=1, max_length=80)
    transfer_id: str = Field(min_length=1, max_length=36)
    staff: str = Field("", max_length=40)
    lines: list[_ShipLine] = Field(min_length=1, max_length=500)


class _ReceiveLine(_In):
    sku: str = Field(min_length=1, max_length=64)
    qty: Qty
    damaged: Qty = 0
    discrepancy: DiscrepancyKind | None = None
    note: str = Field("", max_length=500)


class _Received(_In):
    report_id: str = Field(min_length=1, max_length=80)
    transfer_id: str = Field(min_length=1, max_length=36)
    staff: str = Field("", max_length=40)
    note: str = Field("", max_length=500)
    lines: list[_ReceiveLine] = Field(min_length=1, max_length=500)


def _actor(store: str, staff: str) -> str:
    return f"store:{store}/{staff}" if staff else f"store:{store}"


async def _own_transfer(session: AsyncSession, store: str, transfer_id: str, *, source: bool) -> None:
    transfer = await session.get(Transfer, transfer_id)
    if transfer is None or (transfer.from_store if source else transfer.to_store) != store:
        raise StockError(f"transfer {transfer_id} is not one this store {'ships' if source else 'receives'}")


async def _counted(session: AsyncSession, store: str, body: _Counted) -> tuple[str, str]:
    row = await session.get(Stocktake, body.stocktake_id)
    if row is None or row.store != store:
        raise StockError(f"stocktake {body.stocktake_id} is not a count of this store")
    counts = [CountIn(x.sku, x.qty, x.counted_at) for x in body.lines]
    row = await record_counts(session, body.stocktake_id, counts, actor=_actor(store, body.staff))
    submission = body.report_id.rsplit(":", 1)[0]
    arrived = await session.scalar(
        select(func.count())
        .select_from(StockReport)
        .where(
            StockReport.ref == body.stocktake_id, StockReport.id.startswith(submission + ":", autoescape=True)
        )
    )
    # This part's own row is added after it applies, so it is not counted yet.
    # Head office may have submitted it already: then the counts are simply recorded.
    if (arrived or 0) + 1 >= body.parts and row.state == StocktakeState.COUNTING.value:
        await submit_stocktake(session, body.stocktake_id, lines=body.total_lines)
        return body.stocktake_id, f"counts recorded; the store's count is complete ({body.total_lines} SKUs)"
    return body.stocktake_id, f"counts recorded (part {body.part} of {body.parts})"


async def _shipped(session: AsyncSession, store: str, body: _Shipped) -> tuple[str, str]:
    await _own_transfer(session, store, body.transfer_id, source=True)
    quantities: dict[str, int] = {}
    for line in body.lines:
        quantities[line.sku] = quantities.get(line.sku, 0) + line.qty
    await ship(session, body.transfer_id, actor=_actor(store, body.staff), quantities=quantities)
    return body.transfer_id, "shipped"


async def _received(session: AsyncSession, store: str, body: _Received) -> tuple[str, str]:
    await _own_transfer(session, store, body.transfer_id, source=False)
    items = [ReceiptLineIn(x.sku, x.qty, x.damaged, x.discrepancy, x.note) for x in body.lines]
    view, receipt_id = await receive(
        session, body.transfer_id, items, actor=_actor(store, body.staff), note=body.note
    )
    return body.transfer_id, f"receipt {receipt_id}; transfer is {view.transfer.state}"


_HANDLERS: dict[str, tuple[type[BaseModel], Any]] = {
    "stocktake.counted": (_Counted, _counted),
    "transfer.shipped": (_Shipped, _shipped),
    "transfer.received": (_Received, _received),
}


async def _apply_one(session: AsyncSession, store: str, event_type: str, raw: dict[str, Any]) -> None:
    model, handler = _HANDLERS[event_type]
    report_id = str(raw.get("report_id", ""))[:80]
    ref = str(raw.get("stocktake_id") or raw.get("transfer_id") or "")[:36]
    now = datetime.now(UTC)
    if report_id and await session.get(StockReport, report_id) is not None:
        log.info("store %s: %s %s was applied before; ignored", store, event_type, report_id)
        return
    outcome, detail = "applied", ""
    try:
        body = model.model_validate(raw)
        async with session.begin_nested():
            ref, detail = await handler(session, store, body)
    except ValidationError as err:
        first = err.errors()[0]
        outcome, detail = "refused", f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    except HubError as err:  # StockError, NotFound: the business said no
        outcome, detail = "refused", str(err)
    if not report_id:  # unreadable: keep it under the event's own identity
        report_id = f"invalid:{store}:{now.timestamp()}"
    session.add(
        StockReport(
            id=report_id,
            store=store,
            kind=event_type,
            ref=ref,
            outcome=outcome,
            detail=detail[:500],
            received_at=now,
        )
    )
    await session.flush()
    if outcome == "refused":
        log.warning("store %s: %s %s refused: %s", store, event_type, report_id, detail)
        what = {"stocktake.counted": "count", "transfer.shipped": "shipment", "transfer.received": "receipt"}
        text = f"head office could not take the {what[event_type]} for {ref or '?'}: {detail}"
        add_command(session, store, "message", {"text": text[:500], "level": "warning"}, created_by="hub")


async def apply_stock_reports(
    session: AsyncSession, store: str, events: list[tuple[str, dict[str, Any]]]
) -> None:
    """Apply a batch's new stock reports in order; none of them raises for a refusal."""
    for event_type, body in events:
        await _apply_one(session, store, event_type, body)

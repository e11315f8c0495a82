"""Hub ingest: a store's event batches land in hub tables exactly once in effect.

One database transaction per batch. `UNIQUE(store, epoch, seq)` makes a re-delivered
event a no-op; `UNIQUE(order id)` does the same for an order re-sent under a new epoch.
The same key with a different body is kept in `reconciliation` for a person to decide;
nothing is ever overwritten. The hub acknowledges only through the highest seq it holds
without a gap, and only after the commit.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy import JSON, ColumnElement, Table, Text, bindparam, cast, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db import Database
from hub.errors import NotFound
from hub.models import HubOrder, HubRefund, HubShift, Reconciliation, Store, StoreEvent, SyncState
from hub.sales_hooks import apply_new_sales
from hub.stock_reports import REPORT_TYPES as STOCK_REPORT_TYPES
from hub.stock_reports import apply_stock_reports
from protocol import DecodeError, Event, EventBatch

__all__ = ["IngestResult", "ingest_batch"]

log = logging.getLogger(__name__)


class _OrderBody(BaseModel):
    """What the hub needs from an `order.paid` / `order.voided` body (the rest is kept as is)."""

    # The whole body is stored as received; copying its other fields onto the model is waste.
    model_config = ConfigDict(extra="ignore")

    id: str
    store: str
    number: int
    business_day: date
    status: Literal["paid", "voided"]
    total_fen: int
    closed_at: datetime | None = None


class _RefundInfo(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    total_fen: int


class _RefundBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    order_id: str
    store: str
    business_day: date
    refund: _RefundInfo


class _ShiftBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    status: Literal["open", "closed"]


@dataclass(frozen=True)
class IngestResult:
    """What one batch did, and what to acknowledge."""

    store: str
    epoch: int
    acked_through: int
    max_seq: int
    inserted: int
    duplicates: int
    conflicts: int

    @property
    def gap(self) -> bool:
        """True if events above the ack are held but one before them is missing."""
        return self.max_seq > self.acked_through


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _digest(canonical: str) -> str:
    return hashlib.sha256(canonical.encode()).hexdigest()


def _event_canonical(event: Event, body: str) -> str:
    """`_canonical(event.model_dump(mode="json"))`, reusing the body's canonical text.

    The body is most of an event; serializing it once for both hashes (event and order)
    and for storage is most of what makes a batch cheap.
    """
    head = event.model_dump(mode="json", exclude={"body"})
    before = {k: v for k, v in head.items() if k < "body"}
    after = {k: v for k, v in head.items() if k > "body"}
    parts = [_canonical(before)[1:-1]] if before else []
    parts.append(f'"body":{body}')
    if after:
        parts.append(_canonical(after)[1:-1])
    return "{" + ",".join(parts) + "}"


def _core(model: type[StoreEvent] | type[HubOrder] | type[HubRefund]) -> Table:
    table = model.__table__
    if not isinstance(table, Table):
        raise TypeError(f"{model.__name__} is not mapped to a table")
    return table


def _json_text(name: str, dialect: str) -> ColumnElement[Any]:
    """A bound parameter carrying JSON text already serialized, for a JSON column."""
    text = bindparam(name, type_=Text())
    # SQLite keeps JSON as text; PostgreSQL needs the cast (and SQLite's CAST would mangle it).
    return cast(text, JSON) if dialect == "postgresql" else text


@dataclass(frozen=True)
class _Body:
    """One event's body, validated, with the canonical text that is hashed and stored."""

    seq: int
    parsed: Any
    body: dict[str, Any]
    text: str
    digest: str


class _Batch:
    """The work of one batch inside its transaction: validate all, look up all, insert all."""

    def __init__(self, session: AsyncSession, store: str, epoch: int, now: datetime):
        self.session, self.store, self.epoch, self.now = session, store, epoch, now
        self.dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
        self.conflicts = 0
        self.orders: dict[str, _Body] = {}
        self.refunds: dict[str, _Body] = {}
        self.shifts: list[tuple[_ShiftBody, dict[str, Any]]] = []
        self.new_orders: list[dict[str, Any]] = []
        self.new_refunds: list[dict[str, Any]] = []
        self.stock_reports: list[tuple[str, dict[str, Any]]] = []  # counts, transfer scans

    def conflict(self, seq: int, kind: str, key: str, existing: str, incoming: dict[str, Any]) -> None:
        self.conflicts += 1
        log.warning(
            "store %s: %s %s arrived again with a different body; kept for reconciliation",
            self.store,
            kind,
            key,
        )
        self.session.add(
            Reconciliation(
                store=self.store,
                epoch=self.epoch,
                seq=seq,
                kind=kind,
                key=key[:80],
                existing_hash=existing,
                incoming=incoming,
                received_at=self.now,
                resolved=False,
            )
        )

    def collect(self, event: Event, text: str) -> None:
        """Validate a new event's body (`text`: its canonical JSON); keep a bad one for reconciliation."""
        try:
            if event.type in ("order.paid", "order.voided"):
                order = _OrderBody.model_validate(event.body)
                if order.store != self.store:
                    raise ValueError(f"order {order.id} names store {order.store!r}")
                self._once(
                    self.orders, order.id, _Body(event.seq, order, event.body, text, _digest(text)), "order"
                )
            elif event.type == "order.refunded":
                refund = _RefundBody.model_validate(event.body)
                if refund.store != self.store:
                    raise ValueError(f"refund of order {refund.order_id} names store {refund.store!r}")
                self._once(
                    self.refunds,
                    refund.refund.id,
                    _Body(event.seq, refund, event.body, text, _digest(text)),
                    "refund",
                )
            elif event.type in ("shift.opened", "shift.closed"):
                self.shifts.append((_ShiftBody.model_validate(event.body), event.body))
            elif event.type in STOCK_REPORT_TYPES:
                self.stock_reports.append((event.type, event.body))
            else:
                log.debug("store %s: event type %s is stored but has no table yet", self.store, event.type)
        except (ValidationError, ValueError) as err:
            self.conflict(
                event.seq, "invalid", str(event.id), "", {"type": event.type, "error": str(err)[:500]}
            )

    def _once(self, seen: dict[str, _Body], key: str, item: _Body, kind: str) -> None:
        if key not in seen:
            seen[key] = item
        elif seen[key].digest != item.digest:
            self.conflict(item.seq, kind, key, seen[key].digest, item.body)

    async def write(self) -> None:
        """Insert new orders and refunds (one query to find the known ones), then shifts."""
        await self._write_orders()
        await self._write_refunds()
        for shift, body in self.shifts:
            existing = await self.session.get(HubShift, shift.id)
            if existing is None:
                self.session.add(HubShift(id=shift.id, store=self.store, status=shift.status, doc=body))
            elif shift.status == "closed":  # "opened" arriving late must not reopen a closed shift
                existing.status, existing.doc = "closed", body
        if self.new_orders or self.new_refunds:
            # In the batch's transaction: what derives from a sale happens exactly once with it.
            await apply_new_sales(self.session, self.store, self.new_orders, self.new_refunds)
        if self.stock_reports:
            # After the sales: a count's "sold before it was counted" needs this batch's orders.
            await apply_stock_reports(self.session, self.store, self.stock_reports)

    async def _insert_new(
        self,
        table: type[HubOrder] | type[HubRefund],
        kind: str,
        items: dict[str, _Body],
        columns: Callable[[Any], dict[str, Any]],
    ) -> list[dict[str, Any]]:
        """Insert the items whose id the table lacks and return their bodies.

        A known id with another body is a conflict.
        """
        if not items:
            return []
        found = await self.session.execute(select(table.id, table.body_hash).where(table.id.in_(items)))
        known: dict[str, str] = dict(found.all())
        rows = []
        bodies = []
        for key, item in items.items():
            if key not in known:
                bodies.append(item.body)
                rows.append(
                    {
                        "id": key,
                        "store": self.store,
                        "body_hash": item.digest,
                        "doc_text": item.text,
                        **columns(item.parsed),
                    }
                )
            elif known[key] != item.digest:
                self.conflict(item.seq, kind, key, known[key], item.body)
        if rows:
            # Core, not the ORM's bulk path: the same INSERT per row at a fraction of the CPU.
            stmt = insert(_core(table)).values(doc=_json_text("doc_text", self.dialect))
            await self.session.execute(stmt, rows)
        return bodies

    async def _write_orders(self) -> None:
        self.new_orders = await self._insert_new(
            HubOrder,
            "order",
            self.orders,
            lambda o: {
                "number": o.number,
                "business_day": o.business_day,
                "status": o.status,
                "total_fen": o.total_fen,
                "closed_at": o.closed_at,
            },
        )

    async def _write_refunds(self) -> None:
        self.new_refunds = await self._insert_new(
            HubRefund,
            "refund",
            self.refunds,
            lambda r: {
                "order_id": r.order_id,
                "business_day": r.business_day,
                "total_fen": r.refund.total_fen,
            },
        )


async def _sync_state(session: AsyncSession, store: str, epoch: int) -> SyncState:
    """The (store, epoch) row, created if needed and locked for this transaction.

    Insert-if-absent first, then lock: two hub instances sharing the work may both see a
    new epoch at once, and neither may fail on the other's insert.
    """
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    insert_ = pg_insert if dialect == "postgresql" else sqlite_insert
    await session.execute(
        insert_(SyncState)
        .values(store=store, epoch=epoch, acked_through=0, max_seq=0, last_sync=None)
        .on_conflict_do_nothing()
    )
    state = await session.get(SyncState, (store, epoch), with_for_update=True, populate_existing=True)
    if state is None:  # cannot happen: the row was inserted just above
        raise RuntimeError(f"sync state for {store}/{epoch} vanished")
    return state


async def ingest_batch(db: Database, topic_store: str, batch: EventBatch) -> IngestResult:
    """Commit one batch and return what to acknowledge; `DecodeError` if it is not this store's."""
    if batch.store != topic_store:
        raise DecodeError(
            "EventBatch", f"store {batch.store!r} does not match the topic's store {topic_store!r}"
        )
    # Serialize and hash before the transaction: its row lock is held only for database work.
    texts = []
    for event in batch.events:
        body_text = _canonical(event.body)
        text = _event_canonical(event, body_text)
        texts.append((body_text, text, _digest(text)))
    now = datetime.now(UTC)
    duplicates = 0
    async with db.session() as session, session.begin():
        if await session.scalar(select(Store.id).where(Store.id == topic_store)) is None:
            raise NotFound(f"events from unregistered store '{topic_store}'")
        state = await _sync_state(session, topic_store, batch.epoch)
        work = _Batch(session, topic_store, batch.epoch, now)
        rows = await session.execute(
            select(StoreEvent.seq, StoreEvent.body_hash).where(
                StoreEvent.store == topic_store,
                StoreEvent.epoch == batch.epoch,
                StoreEvent.seq.between(batch.seq_from, batch.seq_to),
            )
        )
        known: dict[int, str] = dict(rows.all())
        new_rows: list[dict[str, Any]] = []
        for event, (body_text, text, digest) in zip(batch.events, texts, strict=True):
            if event.seq in known:
                if known[event.seq] == digest:
                    duplicates += 1
                else:
                    incoming = event.model_dump(mode="json")
                    work.conflict(event.seq, "seq", f"{batch.epoch}:{event.seq}", known[event.seq], incoming)
                continue
            new_rows.append(
                {
                    "store": topic_store,
                    "epoch": batch.epoch,
                    "seq": event.seq,
                    "event_id": str(event.id),
                    "type": event.type,
                    "ts": event.ts,
                    "body_hash": digest,
                    "body_text": text,
                    "received_at": now,
                }
            )
            known[event.seq] = digest
            work.collect(event, body_text)
        if new_rows:
            stmt = insert(_core(StoreEvent)).values(body=_json_text("body_text", work.dialect))
            await session.execute(stmt, new_rows)
        inserted = len(new_rows)
        await work.write()
        await session.flush()
        acked = state.acked_through
        if acked >= batch.seq_from - 1 and state.max_seq <= batch.seq_to:
            # The usual case: the batch continues the acked run and nothing above it is held.
            # Every seq of the batch is in the table now (inserted, or there already), so the
            # run reaches seq_to without asking the database.
            acked = max(acked, batch.seq_to)
        else:
            held = await session.scalars(
                select(StoreEvent.seq)
                .where(
                    StoreEvent.store == topic_store,
                    StoreEvent.epoch == batch.epoch,
                    StoreEvent.seq > acked,
                )
                .order_by(StoreEvent.seq)
            )
            for seq in held:
                if seq != acked + 1:
                    break
                acked = seq
        state.acked_through = acked
        state.max_seq = max(state.max_seq, batch.seq_to)
        state.last_sync = now
        return IngestResult(
            topic_store, batch.epoch, acked, state.max_seq, inserted, duplicates, work.conflicts
        )

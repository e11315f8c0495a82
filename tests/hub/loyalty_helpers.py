"""Builders shared by the levels and points tests: members, rules, order/refund events, RPC calls."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from hub.db import Database
from hub.ingest import ingest_batch
from hub.loyalty_rules import LevelsConfig, PointsRules, save_setting
from hub.members import MemberFields, create_member
from hub.points import PointsAccount, PointsLedger, PointsLot
from hub.rpc import RpcServer
from protocol import Event, EventBatch, RpcReply, RpcRequest

TS = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


async def new_member(db: Database, phone: str = "13800000001", **fields: Any) -> str:
    async with db.session() as session, session.begin():
        member = await create_member(session, MemberFields(phone, channel="till", **fields))
        return member.id


async def set_points_rules(db: Database, **rules: Any) -> PointsRules:
    config = PointsRules.model_validate(rules)
    async with db.session() as session, session.begin():
        await save_setting(session, "points", config, "test")
    return config


async def set_levels(db: Database, **config: Any) -> LevelsConfig:
    levels = LevelsConfig.model_validate(config)
    async with db.session() as session, session.begin():
        await save_setting(session, "levels", levels, "test")
    return levels


def order_body(
    total: int,
    member_id: str | None,
    *,
    order_id: str | None = None,
    number: int = 1,
    lines: list[tuple[str, int]] | None = None,
    tenders: list[tuple[str, int, str | None]] | None = None,
    status: str = "paid",
    closed_at: datetime = TS,
) -> dict[str, Any]:
    """An Order document as the till sends it (only the fields the hub reads, plus a few)."""
    lines = lines or [("DRK-002", total)]
    tenders = tenders if tenders is not None else [("cash", total, None)]
    return {
        "id": order_id or str(uuid.uuid4()),
        "store": "shop-1",
        "number": number,
        "business_day": closed_at.date().isoformat(),
        "status": status,
        "opened_at": closed_at.isoformat(),
        "opened_by": "s1",
        "closed_at": closed_at.isoformat() if status == "paid" else None,
        "member_id": member_id,
        "lines": [
            {"line_id": f"l{i}", "sku": sku, "name": sku, "qty": "1", "list_price_fen": fen, "total_fen": fen}
            for i, (sku, fen) in enumerate(lines)
        ],
        "subtotal_fen": sum(fen for _, fen in lines),
        "discount_fen": sum(fen for _, fen in lines) - total,
        "total_fen": total,
        "tenders": [
            {
                "index": i,
                "method": method,
                "amount_fen": amount,
                "tendered_fen": amount,
                "change_fen": 0,
                "reference": ref,
                "ts": closed_at.isoformat(),
                "staff_id": "s1",
                "refunded_fen": 0,
            }
            for i, (method, amount, ref) in enumerate(tenders)
        ],
        "refunds": [],
    }


def refund_body(
    order: dict[str, Any], tenders: dict[int, int], *, refund_id: str | None = None
) -> dict[str, Any]:
    """An `order.refunded` body: tender index (a string key, as in JSON) → fen refunded."""
    total = sum(tenders.values())
    return {
        "order_id": order["id"],
        "store": "shop-1",
        "business_day": order["business_day"],
        "refund": {
            "id": refund_id or str(uuid.uuid4()),
            "ts": TS.isoformat(),
            "staff_id": "s1",
            "reason": "customer changed mind",
            "lines": [],
            "tenders": {str(k): v for k, v in tenders.items()},
            "total_fen": total,
        },
    }


class Till:
    """One store's outbox: numbers events and sends batches through the hub's real ingest."""

    def __init__(self, db: Database, store: str = "shop-1", epoch: int = 1):
        self.db, self.store, self.epoch, self.seq = db, store, epoch, 0

    def event(self, kind: str, body: dict[str, Any]) -> Event:
        self.seq += 1
        return Event(id=uuid.uuid4(), seq=self.seq, type=kind, ts=TS, body=body)

    async def send(self, *events: Event, times: int = 1) -> None:
        batch = EventBatch(
            store=self.store,
            epoch=self.epoch,
            seq_from=events[0].seq,
            seq_to=events[-1].seq,
            events=list(events),
        )
        for _ in range(times):
            await ingest_batch(self.db, self.store, batch)


async def rpc(
    server: RpcServer, method: str, params: dict[str, Any], key: str | None = None, store: str = "shop-1"
) -> RpcReply:
    request = RpcRequest(
        id=uuid.uuid4(),
        method=method,
        params=params,
        deadline=datetime.now(UTC) + timedelta(seconds=60),
        idempotency_key=key,
    )
    return await server.handle(store, request)


async def books(db: Database, member_id: str) -> tuple[int, int, int]:
    """(balance, sum of the ledger, sum of what is left in lots): all three must agree."""
    async with db.session() as session:
        balance = await session.scalar(
            select(PointsAccount.balance).where(PointsAccount.member_id == member_id)
        )
        ledger = await session.scalar(
            select(func.coalesce(func.sum(PointsLedger.points), 0)).where(PointsLedger.member_id == member_id)
        )
        lots = await session.scalar(
            select(func.coalesce(func.sum(PointsLot.remaining), 0)).where(PointsLot.member_id == member_id)
        )
    return int(balance or 0), int(ledger), int(lots)


async def ledger(db: Database, member_id: str) -> list[tuple[str, int, str]]:
    """(kind, points, source) oldest first."""
    async with db.session() as session:
        rows = await session.execute(
            select(PointsLedger.kind, PointsLedger.points, PointsLedger.source)
            .where(PointsLedger.member_id == member_id)
            .order_by(PointsLedger.id)
        )
        return [(k, int(p), s) for k, p, s in rows.all()]

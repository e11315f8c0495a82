"""Snapshots head office publishes to stores: versioned, retained, re-published on reconnect."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from hub.db import Database
from hub.errors import NotFound
from hub.models import Store, StoreSnapshot
from protocol import Snapshot, SnapshotKind

__all__ = ["all_snapshots", "save_snapshot"]


def _wire(row: StoreSnapshot) -> Snapshot:
    return Snapshot(kind=SnapshotKind(row.kind), version=row.version, ts=row.published_at, body=row.body)


async def save_snapshot(db: Database, store: str, kind: SnapshotKind, body: dict[str, Any]) -> Snapshot:
    """Store a new version of a store's snapshot (version = previous + 1)."""
    async with db.session() as session, session.begin():
        if await session.get(Store, store) is None:
            raise NotFound(f"no store '{store}'")
        row = await session.get(StoreSnapshot, (store, kind.value), with_for_update=True)
        now = datetime.now(UTC)
        if row is None:
            row = StoreSnapshot(store=store, kind=kind.value, version=1, body=body, published_at=now)
            session.add(row)
        else:
            row.version, row.body, row.published_at = row.version + 1, body, now
        return _wire(row)


async def all_snapshots(db: Database) -> list[tuple[str, Snapshot]]:
    """Every store's newest snapshots, to re-publish after the broker lost its retained copies."""
    async with db.session() as session:
        rows = (await session.scalars(select(StoreSnapshot).order_by(StoreSnapshot.store))).all()
    return [(row.store, _wire(row)) for row in rows]

"""The chain's stores: registration with MQTT credentials, and their online status."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select

from hub.auth import hash_secret, verify_secret
from hub.db import Database
from hub.errors import NotFound
from hub.models import Store
from protocol import Status, validate_store_id

__all__ = ["StoreCredentials", "StoreView", "add_store", "list_stores", "record_status"]


@dataclass(frozen=True)
class StoreCredentials:
    """MQTT credentials of a store; the password is shown once and stored only hashed."""

    store: str
    username: str
    password: str


@dataclass(frozen=True)
class StoreView:
    """A store as the API shows it."""

    id: str
    name: str
    online: bool
    last_seen: datetime | None
    epoch: int | None


async def add_store(
    db: Database,
    store_id: str,
    name: str | None = None,
    *,
    timezone: str = "Asia/Shanghai",
    rotate: bool = False,
) -> StoreCredentials:
    """Register a store (or, with `rotate`, give an existing one a new MQTT password)."""
    store_id = validate_store_id(store_id)
    name = (name or store_id).strip()
    if not 1 <= len(name) <= 100:
        raise ValueError("store name must be 1-100 characters")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ValueError(f"unknown time zone {timezone!r}") from err
    password = secrets.token_urlsafe(24)
    password_hash = await asyncio.to_thread(hash_secret, password)
    async with db.session() as session, session.begin():
        store = await session.get(Store, store_id)
        if store is not None and not rotate:
            raise ValueError(f"store '{store_id}' already exists")
        if store is None:
            store = Store(
                id=store_id,
                name=name,
                timezone=timezone,
                online=False,
                created_at=datetime.now(UTC),
            )
            session.add(store)
        store.mqtt_password_hash = password_hash
    return StoreCredentials(store=store_id, username=store_id, password=password)


async def check_store_password(db: Database, username: str, password: str) -> bool:
    """True if `username` is a store and `password` its current MQTT password."""
    async with db.session() as session:
        stored = await session.scalar(select(Store.mqtt_password_hash).where(Store.id == username))
    if stored is None:
        return False
    return await asyncio.to_thread(verify_secret, stored, password)


async def list_stores(
    db: Database, *, stale_after: timedelta, only: frozenset[str] | None = None
) -> list[StoreView]:
    """Stores in id order; a store silent for longer than `stale_after` shows offline.

    The staleness rule covers what a Last Will cannot: a broker restart loses the will,
    and an edge that lost power while the broker was down never sends one.
    """
    query = select(Store).order_by(Store.id)
    if only is not None:
        query = query.where(Store.id.in_(only))
    now = datetime.now(UTC)
    async with db.session() as session:
        rows = (await session.scalars(query)).all()
    return [
        StoreView(
            id=s.id,
            name=s.name,
            online=bool(s.online and s.last_seen and now - s.last_seen <= stale_after),
            last_seen=s.last_seen,
            epoch=s.epoch,
        )
        for s in rows
    ]


async def record_status(db: Database, store_id: str, status: Status) -> None:
    """Store the newest status of a store; raise `NotFound` for an unregistered store."""
    now = datetime.now(UTC)
    async with db.session() as session, session.begin():
        store = await session.get(Store, store_id)
        if store is None:
            raise NotFound(f"status from unregistered store '{store_id}'")
        store.online = status.online
        if status.epoch is not None:
            store.epoch = status.epoch
        if status.online:
            store.last_seen = now
            store.status = status.model_dump(mode="json")

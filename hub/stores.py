"""The chain's stores: registration with MQTT credentials, and their online status."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select

from hub.db import Database
from hub.errors import NotFound
from hub.models import Store, SyncState
from protocol import InvalidStoreId, Status, validate_store_id

__all__ = [
    "StoreCredentials",
    "StoreView",
    "add_store",
    "check_store_password",
    "list_stores",
    "record_status",
]


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
    outbox_depth: int | None = None
    acked_through: int | None = None
    last_sync: datetime | None = None


def _mqtt_hash(password: str) -> str:
    # Store passwords are 192 random bits, so a fast hash is as strong as argon2 here and
    # keeps a flood of CONNECTs from burning the hub's CPU and memory.
    return "sha256$" + hashlib.sha256(password.encode()).hexdigest()


def _clean_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= 100 or not name.isprintable():
        raise ValueError("store name must be 1-100 printable characters")
    return name


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
    name = _clean_name(name or store_id)
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ValueError(f"unknown time zone {timezone!r}") from err
    password = secrets.token_urlsafe(24)
    async with db.session() as session, session.begin():
        store = await session.get(Store, store_id)
        if store is not None and not rotate:
            raise ValueError(f"store '{store_id}' already exists (use --rotate for a new password)")
        if store is None:
            store = Store(
                id=store_id,
                name=name,
                timezone=timezone,
                online=False,
                created_at=datetime.now(UTC),
            )
            session.add(store)
        store.mqtt_password_hash = _mqtt_hash(password)
    return StoreCredentials(store=store_id, username=store_id, password=password)


async def check_store_password(db: Database, username: str, password: str) -> bool:
    """True if `username` is a store and `password` its current MQTT password."""
    try:
        validate_store_id(username)
    except InvalidStoreId:
        return False
    async with db.session() as session:
        stored = await session.scalar(select(Store.mqtt_password_hash).where(Store.id == username))
    return stored is not None and secrets.compare_digest(stored, _mqtt_hash(password))


async def list_stores(
    db: Database, *, stale_after: timedelta, only: frozenset[str] | None = None
) -> list[StoreView]:
    """Stores in id order; a store silent for longer than `stale_after` shows offline.

    The staleness rule covers what a Last Will cannot: a broker restart loses the will,
    and an edge that lost power while the broker was down never sends one.
    """
    query = (
        select(Store, SyncState)
        .outerjoin(SyncState, (SyncState.store == Store.id) & (SyncState.epoch == Store.epoch))
        .order_by(Store.id)
    )
    if only is not None:
        query = query.where(Store.id.in_(only))
    now = datetime.now(UTC)
    async with db.session() as session:
        rows = (await session.execute(query)).all()
    return [
        StoreView(
            id=s.id,
            name=s.name,
            online=bool(s.online and s.last_seen and now - s.last_seen <= stale_after),
            last_seen=s.last_seen,
            epoch=s.epoch,
            outbox_depth=(s.status or {}).get("outbox_depth"),
            acked_through=sync.acked_through if sync else None,
            last_sync=sync.last_sync if sync else None,
        )
        for s, sync in rows
    ]


async def record_status(db: Database, store_id: str, status: Status, *, retained: bool = False) -> bool:
    """Store the newest status of a store; True if it just came online. `NotFound` if unregistered.

    A retained status replayed by the broker when the hub (re)subscribes is old news: it
    counts as seen at the time the edge stamped it, never later than now, so a dead edge
    whose will was lost does not look fresh after every hub reconnect.
    """
    now = datetime.now(UTC)
    seen: datetime | None = now
    if retained:
        seen = min(status.ts, now) if status.ts is not None else None
    async with db.session() as session, session.begin():
        store = await session.get(Store, store_id)
        if store is None:
            raise NotFound(f"status from unregistered store '{store_id}'")
        if status.epoch is not None:
            store.epoch = status.epoch
        if not status.online:
            store.online = False
            return False
        if seen is None:
            return False
        came_online = not store.online and not retained
        if store.last_seen is None or seen >= store.last_seen:
            store.online = True
            store.last_seen = seen
            store.status = status.model_dump(mode="json")
        return came_online

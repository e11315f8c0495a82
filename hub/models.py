"""Hub database tables (SQLAlchemy 2 declarative); Alembic migrations create them."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "ApiToken",
    "Base",
    "HubOrder",
    "HubRefund",
    "HubShift",
    "Reconciliation",
    "RpcResult",
    "Store",
    "StoreCommand",
    "StoreEvent",
    "StoreSnapshot",
    "SyncState",
    "User",
    "UserStore",
]


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of every hub table."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UtcDateTime, dict[str, Any]: JSON}


class Store(Base):
    """A store of the chain, its MQTT identity and the last status it published."""

    __tablename__ = "stores"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    timezone: Mapped[str] = mapped_column(String(64), default="Asia/Shanghai")
    mqtt_password_hash: Mapped[str | None] = mapped_column(String(200))
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    last_seen: Mapped[datetime | None]
    epoch: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime]


class User(Base):
    """A head-office user; `role` decides what, `stores` decides where."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(32))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    stores: Mapped[list[UserStore]] = relationship(cascade="all, delete-orphan", lazy="selectin")


class UserStore(Base):
    """Store scope of a user; a user with none sees the whole chain if the role allows."""

    __tablename__ = "user_stores"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    store_id: Mapped[str] = mapped_column(ForeignKey("stores.id", ondelete="CASCADE"), primary_key=True)


class ApiToken(Base):
    """A bearer token, stored only as its SHA-256 so a database leak leaks no sessions."""

    __tablename__ = "api_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class SyncState(Base):
    """Per store and epoch: how far the hub has committed without a gap."""

    __tablename__ = "sync_state"

    store: Mapped[str] = mapped_column(ForeignKey("stores.id", ondelete="CASCADE"), primary_key=True)
    epoch: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    acked_through: Mapped[int] = mapped_column(BigInteger, default=0)
    max_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    last_sync: Mapped[datetime | None]


class StoreEvent(Base):
    """Every event a store sent, once: the idempotency key of ingest."""

    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("store", "epoch", "seq", name="uq_events_store_epoch_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    store: Mapped[str] = mapped_column(String(32))
    epoch: Mapped[int] = mapped_column(BigInteger)
    seq: Mapped[int] = mapped_column(BigInteger)
    event_id: Mapped[str] = mapped_column(String(36))
    type: Mapped[str] = mapped_column(String(64))
    ts: Mapped[datetime]
    body_hash: Mapped[str] = mapped_column(String(64))
    body: Mapped[dict[str, Any]]
    received_at: Mapped[datetime]


class HubOrder(Base):
    """A store's closed (paid or voided) order; the order id is unique chain-wide."""

    __tablename__ = "orders"
    __table_args__ = (Index("ix_orders_store_day", "store", "business_day"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    store: Mapped[str] = mapped_column(String(32))
    number: Mapped[int] = mapped_column(Integer)
    business_day: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16))
    total_fen: Mapped[int] = mapped_column(BigInteger)
    closed_at: Mapped[datetime | None]
    body_hash: Mapped[str] = mapped_column(String(64))
    doc: Mapped[dict[str, Any]]


class HubRefund(Base):
    """A refund of an order, dated by the store's business day when it was given."""

    __tablename__ = "refunds"
    __table_args__ = (Index("ix_refunds_store_day", "store", "business_day"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(36), index=True)
    store: Mapped[str] = mapped_column(String(32))
    business_day: Mapped[date] = mapped_column(Date)
    total_fen: Mapped[int] = mapped_column(BigInteger)
    body_hash: Mapped[str] = mapped_column(String(64))
    doc: Mapped[dict[str, Any]]


class HubShift(Base):
    """A store's shift as last reported (opened, then closed)."""

    __tablename__ = "shifts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    store: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    doc: Mapped[dict[str, Any]]


class Reconciliation(Base):
    """The same key arrived with a different body: kept for a person to decide, never overwritten."""

    __tablename__ = "reconciliation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    store: Mapped[str] = mapped_column(String(32))
    epoch: Mapped[int] = mapped_column(BigInteger)
    seq: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(80))
    existing_hash: Mapped[str] = mapped_column(String(64))
    incoming: Mapped[dict[str, Any]]
    received_at: Mapped[datetime]
    resolved: Mapped[bool] = mapped_column(Boolean, default=False)


class StoreSnapshot(Base):
    """The newest snapshot of one kind for one store; `version` only ever grows."""

    __tablename__ = "snapshots"

    store: Mapped[str] = mapped_column(ForeignKey("stores.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    body: Mapped[dict[str, Any]]
    published_at: Mapped[datetime]


class StoreCommand(Base):
    """A command for one store; re-sent until the store reports a result (it dedupes by id)."""

    __tablename__ = "commands"
    __table_args__ = (Index("ix_commands_state", "state", "store"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    store: Mapped[str] = mapped_column(ForeignKey("stores.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(64))
    body: Mapped[dict[str, Any]]
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    state: Mapped[str] = mapped_column(String(16))  # pending, done, failed, expired
    detail: Mapped[str] = mapped_column(String(1000), default="")
    sent_count: Mapped[int] = mapped_column(Integer, default=0)
    last_sent_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]


class RpcResult(Base):
    """The first outcome of an RPC request with an idempotency key, returned again on retries."""

    __tablename__ = "rpc_results"

    store: Mapped[str] = mapped_column(String(32), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    method: Mapped[str] = mapped_column(String(64))
    params_hash: Mapped[str] = mapped_column(String(64))
    ok: Mapped[bool] = mapped_column(Boolean)
    result: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime]

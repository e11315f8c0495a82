"""Messages to members: the outbox API, unsubscribes, and the sender interface.

`enqueue_message` writes a message row in the caller's transaction, deduplicated by key,
so a message exists exactly when its cause was committed; `hub.messaging_worker` sends
due messages later through the `Sender` configured for the channel. Whether a message may
go out (consent, unsubscribe, frequency cap) is decided at send time, not at enqueue time:
a member who unsubscribes tonight gets none of tomorrow morning's campaign.

Unsubscribes and consent apply to marketing messages; transactional ones (a booking
reminder the member asked for by booking) go to any member with a recipient.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from hub.db import AsyncSession
from hub.errors import HubError
from hub.messaging_tables import Category, Message, MessageState, Unsubscribe
from protocol import new_id

__all__ = [
    "CHANNELS",
    "Category",
    "Enqueued",
    "LogSender",
    "MessageState",
    "MessagingError",
    "NewMessage",
    "OutgoingMessage",
    "SendFailed",
    "SendReceipt",
    "Sender",
    "enqueue_many",
    "enqueue_message",
    "is_unsubscribed",
    "lock_for_write",
    "resubscribe",
    "unsubscribe",
]

log = logging.getLogger(__name__)

CHANNELS = ("sms",)
_TEMPLATE = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")
_PARAM_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,31}$")
_MAX_PARAMS = 20
_MAX_PARAM_LEN = 200
_INSERT_CHUNK = 500  # rows per multi-row INSERT (PostgreSQL allows 32767 bind parameters)


class MessagingError(HubError):
    """A message or unsubscribe request was refused; nothing was written."""


class SendFailed(HubError):
    """The provider did not take the message; `retryable` says whether trying later may work."""

    def __init__(self, message: str, *, retryable: bool):
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class OutgoingMessage:
    """What a sender gets: the message id (the provider's OutId), where to, and what to render."""

    id: str
    channel: str
    recipient: str
    template: str
    params: Mapping[str, str]


@dataclass(frozen=True)
class SendReceipt:
    """The provider's reference for a message it accepted."""

    provider_ref: str


class Sender(Protocol):
    """Delivers messages of one channel; raises `SendFailed` when the provider refuses."""

    async def send(self, message: OutgoingMessage) -> SendReceipt:
        """Hand one message to the provider."""
        ...


def _masked(recipient: str) -> str:
    """A phone number as logs may show it (138****0001)."""
    return f"{recipient[:3]}****{recipient[-4:]}" if len(recipient) >= 8 else "****"


class LogSender:
    """The demo's sender: logs each message (number masked) and keeps the last `keep` of them in memory."""

    def __init__(self, keep: int = 200):
        self.sent: deque[OutgoingMessage] = deque(maxlen=keep)

    async def send(self, message: OutgoingMessage) -> SendReceipt:
        """Log and remember the message; always accepted."""
        log.info(
            "message %s to %s via %s: %s %s",
            message.id,
            _masked(message.recipient),
            message.channel,
            message.template,
            dict(message.params),
        )
        self.sent.append(message)
        return SendReceipt(provider_ref=f"log:{message.id}")


@dataclass(frozen=True)
class NewMessage:
    """One message to enqueue; see `enqueue_message` for the fields."""

    member_id: str
    channel: str
    template: str
    params: Mapping[str, str | int]
    dedupe_key: str
    send_after: datetime | None = None
    category: Category = Category.MARKETING
    campaign_id: str | None = None


@dataclass(frozen=True)
class Enqueued:
    """The message row for a dedupe key, and whether this call created it."""

    id: str
    created: bool


def _check(message: NewMessage) -> dict[str, str]:
    if message.channel not in CHANNELS:
        raise MessagingError(f"channel must be one of {', '.join(CHANNELS)}, got {message.channel!r}")
    if not _TEMPLATE.fullmatch(message.template):
        raise MessagingError(
            f"template must be 1-64 lower-case letters, digits, '_' or '.', got {message.template!r}"
        )
    key = message.dedupe_key
    if not isinstance(key, str) or not 1 <= len(key) <= 160 or not key.isprintable():
        raise MessagingError(f"dedupe_key must be 1-160 printable characters, got {str(key)[:80]!r}")
    if message.send_after is not None and message.send_after.tzinfo is None:
        raise MessagingError("send_after must carry a time zone")
    if not isinstance(message.params, Mapping) or len(message.params) > _MAX_PARAMS:
        raise MessagingError(f"params must be an object of at most {_MAX_PARAMS} entries")
    params: dict[str, str] = {}
    for name, value in message.params.items():
        if not isinstance(name, str) or not _PARAM_KEY.fullmatch(name):
            raise MessagingError(f"params: {str(name)[:40]!r} is not a parameter name (letters, digits, '_')")
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise MessagingError(f"params.{name}: must be text or a whole number")
        text = str(value)
        if len(text) > _MAX_PARAM_LEN:
            raise MessagingError(f"params.{name}: at most {_MAX_PARAM_LEN} characters")
        params[name] = text
    return params


async def lock_for_write(session: AsyncSession) -> None:
    """SQLite: take the database's write lock now (BEGIN IMMEDIATE), so what this transaction reads
    stays true until it commits; pysqlite would BEGIN only at the first write, after the reads.
    PostgreSQL: nothing (callers lock rows with FOR UPDATE).
    """
    conn = await session.connection()
    if conn.dialect.name != "sqlite":
        return
    raw = await conn.get_raw_connection()
    if not raw.driver_connection.in_transaction:  # type: ignore[union-attr]
        await conn.exec_driver_sql("BEGIN IMMEDIATE")


def _insert(session: AsyncSession) -> Any:
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    return pg_insert if dialect == "postgresql" else sqlite_insert


async def enqueue_many(
    session: AsyncSession, messages: Sequence[NewMessage], *, now: datetime | None = None
) -> int:
    """Write many messages in the caller's transaction; keys already present are skipped. How many were new.

    Every message is checked before anything is written. Members are not looked up here
    (the foreign key refuses an unknown one); consent and unsubscribes are looked at when sending.
    """
    now = now or datetime.now(UTC)
    rows = []
    for message in messages:
        params = _check(message)
        due = message.send_after or now
        rows.append(
            {
                "id": str(new_id()),
                "dedupe_key": message.dedupe_key,
                "member_id": message.member_id,
                "channel": message.channel,
                "category": Category(message.category).value,
                "template": message.template,
                "params": params,
                "campaign_id": message.campaign_id,
                "state": MessageState.PENDING.value,
                "attempts": 0,
                "next_attempt_at": due,
                "created_at": now,
                "updated_at": now,
            }
        )
    created = 0
    insert_ = _insert(session)
    for start in range(0, len(rows), _INSERT_CHUNK):
        chunk = rows[start : start + _INSERT_CHUNK]
        result = await session.execute(
            insert_(Message)
            .values(chunk)
            .on_conflict_do_nothing(index_elements=["dedupe_key"])
            .returning(Message.id)
        )
        created += len(result.all())
    return created


async def enqueue_message(
    session: AsyncSession,
    *,
    member_id: str,
    channel: str,
    template: str,
    params: Mapping[str, str | int],
    dedupe_key: str,
    send_after: datetime | None = None,
    category: Category = Category.MARKETING,
    campaign_id: str | None = None,
) -> Enqueued:
    """Queue one message in the caller's transaction, once per `dedupe_key`.

    `send_after` (UTC-aware) holds it back until then; `category` decides whether consent,
    unsubscribes and the marketing frequency cap apply (transactional: not).
    """
    message = NewMessage(
        member_id=member_id,
        channel=channel,
        template=template,
        params=params,
        dedupe_key=dedupe_key,
        send_after=send_after,
        category=category,
        campaign_id=campaign_id,
    )
    created = await enqueue_many(session, [message])
    message_id = await session.scalar(select(Message.id).where(Message.dedupe_key == dedupe_key))
    if message_id is None:  # cannot happen: the row was inserted or already there
        raise RuntimeError(f"message {dedupe_key!r} was not queued")
    return Enqueued(id=message_id, created=bool(created))


def _check_channel(channel: str) -> None:
    if channel not in CHANNELS:
        raise MessagingError(f"channel must be one of {', '.join(CHANNELS)}, got {channel!r}")


async def unsubscribe(session: AsyncSession, member_id: str, channel: str, *, source: str) -> None:
    """No more marketing to the member on this channel (idempotent)."""
    _check_channel(channel)
    await session.execute(
        _insert(session)(Unsubscribe)
        .values(member_id=member_id, channel=channel, source=source[:80], created_at=datetime.now(UTC))
        .on_conflict_do_nothing()
    )


async def resubscribe(session: AsyncSession, member_id: str, channel: str) -> bool:
    """Lift an unsubscribe; False if there was none."""
    _check_channel(channel)
    result = await session.execute(
        delete(Unsubscribe).where(Unsubscribe.member_id == member_id, Unsubscribe.channel == channel)
    )
    return bool(getattr(result, "rowcount", 0))


async def is_unsubscribed(session: AsyncSession, member_ids: Iterable[str], channel: str) -> bool:
    """True if any of the ids (a member and the ones merged into it) unsubscribed from the channel."""
    found = await session.scalar(
        select(Unsubscribe.member_id)
        .where(Unsubscribe.member_id.in_(list(member_ids)), Unsubscribe.channel == channel)
        .limit(1)
    )
    return found is not None

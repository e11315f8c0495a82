"""The outbox worker: sends due messages with retries, backoff, consent, unsubscribes and frequency caps.

One pass (`send_due`) claims a batch in one transaction (rows locked with SKIP LOCKED on
PostgreSQL, so hub instances share the work), decides for each message whether it may
go out at all, sends the claimed ones outside any transaction, and records each outcome
in a second transaction. A claim is a lease: a hub that dies mid-send leaves its rows in
`sending` until `claimed_until`, then another pass takes them over. Delivery is therefore
at least once; the message id goes to the provider as its OutId so a rare duplicate can be
traced.

The marketing frequency cap counts a member's marketing messages sent (or in flight) in
the last `cap_days`; on PostgreSQL a per-member advisory lock during the claim keeps two
instances from both taking the member's last allowed slot.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from hub.db import AsyncSession, Database
from hub.members import Member
from hub.messaging import LogSender, OutgoingMessage, Sender, SendFailed, is_unsubscribed, lock_for_write
from hub.messaging_settings import MessagingSettings
from hub.messaging_tables import Category, Message, MessageState
from protocol import Backoff
from protocol.aio import cancel_and_wait

__all__ = ["OutboxPolicy", "OutboxWorker", "PassResult", "Tick", "build_outbox", "send_due"]

log = logging.getLogger(__name__)
_MAX_MERGE_HOPS = 5

# Work the worker does on each pass besides sending (campaign releases, group-buy expiry):
# an async function of (db, now) returning a short summary, or "" when it did nothing.
Tick = Callable[[Database, datetime], Awaitable[str]]


@dataclass(frozen=True)
class OutboxPolicy:
    """How often marketing may reach a member and how sending is retried."""

    marketing_cap: int = 3  # marketing messages per member per `cap_days`; transactional ones are exempt
    cap_days: int = 7
    max_attempts: int = 6  # a retryable failure after this many attempts is final
    retry_initial_s: float = 30.0
    retry_cap_s: float = 3600.0
    lease_s: float = 120.0  # a claimed message is taken over after this
    send_timeout_s: float = 10.0
    batch: int = 50

    def retry_delay(self, attempts: int, rng: random.Random | None = None) -> float:
        """The jittered, doubling delay after the `attempts`-th failed attempt (protocol.Backoff's policy)."""
        backoff = Backoff(self.retry_initial_s, self.retry_cap_s, rng=rng)
        delay = backoff.next_delay()
        for _ in range(attempts - 1):
            delay = backoff.next_delay()
        return delay


@dataclass
class PassResult:
    """What one pass did, by outcome."""

    sent: int = 0
    retried: int = 0
    failed: int = 0
    suppressed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def touched(self) -> int:
        """Messages this pass changed."""
        return self.sent + self.retried + self.failed + self.suppressed


async def _survivor(session: AsyncSession, member_id: str) -> tuple[Member | None, list[str]]:
    """The member a message now goes to (following merges) and every id on the way."""
    ids = [member_id]
    member = await session.get(Member, member_id)
    for _ in range(_MAX_MERGE_HOPS):
        if member is None or member.merged_into is None:
            break
        ids.append(member.merged_into)
        member = await session.get(Member, member.merged_into)
    return member, ids


async def _marketing_count(session: AsyncSession, member_id: str, since: datetime) -> int:
    return int(
        await session.scalar(
            select(func.count())
            .select_from(Message)
            .where(
                Message.member_id == member_id,
                Message.category == Category.MARKETING.value,
                or_(
                    Message.state == MessageState.SENDING.value,
                    (Message.state == MessageState.SENT.value) & (Message.sent_at >= since),
                ),
            )
        )
        or 0
    )


async def _refusal(
    session: AsyncSession,
    message: Message,
    *,
    member: Member | None,
    ids: list[str],
    policy: OutboxPolicy,
    now: datetime,
) -> str | None:
    """Why the message must not go out, or None."""
    if member is None:
        return "the member no longer exists"
    if message.channel == "sms" and not member.phone:
        return "the member has no phone number"
    if message.category != Category.MARKETING.value:
        return None
    if not member.consent_marketing or (message.channel == "sms" and not member.consent_sms):
        return f"the member has not agreed to marketing by {message.channel}"
    if await is_unsubscribed(session, ids, message.channel):
        return f"the member unsubscribed from {message.channel}"
    if (
        await _marketing_count(session, member.id, now - timedelta(days=policy.cap_days))
        >= policy.marketing_cap
    ):
        return f"frequency cap: {policy.marketing_cap} marketing messages in {policy.cap_days} days"
    return None


async def _lock_members(session: AsyncSession, member_ids: Sequence[str]) -> None:
    """PostgreSQL: serialise cap checks per member across instances (sorted, so no deadlock)."""
    if session.bind is None or session.bind.dialect.name != "postgresql":
        return
    for member_id in sorted(set(member_ids)):
        await session.execute(
            select(func.pg_advisory_xact_lock(func.hashtextextended(f"msg:{member_id}", 0)))
        )


async def _claim(
    db: Database, senders: Mapping[str, Sender], policy: OutboxPolicy, now: datetime, result: PassResult
) -> list[tuple[OutgoingMessage, int]]:
    async with db.session() as session, session.begin():
        await lock_for_write(session)  # SQLite: one claim at a time; PostgreSQL locks rows below
        query = (
            select(Message)
            .where(
                Message.state.in_([MessageState.PENDING.value, MessageState.SENDING.value]),
                Message.next_attempt_at <= now,
                or_(Message.claimed_until.is_(None), Message.claimed_until < now),
            )
            .order_by(Message.next_attempt_at, Message.id)
            .limit(policy.batch)
        )
        if session.bind is not None and session.bind.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        rows = list((await session.scalars(query)).all())
        resolved = [(row, *await _survivor(session, row.member_id)) for row in rows]
        await _lock_members(
            session,
            [m.id for row, m, _ in resolved if m is not None and row.category == Category.MARKETING.value],
        )
        claimed: list[tuple[OutgoingMessage, int]] = []
        for row, member, ids in resolved:
            reason = await _refusal(session, row, member=member, ids=ids, policy=policy, now=now)
            if reason is None and row.channel not in senders:
                reason = f"no sender is configured for channel {row.channel}"
                row.state, row.last_error = MessageState.FAILED.value, reason
                result.failed += 1
            elif reason is not None:
                row.state, row.last_error = MessageState.SUPPRESSED.value, reason
                result.suppressed += 1
            if reason is not None:
                result.reasons[reason] = result.reasons.get(reason, 0) + 1
                row.claimed_until, row.updated_at = None, now
                continue
            if member is None:  # cannot happen: _refusal refuses a missing member
                raise RuntimeError(f"message {row.id} has no member")
            row.member_id = member.id  # a merged member's messages belong to the survivor
            row.recipient = member.phone
            row.state = MessageState.SENDING.value
            row.attempts += 1
            row.claimed_until = now + timedelta(seconds=policy.lease_s)
            row.updated_at = now
            await session.flush()  # the next member's cap count sees this one in flight
            claimed.append(
                (
                    OutgoingMessage(row.id, row.channel, member.phone or "", row.template, dict(row.params)),
                    row.attempts,
                )
            )
        return claimed


async def _send(sender: Sender, message: OutgoingMessage, timeout_s: float) -> str | SendFailed:
    try:
        async with asyncio.timeout(timeout_s):
            return (await sender.send(message)).provider_ref
    except SendFailed as err:
        return err
    except TimeoutError:
        return SendFailed(f"the provider did not answer within {timeout_s:g} s", retryable=True)
    except Exception as err:  # a sender bug or transport error must not lose the message
        log.warning("sender for %s raised on message %s", message.channel, message.id, exc_info=True)
        return SendFailed(f"{type(err).__name__}: {err}", retryable=True)


async def _record(
    db: Database,
    outcomes: list[tuple[OutgoingMessage, int, str | SendFailed]],
    policy: OutboxPolicy,
    now: datetime,
    result: PassResult,
) -> None:
    async with db.session() as session, session.begin():
        for message, attempts, outcome in outcomes:
            mine = update(Message).where(
                Message.id == message.id,
                Message.state == MessageState.SENDING.value,
                Message.attempts == attempts,  # not taken over by another instance since
            )
            if isinstance(outcome, str):
                values: dict[str, object] = {
                    "state": MessageState.SENT.value,
                    "sent_at": now,
                    "provider_ref": outcome[:80],
                    "last_error": None,
                }
                result.sent += 1
            elif outcome.retryable and attempts < policy.max_attempts:
                values = {
                    "state": MessageState.PENDING.value,
                    "next_attempt_at": now + timedelta(seconds=policy.retry_delay(attempts)),
                    "last_error": str(outcome)[:500],
                }
                result.retried += 1
            else:
                values = {"state": MessageState.FAILED.value, "last_error": str(outcome)[:500]}
                result.failed += 1
            await session.execute(
                mine.values(claimed_until=None, updated_at=now, **values).execution_options(
                    synchronize_session=False
                )
            )


async def send_due(
    db: Database,
    senders: Mapping[str, Sender],
    policy: OutboxPolicy | None = None,
    *,
    now: datetime | None = None,
) -> PassResult:
    """Send one batch of due messages; what happened to them."""
    policy = policy or OutboxPolicy()
    now = now or datetime.now(UTC)
    result = PassResult()
    claimed = await _claim(db, senders, policy, now, result)
    if claimed:
        sent = await asyncio.gather(
            *(_send(senders[m.channel], m, policy.send_timeout_s) for m, _ in claimed)
        )
        await _record(db, [(m, a, o) for (m, a), o in zip(claimed, sent, strict=True)], policy, now, result)
    return result


class OutboxWorker:
    """Runs the ticks (campaign releases, group-buy expiry) and sends due messages every `interval_s`.

    An async context manager with one named background task; a pass that fails (database
    away) is logged once per state change and retried after a capped, jittered backoff.
    """

    def __init__(
        self,
        db: Database,
        senders: Mapping[str, Sender],
        *,
        policy: OutboxPolicy | None = None,
        ticks: Sequence[Tick] = (),
        interval_s: float = 5.0,
    ):
        self.db, self.senders, self.policy = db, dict(senders), policy or OutboxPolicy()
        self.ticks, self.interval_s = tuple(ticks), interval_s
        self.passes = 0
        self._task: asyncio.Task[None] | None = None
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> OutboxWorker:
        for (
            sender
        ) in self.senders.values():  # a sender holding a connection (Aliyun's HTTP session) opens here
            if isinstance(sender, AbstractAsyncContextManager):
                await self._stack.enter_async_context(sender)
        log.info(
            "outbox worker: channels %s, every %g s",
            ", ".join(sorted(self.senders)) or "none",
            self.interval_s,
        )
        self._task = asyncio.create_task(self._loop(), name="hub-outbox")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await cancel_and_wait(self._task, log)
        finally:
            await self._stack.aclose()

    async def run_once(self) -> PassResult:
        """One pass: every tick, then send batches until none is full.

        A tick that fails for its own reason (a bug) is logged and the pass goes on, so one
        broken campaign cannot stop group-buy refunds or messages; a database error ends the pass.
        """
        for tick in self.ticks:
            try:
                summary = await tick(self.db, datetime.now(UTC))
            except (SQLAlchemyError, OSError):
                raise
            except Exception:
                log.exception("outbox tick %s failed", getattr(tick, "__qualname__", tick))
                continue
            if summary:
                log.info("%s", summary)
        total = PassResult()
        while True:
            result = await send_due(self.db, self.senders, self.policy)
            for name in ("sent", "retried", "failed", "suppressed"):
                setattr(total, name, getattr(total, name) + getattr(result, name))
            if result.touched < self.policy.batch:
                return total

    async def _loop(self) -> None:
        backoff = Backoff(self.interval_s, max(self.interval_s, 300.0))
        healthy = True
        while True:
            try:
                await self.run_once()
            except (SQLAlchemyError, OSError) as err:
                if healthy:
                    log.warning("outbox pass failed (%s); retrying with backoff", err)
                healthy = False
                self.passes += 1
                await asyncio.sleep(backoff.next_delay())
                continue
            except Exception:  # a bug here must not stop messages for good
                log.exception("outbox pass failed")
            if not healthy:
                log.info("outbox worker is working again")
            healthy = True
            backoff = Backoff(self.interval_s, max(self.interval_s, 300.0))
            self.passes += 1
            await asyncio.sleep(self.interval_s)


def build_outbox(db: Database, settings: MessagingSettings) -> OutboxWorker:
    """The hub service's worker: the configured SMS sender and caps, campaign releases, group-buy expiry."""
    from hub.appointments_visits import appointments_tick  # noqa: PLC0415 - no-shows, booking reminders
    from hub.campaigns import release_due  # noqa: PLC0415 - campaigns and group buys enqueue through this package
    from hub.group_buy import expire_due  # noqa: PLC0415

    sender: Sender
    if settings.sms_sender == "aliyun" and settings.aliyun is not None:
        from hub.sms_aliyun import AliyunSmsSender  # noqa: PLC0415 - only when configured

        sender = AliyunSmsSender(settings.aliyun)
    else:
        sender = LogSender()
    policy = OutboxPolicy(
        marketing_cap=settings.marketing_cap, cap_days=settings.cap_days, max_attempts=settings.max_attempts
    )
    return OutboxWorker(
        db,
        {"sms": sender},
        policy=policy,
        ticks=(release_due, expire_due, appointments_tick),
        interval_s=settings.interval_s,
    )

"""The message outbox: enqueue once per key in the caller's transaction, consent, unsubscribe and
the marketing frequency cap decided at send time (transactional exempt), retries with backoff,
final failures, lease takeover, and the unsubscribe API (SQLite and PostgreSQL)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from hub.db import Database, migrate
from hub.members import merge_members
from hub.messaging import (
    Category,
    LogSender,
    MessagingError,
    OutgoingMessage,
    SendFailed,
    SendReceipt,
    enqueue_message,
    resubscribe,
    unsubscribe,
)
from hub.messaging_tables import Message, MessageState
from hub.messaging_worker import OutboxPolicy, send_due
from tests.hub.loyalty_helpers import new_member

T0 = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)  # after every enqueue


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    yield database
    await database.close()


async def _member(db: Database, phone: str = "13800000001", *, consent: bool = True) -> str:
    return await new_member(db, phone, consent_marketing=consent, consent_sms=consent)


async def _enqueue(db: Database, member_id: str, key: str, **kw: object) -> str:
    async with db.session() as session, session.begin():
        done = await enqueue_message(
            session,
            member_id=member_id,
            channel="sms",
            template=str(kw.pop("template", "promo")),
            params=kw.pop("params", {"name": "Li"}),  # type: ignore[arg-type]
            dedupe_key=key,
            **kw,  # type: ignore[arg-type]
        )
        return done.id


async def _states(db: Database) -> dict[str, tuple[str, str | None]]:
    async with db.session() as session:
        rows = (await session.scalars(select(Message))).all()
        return {row.dedupe_key: (row.state, row.last_error) for row in rows}


class FlakySender:
    """Fails the first `fail` sends of each message (retryable or not), then accepts."""

    def __init__(self, fail: int = 0, *, retryable: bool = True):
        self.fail, self.retryable = fail, retryable
        self.calls: list[str] = []

    async def send(self, message: OutgoingMessage) -> SendReceipt:
        self.calls.append(message.id)
        if self.calls.count(message.id) <= self.fail:
            raise SendFailed("isv.BUSINESS_LIMIT_CONTROL: throttled", retryable=self.retryable)
        return SendReceipt(provider_ref=f"biz-{len(self.calls)}")


async def test_enqueue_is_once_per_key_and_rolls_back_with_its_cause(db):
    member = await _member(db)
    first = await _enqueue(db, member, "booking:1:remind")
    again = await _enqueue(db, member, "booking:1:remind", params={"name": "changed"})
    assert first == again

    async def booking_that_fails() -> None:
        async with db.session() as session, session.begin():
            await enqueue_message(
                session,
                member_id=member,
                channel="sms",
                template="promo",
                params={},
                dedupe_key="rolled-back",
            )
            raise RuntimeError("the booking failed")

    with pytest.raises(RuntimeError):
        await booking_that_fails()
    states = await _states(db)
    assert set(states) == {"booking:1:remind"}
    async with db.session() as session:
        row = (await session.scalars(select(Message))).one()
        assert row.params == {"name": "Li"}


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("channel", "fax", "channel must be one of sms"),
        ("template", "Bad Template", "template must be"),
        ("params", {"a-b": "x"}, "is not a parameter name"),
        ("params", {"n": 1.5}, "params.n: must be text or a whole number"),
        ("dedupe_key", "", "dedupe_key must be"),
        ("send_after", datetime(2026, 1, 1), "send_after must carry a time zone"),
    ],
)
async def test_bad_messages_are_refused_and_write_nothing(db, field, value, error):
    member = await _member(db)
    args: dict[str, object] = {
        "member_id": member,
        "channel": "sms",
        "template": "promo",
        "params": {},
        "dedupe_key": "k",
        field: value,
    }
    async with db.session() as session, session.begin():
        with pytest.raises(MessagingError, match=error):
            await enqueue_message(session, **args)  # type: ignore[arg-type]
    assert await _states(db) == {}


async def test_send_honours_send_after_consent_and_unsubscribe_at_send_time(db):
    yes = await _member(db, "13800000001")
    no = await _member(db, "13800000002", consent=False)
    later = await _member(db, "13800000003")
    await _enqueue(db, yes, "m:yes")
    await _enqueue(db, no, "m:no")
    await _enqueue(db, no, "t:no", category=Category.TRANSACTIONAL, template="booking_reminder")
    await _enqueue(db, later, "m:later", send_after=T0 + timedelta(hours=2))
    sender = LogSender()
    result = await send_due(db, {"sms": sender}, now=T0)
    assert (result.sent, result.suppressed) == (2, 1)
    assert [m.recipient for m in sender.sent] == ["13800000001", "13800000002"]
    async with db.session() as session, session.begin():
        await unsubscribe(session, later, "sms", source="reply T")
    result = await send_due(db, {"sms": sender}, now=T0 + timedelta(hours=3))
    assert (result.sent, result.suppressed) == (0, 1)
    states = await _states(db)
    assert states["m:yes"][0] == states["t:no"][0] == MessageState.SENT
    assert states["m:no"] == (MessageState.SUPPRESSED, "the member has not agreed to marketing by sms")
    assert states["m:later"] == (MessageState.SUPPRESSED, "the member unsubscribed from sms")
    # Transactional messages go out to an unsubscribed member; resubscribing lets marketing through again.
    await _enqueue(db, later, "t:later", category=Category.TRANSACTIONAL)
    async with db.session() as session, session.begin():
        assert await resubscribe(session, later, "sms")
        assert not await resubscribe(session, later, "sms")
    await _enqueue(db, later, "m:later2")
    result = await send_due(db, {"sms": sender}, now=T0 + timedelta(hours=4))
    assert result.sent == 2


async def test_frequency_cap_counts_marketing_in_the_window_only(db):
    member = await _member(db)
    sender = LogSender()
    policy = OutboxPolicy(marketing_cap=2, cap_days=7)
    for i in range(3):
        await _enqueue(db, member, f"day0:{i}")
    await _enqueue(db, member, "day0:reminder", category=Category.TRANSACTIONAL)
    result = await send_due(db, {"sms": sender}, policy, now=T0)
    assert (result.sent, result.suppressed) == (3, 1)  # two marketing + the reminder
    assert result.reasons == {"frequency cap: 2 marketing messages in 7 days": 1}
    await _enqueue(db, member, "day6", send_after=T0 + timedelta(days=6))
    await _enqueue(db, member, "day8", send_after=T0 + timedelta(days=7, minutes=1))
    assert (await send_due(db, {"sms": sender}, policy, now=T0 + timedelta(days=6))).suppressed == 1
    assert (await send_due(db, {"sms": sender}, policy, now=T0 + timedelta(days=7, minutes=1))).sent == 1


async def test_retryable_failures_back_off_then_send_and_final_ones_fail(db):
    member = await _member(db)
    await _enqueue(db, member, "flaky")
    policy = OutboxPolicy(max_attempts=3, retry_initial_s=30, retry_cap_s=600)
    sender = FlakySender(fail=2)
    now = T0
    assert (await send_due(db, {"sms": sender}, policy, now=now)).retried == 1
    assert (await send_due(db, {"sms": sender}, policy, now=now)).touched == 0  # not due yet
    for _ in range(2):
        async with db.session() as session:
            row = (await session.scalars(select(Message))).one()
        assert row.state == MessageState.PENDING
        assert row.last_error == "isv.BUSINESS_LIMIT_CONTROL: throttled"
        assert now < row.next_attempt_at <= now + timedelta(seconds=600)
        now = row.next_attempt_at
        await send_due(db, {"sms": sender}, policy, now=now)
    async with db.session() as session:
        row = (await session.scalars(select(Message))).one()
    assert (row.state, row.attempts, row.provider_ref) == (MessageState.SENT, 3, "biz-3")
    await _enqueue(db, member, "refused", category=Category.TRANSACTIONAL)
    result = await send_due(db, {"sms": FlakySender(fail=1, retryable=False)}, policy, now=now)
    assert result.failed == 1
    await _enqueue(db, member, "exhausted", category=Category.TRANSACTIONAL)
    always = FlakySender(fail=99)
    for _ in range(3):
        await send_due(db, {"sms": always}, policy, now=now)
        now += timedelta(hours=1)
    states = await _states(db)
    assert states["refused"][0] == states["exhausted"][0] == MessageState.FAILED
    assert always.calls.count(always.calls[0]) == 3


def test_retry_delays_double_up_to_the_cap_with_jitter():
    policy = OutboxPolicy(retry_initial_s=30, retry_cap_s=600)
    for attempts, top in ((1, 30), (2, 60), (3, 120), (6, 600), (9, 600)):
        delays = [policy.retry_delay(attempts, random.Random(seed)) for seed in range(20)]
        assert all(15 <= d <= top for d in delays), (attempts, delays)
        assert len(set(delays)) > 1


async def test_a_crashed_claim_is_taken_over_after_its_lease_and_not_overwritten(db):
    member = await _member(db)
    await _enqueue(db, member, "lease")

    class Died(BaseException):
        """Stands for the process dying mid-send (nothing below catches a BaseException)."""

    class Crash:
        async def send(self, message: OutgoingMessage) -> SendReceipt:
            raise Died

    with pytest.raises(Died):
        await send_due(db, {"sms": Crash()}, OutboxPolicy(lease_s=120), now=T0)
    assert (await _states(db))["lease"][0] == MessageState.SENDING
    sender = LogSender()
    assert (await send_due(db, {"sms": sender}, now=T0 + timedelta(seconds=60))).touched == 0
    assert (await send_due(db, {"sms": sender}, now=T0 + timedelta(seconds=121))).sent == 1
    async with db.session() as session:
        assert (await session.scalars(select(Message))).one().attempts == 2


async def test_missing_sender_fails_and_merged_member_gets_it_at_the_survivor(db):
    gone = await _member(db, "13800000001")
    keep = await _member(db, "13800000002")
    await _enqueue(db, gone, "to-merged", category=Category.TRANSACTIONAL)
    async with db.session() as session, session.begin():
        await merge_members(session, gone, keep)
    sender = LogSender()
    assert (await send_due(db, {"sms": sender}, now=T0)).sent == 1
    assert sender.sent[0].recipient == "13800000002"
    await _enqueue(db, keep, "no-sender", category=Category.TRANSACTIONAL)
    result = await send_due(db, {}, now=T0)
    assert result.failed == 1
    assert (await _states(db))["no-sender"] == (
        MessageState.FAILED,
        "no sender is configured for channel sms",
    )

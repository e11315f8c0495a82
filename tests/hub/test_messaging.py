"""The message outbox: enqueue once per key in the caller's transaction, consent, unsubscribe and
the marketing frequency cap decided at send time (transactional exempt), retries with backoff,
final failures, lease takeover, and the unsubscribe API (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import ValidationError
from sqlalchemy import select

from hub.broker import free_port
from hub.config import HubSettings
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
from hub.messaging_settings import AliyunSmsSettings, MessagingSettings
from hub.messaging_tables import Message, MessageState
from hub.messaging_worker import OutboxPolicy, OutboxWorker, build_outbox, send_due
from hub.service import Hub
from hub.sms_aliyun import AliyunSmsSender, percent_encode, sign
from tests.hub.loyalty_helpers import new_member

T0 = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)  # after every enqueue of the run


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


# --------------------------------------------------------------------------- Aliyun SMS


def _rfc3986(text: str) -> str:
    """The fake's own percent-encoding, byte by byte, independent of urllib."""
    keep = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~"
    return "".join(chr(b) if b in keep else f"%{b:02X}" for b in text.encode())


class FakeAliyun:
    """A local stand-in for dysmsapi SendSms: checks the signature and answers like Aliyun does."""

    SECRET = "testSecret"

    def __init__(self) -> None:
        self.received: list[dict[str, str]] = []
        self.nonces: set[str] = set()
        self.throttle_once: set[str] = {"13800000009"}

    def expected_signature(self, method: str, params: dict[str, str]) -> str:
        pairs = sorted((k, v) for k, v in params.items() if k != "Signature")
        canonical = "&".join(f"{_rfc3986(k)}={_rfc3986(v)}" for k, v in pairs)
        string_to_sign = f"{method}&%2F&{_rfc3986(canonical)}"
        mac = hmac.new((self.SECRET + "&").encode(), string_to_sign.encode(), hashlib.sha1)
        return base64.b64encode(mac.digest()).decode()

    async def handle(self, request: web.Request) -> web.Response:
        params = {k: str(v) for k, v in (await request.post()).items()}
        answer = {"RequestId": f"req-{len(self.received)}"}
        if params.get("Signature") != self.expected_signature(request.method, params):
            return web.json_response(
                {**answer, "Code": "SignatureDoesNotMatch", "Message": "bad sig"}, status=400
            )
        stamp = datetime.strptime(params["Timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        if abs((datetime.now(UTC) - stamp).total_seconds()) > 900 or params["SignatureNonce"] in self.nonces:
            return web.json_response(
                {**answer, "Code": "SignatureNonceUsed", "Message": "replay"}, status=400
            )
        self.nonces.add(params["SignatureNonce"])
        assert (params["Action"], params["Version"], params["SignatureMethod"]) == (
            "SendSms",
            "2017-05-25",
            "HMAC-SHA1",
        )
        self.received.append(params)
        phone = params["PhoneNumbers"]
        if phone in self.throttle_once:
            self.throttle_once.discard(phone)
            return web.json_response(
                {**answer, "Code": "isv.BUSINESS_LIMIT_CONTROL", "Message": "触发分钟级流控"}
            )
        if phone.startswith("1380000000") and phone.endswith("8"):
            return web.json_response({**answer, "Code": "isv.MOBILE_NUMBER_ILLEGAL", "Message": "非法手机号"})
        return web.json_response({**answer, "Code": "OK", "Message": "OK", "BizId": f"biz-{params['OutId']}"})


def test_aliyun_signature_matches_the_documented_example():
    """The worked example of Aliyun's SMS signature documentation (GET, testId/testSecret)."""
    params = {
        "AccessKeyId": "testId",
        "Action": "SendSms",
        "Format": "XML",
        "OutId": "123",
        "PhoneNumbers": "15300000001",
        "RegionId": "cn-hangzhou",
        "SignName": "阿里云短信测试专用",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "45e25e9b-0a6f-4070-8c85-2956eda1b466",
        "SignatureVersion": "1.0",
        "TemplateCode": "SMS_71390007",
        "TemplateParam": '{"customer":"test"}',
        "Timestamp": "2017-07-12T02:42:19Z",
        "Version": "2017-05-25",
    }
    assert sign("GET", params, "testSecret") == "zJDF+Lrzhj/ThnlvIToysFRq6t4="
    assert percent_encode("a b*~") == "a%20b%2A~"
    assert FakeAliyun().expected_signature("GET", params) == "zJDF+Lrzhj/ThnlvIToysFRq6t4="


async def test_aliyun_sender_against_a_local_fake(db):
    fake = FakeAliyun()
    app = web.Application()
    app.router.add_post("/", fake.handle)
    async with TestServer(app, host="127.0.0.1") as server:
        settings = AliyunSmsSettings(
            access_key_id="testId",
            access_key_secret=FakeAliyun.SECRET,
            sign_name="星巴客便利",
            templates={"promo": "SMS_100", "booking_reminder": "SMS_200"},
            endpoint=str(server.make_url("/")),
        )
        ok = await _member(db, "13800000001")
        throttled = await _member(db, "13800000009")
        illegal = await _member(db, "13800000008")
        await _enqueue(db, ok, "ok", params={"name": "李雷", "amount": 1230})
        await _enqueue(db, throttled, "throttled")
        await _enqueue(db, illegal, "illegal")
        await _enqueue(db, ok, "no-template", template="unknown_template", category=Category.TRANSACTIONAL)
        async with AliyunSmsSender(settings) as sender:
            first = await send_due(db, {"sms": sender}, now=T0)
            assert (first.sent, first.retried, first.failed) == (1, 1, 2)
            retry = await send_due(db, {"sms": sender}, now=T0 + timedelta(hours=2))
            assert retry.sent == 1
        bad = AliyunSmsSettings(**{**settings.model_dump(), "access_key_secret": "wrong"})
        await _enqueue(db, ok, "bad-key", category=Category.TRANSACTIONAL)
        async with AliyunSmsSender(bad) as sender:
            assert (await send_due(db, {"sms": sender}, now=T0 + timedelta(hours=3))).retried == 1
    sent = {p["OutId"]: p for p in fake.received}
    async with db.session() as session:
        rows = {row.dedupe_key: row for row in (await session.scalars(select(Message))).all()}
    ok_row = rows["ok"]
    assert (ok_row.state, ok_row.provider_ref) == (MessageState.SENT, f"biz-{ok_row.id}")
    assert json.loads(sent[ok_row.id]["TemplateParam"]) == {"name": "李雷", "amount": "1230"}
    assert (sent[ok_row.id]["SignName"], sent[ok_row.id]["TemplateCode"]) == ("星巴客便利", "SMS_100")
    assert rows["throttled"].state == MessageState.SENT
    assert rows["illegal"].state == MessageState.FAILED
    assert "isv.MOBILE_NUMBER_ILLEGAL" in (rows["illegal"].last_error or "")
    assert rows["no-template"].state == MessageState.FAILED
    assert "no Aliyun template code" in (rows["no-template"].last_error or "")
    assert rows["bad-key"].state == MessageState.PENDING
    assert "SignatureDoesNotMatch" in (rows["bad-key"].last_error or "")


async def test_aliyun_sender_unreachable_is_retryable():
    settings = AliyunSmsSettings(
        access_key_id="id",
        access_key_secret="s",
        sign_name="x",
        templates={"promo": "SMS_1"},
        endpoint=f"http://127.0.0.1:{free_port()}/",
        timeout_s=2,
    )
    async with AliyunSmsSender(settings) as sender:
        with pytest.raises(SendFailed, match="unreachable") as info:
            await sender.send(OutgoingMessage("m1", "sms", "13800000001", "promo", {}))
    assert info.value.retryable


async def test_concurrent_passes_never_exceed_the_frequency_cap(db):
    """Hub instances share the outbox (SKIP LOCKED); the per-member lock keeps the cap exact across them."""
    members = [await _member(db, f"1380000010{i}") for i in range(3)]
    for member in members:
        for i in range(8):
            await _enqueue(db, member, f"{member}:{i}")
    policy = OutboxPolicy(marketing_cap=3, batch=4)
    sender = LogSender(keep=1000)
    for _ in range(3):
        await asyncio.gather(*(send_due(db, {"sms": sender}, policy, now=T0) for _ in range(6)))
    per_member = Counter(m.recipient for m in sender.sent)
    assert per_member == {f"1380000010{i}": 3 for i in range(3)}
    states = Counter(state for state, _ in (await _states(db)).values())
    assert states == {MessageState.SENT: 9, MessageState.SUPPRESSED: 15}


def test_settings_pick_the_sender_and_the_service_runs_the_worker(tmp_path):
    with pytest.raises(ValidationError, match=r"needs a \[messaging\.aliyun\] section"):
        MessagingSettings(sms_sender="aliyun")
    db = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    aliyun = MessagingSettings(
        sms_sender="aliyun",
        marketing_cap=5,
        aliyun=AliyunSmsSettings(access_key_id="id", access_key_secret="s", sign_name="店"),
    )
    worker = build_outbox(db, aliyun)
    assert isinstance(worker.senders["sms"], AliyunSmsSender)
    assert (worker.policy.marketing_cap, worker.policy.cap_days) == (5, 7)
    assert isinstance(build_outbox(db, MessagingSettings()).senders["sms"], LogSender)
    settings = HubSettings(state_dir=tmp_path, broker={"bind": "127.0.0.1", "port": free_port()})
    assert Hub(settings, db=db).outbox is not None
    off = settings.model_copy(update={"messaging": MessagingSettings(enabled=False)})
    assert Hub(off, db=db).outbox is None


async def test_a_failing_tick_does_not_stop_sending_and_logs_mask_numbers(db, caplog):
    member = await _member(db, "13912345678")
    await _enqueue(db, member, "after-broken-tick", category=Category.TRANSACTIONAL)

    async def broken(_db: Database, _now: datetime) -> str:
        raise ValueError("a bug in a campaign")

    sender = LogSender()
    worker = OutboxWorker(db, {"sms": sender}, ticks=(broken,))
    with caplog.at_level("INFO", logger="hub"):
        result = await worker.run_once()
    assert result.sent == 1
    assert "outbox tick" in caplog.text
    assert "139****5678" in caplog.text
    assert "13912345678" not in caplog.text

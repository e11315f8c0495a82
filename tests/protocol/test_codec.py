"""Tests for protocol.codec: round trips and the "only DecodeError" promise."""

from __future__ import annotations

import json
import pickle
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from protocol import (
    MAX_PAYLOAD,
    Ack,
    Command,
    CommandResult,
    DecodeError,
    DeviceHealth,
    Event,
    EventBatch,
    Fen,
    ProtocolError,
    Resend,
    RpcReply,
    RpcRequest,
    Status,
    WireModel,
    decode,
    encode,
    offline_will,
)
from protocol.ids import STORE_ID_PATTERN

_BIG = 2**63 - 1
_stores = st.from_regex(STORE_ID_PATTERN, fullmatch=True)
_datetimes = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.just(UTC) | st.timezones(),
)
_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_json = st.recursive(
    _json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=15,
)
_bodies = st.dictionaries(st.text(max_size=10), _json, max_size=5)
_names = st.text(min_size=1, max_size=64)


@st.composite
def _event_batches(draw: st.DrawFn) -> EventBatch:
    seq_from = draw(st.integers(min_value=1, max_value=_BIG - 10))
    count = draw(st.integers(min_value=1, max_value=5))
    events = [
        Event(
            id=draw(st.uuids()),
            seq=seq_from + index,
            type=draw(_names),
            ts=draw(_datetimes),
            body=draw(_bodies),
        )
        for index in range(count)
    ]
    return EventBatch(
        store=draw(_stores),
        epoch=draw(st.integers(min_value=1, max_value=_BIG)),
        seq_from=seq_from,
        seq_to=seq_from + count - 1,
        events=events,
    )


_statuses = st.builds(
    Status,
    online=st.booleans(),
    store=st.none() | _stores,
    epoch=st.none() | st.integers(min_value=1, max_value=_BIG),
    acked_through=st.none() | st.integers(min_value=0, max_value=_BIG),
    outbox_depth=st.integers(min_value=0, max_value=10**9),
    versions=st.dictionaries(st.text(max_size=12), st.integers(min_value=0, max_value=_BIG)),
    devices=st.lists(
        st.builds(DeviceHealth, id=st.text(), kind=st.text(), ok=st.booleans(), detail=st.text()),
        max_size=3,
    ),
    software=st.none() | st.text(max_size=20),
    ts=st.none() | _datetimes,
    alarms=st.lists(st.text(max_size=30), max_size=3),
)
_acks = st.builds(
    Ack,
    epoch=st.integers(min_value=1, max_value=_BIG),
    acked_through=st.integers(min_value=0, max_value=_BIG),
)
_commands = st.builds(Command, id=st.uuids(), type=_names, body=_bodies)
_replies = st.one_of(
    st.builds(RpcReply.success, st.uuids(), _json),
    st.builds(RpcReply.failure, st.uuids(), st.text(min_size=1)),
)


def _assert_round_trip(message: BaseModel) -> None:
    payload = encode(message)
    assert isinstance(payload, bytes)
    assert decode(type(message), payload) == message
    assert decode(type(message), payload.decode("utf-8")) == message
    assert decode(type(message), bytearray(payload)) == message


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(_statuses)
def test_status_round_trips(message: Status) -> None:
    _assert_round_trip(message)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(_event_batches())
def test_event_batch_round_trips(message: EventBatch) -> None:
    _assert_round_trip(message)


@given(_acks)
def test_ack_round_trips(message: Ack) -> None:
    _assert_round_trip(message)


@settings(deadline=None)
@given(_commands)
def test_command_round_trips(message: Command) -> None:
    _assert_round_trip(message)


@settings(deadline=None)
@given(_replies)
def test_rpc_reply_round_trips(message: RpcReply) -> None:
    _assert_round_trip(message)


def test_other_messages_round_trip() -> None:
    _assert_round_trip(Resend(epoch=2, from_seq=17))
    _assert_round_trip(CommandResult(cmd_id=uuid.uuid4(), ok=False, detail="打印机缺纸"))
    _assert_round_trip(
        RpcRequest(
            id=uuid.uuid4(),
            method="stored_value.debit",
            params={"member": "m1", "amount_fen": 1500},
            deadline=datetime(2026, 11, 23, 4, 5, 6, tzinfo=UTC),
            idempotency_key="order-1:0",
        )
    )


def test_encode_is_compact_utf8() -> None:
    command = Command(id=uuid.UUID(int=1), type="message", body={"text": "¥12.30 欢迎"})
    payload = encode(command)
    assert payload == (
        b'{"id":"00000000-0000-0000-0000-000000000001","type":"message",'
        b'"body":{"text":"' + "¥12.30 欢迎".encode() + b'"},"expires_at":null}'
    )


def test_last_will_decodes_and_offline_will_matches() -> None:
    status = decode(Status, b'{"online":false}')
    assert status == offline_will()
    assert status.online is False
    assert status.store is None
    assert status.outbox_depth == 0
    assert status.versions == {}
    assert decode(Status, encode(offline_will())) == offline_will()


def test_newer_peers_extra_fields_are_ignored() -> None:
    ack = decode(Ack, b'{"epoch":3,"acked_through":10,"shard":"b","x":{"y":1}}')
    assert ack == Ack(epoch=3, acked_through=10)


def _reason(model: type[BaseModel], payload: bytes | str) -> str:
    with pytest.raises(DecodeError) as info:
        decode(model, payload)
    assert info.value.what == model.__name__
    assert str(info.value) == f"cannot decode {model.__name__}: {info.value.reason}"
    return info.value.reason


def test_reason_names_the_field() -> None:
    with pytest.raises(DecodeError) as info:
        decode(Status, b'{"online":true,"epoch":"one"}')
    assert str(info.value) == "cannot decode Status: field 'epoch': Input should be a valid integer"


def test_reason_names_nested_field_path() -> None:
    batch = {
        "store": "s1",
        "epoch": 1,
        "seq_from": 1,
        "seq_to": 1,
        "events": [{"id": str(uuid.uuid4()), "seq": 0, "type": "t", "ts": "2026-01-01T00:00:00Z"}],
    }
    reason = _reason(EventBatch, json.dumps(batch))
    assert reason.startswith("field 'events.0.seq': Input should be greater than or equal to 1")
    assert "(and 1 more error)" in reason  # body is missing too


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"", "invalid JSON"),
        (b"{", "invalid JSON"),
        (b"{'online': true}", "invalid JSON"),
        (b'{"online": true', "invalid JSON"),
        (b'{"online": NaN}', "field 'online'"),
        (b"\xff\xfe{}", "not valid UTF-8"),
        (b'{"online":"\xc3"}', "not valid UTF-8 (byte 11"),
        (b"[]", "expected a JSON object"),
        (b"null", "expected a JSON object"),
        (b'"online"', "expected a JSON object"),
        (b"42", "expected a JSON object"),
        (b"{}", "field 'online': Field required"),
        (b'{"online":"true"}', "field 'online': Input should be a valid boolean"),
        (b'{"online":1}', "field 'online': Input should be a valid boolean"),
        (b'{"online":true,"store":"Foo!"}', "field 'store': invalid store id 'Foo!'"),
        (b'{"online":true,"epoch":0}', "field 'epoch': Input should be greater than or equal"),
        (b'{"online":true,"epoch":1.0}', "field 'epoch': Input should be a valid integer"),
        (b'{"online":true,"epoch":"1"}', "field 'epoch': Input should be a valid integer"),
        (b'{"online":true,"epoch":9223372036854775808}', "field 'epoch'"),
        (b'{"online":true,"outbox_depth":-1}', "field 'outbox_depth'"),
        (b'{"online":true,"ts":"2026-01-01T00:00:00"}', "field 'ts': timestamp"),
        (b'{"online":true,"ts":"yesterday"}', "field 'ts'"),
        (b'{"online":true,"devices":[{"id":"p1"}]}', "field 'devices.0.kind': Field required"),
        (b'{"online":true,"versions":{"prices":-1}}', "field 'versions.prices'"),
        (b'{"online":true,"alarms":"disk full"}', "field 'alarms'"),
    ],
)
def test_bad_status_payloads(payload: bytes, expected: str) -> None:
    assert expected in _reason(Status, payload)


def test_non_finite_numbers_in_bodies_are_rejected() -> None:
    payload = b'{"id":"' + str(uuid.uuid4()).encode() + b'","type":"t","body":{"a":[1,NaN]}}'
    assert "NaN and Infinity are not allowed" in _reason(Command, payload)
    reply = b'{"id":"' + str(uuid.uuid4()).encode() + b'","ok":true,"result":Infinity}'
    assert "NaN and Infinity" in _reason(RpcReply, reply)


def test_unpaired_surrogate_in_str_payload() -> None:
    assert "not valid Unicode" in _reason(Status, '{"online":true,"software":"\ud800"}')


def test_event_batch_gaps_are_rejected() -> None:
    def event(seq: int) -> dict[str, Any]:
        return {"id": str(uuid.uuid4()), "seq": seq, "type": "t", "ts": "2026-01-01T00:00:00Z"}

    base: dict[str, Any] = {"store": "s1", "epoch": 1, "seq_from": 5, "seq_to": 7}
    ok = {**base, "events": [{**event(s), "body": {}} for s in (5, 6, 7)]}
    assert decode(EventBatch, json.dumps(ok)).seq_to == 7
    gap = {**base, "events": [{**event(s), "body": {}} for s in (5, 7, 8)]}
    assert "events[1] has seq 7, expected 6" in _reason(EventBatch, json.dumps(gap))
    short = {**base, "events": [{**event(s), "body": {}} for s in (5, 6)]}
    assert "needs 3 events, got 2" in _reason(EventBatch, json.dumps(short))
    backwards = {**base, "seq_to": 4, "events": [{**event(5), "body": {}}]}
    assert "seq_to 4 is below seq_from 5" in _reason(EventBatch, json.dumps(backwards))
    empty = {**base, "events": []}
    assert "field 'events'" in _reason(EventBatch, json.dumps(empty))
    twice = {**event(5), "body": {}}
    dup = {**base, "seq_to": 6, "events": [twice, {**twice, "seq": 6}]}
    assert "appears twice" in _reason(EventBatch, json.dumps(dup))


def test_rpc_reply_outcome_rules() -> None:
    rid = str(uuid.uuid4())
    assert "must not carry an error" in _reason(RpcReply, json.dumps({"id": rid, "ok": True, "error": "x"}))
    assert "must carry a non-empty error" in _reason(RpcReply, json.dumps({"id": rid, "ok": False}))
    assert "must carry a non-empty error" in _reason(
        RpcReply, json.dumps({"id": rid, "ok": False, "error": ""})
    )
    assert decode(RpcReply, json.dumps({"id": rid, "ok": True})).result is None


class _Priced(WireModel):
    total_fen: Fen


@pytest.mark.parametrize("value", ["12.5", "12.0", '"1250"', "true", "1e3"])
def test_float_and_string_money_is_rejected(value: str) -> None:
    reason = _reason(_Priced, '{"total_fen": ' + value + "}")
    assert reason.startswith("field 'total_fen': Input should be a valid integer")


def test_int_money_is_accepted() -> None:
    assert decode(_Priced, b'{"total_fen": -1250}').total_fen == -1250


def test_too_large_payload_is_rejected_before_parsing() -> None:
    payload = b'{"online":true,"software":"' + b"x" * MAX_PAYLOAD + b'"}'
    assert f"limit is {MAX_PAYLOAD}" in _reason(Status, payload)
    with pytest.raises(DecodeError, match="payload is 16 bytes, the limit is 10"):
        decode(Status, b'{"online":false}', max_bytes=10)


@pytest.mark.parametrize("payload", [None, 42, 1.5, ["x"], {"online": True}])
def test_wrong_payload_types_raise_decode_error(payload: Any) -> None:
    assert "payload must be bytes" in _reason(Status, payload)


def test_decode_error_is_a_protocol_error_and_pickles() -> None:
    with pytest.raises(ProtocolError) as info:
        decode(Ack, b"{}")
    assert isinstance(info.value, DecodeError)
    clone = pickle.loads(pickle.dumps(info.value))  # noqa: S301 - our own object
    assert (clone.what, clone.reason, str(clone)) == (
        info.value.what,
        info.value.reason,
        str(info.value),
    )


def test_deeply_nested_json_is_a_decode_error() -> None:
    payload = '{"id":"' + str(uuid.uuid4()) + '","type":"t","body":' + '{"a":' * 5000
    payload += "1" + "}" * 5001
    assert "invalid JSON" in _reason(Command, payload)


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_to_status_or_decode_error(payload: bytes) -> None:
    try:
        result = decode(Status, payload)
    except DecodeError:
        return
    assert isinstance(result, Status)


_status_fields = st.sampled_from(
    ["online", "store", "epoch", "acked_through", "outbox_depth", "versions", "devices", "ts"]
)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(_status_fields, _json, max_size=8))
def test_arbitrary_json_objects_decode_to_status_or_decode_error(data: dict[str, Any]) -> None:
    try:
        result = decode(Status, json.dumps(data))
    except DecodeError:
        return
    assert isinstance(result, Status)
    assert result.online is data["online"]

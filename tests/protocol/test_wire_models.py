"""Tests for protocol.models beyond the codec: construction rules and helpers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

import protocol
from protocol import (
    Ack,
    Command,
    Envelope,
    Event,
    RpcReply,
    RpcRequest,
    Snapshot,
    SnapshotKind,
    Status,
    offline_will,
    topics,
)

_TS = datetime(2026, 11, 23, 4, 5, 6, tzinfo=UTC)


def test_package_exports_resolve() -> None:
    for name in protocol.__all__:
        assert getattr(protocol, name) is not None, name
    assert topics.status("s1") == "storelink/v1/s1/status"
    assert protocol.topics is topics


def test_models_are_frozen() -> None:
    ack = Ack(epoch=1, acked_through=0)
    with pytest.raises(ValidationError, match="frozen"):
        ack.acked_through = 5  # type: ignore[misc]


def test_command_is_an_envelope_with_defaults() -> None:
    command = Command(id=uuid.uuid4(), type="reprint")
    assert isinstance(command, Envelope)
    assert command.body == {}
    # Each instance gets its own body, not a shared default.
    assert Command(id=uuid.uuid4(), type="x").body is not command.body


@pytest.mark.parametrize("type_", ["", "x" * 65])
def test_envelope_type_length(type_: str) -> None:
    with pytest.raises(ValidationError, match="type"):
        Envelope(id=uuid.uuid4(), type=type_)


@pytest.mark.parametrize(
    ("field", "value"),
    [("seq", 0), ("seq", -1), ("seq", 1.0), ("seq", True), ("seq", 2**63), ("type", "")],
)
def test_event_field_rules(field: str, value: Any) -> None:
    data: dict[str, Any] = {"id": uuid.uuid4(), "seq": 1, "type": "t", "ts": _TS, "body": {}}
    data[field] = value
    with pytest.raises(ValidationError, match=field):
        Event.model_validate(data)


def test_event_requires_aware_ts_and_normalises_to_utc() -> None:
    plus8 = timezone(timedelta(hours=8))
    event = Event(id=uuid.uuid4(), seq=1, type="t", ts=datetime(2026, 11, 24, 1, 30, tzinfo=plus8), body={})
    assert event.ts == datetime(2026, 11, 23, 17, 30, tzinfo=UTC)
    assert event.ts.tzinfo is UTC
    with pytest.raises(ValidationError, match="no time zone"):
        Event(id=uuid.uuid4(), seq=1, type="t", ts=datetime(2026, 11, 24, 1, 30), body={})


def test_ack_and_status_bounds() -> None:
    assert Ack(epoch=1, acked_through=0).acked_through == 0
    with pytest.raises(ValidationError):
        Ack(epoch=0, acked_through=0)
    with pytest.raises(ValidationError):
        Ack(epoch=1, acked_through=-1)
    with pytest.raises(ValidationError):
        Status(online=True, outbox_depth=-1)
    with pytest.raises(ValidationError, match="invalid store id"):
        Status(online=True, store="S1")


def test_offline_will_is_minimal() -> None:
    will = offline_will()
    assert will == Status(online=False)
    assert will.model_dump(exclude_defaults=True) == {"online": False}


def test_rpc_request_expiry() -> None:
    request = RpcRequest(id=uuid.uuid4(), method="member.lookup", deadline=_TS)
    assert request.params == {}
    assert request.idempotency_key is None
    assert not request.expired(_TS - timedelta(milliseconds=1))
    assert request.expired(_TS)
    assert request.expired(_TS.astimezone(timezone(timedelta(hours=8))) + timedelta(seconds=1))
    with pytest.raises(ValueError, match="no time zone"):
        request.expired(datetime(2026, 1, 1))


def test_rpc_request_rejects_empty_idempotency_key() -> None:
    with pytest.raises(ValidationError, match="idempotency_key"):
        RpcRequest(id=uuid.uuid4(), method="m", deadline=_TS, idempotency_key="")


def test_rpc_reply_helpers() -> None:
    rid = uuid.uuid4()
    ok = RpcReply.success(rid, {"balance_fen": 100})
    assert (ok.ok, ok.result, ok.error) == (True, {"balance_fen": 100}, None)
    failed = RpcReply.failure(rid, "insufficient balance")
    assert (failed.ok, failed.error) == (False, "insufficient balance")
    with pytest.raises(ValidationError, match="must carry a non-empty error"):
        RpcReply(id=rid, ok=False)
    with pytest.raises(ValidationError, match="must not carry an error"):
        RpcReply(id=rid, ok=True, error="boom")


def test_bodies_reject_non_finite_floats() -> None:
    with pytest.raises(ValidationError, match="NaN and Infinity"):
        Command(id=uuid.uuid4(), type="t", body={"a": {"b": [float("inf")]}})
    with pytest.raises(ValidationError, match="NaN and Infinity"):
        RpcRequest(id=uuid.uuid4(), method="m", deadline=_TS, params={"x": float("nan")})


def test_snapshot_kind_is_validated() -> None:
    snapshot = Snapshot(kind="prices", version=3, ts=_TS, body={"items": []})
    assert snapshot.kind is SnapshotKind.PRICES
    with pytest.raises(ValidationError, match="kind"):
        Snapshot(kind="menu", version=3, ts=_TS)
